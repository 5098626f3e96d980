"""Sixth audit of the estimator bias–variance study (pinnlab/studies/estimator_study.py):
the weighted log–log fit's slope standard error never falls below the one the points'
own errors give (points exactly on the line, χ² = 0); a single point has no fit; the
halving prediction is given for the loss and the gradient but not for the residual (one
K′-sample draw, not a product); every replicate, past the tenth too, has the noise
stream of its own index."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.studies.estimator_study import compare_losses, loglog_fit

from .test_estimator_study_third_audit import _fake_study, _spec


def test_a_weighted_slope_on_an_exact_line_keeps_the_error_its_points_give():
    """y = 1/K through K = 1, 2, 4 with 10 % errors: χ² = 0, so the SE is 1/√(Σ w (log K − log K̂)²)
    = 1/(√200 · ln 2), not scaled down by √(χ²/(n − 2)) = 0."""
    ks, ys = [1.0, 2.0, 4.0], [1.0, 0.5, 0.25]
    slope, se, cx, cy = loglog_fit(ks, ys, [0.1 * y for y in ys])
    assert slope == pytest.approx(-1.0, abs=1e-12)
    assert se == pytest.approx(1.0 / (math.sqrt(200.0) * math.log(2.0)), rel=1e-12)
    assert cx == pytest.approx(math.log(2.0), rel=1e-12)
    assert cy == pytest.approx(-math.log(2.0), rel=1e-12)


def _record(quantity, loss, k, variance, per_draw=None):
    return {"quantity": quantity, "loss": loss, "noise": "independent", "dim": 2, "samples": k,
            "samples_per_draw": k if per_draw is None else per_draw, "sigma": 0.1,
            "variance": variance, "variance_se": 0.1 * variance}


@pytest.mark.parametrize("quantity", ["residual", "loss", "gradient"])
def test_the_halving_prediction_is_for_the_loss_and_gradient_only(quantity):
    """With the biased cells at K = 4 (V = 3) and K′ = 2 (V = 8) and the unbiased cell at K = 4
    (2 per draw): V_b(K′)/(2·V_b(K)) = 8/6 for the loss and the gradient, None for the residual."""
    records = [_record(quantity, "biased", 2, 8.0), _record(quantity, "biased", 4, 3.0),
               _record(quantity, "unbiased", 4, 5.0, per_draw=2)]
    (row,) = compare_losses(records)
    assert row["samples"] == 4 and row["variance_ratio"] == pytest.approx(5.0 / 3.0, rel=1e-12)
    assert row["z"] == pytest.approx(2.0 / math.hypot(0.5, 0.3), rel=1e-12)
    if quantity == "residual":
        assert row["halving_prediction"] is None
    else:
        assert row["halving_prediction"] == pytest.approx(8.0 / 6.0, rel=1e-12)


def test_every_replicate_has_the_stream_of_its_own_index(monkeypatch):
    """With 23 replicates (14 for the reference) in 10 groups, replicate i of a cell draws from
    ``make_generator(problem_seed, "study", d, K, noise, loss, i)`` (the reference's from
    ``(problem_seed, "reference", d, i)``), so replicates i and i + 10 of one group differ."""
    spec = _spec(samples=(4,), losses=("biased",))
    _, log = _fake_study(monkeypatch, spec)
    assert len(log) == 14 + 23
    size = log[0][3]["noise"].size
    for i, (_, _, kind, draw) in enumerate(log[:14]):
        assert kind == "unbiased"
        expected = torch.randn(size, generator=make_generator(2, "reference", 3, i), dtype=torch.float64)
        assert torch.equal(torch.as_tensor(draw["noise"]), expected)
    for i, (k, noise, kind, draw) in enumerate(log[14:]):
        assert (k, noise, kind) == (4, "independent", "biased")
        stream = make_generator(2, "study", 3, 4, "independent", "biased", i)
        assert torch.equal(torch.as_tensor(draw["noise"]), torch.randn(size, generator=stream, dtype=torch.float64))


def test_a_single_point_has_no_fit_at_all():
    """Fewer than two points: slope, its SE and the centre (log K̂, log ŷ) are all NaN, with
    or without standard errors (the docstring's "NaN where fewer than two points")."""
    for y_se in (None, [0.2]):
        assert all(math.isnan(v) for v in loglog_fit([4.0], [2.0], y_se))
