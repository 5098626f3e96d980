"""Backlog of ``pinnlab plot`` (helper X): a full disk while the figures are moved into
place or while their staging directory is made, the default plot directories of two
results that were one, and the names of the figures a plot removes (kept by hand)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.plots import solve as solve_plots
from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots
from tests.test_solve_plot_data import _solve_file


def _run(args):
    return main([str(a) for a in args])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def _solve_result(path):
    """A solve result file (kind "solve") that plot_file draws: curves and slice."""
    _solve_file(path, loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "solve"
    return path


@pytest.fixture
def text_figures(monkeypatch):
    """Every figure is written as a short text file naming the plot (no PNG rendering)."""

    def save(fig, path, **kwargs):
        path.write_text("new figure")
        return path

    for module in (solve_plots, tune_plots, study_plots):
        monkeypatch.setattr(module, "_save", save)


def _earlier_plot(figs: Path) -> dict[str, str]:
    """A plot directory holding an earlier plot's figures (tune.png: one this plot removes)."""
    figs.mkdir()
    for name in ("curves.png", "slice.png", "tune.png"):
        (figs / name).write_text(f"earlier {name}")
    return {p.name: p.read_text() for p in figs.iterdir()}


# -- 1. a full disk while the figures are moved into place or staged -------------------------------
def test_a_figure_that_cannot_be_moved_into_place_is_one_line_exit_1_and_the_directory_kept(
        tmp_path, capsys, monkeypatch, text_figures):
    """Every figure is drawn, then the move of slice.png onto figs/slice.png fails with
    ENOSPC. It was a traceback (an uncaught OSError), with curves.png already replaced by
    the new plot's and slice.png still the earlier one: the directory held figures of two
    results. It should be one line naming figs/slice.png and the OS's words, exit 1, and
    figs/ left as it was (curves.png put back, tune.png not removed)."""
    result = _solve_result(tmp_path / "run.h5")
    figs = tmp_path / "figs"
    before = _earlier_plot(figs)
    real = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if Path(src).parent.name.startswith(".pinnlab-plot-") and Path(dst).name == "slice.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    assert _run(["plot", result, "-o", figs]) == 1
    assert _one_error_line(capsys) == (f"pinnlab: error: cannot write {str(figs / 'slice.png')!r} "
                                       "(No space left on device)")
    assert {p.name: p.read_text() for p in figs.iterdir()} == before


def test_a_figure_that_cannot_be_moved_into_a_new_directory_leaves_no_directory(tmp_path, capsys, monkeypatch,
                                                                               text_figures):
    """As above into a fresh ``-o new/figs``: no half plot (curves.png alone) nor an empty new/ is
    left behind, as when a figure cannot be drawn."""
    result = _solve_result(tmp_path / "run.h5")
    real = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst).name == "slice.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    assert _run(["plot", result, "-o", tmp_path / "new" / "figs"]) == 1
    assert "No space left on device" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_a_staging_directory_that_cannot_be_made_on_a_full_disk_is_exit_1_not_bad_input(
        tmp_path, capsys, monkeypatch, text_figures):
    """``tempfile.mkdtemp`` in the plot directory fails with ENOSPC: it was exit 2 ("cannot
    write into plot directory", the code of a bad command line), the disk's fault told as
    the user's. It should be one line naming the directory and the OS's words, exit 1, the
    earlier figures kept, and a directory this command made removed again."""
    result = _solve_result(tmp_path / "run.h5")
    figs = tmp_path / "figs"
    before = _earlier_plot(figs)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full_disk)
    assert _run(["plot", result, "-o", figs]) == 1
    assert _one_error_line(capsys) == f"pinnlab: error: cannot write {str(figs)!r} (No space left on device)"
    assert {p.name: p.read_text() for p in figs.iterdir()} == before
    assert _run(["plot", result, "-o", tmp_path / "new" / "figs"]) == 1
    assert "No space left on device" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "run.h5"]
