"""Sixth mutation audit of the losses: a piecewise mix given as numpy numbers, numpy mixes
and tolerances, and a boolean plateau tolerance.

Each test pins a behaviour a one-line change of pinnlab/losses left unnoticed by the
earlier suites. Draws are scripted float64 tensors, so every loss is a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinnlab.losses import Hybrid, Piecewise, SwitchAt, SwitchOnPlateau

from .test_losses_fifth_audit import F64, A, B, C, _recording

# -- piecewise: values that are no Python floats -------------------------------------------


@pytest.mark.parametrize("kind", [np.float32, np.int64, int])
def test_a_piecewise_mix_is_a_python_float_whatever_numbers_it_was_given(kind):
    """Piecewise((0, 1), total=4) written with numpy or int values (a schedule read with
    numpy): the mix of every step is a Python float, 0.0 on steps 0–1 and 1.0 on 2–3."""
    schedule = Piecewise((kind(0), kind(1)), total=4)
    mixes = [schedule.mix(step) for step in range(4)]
    assert mixes == [0.0, 0.0, 1.0, 1.0]
    assert all(type(mix) is float for mix in mixes)


def test_a_numpy_piecewise_segment_of_one_computes_only_the_unbiased_loss():
    """In a segment of value np.float32(1) the hybrid is its second loss alone: two
    unbiased draws and mean a·b = −2.5 exactly. A mix left as a numpy number is no float to
    the hybrid, which would draw the biased loss as well (three draws, twice the cost)."""
    loss_fn = Hybrid(switch=Piecewise((np.float32(0.0), np.float32(1.0)), total=4))
    asked, draw = _recording(A, B, C)
    loss, metrics = loss_fn(draw, loss_fn.switch.mix(3))
    assert asked == [True, True]
    torch.testing.assert_close(loss, torch.tensor(-2.5, dtype=F64), rtol=1e-14, atol=0)
    assert set(metrics) == {"loss_biased", "loss_unbiased", "mix"}
    asked, draw = _recording(C, A, B)
    loss, _ = loss_fn(draw, loss_fn.switch.mix(0))
    assert asked == [False]
    torch.testing.assert_close(loss, torch.tensor(14 / 3, dtype=F64), rtol=1e-14, atol=0)


# -- hybrid: a numpy float mix -------------------------------------------------------------


@pytest.mark.parametrize(("mix", "draws", "kinds", "expected"), [
    (np.float64(0.0), (C, A, B), [False], 14 / 3),
    (np.float64(1.0), (A, B, C), [True, True], -2.5),
    (np.float32(0.0), (C, A, B), [False], 14 / 3),
    (np.float32(1.0), (A, B, C), [True, True], -2.5),
])
def test_a_numpy_float_mix_of_zero_or_one_computes_only_that_loss(mix, draws, kinds, expected):
    """A numpy β of 0 or 1 (a user's schedule) computes one loss from its own draws only,
    with its exact value: np.float64 is a float, and np.float32 (no float) computed both
    losses, one of them at weight 0."""
    asked, draw = _recording(*draws)
    loss, metrics = Hybrid(switch=SwitchAt(3))(draw, mix)
    assert asked == kinds
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=F64), rtol=1e-14, atol=0)
    assert metrics["mix"].item() == float(mix)


# -- plateau switch: the tolerance ---------------------------------------------------------


def test_a_boolean_tolerance_is_refused_when_written():
    """tolerance=False (a YAML 'no') is no relative improvement, though it compares as 0:
    refused like a boolean window, with the tolerance's own message."""
    with pytest.raises(ValueError, match="needs 0 <= tolerance < 1"):
        SwitchOnPlateau(window=3, tolerance=False)
    SwitchOnPlateau(window=3, tolerance=0)


def test_a_numpy_tolerance_is_a_real_number():
    """A numpy float tolerance is accepted and used as the relative threshold: window 1,
    tolerance np.float32(0.5), losses 4 then 3: 3 is not below 4·(1 − 0.5) = 2, so the best
    stays (4, step 0) and the switch is decided at step 1, effective at step 2."""
    policy = SwitchOnPlateau(window=1, tolerance=np.float32(0.5))
    state = policy.observe(policy.init(), 0, 4.0)
    state = policy.observe(state, 1, 3.0)
    assert (state.ema, state.best, state.best_step, state.switched_at) == (3.0, 4.0, 0, 2)


# -- hybrid: a numpy step given as the switch ----------------------------------------------


def test_a_numpy_integer_switch_gets_the_switch_at_hint():
    """Hybrid(switch=np.int64(300)) is a step number written where a policy belongs: the
    message suggests SwitchAt(300), as for a Python int."""
    with pytest.raises(TypeError, match=r"use switch=SwitchAt\(300\)"):
        Hybrid(switch=np.int64(300))
