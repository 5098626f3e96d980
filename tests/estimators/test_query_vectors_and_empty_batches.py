"""Query vectors are taken as `(D,)`, `(1, D)` or `(N, D)` and cast to the points' dtype,
and ``evaluate`` on no points gives no values, for every estimator."""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import (
    Autograd,
    Directional,
    Hutchinson,
    SteinAntithetic,
    WeightedLaplacian,
)
from pinnlab.nets import Pointwise

F64 = torch.float64
_F = Pointwise(lambda z: torch.sin(z).sum(-1) + z[..., 0] * z[..., 1])
_ESTIMATORS = {
    "autograd": Autograd(),
    "hutchinson": Hutchinson(num_probes=3),
    "stein": SteinAntithetic(sigma=0.1, num_samples=8),
    "stein-shared": SteinAntithetic(sigma=0.1, num_samples=8, noise="shared"),
    # chunks of 3 of the 4 points: a (1, D) vector is kept whole for every chunk, not sliced
    "stein-shared-chunked": SteinAntithetic(sigma=0.1, num_samples=8, noise="shared", chunk_size=3),
}


def _answers(estimator, x, vector, weights):
    return estimator.estimate(_F, x, [Directional(vector), WeightedLaplacian(weights)],
                              generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(_ESTIMATORS))
def test_a_one_row_query_vector_is_the_same_vector_for_every_point(name):
    """(1, D) is documented beside (D,): the same numbers, not a shape error."""
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    a, w = torch.tensor([1.0, -2.0, 0.5], dtype=F64), torch.tensor([1.0, 0.0, 2.0], dtype=F64)
    flat = _answers(_ESTIMATORS[name], x, a, w)
    row = _answers(_ESTIMATORS[name], x, a[None], w[None])
    for got, expected in zip(row, flat):
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", list(_ESTIMATORS))
def test_query_vectors_take_the_points_dtype(name):
    """float64 vectors for float32 points: float32 answers equal to those of float32
    vectors (they were promoted to float64 answers, or failed in a jvp)."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    a, w = torch.tensor([1.0, -2.0, 0.5], dtype=F64), torch.tensor([1.0, 0.0, 2.0], dtype=F64)
    wide = _answers(_ESTIMATORS[name], x, a, w)
    narrow = _answers(_ESTIMATORS[name], x, a.float(), w.float())
    for got, expected in zip(wide, narrow):
        assert got.dtype == torch.float32
        assert torch.equal(got, expected)


@pytest.mark.parametrize("name", list(_ESTIMATORS))
def test_evaluate_on_no_points_gives_no_values(name):
    x = torch.zeros(0, 3, dtype=F64)
    out = _ESTIMATORS[name].evaluate(_F, x, generator=torch.Generator().manual_seed(0), chunk_size=4)
    assert out.shape == (0,) and out.dtype == F64
