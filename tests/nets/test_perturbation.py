"""The MLP's factorised first layer on a Perturbation equals evaluating every perturbed
input explicitly, for every layout of the noise and any sign pattern."""

from __future__ import annotations

import pytest
import torch

from pinnlab.nets import MLP, Perturbation, Pointwise

F64 = torch.float64
PATTERNS = ((1.0, 0.0), (-1.0, 0.0), (0.5, -2.0), (0.0, 0.0))  # the last: the centre itself


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "independent"])
def test_mlp_on_a_perturbation_is_the_mlp_on_its_explicit_inputs(shared):
    g = torch.Generator().manual_seed(0)
    n, k, d = 5, 3, 4
    x = torch.randn(n, d, generator=g, dtype=F64)
    shape = (k, d) if shared else (n, k, d)
    parts = (torch.randn(*shape, generator=g, dtype=F64), torch.randn(*shape, generator=g, dtype=F64))
    p = Perturbation(x, parts, PATTERNS)
    net = MLP(d, width=8, depth=3, generator=torch.Generator().manual_seed(1), dtype=F64)
    z = p.materialize()
    assert z.shape == (n, len(PATTERNS), k, d)
    for s, (a, b) in enumerate(PATTERNS):  # the definition, z = x + Σ c_p δ_p
        torch.testing.assert_close(z[:, s], x[:, None] + a * parts[0] + b * parts[1], rtol=0, atol=1e-15)
    explicit = net(z.reshape(-1, d)).reshape(n, len(PATTERNS), k)
    torch.testing.assert_close(net(p), explicit, rtol=1e-12, atol=1e-12)
    pointwise = Pointwise(lambda u: (u ** 2).sum(-1))
    torch.testing.assert_close(pointwise(p), (z ** 2).sum(-1), rtol=0, atol=0)


def test_an_all_zero_pattern_alone_keeps_its_samples():
    """It gave `(N, 1, 1)` (and a stack error beside other patterns) instead of `(N, 1, K)`."""
    x, delta = torch.randn(3, 2), torch.randn(4, 2)
    p = Perturbation(x, (delta,), ((0.0,),))
    net = MLP(2, width=4, depth=2)
    out = net(p)
    assert out.shape == (3, 1, 4)
    torch.testing.assert_close(out, net(x)[:, None, None].expand(3, 1, 4))


def _rows_seen(module: torch.nn.Module) -> list[int]:
    rows: list[int] = []
    module.register_forward_hook(lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    return rows


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "independent"])
def test_the_centre_is_evaluated_once_per_point_from_the_pairs_first_layer(shared):
    """The Stein estimator's f(x) for second derivatives was a separate network call: a
    second W·x (N·D·w multiply-adds, and its weight gradient again: 10 % of a d = 200
    step's FLOPs, 37 % at d = 2000). As the all-zero pattern of the pairs' Perturbation
    it takes the pairs' W·x and runs the later layers once per point, not K times."""
    from pinnlab.estimators import SteinAntithetic
    from pinnlab.estimators.base import WeightedLaplacian

    n, k, d = 5, 3, 4
    net = MLP(d, width=8, depth=3, generator=torch.Generator().manual_seed(1), dtype=F64)
    first_rows, hidden_rows = _rows_seen(net.layers[0]), _rows_seen(net.layers[1])
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    est = SteinAntithetic(sigma=0.1, num_samples=k, noise="shared" if shared else "independent")
    est.estimate(net, x, [WeightedLaplacian(torch.ones(d, dtype=F64))], generator=torch.Generator().manual_seed(2))
    assert first_rows == [n]  # W·x once; W·δ from the weight directly
    assert hidden_rows == [2 * n * k, n]  # the pairs, then the centre once per point

    seen: list[int] = []

    def fn(z):
        seen.append(z.shape[0])
        return (z ** 2).sum(-1)

    p = Perturbation(x, (torch.randn(k, d, dtype=F64),), ((1.0,), (-1.0,), (0.0,)))
    values = Pointwise(fn)(p)
    assert seen == [2 * n * k, n]
    torch.testing.assert_close(values[:, 2], (x ** 2).sum(-1)[:, None].expand(n, k), rtol=0, atol=0)


def test_scalar_noise_features_are_w_times_the_scaled_constant_vector():
    """MLP's folded first layer for one noise value per point and sample, `(..., 1)`:
    W(s⊙n) with n broadcast over every column, for any scale vector s (the estimator passes
    only s = (0, …, 0, σ_t), where W[:, −1]·max(s) would agree)."""
    from pinnlab.nets.mlp import _scaled_features

    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    s = torch.tensor([0.1, 0.0, 0.3, 0.2], dtype=torch.float64)
    noise = torch.randn(3, 2, 1, generator=g, dtype=torch.float64)
    expected = (noise * s) @ w.T  # (3, 2, 4) offsets, then W
    torch.testing.assert_close(_scaled_features(w, noise, s), expected, rtol=1e-12, atol=1e-12)
    full = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(_scaled_features(w, full, s), (full * s) @ w.T, rtol=1e-12, atol=1e-12)
