"""Third mutation audit of pinnlab.solvers.weighting / optim / schedules (gaps only).

Killed mutant: Adam's β check `0 <= β < 1` -> `0 < β < 1` refused β₁ = 0 (and β₂ = 0), which
the docstring allows (β ∈ [0, 1)): Adam without momentum, an RMSProp with bias correction.
"""

import math

import pytest
import torch

from pinnlab.solvers.optim import Adam


def _adam_reference(grads, lr, b1, b2, eps, theta0):
    """Kingma & Ba's update in float64 Python scalars (one coordinate)."""
    theta, m, v = theta0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
    return theta


@pytest.mark.parametrize("b1, b2", [(0.0, 0.9), (0.5, 0.0), (0.0, 0.0)])
def test_adam_accepts_a_zero_beta_and_follows_the_closed_form(b1, b2):
    opt = Adam(lr=0.1, b1=b1, b2=b2, eps=1e-3)  # β = 0 is in [0, 1): must not be refused
    grads = [[2.0, -0.5], [-1.0, 0.25], [3.0, 0.0]]
    params = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    state = opt.init(params)
    for g in grads:
        params, state = opt.update({"w": torch.tensor(g, dtype=torch.float64)}, state, params, 0.1)
    expected = [_adam_reference([g[i] for g in grads], 0.1, b1, b2, 1e-3, theta0)
                for i, theta0 in enumerate([1.0, -2.0])]
    assert params["w"].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert state.count == 3
    if b1 == 0:  # no momentum: the first moment is the last gradient
        assert state.mu["w"].tolist() == pytest.approx(grads[-1], abs=0)
    if b2 == 0:  # the second moment is the last squared gradient
        assert state.nu["w"].tolist() == pytest.approx([g * g for g in grads[-1]], abs=0)
