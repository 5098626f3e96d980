"""θ after outer algorithms (penalty, F²SA) and across the phases of a TwoPhase schedule;
only zo_fg2u takes a BlackBox problem."""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    F2SA,
    BlackBox,
    ForwardGradientUnroll,
    HessianFree,
    Penalty,
    ReverseUnroll,
    TwoPhase,
    ZeroOrderForwardGradient,
    optimize,
)
from tests.bilevel.test_validation import PHI, PROBLEM

T = PROBLEM.horizon


def _phi_after(result):
    return {k: v.clone() for k, v in result.phi.items()}


@pytest.mark.parametrize("method", [Penalty(inner_iters=2), F2SA(inner_iters=2)], ids=["penalty", "f2sa"])
def test_an_outer_algorithm_returns_its_lower_level_iterate(method):
    """optimize's theta is the method's θ after its last step (penalty's θ, F²SA's z), with
    the inner optimizer's fresh state: it was None, and `pinnlab tune` with
    final_init: continue then failed with a KeyError after the tuning."""
    result = optimize(PROBLEM, PHI, method, steps=2, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    state = method.init(PROBLEM, PHI)
    stride = max(T, method.inner_iters)
    for k in range(2):
        _, state, _ = method.step(PROBLEM, PHI, state, outer_step=k, start=k * stride)
    expected = state["theta"] if isinstance(method, Penalty) else state["z"]
    assert torch.equal(result.theta["w"], expected["w"])
    assert not torch.equal(result.theta["w"], PROBLEM.initial(PHI)[0]["w"])
    fresh = PROBLEM.initial(PHI)[1]
    assert type(result.state) is type(fresh)


@pytest.mark.parametrize("then", [Penalty(inner_iters=2), F2SA(inner_iters=2)], ids=["penalty", "f2sa"])
def test_an_outer_algorithm_after_an_estimator_phase_starts_from_its_theta(then):
    """TwoPhase(rgu, penalty): the penalty phase starts from θ_T of the rgu phase (it
    restarted from θ_0, and the result kept the rgu phase's stale θ)."""
    two = optimize(PROBLEM, PHI, TwoPhase(ReverseUnroll(), then, switch_after=1), steps=2)
    first = optimize(PROBLEM, PHI, ReverseUnroll(), steps=1)
    state = then.init(PROBLEM, _phi_after(first), first.theta)
    stride = max(T, then.inner_iters)
    _, state, _ = then.step(PROBLEM, _phi_after(first), state, outer_step=1, start=stride)
    assert two.history["method"] == ["rgu", then.name]
    assert torch.allclose(two.theta["w"], then.iterate(state)["w"], rtol=0, atol=1e-14)
    restarted = then.init(PROBLEM, _phi_after(first))
    _, restarted, _ = then.step(PROBLEM, _phi_after(first), restarted, outer_step=1, start=stride)
    assert not torch.allclose(two.theta["w"], then.iterate(restarted)["w"])


def test_a_warm_estimator_after_an_outer_algorithm_starts_from_its_theta():
    """TwoPhase(penalty, rgu) with warm_start: the rgu phase unrolls from penalty's θ with
    the fresh optimizer state (it restarted from θ_0)."""
    first = optimize(PROBLEM, PHI, Penalty(inner_iters=2), steps=1)
    two = optimize(PROBLEM, PHI, TwoPhase(Penalty(inner_iters=2), ReverseUnroll(), switch_after=1), steps=2)
    step = ReverseUnroll()(PROBLEM, _phi_after(first), start=T, init=(first.theta, first.state), outer_step=1)
    assert torch.allclose(two.theta["w"], step.theta["w"], rtol=0, atol=1e-14)
    cold = ReverseUnroll()(PROBLEM, _phi_after(first), start=T, outer_step=1)
    assert not torch.allclose(two.theta["w"], cold.theta["w"])


def test_without_warm_start_the_result_has_no_stale_theta():
    """TwoPhase(penalty, rgu) without warm_start: rgu keeps no θ, so the result has none
    (it reported penalty's θ, which does not go with the final φ)."""
    two = optimize(PROBLEM, PHI, TwoPhase(Penalty(inner_iters=2), ReverseUnroll(), switch_after=1), steps=2,
                   warm_start=False)
    assert two.theta is None


BOX = BlackBox(lambda phi: float((phi["a"] ** 2).sum() + phi["s"] ** 2))


@pytest.mark.parametrize("method", [ForwardGradientUnroll(num_directions=2), ReverseUnroll(),
                                    HessianFree(alpha=0.3)], ids=lambda m: m.name)
def test_only_zeroth_order_takes_a_black_box(method):
    """A BlackBox can only be evaluated: other estimators refuse it by name (an
    AttributeError 'BlackBox' object has no attribute 'gradient_step' before)."""
    with pytest.raises(TypeError, match=f"^{method.name} needs a BilevelProblem"):
        method(BOX, PHI)
    with pytest.raises(TypeError, match=f"^{method.name} needs a BilevelProblem"):
        optimize(BOX, PHI, method, steps=1)
    result = optimize(BOX, PHI, ZeroOrderForwardGradient(num_directions=2), steps=1)
    assert result.status == "ok"


@pytest.mark.parametrize("method", [Penalty(inner_iters=2), F2SA(inner_iters=2)], ids=["penalty", "f2sa"])
def test_outer_algorithms_refuse_a_black_box(method):
    with pytest.raises(TypeError, match=f"^{method.name} needs a BilevelProblem"):
        optimize(BOX, PHI, method, steps=1)
    with pytest.raises(TypeError, match=f"^{method.name} needs a BilevelProblem"):
        optimize(BOX, PHI, TwoPhase(ZeroOrderForwardGradient(), method, switch_after=1), steps=2)


def test_a_problem_of_another_type_is_refused():
    with pytest.raises(TypeError, match="problem must be a BilevelProblem or a BlackBox, got dict"):
        ReverseUnroll()({}, PHI)
