"""Derivative queries and the estimator interface."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Model = Callable[..., Tensor]
"""f(·; θ) with parameters bound: `(N, D) -> (N,)`, and for Stein also
:class:`~pinnlab.nets.Perturbation` `-> (N, S, K)`."""


class Query:
    """One derivative quantity of the smoothed function u_σ at every point."""

    order: int = 0


@dataclass(frozen=True, eq=False)
class Value(Query):
    """u_σ(x): `(N,)`."""

    order = 0


@dataclass(frozen=True, eq=False)
class Gradient(Query):
    """∇u_σ(x) over all D input columns (time included): `(N, D)`."""

    order = 1


@dataclass(frozen=True, eq=False)
class Directional(Query):
    """a(x)·∇u_σ(x) without forming the gradient: `(N,)`.

    Args:
        vector: a, `(D,)` (same for every point) or `(N, D)`.
    """

    vector: Tensor
    order = 1


@dataclass(frozen=True, eq=False)
class HessianDiagonal(Query):
    """∂_jj u_σ(x) for every input column j: `(N, D)`."""

    order = 2


@dataclass(frozen=True, eq=False)
class WeightedLaplacian(Query):
    """Σ_j w_j(x) ∂_jj u_σ(x): `(N,)`. The Laplacian is w = (1, …, 1, 0) with time.

    Args:
        weights: w, `(D,)` or `(N, D)`.
    """

    weights: Tensor
    order = 2


class AbstractDerivativeEstimator(abc.ABC):
    """Estimates derivative quantities of u = f (autograd) or u_σ (Stein) at points.

    Every implementation answers the same :class:`Query` objects, so equations and
    losses never know which estimator produced their derivatives. Estimators are
    frozen dataclasses holding configuration only; randomness comes from the
    ``generator`` argument.
    """

    #: whether the answers are random (one call = one independent "noise group")
    stochastic: bool = True

    @abc.abstractmethod
    def estimate(
        self,
        model: Model,
        x: Tensor,
        queries: Sequence[Query],
        *,
        generator: torch.Generator | None,
        sigma: float | Tensor | None = None,
    ) -> list[Tensor]:
        """Answer ``queries`` at `(N, D)` points ``x`` from one independent noise draw.

        Args:
            model: the function to differentiate (parameters already bound).
            x: `(N, D)` points.
            queries: what to compute; only these are computed.
            generator: the random stream (ignored by deterministic estimators).
            sigma: overrides the configured smoothing scale (a tensor makes the
                estimates differentiable in σ); ignored where there is no smoothing.

        Returns:
            One tensor per query, in order, with the shapes documented on each query.
        """

    def validate(self, equation) -> None:  # noqa: B027 - optional hook
        """Raise a clear error if this estimator cannot be used on ``equation``'s inputs
        (called when a :class:`~pinnlab.solvers.PINNProblem` is built)."""

    def evaluate(
        self,
        model: Model,
        x: Tensor,
        *,
        generator: torch.Generator | None,
        chunk_size: int = 1024,
        sigma: float | Tensor | None = None,
    ) -> Tensor:
        """u at `(N, D)` points without autograd, in chunks of ``chunk_size`` points."""
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], chunk_size):
                chunk = x[start : start + chunk_size]
                out.append(
                    self.estimate(model, chunk, [Value()], generator=generator, sigma=sigma)[0]
                )
        return torch.cat(out) if out else x.new_zeros(0)


def expand_vector(vector: Tensor, x: Tensor) -> Tensor:
    """Broadcast a `(D,)`, `(1, D)` or `(N, D)` query vector to `(N, D)` on x's device/dtype."""
    check_vector_shape(vector, x)
    return vector.to(device=x.device, dtype=x.dtype).expand_as(x)


def check_vector_shape(vector: Tensor, x: Tensor) -> None:
    """Refuse a query vector that is not `(D,)`, `(1, D)` or `(N, D)` for `(N, D)` points x."""
    n, dim = x.shape
    if vector.dim() == 1 and vector.shape[0] == dim:
        return
    if vector.dim() == 2 and vector.shape[1] == dim and vector.shape[0] in (1, n):
        return
    raise ValueError(
        f"query vector/weights must have shape ({dim},) or ({n}, {dim}) for points of shape "
        f"{tuple(x.shape)}, got {tuple(vector.shape)}"
    )
