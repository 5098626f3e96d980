"""Residual terms: what a Term accepts, how a coefficient that is a function of x enters,
and the refusal of an unbiased residual with a non-polynomial term.

No built-in equation has a coefficient that is a function (HJB-Lin's is a number), so a
callable coefficient used as the number itself went unnoticed. ``Unbiased2.validate`` refuses such an equation before training, but the residual itself
is also called directly (the tuning objectives, user code): there ``unbiased=True`` on
Sine–Gordon must raise rather than quietly estimate sin u from one group."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import (
    GRADIENT,
    HESSIAN_DIAGONAL,
    LAPLACIAN,
    VALUE,
    Nonpolynomial,
    NotUnbiasableError,
    SineGordonThreeBody,
    SineGordonTwoBody,
    Term,
)
from pinnlab.equations.residual import combine_terms, noise_groups
from pinnlab.estimators import Autograd
from pinnlab.nets import Pointwise

F64 = torch.float64


@pytest.mark.parametrize("cls", [SineGordonTwoBody, SineGordonThreeBody])
def test_an_unbiased_residual_of_sine_gordon_is_refused(cls):
    eq = cls(4, seed=1)
    with pytest.raises(NotUnbiasableError, match=r"sin u.*unbiased1"):
        noise_groups(eq.terms(), unbiased=True)
    x = eq.sample_collocation(6, generator=make_generator(0, "x"), dtype=F64)
    calls = []

    def estimate(queries):
        calls.append(queries)
        return Autograd().estimate(Pointwise(lambda z: torch.sin(z.sum(-1))), x, queries)

    with pytest.raises(NotUnbiasableError):
        eq.residual(x, estimate, unbiased=True)
    assert calls == []  # refused before any estimate is drawn
    assert eq.residual(x, estimate).shape == (6,)  # the biased residual exists: one group
    assert len(calls) == 1


def test_a_coefficient_that_is_a_function_is_evaluated_at_the_points():
    """Term(c, …) and Nonpolynomial(…, coefficient=c) with c(x, coefficients) enter as
    c's values at x, with the equation's coefficients passed along."""
    x = torch.tensor([[0.5, 1.0], [-2.0, 0.0], [1.5, 3.0]], dtype=F64)
    lap = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    u = torch.tensor([0.3, 1.0, -0.7], dtype=F64)
    k = torch.tensor(2.5, dtype=F64)
    terms = (
        Term(lambda z, c: 1 + z[:, 0] ** 2, (LAPLACIAN,)),
        Term(lambda z, c: c["k"] * z[:, 1], (VALUE, VALUE)),
        Nonpolynomial(torch.sin, VALUE, coefficient=lambda z, c: -c["k"]),
    )
    got = combine_terms(x, terms, [{LAPLACIAN: lap, VALUE: u}], 0.25, {"k": k}, unbiased=False)
    expected = (1 + x[:, 0] ** 2) * lap + k * x[:, 1] * u * u - k * torch.sin(u) - 0.25
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("factors, message", [
    ((), "at least one factor"),
    ((GRADIENT,), "zero or two vector fields"),
    ((VALUE, HESSIAN_DIAGONAL), "zero or two vector fields"),
    ((GRADIENT, GRADIENT, HESSIAN_DIAGONAL), "zero or two vector fields"),
])
def test_a_term_that_is_no_scalar_product_is_refused_when_written(factors, message):
    """A term is a scalar per point: one vector factor (an (N, d) "residual") or three
    (no inner product of three) is refused at construction, not at the first step."""
    with pytest.raises(ValueError, match=message):
        Term(1.0, factors)
    Term(1.0, (VALUE, GRADIENT, GRADIENT))  # a scalar times an inner product is fine
