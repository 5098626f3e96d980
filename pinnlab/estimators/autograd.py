"""Exact derivatives of f by automatic differentiation (torch.func)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from pinnlab._checks import check_integer
from pinnlab.estimators.base import (
    AbstractDerivativeEstimator,
    Directional,
    Gradient,
    HessianDiagonal,
    Model,
    Query,
    Value,
    WeightedLaplacian,
    expand_vector,
)


def input_gradient(model: Model):
    """z ↦ ∇_z f(z) for a pointwise model, `(N, D) -> (N, D)` (one backward pass)."""
    return grad(lambda z: model(z).sum())


def hessian_columns(model: Model, x: Tensor, coordinates: Tensor, chunk_size: int) -> Tensor:
    """∂_jj f at every point for the given coordinates j: `(N, len(coordinates))`.

    One forward-over-reverse pass (a Hessian-vector product) per coordinate, vmapped
    over ``chunk_size`` coordinates at a time: cost ≈ len(coordinates) HVPs. The tangents
    are the one-hot rows e_j of each chunk, `(chunk_size, D)`, never the D×D identity
    (400 MB at D = 10⁴). Under autograd every chunk's graph is kept for the backward
    pass to θ, so memory grows with N·D·len(coordinates) whatever ``chunk_size``.
    """
    grad_fn = input_gradient(model)

    def column(unit: Tensor) -> Tensor:
        tangent = unit.expand_as(x)
        return (jvp(grad_fn, (x,), (tangent,))[1] * tangent).sum(-1)

    out = []
    for i in range(0, len(coordinates), chunk_size):
        units = torch.nn.functional.one_hot(coordinates[i : i + chunk_size], x.shape[1]).to(x)
        out.append(vmap(column)(units))
    return torch.cat(out, dim=0).T if out else x.new_zeros(x.shape[0], 0)


@dataclass(frozen=True)
class Autograd(AbstractDerivativeEstimator):
    """Exact derivatives of the network f itself (no smoothing): the classical PINN.

    Value: one forward pass. Gradient: one backward pass. Directional a·∇f: one JVP.
    Hessian diagonal and weighted Laplacians: one Hessian-vector product per input
    coordinate with a nonzero weight, i.e. O(D) backward-sized passes per step, which
    is what makes autograd PINNs expensive in high dimension; use it as the exact
    reference and the low-dimensional baseline. ``sigma`` is ignored.

    Args:
        chunk_size: coordinates per vmapped batch of HVPs (bounds the memory of an
            evaluation without gradients; a training step keeps every batch's graph, see
            :func:`hessian_columns`).
    """

    chunk_size: int = 64
    stochastic = False

    def __post_init__(self):
        check_integer("chunk_size", self.chunk_size)

    def estimate(
        self,
        model: Model,
        x: Tensor,
        queries: Sequence[Query],
        *,
        generator: torch.Generator | None = None,
        sigma: float | Tensor | None = None,
    ) -> list[Tensor]:
        cache: dict[str, Tensor] = {}

        def diagonal_on(weights: Tensor | None) -> tuple[Tensor, Tensor]:
            if weights is None or weights.dim() == 2:
                nonzero = (
                    torch.arange(x.shape[1], device=x.device)
                    if weights is None
                    else torch.nonzero((weights != 0).any(0)).flatten()
                )
            else:
                nonzero = torch.nonzero(weights != 0).flatten()
            key = f"hess:{nonzero.tolist()}"
            if key not in cache:
                cache[key] = hessian_columns(model, x, nonzero, self.chunk_size)
            return cache[key], nonzero

        out = []
        for q in queries:
            if isinstance(q, Value):
                out.append(model(x))
            elif isinstance(q, Gradient):
                if "grad" not in cache:
                    cache["grad"] = input_gradient(model)(x)
                out.append(cache["grad"])
            elif isinstance(q, Directional):
                out.append(jvp(model, (x,), (expand_vector(q.vector, x),))[1])
            elif isinstance(q, HessianDiagonal):
                diag, _ = diagonal_on(None)
                out.append(diag)
            elif isinstance(q, WeightedLaplacian):
                weights = q.weights.to(device=x.device, dtype=x.dtype)
                expand_vector(weights, x)  # (D,), (1, D) or (N, D), as every estimator takes them
                diag, idx = diagonal_on(weights)
                w = weights[..., idx]
                out.append((diag * w).sum(-1))
            else:
                raise TypeError(f"Autograd cannot answer {type(q).__name__}")
        return out
