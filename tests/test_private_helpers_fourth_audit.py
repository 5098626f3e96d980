"""Fourth mutation audit of the private helpers: the progress bar (notes, term weights,
terminal width) and the file helpers of :mod:`pinnlab.io.atomic` (cut hidden names, the
output lock and the directory check on paths through a file that is not a directory).
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from pinnlab.io.atomic import _hidden_sibling, check_writable_directory, output_lock
from pinnlab.solvers.progress import Progress


class _Tty(io.StringIO):
    """A terminal stream whose size the test sets through ``os.get_terminal_size``."""

    def isatty(self):
        return True

    def fileno(self):
        return 99


# --- progress ----------------------------------------------------------------------------


def test_a_note_above_the_bar_goes_to_the_progress_stream(capsys):
    """With the bar, a note is written to the stream the bar draws on (stderr in a run),
    not to stdout, where it mixed with the run's result lines."""
    out = io.StringIO()
    bar = Progress(3, mode="bar", stream=out)
    bar.note("switched to the hybrid loss")
    bar.close()
    assert "switched to the hybrid loss\n" in out.getvalue()
    assert capsys.readouterr().out == ""


def test_term_weights_are_shown_with_two_significant_digits(monkeypatch):
    """w=0.12 for 0.12345 and w=1.2e+03 for 1234.5 (format .2g), loss terms .2e."""
    from types import SimpleNamespace

    from pinnlab.solvers import progress

    clock = iter([0.0, 0.5])
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    out = io.StringIO()
    Progress(1, mode="log", stream=out, rel_l2=False).update(
        0, 1.0, None, {"loss_pde": 0.123456, "weight_pde": 0.12345, "loss_bc": 2.0, "weight_bc": 1234.5})
    assert out.getvalue() == "train step 1/1 loss=1.000e+00 pde=1.23e-01(w=0.12) bc=2.00e+00(w=1.2e+03) it/s=2.00\n"


def test_the_bar_follows_a_resized_terminal(monkeypatch):
    """The bar is as wide as the terminal (columns - 1) at every redraw: 40 characters on
    a 41-column terminal, 70 once the terminal is widened to 71 (a bar sized once at the
    start kept its first width, or had none on a stream other than stderr/stdout)."""
    width = [41]
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((width[0], 10)))
    out = _Tty()
    bar = Progress(3, stream=out)
    assert bar.mode == "bar"
    bar.update(0, 1.0, 0.5)
    bar.bar.refresh()
    before = [len(line) for line in out.getvalue().split("\r") if line.strip()]
    width[0] = 71
    seen = len(out.getvalue())
    bar.update(1, 1.0, 0.5)
    bar.bar.refresh()
    after = [len(line) for line in out.getvalue()[seen:].split("\r") if line.strip()]
    bar.close()
    assert max(before) == before[-1] == 40
    assert after[-1] == 70


# --- atomic writes and locks ---------------------------------------------------------------


def test_a_cut_hidden_name_keeps_only_whole_characters_of_the_name(tmp_path):
    """A name over 200 bytes is cut at 180 bytes; a character cut in two there is dropped
    (no U+FFFD replacement character in the name), then ``~`` and 10 hex digits of the
    SHA-1 of the whole name follow."""
    name = "a" + "é" * 150 + ".h5"  # 304 bytes: byte 180 falls inside the 90th "é"
    encoded = name.encode()
    expected = ".a" + "é" * 89 + "~" + hashlib.sha1(encoded).hexdigest()[:10] + ".lock"
    sibling = _hidden_sibling(tmp_path / name, ".lock")
    assert sibling.name == expected and sibling.parent == tmp_path
    assert len(expected.encode()) == 1 + 179 + 1 + 10 + 5


def test_an_output_under_a_file_takes_no_lock_and_is_refused_as_no_directory(tmp_path):
    """An output whose directory is a regular file: the lock is skipped (the run's checks
    say why), not a NotADirectoryError traceback from the lock; the check then reports
    that the directory is not one."""
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / "out.h5"
    with output_lock(output):
        pass
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        check_writable_directory(output)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_directory_that_is_a_special_file_is_reported_as_no_directory(tmp_path):
    """A parent that exists but is neither a directory nor a regular file (a FIFO) is
    "not a directory", not "does not exist"."""
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FileNotFoundError, match="is not a directory") as caught:
        check_writable_directory(tmp_path / "pipe" / "out.h5")
    assert "does not exist" not in str(caught.value)
