"""Exact checks that fail when an estimator's formula is changed (float64, closed forms).

Each test pins one formula against an independent computation, tightly enough that the
named mutation (a plausible slip in the implementation) fails it: the direction stream,
accumulation, inner indices and warm start of the outer driver, the truncation of TRGU, the 1/b of the
zeroth-order estimate, the √N of coordinate directions, the damping of CG, and the
tangent of a φ-dependent θ_0.
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.bilevel import (
    CGSolve,
    ForwardGradientUnroll,
    ImplicitDiff,
    ReverseUnroll,
    TruncatedReverseUnroll,
    ZeroOrderForwardGradient,
    from_inner_loss,
    hypergradient,
    optimize,
)
from pinnlab.bilevel.base import flatten, unroll
from pinnlab.bilevel.forward import directions
from pinnlab.solvers import SGD, Adam

from .problems import F64, LinearQuadratic, Ridge


@pytest.fixture(scope="module")
def ridge():
    return Ridge()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# -- 1. the driver's randomness and accumulation ---------------------------------------------
def test_fg2u_directions_are_fresh_per_outer_step_and_the_driver_passes_it(ridge):
    """Direction i of outer step k comes from the stream (seed, "direction", k, i):
    different k give different directions (hence estimates), the same (seed, k)
    reproduces them, and ``optimize`` (accumulate = 1) evaluates outer step k with
    outer_step = k, so its k-th estimate uses exactly those directions."""
    problem = ridge.problem(horizon=4)
    method = ForwardGradientUnroll(num_directions=3)
    seed = 5
    per_step = [hypergradient(problem, ridge.phi, method, seed=seed, outer_step=k) for k in range(3)]
    v = [r.diagnostics["directions"] for r in per_step]
    for i in range(3):
        for j in range(i):
            assert not torch.equal(v[i], v[j]), (i, j)
            assert _rel(flatten(per_step[i].grad), flatten(per_step[j].grad)) > 1e-3, (i, j)
    again = hypergradient(problem, ridge.phi, method, seed=seed, outer_step=2)
    assert torch.equal(again.diagnostics["directions"], v[2])
    seen = []
    optimize(problem, ridge.phi, method, steps=3, seed=seed, warm_start=False,
             meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
             callback=lambda k, phi, info: seen.append(info["directions"]))
    for k in range(3):
        assert torch.equal(seen[k], v[k]), k


def test_optimize_accumulate_steps_with_the_mean_of_the_a_estimates(ridge):
    """φ_{k+1} = φ_k − (1/a) Σ_{j<a} ĝ(φ_k; outer_step = k·a + j) with SGD(lr = 1) as the
    meta optimizer, inner steps t = kT, …, kT + T − 1 from θ_0 = the previous θ_T (warm
    start), to 1e-12; the a estimates differ, so keeping one of them (or reusing one
    outer_step for all) fails."""
    horizon, a, seed = 4, 3, 11
    problem = ridge.problem(horizon=horizon)
    method = ForwardGradientUnroll(num_directions=2)
    result = optimize(problem, ridge.phi, method, steps=2, accumulate=a, seed=seed,
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0))
    phi, init = dict(ridge.phi), None
    for k in range(2):
        estimates = [hypergradient(problem, phi, method, start=k * horizon, init=init, seed=seed,
                                   outer_step=k * a + j) for j in range(a)]
        grads = [e.grad["log_reg"] for e in estimates]
        mean = sum(grads) / a
        for g in grads:
            assert _rel(g, mean) > 1e-2
        phi = {"log_reg": phi["log_reg"] - mean}
        init = (estimates[-1].theta, estimates[-1].state)
        torch.testing.assert_close(result.history["phi/log_reg"][k], phi["log_reg"], rtol=1e-12, atol=1e-14,
                                   msg=lambda m, k=k: f"outer step {k}: {m}")
    torch.testing.assert_close(result.phi["log_reg"], phi["log_reg"], rtol=1e-12, atol=1e-14)


def _minibatch_problem(ridge, optimizer, horizon, record=None):
    """Ridge with a minibatch of 10 rows drawn from the inner index t, so g depends on t;
    ``record`` collects every t the inner loss is evaluated at."""

    def inner_loss(theta, phi, t):
        if record is not None:
            record.append(t)
        rows = torch.randint(0, ridge.X.shape[0], (10,), generator=torch.Generator().manual_seed(1000 + t))
        w = theta["w"]
        r = ridge.X[rows] @ w - ridge.y[rows]
        return 0.5 * (r * r).mean() + 0.5 * (torch.exp(phi["log_reg"]) * w * w).sum()

    return from_inner_loss(inner_loss, ridge.outer_loss, optimizer, {"w": torch.zeros(ridge.features, dtype=F64)},
                           horizon=horizon)


def _outer_by_hand(problem, phi, steps, *, start, init):
    """φ_{k+1} = φ_k − ∇h(φ_k) (RGU, SGD(lr = 1) as the meta optimizer) with inner indices
    from ``start(k)`` and θ_0 from ``init(previous estimate or None)``."""
    phi, previous, path = dict(phi), None, []
    for k in range(steps):
        previous = hypergradient(problem, phi, ReverseUnroll(), start=start(k), init=init(previous))
        phi = {"log_reg": phi["log_reg"] - previous.grad["log_reg"]}
        path.append(phi["log_reg"])
    return path, previous


def _sgd1(params):
    return torch.optim.SGD(params, lr=1.0)


@pytest.mark.parametrize("warm_start", [True, False])
def test_optimize_outer_step_k_uses_inner_indices_kT_to_kT_plus_T_minus_1(ridge, warm_start):
    """Outer step k evaluates g at exactly t = kT, …, kT + T − 1 (fresh minibatches each
    outer step), and its φ path equals RGU evaluated with start = kT to 1e-12; with
    start = 0 in every outer step the path differs by > 1e-3."""
    horizon, steps = 4, 3
    seen, per_step = [], []
    problem = _minibatch_problem(ridge, SGD(lr=0.1), horizon, record=seen)
    result = optimize(problem, ridge.phi, ReverseUnroll(), steps=steps, warm_start=warm_start, meta_optimizer=_sgd1,
                      callback=lambda k, phi, info: (per_step.append(sorted(set(seen))), seen.clear()))
    assert per_step == [list(range(k * horizon, (k + 1) * horizon)) for k in range(steps)]
    quiet = _minibatch_problem(ridge, SGD(lr=0.1), horizon)

    def carry(previous):
        return None if previous is None or not warm_start else (previous.theta, previous.state)

    expected, _ = _outer_by_hand(quiet, ridge.phi, steps, start=lambda k: k * horizon, init=carry)
    for k in range(steps):
        torch.testing.assert_close(result.history["phi/log_reg"][k], expected[k], rtol=1e-12, atol=1e-14)
    from_zero, _ = _outer_by_hand(quiet, ridge.phi, steps, start=lambda k: 0, init=carry)
    assert _rel(from_zero[-1], expected[-1]) > 1e-3


def test_optimize_without_warm_start_starts_every_outer_step_from_problem_init(ridge):
    """warm_start=False: each outer step unrolls from problem.init (θ_0 = 0), so the φ
    path equals RGU with init=None to 1e-12, and no θ is returned; carrying θ_T over
    would change the path by > 1e-3."""
    horizon, steps = 4, 3
    problem = _minibatch_problem(ridge, SGD(lr=0.1, momentum=0.9), horizon)
    result = optimize(problem, ridge.phi, ReverseUnroll(), steps=steps, warm_start=False, meta_optimizer=_sgd1)
    expected, _ = _outer_by_hand(problem, ridge.phi, steps, start=lambda k: k * horizon, init=lambda previous: None)
    for k in range(steps):
        torch.testing.assert_close(result.history["phi/log_reg"][k], expected[k], rtol=1e-12, atol=1e-14)
    assert result.theta is None and result.state is None
    warm, _ = _outer_by_hand(problem, ridge.phi, steps, start=lambda k: k * horizon,
                             init=lambda previous: None if previous is None else (previous.theta, previous.state))
    assert _rel(warm[-1], expected[-1]) > 1e-3


@pytest.mark.parametrize("optimizer", [SGD(lr=0.1, momentum=0.9), Adam(lr=0.05)], ids=["momentum", "adam"])
def test_optimize_warm_start_carries_the_inner_optimizer_state(ridge, optimizer):
    """warm_start=True: outer step k + 1 starts from outer step k's θ_T *and* its inner
    optimizer state (momentum buffer; Adam's count and moments), so the φ path equals
    RGU with init = (θ_T, state_T) to 1e-12 and the returned state is the last one;
    carrying θ_T with a fresh optimizer state would change the path by > 1e-3."""
    horizon, steps = 4, 3
    problem = _minibatch_problem(ridge, optimizer, horizon)
    result = optimize(problem, ridge.phi, ReverseUnroll(), steps=steps, meta_optimizer=_sgd1)
    expected, last = _outer_by_hand(problem, ridge.phi, steps, start=lambda k: k * horizon,
                                    init=lambda previous: None if previous is None else (previous.theta, previous.state))
    for k in range(steps):
        torch.testing.assert_close(result.history["phi/log_reg"][k], expected[k], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.theta, last.theta, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.state, last.state, rtol=1e-12, atol=1e-14)
    fresh_state, _ = _outer_by_hand(
        problem, ridge.phi, steps, start=lambda k: k * horizon,
        init=lambda previous: None if previous is None else (previous.theta, optimizer.init(previous.theta)))
    assert _rel(fresh_state[-1], expected[-1]) > 1e-3


# -- 2. truncated reverse ----------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.0), ("momentum", 0.9)])
def test_truncated_reverse_is_backprop_through_exactly_the_last_s_steps(ridge, optimizer, momentum):
    """TRGU(s) = ∇_φ f(θ_T, φ) with θ_{T−s} and the optimizer state at T − s held fixed
    (c_{T−s} of REFERENCE.md §6.7), against a hand-written ridge gradient descent
    (m ← μm + ∇_θ g, θ ← θ − ηm, ∇_θ g = Xᵀ(Xθ − y)/n + e^φ ⊙ θ) detached at step T − s,
    to 1e-10. TRGU(s + 1) differs from it by > 1e-3 relative, and TRGU(T) = RGU."""
    horizon, eta = 12, 0.1
    problem = ridge.problem(horizon=horizon, optimizer=optimizer, lr=eta)
    n = ridge.X.shape[0]
    for s in (1, 4, horizon):
        log_reg = ridge.phi["log_reg"].clone().requires_grad_(True)
        w = torch.zeros(ridge.features, dtype=F64)
        m = torch.zeros_like(w)
        for t in range(horizon):
            if t == horizon - s:
                w, m = w.detach(), m.detach()
            grad = ridge.X.T @ (ridge.X @ w - ridge.y) / n + torch.exp(log_reg) * w
            m = momentum * m + grad
            w = w - eta * m
        (expected,) = torch.autograd.grad(ridge.outer_loss({"w": w}, {"log_reg": log_reg}), log_reg)
        result = hypergradient(problem, ridge.phi, TruncatedReverseUnroll(steps=s))
        err = _rel(flatten(result.grad), expected)
        assert err < 1e-10, (s, err)
        torch.testing.assert_close(result.theta["w"], w.detach(), rtol=1e-12, atol=1e-14)
        if s < horizon:
            longer = flatten(hypergradient(problem, ridge.phi, TruncatedReverseUnroll(steps=s + 1)).grad)
            assert _rel(longer, expected) > 1e-3, (s, _rel(longer, expected))
        else:
            full = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
            assert _rel(full, expected) < 1e-12


# -- 3. zeroth order ---------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_zeroth_order_estimate_is_the_mean_over_b_directions_on_a_quadratic(scheme):
    """For h exactly quadratic (LinearQuadratic), the finite differences are closed-form:
    w_i = ∇h·v_i (central) and w_i = ∇h·v_i + (μ/2) v_iᵀ∇²h v_i (forward), and the
    estimate with b = 5 directions is ĝ = (1/b) Σ_i w_i v_i, both to 1e-9 (a missing
    1/b scales ĝ by 5)."""
    lq = LinearQuadratic()
    horizon, mu, b = 6, 0.1, 5
    _, g, hess = lq.closed_form(lq.phi, horizon)
    result = hypergradient(lq.problem(horizon), lq.phi,
                           ZeroOrderForwardGradient(num_directions=b, mu=mu, scheme=scheme), seed=2)
    v = result.diagnostics["directions"]
    assert v.shape == (b, g.numel())
    w = v @ g
    if scheme == "forward":
        w = w + 0.5 * mu * torch.einsum("bi,ij,bj->b", v, hess, v)
    torch.testing.assert_close(result.diagnostics["directional"], w, rtol=1e-9, atol=1e-11)
    assert _rel(flatten(result.grad), (w[:, None] * v).sum(0) / b) < 1e-9


# -- 4. coordinate directions ------------------------------------------------------------------
def test_coordinate_directions_are_scaled_by_sqrt_n():
    """kind="coordinate": v = √N·e_j (E[vvᵀ] = I), so ĝ = (1/b) Σ_i N g_{j_i} e_{j_i}, i.e.
    ĝ_j = (N·c_j/b)·g_j with c_j the number of draws of j (to 1e-10); with b = N directions
    that draw every coordinate once, ĝ = ∇h exactly. Unscaled e_j (the reference JAX code)
    would give ∇h/N there. The coordinates are drawn with replacement, so the seed is
    chosen where the N draws are a permutation."""
    ridge = Ridge(features=3)
    problem = ridge.problem(horizon=6)
    g = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    n = g.numel()
    covering = next(s for s in range(200)
                    if torch.equal((directions("coordinate", range(n), n, seed=s, outer_step=0, dtype=F64,
                                               device=g.device) != 0).sum(0), torch.ones(n, dtype=torch.long)))
    for seed, b in ((covering, n), (0, 7)):
        result = hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=b, kind="coordinate"),
                               seed=seed)
        v = result.diagnostics["directions"]
        assert torch.equal((v != 0).sum(1), torch.ones(b, dtype=torch.long))
        torch.testing.assert_close(v.norm(dim=1), torch.full((b,), math.sqrt(n), dtype=F64))
        counts = (v != 0).sum(0).to(F64)
        assert _rel(flatten(result.grad), n * counts / b * g) < 1e-10, seed
    assert _rel(flatten(hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=n, kind="coordinate"),
                                      seed=covering).grad), g) < 1e-10


# -- 5. CG damping -----------------------------------------------------------------------------
def test_cg_damping_solves_the_shifted_system(ridge):
    """ImplicitDiff(CGSolve(λ)) = c − ((H + λI)⁻¹d)ᵀY at the θ_T it reached, with the ridge
    closed forms H = XᵀX/n + diag e^φ, Y = ∇²_θφ g = diag(e^φ ⊙ θ_T),
    d = X_vᵀ(X_vθ_T − y_v)/n_v, c = 2cφ, to 1e-9 for λ = 0.7 (H − λI or H alone differ by
    > 5 %)."""
    problem = ridge.problem(horizon=10)
    theta = unroll(problem, ridge.phi)[0]["w"]
    lam = torch.exp(ridge.phi["log_reg"])
    nv = ridge.Xv.shape[0]
    d = ridge.Xv.T @ (ridge.Xv @ theta - ridge.yv) / nv
    c = 2 * ridge.c * ridge.phi["log_reg"]
    eye = torch.eye(ridge.features, dtype=F64)

    def closed(damping):
        return c - torch.linalg.solve(ridge.hessian(ridge.phi) + damping * eye, d) * lam * theta

    damping = 0.7
    est = flatten(hypergradient(problem, ridge.phi, ImplicitDiff(CGSolve(iterations=12, damping=damping))).grad)
    assert _rel(est, closed(damping)) < 1e-9
    assert _rel(closed(0.0), closed(damping)) > 0.05 and _rel(closed(-damping), closed(damping)) > 0.05


# -- 6. θ_0 as a function of φ -----------------------------------------------------------------
@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_fg2u_carries_the_tangent_of_a_phi_dependent_theta0(ridge, optimizer, tangents):
    """θ_0 = tanh(φ) (``init`` a function of φ): w_i = ∇h·v_i includes the path dθ_0/dφ
    and equals ⟨∇h_reverse, v_i⟩ to 1e-10; that path matters (∇h differs by > 10 % from
    the gradient with θ_0 held at tanh(φ))."""
    opt = SGD(lr=0.1, momentum=0.9) if optimizer == "momentum" else Adam(lr=0.05)
    horizon = 8
    problem = from_inner_loss(ridge.inner_loss, ridge.outer_loss, opt,
                              lambda phi: {"w": torch.tanh(phi["log_reg"])}, horizon=horizon)
    frozen = from_inner_loss(ridge.inner_loss, ridge.outer_loss, opt,
                             {"w": torch.tanh(ridge.phi["log_reg"])}, horizon=horizon)
    reference = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    assert _rel(flatten(hypergradient(frozen, ridge.phi, ReverseUnroll()).grad), reference) > 0.1
    result = hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=4, tangents=tangents))
    w, v = result.diagnostics["directional"], result.diagnostics["directions"]
    expected = v @ reference
    assert float((w - expected).abs().max() / expected.abs().max()) < 1e-10
