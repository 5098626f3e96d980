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
