"""Mutation audit of :mod:`pinnlab.bilevel.distributed`, :mod:`pinnlab._checks` and
:mod:`pinnlab._interrupts`: the collectives on a real gloo group of this one process (and
the device of what they send), the environment's digits, the file system's own path limits,
the choices' order, the number types the real-number checks take."""

from __future__ import annotations

import datetime
import math
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pinnlab._checks import (
    check_at_least,
    check_choice,
    check_finite,
    check_nonnegative,
    check_positive,
    overlong_path,
)
from pinnlab.bilevel import distributed

from .test_checks import _refused
from .test_private_helpers_second_audit import _torchrun


# -- bilevel/distributed ------------------------------------------------------------------------
@pytest.fixture
def gloo_of_one(tmp_path):
    """A real gloo process group of this one process (in-process, no spawn), left at the end."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=20))
    yield
    dist.destroy_process_group()


def test_the_collectives_on_a_real_gloo_group(gloo_of_one):
    """all_reduce_sum returns the sum as data: a tensor of the autograd graph comes back
    detached (the in-place reduction on a graph's clone left a grad_fn whose backward
    ignored the other ranks), the input unchanged; the flag and the value round-trip;
    ``_collective`` hands back what the call returned (an ``async_op`` work handle)."""
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    y = 3 * x
    out = distributed.all_reduce_sum(y)
    assert not out.requires_grad and out.grad_fn is None
    assert torch.equal(out, torch.tensor([3.0, -6.0], dtype=torch.float64))
    assert torch.equal(y.detach(), torch.tensor([3.0, -6.0], dtype=torch.float64))
    assert distributed.rank_and_world() == (0, 1)
    assert distributed.all_agree(True) is True and distributed.all_agree(False) is False
    assert distributed.broadcast_value(0.1) == 0.1 and math.isnan(distributed.broadcast_value(None))
    flag = torch.tensor([4])
    work = distributed._collective(dist.all_reduce, flag, op=dist.ReduceOp.MIN, async_op=True)
    assert work is not None and work.wait() and flag.item() == 4


class _Sent(Exception):
    """What the stand-in collective raises once it has seen the tensor."""


def test_the_flag_and_the_value_are_sent_on_the_backends_device(monkeypatch):
    """NCCL reduces only CUDA tensors: all_agree's flag and broadcast_value's number are
    made on ``_flag_device()`` (here a stand-in, "meta": this machine has no GPU), not on
    the CPU whatever the backend."""
    devices = []

    def collective(tensor, *args, **kwargs):
        devices.append(tensor.device.type)
        raise _Sent

    monkeypatch.setattr(distributed, "_flag_device", lambda: "meta")
    monkeypatch.setattr(dist, "all_reduce", collective)
    monkeypatch.setattr(dist, "broadcast", collective)
    with pytest.raises(_Sent):
        distributed.all_agree(True)
    with pytest.raises(_Sent):
        distributed.broadcast_value(1.0)
    assert devices == ["meta", "meta"]


@pytest.mark.parametrize("digit", ["\u0661", "\u00b2"])  # ARABIC-INDIC ONE (int() reads 1), SUPERSCRIPT TWO
def test_digits_other_than_ascii_are_no_world_size_and_no_gpu_index(monkeypatch, digit):
    """str.isdigit() holds for both, so without the ASCII test LOCAL_RANK=١ chose GPU 1 and
    WORLD_SIZE=١ ran as one process; ² ended in int()'s message. torchrun writes ASCII
    digits: each is one line naming the variable."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    _torchrun(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", digit)
    with pytest.raises(ValueError) as info:
        distributed.local_device("cuda")
    assert str(info.value) == (f"LOCAL_RANK = {digit!r} in the environment: not a GPU index (torchrun sets it); "
                               "start the processes with torchrun")
    assert chosen == []
    monkeypatch.setenv("WORLD_SIZE", digit)
    with pytest.raises(ValueError) as info:
        distributed.environment_world_size()
    assert str(info.value) == (f"WORLD_SIZE = {digit!r} in the environment: not a number of processes (torchrun "
                               "sets it); unset it to run one process")


# -- _checks ------------------------------------------------------------------------------------
def test_overlong_path_uses_the_file_systems_own_limits(monkeypatch):
    """On a file system whose pathconf says names of at most 14 bytes and paths of 100
    (99 and a NUL), those are the limits, not Linux's usual 255 and 4096."""
    limits = {"PC_NAME_MAX": 14, "PC_PATH_MAX": 100}
    monkeypatch.setattr(os, "pathconf", lambda path, name: limits[name])
    assert overlong_path("n" * 14) is None
    assert overlong_path("d/" + "n" * 15) == "a name in it is 15 bytes long, the file system allows 14"
    longest = "/".join(["n" * 9] * 10)  # 10 names of 9 bytes and 9 separators: 99 bytes
    assert len(longest) == 99 and overlong_path(longest) is None
    assert overlong_path(longest + "m") == "it is 100 bytes long, the system allows 99"


def test_check_choice_names_the_choices_in_their_order_and_refuses_none():
    """The message lists the choices as given (not sorted); None is no choice."""
    assert _refused(check_choice, "scheme", "backward", ("forward", "central")) == (
        "scheme must be one of 'forward', 'central', got 'backward'")
    assert _refused(check_choice, "scheme", None, ("forward", "central")) == (
        "scheme must be one of 'forward', 'central', got None")


def test_real_checks_take_any_finite_real_number_type():
    """numbers.Real, not just int and float: a NumPy float32 (a value read from an array)
    and a Fraction are numbers; their infinities, booleans and strings are not."""
    check_positive("lr", np.float32(1e-3))
    check_nonnegative("damping", np.float32(0.0))
    check_at_least("growth", np.float32(1.5), 1.0, "1")
    check_finite("rate", Fraction(-1, 20))
    check_finite("rate", np.float32(-0.05))
    assert _refused(check_positive, "lr", np.float32("inf")).startswith("lr must be a finite number > 0, got ")
    for value in (math.inf, -math.inf, math.nan, np.float32("nan"), True, "0.1"):
        assert _refused(check_finite, "rate", value) == f"rate must be a finite number, got {value!r}"
