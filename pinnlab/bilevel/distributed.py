"""Directions spread over torch.distributed ranks (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import torch
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Σ over ranks (a copy; the input is unchanged)."""
    out = tensor.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out


def all_agree(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (a MIN all_reduce over 0/1).

    For a decision each rank makes from its own state, such as whether its own wall
    clock leaves time for another outer step: ranks that take different branches leave
    one of them waiting in a collective the others never join.
    """
    dist = torch.distributed
    out = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return bool(out.item())


def init_from_environment() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU,
    NCCL when CUDA is present), once; (rank, world size), or (0, 1) outside torchrun."""
    import os

    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_world()
