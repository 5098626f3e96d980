"""Output locks (``output_lock``) where a run meets another: the lock file replaced under
it, and outputs that name no file."""

from __future__ import annotations

import fcntl
import os

import pytest

from pinnlab.io.atomic import OutputBusy, output_lock


def test_a_lock_file_replaced_before_it_was_locked_is_locked_anew(tmp_path, monkeypatch):
    """Between our open and our flock the run before us may end and remove its lock file,
    and a third run create a new one: a lock on the removed file guards nothing. The
    lock is taken again on the file that is there, so a second run is still refused."""
    output = tmp_path / "run.h5"
    lock = tmp_path / ".run.h5.lock"
    flock, calls = fcntl.flock, []

    def flock_after_a_replacement(fd, operation):
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:  # the holder before us removes the file, a new run creates another
            lock.unlink()
            lock.write_bytes(b"")
        return flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_replacement)
    with output_lock(output):
        assert len(calls) == 2 and calls[1] == os.stat(lock).st_ino != calls[0]
        monkeypatch.setattr(fcntl, "flock", flock)
        with pytest.raises(OutputBusy, match="another pinnlab run is writing"):
            with output_lock(output):
                pass
    assert not lock.exists()


@pytest.mark.parametrize("output", ["", "/"])
def test_an_output_that_names_no_file_takes_no_lock(tmp_path, monkeypatch, output):
    """"" and "/" name no file to guard (the run's own checks refuse them in one line): no
    lock, no lock file, no error from making a hidden sibling of no name."""
    monkeypatch.chdir(tmp_path)
    with output_lock(output):
        assert list(tmp_path.iterdir()) == []
