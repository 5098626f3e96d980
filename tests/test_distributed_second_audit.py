"""Second mutation audit of :mod:`pinnlab.bilevel.distributed` and the rank handling of
``pinnlab tune`` (:mod:`pinnlab.tuning.command`, ``save`` in :mod:`pinnlab.tuning.run`).

No process is spawned: the process group's calls are replaced by stand-ins of a group of
two, this process being rank 0 or rank 1 and the other rank's tensors given, so what the
collectives hand back, which rank writes, announces and leaves, and when, are pinned in
process."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from pinnlab._interrupts import Terminated
from pinnlab.bilevel import distributed
from pinnlab.cli import main
from pinnlab.tuning import run as tuning_run

from .tuning.micro_configs import WEIGHT_FG2U


# -- the collectives as rank 1 of 2 ---------------------------------------------------------------
@pytest.fixture
def rank_one_of_two(monkeypatch):
    """A stand-in gloo group in which this process is rank 1 of 2: ``theirs["tensor"]`` is
    rank 0's tensor; all_reduce combines it with ours by the requested op (SUM or MIN),
    broadcast from rank 0 copies it into ours. Returns ``theirs``; ``theirs["calls"]``
    records (collective, op or src)."""
    theirs = {"calls": []}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")

    def all_reduce(tensor, op=None):
        theirs["calls"].append(("all_reduce", op))
        other = theirs["tensor"].to(tensor.dtype)
        if op == dist.ReduceOp.SUM:
            tensor += other
        elif op == dist.ReduceOp.MIN:
            torch.minimum(tensor, other, out=tensor)
        else:
            raise AssertionError(f"unexpected reduction {op}")

    def broadcast(tensor, src=None):
        theirs["calls"].append(("broadcast", src))
        if src == 0:  # (src=1: this rank's own value is sent, nothing received)
            tensor.copy_(theirs["tensor"].to(tensor.dtype))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "broadcast", broadcast)
    return theirs


@pytest.mark.parametrize("mine, rank_0s, agreed", [
    (True, True, True), (True, False, False), (False, True, False), (False, False, False)])
def test_all_agree_holds_only_when_every_rank_agrees(rank_one_of_two, mine, rank_0s, agreed):
    """The decision is the reduced flag, not this rank's own: rank 1 with time left while
    rank 0 has none must stop too (deciding by its own flag, it went on into a collective
    rank 0 never joined)."""
    rank_one_of_two["tensor"] = torch.tensor([int(rank_0s)])
    assert distributed.all_agree(mine) is agreed
    assert rank_one_of_two["calls"] == [("all_reduce", dist.ReduceOp.MIN)]


@pytest.mark.parametrize("mine", [None, 3.0, float("inf")])
def test_broadcast_value_hands_rank_1_rank_0s_number(rank_one_of_two, mine):
    """Rank 1, which holds no direction and computed no h(φ) (None), or another value,
    records rank 0's 0.1 exactly (float64), sent from rank 0 (src 0, not its own rank)."""
    rank_one_of_two["tensor"] = torch.tensor([0.1], dtype=torch.float64)
    assert distributed.broadcast_value(mine) == 0.1
    assert rank_one_of_two["calls"] == [("broadcast", 0)]


# -- pinnlab tune: which rank writes, announces and leaves -----------------------------------------
def _config(tmp_path):
    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    return path


def _as_rank(monkeypatch, rank):
    """``pinnlab tune`` as rank ``rank`` of 2 (the process group's join replaced)."""
    monkeypatch.setattr(distributed, "init_from_environment", lambda device: (rank, 2))


@pytest.mark.parametrize("overrides", [["tune.checkpoint_every=1"], ["tune.method=random", "tune.options={}"]],
                         ids=["fg2u", "random"])
def test_rank_1_writes_no_checkpoint_and_no_result(tmp_path, monkeypatch, overrides):
    """All ranks share the output's paths: only rank 0 saves the tuning's checkpoint (a
    hypergradient method's every checkpoint_every outer steps, a search's after every
    trial). Rank 1 saving it too wrote the one file from two processes, and left it behind
    (rank 1 returns before the final solve, whose end removes it)."""
    _as_rank(monkeypatch, 1)
    out = tmp_path / "t.h5"
    assert main(["tune", str(_config(tmp_path)), *overrides, "-o", str(out), "--progress", "off"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.yaml"]


@pytest.mark.parametrize("stop, code, line", [
    (KeyboardInterrupt, 130, "pinnlab: interrupted (rank {rank} of 2)"),
    (Terminated, 143, "pinnlab: terminated (rank {rank} of 2)"),
    (distributed.PeerLost("another process of the run ended during a collective call (gone)"), 1,
     "pinnlab: error (rank {rank} of 2): another process of the run ended during a collective call (gone)"),
], ids=["interrupt", "terminate", "peer_lost"])
@pytest.mark.parametrize("rank", [0, 1])
def test_a_stopped_tuning_is_saved_and_announced_by_rank_0_alone(tmp_path, monkeypatch, capsys, rank, stop, code,
                                                                 line):
    """The tuning stops after its 3 outer steps (Ctrl-C, SIGTERM, or another rank lost). Rank 0
    saved the checkpoint (checkpoint_every 1) and says so; rank 1, which saves nothing,
    must not announce the file rank 0 wrote (here written for it, as rank 0 would): one
    line each, not two ranks telling the user the same thing."""
    real = tuning_run.run_tuning

    def stopped(setup, **kwargs):
        real(setup, **{**kwargs, "save": True} if rank else kwargs)
        raise stop

    monkeypatch.setattr(tuning_run, "run_tuning", stopped)
    _as_rank(monkeypatch, rank)
    for key, value in {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():  # (torchrun's: the stop lines' rank label reads them)
        monkeypatch.setenv(key, value)
    out = tmp_path / "t.h5"
    checkpoint = tmp_path / "t.h5.ckpt"
    assert main(["tune", str(_config(tmp_path)), "tune.checkpoint_every=1", "-o", str(out),
                 "--progress", "off"]) == code
    # (rank 0 also warns that one direction leaves the second process idle)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    saved = f"pinnlab: outer step 3 saved in {str(checkpoint)!r}; --resume continues from it"
    if rank == 0:
        assert checkpoint.is_file() and sorted(err) == sorted([saved, line.format(rank=0)]), err
    else:
        assert err == [line.format(rank=1)]
    assert not out.exists()


def test_rank_0_of_two_leaves_the_group_before_its_final_solve(tmp_path, monkeypatch, capsys):
    """Under torchrun (WORLD_SIZE 2, device auto): rank 0 joins with gloo for the resolved
    device (CPU; "auto" is no torch device), tunes, leaves the group with every rank
    (barrier, then destroy) before the final solve it alone runs, and reports the 2
    processes. The group is a stand-in in which rank 1 holds none of the one direction
    (its all_reduce adds nothing)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    calls, up = [], [False]

    def init_process_group(backend=None, **kwargs):
        calls.append(("init", backend))
        up[0] = True

    def destroy_process_group(*args):
        calls.append(("destroy",))
        up[0] = False

    monkeypatch.setattr(dist, "is_initialized", lambda: up[0])
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "destroy_process_group", destroy_process_group)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: None)
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src=None: None)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append(("barrier",)))
    real = tuning_run.final_solve

    def final_solve(*args, **kwargs):
        calls.append(("final_solve", up[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning_run, "final_solve", final_solve)
    out = tmp_path / "t.h5"
    assert main(["tune", str(_config(tmp_path)), "-o", str(out), "--progress", "off"]) == 0
    assert calls == [("init", "gloo"), ("barrier",), ("destroy",), ("final_solve", False)]
    assert out.is_file()
    assert ", 2 process(es)): " in capsys.readouterr().err
