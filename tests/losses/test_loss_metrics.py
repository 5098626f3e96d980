"""Diagnostics of the losses, the plateau switch's moving average and a piecewise mix's
segments, on scripted draws.

Each fails when its formula is changed: the unbiased losses reporting their unbiased value
as `loss_biased`, a blend taking its biased diagnostic from `then`, the plateau average
with α and 1 − α swapped, the piecewise segments divided by total + 1."""
import math

import pytest
import torch

from pinnlab.losses import Biased, Hybrid, Piecewise, SwitchOnPlateau, Unbiased1, Unbiased2


def scripted(*draws):
    it = iter(torch.tensor(d, dtype=torch.float64) for d in draws)
    return lambda unbiased: next(it)


@pytest.mark.parametrize("loss_cls", [Unbiased1, Unbiased2])
def test_unbiased_losses_report_the_biased_square_of_their_first_draw(loss_cls):
    a, b = [1.0, 2.0, -3.0], [0.5, -1.0, 2.0]
    loss, metrics = loss_cls()(scripted(a, b))
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    torch.testing.assert_close(loss, (ta * tb).mean())
    torch.testing.assert_close(metrics["loss_unbiased"], (ta * tb).mean())
    torch.testing.assert_close(metrics["loss_biased"], (ta * ta).mean())


def test_a_blend_reports_the_biased_loss_of_its_first_loss():
    first, g1, g2 = [1.0, 2.0], [3.0, -1.0], [0.5, 4.0]
    loss, metrics = Hybrid(first=Biased(), then=Unbiased2())(scripted(first, g1, g2), mix=0.25)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    biased, unbiased = (t(first) ** 2).mean(), (t(g1) * t(g2)).mean()
    torch.testing.assert_close(loss, 0.75 * biased + 0.25 * unbiased)
    torch.testing.assert_close(metrics["loss_biased"], biased)  # the first loss's, not then's
    torch.testing.assert_close(metrics["loss_unbiased"], unbiased)


def test_plateau_moving_average_weights_the_new_loss_by_one_over_window():
    policy = SwitchOnPlateau(window=4, tolerance=0.0)
    state = policy.observe(policy.init(), 0, 1.0)
    assert state.ema == 1.0
    state = policy.observe(state, 1, 0.0)
    assert math.isclose(state.ema, 0.75)  # (1 − 1/4)·1 + (1/4)·0
    state = policy.observe(state, 2, 0.0)
    assert math.isclose(state.ema, 0.5625)


def test_piecewise_segment_borders():
    p = Piecewise(values=(0.0, 0.5, 1.0), total=6)
    assert [p.mix(s) for s in range(8)] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    q = Piecewise(values=(0.0, 1.0), total=3)  # segment 1 starts at ⌈3/2⌉ = 2
    assert [q.mix(s) for s in range(4)] == [0.0, 0.0, 1.0, 1.0]
    assert q.starts_within(3) and not q.starts_within(2)
