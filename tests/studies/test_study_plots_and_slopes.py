"""Bias slopes only where the bias is distinguishable from 0; readable study figures."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.transforms import Bbox

from pinnlab.plots import studies
from pinnlab.studies.estimator_study import bias_is_significant, fit_slopes

KS = (4, 8, 16, 32)


def _loss_rows(bias, bias_se, loss="unbiased"):
    return [{"quantity": "loss", "loss": loss, "noise": "independent", "dim": 5, "sigma": 0.05, "samples": k,
             "variance": 10.0 / k, "variance_se": 1.0 / k, "bias": b, "bias_se": se,
             "bias2": b * b, "bias2_se": 2 * abs(b) * se}
            for k, b, se in zip(KS, bias, bias_se)]


def _gradient_rows(bias2, bias2_se):
    return [{"quantity": "gradient", "loss": "biased", "noise": "shared", "dim": 5, "sigma": 0.05, "samples": k,
             "variance": 10.0 / k, "variance_se": 1.0 / k, "bias2": b, "bias2_se": se}
            for k, b, se in zip(KS, bias2, bias2_se)]


def _only(slopes):
    (entry,) = slopes.values()
    return entry


def test_a_bias_consistent_with_zero_gets_no_slope():
    """The audit's case: the unbiased loss with bias/SE = 1.59, 0.30, 0.01 (all positive)
    was given a 'bias slope' of −4.6 ± 1.0."""
    rows = _loss_rows([1.64, 0.234, 0.0027, 0.5], [1.04, 0.777, 0.534, 0.3])
    entry = _only(fit_slopes(rows))
    assert "bias_slope" not in entry and "bias_slope_se" not in entry
    assert entry["variance_slope"] == pytest.approx(-1.0)


@pytest.mark.parametrize("sign", [1, -1])
def test_a_bias_more_than_two_se_from_zero_at_every_k_gets_the_slope_of_its_magnitude(sign):
    bias = [sign * 3.0 / k for k in KS]
    rows = _loss_rows(bias, [0.4 / k for k in KS], loss="biased")
    assert _only(fit_slopes(rows))["bias_slope"] == pytest.approx(-1.0)


@pytest.mark.parametrize("z", [[3.0, 2.5, 1.9, 3.0],  # within 2 SE at one K
                               [3.0, 3.0, -3.0, 3.0],  # both signs
                               [3.0, 3.0, float("nan"), 3.0]])
def test_a_loss_bias_within_two_se_at_one_k_or_of_both_signs_gets_no_slope(z):
    rows = _loss_rows([zi / k for zi, k in zip(z, KS)], [1.0 / k for k in KS], loss="biased")
    assert "bias_slope" not in _only(fit_slopes(rows))


@pytest.mark.parametrize("rows, key, values, errors", [
    (_loss_rows([3.0 / k * (1, 1.3, 0.8, 1.1)[i] for i, k in enumerate(KS)], [0.4 / k for k in KS], loss="biased"),
     "bias", lambda rows: [abs(r["bias"]) for r in rows], lambda rows: [r["bias_se"] for r in rows]),
    (_gradient_rows([4.0 / k**2 * (1, 0.7, 1.2, 0.9)[i] for i, k in enumerate(KS)], [0.5 / k**2 for k in KS]),
     "bias2", lambda rows: [r["bias2"] for r in rows], lambda rows: [r["bias2_se"] for r in rows]),
])
def test_every_slope_is_weighted_by_its_own_points_errors(rows, key, values, errors):
    """Each slope, with its SE, is the weighted fit to its own values and standard errors:
    the variance with variance_se, |bias| of the loss with bias_se, bias² with bias2_se
    (series that scatter about a power law, so the weights change the answer)."""
    from pinnlab.studies.estimator_study import loglog_slope

    entry = _only(fit_slopes(rows))
    assert (entry[f"{key}_slope"], entry[f"{key}_slope_se"]) == loglog_slope(KS, values(rows), errors(rows))
    assert entry[f"{key}_slope"] != loglog_slope(KS, values(rows))[0]
    variance = loglog_slope(KS, [r["variance"] for r in rows], [r["variance_se"] for r in rows])
    assert (entry["variance_slope"], entry["variance_slope_se"]) == variance


def test_a_bias2_is_fitted_only_where_it_is_two_se_above_zero_at_every_k():
    assert _only(fit_slopes(_gradient_rows([4.0 / k**2 for k in KS], [1.0 / k**2 for k in KS]))) \
        ["bias2_slope"] == pytest.approx(-2.0)
    # the audit's gradient series: bias²/SE = 0.59, 1.38, 0.85 (all positive), once fitted
    rows = _gradient_rows([104.6, 100.9, 61.7, 50.0], [175.8, 73.0, 72.9, 10.0])
    assert "bias2_slope" not in _only(fit_slopes(rows))
    # far below 0 is an estimate of a zero bias, not a significant one
    assert not bias_is_significant("gradient", _gradient_rows([-5.0] * 4, [1.0] * 4))


# ----------------------------------------------------------------------------- figures


def _estimator_file(path, dims=(5,), sigmas=(0.05,), ks=KS):
    """An estimator-study file as ``pinnlab study`` writes it: the biased loss with a bias
    3/K at SE 0.3/K (significant), the unbiased one with a bias of 0.1·SE (consistent with
    0), for every (loss, noise, d, σ) of the grid."""
    records = []
    for loss, noise, dim, sigma, k in itertools.product(("biased", "unbiased"), ("independent", "shared"),
                                                       dims, sigmas, ks):
        se = 0.3 / k
        bias = 3.0 / k if loss == "biased" else 0.1 * se
        for quantity in ("loss", "gradient"):
            records.append({"quantity": quantity, "loss": loss, "noise": noise, "dim": dim, "samples": k,
                            "samples_per_draw": k, "sigma": sigma, "variance": 10.0 / k, "variance_se": 1.0 / k,
                            "bias2": bias * bias, "bias2_se": 2 * abs(bias) * se, "bias": bias, "bias_se": se})
    with h5py.File(path, "w") as fh:
        fh.attrs["kind"] = "estimator_study"
        fh.attrs["config"] = "equation:\n  name: heat\n"
        fh.attrs["slopes"] = json.dumps(fit_slopes(records))
        group = fh.create_group("records")
        for key in records[0]:
            values = [r.get(key, float("nan")) for r in records]
            group.create_dataset(key, data=[str(v) for v in values] if isinstance(values[0], str) else values)
    return records


def _draw(fig):
    """Lay out and draw ``fig`` as ``_save`` would (Agg); returns the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _legend_entries(legend):
    """(label, colour, marker, linestyle) of each legend entry."""
    out = []
    for handle, text in zip(legend.legend_handles, legend.get_texts()):
        out.append((text.get_text(), to_rgba(handle.get_color()), handle.get_marker(), handle.get_linestyle()))
    return out


def test_the_bias_panel_fits_and_labels_a_series_by_the_slope_rule(tmp_path, figures):
    path = tmp_path / "est.h5"
    records = _estimator_file(path)
    studies.plot_estimator_study(path, tmp_path)
    legends = [ax.get_legend() for ax in figures["estimator_loss.png"].axes if ax.get_legend() is not None]
    labels = [entry[0] for entry in _legend_entries(legends[1])]  # the bias panel's
    slopes = fit_slopes(records)
    for label in labels:
        loss, noise = label.split(", ")[:2]
        entry = slopes[f"loss/{loss}/{noise}/d=5/sigma=0.05"]
        if "bias_slope" in entry:
            assert f"(slope {entry['bias_slope']:.2f} ± {entry['bias_slope_se']:.2f})" in label
        else:
            assert "no fit" in label and "slope" not in label
    assert sum("no fit" in label for label in labels) == 2  # the two unbiased series
    # and the dashed fit lines are those of the two biased series
    bias_panel = figures["estimator_loss.png"].axes[1]
    assert sum(line.get_linestyle() == "--" for line in bias_panel.get_lines()) == 2


def test_a_significant_bias_at_too_few_k_for_a_band_is_not_called_consistent_with_zero(tmp_path, figures):
    path = tmp_path / "est.h5"
    _estimator_file(path, ks=(4, 8))
    studies.plot_estimator_study(path, tmp_path)
    legends = [ax.get_legend() for ax in figures["estimator_loss.png"].axes if ax.get_legend() is not None]
    labels = [entry[0] for entry in _legend_entries(legends[1])]
    assert [label.split(" (")[1] for label in labels if label.startswith("biased")] == ["no fit: fewer than 3 K)"] * 2
    assert all("not 2 SE from 0" in label for label in labels if label.startswith("unbiased"))


def _panel_box(ax, renderer):
    """The window extent of a panel with its tick labels, axis labels and title (not its
    legend)."""
    parts = [ax.get_window_extent(renderer), ax.xaxis.get_tightbbox(renderer), ax.yaxis.get_tightbbox(renderer),
             ax.title.get_window_extent(renderer)]
    return Bbox.union([box for box in parts if box is not None])


def test_every_series_of_a_large_study_is_distinguishable_and_the_legend_overlaps_nothing(tmp_path, figures):
    path = tmp_path / "est.h5"
    _estimator_file(path, dims=(10, 100, 1000), sigmas=(0.01, 0.05))  # 2 × 2 × 3 × 2 = 24 series
    studies.plot_estimator_study(path, tmp_path)
    for name in ("estimator_loss.png", "estimator_gradient.png"):
        fig = figures[name]
        renderer = _draw(fig)
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 2
        panels = [ax for ax in fig.axes if ax.get_title()]  # variance and bias
        assert len(panels) == 2
        for legend in legends:
            entries = _legend_entries(legend)
            assert len(entries) == 24
            assert len({entry[1:] for entry in entries}) == 24, "two series look alike"
            box = legend.get_window_extent(renderer)
            assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), "legend cut off"
            for ax in panels:
                assert not box.overlaps(_panel_box(ax, renderer)), "legend overlaps a panel"
        for ax in panels:
            assert ax.get_window_extent(renderer).height > 2.5 * fig.dpi, "panel squashed"


def _training_file(path, loss):
    """A training-study file with one cell whose loss trace is ``loss``."""
    cell_dir = tmp = path.parent / "cells"
    tmp.mkdir()
    with h5py.File(cell_dir / "cell0.h5", "w") as fh:
        fh["trace/loss"] = loss
        fh["trace/mix"] = np.zeros_like(loss)
    with h5py.File(path, "w") as fh:
        fh.attrs["kind"] = "training_study"
        fh.attrs["columns"] = "equation.dim"
        fh.attrs["cell_dir"] = str(cell_dir)
        summary = fh.create_group("summary")
        summary["variant"] = ["biased"]
        summary["column"] = [4.0]
        summary["rel_l2_mean"] = [0.5]
        summary["rel_l2_std"] = [0.0]
        cells = fh.create_group("cells")
        cells["variant"] = ["biased"]
        cells["key"] = ["cell0"]
        cells["equation.dim"] = [4.0]


def _labelled_y_ticks(ax):
    """The y values of the ticks (major and minor) that carry text, inside the y limits."""
    low, high = sorted(ax.get_ylim())
    return [tick.get_loc() for tick in ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
            if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high]


def _loss_axis(tmp_path, figures, loss):
    """The drawn loss-curve axes of a one-cell training study whose loss trace is ``loss``."""
    _training_file(tmp_path / "t.h5", loss)
    studies.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_loss_curves.png"]
    _draw(fig)
    return fig.axes[0]


@pytest.mark.parametrize("low, high", [(158.0, 301.0), (210.0, 290.0), (2.1e-5, 2.9e-5), (0.11, 0.95), (0.6, 0.9),
                                       (3e2, 4e3), (2e-3, 3e-2), (1e-4, 1e2)])
def test_a_positive_loss_curve_has_labelled_y_ticks_whatever_its_range(tmp_path, figures, low, high):
    """A curve within one decade (the audit's 158 to 301) had no labelled y tick at all;
    one within 2 and 3 × 10^k (210 to 290) holds no 2, 3, ... × 10^k either, and one over
    one to two decades may hold a single power of 10."""
    ax = _loss_axis(tmp_path, figures, np.geomspace(high, low, 200))
    assert ax.get_yscale() == "log"
    assert len(_labelled_y_ticks(ax)) >= 2


def test_a_loss_curve_through_zero_keeps_a_symlog_axis_with_labelled_ticks(tmp_path, figures):
    ax = _loss_axis(tmp_path, figures, np.concatenate([np.linspace(300.0, 150.0, 100),
                                                       np.linspace(150.0, -20.0, 100)]))
    assert ax.get_yscale() == "symlog"
    assert len(_labelled_y_ticks(ax)) >= 2


def test_loss_curve_panels_follow_the_grid_order(tmp_path, figures):
    """The panels were sorted as text: equation.dim = 16, 32, 4, 8."""
    dims = [4.0, 8.0, 16.0, 32.0]
    cell_dir = tmp_path / "cells"
    cell_dir.mkdir()
    for i in range(len(dims)):
        with h5py.File(cell_dir / f"cell{i}.h5", "w") as fh:
            fh["trace/loss"] = np.geomspace(10.0, 1.0, 50)
            fh["trace/mix"] = np.zeros(50)
    with h5py.File(tmp_path / "t.h5", "w") as fh:
        fh.attrs.update(kind="training_study", columns="equation.dim", cell_dir=str(cell_dir))
        summary = fh.create_group("summary")
        summary["variant"], summary["column"] = ["biased"] * 4, dims
        summary["rel_l2_mean"], summary["rel_l2_std"] = [0.5] * 4, [0.0] * 4
        cells = fh.create_group("cells")
        cells["variant"], cells["key"], cells["equation.dim"] = ["biased"] * 4, [f"cell{i}" for i in range(4)], dims
    studies.plot_training_study(tmp_path / "t.h5", tmp_path)
    titles = [ax.get_title() for ax in figures["training_loss_curves.png"].axes]
    assert titles == [f"equation.dim = {d:g}" for d in dims]


def test_training_study_variants_keep_distinct_colours_across_both_figures(tmp_path, figures):
    """Variants were coloured C0..C9 by their index in each panel: an eleventh variant
    repeated the first one's colour, and a variant's colour could differ between figures."""
    from matplotlib.colors import to_rgba

    variants = [f"v{i}" for i in range(12)]
    cell_dir = tmp_path / "cells"
    cell_dir.mkdir()
    for i in range(len(variants)):
        with h5py.File(cell_dir / f"cell{i}.h5", "w") as fh:
            fh["trace/loss"] = np.geomspace(10.0, 1.0 + i, 50)
            fh["trace/mix"] = np.zeros(50)
    n = len(variants)
    with h5py.File(tmp_path / "t.h5", "w") as fh:
        fh.attrs.update(kind="training_study", columns="equation.dim", cell_dir=str(cell_dir))
        summary = fh.create_group("summary")
        summary["variant"], summary["column"] = variants, [4.0] * n
        summary["rel_l2_mean"], summary["rel_l2_std"] = [0.1 * (i + 1) for i in range(n)], [0.0] * n
        cells = fh.create_group("cells")
        cells["variant"], cells["key"], cells["equation.dim"] = variants, [f"cell{i}" for i in range(n)], [4.0] * n
    studies.plot_training_study(tmp_path / "t.h5", tmp_path)
    curves = {line.get_label(): to_rgba(line.get_color())
              for line in figures["training_loss_curves.png"].axes[0].lines if not line.get_label().startswith("_")}
    errors = {c.get_label(): to_rgba(c.lines[0].get_color())
              for c in figures["training_error_vs_dim.png"].axes[0].containers}
    assert set(curves) == set(errors) == set(variants)
    assert len(set(curves.values())) == n
    assert curves == errors


def test_a_series_of_zero_variances_is_drawn_without_a_fit_or_a_warning(tmp_path, figures):
    """Every replicate alike (variance exactly 0, as at a σ that saturates the network):
    the variance panel has no log-log fit to draw for that series and says so by a label
    without a slope, instead of numpy's divide-by-zero warning and a fit through log 0."""
    import warnings

    path = tmp_path / "est.h5"
    records = _estimator_file(path)
    for r in records:
        r["variance"] = r["variance_se"] = 0.0
    with h5py.File(path, "a") as fh:
        del fh["records/variance"], fh["records/variance_se"]
        fh["records/variance"] = [0.0] * len(records)
        fh["records/variance_se"] = [0.0] * len(records)
        fh.attrs["slopes"] = json.dumps(fit_slopes(records), allow_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        studies.plot_estimator_study(path, tmp_path)
    variance_panel = figures["estimator_loss.png"].axes[0]
    assert not any(line.get_linestyle() == "--" for line in variance_panel.get_lines())
    labels = variance_panel.get_legend_handles_labels()[1]
    assert labels and not any("slope" in label for label in labels), labels
    assert variance_panel.get_yscale() == "linear" and "every replicate alike" in variance_panel.get_ylabel()


def test_plot_never_writes_a_figure_over_the_file_it_plots(tmp_path, capsys):
    """A result named like one of its figures (estimator_loss.png), plotted into its own
    directory, was replaced by that figure: exit 0 and the result gone. Also `-o` naming
    the result itself was told to "choose one with -o DIR"."""
    from pinnlab.cli import main

    path = tmp_path / "estimator_loss.png"
    _estimator_file(path)
    before = path.read_bytes()
    assert main(["plot", str(path), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pinnlab: error: cannot plot into {str(path)!r}: it is the result file being plotted; choose "
                   "another directory with -o DIR"), err
    assert path.read_bytes() == before and not (tmp_path / "estimator_gradient.png").exists()
    plain = tmp_path / "result"
    _estimator_file(plain)
    assert main(["plot", str(plain), "-o", str(plain)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"-o {str(plain)!r}: is the result file being plotted; "
                                                    "choose a directory")


def test_a_panel_spanning_less_than_a_decade_labels_more_than_one_y_tick(tmp_path, figures):
    """Minor ticks were switched off on both axes of the estimator panels, so values from
    1.25 to 2.5 (or a bias² from 0.03 to 0.5) had a single y label, 10⁰: the y axis keeps
    its labelled minor ticks (the x axis keeps only the studied K)."""
    path = tmp_path / "est.h5"
    _estimator_file(path, ks=(4, 8))
    studies.plot_estimator_study(path, tmp_path)
    fig = figures["estimator_loss.png"]
    _draw(fig)
    variance_panel = fig.axes[0]
    low, high = variance_panel.get_ylim()
    labelled = [t for t in (*variance_panel.yaxis.get_majorticklabels(), *variance_panel.yaxis.get_minorticklabels())
                if t.get_text() and low <= t.get_position()[1] <= high]
    assert len(labelled) >= 3, [t.get_text() for t in labelled]
    assert [t.get_text() for t in variance_panel.get_xticklabels()] == ["4", "8"]
    assert len(variance_panel.xaxis.get_minorticklocs()) == 0
