"""Run a test worker on 2 gloo ranks with a deadline, so a hang fails instead of blocking."""

from __future__ import annotations

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
