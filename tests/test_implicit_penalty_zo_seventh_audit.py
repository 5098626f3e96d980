"""Seventh mutation audit of the implicit, penalty and zeroth-order hypergradients.

Pins what the earlier audits left open: float32 handling (Neumann's rounding allowance,
ZO's directional dtype), the numbers and wording of the warnings and divergence errors,
the option checks at their boundaries, the CG exit on a non-finite curvature and the
split of directions over ranks. Closed forms on small quadratics where numbers matter.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pinnlab.bilevel import (
    F2SA,
    BlackBox,
    Penalty,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    hypergradient,
    neumann,
)
from pinnlab.bilevel.implicit import CGSolve
from pinnlab.bilevel.penalty import LowerLevelDivergence, _watch
from pinnlab.solvers import SGD

F64 = torch.float64
F32 = torch.float32


def _quadratic(hessian, d):
    """g = ½θᵀHθ − θᵀBa with B = 1 (Y = −B), f = dᵀθ (so ∂f/∂θ = d, c = 0), in H's dtype,
    one SGD step of 1e-3 from θ_0 = 0, φ = a = 0.3."""
    n, dtype = hessian.shape[0], hessian.dtype
    b_mat = torch.ones(n, 1, dtype=dtype)

    def inner(theta, phi, t):
        return 0.5 * theta["w"] @ hessian @ theta["w"] - theta["w"] @ b_mat @ phi["a"]

    problem = from_inner_loss(inner, lambda theta, phi: d @ theta["w"], SGD(lr=1e-3),
                              {"w": torch.zeros(n, dtype=dtype)}, horizon=1)
    return problem, {"a": torch.tensor([0.3], dtype=dtype)}


def _silent(problem, phi, method, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return hypergradient(problem, phi, method, **kwargs)


# -- Neumann ------------------------------------------------------------------------------
def test_neumann_rounding_allowance_follows_a_float32_tree():
    """Float32, H = [−1e-3], α = 1e-2: each term is (1 + 1e-5) times the one before, within
    float32's √ε ≈ 3.5e-4 rounding allowance, so no term counts as growing (silent). The
    float64 allowance √ε ≈ 1.5e-8 would count all 6 and warn. The estimate stays float32:
    Bᵀq = α Σ_{k=0}^{6} (1 + 1e-5)^k."""
    problem, phi = _quadratic(torch.tensor([[-1e-3]], dtype=F32), torch.ones(1, dtype=F32))
    result = _silent(problem, phi, neumann(iterations=6, alpha=1e-2))
    assert result.diagnostics["growing_terms"] == 0
    assert abs(result.diagnostics["last_term"] - (1 + 1e-5) ** 6) < 1e-6
    assert result.grad["a"].dtype == F32
    expected = 1e-2 * sum((1 + 1e-5) ** k for k in range(7))
    assert abs(float(result.grad["a"]) - expected) < 1e-6 * expected


def test_neumann_warning_reports_first_norm_last_term_and_the_first_growing_term():
    """H = diag(1, −0.5), α = 1, d = (2, 1e-3): p_1 = (0, 1.5e-3) shrinks, then the second
    component grows by 1.5 per term: 3 of K = 4 terms grow, from term 2; the warning gives
    ‖d‖ ≈ 2 and the last term ‖p_4‖ = 1e-3·1.5⁴ = 0.00506, and last_term = ‖p_4‖/‖d‖."""
    d = torch.tensor([2.0, 1e-3], dtype=F64)
    problem, phi = _quadratic(torch.diag(torch.tensor([1.0, -0.5], dtype=F64)), d)
    match = (r"\(3 of 4 terms larger than the one before, from term 2; ‖d‖ = 2, last term 0\.00506\): "
             r"‖I − αH‖ ≥ 1 at α = 1, so")
    with pytest.warns(RuntimeWarning, match=match):
        result = hypergradient(problem, phi, neumann(iterations=4, alpha=1.0))
    assert result.diagnostics["growing_terms"] == 3
    assert abs(result.diagnostics["last_term"] - 1e-3 * 1.5 ** 4 / float(d.norm())) < 1e-15


# -- CG -----------------------------------------------------------------------------------
def test_cg_stops_at_a_negative_infinite_curvature():
    """H = [−1e300], d = 1e10: pᵀHp = −inf at iteration 1, so CG stops with its starting
    iterate q = 0 (hypergradient c = 0) and warns of that one iteration, not going on with
    a step −0 that turns the residual into NaN (0·inf) and the answer into NaN."""
    problem, phi = _quadratic(torch.tensor([[-1e300]], dtype=F64), torch.tensor([1e10], dtype=F64))
    with pytest.warns(RuntimeWarning, match=r"= -inf at iteration 1 \(1 such iterations\)"):
        result = hypergradient(problem, phi, cg(iterations=3, tol=0.0))
    assert result.diagnostics["negative_curvature"] == 1 and result.diagnostics["hvps"] == 1
    assert torch.equal(result.grad["a"], torch.zeros(1, dtype=F64))


def test_cg_stops_at_a_positive_infinite_curvature_and_says_it_overflowed():
    """H = [1e300], d = 1e10: pᵀHp = +inf at iteration 1 is no negative curvature, but its
    step 0 made the residual NaN (0·inf), and the next iteration's NaN curvature warned of
    "non-positive curvature = nan at iteration 2", as if H were indefinite. CG now stops at
    iteration 1 with q = 0 and says that the curvature overflowed."""
    problem, phi = _quadratic(torch.tensor([[1e300]], dtype=F64), torch.tensor([1e10], dtype=F64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hypergradient(problem, phi, cg(iterations=3, tol=0.0))
    assert [str(w.message) for w in caught] == [
        "CG: the curvature pᵀ(H + λI)p overflowed to inf at iteration 1, so CG stopped with the iterate "
        "before it; the Hessian-vector products overflow (lower the outer objective's scale or use float64)"]
    assert result.diagnostics["negative_curvature"] == 0 and result.diagnostics["hvps"] == 1
    assert torch.equal(result.grad["a"], torch.zeros(1, dtype=F64))


# -- penalty.py ---------------------------------------------------------------------------
def test_divergence_watch_names_an_infinite_norm_without_a_rise():
    """A gradient norm of inf is a diverged solve, reported as "is inf" (not as a rise "from 1
    to inf"), also as the very first norm of the solve (where no rise is measurable); the
    message ends with the option and its value."""
    check = _watch("m", "lr_q", 0.25, "g")
    check({"w": torch.tensor([1.0], dtype=F64)}, 0, 3)
    with pytest.raises(LowerLevelDivergence, match=r"^m: the lower-level gradient descent on g diverged \(its "
                       r"gradient norm is inf at inner step 2 of 3\): .*lower m's lr_q \(tune\.options\.lr_q, now 0\.25\)$"):
        check({"w": torch.tensor([float("inf")], dtype=F64)}, 1, 3)
    with pytest.raises(LowerLevelDivergence, match=r"gradient norm is inf at inner step 1 of 3\)"):
        _watch("m", "lr_q", 0.25, "g")({"w": torch.tensor([float("-inf"), 0.0], dtype=F64)}, 0, 3)


def _doubling_problem():
    """g = 15‖θ − a‖², f = ½‖θ‖², θ_0 = 0 (as in the fourth audit)."""

    def inner(theta, phi, t):
        return 15.0 * ((theta["w"] - phi["a"]) ** 2).sum()

    return from_inner_loss(inner, lambda theta, phi: 0.5 * (theta["w"] ** 2).sum(), SGD(lr=0.01),
                           {"w": torch.zeros(2, dtype=F64)}, horizon=1)


PHI = {"a": torch.tensor([0.5, -1.0], dtype=F64)}


def test_penalty_divergence_message_gives_the_scaled_step_and_the_full_lr():
    """Penalty(γ = 1, lr = 6/901) diverges at inner step 21 (fourth audit); the message gives
    γ and the step lr/(1 + γ) = 3/901 ≈ 0.00333 it descends with, and lr itself to 6
    significant digits (0.00665927), the value to lower."""
    method = Penalty(gamma=1.0, growth=1.0, inner_iters=21, lr=6 / 901)
    match = (r"^penalty: the lower-level gradient descent on P = f \+ \(γ/2\)‖∇_θ g‖² \(γ = 1, step lr/\(1 \+ γ\) = "
             r"0\.00333\) diverged .* lower penalty's lr \(tune\.options\.lr, now 0\.00665927\)$")
    with pytest.raises(LowerLevelDivergence, match=match):
        method.step(_doubling_problem(), PHI, method.init(_doubling_problem(), PHI), outer_step=0, start=0)


def test_f2sa_y_divergence_message_names_the_current_lambda():
    """y diverges (|1 − 0.1(30 + 1/λ)| > 2) with λ = 3 in the state (λ₀ = 1, grown): the message
    gives the λ of the objective y descends, λ = 3, and lr_y = 0.1."""
    problem = _doubling_problem()
    method = F2SA(lam=1.0, inner_iters=25, lr_y=0.1, lr_z=0.01)
    state = {**method.init(problem, PHI), "lam": 3.0}
    with pytest.raises(LowerLevelDivergence, match=r"^f2sa: .* on g \+ f/λ for y \(λ = 3\) diverged .* "
                       r"lower f2sa's lr_y \(tune\.options\.lr_y, now 0\.1\)$"):
        method.step(problem, PHI, state, outer_step=0, start=0)


@pytest.mark.parametrize("build, fragment", [
    (lambda: Penalty(gamma=5.0, gamma_max=2.0), "gamma_max"),
    (lambda: F2SA(lr_z=0.0), "lr_z"),
    (lambda: F2SA(inner_iters=0), "inner_iters"),
], ids=["penalty-gamma_max-below-gamma", "f2sa-lr_z-0", "f2sa-inner_iters-0"])
def test_outer_algorithm_options_refused_at_their_boundaries(build, fragment):
    """γ_max below a γ₀ > 1, a zero z-step and zero inner iterations are refused."""
    with pytest.raises(ValueError, match=fragment):
        build()


def test_outer_algorithm_states_hold_detached_iterates():
    """init at a θ that requires grad, or at a θ_0(φ) built from a φ that does, stores
    detached copies (checkpointable state, no graph back to φ)."""
    problem = from_inner_loss(lambda theta, phi, t: 0.5 * (theta["w"] ** 2).sum(), lambda theta, phi: theta["w"].sum(),
                              SGD(lr=0.1), lambda phi: {"w": 2.0 * phi["a"]}, horizon=1)
    phi = {"a": torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)}
    given = {"w": torch.ones(2, dtype=F64, requires_grad=True)}
    for method in (Penalty(), F2SA()):
        for state in (method.init(problem, phi), method.init(problem, phi, given)):
            assert not any(v.requires_grad for key, tree in state.items() if isinstance(tree, dict)
                           for v in tree.values())


# -- zeroth_order.py ----------------------------------------------------------------------
def test_zo_float32_phi_keeps_float32_directions_differences_and_estimate():
    """φ in float32 (a black box returning float64 values): the directions, the finite
    differences w and the estimate are all float32, like φ."""
    phi = {"a": torch.tensor([0.5, -1.0, 2.0], dtype=F32)}
    result = hypergradient(BlackBox(lambda p: float((p["a"].double() ** 2).sum())), phi,
                           ZeroOrderForwardGradient(num_directions=3, mu=1e-2))
    assert result.diagnostics["directions"].dtype == F32
    assert result.diagnostics["directional"].dtype == F32
    assert result.grad["a"].dtype == F32


def test_zo_inner_solves_of_a_differentiable_problem_build_no_graph():
    """For a problem (not a black box) the unrolls run under no_grad: from a θ_0 that requires
    grad (a network's parameters do) the θ_T handed back carries no graph."""
    problem = from_inner_loss(lambda theta, phi, t: 0.5 * ((theta["w"] - phi["a"]) ** 2).sum(),
                              lambda theta, phi: theta["w"].sum(), SGD(lr=0.1),
                              {"w": torch.zeros(2, dtype=F64, requires_grad=True)}, horizon=2)
    result = _silent(problem, {"a": torch.ones(2, dtype=F64)}, ZeroOrderForwardGradient(num_directions=2))
    assert not result.theta["w"].requires_grad and result.theta["w"].grad_fn is None
    torch.testing.assert_close(result.theta["w"], torch.full((2,), 0.19, dtype=F64), rtol=1e-15, atol=0)


def test_zo_forward_all_zero_warning_names_the_forward_difference_and_mu():
    """A flat black box with forward differences: the warning names h(φ + μv) − h(φ) (not
    the central one), the b = 3 directions and μ = 0.00025 in full."""
    match = (r"^zo_fg2u: every finite difference h\(φ \+ μv\) − h\(φ\) over the 3 directions is exactly 0 "
             r"at mu = 0\.00025, so")
    with pytest.warns(RuntimeWarning, match=match):
        hypergradient(BlackBox(lambda p: 1.0), {"a": torch.zeros(2, dtype=F64)},
                      ZeroOrderForwardGradient(num_directions=3, mu=2.5e-4, scheme="forward"))


def _two_ranks(monkeypatch, rank):
    import pinnlab.bilevel.distributed as dist

    monkeypatch.setattr(dist, "rank_and_world", lambda: (rank, 2))
    monkeypatch.setattr(dist, "all_reduce_sum", lambda tensor: tensor)  # (the other rank adds 0)


def test_zo_all_zero_warning_on_a_rank_counts_all_b_directions(monkeypatch):
    """Rank 0 of 2 holds 2 of b = 3 directions; when every rank's differences are 0 the
    warning speaks of the 3 directions of the estimate, not the 2 of this rank."""
    _two_ranks(monkeypatch, 0)
    with pytest.warns(RuntimeWarning, match="over the 3 directions"):
        result = hypergradient(BlackBox(lambda p: 1.0), {"a": torch.zeros(2, dtype=F64)},
                               ZeroOrderForwardGradient(num_directions=3))
    assert result.diagnostics["directions"].shape == (2, 2)


@pytest.mark.parametrize("build, error, fragment", [
    (lambda: ZeroOrderForwardGradient(scheme="backward"), ValueError, "scheme"),
    (lambda: ZeroOrderForwardGradient(num_directions=0), ValueError, "num_directions"),
    (lambda: neumann(alpha=0.0), ValueError, "Neumann alpha"),
    (lambda: CGSolve(tol=-1.0), ValueError, "CG tol"),
], ids=["zo-scheme", "zo-no-directions", "neumann-alpha-0", "cg-negative-tol"])
def test_estimator_options_refused(build, error, fragment):
    """An unknown finite-difference scheme, b = 0 directions, a Neumann
    α = 0 (a series of zeros) and a negative CG tol are refused when built."""
    with pytest.raises(error, match=fragment):
        build()
