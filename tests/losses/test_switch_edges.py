"""Switch policies at their edges: schedules that cannot be evaluated are refused when
written, and the plateau switch with tolerance 0 still fires on a flat loss.

Blend(s, s) and Piecewise(…, total=0) divided by zero at the first step that reached
them; a piecewise mix above 1 weighted the unbiased loss by more than 1 and the biased
one by a negative weight. With tolerance 0 ("any decrease counts as progress") a loss that
stays exactly flat makes no progress, so the switch comes ``window`` steps later."""

from __future__ import annotations

import math

import pytest

from pinnlab.losses import Blend, Piecewise, SwitchOnPlateau


@pytest.mark.parametrize("start, end", [(3, 3), (0, 0), (5, 2)])
def test_a_blend_of_no_length_is_refused(start, end):
    with pytest.raises(ValueError, match=r"Blend needs end > start"):
        Blend(start, end)


@pytest.mark.parametrize("values, total, message", [
    ((0.5,), 0, "total >= 1"),
    ((0.0, 1.0), -4, "total >= 1"),
    ((), 10, "at least one value"),
    ((0.0, 1.5), 10, r"must lie in \[0, 1\]"),
    ((-0.25, 1.0), 10, r"must lie in \[0, 1\]"),
    ((math.nan,), 10, r"must lie in \[0, 1\]"),
])
def test_a_piecewise_schedule_that_is_no_mix_is_refused(values, total, message):
    with pytest.raises(ValueError, match=message):
        Piecewise(values, total)


def test_the_mix_edges_zero_and_one_are_allowed():
    p = Piecewise((0.0, 1.0), total=1)
    assert [p.mix(s) for s in range(3)] == [0.0, 1.0, 1.0]
    assert [Blend(2, 3).mix(s) for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_with_tolerance_zero_a_flat_loss_switches_after_window_steps():
    """A loss equal to 1 at every step: the best average is set at step 0 and never
    strictly beaten, so with window 3 the switch is decided at step 3 and takes effect
    at step 4; a strictly falling loss never switches."""
    policy = SwitchOnPlateau(window=3, tolerance=0.0)
    state = policy.init()
    for step in range(10):
        state = policy.observe(state, step, 1.0)
        if state.switched_at is not None:
            break
    assert (state.best_step, state.switched_at) == (0, 4)
    state = policy.init()
    for step in range(50):
        state = policy.observe(state, step, 1.0 - 0.01 * step)
    assert state.switched_at is None and state.best_step == 49


@pytest.mark.parametrize("window, min_step", [(5, 0), (5, 3), (2, 9), (1, 0)])
def test_plateau_starts_within_exactly_the_runs_that_reach_the_earliest_switch(window, min_step):
    """The earliest switch (a loss flat from step 0) takes effect at step
    max(window, min_step) + 1: a run of ``steps`` (0 … steps − 1) reaches it iff
    steps ≥ max(window, min_step) + 2, which is what ``starts_within`` answers."""
    policy = SwitchOnPlateau(window=window, tolerance=0.01, min_step=min_step)
    state = policy.init()
    step = 0
    while state.switched_at is None:
        state = policy.observe(state, step, 1.0)
        step += 1
    earliest = state.switched_at
    assert earliest == max(window, min_step) + 1
    for steps in range(1, earliest + 4):
        assert policy.starts_within(steps) == (earliest <= steps - 1), steps


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_leaves_the_plateau_state_as_it_was(bad):
    """A non-finite biased loss (a diverging step) is skipped: the moving average goes on
    from its value before, (1 − 1/4)·1 + (1/4)·0 = 0.75, instead of restarting at the next
    loss (NaN) or sticking at ±inf."""
    policy = SwitchOnPlateau(window=4, tolerance=0.0)
    state = policy.observe(policy.init(), 0, 1.0)
    skipped = policy.observe(state, 1, bad)
    assert skipped == state
    assert math.isclose(policy.observe(skipped, 2, 0.0).ema, 0.75)
