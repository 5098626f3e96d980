"""From derivatives of u_σ to derivatives of the solution u = A(x)·u_σ(x) + B(x)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from pinnlab.equations.terms import Coefficients, Field
from pinnlab.estimators.base import (
    Directional,
    Gradient,
    HessianDiagonal,
    Query,
    Value,
    WeightedLaplacian,
)


class Jet(NamedTuple):
    """A known function with its derivatives at `(N, D)` points, in closed form.

    ``value`` `(N,)` or a float; ``gradient`` `(N, D)` or ``None`` (identically zero);
    ``hessian_diagonal`` `(N, D)` or ``None``. Time, where present, is the last column.
    """

    value: Tensor | float
    gradient: Tensor | None = None
    hessian_diagonal: Tensor | None = None


ONE = Jet(1.0)
ZERO = Jet(0.0)

Estimate = Callable[[Sequence[Query]], list[Tensor]]


class _Requests:
    """Deduplicated raw queries for one estimator call."""

    def __init__(self):
        self.queries: list[Query] = []
        self.index: dict[str, int] = {}

    def add(self, key: str, query: Query) -> str:
        if key not in self.index:
            self.index[key] = len(self.queries)
            self.queries.append(query)
        return key


def solution_fields(
    x: Tensor,
    fields: Iterable[Field],
    estimate: Estimate,
    *,
    spatial_dim: int,
    scale: Jet = ONE,
    shift: Jet = ZERO,
    coefficients: Coefficients | None = None,
) -> dict[Field, Tensor]:
    r"""Estimate solution fields of u = A·u_σ + B from one call of ``estimate``.

    With A = ``scale`` and B = ``shift`` (the hard-constraint ansatz), by the product rule:

    .. math::

        ∂_j u &= ∂_jA\,u_σ + A\,∂_j u_σ + ∂_jB \\
        Σ_j w_j ∂_{jj} u &= (Σ_j w_j ∂_{jj}A)\,u_σ + 2(w⊙∇A)·∇u_σ
                          + A\,Σ_j w_j∂_{jj}u_σ + Σ_j w_j ∂_{jj}B

    Each field is affine in the raw estimates, so an unbiased raw estimate gives an
    unbiased field. Only the raw quantities the fields need are requested.

    Args:
        x: `(N, D)` points.
        fields: the solution fields wanted.
        estimate: answers raw queries about u_σ from one noise group.
        spatial_dim: d (D = d + 1 for time-dependent problems).
        scale, shift: the ansatz jets A and B.
        coefficients: PDE coefficients passed to field functions.

    Returns:
        A dict from field to tensor.
    """
    fields = list(dict.fromkeys(fields))
    coefficients = coefficients or {}
    n, dim = x.shape
    d = spatial_dim
    has_time = dim > d
    req = _Requests()
    a_grad, a_hess = scale.gradient, scale.hessian_diagonal

    def pad(v: Tensor) -> Tensor:
        """A spatial `(N, d)` or `(d,)` vector as a D-vector with zero time entry."""
        v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        if not has_time:
            return v
        return torch.cat([v, v.new_zeros(*v.shape[:-1], dim - d)], dim=-1)

    spatial_mask = pad(torch.ones(d, dtype=x.dtype, device=x.device))
    unit_time = None
    if has_time:
        unit_time = torch.zeros(dim, dtype=x.dtype, device=x.device)
        unit_time[d] = 1

    # u_σ itself is always requested: the ansatz terms need it and every estimator
    # gets it for free (Stein: the antithetic mean of evaluations it makes anyway).
    req.add("value", Value())
    plans: list[Callable[[Callable[[str], Tensor]], Tensor]] = []

    for field in fields:
        kind = field.kind
        if kind == "value":
            plans.append(lambda r: _affine(scale.value, r("value"), shift.value))
        elif kind == "time_derivative":
            if not has_time:
                raise ValueError("time_derivative requested for a time-independent problem")
            k = req.add("dt", Directional(unit_time))
            plans.append(
                lambda r, k=k: _col(a_grad, d) * r("value")
                + scale.value * r(k)
                + _col(shift.gradient, d)
            )
        elif kind == "gradient":
            k = req.add("grad", Gradient())
            plans.append(
                lambda r, k=k: _space(a_grad, d, r("value"))
                + _mul(scale.value, r(k)[:, :d])
                + _space(shift.gradient, d)
            )
        elif kind == "hessian_diagonal":
            kh = req.add("hess", HessianDiagonal())
            kg = req.add("grad", Gradient()) if a_grad is not None else None
            plans.append(
                lambda r, kh=kh, kg=kg: _space(a_hess, d, r("value"))
                + (0 if kg is None else 2 * a_grad[:, :d] * r(kg)[:, :d])
                + _mul(scale.value, r(kh)[:, :d])
                + _space(shift.hessian_diagonal, d)
            )
        elif kind in ("laplacian", "weighted_laplacian"):
            if kind == "laplacian":
                w_space = torch.ones(d, dtype=x.dtype, device=x.device)
                kl = req.add("lap", WeightedLaplacian(spatial_mask))
            else:
                w_space = torch.as_tensor(field.fn(x, coefficients), dtype=x.dtype, device=x.device)
                kl = req.add(f"wlap:{id(field)}", WeightedLaplacian(pad(w_space)))
            kd = None
            if a_grad is not None:
                kd = req.add(
                    f"wgradA:{kind}:{id(field)}", Directional(pad(w_space * a_grad[:, :d]))
                )
            plans.append(
                lambda r, kl=kl, kd=kd, w=w_space: _weighted(a_hess, w, d, r("value"))
                + (0 if kd is None else 2 * r(kd))
                + _mul(scale.value, r(kl))
                + _weighted(shift.hessian_diagonal, w, d, 1.0)
            )
        elif kind == "directional":
            a_vec = torch.as_tensor(field.fn(x, coefficients), dtype=x.dtype, device=x.device)
            k = req.add(f"dir:{id(field)}", Directional(pad(a_vec)))
            plans.append(
                lambda r, k=k, a=a_vec: _weighted(a_grad, a, d, r("value"))
                + _mul(scale.value, r(k))
                + _weighted(shift.gradient, a, d, 1.0)
            )
        else:  # pragma: no cover - Field.kind is a Literal
            raise ValueError(f"unknown field kind {kind!r}")

    raw = estimate(req.queries)

    def lookup(key: str) -> Tensor:
        return raw[req.index[key]]

    out = {}
    for field, plan in zip(fields, plans):
        value = plan(lookup)
        if not isinstance(value, Tensor):
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        shape = (n, d) if field.is_vector else (n,)
        out[field] = value.expand(shape) if value.shape != shape else value
    return out


def _affine(a, u, b):
    return _mul(a, u) + b


def _mul(a, u):
    if isinstance(a, (int, float)):
        return u if a == 1 else a * u
    return (a[:, None] if u.dim() == 2 else a) * u


def _col(jet_part: Tensor | None, index: int):
    return 0.0 if jet_part is None else jet_part[:, index]


def _space(jet_part: Tensor | None, d: int, factor=1.0):
    if jet_part is None:
        return 0.0
    part = jet_part[:, :d]
    if isinstance(factor, Tensor):
        return part * factor[:, None]
    return part * factor


def _weighted(jet_part: Tensor | None, w: Tensor, d: int, factor):
    """(Σ_j w_j jet_part_j) · factor over the spatial columns."""
    if jet_part is None:
        return 0.0
    return (jet_part[:, :d] * w).sum(-1) * factor
