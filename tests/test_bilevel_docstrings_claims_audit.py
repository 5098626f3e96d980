"""Claims audit of pinnlab.bilevel's docstrings: each test pins a sentence of a docstring
that no earlier test pinned, by the behaviour it describes (float64 quadratics with
closed forms): which estimators see the update, how often g is built, DARTS' first-order
variant, the step-size limits of Penalty and F²SA, the divergence factor, Penalty's
stationarity identity, refusals and what a direct ``estimate`` records."""

from __future__ import annotations

import warnings

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    BlackBox,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    HessianFree,
    Penalty,
    ReverseUnroll,
    TruncatedReverseUnroll,
    TwoPhase,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    hypergradient,
    neumann,
    optimize,
)
from pinnlab.bilevel.base import BilevelProblem, flatten, unroll
from pinnlab.bilevel.driver import optimizer_stepped
from pinnlab.bilevel.forward import directional_derivatives
from pinnlab.bilevel.parameterization import reparameterize
from pinnlab.bilevel.penalty import DIVERGENCE_FACTOR, LowerLevelDivergence, _watch
from pinnlab.solvers import SGD, Adam

from .bilevel.problems import F64, LinearQuadratic


def _scalar_problem(curvature: float, *, horizon: int = 3):
    """g = (λ/2)‖θ − a‖², f = ½‖θ‖² (f independent of φ): H = λI, Y = −λI, d = θ."""

    def inner(theta, phi, t):
        return 0.5 * curvature * ((theta["w"] - phi["a"]) ** 2).sum()

    def outer(theta, phi):
        return 0.5 * (theta["w"] ** 2).sum()

    problem = from_inner_loss(inner, outer, SGD(lr=0.1), {"w": torch.zeros(2, dtype=F64)}, horizon=horizon)
    return problem, {"a": torch.tensor([1.0, -0.5], dtype=F64)}


# -- base.py -------------------------------------------------------------------------------
def test_a_learning_rate_has_zero_hypergradient_for_methods_that_do_not_see_the_update():
    """base.py ``sees_the_update``: implicit differentiation, Hessian-free, DARTS (and the
    outer algorithms, penalty.py) give the inner learning rate a hypergradient of exactly 0;
    reverse unrolling, which does see the update, does not."""
    lq = LinearQuadratic()
    problem = from_inner_loss(lambda th, phi, t: lq.inner_loss(th, {"a": lq.phi["a"]}, t), lq.outer_loss,
                              SGD(lr=0.1), {"w": lq.theta0}, horizon=4, lr=lambda phi: torch.exp(phi["log_lr"]))
    outer = problem.outer_loss
    problem = BilevelProblem(problem.inner_step, lambda th, phi: outer(th, {"a": lq.phi["a"]}), problem.init,
                             4, inner_loss=problem.inner_loss, gradient_step=problem.gradient_step)
    phi = {"log_lr": torch.tensor(-1.5, dtype=F64)}
    blind = [neumann(5, 0.1), cg(5), HessianFree(), DARTS()]
    for method in blind:
        assert method.sees_the_update is False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert float(hypergradient(problem, phi, method).grad["log_lr"]) == 0.0, method.name
    for method in (Penalty(inner_iters=3), F2SA(inner_iters=3)):
        assert method.sees_the_update is False
        grad, _, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
        assert float(grad["log_lr"]) == 0.0, method.name
    for method in (ReverseUnroll(), ForwardGradientUnroll(), ExactForwardUnroll(), ZeroOrderForwardGradient()):
        assert method.sees_the_update is True
    assert abs(float(hypergradient(problem, phi, ReverseUnroll()).grad["log_lr"])) > 1e-3


def test_hypergradient_refuses_an_outer_algorithm_and_points_to_optimize():
    """base.py ``hypergradient``: an outer algorithm is no estimator: TypeError saying it is
    a whole outer algorithm to run with pinnlab.bilevel.optimize (a plain object: no hint)."""
    problem, phi = _scalar_problem(1.0)
    for method in (Penalty(), F2SA()):
        with pytest.raises(TypeError, match=rf"got {type(method).__name__}: {type(method).__name__} is a whole "
                                            r"outer algorithm .*run it with pinnlab\.bilevel\.optimize$"):
            hypergradient(problem, phi, method)
    with pytest.raises(TypeError, match=r"got str$"):
        hypergradient(problem, phi, "rgu")


def test_estimate_called_directly_records_no_timing_or_memory():
    """base.py ``HypergradientResult``: ``seconds`` and memory are added when the method is
    called as ``method(...)`` (or via hypergradient), not by ``estimate`` itself."""
    problem, phi = _scalar_problem(1.0)
    direct = ReverseUnroll().estimate(problem, phi)
    assert "seconds" not in direct.diagnostics and "rss_increase_bytes" not in direct.diagnostics
    called = ReverseUnroll()(problem, phi)
    assert called.diagnostics["seconds"] >= 0 and called.diagnostics["rss_increase_bytes"] >= 0
    torch.testing.assert_close(direct.grad["a"], called.grad["a"], rtol=0, atol=0)


# -- forward.py ----------------------------------------------------------------------------
def test_directional_derivatives_modes_and_what_they_return():
    """forward.py ``directional_derivatives``: "auto" is "hvp" with a gradient step and then
    returns (θ_T, state_T); "jvp" returns None for them; both give w = ∇h·v; "hvp" without
    a gradient step is refused."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=5)
    _, grad, _ = lq.closed_form(lq.phi, 5)
    tangents = torch.eye(3, dtype=F64)[:2]
    w, value, final = directional_derivatives(problem, lq.phi, tangents, start=0, init=None, chunk_size=1)
    theta, _ = unroll(problem, lq.phi)
    assert final is not None
    torch.testing.assert_close(final[0]["w"], theta["w"], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(w, grad[:2], rtol=1e-12, atol=1e-13)
    w_jvp, value_jvp, none = directional_derivatives(problem, lq.phi, tangents, start=0, init=None,
                                                     chunk_size=2, mode="jvp")
    assert none is None
    torch.testing.assert_close(w_jvp, grad[:2], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(value_jvp, value, rtol=1e-13, atol=0)
    bare = BilevelProblem(problem.inner_step, problem.outer_loss, problem.init, 5)
    with pytest.raises(ValueError, match="tangents='hvp' needs a problem with a gradient_step"):
        directional_derivatives(bare, lq.phi, tangents, start=0, init=None, chunk_size=1, mode="hvp")
    w_auto, _, none = directional_derivatives(bare, lq.phi, tangents, start=0, init=None, chunk_size=1)
    assert none is None
    torch.testing.assert_close(w_auto, grad[:2], rtol=1e-12, atol=1e-13)


def test_fg2u_defaults_are_min_8_n_rademacher_directions():
    """forward.py ``ForwardGradientUnroll``: ``kind`` "rademacher" (default), b = min(8, N)
    by default: for N = 3 tuned values three ±1 directions and ĝ = (1/3) Σ w_i v_i. (It
    pinned b = 8 for any N, 8 directions for 3 values, more than the exact fgu's 3.)"""
    lq = LinearQuadratic()
    result = hypergradient(lq.problem(horizon=3), lq.phi, ForwardGradientUnroll())
    v, w = result.diagnostics["directions"], result.diagnostics["directional"]
    assert v.shape == (3, 3) and bool((v.abs() == 1).all())
    torch.testing.assert_close(flatten(result.grad), (w[:, None] * v).sum(0) / 3, rtol=1e-14, atol=0)


# -- reverse.py ----------------------------------------------------------------------------
def test_rgu_and_trgu_carry_adams_integer_step_count_outside_the_transform():
    """reverse.py ``_reverse``: non-tensor state leaves (Adam's step count) travel outside
    the transform: the returned state has the int count T of a plain unroll, moments equal."""
    lq = LinearQuadratic()
    problem = from_inner_loss(lq.inner_loss, lq.outer_loss, Adam(lr=0.05), {"w": lq.theta0}, horizon=6)
    _, expected = unroll(problem, lq.phi)
    for method in (ReverseUnroll(), TruncatedReverseUnroll(steps=2)):
        state = hypergradient(problem, lq.phi, method).state
        assert type(state.count) is int and state.count == 6
        torch.testing.assert_close(state.mu["w"], expected.mu["w"], rtol=1e-13, atol=0)
        torch.testing.assert_close(state.nu["w"], expected.nu["w"], rtol=1e-13, atol=0)


# -- implicit.py ---------------------------------------------------------------------------
def _counting(problem):
    calls = {"g": 0, "f": 0}

    def inner(theta, phi, t):
        calls["g"] += 1
        return problem.inner_loss(theta, phi, t)

    def outer(theta, phi):
        calls["f"] += 1
        return problem.outer_loss(theta, phi)

    counted = BilevelProblem(problem.inner_step, outer, problem.init, problem.horizon, inner_loss=inner,
                             gradient_step=problem.gradient_step)
    return counted, calls


def test_implicit_solvers_build_the_inner_gradient_once_for_all_products():
    """implicit.py ``_AtSolution``: ∇_θ g is built once with its graph and every HVP (K of
    them) and the mixed product is one more backward: g is evaluated once per estimate,
    for Neumann with K = 7, CG and Hessian-free alike, and ∂f once."""
    lq = LinearQuadratic()
    for method, hvps in ((neumann(7, 0.1), 7), (cg(3, tol=0.0), 3), (HessianFree(alpha=0.1), None)):
        problem, calls = _counting(lq.problem(horizon=4))  # (the unroll calls the original g)
        result = hypergradient(problem, lq.phi, method)
        assert calls == {"g": 1, "f": 1}, method.name
        if hvps is not None:
            assert result.diagnostics["hvps"] == hvps


def test_darts_evaluates_three_gradients_of_g_and_one_of_f():
    """implicit.py ``DARTS``: "three gradients of g (∇_w g at w, ∇_φ g at w⁺ and w⁻) and
    one of f (at w'), besides the reported value" (it said "three gradient evaluations")."""
    import pinnlab.bilevel.implicit as implicit

    assert "three gradients of g (∇_w g at w, ∇_φ g at w⁺ and w⁻) and one of f (at w')" in " ".join(
        implicit.DARTS.__doc__.split())
    lq = LinearQuadratic()
    problem, calls = _counting(lq.problem(horizon=4))
    hypergradient(problem, lq.phi, DARTS(xi=0.1))
    assert calls == {"g": 3, "f": 2}


def test_first_order_darts_keeps_only_the_direct_gradient():
    """implicit.py ``DARTS``: ξ = 0 keeps only ∇_φ f(θ_T, φ), and is exactly zero when f does
    not depend on φ directly (loss weights)."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=4)
    theta, _ = unroll(problem, lq.phi)
    result = hypergradient(problem, lq.phi, DARTS(xi=0.0))
    torch.testing.assert_close(result.grad["a"], lq.C @ lq.phi["a"], rtol=1e-15, atol=0)
    assert result.value == pytest.approx(float(lq.outer_loss(theta, lq.phi)), rel=1e-15)
    blind, phi = _scalar_problem(2.0)
    assert float(hypergradient(blind, phi, DARTS(xi=0.0)).grad["a"].abs().max()) == 0.0
    assert float(hypergradient(blind, phi, DARTS(xi=0.1)).grad["a"].abs().max()) > 0.0


def test_implicit_error_is_non_stationarity_plus_inexact_inverse():
    """implicit.py ``ImplicitDiff``: the error (unrolled ∇h minus the estimate) is
    d(Z + H⁻¹Y) (non-stationary θ_T) + (dĤ⁻¹ − dH⁻¹)Y (inexact inverse): exact CG leaves the
    first term alone, a 5-term Neumann series adds the second (Z = Q, H = A, Y = −B)."""
    lq = LinearQuadratic()
    horizon = 6
    problem = lq.problem(horizon=horizon)
    _, rgu, _ = lq.closed_form(lq.phi, horizon)
    theta, _ = unroll(problem, lq.phi)
    d = theta["w"] - lq.y
    eye = torch.eye(4, dtype=F64)
    z = (eye - torch.linalg.matrix_power(eye - lq.eta * lq.A, horizon)) @ torch.linalg.solve(lq.A, lq.B)
    h_inv_d = torch.linalg.solve(lq.A, d)
    stationarity = z.T @ d - lq.B.T @ h_inv_d  # d(Z + H⁻¹Y) as a column
    assert float(stationarity.norm()) > 1e-3
    exact = hypergradient(problem, lq.phi, cg(4, tol=0.0)).grad["a"]
    torch.testing.assert_close(rgu - exact, stationarity, rtol=1e-9, atol=1e-12)
    alpha, terms = 0.2, 5
    series = sum(torch.linalg.matrix_power(eye - alpha * lq.A, k) @ d for k in range(terms + 1)) * alpha
    inexact = -lq.B.T @ (series - h_inv_d)  # (dĤ⁻¹ − dH⁻¹)Y
    assert float(inexact.norm()) > 1e-3
    approx = hypergradient(problem, lq.phi, neumann(terms, alpha)).grad["a"]
    torch.testing.assert_close(rgu - approx, stationarity + inexact, rtol=1e-9, atol=1e-12)


# -- penalty.py ----------------------------------------------------------------------------
def test_divergence_factor_is_relative_to_the_first_nonzero_norm():
    """penalty.py ``DIVERGENCE_FACTOR``: a solve counts as diverging when ‖∇‖ is non-finite or
    exceeds 1e6 times its first nonzero value: exactly 1e6 times passes, above raises; a
    leading zero norm is not the reference."""
    assert DIVERGENCE_FACTOR == 1e6
    check = _watch("penalty", "lr", 0.1, "P")
    check({"w": torch.zeros(2, dtype=F64)}, 0, 5)
    check({"w": torch.tensor([3.0, 4.0], dtype=F64)}, 1, 5)  # the first nonzero: 5
    check({"w": torch.tensor([5e6, 0.0], dtype=F64)}, 2, 5)
    with pytest.raises(LowerLevelDivergence, match=r"rose from 5 to 5\.01e\+06 at inner step 4 of 5"):
        check({"w": torch.tensor([5.01e6, 0.0], dtype=F64)}, 3, 5)
    with pytest.raises(LowerLevelDivergence, match="is nan at inner step 1 of 2"):
        _watch("f2sa", "lr_z", 0.1, "g")({"w": torch.tensor([float("nan")], dtype=F64)}, 0, 2)


@pytest.mark.parametrize("curvature, stable", [(4.0, True), (5.0, False)])
def test_penalty_default_lr_suits_a_largest_curvature_up_to_about_four(curvature, stable):
    """penalty.py ``Penalty``: "The default 0.1 suits λ_max(H) up to about 4": at large γ the
    step times P's curvature, 0.1·(1 + γλ²)/(1 + γ), is 1.6 for λ = 4 (stable) and 2.5 for
    λ = 5 (the solve diverges and raises, naming lr)."""
    problem, phi = _scalar_problem(curvature)
    method = Penalty(gamma=1e3, gamma_max=1e3, inner_iters=60)
    assert method.lr == 0.1
    state = method.init(problem, phi)
    if stable:
        grad, state, _ = method.step(problem, phi, state, outer_step=0, start=0)
        assert torch.isfinite(grad["a"]).all() and float(state["theta"]["w"].abs().max()) < 2
    else:
        with pytest.raises(LowerLevelDivergence, match=r"lower penalty's lr \(tune\.options\.lr, now 0\.1\)$"):
            method.step(problem, phi, state, outer_step=0, start=0)


def test_penalty_theta_step_is_lr_over_one_plus_gamma():
    """penalty.py ``Penalty``: θ steps on P with step lr/(1 + γ) (not lr/γ, which the
    γ = 1e3 test above cannot tell apart): from θ = 0, ∇_θ P = −γλ²a, so one step at
    γ = 1, λ = 2, lr = 0.1 lands on 0.1·1·4·a/2 = 0.2·a."""
    problem, phi = _scalar_problem(2.0)
    method = Penalty(gamma=1.0, growth=1.0, inner_iters=1, lr=0.1)
    _, state, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
    torch.testing.assert_close(state["theta"]["w"], 0.2 * phi["a"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("lr_y, lr_z, diverging", [(0.45, 0.6, None), (0.45, 0.8, "lr_z"), (0.6, 0.6, "lr_y")])
def test_f2sa_step_limits(lr_y, lr_z, diverging):
    """penalty.py ``F2SA``: stable for η_z < 2/λ_max(H) and η_y below about 2/λ_max(H + ∇²f/λ):
    with H = 3I, ∇²f = I, λ = 1 the limits are 2/3 for z and 1/2 for y (η_y = 0.6 is below
    2/λ_max(H) yet diverges)."""
    problem, phi = _scalar_problem(3.0)
    method = F2SA(lr_y=lr_y, lr_z=lr_z, inner_iters=100)
    state = method.init(problem, phi)
    if diverging is None:
        grad, state, _ = method.step(problem, phi, state, outer_step=0, start=0)
        assert torch.isfinite(grad["a"]).all()
        torch.testing.assert_close(state["z"]["w"], phi["a"], rtol=0, atol=1e-8)  # z minimises g alone
    else:
        with pytest.raises(LowerLevelDivergence, match=rf"lower f2sa's {diverging} "):
            method.step(problem, phi, state, outer_step=0, start=0)


def test_penalty_theta_stationarity_gives_gamma_grad_g_equal_minus_h_inverse_grad_f():
    """penalty.py ``Penalty``: at θ-stationarity of P, γ∇_θ g = −H⁻¹∇_θ f (exact for a
    quadratic g), so the returned ∇_φ P = ∇_φ f + γ Y ∇_θ g is c − dH⁻¹Y at that θ."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=1)
    method = Penalty(gamma=10.0, growth=1.0, inner_iters=250)
    grad, state, _ = method.step(problem, lq.phi, method.init(problem, lq.phi), outer_step=0, start=0)
    w = state["theta"]["w"]
    grad_g = lq.A @ w - lq.B @ lq.phi["a"]
    d = w - lq.y
    torch.testing.assert_close(10.0 * grad_g, -torch.linalg.solve(lq.A, d), rtol=1e-9, atol=1e-11)
    implicit = lq.C @ lq.phi["a"] + lq.B.T @ torch.linalg.solve(lq.A, d)  # c − dH⁻¹Y, Y = −B
    torch.testing.assert_close(grad["a"], implicit, rtol=1e-9, atol=1e-11)


# -- zeroth_order.py -----------------------------------------------------------------------
def test_zo_all_zero_warning_is_the_same_message_at_every_outer_step():
    """zeroth_order.py: when every difference is 0 the call warns "with the same message at
    every outer step, so Python's default filter shows it once per run"."""
    box = BlackBox(lambda phi: 1.0)
    phi = {"a": torch.zeros(2, dtype=F64)}
    messages = []
    for k in (0, 7):
        with pytest.warns(RuntimeWarning, match="every finite difference") as record:
            result = hypergradient(box, phi, ZeroOrderForwardGradient(num_directions=2), outer_step=k)
        messages += [str(w.message) for w in record]
        assert result.diagnostics["unresolved_directions"] == 2
    assert len(messages) == 2 and messages[0] == messages[1]


def test_zo_differences_are_exact_on_a_quadratic_h():
    """zeroth_order.py: per-direction error O(μ) forward, O(μ²) central: on an h quadratic in
    φ the central difference is ∇h·v exactly and the forward one is off by (μ/2)vᵀ∇²h v."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=4)
    _, grad, hess = lq.closed_form(lq.phi, 4)
    mu = 0.1
    for scheme in ("central", "forward"):
        result = hypergradient(problem, lq.phi, ZeroOrderForwardGradient(num_directions=3, mu=mu, scheme=scheme))
        v, w = result.diagnostics["directions"], result.diagnostics["directional"]
        offset = 0.5 * mu * torch.einsum("bi,ij,bj->b", v, hess, v) if scheme == "forward" else 0.0 * w
        torch.testing.assert_close(w - v @ grad, offset, rtol=1e-8, atol=1e-11)


def test_outer_algorithms_do_not_vary_and_keep_checkpointable_state():
    """penalty.py ``AbstractOuterAlgorithm``: one φ-gradient per outer step (``varies`` False),
    and state "a dict of tensors and floats (checkpointable)"."""
    problem, phi = _scalar_problem(1.0)
    for method, floats in ((Penalty(inner_iters=2), {"gamma"}), (F2SA(inner_iters=2), {"lam"})):
        assert method.varies(5) is False
        _, state, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
        assert {k for k, v in state.items() if type(v) is float} == floats
        for key in set(state) - floats:
            assert all(isinstance(v, torch.Tensor) for v in state[key].values())


# -- parameterization.py and driver.py ------------------------------------------------------
def test_reparameterize_without_entries_is_the_same_problem():
    """parameterization.py ``reparameterize``: with no entry, the same problem object."""
    problem, _ = _scalar_problem(1.0)
    assert reparameterize(problem, {}) is problem


def test_optimize_default_meta_optimizer_is_adam_with_rate_1e_2():
    """driver.py ``optimize``: the default meta optimizer is Adam(1e-2) over φ's leaves."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=3)
    default = optimize(problem, lq.phi, ReverseUnroll(), steps=3)
    adam = optimize(problem, lq.phi, ReverseUnroll(), steps=3,
                    meta_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    torch.testing.assert_close(default.phi["a"], adam.phi["a"], rtol=0, atol=0)
    # Adam's first step moves every entry by the rate (a nonzero gradient): 1e-2
    first = default.history["phi/a"][0] - lq.phi["a"]
    torch.testing.assert_close(first.abs(), torch.full((3,), 1e-2, dtype=F64), rtol=1e-6, atol=0)


def test_optimizer_stepped_is_false_only_for_an_overflowing_step():
    """driver.py ``optimizer_stepped``: ``opt.step()``; False when the step overflowed (torch's
    "value cannot be converted ... without overflow"), any other error raised as is."""

    class Raising:
        def __init__(self, text):
            self.text = text

        def step(self):
            raise RuntimeError(self.text)

    assert optimizer_stepped(Raising("value cannot be converted to type float without overflow")) is False
    with pytest.raises(RuntimeError, match="^something else$"):
        optimizer_stepped(Raising("something else"))
    leaf = torch.ones(2, dtype=F64, requires_grad=True)
    leaf.grad = torch.ones(2, dtype=F64)
    assert optimizer_stepped(torch.optim.SGD([leaf], lr=0.5)) is True
    torch.testing.assert_close(leaf.detach(), torch.full((2,), 0.5, dtype=F64), rtol=0, atol=0)


def test_two_phase_then_lr_applies_to_every_parameter_group():
    """driver.py ``TwoPhase``: ``then_lr`` is the meta optimizer's rate from the switch on in
    every parameter group (a two-group SGD: both end at then_lr, and φ's last step is
    then_lr times its hypergradient)."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=3)
    phi = {"a": lq.phi["a"][:2].clone(), "b": lq.phi["a"][2:].clone()}
    outer = problem.outer_loss
    split = BilevelProblem(lambda th, st, p, t: problem.inner_step(th, st, {"a": torch.cat([p["a"], p["b"]])}, t),
                           lambda th, p: outer(th, {"a": torch.cat([p["a"], p["b"]])}), problem.init, 3)
    made = []

    def meta(params):
        made.append(torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1))
        return made[-1]

    result = optimize(split, phi, TwoPhase(ReverseUnroll(), ReverseUnroll(), switch_after=1, then_lr=0.01),
                      steps=2, meta_optimizer=meta, warm_start=False)
    assert [group["lr"] for group in made[0].param_groups] == [0.01, 0.01]
    before = {k: result.history[f"phi/{k}"][0] for k in phi}
    grad = hypergradient(split, before, ReverseUnroll(), start=3).grad
    for k in phi:
        torch.testing.assert_close(result.phi[k], before[k] - 0.01 * grad[k], rtol=1e-12, atol=1e-15)


def test_outer_algorithms_ignore_warm_start_and_seed_under_optimize():
    """penalty.py ``AbstractOuterAlgorithm`` (and driver.py ``optimize``): the lower-level
    iterates continue from the previous outer step, so ``warm_start`` and ``seed`` do not
    apply: the runs agree exactly (g depends on the inner index t, as a seed would act)."""
    lq = LinearQuadratic()
    problem = from_inner_loss(lambda th, phi, t: lq.inner_loss(th, phi, t) + 0.01 * t * th["w"].sum(),
                              lq.outer_loss, SGD(lr=lq.eta), {"w": lq.theta0}, horizon=2)
    for method in (Penalty(inner_iters=3), F2SA(inner_iters=3)):
        one = optimize(problem, lq.phi, method, steps=3, seed=0, warm_start=True)
        two = optimize(problem, lq.phi, method, steps=3, seed=7, warm_start=False)
        assert one.history["value"] == two.history["value"]
        torch.testing.assert_close(one.phi["a"], two.phi["a"], rtol=0, atol=0)
        torch.testing.assert_close(one.theta["w"], two.theta["w"], rtol=0, atol=0)
