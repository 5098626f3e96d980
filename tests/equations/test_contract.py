"""Contract tests run on every registered equation (botorch-style family checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import EQUATIONS, HJBQuadratic, HJBRosenbrock, cole_hopf, make_equation
from pinnlab.estimators import Autograd
from pinnlab.nets import Pointwise

F64 = torch.float64
MONTE_CARLO_REFERENCE = {"hjb_rosenbrock"}


def _dims(name):
    low = max(3, EQUATIONS[name].min_dim)
    return [low, 10]


def _cases():
    return [(name, d) for name in sorted(EQUATIONS) for d in _dims(name)]


def _equation(name, dim, **kw):
    if name == "hjb_rosenbrock":
        kw.setdefault("reference_samples", 64)
    return make_equation(name, dim, seed=3, **kw)


def _scale(eq, x, exact):
    source = eq.source(x, eq.coefficients_like(x))
    source = torch.as_tensor(source, dtype=F64).abs().max()
    return max(1.0, float(source), float(exact.abs().max()))


@pytest.mark.parametrize("name,dim", _cases())
def test_exact_solution_has_zero_residual(name, dim):
    if name in MONTE_CARLO_REFERENCE:
        pytest.skip("reference solution is Monte Carlo; see test_cole_hopf_matches_closed_form")
    eq = _equation(name, dim, constraint="soft")
    x = eq.sample_collocation(64, generator=make_generator(0, "x"), dtype=F64)
    model = Pointwise(eq.exact)
    residual = eq.residual(x, lambda q: Autograd().estimate(model, x, q))
    assert residual.shape == (64,) and residual.dtype == F64
    assert float(residual.abs().max()) <= 1e-8 * _scale(eq, x, eq.exact(x))


@pytest.mark.parametrize("name,dim", _cases())
def test_hard_constraint_ansatz_is_consistent(name, dim):
    """With u_σ := (u* − B)/A the ansatz reproduces u*, so the residual is again ~0."""
    if name in MONTE_CARLO_REFERENCE:
        pytest.skip("reference solution is Monte Carlo")
    eq = _equation(name, dim)
    x = eq.sample_collocation(256, generator=make_generator(0, "x"), dtype=F64)
    scale, shift = eq.ansatz_jets(x)
    keep = scale.value.abs() > 0.05 * scale.value.abs().max()
    x = x[keep][:64]

    def inner(z):
        a, b = eq.ansatz_jets(z)
        return (eq.exact(z) - b.value) / a.value

    residual = eq.residual(x, lambda q: Autograd().estimate(Pointwise(inner), x, q))
    assert float(residual.abs().max()) <= 1e-8 * _scale(eq, x, eq.exact(x))


@pytest.mark.parametrize("name,dim", _cases())
def test_ansatz_jets_match_autograd(name, dim):
    eq = _equation(name, dim)
    x = eq.sample_collocation(16, generator=make_generator(1, "x"), dtype=F64)
    spatial = eq.dim
    for jet, fn in zip(eq.ansatz_jets(x), (lambda z: eq.ansatz_jets(z)[0].value,
                                           lambda z: eq.ansatz_jets(z)[1].value)):
        def value(z, fn=fn):
            v = fn(z)
            return v if isinstance(v, torch.Tensor) else torch.full((z.shape[0],), float(v), dtype=z.dtype)

        from pinnlab.estimators import Gradient, HessianDiagonal

        grad, hess = Autograd().estimate(Pointwise(value), x, [Gradient(), HessianDiagonal()])
        expected_grad = torch.zeros_like(x) if jet.gradient is None else jet.gradient
        torch.testing.assert_close(expected_grad, grad, rtol=1e-10, atol=1e-10)
        expected_hess = torch.zeros_like(x) if jet.hessian_diagonal is None else jet.hessian_diagonal
        torch.testing.assert_close(expected_hess[:, :spatial], hess[:, :spatial], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,dim", _cases())
def test_boundary_points_satisfy_the_constraint(name, dim):
    eq = _equation(name, dim)
    xb = eq.sample_boundary(32, generator=make_generator(2, "b"), dtype=F64)
    scale, shift = eq.ansatz_jets(xb)
    torch.testing.assert_close(torch.as_tensor(scale.value, dtype=F64).expand(32), torch.zeros(32, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.as_tensor(shift.value, dtype=F64).expand(32), eq.exact(xb), atol=1e-10, rtol=1e-10)


# -- the operator on a generic function, against the PDE as written in REFERENCE.md §3 ------
# The exact solutions above are blind to any term that vanishes on them (Burgers-B and
# HJB-LIN have affine u*, so Δu* = 0 and a wrong viscosity passes). Here the library
# residual of a generic smooth u is compared with an independent autograd form of each
# PDE, with the default parameters written out as literals.


def _derivatives(fn, x):
    """u, ∇u and diag ∇²u of a scalar function of `(N, D)` points, by autograd."""
    x = x.clone().requires_grad_(True)
    u = fn(x)
    (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    hess = torch.stack(
        [torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(x.shape[1])],
        dim=1,
    )
    return u.detach(), grad.detach(), hess.detach()


def _unit_ball(nonlinearity):
    """Δu + N(u) − f with f = Δu* + N(u*) ("f computed analytically from u*", §3.1)."""

    def operator(eq, x, u, grad, hess):
        return hess.sum(1) + nonlinearity(u)

    return operator, True


def _fokker_planck(eq, x, u, grad, hess):  # §3.2–3.3: u_t − ½Δu + Σ_i μ_i ∂_i u
    d = eq.dim
    mu = torch.ones(d, dtype=F64) if eq.name == "fokker_planck_iso" else eq.coefficients["mu"]
    return grad[:, d] - 0.5 * hess[:, :d].sum(1) + (mu * grad[:, :d]).sum(1)


def _hjb(eq, x, u, grad, hess):  # §3.4–3.5: u_t + Δu − ‖∇u‖²
    d = eq.dim
    return grad[:, d] + hess[:, :d].sum(1) - (grad[:, :d] ** 2).sum(1)


def _hjb_lin(eq, x, u, grad, hess):  # §3.7: u_t + Δu − (1/d)Σ_i |∂_i u|^1.75 + 2
    d = eq.dim
    return grad[:, d] + hess[:, :d].sum(1) - (grad[:, :d].abs() ** 1.75).sum(1) / d + 2


def _burgers(eq, x, u, grad, hess):  # §3.6 Burgers-A: u_t + u Σ_i ∂_i u − ½Δu
    d = eq.dim
    return grad[:, d] + u * grad[:, :d].sum(1) - 0.5 * hess[:, :d].sum(1)


def _burgers_affine(eq, x, u, grad, hess):  # §3.6 Burgers-B: u_t + u (1/d)Σ_i ∂_i u − Δu
    d = eq.dim
    return grad[:, d] + u * grad[:, :d].sum(1) / d - hess[:, :d].sum(1)


def _black_scholes(eq, x, u, grad, hess):
    # §3.7 with r = 0.05, σ_B = 0.4: u_t + ½σ_B² Σ_i x_i² ∂_ii u − r(u − x·∇u)
    d, space = eq.dim, x[:, : eq.dim]
    diffusion = 0.5 * 0.4**2 * (space**2 * hess[:, :d]).sum(1)
    return grad[:, d] + diffusion - 0.05 * (u - (space * grad[:, :d]).sum(1))


_REFERENCE_FORMS = {  # name: (operator L[u], whether the residual is L[u] − L[u*])
    "poisson_two_body": _unit_ball(lambda u: 0 * u),
    "poisson_three_body": _unit_ball(lambda u: 0 * u),
    "allen_cahn_two_body": _unit_ball(lambda u: u - u**3),
    "allen_cahn_three_body": _unit_ball(lambda u: u - u**3),
    "sine_gordon_two_body": _unit_ball(torch.sin),
    "sine_gordon_three_body": _unit_ball(torch.sin),
    "fokker_planck_iso": (_fokker_planck, False),
    "fokker_planck_aniso": (_fokker_planck, False),
    "hjb_quadratic": (_hjb, False),
    "hjb_rosenbrock": (_hjb, False),
    "hjb_lin": (_hjb_lin, False),
    "burgers": (_burgers, False),
    "burgers_affine": (_burgers_affine, False),
    "black_scholes_barenblatt": (_black_scholes, False),
}


def generic_function(eq):
    """A smooth v solving none of the PDEs, and u = A·v + B of the equation's ansatz."""
    a = torch.randn(eq.input_dim, generator=make_generator(3, "a"), dtype=F64)

    def v(z):
        return torch.sin(z @ a + 0.3) + 0.2 * (z**2).sum(-1) + torch.exp(0.1 * z[..., 0])

    def u(z):
        scale, shift = eq.ansatz_jets(z)
        return scale.value * v(z) + shift.value

    return v, u


@pytest.mark.parametrize("constraint", ["soft", "hard"])
@pytest.mark.parametrize("name,dim", _cases())
def test_residual_of_a_generic_function_matches_the_pde(name, dim, constraint):
    """R[u] of u = A·v + B (A = 1, B = 0 when soft) for v = sin(a·z + 0.3) + 0.2‖z‖² +
    exp(0.1 z₁), which solves none of the PDEs, equals the PDE of REFERENCE.md §3
    applied to u by autograd, to round-off (relative 1e-10), from the biased and, where
    it exists, the unbiased residual (one deterministic estimate serves every group).
    Every registered equation needs an entry in ``_REFERENCE_FORMS``."""
    if name not in _REFERENCE_FORMS:
        pytest.fail(f"{name} has no independent form of its PDE in _REFERENCE_FORMS: add one")
    operator, forced_by_exact = _REFERENCE_FORMS[name]
    eq = _equation(name, dim, constraint=constraint)
    v, u = generic_function(eq)
    x = eq.sample_collocation(32, generator=make_generator(0, "x"), dtype=F64)
    expected = operator(eq, x, *_derivatives(u, x))
    if forced_by_exact:
        expected = expected - operator(eq, x, *_derivatives(eq.exact, x))
    scale = max(1.0, float(expected.abs().max()))
    for unbiased in (False, True) if eq.is_unbiasable else (False,):
        got = eq.residual(x, lambda q: Autograd().estimate(Pointwise(v), x, q), unbiased=unbiased)
        assert float((got - expected).abs().max()) <= 1e-10 * scale, (unbiased, got[:4], expected[:4])


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_samplers_are_reproducible_and_seeded(name):
    dim = _dims(name)[0]
    eq = _equation(name, dim)
    a = eq.sample_collocation(10, generator=make_generator(5), dtype=F64)
    b = eq.sample_collocation(10, generator=make_generator(5), dtype=F64)
    c = eq.sample_collocation(10, generator=make_generator(6), dtype=F64)
    assert a.shape == (10, eq.input_dim) and a.dtype == F64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert eq.sample_collocation(4, generator=make_generator(5)).dtype == torch.float32
    assert torch.equal(eq.test_set(20, dtype=F64), _equation(name, dim).test_set(20, dtype=F64))
    # coefficients depend on the problem seed only
    again, other = _equation(name, dim), make_equation(name, dim, seed=4)
    for key, value in eq.coefficients.items():
        assert torch.equal(value, again.coefficients[key])
        if name not in ("fokker_planck_iso",):
            assert not torch.equal(value, other.coefficients[key])


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="dim must be"):
        make_equation("allen_cahn_two_body", 1)
    with pytest.raises(ValueError, match="radius"):
        make_equation("poisson_two_body", 3, radius="cube")
    with pytest.raises(KeyError, match="unknown equation"):
        make_equation("heat", 3)
    with pytest.raises(ValueError, match="even"):
        HJBRosenbrock(5, chain="disjoint")


def test_cole_hopf_matches_closed_form():
    """Monte Carlo Cole–Hopf on g = ‖x‖² reproduces the quadratic HJB solution.

    At the Rosenbrock horizon T = 0.3 the 2·10⁵-sample estimate is within 0.5 %
    (at T = 1 the weights exp(−g) are heavy-tailed and the error reaches ~1.5 %)."""
    eq = HJBQuadratic(10, horizon=0.3)
    x = eq.test_set(8, dtype=F64)
    u = cole_hopf(lambda z: (z**2).sum(-1), x, horizon=0.3, samples=200_000,
                  generator=make_generator(0, "w"), chunk_elements=2**20)
    torch.testing.assert_close(u, eq.exact(x), rtol=5e-3, atol=5e-3)


def test_rosenbrock_hessian_is_the_corrected_one():
    eq = HJBRosenbrock(6, seed=1)
    x = torch.randn(5, 6, dtype=F64)
    g, grad, hess = eq.terminal(x, eq.coefficients)
    from pinnlab.estimators import Gradient, HessianDiagonal

    auto_grad, auto_hess = Autograd().estimate(
        Pointwise(eq.terminal_value), x, [Gradient(), HessianDiagonal()]
    )
    torch.testing.assert_close(grad, auto_grad)
    torch.testing.assert_close(hess, auto_hess)
    c1, c2 = eq.coefficients["c1"], eq.coefficients["c2"]
    buggy = hess.clone()
    buggy[:, 1:] += 2 * c2 - 2 * c1  # the official code's entry 4c₂ instead of 2c₁ + 2c₂
    assert not torch.allclose(buggy, auto_hess)


def test_rosenbrock_reference_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(4, seed=2, reference_samples=2000)
    x = eq.test_set(50, dtype=F64)
    first = eq.exact(x)
    files = list(tmp_path.glob("*.h5"))
    assert len(files) == 1
    second = HJBRosenbrock(4, seed=2, reference_samples=2000).exact(x)
    assert torch.equal(first, second)
    # at t = T the reference is exactly g
    xt = x.clone()
    xt[:, -1] = eq.horizon
    torch.testing.assert_close(eq.exact(xt), eq.terminal_value(xt[:, :-1]))
    # a non-finite entry (as older versions cached at float32 t = T) is recomputed, not served
    import h5py

    with h5py.File(files[0], "r+") as fh:
        fh["u"][0] = float("nan")
    torch.testing.assert_close(HJBRosenbrock(4, seed=2, reference_samples=2000).exact(x), first)
    # an entry of another dtype (a traceback) or shape (served as if it were the reference) is recomputed
    for damaged in (np.array([b"not a number"] * 50), np.zeros(49), np.zeros((50, 1))):
        with h5py.File(files[0], "r+") as fh:
            del fh["u"]
            fh["u"] = damaged
        torch.testing.assert_close(HJBRosenbrock(4, seed=2, reference_samples=2000).exact(x), first)
    # another torch version draws the Monte Carlo samples with its own sampler: not served
    before = len(list(tmp_path.glob("*.h5")))
    monkeypatch.setattr(torch, "__version__", "0.0.0+other")
    HJBRosenbrock(4, seed=2, reference_samples=2000).exact(x)
    assert len(list(tmp_path.glob("*.h5"))) == before + 1


# -- sampler laws (REFERENCE.md §3) ------------------------------------------------------
# Moment tests with fixed seeds; every comparison allows 5 standard errors of the sample
# statistic under the stated law (a false failure has probability < 1e-6 per comparison).

N_LAW = 20_000


def _assert_moment(samples, expected, variance, what):
    """|mean(samples) − expected| ≤ 5·sqrt(variance / n), the variance under the law."""
    se = (variance / samples.numel()) ** 0.5
    gap = abs(float(samples.mean()) - expected)
    assert gap <= 5 * se, f"{what}: mean {float(samples.mean()):.5f}, law {expected:.5f}, SE {se:.2e}"


@pytest.mark.parametrize("radius", ["uniform", "volume"])
def test_unit_ball_radius_and_direction_laws(radius):
    """x = r·z/‖z‖: radius="uniform" has r ~ U(0, 1) (E r = 1/2, E r² = 1/3); "volume" has
    r = U^{1/d} (E r = d/(d+1), E r² = d/(d+2)). Directions are uniform on the sphere:
    E x = 0 and E x_j² = E r²/d for every coordinate."""
    d = 7
    eq = make_equation("poisson_two_body", d, seed=3, radius=radius)
    x = eq.sample_collocation(N_LAW, generator=make_generator(8, "law"), dtype=F64)
    r = x.norm(dim=1)
    assert float(r.max()) < 1
    if radius == "uniform":
        m1, m2, m4 = 1 / 2, 1 / 3, 1 / 5
    else:
        m1, m2, m4 = d / (d + 1), d / (d + 2), d / (d + 4)
    _assert_moment(r, m1, m2 - m1**2, "E r")
    _assert_moment(r**2, m2, m4 - m2**2, "E r²")
    for j in range(d):  # E x_j² = E r²/d; x_j² ≤ r², so its variance is below E r⁴ − (E r²/d)²
        _assert_moment(x[:, j], 0.0, m2 / d, f"E x_{j}")
        _assert_moment(x[:, j] ** 2, m2 / d, m4 - (m2 / d) ** 2, f"E x_{j}²")


def _gaussian_laws():
    """(name, kwargs, sampler, horizon, mean(t, eq), variance(t)) of the Gaussian-in-x
    samplers with t ~ U(0, T) (or the fixed t of a boundary sampler)."""
    mu = lambda t, eq: t * eq.coefficients["mu"]  # noqa: E731
    zero = lambda t, eq: torch.zeros_like(t) * torch.zeros(eq.dim, dtype=F64)  # noqa: E731
    return [
        ("fokker_planck_iso", {}, "collocation", 1.0, mu, lambda t: 2 - t),
        ("fokker_planck_aniso", {}, "collocation", 1.0, mu, lambda t: 2 - t),
        ("fokker_planck_aniso", {}, "boundary", 0.0, mu, lambda t: 2 - t),
        ("burgers", {}, "collocation", 1.0, lambda t, eq: t.expand(-1, eq.dim), lambda t: 2 - t),
        ("burgers_affine", {}, "collocation", 1.0, zero, lambda t: 2 * (1 - t)),
        ("hjb_quadratic", {}, "collocation", 1.0, zero, lambda t: torch.ones_like(t)),
        ("hjb_lin", {}, "collocation", 1.0, zero, lambda t: torch.ones_like(t)),
        ("hjb_rosenbrock", {}, "collocation", 0.3, zero, lambda t: 2 * t),
        ("hjb_rosenbrock", {}, "test", 0.3, zero, lambda t: torch.ones_like(t)),
    ]


@pytest.mark.parametrize(
    "name,kwargs,sampler,horizon,mean,variance", _gaussian_laws(),
    ids=[f"{law[0]}-{law[2]}" for law in _gaussian_laws()],
)
def test_time_dependent_sampler_laws(name, kwargs, sampler, horizon, mean, variance):
    """t ~ U(0, T) (E t = T/2, Var t = T²/12) and, given t, x ~ N(m(t), v(t)I): the
    standardised z = (x − m(t))/sqrt(v(t)) has mean 0 and variance 1 in each of 5 time
    bins (SE 1/sqrt(n) and sqrt(2/n) over the bin's n = points·d entries). Fokker–Planck
    §3.2–3.3: m = μt, v = 2 − t; Burgers-A: m = t·1, v = 2 − t; Burgers-B: v = 2(1 − t);
    HJB: N(0, I), Rosenbrock training ("code" law) v = 2t."""
    d = 4
    eq = _equation(name, d, **kwargs)
    draw = {"collocation": eq.sample_collocation, "test": eq.sample_test,
            "boundary": eq.sample_boundary}[sampler]
    x = draw(N_LAW, generator=make_generator(9, "law"), dtype=F64)
    t, space = x[:, -1:], x[:, :-1]
    if sampler == "boundary":
        assert bool((t == horizon).all())
    else:
        assert float(t.min()) >= 0 and float(t.max()) <= horizon
        _assert_moment(t, horizon / 2, horizon**2 / 12, "E t")
        _assert_moment((t - horizon / 2) ** 2, horizon**2 / 12, horizon**4 / 180, "Var t")
    z = (space - mean(t, eq)) / variance(t).sqrt()
    edges = torch.linspace(0, horizon, 6, dtype=F64) if horizon > 0 else None
    bins = [torch.ones(N_LAW, dtype=torch.bool)] if edges is None else [
        (t[:, 0] >= lo) & (t[:, 0] <= hi) for lo, hi in zip(edges[:-1], edges[1:])
    ]
    for i, keep in enumerate(bins):
        zb = z[keep]
        _assert_moment(zb, 0.0, 1.0, f"bin {i}: mean of z")
        _assert_moment(zb**2, 1.0, 2.0, f"bin {i}: variance of z")


def test_black_scholes_sampler_law():
    """x_i ~ U(0, 2) i.i.d. (E = 1, Var = 1/3), t ~ U(0, T)."""
    eq = _equation("black_scholes_barenblatt", 4)
    x = eq.sample_collocation(N_LAW, generator=make_generator(10, "law"), dtype=F64)
    assert float(x[:, :-1].min()) >= 0 and float(x[:, :-1].max()) <= 2
    _assert_moment(x[:, :-1], 1.0, 1 / 3, "E x_i")
    _assert_moment((x[:, :-1] - 1) ** 2, 1 / 3, 1 / 5 - 1 / 9, "Var x_i")
    _assert_moment(x[:, -1], eq.horizon / 2, eq.horizon**2 / 12, "E t")


# -- input checks and the Rosenbrock reference at and beyond T ---------------------------


@pytest.mark.parametrize("name", ["fokker_planck_iso", "poisson_two_body", "hjb_quadratic"])
def test_residual_refuses_points_with_the_wrong_number_of_columns(name):
    eq = _equation(name, 4)
    model = Pointwise(lambda z: (z**2).sum(-1))
    good = eq.sample_collocation(5, generator=make_generator(0, "x"), dtype=F64)
    eq.residual(good, lambda q: Autograd().estimate(model, good, q))
    for bad in (torch.randn(5, eq.input_dim + 2, dtype=F64), good[:, :-1], good[0]):
        with pytest.raises(ValueError, match=rf"points must have shape \(N, {eq.input_dim}\)"):
            eq.residual(bad, lambda q, bad=bad: Autograd().estimate(model, bad, q))


def test_rosenbrock_reference_at_and_beyond_the_horizon(tmp_path, monkeypatch):
    """t = T stored in float32 reads back above T in float64: the reference is g there
    (the scale sqrt(2(T − t)) is clamped at 0 before the root, not after); a t really
    beyond T is outside the domain and refused."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(4, seed=2, reference_samples=256)
    xb = eq.sample_boundary(6, generator=make_generator(3, "b"))  # float32, t = T
    assert float(xb[:, -1].double().min()) > eq.horizon  # the rounding in question
    torch.testing.assert_close(eq.exact(xb).double(), eq.terminal_value(xb[:, :-1].double()),
                               rtol=1e-6, atol=1e-6)
    late = xb.double()
    late[:, -1] = eq.horizon + 0.1
    with pytest.raises(ValueError, match=r"t <= T = 0.3"):
        eq.exact(late)
    with pytest.raises(ValueError, match=r"t <= T"):
        cole_hopf(eq.terminal_value, late, horizon=eq.horizon, samples=8,
                  generator=make_generator(0, "w"))


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_time_dependent_equations_declare_the_interval_they_sample(name):
    """Observations are checked against ``time_interval``: every built-in time-dependent
    equation declares it, and its training and test times lie in it (horizon 0.5 where the
    equation takes one, so a declared [0, 1] would show)."""
    kwargs = {"horizon": 0.5} if "horizon" in _equation(name, 3).parameters() else {}
    eq = _equation(name, 3, **kwargs)
    if not eq.time_dependent:
        assert eq.time_interval is None
        return
    low, high = eq.time_interval
    assert (low, high) == (0.0, kwargs.get("horizon", 1.0))
    for sample in (eq.sample_collocation, eq.sample_test, eq.sample_boundary):
        t = sample(512, generator=make_generator(0, "t"), dtype=F64)[:, -1]
        assert float(t.min()) >= low and float(t.max()) <= high
