"""Fifth mutation audit of the losses: the plateau switch's moving average started by the
first finite loss, min_step as a step number, a float mix rounded past 0 or 1, the type
check of the hybrid's second loss and unbiased2's refusal naming every offending term.

Each test pins a behaviour a one-line change of pinnlab/losses left unnoticed by the
earlier suites. Losses are powers of two (or scripted float64 draws), so every moving
average and every loss is exact and the expected values are hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.equations import VALUE, Nonpolynomial, NotUnbiasableError, SineGordonTwoBody
from pinnlab.losses import Biased, Hybrid, SwitchAt, SwitchOnPlateau, Unbiased1, Unbiased2

F64 = torch.float64
C = [1.0, 2.0, -3.0]  # mean c² = 14/3
A = [1.0, 2.0, -3.0]
B = [0.5, -1.0, 2.0]  # mean a·b = (0.5 − 2 − 6)/3 = −2.5


def _recording(*values):
    """A draw returning the given residuals in turn and recording the kinds asked for."""
    asked = []

    def draw(unbiased):
        asked.append(unbiased)
        return torch.tensor(values[len(asked) - 1], dtype=F64)

    return asked, draw


def _observed(policy, losses, start=0):
    """The state after observing ``losses`` from step ``start`` on."""
    state = policy.init()
    for step, loss in enumerate(losses, start):
        state = policy.observe(state, step, loss)
    return state


# -- plateau switch: the first observed loss -----------------------------------------------


def test_the_moving_average_starts_at_the_first_finite_loss_after_a_skipped_one():
    """A non-finite loss at step 0 is skipped, so the average starts at the loss of step 1
    (2.0), the best is (2.0, step 1), and a flat loss then switches `window` = 4 steps
    after step 1: decided at step 5, effective at step 6. An average mixing the initial
    NaN into it would stay NaN and never switch."""
    policy = SwitchOnPlateau(window=4, tolerance=0.0)
    state = policy.observe(policy.init(), 0, math.nan)
    state = policy.observe(state, 1, 2.0)
    assert (state.ema, state.best, state.best_step, state.switched_at) == (2.0, 2.0, 1, None)
    state = policy.observe(policy.init(), 0, math.inf)
    for step in range(1, 10):
        state = policy.observe(state, step, 2.0)
        if state.switched_at is not None:
            break
    assert (state.ema, state.best_step, state.switched_at) == (2.0, 1, 6)


def test_a_policy_first_observed_mid_run_starts_its_average_there():
    """Observing from step 7 on (a plateau policy started late): the first loss 4.0 is the
    average and the best at step 7; the later losses 0, 0 give 2.0, 1.0 (weight 1/2)."""
    policy = SwitchOnPlateau(window=2, tolerance=0.0)
    state = _observed(policy, [4.0], start=7)
    assert (state.ema, state.best, state.best_step) == (4.0, 4.0, 7)
    state = policy.observe(state, 8, 0.0)
    state = policy.observe(state, 9, 0.0)
    assert (state.ema, state.best, state.best_step, state.switched_at) == (1.0, 1.0, 9, None)


# -- plateau switch: min_step --------------------------------------------------------------


def test_min_step_is_a_step_number_not_a_wait_after_the_last_improvement():
    """window 2, tolerance 0, losses 16, 0, 0, 0, then 2 forever: averages 16, 8, 4, 2, 2, …
    (exact), the last improvement at step 3. Without min_step the switch is decided at
    step 5 (5 − 3 ≥ 2); with min_step 4 as well (5 ≥ 4), effective at step 6. Only
    min_step 7 delays it, to step 7 (effective 8). Counting min_step from the best step
    would give 8 for min_step 4."""
    losses = [16.0, 0.0, 0.0, 0.0] + [2.0] * 10

    def switched_at(min_step):
        policy = SwitchOnPlateau(window=2, tolerance=0.0, min_step=min_step)
        state = policy.init()
        for step, loss in enumerate(losses):
            state = policy.observe(state, step, loss)
            if state.switched_at is not None:
                return state.best_step, state.switched_at
        return state.best_step, None

    assert switched_at(0) == (3, 6)
    assert switched_at(4) == (3, 6)
    assert switched_at(7) == (3, 8)


# -- hybrid: a float mix just outside [0, 1] -----------------------------------------------


@pytest.mark.parametrize("mix", [-1e-17, -0.5])
def test_a_float_mix_at_or_below_zero_is_the_first_loss_alone(mix):
    """A mix rounded below 0 (e.g. a hand-written schedule's −1e-17) is β = 0: one biased
    draw, the loss mean c² = 14/3 exactly, no weight above 1 on it and no unbiased draws."""
    asked, draw = _recording(C, A, B)
    loss, metrics = Hybrid(switch=SwitchAt(3))(draw, mix)
    assert asked == [False]
    torch.testing.assert_close(loss, torch.tensor(14 / 3, dtype=F64), rtol=1e-14, atol=0)
    assert set(metrics) == {"loss_biased", "mix"}


@pytest.mark.parametrize("mix", [1.0 + 2**-52, 1.5])
def test_a_float_mix_at_or_above_one_is_the_second_loss_alone(mix):
    """A mix rounded above 1 is β = 1: two unbiased draws, the loss mean a·b = −2.5
    exactly, no negative weight on a biased loss that is not even drawn."""
    asked, draw = _recording(A, B, C)
    loss, metrics = Hybrid(switch=SwitchAt(3))(draw, mix)
    assert asked == [True, True]
    torch.testing.assert_close(loss, torch.tensor(-2.5, dtype=F64), rtol=1e-14, atol=0)
    assert set(metrics) == {"loss_biased", "loss_unbiased", "mix"}


# -- hybrid: construction ------------------------------------------------------------------


@pytest.mark.parametrize("then", ["unbiased1", Unbiased1, None])
def test_a_then_that_is_no_loss_instance_is_refused_when_written(then):
    """Like ``first``, ``then`` must be a loss instance: a name, a class or None is
    refused by the constructor, not with an AttributeError or a TypeError at the switch."""
    with pytest.raises(TypeError, match="Hybrid.then must be a loss instance"):
        Hybrid(switch=SwitchAt(3), first=Biased(), then=then)
    Hybrid(switch=SwitchAt(3), first=Biased(), then=Unbiased2())


# -- unbiased2: the refusal ----------------------------------------------------------------


class _SineExpGordon(SineGordonTwoBody):
    """Sine–Gordon with a second non-polynomial term, exp u, after sin u."""

    def terms(self):
        return (*super().terms(), Nonpolynomial(torch.exp, VALUE, label="exp u"))


def test_the_unbiased2_refusal_names_every_non_polynomial_term():
    """Both sin u and exp u lack an unbiased estimate: the message names the two of them
    (in the equation's order) and the equation, and points to unbiased1."""
    equation = _SineExpGordon(4)
    pattern = r"sine_gordon_two_body: sin u, exp u has no unbiased .* use 'unbiased1'"
    with pytest.raises(NotUnbiasableError, match=pattern):
        Unbiased2().validate(equation)
    with pytest.raises(NotUnbiasableError, match=pattern):
        Hybrid(switch=SwitchAt(3)).validate(equation)
    Hybrid(switch=SwitchAt(3), then=Unbiased1()).validate(equation)
