"""pinnlab tune: joint fitting keeps a coefficient's transform and bounds; the /slices of a
tune result show the model the final solve trained and evaluated (at a tuned σ)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab._seeding import make_generator
from pinnlab.cli import main
from pinnlab.io import compute_slice
from pinnlab.solvers.evaluate import predict
from pinnlab.tuning.run import run_tuning
from pinnlab.tuning.setup import build_tuning

JOINT = """\
equation: {name: fokker_planck_aniso, dim: 3, seed: 0}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, noise: shared, eval_samples: 8}
trainer: {steps: 10, lr: 1.0e-2, schedule: constant, batch_size: 16, eval_every: 10, test_points: 50, dtype: float64}
data: {source: synthetic, points: 50, noise: 0.01, seed: 0}
tune:
  method: joint
  tunables: {coefficients.mu: {init: 0.0}}
  objective: {kind: data, samples: 8}
  outer_steps: 3
  horizon: 2
  outer_lr: 0.5
"""

BOUNDED = "tune.tunables={coefficients.mu: {init: 0.0, low: -0.1, high: 0.1, transform: logit}}"

SIGMA = """\
equation: {name: allen_cahn_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.5, samples: 4, noise: shared, eval_samples: 8}
loss: {kind: biased}
trainer: {steps: 10, lr: 1.0e-3, schedule: constant, batch_size: 16, eval_every: 10, test_points: 100}
data: {source: synthetic, points: 20, noise: 0.01, seed: 0}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {sigma: {}}
  objective: {kind: data, samples: 8}
  outer_steps: 2
  horizon: 2
  outer_lr: 1.5
"""


def _joint(tmp_path, *overrides):
    path = tmp_path / "joint.yaml"
    path.write_text(JOINT)
    return run_tuning(build_tuning(configuration.load(path, list(overrides))))


def test_joint_fitting_keeps_a_logit_coefficient_within_its_bounds(tmp_path):
    """μ with transform: logit on (−0.1, 0.1): every recorded μ and the result stay inside
    (Adam's steps of ±0.5 on μ itself leave it near ±1, as joint fitting did before)."""
    free = _joint(tmp_path).phi["coefficients.mu"]
    assert float(free.abs().max()) > 0.5
    outcome = _joint(tmp_path, BOUNDED)
    history = torch.stack(outcome.history["phi/coefficients.mu"])
    assert history.shape == (3, 3)
    assert bool((history.abs() < 0.1).all()), history
    torch.testing.assert_close(outcome.phi["coefficients.mu"], history[-1], rtol=0, atol=0)
    assert float(history[-1].abs().min()) > 0.02  # it moved (a stuck μ would also stay inside)


def test_joint_fitting_steps_the_unconstrained_value(tmp_path):
    """One Adam step moves u = logit((μ + 0.1)/0.2) from 0 by ±lr: |μ| = 0.2·sigmoid(0.5) − 0.1
    in every coordinate, recorded in constrained values."""
    outcome = _joint(tmp_path, BOUNDED, "tune.horizon=1", "tune.outer_steps=1")
    mu = outcome.history["phi/coefficients.mu"][0]
    expected = 0.2 * torch.sigmoid(torch.tensor(0.5, dtype=torch.float64)) - 0.1
    torch.testing.assert_close(mu.abs(), expected.expand(3), rtol=1e-6, atol=0)


def test_joint_fitting_with_the_identity_transform_is_unchanged(tmp_path):
    """The default (identity) coefficient fits exactly as before the transforms were used:
    values computed with the joint fit that stepped μ itself (recomputed when the training
    points began to follow μ̂ instead of the true μ; with the true μ they were
    (−1.0199, 0.8961, 0.3139) and outer values 2.228, 2.104, 2.022)."""
    outcome = _joint(tmp_path)
    before = torch.tensor([-0.5040324168788599, 0.7608193223434401, 0.2422793729722005], dtype=torch.float64)
    torch.testing.assert_close(outcome.phi["coefficients.mu"], before, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(outcome.history["value"], [2.1485889683098573, 1.9605023838570894, 1.8795514332602357],
                               rtol=1e-6)


@pytest.mark.parametrize("overrides", [
    [],
    # per-coordinate σ on a time-dependent equation, starting from estimator.time_sigma for t
    ["equation={name: fokker_planck_aniso, dim: 3, seed: 0}", "estimator.time_sigma=0.2",
     "tune.tunables={sigma: {per_coordinate: true}}"],
], ids=["global", "per_coordinate_with_time"])
def test_tune_slices_are_at_the_tuned_sigma(tmp_path, overrides):
    """/slices/main/u_pred is the final network's smoothed model at the tuned σ (the σ
    /eval was scored at), not at the config's estimator.sigma (and time_sigma)."""
    cfg = tmp_path / "sigma.yaml"
    cfg.write_text(SIGMA)
    out = tmp_path / "t.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]) == 0
    config = configuration.load(cfg, overrides)
    problem, _ = configuration.build(config)
    with h5py.File(out) as fh:
        params = {k: torch.as_tensor(fh["params"][k][()]) for k in fh["params"]}
        x = torch.as_tensor(fh["eval/x"][()])
        u_eval = fh["eval/u_pred"][()]
        stored = fh["slices/main/u_pred"][()]
        sigma = torch.as_tensor(fh["tune/tuned/sigma"][()])
    assert sigma.shape == ((problem.equation.input_dim,) if overrides else ())  # (x₁, x₂, x₃, t)
    samples, seed = config.estimator.eval_samples, config.trainer.seed
    # /eval is the smoothed model at the tuned σ
    u = predict(problem, params, x, num_samples=samples, sigma=sigma,
                generator=make_generator(seed, "eval", config.trainer.steps, device=x.device))
    np.testing.assert_allclose(u.double().numpy(), u_eval, rtol=1e-6, atol=1e-7)

    def slice_at(s):
        *_, inside, pred, _ = compute_slice(problem, params, x, num_samples=samples, seed=seed, sigma=s)
        return np.where(inside.numpy(), pred.double().numpy().reshape(stored.shape), np.nan)

    np.testing.assert_allclose(stored, slice_at(sigma), rtol=1e-6, atol=1e-7)
    assert np.nanmax(np.abs(stored - slice_at(None))) > 1e-2


@pytest.mark.parametrize("optimizer, lr, dtype", [("sgd", "1.0e300", "float64"), ("adam", "3.0e38", "float32")])
def test_a_diverging_joint_fit_stops_at_the_last_finite_values(tmp_path, capsys, optimizer, lr, dtype):
    """A step that sent a log coefficient to 0 or inf went on and wrote NaN coefficients
    with status ok; it now stops as the bilevel driver does (exit 1, finite values kept).
    Adam at an outer lr near float32's largest value overflows inside its step: the same."""
    path = tmp_path / "joint.yaml"
    path.write_text(JOINT)
    out = tmp_path / "j.h5"
    code = main(["tune", str(path), "tune.tunables={coefficients.mu: {init: 0.5, transform: log}}",
                 f"trainer.dtype={dtype}", f"tune.outer_optimizer={optimizer}", f"tune.outer_lr={lr}",
                 "-o", str(out), "--progress", "off"])
    assert code == 1
    assert "tuning stopped early (joint step 0: θ or a coefficient became non-finite)" in capsys.readouterr().err
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "nonfinite"
        np.testing.assert_array_equal(fh["tune/tuned/coefficients.mu"][...], 0.5)
        assert np.isfinite(fh["eval/u_pred"][...]).all()
