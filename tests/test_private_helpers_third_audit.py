"""Third mutation audit of the private helpers: argument checks, seeding, malloc settings,
the split of directions over torch.distributed ranks and the progress lines.

The split is checked in one process: ``rank_and_world`` and the collectives of
:mod:`pinnlab.bilevel.distributed` are replaced by stand-ins, each rank's estimate is
computed in turn, and the ranks' partial sums are compared with the one-process estimate
(float64, the closed-form quadratic of the bilevel third audit).
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from pinnlab.bilevel import ForwardGradientUnroll
from pinnlab.bilevel import distributed as dist_mod
from pinnlab.bilevel.base import flatten
from pinnlab.bilevel.zeroth_order import ZeroOrderForwardGradient

from .test_bilevel_forward_reverse_third_audit import Quadratic

F64 = torch.float64
SEED, OUTER_STEP, HORIZON = 5, 2, 3


def _ranks(monkeypatch, method, world, total=None):
    """Each rank's (directions, partial sum, grad, value) of ``method`` on ``world``
    simulated ranks; ``total`` is what the stand-in all_reduce_sum returns (the sum of the
    partials over the ranks), rank 0's h(φ) what broadcast_value returns."""
    quad = Quadratic()
    out, sent = [], {}

    for rank in range(world):
        def broadcast_value(value, rank=rank):
            sent.setdefault("values", []).append(value)
            if rank == 0:
                sent["rank0"] = value
            return sent["rank0"]

        partials = []

        def all_reduce_sum(partial, partials=partials):
            partials.append(partial.clone())
            return partial.clone() if total is None else total.clone()

        monkeypatch.setattr(dist_mod, "rank_and_world", lambda rank=rank: (rank, world))
        monkeypatch.setattr(dist_mod, "all_reduce_sum", all_reduce_sum)
        monkeypatch.setattr(dist_mod, "broadcast_value", broadcast_value)
        with warnings.catch_warnings():  # (zo: a rank without directions and a stand-in sum of 0)
            if total is None:
                warnings.simplefilter("ignore", RuntimeWarning)
            result = method(quad.problem(HORIZON), quad.phi, seed=SEED, outer_step=OUTER_STEP)
        assert len(partials) == (1 if world > 1 else 0)  # one collective sum, none in one process
        out.append((result.diagnostics["directions"], partials[0] if partials else None,
                    flatten(result.grad), result.value))
    return out, sent.get("values", [])


@pytest.mark.parametrize("method", [
    ForwardGradientUnroll(num_directions=4, chunk_size=3),
    ForwardGradientUnroll(num_directions=4, kind="gaussian", tangents="jvp"),
    ZeroOrderForwardGradient(num_directions=4, mu=1e-4),
], ids=["fg2u", "fg2u-gauss-jvp", "zo"])
@pytest.mark.parametrize("world", [2, 3, 5])
def test_directions_split_over_ranks_reproduce_the_one_process_estimate(monkeypatch, method, world):
    """Rank r evaluates directions r, r + W, r + 2W, ... of the one-process set (each
    direction exactly once over the ranks, the same vectors); the ranks' partial sums add
    up to b times the one-process estimate, every rank returns that sum / b (b the number
    of directions, not the rank's share) and rank 0's h(φ), also a rank left without
    directions (W = 5 > b = 4)."""
    b = method.num_directions
    [(v1, none, g1, h1)] = _ranks(monkeypatch, method, 1)[0]
    assert none is None and v1.shape == (b, 5)
    ranks, _ = _ranks(monkeypatch, method, world)
    for rank, (v, _, _, _) in enumerate(ranks):
        assert torch.equal(v, v1[rank::world])
    assert sum(len(v) for v, *_ in ranks) == b
    total = sum(p for _, p, _, _ in ranks)
    torch.testing.assert_close(total / b, g1, rtol=1e-12, atol=1e-14)
    ranks, sent = _ranks(monkeypatch, method, world, total=total)
    for _, _, grad, value in ranks:
        torch.testing.assert_close(grad, g1, rtol=1e-12, atol=1e-14)
        assert value == h1
    if isinstance(method, ForwardGradientUnroll):  # h(φ) of rank 0, sent by rank 0 to all
        assert len(sent) == world and sent[0] == h1
        assert all(s is None for s in sent[b:])  # (ranks without directions send none)


@pytest.mark.parametrize("method", [ForwardGradientUnroll(num_directions=3, distributed=False),
                                    ZeroOrderForwardGradient(num_directions=3, distributed=False)],
                         ids=["fg2u", "zo"])
def test_distributed_false_evaluates_every_direction_on_every_rank(monkeypatch, method):
    [(v1, _, g1, _)] = _ranks(monkeypatch, method, 1)[0]
    monkeypatch.setattr(dist_mod, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(dist_mod, "all_reduce_sum", lambda t: pytest.fail("no collective without distributed"))
    quad = Quadratic()
    result = method(quad.problem(HORIZON), quad.phi, seed=SEED, outer_step=OUTER_STEP)
    assert torch.equal(result.diagnostics["directions"], v1)
    torch.testing.assert_close(flatten(result.grad), g1, rtol=0, atol=0)


# --- progress lines -----------------------------------------------------------------------


def _clock(monkeypatch, *times):
    from types import SimpleNamespace

    from pinnlab.solvers import progress

    clock = iter(times)
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))


def test_log_lines_every_log_every_steps_and_at_the_last_step(monkeypatch):
    """total = 5, log_every = 2: lines after steps 2, 4 and 5 (the last one, no multiple
    of 2), with the 1-based step count; rate = steps done / elapsed (2/4 s, 4/4 s, 5/10 s);
    a run without relative L2 has no rel_l2 column; value and unit names as given."""
    from pinnlab.solvers.progress import Progress

    _clock(monkeypatch, 0.0, 4.0, 4.0, 10.0)
    out = io.StringIO()
    bar = Progress(5, mode="log", log_every=2, stream=out, description="tune", value_name="outer",
                   unit="trial", rel_l2=False)
    for step in range(5):
        bar.update(step, 0.25 * (step + 1), 0.5)
    assert out.getvalue().splitlines() == [
        "tune trial 2/5 outer=5.000e-01 s/it=2.00",
        "tune trial 4/5 outer=1.000e+00 it/s=1.00",
        "tune trial 5/5 outer=1.250e+00 s/it=2.00",
    ]


def test_log_line_shows_each_term_with_its_weight_and_ignores_other_keys(monkeypatch):
    from pinnlab.solvers.progress import Progress

    _clock(monkeypatch, 0.0, 0.5)
    out = io.StringIO()
    Progress(1, mode="log", stream=out).update(
        0, 2.0, 0.125, {"loss_pde": 0.5, "weight_pde": 3.0, "loss_bc": 0.25, "weight_bc": 2.5e-5,
                        "lossy": 9.0, "weight_data": 7.0})
    assert out.getvalue() == ("train step 1/1 loss=2.000e+00 rel_l2=1.250e-01 pde=5.00e-01(w=3) "
                              "bc=2.50e-01(w=2.5e-05) it/s=2.00\n")


def test_the_bar_leaves_out_rel_l2_when_the_loop_has_none():
    from pinnlab.solvers.progress import Progress

    bar = Progress(3, mode="bar", stream=io.StringIO(), rel_l2=False, value_name="outer")
    bar.update(0, 1.0, 0.5, {"loss_pde": 0.5})
    assert bar.bar.postfix == "outer=1.000e+00, pde=5.00e-01(w=1)"
    bar.close()
    shown = Progress(3, mode="bar", stream=io.StringIO())
    shown.update(0, 1.0, 0.5)
    assert shown.bar.postfix == "loss=1.000e+00, rel_l2=5.000e-01"
    shown.close()


def test_a_note_is_a_log_line_and_nothing_with_progress_off():
    from pinnlab.solvers.progress import Progress

    out = io.StringIO()
    Progress(3, mode="log", stream=out).note("switched")
    assert out.getvalue() == "switched\n"
    off = io.StringIO()
    quiet = Progress(3, mode="off", stream=off)
    quiet.note("switched")
    quiet.update(2, 1.0, None)
    assert off.getvalue() == "" and quiet.bar is None


def test_auto_writes_log_lines_on_a_terminal_of_zero_columns(monkeypatch):
    """A pty that reports 0 columns gets log lines; one of 1 column gets the bar."""
    import os

    from pinnlab.solvers import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            return 99

    for columns, mode in ((0, "log"), (1, "bar")):
        monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd, c=columns: os.terminal_size((c, 24)))
        bar = progress.Progress(2, stream=Tty())
        assert bar.mode == mode, columns
        bar.close()


# --- seeding ------------------------------------------------------------------------------


def test_boolean_and_numpy_parts_key_like_the_integers_they_equal():
    """True/False (and numpy's bool and integer types) are the parts 1/0 and n: a flag in
    a stream key gives the stream of the integer it equals."""
    import numpy as np

    from pinnlab._seeding import derive_seed, make_generator

    assert derive_seed(3, True, "x") == derive_seed(3, 1, "x") != derive_seed(3, 0, "x")
    assert derive_seed(3, np.bool_(False), "x") == derive_seed(3, 0, "x")
    assert derive_seed(np.int64(7), "noise/0", np.uint8(12)) == derive_seed(7, "noise/0", 12)
    assert make_generator(True).initial_seed() == derive_seed(1)


# --- process group ------------------------------------------------------------------------


@pytest.fixture
def torchrun_env(monkeypatch):
    """The environment torchrun gives rank 1 of 2 (LOCAL_RANK 1), no process group yet."""
    import torch.distributed as dist

    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    calls = []
    state = {"up": False}
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: state["up"])
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)

    def init_process_group(backend=None, **kwargs):
        calls.append(("init", backend))
        state["up"] = True

    def destroy_process_group(*a):
        calls.append(("destroy",))
        state["up"] = False

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "destroy_process_group", destroy_process_group)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append(("barrier",)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    return calls


@pytest.mark.parametrize("device, expected", [
    ("cuda", [("set_device", 1), ("init", "nccl")]),  # this rank's GPU before NCCL starts
    ("cpu", [("init", "gloo")]),
])
def test_init_from_environment_joins_once_with_the_devices_backend(torchrun_env, device, expected):
    from pinnlab.bilevel.distributed import init_from_environment

    assert init_from_environment(device) == (1, 2)
    assert init_from_environment(device) == (1, 2)  # once: already a member
    assert torchrun_env == expected


def test_leave_process_group_waits_for_every_rank_then_leaves(torchrun_env):
    from pinnlab.bilevel.distributed import init_from_environment, leave_process_group

    init_from_environment("cpu")
    leave_process_group()
    leave_process_group()  # not a member any more: nothing
    assert torchrun_env == [("init", "gloo"), ("barrier",), ("destroy",)]


def test_a_closed_bar_leaves_nothing_on_the_terminal():
    """On a terminal the bar is drawn with leave=False: closing it blanks its line (the result
    lines of the run follow on a clean line), it does not end the stream with a last bar and a
    newline. (A bar forced into a file keeps its final frame: tests/test_backlog_progress_stops.py.)"""
    from pinnlab.solvers.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = Progress(2, mode="bar", stream=out)
    bar.update(0, 1.0, None)
    bar.update(1, 1.0, None)
    bar.close()
    text = out.getvalue()
    assert "\n" not in text and text.endswith("\r") and text.split("\r")[-2].strip() == ""


@pytest.mark.parametrize("local_rank", ["", "  ", None])
def test_an_empty_or_missing_local_rank_is_gpu_0(torchrun_env, monkeypatch, local_rank):
    from pinnlab.bilevel.distributed import local_device

    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK")
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert local_device("cuda") == torch.device("cuda", 0)
    assert torchrun_env == [("set_device", 0)]
