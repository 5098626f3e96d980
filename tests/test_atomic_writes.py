"""Atomic writes (``atomic_path``), output locks and strict JSON: the file a run leaves is
either the old one or the whole new one, flushed to disk before it replaces the old."""

from __future__ import annotations

import json
import os

import pytest

from pinnlab.io import atomic
from pinnlab.io.atomic import OutputBusy, atomic_path, output_lock, strict_json


def test_the_new_file_is_on_disk_before_it_replaces_the_target_and_the_rename_is_made_durable(tmp_path, monkeypatch):
    """Without the fsync of the temporary file before ``os.replace`` a crash can leave the
    target renamed onto a file whose data never reached the disk (an empty result where
    the old one was); the fsync of the directory after it makes the rename itself last."""
    target = tmp_path / "run.h5"
    target.write_bytes(b"old")
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def recording_replace(source, destination):
        events.append(("replace", os.stat(source).st_ino))
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    monkeypatch.undo()
    written = os.stat(target).st_ino
    assert events == [("fsync", written), ("replace", written), ("fsync", os.stat(tmp_path).st_ino)]
    assert target.read_bytes() == b"new"


def test_a_failed_write_leaves_the_target_as_it_was_and_no_temporary_file(tmp_path):
    """The body raising (a full disk, a stop from outside) keeps the old target and removes
    the half-written ``.NAME.<pid>.tmp`` next to it."""
    target = tmp_path / "run.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_long_output_names_that_share_their_first_bytes_have_locks_of_their_own(tmp_path):
    """A name too long for its lock's hidden name is cut, and a hash of the whole name is
    appended: two outputs whose names share their first 180 bytes must not lock each other
    out (each run would be refused as "another pinnlab run is writing" the other)."""
    first, second = (tmp_path / ("a" * 200 + f"{i}.h5") for i in (1, 2))
    with output_lock(first):
        with output_lock(second):  # not OutputBusy
            locks = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(OutputBusy):
            with output_lock(first):
                pass
    assert len(locks) == 2 and all(len(name.encode()) <= 255 for name in locks)


def test_strict_json_writes_booleans_as_booleans():
    """Only numbers go through the finite-or-null conversion: True stays ``true`` (as the
    integer 1 it compares equal in Python, but a JSON reader gets a number, not a flag)."""
    text = strict_json({"ok": True, "flags": (False, True), "n": 3, "x": float("nan")})
    assert text == '{"ok": true, "flags": [false, true], "n": 3, "x": null}'
    assert json.loads(text)["ok"] is True


def test_strict_json_keeps_the_type_of_numpy_and_torch_scalars():
    """numpy bools and 0-d torch integers or bools became floats (true -> 1.0, 3 -> 3.0),
    against the docstring's "numpy and 0-d torch numbers become Python ones"."""
    import numpy as np
    import torch

    values = {"a": np.bool_(True), "b": torch.tensor(3), "c": torch.tensor(False), "d": np.int64(7),
              "e": np.float32(0.5), "f": torch.tensor(float("nan")), "g": np.array(2)}
    assert json.loads(strict_json(values)) == {"a": True, "b": 3, "c": False, "d": 7, "e": 0.5, "f": None, "g": 2}
    assert strict_json({"b": torch.tensor(3)}) == '{"b": 3}'
