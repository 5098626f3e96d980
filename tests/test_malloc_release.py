"""configure_malloc's bookkeeping and release_free_memory, against a stand-in C library:
``configured`` says whether the thresholds were ever set in this process (a later call
that fails does not unset it), only then is the heap trimmed, and only Linux is touched."""

from __future__ import annotations

import pytest

import pinnlab
from pinnlab import _malloc


class Function:
    """A C function of the stand-in library: records its calls, returns ``result``."""

    def __init__(self, name, calls, result):
        self.name, self.calls, self.result = name, calls, result

    def __call__(self, *args):
        self.calls.append((self.name, *args))
        return self.result


class Libc:
    """glibc as configure_malloc and release_free_memory see it: mallopt returns 1 (0
    where glibc refuses a value: ``refuse``), every call is recorded."""

    gnu_get_libc_version = object()

    def __init__(self):
        self.calls = []
        self.mallopt = Function("mallopt", self.calls, 1)
        self.malloc_trim = Function("malloc_trim", self.calls, 1)

    def refuse(self):
        self.mallopt.result = 0


@pytest.fixture
def libc(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                 "PINNLAB_MALLOC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_malloc.sys, "platform", "linux")
    monkeypatch.setattr(_malloc, "configured", False)
    fake = Libc()
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a: fake)
    return fake


def test_the_heap_is_trimmed_only_where_the_thresholds_were_set(libc):
    """Without configure_malloc the heap is glibc's own: release_free_memory leaves it
    (False, no malloc_trim); once configured it trims the whole free top (pad 0)."""
    assert _malloc.release_free_memory() is False
    assert libc.calls == []
    assert pinnlab.configure_malloc() is True
    libc.calls.clear()
    assert _malloc.release_free_memory() is True
    assert libc.calls == [("malloc_trim", 0)]


def test_a_later_refused_call_keeps_the_thresholds_configured(libc):
    """A second configure_malloc whose values glibc refuses (mallopt returns 0) returns
    False, but the first call's thresholds are still in effect: ``configured`` stays True
    and the heap is still trimmed for a fresh peak."""
    assert pinnlab.configure_malloc() is True
    libc.refuse()
    assert pinnlab.configure_malloc(mmap_threshold=-5) is False
    assert _malloc.configured is True
    libc.calls.clear()
    assert _malloc.release_free_memory() is True and libc.calls == [("malloc_trim", 0)]


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_only_linux_is_configured(libc, monkeypatch, platform):
    """The platform alone decides, even where a C library answers like glibc."""
    monkeypatch.setattr(_malloc.sys, "platform", platform)
    assert pinnlab.configure_malloc() is False
    assert libc.calls == [] and _malloc.configured is False
