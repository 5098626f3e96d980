"""Mutation audit of :mod:`pinnlab.bilevel.distributed` (third pass) and
:mod:`pinnlab.solvers.progress` (sixth pass): the device of the collectives' small tensors
under a backend other than gloo and NCCL, the sum of a single number, which gloo errors are
a lost peer (at the leaving barrier too), streams that are not :mod:`io` objects or whose
width query fails, a clock that has not moved, and what the bar draws at each step."""

from __future__ import annotations

import io
import os

import pytest
import torch
import torch.distributed as dist

from pinnlab.bilevel import distributed
from pinnlab.solvers import progress
from pinnlab.solvers.progress import Progress


# -- bilevel/distributed ------------------------------------------------------------------------
@pytest.mark.parametrize("backend, device", [("nccl", "cuda"), ("gloo", "cpu"), ("mpi", "cpu"), ("ucc", "cpu")])
def test_only_nccl_gets_its_flags_on_the_gpu(monkeypatch, backend, device):
    """NCCL alone reduces only CUDA tensors: a process group of another backend that the
    user started (MPI, UCC) reduces all_agree's flag and broadcast_value's number on the
    CPU, not on a GPU that a CPU-only machine does not have."""
    monkeypatch.setattr(dist, "get_backend", lambda *a: backend)
    assert distributed._flag_device() == device


@pytest.mark.parametrize("mine", [torch.tensor([0.5], dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)],
                         ids=["one_entry", "zero_dim"])
def test_all_reduce_sum_of_a_single_number_is_the_sum_over_ranks(monkeypatch, mine):
    """A hypergradient of one hyperparameter (a single weight) is a tensor of one entry
    (or a 0-d tensor): rank 1's 0.25 is added to this rank's 0.5 as for any longer tensor,
    and the input stays 0.5."""
    seen = []

    def all_reduce(tensor, op=None):
        seen.append(op)
        tensor += 0.25  # rank 1's share

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    total = distributed.all_reduce_sum(mine)
    assert total.shape == mine.shape and total.item() == 0.75 and mine.item() == 0.5
    assert seen == [dist.ReduceOp.SUM]


def test_a_gloo_error_that_is_no_lost_connection_passes_through():
    """Only gloo's transport errors (and "by peer" ones) mean another rank is gone: gloo's
    own enforce failure in a collective (a wrong call of this rank, its path naming gloo
    but not its transport) is that RuntimeError, unchanged, not "another process ended"."""
    error = RuntimeError("[enforce fail at ../third_party/gloo/gloo/allreduce.cc:124] opts.elements > 0")

    def call():
        raise error

    with pytest.raises(RuntimeError) as info:
        distributed._collective(call)
    assert info.value is error and not isinstance(info.value, distributed.PeerLost)


def test_a_peer_lost_at_the_leaving_barrier_is_peer_lost(monkeypatch):
    """Every rank meets at a barrier before leaving the group: a rank killed just then
    (gloo's "Connection closed by peer" at that barrier) is the one-line PeerLost of any
    other collective, not gloo's RuntimeError through torch's traceback."""

    def barrier(*args, **kwargs):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:589] Connection closed by peer "
                           "[127.0.0.1]:29500")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", barrier)
    with pytest.raises(distributed.PeerLost) as info:
        distributed.leave_process_group()
    assert str(info.value) == ("another process of the run ended during a collective call "
                               "([../third_party/gloo/gloo/transport/tcp/pair.cc:589] Connection closed by peer "
                               "[127.0.0.1]:29500)")


# -- solvers/progress ---------------------------------------------------------------------------
class _Writer:
    """A stream that is no :mod:`io` object: ``write`` and ``flush`` only (a logger's
    adapter, a wrapper of a job runner), collecting what is written."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass


def test_auto_logs_to_a_stream_that_cannot_say_it_is_a_terminal():
    """A stream without ``isatty`` is no terminal: auto writes log lines to it, not a bar
    of carriage returns into a log."""
    out = _Writer()
    bar = Progress(2, log_every=1, stream=out)
    assert bar.mode == "log" and bar.bar is None
    bar.update(0, 0.5, None)
    bar.close()
    assert "".join(out.parts).startswith("train step 1/2 loss=5.000e-01 rel_l2=n/a ")


def test_auto_draws_the_bar_on_a_terminal_stream_without_fileno():
    """A stream that says it is a terminal and has no ``fileno`` at all (AttributeError, not
    io's UnsupportedOperation): its width is unknown, not zero, so it gets the bar, and
    asking for the width does not fail the run."""

    class Terminal(_Writer):
        def isatty(self):
            return True

    assert progress._has_width(Terminal())
    bar = Progress(2, stream=Terminal())
    assert bar.mode == "bar" and bar.bar is not None
    bar.close()


def test_auto_draws_the_bar_when_the_width_query_fails_with_os_error(monkeypatch, tmp_path):
    """A stream that says it is a terminal but whose descriptor the terminal-size query
    refuses with OSError (ENOTTY: a file behind a wrapper that claims a TTY) has an unknown
    width, not zero columns: it gets the bar, like a stream without a descriptor."""

    class Terminal(_Writer):
        def isatty(self):
            return True

        def fileno(self):
            return handle.fileno()

    with open(tmp_path / "log.txt", "w") as handle:
        with pytest.raises(OSError):
            os.get_terminal_size(handle.fileno())
        assert progress._has_width(Terminal())
        bar = Progress(2, stream=Terminal())
        assert bar.mode == "bar"
        bar.close()


def test_a_clock_that_has_not_moved_gives_a_rate_not_a_division_by_zero(monkeypatch):
    """A coarse clock may read the same time at the start and at the first log line: the
    elapsed time is taken as at least 1e-9 s (one step: 1e9 it/s), no ZeroDivisionError
    that ended the run at its first log line."""
    monkeypatch.setattr(progress.time, "perf_counter", lambda: 5.0)
    out = io.StringIO()
    Progress(1, mode="log", stream=out, rel_l2=False).update(0, 0.25, None)
    assert out.getvalue() == "train step 1/1 loss=2.500e-01 it/s=1000000000.00\n"


def test_each_drawing_of_the_bar_shows_the_step_it_counts():
    """The columns are set before the step is counted: a bar redrawn at every step shows,
    next to "k/3", the loss and rel. L2 of step k, not those of the step before (the
    first drawing after a step without any columns)."""
    out = io.StringIO()
    bar = Progress(3, mode="bar", stream=out)
    bar.bar.mininterval, bar.bar.miniters, bar.bar.dynamic_miniters = 0, 1, False
    losses = (4.0, 2.0, 1.0)
    for step, loss in enumerate(losses):
        bar.update(step, loss, loss / 8)
    drawn = [part for part in out.getvalue().split("\r") if part.strip()]
    bar.close()
    for done, loss in enumerate(losses, start=1):
        line = next(part for part in drawn if f" {done}/3 " in part)
        assert f"loss={loss:.3e}, rel_l2={loss / 8:.3e}" in line, (done, line)
