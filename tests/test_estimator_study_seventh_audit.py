"""Seventh mutation audit of the estimator study (pinnlab/studies/estimator_study.py).

The refusal of odd K is one line naming every odd K; explicit float32 ``params`` are
studied in the spec's dtype; a comparison of records without standard errors has no z;
a series without variance standard errors, or with an infinite one, gets the ordinary
least-squares fit."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.config import ModelSection, make_network
from pinnlab.studies.estimator_study import (
    EstimatorStudySpec,
    compare_losses,
    fit_slopes,
    loglog_fit,
    loglog_slope,
    run_estimator_study,
)


def _spec(**changes) -> EstimatorStudySpec:
    settings = dict(equation="poisson_two_body", dims=(3,), samples=(4,), sigmas=(0.1,), noise=("shared",),
                    quantities=("loss",), losses=("biased",), replicates=4, points=3, reference_samples=8,
                    reference_replicates=4, problem_seed=1, width=8, depth=2)
    return EstimatorStudySpec(**{**settings, **changes})


def _init_params():
    net = make_network(ModelSection(width=8, depth=2), 3, seed=0, dtype=torch.float64)
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_odd_samples_are_refused_in_one_line_naming_every_odd_k():
    """The API's refusal of odd K with split draws is one line naming each odd K, comma and
    space separated in the grid's order, and why (each draw gets K/2 samples)."""
    with pytest.raises(ValueError) as info:
        _spec(samples=(3, 4, 1), losses=("biased", "unbiased"))
    assert str(info.value) == ("samples: odd K (3, 1) with unbiased_samples='split', which gives each of the "
                               "unbiased loss's two residual draws K/2 samples")


def test_explicit_float32_params_are_studied_in_the_specs_dtype():
    """``params`` given as float32 tensors (a float32-trained network) are converted to the
    spec's float64: the study runs and its records are those of the same (float32-rounded)
    numbers given as float64 tensors."""
    exact = {k: v.float() for k, v in _init_params().items()}
    as_float64 = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in exact.items()}
    records = run_estimator_study(_spec(params=exact))["records"]
    assert records == run_estimator_study(_spec(params=as_float64))["records"]


def test_a_comparison_of_records_without_standard_errors_has_no_z():
    """Records that carry no ``variance_se`` (hand-made or an older file's) give the variance
    ratio but no z: NaN, not (V_u − V_b)/0-filled SE."""
    rows = [{"quantity": "loss", "loss": loss, "noise": "shared", "dim": 3, "samples": 8, "samples_per_draw": 8,
             "sigma": 0.1, "variance": variance} for loss, variance in (("biased", 2.0), ("unbiased", 3.0))]
    rows[0]["variance_se"] = 0.5
    (row,) = compare_losses(rows)
    assert row["variance_ratio"] == pytest.approx(1.5, rel=1e-12) and math.isnan(row["z"])


KS = (4, 8, 16, 32)


def test_a_series_without_variance_standard_errors_gets_the_ordinary_least_squares_slope():
    """Records without ``variance_se`` are fitted unweighted: the variance slope and its SE
    are ``loglog_slope`` of the variances alone (OLS with the scatter's SE), for a series
    that scatters about 1/K."""
    variances = [1.0, 0.6, 0.2, 0.13]
    rows = [{"quantity": "residual", "loss": "biased", "noise": "shared", "dim": 3, "sigma": 0.1, "samples": k,
             "variance": v, "bias2": 0.0, "bias2_se": 1.0} for k, v in zip(KS, variances)]
    (entry,) = fit_slopes(rows).values()
    slope, se = loglog_slope(KS, variances)
    assert math.isfinite(se)
    assert (entry["variance_slope"], entry["variance_slope_se"]) == (slope, se)


def test_an_infinite_standard_error_makes_the_fit_unweighted():
    """The points' errors weight the fit only where all are finite and > 0: one infinite SE
    (a variance SE that overflowed) gives the ordinary least-squares fit, as no SEs do, not
    a weighted fit that silently drops that point (weight 0)."""
    ks, ys = [4, 8, 16, 32], [1.0, 0.6, 0.2, 0.13]
    ols = loglog_fit(ks, ys)
    assert loglog_fit(ks, ys, [0.1, math.inf, 0.02, 0.01]) == ols
    assert loglog_fit(ks, ys, [0.1, 0.06, 0.02, 0.01]) != ols

