"""A SharedDraw is for one dtype of points, also when σ is exactly representable in both.

The draw's key holds the points' dtype; the σ comparison alone does not refuse a float32
call after a float64 draw when σ is the same number in both (0.5): the float64 noise would
be used for float32 points.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import SteinAntithetic
from pinnlab.estimators.stein import SharedDraw
from pinnlab.nets import Pointwise


def test_a_shared_draw_refuses_points_of_another_dtype_at_an_exact_sigma():
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est = SteinAntithetic(sigma=0.5, num_samples=4, noise="shared")
    draw, generator = SharedDraw(), torch.Generator().manual_seed(1)
    est.evaluate(f, x, generator=generator, draw=draw)
    with pytest.raises(ValueError, match="SharedDraw serves"):
        est.evaluate(f, x.float(), generator=generator, draw=draw)
    # the same dtype stays served, from the first call's draw
    assert torch.equal(est.evaluate(f, x, generator=generator, draw=draw),
                       est.evaluate(f, x, generator=torch.Generator().manual_seed(1)))
