"""Third mutation audit of the evaluation (``pinnlab.solvers.evaluate``), the learning-rate
schedules and the wall-clock budget: what the earlier tests left open, an `(N,)`
prediction against `(N, 1)` exact values, the dtype an Evaluation keeps its prediction
in, a shared draw handed to an estimator without Stein noise, a checkpoint's budget state
with fewer units than the loop finished and a budget of 0 s, checked against hand
computations in float64."""

from __future__ import annotations

import math
import re

import pytest
import torch

from pinnlab._budget import Budget
from pinnlab.estimators.stein import SharedDraw
from pinnlab.solvers.evaluate import predict, relative_errors

from .solvers.small_problems import F64, problem


# -- relative_errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_shape, exact_shape", [((3,), (3, 1)), ((3, 1), (3,))],
                         ids=["vector-against-column", "column-against-vector"])
def test_relative_errors_refuse_a_column_against_a_vector_of_as_many_values(prediction_shape, exact_shape):
    """`(N,)` against `(N, 1)`: as many values, but the difference broadcasts to `(N, N)`
    (every prediction against every exact value), so the shapes, not the counts, must match.
    Broadcast, u = (1, 2, 3) against u* = u would give rel_l2 = (12/14)^½ instead of 0."""
    values = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    message = (f"prediction of shape {prediction_shape} and exact values of shape {exact_shape}: "
               "need one shape, `(N,)`")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        relative_errors(values.reshape(prediction_shape), values.reshape(exact_shape))


def test_an_evaluation_keeps_the_prediction_in_its_own_dtype():
    """The errors are taken in float64, the prediction is kept as it was made: a float32
    run's Evaluation holds the float32 values (what its result file stores), not a float64
    copy; the errors are the closed forms (e = (0.5, −1, 0) against u* = (1, 2, 2): 1.25^½/3,
    1.5/5, 1)."""
    prediction = torch.tensor([1.5, 1.0, 2.0], dtype=torch.float32)
    exact = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float32)
    e = relative_errors(prediction, exact)
    assert e.prediction.dtype == torch.float32 and torch.equal(e.prediction, prediction)
    assert e.rel_l2 == pytest.approx(math.sqrt(1.25) / 3, rel=1e-15)
    assert e.rel_l1 == pytest.approx(1.5 / 5, rel=1e-15) and e.max_err == 1.0


# -- predict with a shared draw ------------------------------------------------------------------
def test_a_shared_draw_is_ignored_by_an_estimator_without_stein_noise():
    """predict takes a SharedDraw whatever the estimator (a result file's slice passes one
    for every run): Autograd, whose evaluate has no ``draw``, predicts the network's own
    value with it as without it, rather than failing on the unexpected argument."""
    p = problem(dim=3)
    params = p.init_params(dtype=F64)
    x = p.equation.test_set(4, dtype=F64)
    assert torch.equal(predict(p, params, x, draw=SharedDraw()), predict(p, params, x))


# -- Budget -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stored_units", [0, 2])
def test_a_budget_state_with_fewer_units_than_the_loop_finished_does_not_fit(stored_units):
    """state_fits wants exactly the loop's unit count, in both directions: a checkpoint of
    3 finished units whose budget counted fewer would, resumed, take 9 s over 2 units as
    4.5 s per unit (and 0 units as "the first always runs"), so it is refused."""
    assert Budget.state_fits({"spent": 9.0, "units": 3}, 3)
    assert not Budget.state_fits({"spent": 9.0, "units": stored_units}, 3)


def test_a_budget_of_zero_seconds_runs_the_first_unit_only():
    """seconds = 0 is a budget (not "no budget", as None is): the first unit runs, as it
    always does, and no unit of positive length is expected to end within 0 s after it."""
    now = [0.0]
    budget = Budget(0.0, clock=lambda: now[0])
    ran = 0
    while budget.allows_another() and ran < 100:
        now[0] += 0.5
        ran += 1
        budget.finished_one()
    assert ran == 1 and budget.spent() == 0.5
