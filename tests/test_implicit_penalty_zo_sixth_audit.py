"""Sixth mutation audit of the implicit, penalty and zeroth-order hypergradients (float64).

Closed forms on small quadratics for the details the earlier audits left open: DARTS
with a θ-free outer loss (‖v‖ = 0), its direct and second-order terms at the virtual
step w', and what ``inner_step_evaluations`` counts for the implicit solvers.
"""

from __future__ import annotations

import warnings

import torch

from pinnlab.bilevel import BilevelProblem, cg, from_inner_loss, hypergradient, neumann
from pinnlab.bilevel.implicit import DARTS
from pinnlab.solvers import SGD

from .bilevel.problems import F64
from .bilevel.test_implicit_details import _quadratic
from .bilevel.test_validation import _CountingStep

A = torch.tensor([0.7, -1.3], dtype=F64)


def test_darts_with_a_theta_free_outer_loss_is_its_direct_gradient():
    """f = ½‖a‖² does not depend on θ, so v = ∇_{w'} f = 0 (the ε normalisation must not
    divide by ‖v‖ = 0): DARTS returns ∇_a f = a exactly, with value ½‖a‖²."""
    problem, phi, _ = _quadratic(torch.eye(2, dtype=F64), lambda theta, phi: 0.5 * phi["a"] @ phi["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(problem, phi, DARTS(xi=0.1))
    torch.testing.assert_close(result.grad["a"], phi["a"], rtol=0, atol=0)
    assert result.value == 0.5 * float(phi["a"] @ phi["a"])


def test_darts_direct_gradient_is_at_the_virtual_step():
    """g = ½‖θ − a‖², f = ½‖θ − b‖², one SGD step of 0.5 from 0: θ_T = 0.5a, and ξ = 0.2
    gives w' = θ_T − ξ(θ_T − a) = 0.6a, v = w' − b. ∇_a g = a − θ is linear, so
    ĝ_a = ξ v = 0.2(0.6a − b), and ĝ_b = ∇_b f(w') = b − 0.6a (at w', not at θ_T)."""

    def inner(theta, phi, t):
        r = theta["w"] - phi["a"]
        return 0.5 * r @ r

    def outer(theta, phi):
        r = theta["w"] - phi["b"]
        return 0.5 * r @ r

    problem = from_inner_loss(inner, outer, SGD(lr=0.5), {"w": torch.zeros(2, dtype=F64)}, horizon=1)
    a, b = A, torch.tensor([0.25, 0.5], dtype=F64)
    result = hypergradient(problem, {"a": a, "b": b}, DARTS(xi=0.2))
    torch.testing.assert_close(result.grad["a"], 0.2 * (0.6 * a - b), rtol=1e-9, atol=0)
    torch.testing.assert_close(result.grad["b"], b - 0.6 * a, rtol=1e-14, atol=1e-15)


def test_implicit_inner_step_evaluations_count_the_unroll_not_the_hvps():
    """``inner_step_evaluations`` is the T inner steps of the unroll to θ_T (here T = 3,
    counted at the step itself); the solver's Hessian-vector products are reported apart as
    ``hvps`` (4 for Neumann K = 4; 1 for CG, exact in one step as H = I)."""

    def inner(theta, phi, t):
        r = theta["w"] - phi["a"]
        return 0.5 * r @ r

    base = from_inner_loss(inner, lambda theta, phi: 0.5 * theta["w"] @ theta["w"], SGD(lr=0.1),
                           {"w": torch.zeros(2, dtype=F64)}, horizon=3)
    counter = _CountingStep(base.inner_step)
    problem = BilevelProblem(counter, base.outer_loss, base.init, 3, inner_loss=base.inner_loss,
                             gradient_step=base.gradient_step)
    for method, hvps in ((neumann(iterations=4, alpha=0.5), 4), (cg(iterations=5), 1)):
        counter.calls = 0
        result = hypergradient(problem, {"a": A}, method)
        assert counter.calls == result.diagnostics["inner_step_evaluations"] == 3
        assert result.diagnostics["hvps"] == hvps
