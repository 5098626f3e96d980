"""A user at a shell, trying ``pinnlab``'s command-line surface and where its outputs go:
``-o`` given as a name without ``.h5``, with spaces and non-ASCII letters, a symbolic link,
an existing file that is not a result, another command's output; ``pinnlab plot`` on each
kind of result, on damaged, locked and foreign files, into directories; exit codes; what
goes to stdout and what to stderr. The problems met (``plot -o FILE`` named "File exists"
instead of saying FILE is no directory; two results whose names differ only after their
last dot share one default plot directory, the second replacing the first's figures, and,
as ``pinnlab study`` outputs, one pair of .md/.csv tables; a solve written over a training
study leaves the study's tables; a result another process holds open is called damaged,
and so is one whose figures meet a full disk; tune and study end in a traceback when
their result cannot be written; two figures whose axes miss their data) and the
behaviour met on the way that no other test pinned."""

from __future__ import annotations

import errno
import os
import shutil

import h5py
import pytest

from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""

TRAINING = TINY + """\
study:
  kind: training
  variants:
    biased: [loss.kind=biased]
  grid:
    trainer.seed: [0]
"""


def _run(args):
    return main([str(a) for a in args])


def _solve(tmp_path, output, *extra):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    return _run(["solve", cfg, "-o", output, "--progress", "off", *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


# -- bugs ---------------------------------------------------------------------------------------
def test_plot_into_an_existing_file_says_it_is_not_a_directory(tmp_path, capsys):
    """``pinnlab plot run.h5 -o notes.txt`` where notes.txt is a file of the user's: one line,
    exit 2, the file kept. The line was ``cannot create plot directory 'notes.txt': [Errno
    17] File exists: 'notes.txt'``: mkdir's words, which read as if the directory were
    there (the default directory's same case was reworded for this reason: "(its name
    without a suffix) is the file itself"). It should say the path is a file, not a
    directory; and where it is the default directory (``plot run.h5`` beside a file
    ``run.h5_plots``, a result written with ``-o run.h5_plots``), point at -o DIR as that
    case does."""
    result = tmp_path / "run.h5"  # (refused before it is read)
    result.write_bytes(b"a result")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert _run(["plot", result, "-o", notes]) == 2
    line = _one_error_line(capsys)
    assert notes.read_text() == "my notes"
    assert "File exists" not in line and "not a directory" in line, line
    default = tmp_path / "run.h5_plots"  # plot run.h5's default directory
    default.write_bytes(b"a result written with -o run.h5_plots")
    assert _run(["plot", result]) == 2
    line = _one_error_line(capsys)
    assert default.read_bytes() == b"a result written with -o run.h5_plots"
    assert "File exists" not in line and "-o DIR" in line, line


def test_two_results_named_apart_after_their_last_dot_get_their_own_plot_directories(tmp_path, capsys,
                                                                                   monkeypatch):
    """``plot --help``: the default directory is "FILE without .h5". For results named
    ``run.v1`` and ``run.v2`` (no .h5) it is ``run/`` for both (``with_suffix("")`` drops
    whatever the last suffix is): ``pinnlab plot run.v1; pinnlab plot run.v2`` exits 0
    twice and run/curves.png is silently the second run's, run/ a mix of both (tune.png of
    one, slice.png of the other when the kinds differ). Each should get its own directory
    (or the second be refused), never replace figures of another result."""
    from pinnlab.plots import solve

    drawn_from = []

    def save(fig, path, **kwargs):  # each figure's file says which plot drew it (no PNG rendering)
        path.write_text(f"figure of plot {len(drawn_from) + 1}")
        return path

    monkeypatch.setattr(solve, "_save", save)
    first, second = tmp_path / "run.v1", tmp_path / "run.v2"
    assert _solve(tmp_path, first) == 0
    assert _solve(tmp_path, second, "trainer.seed=1") == 0
    capsys.readouterr()
    assert _run(["plot", first]) == 0
    drawn_from.append(first)
    drawn_first = capsys.readouterr().out.splitlines()
    before = {name: open(name, "rb").read() for name in drawn_first}
    code = _run(["plot", second])
    drawn_second = capsys.readouterr().out.splitlines()
    assert code == 2 or not set(drawn_first) & set(drawn_second), (drawn_first, drawn_second)
    assert {name: open(name, "rb").read() for name in drawn_first} == before


def test_training_studies_named_apart_after_their_last_dot_get_their_own_tables(tmp_path, capsys):
    """``pinnlab study train.yaml -o s.v1`` writes its tables as s.md and s.csv (the cells go
    to s.v1.cells, named after the whole -o). A second study ``-o s.v2``, a fresh name, was
    then refused: "output 's.md' (the study's markdown table) exists; pass --overwrite",
    and with --overwrite replaces the first study's tables. Each -o should have its own
    tables (s.v1.md, or s.v1.h5's s.v1.md as now)."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    assert _run(["study", cfg, "-o", tmp_path / "s.v1"]) == 0
    capsys.readouterr()
    code = _run(["study", cfg, "-o", tmp_path / "s.v2"])
    err = capsys.readouterr().err
    assert code == 0, err


@pytest.mark.parametrize("command", ["solve", "tune"])
def test_a_solve_over_a_training_study_leaves_no_stale_tables(tmp_path, capsys, command):
    """README: a training study's companion .md/.csv files follow --overwrite like -o; an
    estimator study over a training study removes them (pinned in the studies walkthrough:
    they described a study the file no longer holds). ``pinnlab solve tiny.yaml -o
    train.h5 --overwrite`` (or ``pinnlab tune``) over the same training study kept
    train.md and train.csv: a reader of train.md sees the results of a study that is gone."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    out = tmp_path / "train.h5"
    assert _run(["study", cfg, "-o", out]) == 0
    assert (tmp_path / "train.md").exists() and (tmp_path / "train.csv").exists()
    if command == "solve":
        assert _solve(tmp_path, out, "--overwrite") == 0
    else:
        (tmp_path / "t.yaml").write_text(WEIGHT_FG2U)
        assert _run(["tune", tmp_path / "t.yaml", "-o", out, "--overwrite", "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == command
    assert not (tmp_path / "train.md").exists() and not (tmp_path / "train.csv").exists()


# -- behaviour that is right, pinned here ------------------------------------------------------
def test_an_output_with_spaces_and_accents_is_written_and_plotted_into_its_own_directory(tmp_path, capsys):
    """``-o 'mon résultat ü.h5'``: the solve writes it; ``pinnlab plot`` with no -o draws into
    'mon résultat ü.h5_plots/' and prints each figure's path, one per line on stdout (a user can
    pipe them), nothing on stderr."""
    out = tmp_path / "mon résultat ü.h5"
    assert _solve(tmp_path, out) == 0
    capsys.readouterr()
    assert _run(["plot", out]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines() == [str(tmp_path / "mon résultat ü.h5_plots" / name)
                                         for name in ("curves.png", "slice.png", "radial.png")]
    assert all((tmp_path / "mon résultat ü.h5_plots" / name).read_bytes().startswith(b"\x89PNG")
               for name in ("curves.png", "slice.png", "radial.png"))


def test_an_output_that_is_a_link_to_a_result_needs_overwrite_and_then_leaves_the_target(tmp_path, capsys):
    """``-o latest.h5`` where latest.h5 is a symbolic link to run.h5: refused without
    --overwrite (the link's target exists), both untouched; with --overwrite the atomic
    write renames its new file over the link, so latest.h5 becomes the new result and
    run.h5, the link's target, stays byte for byte as it was."""
    target, link = tmp_path / "run.h5", tmp_path / "latest.h5"
    assert _solve(tmp_path, target) == 0
    before = target.read_bytes()
    link.symlink_to(target.name)
    capsys.readouterr()
    assert _solve(tmp_path, link) == 2
    assert _one_error_line(capsys) == f"pinnlab: error: output {str(link)!r} exists; pass --overwrite to replace it"
    assert link.is_symlink() and target.read_bytes() == before
    assert _solve(tmp_path, link, "trainer.seed=1", "--overwrite") == 0
    assert not link.is_symlink() and target.read_bytes() == before
    with h5py.File(link) as fh:
        assert fh.attrs["train_seed"] == 1


def test_an_existing_file_that_is_not_a_result_is_kept_without_overwrite(tmp_path, capsys):
    """``-o notes.txt`` over a text file of the user's: one line, exit 2, the file kept."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert _solve(tmp_path, notes) == 2
    assert _one_error_line(capsys) == f"pinnlab: error: output {str(notes)!r} exists; pass --overwrite to replace it"
    assert notes.read_text() == "my notes"


def test_solve_stdout_holds_only_the_result_line_whatever_the_progress(tmp_path, capsys):
    """``pinnlab solve ... | tee``: the progress (a forced bar or log lines) goes to stderr,
    and stdout holds the one ``rel_l2=... rel_l1=... steps_per_second=...`` line, the last
    one the README promises."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    for progress in ("bar", "log"):
        out = tmp_path / f"{progress}.h5"
        assert _run(["solve", cfg, "trainer.log_every=1", "-o", out, "--progress", progress]) == 0
        captured = capsys.readouterr()
        lines = captured.out.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rel_l2=") and " steps_per_second=" in lines[0], captured
        assert captured.err.strip(), captured  # the bar, or the log lines
    assert "train step 2/2 " in captured.err, captured.err


def test_plot_of_a_truncated_training_study_is_one_line_and_makes_no_directory(tmp_path, capsys):
    """A training study's HDF5 cut to its first 90 % (a copy stopped half-way): ``pinnlab
    plot`` is one line, exit 2, naming it truncated or damaged, and makes no directory."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    out = tmp_path / "train.h5"
    assert _run(["study", cfg, "-o", out]) == 0
    cut = tmp_path / "cut.h5"
    data = out.read_bytes()
    cut.write_bytes(data[: len(data) * 9 // 10])
    shutil.copytree(tmp_path / "train.h5.cells", tmp_path / "cut.h5.cells")
    capsys.readouterr()
    assert _run(["plot", cut]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"pinnlab: error: cannot plot: {str(cut)!r} is an HDF5 file that cannot be read, "
                           "truncated or damaged ("), line
    assert not (tmp_path / "cut").exists()


def test_plot_of_a_result_held_open_by_another_process_does_not_call_it_damaged(tmp_path, capsys):
    """A user who has run.h5 open for writing elsewhere (h5py's ``File(..., "r+")`` in a
    notebook, a script adding attributes; HDF5 locks the file with ``flock``, here taken
    the same way) runs ``pinnlab plot run.h5``: one line and exit 2 are right, but it said
    "is an HDF5 file that cannot be read, truncated or damaged ([Errno 11] ... unable to
    lock file ...)", which sends the user to delete a whole result. It should say that
    the file is locked, in use by another process, not that it is damaged."""
    import fcntl

    out = tmp_path / "run.h5"
    assert _solve(tmp_path, out) == 0
    capsys.readouterr()
    fd = os.open(out, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert _run(["plot", out, "-o", tmp_path / "figs"]) == 2
    finally:
        os.close(fd)
    line = _one_error_line(capsys)
    assert not (tmp_path / "figs").exists()
    assert "damaged" not in line and ("in use" in line or "locked" in line), line


MIXED = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: autograd}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8, optimizer: sgd, schedule: constant}
study:
  kind: training
  variants:
    good: [trainer.lr=1.0e-3]
    bad: [trainer.lr=1.0e+30]
  grid:
    trainer.seed: [0]
"""


def test_the_error_figure_of_a_study_without_columns_keeps_its_point_over_its_tick(tmp_path, capsys, figures):
    """``pinnlab study mixed.yaml`` (variants good and bad, the bad one diverging, no
    ``columns``) then ``pinnlab plot``: training_error_vs_dim.png draws good's point
    dodged to x = -0.05 (its place beside bad's, which has none) and the x axis
    autoscales to that one point, (-0.053, 0.0): the only tick, "all", sits on the right
    frame and the point on the left one, the figure looks like an empty axis with a
    stray dot. The tick and the point should both lie inside the axis, clear of its
    edges."""
    from pinnlab.plots import studies

    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(MIXED)
    out = tmp_path / "mixed.h5"
    assert _run(["study", cfg, "-o", out]) == 0
    assert "| bad | no ok run (1 of 1 not ok, left out) |" in capsys.readouterr().out
    studies.plot_training_study(out, tmp_path / "plots")
    (ax,) = figures["training_error_vs_dim.png"].axes
    (tick,) = ax.get_xticks()
    assert [label.get_text() for label in ax.get_xticklabels()] == ["all"]
    (point,) = {float(x) for line in ax.lines for x in line.get_xdata()}
    low, high = ax.get_xlim()
    margin = 0.05 * (high - low)
    assert low + margin <= min(tick, point) and max(tick, point) <= high - margin, (low, high, tick, point)


def test_a_plot_on_a_full_disk_says_the_disk_is_full_not_that_the_result_is_damaged(tmp_path, capsys,
                                                                                   monkeypatch):
    """The second figure of ``pinnlab plot run.h5 -o figs`` fails with ENOSPC (a full disk,
    as a quota or a small /tmp does). One line, no directory left behind and the result
    untouched are right, but the line said "cannot plot 'run.h5': the file is damaged or
    was written by another pinnlab version (OSError: [Errno 28] No space left on
    device)" with exit 2: it sends the user to distrust or delete a good result. The
    commands' rule (pinnlab.cli.RunFailed: a file that cannot be written, "a full disk")
    is one line naming what could not be written and why, exit code 1."""
    from matplotlib.figure import Figure

    out = tmp_path / "run.h5"
    assert _solve(tmp_path, out) == 0
    before = out.read_bytes()
    capsys.readouterr()
    real, calls = Figure.savefig, []

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", full_disk)
    code = _run(["plot", out, "-o", tmp_path / "figs"])
    line = _one_error_line(capsys)
    assert out.read_bytes() == before and not (tmp_path / "figs").exists()
    assert "No space left on device" in line and "damaged" not in line, line
    assert code == 1, line


@pytest.mark.parametrize("command", ["tune", "study"])
def test_a_tune_or_study_result_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch,
                                                                              command):
    """The last act of ``pinnlab tune t.yaml -o out.h5`` (or ``pinnlab study train.yaml -o
    out.h5``), the atomic rename onto out.h5, fails with ENOSPC. ``pinnlab solve`` reports
    this in one line naming the output and the error, exit code 1 (RunFailed; pinned in the
    stop/resume walkthrough); tune and study let the OSError out as a Python traceback,
    exit code 1 from the interpreter, after the tuning (its checkpoint left, unnamed) or
    the study's cells (kept, reused by a rerun) were done."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(WEIGHT_FG2U if command == "tune" else TRAINING)
    out = tmp_path / "out.h5"
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst) == str(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    extra = ["--progress", "off"] if command == "tune" else []
    try:
        code = _run([command, cfg, "-o", out, *extra])
    except OSError as err:
        code = f"traceback: {err!r}"
    monkeypatch.setattr(os, "replace", real_replace)
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, code
    assert "No space left on device" in err[-1] and str(out) in err[-1], err


def test_the_objective_axis_of_a_two_step_tuning_is_centred_on_its_steps(tmp_path, capsys, figures):
    """``pinnlab tune`` with tune.outer_steps=2, then ``pinnlab plot``: the outer objective is
    drawn at steps 1 and 2, and the widening of a span under 2 (for whole-number ticks)
    centres on round(1.5) = 2 (Python rounds half to even), so the axis is (0.95, 3): a
    tick at outer step 3, a step that was never run, with nothing drawn there, as if the
    last one were missing. The axis should be centred on the steps drawn."""
    from pinnlab.plots import tune

    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "tune.outer_steps=2", "-o", out, "--progress", "off"]) == 0
    tune.plot_tune(out, tmp_path / "plots")
    _, ax_obj = figures["tune.png"].axes
    (line, *_) = ax_obj.lines
    assert list(line.get_xdata()) == [1, 2]
    low, high = ax_obj.get_xlim()
    assert abs((low + high) / 2 - 1.5) < 0.1, (low, high)


def test_plotting_a_replaced_result_again_leaves_no_figure_of_the_old_one(tmp_path, capsys, monkeypatch):
    """``pinnlab tune t.yaml -o r.h5; pinnlab plot r.h5`` draws r/tune.png, curves.png,
    terms.png, slice.png, radial.png; after ``pinnlab solve c.yaml -o r.h5 --overwrite``,
    ``pinnlab plot r.h5`` draws curves, slice and radial and leaves r/tune.png and
    r/terms.png of the tuning the file no longer holds beside them: a reader of r/ sees a
    tuning that is gone (as the .md/.csv tables an estimator study over a training study
    removes, pinned in the studies walkthrough). The directory should hold only figures of
    the result plotted (or the plot say which figures are left from before)."""
    from pinnlab.plots import solve, tune

    def save(fig, path, **kwargs):  # (no PNG rendering)
        path.write_text("figure")
        return path

    monkeypatch.setattr(solve, "_save", save)
    monkeypatch.setattr(tune, "_save", save)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "r.h5"
    assert _run(["tune", cfg, "-o", out, "--progress", "off"]) == 0
    capsys.readouterr()
    assert _run(["plot", out]) == 0
    assert {"tune.png", "terms.png"} <= {p.name for p in (tmp_path / "r.h5_plots").iterdir()}
    assert _solve(tmp_path, out, "--overwrite") == 0
    capsys.readouterr()
    assert _run(["plot", out]) == 0
    drawn = capsys.readouterr().out.splitlines()
    assert drawn == [str(tmp_path / "r.h5_plots" / name) for name in ("curves.png", "slice.png", "radial.png")]
    assert sorted(p.name for p in (tmp_path / "r.h5_plots").iterdir()) == ["curves.png", "radial.png", "slice.png"]


def test_an_output_of_dash_is_refused_not_written_as_a_file_named_dash(tmp_path, capsys, monkeypatch):
    """``-o -`` (a user who means stdout) wrote a result file literally named '-' in the
    working directory; ``--json -`` of a benchmark did the same. Both are one line, exit 2,
    and nothing is written; a benchmark's ``--json ./-`` still names that file."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    assert _solve(tmp_path, "-") == 2
    assert _one_error_line(capsys) == ("pinnlab: error: output '-': pinnlab writes HDF5 files, not to stdout; "
                                       "name a file")
    assert not (tmp_path / "-").exists()
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _common import json_path_error

    assert json_path_error("-").startswith("'-' is not stdout here")
    assert json_path_error("./-") is None
