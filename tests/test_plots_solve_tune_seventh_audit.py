"""Seventh mutation audit of the solve and tune figures (pinnlab.plots.solve, .tune): the
gaps a mutation pass found in the earlier tests. A config that is empty or has a section
set to null, a slice whose error image has the wrong shape, the moving average of a
curve exactly one window long, the marker sizes of lone points and the radial title's
size."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab.plots import solve as solve_plots
from pinnlab.plots import tune as tune_plots
from tests.test_solve_plot_data import _draw, _lines, _solve_file, _tune_file

# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("config", ["", "trainer: null\nloss: null\n"])
def test_an_empty_config_or_a_null_section_reads_as_the_defaults(tmp_path, figures, config):
    """An empty config (YAML None) or ``trainer:``/``loss:`` set to null: pinnlab's
    trainer and no weighting, as with the keys absent, not an AttributeError. Checked on
    the curves' title and error axis and on the terms' weight title."""
    terms = {"loss_boundary": [0.1, 0.2, 0.3], "loss_residual": [0.5, 0.25, 0.125],
             "weight_boundary": [1.0, 1.0, 1.0], "weight_residual": [2.0, 2.0, 2.0]}
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), config=config, terms=terms)
    _draw(solve_plots.plot_curves, path, tmp_path)
    fig = figures["curves.png"]
    assert fig.get_suptitle() == "demo, d = 6, loss = biased, final rel. L2 = 1.25e-01"
    assert fig.axes[1].get_ylabel() == "test error of u (smoothed model)"
    _draw(solve_plots.plot_terms, path, tmp_path)
    assert figures["terms.png"].axes[1].get_title() == "weights (fixed)"


# ----------------------------------------------------------------------------- slice.png


@pytest.mark.parametrize("name", ["u_true", "abs_err"])
def test_a_slice_image_of_the_wrong_shape_is_refused_by_its_name(tmp_path, name):
    """Not only u_pred: u* or the error stored transposed (5 × 3 on a 3 × 5 grid) is
    refused, naming that dataset and both shapes, in one line."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), grid_a=np.linspace(0, 1, 3),
                       grid_b=np.linspace(-2, 3, 5))
    with h5py.File(path, "a") as fh:
        values = fh[f"slices/main/{name}"][...]
        del fh[f"slices/main/{name}"]
        fh[f"slices/main/{name}"] = values.T
    with h5py.File(path, "r") as fh, pytest.raises(ValueError) as info:
        solve_plots.plot_slice(fh, tmp_path)
    assert str(info.value) == f"/slices/main/{name} has shape (5, 3), not that of its grid (3, 5)"


# ----------------------------------------------------------------------------- curves.png


def test_a_curve_exactly_one_window_long_gets_its_one_average():
    """Three values and a 3-step window: the first two points undefined, the third the
    mean (1 + 2 + 6) / 3 = 3; shorter than the window or a window of 1: unchanged."""
    values = np.array([1.0, 2.0, 6.0])
    np.testing.assert_array_equal(solve_plots._moving_average(values, 3), [np.nan, np.nan, 3.0])
    assert solve_plots._moving_average(values, 4) is values
    assert solve_plots._moving_average(values, 1) is values


def test_a_lone_per_step_loss_gets_a_larger_marker_than_a_lone_average_point(tmp_path, figures):
    """A one-step loss is marked at size 5 (it is the whole curve); a lone point of the
    moving average (steps 51 and 53 of a signed ±1 loss) at the default size 3, as are
    the marks of the 50 negative steps (small, not to hide the curve under them)."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "one.h5", loss=[464.3]), tmp_path)
    assert _lines(figures["curves.png"].axes[0])["loss per step"].get_markersize() == 5
    assert solve_plots._lone_points([1.0])["ms"] == 3
    loss = (-1.0) ** np.arange(100)
    loss[50], loss[51] = 3.0, -3.0
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss), tmp_path)
    lines = _lines(figures["curves.png"].axes[0])
    assert lines["|moving average| (2 steps)"].get_markersize() == 3
    assert lines["loss < 0 (50 steps), drawn as |loss|"].get_markersize() == 3


def test_both_curve_panels_grid_the_minor_decades_of_their_log_axes(tmp_path, figures):
    """The loss and the error spanning a decade or more are read off the log axes by the
    minor (2…9) grid lines as well as the major ones."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.geomspace(1, 1e-3, 200)), tmp_path)
    fig = figures["curves.png"]
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        assert ax.get_yscale() == "log"
        assert any(tick.gridline.get_visible() for tick in ax.yaxis.get_minor_ticks())


# ----------------------------------------------------------------------------- radial.png


def test_the_radial_title_is_set_smaller_in_its_narrower_figure(tmp_path, figures):
    """The radial figure is 7 inches wide (the others 11 or 15): the run's title over it
    is at size 9, not the default size."""
    radial = {"r": [0.1, 0.5], "count": [3, 4], "abs_err": [1e-2, 2e-2], "rel_err": [0.1, 0.2]}
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "r.h5", loss=np.ones(30), radial=radial), tmp_path)
    fig = figures["radial.png"]
    assert tuple(fig.get_size_inches()) == (7.0, 4.2)
    assert fig.axes[0].title.get_fontsize() == 9


# ----------------------------------------------------------------------------- tune.png


def test_a_search_whose_every_trial_diverged_draws_no_best_so_far(tmp_path, figures, monkeypatch):
    """Random search, every trial's objective NaN: there is no best value to draw, so no
    empty "best so far" entry in the legend (nor the objective's own: only the marks of the
    trials that diverged)."""
    monkeypatch.setattr(tune_plots, "plot_solve", lambda path, outdir: [])
    path = _tune_file(tmp_path / "t.h5", method="random", phi={"weights.boundary": [1.0, 2.0, 4.0]},
                      value=[np.nan] * 3)
    tune_plots.plot_tune(path, tmp_path)
    ax_obj = figures["tune.png"].axes[1]
    assert [t.get_text() for t in ax_obj.get_legend().get_texts()] == ["non-finite (diverged): 3 of 3 trials"]


def test_the_phi_datasets_are_keyed_by_their_whole_path_below_the_group(tmp_path):
    """A dataset two groups down is named by both (``a/b/c``), not by its parent alone; a
    dataset at the top by its name."""
    with h5py.File(tmp_path / "p.h5", "w") as fh:
        fh["phi/x"], fh["phi/a/b/c"], fh["phi/a/d"] = [1.0], [2.0], [3.0]
        arrays = tune_plots._arrays(fh["phi"])
    assert sorted(arrays) == ["a/b/c", "a/d", "x"]
    assert list(arrays["a/b/c"]) == [2.0]
