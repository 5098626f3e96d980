"""Backlog of ``pinnlab plot`` (helper X): a full disk while the figures are moved into
place or while their staging directory is made, the default plot directories of two
results that were one, and the names of the figures a plot removes (kept by hand)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from pinnlab.plots import solve as solve_plots
from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots
from tests.test_cli_help import _commands
from tests.test_mutation_plots_today_audit import _one_error_line, _run, _solve_result


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


# -- 2. default plot directories that were one ------------------------------------------------------
def test_a_result_and_one_named_like_its_plot_directory_dot_h5_draw_into_two_directories(tmp_path, capsys,
                                                                                        text_figures):
    """``pinnlab plot run`` (a result written with ``-o run``) drew into run_plots/, and
    ``pinnlab plot run_plots.h5`` (FILE without .h5) into run_plots/ too: the second plot
    replaced the first's figures and exited 0. Every FILE draws into FILE_plots now, its
    whole name with _plots appended, so each result has a directory of its own."""
    first, second = _solve_result(tmp_path / "run"), _solve_result(tmp_path / "run_plots.h5")
    assert _run(["plot", first]) == 0
    drawn_first = capsys.readouterr().out.splitlines()
    before = {name: Path(name).read_text() for name in drawn_first}
    for name in drawn_first:  # (marked: a plot of the second result replacing it would show)
        Path(name).write_text("figure of run")
    assert _run(["plot", second]) == 0
    drawn_second = capsys.readouterr().out.splitlines()
    assert {Path(name).parent for name in drawn_first} == {tmp_path / "run_plots"}
    assert {Path(name).parent for name in drawn_second} == {tmp_path / "run_plots.h5_plots"}
    assert all(Path(name).read_text() == "figure of run" for name in before)


@pytest.mark.parametrize("name", ["run.h5", "run", "run_plots.h5", "run.v1", "run.h5.h5", "run.H5"])
def test_the_default_plot_directory_is_the_whole_name_with_plots_as_readme_and_help_say(tmp_path, capsys,
                                                                                       text_figures, name):
    """README and ``plot --help``: by default the figures go to FILE_plots (run.h5_plots/ for
    run.h5), FILE's whole name, whatever it ends with."""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert "by default `FILE_plots` (`run.h5_plots/` for `run.h5`: FILE's whole name" in readme
    assert "default: FILE_plots, FILE's whole name with _plots appended" in " ".join(
        _commands()["plot"].format_help().split())
    result = _solve_result(tmp_path / name)
    assert _run(["plot", result]) == 0
    assert {Path(line).parent for line in capsys.readouterr().out.splitlines()} == {tmp_path / f"{name}_plots"}


# -- 3. the names of the figures a plot may remove -------------------------------------------------
def test_figures_is_the_union_of_the_names_each_plotter_module_declares():
    """pinnlab.plots.FIGURES (the figures a plot removes as an earlier plot's) was a set kept
    by hand in pinnlab/plots/__init__.py beside the plotters, which a new figure could miss.
    It is now what the plotter modules of pinnlab.plots.PLOTTERS declare, each in its own
    FIGURES, and nothing else."""
    import importlib

    from pinnlab import plots

    modules = {module for module, _ in plots.PLOTTERS.values()}
    assert modules == {"pinnlab.plots.solve", "pinnlab.plots.tune", "pinnlab.plots.studies"}
    declared = [name for module in modules for name in importlib.import_module(module).FIGURES]
    assert plots.FIGURES == frozenset(declared) and len(declared) == len(plots.FIGURES)  # (none twice)
    assert {"curves.png", "tune.png", "estimator_residual.png", "training_loss_curves.png"} <= plots.FIGURES


def test_a_figure_saved_under_a_name_no_plotter_declares_is_refused(tmp_path):
    """A plotter that saves a new figure its module does not declare: the name was missing
    from FIGURES, so a later plot of another result left that figure in the directory, passing
    for the new result's. _save now refuses it the first time it is drawn (in the tests), so
    a new figure cannot be forgotten."""
    from matplotlib.figure import Figure

    with pytest.raises(ValueError, match="'histogram.png' is not declared in its plotter module's FIGURES"):
        solve_plots._save(Figure(), tmp_path / "histogram.png")
    assert list(tmp_path.iterdir()) == []


def test_figures_does_not_import_torch(tmp_path):
    """Deriving FIGURES imports every plotter module: the study plotter's import of
    pinnlab.studies.estimator_study (torch, seconds) is left to the estimator study's own
    plot, not paid by every ``pinnlab plot``."""
    import subprocess
    import sys

    code = "import sys; from pinnlab.plots import FIGURES; assert FIGURES; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
