"""A time budget under a process group: the ranks stop after the same outer step."""

from __future__ import annotations

import os

import pytest
import torch

from pinnlab.bilevel import ForwardGradientUnroll, optimize

from .problems import Ridge
from .ranks import end_rank, run_two_ranks

STEPS = 6


class _Ticks:
    """A clock that advances ``per_call`` seconds each time it is read."""

    def __init__(self, per_call: float):
        self.now, self.per_call = 0.0, per_call

    def __call__(self) -> float:
        self.now += self.per_call
        return self.now


def _worker(rank, world, init_file, out_dir):
    import datetime

    import torch.distributed as dist

    import pinnlab._budget

    torch.set_num_threads(1)
    # rank 1's clock says each outer step takes 1 s (its budget of 2.5 s fits 2 steps),
    # rank 0's that none takes any time (its budget fits all of them)
    pinnlab._budget._now = _Ticks(1.0 if rank == 1 else 0.0)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=20))
    ridge = Ridge()
    result = optimize(ridge.problem(horizon=5), ridge.phi, ForwardGradientUnroll(num_directions=4),
                      steps=STEPS, time_budget=2.5)
    torch.save({"outer_step": result.history["outer_step"], "phi": result.phi["log_reg"]},
               os.path.join(out_dir, f"rank{rank}.pt"))
    end_rank()


@pytest.mark.distributed
def test_ranks_with_different_clocks_run_the_same_outer_steps(tmp_path):
    """Each rank's own clock would stop rank 1 after 2 outer steps and let rank 0 run all 6,
    leaving rank 0 in the estimator's all_reduce alone: the step runs only if it fits on
    every rank, so both finish after the same 2 steps with the same φ."""
    ranks = run_two_ranks(_worker, tmp_path, 60)
    assert ranks[0]["outer_step"] == ranks[1]["outer_step"] == [0, 1]
    torch.testing.assert_close(ranks[0]["phi"], ranks[1]["phi"], rtol=0, atol=0)


def test_one_process_makes_no_collective_call(monkeypatch):
    """Without a process group the budget is this process's alone (no all_reduce)."""
    import pinnlab.bilevel.driver

    def refuse(flag):
        raise AssertionError("a collective call without a process group")

    monkeypatch.setattr(pinnlab.bilevel.driver, "all_agree", refuse)
    ridge = Ridge()
    result = optimize(ridge.problem(horizon=5), ridge.phi, ForwardGradientUnroll(num_directions=4),
                      steps=3, time_budget=60.0)
    assert result.history["outer_step"] == [0, 1, 2]
