"""Tests from a mutation audit of the HJB, Black–Scholes–Barenblatt and Burgers equations:
what the earlier audits left free — HJB-LIN's residual at a power other than the default,
the Rosenbrock instance's coefficient stream and default sample count, the Cole–Hopf
reference's float64 arithmetic, its single Monte Carlo block whenever the samples fit, its
point chunks when W's last block is short, its refusal of a late point in any row, and the
cached reference's key (the points in float64) and refusal of a non-finite estimate. Every
expected value is a closed form or an independent float64 computation; all sizes are small."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import HJBLin, HJBRosenbrock, cole_hopf
from pinnlab.estimators import Autograd
from pinnlab.nets import Pointwise
from tests.equations.test_cole_hopf_memory import _cole_hopf_single_draw
from tests.equations.test_contract import _derivatives, generic_function

F64 = torch.float64


def _square(z):
    return (z**2).sum(-1)


# -- HJB-LIN: the instance's power c, not the default 1.75, in the residual ----------------------
@pytest.mark.parametrize("power", [1.0, 1.3, 3.0])
@pytest.mark.parametrize("constraint", ["soft", "hard"])
def test_hjb_lin_residual_uses_the_instance_power(power, constraint):
    """R[u] = u_t + Δu − (1/d)Σ_i |∂_i u|^c + 2 with the instance's c, for a generic u (the
    exact solution, with ∂_i u = 1, solves the PDE at every c and cannot tell): against
    autograd, to relative 1e-10, and away from the 1.75 form."""
    d = 3
    eq = HJBLin(d, power=power, constraint=constraint, horizon=0.7)
    v, u = generic_function(eq)
    x = eq.sample_collocation(16, generator=make_generator(0, "lin-power"), dtype=F64)
    _, grad, hess = _derivatives(u, x)

    def written_out(c):
        return grad[:, d] + hess[:, :d].sum(1) - (grad[:, :d].abs() ** c).sum(1) / d + 2

    expected = written_out(power)
    got = eq.residual(x, lambda q: Autograd().estimate(Pointwise(v), x, q))
    scale = max(1.0, float(expected.abs().max()))
    assert float((got - expected).abs().max()) <= 1e-10 * scale
    assert float((got - written_out(1.75)).abs().max()) > 1e-3


# -- the Rosenbrock instance: c₁ and c₂ are the two rows of one draw from the problem seed -------
@pytest.mark.parametrize("chain,count", [("overlapping", 4), ("disjoint", 2)])
def test_rosenbrock_coefficients_are_the_rows_of_the_seeded_draw(chain, count):
    """c₁ is the first and c₂ the second row of torch.rand(2, count) from the problem seed's
    coefficient stream (count = d − 1 overlapping, d/2 disjoint): the instance, and with it
    every cached reference and published result, is that draw, not c₁ and c₂ swapped."""
    eq = HJBRosenbrock(5 if chain == "overlapping" else 4, seed=7, chain=chain)
    c = torch.rand(2, count, generator=make_generator(7, "hjb_rosenbrock", "coefficients"), dtype=F64)
    assert torch.equal(eq.coefficients["c1"], c[0])
    assert torch.equal(eq.coefficients["c2"], c[1])


# -- Cole–Hopf: float64 arithmetic whatever the points' dtype ------------------------------------
def test_cole_hopf_computes_in_float64_from_float32_points():
    """Float32 points are converted first: the estimate is float64 and the very numbers of
    the same points given in float64 (computing in float32 loses ~1e-7 relative, and a
    reference cached from float32 points is served for float64 ones: the key is float64)."""
    eq = HJBRosenbrock(3, seed=1)
    x32 = eq.test_set(4, dtype=torch.float32)
    kw = dict(horizon=eq.horizon, samples=256)
    u32 = cole_hopf(eq.terminal_value, x32, generator=make_generator(0, "w"), **kw)
    u64 = cole_hopf(eq.terminal_value, x32.double(), generator=make_generator(0, "w"), **kw)
    assert u32.dtype == F64 and u64.dtype == F64
    assert torch.equal(u32, u64)


def test_rosenbrock_reference_from_float32_points_is_the_float64_one(tmp_path, monkeypatch):
    """exact(float32 points) computed in an empty cache is the float64 reference of the same
    points rounded to float32 (its float64 entry then serves exact(float64 points))."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "a"))
    eq = HJBRosenbrock(3, seed=1, reference_samples=256)
    x32 = eq.test_set(4, dtype=torch.float32)
    reference = eq.exact(x32.double())
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "b"))
    eq.exact(x32)
    assert torch.equal(eq.exact(x32.double()), reference)


# -- Cole–Hopf: all samples in one block when they fit exactly -----------------------------------
def test_cole_hopf_samples_that_fit_exactly_form_one_block():
    """samples·d = chunk_elements: all samples fit, so W is one block and the estimate is
    bit for bit the single-draw code's (one log-sum-exp), not a sum regrouped into blocks."""
    from pinnlab.equations.hjb import _sample_blocks

    dim, samples = 3, 40
    assert _sample_blocks(samples, dim, samples * dim) == [(0, samples)]
    eq = HJBRosenbrock(dim, seed=2)
    x = eq.test_set(5, dtype=F64)
    kw = dict(horizon=eq.horizon, samples=samples, chunk_elements=samples * dim)
    u = cole_hopf(eq.terminal_value, x, generator=make_generator(0, "w"), **kw)
    assert torch.equal(u, _cole_hopf_single_draw(eq.terminal_value, x, generator=make_generator(0, "w"), **kw))


def test_cole_hopf_point_chunks_follow_the_first_block(monkeypatch):
    """No points × samples × d chunk above chunk_elements when W's last block is smaller
    than the others (d = 3, 40 samples, 96 elements: blocks of 32 and 8 samples, so one point
    per chunk); the estimate is the single draw's, up to the log-sum-exp grouping."""
    from pinnlab.equations.hjb import _sample_blocks

    dim, samples, chunk = 3, 40, 96
    assert _sample_blocks(samples, dim, chunk) == [(0, 32), (32, 40)]
    eq = HJBRosenbrock(dim, seed=2)
    x = eq.test_set(5, dtype=F64)
    sizes = []

    def terminal(z):
        sizes.append(z.numel())
        return eq.terminal_value(z)

    kw = dict(horizon=eq.horizon, samples=samples, chunk_elements=chunk)
    u = cole_hopf(terminal, x, generator=make_generator(0, "w"), **kw)
    assert max(sizes) <= chunk and sum(sizes) == 5 * samples * dim
    reference = _cole_hopf_single_draw(eq.terminal_value, x, generator=make_generator(0, "w"), **kw)
    torch.testing.assert_close(u, reference, rtol=1e-13, atol=1e-13)


# -- Cole–Hopf: a late point is refused wherever it stands ----------------------------------------
@pytest.mark.parametrize("late", [0, 1, 3])
def test_cole_hopf_refuses_a_late_point_at_any_row(late):
    """u is defined for t ≤ T only: one point at t = T + 0.01 among points before T is a
    ValueError naming that t, whether it is the first row or not (it is not read as T)."""
    x = torch.tensor([[0.1, 0.2, 0.0], [0.3, -0.4, 0.1], [1.0, 0.5, 0.2], [-0.2, 0.0, 0.25]], dtype=F64)
    x[late, -1] = 0.31
    with pytest.raises(ValueError, match=r"t <= T = 0.3, got t up to 0.31"):
        cole_hopf(_square, x, horizon=0.3, samples=16, generator=make_generator(0, "w"))


# -- the Rosenbrock reference: its default sample count, its key, a non-finite estimate ----------
def test_rosenbrock_reference_defaults_to_two_hundred_thousand_samples():
    """2·10⁵ Monte Carlo samples by default (the official code's and the docstring's count)."""
    eq = HJBRosenbrock(2)
    assert eq.reference_samples == 200_000 and eq.parameters()["reference_samples"] == 200_000
    assert eq.horizon == 0.3 and eq.chain == "overlapping" and eq.train_law == "code"


def test_rosenbrock_reference_cache_keys_the_points_in_float64(tmp_path, monkeypatch):
    """Two float64 point sets that differ by 1e-12 (below float32's resolution) are two
    cache entries: each served reference is the one computed for its own points."""
    eq = HJBRosenbrock(2, seed=3, reference_samples=64)
    x = eq.test_set(3, dtype=F64)
    y = x.clone()
    y[:, 0] += 1e-12
    assert torch.equal(x.float(), y.float()) and not torch.equal(x, y)
    alone = {}
    for name, points in (("x", x), ("y", y)):
        monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / name))
        alone[name] = eq.exact(points)
    assert not torch.equal(alone["x"], alone["y"])
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "shared"))
    assert torch.equal(eq.exact(x), alone["x"])
    assert torch.equal(eq.exact(y), alone["y"])
    assert len(list((tmp_path / "shared").glob("*.h5"))) == 2


def test_rosenbrock_non_finite_reference_is_refused_and_not_cached(tmp_path, monkeypatch):
    """At a point where g overflows (x = 1e200 at t = T) the estimate is inf: a ValueError
    counting the points, and no cache entry (it would be served, or recomputed, as data)."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(2, seed=3, reference_samples=16)
    x = torch.tensor([[0.5, -0.5, 0.3], [1e200, 1e200, 0.3], [0.1, 0.2, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"non-finite Cole–Hopf reference at 1 points"):
        eq.exact(x)
    assert list(tmp_path.glob("*.h5")) == []
