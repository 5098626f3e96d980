"""SteinAntithetic, number for number: every query against the formulas of its docstring
evaluated by hand (float64) on the very draw the estimator makes.

The reference re-draws ξ from a generator seeded alike and forms the explicit perturbed
inputs, so it shares no code path with the estimator (no factorised first layer, no
folded σ, no curvature blocks). Per-coordinate σ with a distinct time entry, K ≠ D ≠ N
and point-wise query vectors make any mixed-up axis, σ entry or pattern row visible.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import (
    Directional,
    Gradient,
    HessianDiagonal,
    SteinAntithetic,
    Value,
    WeightedLaplacian,
    stein,
)
from pinnlab.estimators.stein import SharedDraw
from pinnlab.nets import MLP, Pointwise

F64 = torch.float64
N, K, D = 5, 7, 3
SIGMA = torch.tensor([0.3, 0.2, 0.45], dtype=F64)  # the last entry is σ_t


def _fn(z):
    """A smooth function coupling space and time (the last column)."""
    return torch.sin(z @ torch.tensor([1.0, -0.7, 0.5], dtype=z.dtype)) + z[..., 0] ** 2 * z[..., -1] \
        + torch.exp(0.4 * z[..., 1])


def _inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, D, dtype=F64, generator=g)
    vec = torch.randn(N, D, dtype=F64, generator=g)
    weights = torch.rand(N, D, dtype=F64, generator=g) + 0.5
    return x, vec, weights


def _queries(vec, weights, independent_time):
    w = weights.clone()
    if independent_time:
        w[:, -1] = 0
    return [Value(), Gradient(), Directional(vec), HessianDiagonal(), WeightedLaplacian(w)]


def _reference(fn, x, xi, sigma, vec, weights, independent_time):
    """The docstring's formulas on the draw ξ `(N, K, D)`, with explicit inputs."""
    x3 = x[:, None, :]
    if not independent_time:
        delta = sigma * xi
        fp, fm, f0 = fn(x3 + delta), fn(x3 - delta), fn(x)[:, None]
        first, second = (fp - fm) / 2, (fp + fm) / 2 - f0
        grad = (first[..., None] * xi).mean(1) / sigma
        direction = ((xi * (vec / sigma)[:, None]).sum(-1) * first).mean(1)
        curv = xi**2 - 1
        diag = (second[..., None] * curv).mean(1) / sigma**2
        lap = ((curv * (weights / sigma**2)[:, None]).sum(-1) * second).mean(1)
        return [((fp + fm) / 2).mean(1), grad, direction, diag, lap]
    mask = torch.ones(D, dtype=F64)
    mask[-1] = 0
    dx = sigma * mask * xi
    dt = (1 - mask) * sigma * xi[..., -1:]
    fp, fm = fn(x3 + dx + dt), fn(x3 - dx + dt)
    fc, ftm = fn(x3 + dt), fn(x3 + dx - dt)
    tau = xi[..., -1]
    first, second = (fp - fm) / 2, (fp + fm) / 2 - fc
    time_first = (tau * (fp - ftm) / 2).mean(1)
    grad = (first[..., None] * xi).mean(1) / sigma
    grad[:, -1] = time_first / sigma[-1]
    a = vec / sigma
    direction = ((xi * (a * mask)[:, None]).sum(-1) * first).mean(1) + a[:, -1] * time_first
    curv = xi**2 - 1
    diag = (second[..., None] * curv).mean(1) / sigma**2
    diag[:, -1] = float("nan")
    w = weights.clone()
    w[:, -1] = 0
    lap = ((curv * (w / sigma**2)[:, None]).sum(-1) * second).mean(1)
    return [((fp + fm) / 2).mean(1), grad, direction, diag, lap]


def _draw(noise, seed, n=N):
    g = torch.Generator().manual_seed(seed)
    if noise == "shared":
        return torch.randn(K, D, dtype=F64, generator=g).expand(n, K, D)
    return torch.randn(n, K, D, dtype=F64, generator=g)


def _close(got, want):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11, equal_nan=True)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_every_query_is_the_docstring_formula_on_the_same_draw(noise, time_smoothing):
    """Value, gradient, directional, Hessian diagonal and Laplacian, per-coordinate σ,
    point-wise vectors: the hand formulas on ξ from the same seed, to 1e-11."""
    x, vec, weights = _inputs()
    independent_time = time_smoothing == "independent"
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise=noise, time_smoothing=time_smoothing)
    got = est.estimate(Pointwise(_fn), x, _queries(vec, weights, independent_time),
                       generator=torch.Generator().manual_seed(11))
    _close(got, _reference(_fn, x, _draw(noise, 11), SIGMA, vec, weights, independent_time))


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_the_mlp_folded_first_layer_gives_the_explicit_inputs_numbers(noise, time_smoothing):
    """The MLP's factorised first layer (σ folded into W for independent noise, W(σξ)
    cached for shared noise) against the same MLP on explicit inputs x ± δ."""
    x, vec, weights = _inputs()
    net = MLP(D, width=8, depth=3, generator=torch.Generator().manual_seed(5), dtype=F64)
    independent_time = time_smoothing == "independent"
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise=noise, time_smoothing=time_smoothing)
    with torch.no_grad():
        got = est.estimate(net, x, _queries(vec, weights, independent_time),
                           generator=torch.Generator().manual_seed(2))
        want = _reference(net, x, _draw(noise, 2), SIGMA, vec, weights, independent_time)
    _close(got, want)


@pytest.mark.parametrize("order", ["first", "second", "both"])
def test_independent_time_pattern_rows_do_not_depend_on_which_orders_are_asked(order):
    """The time pair's row moves with the centre row: asking a first-order query alone,
    a second-order alone or both gives the same numbers for each."""
    x, vec, weights = _inputs()
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, time_smoothing="independent")
    queries = _queries(vec, weights, True)
    chosen = {"first": queries[:3], "second": [Value(), *queries[3:]], "both": queries}[order]
    got = est.estimate(Pointwise(_fn), x, chosen, generator=torch.Generator().manual_seed(4))
    want = _reference(_fn, x, _draw("independent", 4), SIGMA, vec, weights, True)
    want = {"first": want[:3], "second": [want[0], *want[3:]], "both": want}[order]
    _close(got, want)


def test_a_float_sigma_is_taken_at_the_points_float64_precision():
    """σ = 0.1 given as a Python float is 0.1 in float64 (not float32's 0.100000001)."""
    x, vec, weights = _inputs()
    est = SteinAntithetic(sigma=0.1, num_samples=K, noise="shared")
    got = est.estimate(Pointwise(_fn), x, _queries(vec, weights, False),
                       generator=torch.Generator().manual_seed(6))
    sigma = torch.full((D,), 0.1, dtype=F64)
    _close(got, _reference(_fn, x, _draw("shared", 6), sigma, vec, weights, False))


def test_a_one_entry_sigma_tensor_is_the_scalar():
    """σ of shape (1,) is broadcast to every column, as the scalar."""
    x, vec, weights = _inputs()
    queries = _queries(vec, weights, False)
    one = SteinAntithetic(sigma=torch.tensor([0.2], dtype=F64), num_samples=K).estimate(
        Pointwise(_fn), x, queries, generator=torch.Generator().manual_seed(8))
    scalar = SteinAntithetic(sigma=0.2, num_samples=K).estimate(
        Pointwise(_fn), x, queries, generator=torch.Generator().manual_seed(8))
    for a, b in zip(one, scalar, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_chunks_of_points_give_the_reference_on_their_draws(noise):
    """chunk_size=2 of 5 points: shared noise uses the one draw for every chunk,
    independent noise draws (2, K, D), (2, K, D), (1, K, D) in turn."""
    x, vec, weights = _inputs()
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise=noise, chunk_size=2)
    got = est.estimate(Pointwise(_fn), x, _queries(vec, weights, False),
                       generator=torch.Generator().manual_seed(9))
    if noise == "shared":
        xi = _draw("shared", 9)
    else:
        g = torch.Generator().manual_seed(9)
        xi = torch.cat([torch.randn(m, K, D, dtype=F64, generator=g) for m in (2, 2, 1)])
    _close(got, _reference(_fn, x, xi, SIGMA, vec, weights, False))


def test_a_shared_noise_evaluation_is_one_draw_whatever_its_chunks():
    """evaluate in chunks of 2 equals the single-chunk Value estimate on one draw."""
    x, _, _ = _inputs()
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise="shared")
    chunked = est.evaluate(Pointwise(_fn), x, generator=torch.Generator().manual_seed(1), chunk_size=2)
    (whole,) = est.estimate(Pointwise(_fn), x, [Value()], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chunked, whole, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("grad", [False, True])
def test_curvature_blocks_give_the_unblocked_numbers_and_gradients(monkeypatch, grad):
    """ξ² − 1 in blocks of 2 points (buffer reused without autograd, fresh blocks with
    it): the same Hessian diagonal and Laplacian, and the same gradient in σ."""
    x, vec, weights = _inputs()
    queries = [HessianDiagonal(), WeightedLaplacian(weights)]

    def run():
        sigma = SIGMA.clone().requires_grad_(grad)
        est = SteinAntithetic(sigma=0.1, num_samples=K)
        with torch.set_grad_enabled(grad):
            out = est.estimate(Pointwise(_fn), x, queries, sigma=sigma,
                               generator=torch.Generator().manual_seed(12))
        if not grad:
            return out
        return [*out, torch.autograd.grad(out[0].sum() + out[1].sum(), sigma)[0]]

    whole = run()
    monkeypatch.setattr(stein, "CURVATURE_BLOCK", 2 * K * D)
    blocked = run()
    for a, b in zip(blocked, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    _close(whole[:2], _reference(_fn, x, _draw("independent", 12), SIGMA, vec, weights, False)[3:])


def test_a_shared_draw_refuses_another_sigma():
    """A SharedDraw made at one σ refuses a later call at another."""
    x, _, _ = _inputs()
    est = SteinAntithetic(sigma=0.1, num_samples=K, noise="shared")
    draw = SharedDraw()
    est.evaluate(Pointwise(_fn), x, generator=torch.Generator().manual_seed(0), draw=draw)
    with pytest.raises(ValueError, match="SharedDraw"):
        est.evaluate(Pointwise(_fn), x, generator=None, draw=draw, sigma=0.2)


@pytest.mark.parametrize(("noise", "queries", "patterns"), [
    ("independent", [Value()], ((1.0,), (-1.0,))),
    ("shared", [Value(), Gradient()], ((1.0,), (-1.0,))),
    ("independent", [Gradient(), HessianDiagonal()], ((1.0,), (-1.0,), (0.0,))),
], ids=["value", "gradient", "hessian"])
def test_joint_smoothing_evaluates_f_of_x_only_for_second_order_queries(noise, queries, patterns):
    """Joint smoothing: the centre pattern f(x) (N more evaluations) is asked for only
    when a second-order query is, as the docstring's cost 2KN vs 2KN + N says."""
    seen = []

    def model(inputs):
        seen.append(inputs.coefficients)
        return Pointwise(_fn)(inputs)

    x, _, _ = _inputs()
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise=noise)
    est.estimate(model, x, queries, generator=torch.Generator().manual_seed(0))
    assert seen == [patterns]


@pytest.mark.parametrize("weight", [-1.0, 1e-3])
def test_a_negative_or_tiny_time_weight_is_refused_with_independent_time_smoothing(weight):
    """Any non-zero time weight (negative ones too) raises: ∂_tt is not estimated."""
    x, _, _ = _inputs()
    w = torch.tensor([1.0, 1.0, weight], dtype=F64)
    est = SteinAntithetic(sigma=0.1, num_samples=K, time_smoothing="independent")
    with pytest.raises(ValueError, match="second derivatives in time"):
        est.estimate(Pointwise(_fn), x, [WeightedLaplacian(w)], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -0.1, 0.0])
@pytest.mark.parametrize("where", ["constructor", "estimate"])
def test_a_sigma_tensor_with_an_infinite_or_non_positive_entry_is_refused(bad, where):
    """σ tensors are checked entry by entry for finiteness and sign, at construction
    and when passed to estimate (an infinite σ would give NaN estimates silently)."""
    sigma = torch.tensor([0.1, bad, 0.2], dtype=F64)
    x, _, _ = _inputs()
    with pytest.raises(ValueError, match="finite and > 0"):
        if where == "constructor":
            SteinAntithetic(sigma=sigma)
        else:
            SteinAntithetic(sigma=0.1, num_samples=K).estimate(
                Pointwise(_fn), x, [Value()], generator=None, sigma=sigma)


@pytest.mark.parametrize(("first", "second"), [("joint", "independent"), ("independent", "joint")])
def test_a_shared_draw_refuses_another_time_smoothing(first, second):
    """A SharedDraw's offsets are split for one time smoothing (δ, or space δx and time
    τσ_t): an estimator smoothing time the other way is refused, not served them."""
    x, _, _ = _inputs()
    draw = SharedDraw()

    def est(time_smoothing):
        return SteinAntithetic(sigma=0.1, num_samples=K, noise="shared", time_smoothing=time_smoothing)

    est(first).evaluate(Pointwise(_fn), x, generator=torch.Generator().manual_seed(0), draw=draw)
    with pytest.raises(ValueError, match="SharedDraw"):
        est(second).evaluate(Pointwise(_fn), x, generator=None, draw=draw)
