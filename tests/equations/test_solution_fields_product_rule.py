"""Every solution field of u = A·u_σ + B against autograd of u itself, for an ansatz whose
A and B both vary in every coordinate.

The built-in equations leave parts of the product rule in ``solution_fields`` unexercised:
no built-in residual has a Hessian-diagonal field, Black–Scholes' weighted Laplacian and
the directional fields of Fokker–Planck, Burgers and Black–Scholes meet an A whose spatial
gradient is zero, and the unit ball's Laplacian has weights 1 (so w ⊙ ∇A = ∇A). Here A
has a nonzero spatial and time gradient and a nonconstant Hessian diagonal, B likewise,
and the weights and directions vary from point to point: dropping the 2 of 2∇A·∇u_σ,
the A″·u_σ or B″ term, the weights of w ⊙ ∇A, the ∇A·a or ∇B·a term of a directional
field, or the time column, changes a field by O(1)."""

from __future__ import annotations

import pytest
import torch

from pinnlab.equations import (
    GRADIENT,
    HESSIAN_DIAGONAL,
    LAPLACIAN,
    TIME_DERIVATIVE,
    VALUE,
    Jet,
)
from pinnlab.equations.fields import solution_fields
from pinnlab.equations.terms import directional, weighted_laplacian
from pinnlab.estimators import Autograd
from pinnlab.nets import Pointwise

from .test_contract import _derivatives  # fn(x), ∇fn, diag ∇²fn by autograd

F64 = torch.float64


def _jet(fn, x):
    return Jet(*_derivatives(fn, x))


def _scale(z):  # A: the unit ball's 1 − ‖x‖² plus a term in every column, time included
    return 1 - (z**2).sum(-1) + 0.3 * torch.sin(z).sum(-1)


def _shift(z):  # B: varies, with a nonconstant Hessian diagonal, in every column
    return torch.cos(1.3 * z).sum(-1) + 0.2 * z[:, 0] * z[:, -1]


def _smoothed(a):
    return lambda z: torch.sin(z @ a + 0.3) + 0.2 * (z**2).sum(-1) + torch.exp(0.1 * z[:, 0])


def _weights(x, coefficients):
    return 1 + x[:, :3] ** 2  # (N, d) with d = 3: varies from point to point


def _direction(x, coefficients):
    return torch.cos(x[:, :3]) + coefficients["c"]


@pytest.mark.parametrize("time_dependent", [False, True])
def test_every_field_is_the_derivative_of_the_ansatz_solution(time_dependent):
    d = 3
    width = d + int(time_dependent)
    g = torch.Generator().manual_seed(0)
    x = 0.6 * torch.randn(12, width, generator=g, dtype=F64)
    a = torch.randn(width, generator=g, dtype=F64)
    coefficients = {"c": torch.tensor([0.5, -1.0, 2.0], dtype=F64)}
    v = _smoothed(a)
    wlap, direc = weighted_laplacian(_weights), directional(_direction)
    fields = [VALUE, GRADIENT, HESSIAN_DIAGONAL, LAPLACIAN, wlap, direc]
    if time_dependent:
        fields.append(TIME_DERIVATIVE)

    got = solution_fields(
        x, fields, lambda q: Autograd().estimate(Pointwise(v), x, q), spatial_dim=d,
        scale=_jet(_scale, x), shift=_jet(_shift, x), coefficients=coefficients,
    )

    u, grad, hess = _derivatives(lambda z: _scale(z) * v(z) + _shift(z), x)
    expected = {
        VALUE: u,
        GRADIENT: grad[:, :d],
        HESSIAN_DIAGONAL: hess[:, :d],
        LAPLACIAN: hess[:, :d].sum(1),
        wlap: (_weights(x, coefficients) * hess[:, :d]).sum(1),
        direc: (_direction(x, coefficients) * grad[:, :d]).sum(1),
    }
    if time_dependent:
        expected[TIME_DERIVATIVE] = grad[:, d]
    for field, value in expected.items():
        torch.testing.assert_close(got[field], value, rtol=1e-10, atol=1e-10, msg=f"field {field!r}")


def test_a_constant_ansatz_scales_every_field():
    """u = 2.5·u_σ − 0.75 with A and B plain numbers (a user's ansatz may give constants):
    every field is 2.5 times u_σ's (the value also shifted), not u_σ's own."""
    d = 3
    g = torch.Generator().manual_seed(1)
    x = 0.6 * torch.randn(10, d, generator=g, dtype=F64)
    v = _smoothed(torch.randn(d, generator=g, dtype=F64))
    coefficients = {"c": torch.tensor([0.5, -1.0, 2.0], dtype=F64)}
    wlap, direc = weighted_laplacian(_weights), directional(_direction)
    got = solution_fields(
        x, [VALUE, GRADIENT, HESSIAN_DIAGONAL, LAPLACIAN, wlap, direc],
        lambda q: Autograd().estimate(Pointwise(v), x, q), spatial_dim=d,
        scale=Jet(2.5), shift=Jet(-0.75), coefficients=coefficients,
    )
    value, grad, hess = _derivatives(v, x)
    torch.testing.assert_close(got[VALUE], 2.5 * value - 0.75, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[GRADIENT], 2.5 * grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[HESSIAN_DIAGONAL], 2.5 * hess, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[LAPLACIAN], 2.5 * hess.sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[wlap], 2.5 * (_weights(x, coefficients) * hess).sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[direc], 2.5 * (_direction(x, coefficients) * grad).sum(1), rtol=1e-12, atol=1e-12)
