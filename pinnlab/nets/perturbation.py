"""Perturbed inputs x + Σ_p c_{s,p} δ_p, evaluated in one batched call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnlab._typing import is_transform_wrapped


@dataclass(frozen=True)
class Perturbation:
    """A batch of perturbed inputs for Monte Carlo smoothing.

    Represents, for every point ``n``, sign pattern ``s`` and sample ``k``, the input

        z[n, s, k] = center[n] + Σ_p coefficients[s][p] · parts[p][(n,) k]

    Networks that understand this type (:class:`pinnlab.nets.MLP`) factorise their
    first affine layer, W z = W center + Σ_p c_{s,p} W δ_p, so W δ_p is computed once
    for all sign patterns and, with shared noise, once for all points: the first-layer
    cost falls from ``N·S·K·D·w`` to ``(N + P·K)·D·w``. An all-zero pattern is the
    centre itself: its value is the same for all K samples, and these networks (and
    :func:`evaluate_pointwise`) evaluate it once per point, sharing W·center with the
    other patterns (the Stein estimator's f(x) costs no first layer of its own).

    Args:
        center: `(N, D)` points x.
        parts: noise tensors δ_p, each `(K, D)` (shared by all points) or `(N, K, D)`
            (independent per point).
        coefficients: `S` sign patterns, each a tuple of `P` floats.
        cache: a :class:`FeatureCache` shared by perturbations with these same parts (the
            chunks of points of one evaluation), so W δ_p is formed once for all of them.
    """

    center: Tensor
    parts: tuple[Tensor, ...]
    coefficients: tuple[tuple[float, ...], ...]
    cache: FeatureCache | None = field(default=None, compare=False, repr=False)

    @property
    def num_samples(self) -> int:
        return self.parts[0].shape[-2]

    @property
    def num_patterns(self) -> int:
        return len(self.coefficients)

    def materialize(self, coefficients: tuple[tuple[float, ...], ...] | None = None) -> Tensor:
        """The explicit inputs, `(N, S, K, D)`; memory N·S·K·D. ``coefficients``: only
        these patterns (default: all)."""
        shape = (self.center.shape[0], self.num_samples, self.center.shape[1])
        rows = []
        for pattern in self.coefficients if coefficients is None else coefficients:
            offset = sum(c * _per_point(p) for c, p in zip(pattern, self.parts) if c != 0)
            # an all-zero pattern (the centre itself) still has K samples
            rows.append((self.center[:, None, :] + offset).expand(shape))
        return torch.stack(rows, dim=1)

    def part_features(self, weight: Tensor) -> tuple[Tensor, ...]:
        """W δ_p for every part, `(K, w)` or `(N, K, w)` for ``weight`` `(w, D)`; from the
        cache when one was formed with this weight for these parts."""
        if self.cache is not None:
            return self.cache.features(weight, self.parts)
        return tuple(p @ weight.T for p in self.parts)


class FeatureCache:
    """First-layer features W δ_p of one set of shared parts δ_p `(K, D)`, formed once.

    With shared noise, an evaluation in chunks of points (or a slice's blocks) perturbs
    every chunk by the same δ_p: formed per chunk, W δ_p costs chunks·K·D·w multiply-adds
    instead of K·D·w (a slice's 100 blocks at D = 10⁵: 3 times W x of its points). The
    owner (the Stein estimator, for one draw) gives one cache to all those perturbations.

    Only plain values are kept, for the weight tensor and parts they were formed from,
    the weight not modified since (its version counter): features that autograd records
    (a training step, whose gradients stay those of one product per chunk) or that live
    in a torch.func transform (they must not outlive its level) are formed every time,
    and so are those of an inference tensor's weight (it has no version counter).
    """

    def __init__(self):
        self._key: tuple | None = None
        self._features: tuple[Tensor, ...] = ()

    def features(self, weight: Tensor, parts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        key = self._key
        # a call autograd records never gets kept values (kept under no_grad: no W δ gradient)
        recorded = torch.is_grad_enabled() and (weight.requires_grad or any(p.requires_grad for p in parts))
        if (key is not None and not recorded and key[0] is weight and key[1] == weight._version
                and len(key[2]) == len(parts) and all(a is b for a, b in zip(key[2], parts))):
            return self._features
        features = tuple(p @ weight.T for p in parts)
        if not (weight.is_inference() or any(f.requires_grad or is_transform_wrapped(f) for f in features)):
            self._key, self._features = (weight, weight._version, parts), features
        return features


def _per_point(part: Tensor) -> Tensor:
    return part[None] if part.dim() == 2 else part


def is_center(pattern: tuple[float, ...]) -> bool:
    """Whether a sign pattern is all zero: the centre itself, one value for all K samples."""
    return all(c == 0 for c in pattern)


def with_center_rows(
    moving: Tensor | None, center: Tensor, coefficients: tuple[tuple[float, ...], ...], samples: int
) -> Tensor:
    """`(N, S, K)` values of all the ``coefficients`` from the values of those that are not
    the centre, `(N, S', K)` in their order (None if there are none), and the centre's
    `(N,)`, repeated over the K samples at every all-zero pattern."""
    rows, moved = [], iter(range(0 if moving is None else moving.shape[1]))
    for pattern in coefficients:
        if is_center(pattern):
            rows.append(center[:, None].expand(center.shape[0], samples))
        else:
            rows.append(moving[:, next(moved)])
    return torch.stack(rows, dim=1)


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
    if not isinstance(inputs, Perturbation):
        return fn(inputs)
    moving = tuple(c for c in inputs.coefficients if not is_center(c))
    values = None
    if moving:
        z = inputs.materialize(moving)
        values = fn(z.reshape(-1, z.shape[-1])).reshape(z.shape[:-1])
    if len(moving) == inputs.num_patterns:
        return values
    return with_center_rows(values, fn(inputs.center), inputs.coefficients, inputs.num_samples)


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
