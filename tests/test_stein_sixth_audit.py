"""SteinAntithetic, sixth audit: what the earlier audits left to chance.

- A :class:`SharedDraw` serves later calls at the first call's per-coordinate σ (the σ it
  keeps for its check is the σ it drew at, entry by entry).
- Chunks of points slice per-point `(N, D)` directions and weights only: a shared `(D,)`
  vector is kept whole also when D equals the number of points.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import Directional, SteinAntithetic, WeightedLaplacian
from pinnlab.estimators.stein import SharedDraw
from pinnlab.nets import Pointwise

F64 = torch.float64
K = 6
SIGMA = torch.tensor([0.3, 0.2, 0.45, 0.1], dtype=F64)


def _points(n, d, seed=3):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _shared_xi(seed, d=4):
    """The shared ξ `(K, D)` the estimator draws from ``manual_seed(seed)``."""
    return torch.randn(K, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _square():
    return Pointwise(lambda z: (z**2).sum(-1))


def test_a_shared_draw_serves_later_blocks_at_a_per_coordinate_sigma():
    """Two evaluate calls sharing one SharedDraw at σ = (0.3, 0.2, 0.45, 0.1): f = ‖z‖²
    gives ‖x‖² + (1/K)Σ_k ‖σ⊙ξ_k‖² on the first call's ξ for both blocks, and a third
    call at another per-coordinate σ is refused."""
    x = _points(5, 4)
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise="shared")
    draw = SharedDraw()
    first = est.evaluate(_square(), x[:3], generator=torch.Generator().manual_seed(2), draw=draw)
    second = est.evaluate(_square(), x[3:], generator=torch.Generator().manual_seed(99), draw=draw)
    spread = ((SIGMA * _shared_xi(2)) ** 2).sum(-1).mean()
    torch.testing.assert_close(torch.cat([first, second]), (x**2).sum(-1) + spread, rtol=1e-12, atol=1e-12)
    other = SIGMA.flip(0)  # same entries, other coordinates
    with pytest.raises(ValueError, match="SharedDraw"):
        est.evaluate(_square(), x[3:], generator=None, draw=draw, sigma=other)


@pytest.mark.parametrize("noise", ["shared", "independent"])
def test_a_shared_direction_is_not_sliced_when_the_width_equals_the_number_of_points(noise):
    """N = D = 4 points, chunk_size=2, direction a `(D,)` (shared by every point) and f = ‖z‖²:
    first = 2x·(σ⊙ξ_k), so the estimate is (1/K)Σ_k (Σ_j a_j ξ_kj/σ_j)·2x·(σ⊙ξ_k) on the
    draw (each chunk draws in turn with independent noise), to round-off; a `(D,)` weighted
    Laplacian too: (1/K)Σ_k (Σ_j w_j(ξ_kj² − 1)/σ_j²)‖σ⊙ξ_k‖²."""
    x = _points(4, 4)
    a = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    w = torch.tensor([0.5, 1.0, 2.0, -1.0], dtype=F64)
    est = SteinAntithetic(sigma=SIGMA, num_samples=K, noise=noise, chunk_size=2)
    got_dir, got_lap = est.estimate(_square(), x, [Directional(a), WeightedLaplacian(w)],
                                    generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    if noise == "shared":
        xi = torch.randn(K, 4, dtype=F64, generator=g).expand(4, K, 4)
    else:  # chunks of 2 points draw (2, K, D) in turn
        xi = torch.cat([torch.randn(2, K, 4, dtype=F64, generator=g) for _ in range(2)])
    delta = SIGMA * xi  # (N, K, D)
    first = 2 * (x[:, None] * delta).sum(-1)
    want_dir = ((xi * (a / SIGMA)).sum(-1) * first).mean(1)
    second = (delta**2).sum(-1)
    want_lap = (((xi**2 - 1) * (w / SIGMA**2)).sum(-1) * second).mean(1)
    torch.testing.assert_close(got_dir, want_dir, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_lap, want_lap, rtol=1e-12, atol=1e-12)
