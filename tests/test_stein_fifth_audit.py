"""SteinAntithetic, fifth audit: what the earlier audits left to chance.

- The value estimate carries the gradient of a training loss: in the model's parameters
  and in a σ given as a tensor (the tuning layer differentiates in σ), exactly the
  derivatives of its formula on the draw.
- ξ² − 1 is contracted ``CURVATURE_BLOCK`` elements' worth of points at a time (per point
  K·D elements), not a block sized by the whole draw.
- Points in half precision give estimates in their own dtype with independent time
  smoothing too (the space mask follows the draw's dtype).
- ``evaluate`` with independent noise is made in the chunks of points it is asked for.
"""

from __future__ import annotations

import pytest
import torch

import pinnlab.estimators.stein as stein
from pinnlab.estimators import (
    Directional,
    Gradient,
    HessianDiagonal,
    SteinAntithetic,
    Value,
    WeightedLaplacian,
)
from pinnlab.nets import Pointwise

F64 = torch.float64
N, K, D = 5, 7, 3
SIGMA = torch.tensor([0.3, 0.2, 0.45], dtype=F64)


def _points(dtype=F64):
    return torch.randn(N, D, dtype=F64, generator=torch.Generator().manual_seed(4)).to(dtype)


def _draw(noise, seed):
    """The ξ `(N, K, D)` the estimator draws from ``manual_seed(seed)`` (shared: one
    `(K, D)` draw for every point)."""
    g = torch.Generator().manual_seed(seed)
    if noise == "shared":
        return torch.randn(K, D, dtype=F64, generator=g).expand(N, K, D)
    return torch.randn(N, K, D, dtype=F64, generator=g)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_the_value_estimate_is_differentiable_in_the_model_and_in_sigma(noise):
    """f = θ‖z‖²: û = θ(‖x‖² + (1/K)Σ_k ‖σ⊙ξ_k‖²) on the draw, so ∂û/∂θ = ‖x‖² +
    (1/K)Σ_k‖σ⊙ξ_k‖² and ∂(Σ_n û_n)/∂σ_j = 2θσ_j Σ_n (1/K)Σ_k ξ_nkj², to round-off."""
    x = _points()
    theta = torch.tensor(1.7, dtype=F64, requires_grad=True)
    sigma = SIGMA.clone().requires_grad_(True)
    est = SteinAntithetic(sigma=0.1, num_samples=K, noise=noise)
    (value,) = est.estimate(Pointwise(lambda z: theta * (z**2).sum(-1)), x, [Value()], sigma=sigma,
                            generator=torch.Generator().manual_seed(9))
    d_theta, d_sigma = torch.autograd.grad(value.sum(), (theta, sigma))
    xi = _draw(noise, 9)
    spread = ((SIGMA * xi) ** 2).sum(-1).mean(1)  # (N,)
    torch.testing.assert_close(value.detach(), 1.7 * ((x**2).sum(-1) + spread), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_theta, ((x**2).sum(-1) + spread).sum(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_sigma, 2 * 1.7 * SIGMA * (xi**2).mean(1).sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
def test_a_value_loss_trains_the_model_through_the_independent_time_pairs_too(time_smoothing):
    """f = θ·(z_0 + z_1 + z_2): the antithetic mean is θ·Σ_j x_j (space offsets cancel in the
    pair; the shared time offset τσ_t of independent smoothing adds θσ_t·mean_k τ_k), and
    ∂û/∂θ is that value over θ."""
    x = _points()
    theta = torch.tensor(-0.8, dtype=F64, requires_grad=True)
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, time_smoothing=time_smoothing)
    (value,) = est.estimate(Pointwise(lambda z: theta * z.sum(-1)), x, [Value()],
                            generator=torch.Generator().manual_seed(5))
    (d_theta,) = torch.autograd.grad(value.sum(), theta)
    want = x.sum(-1)
    if time_smoothing == "independent":
        want = want + SIGMA[-1] * _draw("independent", 5)[..., -1].mean(1)
    torch.testing.assert_close(value.detach(), -0.8 * want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_theta, want.sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grad", [False, True])
def test_curvature_blocks_hold_the_block_size_in_elements_of_one_points_draws(monkeypatch, grad):
    """CURVATURE_BLOCK = 2·K·D elements: ξ² − 1 is contracted two points at a time (rows
    2, 2, 1 for 5 points), the buffer and fresh blocks alike; numbers as one block."""
    x = _points()
    weights = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    queries = [HessianDiagonal(), WeightedLaplacian(weights)]
    est = SteinAntithetic(sigma=SIGMA, num_samples=K)
    sigma = SIGMA.clone().requires_grad_(grad)

    def run():
        with torch.set_grad_enabled(grad):
            return est.estimate(Pointwise(lambda z: torch.sin(z).sum(-1) * z[..., 0]), x, queries,
                                sigma=sigma, generator=torch.Generator().manual_seed(6))

    whole = run()
    rows = []
    einsum = torch.einsum

    def spy(equation, left, right):
        if right.dim() == 3:
            rows.append(right.shape[0])
        return einsum(equation, left, right)

    monkeypatch.setattr(stein, "CURVATURE_BLOCK", 2 * K * D)
    monkeypatch.setattr(torch, "einsum", spy)
    blocked = run()
    assert rows == [2, 2, 1] * 2  # the Hessian diagonal, then the Laplacian
    for a, b in zip(blocked, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_points_keep_their_dtype_with_independent_time_smoothing(dtype, noise):
    """f = ‖z‖² at bfloat16/float16 points: every query runs (no float32 mask mixed into the
    offsets or the direction) and answers in the points' dtype; the value is the pair mean
    (1/K)Σ_k (‖x + δx + δt‖² + ‖x − δx + δt‖²)/2 on the draw, to half-precision round-off."""
    x = _points(dtype)
    est = SteinAntithetic(sigma=0.1, num_samples=4, noise=noise, time_smoothing="independent")
    queries = [Value(), Gradient(), Directional(torch.ones(D, dtype=dtype)), HessianDiagonal(),
               WeightedLaplacian(torch.tensor([1.0, 1.0, 0.0], dtype=dtype))]
    out = est.estimate(Pointwise(lambda z: (z**2).sum(-1)), x, queries,
                       generator=torch.Generator().manual_seed(0))
    assert [o.dtype for o in out] == [dtype] * 5
    shape = (4, D) if noise == "shared" else (N, 4, D)
    xi = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).double()
    dx = 0.1 * xi * torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    dt = 0.1 * xi * torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    z = x.double()[:, None]
    want = ((((z + dx + dt) ** 2).sum(-1) + ((z - dx + dt) ** 2).sum(-1)) / 2).mean(1)
    torch.testing.assert_close(out[0].double(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
def test_an_independent_noise_evaluation_is_made_in_the_chunks_it_is_asked_for(time_smoothing):
    """evaluate(chunk_size=2) of 5 points with independent noise: 3 network calls (on the
    pairs of 2, 2 and 1 points), and the values of the three chunks estimated in turn from one
    generator, not of one estimate of all the points."""
    x = _points()
    calls = []

    def fn(z):
        calls.append(z.shape[0])
        return torch.sin(z).sum(-1) * z[..., 0]

    est = SteinAntithetic(sigma=SIGMA, num_samples=K, time_smoothing=time_smoothing)
    got = est.evaluate(Pointwise(fn), x, generator=torch.Generator().manual_seed(8), chunk_size=2)
    assert calls == [2 * 2 * K, 2 * 2 * K, 1 * 2 * K]  # points × pair × K inputs per call
    g = torch.Generator().manual_seed(8)
    want = torch.cat([est.estimate(Pointwise(fn), x[i : i + 2], [Value()], generator=g)[0] for i in (0, 2, 4)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
