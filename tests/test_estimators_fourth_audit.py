"""Fourth mutation audit of the estimator base, Autograd and Hutchinson.

Each test pins a behaviour that a one-line change of pinnlab/estimators/base.py,
autograd.py or hutchinson.py left unnoticed by the earlier suites: Autograd's default
batch of 64 Hessian-vector products (the batch pinnlab.sizes budgets for), and the
exact first-order answers staying differentiable in the points, as f itself is.
Values come from closed forms in float64.
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
    """f = ½zᵀQz + c·z with symmetric, off-diagonal Q: ∇f = Qx + c, ∂_jj f = Q_jj."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=g, dtype=F64)
    q = 0.5 * (m + m.T)
    c = torch.randn(dim, generator=g, dtype=F64)
    return Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1) + z @ c), q, c


def test_autograd_default_batches_64_hessian_vector_products(monkeypatch):
    """Autograd() vmaps its HVPs 64 coordinates at a time, the default pinnlab.sizes
    budgets for (`estimator.chunk_size or 64`): at D = 66 the Hessian diagonal is two
    batches of 64 and 2 one-hot tangents, and still the exact diag(Q); a weighted
    Laplacian on 65 nonzero weights is batches of 64 and 1."""
    batches = []
    real_vmap = autograd_module.vmap

    def recording_vmap(fn):
        mapped = real_vmap(fn)

        def call(units):
            batches.append(units.shape[0])
            return mapped(units)

        return call

    monkeypatch.setattr(autograd_module, "vmap", recording_vmap)
    dim = 66
    f, q, _ = _quadratic(dim)
    x = torch.randn(2, dim, dtype=F64, generator=torch.Generator().manual_seed(1))
    weights = torch.ones(dim, dtype=F64)
    weights[-1] = 0  # the time column
    diag, lap = Autograd().estimate(f, x, [HessianDiagonal(), WeightedLaplacian(weights)])
    assert batches == [64, 2, 64, 1]
    assert Autograd().chunk_size == 64
    torch.testing.assert_close(diag, torch.diagonal(q).expand(2, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(lap, torch.diagonal(q)[:-1].sum().expand(2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2),
                                       Hutchinson(num_probes=2, noise="shared")],
                         ids=["autograd", "hutchinson-independent", "hutchinson-shared"])
def test_exact_first_order_answers_are_differentiable_in_the_points(estimator):
    """Value, Gradient and a·∇f are exact autograd (Hutchinson's too), so like f they
    carry the graph to points x that require grad: for f = ½zᵀQz + c·z, per point
    ∂_x Σ f = Qx + c, ∂_x Σ_j (∇f)_j = Q1 and ∂_x (a·∇f) = Qa (a detached point gives
    an answer without a graph)."""
    dim = 3
    f, q, c = _quadratic(dim, seed=2)
    x = torch.randn(4, dim, dtype=F64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    a = torch.tensor([0.5, -2.0, 1.0], dtype=F64)
    answers = estimator.estimate(f, x, [Value(), Gradient(), Directional(a)],
                                 generator=torch.Generator().manual_seed(0))
    expected = [x.detach() @ q + c, (q @ torch.ones(dim, dtype=F64)).expand(4, -1), (q @ a).expand(4, -1)]
    for answer, grad_x in zip(answers, expected, strict=True):
        assert answer.requires_grad
        (got,) = torch.autograd.grad(answer.sum(), x, retain_graph=True)
        torch.testing.assert_close(got, grad_x, rtol=1e-12, atol=1e-12)
