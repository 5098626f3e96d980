"""Stein, Hutchinson and autograd estimators against closed-form smoothed functions.

These tests are probabilistic: every estimate is compared with its closed form within
5 standard errors computed from independent replicates with fixed seeds (a false
failure has probability < 1e-5 per comparison), and the Monte Carlo error is checked
to decay like K^{-1/2} by a log-log fit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pinnlab.estimators import (
    Autograd,
    Directional,
    Gradient,
    HessianDiagonal,
    Hutchinson,
    SteinAntithetic,
    Value,
    WeightedLaplacian,
)
from pinnlab.nets import Pointwise

from .closed_forms import make_functions

DIM = 5
F64 = torch.float64


def _queries(x, weights, vector):
    return [Value(), Gradient(), Directional(vector), HessianDiagonal(), WeightedLaplacian(weights)]


def _exact(fn, x, sigma, weights, vector):
    grad = fn.gradient(x, sigma)
    hess = fn.hessian_diagonal(x, sigma)
    return [
        fn.value(x, sigma),
        grad,
        (grad * vector).sum(-1),
        hess,
        (hess * weights).sum(-1),
    ]


def _replicates(estimator, fn, x, queries, reps, seed=0):
    model = Pointwise(fn.f)
    draws = [
        estimator.estimate(model, x, queries, generator=torch.Generator().manual_seed(seed + r))
        for r in range(reps)
    ]
    return [torch.stack(items) for items in zip(*draws)]


@pytest.fixture
def points():
    g = torch.Generator().manual_seed(7)
    x = 0.5 * torch.randn(3, DIM, generator=g, dtype=F64)
    weights = torch.rand(DIM, generator=g, dtype=F64) + 0.5
    vector = torch.randn(3, DIM, generator=g, dtype=F64)
    return x, weights, vector


@pytest.mark.parametrize("name", ["sine", "exp", "quadratic"])
@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("per_coordinate", [False, True])
def test_stein_matches_closed_form_within_5_standard_errors(name, noise, per_coordinate, points):
    x, weights, vector = points
    fn = make_functions(DIM, torch.Generator().manual_seed(3))[name]
    sigma = torch.linspace(0.1, 0.3, DIM, dtype=F64) if per_coordinate else torch.full((DIM,), 0.2, dtype=F64)
    est = SteinAntithetic(sigma=sigma if per_coordinate else 0.2, num_samples=64, noise=noise)
    queries = _queries(x, weights, vector)
    draws = _replicates(est, fn, x, queries, reps=300)
    for q, draw, exact in zip(queries, draws, _exact(fn, x, sigma, weights, vector)):
        mean, se = draw.mean(0), draw.std(0) / math.sqrt(draw.shape[0])
        assert draw.shape[1:] == exact.shape, type(q).__name__
        assert draw.dtype == F64
        err = (mean - exact).abs()
        assert bool((err <= 5 * se + 1e-12).all()), (type(q).__name__, err.max(), se.max())


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_stein_time_independent_smoothing_matches_closed_form(noise, points):
    """[RS] §4.5 estimator: same u_σ as joint smoothing with σ = (σ_x, …, σ_x, σ_t)."""
    x, weights, vector = points
    fn = make_functions(DIM, torch.Generator().manual_seed(4))["sine"]
    sigma = torch.tensor([0.2] * (DIM - 1) + [0.1], dtype=F64)
    est = SteinAntithetic(sigma=sigma, num_samples=64, noise=noise, time_smoothing="independent")
    spatial = weights.clone()
    spatial[-1] = 0
    queries = [Value(), Gradient(), Directional(vector), WeightedLaplacian(spatial)]
    draws = _replicates(est, fn, x, queries, reps=300)
    exact = _exact(fn, x, sigma, spatial, vector)
    for q, draw, ex in zip(queries, draws, [exact[0], exact[1], exact[2], exact[4]]):
        mean, se = draw.mean(0), draw.std(0) / math.sqrt(draw.shape[0])
        assert bool(((mean - ex).abs() <= 5 * se + 1e-12).all()), type(q).__name__
    hess = est.estimate(Pointwise(fn.f), x, [HessianDiagonal()], generator=torch.Generator())[0]
    assert torch.isnan(hess[:, -1]).all() and torch.isfinite(hess[:, :-1]).all()
    with pytest.raises(ValueError, match="time_smoothing='joint'"):
        est.estimate(Pointwise(fn.f), x, [WeightedLaplacian(torch.ones(DIM))], generator=torch.Generator())


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_stein_error_decays_like_inverse_sqrt_samples(noise, points):
    x, weights, vector = points
    fn = make_functions(DIM, torch.Generator().manual_seed(5))["sine"]
    sigma = torch.full((DIM,), 0.2, dtype=F64)
    exact = _exact(fn, x, sigma, weights, vector)
    ks = [8, 32, 128, 512]
    rms = {i: [] for i in range(5)}
    for k in ks:
        est = SteinAntithetic(sigma=0.2, num_samples=k, noise=noise)
        draws = _replicates(est, fn, x, _queries(x, weights, vector), reps=200, seed=1000 * k)
        for i, (draw, ex) in enumerate(zip(draws, exact)):
            rms[i].append(float(((draw - ex) ** 2).mean().sqrt()))
    for i, values in rms.items():
        slope = np.polyfit(np.log(ks), np.log(values), 1)[0]
        assert -0.62 < slope < -0.38, (i, slope, values)


def test_stein_value_is_antithetic_mean_with_low_variance():
    """Value from (f₊+f₋)/2: variance ≈ σ⁴Var(ξᵀ∇²fξ)/(4K), far below σ²‖∇f‖²/K."""
    fn = make_functions(DIM, torch.Generator().manual_seed(6))["sine"]
    x = torch.zeros(1, DIM, dtype=F64)
    est = SteinAntithetic(sigma=0.01, num_samples=16)
    draws = _replicates(est, fn, x, [Value()], reps=200)[0]
    plain_std = 0.01 * fn.gradient(x, torch.zeros(DIM, dtype=F64)).norm() / 4
    assert draws.std() < 0.05 * plain_std


@pytest.mark.parametrize("name", ["sine", "exp", "quadratic"])
def test_autograd_is_exact(name, points):
    x, weights, vector = points
    fn = make_functions(DIM, torch.Generator().manual_seed(3))[name]
    zero = torch.zeros(DIM, dtype=F64)
    got = Autograd(chunk_size=2).estimate(Pointwise(fn.f), x, _queries(x, weights, vector))
    for g, e in zip(got, _exact(fn, x, zero, weights, vector)):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_hutchinson_unbiased_for_unsmoothed_derivatives(noise, points):
    x, weights, vector = points
    fn = make_functions(DIM, torch.Generator().manual_seed(3))["sine"]
    zero = torch.zeros(DIM, dtype=F64)
    queries = _queries(x, weights, vector)
    draws = _replicates(Hutchinson(num_probes=4, noise=noise), fn, x, queries, reps=300)
    for q, draw, exact in zip(queries, draws, _exact(fn, x, zero, weights, vector)):
        mean, se = draw.mean(0), draw.std(0) / math.sqrt(draw.shape[0])
        assert bool(((mean - exact).abs() <= 5 * se + 1e-10).all()), type(q).__name__
    # value, gradient and directional derivatives are exact
    for draw, exact in zip(draws[:3], _exact(fn, x, zero, weights, vector)[:3]):
        torch.testing.assert_close(draw[0], exact)


def test_shared_noise_correlates_points_independent_does_not():
    fn = make_functions(DIM, torch.Generator().manual_seed(3))["quadratic"]
    x = torch.zeros(2, DIM, dtype=F64)
    lap = [WeightedLaplacian(torch.ones(DIM, dtype=F64))]
    for noise, expect_corr in (("shared", True), ("independent", False)):
        draws = _replicates(SteinAntithetic(sigma=0.1, num_samples=8, noise=noise), fn, x, lap, 400)[0]
        corr = np.corrcoef(draws[:, 0].numpy(), draws[:, 1].numpy())[0, 1]
        assert (corr > 0.99) if expect_corr else (abs(corr) < 0.2), (noise, corr)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="num_samples"):
        SteinAntithetic(num_samples=0)
    with pytest.raises(ValueError, match="sigma"):
        SteinAntithetic(sigma=0.0)
    with pytest.raises(ValueError, match="noise"):
        SteinAntithetic(noise="both")
    with pytest.raises(ValueError, match="num_probes"):
        Hutchinson(num_probes=0)
