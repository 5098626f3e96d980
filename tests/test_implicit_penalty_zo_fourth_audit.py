"""Fourth mutation audit of the implicit, penalty and zeroth-order hypergradients (float64).

Closed forms on small quadratic (or hand-solvable) bilevel problems for the details the
earlier audits left open.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    BlackBox,
    Penalty,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    hypergradient,
    neumann,
)
from pinnlab.bilevel.penalty import LowerLevelDivergence
from pinnlab.solvers import SGD

from .bilevel.problems import F64
from .bilevel.test_implicit_details import _quadratic


def test_cg_on_a_negative_definite_hessian_keeps_iterating_and_names_the_first_iteration():
    """H = −diag(1, 2, 3), d = (1, 1, 1): every CG curvature is negative, but the iterations go
    on (only a zero or non-finite one stops them), so 3 steps solve Hq = d exactly and the
    hypergradient is Bᵀq = −(1 + 1/2 + 1/3). The warning gives the first curvature,
    dᵀHd = −6, at iteration 1, and counts 3 such iterations."""
    d = torch.ones(3, dtype=F64)
    problem, phi, _ = _quadratic(-torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=F64)),
                                 lambda theta, phi: d @ theta["w"])
    with pytest.warns(RuntimeWarning, match=r"= -6 at iteration 1 \(3 such iterations\)"):
        result = hypergradient(problem, phi, cg(iterations=3, tol=0.0))
    assert result.diagnostics["negative_curvature"] == 3 and result.diagnostics["hvps"] == 3
    assert abs(float(result.grad["a"]) + 11 / 6) < 1e-13


def test_neumann_last_term_is_relative_to_a_tiny_first_term():
    """d = (1e-9, 0), H = 2I, α = 1/4: every term halves, so last_term = ‖p_K‖/‖d‖ = 0.5^5
    whatever the scale of d (no floor on ‖d‖), silent."""
    d = torch.tensor([1e-9, 0.0], dtype=F64)
    problem, phi, b_mat = _quadratic(2.0 * torch.eye(2, dtype=F64), lambda theta, phi: d @ theta["w"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(problem, phi, neumann(iterations=5, alpha=0.25))
    assert abs(result.diagnostics["last_term"] - 0.5 ** 5) < 1e-15
    torch.testing.assert_close(result.grad["a"], b_mat.T @ d * 0.25 * (2 - 0.5 ** 5), rtol=1e-14, atol=0)


def test_darts_epsilon_is_normalised_by_a_small_outer_gradient():
    """g = ½w² − a·sin w, f = ½(w − c)² with c = w' − 1e-5, so v = ∇f(w') = 1e-5 and
    ε/‖v‖ = 1e3: the central difference spans e·v = 1e-2 and ĝ = ξ cos θ_T · sin(e v)/e,
    which differs from a difference of span 1e-4 (a floor of 1e-3 on ‖v‖) by ~2e-5 relative."""
    a, xi = 2.0, 0.4
    w = 1e-3 * a  # θ_T after one SGD step of 1e-3 from 0
    w_prime = w - xi * (w - a * math.cos(w))
    c = w_prime - 1e-5

    def inner(theta, phi, t):
        return 0.5 * (theta["w"] ** 2).sum() - (phi["a"] * torch.sin(theta["w"])).sum()

    def outer(theta, phi):
        return 0.5 * ((theta["w"] - c) ** 2).sum()

    problem = from_inner_loss(inner, outer, SGD(lr=1e-3), {"w": torch.zeros(1, dtype=F64)}, horizon=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(problem, {"a": torch.tensor([a], dtype=F64)}, DARTS(xi=xi))
    v = w_prime - c
    e = 1e-2 / abs(v)
    expected = -xi * (math.sin(w - e * v) - math.sin(w + e * v)) / (2 * e)
    assert abs(float(result.grad["a"]) - expected) < 1e-8 * abs(expected)


def _doubling_problem():
    """g = 15‖θ − a‖² (κ = 30), f = ½‖θ‖², θ_0 = 0: z ← z − 0.1·30(z − a) doubles z − a per
    step (factor −2), so its gradient norm is 2^i times the first at inner step i + 1."""

    def inner(theta, phi, t):
        return 15.0 * ((theta["w"] - phi["a"]) ** 2).sum()

    return from_inner_loss(inner, lambda theta, phi: 0.5 * (theta["w"] ** 2).sum(), SGD(lr=0.01),
                           {"w": torch.zeros(2, dtype=F64)}, horizon=1)


def test_divergence_factor_is_one_million():
    """F²SA with η_z = 0.1 on the doubling problem: 20 steps reach a gradient 2^19 ≈ 5.2e5
    times the first (below 1e6: no error, z = a − (−2)^20 a exactly), 21 steps reach
    2^20 ≈ 1.05e6 times it and raise at inner step 21."""
    problem, phi = _doubling_problem(), {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    method = F2SA(inner_iters=20, lr_y=0.01, lr_z=0.1)
    _, state, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
    torch.testing.assert_close(state["z"]["w"], phi["a"] * (1 - 2.0 ** 20), rtol=1e-14, atol=0)
    method = F2SA(inner_iters=21, lr_y=0.01, lr_z=0.1)
    with pytest.raises(LowerLevelDivergence, match=r"at inner step 21 of 21\): .*lower f2sa's lr_z"):
        method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)


def test_zo_tiny_nonzero_differences_are_resolved():
    """A black box h(φ) = 1e-13·Σφ (float64) changes by ~1e-16 over μ = 1e-3: the central
    differences are tiny but not exactly 0, so no direction counts as unresolved, no
    warning (a count of |w| < 1e-12 as unresolved would count all 4)."""
    phi = {"a": torch.tensor([0.5, -0.25], dtype=F64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(BlackBox(lambda p: 1e-13 * float(p["a"].sum())), phi,
                               ZeroOrderForwardGradient(num_directions=4, kind="coordinate"))
    assert result.diagnostics["unresolved_directions"] == 0
    assert bool((result.diagnostics["directional"] != 0).all())


def test_penalty_watch_checks_every_step_from_the_first():
    """Penalty(γ = 1, lr = 6/901) on the doubling problem: ∇_θ P = θ + 900(θ − a), step
    lr/2 = 3/901, so θ − 900a/901 doubles per step (factor −2) and the gradient norm at
    inner step i + 1 is 2^i times the first: 20 steps pass, 21 raise at inner step 21 (a
    watch that skipped the first gradient would measure from 2× it and pass 21 steps)."""
    problem, phi = _doubling_problem(), {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    method = Penalty(gamma=1.0, growth=1.0, inner_iters=20, lr=6 / 901)
    _, state, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
    target = 900 / 901 * phi["a"]
    torch.testing.assert_close(state["theta"]["w"], target * (1 - 2.0 ** 20), rtol=1e-9, atol=0)
    method = Penalty(gamma=1.0, growth=1.0, inner_iters=21, lr=6 / 901)
    with pytest.raises(LowerLevelDivergence, match=r"at inner step 21 of 21\): .*lower penalty's lr"):
        method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)


def test_neumann_counts_a_nan_term_as_growth():
    """H = [1e300], α = 1e10, d = 1: p_1 = 1 − 1e310 = −inf and p_2 = −inf + inf = NaN, and
    so on: every one of the K = 3 terms counts as growing (a NaN term is no convergence;
    a test ``norm > previous`` would pass NaN silently and count 1), with the warning."""
    problem, phi, _ = _quadratic(torch.tensor([[1e300]], dtype=F64), lambda theta, phi: theta["w"].sum())
    with pytest.warns(RuntimeWarning, match=r"grow \(3 of 3 terms"):
        result = hypergradient(problem, phi, neumann(iterations=3, alpha=1e10))
    assert result.diagnostics["growing_terms"] == 3


def test_f2sa_y_steps_use_the_inner_loss_of_their_own_index():
    """g_t = ½‖θ − (1 + t)a‖², f = ½‖θ‖², start = 3, 2 inner steps of 0.1: z ← z − 0.1(z − c_t)
    and y ← y − 0.1((y − c_t) + y) with c_t = (1 + t)a for t = 3, 4 (not c_3 twice for y)."""
    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - (1 + t) * phi["a"]) ** 2).sum()

    problem = from_inner_loss(inner, lambda theta, phi: 0.5 * (theta["w"] ** 2).sum(), SGD(lr=0.1),
                              {"w": torch.zeros(2, dtype=F64)}, horizon=1)
    phi = {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    method = F2SA(lam=1.0, lam_growth=0.0, inner_iters=2, lr_y=0.1, lr_z=0.1)
    _, state, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=3)
    y = z = torch.zeros(2, dtype=F64)
    for t in (3, 4):
        z = z - 0.1 * (z - (1 + t) * phi["a"])
        y = y - 0.1 * ((y - (1 + t) * phi["a"]) + y)
    torch.testing.assert_close(state["z"]["w"], z, rtol=1e-14, atol=0)
    torch.testing.assert_close(state["y"]["w"], y, rtol=1e-14, atol=0)
