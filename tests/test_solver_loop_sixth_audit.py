"""Tests from a sixth mutation audit of the solver loop: the message of a non-finite stop
in a resumed run and for a non-finite term that a weighting reads, the progress line of
a resumed run, the hybrid switch's warning at its boundary, which loss the plateau switch
watches (with a data term, and under a weighting), and a checkpoint's own copy of the
weighting state."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pinnlab.losses import Hybrid, SwitchAt, SwitchOnPlateau, Unbiased2
from pinnlab.solvers import LRA, DataLoss, train
from pinnlab.solvers.weighting import AbstractWeighting
from tests.solvers.small_problems import F64, problem, stein

KW = dict(seed=0, test_points=10, progress="off", device="cpu", dtype=F64)


def _data_term(dim=4, n=5):
    x = torch.rand(n, dim, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.5
    return DataLoss(x, torch.ones(n, dtype=F64))


def test_a_resumed_run_stopped_at_its_first_step_keeps_the_states_step():
    """Learning rate ×inf from step index 2: the run stops there, after the checkpoint of
    step 2. Resumed from that checkpoint, its first step (step 3) is the non-finite one:
    the message says it kept the state after step 2 (not "the initial state", which
    only a run stopped at step 1 of 0 keeps), and the state is the checkpoint's."""
    def schedule(s):
        return 1.0 if s < 2 else math.inf

    p = problem(dim=3, batch=8)
    kept = []
    first = train(p, steps=6, eval_every=2, schedule=schedule, checkpoint_every=2,
                  on_checkpoint=kept.append, **KW)
    assert first.status == "nonfinite" and [s.step for s in kept] == [2]
    resumed = train(p, steps=6, eval_every=2, schedule=schedule, state=kept[0], **KW)
    assert resumed.status == "nonfinite" and resumed.state.step == 2
    assert resumed.message.startswith(
        "the update at step 3 gave non-finite parameters or optimizer state (loss ")
    assert "; stopped and kept the state after step 2." in resumed.message
    for k in kept[0].params:
        assert torch.equal(resumed.params[k], kept[0].params[k])


def test_a_resumed_runs_progress_line_shows_the_states_latest_row(capsys):
    """Resumed at step 4 of 6 with rows at steps 2 and 4: the line of step 5 (no
    evaluation since) shows the relative L2 of the row of step 4, not of step 2."""
    p = problem(dim=3, batch=8)
    kept = []
    train(p, steps=6, eval_every=2, checkpoint_every=4, on_checkpoint=kept.append, **KW)
    state = kept[0]
    rel = state.history.rows["rel_l2"]
    assert state.step == 4 and state.history.rows["step"] == [2, 4]
    assert f"{rel[0]:.3e}" != f"{rel[1]:.3e}"
    capsys.readouterr()
    train(p, steps=6, eval_every=2, state=state, log_every=1, **{**KW, "progress": "log"})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train step 5/6 loss=")
    assert f" rel_l2={rel[1]:.3e} " in lines[0]


def test_a_switch_at_the_last_step_trains_the_unbiased_loss_without_a_warning():
    """SwitchAt(2) in a run of 3 steps: the last step (index 2) trains the unbiased loss
    (mix 1), so the warning that the unbiased loss gets no weight within the run is not
    given."""
    p = problem(estimator=stein(), loss=Hybrid(switch=SwitchAt(2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        result = train(p, steps=3, eval_every=3, **KW)
    assert result.history.trace_mix == [0.0, 0.0, 1.0]


def test_the_plateau_switch_watches_the_biased_residual_loss_not_the_total():
    """With a data term the training loss is residual + data; SwitchOnPlateau smooths the
    biased residual loss alone: its state after 4 steps (window 50, no switch) is the
    state replayed by hand over the rows' loss_residual column (a row per step), not over
    the total loss of the trace."""
    switch = SwitchOnPlateau(window=50, tolerance=0.01)
    p = problem(estimator=stein(), loss=Hybrid(switch=switch), extra_terms=(_data_term(),))
    with pytest.warns(UserWarning, match="no weight within the run's 4 steps"):
        result = train(p, steps=4, eval_every=1, hyperparams={"weights": {"data": 3.0}}, **KW)

    def replay(losses):
        state = switch.init()
        for step, value in enumerate(losses):
            state = switch.observe(state, step, value)
        return state

    residual = result.history.terms["loss_residual"]
    assert result.history.trace_mix == [0.0] * 4
    assert result.state.plateau == replay(residual)
    assert result.state.plateau != replay(result.history.trace_loss)
    assert result.state.plateau.switched_at is None


def test_the_plateau_switch_watches_the_biased_monitor_also_under_a_weighting():
    """Hybrid(first=Unbiased2) reports the biased loss as a monitor ('loss_biased') beside
    its unbiased residual term; with LRA the step's one device read holds the terms'
    values and that monitor. After one step (LRA's weights all 1, as without it) the
    plateau state is the one of the same run without a weighting: the EMA starts at the
    step's biased loss, not at the unbiased residual term LRA reads."""
    def run(**kw):
        loss = Hybrid(switch=SwitchOnPlateau(window=50), first=Unbiased2())
        p = problem(estimator=stein(), loss=loss, extra_terms=(_data_term(),))
        with pytest.warns(UserWarning, match="no weight within"):
            return train(p, steps=1, eval_every=1, **KW, **kw)

    plain, weighted = run(), run(weighting=LRA(every=1))
    assert weighted.history.trace_loss == plain.history.trace_loss
    assert weighted.state.plateau == plain.state.plateau
    assert weighted.state.plateau.ema != weighted.history.terms["loss_residual"][0]


class _InPlace(AbstractWeighting):
    """A custom weighting whose update changes its state in place (fixed weights, a list
    of the steps it saw)."""

    def init(self, names, weights=None):
        return {"weights": {n: 1.0 for n in names}, "seen": []}

    def update(self, state, step, losses, gradient_norms, seed):
        state["seen"].append(step)
        return state


def test_a_checkpoint_keeps_its_own_weighting_state():
    """The state handed to on_checkpoint is a snapshot the later steps leave as it is, its
    weighting state included, even for a weighting that updates its state in place: the
    checkpoints of steps 1 and 2 hold the steps seen until then."""
    kept = []
    result = train(problem(dim=3, batch=8), steps=3, eval_every=3, weighting=_InPlace(),
                   checkpoint_every=1, on_checkpoint=kept.append, **KW)
    assert [s.weighting["seen"] for s in kept] == [[0], [0, 1]]
    assert result.state.weighting["seen"] == [0, 1, 2]


def test_a_non_finite_term_the_weighting_reads_is_named_as_the_stop_cause(monkeypatch):
    """A step whose loss, parameters and optimizer state are finite but whose residual
    term value (which LRA reads) is not stops the run at that step, and the message names
    that term instead of blaming the parameters or optimizer state."""
    import pinnlab.solvers.loop as loop

    make = loop.make_train_step

    def patched(*args, **kwargs):
        step_fn = make(*args, **kwargs)

        def step(params, opt_state, hp, i):
            params, opt_state, metrics = step_fn(params, opt_state, hp, i)
            if i == 1:
                metrics = {**metrics, "loss_residual": torch.tensor(math.inf, dtype=F64)}
            return params, opt_state, metrics
        step.term_gradients = step_fn.term_gradients
        return step

    monkeypatch.setattr(loop, "make_train_step", patched)
    # (a data term beside the residual: LRA refuses a problem of one term)
    result = train(problem(dim=3, batch=8, extra_terms=(_data_term(dim=3),)), steps=4, eval_every=4,
                   weighting=LRA(every=1), **KW)
    assert result.status == "nonfinite" and result.state.step == 1
    assert result.message.startswith("the loss term loss_residual became non-finite at step 2 (loss ")
    assert "; stopped and kept the state after step 1." in result.message
