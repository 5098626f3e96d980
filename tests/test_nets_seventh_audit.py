"""Seventh audit of pinnlab.nets: a FeatureCache keeps nothing autograd recorded
and serves no kept values to parts that require grad, ``depth`` is refused unless a Python
int, and a zero coefficient leaves its part out (a non-finite part at coefficient 0 changes
no value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinnlab.nets import MLP, Perturbation, Pointwise
from pinnlab.nets.perturbation import FeatureCache

F64 = torch.float64


def test_features_of_a_training_step_are_not_handed_to_a_later_no_grad_call():
    """FeatureCache.features with a weight that requires grad, autograd on (a training
    step), then under ``torch.no_grad`` with the same weight and parts: the no_grad call
    gets plain values W δ (no grad_fn, requires_grad False, the same numbers), so the
    cache never keeps or hands out the step's graph; a second no_grad call reuses them."""
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    parts = (torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64))
    cache = FeatureCache()

    recorded = cache.features(weight, parts)
    assert all(f.requires_grad for f in recorded)

    with torch.no_grad():
        plain = cache.features(weight, parts)
        again = cache.features(weight, parts)
    for f, p in zip(plain, parts):
        assert not f.requires_grad and f.grad_fn is None
        torch.testing.assert_close(f, p @ weight.detach().T, rtol=0, atol=0)
    assert all(a is b for a, b in zip(again, plain))


@pytest.mark.parametrize("depth", [3.0, np.int64(3), 2.5])
def test_depth_must_be_a_python_int(depth):
    """depth = 3.0, numpy's int64(3) or 2.5 is refused with a ValueError naming depth
    (not built from a numpy integer, nor a TypeError from [width] * (depth - 1))."""
    with pytest.raises(ValueError, match="depth"):
        MLP(2, width=4, depth=depth)


@pytest.mark.parametrize("independent", [False, True], ids=["shared", "independent"])
def test_a_part_at_coefficient_zero_is_left_out(independent):
    """Patterns (1, 0), (−1, 0) and (0, 0) with an infinite second part: the MLP and a
    Pointwise function give, in float64, their plain values at x ± δ₁ and x (to 1e-12),
    every value finite; 0 · inf would make them NaN."""
    g = torch.Generator().manual_seed(11)
    net = MLP(3, width=5, depth=3, dtype=F64, generator=g)
    x = torch.randn(2, 3, generator=g, dtype=F64)
    shape = (2, 4, 3) if independent else (4, 3)
    first = torch.randn(shape, generator=g, dtype=F64)
    infinite = torch.full(shape, float("inf"), dtype=F64)
    pert = Perturbation(x, (first, infinite), ((1.0, 0.0), (-1.0, 0.0), (0.0, 0.0)))
    per_point = first if independent else first.expand(2, 4, 3)
    square = Pointwise(lambda z: (z**2).sum(-1))

    for f in (net, square):
        with torch.no_grad():
            got = f(pert)
            expected = torch.stack(
                [f(x[:, None] + per_point), f(x[:, None] - per_point), f(x)[:, None].expand(2, 4)], dim=1
            )
        assert got.shape == (2, 3, 4) and torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_parts_that_require_grad_get_their_gradient_after_a_no_grad_call():
    """A frozen weight W (requires_grad False) and a part δ that requires grad: features
    formed under ``torch.no_grad`` first, then with autograd on, are recorded anew, so
    d/dδ Σ W δ = 1ᵀ W for every sample (the kept plain values would carry no gradient)."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 3, generator=g, dtype=F64)
    part = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    cache = FeatureCache()
    with torch.no_grad():
        cache.features(weight, (part,))

    (features,) = cache.features(weight, (part,))
    assert features.requires_grad
    features.sum().backward()
    torch.testing.assert_close(part.grad, weight.sum(0).expand(5, 3), rtol=1e-12, atol=1e-12)
