"""Second mutation audit of pinnlab.tuning.run and pinnlab.tuning.command (``pinnlab tune``):
the TUNE.h5 the command writes, read back with h5py and checked against the tuning run's
own history (an in-process run of the same config, deterministic in float64) and closed
forms; the final solve with the tuned values; and checkpoint handling."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab import config as configuration
from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U


def _write(tmp_path, text=WEIGHT_FG2U):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(text)
    return cfg


def _tune(tmp_path, *overrides, text=WEIGHT_FG2U, extra=()):
    cfg = _write(tmp_path, text)
    out = tmp_path / "t.h5"
    return main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off", *extra]), out


def _reference(tmp_path, *overrides, text=WEIGHT_FG2U):
    """The same tuning and final solve run in process (float64, seeded: bit for bit)."""
    from pinnlab.tuning.run import final_solve, run_tuning
    from pinnlab.tuning.setup import build_tuning

    config = configuration.load(_write(tmp_path, text), list(overrides))
    setup = build_tuning(config)
    outcome = run_tuning(setup)
    result, _ = final_solve(setup, outcome, progress="off")
    return setup, outcome, result


# final_steps 3 (not trainer.steps 4), eval_every 4 > final_steps, linear decay over the final steps
FINAL = ("tune.final_steps=3", "trainer.eval_every=4", "trainer.schedule=linear")


def test_the_tune_group_is_the_runs_history_and_the_final_solve_uses_the_tuned_value(tmp_path):
    code, out = _tune(tmp_path, *FINAL)
    assert code == 0
    setup, outcome, result = _reference(tmp_path, *FINAL)
    history = outcome.history
    phi = np.array([float(v) for v in history["phi/weights.boundary"]])
    with h5py.File(out) as fh:
        tune = fh["tune"]
        # the trajectory, the outer objective and the diagnostics, float64 as the run kept them
        for key in ("value", "grad_norm"):
            assert tune[key].dtype == np.float64
            np.testing.assert_array_equal(tune[key][...], np.asarray(history[key], dtype=np.float64))
        assert tune["seconds"].dtype == np.float64 and tune["seconds"].shape == (3,)
        np.testing.assert_array_equal(tune["outer_step"][...], [0, 1, 2])
        assert tune["outer_step"].dtype == np.int64
        assert [m.decode() for m in tune["method"][...]] == ["fg2u"] * 3
        assert tune["phi/weights.boundary"].dtype == np.float64
        np.testing.assert_array_equal(tune["phi/weights.boundary"][...], phi)
        assert tune["initial/weights.boundary"][()] == 0.01  # the config's weight, φ_0
        assert tune["tuned/weights.boundary"][()] == phi[-1]
        assert tune.attrs["final/weights.boundary"] == phi[-1]  # float64, not rounded to float32
        attrs = {k: tune.attrs[k] for k in ("method", "objective", "horizon", "inner", "steps_done", "status",
                                            "message")}
        assert attrs == {"method": "fg2u", "objective": "data", "horizon": 2, "inner": "pinnlab", "steps_done": 3,
                         "status": "ok", "message": ""}
        assert "then_method" not in tune.attrs and "trial_steps" not in tune.attrs
        # the final solve: final_steps steps at the tuned weight, evaluated at its last step
        np.testing.assert_array_equal(fh["history/step"][...], [3])
        np.testing.assert_array_equal(fh["trace/loss"][...].shape, (3,))
        np.testing.assert_array_equal(fh["history/terms/weight_boundary"][...], [phi[-1]])
        # linear decay over the final solve's 3 steps: lr (1 - 2/3) at its last (0-based 2nd) step
        np.testing.assert_allclose(fh["history/lr"][...], [1e-2 / 3], rtol=1e-12)
        assert fh["final"].attrs["steps_done"] == 3
        assert fh["final"].attrs["rel_l2"] == result.final.rel_l2
    np.testing.assert_array_equal(fh_params(out), fh_params_from(result))


def fh_params(out):
    with h5py.File(out) as fh:
        return np.concatenate([fh["params"][k][...].ravel() for k in sorted(fh["params"])])


def fh_params_from(result):
    params = result.params if hasattr(result, "params") else result.final.params
    return np.concatenate([params[k].detach().double().numpy().ravel() for k in sorted(params)])


def _stop_after(step):
    def progress(k, phi, diagnostics):
        if k == step:
            raise KeyboardInterrupt

    return progress


def test_a_resumed_tuning_records_the_uninterrupted_runs_history_and_final_solve(tmp_path, capsys):
    """Ctrl-C after outer step 1 leaves OUT.h5.ckpt; ``--resume`` continues it, and the
    file holds what an uninterrupted run gives, bit for bit (φ trajectory, outer loss,
    tuned value, final solve), with both checkpoints removed."""
    from pinnlab.io.checkpoint import comparable_text, config_hash
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    _, outcome, result = _reference(tmp_path)
    config = configuration.load(_write(tmp_path), [])
    identity = config.identity()
    ckpt = tmp_path / "t.h5.ckpt"
    with pytest.raises(KeyboardInterrupt):
        run_tuning(build_tuning(config), checkpoint=ckpt, progress=_stop_after(1),
                   metadata={"config": config_hash(identity), "config_text": comparable_text(identity)})
    assert ckpt.is_file()
    code, out = _tune(tmp_path, extra=("--resume",))
    assert code == 0
    with h5py.File(out) as fh:
        tune = fh["tune"]
        np.testing.assert_array_equal(tune["phi/weights.boundary"][...],
                                      [float(v) for v in outcome.history["phi/weights.boundary"]])
        np.testing.assert_array_equal(tune["value"][...], outcome.history["value"])
        np.testing.assert_array_equal(tune["outer_step"][...], [0, 1, 2])
        assert tune.attrs["steps_done"] == 3
        assert fh["final"].attrs["rel_l2"] == result.final.rel_l2
    assert not ckpt.exists() and not (tmp_path / "t.h5.final.ckpt").exists()


def _params(result):
    return np.concatenate([v.detach().double().numpy().ravel() for _, v in sorted(result.params.items())])


def _interrupted_final_solve(tmp_path, monkeypatch, ckpt):
    """The tuning (finished, its checkpoint at OUT.h5.ckpt) and a final solve stopped by
    Ctrl-C at its first checkpoint (step 2 of 4, trainer.checkpoint_every: 2); the saved
    parameters are saved shifted by 0.5, so that a solve that continues from the checkpoint
    is told apart from one that starts over."""


    from pinnlab.io.checkpoint import comparable_text, config_hash
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    config = configuration.load(_write(tmp_path), ["trainer.checkpoint_every=2"])
    identity = config.identity()
    setup = build_tuning(config)
    outcome = run_tuning(setup, checkpoint=tmp_path / "t.h5.ckpt",
                         metadata={"config": config_hash(identity), "config_text": comparable_text(identity)})
    stop_final_solve_at_its_first_checkpoint(setup, outcome, monkeypatch, ckpt)
    return setup, outcome


def stop_final_solve_at_its_first_checkpoint(setup, outcome, monkeypatch, ckpt):
    """Run the final solve to its first checkpoint (step 2 with checkpoint_every: 2),
    saved with the parameters shifted by 0.5, and stop it there by Ctrl-C."""
    import dataclasses

    import torch

    import pinnlab.io.checkpoint as checkpoints
    from pinnlab.tuning.run import final_solve

    save = checkpoints.save_checkpoint

    def save_then_stop(path, state, *args):
        save(path, dataclasses.replace(state, params={k: v + 0.5 for k, v in state.params.items()}), *args)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            final_solve(setup, outcome, progress="off", checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=False)["step"] == 2


def test_the_final_solve_resumes_its_checkpoint_also_without_checkpoint_every(tmp_path, monkeypatch):
    """With --resume a final-solve checkpoint of the same config and tuned values is
    continued even when this run saves none (trainer.checkpoint_every is a run-only
    setting): the same parameters as a resume with checkpoint_every, not a fresh solve."""
    import shutil

    from pinnlab.tuning.run import final_solve
    from pinnlab.tuning.setup import build_tuning

    ckpt = tmp_path / "t.h5.final.ckpt"
    setup_every, outcome = _interrupted_final_solve(tmp_path, monkeypatch, ckpt)
    copy = tmp_path / "copy.ckpt"
    shutil.copy(ckpt, copy)
    setup = build_tuning(configuration.load(tmp_path / "tune.yaml", []))
    resumed, _ = final_solve(setup, outcome, progress="off", checkpoint=ckpt, resume=True)
    reference, _ = final_solve(setup_every, outcome, progress="off", checkpoint=copy, resume=True)
    fresh, _ = final_solve(setup, outcome, progress="off")
    np.testing.assert_array_equal(_params(resumed), _params(reference))
    assert not np.array_equal(_params(resumed), _params(fresh))


def test_a_final_solve_checkpoint_of_other_tuned_values_is_not_continued(tmp_path, monkeypatch, capsys):
    """The final solve's checkpoint is tied to the tuned values bit for bit: with other
    tuned values it is refused with a warning and the solve starts over (as a fresh one)."""
    import dataclasses

    from pinnlab.tuning.run import final_identity, final_solve

    ckpt = tmp_path / "t.h5.final.ckpt"
    setup, outcome = _interrupted_final_solve(tmp_path, monkeypatch, ckpt)
    other = dataclasses.replace(outcome, phi={k: v * 2 for k, v in outcome.phi.items()})
    assert final_identity(setup.config, other.phi) != final_identity(setup.config, outcome.phi)
    capsys.readouterr()
    resumed, _ = final_solve(setup, other, progress="off", checkpoint=ckpt, resume=True)
    assert "the final solve starts over and replaces its checkpoint" in capsys.readouterr().err
    fresh, _ = final_solve(setup, other, progress="off")
    np.testing.assert_array_equal(_params(resumed), _params(fresh))


def test_tune_resume_continues_an_interrupted_final_solve(tmp_path, monkeypatch):
    """``pinnlab tune --resume`` with the finished tuning's checkpoint and the final
    solve's: the final solve continues its checkpoint (the file's parameters are those of
    the continued solve, not of a fresh one), and both checkpoints are removed."""
    import shutil

    from pinnlab.tuning.run import final_solve

    ckpt = tmp_path / "t.h5.final.ckpt"
    setup_every, outcome = _interrupted_final_solve(tmp_path, monkeypatch, ckpt)
    shutil.copy(ckpt, tmp_path / "copy.ckpt")
    reference, _ = final_solve(setup_every, outcome, progress="off", checkpoint=tmp_path / "copy.ckpt", resume=True)
    code, out = _tune(tmp_path, extra=("--resume",))
    assert code == 0
    np.testing.assert_array_equal(fh_params(out), _params(reference))
    assert not ckpt.exists() and not (tmp_path / "t.h5.ckpt").exists()



MIX_SEARCH = WEIGHT_FG2U.replace("loss: {kind: biased, weights: {boundary: 1.0e-2}}",
                                 "loss: {kind: hybrid, switch_step: 2}") \
    .replace("method: fg2u\n  options: {num_directions: 1}\n", "method: random\n  trial_steps: 2\n") \
    .replace("tunables: {weights.boundary: {}}", "tunables: {mix: {low: 0.05, high: 0.95}}") \
    .replace("  horizon: 2\n", "")  # (beside trial_steps it is refused)


def test_a_searched_mix_is_the_best_trials_constant_in_the_final_solve(tmp_path):
    """A search picks one mix for all of the final solve: the best trial's (the one of
    lowest outer value among /tune/phi/mix), recorded as /tune/tuned/mix and followed at
    every step of the final solve (/trace/mix), not the range's start."""
    code, out = _tune(tmp_path, "tune.final_steps=4", text=MIX_SEARCH)
    assert code == 0
    with h5py.File(out) as fh:
        tried, values = fh["tune/phi/mix"][...], fh["tune/value"][...]
        assert tried.shape == (3,) and len(set(tried)) == 3
        best = tried[int(np.argmin(values))]
        np.testing.assert_array_equal(fh["tune/tuned/mix"][...], [best])
        np.testing.assert_allclose(fh["trace/mix"][...], np.full(4, best), rtol=1e-12)


def test_under_torchrun_only_an_indexed_cuda_device_is_refused(tmp_path):
    """Each torchrun process computes on cuda:LOCAL_RANK: ``device: cuda`` (or cpu) is
    accepted with 2 processes, ``cuda:1`` is refused with its one-line reason."""
    from pinnlab.tuning.command import check_processes

    cfg = _write(tmp_path)
    for device in ("cuda", "cpu"):
        check_processes(configuration.load(cfg, [f"trainer.device={device}"]), 2)
    with pytest.raises(configuration.ConfigError, match=r"^trainer\.device = 'cuda:1' under torchrun with 2 processes"):
        check_processes(configuration.load(cfg, ["trainer.device=cuda:1"]), 2)
