"""pinnlab tune: tuning lowers the outer objective, exact resume, refused configs, DeepXDE black box."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab.bilevel import unrolled_objective
from pinnlab.cli import main
from pinnlab.io.observations import (
    ObservationError,
    load_observations,
    save_observations,
)
from pinnlab.losses import Piecewise
from pinnlab.tuning.run import run_tuning
from pinnlab.tuning.setup import build_tuning

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 16, depth: 3}
estimator: {kind: stein, sigma: 0.05, samples: 8, noise: shared, eval_samples: 32}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 40, lr: 1.0e-2, schedule: constant, batch_size: 16, eval_every: 20, test_points: 200, dtype: float64}
data: {source: synthetic, points: 30, noise: 0.01, seed: 0}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 32}
  outer_steps: 10
  horizon: 10
  outer_lr: 1.0
"""

INVERSE = """\
equation: {name: fokker_planck_aniso, dim: 4, seed: 0}
model: {width: 16, depth: 3}
estimator: {kind: stein, sigma: 0.05, samples: 8, noise: shared, eval_samples: 32}
trainer: {steps: 20, lr: 1.0e-2, schedule: constant, batch_size: 32, eval_every: 20, test_points: 100, dtype: float64}
data: {source: synthetic, points: 200, noise: 0.01, seed: 0}
tune:
  method: joint
  tunables: {coefficients.mu: {init: 0.0}}
  objective: {kind: data, samples: 16}
  outer_steps: 30
  horizon: 10
  outer_lr: 0.05
"""


def _write(tmp_path, text=TINY, name="tune.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def kill_final_solve_at(monkeypatch, step):
    """Make `pinnlab tune` stop as Ctrl-C would right after its final solve saved the
    checkpoint of ``step``; returns the function that undoes it."""
    import pinnlab.io.checkpoint as checkpoints

    save = checkpoints.save_checkpoint

    def killed(path, state, *args):
        save(path, state, *args)
        if str(path).endswith(".final.ckpt") and state.step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_checkpoint", killed)
    return lambda: monkeypatch.setattr(checkpoints, "save_checkpoint", save)


def final_solve_starts(monkeypatch) -> list[int]:
    """The step each later solve of a tuning starts from (0 without a checkpoint), filled
    in as they start."""
    import pinnlab.tuning.run as run_module

    started: list[int] = []
    real_train = run_module.train

    def recorded(problem, **kwargs):
        started.append(kwargs["state"].step if kwargs.get("state") is not None else 0)
        return real_train(problem, **kwargs)

    monkeypatch.setattr(run_module, "train", recorded)
    return started


def _h_from_scratch(setup, phi, steps):
    """h(φ) after ``steps`` inner steps from the fixed θ_0 (independent of warm starts)."""
    import dataclasses

    problem = dataclasses.replace(setup.bilevel, horizon=steps)
    with torch.no_grad():
        return float(unrolled_objective(problem)(phi))


def test_a_final_solve_killed_after_a_checkpoint_resumes_from_it_exactly(tmp_path, monkeypatch, capsys):
    """With trainer.checkpoint_every the final solve saves OUT.h5.final.ckpt; killed after
    its step-20 checkpoint and resumed, the tuning comes from its own checkpoint, the final
    solve continues at step 20, and the result equals the uninterrupted run's bit for bit.
    A run without --resume is refused while the final checkpoint exists; a checkpoint of
    other tuned values is not used (the final solve starts over, with a warning)."""
    import pinnlab.io.checkpoint as checkpoints
    import pinnlab.tuning.run as run_module

    cfg = _write(tmp_path)
    overrides = ["trainer.checkpoint_every=10", "tune.outer_steps=3"]
    reference = tmp_path / "reference.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(reference), "--progress", "off"]) == 0
    assert not (tmp_path / "reference.h5.final.ckpt").exists()
    undo = kill_final_solve_at(monkeypatch, 20)
    out = tmp_path / "run.h5"
    capsys.readouterr()
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]) == 130
    undo()
    final = tmp_path / "run.h5.final.ckpt"
    assert (f"pinnlab: final solve step 20 saved in {str(final)!r}, the tuning in "
            f"{str(tmp_path / 'run.h5.ckpt')!r}; --resume continues from it") in capsys.readouterr().err
    assert final.is_file() and (tmp_path / "run.h5.ckpt").is_file() and not out.exists()
    capsys.readouterr()
    lone = tmp_path / "lone.h5.final.ckpt"  # (without the tuning's checkpoint it continues: not resumable)
    lone.write_bytes(final.read_bytes())
    for target, expected in ((out, "pass --resume"), (tmp_path / "lone.h5", "so it cannot be resumed; pass --overwrite")):
        assert main(["tune", str(cfg), *overrides, "-o", str(target), "--progress", "off"]) == 2
        assert expected in capsys.readouterr().err
    started = final_solve_starts(monkeypatch)
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--resume", "--progress", "off"]) == 0
    assert started == [20] and not final.exists() and not (tmp_path / "run.h5.ckpt").exists()
    with h5py.File(reference) as a, h5py.File(out) as b:
        assert a["final"].attrs["rel_l2"] == b["final"].attrs["rel_l2"]
        np.testing.assert_array_equal(a["trace/loss"][...], b["trace/loss"][...])
        for key in a["params"]:
            np.testing.assert_array_equal(a["params"][key][...], b["params"][key][...])
    # a final checkpoint of other tuned values: solved again from step 0, and warned
    other = tmp_path / "other.h5"
    undo = kill_final_solve_at(monkeypatch, 20)
    assert main(["tune", str(cfg), *overrides, "-o", str(other), "--progress", "off"]) == 130
    undo()
    real_identity = run_module.final_identity
    monkeypatch.setattr(run_module, "final_identity", lambda config, phi: "other tuned values")
    started.clear()
    capsys.readouterr()
    assert main(["tune", str(cfg), *overrides, "-o", str(other), "--resume", "--progress", "off"]) == 0
    assert started == [0] and "the final solve starts over" in capsys.readouterr().err
    # resumed without trainer.checkpoint_every: it still continues from its saved step 20
    # (it solved again from step 0 and deleted the checkpoint without a word), and saves no more
    quiet = tmp_path / "quiet.h5"
    monkeypatch.setattr(run_module, "final_identity", real_identity)
    undo = kill_final_solve_at(monkeypatch, 20)
    assert main(["tune", str(cfg), *overrides, "-o", str(quiet), "--progress", "off"]) == 130
    undo()
    save = checkpoints.save_checkpoint
    saves = []
    monkeypatch.setattr(checkpoints, "save_checkpoint", lambda path, *args: saves.append(path) or save(path, *args))
    started.clear()
    assert main(["tune", str(cfg), *overrides, "trainer.checkpoint_every=0", "-o", str(quiet), "--resume",
                 "--progress", "off"]) == 0
    assert started == [20] and not (tmp_path / "quiet.h5.final.ckpt").exists()
    assert not [path for path in saves if str(path).endswith(".final.ckpt")], saves
    with h5py.File(reference) as a, h5py.File(quiet) as b:
        for key in a["params"]:
            np.testing.assert_array_equal(a["params"][key][...], b["params"][key][...])
    # what a final checkpoint must match: the tuned values bit for bit (and the config)
    config = configuration.load(cfg)
    phi = {"weights.boundary": torch.tensor(0.25, dtype=torch.float64)}
    nudged = {"weights.boundary": torch.nextafter(phi["weights.boundary"], torch.tensor(1.0, dtype=torch.float64))}
    monkeypatch.undo()
    identity = run_module.final_identity
    assert identity(config, phi) == identity(config, {k: v.clone() for k, v in phi.items()})
    assert identity(config, phi) != identity(config, nudged)
    assert identity(config, phi) != identity(configuration.load(cfg, ["trainer.steps=41"]), phi)


def test_tuning_a_badly_scaled_boundary_weight_lowers_the_outer_objective(tmp_path):
    setup = build_tuning(configuration.load(_write(tmp_path)))
    before = _h_from_scratch(setup, setup.phi0, 60)
    outcome = run_tuning(setup)
    after = _h_from_scratch(setup, outcome.phi, 60)
    # the boundary weight grows from 1e-3 and the data misfit after 60 fresh steps falls
    assert float(outcome.phi["weights.boundary"]) > 3e-2
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("method", ["fg2u", "random", "optuna"])
def test_resume_after_interruption_is_exact(tmp_path, method, monkeypatch, capsys):
    """Interrupted after 3 of 10 outer steps (trials), resumed: only steps 3..9 run again,
    and the φ trajectory, values, final metrics and network equal the uninterrupted run's
    bit for bit (for TPE that needs the sampler's randomness to survive the restart). The
    resume reads the checkpoint's tensors once (its config check only maps the file),
    and refuses the checkpoint for another config."""
    if method == "optuna":
        pytest.importorskip("optuna")
    cfg = _write(tmp_path)
    overrides = [f"tune.method={method}"]
    if method != "fg2u":
        overrides += ["tune.options={}", "tune.trial_steps=10"]
    reference = tmp_path / "reference.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(reference), "--progress", "off"]) == 0

    import pinnlab.tuning.run as run_module

    original = run_module.run_tuning
    interrupted = tmp_path / "interrupted.h5"

    def crash_after_three(setup, **kwargs):
        progress = kwargs["progress"]

        def stop(k, phi, diagnostics):
            if k == 3:
                raise KeyboardInterrupt
            progress(k, phi, diagnostics)

        return original(setup, **{**kwargs, "progress": stop})

    monkeypatch.setattr("pinnlab.tuning.run.run_tuning", crash_after_three)
    capsys.readouterr()
    assert main(["tune", str(cfg), *overrides, "-o", str(interrupted), "--progress", "off"]) == 130
    assert not interrupted.exists() and (tmp_path / "interrupted.h5.ckpt").exists()
    unit = "outer step" if method == "fg2u" else "trial"
    assert (f"pinnlab: {unit} 3 saved in {str(tmp_path / 'interrupted.h5.ckpt')!r}; --resume continues from it"
            in capsys.readouterr().err.splitlines())
    ran = []

    def record_steps(setup, **kwargs):
        progress = kwargs["progress"]

        def seen(k, phi, diagnostics):
            ran.append(k)
            progress(k, phi, diagnostics)

        return original(setup, **{**kwargs, "progress": seen})

    checkpoint = tmp_path / "interrupted.h5.ckpt"
    saved = checkpoint.read_bytes()
    other = ["trainer.seed=1"]
    assert main(["tune", str(cfg), *overrides, *other, "-o", str(interrupted), "--resume", "--progress", "off"]) == 2
    # the setting that differs is named (it said only "another configuration")
    assert ("belongs to another configuration (trainer.seed: 0 in the checkpoint, 1 in this run); to start over, "
            "pass --overwrite instead of --resume"
            in capsys.readouterr().err and checkpoint.read_bytes() == saved)
    full_loads = []
    load = torch.load

    def counted(f, *args, **kwargs):
        if f == checkpoint and not kwargs.get("mmap"):
            full_loads.append(f)
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    monkeypatch.setattr("pinnlab.tuning.run.run_tuning", record_steps)
    assert main(["tune", str(cfg), *overrides, "-o", str(interrupted), "--resume", "--progress", "off"]) == 0
    monkeypatch.setattr("pinnlab.tuning.run.run_tuning", original)
    monkeypatch.setattr(torch, "load", load)
    assert ran == list(range(3, 10)), ran  # the finished steps came from the checkpoint
    assert len(full_loads) == 1, full_loads
    assert not (tmp_path / "interrupted.h5.ckpt").exists()
    with h5py.File(reference) as a, h5py.File(interrupted) as b:
        np.testing.assert_array_equal(a["tune/phi/weights.boundary"][...], b["tune/phi/weights.boundary"][...])
        np.testing.assert_array_equal(a["tune/value"][...], b["tune/value"][...])
        assert a["final"].attrs["rel_l2"] == b["final"].attrs["rel_l2"]
        for key in a["params"]:
            np.testing.assert_array_equal(a["params"][key][...], b["params"][key][...])


def _stopped_at(stop: int):
    """fg2u's estimate, with Ctrl-C at outer step ``stop``."""
    from pinnlab.bilevel import ForwardGradientUnroll

    estimate = ForwardGradientUnroll.estimate

    def stopped(self, problem, phi, *, outer_step=0, **kwargs):
        if outer_step == stop:
            raise KeyboardInterrupt
        return estimate(self, problem, phi, outer_step=outer_step, **kwargs)

    return stopped


def test_a_stop_between_checkpoints_saves_the_last_completed_outer_step(tmp_path, monkeypatch, capsys):
    """With tune.checkpoint_every = 4, Ctrl-C while outer step 6 is estimated lost steps 4
    and 5: the tuning now saves step 6's start, says so, and the resumed run runs steps
    6..9 only and ends bit for bit where the uninterrupted one ends."""
    from pinnlab.bilevel import ForwardGradientUnroll

    cfg = _write(tmp_path)
    overrides = ["tune.checkpoint_every=4"]
    reference = tmp_path / "reference.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(reference), "--progress", "off"]) == 0
    estimate = ForwardGradientUnroll.estimate
    monkeypatch.setattr(ForwardGradientUnroll, "estimate", _stopped_at(6))
    out = tmp_path / "run.h5"
    capsys.readouterr()
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]) == 130
    checkpoint = tmp_path / "run.h5.ckpt"
    assert torch.load(checkpoint, weights_only=True)["outer_step"] == 6
    assert f"pinnlab: outer step 6 saved in {str(checkpoint)!r}; --resume continues from it" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr(ForwardGradientUnroll, "estimate",
                        lambda self, problem, phi, *, outer_step=0, **kw:
                        ran.append(outer_step) or estimate(self, problem, phi, outer_step=outer_step, **kw))
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--resume", "--progress", "off"]) == 0
    assert ran == [6, 7, 8, 9]
    with h5py.File(reference) as a, h5py.File(out) as b:
        np.testing.assert_array_equal(a["tune/phi/weights.boundary"][...], b["tune/phi/weights.boundary"][...])
        np.testing.assert_array_equal(a["tune/value"][...], b["tune/value"][...])
        for key in a["params"]:
            np.testing.assert_array_equal(a["params"][key][...], b["params"][key][...])


def test_a_final_solve_stopped_without_checkpoints_says_the_tuning_is_kept(tmp_path, monkeypatch, capsys):
    """Stopped in a final solve that saves no steps: the line names the tuning's checkpoint
    and says that --resume solves again (it named only "outer step 2", as if the stop had
    come during the tuning)."""
    import pinnlab.tuning.run as run_module

    def stopped(problem, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "train", stopped)
    out = tmp_path / "run.h5"
    assert main(["tune", str(_write(tmp_path)), "tune.outer_steps=2", "-o", str(out), "--progress", "off"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert (f"pinnlab: the tuning is saved in {str(tmp_path / 'run.h5.ckpt')!r}; --resume runs the final solve "
            "again (trainer.checkpoint_every saves its steps)") in err, err
    # resumed over a damaged final checkpoint: solved again, with a warning that does not
    # also tell the user to delete the file it replaces
    monkeypatch.undo()
    final = tmp_path / "run.h5.final.ckpt"
    final.write_bytes(b"\x80\x04 damaged")
    assert main(["tune", str(_write(tmp_path)), "tune.outer_steps=2", "trainer.checkpoint_every=10", "-o", str(out),
                 "--resume", "--progress", "off"]) == 0
    err = capsys.readouterr().err
    assert (f"warning: the final solve starts over and replaces its checkpoint (checkpoint {str(final)!r} is "
            "corrupted or unreadable (UnpicklingError))") in err.splitlines(), err
    assert out.is_file() and not final.exists()


def test_tune_result_file_and_plots(tmp_path, capsys):
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert main(["tune", str(cfg), "tune.outer_steps=2", "-o", str(out), "--progress", "off"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("rel_l2=")
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == "tune" and fh["tune"].attrs["method"] == "fg2u"
        assert fh["tune/phi/weights.boundary"].shape == (2,)
        assert fh["tune/value"].shape == (2,) and np.isfinite(fh["tune/value"][...]).all()
        assert "rel_l2" in fh["final"].attrs
    plots = tmp_path / "plots"
    assert main(["plot", str(out), "-o", str(plots)]) == 0
    assert {"tune.png", "curves.png"} <= {p.name for p in plots.iterdir()}

    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "ok" and fh["tune"].attrs["message"] == ""


def test_a_diverging_outer_loop_keeps_the_last_finite_values_and_exits_1(tmp_path, capsys):
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    # SGD at 1e6 overflows the log-parameterised weight within the three outer steps
    code = main(["tune", str(cfg), "tune.method=rgu", "tune.options={}", "tune.outer_optimizer=sgd",
                 "tune.outer_lr=1.0e6", "tune.outer_steps=3", "-o", str(out), "--progress", "off"])
    assert code == 1
    assert "tuning stopped early" in capsys.readouterr().err
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "nonfinite" and "non-finite" in fh["tune"].attrs["message"]
        done = int(fh["tune"].attrs["steps_done"])
        assert done < 3
        tuned = fh["tune/tuned/weights.boundary"][...]
        assert np.isfinite(tuned).all()
        assert tuned == pytest.approx(fh["tune/phi/weights.boundary"][-1] if done else 1.0e-3)
        assert np.isfinite(fh["eval/u_pred"][...]).all()


@pytest.mark.parametrize("optimizer, lr, dtype", [("sgd", "1.0e300", "float64"), ("adam", "3.0e38", "float32")])
def test_a_run_that_stops_before_any_theta_still_writes_its_final_solve(tmp_path, capsys, optimizer, lr, dtype):
    """final_init: continue when the first outer step already fails: there is no tuned θ,
    so the final solve starts from the initialisation and says so (it ended in a
    KeyError 'trial_steps' after the tuning, writing no result). Adam at an outer lr just
    below float32's largest value overflows inside its step (torch raised a RuntimeError,
    a traceback): the same stop."""
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    code = main(["tune", str(cfg), "tune.method=rgu", "tune.options={}", f"trainer.dtype={dtype}",
                 f"tune.outer_optimizer={optimizer}", f"tune.outer_lr={lr}", "tune.outer_steps=3", "tune.final_init=continue", "-o", str(out),
                 "--progress", "off"])
    assert code == 1
    assert "starts from the initialisation (no outer step left a finite θ)" in capsys.readouterr().err
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "nonfinite" and int(fh["tune"].attrs["steps_done"]) == 0
        assert np.isfinite(fh["eval/u_pred"][...]).all()


def test_inverse_problem_recovers_drift_direction(tmp_path):
    """fokker_planck_aniso, d = 4: μ from 200 noisy observations moves towards the truth."""
    setup = build_tuning(configuration.load(_write(tmp_path, INVERSE)))
    truth = setup.problem.equation.coefficients["mu"]
    outcome = run_tuning(setup)
    err = float((outcome.phi["coefficients.mu"].double() - truth).norm() / truth.norm())
    assert err < 0.7, err  # from 1.0 at μ = 0


@pytest.mark.parametrize("method", ["joint", "fg2u", "fg2u_jvp", "zo_fg2u"])
def test_inverse_problem_training_points_never_follow_the_true_drift(tmp_path, method, monkeypatch):
    """fokker_planck_aniso's sampler centres points on the drift μ, x ~ N(μt, (2 − t)I): the
    training steps of the inverse problem drew them at the true μ, the answer it recovers
    (a known limitation in the README). They follow the current estimate μ̂ now, as a
    value (tests/solvers/test_training.py checks that no gradient flows through the
    points); observations and test set keep the true μ (they are the measured data)."""
    from pinnlab.equations.fokker_planck import FokkerPlanckAniso

    original = FokkerPlanckAniso.sample_collocation
    training, other = [], []

    def spy(self, n, *, generator, dtype=torch.float32, coefficients=None):
        if sys._getframe(1).f_code.co_name == "term_losses":
            training.append(None if coefficients is None else coefficients["mu"])
        else:
            other.append(coefficients)
        return original(self, n, generator=generator, dtype=dtype, coefficients=coefficients)

    monkeypatch.setattr(FokkerPlanckAniso, "sample_collocation", spy)
    text = INVERSE.replace("method: joint", f"method: {method.removesuffix('_jvp')}").replace(
        "outer_steps: 30", "outer_steps: 2").replace("horizon: 10", "horizon: 3").replace("steps: 20,", "steps: 5,")
    if method == "fg2u_jvp":
        text = text.replace("  tunables:", "  options: {tangents: jvp}\n  tunables:")
    setup = build_tuning(configuration.load(_write(tmp_path, text)))
    truth = setup.problem.equation.coefficients["mu"]
    run_tuning(setup)
    assert training and other == [None] * len(other)
    for mu in training:
        assert mu is not None
        assert not torch.allclose(mu.double(), truth)  # from μ = 0 after two outer steps
    assert any(bool(mu.abs().sum() > 0) for mu in training)  # ... and it moved: μ̂, not a constant


@pytest.mark.parametrize("method", ["fg2u", "rgu"])
def test_the_residual_objective_of_an_inverse_problem_draws_its_points_at_the_estimate(tmp_path, method, monkeypatch):
    """The outer residual objective's held-out points of fokker_planck_aniso were drawn
    once, at the true μ (sample_test), the answer being recovered; they are the same draw
    at the current μ̂ now, as a value (no gradient through the points), like the training
    steps' (test above). Nothing is drawn at the true μ when the objective is built either
    (a draw it never used)."""
    from pinnlab.equations.fokker_planck import FokkerPlanckAniso

    original = FokkerPlanckAniso.sample_collocation
    held_out, at_build = [], []

    def spy(self, n, *, generator, dtype=torch.float32, coefficients=None):
        callers = {sys._getframe(i).f_code.co_name for i in range(1, 5)}
        mu = None if coefficients is None else coefficients["mu"]
        if "held_out" in callers:
            held_out.append(mu)
        elif "make_outer_loss" in callers:
            at_build.append(mu)
        return original(self, n, generator=generator, dtype=dtype, coefficients=coefficients)

    monkeypatch.setattr(FokkerPlanckAniso, "sample_collocation", spy)
    text = INVERSE.replace("method: joint", f"method: {method}").replace(
        "kind: data, samples: 16", "kind: residual, points: 64, samples: 16").replace(
        "outer_steps: 30", "outer_steps: 3").replace("horizon: 10", "horizon: 3").replace("steps: 20,", "steps: 5,")
    setup = build_tuning(configuration.load(_write(tmp_path, text)))
    truth = setup.problem.equation.coefficients["mu"]
    outcome = run_tuning(setup)
    assert held_out and all(mu is not None and not mu.requires_grad for mu in held_out) and not at_build
    assert not any(torch.allclose(mu.double(), truth) for mu in held_out)
    assert any(bool(mu.abs().sum() > 0) for mu in held_out)  # μ̂ moved from 0 ...
    assert outcome.status == "ok" and all(math.isfinite(v) for v in outcome.history["value"])


BAD = [
    ("tune.objective.kind=training_loss", "sends them to zero"),
    # the choices a misspelling lists are those that run (training_loss was one of them)
    ("tune.objective.kind=dat", "should be 'data', 'residual' or 'reference'"),
    ("tune.tunables={mix: {}}", "needs loss.kind: hybrid"),
    ("tune.tunables={weights.data: {}}", "no term 'data'"),
    ("tune.tunables={coefficients.nu: {}}", "has no coefficient 'nu'"),
    ("tune.tunables={learning_rate: {}}", "unknown tunable"),
    ("tune.tunables={weights.boundary: {init: -1.0}}", "must be > 0"),
    # finite, but not in float32, φ's dtype here (a traceback in the first training step)
    ("trainer.dtype=float32; tune.tunables={weights.boundary: {init: 1.0e39}}",
     "tune.tunables.weights.boundary.init = 1e+39: beyond float32"),
    ("trainer.dtype=float32; tune.outer_lr=3.5e38", "tune.outer_lr = 3.5e+38: beyond float32's largest value"),
    ("tune.method=bogus", "tune.method = 'bogus': unknown method"),
    # the init at fault was not named; here it is the default, on the edge of the default range
    ("tune.tunables={weights.boundary: {transform: logit}}",
     "tune.tunables.weights.boundary.init = 0.001 (the default): a logit-parameterised value must lie in (0.001, 1000.0)"),
    ("tune.then={method: bogus, after: 2}", "tune.then.method = 'bogus': unknown method"),  # was named tune.method
    # {method:rgu} is the one key 'method:rgu' (YAML): it was "tune.then.method: required key is missing"
    ("tune.then={method:rgu,after:2}", "tune.then.method:rgu: unknown key (allowed: method, options, after, "
     "outer_lr) (YAML needs a space after the colon of a key: {key: value})"),
    ("tune.options={num_directions: 0}", "num_directions"),
    # more random directions than tuned values: fgu is exact for N directions (1e8 ran until stopped)
    ("tune.options={num_directions: 2}", "num_directions = 2: more directions than the N = 1 tuned values"),
    ("tune.then={method: fg2u, after: 2, options: {num_directions: 100000000}}",
     "tune.then.options.num_directions = 100000000: more directions than the N = 1 tuned values"),
    ("tune.method=joint", "cannot be fitted by the training loss"),
    ("tune.inner=deepxde", "black box"),
    ("tune.horizon=0", "tune.horizon = 0"),
    ("tune.outer_betas=[0.9, 1.0]", "tune.outer_betas"),
    ("tune.outer_optimizer=sgd; tune.outer_betas=[0.0, 0.0]", "SGD has none"),
    ("data.source=missing.csv", "data.source"),
    ("tune.method=penalty; tune.accumulate=2", "no hypergradient estimates to accumulate"),
    ("tune.then={method: random, after: 2}", "two-phase schedule needs hypergradient methods"),
    ("loss.weighting=lra", "the tuning's inner training has no loss weighting"),
    ("tune.method=optuna; tune.options={}; tune.tunables={weights.boundary: {low: 10, high: 1}}",
     "must be below high"),
    ("tune.method=random; tune.options={}; tune.tunables={weights.boundary: {low: -1}}", "low must be > 0"),
    ("tune.tunables={weights.boundary: {transform: identity}}", "must stay positive"),
    ("tune.objective.kind=residual; tune.objective.estimator=autograd; tune.tunables={sigma: {}}",
     "cannot score a tuned sigma"),
    # DeepXDE inner training with pinnlab's trainer settings (sgd, float64) recorded but not used
    ("tune.inner=deepxde; tune.method=zo_fg2u; tune.options={}; tune.tunables={lr: {}}", "use one trainer"),
    # log keeps the mix positive, not below 1: the final solve's schedule failed after the tuning
    ("loss.kind=hybrid; loss.switch_step=5; tune.tunables={mix: {transform: log}}", "which only logit keeps"),
    # the final solve of 20 steps would never reach the switch (as pinnlab solve refuses)
    ("loss.kind=hybrid; loss.switch_step=30; tune.final_steps=20", "must be < tune.final_steps (20)"),
    ("loss.kind=hybrid; loss.blend=[19,30]; tune.final_steps=20", "must be < tune.final_steps - 1 (19)"),
    # checked against the final solve's length, not trainer.steps (40): 45 < 50 was refused
    ("loss.kind=hybrid; loss.switch_step=55; tune.final_steps=50", "loss.switch_step = 55: must be < tune.final_steps (50)"),
    ("loss.kind=hybrid; loss.switch=auto; loss.window=19; tune.final_steps=20",
     "must be < tune.final_steps - 1 (19)"),
    # observations whose squares overflow the run's dtype: every outer value was inf (exit 1)
    ("data.noise=1.0e+300", "data.noise = 1e+300: the synthetic observations hold |u| up to"),
    ("trainer.dtype=float32; data.noise=1.0e+20", "whose square overflows float32 (largest 3.4e+38); lower "
     "data.noise or use trainer.dtype: float64"),
    # lr enters only the update, never g: these methods' hypergradient of it is 0 (status ok, lr unchanged)
    ("tune.method=hessian_free; tune.options={}; tune.tunables={lr: {}}",
     "tune.tunables.lr: tune.method = 'hessian_free' differentiates the inner loss, which the learning rate does "
     "not enter, so its hypergradient is 0"),
    ("tune.method=penalty; tune.options={}; tune.tunables={lr: {}}", "tune.method = 'penalty' differentiates"),
    ("tune.method=trgu; tune.options={}; tune.then={method: darts, after: 2}; tune.tunables={lr: {}}",
     "tune.then.method = 'darts' differentiates"),
    # every accumulated estimate of a deterministic method is the same (4 times the cost, the same step)
    ("tune.method=rgu; tune.options={}; tune.accumulate=4", "tune.accumulate = 4: tune.method = 'rgu' gives the "
     "same estimate at a given φ every time (no random directions for the N = 1 tuned values)"),
    ("tune.accumulate=2", "tune.method = 'fg2u' gives the same estimate"),  # N = 1: v·vᵀ = 1
    # observations read (or drawn) and then used by nothing: solve refuses them likewise
    ("tune.objective.kind=residual", "data: the observations have no effect on this tuning (a residual objective "
     "reads none; they enter tune.objective.kind: data, or training with data.train: true)"),
    ("tune.objective.kind=reference", "(a reference objective reads none;"),
    # a value the run's dtype rounds was named by its rounding ("init = 0: must be > 0")
    ("trainer.dtype=float32; tune.tunables={weights.boundary: {init: 1.0e-50}}",
     "tune.tunables.weights.boundary.init = 1e-50 (0 in float32): a log-parameterised hyperparameter must be > 0"),
    ("trainer.dtype=float32; loss.kind=hybrid; loss.switch_step=5; tune.tunables={mix: {init: 0.99999999}}",
     "tune.tunables.mix.init = 0.99999999 (1 in float32): a logit-parameterised value must lie in (0.0, 1.0)"),
    # penalty and f2sa keep their own iterates: warm_start false gave the file of true
    ("tune.method=penalty; tune.options={lr: 1.0e-6}; tune.warm_start=false", "tune.warm_start: has no effect here"),
    # a batch larger than the observations was the full batch, silently
    ("data.train=true; data.batch_size=31", "data.batch_size = 31: more than the 30 observations; use at most 30"),
]


@pytest.mark.parametrize("override,expected", BAD, ids=[b[0] for b in BAD])
def test_refused_configs_exit_2_with_one_line(tmp_path, capsys, override, expected):
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    code = main(["tune", str(cfg), *override.split("; "), "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not out.exists()


def test_data_objective_without_observations_and_resume_without_checkpoint(tmp_path, capsys):
    cfg = _write(tmp_path, TINY.replace("data: {source: synthetic, points: 30, noise: 0.01, seed: 0}\n", ""))
    assert main(["tune", str(cfg), "-o", str(tmp_path / "t.h5")]) == 2
    assert "needs observations" in capsys.readouterr().err
    cfg = _write(tmp_path)
    assert main(["tune", str(cfg), "-o", str(tmp_path / "t.h5"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_an_output_that_is_a_file_the_tuning_reads_is_refused(tmp_path, capsys):
    """``-o`` naming the observation file (or the config) replaced it with the result."""
    observations = tmp_path / "obs.h5"
    save_observations(observations, 0.5 * torch.rand(30, 3, dtype=torch.float64), torch.rand(30, dtype=torch.float64))
    cfg = _write(tmp_path, TINY.replace("data: {source: synthetic, points: 30, noise: 0.01, seed: 0}",
                                        f"data: {{source: {observations}}}"))
    before = observations.read_bytes(), cfg.read_bytes()
    for output, what in ((observations, "data.source"), (cfg, "the config")):
        assert main(["tune", str(cfg), "-o", str(output), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"is {what}, which this run reads" in err, err
    assert (observations.read_bytes(), cfg.read_bytes()) == before


@pytest.mark.parametrize("suffix", [".h5", ".npz", ".csv"])
def test_observation_files_round_trip(tmp_path, suffix):
    x = torch.randn(7, 3, dtype=torch.float64)
    u = torch.randn(7, dtype=torch.float64)
    path = tmp_path / f"obs{suffix}"
    save_observations(path, x, u)
    x2, u2 = load_observations(path, 3)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(u2, u, rtol=0, atol=1e-12)
    # (a CSV is counted in values per line: 4 inputs and u, where it has 3 and u)
    with pytest.raises(ObservationError, match="each line needs 5 values" if suffix == ".csv" else "shape"):
        load_observations(path, 4)


def test_unusable_npz_observation_files_give_an_observation_error(tmp_path):
    """Each of these raised EOFError, TypeError or loaded silently (complex) before; bytes
    that are no archive were taken for a pickle ("load it unsafely using allow_pickle")."""
    x = np.zeros((3, 2))
    cases = {"empty": None, "npy_renamed": "npy", "complex": {"x": x + 1j, "u": np.zeros(3)},
             "strings": {"x": np.array([["a", "b"]] * 3), "u": np.zeros(3)}, "garbage": b"\x80\x04 not npz"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.npz"
        if isinstance(content, bytes):
            path.write_bytes(content)
            with pytest.raises(ObservationError, match=f"{path.name}'.*not an .npz archive"):
                load_observations(path, 2)
            continue
        if content is None:
            path.write_bytes(b"")
        elif content == "npy":
            with open(path, "wb") as fh:
                np.save(fh, x)
        else:
            np.savez(path, **content)
        with pytest.raises(ObservationError, match=str(path.name)):
            load_observations(path, 2)


def test_an_empty_observation_file_is_one_error_without_warnings(tmp_path):
    """numpy's 'input contained no data' warning was printed before the error line, and
    the line gave the shapes "(0, 0)" rather than saying the file holds nothing."""
    import warnings

    paths = []
    for i, text in enumerate(("", "a,b,c,u\n")):
        paths.append(tmp_path / f"obs{i}.csv")
        paths[-1].write_text(text)
    paths.append(tmp_path / "obs.npz")
    np.savez(paths[-1], x=np.zeros((0, 3)), u=np.zeros(0))
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ObservationError, match="holds no observations"):
                load_observations(path, 3)


def test_observations_beyond_float32_are_refused_before_any_work(tmp_path, capsys):
    """u ≈ 1e20 in a file: its square is beyond float32, so every data misfit was inf and
    the tuning stopped at outer step 0 (exit 1, and with --overwrite the earlier result
    was replaced by one of status nonfinite); in float64 they pass."""
    data = tmp_path / "big.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, np.column_stack([0.3 * rng.random((30, 3)), 1e20 * rng.random(30)]), delimiter=",")
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    args = ["tune", str(cfg), f"data.source={data}", "tune.outer_steps=1", "-o", str(out), "--progress", "off"]
    assert main([*args, "trainer.dtype=float32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"observation file {str(data)!r} holds |u| up to" in err and \
        "rescale the data or use trainer.dtype: float64" in err, err
    assert not out.exists()
    build_tuning(configuration.load(cfg, [f"data.source={data}"]))  # float64: squares up to 1e40 are fine


def test_a_run_whose_observation_file_changed_does_not_resume(tmp_path, monkeypatch, capsys):
    """The checkpoint records the observation file's digest beside the config: resumed
    after the file's u had been scaled by 100, a run went on with the new data as if
    nothing had changed. (The same identity guards `pinnlab tune`'s checkpoints.)"""
    import pinnlab.io as io

    data = tmp_path / "obs.csv"
    x = torch.rand(30, 3, dtype=torch.float64) * 0.5
    save_observations(data, x, x.sum(1))
    cfg = _write(tmp_path)
    args = ["solve", str(cfg), f"data.source={data}", "data.train=true", "trainer.steps=20",
            "trainer.checkpoint_every=5", "-o", str(tmp_path / "s.h5"), "--progress", "off"]
    save = io.save_checkpoint

    def stopped_at_10(path, state, *rest):
        save(path, state, *rest)
        if state.step == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "save_checkpoint", stopped_at_10)
    assert main(args) == 130
    monkeypatch.setattr(io, "save_checkpoint", save)
    config = configuration.load(cfg, [f"data.source={data}"])
    before = config.identity()
    save_observations(data, x, 100 * x.sum(1))
    assert config.identity() != before and config.identity().startswith(config.to_yaml())
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    assert "was written for a different configuration" in capsys.readouterr().err
    save_observations(data, x, x.sum(1))  # the same bytes again: it resumes
    assert main([*args, "--resume"]) == 0


def test_observations_outside_the_unit_ball_are_refused(tmp_path):
    """poisson_two_body is posed on the unit ball: an observation at ‖x‖ = 5 was fitted as
    data where the PDE does not hold and the network is never trained."""
    x = torch.full((10, 3), 0.2, dtype=torch.float64)
    x[4] = torch.tensor([3.0, 4.0, 0.0])
    data = tmp_path / "obs.npz"
    save_observations(data, x, torch.zeros(10, dtype=torch.float64))
    cfg = _write(tmp_path)
    with pytest.raises(configuration.ConfigError, match=r"holds a point outside the unit ball, the domain of "
                                                        r"poisson_two_body: observation 4 \(counting from 0\) "
                                                        r"at ‖x‖ = 5$"):
        build_tuning(configuration.load(cfg, [f"data.source={data}"]))
    x[4] = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)  # on the sphere: accepted
    save_observations(data, x, torch.zeros(10, dtype=torch.float64))
    build_tuning(configuration.load(cfg, [f"data.source={data}"]))



@pytest.mark.parametrize("name, horizon", [("fokker_planck_aniso", None), ("hjb_lin", 0.5)])
def test_observations_outside_the_time_interval_are_refused(tmp_path, name, horizon):
    """Time-dependent equations are posed and trained on t ∈ [0, T]: an observation at a
    later time was fitted where the network is never trained (at its edges: accepted)."""
    T = 1.0 if horizon is None else horizon
    x = torch.full((10, 4), 0.25, dtype=torch.float64)
    x[0, -1], x[1, -1] = 0.0, T
    x[6, -1] = T + 0.5
    data = tmp_path / "obs.npz"
    save_observations(data, x, torch.zeros(10, dtype=torch.float64))
    parameters = "" if horizon is None else f", horizon: {horizon}"
    cfg = _write(tmp_path, f"equation: {{name: {name}, dim: 3{parameters}}}\ndata: {{source: {data}, train: true}}\n")
    equation_of = configuration.make_equation
    config = configuration.load(cfg)
    with pytest.raises(configuration.ConfigError, match=rf"holds a time outside \[0, {T:g}\], where {name} is "
                                                        rf"posed: observation 6 \(counting from 0\) at t = {T + 0.5:g} \(the time is x's last column\)$"):
        configuration.make_observations(config, equation_of(config.equation))
    x[6, -1] = T / 2
    save_observations(data, x, torch.zeros(10, dtype=torch.float64))
    configuration.make_observations(config, equation_of(config.equation))

def test_a_data_batch_larger_than_the_observation_file_is_refused(tmp_path):
    """The number of a file's observations is known once it is read: a larger batch was
    the full batch, silently; the full batch itself is accepted."""
    data = tmp_path / "obs.npz"
    save_observations(data, torch.full((10, 3), 0.2, dtype=torch.float64), torch.zeros(10, dtype=torch.float64))
    cfg = _write(tmp_path)
    with pytest.raises(configuration.ConfigError, match=r"^data.batch_size = 11: more than the 10 observations"):
        build_tuning(configuration.load(cfg, [f"data.source={data}", "data.train=true", "data.batch_size=11"]))
    build_tuning(configuration.load(cfg, [f"data.source={data}", "data.train=true", "data.batch_size=10"]))


def _csv(tmp_path, name, lines, **open_kwargs):
    path = tmp_path / f"{name}.csv"
    with open(path, "w", **open_kwargs) as fh:
        fh.write("\n".join(lines) + "\n")
    return path


ROWS = ["0.1,0.2,1.5", "0.3,0.4,2.5", "0.5,0.6,3.5"]


@pytest.mark.parametrize("name, lines, open_kwargs", [
    ("plain", ROWS, {}),
    ("header", ["x0,x1,u", *ROWS], {}),
    ("comments", ["# measured 2026-12-04", "x0,x1,u", "# the first row", *ROWS], {}),
    ("bom", ROWS, {"encoding": "utf-8-sig"}),  # its first row was taken for a header and dropped
    ("bom_header", ["x0,x1,u", *ROWS], {"encoding": "utf-8-sig"}),
    ("crlf", ROWS, {"newline": "\r\n"}),
])
def test_csv_observations_keep_every_row(tmp_path, name, lines, open_kwargs):
    x, u = load_observations(_csv(tmp_path, name, lines, **open_kwargs), 2)
    torch.testing.assert_close(u, torch.tensor([1.5, 2.5, 3.5], dtype=torch.float64))
    torch.testing.assert_close(x[:, 0], torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("lines, expected", [
    # a bad value in the first row made it a "header": the row was dropped without a word
    (["0.1,abc,1.5", *ROWS[1:]], "line 1, column 2: 'abc' is not a number"),
    (["0.1.2,0.2,1.5", *ROWS[1:]], "line 1, column 1: '0.1.2' is not a number"),
    (["x0,x1,u", *ROWS[:2], "0.5,zz,3.5"], "line 4, column 2: 'zz' is not a number"),  # lines of the file
    (["x0;x1;u", *(r.replace(",", ";") for r in ROWS)], "line 1 has no comma (fields are separated by commas)"),
    ([r.replace(",", "\t") for r in ROWS], "line 1 has no comma"),
    ([*ROWS, "0.7,3.5"], "line 4 has 2 values, line 1 has 3"),
])
def test_a_bad_csv_value_is_named_by_its_line_and_column(tmp_path, lines, expected):
    with pytest.raises(ObservationError, match=re.escape(expected)):
        load_observations(_csv(tmp_path, "bad", lines), 2)


def test_observation_arrays_of_other_kinds_are_refused_in_one_line(tmp_path):
    """float128 and timedelta64 arrays, an HDF5 null dataspace, a group or a broken link
    where a dataset belongs, a missing array: each raised a traceback (TypeError) or
    passed on h5py's words ("component not found") without naming the dataset."""
    import h5py

    x, u = np.zeros((3, 2)), np.ones(3)
    refusals = {}
    if hasattr(np, "longdouble") and np.dtype(np.longdouble).itemsize > 8:
        np.savez(tmp_path / "f128.npz", x=x.astype(np.longdouble), u=u)
        x2, _ = load_observations(tmp_path / "f128.npz", 2)  # read as float64, not refused
        assert x2.dtype == torch.float64
    np.savez(tmp_path / "timedelta.npz", x=x, u=u.astype("timedelta64[s]"))
    refusals["timedelta.npz"] = "u must hold real numbers, got dtype timedelta64[s]"
    np.savez(tmp_path / "no_u.npz", x=x, v=u)
    refusals["no_u.npz"] = "no array 'u' (it holds 'x', 'v')"
    with h5py.File(tmp_path / "null.h5", "w") as fh:
        fh["x"], fh["u"] = h5py.Empty("f8"), u
    refusals["null.h5"] = "dataset 'x' is empty (no dataspace)"
    with h5py.File(tmp_path / "group.h5", "w") as fh:
        fh.create_group("x")["values"] = x
        fh["u"] = u
    refusals["group.h5"] = "'x' is a group, not a dataset"
    with h5py.File(tmp_path / "dangling.h5", "w") as fh:
        fh["x"] = x
        fh["u"] = h5py.SoftLink("/nowhere")
    refusals["dangling.h5"] = "no dataset 'u' (or a broken link to it)"
    for name, expected in refusals.items():
        with pytest.raises(ObservationError, match=re.escape(f"{name}': {expected}")):
            load_observations(tmp_path / name, 2)


DEEPXDE_CONFIG = Path(__file__).parents[2] / "configs" / "tuning" / "deepxde_loss_weights.yaml"


def test_deepxde_trainer_and_tuning_inner_must_agree(tmp_path, capsys):
    """trainer.backend: deepxde with tune.inner: pinnlab tuned and solved with pinnlab's
    network while the recorded config said deepxde."""
    pytest.importorskip("deepxde")
    out = tmp_path / "t.h5"
    assert main(["tune", str(DEEPXDE_CONFIG), "tune.inner=pinnlab", "tune.method=fg2u", "tune.options={}",
                 "-o", str(out)]) == 2
    assert "use one trainer" in capsys.readouterr().err and not out.exists()


def test_deepxde_needs_its_pytorch_backend_before_any_work(monkeypatch):
    """DDE_BACKEND=jax ended in a RuntimeError traceback when DeepXDE was first imported."""
    pytest.importorskip("deepxde")
    monkeypatch.setenv("DDE_BACKEND", "jax")
    with pytest.raises(configuration.ConfigError, match="DDE_BACKEND='jax'; unset it or set DDE_BACKEND=pytorch"):
        configuration.load(DEEPXDE_CONFIG)


def test_deepxde_black_box_value_is_the_data_objective():
    """inner: deepxde scored φ by the squared relative misfit while the data objective (and
    pinnlab's inner training) use the mean squared misfit."""
    pytest.importorskip("deepxde")
    from pinnlab.config import solve_config_with_deepxde
    from pinnlab.tuning.run import _deepxde_black_box, _deepxde_settings

    config = configuration.load(DEEPXDE_CONFIG, ["model.width=8", "trainer.test_points=100", "tune.horizon=3"])
    setup = build_tuning(config)
    value = float(_deepxde_black_box(setup).objective(setup.phi0))
    lr, weights = _deepxde_settings(setup, setup.phi0)
    result = solve_config_with_deepxde(config, setup.problem.equation, steps=3, lr=lr, loss_weights=weights,
                                       test_set=setup.observations)
    x, u = setup.observations
    misfit = float(((result.predict(x).double() - u.double()) ** 2).mean())
    assert value == pytest.approx(misfit, rel=1e-5)
    assert value != pytest.approx(misfit / float((u.double() ** 2).mean()), rel=1e-2)


def test_second_phase_outer_lr_reaches_the_outer_steps(tmp_path):
    """tune.then.outer_lr: with SGD each outer step moves the unconstrained φ by lr·‖g‖,
    the first phase's lr before ``after``, the second's from it on."""
    overrides = ["tune.outer_optimizer=sgd", "tune.outer_lr=0.5", "tune.outer_steps=4", "tune.horizon=3",
                 "tune.method=rgu", "tune.options={}", "tune.then={method: rgu, after: 2, outer_lr: 0.05}"]
    setup = build_tuning(configuration.load(_write(tmp_path), overrides))
    outcome = run_tuning(setup)
    u = [math.log(1.0e-3)] + [math.log(float(v)) for v in outcome.history["phi/weights.boundary"]]
    rates = [abs(b - a) / g for a, b, g in zip(u, u[1:], outcome.history["grad_norm"])]
    assert rates == pytest.approx([0.5, 0.5, 0.05, 0.05], rel=1e-6)


def test_piecewise_mix_schedule_replays_values():
    schedule = Piecewise((0.1, 0.5, 0.9), total=30)
    assert [schedule.mix(s) for s in (0, 9, 10, 19, 20, 29, 40)] == [0.1, 0.1, 0.5, 0.5, 0.9, 0.9, 0.9]


def test_deepxde_black_box_tuning_with_zo_fg2u(tmp_path, capsys):
    pytest.importorskip("deepxde")
    text = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 16, depth: 3}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 60, lr: 1.0e-3, batch_size: 32, eval_every: 30, test_points: 200, backend: deepxde}
data: {source: synthetic, points: 30, seed: 0}
tune:
  method: zo_fg2u
  options: {num_directions: 1, scheme: forward}
  tunables: {weights.boundary: {}, lr: {}}
  objective: {kind: data}
  inner: deepxde
  outer_steps: 2
  horizon: 30
  outer_lr: 0.3
"""
    out = tmp_path / "dx.h5"
    assert main(["tune", str(_write(tmp_path, text)), "-o", str(out), "--progress", "off"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("rel_l2=")
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["inner"] == "deepxde"
        assert fh["slices/main/u_pred"].shape == fh["slices/main/u_true"].shape  # DeepXDE's network's slice
        phi = fh["tune/phi/weights.boundary"][...]
        assert phi.shape == (2,) and phi[0] != pytest.approx(1e-2)  # the black-box gradient moved it


def test_deepxde_random_search_trains_deepxde_in_every_trial(tmp_path, monkeypatch):
    """inner: deepxde with a search: every trial is a DeepXDE training of trial_steps
    steps (not pinnlab's own network), and the trial's score is its misfit."""
    pytest.importorskip("deepxde")
    import pinnlab.config as config_module
    from pinnlab.tuning.run import run_tuning

    text = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 20, lr: 1.0e-3, batch_size: 16, eval_every: 10, test_points: 50, backend: deepxde}
data: {source: synthetic, points: 20, seed: 0}
tune:
  method: random
  tunables: {weights.boundary: {}}
  objective: {kind: data}
  inner: deepxde
  outer_steps: 2
  trial_steps: 7
"""
    calls = []
    original = config_module.solve_config_with_deepxde

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        misfit = float(((result.final.prediction - result.test_exact) ** 2).mean())  # the data objective
        calls.append((kwargs["steps"], kwargs["loss_weights"], misfit))
        return result

    monkeypatch.setattr(config_module, "solve_config_with_deepxde", spy)
    setup = build_tuning(configuration.load(_write(tmp_path, text)))
    outcome = run_tuning(setup)
    assert [c[0] for c in calls] == [7, 7]
    tried = [float(v) for v in outcome.history["phi/weights.boundary"]]
    assert [c[1][1] for c in calls] == pytest.approx(tried)
    assert outcome.history["value"] == pytest.approx([c[2] for c in calls])


def test_final_solve_replays_the_mix_schedule_the_tuning_followed(tmp_path):
    """A tuned mix is replayed as the values the inner steps used: φ_0 during outer step
    0, the value after update k−1 during step k (not shifted by one update)."""
    from pinnlab.tuning.run import final_solve

    overrides = ["loss.kind=hybrid", "loss.switch_step=20", "tune.tunables={mix: {init: 0.3}}", "tune.outer_steps=3", "tune.horizon=2",
                 "tune.final_steps=6"]
    setup = build_tuning(configuration.load(_write(tmp_path), overrides))
    outcome = run_tuning(setup)
    history = [float(v) for v in outcome.history["phi/mix"]]
    assert len(history) == 3 and history[0] != pytest.approx(0.3)
    _, problem = final_solve(setup, outcome, progress="off")
    assert isinstance(problem.loss.switch, Piecewise)
    assert problem.loss.switch.values == pytest.approx((0.3, history[0], history[1]))
    # a loop that stopped before its first update replays the start value
    empty = dataclasses.replace(outcome, history={**outcome.history, "phi/mix": []})
    assert empty.mix_schedule(0.3) == (0.3,)


def test_shipped_tuning_configs_build():
    from pathlib import Path

    from pinnlab.tuning.run import check_method

    paths = sorted((Path(__file__).parents[2] / "configs" / "tuning").glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        setup = build_tuning(configuration.load(path))
        check_method(setup)
        assert setup.tunables


@pytest.mark.parametrize("method", ["fg2u", "random", "penalty"])
def test_final_solve_can_continue_from_the_tuned_network(tmp_path, method):
    """(penalty: from its own θ iterate; the final solve failed with a KeyError.)"""
    from pinnlab.tuning.run import final_solve

    overrides = [f"tune.method={method}", "tune.outer_steps=3", "tune.final_steps=5"]
    if method == "penalty":
        overrides.append("tune.options={inner_iters: 10, lr: 1.0e-2}")
    elif method != "fg2u":
        overrides += ["tune.options={}", "tune.trial_steps=20"]
    cfg = _write(tmp_path)
    first = {}
    for init in ("scratch", "continue"):
        setup = build_tuning(configuration.load(cfg, [*overrides, f"tune.final_init={init}"]))
        outcome = run_tuning(setup)
        result, _ = final_solve(setup, outcome, progress="off")
        first[init] = result.history.trace_loss[0]
    if method == "penalty":  # its θ minimises f + γ/2‖∇g‖² at lr/(1 + γ): barely lower, but its own
        assert outcome.trained is not None and first["continue"] != first["scratch"], first
        return
    # continuing from a network already trained for 30 (or 20) steps starts lower (same φ)
    assert first["continue"] < 0.8 * first["scratch"], first


def test_hvp_tangents_are_exact_for_every_kind_of_tunable(tmp_path):
    """fg2u's Hessian-vector-product tangents equal reverse mode (float64) through the
    unchanged PINN step when φ holds a collocation-weight network (hundreds of values),
    one σ per coordinate, the hybrid mix, the learning rate and a loss weight at once."""
    from pinnlab.bilevel import ForwardGradientUnroll, ReverseUnroll, hypergradient
    from pinnlab.bilevel.base import flatten
    from pinnlab.bilevel.parameterization import reparameterize, unconstrain

    text = """\
equation: {name: allen_cahn_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 3}
estimator: {kind: stein, sigma: 0.05, samples: 4, noise: shared}
loss: {kind: hybrid, switch_step: 5}
trainer: {steps: 10, lr: 1.0e-2, batch_size: 8, batch_chunks: 2, dtype: float64}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0, train: true}
tune:
  tunables:
    sigma: {per_coordinate: true}
    mix: {init: 0.3}
    lr: {}
    weights.data: {init: 0.5}
    collocation_weight: {width: 8, depth: 2}
  objective: {kind: data, samples: 8}
  horizon: 3
"""
    setup = build_tuning(configuration.load(_write(tmp_path, text)))
    problem = reparameterize(setup.bilevel, setup.parameterization)
    u = unconstrain(setup.phi0, setup.parameterization)
    assert flatten(u).numel() > 40
    reference = flatten(hypergradient(problem, u, ReverseUnroll()).grad)
    result = hypergradient(problem, u, ForwardGradientUnroll(num_directions=5, tangents="hvp"), seed=2)
    w, v = result.diagnostics["directional"], result.diagnostics["directions"]
    assert float((w - v @ reference).abs().max() / (v @ reference).abs().max()) < 1e-10


def test_budget_starts_a_unit_only_if_it_is_expected_to_end_in_time():
    from pinnlab._budget import Budget

    now = [0.0]
    budget = Budget(10.0, clock=lambda: now[0])
    ran = 0
    while budget.allows_another():  # units of 3 s: the fourth would end at 12 s
        now[0] += 3.0
        ran += 1
        budget.finished_one()
    assert ran == 3 and now[0] == 9.0
    state = budget.state()
    unlimited = Budget(None, clock=lambda: now[0])
    unlimited.finished_one()
    now[0] += 1e9
    assert unlimited.allows_another()
    assert state == {"spent": 9.0, "units": 3} and Budget.state_fits(state, 3)
    # what a resume refuses: another unit count, a negative, non-finite or integer time, a stray key,
    # a unit count that is not an int (True == 1 and 1.0 == 1 in Python)
    for bad, units in [(state, 2), ({**state, "spent": -1.0}, 3), ({**state, "spent": math.inf}, 3),
                       ({**state, "spent": 9}, 3), ({**state, "extra": 0}, 3), ({"spent": 9.0}, 3),
                       ({"spent": 9.0, "units": True}, 1), ({"spent": 9.0, "units": 3.0}, 3)]:
        assert not Budget.state_fits(bad, units), bad
    resumed = Budget(10.0, clock=lambda: now[0], **state)
    assert resumed.spent() == 9.0 and resumed.units == 3 and not resumed.allows_another()


@pytest.mark.parametrize("method", ["fg2u", "random", "joint"])
def test_every_tuner_obeys_the_same_budget_rule(tmp_path, method, monkeypatch):
    """With a clock that ticks 1 s per reading and a 2.5 s budget, every tuner runs
    exactly two units (outer steps, trials, steps of joint training): after two the
    third is expected to end at 3 s. (The old rule, stop once past the budget, ran a third.)"""
    import pinnlab._budget

    ticks = iter(range(10**6))
    monkeypatch.setattr(pinnlab._budget, "_now", lambda: float(next(ticks)))
    # joint's unit is one training step; horizon 1 records each in the history
    text, horizon = (INVERSE, 1) if method == "joint" else (TINY, 3)
    overrides = [f"tune.method={method}", "tune.budget_seconds=2.5"]
    if method == "random":  # (its trial length; a horizon beside it is refused)
        overrides += ["tune.options={}", "tune.trial_steps=5"]
    else:
        overrides.append(f"tune.horizon={horizon}")
    outcome = run_tuning(build_tuning(configuration.load(_write(tmp_path, text), overrides)))
    assert len(outcome.history["outer_step"]) == 2


@pytest.mark.parametrize("method", ["fg2u", "random"])
def test_a_resumed_run_keeps_the_budget_it_had_spent(tmp_path, method, monkeypatch):
    """A clock that advances 1 s per finished unit and a 2.5 s budget: two units, also
    when interrupted after the first and resumed (the budget used to restart: three)."""
    import pinnlab._budget

    now = [0.0]
    monkeypatch.setattr(pinnlab._budget, "_now", lambda: now[0])
    overrides = [f"tune.method={method}", "tune.budget_seconds=2.5"]
    if method == "random":  # (a search saves a checkpoint after every trial; fg2u by default after every step)
        overrides += ["tune.options={}", "tune.trial_steps=3"]
    else:
        overrides.append("tune.horizon=3")
    checkpoint = tmp_path / "t.ckpt"

    def tick(k, phi, diagnostics):
        now[0] += 1.0

    def tick_then_stop(k, phi, diagnostics):
        tick(k, phi, diagnostics)
        if k == 1:
            raise KeyboardInterrupt

    def setup():
        return build_tuning(configuration.load(_write(tmp_path), overrides))

    assert len(run_tuning(setup(), progress=tick).history["outer_step"]) == 2
    now[0] = 0.0
    with pytest.raises(KeyboardInterrupt):
        run_tuning(setup(), checkpoint=checkpoint, progress=tick_then_stop)
    outcome = run_tuning(setup(), checkpoint=checkpoint, resume=True, progress=tick)
    assert len(outcome.history["outer_step"]) == 2
    assert outcome.seconds == 2.0  # the first unit's second, before the interruption, counts


def test_joint_fitting_uses_the_configured_outer_optimizer(tmp_path):
    """With outer_optimizer: sgd the coefficients' first step is −lr·g: proportional to
    the lr and unequal across coordinates (Adam's first step would be ±lr in each)."""
    def first_step(lr):
        overrides = ["tune.outer_optimizer=sgd", f"tune.outer_lr={lr}", "tune.horizon=1", "tune.outer_steps=1"]
        outcome = run_tuning(build_tuning(configuration.load(_write(tmp_path, INVERSE), overrides)))
        return outcome.phi["coefficients.mu"].double()  # from μ = 0

    small, large = first_step(1e-3), first_step(2e-3)
    torch.testing.assert_close(large, 2 * small, rtol=1e-9, atol=0)
    assert small.abs().max() > 1.5 * small.abs().min() and small.abs().max() != pytest.approx(1e-3)


def test_outer_betas_reach_the_outer_adam(tmp_path):
    """With β = (0, 0) Adam's step is lr·sign(g): every outer step moves log w by exactly
    the outer lr (with the default β only the first one does)."""
    overrides = ["tune.outer_steps=3", "tune.outer_lr=0.5", "tune.outer_betas=[0.0, 0.0]"]
    outcome = run_tuning(build_tuning(configuration.load(_write(tmp_path), overrides)))
    logs = np.log([1e-3] + [float(w) for w in outcome.history["phi/weights.boundary"]])
    np.testing.assert_allclose(np.abs(np.diff(logs)), 0.5, rtol=1e-3)  # ε = 1e-8 against |g| ≈ 1e-4


def test_methods_that_do_not_see_the_update_give_lr_a_zero_hypergradient(tmp_path):
    """What the refusal of a tuned lr rests on (sees_the_update): lr enters only the
    optimizer's update, which implicit differentiation and DARTS do not differentiate."""
    from pinnlab.bilevel import make_method

    setup = build_tuning(configuration.load(_write(tmp_path), ["tune.tunables={lr: {}}", "tune.horizon=3",
                                                               "tune.options={}"]))
    for name in ("rgu", "trgu", "fgu", "hessian_free", "neumann", "cg", "darts"):
        method = make_method(name)
        grad = method.estimate(setup.bilevel, setup.phi0, seed=0).grad["lr"]
        assert (float(grad.abs().max()) == 0) == (not method.sees_the_update), (name, grad)


@pytest.mark.parametrize("method", ["random", "optuna"])
def test_a_search_whose_every_trial_diverged_is_not_reported_as_tuned(tmp_path, capsys, method):
    """Every trial's training diverged (outer values inf): the search said "tuned" at
    trial 0's values with status ok and exit 0, where a hypergradient method says nonfinite."""
    pytest.importorskip("optuna") if method == "optuna" else None
    cfg = _write(tmp_path, TINY.replace("lr: 1.0e-2,", "lr: 1.0e+30, optimizer: sgd,"))
    out = tmp_path / "t.h5"
    code = main(["tune", str(cfg), f"tune.method={method}", "tune.options={}",
                 "tune.outer_steps=3", "tune.horizon=3", "tune.final_steps=2", "-o", str(out), "--progress", "off"])
    assert code == 1
    err = capsys.readouterr().err
    assert "warning: every one of the 3 trials ended with a non-finite outer objective (the training diverged); " \
        "the final solve uses trial 0's values" in err, err
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "nonfinite" and not np.isfinite(fh["tune/value"][...]).any()


@pytest.mark.parametrize("name, options, tunables", [
    ("rgu", {}, "{weights.boundary: {}}"), ("hessian_free", {}, "{weights.boundary: {}}"),
    ("fg2u", {"num_directions": 1}, "{weights.boundary: {}}"),
    ("fg2u", {"num_directions": 1, "kind": "gaussian"}, "{weights.boundary: {}}"),
    ("fg2u", {"num_directions": 1}, "{weights.boundary: {}, sigma: {}}"),
    ("zo_fg2u", {"num_directions": 1}, "{weights.boundary: {}}"),
    ("zo_fg2u", {"num_directions": 1, "scheme": "forward"}, "{weights.boundary: {}}"),
])
def test_varies_says_whether_two_estimates_at_one_point_differ(tmp_path, name, options, tunables):
    """What refusing tune.accumulate rests on: estimates at the same φ, θ and inner steps
    (outer_step j, as accumulate draws them) are equal exactly when ``varies`` says so."""
    from pinnlab.bilevel import make_method

    setup = build_tuning(configuration.load(_write(tmp_path), [f"tune.tunables={tunables}", "tune.horizon=3",
                                                               "tune.options={}"]))
    method = make_method(name, **options)
    # (for N = 2 a second Rademacher direction is ±the first, the same estimate, one time in two)
    first, *others = (method.estimate(setup.bilevel, setup.phi0, seed=0, outer_step=j).grad for j in range(6))
    same = all(torch.equal(first[k], other[k]) for other in others for k in first)
    assert same == (not method.varies(sum(t.numel() for t in setup.phi0.values()))), (first, others)


def test_a_switch_after_trainer_steps_is_accepted_within_tune_final_steps(tmp_path):
    """The final solve runs tune.final_steps steps; trainer.steps (40) does not bound its switch."""
    config = configuration.load(_write(tmp_path), ["loss.kind=hybrid", "loss.switch_step=45", "tune.final_steps=50"])
    from pinnlab.tuning.run import check_method

    check_method(build_tuning(config))


def test_a_stopped_overwrite_names_only_its_own_checkpoint_and_the_flags_that_resume_it(tmp_path, monkeypatch,
                                                                                     capsys):
    """An interrupted --overwrite run over an existing result said "--resume continues from
    it", which was refused (the output exists); and a run that saved nothing
    (tune.checkpoint_every: 0) announced an earlier run's checkpoint as its own."""
    from pinnlab.bilevel import ForwardGradientUnroll

    cfg = _write(tmp_path)
    out = tmp_path / "run.h5"
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 0
    estimate = ForwardGradientUnroll.estimate
    monkeypatch.setattr(ForwardGradientUnroll, "estimate", _stopped_at(3))
    capsys.readouterr()
    assert main(["tune", str(cfg), "-o", str(out), "--overwrite", "--progress", "off"]) == 130
    checkpoint = tmp_path / "run.h5.ckpt"
    assert (f"pinnlab: outer step 3 saved in {str(checkpoint)!r}; --resume --overwrite continues from it"
            in capsys.readouterr().err)
    before = checkpoint.read_bytes()
    assert main(["tune", str(cfg), "tune.checkpoint_every=0", "tune.outer_lr=0.5", "-o", str(out), "--overwrite",
                 "--progress", "off"]) == 130
    assert checkpoint.read_bytes() == before and "saved in" not in capsys.readouterr().err
    monkeypatch.setattr(ForwardGradientUnroll, "estimate", estimate)
    assert main(["tune", str(cfg), "-o", str(out), "--resume", "--overwrite", "--progress", "off"]) == 0


def test_a_final_solve_checkpoint_without_the_tunings_is_refused_with_one_way_out(tmp_path, capsys):
    """Only OUT.h5.final.ckpt left: the plain run said "pass --resume to continue it" and
    --resume then said "no checkpoint 'OUT.h5.ckpt' to resume from"."""
    cfg = _write(tmp_path)
    out = tmp_path / "run.h5"
    final = tmp_path / "run.h5.final.ckpt"
    final.write_bytes(b"a final solve's steps")
    for extra in ([], ["--resume"]):
        assert main(["tune", str(cfg), "-o", str(out), *extra, "--progress", "off"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"checkpoint {str(final)!r} of an interrupted final solve exists without the tuning's "
                            f"{str(tmp_path / 'run.h5.ckpt')!r}, so it cannot be resumed; pass --overwrite to start "
                            "over"), err
    assert final.read_bytes() == b"a final solve's steps"


def test_an_observation_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    """The checkpoint identity and the result file both record the data file's SHA-256:
    hashed once while the file is unchanged, again once it changes (size, mtime or inode)."""
    import hashlib

    data = tmp_path / "obs.npz"
    save_observations(data, torch.full((10, 3), 0.2, dtype=torch.float64), torch.zeros(10, dtype=torch.float64))
    made = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: made.append(1) or real(*a))
    first = configuration.file_digest(data)
    assert configuration.file_digest(data) == first and len(made) == 1
    assert first == real(data.read_bytes()).hexdigest()
    save_observations(data, torch.full((10, 3), 0.3, dtype=torch.float64), torch.zeros(10, dtype=torch.float64))
    assert configuration.file_digest(data) == real(data.read_bytes()).hexdigest() != first and len(made) == 2


def test_an_observation_file_trained_on_is_read_once_by_build_tuning(tmp_path, monkeypatch):
    """With data.train: true the data term and the outer objective take the same
    observations: build_tuning read the file a second time for the objective (twice the
    parsing, and two reads that could differ if the file changed between them)."""
    import pinnlab.io.observations as observations

    data = tmp_path / "obs.npz"
    x = torch.full((10, 3), 0.2, dtype=torch.float64)
    save_observations(data, x, x.sum(1))
    reads = []
    load = observations.load_observations
    monkeypatch.setattr(observations, "load_observations", lambda *a, **k: reads.append(a) or load(*a, **k))
    setup = build_tuning(configuration.load(_write(tmp_path), [f"data.source={data}", "data.train=true"]))
    assert len(reads) == 1
    term = next(t for t in setup.problem.extra_terms if t.name == "data")
    assert setup.observations[0] is term.inputs and setup.observations[1] is term.values
    reads.clear()
    build_tuning(configuration.load(_write(tmp_path), [f"data.source={data}"]))  # objective only
    assert len(reads) == 1
