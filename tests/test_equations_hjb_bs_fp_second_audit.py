"""Tests from a second mutation audit of the HJB, Black–Scholes–Barenblatt and Fokker–Planck
equations: what the earlier audits left free — HJB-LIN at a horizon other than 1 (its exact
solution's terminal value and the hard ansatz's vanishing scale at t = T), which coordinate of
each disjoint Rosenbrock pair carries c₂, the reference cache keyed by the sample count, and
Black–Scholes–Barenblatt's parameters (rate included) rebuilding the instance and its refusal
of a rate of −inf. Every expected
value is a closed form or an autograd computation in float64; all sizes are small."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import BlackScholesBarenblatt, HJBLin, HJBRosenbrock, cole_hopf

F64 = torch.float64


def _points(eq, n, label):
    return eq.sample_collocation(n, generator=make_generator(0, label), dtype=F64)


# -- HJB-LIN at T ≠ 1: u* = Σ_i x_i + T − t, and the hard ansatz is exact at t = T -------------
def test_hjb_lin_exact_is_the_sum_plus_the_remaining_time_at_any_horizon():
    """u*(x, t) = Σ_i x_i + T − t with the instance's T (here 0.4): equal to g = Σ_i x_i at
    t = T and to Σ_i x_i + T at t = 0 (a u* written with T = 1 still solves the PDE, so only
    the values tell)."""
    eq = HJBLin(3, horizon=0.4)
    x = _points(eq, 12, "lin-horizon")
    space = x[:, :-1].sum(1)
    assert torch.allclose(eq.exact(x), space + 0.4 - x[:, -1], rtol=0, atol=1e-12)
    at_end = x.clone()
    at_end[:, -1] = 0.4
    assert torch.allclose(eq.exact(at_end), at_end[:, :-1].sum(1), rtol=0, atol=1e-12)


def test_hjb_lin_hard_ansatz_scale_vanishes_at_the_instance_horizon():
    """The hard ansatz u = (T − t)·u_σ + Σ_i x_i with the instance's T (here 2.5): the scale
    A = T − t is 0 at t = T (so u(·, T) = g whatever the net), 2.5 at t = 0, and ∂_t A = −1."""
    eq = HJBLin(3, horizon=2.5)
    x = _points(eq, 10, "lin-ansatz")
    x[:5, -1] = 2.5
    x[5:, -1] = 0.0
    scale, shift = eq.ansatz_jets(x)
    assert torch.allclose(scale.value[:5], torch.zeros(5, dtype=F64), rtol=0, atol=1e-12)
    assert torch.allclose(scale.value[5:], torch.full((5,), 2.5, dtype=F64), rtol=0, atol=1e-12)
    assert torch.equal(scale.gradient[:, -1], torch.full((10,), -1.0, dtype=F64))
    assert torch.allclose(shift.value, x[:, :-1].sum(1), rtol=0, atol=1e-12)


# -- disjoint Rosenbrock chain: c₂ weighs the second coordinate x_{2i} of each pair ---------------
def test_rosenbrock_disjoint_terminal_puts_c2_on_the_second_of_each_pair():
    """g = Σ_i c₁ᵢ(x_{2i−1} − x_{2i})² + c₂ᵢ x_{2i}² (the paper's form): at d = 4, the terminal
    value, the hard ansatz's shift, its gradient and Hessian diagonal equal the hand-written
    forms (∂g/∂x_{2i−1} = 2c₁ᵢ(x_{2i−1} − x_{2i}), ∂g/∂x_{2i} = −2c₁ᵢ(x_{2i−1} − x_{2i}) + 2c₂ᵢx_{2i},
    diag = (2c₁ᵢ, 2c₁ᵢ + 2c₂ᵢ)), not the pair read the other way round."""
    eq = HJBRosenbrock(4, seed=3, chain="disjoint")
    c1, c2 = eq.coefficients["c1"], eq.coefficients["c2"]
    x = eq.sample_test(6, generator=make_generator(0, "disjoint"), dtype=F64)
    a, b = x[:, 0:4:2], x[:, 1:4:2]
    g = (c1 * (a - b) ** 2 + c2 * b**2).sum(1)
    assert torch.allclose(eq.terminal_value(x[:, :-1]), g, rtol=1e-12, atol=1e-12)
    _, shift = eq.ansatz_jets(x)
    assert torch.allclose(shift.value, g, rtol=1e-12, atol=1e-12)
    grad = torch.stack([2 * c1 * (a - b), -2 * c1 * (a - b) + 2 * c2 * b], dim=-1).reshape(6, 4)
    assert torch.allclose(shift.gradient[:, :-1], grad, rtol=1e-12, atol=1e-12)
    hess = torch.stack([2 * c1, 2 * c1 + 2 * c2], dim=-1).reshape(4).expand(6, 4)
    assert torch.allclose(shift.hessian_diagonal[:, :-1], hess, rtol=1e-12, atol=1e-12)


# -- the cached Cole–Hopf reference is keyed by its sample count ----------------------------------
def test_rosenbrock_reference_cache_distinguishes_the_sample_count(tmp_path, monkeypatch):
    """Two instances differing only in ``reference_samples`` (16 and 48) do not share a cache
    entry: each :meth:`exact` is the Cole–Hopf estimate from its own sample count (the same
    seeded stream), to float64 round-off; ``with_reference_samples`` leaves the original
    instance's count alone."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    few = HJBRosenbrock(3, seed=2, reference_samples=16)
    more = few.with_reference_samples(48)
    assert (few.reference_samples, more.reference_samples) == (16, 48)  # a copy, not self changed
    assert more.coefficients is few.coefficients
    x = few.sample_test(5, generator=make_generator(0, "cache-samples"), dtype=F64)

    def expected(samples):
        return cole_hopf(few.terminal_value, x, horizon=few.horizon, samples=samples,
                         generator=make_generator(2, "hjb_rosenbrock", "cole-hopf"))

    assert torch.allclose(few.exact(x), expected(16), rtol=1e-12, atol=0)
    assert torch.allclose(more.exact(x), expected(48), rtol=1e-12, atol=0)
    assert len(list(tmp_path.glob("hjb_rosenbrock-*.h5"))) == 2


# -- Black–Scholes–Barenblatt: parameters() lists every constructor argument ----------------------
def test_black_scholes_parameters_rebuild_the_instance():
    """parameters() is {constraint, rate, volatility, horizon} with the instance's values, and
    an instance rebuilt from them has the same exact solution exp((r + σ²)(T − t))·‖x‖² (a
    dropped rate would rebuild with r = 0.05)."""
    eq = BlackScholesBarenblatt(3, constraint="soft", rate=-0.2, volatility=0.7, horizon=0.5)
    assert eq.parameters() == {"constraint": "soft", "rate": -0.2, "volatility": 0.7, "horizon": 0.5}
    again = BlackScholesBarenblatt(3, **eq.parameters())
    x = _points(eq, 8, "bs-parameters")
    expected = torch.exp((-0.2 + 0.49) * (0.5 - x[:, -1])) * (x[:, :-1] ** 2).sum(1)
    assert torch.allclose(again.exact(x), expected, rtol=1e-12, atol=0)


def test_black_scholes_refuses_a_rate_of_minus_infinity():
    """rate = −inf is refused by name (the growth bound alone reads max(−inf, 0) = 0 and would
    pass it, leaving u* = exp(−inf·(T − t))·‖x‖² zero before T and NaN at T)."""
    with pytest.raises(ValueError, match="rate must be a finite number"):
        BlackScholesBarenblatt(2, rate=float("-inf"))
