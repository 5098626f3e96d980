"""Second mutation audit of the plotting package and ``pinnlab plot``: the data, scales,
labels and colours of the figures the first audit's tests left unchecked, the PNGs as
written (resolution, size), which figures each kind of result gets and in what order,
and refusals of files that are no result or lack a group (one line, exit code 2, nothing
touched)."""

from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from pinnlab.cli import main
from pinnlab.plots import solve as solve_plots
from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots
from tests.studies.test_study_plot_data import (
    _bars,
    _estimator_file,
    _markers,
    _record,
    _records_file,
    _training_file,
)
from tests.studies.test_study_plots_and_slopes import (
    _estimator_file as _estimator_grid_file,
)
from tests.test_solve_plot_data import _draw, _lines, _solve_file, _terms, _tune_file


def _line_file(path, *, x=(0.5, -0.25, 0.75, -1.0), err=None):
    """A steady result of one coordinate: no slice, /eval/x of one column."""
    _solve_file(path, loss=np.ones(30))
    x = np.asarray(x, dtype=float).reshape(-1, 1) if np.ndim(x) == 1 else np.asarray(x, dtype=float)
    pred = np.arange(1.0, len(x) + 1.0)
    true = pred + 0.5
    with h5py.File(path, "a") as fh:
        del fh["slices"]
        fh["eval/x"], fh["eval/u_pred"], fh["eval/u_true"] = x, pred, true
        fh["eval/abs_err"] = np.abs(pred - true) if err is None else np.asarray(err, dtype=float)
    return path


# ----------------------------------------------------------------------------- curves.png


@pytest.mark.parametrize(("steps", "per_step_colour"), [(200, "0.75"), (30, "C0")])
def test_the_loss_curve_colours_and_the_error_colours(tmp_path, figures, steps, per_step_colour):
    """With a moving average the per-step loss is the grey background (0.75) and the
    average is C0; without one (< 100 steps) the per-step loss is the C0 curve. The
    relative L2 error is C3 and the relative L1 error C2."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.geomspace(1, 0.1, steps)), tmp_path)
    ax_loss, ax_err = figures["curves.png"].axes[:2]
    lines = ax_loss.get_lines()
    assert to_rgba(lines[0].get_color()) == to_rgba(per_step_colour)
    if steps >= 100:
        assert to_rgba(lines[1].get_color()) == to_rgba("C0")
    errors = _lines(ax_err)
    assert to_rgba(errors["relative L2"].get_color()) == to_rgba("C3")
    assert to_rgba(errors["relative L1"].get_color()) == to_rgba("C2")


@pytest.mark.parametrize(("backend", "model"), [("pinnlab", "smoothed model"), ("deepxde", "DeepXDE network")])
def test_the_error_axis_names_the_model_its_errors_are_of(tmp_path, figures, backend, model):
    """pinnlab's trainer measures the smoothed model, DeepXDE its own network."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), config=f"trainer: {{backend: {backend}}}\n")
    _draw(solve_plots.plot_curves, path, tmp_path)
    ax_loss, ax_err = figures["curves.png"].axes[:2]
    assert ax_err.get_ylabel() == f"test error of u ({model})"
    assert (ax_loss.get_xlabel(), ax_err.get_xlabel(), ax_err.get_title()) == ("step", "step", "test error")


def test_a_loss_without_a_finite_value_says_so_on_its_panel(tmp_path, figures):
    """A run whose every step's loss is NaN: the loss panel says "no finite values" (the
    error panel, with finite errors, does not)."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=[np.nan] * 30), tmp_path)
    ax_loss, ax_err = figures["curves.png"].axes[:2]
    assert [t.get_text() for t in ax_loss.texts] == ["no finite values"]
    assert list(ax_err.texts) == []


def test_both_curve_panels_have_a_legend_of_what_they_draw(tmp_path, figures):
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.geomspace(1, 0.1, 200)), tmp_path)
    ax_loss, ax_err = figures["curves.png"].axes[:2]
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["loss per step",
                                                                         "moving average (4 steps)"]
    assert [t.get_text() for t in ax_err.get_legend().get_texts()] == ["relative L2", "relative L1"]


def test_the_moving_average_window_is_the_whole_fiftieth_of_the_steps(tmp_path, figures):
    """149 steps: 149 // 50 = 2 steps (not 149 / 50 rounded, 3)."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.geomspace(1, 0.1, 149)), tmp_path)
    assert _lines(figures["curves.png"].axes[0])["moving average (2 steps)"] is not None


# ----------------------------------------------------------------------------- slice.png


def test_a_slice_rule_this_version_does_not_know_is_named_as_recorded(tmp_path, figures):
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh["slices/main"].attrs["others"] = "the training-set mean"
    _draw(solve_plots.plot_slice, path, tmp_path)
    assert figures["slice.png"].get_suptitle().endswith(
        "slice over (x₁, t), the other 5 coordinates at the training-set mean")


def test_the_slice_error_has_its_own_colour_map_and_every_panel_a_colour_bar(tmp_path, figures):
    """u and u* in viridis, |u − u*| in magma; each image has its colour bar, with the
    image's own limits."""
    _draw(solve_plots.plot_slice, _solve_file(tmp_path / "r.h5", loss=np.ones(30)), tmp_path)
    fig = figures["slice.png"]
    images = [ax.get_images()[0] for ax in fig.axes[:3]]
    assert [image.get_cmap().name for image in images] == ["viridis", "viridis", "magma"]
    assert [ax.get_title() for ax in fig.axes[:3]] == ["prediction u", "exact u*", "|u − u*|"]
    assert len(fig.axes) == 6
    for image in images:
        assert image.colorbar is not None and image.colorbar.mappable is image


# ----------------------------------------------------------------------------- line.png


def test_the_line_figure_has_its_axes_labelled_and_the_error_on_a_log_axis(tmp_path, figures):
    _draw(solve_plots.plot_line, _line_file(tmp_path / "l.h5"), tmp_path)
    fig = figures["line.png"]
    ax_u, ax_err = fig.axes[:2]
    assert ax_err.get_yscale() == "log" and ax_u.get_yscale() == "linear"
    assert (ax_u.get_xlabel(), ax_u.get_ylabel()) == ("x₁", "u")
    assert (ax_err.get_xlabel(), ax_err.get_ylabel()) == ("x₁", "|u − u*|")
    assert [t.get_text() for t in ax_u.get_legend().get_texts()] == ["exact u*", "prediction u"]
    assert fig.get_suptitle() == "demo, d = 6, loss = biased, final rel. L2 = 1.25e-01\nat the 4 test points"
    assert list(ax_err.texts) == []


def test_a_line_figure_without_a_finite_error_says_so(tmp_path, figures):
    _draw(solve_plots.plot_line, _line_file(tmp_path / "l.h5", err=[np.nan] * 4), tmp_path)
    assert [t.get_text() for t in figures["line.png"].axes[1].texts] == ["no finite values"]


def test_test_points_not_in_a_column_get_no_line_figure(tmp_path):
    """/eval/x as a flat array of one point is not the (n, 1) array of a one-coordinate
    equation: no line figure (and no failure)."""
    path = _line_file(tmp_path / "l.h5", x=[[0.5]])
    with h5py.File(path, "a") as fh:
        del fh["eval/x"]
        fh["eval/x"] = np.array([0.5])
    with h5py.File(path, "r") as fh:
        assert solve_plots.plot_line(fh, tmp_path) is None


# ----------------------------------------------------------------------------- radial.png


def test_the_radial_figure_is_titled_by_the_run_and_labelled_by_the_radius(tmp_path, figures):
    radial = {"r": [0.1, 0.5], "count": [3, 4], "abs_err": [1e-2, 2e-2], "rel_err": [0.1, 0.2]}
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "r.h5", loss=np.ones(30), radial=radial), tmp_path)
    ax = figures["radial.png"].axes[0]
    assert ax.get_title() == "demo, d = 6, loss = biased, final rel. L2 = 1.25e-01"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ("radius ‖x‖", "error", "log")


# ----------------------------------------------------------------------------- terms.png


def test_term_losses_are_drawn_as_absolute_values_on_a_log_axis(tmp_path, figures):
    """Each term's |loss| at the history steps, on a log axis; a term that is negative at
    one row says "1 row" (not "1 rows"); the title says absolute values whichever term went
    below 0 (here the first in the legend, not the last)."""
    terms = {"loss_boundary": [0.1, -0.2, 0.3], "loss_residual": [0.5, 0.25, 0.125],
             "weight_boundary": [1.0, 1.0, 1.0], "weight_residual": [1.0, 1.0, 1.0]}
    _draw(solve_plots.plot_terms, _solve_file(tmp_path / "r.h5", loss=np.ones(30), terms=terms), tmp_path)
    ax_loss, ax_weight = figures["terms.png"].axes[:2]
    lines = _lines(ax_loss)
    assert ax_loss.get_yscale() == "log"
    np.testing.assert_array_equal(lines["boundary"].get_ydata(), [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(lines["residual"].get_ydata(), [0.5, 0.25, 0.125])
    np.testing.assert_array_equal(lines["boundary < 0 (1 row), drawn as |loss|"].get_xdata(), [20])
    assert ax_loss.get_title() == "loss terms, unweighted (absolute values)"
    assert (ax_loss.get_ylabel(), ax_weight.get_ylabel()) == ("term loss at the row's step", "weight λ")


def test_positive_term_losses_are_not_called_absolute_values(tmp_path, figures):
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), terms=_terms([1.0, 2.0, 4.0]),
                       config="loss: {weighting: none}\n")
    _draw(solve_plots.plot_terms, path, tmp_path)
    ax_loss, ax_weight = figures["terms.png"].axes[:2]
    assert ax_loss.get_title() == "loss terms, unweighted"
    assert ax_weight.get_title() == "weights (fixed)"
    assert set(_lines(ax_loss)) == set(_lines(ax_weight)) == {"boundary", "residual"}


# ----------------------------------------------------------------------------- tune.png


@pytest.mark.parametrize(("method", "xlabel", "best"), [("optuna", "trial", True), ("random", "trial", True),
                                                        ("fg2u", "outer step", False)])
def test_a_search_is_drawn_against_trials_with_its_best_so_far(tmp_path, figures, method, xlabel, best):
    """optuna, like random search, runs trials: both axes say so and the best value so far
    is drawn; a gradient method has outer steps and no "best so far"."""
    path = _tune_file(tmp_path / "t.h5", method=method, phi={"weights.boundary": [1.0, 2.0, 4.0]},
                      value=[2.0, 3.0, 1.0])
    tune_plots.plot_tune(path, tmp_path)
    ax_phi, ax_obj = figures["tune.png"].axes[:2]
    assert (ax_phi.get_xlabel(), ax_obj.get_xlabel()) == (xlabel, xlabel)
    lines = _lines(ax_obj)
    assert ("best so far" in lines) == best
    if best:
        np.testing.assert_array_equal(lines["best so far"].get_ydata(), [2.0, 2.0, 1.0])
    assert ax_obj.get_ylabel() == "outer objective (data)"


def test_many_phi_lines_put_the_legend_beside_the_axes_in_columns_of_16(tmp_path, figures):
    """More than six lines: the legend goes beside the φ axes, one column per 16 entries;
    up to six it stays inside."""
    mu = np.arange(3 * 12).reshape(3, 12) / 10.0 + 0.1
    phi = {"coefficients.mu": mu, **{f"coefficients.c{i}": [1.0, 2.0, 3.0] for i in range(5)}}
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi=phi), tmp_path)  # 17 lines
    legend = figures["tune.png"].axes[0].get_legend()
    assert len(legend.get_texts()) == 17 and legend._ncols == 2
    assert legend.get_bbox_to_anchor() is not figures["tune.png"].axes[0].bbox
    tune_plots.plot_tune(_tune_file(tmp_path / "s.h5", phi={"coefficients.mu": mu[:, :6]}), tmp_path)
    legend = figures["tune.png"].axes[0].get_legend()
    assert len(legend.get_texts()) == 6 and legend._ncols == 1
    assert legend.get_bbox_to_anchor() is figures["tune.png"].axes[0].bbox


def test_a_tune_file_gets_its_final_solve_figures_too(tmp_path, figures):
    """tune.png, then the final solve's curves and slice."""
    written = tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]}),
                                   tmp_path / "figs")
    assert [p.name for p in written] == ["tune.png", "curves.png", "slice.png"]


def test_outer_steps_and_trials_are_ticked_at_whole_numbers(tmp_path, figures):
    """Three outer steps: ticks 1, 2, 3 on both axes, not 1.0, 1.25, 1.5, ..."""
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]}), tmp_path)
    for ax in figures["tune.png"].axes[:2]:
        ax.set_xlim(0.9, 3.1)
        ticks = [t for t in ax.get_xticks() if 0.9 <= t <= 3.1]
        assert ticks == [1, 2, 3], ticks


def test_phi0_is_drawn_only_when_every_entry_has_one(tmp_path, figures):
    """A file whose /tune/initial holds φ₀ of one entry but not of another (written
    before φ₀ was kept of every entry): no line starts at outer step 0."""
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0], "weights.initial": [3.0, 2.0, 1.0]})
    with h5py.File(path, "a") as fh:
        fh["tune/initial/weights.boundary"] = 0.5
    tune_plots.plot_tune(path, tmp_path)
    for line in _lines(figures["tune.png"].axes[0]).values():
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])


def test_up_to_ten_phi_lines_take_the_default_colour_cycle_and_more_take_tab20(tmp_path, figures):
    """Ten lines are C0 … C9 (the colours of every other figure); from eleven on, tab20."""
    from matplotlib import colormaps

    for count, expected in ((10, [to_rgba(f"C{i}") for i in range(10)]),
                            (11, [colormaps["tab20"](i) for i in range(11)])):
        phi = {f"coefficients.c{i:02d}": [1.0, 2.0, 3.0] for i in range(count)}
        tune_plots.plot_tune(_tune_file(tmp_path / f"t{count}.h5", phi=phi), tmp_path)
        lines = _lines(figures["tune.png"].axes[0])
        assert [to_rgba(lines[name].get_color()) for name in phi] == expected


# ----------------------------------------------------------------------------- the PNGs as written


def _png(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size, image.info.get("dpi")


def test_solve_figures_are_written_at_120_dpi(tmp_path, capsys):
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "solve"
    assert main(["plot", str(path), "-o", str(tmp_path / "figs")]) == 0
    for name in ("curves.png", "slice.png"):
        assert _png(tmp_path / "figs" / name)[1] == pytest.approx((120, 120), abs=0.05), name


def test_study_figures_keep_their_figure_size_the_legend_row_growing_with_the_series(tmp_path, capsys):
    """Study figures are saved whole (no tight bounding box, which cut their legend row):
    12 inches wide and 4.6 + 0.16 per series + 0.3 inches high at 120 dpi for the
    estimator study (4 series here), 7 × 4.6 inches for the training study's errors."""
    _estimator_grid_file(tmp_path / "est.h5")
    assert main(["plot", str(tmp_path / "est.h5"), "-o", str(tmp_path / "est")]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "est" / f"estimator_{q}.png")
                                                    for q in ("loss", "gradient")]
    for quantity in ("loss", "gradient"):
        (width, height), dpi = _png(tmp_path / "est" / f"estimator_{quantity}.png")
        assert dpi == pytest.approx((120, 120), abs=0.05)
        assert width == 12 * 120 and abs(height - (4.6 + 0.16 * 4 + 0.3) * 120) <= 1
    flat = np.ones(10)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, flat, 0 * flat)], [("a", 4.0, 0.1, 0.0)])
    assert main(["plot", str(tmp_path / "t.h5"), "-o", str(tmp_path / "t")]) == 0
    assert _png(tmp_path / "t" / "training_error_vs_dim.png")[0] == (7 * 120, round(4.6 * 120))
    assert _png(tmp_path / "t" / "training_loss_curves.png")[0] == (6 * 120, round(4.4 * 120))


# ----------------------------------------------------------------------------- pinnlab plot


def _result(path, kind="solve", **kwargs):
    _solve_file(path, loss=np.ones(30), **kwargs)
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = kind
    return path


def test_plot_writes_beside_the_file_by_default_and_lists_the_figures_in_drawing_order(tmp_path, capsys):
    """Without -o the figures go to FILE_plots (run.h5_plots); a result with
    loss terms, a slice and a radial profile gets curves, terms, slice and radial, in that
    order on stdout."""
    radial = {"r": [0.1, 0.5], "count": [3, 4], "abs_err": [1e-2, 2e-2], "rel_err": [0.1, 0.2]}
    path = _result(tmp_path / "run.h5", terms=_terms([1.0, 2.0, 4.0]), radial=radial)
    assert main(["plot", str(path)]) == 0
    names = ["curves.png", "terms.png", "slice.png", "radial.png"]
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "run.h5_plots" / name) for name in names]
    assert sorted(p.name for p in (tmp_path / "run.h5_plots").iterdir()) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5", "run.h5_plots"]


def test_a_one_coordinate_result_gets_the_line_figure_in_place_of_the_slice(tmp_path, capsys):
    path = _line_file(tmp_path / "line.h5")
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "solve"
    assert main(["plot", str(path), "-o", str(tmp_path / "figs")]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "figs" / n) for n in ("curves.png", "line.png")]


def _no_result(path, what):
    """``path`` (or a .ckpt beside it) made into a file that is no pinnlab result."""
    if what == "unknown kind":
        return _result(path, kind="bogus")
    if what == "zip, not .ckpt":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data.pkl", b"not a result")
        return path
    if what == ".ckpt, not zip":
        path = path.with_name("run.ckpt")
    path.write_bytes(b"garbage" if what == ".ckpt, not zip" else b"")
    return path


@pytest.mark.parametrize(("what", "says"), [
    ("unknown kind", "cannot plot: '{path}': unknown result kind 'bogus'"),
    ("zip, not .ckpt", "cannot plot: '{path}' is not an HDF5 file ("),
    (".ckpt, not zip", "cannot plot: '{path}' is not an HDF5 file ("),
    ("empty", "cannot plot: '{path}' is not an HDF5 file ("),
])
def test_a_file_that_is_no_result_is_refused_by_what_it_is(tmp_path, capsys, what, says):
    """A result kind pinnlab does not know is not "damaged or written by another version";
    a zip that is not a .ckpt is no checkpoint; a .ckpt that is no zip is not one either.
    One line, exit code 2, no plot directory made."""
    path = _no_result(tmp_path / "run.h5", what)
    assert main(["plot", str(path), "-o", str(tmp_path / "figs")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("pinnlab: error: " + says.format(path=path)), err
    assert not (tmp_path / "figs").exists()


def _drop(path, group):
    with h5py.File(path, "a") as fh:
        del fh[group]
    return path


def _study(path, kind):
    if kind == "estimator_study":
        _estimator_grid_file(path, ks=(4, 8))
    else:
        flat = np.ones(10)
        _training_file(path, [("a", 4.0, 0.1, flat, 0 * flat)], [("a", 4.0, 0.1, 0.0)])
    return path


@pytest.mark.parametrize(("make", "group"), [
    (lambda p: _drop(_result(p), "trace"), "trace"),
    (lambda p: _drop(_result(p), "history"), "history"),
    (lambda p: _drop(_result(p), "final"), "final"),
    (lambda p: _result(p, kind="tune"), "tune"),  # a solve file called a tune result: no /tune
    (lambda p: _drop(_study(p, "estimator_study"), "records"), "records"),
    (lambda p: _drop(_study(p, "training_study"), "summary"), "summary"),
    (lambda p: _drop(_study(p, "training_study"), "cells"), "cells"),
])
def test_a_result_without_a_group_its_figures_read_is_one_line_and_touches_nothing(tmp_path, capsys, make, group):
    """Exit code 2, one line naming the file as damaged, the earlier figures in the plot
    directory as they were (no figure of the file replaced, none added, no staging
    directory left), a new plot directory not created, the file itself unchanged."""
    path = make(tmp_path / "run.h5")
    before = path.read_bytes()
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "curves.png").write_bytes(b"an earlier figure")
    for target in (figs, tmp_path / "new" / "figs"):
        assert main(["plot", str(path), "-o", str(target)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert captured.out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"pinnlab: error: cannot plot {str(path)!r}: the file is damaged or was written by "
                              "another pinnlab version ("), err
    assert [p.name for p in figs.iterdir()] == ["curves.png"]
    assert (figs / "curves.png").read_bytes() == b"an earlier figure"
    assert not (tmp_path / "new").exists()
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- estimator study


def test_the_variance_fit_is_the_weighted_line_with_a_two_se_band(tmp_path, figures):
    """Variances exactly 10/K: the dashed line is 10/K itself, and its band the lines of
    slope −1 ± 2 SE through the weighted means, SE = 1/√(Σ wᵢ (log Kᵢ − log K̂)²) with
    wᵢ = (varianceᵢ / SEᵢ)² (10² at every K but K = 8, whose SE is 6/K: (10/6)²)."""
    _estimator_file(tmp_path / "est.h5")
    study_plots.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    ax = figures["estimator_loss.png"].axes[0]
    (fit,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    x = np.asarray(fit.get_xdata())
    assert x[0] == pytest.approx(4.0) and x[-1] == pytest.approx(32.0) and len(x) == 50
    np.testing.assert_allclose(fit.get_ydata(), 10.0 / x, rtol=1e-12)
    lk = np.log([4.0, 8.0, 16.0, 32.0])
    w = np.array([100.0, (10.0 / 6.0) ** 2, 100.0, 100.0])
    centre = (w * lk).sum() / w.sum()
    se = 1.0 / np.sqrt((w * (lk - centre) ** 2).sum())
    (band,) = ax.collections[:1]
    vertices = band.get_paths()[0].vertices
    for k in (4.0, 32.0):
        at = vertices[np.isclose(vertices[:, 0], k, rtol=1e-12), 1]
        expected = [10.0 / k * np.exp(s * 2 * se * (np.log(k) - centre)) for s in (-1, 1)]
        assert (at.min(), at.max()) == pytest.approx((min(expected), max(expected)), rel=1e-9)


def test_every_quantity_of_an_estimator_study_gets_its_figure_titled_by_quantity_and_equation(tmp_path, figures):
    """A study of the residual too (the estimator of R itself) gets estimator_residual.png;
    each figure names the equation, each panel its quantity."""
    records = [_record(quantity, k) for k in (4, 8, 16, 32) for quantity in ("loss", "gradient", "residual")]
    _records_file(tmp_path / "est.h5", records, config="equation:\n  name: heat\n  dim: 5\n")
    written = study_plots.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    assert [p.name for p in written] == [f"estimator_{q}.png" for q in ("loss", "gradient", "residual")]
    for quantity in ("loss", "gradient", "residual"):
        fig = figures[f"estimator_{quantity}.png"]
        assert fig.get_suptitle() == (f"Estimator study, heat: {quantity} (dashed: log–log fit, band: ±2 SE of "
                                      "the slope)")
        ax_var, ax_bias = fig.axes[:2]
        assert ax_var.get_title() == f"{quantity}: variance of the estimate"
        assert ax_bias.get_title() == f"{quantity}: bias against the large-K reference"
        assert [t.get_text() for t in ax_var.get_xticklabels()] == ["4", "8", "16", "32"]
        assert list(ax_var.get_xticks()) == [4, 8, 16, 32]
    bias2 = figures["estimator_residual.png"].axes[1].containers[0].lines[0].get_ydata()
    assert list(bias2) == pytest.approx([1.0, 0.5])  # the residual's bias², 2 SE above 0 at K = 4 and 8


def test_a_loss_bias_within_two_se_at_one_k_is_hollow_there_only(tmp_path, figures):
    """At K = 16 the bias is 1 SE from 0: that point is hollow (no filled marker over its
    error bar), the others filled; no fit, and the legend says why."""
    records = [_record("loss", k) for k in (4, 8, 16, 32)]
    records[2]["bias_se"] = 3.0 / 16
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    ax = figures["estimator_loss.png"].axes[1]
    (container,) = ax.containers
    assert list(_bars(container)[0]) == [4, 8, 16, 32]
    (filled,) = [m for m in _markers(ax, container) if m[2]]
    assert filled[0] == [4, 8, 32] and filled[1] == pytest.approx([3.0 / 4, 3.0 / 8, 3.0 / 32])
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_a_bias2_below_zero_with_a_standard_error_of_zero_has_no_bound_to_draw(tmp_path, figures):
    """bias² = −1 with SE 0 (every replicate alike): its upper bound, 0, has no place on
    the log axis: no hollow marker and no arrow there (K = 16 keeps its bound 0.25)."""
    records = [_record("gradient", k) for k in (4, 8, 16, 32)]
    records[3]["bias2_se"] = 0.0
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    ax = figures["estimator_gradient.png"].axes[1]
    (hollow,) = [m for m in _markers(ax, ax.containers[0]) if not m[2]]
    assert hollow[0] == [16] and hollow[1] == pytest.approx([0.25])
    assert [a.xyann[0] for a in ax.texts if getattr(a, "arrow_patch", None) is not None] == [16]


def test_variances_without_standard_errors_get_bars_of_length_zero(tmp_path, figures):
    """A file without variance_se (written before it was kept): each variance is drawn
    with a bar of length 0 (its caps on the point), not a NaN bar that draws nothing."""
    records = [_record("loss", k) for k in (4, 8, 16, 32)]
    for record in records:
        del record["variance_se"]
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    x, y, low, high = _bars(figures["estimator_loss.png"].axes[0].containers[0])
    assert list(low) == list(high) == [0.0] * 4


# ----------------------------------------------------------------------------- training study


def test_a_loss_curve_through_zero_is_on_a_symlog_axis_linear_below_the_decade_of_its_smallest_value(
        tmp_path, figures):
    """Smallest positive value 0.37: linear below 10⁻¹; the axis label says symlog."""
    loss = np.concatenate([np.linspace(30.0, 0.37, 50), [-0.5, 0.0], np.linspace(0.4, 2.0, 48)])
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == pytest.approx(0.1)
    assert ax.get_ylabel() == "training loss (moving average of 2 steps; symlog)"


def test_the_error_axis_says_mean_and_std(tmp_path, figures):
    flat = np.ones(10)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, flat, 0 * flat)], [("a", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert (ax.get_ylabel(), ax.get_yscale(), ax.get_xlabel()) == ("final relative L2 (mean ± std)", "log",
                                                                   "equation.dim")


def test_a_variant_with_an_exact_solution_has_no_point_on_the_log_error_axis(tmp_path, figures):
    """A mean error of 0 has no place on the log axis: not drawn (the other column is)."""
    flat = np.ones(10)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.0, flat, 0 * flat), ("a", 8.0, 0.1, flat, 0 * flat)],
                   [("a", 4.0, 0.0, 0.0), ("a", 8.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    (bars,) = figures["training_error_vs_dim.png"].axes[0].containers
    assert list(bars.lines[0].get_xdata()) == [8.0] and list(bars.lines[0].get_ydata()) == [0.1]


def test_a_cell_file_whose_final_error_differs_in_the_last_digit_is_not_drawn(tmp_path, figures):
    """The recorded and the stored final error are the same number for the study's own
    cell: any difference, however small, is another run's cell."""
    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss), ("b", 4.0, 0.2, loss, 0 * loss)],
                   [("a", 4.0, 0.1, 0.0), ("b", 4.0, 0.2, 0.0)])
    with h5py.File(str(tmp_path / "t.h5") + ".cells/cell1.h5", "r+") as fh:
        fh["final"].attrs["rel_l2"] = np.nextafter(0.2, 1.0)
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    assert [line.get_label() for line in figures["training_loss_curves.png"].axes[0].lines] == ["a"]


def test_many_damaged_cell_files_are_named_three_and_counted(tmp_path, figures):
    loss = np.geomspace(10.0, 1.0, 20)
    variants = ["a", "b", "c", "d", "e"]
    _training_file(tmp_path / "t.h5", [(v, 4.0, 0.1, loss, 0 * loss) for v in variants],
                   [(v, 4.0, 0.1, 0.0) for v in variants])
    for i in range(1, 5):
        (tmp_path / "t.h5.cells" / f"cell{i}.h5").write_bytes(b"not HDF5")
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_loss_curves.png"]
    assert fig.get_supxlabel() == "not drawn: damaged cell files cell1.h5, cell2.h5, cell3.h5 and 1 more"
    assert [line.get_label() for line in fig.axes[0].lines] == ["a"]


def test_a_missing_cell_file_is_not_called_damaged(tmp_path, figures):
    """A cell file moved away is left out without a note (only unreadable ones are named)."""
    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss), ("b", 4.0, 0.1, loss, 0 * loss)],
                   [("a", 4.0, 0.1, 0.0), ("b", 4.0, 0.1, 0.0)])
    (tmp_path / "t.h5.cells" / "cell1.h5").unlink()
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_loss_curves.png"]
    assert fig.get_supxlabel() == ""
    assert [line.get_label() for line in fig.axes[0].lines] == ["a"]


def test_curves_of_different_lengths_in_one_panel_name_the_average_as_a_share_of_the_steps(tmp_path, figures):
    """200 and 100 steps: windows of 4 and 2 steps, the axis says "1/50 of the steps"."""
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, np.arange(1.0, 201.0), np.zeros(200)),
                                       ("b", 4.0, 0.1, np.arange(1.0, 101.0), np.zeros(100))],
                   [("a", 4.0, 0.1, 0.0), ("b", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    assert ax.get_ylabel() == "training loss (moving average of 1/50 of the steps)"


@pytest.mark.parametrize(("high", "locator"), [(9.0, "MaxNLocator"), (50.0, "LogLocator")])
def test_a_loss_curve_within_a_decade_gets_evenly_stepped_ticks_and_a_wider_one_log_ticks(
        tmp_path, figures, high, locator):
    """Under one decade (1 to 9) evenly stepped numbers; from one decade on (1 to 50) the
    powers of 10 with labelled minor ticks."""
    loss = np.geomspace(high, 1.0, 60)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    assert ax.get_yscale() == "log" and type(ax.yaxis.get_major_locator()).__name__ == locator


def test_the_switch_mark_has_its_variants_colour(tmp_path, figures):
    loss = np.geomspace(10.0, 1.0, 20)
    mix = (np.arange(20) >= 5).astype(float)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * mix), ("hybrid", 4.0, 0.1, loss, mix)],
                   [("a", 4.0, 0.1, 0.0), ("hybrid", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    (switch,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert to_rgba(switch.get_color()) == to_rgba("C1") and list(switch.get_xdata()) == [5.5, 5.5]


def test_a_result_whose_text_attributes_are_bytes_is_plotted_as_one_with_strings(tmp_path, figures):
    """Fixed-length byte strings (as other HDF5 writers store text) for the kind, the
    status and the slice rule read as the same text: a solve of status nonfinite whose
    other coordinates are at 0, a training study."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"], fh.attrs["status"] = np.bytes_(b"solve"), np.bytes_(b"nonfinite")
        fh["slices/main"].attrs["others"] = np.bytes_(b"zero")
    from pinnlab.plots import plot_file

    assert [p.name for p in plot_file(path, tmp_path)] == ["curves.png", "slice.png"]
    assert figures["curves.png"].get_suptitle().endswith("final rel. L2 = 1.25e-01 (status nonfinite)")
    assert figures["slice.png"].get_suptitle().endswith("the other 5 coordinates at 0")
    flat = np.ones(10)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, flat, 0 * flat)], [("a", 4.0, 0.1, 0.0)])
    with h5py.File(tmp_path / "t.h5", "a") as fh:
        fh.attrs["kind"] = np.bytes_(b"training_study")
    assert [p.name for p in plot_file(tmp_path / "t.h5", tmp_path)] == ["training_error_vs_dim.png",
                                                                         "training_loss_curves.png"]
    _estimator_file(tmp_path / "est.h5")
    with h5py.File(tmp_path / "est.h5", "a") as fh:
        fh.attrs["kind"] = np.bytes_(b"estimator_study")
    assert [p.name for p in plot_file(tmp_path / "est.h5", tmp_path)] == ["estimator_loss.png",
                                                                           "estimator_gradient.png"]


def test_a_tune_stopped_before_its_first_outer_step_is_plotted_from_phi0(tmp_path, figures):
    """What `pinnlab tune` wrote before the fix for μ ∈ R² when outer step 0 is already
    non-finite (JOINT_MU with tune.method=rgu, adam at outer lr 3e38 in float32): no outer
    step, φ₀ only, /tune/phi of shape (0,). Its plot shows φ₀ at outer step 0 and the
    final solve's figures (it was refused as damaged)."""
    from pinnlab.plots import plot_file

    path = _tune_file(tmp_path / "t.h5", phi={})
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "tune"
        tune = fh["tune"]
        tune.attrs["status"] = "nonfinite"
        for key in ("outer_step", "value"):
            del tune[key]
        tune["outer_step"], tune["value"] = np.zeros(0, dtype=np.int64), np.zeros(0)
        tune["phi/coefficients.mu"], tune["initial/coefficients.mu"] = np.zeros(0), [0.5, 0.25]
    assert [p.name for p in plot_file(path, tmp_path)] == ["tune.png", "curves.png", "slice.png"]
    lines = _lines(figures["tune.png"].axes[0])
    for i, value in enumerate((0.5, 0.25)):
        np.testing.assert_array_equal(lines[f"coefficients.mu[{i}]"].get_xdata(), [0])
        np.testing.assert_array_equal(lines[f"coefficients.mu[{i}]"].get_ydata(), [value])


def test_a_damaged_result_is_named_by_the_first_line_of_what_failed(tmp_path, capsys):
    """A config attribute that is not YAML: the message gives the error's type and the
    first line of its text (the parser's further lines, escaped into the one line, made
    it run on)."""
    import yaml

    path = _result(tmp_path / "run.h5")
    with h5py.File(path, "a") as fh:
        fh.attrs["config"] = "equation: {name: [unclosed"
    try:
        yaml.safe_load("equation: {name: [unclosed")
    except yaml.YAMLError as err:
        name, first = type(err).__name__, str(err).strip().splitlines()[0]
    assert main(["plot", str(path), "-o", str(tmp_path / "figs")]) == 2
    assert capsys.readouterr().err.strip() == (f"pinnlab: error: cannot plot {str(path)!r}: the file is damaged or was "
                                               f"written by another pinnlab version ({name}: {first})")


def test_plot_file_creates_a_missing_output_directory_with_its_parents(tmp_path):
    """A library caller's ``plot_file(result, outdir)`` into a directory that does not
    exist yet writes the figures there (it raised FileNotFoundError naming the first
    figure's hidden temporary file); the CLI always created it."""
    from pinnlab.plots import plot_file

    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "solve"
    outdir = tmp_path / "new" / "plots"
    written = plot_file(path, outdir)
    assert [p.name for p in written] == ["curves.png", "slice.png"]
    assert sorted(p.name for p in outdir.iterdir()) == ["curves.png", "slice.png"]
