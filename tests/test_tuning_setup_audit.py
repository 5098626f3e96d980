"""Tests from a mutation audit of pinnlab/tuning/setup.py (a config to its bilevel problem):
the held-out points drawn in float64 whatever the run's dtype, the Stein residual objective's
fresh noise at every call (common random numbers), a tuned coefficient read by the residual
objective's PDE, φ ↦ hyperparameters leaving the config's own hyperparameters alone, phi0 as
a copy, and build_tuning's refusal of a config without a tune: section."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.config import ConfigError
from pinnlab.solvers.evaluate import predict
from pinnlab.tuning.setup import build_tuning

from .tuning.micro_configs import JOINT_MU
from .tuning.test_tuning_audit_edges import AUTOGRAD, _load, _outer, _setup


def test_float32_held_out_points_are_drawn_in_float64_then_rounded(tmp_path):
    """The reference objective's points are drawn in float64 (the same points whatever
    trainer.dtype) and then rounded to the run's dtype: f = ‖u − u*‖²/‖u*‖² there."""
    setup = _setup(tmp_path, "trainer.dtype=float32", "tune.objective={kind: reference, points: 16}",
                   text=AUTOGRAD)
    eq = setup.problem.equation
    spec = setup.config.tune.objective
    x = eq.sample_test(spec.points, generator=make_generator(spec.seed, "outer/points"),
                       dtype=torch.float64).to(torch.float32)
    exact = eq.exact_values(x)
    u = predict(setup.problem, setup.init[0], x).reshape(exact.shape)
    expected = float(((u - exact) ** 2).sum() / (exact ** 2).sum())
    assert abs(_outer(setup) / expected - 1) < 1e-5, (_outer(setup), expected)


def test_the_stein_residual_objective_draws_the_same_noise_at_every_call(tmp_path):
    """f(θ, φ) is a function (common random numbers): every call of the Stein residual
    objective draws the noise of objective.seed afresh, so two calls at the same θ and φ
    agree exactly."""
    setup = _setup(tmp_path, "tune.objective={kind: residual, samples: 2, points: 8}")
    assert _outer(setup) == _outer(setup)


def test_the_hyperparameter_map_leaves_the_configs_hyperparameters_alone(tmp_path):
    """to_hyperparams(φ) builds new dicts: the config's own hyperparameters (handed to the
    final solve) keep their values after φ with a tuned weight and lr went through it."""
    setup = _setup(tmp_path, "loss.weights={boundary: 1.0e-2, residual: 2.0}",
                   "tune.tunables={weights.boundary: {}, lr: {}}")
    base = setup.train_kwargs["hyperparams"]
    assert base == {"weights": {"boundary": 1.0e-2, "residual": 2.0}}
    hp = setup.to_hyperparams({"weights.boundary": torch.tensor(5.0), "lr": torch.tensor(0.5)})
    assert float(hp["weights"]["boundary"]) == 5.0 and float(hp["lr"]) == 0.5
    assert hp["weights"]["residual"] == 2.0
    assert base == {"weights": {"boundary": 1.0e-2, "residual": 2.0}}


def test_phi0_is_a_fresh_copy_of_the_initial_values(tmp_path):
    """An outer step that updates φ in place does not move the tuning's start: phi0 is
    rebuilt from the tunables' init at every call."""
    setup = _setup(tmp_path)
    phi = setup.phi0
    phi["weights.boundary"].mul_(10)
    assert float(setup.phi0["weights.boundary"]) == 1.0e-2
    assert float(setup.tunables["weights.boundary"].init) == 1.0e-2


def test_build_tuning_refuses_a_config_without_a_tune_section(tmp_path):
    """The public build_tuning names the missing section (a ConfigError, not an
    AttributeError from deep inside the set-up)."""
    text = AUTOGRAD.split("tune:")[0].replace("data: {source: synthetic, points: 10, noise: 0.01, seed: 0}\n", "")
    with pytest.raises(ConfigError, match="^tune: required section is missing for `pinnlab tune`$"):
        build_tuning(_load(tmp_path, text=text))


def test_the_residual_objective_reads_a_tuned_coefficient_in_the_pde(tmp_path):
    """An inverse problem's residual objective is the residual of the PDE at the tuned μ,
    not at the hidden true one: f depends on μ through the operator (the held-out points
    drawn at μ are data, without a gradient), so ∂f/∂μ ≠ 0 at the initial network."""
    setup = _setup(tmp_path, "tune.method=fg2u", "tune.objective={kind: residual, estimator: autograd, points: 8}",
                   text=JOINT_MU)
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    value = setup.outer_loss(setup.init[0], {"coefficients.mu": mu})
    (grad,) = torch.autograd.grad(value, mu, allow_unused=True)
    assert grad is not None and float(grad.abs().max()) > 1e-6, grad
