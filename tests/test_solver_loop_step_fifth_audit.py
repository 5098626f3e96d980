"""Tests from a fifth mutation audit of the training loop and the pure step: the wall
time a checkpoint between evaluations carries, detached metrics under a tensor learning
rate, term gradients under ``no_grad``, and the mix at which a weighting's term gradients are taken."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pinnlab.losses import Hybrid, SwitchAt
from pinnlab.solvers import LRA, SGD, loop, make_train_step, train
from pinnlab.solvers.step import TrainStep
from pinnlab.solvers.terms import DataLoss
from tests.solvers.small_problems import F64, problem, stein

KW = dict(seed=0, test_points=10, progress="off", device="cpu", dtype=F64)


def _ticking_clock(monkeypatch, tick=1.0):
    """The loop module's clock advances ``tick`` seconds per reading."""
    ticks = iter(tick * n for n in range(1, 10_000))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))


def test_a_checkpoint_between_evaluations_carries_the_runs_wall_time(monkeypatch):
    """Every step updates the state's wall time, not only an evaluated one: with a loop
    clock of one second per reading (the run's start, then three readings per step), the
    checkpoints of steps 1 and 2, before the run's only evaluation at step 3, read 3 s
    and 6 s (not 0)."""
    _ticking_clock(monkeypatch)
    kept = []
    result = train(problem(dim=3, batch=8), steps=3, eval_every=10, checkpoint_every=1,
                   on_checkpoint=kept.append, **KW)
    assert [s.step for s in kept] == [1, 2]
    assert [s.wall_s for s in kept] == [3.0, 6.0]
    assert result.history.rows["wall_s"] == [9.0]
    assert result.stats["wall_s"] == 10.0


def test_the_steps_metrics_are_detached_from_a_tensor_learning_rate():
    """With a learning rate that requires grad (a bilevel hyperparameter) the new
    parameters depend on it, and the metrics, the recorded ``lr`` included, do not: a
    metric kept across unrolled steps would hold their whole graph."""
    p = problem(dim=3, batch=8)
    opt = SGD(0.5)
    params = p.init_params(dtype=F64)
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    new, _, metrics = make_train_step(p, opt)(params, opt.init(params), {"lr": lr}, 0)
    assert all(v.requires_grad for v in new.values())
    assert not any(v.requires_grad for v in metrics.values())
    assert metrics["lr"].item() == 0.1 and metrics["lr"].dtype == F64


def test_term_gradients_work_under_no_grad_and_match_the_steps_gradient():
    """A residual-only problem's one term gradient is the step's gradient (weight 1), and
    it is the same when asked for inside ``torch.no_grad()`` (an evaluation context): the
    method turns autograd on for its own backward passes."""
    p = problem(dim=3, batch=8)
    step = make_train_step(p, SGD(0.1))
    params = p.init_params(dtype=F64)
    grads, _ = step.gradient(params, {}, 2)
    with torch.no_grad():
        terms = step.term_gradients(params, {}, 2)
    assert list(terms) == ["residual"]
    for k in grads:
        torch.testing.assert_close(terms["residual"][k], grads[k], rtol=1e-12, atol=1e-14)
        assert not terms["residual"][k].requires_grad


def test_a_weightings_term_gradients_are_taken_at_the_steps_own_mix(monkeypatch):
    """LRA's per-term gradient statistics are those of the loss the step trains: under
    SwitchAt(1) the residual term's gradients of steps 1 and 2 are the unbiased loss's
    (mix 1, the trace's), not the biased loss's of the fixed hyperparameters."""
    seen = []
    original = TrainStep.term_gradients

    def spy(self, params, hyperparams, step, names=None):
        seen.append((step, hyperparams.get("mix")))
        return original(self, params, hyperparams, step, names)

    monkeypatch.setattr(TrainStep, "term_gradients", spy)
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.5
    p = problem(dim=3, batch=8, estimator=stein(), loss=Hybrid(switch=SwitchAt(1)),
                extra_terms=(DataLoss(x, torch.ones(5, dtype=F64)),))
    result = train(p, steps=3, eval_every=3, weighting=LRA(every=1), **KW)
    assert result.history.trace_mix == [0.0, 1.0, 1.0]
    assert seen == [(0, 0.0), (1, 1.0), (2, 1.0)]
