"""Mutation audit of the evaluation (``pinnlab.solvers.evaluate``), the learning-rate
schedules, the wall-clock budget and the field/warning helpers: the edges the earlier
tests left open (chunk sizes at their floor and for estimators without a sample count,
γ above 1, ...), checked against closed forms."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pinnlab.estimators import Autograd
from pinnlab.solvers.evaluate import (
    EVAL_ELEMENT_BUDGET,
    eval_chunk_size,
    reference_problem,
    relative_errors,
)
from pinnlab.solvers.schedules import Exponential

from .test_io_second_audit import _chunk_problem


# -- eval_chunk_size --------------------------------------------------------------------------
def test_an_estimator_without_a_sample_count_sizes_chunks_for_one_value_per_point():
    """Autograd has no ``num_samples`` (predict passes None): a point's largest tensor is
    2·max(D, w) elements (K = 1), not 2·2·max(D, w)."""
    problem = SimpleNamespace(net=SimpleNamespace(width=4096), estimator=Autograd(),
                              equation=SimpleNamespace(input_dim=3))
    assert eval_chunk_size(problem, None) == EVAL_ELEMENT_BUDGET // (2 * 4096) == 2048
    assert eval_chunk_size(problem, 0) == 2048  # K = 0 is taken as 1 as well
    wide_input = SimpleNamespace(net=SimpleNamespace(width=8), estimator=Autograd(),
                                 equation=SimpleNamespace(input_dim=8192))
    assert eval_chunk_size(wide_input, None) == EVAL_ELEMENT_BUDGET // (2 * 8192) == 1024


def test_a_chunk_holds_at_least_one_point_when_one_point_exceeds_the_budget():
    """2·K·w above the element budget: the chunk is one point, never 0 (an empty chunk
    would evaluate nothing, or loop forever)."""
    problem = _chunk_problem(SimpleNamespace(width=2**23), k=2)
    assert 2 * 2 * 2**23 > EVAL_ELEMENT_BUDGET
    assert eval_chunk_size(problem, 2) == 1
    assert eval_chunk_size(_chunk_problem(SimpleNamespace(width=2**21), k=4), 4) == 1  # exactly the budget: 1 fits


# -- predict ----------------------------------------------------------------------------------
def test_predict_refuses_zero_samples_rather_than_using_the_estimators():
    """num_samples = 0 is a bad count (refused as the estimator refuses it), not "no
    override": falling back to the estimator's K would report errors at another K."""
    from pinnlab.estimators import SteinAntithetic
    from pinnlab.solvers.evaluate import predict
    from tests.solvers.small_problems import problem

    pinn = problem(dim=3, estimator=SteinAntithetic(sigma=0.1, num_samples=4))
    params = pinn.init_params()
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        predict(pinn, params, torch.zeros(2, 3), num_samples=0)


# -- schedules --------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1.0000001, 1.5, 2.0])
def test_exponential_refuses_gamma_above_one(gamma):
    """γ > 1 grows the learning rate without bound (γ^step): refused like γ <= 0."""
    with pytest.raises(ValueError, match=rf"gamma must be in \(0, 1\], got {gamma}"):
        Exponential(gamma)


# -- reference_problem ------------------------------------------------------------------------
F64 = torch.float64


@pytest.mark.parametrize("values, expected", [
    ([1e200, 0.0, -3.0], "‖u*‖ overflows float64 (|u*| up to 1e+200 at the 3 test points)"),
    ([-1e200, 1.0], "‖u*‖ overflows float64 (|u*| up to 1e+200 at the 2 test points)"),
    ([1e-200, 0.0, -1e-180], "‖u*‖ underflows to 0 in float64 (|u*| at most 1e-180 at the 3 test points)"),
], ids=["overflow-with-a-zero", "overflow-negative", "underflow-with-a-zero"])
def test_a_norm_beyond_float64_is_named_as_such_even_with_zeros_and_negative_values(values, expected):
    """Some (not all) values 0 is no "0 at every point"; the size quoted is the largest
    |u*|, also when that value is negative (not the largest signed value)."""
    exact = torch.tensor(values, dtype=F64)
    assert reference_problem(exact) == expected
    assert math.isnan(relative_errors(torch.zeros_like(exact), exact).rel_l2)


def test_a_float32_reference_whose_norm_overflows_float32_only_is_usable():
    """The norm is taken in float64: |u*| = 1e30 in float32 has squares beyond float32's
    range but a finite norm in float64, so the relative errors are defined and exact."""
    exact = torch.tensor([1e30, -2e30, 0.0], dtype=torch.float32)
    assert torch.linalg.vector_norm(exact) == math.inf  # what float32 alone would give
    assert reference_problem(exact) == ""
    prediction = torch.tensor([2e30, -2e30, 1e30], dtype=torch.float32)
    e = relative_errors(prediction, exact)
    ref = exact.double()
    err = prediction.double() - ref
    assert e.rel_l2 == pytest.approx(math.sqrt(float(err.pow(2).sum()) / float(ref.pow(2).sum())), rel=1e-12)
    assert e.rel_l1 == pytest.approx(float(err.abs().sum() / ref.abs().sum()), rel=1e-12)


# -- Budget -----------------------------------------------------------------------------------
def test_the_budget_counts_time_from_its_start_not_from_the_clocks_zero():
    """perf_counter does not start at 0: with the clock at 1000 s, 1 s units and a 10 s
    budget, ten units run (the tenth ends at 10 s), not one."""
    from pinnlab._budget import Budget

    now = [1000.0]
    budget = Budget(10.0, clock=lambda: now[0])
    ran = 0
    while budget.allows_another() and ran < 100:
        now[0] += 1.0
        ran += 1
        budget.finished_one()
    assert ran == 10 and budget.spent() == 10.0


def test_a_unit_expected_to_end_just_past_the_budget_does_not_start():
    """The rule is "expected end <= budget" with no slack: 3 s units against a budget a
    nanosecond short of 9 s run two (the third would end at 9 s, past it)."""
    from pinnlab._budget import Budget

    for seconds, expected in ((9.0 - 1e-9, 2), (9.0, 3), (6.0 - 1e-9, 1)):
        now = [0.0]
        budget = Budget(seconds, clock=lambda now=now: now[0])
        ran = 0
        while budget.allows_another() and ran < 100:
            now[0] += 3.0
            ran += 1
            budget.finished_one()
        assert ran == expected, (seconds, ran)
