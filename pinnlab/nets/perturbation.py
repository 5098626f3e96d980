"""Perturbed inputs x + Σ_p c_{s,p} δ_p, evaluated in one batched call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Perturbation:
    """A batch of perturbed inputs for Monte Carlo smoothing.

    Represents, for every point ``n``, sign pattern ``s`` and sample ``k``, the input

        z[n, s, k] = center[n] + Σ_p coefficients[s][p] · parts[p][(n,) k]

    Networks that understand this type (:class:`pinnlab.nets.MLP`) factorise their
    first affine layer, W z = W center + Σ_p c_{s,p} W δ_p, so W δ_p is computed once
    for all sign patterns and, with shared noise, once for all points: the first-layer
    cost falls from ``N·S·K·D·w`` to ``(N + P·K)·D·w``.

    Args:
        center: `(N, D)` points x.
        parts: noise tensors δ_p, each `(K, D)` (shared by all points) or `(N, K, D)`
            (independent per point).
        coefficients: `S` sign patterns, each a tuple of `P` floats.
    """

    center: Tensor
    parts: tuple[Tensor, ...]
    coefficients: tuple[tuple[float, ...], ...]

    @property
    def num_samples(self) -> int:
        return self.parts[0].shape[-2]

    @property
    def num_patterns(self) -> int:
        return len(self.coefficients)

    def materialize(self) -> Tensor:
        """The explicit inputs, `(N, S, K, D)`; memory N·S·K·D."""
        shape = (self.center.shape[0], self.num_samples, self.center.shape[1])
        rows = []
        for pattern in self.coefficients:
            offset = sum(c * _per_point(p) for c, p in zip(pattern, self.parts) if c != 0)
            # an all-zero pattern (the centre itself) still has K samples
            rows.append((self.center[:, None, :] + offset).expand(shape))
        return torch.stack(rows, dim=1)


def _per_point(part: Tensor) -> Tensor:
    return part[None] if part.dim() == 2 else part


def combine_pattern_features(
    center_features: Tensor, part_features: tuple[Tensor, ...], pattern: tuple[float, ...]
) -> Tensor:
    """Σ_p c_p · part_features[p] added to ``center_features[:, None]``: `(N, K, w)`."""
    out = center_features[:, None, :]
    for coefficient, features in zip(pattern, part_features):
        if coefficient == 0:
            continue
        term = _per_point(features)
        out = out + term if coefficient == 1 else out + coefficient * term
    samples = part_features[0].shape[-2]
    return out.expand(center_features.shape[0], samples, center_features.shape[1])


def evaluate_pointwise(fn: Callable[[Tensor], Tensor], inputs: Tensor | Perturbation) -> Tensor:
    """Evaluate a plain pointwise function `(..., D) -> (...)` on a tensor or a Perturbation.

    Returns `(N,)` for a tensor and `(N, S, K)` for a :class:`Perturbation`.
    """
    if isinstance(inputs, Perturbation):
        z = inputs.materialize()
        return fn(z.reshape(-1, z.shape[-1])).reshape(z.shape[:-1])
    return fn(inputs)


class Pointwise(torch.nn.Module):
    """Wrap a closed-form function `(..., D) -> (...)` so estimators can smooth it.

    Used in tests and studies in place of a network (as botorch's ``MockModel``).

    Example:
        >>> f = Pointwise(lambda z: (z ** 2).sum(-1))
        >>> f(torch.ones(2, 3)).tolist()
        [3.0, 3.0]
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, inputs: Tensor | Perturbation) -> Tensor:
        return evaluate_pointwise(self.fn, inputs)
