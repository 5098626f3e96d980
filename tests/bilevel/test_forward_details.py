"""Forward-mode hypergradients: direction streams, start index, warm start (float64).

Each test pins a detail of (FG)²U/FGU that the agreement tests leave open: every
(outer step, direction) pair has its own direction stream, Gaussian directions do not
depend on the computing dtype, the Hessian-vector tangents use the inner indices from
``start`` and a given θ_0 over a φ-dependent ``problem.init``, and the diagnostics count
the inner steps each tangent mode runs.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    ReverseUnroll,
    from_inner_loss,
    hypergradient,
)
from pinnlab.bilevel.base import GradientStep, flatten
from pinnlab.bilevel.forward import directions
from pinnlab.solvers import SGD

from .problems import F64, Ridge


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# -- 1. direction streams ---------------------------------------------------------------------
def test_every_outer_step_and_direction_index_has_its_own_direction():
    """Direction i of outer step k comes from the stream (seed, "direction", k, i): the 16
    Gaussian directions of outer steps 0..3 × indices 0..3 are pairwise different. A
    stream keyed (i, k) gives direction 1 of step 0 = direction 0 of step 1, one keyed
    k + i repeats along the anti-diagonals: the estimates of consecutive outer steps
    (and of ``accumulate``) would then share directions."""
    rows = torch.cat([directions("gaussian", range(4), 5, seed=7, outer_step=k, dtype=F64, device="cpu")
                      for k in range(4)])
    assert rows.shape == (16, 5)
    for a in range(16):
        for b in range(a):
            assert not torch.equal(rows[a], rows[b]), (divmod(a, 4), divmod(b, 4))


def test_gaussian_directions_do_not_depend_on_the_dtype():
    """Gaussian directions are drawn in float64 and then cast, so a float32 run uses the
    float64 run's directions (rounded), and the two estimates are comparable. (PyTorch
    draws float32 normals differently from float64 ones from 16 values on: N = 20.)"""
    v64 = directions("gaussian", range(3), 20, seed=2, outer_step=1, dtype=F64, device="cpu")
    v32 = directions("gaussian", range(3), 20, seed=2, outer_step=1, dtype=torch.float32, device="cpu")
    assert v32.dtype == torch.float32
    torch.testing.assert_close(v32, v64.float(), rtol=0, atol=0)


# -- 2. the inner indices from start ---------------------------------------------------------
def _scale(t):
    return 1.0 + 0.5 * t


def _rate(phi, t):
    return 0.1 * (1.0 - t / 20)


def _t_dependent_problem():
    """g_t = s_t(½θᵀAθ − θᵀBa) and a decaying rate: the loop from ``start`` differs from
    the one from 0 (H_t, Y_t and the rate change with t)."""
    gen = torch.Generator().manual_seed(0)
    root = torch.randn(3, 3, generator=gen, dtype=F64)
    a_mat = root @ root.T / 3 + torch.eye(3, dtype=F64)
    b_mat = torch.randn(3, 2, generator=gen, dtype=F64)
    y = torch.randn(3, generator=gen, dtype=F64)

    def inner(theta, phi, t):
        w = theta["w"]
        return _scale(t) * (0.5 * w @ a_mat @ w - w @ b_mat @ phi["a"])

    def outer(theta, phi):
        r = theta["w"] - y
        return 0.5 * r @ r + 0.05 * phi["a"] @ phi["a"]

    opt = SGD(lr=0.1, momentum=0.5)
    grad = torch.func.grad(inner)

    def step(theta, state, phi, t):
        return opt.update(grad(theta, phi, t), state, theta, _rate(phi, t))

    theta0 = {"w": torch.zeros(3, dtype=F64)}
    split = GradientStep(lambda theta, phi, t: (inner(theta, phi, t),), opt, _rate)
    problem = BilevelProblem(step, outer, (theta0, opt.init(theta0)), 5, inner_loss=inner, gradient_step=split)
    return problem, {"a": torch.tensor([0.4, -0.7], dtype=F64)}


@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
def test_forward_methods_use_the_inner_indices_from_start(tangents):
    """With start = 7, FGU and the directional derivatives of (FG)²U equal RGU at start = 7
    (inner steps t = 7..11) to 1e-12; RGU at start = 0 differs by > 10 %, so tangents
    carried through t = 0..4 fail."""
    problem, phi = _t_dependent_problem()
    start = 7
    rgu = flatten(hypergradient(problem, phi, ReverseUnroll(), start=start).grad)
    assert _rel(flatten(hypergradient(problem, phi, ReverseUnroll(), start=0).grad), rgu) > 0.1
    fgu = hypergradient(problem, phi, ExactForwardUnroll(tangents=tangents), start=start)
    torch.testing.assert_close(flatten(fgu.grad), rgu, rtol=1e-12, atol=1e-14)
    fg2u = hypergradient(problem, phi, ForwardGradientUnroll(num_directions=3, tangents=tangents), start=start)
    torch.testing.assert_close(fg2u.diagnostics["directional"], fg2u.diagnostics["directions"] @ rgu,
                               rtol=1e-12, atol=1e-14)
    reverse_theta = hypergradient(problem, phi, ReverseUnroll(), start=start).theta
    torch.testing.assert_close(fgu.theta["w"], reverse_theta["w"], rtol=1e-12, atol=1e-14)


# -- 3. a given θ_0 over a φ-dependent init ----------------------------------------------------
@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
def test_a_given_init_replaces_a_phi_dependent_problem_init(tangents):
    """``init=(θ, state)`` (a warm start) is where the loop starts even when
    ``problem.init`` is a function of φ, and it is held fixed (no dθ_0/dφ): (FG)²U's
    directional derivatives equal ⟨RGU with the same init, v_i⟩ to 1e-10, and θ_T is
    RGU's. Starting from problem.init(φ) instead changes ∇h by > 10 %."""
    ridge = Ridge()
    opt = SGD(lr=0.1, momentum=0.9)
    problem = from_inner_loss(ridge.inner_loss, ridge.outer_loss, opt,
                              lambda phi: {"w": torch.tanh(phi["log_reg"])}, horizon=6)
    theta = {"w": torch.linspace(-0.5, 0.5, ridge.features, dtype=F64)}
    state = type(opt.init(theta))({"w": torch.linspace(0.2, -0.3, ridge.features, dtype=F64)})
    init = (theta, state)
    reference = hypergradient(problem, ridge.phi, ReverseUnroll(), init=init)
    g = flatten(reference.grad)
    assert _rel(flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad), g) > 0.1
    result = hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=4, tangents=tangents), init=init)
    w, v = result.diagnostics["directional"], result.diagnostics["directions"]
    expected = v @ g
    assert float((w - expected).abs().max() / expected.abs().max()) < 1e-10
    torch.testing.assert_close(result.theta["w"], reference.theta["w"], rtol=1e-12, atol=1e-14)


# -- 4. inner step evaluations -----------------------------------------------------------------
@pytest.mark.parametrize("tangents, extra", [("auto", 0), ("hvp", 0), ("jvp", 1)])
def test_forward_methods_count_their_inner_steps(tangents, extra):
    """Each direction runs T inner steps; the jvp mode runs one more primal unroll for
    θ_T, the hvp mode (``"auto"`` on a problem with a gradient step) returns θ_T from its
    tangent pass: (FG)²U reports T·(b + extra), FGU T·(N + extra)."""
    ridge = Ridge(features=3)
    horizon = 4
    problem = ridge.problem(horizon=horizon)
    fg2u = hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=5, chunk_size=2,
                                                                  tangents=tangents))
    assert fg2u.diagnostics["inner_step_evaluations"] == horizon * (5 + extra)
    fgu = hypergradient(problem, ridge.phi, ExactForwardUnroll(tangents=tangents))
    assert fgu.diagnostics["inner_step_evaluations"] == horizon * (3 + extra)


def test_auto_tangents_without_a_gradient_step_take_the_jvp_path():
    """A problem without a gradient step has only the whole inner step: ``"auto"`` is the
    jvp mode (T·(b + 1) inner steps), still exact against RGU to 1e-10."""
    ridge = Ridge(features=3)
    full = ridge.problem(horizon=4)
    problem = BilevelProblem(full.inner_step, full.outer_loss, full.init, full.horizon, inner_loss=full.inner_loss)
    result = hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=2))
    assert result.diagnostics["inner_step_evaluations"] == 4 * 3
    g = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    expected = result.diagnostics["directions"] @ g
    assert float((result.diagnostics["directional"] - expected).abs().max() / expected.abs().max()) < 1e-10
