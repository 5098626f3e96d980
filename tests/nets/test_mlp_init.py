"""The MLP's documented initialisation: nn.Linear's U(±1/√fan_in), drawn in float64 from
the generator (so a float32 and a float64 network of one seed hold the same numbers up to
rounding), reproducible without a generator, and at least two affine layers."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.nets import MLP


def test_weights_and_biases_fill_plus_minus_one_over_sqrt_fan_in():
    """Every parameter lies in [−1/√fan_in, 1/√fan_in], takes both signs and spreads over
    the interval (a U(0, 1/√fan_in) or a narrower draw fails one of these)."""
    net = MLP(6, width=64, depth=3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert [(l.in_features, l.out_features) for l in net.layers] == [(6, 64), (64, 64), (64, 1)]
    for layer in net.layers[:2]:
        bound = 1 / math.sqrt(layer.in_features)
        for p in (layer.weight.detach(), layer.bias.detach()):
            assert float(p.abs().max()) <= bound
            assert float(p.min()) < -0.8 * bound and float(p.max()) > 0.8 * bound
        assert abs(float(layer.weight.detach().mean())) < 0.1 * bound  # mean 0: 384+ draws, sd ≈ bound/√(3·384)


def test_float32_and_float64_networks_of_one_seed_hold_the_same_numbers():
    """The draw is made in float64 and rounded: the float32 network is the float64 one
    rounded (a float32 draw gives other numbers from the same generator)."""
    nets = [MLP(3, width=8, depth=3, dtype=dtype, generator=torch.Generator().manual_seed(4))
            for dtype in (torch.float32, torch.float64)]
    for p32, p64 in zip(nets[0].parameters(), nets[1].parameters()):
        assert p32.dtype == torch.float32 and p64.dtype == torch.float64
        assert torch.equal(p32, p64.float())


def test_without_a_generator_the_network_is_reproducible_and_the_global_rng_untouched():
    """generator=None is a fixed seed (0), not the global generator: two networks made
    without one are equal, and the global stream is not advanced."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = MLP(3, width=8, depth=2)
    b = MLP(3, width=8, depth=2)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = MLP(3, width=8, depth=2, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("depth", [1, 0])
def test_fewer_than_two_affine_layers_are_refused(depth):
    with pytest.raises(ValueError, match="depth"):
        MLP(3, width=8, depth=depth)
