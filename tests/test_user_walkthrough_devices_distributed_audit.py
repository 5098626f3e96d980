"""A new user's walk through devices, threads and distributed runs, as a cluster user on
this CPU-only machine: ``trainer.device`` values (auto, cpu, cuda, cuda:1, mps, nonsense),
the thread settings the README documents (OMP_NUM_THREADS, a training study's cores ÷
workers, PINNLAB_BENCH_THREADS), and ``torchrun --standalone --nproc_per_node 2 -m pinnlab
tune`` (only rank 0 writes; φ equal to a one-process run's to rounding; bad input one line
per rank; Ctrl-C, SIGTERM and a killed rank save and say where; ``--resume``).

Measured by hand and right (so not repeated here, or pinned elsewhere): auto and cpu
give the same numbers and record ``device: cpu``; cuda and cuda:1 are one line and exit
2 (no CUDA here), mps and other names one line listing the devices; under torchrun the
tuning's progress, ``tuned (…, 2 process(es))`` and the result come from rank 0 alone,
fg2u's φ agrees to 2e-5 with one process (bit for bit with ``tune.options.chunk_size=1``:
the last test) and zo_fg2u (then rgu) bit for bit; bad input is
``pinnlab: error (rank R of 2): …`` twice, then torchrun's ChildFailedError; Ctrl-C and
SIGTERM to torchrun save the last outer step (rank 0 says where) and ``--resume`` under
torchrun ends bit for bit as the uninterrupted torchrun run; DeepXDE's zo_fg2u runs
under torchrun. The problems met are the tests below."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import pytest
import torch
import torch.distributed as dist

from pinnlab.bilevel import distributed
from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2}
trainer: {steps: 2, eval_every: 1, test_points: 10, batch_size: 4}
"""

ONE_CELL_STUDY = TINY + """\
study:
  kind: training
  variants:
    biased: [loss.kind=biased]
  grid:
    trainer.seed: [0]
  workers: 1
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- trainer.device ---------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_cuda_device_is_named_as_written(tmp_path, capsys):
    """``pinnlab solve c.yaml trainer.device=cuda:1`` on a machine without CUDA is one line
    and exit 2 (right), but it said ``device 'cuda' requested but CUDA is not available``:
    a cluster user who asked for the second GPU reads of a 'cuda' they never wrote, and
    every other refusal of the setting says ``trainer.device = '...'``."""
    cfg = _write(tmp_path, "c.yaml", TINY)
    assert main(["solve", str(cfg), "trainer.device=cuda:1", "-o", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "trainer.device" in err and "'cuda:1'" in err
    assert not (tmp_path / "r.h5").exists()


# -- threads ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
def test_a_training_study_counts_the_cores_the_process_may_use(tmp_path, monkeypatch):
    """README: "Each cell runs with cores ÷ workers torch threads". Measured: ``taskset -c 0
    pinnlab study s.yaml -o s.h5`` (one core allowed of this machine's 2, as a cluster's
    batch scheduler allots a few cores of a large node) ran its one-worker cell on 2
    threads, while torch's own default and ``pinnlab solve`` there use 1: on a 64-core node
    with 4 cores allotted, 64 threads per cell on 4 cores, the oversubscription the
    README's Threads note warns of, and the cell's float32 numbers differ from a solve of
    its recorded config. Here: 4 cores in the machine, 1 allowed, no OMP_NUM_THREADS."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    cfg = _write(tmp_path, "s.yaml", ONE_CELL_STUDY)
    out = tmp_path / "s.h5"
    before = torch.get_num_threads()
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    assert torch.get_num_threads() == before
    (cell,) = (tmp_path / "s.h5.cells").glob("*.h5")
    with h5py.File(cell, "r") as fh:
        assert int(fh.attrs["torch_threads"]) == 1


@pytest.mark.parametrize("value", ["two", "0"])
def test_bench_threads_that_are_no_thread_count_are_one_line(monkeypatch, capsys, value):
    """README, Performance: set ``PINNLAB_BENCH_THREADS=N`` to time bench_step_breakdown and
    bench_hypergrad on N threads. ``PINNLAB_BENCH_THREADS=two python
    benchmarks/bench_step_breakdown.py --quick`` ended in a ValueError traceback, ``=0`` in
    torch's "set_num_threads expects a positive integer" RuntimeError; bad input is one
    line naming the variable and exit code 2, as the scripts' own ``--json`` checks are."""
    import pinnlab

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_step_breakdown

    def breakdown(*args, **kwargs):
        raise AssertionError("the benchmark ran with a bad thread count")

    def set_num_threads(count):  # (torch's own check, without changing this process's threads)
        if count < 1:
            raise RuntimeError("set_num_threads expects a positive integer")
        raise AssertionError(f"{count} threads set from {value!r}")

    monkeypatch.setattr(bench_step_breakdown, "breakdown", breakdown)
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: True)
    monkeypatch.setattr(torch, "set_num_threads", set_num_threads)
    monkeypatch.setenv("PINNLAB_BENCH_THREADS", value)
    try:
        code = bench_step_breakdown.main(["--quick"])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "PINNLAB_BENCH_THREADS" in err


# -- torchrun ---------------------------------------------------------------------------------------
def test_a_tuning_under_torchrun_records_how_many_processes_ran_it(tmp_path, monkeypatch):
    """README: under torchrun "φ agrees with a one-process run to rounding, not bit for
    bit" (measured here: 2e-5 after 3 outer steps of a shrunk fokker_planck_inverse.yaml),
    and a result file records torch_threads because "float32 results change in their last
    digits with it, so a rerun repeats them bit for bit with the same count". The file of
    ``torchrun --nproc_per_node 2 -m pinnlab tune`` records device, dtype and threads but
    not the 2 processes (only stderr's ``tuned (fg2u, …, 2 process(es))`` said it), so a
    colleague repeating it from the file runs one process and gets other digits. Rank 0 of
    a stand-in group of 2 (rank 1 adds nothing to the one direction)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    up = [False]
    monkeypatch.setattr(dist, "is_initialized", lambda: up[0])
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kwargs: up.__setitem__(0, True))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: up.__setitem__(0, False))
    monkeypatch.setattr(dist, "get_rank", lambda *a: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: None)
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src=None: None)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: None)
    assert distributed.environment_world_size() == 2
    cfg = _write(tmp_path, "t.yaml", WEIGHT_FG2U)
    out = tmp_path / "t.h5"
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out, "r") as fh:
        recorded = {f"{group}/{key}": value for group in ("/", "/tune") for key, value in fh[group].attrs.items()
                    if "process" in key.lower() or "world" in key.lower()}
    assert [int(value) for value in recorded.values()] == [2], recorded



def test_a_rank_left_in_the_shell_keeps_the_output_lock(tmp_path, monkeypatch, capsys):
    """README: a second solve to an output that a running one is writing is one line and
    exit 2 (the lock ``.NAME.lock``); a WORLD_SIZE left in the shell without torchrun is
    refused. Only rank 0 locks under torchrun, decided by ``RANK`` alone: with ``RANK=1``
    left in the shell (another launcher's, a notebook started from a torchrun job) and no
    WORLD_SIZE, pinnlab runs as one process, writes its result, and took no lock, so
    ``pinnlab solve c.yaml -o busy.h5`` beside a run holding busy.h5's lock trained and
    wrote it (exit 0). The held lock is this test's own."""
    from pinnlab.io.atomic import output_lock

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    cfg = _write(tmp_path, "c.yaml", TINY)
    out = tmp_path / "busy.h5"
    with output_lock(out):
        code = main(["solve", str(cfg), "-o", str(out), "--progress", "off"])
    assert code == 2
    assert "another pinnlab run is writing" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("overrides", [["tune.options.distributed=false"],
                                       ["tune.method=zo_fg2u", "tune.options={distributed: false}"]],
                         ids=["fg2u", "zo_fg2u"])
def test_a_tuning_that_turns_distribution_off_is_refused_for_that_option(tmp_path, monkeypatch, capsys, overrides):
    """README: "boolean method options (``distributed``)". ``torchrun --nproc_per_node 2 -m
    pinnlab tune t.yaml tune.options.distributed=false`` is refused in one line, exit 2
    (right: each process would run all of it), but the line reads ``tune.method = 'fg2u'
    under torchrun with 2 processes: only fg2u and zo_fg2u spread their directions over
    the processes``: the user ran fg2u, and the line never names the option that stops it
    spreading them. Checked before joining the process group (none is made here)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)

    def refuse(device):
        raise AssertionError("the process group was joined")

    monkeypatch.setattr(distributed, "init_from_environment", refuse)
    cfg = _write(tmp_path, "t.yaml", WEIGHT_FG2U)
    out = tmp_path / "t.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pinnlab: error (rank 0 of 2): ")
    assert "tune.options.distributed" in line
    assert not out.exists()


def test_two_ranks_of_one_direction_each_match_one_process_carrying_one_at_a_time(monkeypatch):
    """README: under torchrun φ "agrees with a one-process run to rounding, not bit for bit",
    which it once put down to "the directions' sums are added across processes in another
    order". Measured:
    fg2u with 2 directions on 2 processes (one each) is bit for bit the one-process run
    with ``tune.options.chunk_size=1``; what differs from the default one-process run is
    that it carries both directions together (vmap), not the order of a two-term sum.
    Pinned in float32 on a toy inner problem: rank 0's and rank 1's shares (the all-reduce
    replaced by the identity, each divided by b = 2, exact) add up to the one-process
    estimate with chunk_size=1 exactly, and every rank records rank 0's h(φ)."""
    from pinnlab.bilevel import ForwardGradientUnroll, from_inner_loss
    from pinnlab.solvers import SGD

    f32 = torch.float32
    a = torch.tensor([1.7, 0.3, 2.9], dtype=f32)

    def inner(th, phi, t):
        return 0.5 * (a * th["w"] ** 2).sum() - (th["w"] * torch.sin(phi["p"] * (1.0 + t))).sum()

    def outer(th, phi):
        return 0.5 * ((th["w"] - 0.1) ** 2).sum() + 0.01 * (phi["p"] ** 2).sum()

    problem = from_inner_loss(inner, outer, SGD(lr=0.13), {"w": torch.zeros(3, dtype=f32)}, horizon=4)
    phi = {"p": torch.tensor([0.4, -1.1, 0.7], dtype=f32)}
    single = ForwardGradientUnroll(num_directions=2, chunk_size=1, distributed=False)(problem, phi, seed=5)
    sent, shares = [], []
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda x: x.clone())
    monkeypatch.setattr(distributed, "broadcast_value", lambda x: sent.append(x) or sent[0])
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank_and_world", lambda rank=rank: (rank, 2))
        shares.append(ForwardGradientUnroll(num_directions=2, chunk_size=1)(problem, phi, seed=5))
    assert shares[0].grad["p"].dtype == f32
    assert torch.equal(shares[0].grad["p"] + shares[1].grad["p"], single.grad["p"])
    assert sent[0] == single.value and shares[1].value == single.value


def test_fewer_directions_than_processes_is_a_warning_naming_the_idle_ones(tmp_path):
    """fg2u with one direction (the default for one tuned weight) under torchrun with 2
    processes: the second computes nothing and waits in the all_reduce, which nothing said.
    check_processes returns the warning `pinnlab tune` prints on rank 0; with as many
    directions as processes, none."""
    from pinnlab import config as configuration
    from pinnlab.tuning.command import check_processes

    from .tuning.micro_configs import WEIGHT_FG2U

    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    assert check_processes(configuration.load(cfg, []), 2) == [
        "tune.options.num_directions = 1 < 2 processes: 1 of them compute no direction and wait (each direction "
        "is one process's work)"]
    assert check_processes(configuration.load(cfg, ["tune.options.num_directions=2"]), 2) == []
    assert check_processes(configuration.load(cfg, []), 1) == []
