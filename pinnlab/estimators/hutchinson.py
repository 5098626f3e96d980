"""Hutchinson trace estimation of second derivatives (HTE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.func import jvp, vmap

from pinnlab._checks import check_integer
from pinnlab.estimators.autograd import input_gradient
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


@dataclass(frozen=True)
class Hutchinson(AbstractDerivativeEstimator):
    r"""Second derivatives of f by Rademacher probes: Σ_j w_j ∂_jj f ≈ (1/V) Σ_v (v⊙w)ᵀ∇²f v.

    With probes v ∈ {±1}^D, E[v_i v_j] = δ_ij, so (v⊙w)ᵀ(∇²f)v is unbiased for
    Σ_j w_j ∂_jj f and v ⊙ (∇²f v) for the Hessian diagonal (REFERENCE.md §5.4, [HTE]).
    Each probe costs one Hessian-vector product (forward-over-reverse), so a step costs
    V HVPs per point whatever D is. Value, gradient and directional derivatives are
    exact (autograd), as in [HTE]. Like Stein, each call is one independent noise group.

    Args:
        num_probes: V, Rademacher probes per point.
        noise: ``"independent"`` probes per point or ``"shared"`` by the batch.
    """

    num_probes: int = 16
    noise: Literal["independent", "shared"] = "independent"

    def __post_init__(self):
        check_integer("num_probes", self.num_probes)
        if self.noise not in ("independent", "shared"):
            raise ValueError(f"noise must be 'independent' or 'shared', got {self.noise!r}")

    def estimate(
        self,
        model: Model,
        x: Tensor,
        queries: Sequence[Query],
        *,
        generator: torch.Generator | None,
        sigma: float | Tensor | None = None,
    ) -> list[Tensor]:
        grad_fn = input_gradient(model)
        hvp_cache: list[tuple[Tensor, Tensor]] = []

        def probes() -> tuple[Tensor, Tensor]:
            if not hvp_cache:
                shape = (self.num_probes, *((x.shape[1],) if self.noise == "shared" else x.shape))
                bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
                v = (2 * bits - 1).to(x.dtype)
                v = v[:, None, :].expand(-1, x.shape[0], -1) if self.noise == "shared" else v
                hv = vmap(lambda t: jvp(grad_fn, (x,), (t,))[1])(v)  # (V, N, D)
                hvp_cache.append((v, hv))
            return hvp_cache[0]

        out = []
        for q in queries:
            if isinstance(q, Value):
                out.append(model(x))
            elif isinstance(q, Gradient):
                out.append(grad_fn(x))
            elif isinstance(q, Directional):
                out.append(jvp(model, (x,), (expand_vector(q.vector, x),))[1])
            elif isinstance(q, HessianDiagonal):
                v, hv = probes()
                out.append((v * hv).mean(0))
            elif isinstance(q, WeightedLaplacian):
                v, hv = probes()
                w = expand_vector(q.weights, x)
                out.append((v * w * hv).sum(-1).mean(0))
            else:
                raise TypeError(f"Hutchinson cannot answer {type(q).__name__}")
        return out
