"""Which residual draws each loss asks for: biased ones (one noise group, ``draw(False)``)
or unbiased ones (one group per factor of every product, ``draw(True)``).

On a linear PDE both kinds are the same draw, and on Allen–Cahn the difference in the
loss's mean is far below what the statistical tests resolve, so a biased loss squaring an
unbiased draw, Unbiased1 using unbiased factors, or Unbiased2 mixing one of each (E[R̃·R̂]
= R·E R̂ ≠ R² for a nonlinear PDE) would pass them; the request itself is checked here."""

from __future__ import annotations

import pytest
import torch

from pinnlab.losses import Biased, Blend, Hybrid, SwitchAt, Unbiased1, Unbiased2


def _recording():
    asked = []

    def draw(unbiased):
        asked.append(unbiased)
        return torch.full((3,), 1.0 + len(asked), dtype=torch.float64)

    return asked, draw


@pytest.mark.parametrize("loss, expected", [
    (Biased(), [False]),
    (Unbiased1(), [False, False]),
    (Unbiased2(), [True, True]),
], ids=["biased", "unbiased1", "unbiased2"])
def test_each_loss_asks_for_its_kind_of_draws(loss, expected):
    asked, draw = _recording()
    loss(draw)
    assert asked == expected


@pytest.mark.parametrize("mix, expected", [
    (0.0, [False]), (1.0, [True, True]), (0.5, [False, True, True]),
    (torch.tensor(0.5, dtype=torch.float64), [False, True, True]),
])
def test_the_default_hybrid_goes_from_biased_draws_to_unbiased2_draws(mix, expected):
    """Hybrid() is [RS]'s biased → unbiased2 switch: before it one biased draw, after it
    two unbiased ones, and both losses (first's draw first) for a fractional mix."""
    for hybrid in (Hybrid(), Hybrid(switch=SwitchAt(3)), Hybrid(switch=Blend(0, 4))):
        asked, draw = _recording()
        hybrid(draw, mix)
        assert asked == expected, hybrid
