"""Mutation audit of today's changes to ``pinnlab plot`` and the figures (helper GP): the
default plot directory, a file where the plot directory goes, the removal of an earlier
plot's figures (only those named in :data:`pinnlab.plots.FIGURES`, never the result),
FigureNotWritten and its exit code, the HDF5 lock message, the training study's error
axis span (``_gap``), tune.png's non-finite marks, and ``cli.replacing``. Each test fails
on a plausible mistake the earlier tests let through."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from pinnlab import cli
from pinnlab.cli import main
from pinnlab.plots import FIGURES, FigureNotWritten, plot_file
from pinnlab.plots import solve as solve_plots
from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots
from tests.studies.test_study_plot_data import _training_file
from tests.test_solve_plot_data import _solve_file, _tune_file

PLOTS = Path(solve_plots.__file__).parent


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
    """Every figure is written as a short text file (no PNG rendering), through _save's
    own path handling left out."""

    def save(fig, path, **kwargs):
        path.write_text("figure")
        return path

    for module in (solve_plots, tune_plots, study_plots):
        monkeypatch.setattr(module, "_save", save)


# -- the default plot directory ------------------------------------------------------------------
def test_the_default_plot_directory_keeps_the_whole_name_of_a_file_not_ending_with_h5():
    """run.v1 draws into run.v1_plots/ (its whole name: run.v1 and run.v2 must not share one
    directory, nor run be its own); run.h5 too into run.h5_plots/ (it drew into run/, FILE
    without .h5: run_plots.h5's run_plots/ was then also the directory of a result run)."""
    assert cli.default_plot_directory(Path("d/run.h5")) == Path("d/run.h5_plots")
    assert cli.default_plot_directory(Path("d/run.v1")) == Path("d/run.v1_plots")
    assert cli.default_plot_directory(Path("d/run")) == Path("d/run_plots")
    assert cli.default_plot_directory(Path("d/run.H5")) == Path("d/run.H5_plots")


# -- a file where the plot directory goes --------------------------------------------------------
def test_plot_o_onto_a_file_names_the_directory_given_in_one_exact_line(tmp_path, capsys):
    """``plot run.h5 -o notes.txt``: the line names notes.txt (the -o given), not the result."""
    result = tmp_path / "run.h5"
    result.write_bytes(b"a result")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert _run(["plot", result, "-o", notes]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: -o {str(notes)!r}: is a file, not a directory; "
                                       "choose a directory")


def test_plot_o_onto_a_fifo_is_refused_as_no_directory_before_mkdir(tmp_path, capsys):
    """Whatever exists at -o and is no directory (a named pipe, not only a regular file) is
    refused as such, not left to mkdir's "File exists"."""
    result = tmp_path / "run.h5"
    result.write_bytes(b"a result")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _run(["plot", result, "-o", fifo]) == 2
    line = _one_error_line(capsys)
    assert "is a file, not a directory" in line and "File exists" not in line, line


# -- figures of an earlier plot ------------------------------------------------------------------
def test_every_figure_a_plotter_writes_is_named_in_figures():
    """FIGURES holds every file name the plotters save (a name missing from it would be
    left from an earlier plot); estimator figures are estimator_<quantity>.png."""
    names = set()
    for source in PLOTS.glob("*.py"):
        names |= set(re.findall(r'"(\w+\.png)"', source.read_text()))
    names |= {f"estimator_{q}.png" for q in ("loss", "gradient", "residual")}
    assert names <= FIGURES and "line.png" in names
    assert all(name.endswith(".png") for name in FIGURES)


def test_a_replot_removes_only_the_figures_it_does_not_draw_and_never_other_files(tmp_path, capsys,
                                                                                  text_figures):
    """An earlier plot's tune.png and terms.png are removed; the user's own notes.png and
    plan.txt in the -o directory are kept (only FIGURES' names are removed)."""
    result = _solve_result(tmp_path / "run.h5")
    figs = tmp_path / "figs"
    figs.mkdir()
    for name in ("tune.png", "terms.png", "notes.png", "plan.txt"):
        (figs / name).write_text("old")
    assert _run(["plot", result, "-o", figs]) == 0
    assert sorted(p.name for p in figs.iterdir()) == ["curves.png", "notes.png", "plan.txt", "slice.png"]
    assert (figs / "notes.png").read_text() == "old"


def test_a_result_named_like_a_figure_in_its_plot_directory_is_not_removed(tmp_path, capsys, text_figures):
    """``pinnlab plot figs/tune.png -o figs`` (a solve result the user named tune.png): it is
    no figure of an earlier plot, it is the file plotted, and stays."""
    figs = tmp_path / "figs"
    figs.mkdir()
    result = _solve_result(figs / "tune.png")
    before = result.read_bytes()
    assert _run(["plot", result, "-o", figs]) == 0
    assert result.read_bytes() == before


def test_an_earlier_figure_that_cannot_be_removed_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch,
                                                                        text_figures):
    """The disk's (or the permissions') fault, not bad input: exit 1, naming the figure."""
    result = _solve_result(tmp_path / "run.h5")
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "tune.png").write_text("old")
    real = Path.unlink

    def unlink(self, *args, **kwargs):
        if self.name == "tune.png":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert _run(["plot", result, "-o", figs]) == 1
    assert _one_error_line(capsys) == (f"pinnlab: error: cannot remove {str(figs / 'tune.png')!r}, a figure of "
                                       "an earlier plot (Permission denied)")
    assert (figs / "curves.png").is_file()  # the new figures are in place


# -- a figure that cannot be written -------------------------------------------------------------
def test_a_figure_that_cannot_be_written_is_named_where_it_was_going(tmp_path, capsys, monkeypatch):
    """ENOSPC on the second figure: the line names figs/slice.png (not the hidden staging
    directory it was drawn in) and the OS's words, exit 1."""
    from matplotlib.figure import Figure

    result = _solve_result(tmp_path / "run.h5")
    calls = []

    def full_disk(self, target, *args, **kwargs):  # (no PNG rendering)
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(target).write_bytes(b"figure")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    figs = tmp_path / "figs"
    assert _run(["plot", result, "-o", figs]) == 1
    assert _one_error_line(capsys) == (f"pinnlab: error: cannot write {str(figs / 'slice.png')!r} "
                                       "(No space left on device)")
    assert not figs.exists()


def test_save_reports_a_directory_it_cannot_create_as_a_figure_not_written(tmp_path):
    """_save's mkdir is the write's too: a parent that is a file raises FigureNotWritten
    (the disk's fault, exit 1), carrying the path and the OSError."""
    from matplotlib.figure import Figure

    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "curves.png"
    with pytest.raises(FigureNotWritten) as caught:
        solve_plots._save(Figure(), target)
    assert caught.value.path == target and isinstance(caught.value.error, OSError)


def test_figure_not_written_says_the_file_and_the_os_words():
    err = FigureNotWritten(Path("figs/slice.png"), OSError(errno.ENOSPC, "No space left on device"))
    assert str(err) == "cannot write 'figs/slice.png' (No space left on device)"
    assert isinstance(err, OSError)
    assert str(FigureNotWritten(Path("a.png"), OSError("odd"))) == "cannot write 'a.png' (odd)"


# -- a result locked by a writer -----------------------------------------------------------------
@pytest.mark.parametrize("error", [OSError(errno.EAGAIN, "Resource temporarily unavailable"),
                                   OSError("Unable to synchronously open file (unable to lock file, errno = 11)")])
def test_a_lock_is_told_by_its_errno_or_by_hdf5s_words(tmp_path, monkeypatch, error):
    """Either sign of HDF5's lock (errno EAGAIN, or "unable to lock file" in the text without
    an errno) says locked, never damaged; the line is exact."""
    from pinnlab import plots

    result = _solve_result(tmp_path / "run.h5")

    def locked(*args, **kwargs):
        raise error

    monkeypatch.setattr(plots.h5py, "File", locked)
    with pytest.raises(plots.NotAResult) as caught:
        plot_file(result, tmp_path / "figs")
    detail = " ".join(str(error).split())[:120]
    assert str(caught.value) == (f"{str(result)!r} is locked: another process has it open for writing; close it "
                                 f"there and plot again ({detail})")


# -- the training study's error axis -------------------------------------------------------------
def test_gap_is_the_smallest_distinct_gap_in_log_or_linear_units():
    assert study_plots._gap([2.0, 4.0, 16.0], True) == pytest.approx(np.log(2.0), rel=1e-15)
    assert study_plots._gap([0, 1, 3], False) == 1.0
    assert study_plots._gap([4.0, 4.0, 8.0], True) == pytest.approx(np.log(2.0), rel=1e-15)  # (a repeat: no 0)
    assert study_plots._gap([8.0], True) == pytest.approx(np.log(2.0), rel=1e-15)
    assert study_plots._gap([0], False) == 1.0


def test_the_error_axis_spans_half_a_gap_beyond_the_outer_columns(tmp_path, figures):
    """Columns d = 2, 8 on the log axis: the gap is log 4, the axis spans a factor 2 beyond
    each, (1, 16); text columns 0, 1, 2: (-0.5, 2.5)."""
    flat = np.ones(10)
    path = tmp_path / "log.h5"
    _training_file(path, [("a", 2.0, 0.1, flat, 0 * flat), ("a", 8.0, 0.3, flat, 0 * flat)],
                   [("a", 2.0, 0.1, 0.02), ("a", 8.0, 0.3, 0.05)])
    study_plots.plot_training_study(path, tmp_path)
    (ax,) = figures["training_error_vs_dim.png"].axes
    np.testing.assert_allclose(ax.get_xlim(), (1.0, 16.0), rtol=1e-12)
    path = tmp_path / "text.h5"
    _training_file(path, [("a", "x", 0.1, flat, 0 * flat), ("a", "y", 0.2, flat, 0 * flat),
                          ("a", "z", 0.3, flat, 0 * flat)],
                   [("a", "x", 0.1, 0.0), ("a", "y", 0.2, 0.0), ("a", "z", 0.3, 0.0)], columns="tag")
    study_plots.plot_training_study(path, tmp_path)
    (ax,) = figures["training_error_vs_dim.png"].axes
    np.testing.assert_allclose(ax.get_xlim(), (-0.5, 2.5), rtol=0, atol=1e-12)


# -- tune.png's non-finite marks -----------------------------------------------------------------
def test_a_diverged_outer_step_is_marked_at_its_one_based_step_along_the_top(tmp_path, figures, monkeypatch):
    """fg2u with values 3, NaN, 1: the x mark at outer step 2 (1-based, as the line), at 95 %
    of the panel's height, labelled in outer steps; the line keeps steps 1 and 3."""
    monkeypatch.setattr(tune_plots, "plot_solve", lambda path, outdir: [])
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]}, value=[3.0, np.inf, 1.0])
    tune_plots.plot_tune(path, tmp_path)
    ax_obj = figures["tune.png"].axes[1]
    line, mark = ax_obj.get_lines()
    assert list(line.get_xdata()) == [1, 3]
    assert mark.get_label() == "non-finite (diverged): 1 of 3 outer steps"
    assert list(mark.get_xdata()) == [2] and list(mark.get_ydata()) == [0.95]
    assert mark.get_marker() == "x"
    assert mark.get_transform() == ax_obj.get_xaxis_transform()
    assert [t.get_text() for t in ax_obj.get_legend().get_texts()] == [
        "outer objective", "non-finite (diverged): 1 of 3 outer steps"]


def test_the_objective_axis_of_one_step_is_centred_on_it(tmp_path, figures, monkeypatch):
    """One outer step drawn at 1: the widened axis is centred on 1 (0 .. 2), not moved."""
    monkeypatch.setattr(tune_plots, "plot_solve", lambda path, outdir: [])
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]})
    with h5py.File(path, "a") as fh:
        for name in ("outer_step", "value", "phi/weights.boundary"):
            data = fh[f"tune/{name}"][:1]
            del fh[f"tune/{name}"]
            fh[f"tune/{name}"] = data
    tune_plots.plot_tune(path, tmp_path)
    for ax in figures["tune.png"].axes[:2]:
        np.testing.assert_allclose(ax.get_xlim(), (0.0, 2.0), atol=1e-12)


# -- cli.replacing -------------------------------------------------------------------------------
def _training_study_with_tables(tmp_path):
    flat = np.ones(10)
    out = tmp_path / "s.h5"
    _training_file(out, [("a", 4.0, 0.1, flat, 0 * flat)], [("a", 4.0, 0.1, 0.0)])
    for table in (tmp_path / "s.md", tmp_path / "s.csv"):
        table.write_text("table")
    return out


def test_replacing_removes_a_training_studys_tables_only_after_the_write(tmp_path):
    """A write that fails inside replacing() leaves the old study's tables (and the study);
    one that succeeds removes them, even when the new file is another kind."""
    out = _training_study_with_tables(tmp_path)
    with pytest.raises(OSError), cli.replacing(out):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (tmp_path / "s.md").exists() and (tmp_path / "s.csv").exists()
    with cli.replacing(out):
        assert (tmp_path / "s.md").exists()  # (not yet: the write has not happened)
        with h5py.File(out, "w") as fh:
            fh.attrs["kind"] = "solve"
    assert not (tmp_path / "s.md").exists() and not (tmp_path / "s.csv").exists()


def test_replacing_another_kind_of_result_keeps_files_named_like_tables(tmp_path):
    """Over a solve result (or no file) nothing is removed: s.md beside a solve's s.h5 is
    the user's, not a study's table."""
    out = _solve_result(tmp_path / "s.h5")
    (tmp_path / "s.md").write_text("my notes")
    with cli.replacing(out):
        pass
    with cli.replacing(tmp_path / "new.h5"):
        (tmp_path / "new.md").write_text("mine")
    assert (tmp_path / "s.md").read_text() == "my notes" and (tmp_path / "new.md").exists()
