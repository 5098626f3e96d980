"""Chunked estimates at high D: what a chunk holds, and chunking that leaves the numbers alone.

An audit at d = 10⁴–10⁵ found evaluation chunks sized as if shared noise materialised
its perturbed inputs (6 points per chunk at d = 10⁴, 1 at d = 10⁵, each redrawing the
K×D noise: 9–72× slower), every Stein chunk rebuilding δ = σ⊙ξ from the shared draw
(so a training graph held one copy per chunk), and autograd's Hessian diagonal building
a dense D×D identity (400 MB at d = 10⁴).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.func import grad, jvp, vmap

from pinnlab import PINNProblem
from pinnlab.equations import EQUATIONS
from pinnlab.estimators import (
    Autograd,
    HessianDiagonal,
    SteinAntithetic,
    Value,
    WeightedLaplacian,
)
from pinnlab.losses import Biased
from pinnlab.nets import MLP, Perturbation, Pointwise
from pinnlab.solvers.evaluate import EVAL_ELEMENT_BUDGET, eval_chunk_size, predict

F64 = torch.float64


def _problem(dim: int, noise: str, net=None) -> PINNProblem:
    equation = EQUATIONS["allen_cahn_two_body"](dim, seed=1)
    net = net if net is not None else MLP(equation.input_dim, width=128, depth=4)
    return PINNProblem(equation, net, SteinAntithetic(num_samples=128, noise=noise), Biased())


@pytest.mark.parametrize(("samples", "expected"), [(128, 512), (1024, 64)])
def test_a_shared_noise_evaluation_chunk_is_sized_by_the_hidden_layer_not_by_d(samples, expected):
    """With shared noise the MLP's first layer is Wx + W(σξ): a chunk's largest tensor is
    the (n, 2, K, w) hidden layer, 2·K·w elements per point at any D (it was sized by
    2·K·D: 6 points at d = 10⁴ with K = 128, 1 point with K = 1024)."""
    shared = _problem(10_000, "shared")
    assert eval_chunk_size(shared, samples) == expected == EVAL_ELEMENT_BUDGET // (2 * samples * 128)
    # what does materialise D-wide inputs keeps the D-sized chunk
    assert eval_chunk_size(_problem(10_000, "independent"), 128) == EVAL_ELEMENT_BUDGET // (2 * 128 * 10_000)
    pointwise = Pointwise(lambda z: z.sum(-1))
    assert eval_chunk_size(_problem(10_000, "shared", pointwise), 128) == EVAL_ELEMENT_BUDGET // (2 * 128 * 10_000)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
def test_a_shared_noise_evaluation_does_not_depend_on_its_chunks(time_smoothing):
    """One set of K vectors serves every point, as in training: the values equal one
    unchunked estimate for any chunk size (each chunk drew its own set, so the numbers
    changed with the chunk size)."""
    f = Pointwise(lambda z: torch.sin(z).sum(-1) + z[..., 0] * z[..., -1])
    x = torch.randn(11, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    est = SteinAntithetic(sigma=0.3, num_samples=8, noise="shared", time_smoothing=time_smoothing)

    def gen():
        return torch.Generator().manual_seed(0)

    whole = est.estimate(f, x, [Value()], generator=gen())[0]
    for chunk in (1, 3, 11, 64):
        torch.testing.assert_close(est.evaluate(f, x, generator=gen(), chunk_size=chunk), whole,
                                   rtol=1e-12, atol=1e-12)
    # the estimator's own chunk_size bounds it too, still with the same numbers
    small = SteinAntithetic(sigma=0.3, num_samples=8, noise="shared", time_smoothing=time_smoothing, chunk_size=2)
    torch.testing.assert_close(small.evaluate(f, x, generator=gen(), chunk_size=5), whole, rtol=1e-12, atol=1e-12)


def test_predict_with_shared_noise_gives_the_single_draw_values(monkeypatch):
    """End to end: predict() (the solver's evaluation) in chunks of 7 points equals the
    unchunked single-draw estimate."""
    problem = _problem(3, "shared", MLP(3, width=8, depth=2, dtype=F64))
    params = problem.init_params(dtype=F64)
    x = problem.equation.test_set(300).to(F64)
    monkeypatch.setattr(importlib.import_module("pinnlab.solvers.evaluate"), "eval_chunk_size",
                        lambda problem, samples: 7)
    chunked = predict(problem, params, x, num_samples=16, generator=torch.Generator().manual_seed(0))
    est = SteinAntithetic(num_samples=16, noise="shared")
    smoothed = est.estimate(problem.model(params), x, [Value()], generator=torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(chunked, problem.equation.solution(x, smoothed), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
def test_shared_noise_chunks_reuse_one_offset_tensor(time_smoothing):
    """δ = σ⊙ξ is built once per estimate: every chunk's Perturbation holds the same
    tensors, so a training graph keeps one (K, D) copy, not one per chunk (at d = 10⁵,
    K = 128, chunk 10 the copies cost 0.3 GB)."""
    f = Pointwise(lambda z: torch.sin(z).sum(-1))
    seen = []

    def model(inputs):
        if isinstance(inputs, Perturbation):
            seen.append(inputs.parts)
        return f(inputs)

    x = torch.randn(10, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    est = SteinAntithetic(sigma=0.1, num_samples=8, noise="shared", time_smoothing=time_smoothing, chunk_size=3)
    queries = [Value(), WeightedLaplacian(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64))]
    chunked = est.estimate(model, x, queries, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 4 and all(p is q for parts in seen for p, q in zip(parts, seen[0]))
    whole = SteinAntithetic(sigma=0.1, num_samples=8, noise="shared", time_smoothing=time_smoothing).estimate(
        f, x, queries, generator=torch.Generator().manual_seed(0))
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _hessian_columns_with_identity(model, x, coordinates, chunk_size):
    """The former formula: tangents taken as rows of a dense D×D identity."""
    grad_fn = grad(lambda z: model(z).sum())
    eye = torch.eye(x.shape[1], dtype=x.dtype)

    def column(j):
        tangent = eye[j].expand_as(x)
        return (jvp(grad_fn, (x,), (tangent,))[1] * tangent).sum(-1)

    return torch.cat([vmap(column)(coordinates[i : i + chunk_size])
                      for i in range(0, len(coordinates), chunk_size)]).T


def test_autograd_hessian_diagonal_builds_no_identity_and_keeps_its_numbers(monkeypatch):
    """The HVP tangents are one-hot rows per chunk, never torch.eye(D) (400 MB at
    d = 10⁴, 40 GB at d = 10⁵); the Hessian diagonal and weighted Laplacian are the
    former numbers bit for bit in float64."""
    net = MLP(7, width=16, depth=3, dtype=F64, generator=torch.Generator().manual_seed(2))
    x = torch.randn(5, 7, dtype=F64, generator=torch.Generator().manual_seed(3))
    weights = torch.rand(7, dtype=F64, generator=torch.Generator().manual_seed(4))
    weights[2] = 0
    nonzero = torch.nonzero(weights).flatten()
    expected = _hessian_columns_with_identity(net, x, torch.arange(7), 3)
    expected_lap = (_hessian_columns_with_identity(net, x, nonzero, 3) * weights[nonzero]).sum(-1)

    def no_identity(*args, **kwargs):
        raise AssertionError("torch.eye called: a dense D×D identity")

    monkeypatch.setattr(torch, "eye", no_identity)
    diag, lap = Autograd(chunk_size=3).estimate(net, x, [HessianDiagonal(), WeightedLaplacian(weights)])
    assert torch.equal(diag, expected)
    assert torch.equal(lap, expected_lap)
