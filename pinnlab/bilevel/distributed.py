"""Directions spread over torch.distributed ranks (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _flag_device() -> str:
    """Where a small tensor for a collective call lives: NCCL takes only CUDA tensors."""
    return "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"


class PeerLost(RuntimeError):
    """Another process of the run ended (killed or crashed) during a collective call."""


def _collective(call, *args, **kwargs):
    """``call(*args, **kwargs)``, a collective of the process group; a peer that is gone
    (gloo's "Connection closed by peer" or "reset by peer", a DistError of another backend) raises
    :class:`PeerLost` with the first line of the backend's message (the survivor printed
    a traceback through torch's internals). With two processes the one gone is the other
    rank, which the message names (a rank without directions, waiting here while the one
    with them raised, pointed at "another process"); with more, the backend names only
    its address."""
    try:
        return call(*args, **kwargs)
    except RuntimeError as err:
        if isinstance(err, torch.distributed.DistError) or "by peer" in str(err) or "gloo/transport" in str(err):
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0].strip()[:160]
            try:
                rank, world = rank_and_world()
            except (RuntimeError, ValueError):  # (no group to ask: name no rank)
                rank, world = 0, 1
            who = f"rank {1 - rank} of the run" if world == 2 else "another process of the run"
            raise PeerLost(f"{who} ended during a collective call ({detail})") from None
        raise


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Σ over ranks (a copy; the input is unchanged)."""
    out = tensor.detach().clone()
    _collective(torch.distributed.all_reduce, out, op=torch.distributed.ReduceOp.SUM)
    return out


def broadcast_value(value: float | None) -> float:
    """Rank 0's ``value`` (a float, ``None`` read as NaN) on every rank.

    For a number only some ranks compute, such as h(φ) on the ranks that hold
    directions, so that every rank records, and decides by, the same one."""
    out = torch.tensor([math.nan if value is None else float(value)], dtype=torch.float64,
                       device=_flag_device())
    _collective(torch.distributed.broadcast, out, src=0)
    return float(out.item())


def all_agree(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (a MIN all_reduce over 0/1).

    For a decision each rank makes from its own state, such as whether its own wall
    clock leaves time for another outer step: ranks that take different branches leave
    one of them waiting in a collective the others never join.
    """
    dist = torch.distributed
    out = torch.tensor([int(flag)], device=_flag_device())
    _collective(dist.all_reduce, out, op=dist.ReduceOp.MIN)
    return bool(out.item())


def environment_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 outside torchrun).
    A ``WORLD_SIZE`` that is no positive integer, or above 1 without the rest of what
    torchrun sets (``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``: a variable left in the
    shell, not torchrun), raises ``ValueError`` saying so: torch's rendezvous error came
    as a traceback, and ``int('abc')`` was reported as a config error."""
    text = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    world = int(text) if text.isascii() and text.isdigit() else 0  # not int(): it reads '1_0' as 10
    if world < 1:
        raise ValueError(f"WORLD_SIZE = {text!r} in the environment: not a number of processes (torchrun sets it); "
                         "unset it to run one process")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if world > 1 and not os.environ.get(k)]
    if missing:
        raise ValueError(f"WORLD_SIZE = {world} in the environment but {', '.join(missing)} not set: start the "
                         "processes with torchrun, or unset WORLD_SIZE to run one process")
    return world


def environment_rank() -> int:
    """This process's rank among those ``torchrun`` started (``RANK``), 0 outside torchrun:
    a ``RANK`` left in the shell (another launcher's, a notebook started from a torchrun
    job) without a ``WORLD_SIZE`` above 1 belongs to no group, and the one process is the
    one that writes. For what only rank 0 does before the process group is joined (the
    output lock, a message said once); never raises (a bad ``WORLD_SIZE`` is
    :func:`environment_world_size`'s to refuse, a bad ``RANK`` torch's)."""
    world = os.environ.get("WORLD_SIZE", "").strip()
    if not (world.isascii() and world.isdigit() and int(world) > 1):
        return 0
    rank = os.environ.get("RANK", "").strip()
    return int(rank) if rank.isascii() and rank.isdigit() else 0


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for a run on ``device``: NCCL for a CUDA device, gloo
    otherwise (also on a machine with CUDA when the run computes on the CPU, whose
    tensors NCCL cannot reduce)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def local_device(device: str | torch.device) -> torch.device:
    """The device this process computes on: under ``torchrun`` (``WORLD_SIZE`` > 1) a
    CUDA device is ``cuda:LOCAL_RANK``, made torch's current CUDA device, so that tensors
    created on ``"cuda"`` land on this rank's GPU and NCCL finds one GPU per rank;
    anything else as given. Call it before creating the run's tensors."""
    device = torch.device(device)
    if device.type != "cuda" or environment_world_size() <= 1:
        return device
    text = os.environ.get("LOCAL_RANK", "0").strip() or "0"
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"LOCAL_RANK = {text!r} in the environment: not a GPU index (torchrun sets it); "
                         "start the processes with torchrun")
    index = int(text)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def leave_process_group() -> None:
    """Leave the process group of :func:`init_from_environment` on every rank together: a
    barrier (every rank is done with its collectives), then ``destroy_process_group``. A
    rank that returned while the others were still connected (rank 1 after the tuning,
    while rank 0 ran the final solve) aborted now and then at interpreter exit ("terminate
    called without an active exception", SIGABRT; 8 of 10 runs of a gloo test), and
    torchrun then killed rank 0 mid-solve."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        _collective(dist.barrier)
        dist.destroy_process_group()


def init_from_environment(device: str | torch.device) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, once, with
    the backend for ``device``, the device the run computes on (:func:`backend_for`;
    with NCCL each rank on ``cuda:LOCAL_RANK``, :func:`local_device`); (rank, world
    size), or (0, 1) outside torchrun. A SIGTERM or Ctrl-C while it waits for the other
    ranks is acted on at once (:func:`_interruptible`)."""
    dist = torch.distributed
    if environment_world_size() > 1 and dist.is_available() and not dist.is_initialized():
        backend = backend_for(device)
        if backend == "nccl":
            local_device(device)
        # (NCCL makes its communicators at the first collective, in the main thread)
        _interruptible(dist.init_process_group, backend=backend)
    return rank_and_world()


def _interruptible(call, *args, **kwargs):
    """``call(*args, **kwargs)`` in a thread, the main thread waiting for it in short joins:
    Python's signal handlers run in the main thread between bytecodes, so a SIGTERM (or
    Ctrl-C) that arrives while the main thread itself waits in a blocking C++ call (joining
    the process group waits there for every rank) is acted on only when the call returns:
    a rank whose peer refused to start (a busy output on rank 0) ignored torchrun's SIGTERM
    until torchrun killed it 30 s later, without a line."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as err:  # (raised in the main thread below)
            outcome["error"] = err

    thread = threading.Thread(target=run, name="pinnlab-interruptible", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
