"""Claims audit of the docstrings of pinnlab/estimators/stein.py and pinnlab/equations/*.py.

Each test pins one sentence of a docstring that no earlier test pinned, by the behaviour it
describes (closed forms in float64, or the same generator's numbers redrawn by hand).
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.equations import (
    EQUATIONS,
    AbstractEquation,
    BlackScholesBarenblatt,
    Burgers,
    BurgersAffine,
    FokkerPlanckIso,
    HJBLin,
    HJBQuadratic,
    HJBRosenbrock,
    PoissonThreeBody,
    PoissonTwoBody,
    cole_hopf,
    make_equation,
    register,
)
from pinnlab.estimators import (
    Directional,
    Gradient,
    HessianDiagonal,
    SteinAntithetic,
    Value,
    WeightedLaplacian,
)
from pinnlab.estimators.stein import SharedDraw
from pinnlab.nets import Pointwise

F64 = torch.float64


def _fn(z):
    """A smooth function of space and time (the last column)."""
    return torch.sin(z @ torch.tensor([1.0, -0.7, 0.5], dtype=z.dtype)) + z[..., 0] ** 2 * z[..., -1]


def _points(n=4, d=3, seed=3):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


# -- stein.py ------------------------------------------------------------------------


def test_docstring_example_laplacian_has_a_relative_std_of_about_a_tenth():
    """Example: f = ‖x‖², D = 3, K = 1024, σ = 0.1 at x = 0: Δu_σ = 2D = 6 and "relative
    std ≈ 0.1 per point". Per sample the estimate is (S − 3)S, S ~ χ²₃: variance
    E S⁴ − 6E S³ + 9E S² − 36 = 945 − 630 + 135 − 36 = 414, so std √(414/1024)/6 = 0.106."""
    f = Pointwise(lambda z: (z**2).sum(-1))
    est = SteinAntithetic(sigma=0.1, num_samples=1024)
    x = torch.zeros(400, 3, dtype=F64)
    (lap,) = est.estimate(f, x, [WeightedLaplacian(torch.ones(3, dtype=F64))],
                          generator=torch.Generator().manual_seed(0))
    relative_std = float(lap.std() / 6.0)
    assert 0.09 < relative_std < 0.125
    assert abs(float(lap.mean()) - 6.0) < 4 * 0.636 / math.sqrt(400)
    (example,) = est.estimate(f, x[:4], [WeightedLaplacian(torch.ones(3))],
                              generator=torch.Generator().manual_seed(0))
    assert bool(((example - 6.0).abs() < 3.0).all())


@pytest.mark.parametrize(("queries", "patterns"), [
    ([Value()], ((1.0, 1.0), (-1.0, 1.0))),
    ([Value(), Gradient()], ((1.0, 1.0), (-1.0, 1.0), (1.0, -1.0))),
    ([HessianDiagonal()], ((1.0, 1.0), (-1.0, 1.0), (0.0, 1.0))),
    ([Directional(torch.ones(3, dtype=F64)), WeightedLaplacian(torch.tensor([1.0, 1.0, 0.0], dtype=F64))],
     ((1.0, 1.0), (-1.0, 1.0), (0.0, 1.0), (1.0, -1.0))),
], ids=["value", "first", "second", "both"])
def test_independent_time_smoothing_evaluates_the_extra_pairs_only_when_asked(queries, patterns):
    """[RS] eq. 28: the pairs f(x ± δx, t + δt); the second differences add f(x, t + δt)
    ("K extra evaluations") only for a second-order query, and ∂_t the pair partner
    f(x + δx, t − δt) ("K more, only when a first-order query is asked")."""
    seen = []

    def model(inputs):
        seen.append(inputs.coefficients)
        return Pointwise(_fn)(inputs)

    est = SteinAntithetic(sigma=0.2, num_samples=5, time_smoothing="independent")
    est.estimate(model, _points(), queries, generator=torch.Generator().manual_seed(0))
    assert seen == [patterns]


def test_a_time_smoothing_other_than_joint_or_independent_is_refused():
    """``time_smoothing``: ``"joint"`` or ``"independent"``; anything else is a ValueError
    at construction (not a silent fall-back to one of them)."""
    with pytest.raises(ValueError, match=r"time_smoothing must be 'joint' or 'independent', got 'both'"):
        SteinAntithetic(time_smoothing="both")


def test_evaluate_with_independent_noise_does_not_use_the_draw():
    """evaluate: "Independent noise: each chunk draws its own ξ from ``generator`` in turn
    (``draw`` is not used)": the values are those without a draw, and the draw stays
    empty (a later shared-noise call with another K still makes its first draw)."""
    f, x = Pointwise(_fn), _points(6)
    est = SteinAntithetic(sigma=0.1, num_samples=4, noise="independent")
    draw = SharedDraw()
    with_draw = est.evaluate(f, x, generator=torch.Generator().manual_seed(2), chunk_size=4, draw=draw)
    without = est.evaluate(f, x, generator=torch.Generator().manual_seed(2), chunk_size=4)
    assert torch.equal(with_draw, without)
    shared = SteinAntithetic(sigma=0.3, num_samples=9, noise="shared")
    got = shared.evaluate(f, x, generator=torch.Generator().manual_seed(7), draw=draw)
    assert torch.equal(got, shared.evaluate(f, x, generator=torch.Generator().manual_seed(7)))


def test_shared_noise_gives_each_point_the_law_of_independent_noise():
    """Shared noise: "Each point's estimate is still unbiased with the same variance" as
    with independent noise: at one point the two modes read the same K vectors from the
    generator and give the same numbers, and a point in a shared batch gets its estimate
    alone on the same draw."""
    f, x = Pointwise(_fn), _points()
    queries = [Value(), Gradient(), HessianDiagonal()]

    def run(noise, points):
        est = SteinAntithetic(sigma=0.2, num_samples=6, noise=noise)
        return est.estimate(f, points, queries, generator=torch.Generator().manual_seed(1))

    for a, b in zip(run("shared", x[2:3]), run("independent", x[2:3])):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    for a, b in zip(run("shared", x), run("shared", x[2:3])):
        torch.testing.assert_close(a[2:3], b, rtol=1e-13, atol=1e-13)


# -- equations: samplers ----------------------------------------------------------------


def _normal(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name", ["burgers", "burgers_affine", "fokker_planck_iso"])
def test_initial_slice_samplers_draw_x_from_n_0_2i_at_t_0(name):
    """``sample_boundary`` is t = 0 with the collocation law at t = 0: Burgers-A
    N(t·1, (2 − t)I), Burgers-B N(0, 2(1 − t)I) and Fokker–Planck N(μt, (2 − t)I) all give
    x ~ N(0, 2I) ("x ~ N(0, 2I)" in the Fokker–Planck docstring): √2·z of the same z."""
    eq = make_equation(name, 3)
    got = eq.sample_boundary(5, generator=torch.Generator().manual_seed(4), dtype=F64)
    want = torch.cat([math.sqrt(2.0) * _normal(5, 3, 4), torch.zeros(5, 1, dtype=F64)], 1)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("make", [lambda: HJBQuadratic(3, horizon=0.7), lambda: HJBLin(3, horizon=0.7),
                                  lambda: HJBRosenbrock(3, horizon=0.7)], ids=["quadratic", "lin", "rosenbrock"])
def test_hjb_terminal_sampler_is_standard_normal_space_at_t_equal_t(make):
    """HJB: u(x, T) = g(x) on R^d, samplers x ~ N(0, I): the terminal slice is t = T (the
    instance's horizon) with x ~ N(0, I), the numbers of torch.randn(n, d)."""
    eq = make()
    got = eq.sample_boundary(5, generator=torch.Generator().manual_seed(6), dtype=F64)
    want = torch.cat([_normal(5, 3, 6), torch.full((5, 1), 0.7, dtype=F64)], 1)
    assert torch.equal(got, want)


def test_black_scholes_terminal_sampler_is_the_box_at_t_equal_t():
    """Black–Scholes: "x_i ~ U(0, 2) i.i.d. ...; ``sample_boundary`` is t = T": the numbers
    2·torch.rand(n, d) and the instance's horizon."""
    eq = BlackScholesBarenblatt(4, horizon=0.6)
    got = eq.sample_boundary(5, generator=torch.Generator().manual_seed(8), dtype=F64)
    box = 2 * torch.rand(5, 4, generator=torch.Generator().manual_seed(8), dtype=F64)
    assert torch.equal(got, torch.cat([box, torch.full((5, 1), 0.6, dtype=F64)], 1))


def test_volume_radius_puts_almost_every_point_next_to_the_sphere_in_high_dimension():
    """``radius="volume"`` (r = U^{1/d}) "puts almost every point next to the sphere when d
    is large": at d = 1000, P(r < 0.99) = 0.99¹⁰⁰⁰ ≈ 4e-5, against 0.99 for "uniform"."""
    generator = torch.Generator().manual_seed(0)
    volume = PoissonTwoBody(1000, radius="volume").sample_collocation(200, generator=generator, dtype=F64)
    uniform = PoissonTwoBody(1000).sample_collocation(200, generator=generator, dtype=F64)
    assert float(volume.norm(dim=1).min()) > 0.99
    assert float((uniform.norm(dim=1) > 0.99).float().mean()) < 0.1


def test_fokker_planck_points_take_a_drift_estimate_as_a_value():
    """"collocation points then follow the override (the current estimate μ̂, as a value:
    points are data, not a function of μ̂)": an estimate that requires grad gives the
    points of its value, with no graph (it raised RuntimeError from mul(out=); only the
    solver's sampler_overrides detached it)."""
    eq = FokkerPlanckIso(3)
    mu_hat = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    want = eq.sample_collocation(4, generator=torch.Generator().manual_seed(0), dtype=F64,
                                 coefficients={"mu": mu_hat})
    got = eq.sample_collocation(4, generator=torch.Generator().manual_seed(0), dtype=F64,
                                coefficients={"mu": mu_hat.clone().requires_grad_(True)})
    assert torch.equal(got, want) and not got.requires_grad


# -- equations: exact solutions ----------------------------------------------------------


def test_three_body_exact_solution_is_the_documented_sum():
    """u* = (1 − ‖x‖²)·Σ_{i<d−1} c_i exp(x_i x_{i+1} x_{i+2}), c the instance's draw, and
    exact_with_laplacian gives the same u* with Δu* = (1 − ‖x‖²)Δu₂ − 4x·∇u₂ − 2d·u₂."""
    eq = PoissonThreeBody(5, seed=2)
    x = 0.4 * _points(6, 5, 1)
    c = eq.coefficients["c"]
    assert c.shape == (3,)
    body = sum(c[i] * torch.exp(x[:, i] * x[:, i + 1] * x[:, i + 2]) for i in range(3))
    want = (1 - (x * x).sum(-1)) * body
    torch.testing.assert_close(eq.exact(x), want, rtol=1e-14, atol=1e-14)
    u, lap = eq.exact_with_laplacian(x)
    torch.testing.assert_close(u, want, rtol=1e-14, atol=1e-14)
    z = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(eq.exact(z).sum(), z, create_graph=True)
    auto = sum(torch.autograd.grad(grad[:, j].sum(), z, retain_graph=True)[0][:, j] for j in range(5))
    torch.testing.assert_close(lap, auto, rtol=1e-12, atol=1e-12)


def test_hjb_quadratic_exact_solution_at_another_horizon():
    """u = ‖x‖²/(1 + 4(T − t)) + (d/2)·log(1 + 4(T − t)) with the instance's T."""
    eq = HJBQuadratic(2, horizon=0.5)
    x = torch.tensor([[1.0, 2.0, 0.25], [0.0, -1.0, 0.5]], dtype=F64)
    want = torch.tensor([5.0 / 2.0 + math.log(2.0), 1.0], dtype=F64)
    torch.testing.assert_close(eq.exact(x), want, rtol=1e-15, atol=1e-15)


def test_burgers_exact_solutions_at_hand_computed_points():
    """Burgers-A u = 1/(1 + exp((Σx_i − d·t/2)/(2ν))), Burgers-B u = (Σx_i + 1)/(1 + t)."""
    x = torch.tensor([[1.0, 0.5, 0.5], [0.0, 0.0, 0.0]], dtype=F64)
    s = torch.tensor([1.5 - 0.5, 0.0], dtype=F64)
    torch.testing.assert_close(Burgers(2).exact(x), 1 / (1 + torch.exp(s / 1.0)), rtol=1e-15, atol=0)
    torch.testing.assert_close(BurgersAffine(2).exact(x), torch.tensor([2.5 / 1.5, 1.0], dtype=F64),
                               rtol=1e-15, atol=0)


def test_rosenbrock_exact_ignores_coefficient_overrides(tmp_path, monkeypatch):
    """exact: "Always the instance's own coefficients (``coefficients`` overrides are
    ignored)": the reference at c₁ = c₂ = 1 is the instance's."""
    x = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.5, 0.2]], dtype=F64)
    ones = {"c1": torch.ones(1, dtype=F64), "c2": torch.ones(1, dtype=F64)}
    assert not torch.allclose(HJBRosenbrock(2, seed=1).terminal_value(x[:, :-1], ones),
                              HJBRosenbrock(2, seed=1).terminal_value(x[:, :-1]))
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "overridden"))  # computed at the override
    overridden = HJBRosenbrock(2, seed=1, reference_samples=64).exact(x, ones)
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "own"))
    assert torch.equal(overridden, HJBRosenbrock(2, seed=1, reference_samples=64).exact(x))


def test_cole_hopf_of_no_points_is_an_empty_float64_vector():
    """cole_hopf returns `(N,)` float64, for N = 0 too (no draw, no error)."""
    u = cole_hopf(lambda z: (z * z).sum(-1), torch.zeros(0, 3), horizon=1.0, samples=8,
                  generator=torch.Generator().manual_seed(0))
    assert u.shape == (0,) and u.dtype == F64


# -- equations: registry -----------------------------------------------------------------


def test_the_registry_refuses_a_nameless_class_a_taken_name_and_an_unknown_name():
    """register: a class "needs a class attribute `name`"; a name taken by a built-in is
    refused (not silently replaced); make_equation of an unknown name is a KeyError that
    lists the registered names. Registering a built-in again is harmless."""

    class Nameless(AbstractEquation):
        pass

    class Impostor(PoissonTwoBody):
        name = "poisson_two_body"

    with pytest.raises(ValueError, match="needs a class attribute `name`"):
        register(Nameless)
    with pytest.raises(ValueError, match=r"'poisson_two_body' is taken \(a built-in equation\)"):
        register(Impostor)
    assert EQUATIONS["poisson_two_body"] is PoissonTwoBody
    assert register(PoissonTwoBody) is PoissonTwoBody
    with pytest.raises(KeyError, match="unknown equation 'heat'; registered: allen_cahn_three_body"):
        make_equation("heat", 2)


# -- second batch: σ override, noise groups, Cole–Hopf, Fokker–Planck, point checks ----------


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_a_sigma_passed_to_estimate_overrides_the_configured_one(noise):
    """Args: "a tensor passed as ``estimate(..., sigma=...)`` overrides it": the numbers of
    an estimator built at that σ, from the same generator."""
    f, x = Pointwise(_fn), _points()
    sigma = torch.tensor([0.3, 0.05, 0.2], dtype=F64)
    queries = [Value(), Gradient(), HessianDiagonal()]
    got = SteinAntithetic(sigma=0.9, num_samples=6, noise=noise).estimate(
        f, x, queries, generator=torch.Generator().manual_seed(5), sigma=sigma)
    want = SteinAntithetic(sigma=sigma, num_samples=6, noise=noise).estimate(
        f, x, queries, generator=torch.Generator().manual_seed(5))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


def test_unbiased_products_of_hjb_and_burgers_come_from_two_groups():
    """_HJB: "‖∇u‖² ... the unbiased2 loss draws it from two independent derivative
    groups"; Burgers: "u·Σ∂_i u ... unbiased2 draws them from two groups" (group 0 the
    linear terms and first factors, group 1 the second factor alone); Black–Scholes and
    Fokker–Planck are linear (one group); HJB-LIN's |·|^c is refused (unbiased1 only)."""
    from pinnlab.equations import GRADIENT, LAPLACIAN, TIME_DERIVATIVE, VALUE, NotUnbiasableError
    from pinnlab.equations.burgers import SUM_OF_PARTIALS
    from pinnlab.equations.residual import noise_groups

    for eq in (HJBQuadratic(3), HJBRosenbrock(3)):
        assert noise_groups(eq.terms(), unbiased=True) == [[TIME_DERIVATIVE, LAPLACIAN, GRADIENT], [GRADIENT]]
    for eq in (Burgers(3), BurgersAffine(3)):
        assert noise_groups(eq.terms(), unbiased=True) == [[TIME_DERIVATIVE, VALUE, LAPLACIAN], [SUM_OF_PARTIALS]]
    for eq in (BlackScholesBarenblatt(3), FokkerPlanckIso(3)):
        assert len(noise_groups(eq.terms(), unbiased=True)) == 1
    with pytest.raises(NotUnbiasableError, match=r"Σ\|∂_i u\|\^c.*unbiased1"):
        noise_groups(HJBLin(3).terms(), unbiased=True)


def test_cole_hopf_takes_the_mean_in_log_sum_exp_form():
    """"the mean is taken in log-sum-exp form in float64": g + 2000 (exp(−2000) underflows
    in any float) gives the estimate for g plus 2000, not inf."""
    x = torch.tensor([[0.5, -0.5, 0.2], [0.0, 1.0, 0.9]], dtype=F64)

    def run(shift):
        return cole_hopf(lambda z: (z * z).sum(-1) + shift, x, horizon=1.0, samples=64,
                         generator=torch.Generator().manual_seed(0))

    torch.testing.assert_close(run(2000.0), run(0.0) + 2000.0, rtol=1e-13, atol=1e-10)


def test_isotropic_fokker_planck_has_unit_drift_and_the_documented_solution():
    """FokkerPlanckIso: μ = (1, …, 1); u = ‖x − μt‖² + d·t, at a hand-computed point:
    x = (1, 2, 0), t = 0.5: 0.25 + 2.25 + 0.25 + 1.5 = 4.25."""
    eq = FokkerPlanckIso(3)
    assert torch.equal(eq.coefficients["mu"], torch.ones(3, dtype=F64))
    x = torch.tensor([[1.0, 2.0, 0.0, 0.5]], dtype=F64)
    torch.testing.assert_close(eq.exact(x), torch.tensor([4.25], dtype=F64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("method", ["exact", "boundary_value"])
def test_exact_and_boundary_value_take_only_points_of_the_input_width(method):
    """AbstractEquation: a subclass's ``exact`` and ``boundary_value`` "receive only
    `(N, D)` points (anything else is a ValueError naming the expected width)"."""
    eq = HJBQuadratic(3)
    good = torch.zeros(2, 4, dtype=F64)
    assert getattr(eq, method)(good).shape == (2,)
    for bad in (torch.zeros(2, 3, dtype=F64), torch.zeros(4, dtype=F64), torch.zeros(2, 5, dtype=F64)):
        with pytest.raises(ValueError, match=r"points must have shape \(N, 4\) \(3 spatial \+ time columns\)"):
            getattr(eq, method)(bad)


@pytest.mark.parametrize(("queries", "extra"), [([Value(), Gradient()], 0), ([HessianDiagonal()], 1)],
                         ids=["first-order", "derivative"])
def test_joint_smoothing_costs_2kn_plus_n_network_evaluations(queries, extra):
    """"a "derivative group" costs 2KN + N network evaluations and a first-order or value
    group 2KN": f₀ = f(x) once per point (not K times), only for a second-order query."""
    rows = []

    def fn(z):
        rows.append(z.shape[0])
        return (z * z).sum(-1)

    n, k = 5, 7
    SteinAntithetic(sigma=0.1, num_samples=k).estimate(
        Pointwise(fn), _points(n), queries, generator=torch.Generator().manual_seed(0))
    assert sum(rows) == 2 * k * n + extra * n
