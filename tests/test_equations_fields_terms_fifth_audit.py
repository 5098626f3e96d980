"""Fifth audit of the residual vocabulary (solution fields, terms, noise groups), the unit-ball
and the Fokker–Planck equations, by mutation testing.

Each test pins down a behaviour that a plausible one-line change left unnoticed by the
rest of the suite; values are checked against closed forms or float64 autograd done here,
never against the code's own output."""

from __future__ import annotations

import pytest
import torch

from pinnlab.equations import FokkerPlanckAniso

F64 = torch.float64


def test_fokker_planck_ansatz_jets_are_exact_in_every_column_time_included():
    """A = (d + 1)·t and B = ‖x‖², by hand: ∇A = (0, d + 1), ∇B = (2x, 0), diag ∇²A = 0 and
    diag ∇²B = (2, …, 2, 0). The time column of B's Hessian diagonal is 0, not the 2 of the
    spatial columns (the contract test compares only the spatial columns of the Hessian
    diagonals; the jets' time column is documented as the last one)."""
    d = 3
    eq = FokkerPlanckAniso(d, seed=2)
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 0.75]], dtype=F64)
    scale, shift = eq.ansatz_jets(x)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(scale.value, torch.tensor([1.0, 3.0], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(scale.gradient, torch.cat([zero[:, :d], torch.full((2, 1), 4.0, dtype=F64)], 1))
    assert scale.hessian_diagonal is None or torch.equal(scale.hessian_diagonal, zero)
    torch.testing.assert_close(shift.value, torch.tensor([5.25, 2.5], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(shift.gradient, torch.cat([2 * x[:, :d], zero[:, :1]], 1), rtol=0, atol=0)
    torch.testing.assert_close(shift.hessian_diagonal, torch.cat([torch.full((2, d), 2.0, dtype=F64), zero[:, :1]], 1))
    assert shift.hessian_diagonal[:, -1].tolist() == [0.0, 0.0]



def test_a_hessian_diagonal_under_a_constant_scale_asks_for_no_gradient():
    """With A constant (no ∇A) diag ∇²u = A·diag ∇²u_σ + B″ needs no ∇u_σ: one estimator
    call asks for u_σ and diag ∇²u_σ only (a gradient asked anyway costs every
    estimator O(K·d) more per point), and the field is 2.5·diag ∇²u_σ."""
    from pinnlab.equations import HESSIAN_DIAGONAL, Jet
    from pinnlab.equations.fields import solution_fields
    from pinnlab.estimators import Autograd
    from pinnlab.estimators.base import HessianDiagonal, Value
    from pinnlab.nets import Pointwise

    x = torch.tensor([[0.5, -1.0], [1.5, 0.25]], dtype=F64)
    queries = []

    def estimate(q):
        queries.append([type(query) for query in q])
        return Autograd().estimate(Pointwise(lambda z: (z**3).sum(-1)), x, q)

    got = solution_fields(x, [HESSIAN_DIAGONAL], estimate, spatial_dim=2, scale=Jet(2.5))
    assert queries == [[Value, HessianDiagonal]]
    torch.testing.assert_close(got[HESSIAN_DIAGONAL], 2.5 * 6 * x, rtol=1e-14, atol=0)


def test_a_time_derivative_of_a_time_independent_problem_is_refused_by_name():
    """∂_t u asked of `(N, d)` points (no time column) is a ValueError that says so, raised
    before the estimator is called, not an AttributeError from inside a query."""
    from pinnlab.equations import TIME_DERIVATIVE
    from pinnlab.equations.fields import solution_fields

    calls = []
    with pytest.raises(ValueError, match="time_derivative requested for a time-independent problem"):
        solution_fields(torch.zeros(2, 3, dtype=F64), [TIME_DERIVATIVE], calls.append, spatial_dim=3)
    assert calls == []


def test_a_residual_with_no_unbiased_estimate_is_refused_as_a_value_error():
    """NotUnbiasableError is a ValueError (code that catches bad arguments as ValueError,
    like the CLI's config check, catches it too), raised by noise_groups for sin u."""
    from pinnlab.equations import LAPLACIAN, VALUE, Nonpolynomial, NotUnbiasableError, Term
    from pinnlab.equations.residual import noise_groups

    assert issubclass(NotUnbiasableError, ValueError)
    terms = (Term(1.0, (LAPLACIAN,)), Nonpolynomial(torch.sin, VALUE, label="sin u"))
    with pytest.raises(ValueError, match=r"contains sin u, which has no unbiased"):
        noise_groups(terms, unbiased=True)
    assert noise_groups(terms, unbiased=False) == [[LAPLACIAN, VALUE]]


def test_a_time_derivative_is_one_directional_query_along_the_time_axis():
    """∂_t u = ∂_tA·u_σ + A·∂_t u_σ + ∂_tB asks for u_σ and the directional derivative along
    e_t = (0, …, 0, 1) only, not the full (N, D) gradient (d times the work); with
    A = 1 + t, B = t² and u_σ = t³ + x₁x₂ it is u_σ + 3t²(1 + t) + 2t."""
    from pinnlab.equations import TIME_DERIVATIVE, Jet
    from pinnlab.equations.fields import solution_fields
    from pinnlab.estimators import Autograd
    from pinnlab.estimators.base import Directional, Value
    from pinnlab.nets import Pointwise

    x = torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.25, 0.75]], dtype=F64)
    t, zero = x[:, 2], torch.zeros(2, 2, dtype=F64)
    queries = []

    def estimate(q):
        queries.extend(q)
        return Autograd().estimate(Pointwise(lambda z: z[:, 2] ** 3 + z[:, 0] * z[:, 1]), x, q)

    scale = Jet(1 + t, torch.cat([zero, torch.ones(2, 1, dtype=F64)], 1))
    shift = Jet(t**2, torch.cat([zero, 2 * t[:, None]], 1))
    got = solution_fields(x, [TIME_DERIVATIVE], estimate, spatial_dim=2, scale=scale, shift=shift)
    assert [type(q) for q in queries] == [Value, Directional]
    assert queries[1].vector.tolist() == [0.0, 0.0, 1.0]
    u_sigma = t**3 + x[:, 0] * x[:, 1]
    torch.testing.assert_close(got[TIME_DERIVATIVE], u_sigma + 3 * t**2 * (1 + t) + 2 * t, rtol=1e-14, atol=0)
