"""Tests from a fourth mutation audit of the concrete equations (HJB, Black–Scholes–Barenblatt,
Burgers, the unit ball, Fokker–Planck): what the earlier audits left free — the Cole–Hopf
clamp at a horizon above 1, refusals at their edges, the Monte Carlo reference's dtype and its
unwritable cache, the Black–Scholes operator away from the sampled box, coefficient overrides
of the unit-ball solution and forcing, the hard ansatz's scale, defaults and laws of the
parameters. Every expected value is a closed form or an independent float64 computation; all
sizes are small."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import HJBRosenbrock, cole_hopf

F64 = torch.float64


def _square(z):
    return (z**2).sum(-1)


# -- Cole–Hopf: the float-rounding clamp scales with the horizon ---------------------------------
def test_cole_hopf_clamp_is_relative_to_a_horizon_above_one():
    """At T = 50 a t above T by 2e-7·T (1e-5, float32's rounding of such a T is of that
    order) is read as T, so u = g exactly; 1e-3·T above is refused."""
    horizon = 50.0
    x = torch.tensor([[0.4, -1.1, horizon * (1 + 2e-7)]], dtype=F64)
    u = cole_hopf(_square, x, horizon=horizon, samples=16, generator=make_generator(0, "w"))
    torch.testing.assert_close(u, _square(x[:, :2]), rtol=1e-12, atol=1e-12)
    late = x.clone()
    late[0, -1] = horizon * (1 + 1e-3)
    with pytest.raises(ValueError, match=r"t <= T = 50.0"):
        cole_hopf(_square, late, horizon=horizon, samples=16, generator=make_generator(0, "w"))


# -- refusals at their edges ----------------------------------------------------------------------
@pytest.mark.parametrize("dim", [3, 5])
def test_rosenbrock_disjoint_chain_refuses_every_odd_dim(dim):
    """The paper's chain pairs (x_{2i−1}, x_{2i}): an odd d (3 included) leaves a coordinate
    out; an even d is accepted with d/2 pairs."""
    with pytest.raises(ValueError, match=f"chain='disjoint' needs an even dim, got {dim}"):
        HJBRosenbrock(dim, chain="disjoint")
    eq = HJBRosenbrock(dim + 1, chain="disjoint")
    assert eq.coefficients["c1"].shape == ((dim + 1) // 2,)


def test_rosenbrock_needs_two_coordinates():
    """The chain Σ_{i<d} needs d ≥ 2: at d = 1 g would be the empty sum 0."""
    with pytest.raises(ValueError, match="dim must be an integer >= 2, got 1"):
        HJBRosenbrock(1)
    assert HJBRosenbrock(2).coefficients["c1"].shape == (1,)


# -- the Monte Carlo reference is returned in the points' dtype, computed or cached --------------
def test_rosenbrock_reference_comes_back_in_the_points_dtype(tmp_path, monkeypatch):
    """exact(float32 points) is float32 both when computed and when read back from the cache
    (one entry: the key hashes the points in float64), the float64 reference rounded; at
    t = T it is g."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(2, seed=5, reference_samples=16)
    x32 = eq.test_set(4, dtype=torch.float32)
    x32[0, -1] = eq.horizon
    computed = eq.exact(x32)
    cached = eq.exact(x32)
    reference = eq.exact(x32.double())
    assert len(list(tmp_path.glob("*.h5"))) == 1
    for got in (computed, cached):
        assert got.dtype == torch.float32 and got.shape == (4,)
        assert torch.equal(got, reference.float())
    assert reference.dtype == F64
    torch.testing.assert_close(reference[0], eq.terminal_value(x32[:1, :-1].double())[0], rtol=1e-12, atol=1e-12)


# -- Black–Scholes–Barenblatt's operator away from the sampled box x ∈ [0, 2]^d ------------------
def test_black_scholes_residual_at_negative_coordinates_is_the_pde():
    """R[u] = u_t + ½σ_B² Σ x_i² ∂_ii u − r(u − x·∇u) with x·∇u signed: at points with
    negative coordinates (outside the training box, e.g. observations or a slice), for a
    generic u through the hard ansatz, r = 0.07, σ_B = 0.5, T = 0.8."""
    from pinnlab.equations import BlackScholesBarenblatt
    from tests.test_equations_nets_third_audit import assert_black_scholes_residual_written_out

    rate, vol, horizon = 0.07, 0.5, 0.8
    eq = BlackScholesBarenblatt(3, rate=rate, volatility=vol, horizon=horizon)
    g = make_generator(3, "bs-negative")
    x = torch.cat([-2 * torch.rand(12, 3, generator=g, dtype=F64) + 0.5,
                   horizon * torch.rand(12, 1, generator=g, dtype=F64)], 1)
    assert bool((x[:, :3] < 0).any())
    assert_black_scholes_residual_written_out(eq, x, rate, vol)


# -- the unit ball: coefficient overrides reach u* and the forcing; the default radius law ------
def _two_body(x, c):
    """(1 − ‖x‖²)·Σ_{i<d} c_i sin(x_i + cos x_{i+1} + x_{i+1} cos x_i), term by term."""
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[1] - 1):
        a, b = x[:, i], x[:, i + 1]
        total = total + c[i] * torch.sin(a + torch.cos(b) + b * torch.cos(a))
    return (1 - (x**2).sum(1)) * total


def test_unit_ball_exact_solution_and_forcing_follow_a_coefficient_override():
    """At an override ĉ (an inverse problem's estimate) u* is the two-body solution with ĉ,
    and the Allen–Cahn residual of that u* with the override is 0: the forcing
    f = Δu* + u* − u*³ is computed with ĉ too, not with the instance's c."""
    from pinnlab.equations import AllenCahnTwoBody
    from pinnlab.estimators import Autograd
    from pinnlab.nets import Pointwise

    eq = AllenCahnTwoBody(3, seed=2, constraint="soft")
    c_hat = torch.tensor([1.5, -2.0], dtype=F64)
    assert not torch.allclose(eq.coefficients["c"], c_hat)
    x = eq.sample_collocation(10, generator=make_generator(5, "ball"), dtype=F64)
    torch.testing.assert_close(eq.exact(x, {"c": c_hat}), _two_body(x, c_hat), rtol=1e-13, atol=1e-13)
    u_hat = Pointwise(lambda z: _two_body(z, c_hat))
    residual = eq.residual(x, lambda q: Autograd().estimate(u_hat, x, q), coefficients={"c": c_hat})
    assert float(residual.abs().max()) < 1e-10


def test_unit_ball_radius_defaults_to_uniform():
    """Without ``radius`` the sampler draws r ~ U(0, 1) (the [RS] experiments), not U^{1/d}."""
    from pinnlab.equations import PoissonThreeBody

    d, n = 4, 6
    eq = PoissonThreeBody(d)
    assert eq.radius == "uniform" and eq.parameters() == {"constraint": "hard", "radius": "uniform"}
    x = eq.sample_collocation(n, generator=make_generator(6, "ball"), dtype=F64)
    g = make_generator(6, "ball")
    z = torch.randn(n, d, generator=g, dtype=F64)
    r = torch.rand(n, 1, generator=g, dtype=F64)
    torch.testing.assert_close(x, r * z / z.norm(dim=1, keepdim=True), rtol=1e-15, atol=1e-15)



# -- the hard ansatz's scale A, which vanishes at t = 0, in closed form ---------------------------
def test_burgers_ansatz_scale_is_the_time_itself():
    """u = t·u_σ + B for both Burgers problems (A = t, ∂_t A = 1): a multiple of t also
    vanishes at t = 0 and passes every consistency check, but scales the network's output."""
    from pinnlab.equations import Burgers, BurgersAffine

    for eq in (Burgers(3, viscosity=0.3), BurgersAffine(3)):
        x = eq.sample_collocation(8, generator=make_generator(7, eq.name), dtype=F64)
        scale = eq.ansatz_jets(x)[0]
        torch.testing.assert_close(scale.value, x[:, -1], rtol=0, atol=0)
        expected = torch.zeros_like(x)
        expected[:, -1] = 1
        torch.testing.assert_close(scale.gradient, expected, rtol=0, atol=0)
        u_sigma = torch.linspace(-1, 2, 8, dtype=F64)
        torch.testing.assert_close(eq.solution(x, u_sigma), x[:, -1] * u_sigma + eq.ansatz_jets(x)[1].value,
                                   rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("radius", ["cube", "shell", "Uniform", ""])
def test_unit_ball_refuses_a_radius_law_it_does_not_know(radius):
    from pinnlab.equations import PoissonTwoBody

    with pytest.raises(ValueError, match=f"radius must be 'uniform' or 'volume', got {radius!r}"):
        PoissonTwoBody(3, radius=radius)


# -- the Rosenbrock instance: its coefficients' law, an unwritable cache ------------------------
def test_rosenbrock_coefficients_are_uniform_on_the_unit_interval():
    """c₁, c₂ ~ U[0, 1] from the problem seed (the official code's np.random.rand): in
    [0, 1), mean 1/2 and variance 1/12 within 5 standard errors over d − 1 = 4000 entries."""
    c = HJBRosenbrock(4001, seed=0).coefficients
    values = torch.cat([c["c1"], c["c2"]])
    n = values.numel()
    assert float(values.min()) >= 0 and float(values.max()) < 1
    assert abs(float(values.mean()) - 0.5) <= 5 * (1 / 12 / n) ** 0.5
    assert abs(float(((values - 0.5) ** 2).mean()) - 1 / 12) <= 5 * (1 / 180 / n) ** 0.5


def test_rosenbrock_reference_with_an_unwritable_cache_warns_and_is_returned(tmp_path, monkeypatch):
    """PINNLAB_CACHE naming a file: the reference cannot be cached; that costs a warning
    (and a recomputation next time), not the run: the value is returned (g at t = T)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("PINNLAB_CACHE", str(blocker / "cache"))
    eq = HJBRosenbrock(3, seed=1, reference_samples=8)
    x = eq.sample_boundary(3, generator=make_generator(9, "rb"), dtype=F64)
    with pytest.warns(UserWarning, match="cannot cache the reference"):
        u = eq.exact(x)
    torch.testing.assert_close(u, eq.terminal_value(x[:, :-1]), rtol=1e-12, atol=1e-12)
