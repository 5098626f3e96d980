"""HESSIAN_DIAGONAL is a vector field: two such factors contract to an inner product.

Fails when `Field.is_vector` leaves out "hessian_diagonal" (a term Σ_j ∂_jj u·∂_j u would
be refused, and diag∇²u · diag∇²u would be multiplied elementwise to an (N, d) residual)."""
import torch

from pinnlab.equations.residual import combine_terms
from pinnlab.equations.terms import GRADIENT, HESSIAN_DIAGONAL, Term


def test_hessian_diagonal_is_a_vector_field():
    assert HESSIAN_DIAGONAL.is_vector and GRADIENT.is_vector


def test_products_of_hessian_diagonals_contract_to_an_inner_product():
    x = torch.zeros(2, 3, dtype=torch.float64)
    h = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], dtype=torch.float64)
    g = torch.tensor([[0.5, 1.0, -1.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    terms = (Term(1.0, (HESSIAN_DIAGONAL, HESSIAN_DIAGONAL)), Term(2.0, (HESSIAN_DIAGONAL, GRADIENT)))
    r = combine_terms(x, terms, [{HESSIAN_DIAGONAL: h, GRADIENT: g}], 1.0, {}, unbiased=False)
    torch.testing.assert_close(r, (h * h).sum(-1) + 2 * (h * g).sum(-1) - 1.0)
