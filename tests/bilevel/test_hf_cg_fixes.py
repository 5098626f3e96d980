"""Hessian-free/DARTS step size under a tuned inner lr; CG's negative-curvature warning."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.bilevel import (
    DARTS,
    CGSolve,
    HessianFree,
    ImplicitDiff,
    from_inner_loss,
    hypergradient,
)
from pinnlab.bilevel.base import flatten
from pinnlab.bilevel.parameterization import reparameterize, unconstrain
from pinnlab.solvers import SGD
from pinnlab.tuning.setup import build_tuning

from .problems import F64, LinearQuadratic

CONFIG_LR = 0.2
TUNED_LR = 0.05


def _tuned_lr_problem(horizon=6):
    """LinearQuadratic with φ = (a, lr), the inner steps taken at φ's lr (not the optimizer's)."""
    lq = LinearQuadratic()
    problem = from_inner_loss(lq.inner_loss, lq.outer_loss, SGD(lr=CONFIG_LR), {"w": lq.theta0},
                              horizon=horizon, lr=lambda phi: phi["lr"])
    phi = {"a": lq.phi["a"], "lr": torch.tensor(TUNED_LR, dtype=F64)}
    theta = lq.theta0
    for _ in range(horizon):  # θ ← θ − η(Aθ − Ba) at the tuned η
        theta = theta - TUNED_LR * (lq.A @ theta - lq.B @ phi["a"])
    return lq, problem, phi, theta


def _one_step_estimate(lq, phi, theta, step):
    """c − step·dᵀY with d = ∂f/∂θ, Y = ∇²_θφ g: (Ca + step·Bᵀ(θ − y), 0) for g = ½θᵀAθ − θᵀBa."""
    return torch.cat([lq.C @ phi["a"] + step * lq.B.T @ (theta - lq.y), torch.zeros(1, dtype=F64)])


def test_hessian_free_alpha_is_the_tuned_inner_lr():
    """α = the lr the inner steps use at the current φ (REFERENCE.md §6.7, §6.9: α = lr)."""
    lq, problem, phi, theta = _tuned_lr_problem()
    est = flatten(hypergradient(problem, phi, HessianFree()).grad)
    torch.testing.assert_close(est, _one_step_estimate(lq, phi, theta, TUNED_LR), rtol=1e-12, atol=1e-14)
    stale = _one_step_estimate(lq, phi, theta, CONFIG_LR)
    assert float((est - stale).abs().max()) > 1e-3
    # a given alpha stays fixed
    fixed = flatten(hypergradient(problem, phi, HessianFree(alpha=CONFIG_LR)).grad)
    torch.testing.assert_close(fixed, stale, rtol=1e-12, atol=1e-14)


def test_darts_xi_is_the_tuned_inner_lr():
    """DARTS' virtual step w' = w − ξ∇_w g takes ξ = the tuned lr: for this quadratic g the
    estimate is Ca + ξBᵀ(w' − y) exactly (its finite difference is exact)."""
    lq, problem, phi, theta = _tuned_lr_problem()
    est = flatten(hypergradient(problem, phi, DARTS()).grad)
    w_prime = theta - TUNED_LR * (lq.A @ theta - lq.B @ phi["a"])
    torch.testing.assert_close(est, _one_step_estimate(lq, phi, w_prime, TUNED_LR), rtol=1e-10, atol=1e-12)


TUNE_LR = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 8, noise: shared, eval_samples: 16}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 10, lr: 1.0e-2, schedule: constant, batch_size: 8, eval_every: 10, test_points: 50, dtype: float64}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0}
tune:
  method: hessian_free
  tunables: {weights.boundary: {}, lr: {init: 3.0e-2}}
  objective: {kind: data, samples: 8}
  outer_steps: 2
  horizon: 3
"""


def test_tuning_setup_hessian_free_follows_the_tuned_lr(tmp_path):
    """In ``pinnlab tune`` (φ reparameterised as the driver does), α is the tuned lr 3e-2,
    not ``trainer.lr`` = 1e-2."""
    path = tmp_path / "tune.yaml"
    path.write_text(TUNE_LR)
    setup = build_tuning(configuration.load(path))
    problem = reparameterize(setup.bilevel, setup.parameterization)
    u = unconstrain(setup.phi0, setup.parameterization)

    def estimate(method):
        return flatten(hypergradient(problem, u, method).grad)

    default = estimate(HessianFree())
    torch.testing.assert_close(default, estimate(HessianFree(alpha=3e-2)), rtol=1e-12, atol=0)
    stale = estimate(HessianFree(alpha=1e-2))
    assert float((default - stale).abs().max()) > 1e-3 * float(default.abs().max())


# -- CG and negative curvature -------------------------------------------------------------
def _linear_solve_problem(hessian, seed=0):
    """g = ½θᵀHθ − θᵀBa, f = ⟨y, θ⟩ + ½‖a‖²: d = y, c = a, Y = −B, so IF = a + BᵀH⁻¹y."""
    n = hessian.shape[0]
    gen = torch.Generator().manual_seed(seed)
    B = torch.randn(n, 2, generator=gen, dtype=F64)
    y = torch.randn(n, generator=gen, dtype=F64) + 1.0

    def inner(theta, phi, t):
        w = theta["w"]
        return 0.5 * w @ hessian @ w - w @ B @ phi["a"]

    def outer(theta, phi):
        return y @ theta["w"] + 0.5 * phi["a"] @ phi["a"]

    problem = from_inner_loss(inner, outer, SGD(lr=1e-3), {"w": torch.zeros(n, dtype=F64)}, horizon=1)
    phi = {"a": torch.tensor([0.3, -0.7], dtype=F64)}
    direct = phi["a"] + B.T @ torch.linalg.solve(hessian, y)
    return problem, phi, direct


def _cg_warnings(record):
    return [w for w in record if "non-positive curvature" in str(w.message)]


@pytest.mark.parametrize("hessian, negative", [
    (torch.diag(torch.tensor([1.0, -3.0, 2.0], dtype=F64)), None),  # indefinite
    (-torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64)), 3),      # negative definite: every iteration
])
def test_cg_warns_once_on_negative_curvature(hessian, negative):
    problem, phi, _ = _linear_solve_problem(hessian)
    with pytest.warns(RuntimeWarning, match=r"CG: non-positive curvature pᵀ\(H \+ λI\)p") as record:
        result = hypergradient(problem, phi, ImplicitDiff(CGSolve(iterations=10)))
    assert len(_cg_warnings(record)) == 1
    count = result.diagnostics["negative_curvature"]
    assert count >= 1 if negative is None else count == negative


def test_cg_stops_at_zero_curvature_instead_of_dividing_by_it():
    """H = diag(1, 0) and y = (0, 1): the first search direction lies in H's null space, so
    pᵀHp = 0 exactly; CG returns its starting iterate q = 0 (hypergradient = the direct
    term a), with the warning, not inf/NaN."""
    hessian = torch.diag(torch.tensor([1.0, 0.0], dtype=F64))
    B = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    y = torch.tensor([0.0, 1.0], dtype=F64)

    def inner(theta, phi, t):
        return 0.5 * theta["w"] @ hessian @ theta["w"] - theta["w"] @ B @ phi["a"]

    def outer(theta, phi):
        return y @ theta["w"] + 0.5 * phi["a"] @ phi["a"]

    problem = from_inner_loss(inner, outer, SGD(lr=1e-3), {"w": torch.zeros(2, dtype=F64)}, horizon=1)
    phi = {"a": torch.tensor([0.3, -0.7], dtype=F64)}
    with pytest.warns(RuntimeWarning, match=r"non-positive curvature pᵀ\(H \+ λI\)p = 0 at iteration 1") as record:
        result = hypergradient(problem, phi, ImplicitDiff(CGSolve(iterations=5)))
    assert {w.filename for w in record if "curvature" in str(w.message)} == {__file__}  # the user's line
    torch.testing.assert_close(flatten(result.grad), phi["a"], rtol=0, atol=0)
    assert result.diagnostics["negative_curvature"] == 1


def test_cg_on_a_positive_definite_hessian_is_silent_and_exact():
    gen = torch.Generator().manual_seed(1)
    root = torch.randn(5, 5, generator=gen, dtype=F64)
    hessian = root @ root.T + 0.5 * torch.eye(5, dtype=F64)
    problem, phi, direct = _linear_solve_problem(hessian)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(problem, phi, ImplicitDiff(CGSolve(iterations=20)))
    torch.testing.assert_close(flatten(result.grad), direct, rtol=0, atol=1e-10)
    assert result.diagnostics["negative_curvature"] == 0


def test_inner_lr_beside_a_gradient_step_is_refused():
    """A second step size next to the gradient step's own rate would be ignored by
    hessian_free/darts (they follow the step's rate); refused instead."""
    loss = lambda theta, phi, t: (theta["w"] - phi["a"]).pow(2).sum()  # noqa: E731
    problem = from_inner_loss(loss, lambda theta, phi: theta["w"].sum(), SGD(lr=0.1),
                              {"w": torch.zeros(2, dtype=F64)}, horizon=2)
    assert problem.inner_lr is None and problem.step_size({"a": torch.zeros(2, dtype=F64)}, 0) == 0.1
    with pytest.raises(ValueError, match="inner_lr is for a problem without gradient_step"):
        dataclasses.replace(problem, inner_lr=0.5)
