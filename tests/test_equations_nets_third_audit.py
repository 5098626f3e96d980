"""Tests from a third mutation audit of the equations and the networks: what the suite left
free at coefficients other than the defaults (where T = 1, 2ν = 1 or r = 0.05 hide a
slip), the Rosenbrock reference's disjoint chain and cache key, refusals at their edges,
the MLP's forward pass and initialisation order, and the feature cache's invalidation.
Every expected value is a closed form or an independent float64 computation."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import (
    BlackScholesBarenblatt,
    Burgers,
    FokkerPlanckAniso,
    HJBLin,
    HJBQuadratic,
    HJBRosenbrock,
    cole_hopf,
)
from pinnlab.estimators import Autograd, Gradient, HessianDiagonal
from pinnlab.nets import MLP, Pointwise
from tests.equations.test_contract import _derivatives, generic_function  # (autograd: fn(x), ∇fn, diag ∇²fn)

F64 = torch.float64


def _assert_jets_match_autograd(eq, x):
    """Both ansatz jets (value, gradient, spatial Hessian diagonal) against autograd."""
    for index in (0, 1):
        def value(z, index=index):
            v = eq.ansatz_jets(z)[index].value
            return v if isinstance(v, torch.Tensor) else torch.full((z.shape[0],), float(v), dtype=z.dtype)

        jet = eq.ansatz_jets(x)[index]
        grad, hess = Autograd().estimate(Pointwise(value), x, [Gradient(), HessianDiagonal()])
        expected_grad = torch.zeros_like(x) if jet.gradient is None else jet.gradient
        expected_hess = torch.zeros_like(x) if jet.hessian_diagonal is None else jet.hessian_diagonal
        torch.testing.assert_close(expected_grad, grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(expected_hess[:, : eq.dim], hess[:, : eq.dim], rtol=1e-10, atol=1e-10)


# -- Black–Scholes–Barenblatt at r, σ_B, T other than FBSNN's ---------------------------------
RATE, VOL, HORIZON = 0.11, 0.3, 0.6


def test_black_scholes_exact_solution_at_other_coefficients():
    """u* = exp((r + σ_B²)(T − t))·‖x‖², with the instance's r, σ_B and T."""
    eq = BlackScholesBarenblatt(3, rate=RATE, volatility=VOL, horizon=HORIZON)
    x = eq.sample_collocation(16, generator=make_generator(0, "bs"), dtype=F64)
    expected = torch.exp((RATE + VOL**2) * (HORIZON - x[:, -1])) * (x[:, :-1] ** 2).sum(-1)
    torch.testing.assert_close(eq.exact(x), expected, rtol=1e-14, atol=0)


def test_black_scholes_ansatz_vanishes_at_its_own_horizon():
    """u = (T − t)·u_σ + ‖x‖²: A = T − t is 0 on the terminal slice t = T (not t = 1)."""
    eq = BlackScholesBarenblatt(3, rate=RATE, volatility=VOL, horizon=HORIZON)
    x = eq.sample_collocation(16, generator=make_generator(1, "bs"), dtype=F64)
    scale, shift = eq.ansatz_jets(x)
    torch.testing.assert_close(scale.value, HORIZON - x[:, -1], rtol=0, atol=1e-15)
    torch.testing.assert_close(shift.value, (x[:, :-1] ** 2).sum(-1), rtol=0, atol=1e-15)
    _assert_jets_match_autograd(eq, x)


@pytest.mark.parametrize("constraint", ["soft", "hard"])
def test_black_scholes_residual_at_other_coefficients_is_the_pde(constraint):
    """R[u] = u_t + ½σ_B² Σ x_i² ∂_ii u − r(u − x·∇u) with r = 0.11, σ_B = 0.3, T = 0.6
    written out, for a generic u (autograd, float64)."""
    eq = BlackScholesBarenblatt(3, rate=RATE, volatility=VOL, horizon=HORIZON, constraint=constraint)
    x = eq.sample_collocation(24, generator=make_generator(2, "bs"), dtype=F64)
    assert_black_scholes_residual_written_out(eq, x, RATE, VOL)


def assert_black_scholes_residual_written_out(eq, x, rate, vol):
    """eq.residual at x, for a generic u (autograd, float64), equals
    u_t + ½σ_B² Σ x_i² ∂_ii u − r(u − x·∇u) computed here."""
    v, u = generic_function(eq)
    value, grad, hess = _derivatives(u, x)
    space, d = x[:, :-1], x.shape[1] - 1
    expected = (grad[:, d] + 0.5 * vol**2 * (space**2 * hess[:, :d]).sum(1)
                - rate * (value - (space * grad[:, :d]).sum(1)))
    got = eq.residual(x, lambda q: Autograd().estimate(Pointwise(v), x, q))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_black_scholes_refusal_counts_the_horizon():
    """The peak 4d·exp((r + σ_B²)T) at T = 2: a rate whose peak fits at T = 1 but not at
    T = 2 is refused at T = 2, and the largest rate that fits at T = 2 is accepted."""
    dim, vol, horizon = 10, 0.4, 2.0
    log_max = math.log(torch.finfo(F64).max)
    edge = (log_max - math.log(4 * dim)) / horizon - vol * vol  # the rate whose peak is float64's max
    BlackScholesBarenblatt(dim, rate=edge - 1e-6, volatility=vol, horizon=horizon)
    with pytest.raises(ValueError, match="beyond float64"):
        BlackScholesBarenblatt(dim, rate=edge + 1e-6, volatility=vol, horizon=horizon)
    BlackScholesBarenblatt(dim, rate=edge + 1e-6, volatility=vol, horizon=1.0)  # fits at T = 1


def test_black_scholes_parameters_are_the_constructor_arguments():
    eq = BlackScholesBarenblatt(3, rate=RATE, volatility=VOL, horizon=HORIZON)
    assert eq.parameters() == {"constraint": "hard", "rate": RATE, "volatility": VOL, "horizon": HORIZON}


# -- Burgers at a viscosity other than 0.5 (2ν = 1 = 4ν² there) -------------------------------
@pytest.mark.parametrize("nu", [0.3, 1.7])
def test_burgers_ansatz_jets_at_another_viscosity(nu):
    """B = 1/(1 + exp(Σx_i/(2ν))): its slope −b(1 − b)/(2ν) and curvature
    (1 − 2b)b(1 − b)/(4ν²) against autograd at ν ≠ 0.5."""
    eq = Burgers(3, viscosity=nu)
    x = eq.sample_collocation(16, generator=make_generator(3, "bu"), dtype=F64)
    _assert_jets_match_autograd(eq, x)


def test_burgers_refuses_a_viscosity_that_is_not_positive():
    for nu in (0.0, -0.5, math.nan):
        with pytest.raises(ValueError, match="viscosity must be a finite number > 0"):
            Burgers(3, viscosity=nu)
    assert Burgers(3, viscosity=1e-3).parameters() == {"constraint": "hard", "viscosity": 1e-3}


# -- HJB at a horizon other than 1 ---------------------------------------------------------------
def test_hjb_ansatz_scale_vanishes_at_its_own_horizon():
    """A = d·(T − t) for the quadratic HJB and T − t for HJB-LIN, at T = 0.5."""
    quad, lin = HJBQuadratic(3, horizon=0.5), HJBLin(3, horizon=0.5)
    x = quad.sample_collocation(12, generator=make_generator(4, "h"), dtype=F64)
    torch.testing.assert_close(quad.ansatz_jets(x)[0].value, 3 * (0.5 - x[:, -1]), rtol=0, atol=1e-15)
    torch.testing.assert_close(lin.ansatz_jets(x)[0].value, 0.5 - x[:, -1], rtol=0, atol=1e-15)
    for eq in (quad, lin):
        _assert_jets_match_autograd(eq, x)


def test_hjb_lin_exact_solution_at_another_horizon():
    """u* = Σx_i + T − t, and it solves the PDE through the hard ansatz at T = 0.5."""
    eq = HJBLin(3, horizon=0.5)
    x = eq.sample_collocation(12, generator=make_generator(5, "h"), dtype=F64)
    torch.testing.assert_close(eq.exact(x), x[:, :3].sum(1) + 0.5 - x[:, -1], rtol=0, atol=1e-15)
    scale, shift = eq.ansatz_jets(x)
    keep = scale.value.abs() > 0.05
    x = x[keep]

    def inner(z):
        a, b = eq.ansatz_jets(z)
        return (eq.exact(z) - b.value) / a.value

    residual = eq.residual(x, lambda q: Autograd().estimate(Pointwise(inner), x, q))
    assert float(residual.abs().max()) < 1e-9


@pytest.mark.parametrize("cls", [HJBQuadratic, HJBLin])
def test_hjb_refuses_a_horizon_that_is_not_positive(cls):
    for horizon in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="horizon must be a finite number > 0"):
            cls(3, horizon=horizon)


# -- Fokker–Planck's exact solution at an overridden drift --------------------------------------
def test_fokker_planck_exact_solution_follows_a_drift_override():
    """u = ‖x − μ̂t‖² + d·t at the override μ̂ (an inverse problem's estimate), not at μ."""
    eq = FokkerPlanckAniso(3, seed=1)
    mu_hat = torch.tensor([0.5, -2.0, 3.0], dtype=F64)
    x = eq.sample_collocation(10, generator=make_generator(6, "fp"), dtype=F64)
    t = x[:, -1:]
    expected = ((x[:, :3] - mu_hat * t) ** 2).sum(1) + 3 * t[:, 0]
    torch.testing.assert_close(eq.exact(x, coefficients={"mu": mu_hat}), expected, rtol=1e-14, atol=1e-14)


# -- the Rosenbrock terminal cost on the paper's disjoint chain, and its reference's cache ------
def _disjoint_g(x, c1, c2):
    """g = Σ_i c₁ᵢ(x_{2i−1} − x_{2i})² + c₂ᵢ x_{2i}² written pair by pair (one-based pairs)."""
    total = torch.zeros(x.shape[0], dtype=F64)
    for i in range(x.shape[1] // 2):
        a, b = x[:, 2 * i], x[:, 2 * i + 1]
        total = total + c1[i] * (a - b) ** 2 + c2[i] * b**2
    return total


def test_rosenbrock_disjoint_chain_terminal_cost_and_its_derivatives():
    """d = 6: three pairs (x₁, x₂), (x₃, x₄), (x₅, x₆), so three c₁ and three c₂; g, ∇g and
    diag ∇²g (2c₁ on x_{2i−1}, 2c₁ + 2c₂ on x_{2i}) against the pairwise sum and autograd."""
    eq = HJBRosenbrock(6, seed=1, chain="disjoint")
    c1, c2 = eq.coefficients["c1"], eq.coefficients["c2"]
    assert c1.shape == (3,) and c2.shape == (3,)
    x = torch.randn(5, 6, generator=make_generator(7, "rb"), dtype=F64)
    g, grad, hess = eq.terminal(x, eq.coefficients)
    torch.testing.assert_close(g, _disjoint_g(x, c1, c2), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(eq.terminal_value(x), _disjoint_g(x, c1, c2), rtol=1e-13, atol=1e-13)
    auto_grad, auto_hess = Autograd().estimate(Pointwise(lambda z: _disjoint_g(z, c1, c2)), x,
                                               [Gradient(), HessianDiagonal()])
    torch.testing.assert_close(grad, auto_grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hess, auto_hess, rtol=1e-12, atol=1e-12)
    expected_hess = torch.stack([2 * c1, 2 * c1 + 2 * c2], dim=-1).reshape(6)
    torch.testing.assert_close(hess, expected_hess.expand(5, 6), rtol=1e-14, atol=1e-14)


def _terminal_points(eq, n=6):
    x = eq.sample_boundary(n, generator=make_generator(8, "rb"), dtype=F64)  # t = T: u* = g exactly
    assert bool((x[:, -1] == eq.horizon).all())
    return x


@pytest.mark.parametrize("other", [{"chain": "disjoint"}, {"seed": 3}], ids=["chain", "seed"])
def test_rosenbrock_reference_cache_tells_instances_apart(other, tmp_path, monkeypatch):
    """Two instances that differ only in chain or problem seed, at the same points: each
    reference is its own g at t = T, not the other's cached entry."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    first = HJBRosenbrock(4, seed=2, reference_samples=64)
    x = _terminal_points(first)
    torch.testing.assert_close(first.exact(x), first.terminal_value(x[:, :-1]), rtol=1e-12, atol=1e-12)
    second = HJBRosenbrock(4, **{"seed": 2, "reference_samples": 64, **other})
    c1, c2 = second.coefficients["c1"], second.coefficients["c2"]
    if other.get("chain") == "disjoint":
        expected = _disjoint_g(x[:, :-1], c1, c2)
    else:
        a, b = x[:, :-2], x[:, 1:-1]
        expected = (c1 * (a - b) ** 2 + c2 * b**2).sum(1)
    torch.testing.assert_close(second.exact(x), expected, rtol=1e-12, atol=1e-12)
    assert len(list(tmp_path.glob("*.h5"))) == 2


@pytest.mark.parametrize("other", [{"horizon": 0.5}, {"reference_samples": 128}], ids=["horizon", "samples"])
def test_rosenbrock_reference_cache_keys_horizon_and_samples(other, tmp_path, monkeypatch):
    """An instance with another horizon or sample count at the same points gets the
    reference it computes in an empty cache, not the first instance's entry."""
    first = HJBRosenbrock(3, seed=2, reference_samples=64)
    x = first.test_set(5, dtype=F64)
    second = HJBRosenbrock(3, **{"seed": 2, "reference_samples": 64, **other})
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "alone"))
    alone = second.exact(x)
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "shared"))
    cached_first = first.exact(x)
    assert not torch.allclose(alone, cached_first)
    assert torch.equal(second.exact(x), alone)


def test_rosenbrock_with_reference_samples(tmp_path, monkeypatch):
    """``with_reference_samples(n)``: the same instance with n Monte Carlo samples (its
    reference that of an instance built with n), the original unchanged; n < 1 refused
    there and in the constructor."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(3, seed=2, reference_samples=64)
    fewer = eq.with_reference_samples(16)
    assert fewer.reference_samples == 16 and eq.reference_samples == 64
    assert fewer.parameters()["reference_samples"] == 16
    assert torch.equal(fewer.coefficients["c1"], eq.coefficients["c1"])
    x = eq.test_set(4, dtype=F64)
    assert torch.equal(fewer.exact(x), HJBRosenbrock(3, seed=2, reference_samples=16).exact(x))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="reference_samples must be >= 1"):
            eq.with_reference_samples(bad)
        with pytest.raises(ValueError, match="reference_samples must be >= 1"):
            HJBRosenbrock(3, reference_samples=bad)
    assert eq.with_reference_samples(1).reference_samples == 1


# -- the MLP's forward pass, activations and initialisation order -----------------------------
def _explicit_mlp(net, x, activation):
    h = x
    for layer in net.layers[:-1]:
        h = activation(h @ layer.weight.T + layer.bias)
    last = net.layers[-1]
    return (h @ last.weight.T + last.bias)[:, 0]


_ACTIVATION_FORMULAS = {
    "tanh": torch.tanh,
    "sin": torch.sin,
    "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),
    "silu": lambda z: z / (1 + torch.exp(-z)),
    "softplus": lambda z: torch.log1p(torch.exp(z)),
}


@pytest.mark.parametrize("activation", sorted(_ACTIVATION_FORMULAS))
@pytest.mark.parametrize("depth", [2, 4])
def test_mlp_is_affine_activation_layers_with_an_affine_output(activation, depth):
    """f(x) = W_L σ(… σ(W_1 x + b_1) …) + b_L: the activation after every affine layer but
    the last, each activation by its formula."""
    net = MLP(3, width=6, depth=depth, activation=activation, dtype=F64,
              generator=torch.Generator().manual_seed(2))
    x = 2 * torch.randn(7, 3, generator=make_generator(9, "mlp"), dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _explicit_mlp(net, x, _ACTIVATION_FORMULAS[activation]),
                                   rtol=1e-12, atol=1e-12)


def test_mlp_draws_each_layers_weight_then_bias():
    """The initialisation reads the generator layer by layer, weight before bias, each as
    (2U − 1)/√fan_in in float64: a network of one seed is the same network in every version."""
    net = MLP(3, width=5, depth=3, dtype=F64, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    for layer in net.layers:
        bound = 1 / math.sqrt(layer.in_features)
        for p in (layer.weight, layer.bias):
            expected = (2 * torch.rand(p.shape, generator=g, dtype=F64) - 1) * bound
            assert torch.equal(p.detach(), expected)


def test_mlp_refuses_a_generator_that_is_not_one():
    for bad in (0, "seed", torch.Generator):  # a number, a string, the class itself
        with pytest.raises(TypeError, match="generator must be a torch.Generator"):
            MLP(3, width=4, depth=2, generator=bad)


# -- the interface's refusals and description --------------------------------------------------
def test_an_exact_solution_that_is_one_number_is_refused():
    """Only a source may be one number for all points; an ``exact`` returning a 0-dim tensor
    (or a float) is refused with the per-point message, not passed on as u* of every point."""
    from pinnlab.equations import PoissonTwoBody

    class Constant(PoissonTwoBody):
        name = "test_constant_exact"

        def exact(self, x, coefficients=None):
            return torch.tensor(1.0, dtype=x.dtype) if self.as_tensor else 1.0

    x = torch.zeros(4, 3, dtype=F64)
    for as_tensor, shown in ((True, r"\(\)"), (False, "float")):
        eq = Constant(3)
        eq.as_tensor = as_tensor
        with pytest.raises(ValueError, match=rf"exact must return one value per point, shape \(4,\).*{shown}"):
            eq.exact(x)


@pytest.mark.parametrize("dim", [2.5, 3.000001])
def test_a_dimension_that_is_no_integer_is_refused(dim):
    from pinnlab.equations import PoissonTwoBody

    with pytest.raises(ValueError, match=r"dim must be an integer >= 2, got "):
        PoissonTwoBody(dim)
    assert PoissonTwoBody(3.0).dim == 3


@pytest.mark.parametrize("constraint", ["none", "Hard", None])
def test_a_constraint_other_than_hard_or_soft_is_refused(constraint):
    from pinnlab.equations import PoissonTwoBody

    with pytest.raises(ValueError, match=r"constraint must be 'hard' or 'soft'"):
        PoissonTwoBody(3, constraint=constraint)


def test_repr_names_dim_seed_and_parameters():
    from pinnlab.equations import FokkerPlanckIso, PoissonTwoBody

    assert repr(PoissonTwoBody(4, seed=7, constraint="soft", radius="volume")) == (
        "PoissonTwoBody(dim=4, seed=7, constraint='soft', radius='volume')")
    assert repr(FokkerPlanckIso(3, seed=2)) == "FokkerPlanckIso(dim=3, seed=2, constraint='hard')"


def test_coefficients_copied_inside_a_transform_are_not_kept():
    """A float32 copy of μ made inside torch.func.grad belongs to that transform: used after
    it (a kept copy) it is no plain tensor. Outside, u* is that of a fresh instance, and the
    gradient inside is the closed form 2(x − μt) (float32 points, float64 μ)."""
    eq, fresh = FokkerPlanckAniso(3, seed=1), FokkerPlanckAniso(3, seed=1)
    x = fresh.sample_collocation(6, generator=make_generator(10, "fp"))  # float32
    grad = torch.func.grad(lambda z: eq.exact(z).sum())(x)
    mu = fresh.coefficients["mu"].float()
    t = x[:, -1:]
    torch.testing.assert_close(grad[:, :3], 2 * (x[:, :3] - mu * t))
    assert torch.equal(eq.exact(x), fresh.exact(x))
    kept = eq.coefficients_like(x)["mu"]  # the copy made now, outside any transform
    assert not torch._C._functorch.is_functorch_wrapped_tensor(kept) and torch.equal(kept, mu)


@pytest.mark.parametrize("name, linear, unbiasable", [
    ("poisson_two_body", True, True), ("allen_cahn_two_body", False, True), ("sine_gordon_three_body", False, False),
    ("fokker_planck_aniso", True, True), ("black_scholes_barenblatt", True, True), ("burgers", False, True),
    ("hjb_quadratic", False, True), ("hjb_lin", False, False),
])
def test_linearity_and_unbiasability_of_each_family(name, linear, unbiasable):
    """Affine in the fields (unbiased1 exact) only for Poisson, Fokker–Planck and
    Black–Scholes; polynomial (unbiased2 exists) for all but Sine–Gordon and HJB-LIN."""
    from pinnlab.equations import make_equation

    eq = make_equation(name, 3)
    assert (eq.is_linear, eq.is_unbiasable) == (linear, unbiasable)


def test_fields_are_shown_by_their_labels():
    """Error messages and tables name a field by its label (``∇u``), the kind when it has none."""
    from pinnlab.equations import GRADIENT, LAPLACIAN
    from pinnlab.equations.terms import Field

    assert (repr(GRADIENT), repr(LAPLACIAN), repr(Field("value"))) == ("∇u", "Δu", "value")


# -- the Rosenbrock reference's edges and its other refusals ------------------------------------
def cole_hopf_at(g, x):
    return cole_hopf(g, x, horizon=0.3, samples=32, generator=make_generator(0, "w"))


def test_cole_hopf_clamps_only_float_rounding_beyond_the_horizon():
    """t above T by 1e-7·T (float32 rounding of T) is read as T; by 1e-5 it is refused."""
    g = lambda z: (z**2).sum(-1)  # noqa: E731
    x = torch.tensor([[0.3, -0.2, 0.3 * (1 + 1e-7)]], dtype=F64)
    u = cole_hopf_at(g, x)
    torch.testing.assert_close(u, g(x[:, :2]), rtol=1e-12, atol=1e-12)
    late = x.clone()
    late[0, -1] = 0.3 + 1e-5
    with pytest.raises(ValueError, match=r"t <= T = 0.3"):
        cole_hopf_at(g, late)


def test_rosenbrock_refuses_an_unknown_training_law():
    with pytest.raises(ValueError, match=r"train_law must be 'code' or 'test', got 'paper'"):
        HJBRosenbrock(4, train_law="paper")


def test_rosenbrock_terminal_value_takes_coefficient_overrides():
    """g at given c₁, c₂ (here all ones: Σ(x_i − x_{i+1})² + x_{i+1}²), not the instance's."""
    eq = HJBRosenbrock(3, seed=1)
    x = torch.randn(4, 3, generator=make_generator(11, "rb"), dtype=F64)
    ones = {"c1": torch.ones(2, dtype=F64), "c2": torch.ones(2, dtype=F64)}
    expected = (x[:, 0] - x[:, 1]) ** 2 + x[:, 1] ** 2 + (x[:, 1] - x[:, 2]) ** 2 + x[:, 2] ** 2
    torch.testing.assert_close(eq.terminal_value(x, ones), expected, rtol=1e-14, atol=1e-14)


def test_rosenbrock_cache_file_records_the_instance(tmp_path, monkeypatch):
    import h5py

    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(3, seed=4, reference_samples=16)
    eq.exact(eq.test_set(3, dtype=F64))
    (path,) = tmp_path.glob("hjb_rosenbrock-*.h5")
    with h5py.File(path, "r") as fh:
        assert fh.attrs["seed"] == 4
        assert fh.attrs["parameters"] == repr(eq.parameters())


# -- the unit ball's parameters and the order of its sampler's draws ----------------------------
def test_unit_ball_parameters_name_the_radius_law():
    from pinnlab.equations import AllenCahnThreeBody

    assert AllenCahnThreeBody(4, radius="volume").parameters() == {"constraint": "hard", "radius": "volume"}


@pytest.mark.parametrize("radius", ["uniform", "volume"])
def test_unit_ball_points_are_drawn_direction_first_then_radius(radius):
    """x = r·z/‖z‖ with z ~ N(0, I_d) drawn first and then r (U, or U^{1/d}) from the same
    generator: the stored results' points depend on that order."""
    from pinnlab.equations import PoissonTwoBody

    d, n = 5, 9
    eq = PoissonTwoBody(d, radius=radius)
    x = eq.sample_collocation(n, generator=make_generator(12, "ball"), dtype=F64)
    g = make_generator(12, "ball")
    z = torch.randn(n, d, generator=g, dtype=F64)
    r = torch.rand(n, 1, generator=g, dtype=F64)
    if radius == "volume":
        r = r ** (1 / d)
    torch.testing.assert_close(x, r * z / z.norm(dim=1, keepdim=True), rtol=1e-15, atol=1e-15)


# -- the network's folded first layer and device ------------------------------------------------
def test_scalar_noise_features_with_negative_scales():
    """W(s⊙n) for one noise value per column, `(..., 1)`, with scales of both signs."""
    from pinnlab.nets.mlp import _scaled_features

    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 4, generator=g, dtype=F64)
    s = torch.tensor([-0.4, 0.0, 0.3, -1.5], dtype=F64)
    noise = torch.randn(3, 2, 1, generator=g, dtype=F64)
    torch.testing.assert_close(_scaled_features(w, noise, s), (noise * s) @ w.T, rtol=1e-12, atol=1e-12)


def test_patterns_without_the_centre_evaluate_no_centre():
    """Only moving patterns: the later layers see N·S·K rows once, and no extra N rows of a
    centre that no pattern asked for."""
    from pinnlab.nets import Perturbation
    from tests.nets.test_perturbation import _rows_seen

    n, k, d = 4, 3, 2
    net = MLP(d, width=6, depth=3, dtype=F64, generator=torch.Generator().manual_seed(5))
    hidden_rows = _rows_seen(net.layers[1])
    x = torch.randn(n, d, generator=make_generator(13, "p"), dtype=F64)
    p = Perturbation(x, (torch.randn(k, d, generator=make_generator(14, "p"), dtype=F64),), ((1.0,), (-1.0,)))
    out = net(p)
    assert out.shape == (n, 2, k) and hidden_rows == [n * 2 * k]


def test_mlp_is_made_on_the_requested_device():
    net = MLP(3, width=4, depth=2, device="meta")
    assert {p.device.type for p in net.parameters()} == {"meta"}


# -- the feature cache ---------------------------------------------------------------------------
def test_feature_cache_serves_no_features_of_more_parts_than_asked():
    """Formed for (δ₁, δ₂), then asked for (δ₁,) alone: one feature, W δ₁."""
    from pinnlab.nets.perturbation import FeatureCache

    g = torch.Generator().manual_seed(6)
    w = torch.randn(4, 3, generator=g, dtype=F64)
    first, second = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    cache = FeatureCache()
    assert len(cache.features(w, (first, second))) == 2
    features = cache.features(w, (first,))
    assert len(features) == 1
    torch.testing.assert_close(features[0], first @ w.T, rtol=0, atol=0)



# -- the solution from smoothed values, and the ansatz at coefficient overrides -----------------
def test_solution_adds_the_ansatz_shift():
    """u = A·u_σ + B: Fokker–Planck's (d + 1)t·u_σ + ‖x‖², Black–Scholes' (T − t)·u_σ + ‖x‖²."""
    from pinnlab.equations import FokkerPlanckIso

    smoothed = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    for eq, scale in ((FokkerPlanckIso(3), lambda t: 4 * t),
                      (BlackScholesBarenblatt(3, horizon=HORIZON), lambda t: HORIZON - t)):
        x = eq.sample_collocation(4, generator=make_generator(15, "sol"), dtype=F64)
        expected = scale(x[:, -1]) * smoothed + (x[:, :3] ** 2).sum(1)
        torch.testing.assert_close(eq.solution(x, smoothed), expected, rtol=1e-14, atol=1e-14)


def test_rosenbrock_ansatz_follows_coefficient_overrides():
    """The hard constraint's shift B = g at the overridden c₁, c₂ (an inverse problem's
    estimate), here all ones, with its gradient and Hessian diagonal."""
    eq = HJBRosenbrock(3, seed=1)
    x = eq.sample_test(4, generator=make_generator(16, "rb"), dtype=F64)
    ones = {"c1": torch.ones(2, dtype=F64), "c2": torch.ones(2, dtype=F64)}
    a, b, c = x[:, 0], x[:, 1], x[:, 2]
    _, shift = eq.ansatz_jets(x, ones)
    torch.testing.assert_close(shift.value, (a - b) ** 2 + b**2 + (b - c) ** 2 + c**2, rtol=1e-14, atol=1e-14)
    grad = torch.stack([2 * (a - b), -2 * (a - b) + 2 * b + 2 * (b - c), -2 * (b - c) + 2 * c, 0 * a], 1)
    torch.testing.assert_close(shift.gradient, grad, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(shift.hessian_diagonal[0], torch.tensor([2.0, 6.0, 4.0, 0.0], dtype=F64))


def test_every_family_draws_its_coefficients_in_float64_on_cpu():
    """The instance's coefficients are float64 on the CPU (each call converts a copy to its
    points' dtype); μ = 1 of the isotropic Fokker–Planck included."""
    from pinnlab.equations import EQUATIONS, make_equation

    names = sorted(name for name, cls in EQUATIONS.items() if cls.__module__.startswith("pinnlab.equations"))
    seen = 0
    for name in names:
        for key, value in make_equation(name, 4).coefficients.items():
            assert (value.dtype, value.device.type) == (F64, "cpu"), (name, key)
            seen += 1
    assert seen >= 9  # unit ball c (6), Fokker–Planck μ (2), Rosenbrock c₁ and c₂


# -- non-finite parameters through the Python API (the config refuses them) ---------------------
@pytest.mark.parametrize("make, expected", [
    (lambda: BlackScholesBarenblatt(3, rate=-math.inf), "rate must be a finite number, got -inf"),
    (lambda: HJBQuadratic(3, horizon=math.inf), "horizon must be a finite number > 0, got inf"),
    (lambda: Burgers(3, viscosity=math.inf), "viscosity must be a finite number > 0, got inf"),
], ids=["black_scholes-rate", "hjb-horizon", "burgers-viscosity"])
def test_a_non_finite_parameter_is_refused(make, expected):
    """They were accepted: u* = exp(−∞·(T − t))‖x‖² was NaN at t = T, every sampled time
    ∞·U, the residual had −∞·Δu."""
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == expected
