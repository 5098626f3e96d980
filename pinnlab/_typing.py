"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import torch
from torch import Tensor

Points = Tensor
"""`(N, D)` collocation or test inputs; time, where present, is the last column."""

Values = Tensor
"""`(N,)` scalar values at points."""

Params = dict[str, Tensor]
"""Network parameters by name, as used by :func:`torch.func.functional_call`."""

HyperParams = Mapping[str, Union[float, Tensor, Mapping[str, Union[float, Tensor]]]]
"""Hyperparameters of the training step (learning rate, sigma, mix, loss weights, ...)."""


def is_transform_wrapped(tensor: Tensor) -> bool:
    """True for a tensor that lives inside a torch.func transform (vmap, grad, jvp):
    such tensors must not be cached beyond the transform's call."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))
