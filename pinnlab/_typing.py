"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Points = Tensor
"""`(N, D)` collocation or test inputs; time, where present, is the last column."""

Values = Tensor
"""`(N,)` scalar values at points."""

Params = dict[str, Tensor]
"""Network parameters by name, as used by :func:`torch.func.functional_call`."""

HyperParams = Mapping[str, float | Tensor | Mapping[str, float | Tensor]]
"""Hyperparameters of the training step (learning rate, sigma, mix, loss weights, ...)."""


def is_transform_wrapped(tensor: Tensor) -> bool:
    """True for a tensor that lives inside a torch.func transform (vmap, grad, jvp):
    such tensors must not be cached beyond the transform's call."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))


def inspectable(tensor: Tensor) -> Tensor | None:
    """The values of ``tensor`` for a check, or None where they are not read: on an
    accelerator (reading them would synchronise every training step). Inside torch.func
    transforms (grad, jvp, vmap) the values are those beneath the wrappers, a vmap's whole
    batch included, so a check holds for every batch member and reads no tangent."""
    while is_transform_wrapped(tensor):
        tensor = torch._C._functorch.get_unwrapped(tensor)
    return tensor.detach() if tensor.device.type == "cpu" else None


def tensor_leaves(tree):
    """The tensor leaves of a pytree (e.g. an optimizer state with a Python step count),
    and a function building a tree of the same structure from new tensor leaves (the
    non-tensor leaves are kept). Transforms such as torch.func.jvp and vmap only carry
    tensors; this is how states with ints travel through them."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(tree)
    mask = [isinstance(x, Tensor) for x in leaves]

    def rebuild(tensors):
        it = iter(tensors)
        return tree_unflatten([next(it) if m else x for x, m in zip(leaves, mask)], spec)

    return [x for x, m in zip(leaves, mask) if m], rebuild
