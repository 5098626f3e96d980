"""Second claims audit of pinnlab/equations and pinnlab/nets: what their docstrings promise
(the defaults of the equation interface, the Rosenbrock reference cache, Cole–Hopf's shared
samples, the point blocks, the perturbation helpers), checked against the behaviour."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import pinnlab.equations.base as equation_base
from pinnlab._seeding import make_generator
from pinnlab.equations import (
    EQUATIONS,
    LAPLACIAN,
    ONE,
    VALUE,
    ZERO,
    AbstractEquation,
    BlackScholesBarenblatt,
    FokkerPlanckAniso,
    HJBLin,
    HJBRosenbrock,
    Term,
    cole_hopf,
    make_equation,
)
from pinnlab.equations.fields import solution_fields
from pinnlab.estimators import Autograd, Directional, Value, WeightedLaplacian
from pinnlab.nets import MLP, Perturbation, Pointwise, evaluate_pointwise

F64 = torch.float64


class _Bare(AbstractEquation):
    """The least an equation defines: a sampler, u* and the terms (Δu = source)."""

    name = "second_claims_bare"

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        return torch.rand(n, self.dim, generator=generator, device=generator.device, dtype=dtype)

    def exact(self, x, coefficients=None):
        return (x * x).sum(-1)

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)),)


def _autograd(eq, x, fn):
    return lambda queries: Autograd().estimate(Pointwise(fn), x, queries)


# -- the equation interface's defaults (base.py) ---------------------------------------------
def test_an_equation_without_a_boundary_sampler_refuses_by_name():
    """``sample_boundary`` of an equation that defines none: a NotImplementedError whose
    message is "<name> defines no boundary sampler", naming the equation."""
    with pytest.raises(NotImplementedError, match="^second_claims_bare defines no boundary sampler$"):
        _Bare(2).sample_boundary(3, generator=make_generator(0, "b"))


def test_the_default_source_is_zero_and_the_default_ansatz_the_identity():
    """``source``: "0 by default"; ``ansatz``: "identity by default": the residual of u = ‖x‖²
    under Δu − f is Δu = 2d exactly, and the hard-constrained jets are (ONE, ZERO)."""
    eq = _Bare(3)
    x = eq.sample_collocation(5, generator=make_generator(1, "bare"), dtype=F64)
    assert eq.source(x, {}) == 0.0
    assert eq.ansatz(x, {}) == (ONE, ZERO) and eq.ansatz_jets(x) == (ONE, ZERO)
    residual = eq.residual(x, _autograd(eq, x, eq.exact))
    torch.testing.assert_close(residual, torch.full((5,), 6.0, dtype=F64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eq.solution(x, eq.exact(x)), eq.exact(x), rtol=0, atol=0)


def test_the_default_test_points_boundary_value_and_description():
    """``sample_test``: "the collocation distribution unless overridden"; ``boundary_value``:
    ":meth:`exact` unless an equation knows it more cheaply"; ``draw_coefficients``: "none by
    default"; ``parameters``: the constructor arguments other than dim and seed (the
    constraint); ``time_interval`` and ``domain``: None by default."""
    eq = _Bare(2, seed=3, constraint="soft")
    draws = [getattr(eq, m)(6, generator=make_generator(2, "t"), dtype=F64)
             for m in ("sample_collocation", "sample_test")]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(eq.boundary_value(draws[0]), eq.exact(draws[0]))
    assert eq.coefficients == {} and eq.parameters() == {"constraint": "soft"}
    assert eq.time_interval is None and eq.domain is None and eq.input_dim == 2
    assert repr(eq) == "_Bare(dim=2, seed=3, constraint='soft')"


def test_a_source_that_is_one_tensor_number_is_taken_for_every_point():
    """``_one_per_point(..., constant=True)``: a source may be "one number for all": a 0-d
    tensor source is subtracted at every point, not refused as a wrong shape."""

    class Shifted(_Bare):
        name = "second_claims_shifted"

        def source(self, x, coefficients):
            return torch.tensor(1.5, dtype=x.dtype)

    eq = Shifted(3)
    x = eq.sample_collocation(4, generator=make_generator(3, "s"), dtype=F64)
    residual = eq.residual(x, _autograd(eq, x, eq.exact))
    torch.testing.assert_close(residual, torch.full((4,), 4.5, dtype=F64), rtol=1e-12, atol=1e-12)


def test_coefficients_are_cached_per_device_and_dtype():
    """``coefficients_like``: "The coefficients on x's device and dtype (cached ...)": the
    same dict for a second call in that dtype, another (converted) one for another dtype."""
    eq = FokkerPlanckAniso(3, seed=1)
    x64, x32 = torch.zeros(2, 4, dtype=F64), torch.zeros(2, 4)
    first = eq.coefficients_like(x64)
    assert eq.coefficients_like(x64) is first
    single = eq.coefficients_like(x32)
    assert single is not first and single["mu"].dtype == torch.float32
    assert eq.coefficients_like(x32) is single
    assert torch.equal(first["mu"], eq.coefficients["mu"])


def test_a_tensor_override_of_another_dtype_comes_in_the_points_dtype():
    """``_merge``: overrides come "each in x's dtype": a float32 tensor drift at float64
    points is a float64 drift (the exact solution then is that of the float32 value, widened)."""
    eq = FokkerPlanckAniso(2, seed=1)
    x = eq.sample_test(5, generator=make_generator(4, "o"), dtype=F64)
    mu32 = torch.tensor([0.1, -0.3])
    merged = eq._merge(x, {"mu": mu32})
    assert merged["mu"].dtype == F64 and torch.equal(merged["mu"], mu32.double())
    assert eq.exact(x, {"mu": mu32}).dtype == F64


def test_points_that_fit_one_block_are_one_call_and_more_are_blocks(monkeypatch):
    """``map_point_chunks``: "One call when x fits in one block"; ``rows_per_chunk``: points per
    block of POINT_ELEMENT_BUDGET = 2²² elements, at least one."""
    assert equation_base.POINT_ELEMENT_BUDGET == 2**22
    assert equation_base.rows_per_chunk(4) == 2**20 and equation_base.rows_per_chunk(2**23) == 1
    monkeypatch.setattr(equation_base, "POINT_ELEMENT_BUDGET", 12)  # 4 rows of width 3
    calls = []

    def fn(x, extra):
        calls.append(x.shape[0])
        return x.sum(-1) + extra

    x, extra = torch.arange(27.0).reshape(9, 3), torch.arange(9.0)
    torch.testing.assert_close(equation_base.map_point_chunks(fn, x[:4], extra[:4]), x[:4].sum(-1) + extra[:4])
    assert calls == [4]
    calls.clear()
    torch.testing.assert_close(equation_base.map_point_chunks(fn, x, extra), x.sum(-1) + extra)
    assert calls == [4, 4, 1]


def test_points_that_fit_one_block_take_exactly_the_unchunked_path():
    """``map_point_chunks``: "One call when x fits in one block (so a small input ... takes
    exactly the unchunked path)": the result is the very tensor ``fn`` returned, not a copy
    concatenated from one block."""
    returned = []

    def fn(x):
        returned.append(x.sum(-1))
        return returned[-1]

    out = equation_base.map_point_chunks(fn, torch.ones(5, 3))
    assert out is returned[0]


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_instances_and_samplers_leave_the_global_rng_alone(name):
    """AbstractEquation: coefficients come "from the *problem seed* ... never from the
    training seed" and the samplers "draw from a ``generator`` only": building an instance,
    its test set and its collocation, test and boundary points leave torch's global RNG as
    it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        state = torch.get_rng_state()
        eq = make_equation(name, max(EQUATIONS[name].min_dim, 4), seed=5)
        eq.test_set(6, dtype=F64)
        for method in ("sample_collocation", "sample_test", "sample_boundary"):
            try:
                getattr(eq, method)(6, generator=make_generator(1, name, method), dtype=F64)
            except NotImplementedError:
                pass
        assert torch.equal(torch.get_rng_state(), state)


# -- exact solutions, their PDEs and Cole–Hopf ---------------------------------------------
@pytest.mark.parametrize("power", [1.0, 3.0])
def test_the_hjb_lin_solution_solves_the_equation_at_any_power(power):
    """HJBLin: "The exact solution has ∂_i u = 1 and so solves the equation for any c": its
    residual is 0 at c = 1 and c = 3 (soft constraint, float64 autograd)."""
    eq = HJBLin(3, power=power, constraint="soft", horizon=0.6)
    x = eq.sample_collocation(8, generator=make_generator(5, "lin"), dtype=F64)
    residual = eq.residual(x, _autograd(eq, x, eq.exact))
    assert float(residual.abs().max()) < 1e-12


def test_cole_hopf_shares_one_set_of_samples_among_all_points():
    """``cole_hopf``: "One set of ``samples`` vectors W is shared by all points": a point's
    estimate is the same alone or among others (the same W from the same generator state)."""
    x = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.5, 0.4], [-0.7, 0.2, 0.0]], dtype=F64)

    def g(z):
        return (z * z).sum(-1) + torch.sin(z[..., 0])

    together = cole_hopf(g, x, horizon=1.0, samples=64, generator=torch.Generator().manual_seed(3))
    for i in range(3):
        alone = cole_hopf(g, x[i : i + 1], horizon=1.0, samples=64, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(alone, together[i : i + 1], rtol=1e-14, atol=0)


def test_cole_hopf_blocks_hold_at_most_chunk_elements_numbers_but_a_merged_tail(monkeypatch):
    """``cole_hopf``: a block of W holds at most about ``chunk_elements`` numbers, "up to a
    merged tail of under 16": 17 samples at d = 1 in blocks of 16 are one block of 17."""
    import inspect

    assert "(up to a merged tail of under 16, or 16 / gcd(d, 16) rows" in " ".join(
        inspect.getdoc(cole_hopf).split())
    sizes = []
    randn = torch.randn

    def recording_randn(*shape, **kwargs):
        out = randn(*shape, **kwargs)
        sizes.append(out.numel())
        return out

    x = torch.tensor([[0.2, 0.5]], dtype=F64)
    monkeypatch.setattr(torch, "randn", recording_randn)
    cole_hopf(lambda z: (z * z).sum(-1), x, horizon=1.0, samples=17,
              generator=torch.Generator().manual_seed(0), chunk_elements=16)
    monkeypatch.undo()
    assert sizes == [17]


@pytest.mark.parametrize("constraint", ["hard", "soft"])
def test_black_scholes_asks_for_no_gradient_or_hessian(constraint):
    """BlackScholesBarenblatt: "the weighted Hessian diagonal Σ x_i² ∂_ii u and the
    contraction x·∇u are estimated ... without forming the gradient or Hessian": its residual
    asks only for values, directional derivatives and weighted Laplacians, and is the PDE."""
    eq = BlackScholesBarenblatt(3, constraint=constraint)
    x = eq.sample_collocation(6, generator=make_generator(8, "bs"), dtype=F64)
    asked = []

    def fn(z):
        return torch.sin(z).sum(-1) * (1 + z[:, -1])

    def estimate(queries):
        asked.extend(queries)
        return Autograd().estimate(Pointwise(fn), x, queries)

    residual = eq.residual(x, estimate)
    assert asked and all(isinstance(q, (Value, Directional, WeightedLaplacian)) for q in asked)
    xg = x.clone().requires_grad_(True)
    scale, shift = eq.ansatz_jets(xg)
    u = scale.value * fn(xg) + shift.value if constraint == "hard" else fn(xg)
    (grad,) = torch.autograd.grad(u.sum(), xg, create_graph=True)
    hess = torch.stack([torch.autograd.grad(grad[:, i].sum(), xg, retain_graph=True)[0][:, i] for i in range(3)], 1)
    space = x[:, :-1]
    pde = grad[:, -1] + 0.5 * 0.4**2 * (space**2 * hess).sum(1) - 0.05 * (u - (space * grad[:, :-1]).sum(1))
    torch.testing.assert_close(residual, pde.detach(), rtol=1e-10, atol=1e-10)


# -- the Rosenbrock reference cache (hjb.py) ------------------------------------------------
def test_the_reference_cache_is_shared_across_training_laws_and_constraints(tmp_path, monkeypatch):
    """HJBRosenbrock: the cache is "keyed by a hash of every parameter the reference depends
    on (not the training law or the constraint)": one file serves all four variants."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    first = HJBRosenbrock(3, seed=2, reference_samples=32)
    x = first.test_set(4, dtype=F64)
    u = first.exact(x)
    for law in ("code", "test"):
        for constraint in ("hard", "soft"):
            other = HJBRosenbrock(3, seed=2, reference_samples=32, train_law=law, constraint=constraint)
            assert other._cache_key(x) == first._cache_key(x)
            assert torch.equal(other.exact(x), u)
    assert len(list(tmp_path.glob("*.h5"))) == 1


def test_an_unreadable_cache_entry_is_recomputed_and_replaced(tmp_path, monkeypatch):
    """``exact``: "unreadable ... entry: recompute and replace it": a file that is no HDF5 at
    the entry's path gives the reference, and the path then holds it."""
    import h5py

    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(3, seed=2, reference_samples=32)
    x = eq.test_set(4, dtype=F64)
    u = eq.exact(x)
    (path,) = tmp_path.glob("*.h5")
    path.write_bytes(b"not an hdf5 file")
    assert torch.equal(HJBRosenbrock(3, seed=2, reference_samples=32).exact(x), u)
    with h5py.File(path, "r") as fh:
        assert torch.equal(torch.from_numpy(fh["u"][...]), u)


def test_the_reference_is_written_atomically(tmp_path, monkeypatch):
    """``exact``: the cached reference is "written atomically" (a temporary file, then a
    rename): when the rename fails, nothing is left at the entry's path (no half-written
    entry a later run would read), and the run gets its reference with a warning."""
    import os

    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(3, seed=2, reference_samples=32)
    x = eq.test_set(4, dtype=F64)
    expected = eq.exact(x)
    (path,) = tmp_path.glob("*.h5")
    path.unlink()

    def refuse(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.warns(UserWarning, match="cannot cache the reference"):
        u = HJBRosenbrock(3, seed=2, reference_samples=32).exact(x)
    monkeypatch.undo()
    assert torch.equal(u, expected)
    assert not path.exists()


# -- fields and nets ---------------------------------------------------------------------
def test_the_value_of_u_sigma_is_always_requested():
    """``solution_fields``: "u_σ itself is always requested": a Laplacian under the identity
    ansatz (which does not use u_σ) still asks for Value() first."""
    x = torch.rand(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    asked = []

    def estimate(queries):
        asked.extend(queries)
        return Autograd().estimate(Pointwise(lambda z: (z**3).sum(-1)), x, queries)

    out = solution_fields(x, [LAPLACIAN], estimate, spatial_dim=2)
    assert isinstance(asked[0], Value) and len(asked) == 2
    torch.testing.assert_close(out[LAPLACIAN], 6 * x.sum(-1), rtol=1e-12, atol=1e-12)
    assert set(out) == {LAPLACIAN} and VALUE not in out


@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per-point"])
def test_materialize_gives_only_the_patterns_asked_for(per_point):
    """``Perturbation.materialize``: "The explicit inputs, `(N, S, K, D)` ... ``coefficients``:
    only these patterns (default: all)"; ``num_samples`` is K for `(K, D)` and `(N, K, D)` parts."""
    g = torch.Generator().manual_seed(1)
    center = torch.randn(2, 3, generator=g, dtype=F64)
    shape = (2, 4, 3) if per_point else (4, 3)
    parts = (torch.randn(*shape, generator=g, dtype=F64), torch.randn(*shape, generator=g, dtype=F64))
    pert = Perturbation(center, parts, ((1.0, 0.0), (-1.0, 2.0), (0.0, 0.0)))
    assert pert.num_samples == 4 and pert.num_patterns == 3
    assert pert.materialize().shape == (2, 3, 4, 3)
    only = pert.materialize(((-1.0, 2.0),))
    assert only.shape == (2, 1, 4, 3)
    p0, p1 = (p if per_point else p[None] for p in parts)
    torch.testing.assert_close(only[:, 0], center[:, None] - p0 + 2 * p1, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(pert.materialize()[:, 1], only[:, 0], rtol=0, atol=0)


def test_evaluate_pointwise_on_a_tensor_is_the_function_and_on_a_perturbation_n_s_k():
    """``evaluate_pointwise``: "Returns `(N,)` for a tensor and `(N, S, K)` for a
    Perturbation", the latter the function at the explicit inputs."""
    def f(z):
        return (z**2).sum(-1) + z[..., 0]

    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=F64)
    assert torch.equal(evaluate_pointwise(f, x), f(x))
    parts = (torch.tensor([[0.1, 0.2], [0.3, -0.1], [0.0, 1.0]], dtype=F64),)
    pert = Perturbation(x, parts, ((1.0,), (-1.0,), (0.0,)))
    values = evaluate_pointwise(f, pert)
    assert values.shape == (2, 3, 3)
    inputs = torch.stack([x[:, None] + c * parts[0][None] for c in (1.0, -1.0, 0.0)], dim=1)
    torch.testing.assert_close(values, f(inputs), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per-point"])
def test_the_first_layer_of_a_perturbation_is_formed_once_for_all_patterns(per_point):
    """Perturbation: "W δ_p is computed once for all sign patterns and, with shared noise,
    once for all points: the first-layer cost falls from N·S·K·D·w to (N + P·K)·D·w"
    (per-point noise: (N + N·P·K)·D·w); the centre pattern costs one output row per point.
    Counted in flops (2 per multiply-add) for an MLP of one hidden layer."""
    n, d, w, k = 3, 5, 4, 6
    net = MLP(d, width=w, depth=2, generator=torch.Generator().manual_seed(0), dtype=F64)
    g = torch.Generator().manual_seed(1)
    shape = (n, k, d) if per_point else (k, d)
    parts = tuple(torch.randn(*shape, generator=g, dtype=F64) for _ in range(2))
    patterns = ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (0.0, 0.0))
    pert = Perturbation(torch.randn(n, d, generator=g, dtype=F64), parts, patterns)
    with FlopCounterMode(display=False) as counter:
        values = net(pert)
    noise_rows = (n if per_point else 1) * 2 * k
    first, output = 2 * (n + noise_rows) * d * w, 2 * (n * 3 * k + n) * w
    assert counter.get_total_flops() == first + output
    explicit = net(pert.materialize().reshape(-1, d)).reshape(n, 4, k)
    torch.testing.assert_close(values, explicit, rtol=1e-12, atol=1e-12)
