"""Tests from a third mutation audit of the HJB, Black–Scholes–Barenblatt and Fokker–Planck
equations: what the earlier audits left free — the Cole–Hopf sample blocks merging only a
tail of under 16 numbers, the Rosenbrock reference's sample count stored as an integer, the
Rosenbrock terminal cost and soft terminal target kept in the points' float32, and the
hard-ansatz jets' time column (Hessian diagonal included) against autograd. Every
expected value is a closed form or an independent float64 computation; all sizes are small."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import BlackScholesBarenblatt, HJBLin, HJBQuadratic, HJBRosenbrock, cole_hopf
from pinnlab.equations.hjb import _sample_blocks
from tests.equations.test_contract import _derivatives  # (autograd: fn(x), ∇fn, diag ∇²fn)

F64 = torch.float64


# -- Cole–Hopf sample blocks: only a tail of under 16 numbers joins the previous block ------------
def test_cole_hopf_tail_of_exactly_sixteen_numbers_stays_its_own_block():
    """Blocks hold at most ``chunk_elements`` numbers "give or take a merged tail of under 16":
    at d = 1 with 32-number blocks, 48 samples leave a tail of exactly 16 numbers, which is
    drawn as its own block (16 numbers take torch.randn's vectorised path); 40 samples leave
    8, which join the last block. The estimate (d = 2, 24 samples in blocks of 16 and 8) is
    the single-block one."""
    assert _sample_blocks(48, 1, 32) == [(0, 32), (32, 48)]
    assert _sample_blocks(40, 1, 32) == [(0, 40)]
    assert _sample_blocks(24, 2, 32) == [(0, 16), (16, 24)]  # 8 rows × 2 = 16 numbers: kept apart
    eq = HJBRosenbrock(2, seed=0)
    x = eq.sample_test(4, generator=make_generator(0, "blocks"), dtype=F64)

    def estimate(chunk):
        return cole_hopf(eq.terminal_value, x, horizon=eq.horizon, samples=24,
                         generator=make_generator(1, "w"), chunk_elements=chunk)

    torch.testing.assert_close(estimate(32), estimate(2**24), rtol=1e-13, atol=0)


# -- HJB-Rosenbrock: the sample count is an integer; g and u(·, T) keep the points' dtype ---------
def test_rosenbrock_reference_sample_count_is_stored_as_an_integer(tmp_path, monkeypatch):
    """``reference_samples=16.0`` (a count read as a float, e.g. from a config) is the count 16:
    parameters() reports the int 16, and the reference is the one of ``reference_samples=16``,
    served from the same cache entry (one file for all three); likewise
    ``with_reference_samples(16.0)``."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    as_float = HJBRosenbrock(2, seed=1, reference_samples=16.0)
    as_int = HJBRosenbrock(2, seed=1, reference_samples=16)
    again = HJBRosenbrock(2, seed=1, reference_samples=8).with_reference_samples(16.0)
    for eq in (as_float, again):
        count = eq.parameters()["reference_samples"]
        assert count == 16 and type(count) is int
    x = as_int.sample_test(3, generator=make_generator(0, "int-samples"), dtype=F64)
    expected = cole_hopf(as_int.terminal_value, x, horizon=as_int.horizon, samples=16,
                         generator=make_generator(1, "hjb_rosenbrock", "cole-hopf"))
    torch.testing.assert_close(as_float.exact(x), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(as_int.exact(x), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(again.exact(x), expected, rtol=1e-12, atol=0)
    assert len(list(tmp_path.glob("hjb_rosenbrock-*.h5"))) == 1


def test_rosenbrock_terminal_and_boundary_values_keep_float32():
    """The float64 coefficients are cast to the points: at float32 points the terminal cost g
    and the soft terminal target u(x, T) = g(x) are float32 and equal g computed in float64
    (to float32 round-off)."""
    eq = HJBRosenbrock(4, seed=2)
    xb = eq.sample_boundary(8, generator=make_generator(0, "f32"))
    assert xb.dtype == torch.float32
    c1, c2 = eq.coefficients["c1"], eq.coefficients["c2"]
    space = xb[:, :-1].double()
    g = (c1 * (space[:, :-1] - space[:, 1:]) ** 2 + c2 * space[:, 1:] ** 2).sum(1)
    for value in (eq.terminal_value(xb[:, :-1]), eq.boundary_value(xb)):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.double(), g, rtol=1e-6, atol=1e-6)


# -- hard-ansatz jets in every column, time included ---------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: BlackScholesBarenblatt(3, rate=0.11, volatility=0.3, horizon=0.6),
    lambda: HJBQuadratic(3, horizon=0.5),
    lambda: HJBLin(3, horizon=0.5),
    lambda: HJBRosenbrock(4, seed=2),
    lambda: HJBRosenbrock(4, seed=2, chain="disjoint"),
], ids=["black_scholes", "hjb_quadratic", "hjb_lin", "rosenbrock", "rosenbrock_disjoint"])
def test_ansatz_jets_match_autograd_in_every_column_time_included(make):
    """Scale A and shift B of the hard ansatz: value, gradient and Hessian diagonal equal
    autograd's in all D = d + 1 columns. The time column of B's Hessian diagonal is
    ∂_tt B = 0 (B depends on x only), which the contract test, comparing only the spatial
    columns, leaves free; jets document time as their last column."""
    eq = make()
    x = eq.sample_collocation(6, generator=make_generator(0, "jets"), dtype=F64)
    for index in (0, 1):
        def fn(z, index=index):  # (+ 0·‖z‖² keeps a graph for the second derivatives of an affine A)
            return eq.ansatz_jets(z)[index].value + 0 * (z**2).sum(-1)

        value, grad, hess = _derivatives(fn, x)
        jet = eq.ansatz_jets(x)[index]
        torch.testing.assert_close(jet.value, value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(jet.gradient, grad, rtol=1e-12, atol=1e-12)
        got = torch.zeros_like(x) if jet.hessian_diagonal is None else jet.hessian_diagonal
        torch.testing.assert_close(got, hess, rtol=1e-12, atol=1e-12)
    shift_hess = eq.ansatz_jets(x)[1].hessian_diagonal  # (None: B affine, HJB-LIN)
    assert shift_hess is None or torch.equal(shift_hess[:, -1], torch.zeros(6, dtype=F64))
