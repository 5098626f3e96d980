"""Bias–variance study formulas, the CLI's JSON schema, and resumable training studies."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pinnlab.cli import main
from pinnlab.equations import EQUATIONS, LAPLACIAN, AbstractEquation, Term
from pinnlab.io import CheckpointError
from pinnlab.studies.estimator_study import (
    EstimatorStudySpec,
    _moments,
    compare_losses,
    loglog_slope,
    projected_bias_test,
    run_estimator_study,
    summarise,
)
from pinnlab.studies.training_study import expand_cells, markdown_table

RECORD_KEYS = {"quantity", "loss", "noise", "dim", "samples", "sigma", "bias2", "bias2_se", "variance",
               "variance_se", "mse"}


def _gaussian_moments(generator, count, mean, chol, groups=10):
    draws = mean + torch.randn(count, mean.numel(), generator=generator, dtype=torch.float64) @ chol.T
    return _moments(lambda i: {"x": draws[i]}, count, groups=groups)["x"]


def test_summary_debiases_by_both_standard_errors():
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(2, dtype=torch.float64)
    est = _gaussian_moments(g, 100, torch.tensor([1.0, 2.0], dtype=torch.float64), 2 * eye)
    ref = _gaussian_moments(g, 10, torch.tensor([0.5, 2.0], dtype=torch.float64), eye)
    out = summarise("gradient", est, ref)
    s2 = est.var / 100 + ref.var / 10
    assert out["bias2"] == pytest.approx(float(((est.mean - ref.mean) ** 2 - s2).sum()))
    assert out["variance"] == pytest.approx(float(est.var.sum()))
    assert out["mse"] == pytest.approx(out["bias2"] + out["variance"])
    residual = summarise("residual", est, ref)
    assert residual["variance"] == pytest.approx(out["variance"] / 2)  # averaged over points
    loss = summarise("loss", est, ref)
    assert loss["bias"] == pytest.approx(float(est.mean[0] - ref.mean[0]))


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_bias2_standard_error_is_calibrated_for_correlated_coordinates(shift):
    """Estimate ~ N(d, C), reference ~ N(0, C) with C = 0.05·I + 11ᵀ in 20 coordinates
    (correlated like gradient coordinates). The debiased ‖m̄ − r̄‖² − tr V/R − tr W/R_ref
    has variance 4dᵀΣd + 2tr(Σ²) + 2tr(C²)/((R−1)R²) + 2tr(C²)/((R_ref−1)R_ref²),
    Σ = C/R + C/R_ref. Over 200 repetitions the mean jackknife SE² is 1.03× of it when the
    bias dominates (d = 1) and 1.95× at d = 0, where the jackknife is conservative
    (Efron–Stein: the quadratic term counts twice); the tolerances are 15 % and
    [1.3, 2.6]. The per-coordinate formula Σ_j 4d̂_j²s_j² + 2s_j⁴ gives 0.06× and 0.16×."""
    g = torch.Generator().manual_seed(1)
    p, n, nr, reps = 20, 100, 50, 200
    cov = 0.05 * torch.eye(p, dtype=torch.float64) + torch.ones(p, p, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    d = torch.full((p,), shift, dtype=torch.float64)
    total = cov / n + cov / nr
    tr_c2 = float((cov @ cov).trace())
    predicted = (4 * float(d @ total @ d) + 2 * float((total @ total).trace())
                 + 2 * tr_c2 / ((n - 1) * n**2) + 2 * tr_c2 / ((nr - 1) * nr**2))
    se2 = []
    for _ in range(reps):
        out = summarise("gradient", _gaussian_moments(g, n, d, chol), _gaussian_moments(g, nr, 0 * d, chol))
        se2.append(out["bias2_se"] ** 2)
    ratio = float(np.mean(se2)) / predicted
    if shift:
        assert abs(ratio - 1) < 0.15, ratio
    else:
        assert 1.3 < ratio < 2.6, ratio


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_projected_bias_test_is_calibrated_under_zero_bias_and_detects_bias(shift):
    """Same correlated Gaussian model as above (C = 0.05·I + 11ᵀ, 20 coordinates, nearly
    rank one), 300 repetitions. Zero bias: the two-sided p < 0.05 in 5 % of repetitions
    (binomial SE 1.3 %; accepted 1.5–10 %; 5.3 % at this seed), where bias²/SE misleads.
    A bias of 1 per coordinate, along the noisy direction 1, is detected in > 80 % (90 %
    at this seed). Gross miscalibration fails it (dropping the reference's
    variance: 18.7 %); subtler slips do not (normal instead of Welch-t quantiles: 8.7 %;
    the direction from all groups instead of the first halves: 7.3 %), so those rest on
    the derivation in the docstring."""
    g = torch.Generator().manual_seed(2)
    p, n, nr, reps = 20, 100, 50, 300
    cov = 0.05 * torch.eye(p, dtype=torch.float64) + torch.ones(p, p, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    d = torch.full((p,), shift, dtype=torch.float64)
    pvals = []
    for _ in range(reps):
        out = projected_bias_test(_gaussian_moments(g, n, d, chol), _gaussian_moments(g, nr, 0 * d, chol))
        pvals.append(out["bias_p"])
    rejected = float(np.mean(np.asarray(pvals) < 0.05))
    if shift:
        assert rejected > 0.8, rejected
    else:
        assert 0.015 < rejected < 0.10, rejected


def test_grouped_moments_pool_exactly_and_the_jackknife_se_of_the_trace_is_calibrated():
    """Pooled group moments equal the plain mean/variance; for Gaussian draws with
    covariance Σ the trace estimate has variance 2·tr(Σ²)/(R − 1), which the mean of the
    jackknife SE² matches within 10 % over 300 repetitions (its own SE is ≈ 3 %)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    draws = torch.randn(37, 4, generator=g, dtype=torch.float64) * scale
    moments = _moments(lambda i: {"x": draws[i]}, 37, groups=5)["x"]
    torch.testing.assert_close(moments.mean, draws.mean(0), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(moments.var, draws.var(0), rtol=1e-12, atol=1e-13)
    assert moments.count == 37
    count, reps = 100, 300
    predicted = 2 * float((scale**4).sum()) / (count - 1)
    se2 = []
    for _ in range(reps):
        x = torch.randn(count, 4, generator=g, dtype=torch.float64) * scale
        se2.append(_moments(lambda i, x=x: {"x": x[i]}, count)["x"].trace_variance_se() ** 2)
    assert abs(np.mean(se2) / predicted - 1) < 0.1, (np.mean(se2), predicted)


def test_variance_comparison_reports_ratio_and_z():
    rows = [{"quantity": "gradient", "loss": loss, "noise": "independent", "dim": 10, "samples": 8, "sigma": 0.1,
             "variance": v, "variance_se": se} for loss, v, se in (("biased", 2.0, 0.3), ("unbiased", 3.0, 0.4))]
    (row,) = compare_losses(rows)
    assert row["variance_ratio"] == pytest.approx(1.5) and row["z"] == pytest.approx(1.0 / 0.5)


def test_halving_prediction_uses_the_biased_cell_at_the_per_draw_samples():
    """V_b(K′)/(2 V_b(K)) with K′ the unbiased loss's samples per draw: K/2 (split) or K (same)."""
    def row(loss, k, per_draw, v):
        return {"quantity": "gradient", "loss": loss, "noise": "shared", "dim": 10, "samples": k,
                "samples_per_draw": per_draw, "sigma": 0.1, "variance": v, "variance_se": 0.1}

    biased = [row("biased", 4, 4, 10.0), row("biased", 8, 8, 4.0)]
    (split,) = [r for r in compare_losses(biased + [row("unbiased", 8, 4, 5.0)]) if r["samples"] == 8]
    assert split["halving_prediction"] == pytest.approx(10.0 / 8.0)
    (same,) = [r for r in compare_losses(biased + [row("unbiased", 8, 8, 2.0)]) if r["samples"] == 8]
    assert same["halving_prediction"] == pytest.approx(0.5)
    (alone,) = compare_losses([row("biased", 4, 4, 10.0), row("unbiased", 4, 2, 9.0)])
    assert alone["halving_prediction"] is None  # no biased cell at K = 2


def test_halving_prediction_is_none_for_residual_rows():
    """The halving argument compares a product of two draws with a square (loss, gradient);
    the unbiased loss's residual record is a single K′-sample draw, so it has no prediction."""
    rows = [{"quantity": q, "loss": loss, "noise": "shared", "dim": 10, "samples": k, "samples_per_draw": per,
             "sigma": 0.1, "variance": v, "variance_se": 0.1}
            for q in ("residual", "loss", "gradient")
            for loss, k, per, v in (("biased", 4, 4, 10.0), ("biased", 8, 8, 4.0), ("unbiased", 8, 4, 5.0))]
    by_quantity = {r["quantity"]: r for r in compare_losses(rows) if r["samples"] == 8}
    assert by_quantity["residual"]["halving_prediction"] is None
    assert by_quantity["residual"]["variance_ratio"] == pytest.approx(5.0 / 4.0)
    assert by_quantity["loss"]["halving_prediction"] == pytest.approx(10.0 / 8.0)
    assert by_quantity["gradient"]["halving_prediction"] == pytest.approx(10.0 / 8.0)


def test_loglog_slope_recovers_power_law():
    k = np.array([4, 8, 16, 32, 64.0])
    slope, se = loglog_slope(k, 3.0 / k)
    assert slope == pytest.approx(-1.0) and se < 1e-10


def test_weighted_loglog_slope_against_numpys_weighted_fit():
    """With the points' standard errors the slope is weighted least squares of log y with
    weights (y / se)², and its SE the one those errors give, 1/√(Σw(log K − log K̂)²),
    times √(χ²/(n − 2)) when that is above 1: numpy's polyfit with w = y/se and
    cov="unscaled" in float64, to 1e-12, on a series that scatters more than its errors
    say (scaled) and on one that scatters less (not scaled)."""
    k = np.array([4, 8, 16, 32, 64.0])
    rng = np.random.default_rng(3)
    y = 3.0 / k * np.exp(0.2 * rng.standard_normal(5))
    lx, ly = np.log(k), np.log(y)
    for se_rel in (0.02 * np.array([1, 2, 3, 1, 2.0]), 2.0 * np.array([1, 2, 3, 1, 2.0])):
        coef, cov = np.polyfit(lx, ly, 1, w=1 / se_rel, cov="unscaled")
        chi2 = float(((ly - np.polyval(coef, lx)) / se_rel) ** 2 @ np.ones(5))
        slope, se = loglog_slope(k, y, se_rel * y)
        assert slope == pytest.approx(coef[0], rel=1e-12)
        assert se == pytest.approx(math.sqrt(cov[0, 0]) * max(1.0, math.sqrt(chi2 / 3)), rel=1e-12)
    assert chi2 / 3 < 1  # (the second series: its errors, not its scatter, set the SE)


def test_slope_se_reflects_the_points_errors_when_four_points_happen_to_line_up():
    """Four variances of a study (K = 4…32) with 3–14 % standard errors: their OLS scatter
    put the slope at −0.972 ± 0.0035, a band 13× too narrow for errors of that size; with
    the errors the SE is 1/√(Σw(log K − log K̂)²) ≈ 0.045."""
    k = [4, 8, 16, 32]
    var, se = [69.88, 35.76, 18.33, 9.251], [6.68, 4.9, 0.468, 0.382]
    assert loglog_slope(k, var)[1] < 0.005
    w = (np.array(var) / np.array(se)) ** 2
    lx = np.log(k)
    expected = 1 / math.sqrt(float((w * (lx - (w * lx).sum() / w.sum()) ** 2).sum()))
    slope, slope_se = loglog_slope(k, var, se)
    assert slope_se == pytest.approx(expected, rel=1e-12) and 0.04 < slope_se < 0.05
    assert slope == pytest.approx(-0.97, abs=0.01)


def test_a_slope_with_an_unusable_standard_error_falls_back_to_ordinary_least_squares():
    """A NaN or zero SE (a variance of a series whose replicates agree) gives no weight:
    the fit is OLS with its scatter SE, as without SEs."""
    k, y = [4, 8, 16, 32], [1.0, 0.6, 0.2, 0.13]
    for se in ([0.1, math.nan, 0.1, 0.1], [0.1, 0.0, 0.1, 0.1]):
        assert loglog_slope(k, y, se) == loglog_slope(k, y)


def test_loglog_slope_of_a_zero_variance_is_nan_without_a_warning():
    """A variance of exactly 0 (every replicate alike) has no logarithm: NaN slope and SE,
    not numpy's "divide by zero encountered in log" on stderr and a slope of −inf's fit."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(v) for v in loglog_slope([4, 8, 16], [1.0, 0.0, 0.5]))
        assert all(math.isnan(v) for v in loglog_slope([4, 8, 16], [1.0, -2.0, 0.5]))
        assert all(math.isnan(v) for v in loglog_slope([4, 8, 16], [1.0, math.inf, 0.5]))
        # a single K repeated has no slope either (the weighted fit divided by Σw(log K − log K̂)² = 0)
        assert all(math.isnan(v) for v in loglog_slope([8, 8, 8], [1.0, 0.9, 1.1], [0.1, 0.1, 0.1]))


def test_loglog_slope_standard_error_on_noisy_data():
    """y = 3/K · exp(s·ε), ε ~ N(0, 1), s = 0.3, at the five K of a study. (1) On one noisy
    series the SE equals scipy's independent OLS slope SE (linregress) to 1e-10. (2) Over
    4000 seeded series the mean SE² matches the simulated variance of the slope: the OLS
    SE² is unbiased for it with n − 2 degrees of freedom; the ratio's sampling error is
    ≈ 2.6 % (slope variance sqrt(2/3999) = 2.2 %, mean SE² sqrt(2/3)/sqrt(4000) = 1.3 %),
    the tolerance 10 %; it is 0.98 at this seed. Either check alone fails the slips: n − 1
    degrees of freedom give a ratio of 0.74, n 0.59, a missing square root 0.03."""
    from scipy import stats

    rng = np.random.default_rng(5)
    k = np.array([8, 16, 32, 64, 128.0])
    y = 3.0 / k * np.exp(0.3 * rng.standard_normal(k.size))
    slope, se = loglog_slope(k, y)
    reference = stats.linregress(np.log(k), np.log(y))
    assert slope == pytest.approx(reference.slope, abs=1e-10)
    assert se == pytest.approx(reference.stderr, rel=1e-10)
    fits = np.array([loglog_slope(k, 3.0 / k * np.exp(0.3 * rng.standard_normal(k.size))) for _ in range(4000)])
    assert abs(fits[:, 0].mean() + 1) < 0.02
    ratio = float(np.mean(fits[:, 1] ** 2) / fits[:, 0].var(ddof=1))
    assert abs(ratio - 1) < 0.1, ratio


class _LaplaceZeroSource(AbstractEquation):
    """Δu = 0 on the unit ball, no ansatz (u* = 0): the residual of u_σ is Δu_σ, small for
    an untrained network, so the loss's sampling error is small against the bias."""

    name = "laplace_zero_source_test"
    domain = "unit_ball"

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        r = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return r * z / z.norm(dim=1, keepdim=True)

    def exact(self, x, coefficients=None):
        return torch.zeros_like(x[:, 0])

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)),)

    def source(self, x, coefficients):
        return torch.zeros_like(x[:, 0])


def test_biased_loss_bias_equals_residual_variance_for_a_linear_pde(monkeypatch):
    """For a linear PDE (E R̂ = R) the biased loss's bias is exactly mean_x Var R̂(x): the
    study's loss bias must match its own residual variance, and the unbiased loss's bias
    vanish, within the standard errors. On Poisson the untrained network's residual
    (|R| ≈ 5) made the loss's standard error (≈ 2|R|·sd(R̂)/sqrt(draws)) as large as the
    bias itself, so neither a zero bias nor a doubled one was told apart; with a zero
    source the residual is Δu_σ and the bias is 14 standard errors (K = 4: 6.7e-3 ± 4.8e-4
    against a residual variance of 6.7e-3)."""
    monkeypatch.setitem(EQUATIONS, _LaplaceZeroSource.name, _LaplaceZeroSource)
    replicates, points = 400, 16
    spec = EstimatorStudySpec(equation=_LaplaceZeroSource.name, dims=(3,), samples=(4, 16), sigmas=(0.1,),
                              noise=("independent",), quantities=("residual", "loss"), replicates=replicates,
                              points=points, reference_samples=512, reference_replicates=20, problem_seed=1,
                              width=16, depth=3)
    out = run_estimator_study(spec)
    for k in (4, 16):
        rows = {(r["quantity"], r["loss"]): r for r in out["records"] if r["samples"] == k}
        loss, residual = rows[("loss", "biased")], rows[("residual", "biased")]
        assert loss["bias"] > 8 * loss["bias_se"], (k, loss)  # (the check has power)
        # bias of mean R̂² = mean Var R̂; the mean of the points' variance estimates has a
        # relative error of about sqrt(2/(replicates·points)) for points of similar variance
        tolerance = 4 * loss["bias_se"] + 4 * residual["variance"] * math.sqrt(2 / (replicates * points))
        assert abs(loss["bias"] - residual["variance"]) < tolerance, (k, loss, residual)
        assert abs(rows[("loss", "unbiased")]["bias"]) < 4 * rows[("loss", "unbiased")]["bias_se"]


TINY_ESTIMATOR = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 3}
trainer: {dtype: float64}
study:
  kind: estimator
  samples: [4, 8]
  sigmas: [0.1]
  noise: [independent, shared]
  replicates: 10
  points: 4
  reference_samples: 32
  reference_replicates: 4
  init: fresh
"""

TRAINED_ESTIMATOR = TINY_ESTIMATOR.replace("init: fresh", "init: trained").replace(
    "trainer: {dtype: float64}", "trainer: {steps: 5, dtype: float64}")
"""TINY_ESTIMATOR pretrained for 5 steps (the steps are refused where nothing is trained)."""


def test_study_cli_json_schema_and_plots(tmp_path):
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TINY_ESTIMATOR)
    out, js = tmp_path / "est.h5", tmp_path / "est.json"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert set(data) >= {"records", "slopes"}
    assert len(data["records"]) == 2 * 2 * 2 * 3  # K × noise × loss × quantity
    for record in data["records"]:
        assert RECORD_KEYS <= set(record)
        assert record["quantity"] in ("residual", "loss", "gradient")
        assert record["loss"] in ("biased", "unbiased")
    assert main(["plot", str(out), "-o", str(tmp_path / "plots")]) == 0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


def test_the_study_network_gets_every_model_option(tmp_path, monkeypatch):
    """``init: trained`` with ``model.activation: sin``: the study evaluates the pretrained
    weights in a sin network of the config's width and depth (it was a tanh network), and
    every ``model:`` option has a field in the spec that carries it."""
    import dataclasses

    from pinnlab import config as C
    from pinnlab.studies import estimator_study

    assert set(C.ModelSection.model_fields) <= {f.name for f in dataclasses.fields(EstimatorStudySpec)}
    seen = []

    class Spy(estimator_study._Quantities):
        def __init__(self, equation, net, params, x):
            seen.append((net.activation_name, net.width, net.depth, {k: v.clone() for k, v in params.items()}))
            super().__init__(equation, net, params, x)

    monkeypatch.setattr(estimator_study, "_Quantities", Spy)
    trained = []
    from pinnlab import solvers

    real_train = solvers.train

    def spy_train(*args, **kwargs):
        result = real_train(*args, **kwargs)
        trained.append(result.params)
        return result

    monkeypatch.setattr(solvers, "train", spy_train)
    cfg = tmp_path / "sin.yaml"
    cfg.write_text(TRAINED_ESTIMATOR.replace("model: {width: 8, depth: 3}", "model: {width: 6, depth: 3, activation: sin}")
                   .replace("samples: [4, 8]", "samples: [4]")
                   .replace("noise: [independent, shared]", "noise: [independent]"))
    assert main(["study", str(cfg), "-o", str(tmp_path / "sin.h5")]) == 0
    assert [s[:3] for s in seen] == [("sin", 6, 3)]
    for key, value in trained[0].items():
        torch.testing.assert_close(seen[0][3][key], value.double())


def test_a_network_file_of_another_model_is_refused(tmp_path, capsys):
    """``study.init: FILE`` whose network was trained with another ``model:`` (here sin
    against the study's tanh) would be studied as the wrong network: exit 2, one line."""
    import h5py
    import yaml

    from pinnlab import config as C

    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    trained = C.validate({**data, "model": {**data["model"], "activation": "sin"}})
    net = C.make_network(trained.model, 3, seed=0)
    with h5py.File(tmp_path / "run.h5", "w") as fh:
        fh.attrs["config"] = trained.to_yaml()
        for key, value in net.state_dict().items():
            fh[f"params/{key}"] = value.numpy()
    cfg = tmp_path / "est.yaml"
    for model, code in (("{width: 8, depth: 3}", 2), ("{width: 8, depth: 3, activation: sin}", 0)):
        cfg.write_text(TINY_ESTIMATOR.replace("init: fresh", f"init: {tmp_path / 'run.h5'}")
                       .replace("{width: 8, depth: 3}", model).replace("samples: [4, 8]", "samples: [4]")
                       .replace("noise: [independent, shared]", "noise: [independent]"))
        assert main(["study", str(cfg), "-o", str(tmp_path / "est.h5"), "--overwrite"]) == code
    err = capsys.readouterr().err
    assert "its network was trained with model {'width': 8, 'depth': 3, 'activation': 'sin'}" in err


TINY_TRAINING = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 3}
estimator: {samples: 4}
trainer: {steps: STEPS, eval_every: 50, test_points: 50, batch_size: 8}
study:
  kind: training
  variants:
    biased: [loss.kind=biased]
    unbiased: [loss.kind=unbiased]
  grid:
    equation.dim: [3, 4]
    trainer.seed: [0, 1]
  columns: equation.dim
  workers: 1
"""


def test_training_study_cells_and_table():
    cells = expand_cells({"a": ["loss.kind=biased"]}, {"equation.dim": [3, 4], "trainer.seed": [0, 1]})
    assert len(cells) == 4 and len({c.key for c in cells}) == 4
    assert cells[0].overrides == ("loss.kind=biased", "equation.dim=3", "trainer.seed=0")
    summary = [{"variant": "a", "column": 3, "rel_l2_mean": 0.1, "rel_l2_std": 0.01}]
    assert "| a | 1.000e-01 ± 1.0e-02 |" in markdown_table(summary, "equation.dim")
    # a | in a variant name or a column value is escaped: every row has the header's columns
    summary = [{"variant": "a|b", "column": "x|y", "rel_l2_mean": 0.1, "rel_l2_std": 0.01}]
    table = markdown_table(summary, "data.source")
    assert table.splitlines()[0] == "| method | data.source=x\\|y |"
    assert table.splitlines()[2] == "| a\\|b | 1.000e-01 ± 1.0e-02 |"


def test_killed_training_study_skips_finished_cells(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "300"))
    out = tmp_path / "train.h5"
    cells = Path(str(out) + ".cells")
    log = tmp_path / "first_run.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pinnlab.cli", "study", str(cfg), "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if cells.exists() and len(list(cells.glob("*.h5"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"study ended before it could be killed:\n{log.read_text()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name for p in cells.glob("*.h5")}
    assert 2 <= len(finished) < 8 and not out.exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.h5")}
    rerun = subprocess.run([sys.executable, "-m", "pinnlab.cli", "study", str(cfg), "-o", str(out)],
                           capture_output=True, text=True, check=True)
    assert rerun.stderr.count("skip finished cell") == len(finished)
    for name, mtime in mtimes.items():
        assert (cells / name).stat().st_mtime_ns == mtime  # not recomputed
    assert len(list(cells.glob("*.h5"))) == 8 and out.exists()
    assert Path(str(out.with_suffix("")) + ".md").read_text().count("|") > 10


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_an_interrupted_study_stops_its_workers_in_one_line(tmp_path, how):
    """Ctrl-C (SIGINT to the whole process group) printed a KeyboardInterrupt traceback from
    every worker under the parent's line; SIGTERM to the parent ended it on the spot and
    left the workers running. Both now end with one line, the workers gone."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "100000").replace("workers: 1", "workers: 2")
                   .replace("batch_size: 8}", "batch_size: 8, checkpoint_every: 10}"))
    out = tmp_path / "train.h5"
    proc = subprocess.Popen([sys.executable, "-m", "pinnlab.cli", "study", str(cfg), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    cells = Path(str(out) + ".cells")
    deadline = time.time() + 180
    workers = set()
    # until both workers train (a checkpoint each): past their start-up, which imports torch
    while time.time() < deadline and proc.poll() is None and len(list(cells.glob("*.ckpt"))) < 2:
        workers |= _children(proc.pid)
        time.sleep(0.1)
    workers |= _children(proc.pid)
    try:
        assert proc.poll() is None and len(workers) >= 2, "the study ended before it could be interrupted"
        if how == "ctrl_c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        lines = [line for line in err.strip().splitlines()
                 if not line.startswith(("run ", "skip ", "finished ", "cell "))]  # (progress lines)
        assert lines == ["pinnlab: " + ("interrupted" if how == "ctrl_c" else "terminated")
                         + f"; the finished cells are kept in {str(out) + '.cells'!r} (and a cell's checkpoint, "
                         "with trainer.checkpoint_every); the same command continues the study"], err
        assert proc.returncode == (130 if how == "ctrl_c" else 143)
        deadline = time.time() + 30
        while time.time() < deadline and any(_running(w) for w in workers):
            time.sleep(0.1)
        alive = [w for w in workers if _running(w)]
        assert not alive, f"workers {alive} outlived the study"
    finally:  # a failing run must not leave its workers training for the rest of the suite
        for pid in [proc.pid, *workers]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_cells_of_an_edited_config_are_recomputed(tmp_path):
    from pinnlab.studies.training_study import expand_cells, run_training_study

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "20"))
    cells = expand_cells({"biased": ["loss.kind=biased"]}, {"trainer.seed": [0]})
    messages = []
    run_training_study(cfg, cells, tmp_path / "cells", progress=messages.append)
    run_training_study(cfg, cells, tmp_path / "cells", progress=messages.append)
    assert sum("skip finished cell" in m for m in messages) == 1
    cfg.write_text(TINY_TRAINING.replace("STEPS", "30"))  # same cell key, other config
    # kept unless overwrite (a rerun after an interrupted study replaced its cells silently)
    cell = tmp_path / "cells" / f"{cells[0].key}.h5"
    before = cell.read_bytes()
    with pytest.raises(CheckpointError, match=r"\(cell biased \{'trainer.seed': 0\}\) was computed for a different "
                                              r"configuration \(trainer.steps: 20 in the cell, 30 in this run\)$"):
        run_training_study(cfg, cells, tmp_path / "cells", progress=messages.append)
    assert cell.read_bytes() == before
    run_training_study(cfg, cells, tmp_path / "cells", progress=messages.append, overwrite=True)
    assert sum("skip finished cell" in m for m in messages) == 1
    assert sum("finished cell" in m and "skip" not in m for m in messages) == 2


def test_a_cell_file_without_its_final_metrics_is_recomputed(tmp_path):
    """A cell file of the right config whose /final is missing (or lacks a metric) ended
    the study with a KeyError; it is computed again like a cell of another config."""
    import h5py

    from pinnlab.studies.training_study import expand_cells, run_training_study

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "20"))
    cells = expand_cells({"biased": ["loss.kind=biased"]}, {"trainer.seed": [0]})
    first = run_training_study(cfg, cells, tmp_path / "cells")
    path = tmp_path / "cells" / f"{cells[0].key}.h5"
    for damage in (lambda fh: fh.__delitem__("final"), lambda fh: fh["final"].attrs.__delitem__("rel_l2")):
        with h5py.File(path, "r+") as fh:
            damage(fh)
        messages = []
        again = run_training_study(cfg, cells, tmp_path / "cells", progress=messages.append)
        assert len(messages) == 1 and messages[0].startswith("finished cell biased"), messages
        assert again[0]["rel_l2"] == first[0]["rel_l2"]  # the same seeds: the same cell


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "studies").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_study_config_validates_at_every_grid_point(path):
    """The check a study runs before its first run: every grid point validates and builds."""
    from pinnlab import config as C
    from pinnlab.studies.spec import study_runs, validate_runs

    config = C.load(path)
    study = config.study
    runs = validate_runs(path, study_runs(config))
    expected = (len(study.dims or [config.equation.dim]) if study.kind == "estimator"
                else len(study.variants) * math.prod(len(v) for v in study.grid.values()))
    assert len(runs) == expected
    for cell in runs.values():
        assert cell.equation.name == config.equation.name and cell.trainer.steps >= 1


def test_summary_leaves_out_cells_that_are_not_ok_and_says_how_many():
    from pinnlab.studies.training_study import summarise

    def cell(seed, rel_l2, status="ok"):
        return {"variant": "a", "equation.dim": 3, "trainer.seed": seed, "rel_l2": rel_l2, "best_rel_l2": rel_l2,
                "seconds_per_step": 0.1, "peak_mem_mb": 1.0, "status": status}

    records = [cell(0, 0.1), cell(1, 0.3), cell(2, 50.0, "nonfinite"),
               {**cell(0, 7.0, "nonfinite"), "equation.dim": 4}]
    rows = {r["column"]: r for r in summarise(records, "equation.dim")}
    assert (rows[3]["runs"], rows[3]["left_out"]) == (2, 1)
    assert rows[3]["rel_l2_mean"] == pytest.approx(0.2)
    assert rows[3]["rel_l2_std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert (rows[4]["runs"], rows[4]["left_out"]) == (0, 1) and math.isnan(rows[4]["rel_l2_mean"])
    table = markdown_table(list(rows.values()), "equation.dim")
    assert "| a | 2.000e-01 ± 1.4e-01 (1 of 3 not ok, left out) | no ok run (1 of 1 not ok, left out) |" in table


def test_a_bad_variant_is_refused_before_any_cell_runs(tmp_path, capsys):
    """A typo in the second variant is reported (one line, exit 2) before the first runs."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "5").replace(
        "unbiased: [loss.kind=unbiased]", "typo: [loss.kind=unbaised]"))
    out = tmp_path / "train.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "study run typo {'equation.dim': 3, 'trainer.seed': 0}: loss.kind = 'unbaised'" in err
    assert not Path(str(out) + ".cells").exists() and not out.exists()


def test_a_data_section_no_run_of_the_study_trains_on_is_refused(tmp_path, capsys, monkeypatch):
    """Observations enter a study only through a data term (data.train) of a training
    study's cells or an estimator study's pretraining (init: trained): otherwise data: is
    refused (one line, exit 2, nothing written); a grid that sets data.train in some cells
    is accepted."""
    import pinnlab.studies.command as study_command

    ran = []
    monkeypatch.setattr(study_command, "_training", lambda *a: ran.append("training") or 0)
    monkeypatch.setattr(study_command, "_estimator", lambda *a: ran.append("estimator") or 0)
    training, estimator = tmp_path / "train.yaml", tmp_path / "est.yaml"
    training.write_text(TINY_TRAINING.replace("STEPS", "5") + "data: {points: 10}\n")
    estimator.write_text(TINY_ESTIMATOR + "data: {points: 10, train: true}\n")
    for cfg, overrides in ((training, []), (estimator, []), (estimator, ["study.init=trained", "data.train=false"])):
        assert main(["study", str(cfg), *overrides, "-o", str(tmp_path / "s.h5")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "data: the observations have no effect on this study" in err, err
    assert ran == [] and not (tmp_path / "s.h5").exists()
    for cfg, overrides in ((training, ["study.grid.data.train=[false, true]"]), (training, ["data.train=true"]),
                           (estimator, ["study.init=trained"])):
        assert main(["study", str(cfg), *overrides, "-o", str(tmp_path / "s.h5")]) == 0, capsys.readouterr().err
    assert ran == ["training", "training", "estimator"]


DEEPXDE_TRAINING = """\
equation: {name: poisson_two_body, dim: 2, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {samples: 4}
loss: {boundary_points: 8}
trainer: {steps: 3, eval_every: 3, test_points: 20, batch_size: 8}
study:
  kind: training
  variants:
    pinnlab: [trainer.backend=pinnlab]
    deepxde: [trainer.backend=deepxde]
  grid: {trainer.seed: [0]}
"""


def test_a_deepxde_variant_of_a_training_study_is_trained_by_deepxde(tmp_path, capsys):
    """The cell of a ``trainer.backend: deepxde`` variant goes through
    ``solve_config_with_deepxde``, like ``pinnlab solve``: its stored network is DeepXDE's
    FNN (``linears.*``), not pinnlab's MLP (``layers.*``)."""
    pytest.importorskip("deepxde")
    import h5py

    cfg = tmp_path / "dde.yaml"
    cfg.write_text(DEEPXDE_TRAINING)
    out = tmp_path / "dde.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    assert "| pinnlab |" in capsys.readouterr().out
    backends = set()
    for path in Path(str(out) + ".cells").glob("*.h5"):
        with h5py.File(path, "r") as fh:
            backend = "deepxde" if "backend: deepxde" in fh.attrs["config"] else "pinnlab"
            prefix = {"deepxde": "linears.", "pinnlab": "layers."}[backend]
            assert fh.attrs["status"] == "ok" and all(k.startswith(prefix) for k in fh["params"]), \
                (backend, list(fh["params"]))
            assert np.isfinite(fh["slices/main/u_pred"][...]).any()  # every cell draws its slice
        backends.add(backend)
    assert backends == {"pinnlab", "deepxde"}


SMALL_TRAINING = (TINY_TRAINING.replace("STEPS", "5").replace("eval_every: 50", "eval_every: 5")
                  .replace("equation.dim: [3, 4]", "equation.dim: [3]"))


def _cell_files(out):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in Path(str(out) + ".cells").glob("*.h5")}


def test_extending_a_training_study_reuses_its_finished_cells(tmp_path, capsys):
    """A finished cell is identified by its own run config (without ``study:``): after
    adding a seed and a variant to the grid, the two finished cells are skipped (their
    files untouched, their metrics in the new summary), only the four new ones run."""
    import h5py

    cfg = tmp_path / "train.yaml"
    cfg.write_text(SMALL_TRAINING.replace("trainer.seed: [0, 1]", "trainer.seed: [0]"))
    out = tmp_path / "train.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    first = _cell_files(out)
    with h5py.File(out, "r") as fh:
        before = dict(zip([k.decode() for k in fh["cells/key"][...]], fh["cells/rel_l2"][...]))
    assert len(first) == 2
    capsys.readouterr()
    cfg.write_text(SMALL_TRAINING.replace("unbiased: [loss.kind=unbiased]",
                                          "unbiased: [loss.kind=unbiased]\n    fast: [trainer.lr=0.01]"))
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert err.count("skip finished cell") == 2, err
    assert err.count("finished cell") - err.count("skip finished cell") == 4, err
    after = _cell_files(out)
    assert len(after) == 6 and all(after[name] == first[name] for name in first)  # not recomputed
    with h5py.File(out, "r") as fh:
        rel_l2 = dict(zip([k.decode() for k in fh["cells/key"][...]], fh["cells/rel_l2"][...]))
        assert fh["summary/runs"][...].tolist() == [2, 2, 2]
        # integers stay integers (they were float64: runs 2.0, trainer.seed 1.0)
        assert fh["summary/runs"].dtype == "int64" and fh["cells/trainer.seed"].dtype == "int64"
        assert fh["cells/rel_l2"].dtype == "float64"
    assert all(rel_l2[key] == value for key, value in before.items())
    with h5py.File(next(Path(str(out) + ".cells").glob("*.h5")), "r") as fh:
        assert "study:" not in fh.attrs["config"]  # a cell records its own run config


def test_a_cell_written_by_another_pinnlab_version_is_computed_again(tmp_path, capsys):
    """Cells were reused whatever pinnlab version wrote them, so one table could mix two
    versions' numbers without a word."""
    import h5py

    cfg = tmp_path / "train.yaml"
    cfg.write_text(SMALL_TRAINING.replace("trainer.seed: [0, 1]", "trainer.seed: [0]"))
    out = tmp_path / "train.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    old, kept = sorted(Path(str(out) + ".cells").glob("*.h5"))
    with h5py.File(old, "r+") as fh:
        fh.attrs["pinnlab_version"] = "0.0.1"
    before = kept.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert err.count("skip finished cell") == 1 and err.count("finished cell") == 2, err
    with h5py.File(old, "r") as fh:
        assert fh.attrs["pinnlab_version"] != "0.0.1"
    assert kept.stat().st_mtime_ns == before


def test_study_outputs_follow_the_overwrite_rule_before_any_work(tmp_path, capsys):
    """The tables STUDY.md/.csv and --json are outputs like -o: an existing one is kept
    without --overwrite, a directory or a name taken by another output is refused, all
    before any cell runs (one line, exit 2)."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(SMALL_TRAINING.replace("trainer.seed: [0, 1]", "trainer.seed: [0]"))
    est = tmp_path / "est.yaml"
    est.write_text(TINY_ESTIMATOR)
    out = tmp_path / "notes.h5"
    (tmp_path / "adir").mkdir()
    precious = {tmp_path / "notes.md": b"my notes", tmp_path / "other.csv": b"a,b", tmp_path / "o.json": b"{}"}
    for path, content in precious.items():
        path.write_bytes(content)
    (tmp_path / "old.h5").write_bytes(b"an earlier study")
    precious[tmp_path / "old.h5"] = b"an earlier study"
    cases = [
        ([est, "-o", tmp_path / "old.h5"], "old.h5' exists; pass --overwrite to replace it"),  # -o itself
        ([cfg, "-o", tmp_path / "old.h5"], "old.h5' exists; pass --overwrite to replace it"),
        ([cfg, "-o", out], "notes.md' (the study's markdown table) exists; pass --overwrite"),
        ([cfg, "-o", tmp_path / "other.h5"], "other.csv' (the study's CSV table) exists; pass --overwrite"),
        ([cfg, "-o", tmp_path / "t.h5", "--json", tmp_path / "adir"], "(--json) is a directory"),
        ([cfg, "-o", tmp_path / "t.h5", "--json", tmp_path / "o.json"], "(--json) exists; pass --overwrite"),
        ([cfg, "-o", tmp_path / "t.h5", "--json", tmp_path / "t.md"], "is the same file as"),
        ([est, "-o", tmp_path / "e.h5", "--json", tmp_path / "adir"], "(--json) is a directory"),
        ([est, "-o", tmp_path / "e.h5", "--json", tmp_path / "e.h5"], "is the same file as -o"),
        ([est, "-o", tmp_path / "e.h5", "--json", tmp_path / "nodir" / "e.json"], "cannot write output"),
        # an output that is a file the study reads (it replaced the config, or the trained network)
        ([est, "-o", tmp_path / "e.h5", "--json", est, "--overwrite"], "is the config, which this run reads"),
        ([est, "-o", est, "--overwrite"], "is the config, which this run reads"),
        ([est, f"study.init={tmp_path / 'net.h5'}", "-o", tmp_path / "net.h5", "--overwrite"],
         "is study.init, which this run reads"),
    ]
    _network_file(tmp_path / "net.h5")
    precious[tmp_path / "net.h5"] = (tmp_path / "net.h5").read_bytes()
    precious[est] = est.read_bytes()
    for args, expected in cases:
        assert main(["study", *map(str, args)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expected in err, (args, err)
    assert all(path.read_bytes() == content for path, content in precious.items())
    assert not list(tmp_path.glob("*.cells")) and not list(tmp_path.glob("[te].h5"))
    assert main(["study", str(cfg), "-o", str(out), "--overwrite", "--json", str(tmp_path / "o.json")]) == 0
    assert (tmp_path / "notes.md").read_text().startswith("| method |")
    assert "summary" in json.loads((tmp_path / "o.json").read_text())


def _network_file(path, *, config_attr=None, params=None, status="ok"):
    import h5py
    import yaml

    from pinnlab import config as C

    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    config = C.validate(data)
    if params is None:
        params = {k: v.detach().numpy() for k, v in C.make_network(config.model, 3, seed=0).named_parameters()}
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = config.to_yaml() if config_attr is None else config_attr
        fh.attrs["status"] = status
        for key, value in params.items():
            fh[f"params/{key}"] = value


def _tiny_params(change):
    """The parameters of TINY_ESTIMATOR's network, each passed through ``change(name, array)``
    (NaN or text parameters ran the study to the end and reported NaN, or a traceback)."""
    import yaml

    from pinnlab import config as C

    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    net = C.make_network(C.validate(data).model, 3, seed=0)
    return {k: change(k, v.detach().numpy()) for k, v in net.named_parameters()}


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_text("not a network\n"), "not an HDF5 result file"),
    (lambda p: __import__("h5py").File(p, "w").close(), "not a pinnlab result file (it has no config attribute)"),
    (lambda p: _network_file(p, config_attr="equation: [unclosed"), "its config attribute is not a pinnlab config"),
    (lambda p: _network_file(p, config_attr="- a list"), "its config attribute is not a pinnlab configuration"),
    (lambda p: _network_file(p, params={"w": np.zeros(3)}), "its /params (1 arrays) are not the parameters"),
    (lambda p: _network_file(p, status="nonfinite"), "its training did not end ok (status nonfinite)"),
    (lambda p: _network_file(p, params=_tiny_params(lambda k, v: np.full_like(v, np.nan) if k == "layers.1.bias"
                                                    else v)),
     "its /params/layers.1.bias is not a network's parameter (not all finite"),
    (lambda p: _network_file(p, params=_tiny_params(lambda k, v: np.full(v.shape, b"w") if k == "layers.0.weight"
                                                    else v)),
     "its /params/layers.0.weight is not a network's parameter"),
], ids=["text", "unrelated_hdf5", "bad_yaml", "yaml_list", "other_params", "nonfinite", "nan_params", "text_params"])
def test_an_unusable_init_file_is_one_line_before_any_work(tmp_path, capsys, make, expected):
    """``study.init: FILE`` that is no usable network of the study's model: exit 2, one
    line, nothing written (the other params ran to the end and reported NaN)."""
    make(tmp_path / "net.h5")
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TINY_ESTIMATOR.replace("init: fresh", f"init: {tmp_path / 'net.h5'}"))
    assert main(["study", str(cfg), "-o", str(tmp_path / "est.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"study.init = '{tmp_path / 'net.h5'}': {expected}" in err, err
    assert not (tmp_path / "est.h5").exists()


@pytest.mark.parametrize("status", ["ok", "invalid_reference"])
def test_a_usable_init_file_is_studied(tmp_path, status):
    """(invalid_reference: trained, only its test errors are undefined: its u* underflowed.)"""
    _network_file(tmp_path / "net.h5", status=status)
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TINY_ESTIMATOR.replace("init: fresh", f"init: {tmp_path / 'net.h5'}")
                   .replace("samples: [4, 8]", "samples: [4]").replace("noise: [independent, shared]",
                                                                       "noise: [independent]"))
    assert main(["study", str(cfg), "-o", str(tmp_path / "est.h5")]) == 0


def test_training_study_starts_no_more_workers_than_cells(tmp_path, monkeypatch):
    """study.workers=1000 on a study of few cells started 1000 interpreters, each importing
    torch, for a handful of jobs (the machine's load went past 200). The pool is sized by
    the cells left; the threads per cell by the study's cell count, so they do not change
    when a killed study resumes with fewer cells left."""
    from pinnlab.studies import training_study

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    cells = expand_cells({"a": ["loss.kind=biased"]}, {"equation.dim": [3, 4]})
    pools, jobs, starts = [], [], []

    class InlinePool:  # runs the jobs here, records the size it was asked for
        def __init__(self, size, initializer=None, initargs=()):  # (not run here: it would ignore Ctrl-C)
            pools.append(size)
            starts.append((initializer, initargs))

        def imap_unordered(self, fn, todo):
            jobs.extend(todo)
            return map(fn, todo)

        def terminate(self):
            pass

        def join(self):
            pass

    monkeypatch.setattr(training_study.multiprocessing, "get_context", lambda _: type("C", (), {"Pool": InlinePool}))
    monkeypatch.setattr(training_study.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(training_study.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # (a limit the user set caps the threads)
    records = training_study.run_training_study(cfg, cells, tmp_path / "cells", workers=1000)
    assert pools == [2] and len(records) == 2
    assert [job[-1] for job in jobs] == [4, 4]  # 8 cores over the 2 cells
    # each worker takes the parent's malloc settings (a spawned process starts with glibc's)
    assert starts == [(training_study._start_worker, (training_study._malloc.configured,))]
    (tmp_path / "cells" / f"{cells[1].key}.h5").unlink()  # one cell left: runs in this process,
    jobs.clear()                                          # with the threads it had
    seen = []
    monkeypatch.setattr(training_study, "run_cell", lambda c, o, out, threads: seen.append(threads) or
                        training_study.cell_metrics(tmp_path / "cells" / f"{cells[0].key}.h5"))
    training_study.run_training_study(cfg, cells, tmp_path / "cells", workers=1000)
    assert pools == [2] and seen == [4]
    # a finished cell's leftover checkpoint (killed between the two) is removed when skipped
    leftover = tmp_path / "cells" / f"{cells[0].key}.h5.ckpt"
    leftover.write_bytes(b"stale")
    training_study.run_training_study(cfg, cells, tmp_path / "cells", workers=1000)
    assert not leftover.exists()


def test_a_training_study_where_no_cell_ended_ok_exits_1(tmp_path, capsys):
    """Every cell diverged: the tables said "no ok run" and the study exited 0 (solve exits
    1 for one such run). The files are written; one ok cell is enough for exit 0."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(SMALL_TRAINING.replace("trainer: {", "trainer: {lr: 1.0e+30, schedule: constant, "))
    out = tmp_path / "train.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pinnlab: error: no cell of the study ended ok (status nonfinite in all 4); its tables have no " \
        "numbers" in err, err
    assert out.is_file() and out.with_suffix(".md").is_file()
    assert main(["study", str(cfg), "study.variants={biased: [loss.kind=biased, trainer.lr=0.001]}",
                 "-o", str(out), "--overwrite"]) == 0
