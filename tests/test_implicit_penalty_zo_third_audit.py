"""Third mutation audit of the implicit, penalty and zeroth-order hypergradients (float64).

Each test pins a detail the earlier suites left open, against closed forms on small
quadratic bilevel problems.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pinnlab.bilevel import cg, hypergradient, neumann
from pinnlab.bilevel.implicit import CGSolve, ImplicitDiff, NeumannSolve

from .bilevel.problems import F64
from .bilevel.test_implicit_details import _quadratic


def _quiet(problem, phi, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return hypergradient(problem, phi, method)


def test_neumann_growth_threshold_is_sqrt_eps_relative():
    """H = [−1e-8], α = 1e-2: every term grows by the factor 1 + 1e-10, below the √ε ≈ 1.5e-8
    rounding allowance, so nothing counts as growth (silent) and last_term = (1 + 1e-10)^K.
    With H = [−1e-4] the factor 1 + 1e-6 exceeds it: all K terms count. An allowance of ε
    instead of √ε counts the first case too."""
    outer = lambda theta, phi: (theta["w"] - 1.0).sum()  # noqa: E731  (d = 1)
    problem, phi, _ = _quadratic(torch.tensor([[-1e-8]], dtype=F64), outer)
    result = _quiet(problem, phi, neumann(iterations=7, alpha=1e-2))
    assert result.diagnostics["growing_terms"] == 0
    assert abs(result.diagnostics["last_term"] - (1 + 1e-10) ** 7) < 1e-14
    problem, phi, _ = _quadratic(torch.tensor([[-1e-4]], dtype=F64), outer)
    with pytest.warns(RuntimeWarning, match="grow"):
        result = hypergradient(problem, phi, neumann(iterations=7, alpha=1e-2))
    assert result.diagnostics["growing_terms"] == 7


def test_neumann_defaults_sum_21_terms_at_alpha_one_hundredth():
    """neumann() is K = 20, α = 1e-2: for H = 2I, q = α Σ_{k=0}^{20} (1 − 2α)^k d
    = d(1 − 0.98^21)/2 and the hypergradient is Bᵀq (Y = −B): another K or α gives
    another partial sum."""
    d = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    problem, phi, b_mat = _quadratic(2.0 * torch.eye(3, dtype=F64), lambda theta, phi: d @ theta["w"])
    expected = b_mat.T @ d * (1 - 0.98 ** 21) / 2
    for method in (neumann(), ImplicitDiff(NeumannSolve()), ImplicitDiff()):
        result = _quiet(problem, phi, method)
        assert result.diagnostics["hvps"] == 20
        torch.testing.assert_close(result.grad["a"], expected, rtol=1e-13, atol=0)


def test_cg_defaults_are_20_iterations_and_tol_1e_12():
    """cg(): K = 20, λ = 0, tol = 1e-12. H = diag(1 … 1000) (30 distinct eigenvalues,
    κ = 1000) is far from solved in 20 CG steps, so exactly 20 HVPs; with ‖d‖ = 1e-9 (above
    1e-12, below a tol of 1e-6) CG still iterates and solves the 2×2 system H = diag(1, 3)
    exactly in 2 steps: Bᵀ H⁻¹ d."""
    hessian = torch.diag(torch.linspace(1.0, 1000.0, 30, dtype=F64))
    problem, phi, _ = _quadratic(hessian, lambda theta, phi: theta["w"].sum())
    for method in (cg(), ImplicitDiff(CGSolve())):
        assert _quiet(problem, phi, method).diagnostics["hvps"] == 20
    d = torch.tensor([1e-9, -2e-9], dtype=F64)
    hessian = torch.diag(torch.tensor([1.0, 3.0], dtype=F64))
    problem, phi, b_mat = _quadratic(hessian, lambda theta, phi: d @ theta["w"])
    for method in (cg(), ImplicitDiff(CGSolve())):
        result = _quiet(problem, phi, method)
        assert result.diagnostics["hvps"] == 2
        torch.testing.assert_close(result.grad["a"], b_mat.T @ torch.linalg.solve(hessian, d), rtol=1e-12, atol=0)


def test_darts_default_epsilon_is_one_hundredth_of_the_normalised_step():
    """g = ½w² − a·sin w (∇_φ g = −sin w, not linear in w, so the central difference
    depends on ε), f = ½(w − 1)², one SGD step of 1e-3 from w = 0: θ_T = 1e-3·a. DARTS(ξ)
    with the default ε = 1e-2: w' = θ_T − ξ(θ_T − a cos θ_T), v = w' − 1, e = 1e-2/|v| and
    ĝ = −ξ(sin(θ_T − e v) − sin(θ_T + e v))/(2e) exactly; ε = 1e-3 differs by ~1e-6 relative."""
    import math

    from pinnlab.bilevel import DARTS, from_inner_loss
    from pinnlab.solvers import SGD

    def inner(theta, phi, t):
        return 0.5 * (theta["w"] ** 2).sum() - (phi["a"] * torch.sin(theta["w"])).sum()

    def outer(theta, phi):
        return 0.5 * ((theta["w"] - 1.0) ** 2).sum()

    a, xi = 2.0, 0.4
    problem = from_inner_loss(inner, outer, SGD(lr=1e-3), {"w": torch.zeros(1, dtype=F64)}, horizon=1)
    result = _quiet(problem, {"a": torch.tensor([a], dtype=F64)}, DARTS(xi=xi))
    w = 1e-3 * a
    v = w - xi * (w - a * math.cos(w)) - 1.0
    e = 1e-2 / abs(v)
    expected = -xi * (math.sin(w - e * v) - math.sin(w + e * v)) / (2 * e)
    assert abs(float(result.grad["a"]) - expected) < 1e-12 * abs(expected)


def test_penalty_and_f2sa_defaults_against_hand_written_descent():
    """Penalty(): γ₀ = 1, growth 1.05, 20 steps of lr/(1 + γ) = 0.05 on P = f + ½γ‖Aθ − Ba‖²;
    F2SA(): λ₀ = 1 growing by 1, 20 steps of 0.1 on z (g) and y (g + f/λ); both on the
    problem of test_outer_algorithm_steps (f = ½‖θ − Ma‖²), φ-gradients as there."""
    from pinnlab.bilevel import F2SA, Penalty

    from .bilevel.test_outer_algorithm_steps import PHI, THETA0, A, B, M, _problem

    a, problem = PHI["a"], _problem()
    method = Penalty()
    grad, state, info = method.step(problem, PHI, method.init(problem, PHI), outer_step=0, start=0)
    w = THETA0
    for _ in range(20):
        w = w - 0.05 * ((w - M @ a) + A @ (A @ w - B @ a))
    torch.testing.assert_close(state["theta"]["w"], w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad["a"], -M.T @ (w - M @ a) - B.T @ (A @ w - B @ a), rtol=1e-12, atol=1e-14)
    assert info == {"gamma": 1.0, "inner_step_evaluations": 20} and state["gamma"] == pytest.approx(1.05, rel=1e-15)

    method = F2SA()
    grad, state, info = method.step(problem, PHI, method.init(problem, PHI), outer_step=0, start=0)
    y = z = THETA0
    for _ in range(20):
        z = z - 0.1 * (A @ z - B @ a)
        y = y - 0.1 * ((A @ y - B @ a) + (y - M @ a))
    torch.testing.assert_close(state["z"]["w"], z, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state["y"]["w"], y, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad["a"], -M.T @ (y - M @ a) - B.T @ y + B.T @ z, rtol=1e-12, atol=1e-14)
    assert info == {"lambda": 1.0, "inner_step_evaluations": 40} and state["lam"] == 2.0


def test_zo_defaults_central_differences_of_mu_1e_3_over_8_rademacher_directions():
    """ZeroOrderForwardGradient(): b = 8 Rademacher directions, central differences, μ = 1e-3.
    For the black box h(φ) = Σφ³ the central difference along v ∈ {±1}ⁿ is exactly
    v·3φ² + μ²Σv³ (a forward one adds 3μΣφv², another μ changes the μ² term), and the
    estimate is the mean of w_i v_i over the 8 directions; 17 solves."""
    from pinnlab.bilevel import BlackBox, ZeroOrderForwardGradient

    phi = {"a": torch.tensor([0.7, -1.3, 0.4], dtype=F64)}
    result = _quiet(BlackBox(lambda p: float((p["a"] ** 3).sum())), phi, ZeroOrderForwardGradient())
    v = result.diagnostics["directions"]
    assert v.shape == (8, 3) and bool((v.abs() == 1).all())
    expected_w = v @ (3 * phi["a"] ** 2) + 1e-6 * (v ** 3).sum(1)
    torch.testing.assert_close(result.diagnostics["directional"], expected_w, rtol=0, atol=1e-9)
    torch.testing.assert_close(result.grad["a"], (expected_w[:, None] * v).mean(0), rtol=0, atol=1e-9)
    assert result.diagnostics["inner_solves"] == 17


def test_zo_varies_except_for_one_rademacher_or_coordinate_central_direction():
    """A central difference along −v is the one along v: for N = 1 (v = ±1 or ±e₁) the estimate
    is the same for every draw, for N ≥ 2 it is not; Gaussian v and forward differences vary."""
    from pinnlab.bilevel import ZeroOrderForwardGradient as ZO

    assert not ZO().varies(1) and not ZO(kind="coordinate").varies(1)
    assert ZO().varies(2) and ZO(kind="coordinate").varies(2)
    assert ZO(kind="gaussian").varies(1) and ZO(scheme="forward").varies(1)


def test_reparameterize_maps_a_phi_dependent_theta0_and_learning_rate():
    """With φ = {s = e^u} (Log), the reparameterised problem's θ_0(u) is θ_0(e^u) and its step
    size (the α/ξ of Hessian-free and DARTS) is the rate at e^u: s = 2 gives θ_0 = 2·1 and
    lr = 0.1·s = 0.2, not the maps applied to u = log 2."""
    import math

    from pinnlab.bilevel import from_inner_loss
    from pinnlab.bilevel.parameterization import Log, reparameterize
    from pinnlab.solvers import SGD

    def inner(theta, phi, t):
        return 0.5 * (theta["w"] ** 2).sum() * phi["s"].sum()

    problem = from_inner_loss(inner, lambda theta, phi: theta["w"].sum(), SGD(lr=0.1),
                              lambda phi: {"w": phi["s"] * torch.ones(2, dtype=F64)}, horizon=1,
                              lr=lambda phi: 0.1 * phi["s"].sum())
    u = {"s": torch.tensor([math.log(2.0)], dtype=F64)}
    reparameterized = reparameterize(problem, {"s": Log()})
    torch.testing.assert_close(reparameterized.initial(u)[0]["w"], torch.full((2,), 2.0, dtype=F64),
                               rtol=1e-15, atol=0)
    assert abs(reparameterized.step_size(u, 0) - 0.2) < 1e-15



def test_log_underflowing_to_zero_is_not_usable():
    """Log: exp(−800) = 0 in float64 is the degenerate limit (inverse refuses it), so not usable;
    a tiny positive value and a finite Identity value are; inf is not."""
    from pinnlab.bilevel.parameterization import Identity, Log

    assert not Log().usable(Log().forward(torch.tensor([-800.0, 0.0], dtype=F64)))
    assert Log().usable(Log().forward(torch.tensor([-700.0, 0.0], dtype=F64)))
    assert Identity().usable(torch.tensor([0.0, -3.0])) and not Identity().usable(torch.tensor([float("inf")]))


def test_hessian_free_closed_form_and_its_inner_step_count():
    """HessianFree(α): c − α dᵀY = Bᵀ(α d) for g = ½θᵀHθ − θᵀBa (Y = −B), whatever H, with
    one unroll of T = 1 inner step reported; DARTS(ξ) uses the given ξ, not the inner lr:
    with H = 2I and f = dᵀθ (linear, so ∇f(w') = d), ĝ = ξ·Bᵀd exactly."""
    from pinnlab.bilevel import DARTS, HessianFree

    d = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    hessian = torch.diag(torch.tensor([2.0, 3.0, 5.0], dtype=F64))
    problem, phi, b_mat = _quadratic(hessian, lambda theta, phi: d @ theta["w"])
    result = _quiet(problem, phi, HessianFree(alpha=0.25))
    assert result.diagnostics["inner_step_evaluations"] == 1
    torch.testing.assert_close(result.grad["a"], 0.25 * b_mat.T @ d, rtol=1e-14, atol=0)
    result = _quiet(problem, phi, DARTS(xi=0.25))
    torch.testing.assert_close(result.grad["a"], 0.25 * b_mat.T @ d, rtol=1e-9, atol=0)


def test_divergence_watch_is_relative_to_the_first_gradient_not_absolute():
    """F²SA from θ_0 = 1e8·1 on g = ½‖θ‖² − θ·a, f = ½‖θ‖²: the gradients start near 1e8 and
    shrink (stable steps, no divergence), so no LowerLevelDivergence: z_k = a + 0.9^k(θ_0 − a)."""
    from pinnlab.bilevel import F2SA, from_inner_loss
    from pinnlab.solvers import SGD

    def inner(theta, phi, t):
        return 0.5 * (theta["w"] ** 2).sum() - (theta["w"] * phi["a"]).sum()

    theta0 = torch.full((2,), 1e8, dtype=F64)
    problem = from_inner_loss(inner, lambda theta, phi: 0.5 * (theta["w"] ** 2).sum(), SGD(lr=0.1),
                              {"w": theta0}, horizon=1)
    phi = {"a": torch.tensor([1.0, -1.0], dtype=F64)}
    method = F2SA(inner_iters=3, lr_y=0.1, lr_z=0.1)
    _, state, _ = method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
    torch.testing.assert_close(state["z"]["w"], phi["a"] + 0.9 ** 3 * (theta0 - phi["a"]), rtol=1e-14, atol=0)


def test_logit_saturated_onto_its_bound_is_usable_but_no_initial_value():
    """forward(40) = 1.0 exactly in float64 (the sigmoid saturates). A tuned mix or bounded
    coefficient at its bound is a value of the documented range [low, high] (a mix of 1 is
    the unbiased loss), so the driver goes on with it, unlike exp(u) underflowing to a log
    weight of 0; only as an initial value is it refused, its u being infinite."""
    from pinnlab.bilevel.parameterization import Logit

    value = Logit(0.0, 1.0).forward(torch.tensor([40.0], dtype=F64))
    assert float(value) == 1.0 and Logit(0.0, 1.0).usable(value)
    with pytest.raises(ValueError, match="must lie in"):
        Logit(0.0, 1.0).inverse(value)


def test_implicit_methods_take_zero_second_derivatives_where_grad_g_is_constant():
    """θ = (w, b), g = ½wᵀHw − wᵀBa + 3·Σb: ∇_b g = 3 is constant (no graph), so its rows of H
    and Y are 0 and are skipped, not differentiated (which autograd refuses). With f = dᵀw + eᵀb,
    Hessian-free gives α Bᵀd; CG with damping λ = 1 solves (H + λI)q = (d, e): Bᵀ(H + I)⁻¹d."""
    from pinnlab.bilevel import HessianFree, from_inner_loss
    from pinnlab.solvers import SGD

    hessian = torch.diag(torch.tensor([2.0, 3.0], dtype=F64))
    b_mat = torch.tensor([[1.0], [-1.0]], dtype=F64)
    d, e = torch.tensor([1.0, 0.5], dtype=F64), torch.tensor([2.0], dtype=F64)

    def inner(theta, phi, t):
        w = theta["w"]
        return 0.5 * w @ hessian @ w - w @ b_mat @ phi["a"] + 3.0 * theta["b"].sum()

    problem = from_inner_loss(inner, lambda theta, phi: d @ theta["w"] + e @ theta["b"], SGD(lr=1e-3),
                              {"w": torch.zeros(2, dtype=F64), "b": torch.zeros(1, dtype=F64)}, horizon=1)
    phi = {"a": torch.tensor([0.3], dtype=F64)}
    result = _quiet(problem, phi, HessianFree(alpha=0.5))
    torch.testing.assert_close(result.grad["a"], 0.5 * b_mat.T @ d, rtol=1e-14, atol=0)
    result = _quiet(problem, phi, cg(iterations=10, damping=1.0))
    expected = b_mat.T @ torch.linalg.solve(hessian + torch.eye(2, dtype=F64), d)
    torch.testing.assert_close(result.grad["a"], expected, rtol=1e-12, atol=0)
