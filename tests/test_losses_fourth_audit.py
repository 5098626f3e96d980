"""Fourth mutation audit of the losses: gradients through both factors, detached metrics,
the hybrid's integer mixes and validation of both losses, the plateau switch's state.

Each test pins a behaviour a one-line change of pinnlab/losses left unnoticed by the
earlier suites. Draws are scripted float64 tensors r = θ·c with a scalar parameter θ, so
every loss and gradient is a hand computation (stated in the test)."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.equations import NotUnbiasableError, SineGordonTwoBody
from pinnlab.losses import (
    AbstractLoss,
    Biased,
    Blend,
    Hybrid,
    SwitchAt,
    SwitchOnPlateau,
    Unbiased1,
    Unbiased2,
)

F64 = torch.float64
C = [1.0, 2.0, -3.0]  # mean c² = 14/3
A = [1.0, 2.0, -3.0]
B = [0.5, -1.0, 2.0]  # mean a·b = (0.5 − 2 − 6)/3 = −2.5


def _t(values):
    return torch.tensor(values, dtype=F64)


def _param(value):
    return torch.tensor(value, dtype=F64, requires_grad=True)


def _scripted(*draws):
    """Returns the given tensors in turn, whatever kind of draw is asked for."""
    it = iter(draws)
    return lambda unbiased: next(it)


# -- gradients -------------------------------------------------------------------------


def test_the_biased_loss_differentiates_the_square_of_the_draw():
    """L_b = mean (θc)² = θ² · 14/3, so dL/dθ = 2θ · 14/3 = 14 at θ = 1.5 (the square's
    gradient goes through both factors: 7 if one of them were treated as a constant)."""
    theta = _param(1.5)
    loss, _ = Biased()(_scripted(theta * _t(C)))
    torch.testing.assert_close(loss, torch.tensor(1.5**2 * 14 / 3, dtype=F64), rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(grad, torch.tensor(14.0, dtype=F64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("loss_cls", [Unbiased1, Unbiased2])
def test_the_unbiased_losses_backpropagate_through_both_factors(loss_cls):
    """L_u = mean (θa)·(φb) = θφ · mean(ab) = −2.5 θφ: dL/dθ = −2.5 φ = −5 and
    dL/dφ = −2.5 θ = −3.75 at θ = 1.5, φ = 2 (both draws carry the gradient, as in
    the official code; a detached second factor would give dL/dφ = 0)."""
    theta, phi = _param(1.5), _param(2.0)
    loss, _ = loss_cls()(_scripted(theta * _t(A), phi * _t(B)))
    torch.testing.assert_close(loss, torch.tensor(-7.5, dtype=F64), rtol=1e-14, atol=0)
    d_theta, d_phi = torch.autograd.grad(loss, (theta, phi))
    torch.testing.assert_close(d_theta, torch.tensor(-5.0, dtype=F64), rtol=1e-14, atol=0)
    torch.testing.assert_close(d_phi, torch.tensor(-3.75, dtype=F64), rtol=1e-14, atol=0)


def test_a_blend_differentiates_both_weighted_losses_and_its_mix():
    """mix β = 0.25, first draw θc (biased), then θa, θb (unbiased2):
    L = θ²(0.75 · 14/3 + 0.25 · (−2.5)) = 2.875 θ², so dL/dθ = 5.75 θ = 8.625 at θ = 1.5;
    with a tensor β, dL/dβ = L_then − L_first = θ²(−2.5 − 14/3) = −16.125."""
    theta = _param(1.5)
    beta = _param(0.25)
    loss, metrics = Hybrid(switch=Blend(0, 4))(
        _scripted(theta * _t(C), theta * _t(A), theta * _t(B)), beta)
    torch.testing.assert_close(loss, torch.tensor(2.875 * 2.25, dtype=F64), rtol=1e-14, atol=0)
    d_theta, d_beta = torch.autograd.grad(loss, (theta, beta))
    torch.testing.assert_close(d_theta, torch.tensor(8.625, dtype=F64), rtol=1e-14, atol=0)
    torch.testing.assert_close(d_beta, torch.tensor(-16.125, dtype=F64), rtol=1e-14, atol=0)
    torch.testing.assert_close(metrics["loss_biased"], torch.tensor(2.25 * 14 / 3, dtype=F64))
    torch.testing.assert_close(metrics["loss_unbiased"], torch.tensor(-2.5 * 2.25, dtype=F64))


# -- metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss, mix, draws", [
    (Biased(), None, 1), (Unbiased1(), None, 2), (Unbiased2(), None, 2),
    (Hybrid(switch=Blend(0, 4)), 0.5, 3), (Hybrid(switch=Blend(0, 4)), 1.0, 2),
], ids=["biased", "unbiased1", "unbiased2", "blend", "hybrid-after"])
def test_every_reported_metric_is_detached_from_the_draws(loss, mix, draws):
    """The loss carries the gradient; every metric (kept for logging, compared by the
    plateau switch) is a plain value holding no graph."""
    theta = _param(1.5)
    draw = _scripted(*[theta * _t(C) for _ in range(draws)])
    value, metrics = loss(draw) if mix is None else loss(draw, mix)
    assert value.requires_grad
    assert metrics and not any(m.requires_grad for m in metrics.values()), metrics


# -- hybrid ----------------------------------------------------------------------------


@pytest.mark.parametrize("mix, expected", [(0, [False]), (1, [True, True])])
def test_an_integer_mix_of_zero_or_one_computes_only_that_loss(mix, expected):
    """β = 0 or 1 written as an int is the hard switch's β as well: one loss, its draws
    only (one biased draw before, two unbiased after), and its value exactly."""
    asked, draws = [], [_t(C), _t(B), _t(A)]

    def draw(unbiased):
        asked.append(unbiased)
        return draws[len(asked) - 1]

    loss, metrics = Hybrid(switch=SwitchAt(3))(draw, mix)
    assert asked == expected
    expected_loss = 14 / 3 if mix == 0 else -2.5  # mean c², or mean c·b
    torch.testing.assert_close(loss, torch.tensor(expected_loss, dtype=F64), rtol=1e-14, atol=0)
    assert float(metrics["mix"]) == mix


def test_a_hybrid_validates_its_first_loss_too():
    """Unbiased2 before the switch is as impossible on Sine–Gordon's sin u as after it."""
    equation = SineGordonTwoBody(4)
    with pytest.raises(NotUnbiasableError, match="sin u"):
        Hybrid(switch=SwitchAt(10), first=Unbiased2(), then=Unbiased1()).validate(equation)
    Hybrid(switch=SwitchAt(10), first=Biased(), then=Unbiased1()).validate(equation)


def test_an_abstract_loss_without_call_cannot_be_built():
    """__call__ is abstract: a loss class that forgets it is refused when instantiated."""

    class NoCall(AbstractLoss):
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoCall()


# -- plateau switch --------------------------------------------------------------------


def test_the_plateau_best_improves_on_the_moving_average_not_on_the_raw_loss():
    """window 2, tolerance 0: losses 1, 2, 0.9 give averages 1, 1.5, 1.2; the raw loss
    0.9 beats the best 1 but the average 1.2 does not, so the best stays (1, step 0) and
    the switch is decided at step 2 (2 − 0 ≥ 2), taking effect at step 3."""
    policy = SwitchOnPlateau(window=2, tolerance=0.0)
    state = policy.init()
    for step, loss in enumerate([1.0, 2.0, 0.9]):
        state = policy.observe(state, step, loss)
    assert (state.ema, state.best, state.best_step, state.switched_at) == (1.2, 1.0, 0, 3)


def test_a_plateau_switch_once_made_is_final():
    """After the switch, observed losses (now from the unbiased phase) change nothing:
    an improvement does not undo the switch and a later plateau does not move it."""
    policy = SwitchOnPlateau(window=2, tolerance=0.0)
    state = policy.init()
    for step in range(3):
        state = policy.observe(state, step, 1.0)
    assert state.switched_at == 3
    switched = state
    for step, loss in [(3, 0.1), (4, 0.01), (5, 5.0), (9, 5.0)]:
        state = policy.observe(state, step, loss)
        assert state == switched
        assert policy.mix(step, state) == 1.0


def test_the_plateau_defaults():
    """SwitchOnPlateau() waits 500 steps for a relative improvement of 1 %, from step 0
    (the config's loss.window and loss.tolerance defaults)."""
    policy = SwitchOnPlateau()
    assert (policy.window, policy.tolerance, policy.min_step) == (500, 0.01, 0)


@pytest.mark.parametrize("window", [True, False])
def test_a_boolean_window_is_refused(window):
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        SwitchOnPlateau(window=window)


def test_an_astronomical_first_loss_still_sets_the_best():
    """The best starts at +inf: any finite first loss (even 1e300) becomes the best at
    step 0, so a flat run switches `window` steps later."""
    policy = SwitchOnPlateau(window=2, tolerance=0.01)
    state = policy.observe(policy.init(), 0, 1e300)
    assert (state.best, state.best_step) == (1e300, 0)
    assert math.isinf(policy.init().best)


@pytest.mark.parametrize("min_step", ["3", None, 2.0, -1])
def test_a_non_integer_min_step_is_refused_when_written(min_step):
    """Like SwitchAt('3') and Blend(0.5, 3), a min_step that is no step number is refused
    by the constructor (it failed with '>' between str and int at the first step)."""
    with pytest.raises(ValueError, match=r"SwitchOnPlateau.min_step must be an integer >= 0"):
        SwitchOnPlateau(window=2, min_step=min_step)


@pytest.mark.parametrize("tolerance", ["0.1", None, True])
def test_a_tolerance_that_is_no_number_is_refused_when_written(tolerance):
    """A tolerance that is no real number is refused with the tolerance's own line, not a
    TypeError from comparing it with 0."""
    with pytest.raises(ValueError, match="SwitchOnPlateau needs 0 <= tolerance < 1"):
        SwitchOnPlateau(window=2, tolerance=tolerance)


# -- hybrid construction -----------------------------------------------------------------


def test_a_blend_end_that_is_no_step_number_is_refused():
    """Blend(0, 2.5) has no last step: refused like a non-integer start."""
    with pytest.raises(ValueError, match="Blend.end must be an integer >= 0"):
        Blend(0, 2.5)


def test_a_hybrid_called_without_a_mix_is_its_first_loss():
    """The default β is 0: one biased draw, mean c² = 14/3, and mix 0 reported."""
    asked = []

    def draw(unbiased):
        asked.append(unbiased)
        return _t(C)

    loss, metrics = Hybrid(switch=SwitchAt(3))(draw)
    assert asked == [False]
    torch.testing.assert_close(loss, torch.tensor(14 / 3, dtype=F64), rtol=1e-14, atol=0)
    assert set(metrics) == {"loss_biased", "mix"} and float(metrics["mix"]) == 0.0


def test_a_boolean_switch_gets_no_switch_at_hint():
    """Hybrid(switch=True) is refused as no policy; True is no step, so the message does
    not suggest SwitchAt(True) (which SwitchAt itself refuses)."""
    with pytest.raises(TypeError, match="must be a switch policy") as info:
        Hybrid(switch=True)
    assert "SwitchAt(True)" not in str(info.value)
    with pytest.raises(TypeError, match=r"use switch=SwitchAt\(7\)"):
        Hybrid(switch=7)
