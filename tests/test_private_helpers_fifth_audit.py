"""Fifth mutation audit of the private helpers (``_seeding``, ``_checks``, ``_malloc``,
``_warnings``, ``bilevel._trees``): stream names beyond ASCII or given as a str subclass,
the global generator left alone, numpy seeds, the minimum a refusal names, every name of
an overlong path, the thresholds passed to glibc, a refused first call and an empty
setting, the default warning category, and the key order of the tree helpers' results."""

from __future__ import annotations

import enum
import os
import warnings
import zlib

import numpy as np
import pytest
import torch

import pinnlab
from pinnlab import _malloc
from pinnlab._checks import check_integer, check_seed, overlong_path
from pinnlab._seeding import derive_seed, make_generator
from pinnlab.bilevel._trees import detach, tree_add, tree_scale
from pinnlab.bilevel.base import flatten

from .test_checks import _refused
from .test_malloc_release import libc  # noqa: F401 - a stand-in glibc, no MALLOC_* settings, Linux

F64 = torch.float64


# -- _seeding -----------------------------------------------------------------------------------
def test_a_stream_name_beyond_ascii_is_keyed_by_the_crc32_of_its_utf8_bytes():
    """A name is its UTF-8 bytes' CRC-32 on every machine: "ε" and "δ" are two streams (an
    encoding that cannot hold them, read with replacement, made both "?", one stream)."""
    assert derive_seed(2, "ε") == derive_seed(2, zlib.crc32("ε".encode())) == 546584059587905591
    assert derive_seed(2, "δ") == 5643171232137145223
    assert derive_seed(0, "noise/σ", 1) == 8911471161695352076


def test_make_generator_leaves_the_global_generator_alone():
    """A stream has a generator of its own: making one does not reseed torch's global
    generator (the user's own draws around a training step keep their sequence)."""
    with torch.random.fork_rng(devices=[]):  # (the suite's global generator as it was)
        torch.manual_seed(123)
        expected = torch.rand(3, dtype=F64)
        torch.manual_seed(123)
        own = make_generator(0, "collocation", 3)
        assert torch.equal(torch.rand(3, dtype=F64), expected)
    assert own.initial_seed() == derive_seed(0, "collocation", 3)


def test_a_str_subclass_stream_name_is_keyed_by_its_text():
    """A stream name given as a str subclass (a StrEnum member) is the stream of its text,
    not read as an integer part (int("noise") raised ValueError)."""

    class Stream(enum.StrEnum):
        NOISE = "noise/0"

    assert derive_seed(7, Stream.NOISE, 12) == derive_seed(7, "noise/0", 12) == 9075597562246709324


# -- _checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.int64(3), np.uint64(3), np.int32(0)])
def test_check_seed_refuses_numpy_integers(value):
    """A seed is a Python int (as check_integer asks too): a numpy integer is refused
    with the seed message, not taken in range as if it were one."""
    assert _refused(check_seed, "seed", value) == (
        "seed must be an integer with 0 <= seed < 2**63 (result files store it as a 64-bit integer), "
        f"got {value!r}")


def test_the_numpy_integer_refusal_names_the_checks_own_minimum():
    """The hint for a numpy integer says the minimum asked for (0 for an ``every``
    option), not always 1."""
    value = np.int64(4)
    assert _refused(check_integer, "every", value, 0) == (
        f"every must be a Python int >= 0, got {value!r} (pass int(...) of it)")
    assert _refused(check_integer, "steps", np.int64(0), 2) == (
        f"steps must be a Python int >= 2, got {np.int64(0)!r} (pass int(...) of it)")


def test_overlong_path_checks_every_name_in_the_path_not_only_the_last(monkeypatch):
    """A directory name beyond NAME_MAX (limits of 255 and 4096 here) makes the path
    unnameable although its file name is short."""
    monkeypatch.setattr(os, "pathconf", lambda path, name: {"PC_NAME_MAX": 255, "PC_PATH_MAX": 4096}[name])
    assert overlong_path("runs/" + "d" * 255 + "/out.h5") is None
    assert overlong_path("runs/" + "d" * 256 + "/out.h5") == (
        "a name in it is 256 bytes long, the file system allows 255")


# -- _malloc ------------------------------------------------------------------------------------
def test_configure_malloc_passes_the_thresholds_it_is_given(libc):  # noqa: F811 - the imported fixture
    """Thresholds other than the defaults reach mallopt as given: M_MMAP_THRESHOLD (-3)
    the first, M_TRIM_THRESHOLD (-1) the second."""
    assert pinnlab.configure_malloc(mmap_threshold=2**20, trim_threshold=2**25) is True
    assert libc.calls == [("mallopt", -3, 2**20), ("mallopt", -1, 2**25)]


def test_a_refused_first_call_leaves_malloc_unconfigured(libc):  # noqa: F811
    """glibc refusing the values (mallopt returns 0) sets nothing: ``configured`` stays
    False and release_free_memory leaves the heap (no malloc_trim)."""
    libc.refuse()
    assert pinnlab.configure_malloc() is False
    assert _malloc.configured is False
    libc.calls.clear()
    assert _malloc.release_free_memory() is False
    assert libc.calls == []


def test_an_empty_malloc_setting_is_still_the_users(libc, monkeypatch):  # noqa: F811
    """A glibc setting present in the environment keeps malloc as it is, even set to the
    empty string (``export MALLOC_TOP_PAD_=``): its presence decides, not its value."""
    monkeypatch.setenv("MALLOC_TOP_PAD_", "")
    assert pinnlab.configure_malloc() is False
    assert libc.calls == [] and _malloc.configured is False


# -- _warnings ----------------------------------------------------------------------------------
def test_warn_is_a_user_warning_unless_told_otherwise():
    """``warn(message)`` raises a UserWarning (what ``-W ignore::UserWarning`` and pytest's
    filters expect); a category given is kept."""
    from pinnlab._warnings import warn

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warn("plain")
        warn("numeric", RuntimeWarning)
    assert [(w.category, str(w.message)) for w in record] == [(UserWarning, "plain"), (RuntimeWarning, "numeric")]


# -- bilevel/_trees -----------------------------------------------------------------------------
def test_tree_add_keeps_the_key_order_of_its_first_tree():
    """θ + s·v has θ's layout: its leaves in θ's order (flatten concatenates in key order),
    whatever the order of v's keys, and the values a + s·b leaf by leaf."""
    theta = {"w": torch.tensor([1.0, 2.0], dtype=F64), "b": torch.tensor([3.0], dtype=F64)}
    v = {"b": torch.tensor([10.0], dtype=F64), "w": torch.tensor([20.0, 40.0], dtype=F64)}
    out = tree_add(theta, v, -0.5)
    assert list(out) == ["w", "b"]
    assert torch.equal(flatten(out), torch.tensor([-9.0, -18.0, -2.0], dtype=F64))


def test_tree_scale_and_detach_keep_the_key_order():
    """s·θ and detach(θ) list θ's leaves in θ's order, not sorted by name: flatten of the
    result is flatten of θ scaled (or as it was), a vector of the same layout."""
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    theta = {"w": 2.0 * x, "b": x[:1] + 4.0}
    scaled = tree_scale(theta, 3.0)
    assert list(scaled) == ["w", "b"]
    assert torch.equal(flatten(scaled), torch.tensor([6.0, 12.0, 15.0], dtype=F64))
    cut = detach(theta)
    assert list(cut) == ["w", "b"]
    assert torch.equal(flatten(cut), torch.tensor([2.0, 4.0, 5.0], dtype=F64)) and not flatten(cut).requires_grad
