"""Run a test worker on 2 gloo ranks with a deadline, so a hang fails instead of blocking."""

from __future__ import annotations

import os
import time

import pytest
import torch


def run_two_ranks(worker, tmp_path, deadline_seconds: float) -> list:
    """``worker(rank, world, init_file, out_dir)`` on 2 spawned processes; what each saved
    as ``out_dir/rank<r>.pt``. A rank that fails raises; ranks still running after
    ``deadline_seconds`` are killed and the test fails (one waits in a collective the other
    never joins)."""
    import torch.multiprocessing as mp

    context = mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + deadline_seconds
    while not context.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the ranks hung (one waits in a collective the other never joins)")
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


def end_rank() -> None:
    """End a spawned gloo rank once it has saved its results: a barrier (the other rank has
    finished its work and saved too), then ``os._exit(0)``, skipping the process group's
    teardown. That teardown (destroy_process_group, or the interpreter's exit) aborted a
    rank now and then with "terminate called without an active exception" (SIGABRT) after
    both ranks had saved their results: in 4 of 5 suite runs right after a fresh install,
    none of the runs after them. A rank that raises still reports its traceback."""
    import torch.distributed as dist

    dist.barrier()
    os._exit(0)
