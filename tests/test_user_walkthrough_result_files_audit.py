"""A new user's walk through the README's result files, read with h5py/json/csv in their
own scripts: each file kind made by a tiny run and its numbers recomputed from what it
stores (the slice's u* from the exact solution, the term columns against the trace, a
training study's summary against its cells and its CSV), whether the config a file
records runs again, the plots drawn from it, and the benchmarks' --json records against
their docstrings."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnlab.cli import main

from .studies.test_study_plots import _study_file
from .studies.test_study_plots_and_slopes import _estimator_file, _legend_entries
from .tuning.micro_configs import WEIGHT_FG2U

ROOT = Path(__file__).resolve().parents[1]

TIME_DEPENDENT = """\
equation: {name: fokker_planck_iso, dim: 3, seed: 0}
model: {width: 8, depth: 2}
estimator: {samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 8, dtype: float64}
"""
"""A time-dependent problem off the unit ball (its slice fixes the other coordinates at
"median"), with an even number of test points."""

THREE_TERMS = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
loss: {kind: biased, weighting: lra, weighting_options: {every: 1}}
trainer: {steps: 4, eval_every: 2, test_points: 20, batch_size: 8, dtype: float64}
data: {source: synthetic, points: 10, train: true}
"""
"""Residual, boundary and data terms whose weights LRA changes at every step."""

FRESH_ESTIMATOR = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 4, depth: 2}
trainer: {dtype: float64}
study:
  kind: estimator
  samples: [4]
  sigmas: [0.1]
  noise: [shared]
  quantities: [loss]
  replicates: 4
  points: 2
  reference_samples: 8
  reference_replicates: 4
  init: fresh
"""
"""An estimator study of the seeded initial network: it trains nothing."""

TRAINING_STUDY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4}
study:
  kind: training
  variants:
    biased: [loss.kind=biased]
    unbiased: [loss.kind=unbiased]
  grid:
    equation.dim: [3]
    trainer.seed: [0, 1]
  columns: equation.dim
"""
"""Two variants × two seeds in one column: each summary row the mean of two cells."""


def _run(args):
    return main([str(a) for a in args])


def _solve(tmp_path, text, name="run.h5"):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    out = tmp_path / name
    assert _run(["solve", cfg, "-o", out, "--progress", "off"]) == 0
    return out


# -- bugs ---------------------------------------------------------------------------------


def test_the_slice_u_true_is_the_exact_solution_at_the_test_sets_medians(tmp_path):
    """README, Result files: ``others`` "median": the coordinates off the slice are "at the
    test set's medians". A user recomputes /slices/main/u_true from the exact solution at
    (grid_a[i], grid_b[j]) with the other coordinates at the median of /eval/x: with 10
    test points (the median the mean of the two middle values) it should match."""
    from pinnlab.equations import FokkerPlanckIso

    out = _solve(tmp_path, TIME_DEPENDENT)
    with h5py.File(out) as fh:
        sl = fh["slices/main"]
        assert sl.attrs["others"] == "median" and list(sl.attrs["dims"]) == [0, 3]
        x = fh["eval/x"][...].astype(np.float64)
        grid_a, grid_b, stored = sl["grid_a"][...], sl["grid_b"][...], sl["u_true"][...]
    assert x.shape == (10, 4)
    a, b = np.meshgrid(grid_a, grid_b, indexing="ij")
    points = np.tile(np.median(x, axis=0), (a.size, 1))
    points[:, 0], points[:, 3] = a.ravel(), b.ravel()
    exact = FokkerPlanckIso(3, seed=0).exact(torch.from_numpy(points)).numpy().reshape(a.shape)
    np.testing.assert_allclose(stored, exact, rtol=1e-9, atol=1e-9)


def test_a_variance_series_at_two_k_says_why_it_has_no_fit(tmp_path, figures):
    """README: ``pinnlab plot STUDY.h5`` draws variance against K "with fitted slopes and
    bands", and its title promises "dashed: log–log fit". With K = 4 and 8 only, the
    JSON's ``slopes`` give every series a ``variance_slope``; the plot draws none, so its
    legend should say why (as the bias panel's does) or give that slope."""
    from pinnlab.plots import studies

    path = tmp_path / "est.h5"
    _estimator_file(path, ks=(4, 8))
    with h5py.File(path) as fh:
        slopes = json.loads(fh.attrs["slopes"])
    assert all("variance_slope" in entry for entry in slopes.values())  # the JSON has a slope
    studies.plot_estimator_study(path, tmp_path)
    fig = figures["estimator_loss.png"]
    variance_legend = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None][0]
    labels = [entry[0] for entry in _legend_entries(variance_legend)]
    assert len(labels) == 4
    assert all("slope" in label or "no fit" in label for label in labels), labels


def test_every_key_of_a_bench_tuning_record_is_documented(monkeypatch, tmp_path):
    """bench_tuning's docstring lists the keys of its --json records ("every key in every
    record"). The evaluation runs replaced by stand-ins returning only documented keys,
    the records ``main`` writes should still have documented keys only."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    def run_method(name, data, method, budget):
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "tune_seconds": 1.0,
                "outer_steps": 2, "tuned": {"weights.boundary": 1.0}, "tune_status": "ok", "over_budget": False,
                "note": ""}

    monkeypatch.setattr(bench_tuning, "run_method", run_method)
    monkeypatch.setattr(bench_tuning, "run_untuned", lambda *args, **kwargs: {})  # (the baselines' timing probe)
    out = tmp_path / "t.json"
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--malloc", "default", "--quick", "--problems", "a",
                                      "--methods", "fg2u", "--json", str(out)])
    assert bench_tuning.main() == 0
    records = json.loads(out.read_text())["records"]
    undocumented = {key for record in records for key in record if f'"{key}"' not in bench_tuning.__doc__}
    assert not undocumented, undocumented


@pytest.mark.filterwarnings("ignore:No artists with labels found")
def test_the_error_figure_names_a_variant_with_no_ok_cell(tmp_path, figures):
    """README: cells that did not end ok are left out of the means and counted. A study
    whose variant ``adam`` diverged in every cell (``pinnlab study`` with a variant
    ``trainer.lr=1e30``) draws only ``sgd``; a reader of training_error_vs_dim.png should
    learn that ``adam`` ran and has no ok cell, not think it was never in the study."""
    from pinnlab.plots import studies

    path = tmp_path / "study.h5"
    _study_file(path, "equation.dim", [10.0, 100.0], [0.5, 0.2], failed=[("adam", 10.0), ("adam", 100.0)])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    legend = ax.get_legend()
    texts = [t.get_text() for t in ax.texts] + ([t.get_text() for t in legend.get_texts()] if legend else [])
    assert [bars.get_label() for bars in ax.containers] == ["sgd"]  # the one variant with an error to draw
    assert any("adam" in text for text in texts), texts


def test_the_config_an_estimator_study_records_runs_again(tmp_path, capsys):
    """README: the root attribute ``config`` is the fully resolved YAML, and "the resolved
    config a result file records leaves out" the settings refused where they would be
    ignored. A user reruns a study from its file's config (as a solve's or a tuning's
    reruns, which give the same numbers): it should be accepted and give the same records."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(FRESH_ESTIMATOR)
    assert _run(["study", cfg, "-o", tmp_path / "est.h5"]) == 0
    with h5py.File(tmp_path / "est.h5") as fh:
        recorded = fh.attrs["config"]
        variance = fh["records/variance"][...]
    again = tmp_path / "again.yaml"
    again.write_text(recorded)
    capsys.readouterr()
    code = _run(["study", again, "-o", tmp_path / "again.h5"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(tmp_path / "again.h5") as fh:
        np.testing.assert_array_equal(fh["records/variance"][...], variance)


# -- behaviour that is right but was not pinned ---------------------------------------------


def test_the_term_columns_are_the_rows_own_step_while_the_loss_is_the_mean_since_the_last_row(tmp_path):
    """README: /history ``loss`` is the mean training loss since the previous row; the
    /history/terms columns are the unweighted losses and weights of the row's own step
    (the terms plot says "term loss at the row's step"): Σ weight·loss_term is the
    /trace/loss of that step, with LRA changing the weights at every step."""
    out = _solve(tmp_path, THREE_TERMS)
    with h5py.File(out) as fh:
        step = fh["history/step"][...]
        trace = fh["trace/loss"][...]
        mean = fh["history/loss"][...]
        terms = {name: fh["history/terms"][name][...] for name in fh["history/terms"]}
    assert step.tolist() == [2, 4]
    names = ("residual", "boundary", "data")
    assert sorted(terms) == sorted([f"loss_{n}" for n in names] + [f"weight_{n}" for n in names])
    assert len(set(terms["weight_boundary"].tolist())) == 2  # LRA moved the weight between rows
    weighted = sum(terms[f"weight_{n}"] * terms[f"loss_{n}"] for n in names)
    np.testing.assert_allclose(weighted, trace[step - 1], rtol=1e-9)  # row at step s: the s-th trace entry
    np.testing.assert_allclose(mean, [trace[:2].mean(), trace[2:].mean()], rtol=1e-12)
    assert not np.allclose(weighted, mean)


def test_a_training_studys_summary_csv_and_json_agree_with_its_cells(tmp_path):
    """README: a training study is summarised as Markdown, CSV and HDF5 (and --json);
    /summary holds, per variant and column, runs, left_out and <metric>_mean/_std (sample
    std) of the cells that ended ok. The CSV rows are the /summary rows, the JSON's
    ``summary`` too, its ``records`` the /cells rows, and every mean and std is that of
    the cells' values (each cell's rel_l2 that of its own solve file)."""
    cfg = tmp_path / "study.yaml"
    cfg.write_text(TRAINING_STUDY)
    out, js = tmp_path / "s.h5", tmp_path / "s.json"
    assert _run(["study", cfg, "-o", out, "--json", js]) == 0
    payload = json.loads(js.read_text())
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    with h5py.File(out) as fh:
        cells = {k: (v.asstr()[...] if v.dtype == object else v[...]) for k, v in fh["cells"].items()}
        summary = {k: (v.asstr()[...] if v.dtype == object else v[...]) for k, v in fh["summary"].items()}
        cell_dir = Path(fh.attrs["cell_dir"])
    assert len(rows) == len(payload["summary"]) == len(summary["variant"]) == 2
    assert len(payload["records"]) == len(cells["key"]) == 4
    for i, row in enumerate(rows):
        assert set(row) == set(summary) == set(payload["summary"][i])
        for key, text in row.items():
            value = summary[key][i]
            if isinstance(value, str):
                assert text == value == payload["summary"][i][key]
            else:
                assert float(text) == pytest.approx(float(value), rel=1e-15)
                assert payload["summary"][i][key] == pytest.approx(float(value), rel=1e-15)
        chosen = cells["variant"] == summary["variant"][i]
        assert summary["runs"][i] == chosen.sum() == 2 and summary["left_out"][i] == 0
        for metric in ("rel_l2", "best_rel_l2", "seconds_per_step", "peak_mem_mb"):
            assert summary[f"{metric}_mean"][i] == pytest.approx(cells[metric][chosen].mean(), rel=1e-12)
            assert summary[f"{metric}_std"][i] == pytest.approx(cells[metric][chosen].std(ddof=1), rel=1e-12)
    for i, record in enumerate(payload["records"]):
        assert record["key"] == cells["key"][i] and record["rel_l2"] == cells["rel_l2"][i]
        with h5py.File(cell_dir / f"{cells['key'][i]}.h5") as cell:
            assert cell["final"].attrs["rel_l2"] == cells["rel_l2"][i]
            assert 1.0 / cell["final"].attrs["steps_per_second"] == pytest.approx(cells["seconds_per_step"][i])


def test_the_config_a_tuning_records_runs_again_to_the_same_numbers(tmp_path):
    """README: the root attribute ``config`` is "the fully resolved YAML". Written to a
    file and given to ``pinnlab tune`` again it is accepted and reproduces the tuning
    (φ after every outer step) and the final solve bit for bit."""
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(WEIGHT_FG2U)
    first, second = tmp_path / "t.h5", tmp_path / "again.h5"
    assert _run(["tune", cfg, "-o", first, "--progress", "off"]) == 0
    with h5py.File(first) as fh:
        recorded = fh.attrs["config"]
        phi = fh["tune/phi/weights.boundary"][...]
        rel_l2 = fh["final"].attrs["rel_l2"]
    assert "tune:" in recorded and "weights:" in recorded
    again = tmp_path / "again.yaml"
    again.write_text(recorded)
    assert _run(["tune", again, "-o", second, "--progress", "off"]) == 0
    with h5py.File(second) as fh:
        assert fh.attrs["config"] == recorded
        np.testing.assert_array_equal(fh["tune/phi/weights.boundary"][...], phi)
        assert fh["final"].attrs["rel_l2"] == rel_l2
