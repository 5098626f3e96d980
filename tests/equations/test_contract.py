"""Contract tests run on every registered equation (botorch-style family checks)."""

from __future__ import annotations

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
