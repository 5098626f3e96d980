"""Sixth audit of pinnlab.nets: every named activation against its closed form (softplus
far in its tail included), and a FeatureCache filled without autograd then used by a
training step."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.nets import MLP, Perturbation
from pinnlab.nets.perturbation import FeatureCache

F64 = torch.float64


def _softplus(t: float) -> float:
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


_CLOSED_FORMS = {
    "tanh": math.tanh,
    "sin": math.sin,
    "gelu": lambda t: 0.5 * t * (1.0 + math.erf(t / math.sqrt(2.0))),
    "silu": lambda t: t / (1.0 + math.exp(-t)),
    "softplus": _softplus,
}


@pytest.mark.parametrize("name", sorted(_CLOSED_FORMS))
def test_each_activation_is_its_closed_form_inside_the_network(name):
    """MLP(1, width=2, depth=2) with W₁ = (1, 2)ᵀ, b₁ = (0, −1), W₂ = (1, −3), b₂ = ½ is
    f(x) = a(x) − 3·a(2x − 1) + ½; in float64 it matches the closed form of ``a`` to 1e-12
    for x in [−7, 7] (softplus log(1 + eᵗ) exactly, also at t = 13, not cut to t)."""
    net = MLP(1, width=2, depth=2, activation=name, dtype=F64)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0], [2.0]], dtype=F64))
        net.layers[0].bias.copy_(torch.tensor([0.0, -1.0], dtype=F64))
        net.layers[1].weight.copy_(torch.tensor([[1.0, -3.0]], dtype=F64))
        net.layers[1].bias.fill_(0.5)
    xs = [-7.0, -2.5, -0.3, 0.0, 0.4, 1.0, 3.0, 5.5, 7.0]
    a = _CLOSED_FORMS[name]
    expected = torch.tensor([a(x) - 3.0 * a(2.0 * x - 1.0) + 0.5 for x in xs], dtype=F64)
    with torch.no_grad():
        got = net(torch.tensor(xs, dtype=F64)[:, None])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_features_cached_without_autograd_are_not_reused_by_a_training_step():
    """A Perturbation with a FeatureCache evaluated once under ``torch.no_grad`` (a
    monitoring pass), then in a training step: the first-layer weight gradient is that of
    the same perturbation without a cache (the docstring: features autograd records are
    formed every time). The cache handed the no_grad values back: 12 of 12 entries wrong."""
    g = torch.Generator().manual_seed(3)
    net = MLP(3, width=4, depth=2, dtype=F64, generator=g)
    x = torch.randn(2, 3, generator=g, dtype=F64)
    parts = (torch.randn(5, 3, generator=g, dtype=F64),)
    patterns = ((1.0,), (-1.0,))

    net(Perturbation(x, parts, patterns)).pow(2).sum().backward()
    expected = net.layers[0].weight.grad.clone()
    net.zero_grad()

    cached = Perturbation(x, parts, patterns, cache=FeatureCache())
    with torch.no_grad():
        net(cached)
    net(cached).pow(2).sum().backward()
    torch.testing.assert_close(net.layers[0].weight.grad, expected, rtol=1e-12, atol=1e-12)
