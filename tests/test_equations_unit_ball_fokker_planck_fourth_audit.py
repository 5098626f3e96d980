"""Tests from a fourth mutation audit of the unit-ball and Fokker–Planck equations: what the
earlier audits left free — the Fokker–Planck exact solution under a drift override, the
scales of both hard-constraint ansätze (consistent jets still pass the consistency checks),
the published dimensions, the isotropic drift's dtype and an overridden drift that carries a
graph. Every expected value is a hand computation in float64; all sizes are small."""

from __future__ import annotations

import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import FokkerPlanckAniso, FokkerPlanckIso, PoissonTwoBody, SineGordonThreeBody

F64 = torch.float64


def test_fokker_planck_exact_solution_follows_a_drift_override():
    """u(x, t) = ‖x − μ̂t‖² + d·t with the overridden μ̂, not the instance's μ: at
    x = (1, −2), t = 0.5, μ̂ = (3, −1): (1 − 1.5)² + (−2 + 0.5)² + 2·0.5 = 3.5."""
    eq = FokkerPlanckAniso(2, seed=0)
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)
    mu = torch.tensor([3.0, -1.0], dtype=F64)
    torch.testing.assert_close(eq.exact(x, {"mu": mu}), torch.tensor([3.5], dtype=F64))
    own = eq.coefficients["mu"]
    expected = ((x[0, :2] - 0.5 * own) ** 2).sum() + 1.0
    torch.testing.assert_close(eq.exact(x), expected.reshape(1))


def test_fokker_planck_hard_ansatz_is_d_plus_one_times_t_plus_the_squared_norm():
    """u = (d + 1)·t·u_σ + ‖x‖² (the official code's ansatz): scale (d + 1)t with gradient
    (0, …, 0, d + 1), shift ‖x‖² with gradient (2x, 0) and Hessian diagonal (2, …, 2, 0)."""
    eq = FokkerPlanckIso(3, seed=0)
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -3.0, 1.0]], dtype=F64)
    scale, shift = eq.ansatz(x, eq.coefficients_like(x))
    torch.testing.assert_close(scale.value, torch.tensor([1.0, 4.0], dtype=F64))
    torch.testing.assert_close(scale.gradient, torch.tensor([[0.0, 0, 0, 4]] * 2, dtype=F64))
    torch.testing.assert_close(shift.value, torch.tensor([5.25, 10.0], dtype=F64))
    torch.testing.assert_close(shift.gradient, torch.tensor([[1.0, -2, 4, 0], [2.0, 0, -6, 0]], dtype=F64))
    torch.testing.assert_close(shift.hessian_diagonal, torch.tensor([[2.0, 2, 2, 0]] * 2, dtype=F64))


def test_unit_ball_hard_ansatz_is_one_minus_the_squared_norm():
    """u = (1 − ‖x‖²)·u_σ: scale 1 − ‖x‖² with gradient −2x and Hessian diagonal −2, and no
    shift (u = 0 on the sphere), for the two- and three-body families alike."""
    x = torch.tensor([[0.5, -0.25, 0.1], [0.0, 0.6, -0.8]], dtype=F64)
    for eq in (PoissonTwoBody(3, seed=1), SineGordonThreeBody(3, seed=1)):
        scale, shift = eq.ansatz(x, eq.coefficients_like(x))
        torch.testing.assert_close(scale.value, torch.tensor([1 - 0.3225, 0.0], dtype=F64))
        torch.testing.assert_close(scale.gradient, -2 * x)
        torch.testing.assert_close(scale.hessian_diagonal, torch.full_like(x, -2.0))
        assert shift.value == 0 and shift.gradient is None and shift.hessian_diagonal is None


def test_fokker_planck_published_dimensions():
    """[RS] Tables 1 and 2: isotropic d ∈ {10, 100, 1000, 10000}; anisotropic also 250, 500."""
    assert FokkerPlanckIso.published_dims == (10, 100, 1000, 10000)
    assert FokkerPlanckAniso.published_dims == (10, 100, 250, 500, 1000, 10000)


def test_isotropic_drift_is_float64_ones():
    """The coefficients are float64 (as every drawn coefficient): μ = (1, …, 1)."""
    mu = FokkerPlanckIso(4, seed=3).coefficients["mu"]
    assert mu.dtype == F64
    torch.testing.assert_close(mu, torch.ones(4, dtype=F64))


def test_fokker_planck_collocation_takes_an_overridden_drift_with_a_graph_as_a_value():
    """An estimate μ̂ that requires grad (an inverse problem's parameter) is used as a value:
    the points are those of the detached μ̂ and carry no graph."""
    eq = FokkerPlanckAniso(3, seed=0)
    mu = torch.tensor([0.5, -2.0, 3.0], dtype=F64, requires_grad=True)
    points = eq.sample_collocation(6, generator=make_generator(2, "fp"), dtype=F64, coefficients={"mu": mu})
    ref = eq.sample_collocation(6, generator=make_generator(2, "fp"), dtype=F64,
                                coefficients={"mu": mu.detach().clone()})
    assert not points.requires_grad
    torch.testing.assert_close(points, ref, rtol=0, atol=0)
