"""Soft-constraint and data terms; LRA and ReLoBRaLo weightings."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import MLP, Pointwise
from pinnlab.solvers import (
    LRA,
    Adam,
    ConstraintLoss,
    DataLoss,
    PINNProblem,
    ReLoBRaLo,
    train,
)

F64 = torch.float64


def _soft_problem(model, extra, dim=4):
    eq = PoissonTwoBody(dim, seed=1, constraint="soft")
    return PINNProblem(eq, model, SteinAntithetic(sigma=1e-3, num_samples=8), Biased(),
                       batch_size=16, extra_terms=extra)


def test_terms_vanish_at_the_exact_solution_and_not_elsewhere():
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    g = torch.Generator().manual_seed(0)
    x_obs = eq.sample_collocation(20, generator=g, dtype=F64)
    data = DataLoss(x_obs, eq.exact(x_obs))
    constraint = ConstraintLoss(batch_size=32)
    exact_model = Pointwise(eq.exact)
    problem = _soft_problem(exact_model, (constraint, data))
    _, metrics = problem.objective({"dummy": torch.zeros(1, dtype=F64)}, {}, 0, 0)
    # smoothing with σ = 1e-3 moves u by ≈ σ²Δu*/2: tiny
    assert float(metrics["loss_boundary"]) < 1e-10
    assert float(metrics["loss_data"]) < 1e-8
    shifted = _soft_problem(Pointwise(lambda z: eq.exact(z) + 0.1), (constraint, data))
    _, metrics = shifted.objective({"dummy": torch.zeros(1, dtype=F64)}, {}, 0, 0)
    assert math.isclose(float(metrics["loss_boundary"]), 0.01, rel_tol=1e-3)
    assert math.isclose(float(metrics["loss_data"]), 0.01, rel_tol=1e-3)


def test_weights_scale_terms_in_the_objective():
    net = MLP(4, width=8, depth=3, dtype=F64)
    problem = _soft_problem(net, (ConstraintLoss(batch_size=8),))
    params = problem.init_params()
    base, m = problem.objective(params, {}, 3, 0)
    weighted, m2 = problem.objective(params, {"weights": {"boundary": 10.0, "residual": 0.5}}, 3, 0)
    expected = 0.5 * m["loss_residual"] + 10.0 * m["loss_boundary"]
    torch.testing.assert_close(weighted.detach(), expected)


def test_relobralo_formula_by_hand():
    w = ReLoBRaLo(alpha=0.5, lookback=0.0, temperature=1.0)  # ρ = 0 always
    state = w.init(["a", "b"])
    state = w.update(state, 0, {"a": 1.0, "b": 1.0}, lambda: {}, seed=0)
    state = w.update(state, 1, {"a": 2.0, "b": 1.0}, lambda: {}, seed=0)
    # λ_bal(t,0) = λ_bal(t,t-1) = 2·softmax(2, 1)
    e = math.exp(2.0) / (math.exp(2.0) + math.exp(1.0))
    assert math.isclose(state["weights"]["a"], 2 * e, rel_tol=1e-12)
    assert math.isclose(state["weights"]["b"], 2 * (1 - e), rel_tol=1e-12)


def test_lra_moves_towards_gradient_ratio():
    w = LRA(alpha=0.5, every=1)
    state = w.init(["residual", "boundary"])
    norms = {"residual": (8.0, 1.0), "boundary": (1.0, 2.0)}
    state = w.update(state, 0, {}, lambda: norms, seed=0)
    # λ̂ = 8 / (1·2) = 4; λ = 0.5·1 + 0.5·4
    assert state["weights"] == {"residual": 1.0, "boundary": 2.5}


@pytest.mark.parametrize("weighting", [LRA(every=5), ReLoBRaLo()])
def test_training_with_adaptive_weights_logs_terms(weighting):
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    net = MLP(4, width=16, depth=3, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(eq, net, SteinAntithetic(sigma=0.05, num_samples=8), Biased(),
                          batch_size=16, extra_terms=(ConstraintLoss(batch_size=16),))
    result = train(problem, steps=40, optimizer=Adam(1e-3), seed=0, eval_every=10,
                   test_points=50, progress="off", weighting=weighting)
    terms = result.history.terms
    assert set(terms) == {"loss_residual", "weight_residual", "loss_boundary", "weight_boundary"}
    assert len(terms["weight_boundary"]) == 4
    assert any(v != 1.0 for v in terms["weight_boundary"])
    assert result.state.weighting is not None
