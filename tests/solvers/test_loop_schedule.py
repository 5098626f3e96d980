"""The loop's eval schedule, row losses, recorded lr, mix timing, final eval."""
import math

import numpy as np
import pytest

from pinnlab.losses import Hybrid, SwitchAt
from pinnlab.solvers import Adam, evaluate, train

from .small_problems import F64, problem, stein

KW = dict(seed=0, test_points=20, progress="off", device="cpu", dtype=F64)


def _final_of(result, p):
    return evaluate(p, result.params, result.test_inputs, result.test_exact, seed=0, step=result.state.step)


def test_a_run_whose_length_is_no_multiple_of_eval_every_evaluates_its_last_step():
    p = problem(estimator=stein())
    result = train(p, steps=5, eval_every=2, **KW)
    assert result.history.rows["step"] == [2, 4, 5]
    assert result.final.rel_l2 == _final_of(result, p).rel_l2


def test_row_loss_is_the_mean_of_the_window_since_the_previous_row():
    p = problem(estimator=stein())
    result = train(p, steps=6, eval_every=3, **KW)
    trace = result.history.trace_loss
    assert result.history.rows["loss"] == [float(np.mean(trace[:3])), float(np.mean(trace[3:]))]


def test_recorded_lr_is_the_scheduled_rate_of_the_rows_last_step():
    p = problem(estimator=stein())
    result = train(p, steps=4, eval_every=2, optimizer=Adam(1e-3), schedule=lambda s: 0.5 ** s, **KW)
    assert result.history.rows["lr"] == pytest.approx([1e-3 * 0.5 ** 1, 1e-3 * 0.5 ** 3], rel=1e-12)


def test_hybrid_mix_switches_at_its_step():
    p = problem(estimator=stein(), loss=Hybrid(switch=SwitchAt(2)))
    result = train(p, steps=4, eval_every=4, **KW)
    assert result.history.trace_mix == [0.0, 0.0, 1.0, 1.0]


def test_a_nonfinite_stop_evaluates_the_kept_state_not_an_earlier_row():
    p = problem(estimator=stein())
    result = train(p, steps=10, eval_every=2, schedule=lambda s: 1.0 if s < 3 else math.inf, **KW)
    assert result.status == "nonfinite" and result.state.step == 3
    assert result.history.rows["step"] == [2]
    assert result.final.rel_l2 == _final_of(result, p).rel_l2
