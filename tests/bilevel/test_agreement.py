"""All hypergradient methods against each other and against closed forms (float64).

Probabilistic tests use fixed seeds and state their tolerances in standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    HessianFree,
    Penalty,
    ReverseUnroll,
    TruncatedReverseUnroll,
    ZeroOrderForwardGradient,
    cg,
    hypergradient,
    make_method,
    neumann,
    unrolled_objective,
)
from pinnlab.bilevel.base import flatten, unflatten

from .problems import F64, LinearQuadratic, Ridge


@pytest.fixture(scope="module")
def ridge():
    return Ridge()


@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fg2u_directional_derivative_is_exact(ridge, optimizer, tangents):
    """(a) jvp(h)(v) = ⟨∇h_reverse, v⟩ to 1e-10, with optimizer state and c_T ≠ 0, both
    through torch.func.jvp of the loop and through per-step Hessian-vector products."""
    lr = 0.05 if optimizer == "adam" else 0.1
    problem = ridge.problem(horizon=15, optimizer=optimizer, lr=lr)
    reference = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    result = hypergradient(problem, ridge.phi,
                           ForwardGradientUnroll(num_directions=16, chunk_size=5, tangents=tangents))
    w, v = result.diagnostics["directional"], result.diagnostics["directions"]
    expected = v @ reference
    assert float((w - expected).abs().max() / expected.abs().max()) < 1e-10


def test_fgu_equals_rgu_equals_finite_differences(ridge):
    problem = ridge.problem(horizon=20, optimizer="momentum", lr=0.05)
    rgu = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    fgu = flatten(hypergradient(problem, ridge.phi, ExactForwardUnroll(chunk_size=4)).grad)
    torch.testing.assert_close(fgu, rgu, rtol=1e-12, atol=1e-14)
    h = unrolled_objective(problem)
    flat = flatten(ridge.phi)
    fd = torch.stack([
        (h(unflatten(flat + 1e-6 * e, ridge.phi)) - h(unflatten(flat - 1e-6 * e, ridge.phi))) / 2e-6
        for e in torch.eye(flat.numel(), dtype=F64)
    ])
    torch.testing.assert_close(fd, rgu, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind, offset", [("rademacher", -1), ("gaussian", +1)])
def test_fg2u_unbiased_with_predicted_variance(ridge, kind, offset):
    """(b, c) E[ĝ] = ∇h (z-tests) and E‖ĝ_b − ∇h‖²/‖∇h‖² = (N ∓ 1)/b within 10 %.

    R = 8000 single-direction estimates from one vmapped call (fixed seed); each
    coordinate mean is compared within 5 standard errors, Var(ĝ_j) = ‖g‖² ∓ g_j².
    """
    problem = ridge.problem(horizon=10, optimizer="adam", lr=0.05)
    g = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    n = g.numel()
    draws = 8000
    result = hypergradient(problem, ridge.phi,
                           ForwardGradientUnroll(num_directions=draws, kind=kind, chunk_size=1000), seed=3)
    singles = result.diagnostics["directional"][:, None] * result.diagnostics["directions"]
    torch.testing.assert_close(flatten(result.grad), singles.mean(0))
    var_j = (g @ g + offset * g * g)
    z = (singles.mean(0) - g) / torch.sqrt(var_j / draws)
    assert float(z.abs().max()) < 5, z
    for b in (1, 4, 16):
        grouped = singles.reshape(draws // b, b, n).mean(1)
        ratio = float(((grouped - g) ** 2).sum(1).mean() / (g @ g))
        predicted = (n + offset) / b
        assert abs(ratio / predicted - 1) < 0.10, (b, ratio, predicted)


def test_mean_of_many_estimates_aligns(ridge):
    problem = ridge.problem(horizon=10)
    g = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    est = flatten(hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=400, chunk_size=200)).grad)
    assert float(est @ g / (est.norm() * g.norm())) > 0.99


def test_implicit_methods_converge_to_closed_form(ridge):
    """After a converged inner loop, Neumann (K large) and CG (K = M) give the true hypergradient."""
    problem = ridge.problem(horizon=3000, optimizer="sgd", lr=0.3)
    truth = ridge.true_hypergradient(ridge.phi)
    top = torch.linalg.eigvalsh(ridge.hessian(ridge.phi)).max()
    errors = {}
    for k in (5, 50, 500):
        est = flatten(hypergradient(problem, ridge.phi, neumann(iterations=k, alpha=float(1 / top))).grad)
        errors[k] = float((est - truth).norm() / truth.norm())
    assert errors[5] > errors[50] > errors[500] and errors[500] < 1e-6, errors
    est = flatten(hypergradient(problem, ridge.phi, cg(iterations=ridge.features)).grad)
    torch.testing.assert_close(est, truth, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("iterations", [0, 1, 5])
def test_neumann_with_k_iterations_sums_exactly_k_plus_1_terms(iterations):
    """neumann(K, α) = c − qᵀY with q = α Σ_{k=0}^{K} (I − αH)^k d, on LinearQuadratic
    (H = A, Y = ∇²_θφ g = −B, c = Cφ, d = θ_T − y, θ_T in closed form), to 1e-12; the
    sums of K and K + 2 terms (K − 1 or K + 1 iterations) differ from it by > 1e-3 relative."""
    lq = LinearQuadratic()
    horizon, alpha = 7, 0.3
    eye = torch.eye(lq.A.shape[0], dtype=F64)
    a = lq.phi["a"]
    m_t = torch.linalg.matrix_power(eye - lq.eta * lq.A, horizon)
    theta = m_t @ lq.theta0 + (eye - m_t) @ torch.linalg.solve(lq.A, lq.B @ a)
    d = theta - lq.y

    def closed(terms):
        powers = [torch.linalg.matrix_power(eye - alpha * lq.A, k) for k in range(terms)]
        q = alpha * sum(powers, torch.zeros_like(eye)) @ d
        return lq.C @ a + lq.B.T @ q

    est = flatten(hypergradient(lq.problem(horizon), lq.phi, neumann(iterations=iterations, alpha=alpha)).grad)
    expected = closed(iterations + 1)
    torch.testing.assert_close(est, expected, rtol=1e-12, atol=1e-14)
    for terms in (iterations, iterations + 2):
        assert float((closed(terms) - expected).norm() / expected.norm()) > 1e-3, terms


def test_penalty_methods_converge_to_closed_form(ridge):
    """Penalty (γ ↑) and F²SA (λ ↑) estimates approach the true hypergradient as O(1/γ), O(1/λ)."""
    problem = ridge.problem(horizon=1)
    truth = ridge.true_hypergradient(ridge.phi)
    for method, key, last in (  # the parameter of the 150th estimate
        (Penalty(gamma=1.0, growth=1.15, gamma_max=3e3, inner_iters=50, lr=0.05), "gamma", 3e3),  # at its cap
        (F2SA(lam=1.0, lam_growth=20.0, lam_max=3e3, inner_iters=50, lr_y=0.5, lr_z=0.5), "lambda", 1 + 20 * 149),  # + 20 a step
    ):
        state = method.init(problem, ridge.phi)
        errors = []
        for k in range(150):
            grad, state, info = method.step(problem, ridge.phi, state, outer_step=k, start=0)
            errors.append(float((flatten(grad) - truth).norm() / truth.norm()))
        assert info[key] == last, (method.name, info)
        assert errors[-1] < 5e-3, (method.name, errors[-1])
        assert errors[-1] < 0.2 * errors[5], (method.name, errors[5], errors[-1])


def test_truncated_reverse_bias_follows_its_bound(ridge):
    """TRGU(s) with gradient descent on the strongly convex g: error ≤ (1−ηα)^s/(ηα)·‖d_T‖·max‖B_t‖."""
    eta = 0.3
    problem = ridge.problem(horizon=60, optimizer="sgd", lr=eta)
    exact = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    eig = torch.linalg.eigvalsh(ridge.hessian(ridge.phi))
    alpha = float(eig.min())
    result = hypergradient(problem, ridge.phi, ReverseUnroll())
    theta_t = result.theta["w"]
    d = torch.func.grad(ridge.outer_loss)(result.theta, ridge.phi)["w"]
    # B_t = −η ∇²_θφ g = −η diag(e^φ θ_{t−1}); bound with the largest |θ| seen along the path
    path_max = max(float(theta_t.abs().max()), float(ridge.solution(ridge.phi).abs().max())) * 1.5
    b_norm = eta * float(torch.exp(ridge.phi["log_reg"]).max()) * path_max
    errors = []
    for s in (1, 5, 20):
        est = flatten(hypergradient(problem, ridge.phi, TruncatedReverseUnroll(steps=s)).grad)
        err = float((est - exact).norm())
        bound = (1 - eta * alpha) ** s / (eta * alpha) * float(d.norm()) * b_norm
        assert err <= bound, (s, err, bound)
        errors.append(err)
    assert errors[0] > errors[1] > errors[2] > 0


def test_hessian_free_bias_is_d_times_inverse_error_times_y(ridge):
    """HF = c − α dᵀY, so HF − IF = (dᵀ(H⁻¹ − αI))Y exactly at the same θ_T."""
    problem = ridge.problem(horizon=3000, lr=0.3)
    alpha = 0.3
    hf = flatten(hypergradient(problem, ridge.phi, HessianFree(alpha=alpha)).grad)
    theta = ridge.solution(ridge.phi)
    n = ridge.Xv.shape[0]
    d = ridge.Xv.T @ (ridge.Xv @ theta - ridge.yv) / n
    y_diag = torch.exp(ridge.phi["log_reg"]) * theta  # Y = diag(e^φ θ)
    predicted_bias = (torch.linalg.solve(ridge.hessian(ridge.phi), d) - alpha * d) * y_diag
    truth = ridge.true_hypergradient(ridge.phi)
    torch.testing.assert_close(hf - truth, predicted_bias, rtol=1e-6, atol=1e-9)
    assert float((hf - truth).norm()) > 1e-3


def test_darts_matches_one_step_unrolled_gradient(ridge):
    problem = ridge.problem(horizon=50, lr=0.3)
    xi = 0.3
    est = flatten(hypergradient(problem, ridge.phi, DARTS(xi=xi, epsilon=1e-4)).grad)
    theta = ReverseUnroll()(problem, ridge.phi).theta

    def one_step(phi):
        grad = torch.func.grad(ridge.inner_loss)(theta, phi, 0)
        return ridge.outer_loss({"w": theta["w"] - xi * grad["w"]}, phi)

    expected = flatten(torch.func.grad(one_step)(ridge.phi))
    torch.testing.assert_close(est, expected, rtol=1e-6, atol=1e-9)


def test_zeroth_order_bias_orders(ridge):
    """(f) |w_FD − ∇h·v| shrinks as O(μ) (forward) and O(μ²) (central)."""
    problem = ridge.problem(horizon=10)
    g = flatten(hypergradient(problem, ridge.phi, ReverseUnroll()).grad)
    mus = [0.2, 0.1, 0.05, 0.025]
    for scheme, order in (("forward", 1), ("central", 2)):
        errs = []
        for mu in mus:
            res = hypergradient(problem, ridge.phi, ZeroOrderForwardGradient(num_directions=1, mu=mu, scheme=scheme))
            v = res.diagnostics["directions"][0]
            errs.append(abs(float(res.diagnostics["directional"][0] - g @ v)))
        slope = np.polyfit(np.log(mus), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.25, (scheme, slope, errs)


def test_clear_errors(ridge):
    with pytest.raises(ValueError, match="unknown hypergradient method"):
        make_method("magic")
    with pytest.raises(ValueError, match="num_directions"):
        ForwardGradientUnroll(num_directions=0)
    with pytest.raises(ValueError, match="horizon"):
        ridge.problem(horizon=0)
    with pytest.raises(TypeError, match="floating-point"):
        hypergradient(ridge.problem(horizon=2), {"log_reg": torch.zeros(3, dtype=torch.long)}, ReverseUnroll())
    with pytest.raises(TypeError, match="estimator object"):
        hypergradient(ridge.problem(horizon=2), ridge.phi, "fg2u")

    class NoForward(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    def step(theta, state, phi, t):
        return {"w": NoForward.apply(theta["w"] + phi["log_reg"])}, state

    problem = BilevelProblem(step, ridge.outer_loss, ({"w": torch.zeros(6, dtype=F64)}, None), horizon=2)
    with pytest.raises(RuntimeError, match="not differentiable in forward mode"):
        hypergradient(problem, ridge.phi, ForwardGradientUnroll(num_directions=2))


def test_reverse_mode_through_adam_is_finite_where_a_gradient_is_exactly_zero():
    """A coordinate whose gradient is exactly 0 has Adam second moment 0; the square
    root's derivative there used to make reverse-mode hypergradients NaN. They are
    finite and agree with forward mode (float64)."""
    from pinnlab.bilevel import from_inner_loss
    from pinnlab.solvers import Adam

    def inner(theta, phi, t):  # w[1] starts at 0 with zero gradient until w[0] moves it
        w = theta["w"]
        return (w[0] - phi["a"]) ** 2 + (w[1] * w[0]) ** 2

    def outer(theta, phi):
        return (theta["w"] ** 2).sum() + theta["w"][0]

    problem = from_inner_loss(inner, outer, Adam(lr=0.1), {"w": torch.zeros(2, dtype=F64)}, horizon=5)
    phi = {"a": torch.tensor(0.7, dtype=F64)}
    rgu = flatten(hypergradient(problem, phi, ReverseUnroll()).grad)
    fgu = flatten(hypergradient(problem, phi, ExactForwardUnroll()).grad)
    assert torch.isfinite(rgu).all()
    torch.testing.assert_close(rgu, fgu, rtol=1e-10, atol=1e-12)
