"""Tests from a seventh mutation audit of the solver loop: the wall-clock and step-time
bookkeeping under a counting clock, the final evaluation of a run stopped by a
non-finite step, the adaptive weights against the fixed ones, which non-finite steps
stop a run (weights, optimizer state) and that they are not handed to the weighting,
a resume at the last step, the term columns of a one-term run, and a stop in the first
step of a resumed run."""

from __future__ import annotations

import itertools
import math
import types

import pytest
import torch

from pinnlab.solvers import LRA, DataLoss, loop, train
from tests.solvers.small_problems import F64, problem, stein
from tests.test_solver_loop_sixth_audit import _InPlace

KW = dict(seed=0, test_points=10, progress="off", device="cpu", dtype=F64)


def _counting_clock(monkeypatch, start=0):
    """The loop's perf_counter returns start, start + 1, ... (one second per call)."""
    ticks = itertools.count(start)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))


def test_wall_and_step_times_under_a_counting_clock(monkeypatch):
    """Clock calls: run start 0; step 1 at 1-2 (untimed) and wall 3; step 2 at 4-5, its
    row's wall 6, wall 7; step 3 at 8-9, its row's wall 10, wall 11. So the rows' wall_s
    are [6, 10], the final wall_s 11, two timed steps of 1 s each (1 step/s)."""
    _counting_clock(monkeypatch)
    result = train(problem(dim=3, batch=8), steps=3, eval_every=2, **KW)
    assert result.history.rows["step"] == [2, 3]
    assert result.history.rows["wall_s"] == [6.0, 10.0]
    assert result.state.wall_s == result.stats["wall_s"] == 11.0
    assert (result.state.timed_steps, result.state.train_seconds) == (2, 2.0)
    assert result.stats["steps_per_second"] == 1.0
    assert result.stats["steps_done"] == 3


def test_a_resumed_runs_wall_goes_on_from_the_states_under_a_counting_clock(monkeypatch):
    """Resumed at step 2 with wall_s 100: run start 0; step 3 at 1-2 (the resumed
    process's first step, untimed) and wall 103; step 4 at 4-5 (timed), its row's wall
    106, wall 107. The timed steps and seconds add to the state's (1 step, 1 s before)."""
    kept = []
    _counting_clock(monkeypatch)
    train(problem(dim=3, batch=8), steps=4, eval_every=4, checkpoint_every=2,
          on_checkpoint=kept.append, **KW)
    state = kept[0]
    assert (state.step, state.timed_steps, state.train_seconds) == (2, 1, 1.0)
    state.wall_s = 100.0
    _counting_clock(monkeypatch)
    result = train(problem(dim=3, batch=8), steps=4, eval_every=4, state=state, **KW)
    assert result.history.rows["wall_s"] == [106.0]
    assert result.stats["wall_s"] == 107.0
    assert (result.state.timed_steps, result.state.train_seconds) == (2, 2.0)
    assert result.stats["steps_per_second"] == 1.0


def test_a_single_step_run_reports_its_untimed_steps_rate(monkeypatch):
    """One step (untimed, 1 s by the clock): steps_per_second is 1 / that step's time."""
    _counting_clock(monkeypatch)
    result = train(problem(dim=3, batch=8), steps=1, eval_every=1, **KW)
    assert result.state.timed_steps == 0
    assert result.stats["steps_per_second"] == 1.0


def test_a_non_finite_stop_after_an_evaluation_evaluates_the_kept_state():
    """Learning rate ×inf from step index 3 in a run of 6 with rows every 2: the run
    stops at step 4, keeping the state after step 3, and its final evaluation is that
    state's with the evaluation noise of step 3: the final evaluation of a clean run of 3
    steps (evaluated at its last step in the loop), not the row of step 2."""
    def schedule(s):
        return 1.0 if s < 3 else math.inf

    p = problem(dim=3, batch=8, estimator=stein())
    clean = train(p, steps=3, eval_every=3, **KW)
    stopped = train(p, steps=6, eval_every=2, schedule=schedule, **KW)
    assert stopped.status == "nonfinite" and stopped.state.step == 3
    assert stopped.history.rows["step"] == [2]
    assert stopped.final.rel_l2 == clean.final.rel_l2
    assert stopped.final.max_err == clean.final.max_err
    assert stopped.final.rel_l2 != stopped.history.rows["rel_l2"][0]


def _data_term(dim=3, n=5):
    x = torch.rand(n, dim, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.5
    return DataLoss(x, torch.ones(n, dtype=F64))


def test_the_adaptive_weights_override_the_fixed_ones_and_fill_the_weight_columns():
    """LRA (every step) from the fixed weights {data: 3}: step 2 trains with the weights
    of LRA's state after step 1 (which replaced the 3), and the row of step 2 records
    those weights, not the fixed ones."""
    kept = []
    p = problem(dim=3, batch=8, extra_terms=(_data_term(),))
    result = train(p, steps=2, eval_every=2, weighting=LRA(every=1), hyperparams={"weights": {"data": 3.0}},
                   checkpoint_every=1, on_checkpoint=kept.append, **KW)
    used = kept[0].weighting["weights"]
    assert used["data"] != 3.0
    assert result.history.terms["weight_data"] == [used["data"]]
    assert result.history.terms["weight_residual"] == [used["residual"]]


def test_a_non_finite_step_does_not_update_the_weighting():
    """Learning rate ×inf from step index 2: the weighting sees steps 0 and 1 only; the
    non-finite step 2 is not handed to its update (which would change the kept state of
    a weighting that updates in place, or fail on non-finite term values)."""
    def schedule(s):
        return 1.0 if s < 2 else math.inf

    result = train(problem(dim=3, batch=8), steps=4, eval_every=4, schedule=schedule,
                   weighting=_InPlace(), **KW)
    assert result.status == "nonfinite" and result.state.step == 2
    assert result.state.weighting["seen"] == [0, 1]


class _Blows(_InPlace):
    """Fixed weights until the update after step index 1 makes the residual's infinite."""

    def update(self, state, step, losses, gradient_norms, seed):
        if step == 1:
            return {**state, "weights": {**state["weights"], "residual": math.inf}}
        return state


def test_non_finite_loss_weights_stop_the_run_keeping_the_state_before():
    """The weighting's update after step 2 (index 1) gives an infinite weight while the
    loss, parameters and terms are finite: the run stops there as non-finite, keeping
    the state after step 1 and its finite weights, and the message blames the weights."""
    result = train(problem(dim=3, batch=8), steps=4, eval_every=4, weighting=_Blows(), **KW)
    assert result.status == "nonfinite" and result.state.step == 1
    assert result.state.weighting["weights"]["residual"] == 1.0
    assert result.message.startswith("the loss weights became non-finite at step 2; "
                                     "stopped and kept the state after step 1.")


def test_a_finished_state_resumed_with_the_same_steps_runs_no_step():
    """A state at the run's last step resumes as a run of no step: the same parameters,
    history and steps_done, and a final evaluation of those parameters."""
    p = problem(dim=3, batch=8)
    done = train(p, steps=2, eval_every=2, **KW)
    again = train(p, steps=2, eval_every=2, state=done.state, **KW)
    assert again.status == "ok" and again.stats["steps_done"] == 2
    assert again.history.trace_loss == done.history.trace_loss
    assert again.history.rows["step"] == [2]
    for k in done.params:
        assert torch.equal(again.params[k], done.params[k])
    assert again.final.rel_l2 == done.final.rel_l2


def test_a_run_with_the_residual_term_alone_records_no_term_columns():
    """Term columns (loss_<name>, weight_<name>) are kept only with more than one term."""
    result = train(problem(dim=3, batch=8), steps=2, eval_every=1, **KW)
    assert result.history.terms == {}
    assert not any(k.startswith("terms/") for k in result.history.arrays())


def test_a_stop_in_the_first_step_of_a_resumed_run_saves_nothing_new():
    """Resumed from the checkpoint of step 2 and stopped from outside in its first step:
    the last completed step is the resumed one, already saved, so on_checkpoint is not
    called again."""
    def stop(s):
        if s == 2:
            raise KeyboardInterrupt
        return 1.0

    p = problem(dim=3, batch=8)
    kept = []
    train(p, steps=4, eval_every=4, checkpoint_every=2, on_checkpoint=kept.append, **KW)
    assert [s.step for s in kept] == [2]
    again = []
    with pytest.raises(KeyboardInterrupt):
        train(p, steps=4, eval_every=4, schedule=stop, state=kept[0], checkpoint_every=2,
              on_checkpoint=again.append, **KW)
    assert again == []


def test_an_overflowed_optimizer_state_stops_the_run_though_the_parameters_stay_finite():
    """Residual weight 1e300: the loss (~5e301) is finite, its gradient squared overflows
    Adam's second moment to inf, and the update m / (sqrt(v) + eps) stays finite. The
    step is still non-finite (its optimizer state is): the run keeps the initial state."""
    result = train(problem(dim=3, batch=8), steps=3, eval_every=3,
                   hyperparams={"weights": {"residual": 1e300}}, **KW)
    assert result.status == "nonfinite" and result.state.step == 0
    assert result.history.trace_loss == []
    assert result.message.startswith("the update at step 1 gave non-finite parameters or optimizer state (loss ")
    assert "; stopped and kept the initial state." in result.message
