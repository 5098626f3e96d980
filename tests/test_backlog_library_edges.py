"""Library edges an earlier review left open: a TwoPhase schedule that never switches, a
LinearDecay shorter than the training, the type of History's step column, fg2u's default
number of directions for few tunables, a dataclass inner state through reverse mode, and
inner steps that cut φ off (float(φ), φ.detach()), with fg2u's advice for a step that
forward mode cannot differentiate."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from pinnlab._typing import is_transform_wrapped
from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    ReverseUnroll,
    TruncatedReverseUnroll,
    TwoPhase,
    hypergradient,
    optimize,
)
from pinnlab.bilevel.adapters import from_inner_loss
from pinnlab.solvers import SGD, LinearDecay, train
from pinnlab.solvers.loop import History
from tests.solvers.small_problems import F64, problem

KW = dict(seed=0, test_points=10, progress="off", device="cpu", dtype=F64)


def _quadratic(horizon=3, size=2, cut=None):
    """g = ‖w − a‖², f = ‖w‖², SGD(0.25) from w = 0; ``cut`` maps φ['a'] before g reads it."""
    cut = cut or (lambda a: a)

    def g(theta, phi, t):
        return ((theta["w"] - cut(phi["a"])) ** 2).sum()

    def f(theta, phi):
        return (theta["w"] ** 2).sum()

    return from_inner_loss(g, f, SGD(lr=0.25), {"w": torch.zeros(size, dtype=F64)}, horizon=horizon)


PHI = {"a": torch.ones(2, dtype=F64)}


# -- 1. TwoPhase that never switches -------------------------------------------------------------
@pytest.mark.parametrize("switch_after", [3, 5])
def test_optimize_warns_of_a_two_phase_run_that_ends_before_its_second_phase(switch_after):
    """Before: optimize(..., TwoPhase(rgu, fgu, switch_after=S), steps=3) with S >= 3 ran rgu
    for every step and never mentioned fgu. Now one warning line names switch_after, the
    steps and the phase that does not run (a warning: a resume with more steps goes on
    into it, so such a first leg is legitimate). One below the steps switches silently."""
    method = TwoPhase(ReverseUnroll(), ExactForwardUnroll(), switch_after=switch_after)
    with pytest.warns(UserWarning, match=rf"^TwoPhase\.switch_after = {switch_after} with steps = 3: this run "
                                         r"ends before the second phase \(fgu\) starts") as record:
        result = optimize(_quadratic(), PHI, method, steps=3)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert result.history["method"] == ["rgu"] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ran = optimize(_quadratic(), PHI, TwoPhase(ReverseUnroll(), ExactForwardUnroll(), switch_after=2), steps=3)
    assert ran.history["method"] == ["rgu", "rgu", "fgu"]


# -- 2. LinearDecay shorter than the run -----------------------------------------------------------
def test_train_refuses_a_linear_decay_shorter_than_the_run():
    """Before: train(steps=4, schedule=LinearDecay(2)) trained steps 2 and 3 at learning rate
    0, silently. Now one ValueError line names the steps and the schedule's total_steps;
    LinearDecay(steps) itself trains (its last step at factor 1/steps, not 0)."""
    with pytest.raises(ValueError, match=r"^steps = 4 exceeds the schedule's LinearDecay\(total_steps=2\): "
                                         r"steps 2 on would train at learning rate 0"):
        train(problem(dim=3, batch=8), steps=4, eval_every=2, schedule=LinearDecay(2), **KW)
    result = train(problem(dim=3, batch=8), steps=2, eval_every=2, schedule=LinearDecay(2), **KW)
    assert result.status == "ok"
    assert result.history.rows["lr"][-1] > 0


# -- 3. History's step column --------------------------------------------------------------------
def test_history_steps_are_ints_in_a_run_and_after_arrays():
    """Before: History.rows['step'] held floats (2.0, 4.0); steps are counts. Now ints, in a
    run's history and in one read back from its arrays (the other columns stay floats)."""
    result = train(problem(dim=3, batch=8), steps=4, eval_every=2, **KW)
    steps = result.history.rows["step"]
    assert steps == [2, 4] and all(type(s) is int for s in steps)
    assert all(type(v) is float for v in result.history.rows["loss"])
    back = History.from_arrays(result.history.arrays())
    assert back.rows["step"] == [2, 4] and all(type(s) is int for s in back.rows["step"])
    # a damaged file's step that is not whole stays a float, for a resume's check to refuse
    arrays = {**result.history.arrays(), "step": np.array([2.5, 4.0])}
    assert History.from_arrays(arrays).rows["step"] == [2.5, 4]


# -- 4. fg2u's default number of directions ---------------------------------------------------------
@pytest.mark.parametrize("size, expected", [(1, 1), (3, 3), (20, 8)])
def test_fg2u_default_takes_at_most_one_direction_per_tuned_value(size, expected):
    """Before: ForwardGradientUnroll() drew 8 directions even for one scalar tunable (8× the
    cost of the exact gradient). Now the default is min(8, N), as the CLI's."""
    phi = {"a": torch.ones(size, dtype=F64)}
    result = hypergradient(_quadratic(size=size), phi, ForwardGradientUnroll())
    assert ForwardGradientUnroll().directions_for(size) == expected
    assert result.diagnostics["directions"].shape == (expected, size)
    assert result.diagnostics["inner_step_evaluations"] == 3 * expected
    if size == 1:  # one ±1 direction gives the exact gradient
        exact = hypergradient(_quadratic(size=1), phi, ReverseUnroll()).grad["a"]
        torch.testing.assert_close(result.grad["a"], exact, rtol=1e-12, atol=0)


def test_fg2u_keeps_a_given_number_of_directions():
    """A given num_directions is kept (also above N, as before)."""
    result = hypergradient(_quadratic(size=1), {"a": torch.ones(1, dtype=F64)},
                           ForwardGradientUnroll(num_directions=3))
    assert result.diagnostics["directions"].shape == (3, 1)
    with pytest.raises(ValueError, match="num_directions"):
        ForwardGradientUnroll(num_directions=0)


# -- 5. a dataclass inner state through reverse mode -------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Momentum:
    velocity: torch.Tensor
    count: int = 0


def _momentum_problem():
    def step(theta, state, phi, t):
        velocity = 0.5 * state.velocity + 2 * (theta["w"] - phi["a"])
        return {"w": theta["w"] - 0.1 * velocity}, _Momentum(velocity, state.count + 1)

    def f(theta, phi):
        return (theta["w"] ** 2).sum()

    zero = torch.zeros(2, dtype=F64)
    return BilevelProblem(step, f, ({"w": zero}, _Momentum(zero)), horizon=3)


@pytest.mark.parametrize("method", [ReverseUnroll(), TruncatedReverseUnroll(steps=2)], ids=["rgu", "trgu"])
def test_reverse_mode_returns_a_dataclass_state_of_plain_tensors(method):
    """Before: rgu/trgu returned the user's dataclass state holding a functorch
    GradTrackingTensor (a wrapper of the finished transform) instead of a tensor. Now its
    tensors are plain, equal to a primal unroll's, its other fields kept."""
    problem = _momentum_problem()
    result = hypergradient(problem, PHI, method)
    assert type(result.state) is _Momentum and result.state.count == 3
    assert not is_transform_wrapped(result.state.velocity)
    assert type(result.state.velocity) is torch.Tensor and not result.state.velocity.requires_grad
    with torch.no_grad():
        theta, state = problem.initial(PHI)
        for t in range(3):
            theta, state = problem.inner_step(theta, state, PHI, t)
    torch.testing.assert_close(result.state.velocity, state.velocity, rtol=1e-12, atol=0)
    torch.testing.assert_close(result.theta["w"], theta["w"], rtol=1e-12, atol=0)


# -- 6. inner steps that cut φ off -----------------------------------------------------------------
CUTS = {"float": lambda a: float(a[0]), "detach": lambda a: a.detach()}
METHODS = {"rgu": ReverseUnroll(), "trgu": TruncatedReverseUnroll(steps=2),
           "fg2u": ForwardGradientUnroll(num_directions=2), "fg2u_jvp": ForwardGradientUnroll(num_directions=2,
                                                                                             tangents="jvp"),
           "fgu": ExactForwardUnroll()}


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("name", list(METHODS))
def test_a_step_that_does_not_depend_on_phi_is_refused(cut, name):
    """Before: an inner loss reading φ as float(φ[...]) or φ.detach() gave a hypergradient of
    exactly 0 from every estimator, silently. Now one ValueError line says θ_T does not
    depend on φ and names the likely cause."""
    problem = _quadratic(cut=CUTS[cut])
    if name == "fg2u_jvp":  # (a plain inner step, without the gradient_step's halves)
        problem = dataclasses.replace(problem, gradient_step=None)
    method = METHODS[name]
    with pytest.raises(ValueError, match=rf"^{method.name}: θ_T after the inner steps does not depend on φ, .*"
                                         r"float\(φ\).*φ\.detach\(\)") as info:
        hypergradient(problem, PHI, method)
    assert "\n" not in str(info.value)
    # the same problem reading φ as a tensor estimates as before
    assert float(hypergradient(_quadratic(), PHI, method).grad["a"].abs().sum()) > 0


def test_a_step_that_depends_on_phi_only_through_its_rate_is_not_refused():
    """A learning rate tuned in φ (the loss without φ) is a dependence: fg2u's Hessian-vector
    path and rgu agree on its hypergradient, nonzero."""
    problem = from_inner_loss(lambda th, phi, t: ((th["w"] - 1) ** 2).sum(), lambda th, phi: (th["w"] ** 2).sum(),
                              SGD(lr=0.25), {"w": torch.zeros(2, dtype=F64)}, horizon=3, lr=lambda phi: phi["lr"])
    phi = {"lr": torch.tensor(0.25, dtype=F64)}
    exact = hypergradient(problem, phi, ReverseUnroll()).grad["lr"]
    forward = hypergradient(problem, phi, ExactForwardUnroll()).grad["lr"]
    assert float(exact) != 0
    torch.testing.assert_close(forward, exact, rtol=1e-10, atol=0)


class _ForwardOnly(torch.autograd.Function):
    """x ↦ 2x, an autograd.Function without setup_context: neither torch.func.jvp nor
    torch.func.grad can go through it."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_fg2u_advice_for_a_step_forward_mode_cannot_differentiate_does_not_promise_rgu():
    """Before: fg2u said "use rgu/trgu or zo_fg2u instead" for a step through an operation
    outside autograd, where rgu fails as well. Now the advice says what rgu/trgu need, a
    backward pass, which an autograd.Function's own backward gives (rgu's plain autograd
    goes through this one; torch.func.grad, which it used before, refused it for lack of
    setup_context) and NumPy does not, and that zo_fg2u only evaluates the step."""
    def step(theta, state, phi, t):
        return {"w": _ForwardOnly.apply(theta["w"] + phi["a"])}, state

    problem = BilevelProblem(step, lambda th, phi: (th["w"] ** 2).sum(), ({"w": torch.zeros(2, dtype=F64)}, None),
                             horizon=2)
    with pytest.raises(RuntimeError, match="not differentiable in forward mode") as info:
        hypergradient(problem, PHI, ForwardGradientUnroll(num_directions=2))
    message = str(info.value)
    assert "use rgu" not in message
    assert "rgu/trgu need only a backward pass (an autograd.Function's own backward will do" in message
    assert "zo_fg2u only evaluates the step" in message
    # (the advice's claim: rgu goes through it; w_1 = 2a, w_2 = 2(2a + a) = 6a, h = Σ 36a², ∇h = 72a)
    grad = hypergradient(problem, PHI, ReverseUnroll()).grad
    torch.testing.assert_close(grad["a"], 72 * PHI["a"])


@pytest.mark.parametrize("device, reason", [("gpu", "not a device"), ("cuda:1", "CUDA is not available")])
def test_train_names_its_own_device_argument_in_a_refusal(device, reason, monkeypatch):
    """From Python, ``train(device="gpu")`` was refused as ``trainer.device = 'gpu'``, a
    config setting the caller never wrote; it now names train's own argument. The CLI,
    which resolves the device before train, still names trainer.device."""
    from pinnlab.solvers.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=rf"^device = '{device}': {reason}"):
        train(problem(dim=3, batch=8), steps=2, eval_every=2, **{**KW, "device": device})
    with pytest.raises(ValueError, match=rf"^trainer.device = '{device}': {reason}"):
        resolve_device(device)
