"""Mutation audit of the estimator-study path of ``pinnlab study`` (pinnlab/studies/command.py)
and of the study figures (pinnlab/plots/studies.py), sixth pass: what the study writes to
its HDF5 file from the records, slopes and comparisons it computed (one dataset per key,
NaN where a record has none, the attributes), the lines it prints, the exit code of a
failed cell, and the axes, fits and labels the estimator figures draw. The study's
records are canned (no estimator runs) and the figures are inspected, not written."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from pinnlab.cli import main
from pinnlab.plots import studies as study_plots
from pinnlab.studies import estimator_study
from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator
from tests.studies.test_study_plot_data import _markers, _record, _records_file

BASE = {"loss": "biased", "noise": "independent", "dim": 3, "sigma": 0.1, "samples": 4, "samples_per_draw": 4}

RECORDS = [
    {**BASE, "quantity": "loss", "variance": 0.5, "variance_se": 0.1, "bias": -0.2, "bias_se": 0.01,
     "bias2": 0.04, "bias2_se": 0.001},
    {**BASE, "quantity": "gradient", "variance": 0.25, "variance_se": 0.05, "bias2": 0.3, "bias2_se": 0.01,
     "bias_t": 3.14159, "bias_t_df": 7.25, "bias_p": 0.01234},
    {**BASE, "quantity": "gradient", "loss": "unbiased", "variance": 0.75, "variance_se": 0.05, "bias2": 0.0,
     "bias2_se": 0.01, "bias_t": 0.5, "bias_t_df": 7.0, "bias_p": math.nan},
    {**BASE, "quantity": "residual", "variance": 0.125, "variance_se": 0.01, "bias2": 0.0, "bias2_se": 0.01,
     "bias_t": -1.5, "bias_t_df": 3.0, "bias_p": 0.25},
]
"""One cell's records: a loss record without the t test's keys, a gradient record whose
test is printed, one whose p-value is NaN (not printed) and a residual record (its test is
not the gradient's, not printed)."""

SLOPES = {
    "loss/biased/independent/d=3/sigma=0.1": {"variance_slope": -1.0, "variance_slope_se": 0.1,
                                              "bias_slope": -1.23456, "bias_slope_se": 0.05678},
    "loss/unbiased/independent/d=3/sigma=0.1": {"variance_slope": -1.0, "variance_slope_se": 0.1,
                                                "bias_slope": -0.5, "bias_slope_se": 0.125},
    "loss/biased/shared/d=3/sigma=0.1": {"variance_slope": -1.0, "variance_slope_se": 0.1},
    "gradient/biased/independent/d=3/sigma=0.1": {"variance_slope": -2.0, "variance_slope_se": math.nan},
}
"""Only a biased loss's bias slope is printed (the unbiased one's bias is no result)."""

COMPARISONS = [
    {"quantity": "gradient", "noise": "independent", "dim": 3, "samples": 4, "sigma": 0.1,
     "variance_ratio": 3.0, "z": -1.234, "halving_prediction": 0.755},
    {"quantity": "gradient", "noise": "shared", "dim": 3, "samples": 8, "sigma": 0.1,
     "variance_ratio": 0.5, "z": 2.25, "halving_prediction": None},
    {"quantity": "loss", "noise": "independent", "dim": 3, "samples": 4, "sigma": 0.1,
     "variance_ratio": 9.0, "z": 5.0, "halving_prediction": 1.0},
]


def _canned(monkeypatch, records, slopes=SLOPES, comparisons=COMPARISONS):
    """The study's one cell returns ``records`` (copies); its slopes and comparisons are
    the given ones."""
    def run(spec, **kwargs):
        return {"records": [dict(r) for r in records]}

    monkeypatch.setattr(estimator_study, "run_estimator_study", run)
    monkeypatch.setattr(estimator_study, "fit_slopes", lambda records: slopes)
    monkeypatch.setattr(estimator_study, "compare_losses", lambda records: comparisons)


def _study(tmp_path, capsys, *options):
    cfg = _estimator(tmp_path, **ONE_CELL)
    out = tmp_path / "est.h5"
    code = main(["study", str(cfg), "-o", str(out), *map(str, options)])
    printed = capsys.readouterr()
    return code, out, printed.out.splitlines(), printed.err.splitlines()


def test_the_study_file_holds_one_dataset_per_key_nan_where_a_record_has_none(tmp_path, monkeypatch, capsys):
    """Every key of any record is a dataset over all records: numbers as numbers, text as
    text, and NaN (not 0) where a record has no such key (the loss record has no t test,
    the others no signed bias)."""
    _canned(monkeypatch, RECORDS)
    code, out, _, _ = _study(tmp_path, capsys)
    assert code == 0
    with h5py.File(out) as fh:
        group = fh["records"]
        assert set(group) == {k for r in RECORDS for k in r}
        assert [v.decode() for v in group["quantity"][...]] == ["loss", "gradient", "gradient", "residual"]
        assert group["samples"].dtype.kind == "i" and list(group["samples"][...]) == [4] * 4
        bias = group["bias"][...]
        assert bias[0] == -0.2 and np.isnan(bias[1:]).all()
        p = group["bias_p"][...]
        assert np.isnan(p[0]) and p[1] == 0.01234 and np.isnan(p[2]) and p[3] == 0.25
        assert list(group["bias_t_df"][1:]) == [7.25, 7.0, 3.0] and np.isnan(group["bias_t_df"][0])


def test_the_slopes_comparisons_and_versions_are_attributes_of_their_own(tmp_path, monkeypatch, capsys):
    """``slopes`` and ``comparisons`` are the strict JSON of each (not of one another, a
    non-finite SE ``null``), the JSON file has both, and the versions are recorded as text."""
    from pinnlab.io.results import _versions

    _canned(monkeypatch, RECORDS)
    js = tmp_path / "est.json"
    code, out, _, _ = _study(tmp_path, capsys, "--json", js)
    assert code == 0
    with h5py.File(out) as fh:
        slopes, comparisons = json.loads(fh.attrs["slopes"]), json.loads(fh.attrs["comparisons"])
        versions = {key: fh.attrs[key] for key in _versions()}
        assert fh.attrs["kind"] == "estimator_study"
    assert slopes["gradient/biased/independent/d=3/sigma=0.1"] == {"variance_slope": -2.0, "variance_slope_se": None}
    assert slopes["loss/biased/independent/d=3/sigma=0.1"]["bias_slope"] == -1.23456
    assert comparisons == COMPARISONS
    assert versions and versions == {key: str(value) for key, value in _versions().items()}
    data = json.loads(js.read_text())
    assert data["comparisons"] == COMPARISONS and data["slopes"] == slopes


def test_the_printed_lines_are_the_biased_loss_slopes_gradient_tests_and_gradient_comparisons(
        tmp_path, monkeypatch, capsys):
    """Printed: the biased loss's bias slope to 3 decimals, the gradient's bias test where
    its p-value is finite (not the residual's, not a NaN one), the gradient's variance
    ratio with a signed z and the halving prediction where there is one (not the loss's)."""
    _canned(monkeypatch, RECORDS)
    code, _, out, err = _study(tmp_path, capsys)
    assert code == 0
    assert out == [
        "loss/biased/independent/d=3/sigma=0.1: bias slope -1.235 ± 0.057",
        "gradient bias, biased, independent, d=3, K=4: t = +3.14 (7.2 df), p = 0.012",
        "gradient variance unbiased/biased, independent, d=3, K=4: 3.00 (z = -1.2; halving predicts 0.76)",
        "gradient variance unbiased/biased, shared, d=3, K=8: 0.50 (z = +2.2)",
    ], out
    assert not any("warning" in line or "error" in line for line in err), err


ZERO = {**RECORDS[0], "sigma": 1.0, "variance": 0.0}
BROKEN = {**RECORDS[1], "sigma": 1.0, "variance": math.nan}


def test_records_of_zero_variance_are_a_warning_on_stderr_counted_of_all(tmp_path, monkeypatch, capsys):
    """Every replicate alike: a warning (on stderr, not among the results) counting those
    records of all, at σ as the config writes it; the study still exits 0."""
    _canned(monkeypatch, [*RECORDS, ZERO], slopes={}, comparisons=[])
    code, _, out, err = _study(tmp_path, capsys)
    assert code == 0
    assert not any("warning" in line for line in out), out
    (warning,) = [line for line in err if line.startswith("warning:")]
    assert warning.startswith("warning: 1 of 5 records have a variance of exactly 0 (every replicate alike, at "
                              "σ = 1: "), warning


def test_a_non_finite_variance_is_written_as_nan_and_exits_1_counted_of_all(tmp_path, monkeypatch, capsys):
    """A record with a NaN variance: the file is written (the variance NaN), the last line
    is the error counting it of all records at σ as the config writes it, exit 1."""
    _canned(monkeypatch, [*RECORDS, BROKEN], slopes={}, comparisons=[])
    code, out, _, err = _study(tmp_path, capsys)
    assert code == 1
    assert err[-1].startswith("pinnlab: error: 1 of 5 records have a non-finite bias² or variance (at σ = 1: "), err
    with h5py.File(out) as fh:
        variance = fh["records/variance"][...]
    assert list(variance[:4]) == [0.5, 0.25, 0.75, 0.125] and np.isnan(variance[4])


def test_every_studied_dimension_is_run_on_its_own_and_all_are_written(tmp_path, monkeypatch, capsys):
    """``study.dims: [3, 4]``: one run per dimension, each of its own d, and the file holds
    the records of both, in the order of the dimensions."""
    dims = []

    def run(spec, **kwargs):
        (dim,) = spec.dims
        dims.append(dim)
        return {"records": [{**r, "dim": dim} for r in RECORDS[:2]]}

    monkeypatch.setattr(estimator_study, "run_estimator_study", run)
    code, out, _, _ = _study(tmp_path, capsys, "study.dims=[3, 4]")
    assert code == 0 and dims == [3, 4]
    with h5py.File(out) as fh:
        assert list(fh["records/dim"][...]) == [3, 3, 4, 4]
        assert [v.decode() for v in fh["records/quantity"][...]] == ["loss", "gradient"] * 2


# ----------------------------------------------------------------------------- the figures

KS = (4, 8, 16, 32)


def _loss_records(ks=KS, changes=None):
    """The loss series of test_study_plot_data (variance 10/K, SE 1/K but 6/K at K = 8;
    bias −3/K at SE 0.3/K), with ``changes`` (K → record keys) applied."""
    return [{**_record("loss", k), **(changes or {}).get(k, {})} for k in ks]


def _bands(ax):
    """The filled bands of ``ax`` (not the error bars' line collections)."""
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _plot(tmp_path, figures, records):
    written = study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    return [p.name for p in written], figures


def test_the_variance_fit_is_the_weighted_line_with_a_band_of_two_se_of_its_slope(tmp_path, figures):
    """The variances 10/K lie on a line of slope −1: weighted by (SE/V)⁻² (100, but
    100/36 at K = 8) it passes through the weighted means, its SE is 1/√Σw(log K − x̂)²
    (no scatter to scale it), the band spans slope ± 2 SE and the label gives both."""
    _plot(tmp_path, figures, _loss_records())
    ax = figures["estimator_loss.png"].axes[0]
    lx = np.log(KS)
    w = np.array([100.0, 100.0 / 36, 100.0, 100.0])
    cx = (w * lx).sum() / w.sum()
    cy = (w * np.log(10.0 / np.array(KS))).sum() / w.sum()
    se = 1.0 / math.sqrt((w * (lx - cx) ** 2).sum())
    (band,) = _bands(ax)
    vertices = band.get_paths()[0].vertices
    for k in (4, 32):
        at = vertices[np.isclose(vertices[:, 0], k, rtol=1e-9)][:, 1]
        edges = [math.exp(cy + s * (math.log(k) - cx)) for s in (-1 - 2 * se, -1 + 2 * se)]
        assert (at.min(), at.max()) == pytest.approx((min(edges), max(edges)), rel=1e-9)
    (fit,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert fit.get_ydata() == pytest.approx(10.0 / fit.get_xdata(), rel=1e-9)
    assert ax.get_legend_handles_labels()[1] == [f"biased, independent, d=5, σ=0.05 (slope -1.00 ± {se:.2f})"]


def test_two_k_get_no_variance_fit_nor_band(tmp_path, figures):
    """A line through two points has no error to show: no band, no dashed line, no slope
    in the variance panel's label."""
    _plot(tmp_path, figures, _loss_records(ks=(4, 8)))
    ax = figures["estimator_loss.png"].axes[0]
    assert not _bands(ax) and not any(line.get_linestyle() == "--" for line in ax.lines)
    assert ax.get_legend_handles_labels()[1] == ["biased, independent, d=5, σ=0.05 (no fit: fewer than 3 K)"]


def test_a_loss_bias_within_two_se_of_zero_is_drawn_hollow(tmp_path, figures):
    """The loss's |bias| points are hollow (the error bars' own markers), filled only
    where the bias is more than 2 SE from 0: here not at K = 16, whose bias is 0.1 SE."""
    _plot(tmp_path, figures, _loss_records(changes={16: {"bias": 0.1 * 0.3 / 16}}))
    ax = figures["estimator_loss.png"].axes[1]
    (container,) = ax.containers
    assert container.lines[0].get_markerfacecolor() == "none"
    ((xs, ys, filled),) = _markers(ax, container)
    assert xs == [4, 8, 32] and ys == pytest.approx([3.0 / 4, 3.0 / 8, 3.0 / 32]) and filled
    assert ax.get_legend_handles_labels()[1] == [
        "biased, independent, d=5, σ=0.05 (no fit: not 2 SE from 0, with one sign, at every K)"]


def _gradient(k, bias2, bias2_se):
    return {**_record("gradient", 4), "samples": k, "samples_per_draw": k, "variance": 1.0 / k,
            "variance_se": 0.1 / k, "bias2": bias2, "bias2_se": bias2_se}


def test_an_upper_bound_of_zero_is_not_drawn_and_the_others_get_arrows_in_view(tmp_path, figures):
    """bias² = 0 ± 0.1 and 0.01 ± 0.1: hollow at their bounds 0.2 and 0.21, each with an
    arrow down 0.3 decades whose tip the y axis holds; bias² = −1 with SE 0 has the bound
    0, which a log axis cannot show: no marker, no arrow."""
    _plot(tmp_path, figures, [_gradient(4, 0.0, 0.1), _gradient(8, -1.0, 0.0), _gradient(16, 0.01, 0.1)])
    ax = figures["estimator_gradient.png"].axes[1]
    (hollow,) = [line for line in ax.lines if line.get_linestyle() == "None" and len(line.get_xdata())]
    assert list(hollow.get_xdata()) == [4, 16] and list(hollow.get_ydata()) == pytest.approx([0.2, 0.21])
    assert hollow.get_markerfacecolor() == "none"
    arrows = [(text.xy, text.xyann) for text in ax.texts]
    assert len(arrows) == 2
    for ((x, tip), (x0, top)), (k, bound) in zip(arrows, [(4, 0.2), (16, 0.21)]):
        assert (x, x0) == (k, k) and top == pytest.approx(bound) and tip == pytest.approx(bound * 10 ** -0.3)
    assert ax.get_ylim()[0] <= 0.2 * 10 ** -0.3
    assert ax.get_yscale() == "log"


def test_residual_records_get_a_figure_of_their_own_after_the_loss_and_gradient(tmp_path, figures):
    records = [{**_gradient(k, 1.0 / k, 0.01 / k), "quantity": q} for q in ("residual", "gradient") for k in KS]
    names, _ = _plot(tmp_path, figures, records)
    assert names == ["estimator_gradient.png", "estimator_residual.png"]
    ax_var, ax_bias = figures["estimator_residual.png"].axes[:2]
    assert ax_var.get_title() == "residual: variance of the estimate"
    assert ax_bias.get_title() == "residual: bias against the large-K reference"
    assert figures["estimator_residual.png"].get_suptitle().startswith("Estimator study, heat: residual ")


def test_eleven_series_are_coloured_by_d_and_sigma():
    """More than 10 series: the colour says (d, σ), the marker (loss, noise): 11 series
    over 6 dimensions take C0…C5, the biased and unbiased series at one d alike."""
    series = sorted([*(("biased", "shared", d, 0.1) for d in range(1, 7)),
                     *(("unbiased", "shared", d, 0.1) for d in range(1, 6))])
    styles = study_plots._series_styles(series)
    for d in range(1, 6):
        assert styles[("biased", "shared", d, 0.1)]["color"] == styles[("unbiased", "shared", d, 0.1)]["color"] \
            == f"C{d - 1}"
    assert styles[("biased", "shared", 6, 0.1)]["color"] == "C5"
    assert styles[("biased", "shared", 1, 0.1)]["marker"] != styles[("unbiased", "shared", 1, 0.1)]["marker"]


def test_the_legends_are_axes_without_frame_in_a_row_as_tall_as_their_entries(tmp_path, figures):
    """Two series: the figure is 12 × (4.6 + 2·0.16 + 0.3) inches, the legend row is two
    axes switched off holding the fontsize-7 legends of the panels above them."""
    records = [*_loss_records(), *({**r, "noise": "shared"} for r in _loss_records())]
    _plot(tmp_path, figures, records)
    fig = figures["estimator_loss.png"]
    assert tuple(fig.get_size_inches()) == pytest.approx((12.0, 4.6 + 2 * 0.16 + 0.3))
    panels, legends = fig.axes[:2], fig.axes[2:]
    assert len(legends) == 2
    for panel, ax in zip(panels, legends):
        assert not ax.axison
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == panel.get_legend_handles_labels()[1]
        assert {t.get_fontsize() for t in legend.get_texts()} == {7.0}

