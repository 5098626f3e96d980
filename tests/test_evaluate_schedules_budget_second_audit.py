"""Second mutation audit of the evaluation (``pinnlab.solvers.evaluate``), the learning-rate
schedules and the wall-clock budget, with the seeding, field and warning helpers: the
edges the earlier tests left open, checked against closed forms."""

from __future__ import annotations

import dataclasses
import importlib
import math
import time

import pytest
import torch

from pinnlab._budget import Budget
from pinnlab._seeding import derive_seed, make_generator
from pinnlab.estimators import SteinAntithetic
from pinnlab.solvers import evaluate, predict, relative_errors
from pinnlab.solvers.evaluate import with_reference
from pinnlab.solvers.schedules import Constant, Exponential, LinearDecay

from .solvers.small_problems import F64, problem


# -- schedules --------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule, field, value", [
    (LinearDecay(10), "total_steps", 0), (Exponential(0.5), "gamma", 2.0), (Constant(), "gamma", 2.0)])
def test_a_schedule_cannot_be_changed_after_it_is_checked(schedule, field, value):
    """The schedules are frozen: a total_steps of 0 or a γ above 1 set after construction
    would bypass the checks, and one Constant() instance is shared as make_train_step's
    default, so none may be changed in place."""
    before = schedule(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(schedule, field, value)
    assert schedule(5) == before


# -- evaluate ---------------------------------------------------------------------------------
def test_evaluate_defaults_to_the_stream_of_seed_0_at_step_0():
    """Without seed and step, evaluate draws its noise from (0, "eval", 0), as documented by
    its signature: the prediction is predict's with that generator (independent noise, so
    another stream gives other values)."""
    p = problem(estimator=SteinAntithetic(sigma=0.1, num_samples=4, noise="independent"))
    params = p.init_params(dtype=F64)
    x = p.equation.test_set(6, dtype=F64)
    u = p.equation.exact_values(x).to(F64)
    got = evaluate(p, params, x, u).prediction
    assert torch.equal(got, predict(p, params, x, generator=make_generator(0, "eval", 0)))
    assert not torch.equal(got, predict(p, params, x, generator=make_generator(0, "eval", 1)))
    assert not torch.equal(got, predict(p, params, x, generator=make_generator(1, "eval", 0)))


def test_predict_refuses_points_on_another_device_than_the_parameters():
    """The points' device is checked with their dtype: points on another device (here
    ``meta``) than float32 parameters of the same dtype are refused with both named, not
    passed on to fail inside the estimator."""
    p = problem(dim=4)
    params = p.init_params()
    with pytest.raises(ValueError, match="^the points are float32 on meta, the parameters float32 on cpu: "
                                         "move one to the other's$"):
        predict(p, params, torch.zeros(3, 4, device="meta"))


def test_predict_builds_no_graph_even_for_points_that_require_grad():
    """predict runs without autograd, the ansatz u = A·u_σ + B included: points with
    requires_grad (a user's leaf tensor) give a plain `(N,)` tensor, not one holding a graph
    back to x through A(x) and B(x), with the same values as for detached points."""
    p = problem(dim=4)
    params = p.init_params(dtype=F64)
    x = p.equation.test_set(5, dtype=F64)
    u = predict(p, params, x.clone().requires_grad_())
    assert not u.requires_grad and u.grad_fn is None
    assert torch.equal(u, predict(p, params, x))


@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad=True to a scalar")
def test_relative_errors_keep_a_detached_prediction():
    """The Evaluation holds the prediction detached: a prediction that requires grad (from
    a user's own forward pass) is kept by value, without the graph behind it, its errors are
    taken without one (torch warns, once per process, on float() of a grad-requiring norm), and the
    errors are the closed forms (|e| = (1, 0, 2) against u* = (2, 0, 2): 5^½/8^½, 3/4, 2)."""
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    prediction = theta * torch.tensor([1.5, 0.0, 0.0], dtype=F64)
    exact = torch.tensor([2.0, 0.0, 2.0], dtype=F64)
    e = relative_errors(prediction, exact)
    assert not e.prediction.requires_grad and e.prediction.grad_fn is None
    assert torch.equal(e.prediction, torch.tensor([3.0, 0.0, 0.0], dtype=F64))
    assert e.rel_l2 == pytest.approx((5 / 8) ** 0.5, rel=1e-15)
    assert e.rel_l1 == 0.75 and e.max_err == 2.0


def test_evaluate_draws_its_noise_on_the_test_points_device(monkeypatch):
    """evaluate's generator is made on x's device (a CPU generator cannot draw the noise of
    points on a GPU): the stream (seed, "eval", step) is asked for with x.device. (This
    machine has no GPU; the call is recorded, as tests/test_devices.py records the study's.)"""
    module = importlib.import_module("pinnlab.solvers.evaluate")  # (pinnlab.solvers.evaluate is the function)
    asked = []

    def recording(*parts, device=None):
        asked.append((parts, device))
        return make_generator(*parts, device=device)

    monkeypatch.setattr(module, "make_generator", recording)
    p = problem(estimator=SteinAntithetic(sigma=0.1, num_samples=4, noise="independent"))
    params = p.init_params(dtype=F64)
    x = p.equation.test_set(4, dtype=F64)
    evaluate(p, params, x, p.equation.exact_values(x).to(F64), seed=2, step=7)
    assert asked == [((2, "eval", 7), x.device)]


@pytest.mark.parametrize("status", ["nonfinite", "interrupted", "budget"])
def test_only_an_ok_run_becomes_invalid_reference(status):
    """with_reference: "ok" alone becomes "invalid_reference"; any other status (not just
    "nonfinite") stays, its message gaining the reference's problem; no problem changes nothing."""
    reference = "u* is 0 at every one of the 3 test points in float32 (underflowed, or zero there)"
    undefined = f"rel_l2 and rel_l1 are undefined (NaN): {reference}."
    assert with_reference(status, "It stopped.", reference) == (status, f"It stopped. Also, {undefined}")
    assert with_reference("ok", "", reference) == ("invalid_reference",
                                                   f"{undefined} The training itself ended normally.")
    assert with_reference(status, "It stopped.", "") == (status, "It stopped.")


def test_an_evaluation_cannot_be_changed_after_it_is_made():
    """Evaluation is frozen: a run's final errors (kept in its result and written to its
    file) cannot be overwritten in place, e.g. a NaN rel_l2 of an unusable reference."""
    e = relative_errors(torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.rel_l2 = 0.0
    assert math.isnan(e.rel_l2) and e.max_err == 1.0


# -- Budget -----------------------------------------------------------------------------------
def test_the_budgets_default_clock_is_the_monotonic_performance_counter():
    """Without a clock the budget reads time.perf_counter, as documented: monotonic, so a
    wall clock set back (NTP, daylight saving) cannot make the time spent negative or
    stretch a run's budget, and a state's ``spent`` is measured on it."""
    budget = Budget(5.0)
    assert budget.clock is time.perf_counter
    state = budget.state()
    assert Budget.state_fits(state, 0) and 0.0 <= state["spent"] < 5.0


# -- seeding ----------------------------------------------------------------------------------
def test_a_zero_dimensional_integer_tensor_keys_like_its_int():
    """Parts are taken as the integers they equal: a step held as a 0-d tensor (as torch
    keeps an optimizer's step count) keys the same stream as the plain int, and its
    generator draws the same numbers (np.random.SeedSequence itself refuses a tensor)."""
    assert derive_seed(3, "eval", torch.tensor(5)) == derive_seed(3, "eval", 5)
    assert derive_seed(torch.tensor(2, dtype=torch.int32), "noise/0") == derive_seed(2, "noise/0")
    drawn = torch.randn(3, generator=make_generator(3, "eval", torch.tensor(5)), dtype=F64)
    assert torch.equal(drawn, torch.randn(3, generator=make_generator(3, "eval", 5), dtype=F64))


def test_num_samples_is_ignored_by_an_estimator_without_a_sample_count():
    """num_samples sets K only for an estimator that has one: Autograd (the network's own
    value, no noise) predicts the same values with or without it, as evaluate does with a
    run's eval_samples."""
    p = problem(dim=3)
    params = p.init_params(dtype=F64)
    x = p.equation.test_set(4, dtype=F64)
    plain = predict(p, params, x)
    assert torch.equal(predict(p, params, x, num_samples=5), plain)
    assert torch.equal(evaluate(p, params, x, p.equation.exact_values(x).to(F64), num_samples=5).prediction, plain)
