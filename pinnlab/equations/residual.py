"""Residual estimates from noise groups: biased (one group) or unbiased (one per factor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pinnlab.equations.terms import Coefficients, Field, Nonpolynomial, ResidualTerm, Term


class NotUnbiasableError(ValueError):
    """The residual has a non-polynomial term, so no unbiased estimate of it exists."""


def noise_groups(terms: Sequence[ResidualTerm], *, unbiased: bool) -> list[list[Field]]:
    """Which solution fields each independent noise group must provide.

    Biased: everything from one group. Unbiased (REFERENCE.md §2.3): group 0 provides
    the linear terms and the first factor of every product; factor i ≥ 1 of a product
    comes from group i. Factors of one product then come from independent groups, so
    E[Π_i F_i(G_i)] = Π_i E F_i; different products may share groups because they enter
    additively. Groups ≥ 1 hold only the factors they serve (value-only groups are
    cheap: no second differences).

    Raises:
        NotUnbiasableError: if ``unbiased`` and a term is non-polynomial.
    """
    groups: list[list[Field]] = [[]]
    for term in terms:
        if isinstance(term, Nonpolynomial):
            if unbiased:
                raise NotUnbiasableError(
                    f"the residual contains {term.label}, which has no unbiased Monte Carlo "
                    "estimate (no finite product of independent draws has the right mean); "
                    "use the 'unbiased1' loss, which fixes only the bias of the square"
                )
            fields = [term.field]
            placement = [0]
        else:
            fields = list(term.factors)
            placement = list(range(len(fields))) if unbiased else [0] * len(fields)
        for field, g in zip(fields, placement):
            while len(groups) <= g:
                groups.append([])
            if field not in groups[g]:
                groups[g].append(field)
    return groups


def is_unbiasable(terms: Sequence[ResidualTerm]) -> bool:
    """Whether every term is polynomial in the fields (so ``unbiased2`` exists)."""
    return not any(isinstance(t, Nonpolynomial) for t in terms)


def is_linear(terms: Sequence[ResidualTerm]) -> bool:
    """Whether the residual is affine in the fields (then ``unbiased1`` is exact)."""
    return all(isinstance(t, Term) and len(t.factors) == 1 for t in terms)


def combine_terms(
    x: Tensor,
    terms: Sequence[ResidualTerm],
    group_fields: Sequence[dict[Field, Tensor]],
    source: Tensor | float,
    coefficients: Coefficients,
    *,
    unbiased: bool,
) -> Tensor:
    """R = Σ_terms coefficient · Π factors − source, reading each factor from its group."""
    residual = -source if isinstance(source, Tensor) else torch.full(
        (x.shape[0],), -float(source), dtype=x.dtype, device=x.device
    )
    for term in terms:
        c = term.coefficient
        coefficient = c(x, coefficients) if callable(c) else c
        if isinstance(coefficient, Tensor) and coefficient.shape not in ((), x.shape[:1]):
            # (an (N, 1) column broadcast the residual to (N, N): a wrong loss, without a word)
            raise ValueError(f"a term's coefficient must return one value per point, shape ({x.shape[0]},) for "
                             f"({x.shape[0]}, {x.shape[1]}) points, or one number; it returned "
                             f"{tuple(coefficient.shape)}")
        if isinstance(term, Nonpolynomial):
            value = term.fn(group_fields[0][term.field])
        else:
            value = None
            vectors = []
            for i, field in enumerate(term.factors):
                f = group_fields[i if unbiased else 0][field]
                if field.is_vector:
                    vectors.append(f)
                else:
                    value = f if value is None else value * f
            if vectors:
                inner = (vectors[0] * vectors[1]).sum(-1)
                value = inner if value is None else value * inner
        residual = residual + (value if _is_one(coefficient) else coefficient * value)
    return residual


def _is_one(c) -> bool:
    return isinstance(c, (int, float)) and c == 1


def estimate_residual(
    x: Tensor,
    terms: Sequence[ResidualTerm],
    fields_of_group: Callable[[list[Field]], dict[Field, Tensor]],
    source: Tensor | float,
    coefficients: Coefficients,
    *,
    unbiased: bool,
) -> Tensor:
    """One residual draw R̂(x): `(N,)`. Each call of ``fields_of_group`` is a fresh group."""
    groups = noise_groups(terms, unbiased=unbiased)
    group_fields = [fields_of_group(fields) for fields in groups]
    return combine_terms(x, terms, group_fields, source, coefficients, unbiased=unbiased)
