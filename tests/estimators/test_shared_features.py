"""Shared noise forms the MLP's first-layer features W(σξ) once per draw, never across a graph.

A shared-noise evaluation in chunks of points (or a slice in blocks) perturbed every chunk
by the same σξ and formed W(σξ) again for each: at d = 10⁵ a slice's 100 blocks cost three
times W x of all its points. The draw's FeatureCache keeps them for plain values only: a
training graph, a torch.func transform, a changed or other weight form them anew.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap
from torch.utils.flop_counter import FlopCounterMode

from pinnlab._typing import is_transform_wrapped
from pinnlab.estimators import SteinAntithetic, Value, WeightedLaplacian
from pinnlab.estimators.stein import SharedDraw
from pinnlab.nets import MLP
from pinnlab.nets.perturbation import FeatureCache

F64 = torch.float64
DIM, WIDTH, K, N = 300, 4, 6, 40


def _net():
    return MLP(DIM, width=WIDTH, depth=2, dtype=F64, generator=torch.Generator().manual_seed(3))


def _points(n=N, seed=1):
    return torch.randn(n, DIM, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _estimator(**kwargs):
    return SteinAntithetic(sigma=0.1, num_samples=K, noise="shared", **kwargs)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _first_layer(points: int, noise_rows: int) -> int:
    return 2 * DIM * WIDTH * (points + noise_rows)  # flops: 2 per multiply-add


def _uncached(monkeypatch):
    """Form W δ at every call, as before the cache."""
    monkeypatch.setattr(FeatureCache, "features", lambda self, weight, parts: tuple(p @ weight.T for p in parts))


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
def test_a_chunked_estimate_without_autograd_forms_the_noise_features_once(time_smoothing, monkeypatch):
    """Chunks of 4 points: (N + K)·D·w first-layer multiply-adds (each of the 10 chunks formed
    W(σξ): (N + 10·K)·D·w), values bit for bit those of the features formed per chunk."""
    net, x = _net(), _points()
    est = _estimator(chunk_size=4, time_smoothing=time_smoothing)
    rows = K if time_smoothing == "joint" else 2 * K  # two shared parts: space and time noise

    def estimate():
        with torch.no_grad():
            return est.estimate(net, x, [Value()], generator=torch.Generator().manual_seed(5))[0]

    flops = _flops(estimate)
    assert _first_layer(N, rows) <= flops <= 1.05 * _first_layer(N, rows)
    got = estimate()
    _uncached(monkeypatch)
    assert _flops(estimate) >= _first_layer(N, 10 * rows)
    assert torch.equal(got, estimate())


def test_a_training_graph_forms_the_noise_features_per_chunk_with_the_same_gradients(monkeypatch):
    """Under autograd each chunk forms its own W(σξ) as before (one product per chunk in the
    graph), so a step's values and gradients in θ and σ are those of before, bit for bit."""
    net, x = _net(), _points()
    est = _estimator(chunk_size=4)

    def step():
        sigma = torch.full((DIM,), 0.1, dtype=F64, requires_grad=True)
        params = dict(net.named_parameters())
        lap, = est.estimate(lambda z: functional_call(net, params, (z,)), x,
                            [WeightedLaplacian(torch.ones(DIM, dtype=F64))],
                            generator=torch.Generator().manual_seed(5), sigma=sigma)
        loss = (lap ** 2).mean()
        return [loss, *torch.autograd.grad(loss, [*params.values(), sigma])]

    with FlopCounterMode(display=False) as counter:
        est.estimate(net, x, [Value()], generator=torch.Generator().manual_seed(5))  # θ requires grad
    assert counter.get_total_flops() >= _first_layer(N, 10 * K)
    got = step()
    _uncached(monkeypatch)
    expected = step()
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_a_shared_draw_serves_blocks_of_points_as_one_call():
    """evaluate on blocks of points with one SharedDraw: the values of one call on all of
    them (same chunks), and W(σξ) formed at the first block only."""
    net, x = _net(), _points()
    est = _estimator()
    one_call = est.evaluate(net, x, generator=torch.Generator().manual_seed(5), chunk_size=8)
    generator, draw = torch.Generator().manual_seed(5), SharedDraw()

    def blocks():
        return torch.cat([est.evaluate(net, x[s : s + 16], generator=generator, chunk_size=8, draw=draw)
                          for s in range(0, N, 16)])

    flops = _flops(blocks)
    assert torch.equal(blocks(), one_call)  # the generator is not drawn from again
    assert _first_layer(N, K) <= flops <= 1.05 * _first_layer(N, K)


def test_a_changed_or_other_weight_forms_the_features_anew():
    """The features kept for a weight are not those of a weight changed in place since, nor
    of another weight tensor (other parameters) evaluated with the same draw."""
    net, x = _net(), _points()
    est = _estimator()

    def fresh(model):
        return est.evaluate(model, x, generator=torch.Generator().manual_seed(5))

    draw = SharedDraw()
    generator = torch.Generator().manual_seed(5)
    est.evaluate(net, x, generator=generator, draw=draw)
    with torch.no_grad():
        net.layers[0].weight.mul_(1.5)  # an optimizer step on the same tensor
    assert torch.equal(est.evaluate(net, x, generator=generator, draw=draw), fresh(net))
    other = _net()
    with torch.no_grad():
        other.layers[0].weight.mul_(-2.0)  # another tensor at the same version as the kept one
    assert torch.equal(est.evaluate(other, x, generator=generator, draw=draw), fresh(other))


def test_a_shared_draw_refuses_another_estimator_sigma_or_width():
    """A draw is for one K, σ (not σ values batched by vmap), time smoothing and points'
    width and dtype."""
    net, x = _net(), _points()
    draw, generator = SharedDraw(), torch.Generator().manual_seed(5)
    _estimator().evaluate(net, x, generator=generator, draw=draw)
    for call in (
        lambda: SteinAntithetic(sigma=0.1, num_samples=K + 1, noise="shared").evaluate(
            net, x, generator=generator, draw=draw),
        lambda: _estimator().evaluate(net, x, generator=generator, draw=draw, sigma=0.2),
        lambda: _estimator().evaluate(MLP(DIM - 1, width=WIDTH, depth=2, dtype=F64), x[:, 1:],
                                      generator=generator, draw=draw),
        lambda: vmap(lambda sigma: _estimator().evaluate(net, x, generator=generator, draw=draw, sigma=sigma),
                     randomness="same")(torch.tensor([0.1, 0.2], dtype=F64)),
        lambda: _estimator().evaluate(net.float(), x.float(), generator=generator, draw=draw),
    ):
        with pytest.raises(ValueError, match="SharedDraw serves"):
            call()


def test_features_inside_a_transform_are_not_kept():
    """vmap over stacked parameters (an ensemble) with one draw: each model's values, and the
    draw keeps no features that live in the transform (they would outlive its level)."""
    nets = [_net(), _net()]
    with torch.no_grad():
        nets[1].layers[0].weight.mul_(-1.0)
    stacked = {k: torch.stack([dict(n.named_parameters())[k].detach() for n in nets])
               for k, _ in nets[0].named_parameters()}
    x, est, draw = _points(), _estimator(), SharedDraw()
    generator = torch.Generator().manual_seed(5)
    est.evaluate(nets[0], x, generator=generator, draw=draw)  # drawn outside the transform

    def one(params):
        return est.evaluate(lambda z: functional_call(nets[0], params, (z,)), x, generator=generator, draw=draw)

    got = vmap(one)(stacked)
    for values, net in zip(got, nets):
        torch.testing.assert_close(values, est.evaluate(net, x, generator=torch.Generator().manual_seed(5)),
                                   rtol=1e-12, atol=1e-12)
    cache = draw._drawn[2].cache
    assert not any(is_transform_wrapped(t) for t in (cache._key[0], *cache._features))


def test_an_inference_mode_weight_is_evaluated():
    """A weight made in inference mode has no version counter: its features are formed per
    chunk, not kept (reading the version raised)."""
    with torch.inference_mode():
        net, x = _net(), _points()
    est = _estimator(chunk_size=8)
    got = est.evaluate(net, x, generator=torch.Generator().manual_seed(5))
    plain = _net()
    assert torch.equal(got, est.evaluate(plain, x.clone(), generator=torch.Generator().manual_seed(5)))


def test_a_draw_made_inside_a_transform_is_not_kept():
    """vmap over σ (a draw at σ values that live in the transform): each σ's values, and the
    draw is not kept for later calls, which draw anew from the generator."""
    net, x, est, draw = _net(), _points(), _estimator(), SharedDraw()
    generator = torch.Generator().manual_seed(5)
    sigmas = torch.tensor([0.1, 0.2], dtype=F64)
    got = vmap(lambda sigma: est.evaluate(net, x, generator=generator, draw=draw, sigma=sigma),
               randomness="same")(sigmas)
    for values, sigma in zip(got, sigmas.tolist()):
        assert torch.equal(values, est.evaluate(net, x, generator=torch.Generator().manual_seed(5), sigma=sigma))
    after_one_draw = torch.Generator().manual_seed(5)
    torch.randn((K, DIM), generator=after_one_draw, dtype=F64)
    assert torch.equal(est.evaluate(net, x, generator=generator, draw=draw),
                       est.evaluate(net, x, generator=after_one_draw))
