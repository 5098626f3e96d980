"""Second mutation audit of the small private helpers (``_budget``, ``_checks``, ``_fields``,
``_malloc``, ``_seeding``, ``_warnings``, the package's ``__init__``) and the pure functions of
:mod:`pinnlab.bilevel.distributed`: the messages and values users see, the environment
variables read, the pinned seeds, the edge values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pinnlab._budget import Budget
from pinnlab._checks import check_choice, overlong_path

from .test_checks import _refused
from .test_malloc_release import Function, Libc


# -- _budget ------------------------------------------------------------------------------------
def test_a_budget_state_is_the_time_spent_not_the_clock_reading():
    """The clock need not start at 0 (perf_counter never does): a checkpoint keeps the
    seconds spent since the loop began (plus a resumed run's earlier ones)."""
    now = [1000.0]
    budget = Budget(10.0, clock=lambda: now[0])
    now[0] += 4.0
    budget.finished_one()
    assert budget.state() == {"spent": 4.0, "units": 1}
    resumed = Budget(10.0, clock=lambda: now[0], **budget.state())
    now[0] += 2.0
    assert resumed.state() == {"spent": 6.0, "units": 1}
    # 6 s for one unit: a second is expected to end at 12 s, past the 10 s budget
    assert not resumed.allows_another()


# -- _checks ------------------------------------------------------------------------------------
def test_check_choice_takes_any_iterable_of_choices():
    """``choices`` is an Iterable: a generator (such as the keys of a registry, filtered) is
    read once, and the refusal still lists every choice."""
    check_choice("kind", "b", (c for c in "abc"))
    assert _refused(check_choice, "kind", "z", (c for c in "abc")) == "kind must be one of 'a', 'b', 'c', got 'z'"


def test_overlong_path_counts_bytes_not_characters():
    """NAME_MAX and PATH_MAX count bytes of the file system's encoding: 128 two-byte
    characters are 256 bytes, one more than a name may have on ext4."""
    name_max = os.pathconf(".", "PC_NAME_MAX")
    name = "é" * (name_max // 2 + 1)
    assert len(name) <= name_max < len(os.fsencode(name))
    assert overlong_path(name) == (
        f"a name in it is {len(os.fsencode(name))} bytes long, the file system allows {name_max}")


@pytest.mark.parametrize("error", [OSError, ValueError, AttributeError])
def test_overlong_path_falls_back_to_the_posix_limits(monkeypatch, error):
    """Where pathconf cannot say (OSError; ValueError for a name the system lacks;
    AttributeError on Windows, which has no os.pathconf), the limits are Linux's: names of
    255 bytes, paths of 4095."""
    def unknown(path, name):
        raise error(name)

    monkeypatch.setattr(os, "pathconf", unknown)
    assert overlong_path("n" * 255) is None
    assert overlong_path("n" * 256) == "a name in it is 256 bytes long, the file system allows 255"
    deep = "/".join(["d" * 200] * 20) + "/" + "f" * 75  # 20 * 201 + 75 = 4095 bytes
    assert len(deep) == 4095 and overlong_path(deep) is None
    assert overlong_path(deep + "f") == "it is 4096 bytes long, the system allows 4095"


# -- _fields ------------------------------------------------------------------------------------
def test_an_integer_setting_takes_the_whole_signed_64_bit_range():
    """-2**63 and 2**63 - 1 are stored as they are; one beyond either end is refused."""
    from pydantic import TypeAdapter, ValidationError

    from pinnlab._fields import Int

    adapter = TypeAdapter(Int)
    assert adapter.validate_python(-(2**63)) == -(2**63)
    assert adapter.validate_python(2**63 - 1) == 2**63 - 1
    for value in (-(2**63) - 1, 2**63):
        with pytest.raises(ValidationError, match=r"-2\*\*63 <= value < 2\*\*63"):
            adapter.validate_python(value)


def test_a_config_section_cannot_be_changed_after_it_is_read():
    """The sections are frozen: a run's settings are the ones its result file records, not
    ones a script changed on the loaded object afterwards."""
    from pydantic import ValidationError

    from pinnlab.config import TrainerSection

    trainer = TrainerSection()
    with pytest.raises(ValidationError, match="frozen"):
        trainer.steps = 3


# -- _malloc ------------------------------------------------------------------------------------
@pytest.fixture
def clean_malloc_environment(monkeypatch):
    from pinnlab import _malloc

    for name in (*_malloc._USER_SETTINGS, "PINNLAB_MALLOC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_malloc.sys, "platform", "linux")
    monkeypatch.setattr(_malloc, "configured", False)
    return _malloc


def test_a_c_library_without_gnu_get_libc_version_is_left_alone(clean_malloc_environment, monkeypatch):
    """musl has mallopt (as a no-op) but not gnu_get_libc_version: not glibc, so nothing
    is set and configure_malloc says so."""
    _malloc = clean_malloc_environment
    calls = []

    class Musl:
        mallopt = Function("mallopt", calls, 1)

    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a: Musl())
    assert _malloc.configure_malloc() is False
    assert calls == [] and _malloc.configured is False


def test_a_c_library_that_cannot_be_loaded_is_no_error(clean_malloc_environment, monkeypatch):
    """ctypes.CDLL(None) raises OSError where the process has no C library to open: False."""
    _malloc = clean_malloc_environment

    def unloadable(*args):
        raise OSError("cannot load the C library")

    monkeypatch.setattr(_malloc.ctypes, "CDLL", unloadable)
    assert _malloc.configure_malloc() is False and _malloc.configured is False


def test_release_free_memory_says_whether_malloc_trim_released_any(clean_malloc_environment, monkeypatch):
    """malloc_trim returns 0 when there was nothing to give back: False, as documented."""
    _malloc = clean_malloc_environment
    libc = Libc()
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a: libc)
    assert _malloc.configure_malloc() is True
    libc.malloc_trim.result = 0
    assert _malloc.release_free_memory() is False
    libc.malloc_trim.result = 1
    assert _malloc.release_free_memory() is True
    assert [call for call in libc.calls if call[0] == "malloc_trim"] == [("malloc_trim", 0)] * 2


# -- _seeding -----------------------------------------------------------------------------------
def test_more_derived_seeds_are_pinned():
    """Checkpoints and published numbers depend on these: stream names whose CRC-32 has its
    top bit set ("test", "init"), a seed at the top of the 63-bit range, a step beyond 32
    bits. numpy integers and Python ints are the same part."""
    import numpy as np

    from pinnlab._seeding import derive_seed

    assert derive_seed(0, "test") == 6889937327354700332
    assert derive_seed(0, "collocation", 0) == 2635823938653174628  # its two words share bit 31
    assert derive_seed(1, "init", 0) == 3822240993198261327
    assert derive_seed(2**63 - 1, "boundary", 10**6) == 864409675589190480
    assert derive_seed(5, "outer/points", 2**40) == 777896872592043055
    assert derive_seed(np.int64(5), "outer/points", np.uint64(2**40)) == 777896872592043055


def test_make_generator_puts_the_generator_on_the_given_device(monkeypatch):
    """``device`` is where the generator lives (a CUDA run draws on its GPU); None is the CPU."""
    import torch

    from pinnlab import _seeding

    made = []

    class Recording:
        def __init__(self, device):
            made.append(device)

        def manual_seed(self, seed):
            self.seed = seed
            return self

    monkeypatch.setattr(_seeding.torch, "Generator", Recording)
    assert _seeding.make_generator(3, "noise/0", device="cuda:1").seed == _seeding.derive_seed(3, "noise/0")
    _seeding.make_generator(3, "noise/0")
    assert made == [torch.device("cuda:1"), torch.device("cpu")]


# -- _warnings ----------------------------------------------------------------------------------
def test_a_warning_is_attributed_to_a_user_file_whose_directory_only_starts_like_the_package():
    """A script in ``<root>/pinnlab_runs/`` is outside the package ``<root>/pinnlab/``: the
    warning names its line, not a frame further up (a prefix test without the separator
    took it for part of pinnlab)."""
    import warnings

    from pinnlab import _warnings

    package = _warnings._PACKAGE.rstrip(os.sep)
    script = package + "_runs" + os.sep + "user_script.py"
    code = compile("\n\nwarn('careful')\n", script, "exec")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        exec(code, {"warn": _warnings.warn})
    assert [(w.filename, w.lineno, str(w.message)) for w in record] == [(script, 3, "careful")]


def test_a_package_reached_through_a_symbolic_link_is_still_the_package(tmp_path):
    """pinnlab imported through a linked directory (a virtualenv's site-packages linking to
    a checkout): its frames are the package's, so the warning names the line outside it."""
    import sys
    import warnings

    from pinnlab import _warnings

    link = tmp_path / "linked_pinnlab"
    link.symlink_to(_warnings._PACKAGE.rstrip(os.sep), target_is_directory=True)
    inner = compile("def relay(message):\n    warn(message)\n", str(link / "relay.py"), "exec")
    namespace = {"warn": _warnings.warn}
    exec(inner, namespace)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        namespace["relay"]("careful")
    assert [(w.filename, w.lineno) for w in record] == [(__file__, line)]


# -- pinnlab/__init__ ---------------------------------------------------------------------------
def test_the_top_level_exports_exactly_its_documented_names():
    """``from pinnlab import *`` gives the entry points and sub-packages the docstring
    names (a name dropped from __all__ vanished from star imports and the API docs)."""
    import pinnlab

    assert sorted(pinnlab.__all__) == sorted([
        "PINNProblem", "TrainResult", "__version__", "bilevel", "configure_malloc", "equations", "estimators",
        "hypergradient", "io", "losses", "make_train_step", "nets", "plots", "solvers", "studies", "train",
        "tuning"])
    namespace = {}
    exec("from pinnlab import *", namespace)
    assert namespace["train"] is pinnlab.train and namespace["configure_malloc"] is pinnlab.configure_malloc


def test_the_version_is_the_installed_distributions():
    """``pinnlab.__version__`` is the version pip installed (pyproject.toml's)."""
    from importlib.metadata import version

    import pinnlab

    assert pinnlab.__version__ == version("pinnlab")


# -- bilevel/distributed (one process; the process group's calls replaced) ----------------------
def _lost_with(error):
    from pinnlab.bilevel.distributed import PeerLost, _collective

    def call():
        raise error

    with pytest.raises(PeerLost) as info:
        _collective(call)
    return info.value


def test_a_dist_error_of_any_backend_is_peer_lost_named_by_its_type_without_a_message():
    import torch.distributed as dist

    lost = _lost_with(dist.DistNetworkError("store: connection refused\nat tcp_store.cpp"))
    assert str(lost) == "another process of the run ended during a collective call (store: connection refused)"
    assert str(_lost_with(dist.DistNetworkError(""))) == (
        "another process of the run ended during a collective call (DistNetworkError)")


def test_a_gloo_transport_error_is_peer_lost_and_its_detail_is_one_trimmed_line():
    """gloo's transport errors name their source file; the detail is the message's first
    non-blank line, at most 160 characters, and the chained torch traceback is dropped."""
    lost = _lost_with(RuntimeError("\n  [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error\nmore"))
    assert str(lost) == ("another process of the run ended during a collective call "
                         "([../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error)")
    assert lost.__cause__ is None and lost.__suppress_context__
    long = "Connection reset by peer " + "x" * 300
    assert str(_lost_with(RuntimeError(long))) == (
        f"another process of the run ended during a collective call ({long[:160]})")
    # the first line trimmed too (its trailing spaces stood before the closing parenthesis)
    assert str(_lost_with(RuntimeError("Connection closed by peer   \nmore"))) == (
        "another process of the run ended during a collective call (Connection closed by peer)")


@pytest.fixture
def group(monkeypatch):
    """A stand-in process group of this one process on gloo: records each collective call."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")

    def all_reduce(tensor, op=None):
        calls.append(("all_reduce", tensor.dtype, tensor.device.type, op))
        tensor += 1

    def broadcast(tensor, src=None):
        calls.append(("broadcast", tensor.dtype, tensor.device.type, src))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "broadcast", broadcast)
    return calls


def test_all_reduce_sum_leaves_its_input_unchanged(group):
    import torch
    import torch.distributed as dist

    from pinnlab.bilevel.distributed import all_reduce_sum

    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = all_reduce_sum(x)
    assert torch.equal(x, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(out, torch.tensor([2.0, 3.0], dtype=torch.float64))
    assert group == [("all_reduce", torch.float64, "cpu", dist.ReduceOp.SUM)]


def test_broadcast_value_sends_rank_0s_float64_and_reads_none_as_nan(group):
    import math

    import torch

    from pinnlab.bilevel.distributed import broadcast_value

    assert broadcast_value(0.1) == 0.1  # exactly: a float64, not rounded to float32
    assert math.isnan(broadcast_value(None))
    assert group == [("broadcast", torch.float64, "cpu", 0)] * 2


def test_all_agree_takes_the_minimum_over_ranks(group):
    import torch.distributed as dist

    from pinnlab.bilevel.distributed import all_agree

    all_agree(True)  # the stand-in adds 1: any non-zero reads as True
    assert group[-1][-1] == dist.ReduceOp.MIN


def test_collectives_of_nccl_use_cuda_tensors(monkeypatch):
    import torch.distributed as dist

    from pinnlab.bilevel.distributed import _flag_device

    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    assert _flag_device() == "cuda"
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    assert _flag_device() == "cpu"


def test_rank_and_world_read_the_process_group(monkeypatch):
    import torch.distributed as dist

    from pinnlab.bilevel.distributed import init_from_environment, rank_and_world

    assert rank_and_world() == (0, 1)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 3)
    assert rank_and_world() == (1, 3)
    # a process that already joined its group does not join again
    _torchrun(monkeypatch, world=3, rank=1)

    def init_process_group(**kwargs):
        raise AssertionError("joined twice")

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    assert init_from_environment("cpu") == (1, 3)


def _torchrun(monkeypatch, world=2, rank=0, **extra):
    for key, value in {"WORLD_SIZE": world, "RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29500,
                       **extra}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.mark.parametrize("text", ["-3", "2.5", "two"])
def test_a_world_size_that_is_no_number_of_processes_is_one_full_line(monkeypatch, text):
    from pinnlab.bilevel.distributed import environment_world_size

    monkeypatch.setenv("WORLD_SIZE", text)
    with pytest.raises(ValueError) as info:
        environment_world_size()
    assert str(info.value) == (f"WORLD_SIZE = {text!r} in the environment: not a number of processes (torchrun "
                               "sets it); unset it to run one process")


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_world_size_is_one_process(monkeypatch, text):
    from pinnlab.bilevel.distributed import environment_world_size

    monkeypatch.setenv("WORLD_SIZE", text)
    assert environment_world_size() == 1


def test_an_empty_rendezvous_variable_is_a_missing_one(monkeypatch):
    """``RANK=`` (set but empty, as ``export RANK=`` leaves it) is as good as unset."""
    from pinnlab.bilevel.distributed import environment_world_size

    _torchrun(monkeypatch, world=" 2 ")
    assert environment_world_size() == 2
    monkeypatch.setenv("RANK", "")
    with pytest.raises(ValueError) as info:
        environment_world_size()
    assert str(info.value) == ("WORLD_SIZE = 2 in the environment but RANK not set: start the processes with "
                               "torchrun, or unset WORLD_SIZE to run one process")


def test_only_a_cuda_device_gets_nccl():
    from pinnlab.bilevel.distributed import backend_for

    assert [backend_for(d) for d in ("cpu", "meta", "cuda:1")] == ["gloo", "gloo", "nccl"]


def test_local_device_picks_this_ranks_gpu_only_under_torchrun(monkeypatch):
    import torch

    from pinnlab.bilevel.distributed import local_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert local_device("cuda") == torch.device("cuda") and chosen == []  # one process: as given
    _torchrun(monkeypatch)
    assert local_device("cpu") == torch.device("cpu") and local_device("meta") == torch.device("meta")
    assert chosen == []
    assert local_device("cuda") == torch.device("cuda", 0) and chosen == [0]  # no LOCAL_RANK: GPU 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device(torch.device("cuda")) == torch.device("cuda", 1) and chosen == [0, 1]


def test_a_world_size_in_underscored_digits_is_no_number_of_processes(monkeypatch):
    """int() reads '1_0' as 10; torchrun writes plain digits."""
    from pinnlab.bilevel.distributed import environment_world_size

    _torchrun(monkeypatch, world="1_0")
    with pytest.raises(ValueError, match=r"WORLD_SIZE = '1_0' in the environment: not a number of processes"):
        environment_world_size()


@pytest.mark.parametrize("text", ["abc", "1_0", "-1", "0.5"])
def test_a_local_rank_that_is_no_gpu_index_is_one_line_of_the_environment(tmp_path, monkeypatch, capsys, text):
    """Under torchrun on CUDA, LOCAL_RANK=abc was int()'s message under "config error:"."""
    import torch

    from pinnlab.bilevel.distributed import local_device
    from pinnlab.cli import main

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    _torchrun(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", text)
    expected = f"LOCAL_RANK = {text!r} in the environment: not a GPU index (torchrun sets it); start the processes " \
               "with torchrun"
    with pytest.raises(ValueError) as info:
        local_device("cuda")
    assert str(info.value) == expected and chosen == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device: cuda on this CPU machine
    config = Path(__file__).parents[1] / "configs" / "tuning" / "poisson_boundary_weight.yaml"
    assert main(["tune", str(config), "trainer.device=cuda", "-o", str(tmp_path / "t.h5")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"pinnlab: error (rank 0 of 2): {expected}"]
