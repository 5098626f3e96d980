"""Implicit-differentiation details the agreement tests do not reach (float64).

CG's stopping rule at an exact zero residual, Neumann's growth check at a singular
Hessian (terms of constant norm up to rounding) and the term its warning names, both
solvers at d = 0, and the value DARTS reports.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    ReverseUnroll,
    cg,
    from_inner_loss,
    hypergradient,
    neumann,
)
from pinnlab.bilevel.base import flatten
from pinnlab.solvers import SGD

from .problems import F64, Ridge


def _quadratic(hessian, outer):
    """g = ½θᵀHθ − θᵀBa (H = ``hessian``, B = 1), one inner step from θ_0 = 0, φ = a."""
    n = hessian.shape[0]
    b_mat = torch.ones(n, 1, dtype=F64)

    def inner(theta, phi, t):
        return 0.5 * theta["w"] @ hessian @ theta["w"] - theta["w"] @ b_mat @ phi["a"]

    problem = from_inner_loss(inner, outer, SGD(lr=1e-3), {"w": torch.zeros(n, dtype=F64)}, horizon=1)
    return problem, {"a": torch.tensor([0.3], dtype=F64)}, b_mat


def _silent(problem, phi, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return hypergradient(problem, phi, method)


def test_cg_stops_at_an_exactly_zero_residual_with_tol_0():
    """H = 2I: the first CG step solves Hq = d exactly (α = 1/2, r = 0 in floating point),
    so with tol = 0 CG stops after 1 HVP (‖r‖² = 0 ≤ tol²), silent, with the exact
    c − (H⁻¹d)ᵀY = Bᵀd/2. Testing ‖r‖² < tol² would go on with the search direction
    p = 0, find pᵀHp = 0 and warn of non-positive curvature on a positive definite H."""
    d = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    problem, phi, b_mat = _quadratic(2.0 * torch.eye(3, dtype=F64), lambda theta, phi: d @ theta["w"])
    result = _silent(problem, phi, cg(iterations=5, tol=0.0))
    assert result.diagnostics["hvps"] == 1 and result.diagnostics["negative_curvature"] == 0
    torch.testing.assert_close(flatten(result.grad), b_mat.T @ d / 2, rtol=1e-15, atol=0)


def test_linear_solvers_at_d_zero_are_silent_and_converged():
    """f depends on φ alone, so d = ∂f/∂θ = 0 and the hypergradient is c = ∇_φ f: CG
    (tol = 0) stops before any HVP without a curvature warning; Neumann's terms are all 0,
    so its series is converged: last_term = 0 (not 1) and no growth."""
    problem, phi, _ = _quadratic(torch.diag(torch.tensor([1.0, 2.0], dtype=F64)),
                                 lambda theta, phi: (phi["a"] ** 2).sum())
    expected = 2 * phi["a"]
    result = _silent(problem, phi, cg(iterations=4, tol=0.0))
    assert result.diagnostics["hvps"] == 0 and result.diagnostics["negative_curvature"] == 0
    torch.testing.assert_close(result.grad["a"], expected, rtol=0, atol=0)
    result = _silent(problem, phi, neumann(iterations=5, alpha=0.1))
    assert result.diagnostics["growing_terms"] == 0 and result.diagnostics["last_term"] == 0.0
    torch.testing.assert_close(result.grad["a"], expected, rtol=0, atol=0)


def test_neumann_terms_of_constant_norm_up_to_rounding_do_not_count_as_growth():
    """H = Q diag(3, 0, 0) Qᵀ (a rotated singular Hessian: parameters g ignores) and
    α = 1/2: the terms (I − αH)^k d lose their range part by 1/2 per term and keep the
    null-space part, whose norm then stays constant up to rounding (it rises by ~1e-16
    relative in some terms). That is no divergence: no warning, growing_terms = 0, and
    last_term = ‖P_null d‖/‖d‖ to 1e-12 (0.5^60 ≈ 1e-18 is what is left of the rest).
    A comparison without the √ε rounding allowance counts several growing terms."""
    c, s = math.cos(0.7), math.sin(0.7)
    q = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    hessian = q @ torch.diag(torch.tensor([3.0, 0.0, 0.0], dtype=F64)) @ q.T
    d = torch.tensor([0.3, -1.0, 0.2], dtype=F64)
    problem, phi, _ = _quadratic(hessian, lambda theta, phi: d @ theta["w"])
    result = _silent(problem, phi, neumann(iterations=60, alpha=0.5))
    assert result.diagnostics["growing_terms"] == 0
    null = q[:, 1:] @ (q[:, 1:].T @ d)
    assert abs(result.diagnostics["last_term"] - float(null.norm() / d.norm())) < 1e-12


def test_darts_reports_the_outer_value_at_theta_t():
    """DARTS' value is h(φ) = f(θ_T, φ), the value the outer loop records (as RGU's), not
    f at its virtual step w' = θ_T − ξ∇g, which differs here by > 1e-3."""
    ridge = Ridge()
    problem = ridge.problem(horizon=5, lr=0.1)
    reference = hypergradient(problem, ridge.phi, ReverseUnroll())
    result = hypergradient(problem, ridge.phi, DARTS(xi=0.3))
    assert result.value == reference.value
    torch.testing.assert_close(result.theta["w"], reference.theta["w"], rtol=1e-12, atol=1e-14)
    theta = reference.theta
    w_prime = {"w": theta["w"] - 0.3 * torch.func.grad(ridge.inner_loss)(theta, ridge.phi, 4)["w"]}
    assert abs(float(ridge.outer_loss(w_prime, ridge.phi)) - reference.value) > 1e-3


def test_neumann_warning_names_the_first_growing_term():
    """α = 1, H = diag(3, 0.5): along the first eigenvector the terms double (|1 − 3| = 2),
    so all 10 terms grow, from term 1 on; the warning says so ("10 of 10 terms ..., from
    term 1"), not the index of the last growing term."""
    problem, phi, _ = _quadratic(torch.diag(torch.tensor([3.0, 0.5], dtype=F64)),
                                 lambda theta, phi: theta["w"].sum())
    with pytest.warns(RuntimeWarning, match=r"\(10 of 10 terms larger than the one before, from term 1;"):
        result = hypergradient(problem, phi, neumann(iterations=10, alpha=1.0))
    assert result.diagnostics["growing_terms"] == 10
