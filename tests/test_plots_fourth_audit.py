"""Fourth audit of the figures (pinnlab.plots): the gaps a mutation pass over
plots/__init__.py, solve.py and tune.py found in the earlier tests. Each test checks what
a figure draws (line data, axis scales, legend placement, titles, colours) against the
file's own numbers, or what ``pinnlab plot`` says of a file it cannot draw."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from matplotlib import colormaps

from pinnlab.plots import NotAResult, plot_file
from pinnlab.plots import solve as solve_plots
from pinnlab.plots import tune as tune_plots
from tests.test_plots_second_audit import _line_file
from tests.test_solve_plot_data import _draw, _lines, _solve_file, _tune_file

# ----------------------------------------------------------------------------- tune.png


def test_the_phi_axis_is_logarithmic_only_when_every_value_of_every_entry_is_positive(tmp_path, figures):
    """One entry positive throughout and one that is 0 at its first outer step: a linear
    axis (0 has no place on a log axis); both positive: log. Two lines keep their legend
    inside, at size 8 (seven go beside at size 7)."""
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0], "mix": [0.0, 0.5, 1.0]})
    tune_plots.plot_tune(path, tmp_path)
    assert figures["tune.png"].axes[0].get_yscale() == "linear"
    path = _tune_file(tmp_path / "p.h5", phi={"weights.boundary": [1.0, 2.0, 4.0], "mix": [0.25, 0.5, 1.0]})
    tune_plots.plot_tune(path, tmp_path)
    assert figures["tune.png"].axes[0].get_yscale() == "log"
    assert {t.get_fontsize() for t in figures["tune.png"].axes[0].get_legend().get_texts()} == {8}


def test_seven_phi_lines_already_put_the_legend_beside_the_axes(tmp_path, figures):
    """The legend moves beside the φ axes from the seventh line on (six stay inside)."""
    phi = {f"coefficients.c{i}": [1.0, 2.0, 3.0] for i in range(7)}
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi=phi), tmp_path)
    ax_phi = figures["tune.png"].axes[0]
    legend = ax_phi.get_legend()
    assert len(legend.get_texts()) == 7 and legend._ncols == 1
    assert {t.get_fontsize() for t in legend.get_texts()} == {7}
    assert legend.get_bbox_to_anchor() is not ax_phi.bbox


def test_the_objective_title_gives_the_final_error_and_each_coefficient_error_to_three_digits(tmp_path, figures):
    """The objective panel's title: the final solve's relative L2 (0.125 in the file), then
    one line per recovered coefficient, each as ``x.xxe±yy``."""
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]},
                      truth={"coefficients.a": 0.03125})
    tune_plots.plot_tune(path, tmp_path)
    ax_obj = figures["tune.png"].axes[1]
    assert ax_obj.get_title() == "final solve rel. L2 = 1.25e-01\ncoefficients.a: rel. error 3.12e-02"


# ----------------------------------------------------------------------------- colours


def test_twenty_series_take_tab20_and_more_spread_viridis_short_of_its_yellow_end():
    """Up to 20 series: tab20 in order; 21 and more: viridis from 0 to 0.95 evenly (its
    last, pale yellow is left out)."""
    assert solve_plots._colors(20) == [colormaps["tab20"](i) for i in range(20)]
    colors = solve_plots._colors(21)
    assert colors == [colormaps["viridis"](x) for x in np.linspace(0, 0.95, 21)]
    assert colors[-1] == colormaps["viridis"](0.95) != colormaps["viridis"](1.0)


# ----------------------------------------------------------------------------- slice.png, radial.png, line.png


def test_the_error_panel_of_a_slice_runs_from_zero_to_its_largest_error(tmp_path, figures):
    """The stored errors lie in [3, 7]: the error image's colour scale is [0, 7], not [3, 7]
    (0 is what an exact prediction would show); u and u* share the range of both."""
    _draw(solve_plots.plot_slice, _solve_file(tmp_path / "r.h5", loss=np.ones(30)), tmp_path)
    images = [ax.get_images()[0] for ax in figures["slice.png"].axes[:3]]
    assert images[2].get_clim() == (0.0, 7.0)
    assert images[0].get_clim() == images[1].get_clim() == (-2.0, 20.0)


def test_a_slice_without_a_finite_value_gets_the_unit_colour_range():
    """No finite value at all: the colour range is (0, 1), a range a colour bar can show."""
    assert solve_plots._finite_range(np.full((2, 2), np.nan), [np.inf]) == (0.0, 1.0)
    assert solve_plots._finite_range([np.nan, 2.0], [-1.0, np.inf]) == (-1.0, 2.0)


def test_empty_radial_shells_are_left_out_of_both_curves(tmp_path, figures):
    """A shell with no test point (count 0, its errors NaN) is no point of either curve."""
    radial = {"r": [0.1, 0.5, 0.9], "count": [3, 0, 4], "abs_err": [1e-2, np.nan, 2e-2],
              "rel_err": [0.1, np.nan, 0.2]}
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "r.h5", loss=np.ones(30), radial=radial), tmp_path)
    lines = _lines(figures["radial.png"].axes[0])
    for label, values in (("mean |u − u*|", [1e-2, 2e-2]), ("relative L2 in the shell", [0.1, 0.2])):
        np.testing.assert_array_equal(lines[label].get_xdata(), [0.1, 0.9])
        np.testing.assert_array_equal(lines[label].get_ydata(), values)


def test_test_points_of_two_coordinates_get_no_line_figure(tmp_path):
    """/eval/x of two columns (a result of two coordinates without its slice) is not drawn
    as a line over x₁."""
    path = _line_file(tmp_path / "l.h5", x=[[0.5, 0.1], [-0.25, 0.2], [0.75, 0.3], [-1.0, 0.4]])
    with h5py.File(path, "r") as fh:
        assert solve_plots.plot_line(fh, tmp_path) is None


def test_the_line_figure_draws_the_exact_solution_as_the_line_and_the_prediction_as_points(tmp_path, figures):
    """u* (1.5, 2.5, ...) is the black line, u (1, 2, ...) the points, both sorted by x."""
    _draw(solve_plots.plot_line, _line_file(tmp_path / "l.h5"), tmp_path)
    lines = _lines(figures["line.png"].axes[0])
    order = np.argsort([0.5, -0.25, 0.75, -1.0])
    np.testing.assert_array_equal(lines["exact u*"].get_ydata(), (np.arange(1.0, 5.0) + 0.5)[order])
    np.testing.assert_array_equal(lines["prediction u"].get_ydata(), np.arange(1.0, 5.0)[order])
    np.testing.assert_array_equal(lines["exact u*"].get_xdata(), [-1.0, -0.25, 0.5, 0.75])


# ----------------------------------------------------------------------------- terms.png


def test_a_weight_of_zero_keeps_the_weight_panel_linear(tmp_path, figures):
    """One term weighted 0 at a row (a positive weight elsewhere): the weight axis is
    linear, since 0 has no place on a log axis."""
    terms = {"loss_boundary": [0.1, 0.2, 0.3], "loss_residual": [0.5, 0.25, 0.125],
             "weight_boundary": [1.0, 0.0, 2.0], "weight_residual": [1.0, 1.0, 1.0]}
    _draw(solve_plots.plot_terms, _solve_file(tmp_path / "r.h5", loss=np.ones(30), terms=terms), tmp_path)
    ax_weight = figures["terms.png"].axes[1]
    assert ax_weight.get_yscale() == "linear"
    np.testing.assert_array_equal(_lines(ax_weight)["boundary"].get_ydata(), [1.0, 0.0, 2.0])


# ----------------------------------------------------------------------------- dispatch


def test_both_study_kinds_are_drawn_by_the_study_figures(tmp_path):
    """An estimator study and a training study both go to the study plotter; a kind this
    version does not know is refused, named, as no pinnlab result."""
    from pinnlab.plots import _plotter
    from pinnlab.plots.studies import plot_study

    assert _plotter("estimator_study") is plot_study
    assert _plotter("training_study") is plot_study
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(3))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "benchmark"
    with pytest.raises(NotAResult) as info:
        plot_file(path, tmp_path / "figs")
    assert str(info.value) == f"{str(path)!r}: unknown result kind 'benchmark'"
    assert not (tmp_path / "figs").exists()


def test_the_terms_are_drawn_in_name_order_each_in_its_own_colour_on_both_panels(tmp_path, figures):
    """boundary before residual: C0 and C1, the same colour for a term's loss and weight,
    and the legends in that order."""
    terms = {"loss_residual": [0.5, 0.25, 0.125], "loss_boundary": [0.1, 0.2, 0.3],
             "weight_residual": [1.0, 2.0, 4.0], "weight_boundary": [3.0, 3.0, 3.0]}
    _draw(solve_plots.plot_terms, _solve_file(tmp_path / "r.h5", loss=np.ones(30), terms=terms), tmp_path)
    for ax in figures["terms.png"].axes[:2]:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["boundary", "residual"]
        lines = _lines(ax)
        assert (lines["boundary"].get_color(), lines["residual"].get_color()) == ("C0", "C1")
    np.testing.assert_array_equal(_lines(figures["terms.png"].axes[1])["residual"].get_ydata(), [1.0, 2.0, 4.0])


def test_a_read_error_of_several_lines_is_told_in_one(tmp_path, monkeypatch):
    """What h5py says of a file it cannot open is quoted with its runs of white space and
    line breaks made single spaces: the refusal stays one line."""
    from pinnlab import plots

    path = tmp_path / "r.h5"
    path.write_bytes(b"not a result")

    def fail(*args, **kwargs):
        raise OSError("Unable to open file\n    (file signature not found)")

    monkeypatch.setattr(plots.h5py, "File", fail)
    with pytest.raises(NotAResult) as info:
        plot_file(path, tmp_path / "figs")
    assert str(info.value) == f"{str(path)!r} is not an HDF5 file (Unable to open file (file signature not found))"
