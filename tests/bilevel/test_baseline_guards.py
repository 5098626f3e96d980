"""Guards of the classical baselines: a diverging penalty/F²SA solve stops with a message
naming the option to lower, outer algorithms record the outer objective, Neumann warns
when its series diverges, zo_fg2u when no difference resolves μ, clear errors for a
missing inner_loss and TRGU's s > T, and cg's tol (float64 quadratics)."""

from __future__ import annotations

import warnings

import pytest
import torch

from pinnlab.bilevel import (
    F2SA,
    BilevelProblem,
    BlackBox,
    CGSolve,
    HessianFree,
    ImplicitDiff,
    Penalty,
    ReverseUnroll,
    TruncatedReverseUnroll,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    hypergradient,
    make_method,
    neumann,
    optimize,
)
from pinnlab.bilevel.base import flatten
from pinnlab.bilevel.penalty import LowerLevelDivergence
from pinnlab.solvers import SGD

from .problems import F64, LinearQuadratic

STIFF = torch.tensor([1.0, 10.0], dtype=F64)
"""The inner Hessian H = diag(1, 10) of :func:`_stiff`: λ_max(H) = 10, λ_max(H)² = 100."""


def _stiff(horizon=1):
    """g = ½θᵀHθ − θᵀBa, f = ½‖θ − y‖² + ½‖a‖² (∇²f = I): the penalised objective
    P = f + (γ/2)‖Hθ − Ba‖² has curvature 1 + γλ_max(H)² = 1 + 100γ."""
    B = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=F64)
    y = torch.tensor([0.7, -1.2], dtype=F64)

    def inner(theta, phi, t):
        w = theta["w"]
        return 0.5 * (STIFF * w * w).sum() - w @ B @ phi["a"]

    def outer(theta, phi):
        return 0.5 * ((theta["w"] - y) ** 2).sum() + 0.5 * (phi["a"] ** 2).sum()

    problem = from_inner_loss(inner, outer, SGD(lr=0.05), {"w": torch.zeros(2, dtype=F64)}, horizon=horizon)
    return problem, {"a": torch.tensor([0.4, -0.6], dtype=F64)}


# -- 1. a diverging lower-level solve --------------------------------------------------------
def test_penalty_step_lr_over_1_plus_gamma_diverges_with_curvature_gamma_lambda_squared():
    """With lr = 0.1 the θ step 0.05 is stable for g itself (0.05·λ_max(H) = 0.5) but not
    for P at γ = 1 (0.05·(1 + 100) = 5.05 > 2): the solve raises, naming lr. lr = 0.015
    (0.0075·101 = 0.76) converges, and stays stable as γ grows (the step times P's
    curvature tends to lr·λ_max(H)² = 1.5 < 2)."""
    problem, phi = _stiff()
    method = Penalty(lr=0.1, inner_iters=20)
    with pytest.raises(LowerLevelDivergence, match=r"^penalty: .* diverged .*lower penalty's lr "
                                                   r"\(tune\.options\.lr, now 0\.1\)$"):
        method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
    stable = Penalty(lr=0.015, gamma=1.0, growth=10.0, gamma_max=1e3, inner_iters=50)
    state = stable.init(problem, phi)
    for k in range(4):  # γ = 1, 10, 100, 1000
        grad, state, _ = stable.step(problem, phi, state, outer_step=k, start=0)
    assert torch.isfinite(flatten(grad)).all() and float(state["theta"]["w"].norm()) < 10


@pytest.mark.parametrize("lr_y, lr_z, option", [(0.01, 0.3, "lr_z"), (0.3, 0.01, "lr_y")])
def test_f2sa_names_the_step_of_the_iterate_that_diverged(lr_y, lr_z, option):
    """η times the largest curvature is 3 for z (H) or 3.3 for y (H + I/λ) at η = 0.3, so
    that iterate diverges; 0.1 or 0.11 for the other at η = 0.01."""
    problem, phi = _stiff()
    method = F2SA(lr_y=lr_y, lr_z=lr_z, inner_iters=30)
    with pytest.raises(LowerLevelDivergence, match=rf"^f2sa: .*lower f2sa's {option} "
                                                   rf"\(tune\.options\.{option}, now 0\.3\)$"):
        method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)


def test_optimize_stops_at_a_diverging_solve_keeping_the_last_usable_phi_and_theta():
    """γ = 1 is stable at lr = 0.03 (0.015·101 = 1.5); at γ = 10 the step times P's
    curvature is 0.03·1001/11 = 2.73, so outer step 1 diverges: the loop stops there
    with the method's message, keeping φ and θ of outer step 0 (it ran on to ‖θ‖ ~ 1e14
    at outer step 2 with status ok)."""
    problem, phi = _stiff()
    method = Penalty(lr=0.03, gamma=1.0, growth=10.0, gamma_max=100.0, inner_iters=30)
    result = optimize(problem, phi, method, steps=3)
    assert result.status == "nonfinite"
    assert result.message.startswith("outer step 1: penalty: ") and "tune.options.lr" in result.message
    assert result.history["outer_step"] == [0]
    torch.testing.assert_close(result.phi["a"], result.history["phi/a"][0], rtol=0, atol=0)
    first = optimize(problem, phi, method, steps=1)
    assert first.status == "ok"
    torch.testing.assert_close(result.theta["w"], first.theta["w"], rtol=0, atol=0)


# -- 2. the outer objective of outer algorithms ------------------------------------------------
@pytest.mark.parametrize("method", [Penalty(inner_iters=3, lr=0.05), F2SA(inner_iters=3, lr_y=0.1, lr_z=0.1)],
                         ids=["penalty", "f2sa"])
def test_outer_algorithms_record_the_outer_objective_at_their_iterate(method):
    """/tune/value was NaN at every step: it is f(θ, φ_k) at the method's iterate after
    outer step k's lower-level iterations and φ_k before the update (as estimators record
    h(φ_k) = f(θ_T, φ_k)); f depends on φ here (½φᵀCφ), so φ_{k+1} would not do."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=2)
    lr = 0.5
    result = optimize(problem, lq.phi, method, steps=3, meta_optimizer=lambda p: torch.optim.SGD(p, lr=lr))
    state, phi, expected = method.init(problem, lq.phi), dict(lq.phi), []
    stride = max(problem.horizon, method.inner_iters)
    for k in range(3):
        grad, state, _ = method.step(problem, phi, state, outer_step=k, start=k * stride)
        expected.append(float(problem.outer_loss(method.iterate(state), phi)))
        phi = {"a": phi["a"] - lr * grad["a"]}
    assert result.history["value"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert len(set(expected)) == 3


# -- 3. Neumann's diverging series ------------------------------------------------------------
def _neumann(hessian, alpha, iterations=20):
    """(neumann's result, d = θ_T − y) for g = ½θᵀHθ − θᵀBa (H = ``hessian``), f = ½‖θ − y‖²."""
    n = hessian.shape[0]
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(n, 2, generator=gen, dtype=F64)
    y = torch.randn(n, generator=gen, dtype=F64) + 1.0

    def inner(theta, phi, t):
        return 0.5 * theta["w"] @ hessian @ theta["w"] - theta["w"] @ B @ phi["a"]

    def outer(theta, phi):
        return 0.5 * ((theta["w"] - y) ** 2).sum()

    problem = from_inner_loss(inner, outer, SGD(lr=1e-3), {"w": torch.zeros(n, dtype=F64)}, horizon=1)
    result = hypergradient(problem, {"a": torch.tensor([0.3, -0.7], dtype=F64)}, neumann(iterations, alpha))
    return result, result.theta["w"] - y


def _growth_warnings(record):
    return [w for w in record if "Neumann: the series terms" in str(w.message)]


@pytest.mark.parametrize("hessian, alpha", [
    (torch.diag(STIFF), 0.25),                                    # α·λ_max = 2.5 > 2
    (torch.diag(torch.tensor([2.0, -0.5], dtype=F64)), 0.1),      # indefinite: no α converges
])
def test_neumann_warns_once_when_its_terms_grow(hessian, alpha):
    with pytest.warns(RuntimeWarning, match=r"‖I − αH‖ ≥ 1 at α = .*lower alpha") as record:
        result, _ = _neumann(hessian, alpha)
    assert [w.filename for w in _growth_warnings(record)] == [__file__]  # the user's line (in _neumann)
    assert result.diagnostics["growing_terms"] >= 1
    assert result.diagnostics["last_term"] > 1


def test_neumann_within_its_radius_is_silent_and_reports_the_last_term():
    """α·λ = 0.19, 0.019: terms shrink by 0.81 and 0.981 per iteration along the two
    eigenvectors: no growth, and last_term = ‖(I − αH)^K d‖/‖d‖ in closed form."""
    alpha, iterations = 0.019, 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result, d = _neumann(torch.diag(STIFF), alpha, iterations)
    assert result.diagnostics["growing_terms"] == 0
    expected = float(((1 - alpha * STIFF) ** iterations * d).norm() / d.norm())
    assert result.diagnostics["last_term"] == pytest.approx(expected, rel=1e-12)
    assert expected < 1


# -- 4. zo_fg2u that does not resolve μ ---------------------------------------------------------
def _rounded_black_box():
    """h(φ) = 1 + 1e-9·Σφ rounded to float32: a step μ = 1e-3 changes it by less than its
    rounding, as a float32 PINN training does with a small μ."""
    return BlackBox(lambda phi: (1.0 + 1e-9 * phi["a"].sum()).float(), horizon=1)


def test_zo_warns_when_every_difference_is_exactly_zero_once_per_run():
    method = ZeroOrderForwardGradient(num_directions=4, mu=1e-3)
    phi = {"a": torch.zeros(3, dtype=F64)}
    with pytest.warns(RuntimeWarning, match=r"zo_fg2u: .*exactly 0 at mu = 0\.001.*tune\.options\.mu.*"
                                            r"trainer\.dtype=float64"):
        result = hypergradient(_rounded_black_box(), phi, method)
    assert not flatten(result.grad).any() and result.diagnostics["unresolved_directions"] == 4
    with warnings.catch_warnings(record=True) as record:  # a run: Python's default filter shows it once
        warnings.simplefilter("default")
        optimize(_rounded_black_box(), phi, method, steps=3)
    assert len([w for w in record if "zo_fg2u" in str(w.message)]) == 1


def test_zo_that_resolves_mu_is_silent():
    lq = LinearQuadratic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(lq.problem(horizon=3), lq.phi, ZeroOrderForwardGradient(num_directions=4, mu=1e-3))
    assert result.diagnostics["unresolved_directions"] == 0 and flatten(result.grad).abs().min() > 0


# -- 5. a problem without inner_loss ------------------------------------------------------------
@pytest.mark.parametrize("method, name", [(neumann(), "neumann"), (cg(), "cg"), (HessianFree(alpha=0.1), "hessian_free"),
                                          (ImplicitDiff(lambda at: at.d), "implicit")])
def test_implicit_methods_name_themselves_when_inner_loss_is_missing(method, name):
    """It said "method '_AtSolution' needs ...", after the unroll; now the method's own name,
    before any inner step."""
    calls = []

    def step(theta, state, phi, t):
        calls.append(t)
        return {"w": theta["w"] - 0.1 * (theta["w"] - phi["a"])}, state

    problem = BilevelProblem(step, lambda th, ph: (th["w"] ** 2).sum(), ({"w": torch.zeros(2, dtype=F64)}, None),
                             horizon=3, inner_lr=0.1)
    with pytest.raises(ValueError, match=rf"^method '{name}' needs the problem's inner_loss"):
        hypergradient(problem, {"a": torch.ones(2, dtype=F64)}, method)
    assert calls == []


# -- 6. TRGU with s > T ------------------------------------------------------------------------
def test_truncated_reverse_refuses_more_steps_than_the_horizon():
    """A given s > T ran full rgu silently; s = T is full rgu, s = T + 1 is refused. The
    default s (5) is shortened to a shorter horizon (T = 3: full rgu) and is 5 otherwise."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=3)
    full = flatten(hypergradient(problem, lq.phi, ReverseUnroll()).grad)
    for method in (TruncatedReverseUnroll(steps=3), TruncatedReverseUnroll()):
        result = hypergradient(problem, lq.phi, method)
        torch.testing.assert_close(flatten(result.grad), full, rtol=1e-12, atol=1e-14)
        assert result.diagnostics["truncation"] == 3
    with pytest.raises(ValueError, match=r"^trgu: steps \(s\) = 4 exceeds the horizon T = 3"):
        hypergradient(problem, lq.phi, TruncatedReverseUnroll(steps=4))
    assert hypergradient(lq.problem(horizon=8), lq.phi, TruncatedReverseUnroll()).diagnostics["truncation"] == 5


# -- 7. cg's tol ------------------------------------------------------------------------------
def test_cg_takes_tol():
    """cg(tol=...) (and make_method("cg", tol=...), i.e. tune.options.tol) reaches CGSolve: a
    tolerance above ‖d‖ stops CG before its first iteration (q = 0, hypergradient = c = a),
    the default solves the system."""
    problem, phi = _stiff()
    assert make_method("cg", tol=1e-6).solver.tol == 1e-6
    stopped = hypergradient(problem, phi, cg(tol=1e3))
    torch.testing.assert_close(flatten(stopped.grad), phi["a"], rtol=0, atol=0)
    solved = hypergradient(problem, phi, cg())
    assert float((flatten(solved.grad) - phi["a"]).norm()) > 1e-2
    assert cg(iterations=5, damping=0.1, tol=1e-8).solver == CGSolve(5, 0.1, 1e-8)
