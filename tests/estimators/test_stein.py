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
    Query,
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
    for bad in (2.5, True):  # failed at the first estimate with torch's randint message
        with pytest.raises((TypeError, ValueError), match="num_probes"):
            Hutchinson(num_probes=bad)


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2), SteinAntithetic(num_samples=2)],
                         ids=["autograd", "hutchinson", "stein"])
@pytest.mark.parametrize("shape", [(2,), (4, 2), (4,)])
def test_laplacian_weights_of_the_wrong_width_are_refused_by_every_estimator(estimator, shape):
    """Autograd summed the first columns of weights narrower than the points (a custom
    equation's space-only weights worked with autograd and failed with Stein)."""
    x = torch.zeros(4, 3, dtype=torch.float64)
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(ValueError, match=r"query vector/weights must have shape \(3,\) or \(4, 3\)"):
        estimator.estimate(f, x, [WeightedLaplacian(torch.ones(shape, dtype=torch.float64))],
                           generator=torch.Generator().manual_seed(0))


# -- exact identities of the antithetic + control-variate estimators (REFERENCE.md §1.3) --
# These are deterministic: both sides use the same noise (same seed), so round-off is
# the only difference. They pin the variance reduction, which the unbiasedness tests
# above cannot see (the plain estimators are unbiased too).


class _Recording(torch.nn.Module):
    """A pointwise model that records the perturbations δ the estimator sends it."""

    def __init__(self, fn):
        super().__init__()
        self.inner, self.deltas = Pointwise(fn), []

    def forward(self, inputs):
        if not isinstance(inputs, torch.Tensor):
            self.deltas.append(inputs.parts)
        return self.inner(inputs)


def _relative_gap(a, b):
    finite = torch.isfinite(b)
    assert torch.equal(finite, torch.isfinite(a))
    return float((a - b)[finite].abs().max() / b[finite].abs().max().clamp_min(1.0))


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_derivative_estimates_are_invariant_to_a_constant_shift(noise, time_smoothing, points):
    """f and f + 10³ give the same derivative estimates from the same noise: the antithetic
    difference f₊ − f₋ and the control variate f₊ + f₋ − 2f₀ cancel constants exactly.
    Dropping f₀ shifts the second derivatives by 10³·Σ(ξ²−1)/σ², and a plain ξf₊/σ
    gradient by 10³·ξ̄/σ (both O(10⁴) here); round-off gives ~1e-11."""
    x, weights, vector = points
    fn = make_functions(DIM, torch.Generator().manual_seed(3))["sine"]
    if time_smoothing == "independent":
        weights = torch.cat([weights[:-1], torch.zeros(1, dtype=F64)])  # no ∂_tt there
    est = SteinAntithetic(sigma=torch.linspace(0.1, 0.3, DIM, dtype=F64), num_samples=16,
                          noise=noise, time_smoothing=time_smoothing)
    queries = _queries(x, weights, vector)

    def run(shift):
        model = Pointwise(lambda z: fn.f(z) + shift)
        return est.estimate(model, x, queries, generator=torch.Generator().manual_seed(11))

    base, shifted = run(0.0), run(1e3)
    assert _relative_gap(shifted[0] - 1e3, base[0]) < 1e-9  # the value moves by the shift
    for q, a, b in zip(queries[1:], shifted[1:], base[1:]):
        assert _relative_gap(a, b) < 1e-9, type(q).__name__


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_affine_function_gives_zero_curvature_and_the_exact_gradient_form(noise):
    """Affine f = a·x + b: every second-derivative estimate is 0 up to round-off and
    ∇̂u_j = (1/K) Σ_k ξ_kj (a·δ_k)/σ_j with the δ_k the model was sent (§1.3)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(DIM, generator=g, dtype=F64)
    x = torch.randn(4, DIM, generator=g, dtype=F64)
    sigma = torch.linspace(0.05, 0.2, DIM, dtype=F64)
    model = _Recording(lambda z: z @ a + 3.0)
    est = SteinAntithetic(sigma=sigma, num_samples=32, noise=noise)
    grad, hess, lap = est.estimate(
        model, x, [Gradient(), HessianDiagonal(), WeightedLaplacian(torch.ones(DIM, dtype=F64))],
        generator=torch.Generator().manual_seed(2),
    )
    # without f₀ these would be ~3·Σ(ξ²−1)/σ²/K ≈ 10²–10³
    assert float(hess.abs().max()) < 1e-9 and float(lap.abs().max()) < 1e-9
    (delta,) = model.deltas[0]
    delta = delta.expand(x.shape[0], -1, -1) if delta.dim() == 2 else delta
    xi = delta / sigma
    expected = ((delta @ a)[..., None] * xi).mean(1) / sigma
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_quadratic_function_gives_the_exact_control_variate_form(k, noise, time_smoothing):
    """Quadratic f = ½zᵀQz + c·z + b: f₊ + f₋ − 2f₀ = δᵀQδ exactly (§1.3), so with the δ_k
    the model was sent and q_k = ½δ_kᵀQδ_k: ∂̂_jj u = (1/K)Σ_k (ξ_kj² − 1) q_k/σ_j², the
    weighted Laplacian is Σ_j w_j ∂̂_jj u and û = f(x) + (1/K)Σ_k q_k. Independent time
    smoothing: δ is δx, the control variate f(x, t + δt_k), and f(x) in û becomes
    f(x, t + δt_k). At small K a control variate replaced by the sample mean of
    (f₊ + f₋)/2 scales the second derivatives by ≈ 1 − 1/K (to 0 at K = 1); the
    tolerance is round-off."""
    g = torch.Generator().manual_seed(8)
    m = torch.randn(DIM, DIM, generator=g, dtype=F64)
    q, c = m + m.T, torch.randn(DIM, generator=g, dtype=F64)
    x = torch.randn(3, DIM, generator=g, dtype=F64)
    weights = torch.rand(DIM, generator=g, dtype=F64) + 0.5
    sigma = torch.linspace(0.1, 0.3, DIM, dtype=F64)
    joint = time_smoothing == "joint"
    if not joint:
        weights[-1] = 0  # no ∂_tt with independent time smoothing

    def quadratic(z):
        return 0.5 * ((z @ q) * z).sum(-1) + z @ c + 1.5

    model = _Recording(quadratic)
    est = SteinAntithetic(sigma=sigma, num_samples=k, noise=noise, time_smoothing=time_smoothing)
    value, hess, lap = est.estimate(
        model, x, [Value(), HessianDiagonal(), WeightedLaplacian(weights)],
        generator=torch.Generator().manual_seed(9),
    )
    parts = [p.expand(x.shape[0], -1, -1) if p.dim() == 2 else p for p in model.deltas[0]]
    delta = parts[0]  # joint: δ; independent: δx (time column 0), the shared δt is parts[1]
    time_shift = torch.zeros_like(delta) if joint else parts[1]
    curvature = ((delta / sigma) ** 2 - 1) / sigma**2  # (N, K, D)
    if not joint:
        curvature[..., -1] = float("nan")
    second = 0.5 * ((delta @ q) * delta).sum(-1)  # q_k: (N, K)
    expected_hess = (second[..., None] * curvature).mean(1)
    expected_value = (quadratic(x[:, None] + time_shift) + second).mean(1)
    torch.testing.assert_close(value, expected_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hess, expected_hess, rtol=1e-10, atol=1e-10, equal_nan=True)
    spatial = slice(None) if joint else slice(0, DIM - 1)
    expected_lap = (expected_hess[:, spatial] * weights[spatial]).sum(-1)
    torch.testing.assert_close(lap, expected_lap, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_independent_time_smoothing_pairs_share_the_time_noise(noise):
    """[RS] eq. 28 pairing: in f(x ± δx, t + δt) the time noise is shared and the control
    variate is f(x, t + δt), so a function of t alone has spatial derivative estimates
    exactly 0; the ∂_t pair f(x + δx, t ± δt) shares δx, so a function of x alone has
    ∂̂_t u exactly 0. Joint smoothing (which flips δt) gives neither (positive control)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, DIM, generator=g, dtype=F64)
    a = torch.randn(DIM - 1, generator=g, dtype=F64)
    sigma = torch.tensor([0.2] * (DIM - 1) + [0.1], dtype=F64)
    spatial = torch.cat([torch.ones(DIM - 1, dtype=F64), torch.zeros(1, dtype=F64)])
    queries = [Gradient(), HessianDiagonal(), WeightedLaplacian(spatial)]
    of_time = Pointwise(lambda z: torch.sin(3 * z[..., -1]) + z[..., -1] ** 2)
    of_space = Pointwise(lambda z: torch.sin(z[..., :-1] @ a))
    for smoothing, expect_exact in (("independent", True), ("joint", False)):
        est = SteinAntithetic(sigma=sigma, num_samples=16, noise=noise, time_smoothing=smoothing)
        grad, hess, lap = est.estimate(of_time, x, queries, generator=torch.Generator().manual_seed(5))
        spatial_part = torch.cat([grad[:, :-1].flatten(), hess[:, :-1].flatten(), lap])
        (time_grad,) = est.estimate(of_space, x, [Gradient()], generator=torch.Generator().manual_seed(6))
        exact = float(spatial_part.abs().max()) < 1e-10 and float(time_grad[:, -1].abs().max()) < 1e-10
        assert exact == expect_exact, (smoothing, spatial_part.abs().max(), time_grad[:, -1])


_F = Pointwise(lambda z: torch.sin(z).sum(-1))
_X = torch.randn(4, DIM, generator=torch.Generator().manual_seed(0), dtype=F64)


def _estimate(estimator=None, queries=None, x=_X, **kw):
    estimator = SteinAntithetic() if estimator is None else estimator
    queries = [Gradient()] if queries is None else queries
    return estimator.estimate(_F, x, list(queries), generator=torch.Generator().manual_seed(0), **kw)


_INVALID = {
    # σ: configured or passed per call, float or plain tensor
    "sigma=0": (lambda: SteinAntithetic(sigma=0.0), ValueError, "sigma must be finite and > 0"),
    "sigma=nan": (lambda: SteinAntithetic(sigma=float("nan")), ValueError, "finite and > 0"),
    "sigma=inf": (lambda: SteinAntithetic(sigma=float("inf")), ValueError, "finite and > 0"),
    "sigma=tensor(0)": (lambda: SteinAntithetic(sigma=torch.tensor(0.0)), ValueError,
                        "finite and > 0 in every entry"),
    "sigma=tensor(-0.1)": (lambda: SteinAntithetic(sigma=torch.tensor(-0.1)), ValueError,
                           "finite and > 0 in every entry"),
    "sigma with a zero entry": (lambda: SteinAntithetic(sigma=torch.tensor([0.1, 0.2, 0.0, 0.1, 0.1])),
                                ValueError, "finite and > 0 in every entry"),
    "estimate(sigma=0.0)": (lambda: _estimate(sigma=0.0), ValueError, "sigma must be finite and > 0"),
    "estimate(sigma=-0.01)": (lambda: _estimate(sigma=-0.01), ValueError, "finite and > 0"),
    "estimate(sigma=tensor(0))": (lambda: _estimate(sigma=torch.tensor(0.0)), ValueError,
                                  "finite and > 0 in every entry"),
    "sigma of the wrong length": (lambda: _estimate(SteinAntithetic(sigma=torch.tensor([0.1, 0.2]))),
                                  ValueError, r"one entry per input column \(5\), got shape \(2,\)"),
    "estimate(sigma) of the wrong length": (lambda: _estimate(sigma=torch.full((3,), 0.1)), ValueError,
                                            "one entry per input column"),
    "sigma (2, D)": (lambda: SteinAntithetic(sigma=torch.full((2, DIM), 0.1)), ValueError,
                     r"got shape \(2, 5\)"),
    "sigma='0.1'": (lambda: SteinAntithetic(sigma="0.1"), TypeError, "sigma must be a float or a tensor"),
    # sizes
    "Stein chunk_size=0": (lambda: SteinAntithetic(chunk_size=0), ValueError, "chunk_size must be an integer"),
    "Stein chunk_size=-1": (lambda: SteinAntithetic(chunk_size=-1), ValueError, "chunk_size must be an integer"),
    "Stein chunk_size=2.5": (lambda: SteinAntithetic(chunk_size=2.5), ValueError, "chunk_size must be an integer"),
    "Autograd chunk_size=0": (lambda: Autograd(chunk_size=0), ValueError, "chunk_size must be an integer >= 1"),
    "Autograd chunk_size=-1": (lambda: Autograd(chunk_size=-1), ValueError, "chunk_size must be an integer"),
    "num_samples=2.5": (lambda: SteinAntithetic(num_samples=2.5), ValueError, "num_samples must be an integer"),
    # queries and points
    "unknown query type": (lambda: _estimate(queries=(Value(), Query())), TypeError,
                           "SteinAntithetic cannot answer Query"),
    "weights of the wrong length": (lambda: _estimate(queries=(WeightedLaplacian(torch.ones(3)),)),
                                    ValueError, r"shape \(5,\) or \(4, 5\).*got \(3,\)"),
    "x not (N, D)": (lambda: _estimate(x=_X[0]), ValueError, r"x must be a \(N, D\) tensor"),
}


@pytest.mark.parametrize("case", list(_INVALID))
def test_invalid_arguments_raise_one_clear_error(case):
    build, error, message = _INVALID[case]
    with pytest.raises(error, match=message):
        build()


def test_edge_arguments_that_stay_valid():
    """A length-1 σ broadcasts; an empty batch gives empty answers (any chunk size)."""
    assert _estimate(SteinAntithetic(sigma=torch.tensor([0.1])))[0].shape == _X.shape
    for chunk in (None, 2):
        value, grad = _estimate(SteinAntithetic(chunk_size=chunk), (Value(), Gradient()), x=_X[:0])
        assert value.shape == (0,) and grad.shape == (0, DIM)
    value, grad = _estimate(SteinAntithetic(time_smoothing="independent"), (Value(), Gradient()), x=_X[:0])
    assert value.shape == (0,) and grad.shape == (0, DIM)


def test_sigma_inside_torch_func_transforms_is_not_inspected():
    """The tuning layer differentiates in σ with torch.func: a wrapped σ has no values to
    check, so it must pass through (its shape is still checked)."""
    f = Pointwise(lambda z: torch.sin(z).sum(-1))
    x = torch.randn(3, DIM, dtype=F64)
    est = SteinAntithetic(num_samples=8)
    lap = [WeightedLaplacian(torch.ones(DIM, dtype=F64))]

    def loss(sigma):
        return est.estimate(f, x, lap, generator=torch.Generator().manual_seed(0), sigma=sigma)[0].sum()

    sigma = torch.tensor(0.1, dtype=F64)
    d_sigma = torch.func.grad(loss)(sigma)
    _, tangent = torch.func.jvp(loss, (sigma,), (torch.ones_like(sigma),))
    assert torch.isfinite(d_sigma) and torch.allclose(d_sigma, tangent)
    batch = torch.tensor([0.1, 0.2], dtype=F64)  # vmap refuses any data-dependent branch
    torch.testing.assert_close(torch.func.vmap(loss, randomness="same")(batch),
                               torch.stack([loss(s) for s in batch]))
    with pytest.raises(ValueError, match="one entry per input column"):
        torch.func.grad(loss)(torch.full((2,), 0.1, dtype=F64))


def test_point_chunks_slice_per_point_query_vectors():
    """chunk_size splits the points; per-point (N, D) directions and Laplacian weights
    must be split with them (they were passed whole, which failed for every equation
    with per-point queries). Shared noise: chunked and unchunked see the same draws."""
    from pinnlab.nets import Pointwise

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(10, 4, dtype=torch.float64, generator=gen)
    a = torch.randn(10, 4, dtype=torch.float64, generator=gen)
    w = torch.rand(10, 4, dtype=torch.float64, generator=gen)
    f = Pointwise(lambda z: torch.sin(z).sum(-1) + (z[..., 0] * z[..., 1]))
    queries = [Directional(a), WeightedLaplacian(w), Directional(a[0]), Value()]

    def run(chunk):
        est = SteinAntithetic(sigma=0.1, num_samples=16, noise="shared", chunk_size=chunk)
        return est.estimate(f, x, queries, generator=torch.Generator().manual_seed(0))

    for whole, chunked in zip(run(None), run(3)):
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
