"""Mutation audit of the backlog's bilevel and training edges: the exact refusal of inner
steps that cut φ off (and what still counts as a use of φ: θ_0(φ), one early step, a θ
with a part φ does not reach), fg2u's average over its default min(8, N) directions,
non-tensor and dataclass leaves of a reverse-mode state, LinearDecay's full refusal and
a history's whole steps on resume.

Closed forms: g = ‖w − a‖², SGD(0.25) from w = 0 gives w_{t+1} = (w_t + a)/2, so after T
steps w_T = a(1 − 2^−T) and f = ‖w_T‖² has ∂f/∂a = 2a(1 − 2^−T)²."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    ReverseUnroll,
    TruncatedReverseUnroll,
    hypergradient,
)
from pinnlab.bilevel.adapters import from_inner_loss
from pinnlab.io.checkpoint import CheckpointError, check_history
from pinnlab.solvers import SGD, LinearDecay, train
from pinnlab.solvers.loop import History
from tests.solvers.small_problems import F64, problem

PHI = {"a": torch.ones(2, dtype=F64)}
ALL = {"rgu": ReverseUnroll(), "trgu": TruncatedReverseUnroll(steps=2), "fg2u": ForwardGradientUnroll(),
       "fg2u_jvp": ForwardGradientUnroll(tangents="jvp"), "fgu": ExactForwardUnroll()}


def _sgd_problem(inner_loss, theta0, horizon=3, jvp=False):
    problem = from_inner_loss(inner_loss, lambda th, phi: (th["w"] ** 2).sum(), SGD(lr=0.25), theta0,
                              horizon=horizon)
    # (tangents="jvp" on a plain inner step, without the gradient_step's halves)
    return dataclasses.replace(problem, gradient_step=None) if jvp else problem


def _zero(size=2):
    return {"w": torch.zeros(size, dtype=F64)}


def _assert_estimates(result, exact):
    """fg2u's ĝ = (1/b) Σ_i (∇h·v_i) v_i over its own directions, the exact ∇h elsewhere."""
    v = result.diagnostics.get("directions")
    expected = exact if v is None else (v @ exact) @ v / v.shape[0]
    torch.testing.assert_close(result.grad["a"], expected, rtol=1e-12, atol=1e-15)


# -- the refusal's message ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ALL))
def test_a_step_reading_phi_through_item_is_refused_with_the_whole_message(name):
    """φ.item() cuts φ off as float(φ) does: the one-line ValueError, in full, names the
    estimator and all three ways of cutting φ off (float(φ), φ.item(), φ.detach())."""
    problem = _sgd_problem(lambda th, phi, t: ((th["w"] - phi["a"][0].item()) ** 2).sum(), _zero(),
                           jvp=name == "fg2u_jvp")
    method = ALL[name]
    expected = (f"{method.name}: θ_T after the inner steps does not depend on φ, so the hypergradient through "
                "them is 0; a step that reads φ as a number (float(φ), φ.item()) or through φ.detach() "
                "cuts it off: compute the step with φ's tensors")
    if name == "trgu":  # (s = 2 < T: trgu also names its window, where φ may act before it)
        expected += ("; or φ acts only before trgu's window, the last 2 of the 3 steps (through θ_0(φ) or early "
                     "steps), where the truncated hypergradient is 0 by construction: differentiate more steps "
                     "(TruncatedReverseUnroll(steps=...), up to the horizon) or use rgu")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        hypergradient(problem, PHI, method)


# -- what still counts as a use of φ --------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ALL))
def test_a_theta_with_a_part_phi_does_not_reach_is_not_refused(name):
    """θ = {c, w} where only w depends on φ (c is fitted to 1 regardless): one leaf that
    depends on φ suffices; the estimate is the closed form 2a(1 − 2^−3)² = 1.53125."""
    def g(th, phi, t):
        return ((th["c"] - 1) ** 2).sum() + ((th["w"] - phi["a"]) ** 2).sum()

    problem = _sgd_problem(g, {"c": torch.zeros(2, dtype=F64), **_zero()}, jvp=name == "fg2u_jvp")
    result = hypergradient(problem, PHI, ALL[name])
    # (trgu's last s = 2 steps: ∂w_3/∂a through them only is 1 − 2^−2 = 0.75)
    _assert_estimates(result, torch.full((2,), 2 * 0.875 * (0.75 if name == "trgu" else 0.875), dtype=F64))


@pytest.mark.parametrize("name", ["fg2u", "fg2u_jvp", "fgu", "rgu"])
def test_phi_only_through_theta0_is_not_refused(name):
    """θ_0 = φ and steps that do not use φ (g = ‖w − 1‖²): w_T = 1 + (a − 1)/8, so
    ∂f/∂a = 2 w_T / 8; at a = 2, 2·1.125/8 = 0.28125 (the Hessian-vector path counts θ_0(φ)
    as a use of φ, as the transforms do)."""
    problem = _sgd_problem(lambda th, phi, t: ((th["w"] - 1) ** 2).sum(), lambda phi: {"w": phi["a"] * 1.0},
                           jvp=name == "fg2u_jvp")
    result = hypergradient(problem, {"a": torch.full((2,), 2.0, dtype=F64)}, ALL[name])
    _assert_estimates(result, torch.full((2,), 0.28125, dtype=F64))


@pytest.mark.parametrize("name", ["fg2u", "fgu", "rgu"])
def test_phi_used_in_the_first_step_only_is_not_refused(name):
    """g reads φ at t = 0 only (then w is pulled to 1): w_3 = a/8 + 3/4, ∂f/∂a = 2 w_3/8 =
    0.21875 at a = 1; a use in any step counts, not only in the last one."""
    def g(th, phi, t):
        return ((th["w"] - (phi["a"] if t == 0 else 1)) ** 2).sum()

    result = hypergradient(_sgd_problem(g, _zero()), PHI, ALL[name])
    _assert_estimates(result, torch.full((2,), 0.21875, dtype=F64))


# -- fg2u's average over its default directions ----------------------------------------------------------
def test_fg2u_default_averages_over_its_eight_directions_for_many_tunables():
    """With N = 20 > 8 the default draws b = 8 directions and averages over them:
    ĝ = (1/8) Σ_i (∇h·v_i) v_i, not divided by N."""
    phi = {"a": torch.linspace(0.5, 1.5, 20, dtype=F64)}
    problem = _sgd_problem(lambda th, phi, t: ((th["w"] - phi["a"]) ** 2).sum(), _zero(20))
    result = hypergradient(problem, phi, ForwardGradientUnroll())
    assert result.diagnostics["directions"].shape == (8, 20)
    _assert_estimates(result, 2 * phi["a"] * 0.875**2)


# -- non-tensor and dataclass leaves of a reverse-mode state ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Moments:
    m: torch.Tensor
    v: torch.Tensor
    count: int = 0
    label: str = "moments"


def _moments_problem(extra):
    """A momentum-like step whose state is (_Moments, *extra): two tensors, an int and a str in
    the dataclass and the given non-tensor leaves beside it, carried unchanged."""
    def step(theta, state, phi, t):
        moments, *rest = state
        grad = 2 * (theta["w"] - phi["a"])
        m, v = 0.5 * moments.m + grad, 0.5 * moments.v + grad**2
        return {"w": theta["w"] - 0.1 * m / (1 + v)}, (_Moments(m, v, moments.count + 1, moments.label), *rest)

    zero = torch.zeros(2, dtype=F64)
    return BilevelProblem(step, lambda th, phi: (th["w"] ** 2).sum(),
                          ({"w": zero}, (_Moments(zero, zero), *extra)), horizon=3)


@pytest.mark.parametrize("method", [ReverseUnroll(), TruncatedReverseUnroll(steps=2)], ids=["rgu", "trgu"])
def test_reverse_mode_keeps_every_leaf_of_a_state_in_place(method):
    """A dataclass with two tensor fields, an int and a str, beside a str, an int and a
    dataclass type: each tensor comes back plain and equal to a primal unroll's, each
    other leaf as it was (in its own place, not another leaf's value)."""
    extra = ("tag", 7, _Moments)
    problem = _moments_problem(extra)
    result = hypergradient(problem, PHI, method)
    moments, *rest = result.state
    assert type(moments) is _Moments and moments.count == 3 and moments.label == "moments"
    assert tuple(rest) == extra
    with torch.no_grad():
        theta, state = problem.initial(PHI)
        for t in range(3):
            theta, state = problem.inner_step(theta, state, PHI, t)
    for name in ("m", "v"):
        value = getattr(moments, name)
        assert type(value) is torch.Tensor and not value.requires_grad
        torch.testing.assert_close(value, getattr(state[0], name), rtol=1e-12, atol=0)
    torch.testing.assert_close(result.theta["w"], theta["w"], rtol=1e-12, atol=0)


# -- LinearDecay's refusal -------------------------------------------------------------------------------
def test_linear_decay_refusal_advises_a_schedule_as_long_as_the_run():
    """The whole one-line message: it advises LinearDecay(steps), the run's steps, not the
    schedule's own total_steps again."""
    expected = ("steps = 5 exceeds the schedule's LinearDecay(total_steps=3): steps 3 on would train at learning "
                "rate 0; use LinearDecay(5) or fewer steps")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        train(problem(dim=3, batch=8), steps=5, eval_every=5, schedule=LinearDecay(3), seed=0, test_points=10,
              progress="off", device="cpu", dtype=F64)


# -- a history's whole steps on resume -------------------------------------------------------------------
def _history(steps):
    history = History()
    for step in steps:
        history.append(step=step, loss=1.0, rel_l2=0.1, rel_l1=0.1, max_err=0.1, lr=1e-3, mix=0.0, wall_s=0.0)
    history.trace_loss = [1.0] * 4
    history.trace_mix = [0.0] * 4
    return history


def test_check_history_takes_int_and_whole_float_steps_and_refuses_a_fraction():
    """Rows at int steps (a run's) and at whole float steps (2.0, as a state built by hand
    or from an older file holds) are consistent; 2.5 is refused, with the rows shown."""
    ints = _history([2, 4])
    assert all(type(s) is int for s in ints.rows["step"])
    check_history(None, 4, ints, [])
    floats = _history([2, 4])
    floats.rows["step"] = [2.0, 4.0]
    check_history(None, 4, floats, [])
    floats.rows["step"] = [2.5, 4.0]
    with pytest.raises(CheckpointError, match=r"^the state is inconsistent: its history rows are at steps 2\.5, 4, "
                                              r"not at increasing whole steps up to its step 4$"):
        check_history(None, 4, floats, [])


def test_trgu_names_its_window_when_phi_acts_only_before_it():
    """trgu with s < T on a problem whose φ acts only through θ_0(φ): the truncated
    hypergradient is 0 through the inner problem by construction, and the refusal blamed
    float(φ)/φ.detach() alone (found by audit GR). It now also names the window (the last
    s of the T steps) and the way out; at s = T, where θ_0(φ) is inside the transform,
    the same problem is not refused and agrees with rgu."""
    import pytest as _pytest

    from pinnlab.bilevel import ReverseUnroll, TruncatedReverseUnroll, from_inner_loss, hypergradient
    from pinnlab.solvers.optim import SGD

    problem = from_inner_loss(lambda th, phi, t: ((th["w"] - 1) ** 2).sum(), lambda th, phi: (th["w"] ** 2).sum(),
                              SGD(lr=0.25), lambda phi: {"w": phi["a"] * 1.0}, horizon=3)
    phi = {"a": torch.full((2,), 2.0, dtype=torch.float64)}
    with _pytest.raises(ValueError) as err:
        hypergradient(problem, phi, TruncatedReverseUnroll(steps=2))
    message = str(err.value)
    assert "float(φ)" in message and "the last 2 of the 3 steps" in message and "\n" not in message, message
    full = hypergradient(problem, phi, TruncatedReverseUnroll(steps=3)).grad["a"]
    assert torch.allclose(full, hypergradient(problem, phi, ReverseUnroll()).grad["a"])
