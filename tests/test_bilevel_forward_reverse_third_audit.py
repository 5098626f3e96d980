"""Third mutation audit of the bilevel forward/reverse estimators, parameterisations and driver (float64).

Everything is checked against closed forms of one quadratic inner problem,

    g(θ, φ) = ½(θ − Aφ)ᵀH(θ − Aφ),   f(θ, φ) = ½‖θ − y‖² + ½φᵀCφ,

with T steps of gradient descent of step η from θ_0: with M = I − ηH (symmetric,
commuting with H), θ_T = Mᵀ(θ_0 − Aφ) + Aφ, so

    ∇_φ h = ((I − M^T)A)ᵀ(θ_T − y) + Cφ,
    ∂h/∂θ_0 = (M^T)ᵀ(θ_T − y),   ∂θ_T/∂η = −T·H·M^{T−1}(θ_0 − Aφ),

and TRGU(s) (θ_{T−s} held fixed) gives ((I − M^s)A)ᵀ(θ_T − y) + Cφ. Statistical checks of
(FG)²U use fixed seeds and state their tolerances in standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    ReverseUnroll,
    TruncatedReverseUnroll,
    TwoPhase,
    from_inner_loss,
    from_train_step,
    optimize,
)
from pinnlab.bilevel.base import GradientStep, flatten, unflatten
from pinnlab.bilevel.parameterization import Log, Logit, constrain, reparameterize, unconstrain
from pinnlab.solvers import SGD

F64 = torch.float64
N_THETA = 3


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Quadratic:
    """The closed-form problem of the module docstring, φ = {"m": (2, 2), "s": ()} (N = 5)."""

    def __init__(self, eta=0.15, seed=0, like=None):
        g = _gen(seed)
        self.like = like or {"m": torch.zeros(2, 2, dtype=F64), "s": torch.zeros((), dtype=F64)}
        n = sum(v.numel() for v in self.like.values())
        root = torch.randn(N_THETA, N_THETA, generator=g, dtype=F64)
        self.H = root @ root.T / N_THETA + torch.eye(N_THETA, dtype=F64)
        self.A = torch.randn(N_THETA, n, generator=g, dtype=F64)
        self.y = torch.randn(N_THETA, generator=g, dtype=F64)
        self.C = torch.diag(torch.linspace(0.5, 1.5, n, dtype=F64))  # a direct term that matters
        self.theta0 = torch.randn(N_THETA, generator=g, dtype=F64)
        self.eta = eta
        flat = torch.randn(n, generator=g, dtype=F64)
        self.phi = unflatten(flat, self.like)

    def target(self, phi):
        return self.A @ flatten(phi)

    def inner_loss(self, theta, phi, t):
        r = theta["w"] - self.target(phi)
        return 0.5 * r @ self.H @ r

    def outer_loss(self, theta, phi):
        r = theta["w"] - self.y
        p = flatten(phi)
        return 0.5 * r @ r + 0.5 * p @ self.C @ p

    def problem(self, horizon):
        return from_inner_loss(self.inner_loss, self.outer_loss, SGD(lr=self.eta), {"w": self.theta0},
                               horizon=horizon)

    def m_power(self, k, eta=None):
        eye = torch.eye(N_THETA, dtype=F64)
        return torch.linalg.matrix_power(eye - (self.eta if eta is None else eta) * self.H, k)

    def theta_t(self, phi, horizon, theta0=None, eta=None):
        c = self.target(phi)
        return self.m_power(horizon, eta) @ ((self.theta0 if theta0 is None else theta0) - c) + c

    def value(self, phi, horizon, theta0=None):
        r = self.theta_t(phi, horizon, theta0) - self.y
        p = flatten(phi)
        return float(0.5 * r @ r + 0.5 * p @ self.C @ p)

    def grad(self, phi, horizon, truncation=None, theta0=None):
        """∇h (flat), or TRGU(s)'s estimate with ``truncation`` = s."""
        s = horizon if truncation is None else truncation
        eye = torch.eye(N_THETA, dtype=F64)
        r = self.theta_t(phi, horizon, theta0) - self.y
        return ((eye - self.m_power(s)) @ self.A).T @ r + self.C @ flatten(phi)


@pytest.fixture(scope="module")
def quad():
    return Quadratic()


# -- exact forward and reverse unrolling ---------------------------------------------------------
@pytest.mark.parametrize("method", [ReverseUnroll(), ExactForwardUnroll(chunk_size=2, tangents="hvp"),
                                    ExactForwardUnroll(chunk_size=2, tangents="jvp"),
                                    ExactForwardUnroll(chunk_size=16)], ids=["rgu", "fgu-hvp", "fgu-jvp", "fgu"])
def test_exact_methods_equal_the_closed_form_for_a_phi_of_a_matrix_and_a_scalar(quad, method):
    """∇h of the T-step quadratic, direct term Cφ included, for a φ of two keys of
    different shapes (offsets of the flat views), with value and θ_T."""
    horizon = 4
    result = method(quad.problem(horizon), quad.phi)
    assert set(result.grad) == {"m", "s"} and result.grad["m"].shape == (2, 2) and result.grad["s"].shape == ()
    torch.testing.assert_close(flatten(result.grad), quad.grad(quad.phi, horizon), rtol=1e-10, atol=1e-12)
    assert result.value == pytest.approx(quad.value(quad.phi, horizon), rel=1e-12)
    torch.testing.assert_close(result.theta["w"], quad.theta_t(quad.phi, horizon), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("horizon, steps, expected_s", [(6, 1, 1), (6, 5, 5), (6, 6, 6), (6, None, 5),
                                                        (7, None, 5), (3, None, 3), (2, 1, 1)])
def test_trgu_equals_the_truncated_closed_form(quad, horizon, steps, expected_s):
    """TRGU(s) = ((I − M^s)A)ᵀ(θ_T − y) + Cφ with the exact θ_T (T − s = 1 included: the
    head of one step still runs), default s = min(5, T)."""
    result = TruncatedReverseUnroll(steps=steps)(quad.problem(horizon), quad.phi)
    assert result.diagnostics["truncation"] == expected_s
    assert result.diagnostics["inner_step_evaluations"] == horizon
    torch.testing.assert_close(flatten(result.grad), quad.grad(quad.phi, horizon, truncation=expected_s),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.theta["w"], quad.theta_t(quad.phi, horizon), rtol=1e-12, atol=1e-13)
    assert result.value == pytest.approx(quad.value(quad.phi, horizon), rel=1e-12)


def test_trgu_head_starts_from_a_given_init(quad):
    """With ``init`` = (θ_0', state), the untruncated head starts from θ_0', not the problem's θ_0."""
    horizon, s = 5, 2
    theta0 = torch.tensor([0.3, -1.2, 2.0], dtype=F64)
    result = TruncatedReverseUnroll(steps=s)(quad.problem(horizon), quad.phi,
                                                    init=({"w": theta0}, SGD(lr=quad.eta).init({"w": theta0})))
    torch.testing.assert_close(result.theta["w"], quad.theta_t(quad.phi, horizon, theta0), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(flatten(result.grad), quad.grad(quad.phi, horizon, truncation=s, theta0=theta0),
                               rtol=1e-10, atol=1e-12)


# -- (FG)²U --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "coordinate"])
@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
def test_fg2u_is_the_mean_of_w_v_over_b_with_exact_directional_derivatives(quad, kind, tangents):
    """b = 3 directions in chunks of 2: w_i = ∇h·v_i exactly and ĝ = Σ w_i v_i / b (divided
    by b, not by the chunk size or the chunk's count); the directions have the kind's entries."""
    horizon, b = 4, 3
    exact = quad.grad(quad.phi, horizon)
    result = ForwardGradientUnroll(num_directions=b, chunk_size=2, kind=kind, tangents=tangents)(
        quad.problem(horizon), quad.phi, seed=3, outer_step=1)
    v, w = result.diagnostics["directions"], result.diagnostics["directional"]
    assert v.shape == (b, 5) and w.shape == (b,)
    torch.testing.assert_close(w, v @ exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(flatten(result.grad), v.T @ (v @ exact) / b, rtol=1e-10, atol=1e-12)
    if kind == "rademacher":
        assert bool((v.abs() == 1).all())
    if kind == "coordinate":
        assert bool(((v == 0) | (v == math.sqrt(5))).all()) and bool(((v != 0).sum(1) == 1).all())
    assert result.value == pytest.approx(quad.value(quad.phi, horizon), rel=1e-12)
    torch.testing.assert_close(result.theta["w"], quad.theta_t(quad.phi, horizon), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "coordinate"])
def test_fg2u_mean_over_many_directions_approaches_the_exact_gradient(quad, kind):
    """E[vvᵀ] = I: over b = 1500 directions the second-moment matrix VᵀV/b is within 5
    standard errors of I entrywise (entry variance ≤ 3 for Gaussian, 1 for Rademacher
    off-diagonals, N²·(1/N)(1 − 1/N) for coordinate diagonals) and ĝ_b within
    5·sqrt(((N + 1)/b))‖∇h‖ of ∇h (coordinate: N·sqrt(1/b)‖∇h‖ per the count spread)."""
    horizon, b, n = 3, 1500, 5
    exact = quad.grad(quad.phi, horizon)
    result = ForwardGradientUnroll(num_directions=b, chunk_size=500, kind=kind)(quad.problem(horizon), quad.phi,
                                                                               seed=1)
    v = result.diagnostics["directions"]
    second = v.T @ v / b
    entry_sd = {"rademacher": 1.0, "gaussian": math.sqrt(3.0), "coordinate": math.sqrt(n * n * (1 / n) * (1 - 1 / n))}
    assert float((second - torch.eye(n, dtype=F64)).abs().max()) < 5 * entry_sd[kind] / math.sqrt(b)
    error = float((flatten(result.grad) - exact).norm() / exact.norm())
    bound = (n / math.sqrt(b)) if kind == "coordinate" else math.sqrt((n + 1) / b)
    assert error < 5 * bound
    if kind == "coordinate":  # every coordinate is drawn (each with probability 1/N)
        assert bool(((v != 0).sum(0) > 0).all())


def test_fg2u_never_reuses_a_direction_of_another_outer_step(quad):
    """Gaussian directions (ties have probability 0): direction i of outer step k differs from
    every direction of every other outer step, in particular direction k of step i (the
    stream is keyed by (outer_step, i) in that order, not symmetrically)."""
    method = ForwardGradientUnroll(num_directions=3, kind="gaussian")
    problem = quad.problem(2)
    rows = {k: method(problem, quad.phi, seed=5, outer_step=k).diagnostics["directions"] for k in range(3)}
    for k in range(3):
        for j in range(3):
            if k != j:
                distance = torch.cdist(rows[k], rows[j])
                assert float(distance.min()) > 1e-6, (k, j)


@pytest.mark.parametrize("kind, varies", [("rademacher", False), ("coordinate", False), ("gaussian", True)])
def test_fg2u_with_one_tuned_value_varies_only_for_gaussian_directions(kind, varies):
    """N = 1: vvᵀ = 1 for ±1 and √1·e_1, so every estimate is ∇h exactly; a Gaussian's v² is
    not. ``varies(1)`` says so, and the estimates at two outer steps agree (or not) accordingly."""
    g = lambda theta, phi, t: 0.5 * ((theta["w"] - phi["b"]) ** 2).sum()  # noqa: E731
    f = lambda theta, phi: ((theta["w"] - 1.0) ** 2).sum()  # noqa: E731
    problem = from_inner_loss(g, f, SGD(lr=0.5), {"w": torch.zeros(1, dtype=F64)}, horizon=2)
    phi = {"b": torch.tensor([2.0], dtype=F64)}
    exact = 2 * (0.75 * 2.0 - 1.0) * 0.75  # θ_T = (1 − 0.5²)·b
    method = ForwardGradientUnroll(num_directions=2, kind=kind)
    assert method.varies(1) is varies and method.varies(2) is True
    estimates = [float(method(problem, phi, outer_step=k).grad["b"]) for k in range(2)]
    if varies:
        assert estimates[0] != pytest.approx(estimates[1], rel=1e-6)
    else:
        assert estimates == pytest.approx([exact, exact], rel=1e-12)


def _two_chunk_problem(quad, horizon):
    """The same quadratic with g split in two chunk losses (H = H₁ + H₂), as a step over chunks."""
    h1 = 0.3 * quad.H
    h2 = quad.H - h1

    def part(hm):
        def loss(theta, phi, t):
            r = theta["w"] - quad.target(phi)
            return 0.5 * r @ hm @ r
        return loss

    g1, g2 = part(h1), part(h2)
    sgd = SGD(lr=quad.eta)
    full = torch.func.grad(lambda th, phi, t: g1(th, phi, t) + g2(th, phi, t))

    def step(theta, state, phi, t):
        return sgd.update(full(theta, phi, t), state, theta, quad.eta)

    split = GradientStep(lambda th, phi, t: (g1(th, phi, t), g2(th, phi, t)), sgd, lambda phi, t: quad.eta)
    theta0 = {"w": quad.theta0}
    return BilevelProblem(step, quad.outer_loss, (theta0, sgd.init(theta0)), horizon, gradient_step=split), g1, g2


@pytest.mark.parametrize("method", [ExactForwardUnroll(chunk_size=3, tangents="hvp"),
                                    ForwardGradientUnroll(num_directions=4, tangents="hvp")], ids=["fgu", "fg2u"])
def test_hvp_tangents_sum_the_gradients_of_every_chunk_loss(quad, method):
    """Several chunk losses per step: the step's gradient and its tangent are the sums
    over the chunks (∇h and every w_i equal the closed form of g = g₁ + g₂)."""
    horizon = 4
    problem, _, _ = _two_chunk_problem(quad, horizon)
    result = method(problem, quad.phi)
    exact = quad.grad(quad.phi, horizon)
    if isinstance(method, ExactForwardUnroll):
        torch.testing.assert_close(flatten(result.grad), exact, rtol=1e-10, atol=1e-12)
    else:
        v = result.diagnostics["directions"]
        torch.testing.assert_close(result.diagnostics["directional"], v @ exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.theta["w"], quad.theta_t(quad.phi, horizon), rtol=1e-12, atol=1e-13)


def test_from_train_step_inner_loss_is_the_sum_of_every_chunk_loss(quad):
    """g of a split TrainStep is Σ_c ℓ_c, not its first chunk."""
    horizon = 2
    problem, g1, g2 = _two_chunk_problem(quad, horizon)

    class Step:
        optimizer = problem.gradient_step.optimizer

        def __call__(self, theta, state, hyper, t):
            theta, state = problem.inner_step(theta, state, hyper, t)
            return theta, state, {}

        def losses(self, theta, hyper, t):
            return iter([(g1(theta, hyper, t), {}), (g2(theta, hyper, t), {})])

        def learning_rate(self, hyper, t):
            return quad.eta

    built = from_train_step(Step(), lambda phi: phi, quad.outer_loss, problem.init, horizon=horizon)
    theta = {"w": torch.tensor([0.5, -0.25, 1.0], dtype=F64)}
    r = theta["w"] - quad.target(quad.phi)
    torch.testing.assert_close(built.inner_loss(theta, quad.phi, 0), 0.5 * r @ quad.H @ r, rtol=1e-13, atol=0)


# -- parameterisations ---------------------------------------------------------------------------
def _lr_problem(quad, horizon, theta_scale):
    """φ = {"a": (2,), "lr": (), "s": ()}: target A·a, inner rate lr, θ_0 = s·θ_0^ref."""
    like = {"a": torch.zeros(2, dtype=F64)}
    a_quad = Quadratic(seed=4, like=like)

    def g(theta, phi, t):
        r = theta["w"] - a_quad.A @ phi["a"]
        return 0.5 * r @ a_quad.H @ r

    def f(theta, phi):
        r = theta["w"] - a_quad.y
        return 0.5 * r @ r

    problem = from_inner_loss(g, f, SGD(lr=1.0), lambda phi: {"w": phi["s"] * theta_scale}, horizon=horizon,
                              lr=lambda phi: phi["lr"])
    return a_quad, problem


def _lr_closed_form(a_quad, phi, horizon, theta_scale):
    """∂h/∂a, ∂h/∂lr, ∂h/∂s and h for the problem of :func:`_lr_problem`."""
    eta, c = phi["lr"], a_quad.A @ phi["a"]
    theta0 = phi["s"] * theta_scale
    m_t = a_quad.m_power(horizon, eta)
    theta_t = m_t @ (theta0 - c) + c
    r = theta_t - a_quad.y
    eye = torch.eye(N_THETA, dtype=F64)
    d_a = ((eye - m_t) @ a_quad.A).T @ r
    d_lr = r @ (-horizon * a_quad.H @ a_quad.m_power(horizon - 1, eta) @ (theta0 - c))
    d_s = r @ (m_t @ theta_scale)
    return d_a, d_lr, d_s, float(0.5 * r @ r)


@pytest.mark.parametrize("method", [ReverseUnroll(), ExactForwardUnroll(tangents="hvp"),
                                    ExactForwardUnroll(tangents="jvp")], ids=["rgu", "fgu-hvp", "fgu-jvp"])
def test_reparameterized_problem_has_the_chain_rule_gradient_in_u(quad, method):
    """Logit(−2, 3) on the target a, Log on the inner rate lr and on θ_0's scale s:
    ∇_u h = ∇_φ h ⊙ dφ/du (Logit: (a − low)(high − a)/(high − low); Log: φ), through
    the inner step, the gradient step's chunk losses and rate, and the φ-dependent θ_0."""
    horizon = 4
    scale = torch.tensor([1.0, -0.5, 0.25], dtype=F64)
    a_quad, problem = _lr_problem(quad, horizon, scale)
    phi = {"a": torch.tensor([0.4, -1.1], dtype=F64), "lr": torch.tensor(0.2, dtype=F64),
           "s": torch.tensor(1.7, dtype=F64)}
    param = {"a": Logit(-2.0, 3.0), "lr": Log(), "s": Log()}
    u = unconstrain(phi, param)
    result = method(reparameterize(problem, param), u)
    d_a, d_lr, d_s, value = _lr_closed_form(a_quad, phi, horizon, scale)
    torch.testing.assert_close(result.grad["a"], d_a * (phi["a"] + 2.0) * (3.0 - phi["a"]) / 5.0,
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.grad["lr"], d_lr * phi["lr"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.grad["s"], d_s * phi["s"], rtol=1e-9, atol=1e-12)
    assert result.value == pytest.approx(value, rel=1e-12)


def test_reparameterized_inner_loss_and_step_size_see_the_constrained_phi(quad):
    """g(θ, u, t) of the reparameterised problem is g(θ, forward(u), t), and its step size
    (the gradient step's rate) is the constrained lr."""
    scale = torch.ones(N_THETA, dtype=F64)
    _, problem = _lr_problem(quad, 3, scale)
    phi = {"a": torch.tensor([0.4, -1.1], dtype=F64), "lr": torch.tensor(0.2, dtype=F64),
           "s": torch.tensor(1.7, dtype=F64)}
    param = {"a": Logit(-2.0, 3.0), "lr": Log()}
    u = unconstrain(phi, param)
    reparam = reparameterize(problem, param)
    theta = {"w": torch.tensor([0.5, -0.25, 1.0], dtype=F64)}
    torch.testing.assert_close(reparam.inner_loss(theta, u, 2), problem.inner_loss(theta, phi, 2), rtol=1e-13, atol=0)
    assert reparam.step_size(u, 1) == pytest.approx(0.2, rel=1e-14)


@pytest.mark.parametrize("low, high, value", [(0.0, 1.0, 1e-12), (0.0, 1.0, 1 - 1e-9), (-2.0, 3.0, -2.0 + 1e-9),
                                              (-2.0, 3.0, 3.0 - 1e-7), (0.0, 1.0, 0.5)])
def test_logit_inverse_near_the_bounds_is_the_closed_form_and_round_trips(low, high, value):
    """u = log p − log(1 − p), p = (x − low)/(high − low), accurate near either bound, and forward(u) = x."""
    logit = Logit(low, high)
    x = torch.tensor(value, dtype=F64)
    u = logit.inverse(x)
    p = (value - low) / (high - low)
    assert float(u) == pytest.approx(math.log(p) - math.log1p(-p), rel=1e-12)
    assert float(logit.forward(u)) == pytest.approx(value, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("value", [-2.0, 3.0])
def test_logit_inverse_refuses_either_bound_itself(value):
    with pytest.raises(ValueError, match="must lie in"):
        Logit(-2.0, 3.0).inverse(torch.tensor([0.5, value], dtype=F64))


def test_log_usable_only_for_positive_finite_values_and_round_trips_at_extremes():
    log = Log()
    assert not log.usable(torch.tensor([1.0, 0.0], dtype=F64))  # exp(u) underflowed to 0
    assert not log.usable(torch.tensor([math.inf], dtype=F64))
    assert log.usable(torch.tensor([1e-300, 1e300], dtype=F64))
    x = torch.tensor([1e-300, 1.0, 1e300], dtype=F64)
    torch.testing.assert_close(log.forward(log.inverse(x)), x, rtol=1e-13, atol=0)
    torch.testing.assert_close(log.inverse(x), torch.tensor([-300.0, 0.0, 300.0], dtype=F64) * math.log(10),
                               rtol=1e-14, atol=1e-15)


def test_optimize_stops_when_a_log_value_underflows_to_zero_and_keeps_the_last_phi():
    """A huge outer step sends u = log φ to −∞ territory (exp(u) = 0): status nonfinite and φ is
    the value before that step (Log.usable refuses 0)."""
    g = lambda theta, phi, t: 0.5 * ((theta["w"] - phi["b"]) ** 2).sum()  # noqa: E731
    f = lambda theta, phi: ((theta["w"] - 1.0) ** 2).sum()  # noqa: E731
    problem = from_inner_loss(g, f, SGD(lr=0.5), {"w": torch.zeros(1, dtype=F64)}, horizon=2)
    phi = {"b": torch.tensor([2.0], dtype=F64)}  # ∂h/∂u > 0: the step lowers u
    result = optimize(problem, phi, ReverseUnroll(), steps=3, parameterization={"b": Log()},
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=1e6))
    assert result.status == "nonfinite" and "outer step 0" in result.message
    torch.testing.assert_close(result.phi["b"], phi["b"], rtol=0, atol=0)
    assert result.history["outer_step"] == []


# -- the driver ----------------------------------------------------------------------------------
def _simulate(quad, horizon, steps, lr, warm_start):
    """Outer SGD on u = (m, log s) from the closed form: per step (h, ∇_u h, φ after, θ_T)."""
    phi = {k: v.clone() for k, v in quad.phi.items()}
    phi["s"] = phi["s"].abs() + 0.5
    u = unconstrain(phi, {"s": Log()})
    theta0, out = None, []
    for _ in range(steps):
        phi = constrain(u, {"s": Log()})
        g = unflatten(quad.grad(phi, horizon, theta0=theta0), phi)
        g["s"] = g["s"] * phi["s"]
        value = quad.value(phi, horizon, theta0)
        theta_t = quad.theta_t(phi, horizon, theta0)
        u = {k: u[k] - lr * g[k] for k in u}
        out.append((value, float(flatten(g).norm()), constrain(u, {"s": Log()}), theta_t))
        if warm_start:
            theta0 = theta_t
    return {"m": quad.phi["m"].clone(), "s": quad.phi["s"].abs() + 0.5}, out


@pytest.mark.parametrize("warm_start", [True, False])
def test_optimize_records_each_outer_step_against_a_closed_form_simulation(quad, warm_start):
    """SGD(0.05) over u with Log on s, T = 3, 3 outer steps: the history holds outer_step
    0..2, h(φ_k) before the step, ‖∇_u h(φ_k)‖₂, the constrained φ after the step and the
    method name; the callback gets (k, the constrained φ, a dict with that value); θ of the
    result is the last θ_T (warm start: each step starts from the previous θ_T)."""
    horizon, steps, lr = 3, 3, 0.05
    start, expected = _simulate(quad, horizon, steps, lr, warm_start)
    seen = []
    result = optimize(quad.problem(horizon), start, ExactForwardUnroll(), steps=steps,
                      parameterization={"s": Log()}, warm_start=warm_start,
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=lr),
                      callback=lambda k, phi, info: seen.append((k, {n: v.clone() for n, v in phi.items()},
                                                                 info["value"])))
    assert result.status == "ok"
    assert result.history["outer_step"] == list(range(steps))
    assert result.history["method"] == ["fgu"] * steps
    for k, (value, norm, phi_after, _) in enumerate(expected):
        assert result.history["value"][k] == pytest.approx(value, rel=1e-10)
        assert result.history["grad_norm"][k] == pytest.approx(norm, rel=1e-10)
        for name in ("m", "s"):
            torch.testing.assert_close(result.history[f"phi/{name}"][k], phi_after[name], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(seen[k][1][name], phi_after[name], rtol=1e-10, atol=1e-12)
        assert seen[k][0] == k and seen[k][2] == pytest.approx(value, rel=1e-10)
    for name in ("m", "s"):
        torch.testing.assert_close(result.phi[name], expected[-1][2][name], rtol=1e-10, atol=1e-12)
    if warm_start:
        torch.testing.assert_close(result.theta["w"], expected[-1][3], rtol=1e-10, atol=1e-12)
    else:
        assert result.theta is None


class _Recording(ReverseUnroll):
    """RGU that records the keyword arguments the driver passes."""

    def __init__(self):
        object.__setattr__(self, "calls", [])

    def estimate(self, problem, phi, **kwargs):
        self.calls.append(kwargs)
        return super().estimate(problem, phi, **kwargs)


def test_optimize_passes_fresh_outer_step_indices_start_and_seed_per_estimate(quad):
    """accumulate = 2 over 3 outer steps: 6 estimates with outer_step 0..5 (never reused:
    fresh directions), start k·T and the given seed."""
    horizon = 2
    method = _Recording()
    result = optimize(quad.problem(horizon), quad.phi, method, steps=3, accumulate=2, seed=11,
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    assert [c["outer_step"] for c in method.calls] == [0, 1, 2, 3, 4, 5]
    assert [c["start"] for c in method.calls] == [0, 0, 2, 2, 4, 4]
    assert {c["seed"] for c in method.calls} == {11}
    assert len(result.history["value"]) == 3


def test_two_phase_records_which_method_ran_each_outer_step(quad):
    result = optimize(quad.problem(2), quad.phi, TwoPhase(ReverseUnroll(), ExactForwardUnroll(), switch_after=2),
                      steps=4, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    assert result.history["method"] == ["rgu", "rgu", "fgu", "fgu"]


class _NanAt(ReverseUnroll):
    """RGU whose hypergradient is NaN from outer step ``at`` on (value and θ stay finite)."""

    def __init__(self, at):
        object.__setattr__(self, "at", at)

    def estimate(self, problem, phi, **kwargs):
        result = super().estimate(problem, phi, **kwargs)
        if kwargs["outer_step"] >= self.at:
            result.grad = {k: torch.full_like(v, math.nan) for k, v in result.grad.items()}
        return result


def test_a_non_finite_hypergradient_stops_the_loop_before_the_meta_step(quad):
    """A NaN hypergradient with a finite value and θ: the loop stops at that outer step as a
    non-finite hypergradient (not as a φ the meta step spoilt), keeping φ after the last good step."""
    seen = []
    result = optimize(quad.problem(2), quad.phi, _NanAt(1), steps=3,
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.01),
                      callback=lambda k, phi, info: seen.append({n: v.clone() for n, v in phi.items()}))
    assert result.status == "nonfinite"
    assert result.message.startswith("outer step 1: non-finite hypergradient")
    assert result.history["outer_step"] == [0] and len(seen) == 1
    for name in quad.phi:
        torch.testing.assert_close(result.phi[name], seen[0][name], rtol=0, atol=0)


@pytest.mark.parametrize("method", [ExactForwardUnroll(tangents="jvp"),
                                    ForwardGradientUnroll(num_directions=2, tangents="jvp")], ids=["fgu", "fg2u"])
def test_jvp_path_theta_and_gradient_use_the_inner_indices_from_start(method):
    """An inner step that depends on t, θ ← θ − η(θ − a) + 0.1·t, run from ``start`` = 3:
    θ_T, h and ∇h (= (1 − (1 − η)^T)(θ_T − y)) are those of steps t = 3..3+T−1 (the θ the jvp
    path returns comes from its own primal unroll)."""
    eta, horizon, start = 0.3, 3, 3
    y = torch.tensor([0.5, -1.0], dtype=F64)

    def step(theta, state, phi, t):
        return {"w": theta["w"] - eta * (theta["w"] - phi["a"]) + 0.1 * t}, state

    problem = BilevelProblem(step, lambda theta, phi: 0.5 * ((theta["w"] - y) ** 2).sum(),
                             ({"w": torch.zeros(2, dtype=F64)}, None), horizon)
    phi = {"a": torch.tensor([1.5, 0.25], dtype=F64)}
    theta = torch.zeros(2, dtype=F64)
    for t in range(start, start + horizon):
        theta = theta - eta * (theta - phi["a"]) + 0.1 * t
    result = method(problem, phi, start=start)
    torch.testing.assert_close(result.theta["w"], theta, rtol=1e-13, atol=1e-14)
    assert result.value == pytest.approx(float(0.5 * ((theta - y) ** 2).sum()), rel=1e-12)
    exact = (1 - (1 - eta) ** horizon) * (theta - y)
    if isinstance(method, ExactForwardUnroll):
        torch.testing.assert_close(result.grad["a"], exact, rtol=1e-12, atol=1e-14)
    else:
        v = result.diagnostics["directions"]
        torch.testing.assert_close(result.diagnostics["directional"], v @ exact, rtol=1e-12, atol=1e-14)
