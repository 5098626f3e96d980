"""Sixth mutation audit of the solve and tune figures: the two-phase switch of tune.png
(where, on which panels, named how), the per-step loss colour at the smallest
moving-average window, the slice's pixels of a two-point grid, and the colours and
markers that tell the curves of a panel apart (error rows, negative steps, the switch,
the radial curves, u* and u of the line figure, the objective and its best so far, φ)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from pinnlab.plots import solve as solve_plots
from pinnlab.plots import tune as tune_plots
from tests.test_plots_second_audit import _line_file
from tests.test_solve_plot_data import _draw, _lines, _solve_file, _tune_file


@pytest.fixture
def tune_figures(figures, monkeypatch):
    """The saved figures of plot_tune, the final solve's own figures not drawn."""
    monkeypatch.setattr(tune_plots, "plot_solve", lambda path, outdir: [])
    return figures


# ----------------------------------------------------------------------------- curves.png


def test_the_smallest_moving_average_window_already_greys_the_per_step_loss(tmp_path, figures):
    """100 steps: a window of 2, so the per-step loss is the grey background (0.75) under
    the C0 average, as with any window above one step."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.geomspace(1, 0.1, 100)), tmp_path)
    per_step, average = figures["curves.png"].axes[0].get_lines()[:2]
    assert average.get_label() == "moving average (2 steps)"
    assert to_rgba(per_step.get_color()) == to_rgba("0.75")
    assert to_rgba(average.get_color()) == to_rgba("C0")


def test_each_history_row_is_a_marked_point_of_the_error_curves(tmp_path, figures):
    """The test errors are measured at a few history rows: each row is a marker on its
    curve (a history of one row would otherwise draw nothing)."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.ones(30)), tmp_path)
    lines = _lines(figures["curves.png"].axes[1])
    for label in ("relative L2", "relative L1"):
        assert (lines[label].get_linestyle(), lines[label].get_marker()) == ("-", "o")


def test_negative_steps_are_red_triangles_over_the_grey_and_blue_curves(tmp_path, figures):
    """The marks of the steps with a negative loss are C3 downward triangles, not a colour
    of the per-step loss (grey) or its moving average (C0) that they sit on."""
    loss = 0.5 * 0.95 ** np.arange(120)
    loss[10::7] *= -1
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss), tmp_path)
    marked = _lines(figures["curves.png"].axes[0])["loss < 0 (16 steps), drawn as |loss|"]
    assert to_rgba(marked.get_color()) == to_rgba("C3")
    assert (marked.get_marker(), marked.get_linestyle()) == ("v", "None")


def test_the_switch_is_a_black_dashed_line_on_both_curve_panels(tmp_path, figures):
    """The switch to the unbiased loss: black (k), dashed, in the loss and the error panel
    (grey is the per-step loss's colour)."""
    loss = np.linspace(2.0, 1.0, 8)
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss, mix=[0, 0, 0, 1, 1, 1, 1, 1]), tmp_path)
    for ax in figures["curves.png"].axes[:2]:
        (switch,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert to_rgba(switch.get_color()) == to_rgba("k")


# ----------------------------------------------------------------------------- slice.png


def test_a_slice_of_two_grid_points_gets_pixels_as_wide_as_their_spacing(tmp_path, figures):
    """Two points 2 apart (a in {0, 2}) are two pixels of width 2 centred on them, edges
    -1 and 3; only a single point gets the pixel of width 1. Along b (0, 0.5, 1) the
    spacing is 0.5."""
    assert solve_plots._pixel_edges(np.array([0.0, 2.0])) == (-1.0, 3.0)
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), grid_a=[0.0, 2.0], grid_b=[0.0, 0.5, 1.0])
    _draw(solve_plots.plot_slice, path, tmp_path)
    for ax in figures["slice.png"].axes[:3]:
        assert tuple(ax.get_images()[0].get_extent()) == (-0.25, 1.25, -1.0, 3.0)


# ----------------------------------------------------------------------------- radial.png


def test_the_two_radial_curves_have_their_own_markers(tmp_path, figures):
    """Mean |u − u*| with circles, the shell's relative L2 with squares: the curves stay
    apart where they cross, in print too."""
    radial = {"r": [0.1, 0.5], "count": [3, 4], "abs_err": [1e-2, 2e-2], "rel_err": [0.1, 0.2]}
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "r.h5", loss=np.ones(30), radial=radial), tmp_path)
    lines = _lines(figures["radial.png"].axes[0])
    assert lines["mean |u − u*|"].get_marker() == "o"
    assert lines["relative L2 in the shell"].get_marker() == "s"


# ----------------------------------------------------------------------------- line.png


def test_the_line_figure_draws_the_exact_solution_as_a_black_line_and_u_as_unjoined_c0_points(
        tmp_path, figures):
    """u* is the black line (no markers), u the C0 points (no line between them): the
    prediction stands out against the exact solution it is compared with."""
    _draw(solve_plots.plot_line, _line_file(tmp_path / "l.h5"), tmp_path)
    lines = _lines(figures["line.png"].axes[0])
    exact, predicted = lines["exact u*"], lines["prediction u"]
    assert to_rgba(exact.get_color()) == to_rgba("k")
    assert (exact.get_linestyle(), exact.get_marker()) == ("-", "None")
    assert to_rgba(predicted.get_color()) == to_rgba("C0")
    assert (predicted.get_linestyle(), predicted.get_marker()) == ("None", "o")


# ----------------------------------------------------------------------------- tune.png


def _two_phase(path, *, method="random", then="fg2u", after=2):
    path = _tune_file(path, method=method, phi={"weights.boundary": [1.0, 2.0, 4.0]})
    with h5py.File(path, "a") as fh:
        fh["tune"].attrs.update({"then_method": then, "then_after": after})
    return path


def _dashed(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_a_two_phase_schedule_is_marked_between_its_phases_on_both_panels(tmp_path, tune_figures):
    """random search for 2 outer steps, then fg2u: a grey dashed line at 2.5 (between
    outer steps 2 and 3, 1-based on the axis) on the φ and the objective panel, and the
    φ title names the phases in their order."""
    tune_plots.plot_tune(_two_phase(tmp_path / "t.h5"), tmp_path)
    ax_phi, ax_obj = tune_figures["tune.png"].axes[:2]
    for ax in (ax_phi, ax_obj):
        (switch,) = _dashed(ax)
        assert list(switch.get_xdata()) == [2.5, 2.5]
        assert to_rgba(switch.get_color()) == to_rgba("0.5")
    assert ax_phi.get_title() == "tuned hyperparameters (random → fg2u after 2 outer steps)"


def test_a_one_phase_schedule_has_no_switch_mark(tmp_path, tune_figures):
    """Without then_method: no dashed line on either panel, the title names the method."""
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]}), tmp_path)
    ax_phi, ax_obj = tune_figures["tune.png"].axes[:2]
    assert _dashed(ax_phi) == [] and _dashed(ax_obj) == []
    assert ax_phi.get_title() == "tuned hyperparameters (fg2u)"


def test_the_best_so_far_is_a_black_line_apart_from_the_red_objective_points(tmp_path, tune_figures):
    """A search: the objective is C3 with markers, its running best a black line without
    markers, so the two curves can be told apart where they coincide."""
    path = _tune_file(tmp_path / "t.h5", method="random", phi={"weights.boundary": [1.0, 2.0, 4.0]})
    tune_plots.plot_tune(path, tmp_path)
    lines = _lines(tune_figures["tune.png"].axes[1])
    assert to_rgba(lines["outer objective"].get_color()) == to_rgba("C3")
    assert lines["outer objective"].get_marker() == "o"
    assert to_rgba(lines["best so far"].get_color()) == to_rgba("k")
    assert (lines["best so far"].get_linestyle(), lines["best so far"].get_marker()) == ("-", "None")


def test_every_phi_value_is_marked_at_its_outer_step(tmp_path, tune_figures):
    """Each φ line carries a marker at every outer step (one outer step alone would
    otherwise be a legend entry with nothing drawn)."""
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0], "weights.initial": [3.0, 2.0, 1.0]})
    tune_plots.plot_tune(path, tmp_path)
    for line in _lines(tune_figures["tune.png"].axes[0]).values():
        assert line.get_marker() == "o" and line.get_linestyle() == "-"
