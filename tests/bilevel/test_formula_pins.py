"""Exact checks of hypergradient details the agreement tests do not reach (float64).

CG's stopping rule, DARTS' finite-difference scale, tangents of a φ-dependent optimizer
state and of a rate depending on a vector φ, the chain rule of a reparameterised
φ-dependent θ₀, and the penalty/F²SA multiplier schedules: each fails when its formula is
changed in the way its comment names.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    BilevelProblem,
    ExactForwardUnroll,
    Penalty,
    ReverseUnroll,
    cg,
    from_inner_loss,
    hypergradient,
)
from pinnlab.bilevel.base import GradientStep, flatten
from pinnlab.bilevel.parameterization import Log, Logit, reparameterize
from pinnlab.solvers import SGD, Adam
from pinnlab.solvers.optim import SGDState

F64 = torch.float64


# cg(tol) stops once ‖r‖ ≤ tol (‖r‖² ≤ tol²), not once ‖r‖² ≤ tol: with ‖d‖ = 0.1 and
# tol = 0.05 the first residual (‖d‖ = 0.1 > tol) must not stop CG, although ‖d‖² = 0.01 < tol.
def test_cg_tol_is_compared_with_the_residual_norm():
    g = torch.Generator().manual_seed(1)
    root = torch.randn(3, 3, generator=g, dtype=F64)
    a = root @ root.T / 3 + torch.eye(3, dtype=F64)
    b = torch.randn(3, 2, generator=g, dtype=F64)
    phi = {"p": torch.tensor([0.3, -0.5], dtype=F64)}
    theta_star = torch.linalg.solve(a, b @ phi["p"])
    e = torch.tensor([0.06, 0.0, -0.08], dtype=F64)  # ‖e‖ = 0.1
    target = theta_star - e  # so d = θ_T − target = e at the (converged) θ_T

    def inner(theta, phi, t):
        w = theta["w"]
        return 0.5 * w @ a @ w - w @ b @ phi["p"]

    def outer(theta, phi):
        r = theta["w"] - target
        return 0.5 * r @ r

    problem = from_inner_loss(inner, outer, SGD(lr=0.3), {"w": theta_star.clone()}, horizon=1)
    result = hypergradient(problem, phi, cg(iterations=3, tol=0.05))
    d = theta_star - 0.3 * (a @ theta_star - b @ phi["p"]) - target
    assert 0.05 < float(d.norm()) < 0.15
    expected = b.T @ torch.linalg.solve(a, d)  # c − (A⁻¹d)ᵀ(−B), c = 0
    assert result.diagnostics["hvps"] >= 1
    # CG stops after the iteration whose residual falls below tol: a loose agreement suffices
    # to tell it from the unsolved q = 0 (hypergradient 0)
    assert float((result.grad["p"] - expected).norm()) < 0.5 * float(expected.norm())


# DARTS' finite-difference step is ε/‖∇_{w'} f‖ (a perturbation of size ε in θ), so on a
# non-quadratic g with a large ‖∇_{w'} f‖ (here ≈ 60) the estimate still matches the exact
# second-order formula ∇_φ f(w') − ξ ∇_φ⟨∇_θ g(θ, φ), v⟩ to 1e-5 relative at ε = 1e-3 (error O(ε²)).
def test_darts_perturbation_is_normalised_by_the_outer_gradient():
    def inner(theta, phi, t):  # quartic in θ, so ∇_φ g is not linear in θ
        w = theta["w"]
        return 0.25 * (phi["a"] * w**4).sum() + 0.5 * (w**2).sum() - w.sum()

    def outer(theta, phi):
        return 30.0 * ((theta["w"] - 2.0) ** 2).sum()

    phi = {"a": torch.tensor([0.5, 1.5], dtype=F64)}
    problem = from_inner_loss(inner, outer, SGD(lr=0.1), {"w": torch.zeros(2, dtype=F64)}, horizon=40)
    xi = 0.1
    est = hypergradient(problem, phi, DARTS(xi=xi, epsilon=1e-3)).grad["a"]
    theta = {"w": torch.zeros(2, dtype=F64)}
    for t in range(40):
        theta = {"w": theta["w"] - 0.1 * torch.func.grad(inner)(theta, phi, t)["w"]}
    w_prime = {"w": theta["w"] - xi * torch.func.grad(inner)(theta, phi, 0)["w"]}
    v = torch.func.grad(outer)(w_prime, phi)
    assert float(v["w"].norm()) > 30

    def mixed(phi):
        return (torch.func.grad(inner)(theta, phi, 0)["w"] * v["w"]).sum()

    expected = -xi * torch.func.grad(mixed)(phi)["a"]  # ∇_φ f = 0
    torch.testing.assert_close(est, expected, rtol=1e-5, atol=1e-10)


# fg2u/fgu (Hessian-vector tangents) carry the tangent of a φ-dependent initial optimizer
# *state* (here a heavy-ball buffer m_0 = φ), not only of θ_0: FGU equals RGU to 1e-10.
def test_fgu_carries_the_tangent_of_a_phi_dependent_momentum_buffer():
    opt = SGD(lr=0.1, momentum=0.8)
    target = torch.tensor([1.0, -0.5, 2.0], dtype=F64)

    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - target) ** 2).sum()

    grad = torch.func.grad(inner)

    def step(theta, state, phi, t):
        return opt.update(grad(theta, phi, t), state, theta, opt.lr)

    def outer(theta, phi):
        return 0.5 * (theta["w"] ** 2).sum()

    def init(phi):
        return {"w": torch.zeros(3, dtype=F64)}, SGDState({"w": phi["m0"] * 1.0})

    problem = BilevelProblem(step, outer, init, 6, inner_loss=inner,
                             gradient_step=GradientStep(lambda th, ph, t: (inner(th, ph, t),), opt,
                                                        lambda ph, t: opt.lr))
    phi = {"m0": torch.tensor([0.3, 0.2, -0.1], dtype=F64)}
    rgu = flatten(hypergradient(problem, phi, ReverseUnroll()).grad)
    fgu = flatten(hypergradient(problem, phi, ExactForwardUnroll(tangents="hvp")).grad)
    assert float(rgu.norm()) > 1e-3
    torch.testing.assert_close(fgu, rgu, rtol=1e-10, atol=1e-12)


# The rate's tangent ⟨∇_φ rate, φ̇⟩ sums over all entries of a φ tensor: with a learning
# rate that depends on a 3-entry φ (lr = 0.05·Σ softplus(φ_lr)), FGU by Hessian-vector
# tangents equals RGU to 1e-10.
def test_fgu_with_a_rate_of_a_vector_phi_equals_rgu():
    target = torch.tensor([1.0, -1.0, 0.5], dtype=F64)

    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - target) ** 2).sum() + 0.1 * (theta["w"] ** 4).sum()

    def outer(theta, phi):
        return ((theta["w"] - 0.3) ** 2).sum()

    for opt in (SGD(lr=0.1, momentum=0.5), Adam(lr=0.1)):
        problem = from_inner_loss(inner, outer, opt, {"w": torch.zeros(3, dtype=F64)}, horizon=6,
                                  lr=lambda phi: 0.05 * torch.nn.functional.softplus(phi["lr"]).sum())
        phi = {"lr": torch.tensor([0.2, -0.4, 1.0], dtype=F64)}
        rgu = flatten(hypergradient(problem, phi, ReverseUnroll()).grad)
        fgu = flatten(hypergradient(problem, phi, ExactForwardUnroll(tangents="hvp")).grad)
        assert float(rgu.norm()) > 1e-3
        torch.testing.assert_close(fgu, rgu, rtol=1e-10, atol=1e-12)


# reparameterize() feeds the *constrained* φ = forward(u) to every part of the problem,
# θ_0(φ) included: the u-hypergradient is the φ-hypergradient times dφ/du (chain rule), to 1e-12.
def test_chain_rule_through_a_phi_dependent_theta0():
    target = torch.tensor([1.0, -2.0], dtype=F64)

    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["m"] * target) ** 2).sum()

    def outer(theta, phi):
        return 0.5 * (theta["w"] ** 2).sum() + phi["s"] ** 2

    def theta0(phi):  # starts at s·(1, 1): θ_0 depends on φ
        return {"w": phi["s"] * torch.ones(2, dtype=F64)}

    problem = from_inner_loss(inner, outer, SGD(lr=0.2), theta0, horizon=4)
    par = {"s": Log(), "m": Logit(0.0, 2.0)}
    u = {"s": torch.tensor(-0.3, dtype=F64), "m": torch.tensor(0.4, dtype=F64)}
    phi = {"s": torch.exp(u["s"]), "m": 2.0 * torch.sigmoid(u["m"])}
    theta_u, _ = reparameterize(problem, par).initial(u)
    torch.testing.assert_close(theta_u["w"], phi["s"] * torch.ones(2, dtype=F64), rtol=1e-15, atol=0)
    g_phi = hypergradient(problem, phi, ReverseUnroll()).grad
    g_u = hypergradient(reparameterize(problem, par), u, ReverseUnroll()).grad
    sig = torch.sigmoid(u["m"])
    torch.testing.assert_close(g_u["s"], g_phi["s"] * phi["s"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_u["m"], g_phi["m"] * 2.0 * sig * (1 - sig), rtol=1e-12, atol=1e-14)


# The penalty weight γ_k and F²SA's λ_k follow their documented schedules exactly:
# γ_{k+1} = min(γ_max, growth·γ_k) (geometric) and λ_{k+1} = min(λ_max, λ_k + growth) (additive).
def _problem():
    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    def outer(theta, phi):
        return 0.5 * (theta["w"] ** 2).sum()

    return from_inner_loss(inner, outer, SGD(lr=0.1), {"w": torch.zeros(2, dtype=F64)}, horizon=1)


def _run(method, steps):
    problem, phi = _problem(), {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    state = method.init(problem, phi)
    used = []
    for k in range(steps):
        _, state, info = method.step(problem, phi, state, outer_step=k, start=k * method.inner_iters)
        used.append(info)
    return used, state


def test_penalty_gamma_grows_geometrically_up_to_its_cap():
    used, state = _run(Penalty(gamma=2.0, growth=1.5, gamma_max=10.0, inner_iters=1, lr=0.01), 6)
    assert [u["gamma"] for u in used] == pytest.approx([2.0, 3.0, 4.5, 6.75, 10.0, 10.0], rel=1e-15)
    assert state["gamma"] == 10.0


def test_f2sa_lambda_grows_additively_up_to_its_cap():
    used, state = _run(F2SA(lam=1.0, lam_growth=2.0, lam_max=6.0, inner_iters=1, lr_y=0.01, lr_z=0.01), 5)
    assert [u["lambda"] for u in used] == pytest.approx([1.0, 3.0, 5.0, 6.0, 6.0], rel=1e-15)
    assert state["lam"] == 6.0
