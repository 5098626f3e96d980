"""Fifth audit of the solve figures (pinnlab.plots.solve): the gaps a mutation pass over
plots/__init__.py and plots/solve.py found in the earlier tests. Each test reads what a
figure draws (line data, markers, labels, titles) against numbers worked out by hand
from the file it is given."""

from __future__ import annotations

import numpy as np

from pinnlab.plots import solve as solve_plots
from tests.test_solve_plot_data import _draw, _lines, _solve_file


def test_the_moving_average_of_a_signed_loss_averages_the_signed_values_and_marks_its_lone_points(
        tmp_path, figures):
    """100 steps, a 2-step window, the loss +1, -1, +1, ... except 3 at step 51 and -3 at
    step 52: the signed means are 0 everywhere but 1 at step 51 and -1 at step 53, so the
    drawn |average| is 0, 1, 0, 1, 0 there (the mean of |loss| would be 1 and more). On
    the log axis the zeros are not drawable, so steps 51 and 53 stand alone and get a
    marker; every |loss| is positive and joined, so the per-step curve gets none."""
    loss = (-1.0) ** np.arange(100)
    loss[50], loss[51] = 3.0, -3.0
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss), tmp_path)
    lines = _lines(figures["curves.png"].axes[0])
    average = lines["|moving average| (2 steps)"]
    expected = np.zeros(100)
    expected[0], expected[50], expected[52] = np.nan, 1.0, 1.0
    np.testing.assert_array_equal(average.get_ydata(), expected)
    assert list(average.get_markevery()) == [50, 52]
    assert lines["|loss| per step"].get_markevery() is None
    negative = lines["loss < 0 (50 steps), drawn as |loss|"]
    np.testing.assert_array_equal(negative.get_xdata(), np.arange(2, 101, 2))
    np.testing.assert_array_equal(negative.get_ydata(), np.r_[np.ones(25), 3.0, np.ones(24)])


def test_a_radial_profile_with_only_its_relative_error_finite_is_not_called_empty(tmp_path, figures):
    """Mean |u − u*| undefined (NaN) in every populated shell but the shell's relative L2
    finite: the relative curve is drawn, so no "no finite values" note; with both NaN the
    note appears."""
    radial = {"r": [0.1, 0.5], "count": [3, 4], "abs_err": [np.nan, np.nan], "rel_err": [0.1, 0.2]}
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "r.h5", loss=np.ones(30), radial=radial), tmp_path)
    assert [t.get_text() for t in figures["radial.png"].axes[0].texts] == []
    radial["rel_err"] = [np.nan, np.nan]
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "n.h5", loss=np.ones(30), radial=radial), tmp_path)
    assert [t.get_text() for t in figures["radial.png"].axes[0].texts] == ["no finite values"]

