"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

from torch import Tensor

Points = Tensor
"""`(N, D)` collocation or test inputs; time, where present, is the last column."""

Values = Tensor
"""`(N,)` scalar values at points."""

Params = dict[str, Tensor]
"""Network parameters by name, as used by :func:`torch.func.functional_call`."""

HyperParams = Mapping[str, Union[float, Tensor, Mapping[str, Union[float, Tensor]]]]
"""Hyperparameters of the training step (learning rate, sigma, mix, loss weights, ...)."""
