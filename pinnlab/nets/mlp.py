"""Multilayer perceptron whose first layer factorises under Gaussian perturbations."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pinnlab._checks import check_integer
from pinnlab.nets.perturbation import Perturbation, combine_pattern_features, is_center, with_center_rows

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sin": torch.sin,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "softplus": nn.functional.softplus,
}


class MLP(nn.Module):
    """Fully connected network f(·; θ): R^D → R with a factorised first layer.

    ``depth`` counts affine layers: the default ``MLP(D)`` is [D, 128, 128, 128, 1] with
    tanh, the network of every RS-PINN benchmark (REFERENCE.md §4.1). Initialisation
    is PyTorch's default for ``nn.Linear`` (weights and biases ~ U(±1/√fan_in)) but
    drawn from ``generator``, so it is reproducible without touching the global RNG.

    Called on a `(N, D)` tensor it returns `(N,)`. Called on a
    :class:`~pinnlab.nets.Perturbation` it returns `(N, S, K)` and computes the first
    layer as W x + Σ_p c_p W δ_p (see there for the cost). A perturbation that gives
    δ_p = scales[p]⊙noise[p] as the two factors (attributes ``noise`` and ``scales``)
    gets W δ_p = (W diag scales[p]) noise[p], so no δ_p as large as the noise is formed.
    A perturbation with a :class:`~pinnlab.nets.perturbation.FeatureCache` (shared noise
    evaluated chunk by chunk) forms W δ_p once for all the chunks.

    Args:
        input_dim: D, the number of input columns (time included).
        width: hidden units per layer.
        depth: number of affine layers (≥ 2).
        activation: one of ``ACTIVATIONS``.
        generator: RNG for the initialisation.

    Example:
        >>> net = MLP(3, width=8, depth=3, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(5, 3)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        width: int = 128,
        depth: int = 4,
        activation: str = "tanh",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        check_integer("input_dim", input_dim)
        check_integer("width", width)
        check_integer("depth", depth)
        if depth < 2:
            raise ValueError(f"depth counts affine layers and must be >= 2, got {depth}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}"
            )
        self.input_dim = input_dim
        self.width = width
        self.depth = depth
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        sizes = [input_dim] + [width] * (depth - 1) + [1]
        # made on the meta device, so nn.Linear's own initialisation draws nothing from
        # the global RNG, then given memory and filled from ``generator``
        self.layers = nn.ModuleList(
            nn.Linear(a, b, dtype=dtype, device="meta") for a, b in zip(sizes, sizes[1:])
        ).to_empty(device=device if device is not None else "cpu")
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        with torch.no_grad():
            for layer in self.layers:
                bound = 1.0 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    sample = torch.rand(p.shape, generator=generator, dtype=torch.float64)
                    p.copy_(((2 * sample - 1) * bound).to(p))

    def _head(self, hidden: Tensor) -> Tensor:
        hidden = self.activation(hidden)
        for layer in self.layers[1:-1]:
            hidden = self.activation(layer(hidden))
        return self.layers[-1](hidden).squeeze(-1)

    def forward(self, inputs: Tensor | Perturbation) -> Tensor:
        first = self.layers[0]
        if not isinstance(inputs, Perturbation):
            return self._head(first(inputs))
        center = first(inputs.center)  # (N, w), bias included once
        scales = getattr(inputs, "scales", None)
        if scales is None:
            parts = inputs.part_features(first.weight)  # (K, w) or (N, K, w)
        else:  # parts δ_p = scales[p]⊙noise[p] given as factors (the Stein estimator's independent noise)
            parts = tuple(_scaled_features(first.weight, n, s) for n, s in zip(inputs.noise, scales))
        moving = tuple(c for c in inputs.coefficients if not is_center(c))
        values = None
        if moving:
            hidden = torch.stack(
                [combine_pattern_features(center, parts, c) for c in moving], dim=1
            )  # (N, S', K, w)
            values = self._head(hidden)
        if len(moving) == inputs.num_patterns:
            return values
        # the centre (an all-zero pattern): once per point, from the same W·center
        return with_center_rows(values, self._head(center), inputs.coefficients, inputs.num_samples)


def _scaled_features(weight: Tensor, noise: Tensor, scale: Tensor) -> Tensor:
    """W (scale⊙noise) as (W diag scale) noise: `(..., w)`. ``noise`` `(..., D)`, or
    `(..., 1)` for the same value in every column: then noise · (W scale)."""
    if noise.shape[-1] == 1:
        return noise * (weight @ scale)
    return noise @ (weight * scale).T
