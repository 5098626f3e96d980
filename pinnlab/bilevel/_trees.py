"""Small helpers for dicts of tensors (parameter trees)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

Tree = dict[str, Tensor]


def tree_dot(a: Tree, b: Tree) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def tree_add(a: Tree, b: Tree, scale: float | Tensor = 1.0) -> Tree:
    return {k: a[k] + scale * b[k] for k in a}


def tree_scale(a: Tree, scale: float | Tensor) -> Tree:
    return {k: scale * v for k, v in a.items()}


def tree_norm(a: Tree) -> Tensor:
    return torch.sqrt(tree_dot(a, a))


def tree_norm64(a: Tree) -> float:
    """‖a‖ as a Python float, summed in float64 (no overflow of the squares of a large
    float32 tree): for divergence checks and diagnostics."""
    return math.sqrt(sum(float((v.detach().double() ** 2).sum()) for v in a.values()))


def detach(a: Tree) -> Tree:
    return {k: v.detach() for k, v in a.items()}
