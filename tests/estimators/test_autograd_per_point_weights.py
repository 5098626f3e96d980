"""Autograd weighted Laplacian with per-point (N, D) weights whose zero pattern differs by point.

Fails when the columns a Hessian diagonal is taken on are those nonzero at every point
(`.all(0)`) instead of at some point (`.any(0)`): a column
that is zero at some point but not at others would be dropped for every point)."""
import torch

from pinnlab.estimators import Autograd
from pinnlab.estimators.base import HessianDiagonal, WeightedLaplacian
from pinnlab.nets import Pointwise


def test_per_point_weights_with_different_zero_patterns_match_the_contracted_diagonal():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 3, generator=g, dtype=torch.float64)
    q = q + q.T
    f = Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1) + torch.sin(z).sum(-1))
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]], dtype=torch.float64)
    lap, diag = Autograd().estimate(f, x, [WeightedLaplacian(w), HessianDiagonal()], generator=None)
    expected_diag = torch.diagonal(q).expand(2, -1) - torch.sin(x)
    torch.testing.assert_close(diag, expected_diag, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lap, (w * expected_diag).sum(-1), rtol=1e-12, atol=1e-12)
