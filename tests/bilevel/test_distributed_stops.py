"""Under a process group every rank stops at the same outer step; ``pinnlab tune`` under
torchrun: methods that split no work refused, one progress display, the backend, ``-m pinnlab``."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pinnlab.bilevel import (
    AbstractHypergradient,
    ForwardGradientUnroll,
    HypergradientResult,
    from_inner_loss,
    optimize,
)
from pinnlab.cli import main
from pinnlab.solvers import SGD

from .problems import Ridge
from .ranks import end_rank, run_two_ranks

S = 3.0e18
"""Outer scale: f = (S·w)² overflows float32 once |w| ≳ 6, its gradient 2S²w only once |w| ≳ 17."""


def _overflowing_problem():
    """θ tracks φ; after one outer step φ ≈ 7.4, where the outer value is inf and the
    hypergradient still finite."""

    def inner_loss(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    def outer_loss(theta, phi):
        return ((S * theta["w"]) ** 2).sum()

    return from_inner_loss(inner_loss, outer_loss, SGD(lr=0.5), {"w": torch.zeros(1)}, horizon=5)


class _InfOnRankOne(AbstractHypergradient):
    """All-reduces a constant gradient like a splitting estimator; its value is inf on
    rank 1 alone at outer step 1 (as a black box's run on one rank may diverge)."""

    name = "inf_on_rank_one"
    distributed = True

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        import torch.distributed as dist

        grad = {k: torch.full_like(v, 0.01) for k, v in phi.items()}
        for g in grad.values():
            dist.all_reduce(g)
        bad = dist.get_rank() == 1 and outer_step == 1
        return HypergradientResult(grad=grad, value=float("inf") if bad else 1.0)


def _worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=15))
    out = {}
    ridge = Ridge()  # b = 1 < 2 ranks: rank 1 holds no direction
    estimate = ForwardGradientUnroll(num_directions=1)(ridge.problem(horizon=4), ridge.phi, seed=3)
    out["estimate"] = {"value": estimate.value, "theta": estimate.theta["w"]}
    # the outer value overflows at outer step 1 (computed on rank 0 only)
    result = optimize(_overflowing_problem(), {"a": torch.tensor([-1.0])}, ForwardGradientUnroll(num_directions=1),
                      steps=4, warm_start=False, meta_optimizer=lambda p: torch.optim.SGD(p, lr=5e-37))
    out["overflow"] = {"status": result.status, "message": result.message,
                       "outer_step": result.history["outer_step"], "phi": result.phi["a"]}
    # one rank's value is non-finite, the other's finite
    result = optimize(ridge.problem(horizon=2), ridge.phi, _InfOnRankOne(), steps=4)
    out["one_rank"] = {"status": result.status, "message": result.message,
                       "outer_step": result.history["outer_step"], "phi": result.phi["log_reg"]}
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    end_rank()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of 2 gloo ranks returned (one spawn for all the scenarios)."""
    return run_two_ranks(_worker, tmp_path_factory.mktemp("ranks"), 90)


@pytest.mark.distributed
def test_a_rank_without_directions_gets_rank_0s_value(ranks):
    """With b below the number of ranks, rank 1 unrolls only for θ_T; it reports rank 0's
    h(φ) (not None, which the outer loop would skip in its finiteness check)."""
    values = [r["estimate"]["value"] for r in ranks]
    assert values[0] is not None and values[1] == values[0]
    torch.testing.assert_close(ranks[1]["estimate"]["theta"], ranks[0]["estimate"]["theta"], rtol=0, atol=0)


@pytest.mark.distributed
def test_an_overflowing_outer_value_stops_every_rank_at_the_same_step(ranks):
    """The outer value overflows at outer step 1 where only rank 0 computes it: both ranks
    stop there with status nonfinite (before, rank 1 went on into the next all_reduce
    alone and died there)."""
    for r in ranks:
        assert r["overflow"]["status"] == "nonfinite"
        assert r["overflow"]["message"].startswith("outer step 1:")
        assert r["overflow"]["outer_step"] == [0]
    torch.testing.assert_close(ranks[0]["overflow"]["phi"], ranks[1]["overflow"]["phi"], rtol=0, atol=0)


@pytest.mark.distributed
def test_a_non_finite_value_on_one_rank_stops_all_of_them(ranks):
    """Rank 1's value alone is inf at outer step 1: the ranks decide together, so both
    stop there, with the same φ."""
    for r in ranks:
        assert r["one_rank"]["status"] == "nonfinite"
        assert r["one_rank"]["message"].startswith("outer step 1:")
        assert r["one_rank"]["outer_step"] == [0]
    torch.testing.assert_close(ranks[0]["one_rank"]["phi"], ranks[1]["one_rank"]["phi"], rtol=0, atol=0)


# -- pinnlab tune under torchrun ------------------------------------------------------------
TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 1.0e-2, samples: 4, noise: shared, eval_samples: 8}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 4, lr: 1.0e-3, schedule: constant, batch_size: 8, eval_every: 2, test_points: 50}
data: {source: synthetic, points: 30, noise: 0.01, seed: 0}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 8}
  outer_steps: 2
  horizon: 2
  outer_lr: 1.0
"""


def _config(tmp_path):
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    return path


def _no_process_group(monkeypatch):
    """Fail if the command joins a process group (i.e. starts the run)."""
    import pinnlab.bilevel.distributed

    def refuse(device):
        raise AssertionError("the run started")

    monkeypatch.setattr(pinnlab.bilevel.distributed, "init_from_environment", refuse)


@pytest.mark.parametrize("overrides", [
    ["tune.method=rgu", "tune.options={}"],
    ["tune.method=random", "tune.options={}"],
    ["tune.options.distributed=false"],
    ["tune.method=fgu", "tune.options={}", "tune.then={method: rgu, after: 1}"],
])
def test_tune_under_torchrun_refuses_methods_that_split_no_work(tmp_path, monkeypatch, capsys, overrides):
    """Each of the processes would run all of the work: one line, exit code 2, before
    joining the process group."""
    _torchrun_environment(monkeypatch)
    _no_process_group(monkeypatch)
    out = tmp_path / "t.h5"
    assert main(["tune", str(_config(tmp_path)), *overrides, "-o", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "under torchrun with 2 processes" in err[0], err
    assert "only fg2u and zo_fg2u spread their directions" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("overrides, refused", [
    ([], False),
    (["tune.method=zo_fg2u", "tune.options={num_directions: 2}"], False),
    (["tune.method=rgu", "tune.options={}", "tune.then={method: fg2u, after: 1}"], False),
    (["trainer.device=cuda:1"], True),
])
def test_methods_that_split_their_directions_are_allowed(tmp_path, overrides, refused):
    from pinnlab import config as configuration
    from pinnlab.tuning.command import check_processes

    config = configuration.load(str(_config(tmp_path)), overrides)
    check_processes(config, 1)  # one process: anything goes
    if refused:  # each process computes on cuda:LOCAL_RANK
        with pytest.raises(configuration.ConfigError, match="cuda:LOCAL_RANK"):
            check_processes(config, 2)
    else:
        check_processes(config, 2)


def test_a_rank_other_than_0_draws_no_progress(tmp_path, monkeypatch):
    """``--progress bar`` on rank 1 would draw a second bar that never moves."""
    import pinnlab.bilevel.distributed
    import pinnlab.solvers.progress

    modes = []

    class Recording(pinnlab.solvers.progress.Progress):
        def __init__(self, *args, mode="auto", **kwargs):
            modes.append(mode)
            super().__init__(*args, mode=mode, **kwargs)

    monkeypatch.setattr(pinnlab.solvers.progress, "Progress", Recording)
    monkeypatch.setattr(pinnlab.bilevel.distributed, "init_from_environment", lambda device: (1, 2))
    out = tmp_path / "t.h5"
    assert main(["tune", str(_config(tmp_path)), "-o", str(out), "--progress", "bar"]) == 0
    assert modes == ["off"]  # and no final solve (rank 0's)
    assert not out.exists()


def test_the_backend_follows_the_run_device_not_the_machine(monkeypatch):
    """gloo for a CPU run on a machine with CUDA (NCCL reduces only CUDA tensors); NCCL
    for a CUDA run, each rank on cuda:LOCAL_RANK."""
    import torch.distributed as dist

    from pinnlab.bilevel.distributed import backend_for, init_from_environment

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    _torchrun_environment(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert backend_for("cpu") == "gloo" and backend_for(torch.device("cuda")) == "nccl"
    init_from_environment(torch.device("cpu"))
    assert calls == [("init", "gloo")]
    calls.clear()
    init_from_environment(torch.device("cuda"))
    assert calls == [("set_device", 1), ("init", "nccl")]


def test_python_dash_m_pinnlab_is_the_command_line(tmp_path):
    """``python -m pinnlab`` (what ``torchrun -m pinnlab`` runs): bad input is one line
    and exit code 2, so its UsageError is the one the subcommands raise."""
    root = Path(__file__).parents[2]
    run = subprocess.run([sys.executable, "-m", "pinnlab", "tune", str(tmp_path / "missing.yaml"),
                          "-o", str(tmp_path / "t.h5")], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"pinnlab: error: config error: config file {str(tmp_path / 'missing.yaml')!r} does not exist"]


def test_under_torchrun_each_ranks_error_line_names_its_rank(tmp_path, capsys, monkeypatch):
    """torchrun starts W processes that all meet the same bad input: W lines, each saying
    which process wrote it (outside torchrun the line is as before)."""
    from pinnlab.cli import main

    missing = tmp_path / "missing.yaml"
    _torchrun_environment(monkeypatch, rank=1)
    assert main(["tune", str(missing), "-o", str(tmp_path / "t.h5")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"pinnlab: error (rank 1 of 2): config error: config file {str(missing)!r} does not exist"]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["tune", str(missing), "-o", str(tmp_path / "t.h5")]) == 2
    assert capsys.readouterr().err.startswith("pinnlab: error: config error")


def _torchrun_environment(monkeypatch, rank: int = 0, world: int = 2):
    """What torchrun sets in each process it starts (the rendezvous variables of env://)."""
    for key, value in {"WORLD_SIZE": world, "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": 29500}.items():
        monkeypatch.setenv(key, str(value))


@pytest.mark.parametrize("environment, expected", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE = 2 in the environment but RANK, MASTER_ADDR, MASTER_PORT not set: start "
                          "the processes with torchrun"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE = 'abc' in the environment: not a number of processes"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE = '0' in the environment: not a number of processes"),
])
@pytest.mark.parametrize("command", ["tune", "solve"])
def test_a_world_size_left_in_the_shell_is_one_line(tmp_path, monkeypatch, capsys, environment, expected, command):
    """WORLD_SIZE=2 without torchrun ended in torch's rendezvous traceback; WORLD_SIZE=abc
    was reported as a config error (int('abc')). Both are one line saying what is wrong
    with the environment, exit 2, before any work."""
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "t.h5"
    assert main([command, str(_config(tmp_path)), "-o", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "config error" not in err[0], err
    # no "(rank ? of abc)": the rank tag only for a world of several processes
    tag = "(rank ? of 2)" if environment["WORLD_SIZE"] == "2" else None
    assert (tag in err[0]) if tag else "(rank" not in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("command", ["solve", "study", "plot"])
def test_commands_that_run_as_one_process_refuse_torchrun(tmp_path, monkeypatch, capsys, command):
    """pinnlab solve under torchrun trained the same run in every process, each writing
    the same output; only tune spreads work over processes."""
    _torchrun_environment(monkeypatch)
    out = tmp_path / "t.h5"
    assert main([command, str(_config(tmp_path)), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pinnlab {command} runs as one process, not under torchrun" in err[0], err
    assert not out.exists()


@pytest.mark.distributed
def test_a_torchrun_tune_ends_cleanly_on_every_rank(tmp_path):
    """Rank 1 returned right after the tuning while rank 0 was still in the process group
    (its final solve): its interpreter's teardown aborted ("terminate called without an
    active exception", SIGABRT) in 2 of 5 runs of such a config, and torchrun then killed
    rank 0, exit 1 with no result. Every rank now leaves the group together. Four runs:
    with the old teardown at least one fails with probability about 1 − 0.6⁴ ≈ 0.87."""
    from tests.tuning.test_joint_and_slices import SIGMA  # fg2u, one direction: rank 1 holds none

    config = tmp_path / "tune.yaml"
    config.write_text(SIGMA)
    for run in range(4):
        out = tmp_path / f"t{run}.h5"
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "pinnlab", "tune", str(config), "-o", str(out), "--progress", "off"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
        assert "terminate called" not in done.stderr


def test_a_peer_lost_in_a_collective_is_one_line_and_what_is_saved(tmp_path, capsys, monkeypatch):
    """A rank killed from outside left the survivor printing gloo's error through a
    30-line traceback of torch's internals, without the "saved … --resume" line. The
    collectives now raise PeerLost (gloo's "closed by peer"/"reset by peer", any
    DistError); pinnlab tune prints one line and what it saved, exit 1. Other runtime
    errors pass through unchanged."""
    from pinnlab.bilevel import distributed
    from pinnlab.tuning import run as tuning_run
    from tests.tuning.test_joint_and_slices import SIGMA

    def closed(*args, **kwargs):
        raise RuntimeError("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1. This is "
                           "typically caused by a remote worker crashing.")

    monkeypatch.setattr(torch.distributed, "all_reduce", closed)
    with pytest.raises(distributed.PeerLost, match=r"another process of the run ended during a collective call "
                                                   r"\(\[/x/gloo/transport/tcp/pair.cc:553\] Connection closed"):
        distributed.all_reduce_sum(torch.ones(2))

    def other(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(torch.distributed, "all_reduce", other)
    with pytest.raises(RuntimeError, match="^some other failure$"):
        distributed.all_reduce_sum(torch.ones(2))

    def lost(*args, **kwargs):
        raise distributed.PeerLost("another process of the run ended during a collective call (gone)")

    monkeypatch.setattr(tuning_run, "run_tuning", lost)
    config = tmp_path / "tune.yaml"
    config.write_text(SIGMA)
    assert main(["tune", str(config), "-o", str(tmp_path / "t.h5"), "--progress", "off"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "pinnlab: error (rank 0 of 1): another process of the run ended during a collective call (gone)", err
