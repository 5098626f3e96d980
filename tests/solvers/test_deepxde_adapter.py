"""DeepXDE adapter: contained import side effects and a small solve to a stated error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pinnlab.equations import PoissonTwoBody


def test_pinnlab_never_imports_deepxde_unless_the_adapter_is_used():
    code = (
        "import sys, pinnlab, pinnlab.solvers, pinnlab.solvers.deepxde_adapter\n"
        "assert 'deepxde' not in sys.modules, 'deepxde imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deepxde_import_says_nothing_of_backends_but_passes_other_output_on(tmp_path):
    """DeepXDE's import prints which backend it uses and recommends another, once per
    process (every study worker and tuning trial): dropped; anything else written to
    stderr during the import (a warning) still reaches the user. (A stand-in deepxde
    package prints DeepXDE 1.15's lines and a warning.)"""
    fake = tmp_path / "deepxde"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import sys, warnings\n"
        "print('Using backend: pytorch\\nOther supported backends: tensorflow.compat.v1, tensorflow, jax, "
        "paddle.\\npaddle supports more examples now and is recommended.', file=sys.stderr, flush=True)\n"
        "warnings.warn('a deprecation of its own')\n"
    )
    code = "from pinnlab.solvers.deepxde_adapter import import_deepxde; import_deepxde()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert "backend" not in out.stderr and "recommended" not in out.stderr, out.stderr
    assert "UserWarning: a deprecation of its own" in out.stderr, out.stderr


def test_adapter_solves_small_poisson_and_restores_torch_state():
    pytest.importorskip("deepxde")
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    device, dtype = torch.get_default_device(), torch.get_default_dtype()
    result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=500, lr=1e-3, width=32,
                                depth=3, batch_size=64, test_points=500, seed=0)
    assert torch.get_default_device() == device and torch.get_default_dtype() == dtype
    # stated error: 500 Adam steps of DeepXDE's autograd PINN on 3-D Poisson reach < 8e-2
    assert result.final.rel_l2 < 8e-2, result.final.rel_l2
    assert result.history.trace_loss[-1] < result.history.trace_loss[0]


def test_a_solve_leaves_the_callers_random_streams_where_they_were():
    """DeepXDE's set_random_seed reseeds Python's, NumPy's and torch's generators for its
    own reproducibility; a caller's streams went on from the solve's seed after every
    call (the same "random" numbers after each solve). Now the next draws of all three
    are those the caller would have got without the solve, and the solve itself is still
    reproducible (the same trace twice)."""
    pytest.importorskip("deepxde")
    import random

    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    def solve():
        return solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=3, width=8, depth=2, batch_size=8,
                                  test_points=10, seed=0).history.trace_loss

    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    expected = draws()
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    first = solve()
    assert draws() == expected
    assert solve() == first


def test_adapter_soft_constraint_uses_loss_weights():
    pytest.importorskip("deepxde")
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    eq = PoissonTwoBody(3, seed=1, constraint="soft")
    result = solve_with_deepxde(eq, steps=300, lr=1e-3, width=32, depth=3, batch_size=64,
                                boundary_points=64, loss_weights=[1.0, 10.0], test_points=300)
    assert result.final.rel_l2 < 0.3, result.final.rel_l2


def test_solve_with_deepxde_backend_writes_the_same_result_file(tmp_path, capsys, monkeypatch):
    pytest.importorskip("deepxde")
    import h5py

    from pinnlab.cli import main

    cfg = tmp_path / "dde.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1}\n"
                   "model: {width: 16, depth: 3}\n"
                   "trainer: {steps: 50, batch_size: 32, eval_every: 25, test_points: 100, backend: deepxde}\n")
    out = tmp_path / "dde.h5"
    stale = tmp_path / "dde.h5.ckpt"  # an interrupted pinnlab run's, started over with --overwrite
    stale.write_bytes(b"an earlier run's checkpoint")
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off", "--overwrite"]) == 0
    assert not stale.exists()  # (it stayed beside the finished result)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("rel_l2=") and "steps_per_second=" in last
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == "solve" and "backend: deepxde" in fh.attrs["config"]
        for key in ("step", "loss", "rel_l2", "rel_l1", "lr", "wall_s"):
            assert key in fh["history"]
        assert np.isfinite(fh["final"].attrs["rel_l2"]) and fh["eval/u_pred"].shape == (100,)
        # the documented solve layout (README "Result files"), as pinnlab's trainer writes it
        trace = fh["trace/loss"][...]
        assert trace.shape == fh["trace/mix"].shape == (50,)  # one value per step
        assert list(fh["history/step"][...]) == [25, 50]
        assert fh["history/loss"][...] == pytest.approx([trace[:25].mean(), trace[25:].mean()])
        assert np.isfinite(fh["history/rel_l2"][...]).all()
        assert fh["final"].attrs["best_rel_l2"] == fh["history/rel_l2"][...].min()
        assert {fh.attrs["dtype"]} == {str(p.dtype) for p in fh["params"].values()} == {"float32"}
        assert fh["final"].attrs["peak_mem_mb"] > 0 and fh["final"].attrs["steps_done"] == 50
        assert fh["slices/main/u_pred"].shape == (64, 64)
        assert np.nanmax(fh["slices/main/abs_err"][...]) < 10 * fh["final"].attrs["max_err"]
    from pinnlab.plots import solve as plots_solve

    figures = []
    save = plots_solve._save
    monkeypatch.setattr(plots_solve, "_save", lambda fig, path, **kw: figures.append(fig) or save(fig, path, **kw))
    assert main(["plot", str(out), "-o", str(tmp_path / "plots")]) == 0
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"curves.png", "slice.png", "radial.png"}
    assert figures[0].axes[1].get_ylabel() == "test error of u (DeepXDE network)"  # no smoothing there


def test_the_trace_holds_the_loss_each_step_minimised(monkeypatch):
    """``trace_loss[i]`` is the loss of step i + 1 before its update: the first one is the
    loss DeepXDE itself reports at step 0 (same network, same first batch)."""
    pytest.importorskip("deepxde")
    from pinnlab.solvers.deepxde_adapter import import_deepxde, solve_with_deepxde

    dde = import_deepxde()
    reported = []
    train = dde.Model.train

    def spy(self, *args, **kwargs):
        losses, state = train(self, *args, **kwargs)
        reported.append(losses)
        return losses, state

    monkeypatch.setattr(dde.Model, "train", spy)
    result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=5, width=8, depth=2, batch_size=16,
                                test_points=50, display_every=2)
    history = result.history
    assert len(history.trace_loss) == 5 and history.trace_mix == [0.0] * 5
    assert history.trace_loss[0] == pytest.approx(float(np.sum(reported[0].loss_train[0])), rel=1e-5)
    assert history.rows["step"] == [2, 4, 5]
    assert history.rows["loss"] == pytest.approx([np.mean(history.trace_loss[a:b])
                                                  for a, b in ((0, 2), (2, 4), (4, 5))])
    assert result.final.rel_l2 == history.rows["rel_l2"][-1]
    assert result.stats["steps_done"] == 5.0


def test_the_progress_display_follows_every_step_and_leaves_the_training_alone(capsys):
    """``progress="log"`` writes pinnlab's lines every ``log_every`` steps and at the last,
    with the loss of the step and the latest relative L2; the run is the same bit for bit
    as one without the display, which (the default) prints nothing."""
    pytest.importorskip("deepxde")
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    def run(**kwargs):
        result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=5, width=8, depth=2, batch_size=16,
                                    test_points=50, display_every=2, **kwargs)
        out = capsys.readouterr()
        assert "compil" not in (out.out + out.err).lower()  # DeepXDE's compile lines, every trial/cell
        return result, [line for line in out.err.splitlines() if line.startswith("train ")]

    quiet, lines = run()
    assert lines == []
    shown, lines = run(progress="log", log_every=2)
    assert [line.split()[2] for line in lines] == ["2/5", "4/5", "5/5"]
    trace, rel_l2 = shown.history.trace_loss, shown.history.rows["rel_l2"]
    for line, step, row in zip(lines, (2, 4, 5), rel_l2):
        assert f"loss={trace[step - 1]:.3e} rel_l2={row:.3e} it/s=" in line
    assert trace == quiet.history.trace_loss and rel_l2 == quiet.history.rows["rel_l2"]
    assert all(torch.equal(shown.params[k], quiet.params[k]) for k in quiet.params)


def test_a_deepxde_run_says_it_keeps_no_checkpoint(tmp_path, capsys, monkeypatch):
    """`--resume` said "no checkpoint ...; pass --overwrite to start over", and with
    `--resume --overwrite` the same line; Ctrl-C said only "interrupted"."""
    import importlib.util

    if importlib.util.find_spec("deepxde") is None:  # (importorskip's import prints DeepXDE's banner)
        pytest.skip("needs deepxde")
    from pinnlab import config as configuration
    from pinnlab.cli import main

    cfg = tmp_path / "dde.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1}\nmodel: {width: 8, depth: 2}\n"
                   "trainer: {steps: 5, batch_size: 8, test_points: 10, backend: deepxde}\n")
    out = tmp_path / "dde.h5"
    for flags in (["--resume"], ["--resume", "--overwrite"]):
        assert main(["solve", str(cfg), "-o", str(out), "--progress", "off", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err == ("pinnlab: error: --resume: a DeepXDE run (trainer.backend: deepxde) keeps no checkpoint to "
                       "resume from; to start over, leave out --resume"), err  # (nothing there to overwrite)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(configuration, "solve_config_with_deepxde", interrupted)
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 130
    err = capsys.readouterr().err
    assert "pinnlab: a DeepXDE run keeps no checkpoint; run it again to start over" in err, err
    assert not out.exists()


def test_a_deepxde_solve_weighs_its_residual_by_the_configs_weight(tmp_path):
    """`loss.weights.residual=10` with a hard constraint gave the loss trace and errors of
    weight 1 (the weights reached DeepXDE only with a soft constraint), while the result
    recorded `weights: {residual: 10}`; the tuner's black box passed it."""
    pytest.importorskip("deepxde")
    from pinnlab import config as C

    cfg = tmp_path / "dde.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1}\nmodel: {width: 8, depth: 2}\n"
                   "trainer: {steps: 2, batch_size: 8, test_points: 10, backend: deepxde}\n")
    losses = {}
    for weight in (1, 10):
        config = C.load(cfg, [f"loss.weights.residual={weight}"])
        equation = C.build(config)[0].equation
        losses[weight] = C.solve_config_with_deepxde(config, equation).history.trace_loss[0]
    assert losses[10] == pytest.approx(10 * losses[1], rel=1e-5)


def test_deepxde_steps_per_second_leaves_out_the_first_step_as_pinnlab_does(monkeypatch):
    """The timer started before `compile`, so DeepXDE's one-off costs counted as training
    (it/s = 227 in the progress line against steps_per_second = 51.4 in the result of a
    40-step run). A 2 s pause in the first step (its resampling callback) is now not
    timed: the 19 steps after it take at most the run's wall-clock time less the pause
    (a bound, not a speed threshold: it holds on any machine, and with the pause timed
    it fails unless compiling and the first step took more than the pause)."""
    pytest.importorskip("deepxde")
    import time

    from pinnlab.solvers.deepxde_adapter import import_deepxde, solve_with_deepxde

    resampler = import_deepxde().callbacks.PDEPointResampler
    resample, calls = resampler.on_batch_end, []

    def slow_first_resample(self):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2.0)
        return resample(self)

    monkeypatch.setattr(resampler, "on_batch_end", slow_first_resample)
    result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=20, width=8, depth=2, batch_size=8,
                                test_points=10)
    assert len(calls) == 20 and result.stats["wall_s"] > 2.0
    assert result.stats["steps_per_second"] >= 19 / (result.stats["wall_s"] - 2.0), result.stats
