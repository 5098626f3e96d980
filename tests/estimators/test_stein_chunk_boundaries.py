"""Independent noise in chunks of points: each chunk, the last partial one included, draws
its own ξ of its own size from the generator in turn.

So an estimate with ``chunk_size=c`` is, number for number, the estimates of its chunks
made one after another from one generator (what ``evaluate`` does with its own chunks):
the draws a result depends on are fixed by the chunk layout alone. A last chunk that drew a
full chunk's noise and kept its first rows gave other numbers (and left the generator
elsewhere for the next call).
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import Gradient, SteinAntithetic, Value, WeightedLaplacian
from pinnlab.nets import Pointwise

F64 = torch.float64
DIM = 3


def _f():
    return Pointwise(lambda z: torch.sin(z).sum(-1) + z[..., 0] * z[..., 1] ** 2)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
@pytest.mark.parametrize("n", [7, 9])  # a last chunk of 1 point, and none partial
def test_independent_noise_chunks_are_the_chunks_estimated_in_turn(n, time_smoothing):
    x = torch.randn(n, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    queries = [Value(), Gradient(), WeightedLaplacian(weights)]
    kw = dict(sigma=0.1, num_samples=5, noise="independent", time_smoothing=time_smoothing)
    chunked = SteinAntithetic(chunk_size=3, **kw).estimate(
        _f(), x, queries, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    whole = SteinAntithetic(**kw)
    parts = [whole.estimate(_f(), x[i : i + 3], queries, generator=generator) for i in range(0, n, 3)]
    for got, pieces in zip(chunked, zip(*parts)):
        assert torch.equal(got, torch.cat(pieces))
    # the generator is left where the chunks left it
    after = torch.Generator().manual_seed(1)
    SteinAntithetic(chunk_size=3, **kw).estimate(_f(), x, queries, generator=after)
    assert torch.equal(torch.randn(4, generator=after), torch.randn(4, generator=generator))


class _Sizes(torch.nn.Module):
    """A pointwise model recording how many points each call evaluates."""

    def __init__(self):
        super().__init__()
        self.inner, self.points = Pointwise(lambda z: (z ** 2).sum(-1)), []

    def forward(self, inputs):
        center = inputs if isinstance(inputs, torch.Tensor) else inputs.center
        self.points.append(center.shape[0])
        return self.inner(inputs)


def test_a_shared_noise_evaluation_is_chunked_by_the_estimators_chunk_size_too():
    """``evaluate(chunk_size=1024)`` takes at most the estimator's own ``chunk_size`` points
    at a time (the documented memory bound: "at most this estimator's own chunk_size"),
    and the values do not depend on the chunks (one shared draw)."""
    x = torch.randn(10, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    model = _Sizes()
    est = SteinAntithetic(sigma=0.1, num_samples=4, noise="shared", chunk_size=3)
    got = est.evaluate(model, x, generator=torch.Generator().manual_seed(2))
    assert model.points == [3, 3, 3, 1]
    one_chunk = SteinAntithetic(sigma=0.1, num_samples=4, noise="shared").evaluate(
        model, x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got, one_chunk, rtol=1e-14, atol=0)


def test_a_partial_last_curvature_block_reuses_the_buffer_silently(monkeypatch):
    """ξ² − 1 in blocks of 4 points for 10 points (the last block holds 2): the shared
    buffer is sliced to the block, not resized by torch (which warns "An output with one
    or more elements was resized"), and the estimates are those of one block."""
    import warnings

    import pinnlab.estimators.stein as stein

    x = torch.randn(10, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    est = SteinAntithetic(sigma=0.1, num_samples=5)
    queries = [WeightedLaplacian(torch.ones(DIM, dtype=F64))]
    whole = est.estimate(_f(), x, queries, generator=torch.Generator().manual_seed(3))[0]
    monkeypatch.setattr(stein, "CURVATURE_BLOCK", 4 * 5 * DIM)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")
        blocked = est.estimate(_f(), x, queries, generator=torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(blocked, whole, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_sigma_is_refused(flag):
    """``sigma=True`` is a bool, not a smoothing scale (it would smooth at σ = 1 silently)."""
    with pytest.raises(TypeError, match="sigma must be a float or a tensor"):
        SteinAntithetic(sigma=flag)
