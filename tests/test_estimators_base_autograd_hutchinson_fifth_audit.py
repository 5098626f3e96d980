"""Fifth mutation audit of the estimator base, Autograd and Hutchinson.

Each test pins a behaviour that a one-line change of pinnlab/estimators/base.py,
autograd.py or hutchinson.py left unnoticed by the earlier suites. Values come from
closed forms in float64 (quadratics with an off-diagonal Hessian, separable cubics);
the "meta" device checks where answers are placed without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import (
    Autograd,
    Directional,
    Gradient,
    HessianDiagonal,
    Hutchinson,
    Value,
    WeightedLaplacian,
)
from pinnlab.estimators import autograd as autograd_module
from pinnlab.nets import Pointwise

F64 = torch.float64


def _quadratic(dim, seed=0):
    """f = ½zᵀQz + c·z with a symmetric Q whose diagonal entries all differ: ∂_jj f = Q_jj."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=g, dtype=F64)
    q = 0.5 * (m + m.T) + torch.diag(torch.arange(1.0, dim + 1, dtype=F64))
    c = torch.randn(dim, generator=g, dtype=F64)
    return Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1) + z @ c), q


def _record_hvp_batches(monkeypatch):
    """The coordinates of the one-hot tangents of each vmapped HVP batch of Autograd, in call order."""
    batches = []
    real_vmap = autograd_module.vmap

    def recording_vmap(fn):
        mapped = real_vmap(fn)

        def call(units):
            batches.append(units.argmax(-1).tolist())
            return mapped(units)

        return call

    monkeypatch.setattr(autograd_module, "vmap", recording_vmap)
    return batches


def test_autograd_per_point_weights_skip_the_columns_zero_at_every_point(monkeypatch):
    """(N, D) weights cost one HVP per column that is nonzero at some point (the time
    column, zero everywhere, is never differentiated twice), as with (D,) weights; the
    values are Σ_j w_nj Q_jj per point."""
    batches = _record_hvp_batches(monkeypatch)
    f, q = _quadratic(4)
    x = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]], dtype=F64)
    (lap,) = Autograd().estimate(f, x, [WeightedLaplacian(w)])
    assert batches == [[0, 1, 2]]
    torch.testing.assert_close(lap, w @ torch.diagonal(q), rtol=0, atol=1e-12)


def test_autograd_laplacians_on_distinct_column_sets_of_equal_size_and_sum_in_one_call():
    """Two weighted Laplacians of one call on columns {0, 3} and {1, 2} (same count, same
    index sum) each get their own Hessian columns: Q_00 + Q_33 and 2·Q_11 − Q_22, not the
    other's diagonal under its own weights."""
    f, q = _quadratic(4, seed=3)
    x = torch.randn(2, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    w1 = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=F64)
    w2 = torch.tensor([0.0, 2.0, -1.0, 0.0], dtype=F64)
    lap1, lap2, diag = Autograd().estimate(f, x, [WeightedLaplacian(w1), WeightedLaplacian(w2), HessianDiagonal()])
    d = torch.diagonal(q)
    torch.testing.assert_close(lap1, (d[0] + d[3]).expand(2), rtol=0, atol=1e-12)
    torch.testing.assert_close(lap2, (2 * d[1] - d[2]).expand(2), rtol=0, atol=1e-12)
    torch.testing.assert_close(diag, d.expand(2, -1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", [Autograd(), Autograd(chunk_size=1), Hutchinson(num_probes=2),
                                       Hutchinson(num_probes=3, noise="shared")],
                         ids=["autograd", "autograd-chunk-1", "hutchinson-independent", "hutchinson-shared"])
def test_second_order_answers_are_differentiable_in_the_points(estimator):
    """For the separable cubic f = Σ_j d_j z_j³/6, ∂_jj f = d_j x_j exactly (every Rademacher
    probe gives v_j (Hv)_j = d_j x_j), so at points that require grad the Hessian diagonal
    and the weighted Laplacian carry the graph to x: ∂_x Σ_n Σ_j ∂_jj f = d and
    ∂_x Σ_n Σ_j w_j ∂_jj f = w ⊙ d at every point."""
    d = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    w = torch.tensor([0.5, 0.0, -1.0], dtype=F64)
    f = Pointwise(lambda z: (d * z**3).sum(-1) / 6)
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    diag, lap = estimator.estimate(f, x, [HessianDiagonal(), WeightedLaplacian(w)],
                                   generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(diag, d * x.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(lap, x.detach() @ (w * d), rtol=0, atol=1e-12)
    (dx_diag,) = torch.autograd.grad(diag.sum(), x, retain_graph=True)
    (dx_lap,) = torch.autograd.grad(lap.sum(), x)
    torch.testing.assert_close(dx_diag, d.expand(4, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(dx_lap, (w * d).expand(4, -1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2), Hutchinson(num_probes=2, noise="shared")],
                         ids=["autograd", "hutchinson-independent", "hutchinson-shared"])
def test_answers_are_on_the_points_device_with_the_documented_shapes(estimator):
    """Points on another device than the CPU query vectors (the "meta" device stands in
    for a GPU: shapes, dtypes and devices without data): every answer is on the points'
    device in their dtype, `(N,)` for values, directional derivatives and weighted
    Laplacians, `(N, D)` for gradients and Hessian diagonals; Hutchinson draws its probes
    there. (Autograd's second-order queries select nonzero weights by value, which the
    meta device cannot.)"""
    f = Pointwise(lambda z: (z**3).sum(-1) + z.prod(-1))
    x = torch.zeros(5, 3, dtype=F64, device="meta")
    a, w = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([[1.0, 0.0, 2.0]])
    queries = [Value(), Gradient(), Directional(a), Directional(a.expand(5, -1)),
               WeightedLaplacian(w), WeightedLaplacian(w[0]), HessianDiagonal()]
    if isinstance(estimator, Autograd):
        queries = queries[:4]
    out = estimator.estimate(f, x, queries, generator=None)
    expected = [(5,), (5, 3), (5,), (5,), (5,), (5,), (5, 3)][: len(queries)]
    assert [(t.device.type, t.dtype, tuple(t.shape)) for t in out] == [("meta", F64, s) for s in expected]
    for n in (0, 5):
        values = estimator.evaluate(f, x[:n], generator=None, chunk_size=2)
        assert (values.device.type, values.dtype, tuple(values.shape)) == ("meta", F64, (n,))


def test_hessian_columns_follow_the_coordinates_given_and_none_gives_an_empty_block():
    """hessian_columns answers `(N, len(coordinates))` in the points' dtype and device:
    columns in the order asked (Q_22, Q_00, Q_22 here, across chunks of 2), and for no
    coordinates (a weighted Laplacian with all-zero weights) an empty float64 block,
    not a default-dtype CPU one."""
    f, q = _quadratic(3, seed=4)
    x = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    cols = autograd_module.hessian_columns(f, x, torch.tensor([2, 0, 2]), chunk_size=2)
    d = torch.diagonal(q)
    torch.testing.assert_close(cols, d[[2, 0, 2]].expand(2, -1), rtol=0, atol=1e-12)
    for points in (x, torch.zeros(4, 3, dtype=F64, device="meta")):
        empty = autograd_module.hessian_columns(f, points, torch.zeros(0, dtype=torch.long), chunk_size=2)
        assert (empty.device, empty.dtype, tuple(empty.shape)) == (points.device, F64, (len(points), 0))
