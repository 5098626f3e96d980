"""Third mutation audit of pinnlab/bilevel/base.py and parameterization.py.

Pins what the earlier tests left open: every part of the problem that reparameterize()
builds (inner_step, inner_loss, the gradient step's losses and rate) passes the inner step
index t through unchanged, not only the constrained φ, so a t-dependent inner step (a
schedule, per-step randomness) is the same step after reparameterisation.
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.bilevel import BilevelProblem, ReverseUnroll, from_inner_loss, hypergradient
from pinnlab.bilevel.base import GradientStep, unroll, unrolled_objective
from pinnlab.bilevel.parameterization import Log, reparameterize
from pinnlab.solvers import SGD

from .bilevel.problems import F64


def _t_dependent_problem(seen):
    """Ω_t: w ← w + a·t; g = ½a(w − t)²; gradient-step losses [½a(w − t)²], rate a/(1 + t);
    every part records the t it was called with."""

    def inner_step(theta, state, phi, t):
        seen.append(("step", t))
        return {"w": theta["w"] + phi["a"] * t}, state

    def inner_loss(theta, phi, t):
        seen.append(("loss", t))
        return 0.5 * phi["a"] * (theta["w"] - t) ** 2

    def losses(theta, phi, t):
        seen.append(("losses", t))
        return [0.5 * phi["a"] * (theta["w"] - t) ** 2]

    def rate(phi, t):
        seen.append(("rate", t))
        return phi["a"] / (1 + t)

    return BilevelProblem(inner_step=inner_step, outer_loss=lambda theta, phi: theta["w"],
                          init=({"w": torch.tensor(0.0, dtype=F64)}, None), horizon=2,
                          inner_loss=inner_loss, gradient_step=GradientStep(losses, SGD(lr=1.0), rate))


U = {"a": torch.tensor(math.log(2.0), dtype=F64)}  # a = exp(u) = 2


def test_reparameterized_inner_step_passes_the_step_index():
    """The reparameterised Ω_t at t = 3 is w + a·t = 1 + 2·3 = 7 (t = 0 would give 1)."""
    seen = []
    moved = reparameterize(_t_dependent_problem(seen), {"a": Log()})
    theta, state = moved.inner_step({"w": torch.tensor(1.0, dtype=F64)}, None, U, 3)
    assert seen == [("step", 3)]
    assert state is None
    assert float(theta["w"]) == pytest.approx(7.0, rel=1e-15)


def test_reparameterized_unroll_from_a_later_start_sees_each_step_index():
    """Unrolling T = 2 steps from start = 1: t = 1, 2, so θ_T = a·(1 + 2) = 6 and
    dθ_T/du = 3·exp(u) = 6 (the reverse hypergradient of f = θ_T)."""
    seen = []
    moved = reparameterize(_t_dependent_problem(seen), {"a": Log()})
    theta, _ = unroll(moved, U, start=1)
    assert seen == [("step", 1), ("step", 2)]
    assert float(theta["w"]) == pytest.approx(6.0, rel=1e-15)
    assert float(unrolled_objective(moved, start=1)(U)) == pytest.approx(6.0, rel=1e-15)
    grad = hypergradient(moved, U, ReverseUnroll(), start=1).grad["a"]
    assert float(grad) == pytest.approx(6.0, rel=1e-14)


def test_reparameterized_inner_loss_passes_the_step_index():
    """The reparameterised g at w = 1, t = 3 is ½·2·(1 − 3)² = 4 (t = 0 would give 1)."""
    seen = []
    moved = reparameterize(_t_dependent_problem(seen), {"a": Log()})
    value = moved.inner_loss({"w": torch.tensor(1.0, dtype=F64)}, U, 3)
    assert seen == [("loss", 3)]
    assert float(value) == pytest.approx(4.0, rel=1e-15)


def test_reparameterized_gradient_step_losses_and_rate_pass_the_step_index():
    """The reparameterised split step at t = 3: losses [½·2·(1 − 3)²] = [4], rate
    a/(1 + t) = 0.5 (= step_size(u, 3)), and update() gives w − 0.5·(a(w − t))·1 = 1 + 2 = 3."""
    seen = []
    moved = reparameterize(_t_dependent_problem(seen), {"a": Log()})
    theta = {"w": torch.tensor(1.0, dtype=F64)}
    values = list(moved.gradient_step.losses(theta, U, 3))
    assert seen == [("losses", 3)]
    assert [float(v) for v in values] == [pytest.approx(4.0, rel=1e-15)]
    assert float(moved.gradient_step.rate(U, 3)) == pytest.approx(0.5, rel=1e-15)
    assert moved.step_size(U, 3) == pytest.approx(0.5, rel=1e-15)
    grads = {"w": torch.tensor(2.0 * (1.0 - 3.0), dtype=F64)}
    new, _ = moved.gradient_step.update(grads, SGD(lr=1.0).init(theta), theta, U, 3)
    assert float(new["w"]) == pytest.approx(3.0, rel=1e-15)
    assert [t for _, t in seen] == [3, 3, 3, 3]


@pytest.mark.parametrize("tangents", ["jvp", "hvp"])
def test_forward_mode_hypergradients_of_a_float32_phi_are_float32(tangents):
    """fgu and fg2u in either tangent mode give ∇h in φ's dtype: under vmap(jvp) the inner
    step's Python numbers promoted float32 to float64, and the jvp mode returned float64
    where hvp and rgu gave float32. h(a) = ½(θ_3 − 1)² for θ ← θ − ½(θ − a) from 0, so
    θ_3 = 7a/8 and ∇h = 7/8·(7a/8 − 1)."""
    from pinnlab.bilevel import ExactForwardUnroll, ForwardGradientUnroll

    def g(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    def f(theta, phi):
        return 0.5 * ((theta["w"] - 1.0) ** 2).sum()

    problem = from_inner_loss(g, f, SGD(lr=0.5), {"w": torch.zeros(2)}, horizon=3)
    a = torch.tensor([3.0, 2.0])
    expected = 7 / 8 * (7 * a / 8 - 1)
    for method in (ExactForwardUnroll(tangents=tangents), ForwardGradientUnroll(tangents=tangents, num_directions=64)):
        grad = method(problem, {"a": a}).grad["a"]
        assert grad.dtype == torch.float32, (type(method).__name__, grad.dtype)
        if isinstance(method, ExactForwardUnroll):
            torch.testing.assert_close(grad, expected)
