"""Hypergradients on problems whose inner loss and learning rate change with the inner index t.

A PINN's inner step draws new points (and may decay its rate) at every t, so an estimator
that evaluates g or the rate at the wrong index is wrong there; the Ridge and
LinearQuadratic problems of the other tests cannot tell (their g and rate do not depend on
t). Float64 closed forms or hand-written backprop.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    BilevelProblem,
    HessianFree,
    Penalty,
    TruncatedReverseUnroll,
    cg,
    from_inner_loss,
    hypergradient,
)
from pinnlab.bilevel.base import GradientStep
from pinnlab.solvers import SGD

F64 = torch.float64


# TRGU(s) differentiates the last s inner steps *with their own indices* t = start + T − s, …,
# start + T − 1 (a PINN's inner step resamples its points per t). On a problem whose inner loss
# depends on t, TRGU(s) must equal a hand-written truncated backprop, to 1e-12 (float64).
def _targets(t):
    # a different quadratic per index t: g_t(θ, φ) = ½ Σ_j (θ_j − (1 + t + j)·φ_j)² · (1 + 0.1 t)
    return 1.0 + t + torch.arange(3, dtype=F64), 1.0 + 0.1 * t


def _trgu_inner(theta, phi, t):
    a, scale = _targets(t)
    return 0.5 * scale * ((theta["w"] - a * phi["p"]) ** 2).sum()


def _trgu_outer(theta, phi):
    return 0.5 * ((theta["w"] - torch.tensor([1.0, -2.0, 0.5], dtype=F64)) ** 2).sum()


@pytest.mark.parametrize("start", [0, 7])
@pytest.mark.parametrize("s", [1, 3])
def test_trgu_uses_the_indices_of_the_last_s_steps(start, s):
    horizon, eta = 6, 0.2
    phi = {"p": torch.tensor([0.3, -0.4, 0.8], dtype=F64)}
    problem = from_inner_loss(_trgu_inner, _trgu_outer, SGD(lr=eta), {"w": torch.zeros(3, dtype=F64)}, horizon=horizon)
    p = phi["p"].clone().requires_grad_(True)
    w = torch.zeros(3, dtype=F64)
    for t in range(start, start + horizon):
        if t == start + horizon - s:
            w = w.detach()
        a, scale = _targets(t)
        w = w - eta * scale * (w - a * p)
    (expected,) = torch.autograd.grad(_trgu_outer({"w": w}, {"p": p}), p)
    got = hypergradient(problem, phi, TruncatedReverseUnroll(steps=s), start=start).grad["p"]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


# Estimators that evaluate g at θ_T must use the *last* inner index t = start + T − 1 (for its
# Hessian, its mixed derivative, and the learning rate that sets HF's α / DARTS' ξ), not the
# first one. Ridge/LinearQuadratic have a t-independent g and lr, so they cannot tell; here g_t and
# the rate change with t. Float64 closed forms, to 1e-10.
G = torch.Generator().manual_seed(0)
ROOT = torch.randn(3, 3, generator=G, dtype=F64)
A = ROOT @ ROOT.T / 3 + torch.eye(3, dtype=F64)
B = torch.randn(3, 2, generator=G, dtype=F64)
Y = torch.randn(3, generator=G, dtype=F64)
PHI = {"a": torch.tensor([0.4, -0.7], dtype=F64)}
START, HORIZON, LR0 = 3, 5, 0.1


def scale(t):
    return 1.0 + 0.5 * t


def rate(phi, t):
    return LR0 * (1.0 - t / 20)  # a decaying schedule: rate(start) ≠ rate(last)


def inner(theta, phi, t):  # g_t = s_t (½θᵀAθ − θᵀBa): H_t = s_t A, Y_t = −s_t B
    w = theta["w"]
    return scale(t) * (0.5 * w @ A @ w - w @ B @ phi["a"])


def outer(theta, phi):
    r = theta["w"] - Y
    return 0.5 * r @ r + 0.05 * phi["a"] @ phi["a"]


def problem():
    opt = SGD(lr=LR0)
    grad = torch.func.grad(inner)

    def step(theta, state, phi, t):
        return opt.update(grad(theta, phi, t), state, theta, rate(phi, t))

    theta0 = {"w": torch.zeros(3, dtype=F64)}
    split = GradientStep(lambda theta, phi, t: (inner(theta, phi, t),), opt, rate)
    return BilevelProblem(step, outer, (theta0, opt.init(theta0)), HORIZON, inner_loss=inner, gradient_step=split)


def theta_t():
    w = torch.zeros(3, dtype=F64)
    for t in range(START, START + HORIZON):
        w = w - rate(PHI, t) * scale(t) * (A @ w - B @ PHI["a"])
    return w


LAST = START + HORIZON - 1


def test_implicit_uses_the_hessian_and_mixed_derivative_of_the_last_index():
    w = theta_t()
    d, c = w - Y, 0.1 * PHI["a"]
    # c − (H⁻¹d)ᵀY with H = s A, Y = −s B: the scale cancels in exact arithmetic ... so use
    # the damped CG (H + λI)q = d, where it does not
    lam = 0.3
    q = torch.linalg.solve(scale(LAST) * A + lam * torch.eye(3, dtype=F64), d)
    expected = c + scale(LAST) * B.T @ q
    got = hypergradient(problem(), PHI, cg(iterations=3, damping=lam, tol=0.0), start=START).grad["a"]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_hessian_free_alpha_and_darts_xi_are_the_rate_of_the_last_step():
    w = theta_t()
    d, c = w - Y, 0.1 * PHI["a"]
    alpha = rate(PHI, LAST)
    hf = hypergradient(problem(), PHI, HessianFree(), start=START).grad["a"]
    torch.testing.assert_close(hf, c + alpha * scale(LAST) * B.T @ d, rtol=1e-12, atol=1e-14)
    darts = hypergradient(problem(), PHI, DARTS(), start=START).grad["a"]
    w_prime = w - alpha * scale(LAST) * (A @ w - B @ PHI["a"])
    torch.testing.assert_close(darts, c + alpha * scale(LAST) * B.T @ (w_prime - Y), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", [Penalty(gamma=2.0, inner_iters=4, lr=0.05),
                                    F2SA(lam=2.0, inner_iters=4, lr_y=0.05, lr_z=0.05)], ids=["penalty", "f2sa"])
def test_outer_algorithms_take_the_phi_gradient_at_their_last_inner_index(method):
    """Their φ-gradient uses g at t = start + inner_iters − 1 (the index of the last θ step)."""
    prob = problem()
    state = method.init(prob, PHI)
    grad, new_state, _ = method.step(prob, PHI, state, outer_step=0, start=START)
    t = START + method.inner_iters - 1
    c = 0.1 * PHI["a"]
    if isinstance(method, Penalty):  # ∇_φ [f + (γ/2)‖∇_θ g_t‖²] = c + γ(−s_t B)ᵀ ∇_θ g_t
        w = new_state["theta"]["w"]
        residual = scale(t) * (A @ w - B @ PHI["a"])
        expected = c - method.gamma * scale(t) * B.T @ residual
    else:  # c + λ(∇_φ g_t(y) − ∇_φ g_t(z)) = c − λ s_t Bᵀ(y − z)
        y, z = new_state["y"]["w"], new_state["z"]["w"]
        expected = c - method.lam * scale(t) * B.T @ (y - z)
    torch.testing.assert_close(grad["a"], expected, rtol=1e-12, atol=1e-14)
