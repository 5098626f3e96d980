"""Samplers in place (few (n, d) temporaries at d = 10⁵), drawing the very same points as before."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import pinnlab.equations.base as equation_base
from pinnlab._seeding import make_generator
from pinnlab.equations import (
    EQUATIONS,
    BlackScholesBarenblatt,
    Burgers,
    BurgersAffine,
    FokkerPlanckAniso,
    FokkerPlanckIso,
    HJBLin,
    HJBQuadratic,
    HJBRosenbrock,
    PoissonTwoBody,
    make_equation,
)

F32, F64 = torch.float32, torch.float64


# -- the samplers before they worked in place, kept verbatim as the reference ----------------
def _old_fokker_planck(eq, n, generator, dtype, t):
    mu = eq.coefficients["mu"].to(device=generator.device, dtype=dtype)
    z = torch.randn(n, eq.dim, generator=generator, device=generator.device, dtype=dtype)
    return torch.cat([mu * t + torch.sqrt(2 - t) * z, t], dim=1)


def _old_fokker_planck_collocation(eq, n, *, generator, dtype):
    t = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
    return _old_fokker_planck(eq, n, generator, dtype, t)


def _old_fokker_planck_boundary(eq, n, *, generator, dtype):
    return _old_fokker_planck(eq, n, generator, dtype, torch.zeros(n, 1, device=generator.device, dtype=dtype))


def _old_burgers_at(eq, t, generator):
    z = torch.randn(t.shape[0], eq.dim, generator=generator, device=t.device, dtype=t.dtype)
    return torch.cat([t + torch.sqrt(2 - t) * z, t], dim=1)


def _old_burgers_affine_at(eq, t, generator):
    z = torch.randn(t.shape[0], eq.dim, generator=generator, device=t.device, dtype=t.dtype)
    return torch.cat([torch.sqrt(2 * (1 - t)) * z, t], dim=1)


def _old_burgers_collocation(at):
    def sample(eq, n, *, generator, dtype):
        t = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return at(eq, t, generator)
    return sample


def _old_burgers_boundary(at):
    def sample(eq, n, *, generator, dtype):
        return at(eq, torch.zeros(n, 1, device=generator.device, dtype=dtype), generator)
    return sample


def _old_hjb_time(eq, n, generator, dtype):
    return eq.horizon * torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)


def _old_hjb_collocation(eq, n, *, generator, dtype):
    t = _old_hjb_time(eq, n, generator, dtype)
    z = torch.randn(n, eq.dim, generator=generator, device=generator.device, dtype=dtype)
    return torch.cat([z, t], dim=1)


def _old_hjb_boundary(eq, n, *, generator, dtype):
    z = torch.randn(n, eq.dim, generator=generator, device=generator.device, dtype=dtype)
    return torch.cat([z, torch.full((n, 1), eq.horizon, dtype=dtype, device=z.device)], 1)


def _old_rosenbrock_collocation(eq, n, *, generator, dtype):
    if eq.train_law == "test":
        return _old_hjb_collocation(eq, n, generator=generator, dtype=dtype)
    t = _old_hjb_time(eq, n, generator, dtype)
    z = torch.randn(n, eq.dim, generator=generator, device=generator.device, dtype=dtype)
    return torch.cat([torch.sqrt(2 * t) * z, t], dim=1)


def _old_black_scholes_box(eq, n, generator, dtype):
    return 2 * torch.rand(n, eq.dim, generator=generator, device=generator.device, dtype=dtype)


def _old_black_scholes_collocation(eq, n, *, generator, dtype):
    space = _old_black_scholes_box(eq, n, generator, dtype)
    t = eq.horizon * torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
    return torch.cat([space, t], 1)


def _old_black_scholes_boundary(eq, n, *, generator, dtype):
    space = _old_black_scholes_box(eq, n, generator, dtype)
    return torch.cat([space, torch.full((n, 1), eq.horizon, dtype=dtype, device=space.device)], 1)


# (make(dim), old collocation, old test, old boundary)
CASES = {
    "fokker_planck_iso": (FokkerPlanckIso, _old_fokker_planck_collocation, _old_fokker_planck_collocation,
                          _old_fokker_planck_boundary),
    "fokker_planck_aniso": (lambda d: FokkerPlanckAniso(d, seed=3), _old_fokker_planck_collocation,
                            _old_fokker_planck_collocation, _old_fokker_planck_boundary),
    "burgers": (lambda d: Burgers(d, viscosity=0.3), _old_burgers_collocation(_old_burgers_at),
                _old_burgers_collocation(_old_burgers_at), _old_burgers_boundary(_old_burgers_at)),
    "burgers_affine": (BurgersAffine, _old_burgers_collocation(_old_burgers_affine_at),
                       _old_burgers_collocation(_old_burgers_affine_at), _old_burgers_boundary(_old_burgers_affine_at)),
    "hjb_quadratic": (lambda d: HJBQuadratic(d, horizon=0.7), _old_hjb_collocation, _old_hjb_collocation,
                      _old_hjb_boundary),
    "hjb_lin": (HJBLin, _old_hjb_collocation, _old_hjb_collocation, _old_hjb_boundary),
    "hjb_rosenbrock": (lambda d: HJBRosenbrock(max(d, 2)), _old_rosenbrock_collocation, _old_hjb_collocation,
                       _old_hjb_boundary),
    "hjb_rosenbrock_test_law": (lambda d: HJBRosenbrock(max(d, 2), train_law="test"), _old_rosenbrock_collocation,
                                _old_hjb_collocation, _old_hjb_boundary),
    "black_scholes_barenblatt": (lambda d: BlackScholesBarenblatt(d, horizon=0.6), _old_black_scholes_collocation,
                                 _old_black_scholes_collocation, _old_black_scholes_boundary),
}


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("dim,n", [(1, 1), (1, 7), (3, 5), (17, 40)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_samplers_draw_the_points_they_drew_before(case, dim, n, dtype):
    """Collocation, test and boundary points, and the test set, are bit for bit those of
    the samplers before they worked in place (seeds and stored results depend on them),
    in float32 and float64, for draws of fewer and more than 16 numbers (torch.randn
    fills those by different code paths)."""
    make, old_collocation, old_test, old_boundary = CASES[case]
    eq = make(dim)
    for method, old in (("sample_collocation", old_collocation), ("sample_test", old_test),
                        ("sample_boundary", old_boundary)):
        new = getattr(eq, method)(n, generator=make_generator(4, case, method), dtype=dtype)
        ref = old(eq, n, generator=make_generator(4, case, method), dtype=dtype)
        assert new.dtype == dtype and new.is_contiguous(), method
        assert torch.equal(new, ref), method
    test_set = old_test(eq, n, generator=make_generator(eq.seed, eq.name, "test", n), dtype=F64).to(dtype)
    assert torch.equal(eq.test_set(n, dtype=dtype), test_set)


@pytest.mark.parametrize("budget", [equation_base.POINT_ELEMENT_BUDGET, 40])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_exact_values_are_those_of_a_float64_copy(name, dtype, budget, monkeypatch, tmp_path):
    """``exact_values(x)``, which the tuning reference objective, the DeepXDE adapter and
    bench_horizon_bias now call, converts block by block the values that
    ``exact(x.double())`` gave by converting all of x first: bit for bit, in one block and
    in several (a budget of 40 numbers: blocks of 2 points at d = 17)."""
    monkeypatch.setattr(equation_base, "POINT_ELEMENT_BUDGET", budget)
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = make_equation(name, 17, seed=2, **({"reference_samples": 64} if name == "hjb_rosenbrock" else {}))
    x = eq.test_set(9, dtype=dtype)
    values = eq.exact_values(x)
    assert values.dtype == F64
    assert torch.equal(values, eq.exact(x.double()))


TUNE_REFERENCE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {sigma: 0.05, samples: 4}
trainer: {steps: 2, lr: 1.0e-2, schedule: constant, batch_size: 16, dtype: float32}
tune:
  tunables: {weights.residual: {}}
  objective: {kind: reference, points: 64}
  outer_steps: 1
  horizon: 2
"""


def test_the_tuning_reference_objective_converts_its_points_block_by_block(tmp_path, monkeypatch):
    """u* of the reference objective's float32 points in float64 without a float64 copy of
    all of them (``exact(points.double())``): exact sees blocks of at most 4 points (a
    budget of 12 numbers at D = 3), never the 64 points, and its values are those of
    ``exact_values``."""
    from pinnlab import config as configuration
    from pinnlab.tuning.setup import build_tuning

    monkeypatch.setattr(equation_base, "POINT_ELEMENT_BUDGET", 12)
    seen, original = [], PoissonTwoBody.exact

    def spy(self, x, coefficients=None):
        seen.append((x.shape[0], x.dtype))
        return original(self, x, coefficients)

    monkeypatch.setattr(PoissonTwoBody, "exact", spy)
    path = tmp_path / "tune.yaml"
    path.write_text(TUNE_REFERENCE)
    setup = build_tuning(configuration.load(path, []))
    assert seen and all(rows <= 4 and dtype == F64 for rows, dtype in seen), seen
    with torch.no_grad():
        assert torch.isfinite(setup.outer_loss(setup.init[0], setup.phi0))


class _LargeAllocations(TorchDispatchMode):
    """Counts the ops that return a tensor in fresh memory (no input's storage) of at least
    ``numel`` elements: the (n, d) arrays a sampler allocates."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        self.count += sum(1 for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)
                          and t.numel() >= self.numel and t.untyped_storage().data_ptr() not in inputs)
        return out


# (n, d)-sized allocations of one draw: the noise and the output, or the output alone
# (before: Fokker–Planck 5, Burgers 4, Burgers-B 3, Rosenbrock's training law 3, Black–Scholes 3)
ALLOCATIONS = {"black_scholes_barenblatt": 1}


@pytest.mark.parametrize("method", ["sample_collocation", "sample_test", "sample_boundary"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_samplers_allocate_at_most_two_arrays_of_the_points_size(case, method):
    """A 2,000-point float64 test set is 1.6 GB at d = 10⁵: each allocation of that size
    counts (the samplers peaked at up to 8x their output)."""
    eq, n = CASES[case][0](64), 32
    with _LargeAllocations(n * eq.dim) as mode:
        x = getattr(eq, method)(n, generator=make_generator(0, "count"), dtype=F64)
    assert x.shape == (n, eq.dim + 1)
    assert mode.count <= ALLOCATIONS.get(case, 2)
