"""The training-study error figure: every column value at its place, whatever its type."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.plots import studies

# the summary is what is drawn here: the loss-curve panels, without cell files, have no legend
pytestmark = pytest.mark.filterwarnings("ignore:No artists with labels found")


def _study_file(path, columns, column_values, rel_l2, failed=()):
    """A training-study file as ``pinnlab study`` writes it: numeric columns as floats,
    any other column as text (no cell files: only the summary is drawn). ``failed``:
    (variant, column value) pairs with no ok cell (NaN error)."""
    variants = ["sgd", "adam"]
    rows = [(v, c, math.nan if (v, c) in failed else e)
            for v in variants for c, e in zip(column_values, rel_l2)]
    numeric = all(isinstance(c, float) for c in column_values)
    with h5py.File(path, "w") as fh:
        fh.attrs["kind"] = "training_study"
        fh.attrs["columns"] = columns
        fh.attrs["cell_dir"] = str(path) + ".cells"
        summary = fh.create_group("summary")
        summary["variant"] = [r[0] for r in rows]
        summary["column"] = [r[1] for r in rows] if numeric else [str(r[1]) for r in rows]
        summary["rel_l2_mean"] = [r[2] for r in rows]
        summary["rel_l2_std"] = [0.0 if math.isfinite(r[2]) else math.nan for r in rows]
        cells = fh.create_group("cells")
        cells["variant"] = [r[0] for r in rows]
        cells["key"] = [f"cell{i}" for i in range(len(rows))]
        if columns:
            cells[columns] = summary["column"][...]


def _points(ax):
    """The column place (x tick) of every drawn error point, per variant: each variant is
    drawn a little beside it (test_study_plot_data checks by how much)."""
    ticks = np.asarray(ax.get_xticks(), float)
    scale = np.log if ax.get_xscale() == "log" else np.asarray

    def place(x):
        nearest = ticks[np.abs(scale(ticks) - scale(x)).argmin()]
        assert abs(scale(x) - scale(nearest)) < 0.2 * (np.diff(scale(ticks)).min() if len(ticks) > 1 else 1.0)
        return float(nearest)

    return {bars.get_label(): [place(x) for x in bars.lines[0].get_xdata()] for bars in ax.containers}


def test_a_column_in_exponent_notation_is_drawn_at_its_values_on_a_log_axis(tmp_path, figures):
    path = tmp_path / "lr.h5"
    _study_file(path, "trainer.lr", [1e-6, 1e6], [0.5, 0.2])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert _points(ax) == {"sgd": [1e-6, 1e6], "adam": [1e-6, 1e6]}
    # the title names the column (it said "against dimension" whatever the column was)
    assert ax.get_title() == "Training study: final error against trainer.lr per method"


@pytest.mark.parametrize("values, labels", [(["shared", "independent"], ["shared", "independent"]),
                                            ([-1.0, 0.0, 2.0], ["-1", "0", "2"])])
def test_text_and_non_positive_columns_get_one_labelled_place_per_value(tmp_path, figures, values, labels):
    path = tmp_path / "text.h5"
    _study_file(path, "estimator.noise", values, [0.5, 0.2, 0.1][:len(values)])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert ax.get_xscale() == "linear"
    positions = list(range(len(values)))
    assert _points(ax) == {"sgd": positions, "adam": positions}
    assert list(ax.get_xticks()) == positions
    assert [t.get_text() for t in ax.get_xticklabels()] == labels


def test_a_value_where_a_variant_failed_is_left_empty_and_the_others_keep_their_place(tmp_path, figures):
    path = tmp_path / "text.h5"
    _study_file(path, "estimator.noise", ["shared", "independent"], [0.5, 0.2], failed=[("sgd", "shared")])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert _points(ax) == {"sgd": [1], "adam": [0, 1]}


def test_a_study_without_columns_is_one_place_labelled_all(tmp_path, figures):
    path = tmp_path / "all.h5"
    _study_file(path, "", ["null"], [0.3])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert _points(ax) == {"sgd": [0], "adam": [0]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["all"]
    assert ax.get_title() == "Training study: final error per method"
    curves = figures["training_loss_curves.png"].axes[0]
    assert curves.get_title() == "all cells"
    # its cell files are not there: the panel says so instead of an empty legend (a warning)
    assert curves.get_legend() is None and [t.get_text() for t in curves.texts] == ["no cell file of this study found"]


def test_a_study_where_no_cell_is_ok_is_plotted_and_says_so(tmp_path, capsys):
    path = tmp_path / "failed.h5"
    _study_file(path, "trainer.lr", [1e6, 1e7], [math.nan, math.nan])
    assert main(["plot", str(path), "-o", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "training_error_vs_dim.png").is_file()


def test_the_failed_study_figure_tells_why_it_has_no_point(tmp_path, figures):
    path = tmp_path / "failed.h5"
    _study_file(path, "trainer.lr", [1e6, 1e7], [math.nan, math.nan])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert _points(ax) == {}
    assert any("no cell finished with status ok" in t.get_text() for t in ax.texts)
    assert np.allclose(ax.get_xticks(), [1e6, 1e7])
