"""The Log and Logit maps and what reparameterize() keeps of a problem (float64).

Logit is pinned with low ≠ 0 (with low = 0, width and high coincide), both maps refuse
values on their boundary, and a reparameterised problem keeps the inner_lr that
Hessian-free takes as its default α.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import BilevelProblem, HessianFree, hypergradient
from pinnlab.bilevel.base import flatten
from pinnlab.bilevel.parameterization import Log, Logit, reparameterize

from .problems import F64, Ridge


def test_logit_maps_onto_low_high_and_back():
    """forward(u) = low + (high − low)·sigmoid(u) for (low, high) = (1, 3): forward(0) = 2,
    forward(±40) → the bounds; inverse(forward(u)) = u to 1e-12, and inverse(low + (high −
    low)p) = log(p/(1 − p))."""
    par = Logit(1.0, 3.0)
    u = torch.tensor([-2.0, 0.0, 0.7, 3.0], dtype=F64)
    torch.testing.assert_close(par.forward(u), 1.0 + 2.0 * torch.sigmoid(u), rtol=1e-15, atol=0)
    assert float(par.forward(torch.tensor(0.0, dtype=F64))) == 2.0
    torch.testing.assert_close(par.inverse(par.forward(u)), u, rtol=1e-12, atol=1e-12)
    p = torch.tensor([0.25, 0.5, 0.9], dtype=F64)
    torch.testing.assert_close(par.inverse(1.0 + 2.0 * p), torch.log(p / (1 - p)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("value", [1.0, 3.0, 0.5, 3.5])
def test_logit_inverse_refuses_values_outside_the_open_interval(value):
    """A value on a bound (or beyond) has no finite u: refused, not mapped to ±inf or NaN."""
    with pytest.raises(ValueError, match=r"must lie in \(1\.0, 3\.0\)"):
        Logit(1.0, 3.0).inverse(torch.tensor([2.0, value], dtype=F64))


def test_logit_refuses_an_empty_interval():
    with pytest.raises(ValueError, match="Logit needs high > low"):
        Logit(2.0, 2.0)
    with pytest.raises(ValueError, match="Logit needs high > low"):
        Logit(2.0, 1.0)


def test_log_inverse_refuses_zero():
    """log(0) = −inf is no usable unconstrained value: 0 is refused like a negative value."""
    with pytest.raises(ValueError, match="must be > 0"):
        Log().inverse(torch.tensor([1.0, 0.0], dtype=F64))
    torch.testing.assert_close(Log().inverse(torch.tensor([1e-300], dtype=F64)),
                               torch.log(torch.tensor([1e-300], dtype=F64)), rtol=0, atol=0)


def test_reparameterize_keeps_the_inner_lr_of_a_problem_without_gradient_step():
    """A problem with only an inner step and ``inner_lr`` = 0.3: the reparameterised problem
    keeps it, so Hessian-free's default α is still 0.3 and its u-estimate is the
    φ-estimate times dφ/du = e^u (chain rule; c and Y both carry the factor), to 1e-12."""
    ridge = Ridge(features=3)
    full = ridge.problem(horizon=5, lr=0.3)
    problem = BilevelProblem(full.inner_step, full.outer_loss, full.init, full.horizon,
                             inner_loss=full.inner_loss, inner_lr=0.3)
    par = {"log_reg": Log()}
    moved = reparameterize(problem, par)
    assert moved.inner_lr == 0.3 and moved.step_size(ridge.phi, 4) == 0.3
    u = {"log_reg": torch.log(ridge.phi["log_reg"] + 2.0)}
    phi = {"log_reg": torch.exp(u["log_reg"])}
    g_phi = flatten(hypergradient(problem, phi, HessianFree()).grad)
    g_u = flatten(hypergradient(moved, u, HessianFree()).grad)
    torch.testing.assert_close(g_u, g_phi * phi["log_reg"], rtol=1e-12, atol=1e-14)
