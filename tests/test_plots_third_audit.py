"""Third audit of the figures (pinnlab.plots): the gaps a mutation pass over
plots/__init__.py, solve.py, tune.py and studies.py found in the earlier tests. Each test
checks what a figure draws (data, axes, labels, error bars) against the file's own
numbers or a closed form, or what ``pinnlab plot`` refuses, and how."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.plots import solve as solve_plots
from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots
from tests.studies.test_study_plot_data import _bars, _training_file
from tests.test_solve_plot_data import _draw, _solve_file, _tune_file


def _one_line_refusal(capsys, path, target):
    """``pinnlab plot`` of ``path`` into ``target``: exit 2, nothing on stdout, one line on
    stderr (returned), no plot directory made."""
    assert main(["plot", str(path), "-o", str(target)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, err
    assert not target.exists()
    return err


# ----------------------------------------------------------------------------- pinnlab plot


def test_an_hdf5_file_without_a_kind_is_refused_as_no_pinnlab_result(tmp_path, capsys):
    """An HDF5 file with no ``kind`` attribute (someone else's data) is "not a pinnlab
    result file", said in one line with exit code 2: not "unknown result kind ''"."""
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as fh:
        fh["x"] = np.arange(3.0)
    err = _one_line_refusal(capsys, path, tmp_path / "figs")
    assert err == (f"pinnlab: error: cannot plot: {str(path)!r} is not a pinnlab result file (it has no 'kind' "
                   "attribute; pinnlab solve, tune and study write one)"), err


def test_a_figure_is_written_as_png_in_one_step_and_a_failed_write_keeps_the_old_one(tmp_path):
    """``_save`` writes a PNG (its signature) under the target's name, whatever the
    temporary name; a write that fails half-way leaves the earlier figure as it was and
    no temporary file behind."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    target = tmp_path / "curves.png"
    assert solve_plots._save(fig, target) == target
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]

    class Failing(Figure):
        def savefig(self, fname, **kwargs):
            with open(fname, "wb") as fh:
                fh.write(b"half a figure")
            raise OSError("disk full")

    target.write_bytes(b"an earlier figure")
    with pytest.raises(OSError, match="disk full"):
        solve_plots._save(Failing(), target)
    assert target.read_bytes() == b"an earlier figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


# ----------------------------------------------------------------------------- curves.png, terms.png


def _terms_file(path, terms):
    return _solve_file(path, loss=np.ones(30), terms=terms, config="loss: {weighting: lra}\n")


def test_the_weight_panel_draws_each_terms_stored_weights_and_a_negative_first_term_is_absolute(tmp_path, figures):
    """The terms are drawn in name order (boundary, residual); a negative boundary loss
    makes the panel one of absolute values even though the residual, drawn after it, is
    positive. Each weight line is its own stored weights, at the history steps."""
    terms = {"loss_residual": [0.5, 0.25, 0.125], "loss_boundary": [0.1, -0.2, 0.3],
             "weight_residual": [1.0, 2.0, 4.0], "weight_boundary": [3.0, 5.0, 7.0]}
    _draw(solve_plots.plot_terms, _terms_file(tmp_path / "r.h5", terms), tmp_path)
    ax_loss, ax_weight = figures["terms.png"].axes[:2]
    assert ax_loss.get_title() == "loss terms, unweighted (absolute values)"
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    np.testing.assert_array_equal(lines["boundary"].get_ydata(), [0.1, 0.2, 0.3])
    marked = lines["boundary < 0 (1 row), drawn as |loss|"]
    assert list(marked.get_xdata()) == [20] and list(marked.get_ydata()) == [0.2]
    weights = {line.get_label(): line for line in ax_weight.get_lines()}
    for name in ("boundary", "residual"):
        np.testing.assert_array_equal(weights[name].get_xdata(), [10, 20, 30])
        np.testing.assert_array_equal(weights[name].get_ydata(), terms[f"weight_{name}"])
    assert ax_weight.get_ylabel() == "weight λ" and ax_weight.get_title() == "weights (lra)"


# ----------------------------------------------------------------------------- slice.png, line.png


def test_a_slice_stored_transposed_is_refused_not_drawn_on_swapped_axes(tmp_path):
    """A 3 × 5 grid whose u_pred is stored 5 × 3 has as many values as the grid but not
    its shape: drawn, x₁ and t would be swapped; it is refused, naming both shapes."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), grid_a=np.linspace(0, 1, 3),
                       grid_b=np.linspace(-2, 3, 5))
    with h5py.File(path, "a") as fh:
        values = fh["slices/main/u_pred"][...]
        del fh["slices/main/u_pred"]
        fh["slices/main/u_pred"] = values.T
    with h5py.File(path, "r") as fh, pytest.raises(
            ValueError, match=r"^/slices/main/u_pred has shape \(5, 3\), not that of its grid \(3, 5\)$"):
        solve_plots.plot_slice(fh, tmp_path)


# ----------------------------------------------------------------------------- tune.png


def test_a_legend_of_exactly_16_phi_lines_is_one_column_beside_the_axes(tmp_path, figures):
    """Columns of 16 entries: 16 lines (12 coordinates of μ and 4 scalars) fill one
    column, 32 two, 33 three."""
    mu = np.arange(3.0 * 12).reshape(3, 12) / 10.0 + 0.1
    for scalars, columns in ((4, 1), (20, 2), (21, 3)):
        phi = {"coefficients.mu": mu, **{f"coefficients.c{i:02d}": [1.0, 2.0, 3.0] for i in range(scalars)}}
        tune_plots.plot_tune(_tune_file(tmp_path / f"t{scalars}.h5", phi=phi), tmp_path)
        legend = figures["tune.png"].axes[0].get_legend()
        assert len(legend.get_texts()) == 12 + scalars and legend._ncols == columns, scalars


# ----------------------------------------------------------------------------- estimator study


def test_up_to_ten_series_each_get_their_own_colour_and_no_line_joins_a_series_points():
    """Ten series (2 losses × 5 d): the default cycle C0…C9, one per series in order (not
    one per d, which would give five colours); every series is drawn as markers only
    (linestyle "None") while the (loss, noise) kinds have distinct markers (12 of them);
    the 13th kind reuses the first marker and is told apart by a solid line."""
    series = sorted((loss, "independent", d, 0.05) for loss in ("biased", "unbiased") for d in (1, 2, 3, 4, 5))
    styles = study_plots._series_styles(series)
    assert [styles[key]["color"] for key in series] == [f"C{i}" for i in range(10)]
    assert {styles[key]["linestyle"] for key in series} == {"None"}
    kinds = [(f"loss{i:02d}", "independent") for i in range(13)]
    styles = study_plots._series_styles([(*kind, 5, 0.05) for kind in kinds])
    drawn = [styles[(*kind, 5, 0.05)] for kind in kinds]
    assert [s["marker"] for s in drawn] == [*study_plots.MARKERS, study_plots.MARKERS[0]]
    assert [s["linestyle"] for s in drawn] == ["None"] * 12 + ["-"]


def test_records_with_fixed_length_byte_strings_are_read_as_text(tmp_path, figures):
    """Text columns stored as fixed-length byte strings (dtype S, as numpy writes them) are
    decoded like variable-length ones: the figures of both quantities are drawn, with the
    equation's name and each series' variances at its K."""
    records = [{"quantity": q, "loss": "biased", "noise": "shared", "dim": 3, "sigma": 0.1, "samples": k,
                "variance": 8.0 / k, "variance_se": 0.5 / k, "bias": 1.0 / k, "bias_se": 0.1 / k,
                "bias2": 1.0 / k ** 2, "bias2_se": 0.1 / k ** 2} for q in ("loss", "gradient") for k in (4, 8, 16)]
    path = tmp_path / "est.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["kind"], fh.attrs["config"] = "estimator_study", "equation:\n  name: heat\n"
        for key in records[0]:
            values = [r[key] for r in records]
            fh[f"records/{key}"] = np.array(values, dtype="S") if isinstance(values[0], str) else values
        assert fh["records/quantity"].dtype.kind == "S"
    written = study_plots.plot_estimator_study(path, tmp_path)
    assert [p.name for p in written] == ["estimator_loss.png", "estimator_gradient.png"]
    for name in ("estimator_loss.png", "estimator_gradient.png"):
        (container,) = figures[name].axes[0].containers
        x, y, _, high = _bars(container)
        assert list(x) == [4, 8, 16] and y == pytest.approx([2.0, 1.0, 0.5]) and high == pytest.approx([0.25, 0.125, 0.0625])


def test_the_bias2_fit_is_weighted_by_the_standard_errors_as_its_slope_is(tmp_path, figures):
    """The biased series' gradient bias² is (3/K)² at SE 2·|bias|·0.3/K: relative SE 0.2 at
    every K, so the weighted slope is −2 with SE 0.2/√Σ(ln K − mean)² = 0.2/(ln 2·√5) =
    0.13 (an unweighted fit of these exact points would say ± 0.00); the dashed line goes
    through the points, 9/16 at K = 4 and 9/1024 at K = 32."""
    from tests.studies.test_study_plots_and_slopes import _estimator_file, _legend_entries

    path = tmp_path / "est.h5"
    _estimator_file(path)
    study_plots.plot_estimator_study(path, tmp_path)
    fig = figures["estimator_gradient.png"]
    ax_bias = fig.axes[1]
    labels = [entry[0] for entry in _legend_entries([ax.get_legend() for ax in fig.axes if ax.get_legend()][1])]
    se = 0.2 / (np.log(2.0) * np.sqrt(5.0))
    assert f"{se:.2f}" == "0.13"
    for noise in ("independent", "shared"):
        assert f"biased, {noise}, d=5, σ=0.05 (slope -2.00 ± 0.13)" in labels, labels
    dashed = [line for line in ax_bias.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2
    for line in dashed:
        x, y = line.get_xdata(), line.get_ydata()
        np.testing.assert_allclose([x[0], x[-1]], [4.0, 32.0], rtol=1e-12)
        np.testing.assert_allclose([y[0], y[-1]], [9.0 / 16, 9.0 / 1024], rtol=1e-9)


# ----------------------------------------------------------------------------- training study


def test_variants_are_set_apart_by_a_share_of_the_smallest_gap_between_columns(tmp_path, figures):
    """Columns d = 4, 8, 64 (log gaps ln 2 and ln 8) and two variants: each variant sits
    0.05 · ln 2 (in log units) to either side of its column, a share of the smallest gap,
    not of the largest (which would push it towards the next column at d = 4, 8)."""
    path = tmp_path / "t.h5"
    flat = np.ones(10)
    columns = (4.0, 8.0, 64.0)
    _training_file(path, [(v, c, 0.1, flat, 0 * flat) for v in ("p", "q") for c in columns],
                   [(v, c, 0.1, 0.02) for v in ("p", "q") for c in columns])
    study_plots.plot_training_study(path, tmp_path)
    bars = {c.get_label(): _bars(c) for c in figures["training_error_vs_dim.png"].axes[0].containers}
    shift = 0.05 * np.log(2.0)
    np.testing.assert_allclose(bars["p"][0], np.array(columns) * np.exp(-shift), rtol=1e-12)
    np.testing.assert_allclose(bars["q"][0], np.array(columns) * np.exp(shift), rtol=1e-12)


def test_a_curve_that_ends_non_finite_keeps_its_log_axis(tmp_path, figures):
    """A cell that diverged at its last step (NaN loss) with positive losses before it: the
    NaN is not drawn and does not turn the axis into symlog (only a value ≤ 0 does)."""
    path = tmp_path / "t.h5"
    loss = np.geomspace(400.0, 2.0, 20)
    loss[-1] = np.nan
    _training_file(path, [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(path, tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "training loss"
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), loss)


def test_the_error_figure_names_its_axes_by_the_column_or_cell_and_mean_and_std(tmp_path, figures):
    """The x axis is the study's column (or "cell" for a study without one), "(variants
    side by side)" with more than one variant; the y axis says the bars are the std."""
    flat = np.ones(10)
    for columns, xlabel in (("equation.dim", "equation.dim (variants side by side)"),
                            ("", "cell (variants side by side)")):
        path = tmp_path / f"t{len(columns)}" / "t.h5"
        path.parent.mkdir()
        _training_file(path, [("p", 4.0, 0.1, flat, 0 * flat), ("q", 4.0, 0.2, flat, 0 * flat)],
                       [("p", 4.0, 0.1, 0.01), ("q", 4.0, 0.2, 0.02)], columns=columns or "none")
        with h5py.File(path, "a") as fh:
            fh.attrs["columns"] = columns
        study_plots.plot_training_study(path, tmp_path)
        ax = figures["training_error_vs_dim.png"].axes[0]
        assert ax.get_xlabel() == xlabel and ax.get_ylabel() == "final relative L2 (mean ± std)"


def test_a_study_moved_with_its_cells_draws_them_from_beside_the_file(tmp_path, figures):
    """The recorded cell directory is gone (the study and its ``.cells`` moved elsewhere):
    the curves are read from ``<study>.cells`` beside the file, the first seed's loss drawn
    as it is stored (20 steps: no average)."""
    old = tmp_path / "old"
    old.mkdir()
    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(old / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    new = tmp_path / "new"
    old.rename(new)
    study_plots.plot_training_study(new / "t.h5", tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    (curve,) = ax.get_lines()
    assert curve.get_label() == "a" and list(ax.texts) == []
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(1, 21))
    np.testing.assert_allclose(curve.get_ydata(), loss, rtol=1e-12)
