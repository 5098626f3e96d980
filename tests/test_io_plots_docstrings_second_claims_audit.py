"""Second claims audit of the io and plots packages: what their docstrings, comments and
messages promise and no earlier test pinned (observation refusals, a busy output's
message, checkpoint refusals that leave the file alone, the result file's groups, the
study figures' scales, labels and legend notes), and four that did not hold until
corrected: the /eval/x limit's time column, the git hash of an installed copy inside
another repository, what check_writable_directory checks, the symlog axis' threshold."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.io import results as results_module
from pinnlab.io.atomic import OutputBusy, check_writable_directory, output_lock, write_strict_json
from pinnlab.io.checkpoint import (
    CheckpointError,
    check_config,
    comparable_config,
    config_difference,
    read_checkpoint,
    write_checkpoint_file,
)
from pinnlab.io.observations import ObservationError, load_observations
from pinnlab.io.results import MAX_STORED_INPUTS, _git_hash, plan_slice, write_solve_result
from pinnlab.plots import studies as study_plots
from pinnlab.solvers.loop import History
from tests.studies.test_study_plot_data import _bars, _estimator_file, _markers, _record, _records_file
from tests.studies.test_study_plots_and_slopes import _loss_axis

F64 = torch.float64


# ----------------------------------------------------------------------------- observations


def test_an_observation_file_of_another_format_is_refused_naming_the_four_suffixes_it_reads(tmp_path):
    """load_observations reads "an HDF5, NPZ or CSV file": any other suffix is refused
    naming the four it reads (``.hdf5`` too); a file that is not there is named missing
    first, whatever its suffix."""
    path = tmp_path / "obs.txt"
    path.write_text("0.1,0.2,1.5\n")
    with pytest.raises(ObservationError) as refused:
        load_observations(path, 2)
    assert str(refused.value) == f"observation file {str(path)!r}: unknown format (use .h5, .hdf5, .npz or .csv)"
    with pytest.raises(ObservationError, match=r"^observation file '.*missing\.txt' does not exist$"):
        load_observations(tmp_path / "missing.txt", 2)


def test_dates_are_not_observations(tmp_path):
    """"real numbers only: not bool, complex, strings, dates or time spans": dates
    (datetime64, which numpy converts to float64 silently) are refused by their dtype."""
    path = tmp_path / "obs.npz"
    dates = np.array([["2020-01-01", "2020-01-02"]] * 3, dtype="datetime64[D]")
    assert dates.astype(np.float64).dtype == np.float64  # (what would happen unchecked)
    np.savez(path, x=dates, u=np.ones(3))
    with pytest.raises(ObservationError, match=r"x must hold real numbers, got dtype datetime64\[D\]$"):
        load_observations(path, 2)


# ----------------------------------------------------------------------------- atomic writes and locks


def test_a_busy_output_names_the_lock_file_it_waits_for(tmp_path):
    """OutputBusy: "another pinnlab run is writing OUT (it holds LOCK); wait for it or
    choose another output", LOCK the hidden ``.NAME.lock`` beside the output, there while
    the other run holds it."""
    output = tmp_path / "run.h5"
    lock = tmp_path / ".run.h5.lock"
    with output_lock(output):
        assert lock.exists()
        with pytest.raises(OutputBusy) as busy:
            with output_lock(output):
                pass
    assert str(busy.value) == (f"another pinnlab run is writing {str(output)!r} (it holds {str(lock)!r}); "
                               "wait for it or choose another output")


def test_check_writable_directory_checks_the_directory_not_the_name(tmp_path):
    """check_writable_directory: raises "if ``target``'s directory is missing, not a
    directory or not writable. The name itself is not checked": a 300-byte name that
    cannot be created passes; a missing directory and a file as directory do not."""
    import inspect

    assert "The name itself is not checked" in " ".join(inspect.getdoc(check_writable_directory).split())
    target = tmp_path / ("a" * 300 + ".h5")
    with pytest.raises(OSError):
        target.write_bytes(b"")
    check_writable_directory(target)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_writable_directory(tmp_path / "missing" / "run.h5")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        check_writable_directory(tmp_path / "file" / "run.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # (no probe left behind)


def test_write_strict_json_keeps_the_old_file_when_a_write_fails_midway(tmp_path, monkeypatch):
    """write_strict_json writes "atomically": a write that fails half-way (a full disk)
    leaves the previous file as it was and no temporary file."""
    path = tmp_path / "summary.json"
    path.write_text('{"old": 1}')

    def half_then_fail(self, text, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(text[: len(text) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_strict_json(path, {"rel_l2": 0.5, "steps": [1, 2, 3]})
    assert path.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ----------------------------------------------------------------------------- checkpoints


def _refused_untouched(path, **kwargs):
    """read_checkpoint(path) raises a CheckpointError naming it; the file is as it was."""
    before, stat = path.read_bytes(), path.stat()
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(path, **kwargs)
    assert repr(str(path)) in str(refused.value)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stat.st_mtime_ns
    return str(refused.value)


def test_a_refused_checkpoint_is_left_as_it_was(tmp_path):
    """checkpoint module: a missing, truncated, damaged or hand-edited checkpoint is a
    CheckpointError naming the file, "and never touches the file"."""
    path = tmp_path / "run.h5.ckpt"
    write_checkpoint_file(path, {"metadata": {"config": "a"}, "step": 2, "w": torch.arange(4.0)})
    assert "belongs to another run" in _refused_untouched(path, metadata={"config": "b"})
    assert "does not fit this run" in _refused_untouched(path, history={"value": []})
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert "corrupted or unreadable" in _refused_untouched(path)
    torch.save([1, 2, 3], path)
    assert "unknown format" in _refused_untouched(path)


def test_config_difference_is_empty_without_a_recorded_config_or_a_comparable_difference():
    """config_difference: ``""`` "when the checkpoint recorded none (written before it was
    kept) or nothing differs in the comparable settings" (run-only settings are not)."""
    saved = comparable_config({"trainer": {"lr": 0.5, "log_every": 1}})
    assert config_difference(None, "trainer: {lr: 0.5}\n") == ""
    assert config_difference(saved, "trainer: {lr: 0.5, log_every: 7, checkpoint_every: 3}\n") == ""
    assert config_difference(saved, "trainer: {lr: 0.25, log_every: 7}\n") == \
        " (trainer.lr: 0.5 in the checkpoint, 0.25 in this run)"


def test_a_config_refusal_without_a_recorded_config_says_another_config_or_overrides(tmp_path):
    """check_config refuses a checkpoint of another config; without a recorded config (an
    older checkpoint) the refusal cannot name the setting and says so in general words."""
    path = tmp_path / "run.ckpt"
    with pytest.raises(CheckpointError) as refused:
        check_config(path, {"format": 1, "config_hash": "0" * 64}, "trainer: {lr: 0.5}\n")
    assert str(refused.value) == (f"checkpoint {str(path)!r} was written for a different configuration "
                                  "(another config or other overrides)")
    with pytest.raises(CheckpointError, match=r"configuration \(trainer\.lr: 0\.25 in the checkpoint, 0\.5 in"):
        check_config(path, {"format": 1, "config_hash": "0" * 64, "config": "trainer:\n  lr: 0.25\n"},
                     "trainer: {lr: 0.5}\n")


# ----------------------------------------------------------------------------- result files


def _solve_result(equation, x, prediction):
    """The parts of a finished run write_solve_result reads."""
    exact = equation.exact(x)
    final = SimpleNamespace(prediction=prediction if prediction is not None else exact + 0.5,
                            rel_l2=0.5, rel_l1=0.5, max_err=0.5)
    result = SimpleNamespace(test_inputs=x, test_exact=exact, final=final, best_rel_l2=0.5, stats={},
                             history=History(), status="ok", message="", params={"w": torch.ones(2, dtype=F64)})
    config = SimpleNamespace(to_yaml=lambda: "config", input_digests=dict, trainer=SimpleNamespace(seed=0),
                             loss=SimpleNamespace(kind="biased"))
    return config, result


def test_a_unit_ball_result_holds_the_schemas_groups_and_its_slice_no_points(tmp_path):
    """The schema of a solve file on the unit ball: /history, /trace, /final, /eval (with
    x and radius), /slices/main (grids and values; "``grid``, the points, is not
    written"), /radial and /params; a slice planned by plan_slice says nothing of how it
    was evaluated (its ``evaluation`` is empty) and is recorded as the network's own."""
    equation = PoissonTwoBody(3, seed=1)
    x = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.1, 0.0], [-0.2, 0.0, 0.4]], dtype=F64)
    config, result = _solve_result(equation, x, None)
    grid = plan_slice(equation, x, points=3)
    assert grid.evaluation == {}
    values = torch.arange(9, dtype=F64)
    slice_data = (grid, grid.grid_a, grid.grid_b, grid.dims, grid.labels, grid.inside, values, values + 1)
    write_solve_result(tmp_path / "run.h5", config=config, problem=SimpleNamespace(equation=equation),
                       result=result, slice_data=slice_data)
    with h5py.File(tmp_path / "run.h5", "r") as fh:
        assert set(fh) == {"history", "trace", "final", "eval", "slices", "radial", "params"}
        assert set(fh["eval"]) == {"u_pred", "u_true", "abs_err", "x", "radius"}
        assert set(fh["slices"]) == {"main"}
        assert set(fh["slices/main"]) == {"grid_a", "grid_b", "u_pred", "u_true", "abs_err", "point"}
        assert set(fh["radial"]) == {"r", "abs_err", "rel_err", "count"}
        assert fh["slices/main"].attrs["noise"] == "none"
        np.testing.assert_array_equal(fh["eval/radius"][...], torch.linalg.vector_norm(x, dim=1).numpy())


def test_a_slice_needs_two_input_columns():
    """plan_slice: "a slice is a plane of two input coordinates": points of one column are
    refused with a ValueError saying how many they have (not an IndexError)."""
    steady = SimpleNamespace(domain=None, time_dependent=False)
    with pytest.raises(ValueError, match=r"^a slice is a plane of two input coordinates; this equation's points "
                                         r"have 1$"):
        plan_slice(steady, torch.zeros(5, 1, dtype=F64))


def test_the_test_inputs_are_stored_up_to_ten_million_values():
    """Schema: "/eval/x only when d × test points ≤ 10⁷ values"."""
    assert MAX_STORED_INPUTS == 10**7


def test_a_time_dependent_runs_inputs_count_the_time_column(tmp_path, monkeypatch):
    """The schema: /eval/x "only when inputs × test points ≤ 10⁷ values (inputs: d, or
    d + 1 with time)". d = 2 and time, 3 test points: 9 values; a limit of 9 keeps
    /eval/x, one of 8 (still above d × test points = 6) leaves it out."""
    assert "only when inputs × test points ≤ 10⁷ values (inputs: d, or d + 1 with time)" in " ".join(
        results_module.__doc__.split())
    equation = SimpleNamespace(seed=0, name="demo", dim=2, domain=None, time_dependent=True, input_dim=3,
                               exact=lambda x: x.sum(1))
    x = torch.tensor([[0.1, 0.2, 0.5], [0.3, -0.1, 0.25], [0.0, 0.4, 0.75]], dtype=F64)
    config, result = _solve_result(equation, x, x.sum(1) + 0.5)
    for limit, kept in ((9, True), (8, False)):
        monkeypatch.setattr(results_module, "MAX_STORED_INPUTS", limit)
        path = tmp_path / f"run{limit}.h5"
        write_solve_result(path, config=config, problem=SimpleNamespace(equation=equation), result=result)
        with h5py.File(path, "r") as fh:
            assert fh.attrs["dim"] == 2
            assert ("x" in fh["eval"]) is kept


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_installed_copy_inside_another_repository_records_no_commit_of_it(tmp_path):
    """_git_hash: "" "for a copy that is no tracked file of the repository around it". A
    pinnlab installed in a project's (ignored) virtual environment is in no pinnlab
    checkout (``git rev-parse`` run from its directory answers with the project's commit);
    a tracked copy in that repository gets its commit, ``-dirty`` once it is changed."""
    def git(*args):
        return subprocess.run(["git", "-c", "user.email=a@b.c", "-c", "user.name=a", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / ".gitignore").write_text(".venv/\n")
    (tmp_path / "app.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "the user's project")
    installed = tmp_path / ".venv" / "lib" / "site-packages" / "pinnlab" / "io"
    installed.mkdir(parents=True)
    (installed / "results.py").write_text("# an installed copy\n")
    assert git("status", "--porcelain") == ""  # (the copy is no file of the project)
    assert _git_hash(installed) == ""
    tracked = tmp_path / "vendored" / "pinnlab" / "io"
    tracked.mkdir(parents=True)
    (tracked / "results.py").write_text("# a vendored copy\n")
    git("add", ".")
    git("commit", "-q", "-m", "vendor it")
    head = git("rev-parse", "HEAD")
    assert _git_hash(tracked) == head
    (tracked / "results.py").write_text("# changed\n")
    assert _git_hash(tracked) == head + "-dirty"


# ----------------------------------------------------------------------------- study figures


def test_a_loss_curve_without_a_positive_value_keeps_a_linear_axis(tmp_path, figures):
    """_scale_loss_axis: "Without any positive value it stays linear" (no log, no symlog,
    and the axis label names no scale)."""
    ax = _loss_axis(tmp_path, figures, -np.linspace(2.0, 1.0, 200))
    assert ax.get_yscale() == "linear"
    assert ax.get_ylabel() == "training loss (moving average of 4 steps)"


def test_a_symlog_loss_axis_is_linear_below_the_power_of_ten_under_the_smallest_positive_value(tmp_path, figures):
    """Smallest positive value 0.37 (a curve through 0): "linear below the power of 10 at or
    below the smallest positive value (0.1 for 0.37 ...)"."""
    import inspect

    assert "linear below the power of 10 at or below the smallest positive value (0.1 for 0.37" in " ".join(
        inspect.getdoc(study_plots._scale_loss_axis).split())
    loss = np.concatenate([np.linspace(30.0, 0.37, 50), [-0.5, 0.0], np.linspace(0.4, 2.0, 48)])
    ax = _loss_axis(tmp_path, figures, loss)
    assert ax.get_yscale() == "symlog"
    assert ax.yaxis.get_transform().linthresh == pytest.approx(0.1)


def test_the_loss_estimate_panels_say_two_standard_errors_and_what_hollow_means(tmp_path, figures):
    """The loss figure's axes: "variance (±2 SE)" with bars of 2 SE above each variance,
    and "|E L̂ − L| (±2 SE; hollow: within 2 SE of 0)": the point whose bias is 1 SE from
    0 is hollow, the others filled, every bar 2 SE."""
    records = [_record("loss", k) for k in (4, 8, 16, 32)]
    records[2]["bias_se"] = 3.0 / 16  # |bias| = 3/16: 1 SE from 0
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    ax_var, ax_bias = figures["estimator_loss.png"].axes[:2]
    assert ax_var.get_ylabel() == "variance (±2 SE)"
    ks = np.array([4.0, 8.0, 16.0, 32.0])
    se = np.array([r["variance_se"] for r in records])
    assert _bars(ax_var.containers[0])[3] == pytest.approx(2 * se)
    assert ax_bias.get_ylabel() == "|E L̂ − L| (±2 SE; hollow: within 2 SE of 0)"
    (container,) = ax_bias.containers
    _, y, low, high = _bars(container)
    bias_se = np.array([r["bias_se"] for r in records])
    assert y == pytest.approx(3.0 / ks) and low == pytest.approx(2 * bias_se) and high == pytest.approx(2 * bias_se)
    (filled,) = [m for m in _markers(ax_bias, container) if m[2]]
    assert filled[0] == [4, 8, 32]


def test_a_series_without_a_bias_fit_says_which_rule_it_missed(tmp_path, figures):
    """The bias legends name the rule a series missed (the slopes of fit_slopes): the
    loss's "no fit: not 2 SE from 0, with one sign, at every K", the gradient's bias² "no
    fit: not 2 SE above 0 at every K"; neither panel then draws a fitted (dashed) line."""
    records = [_record("loss", k) for k in (4, 8, 16, 32)]
    records[2]["bias_se"] = 3.0 / 16  # 1 SE from 0 at K = 16
    study_plots.plot_estimator_study(_records_file(tmp_path / "loss.h5", records), tmp_path)
    ax = figures["estimator_loss.png"].axes[1]
    assert ax.get_legend_handles_labels()[1] == [
        "biased, independent, d=5, σ=0.05 (no fit: not 2 SE from 0, with one sign, at every K)"]
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    _estimator_file(tmp_path / "est.h5")  # the gradient's bias² is not 2 SE above 0 at K = 16 and 32
    study_plots.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    ax = figures["estimator_gradient.png"].axes[1]
    assert ax.get_legend_handles_labels()[1] == [
        "biased, independent, d=5, σ=0.05 (no fit: not 2 SE above 0 at every K)"]
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
