"""Tests from a third mutation audit of the solver loop, the pure step, the problem's
objective, the evaluation, the extra terms and the progress lines: values against closed
forms or independent float64 computations (a hand-computed Adam trajectory, the relative
errors in numpy), records checked with a controlled clock, and refusal boundaries."""

from __future__ import annotations

import dataclasses
import io
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.func import functional_call

from pinnlab._seeding import derive_seed
from pinnlab.estimators import SteinAntithetic
from pinnlab.io.checkpoint import CheckpointError
from pinnlab.losses import Hybrid, SwitchOnPlateau
from pinnlab.solvers import (
    LRA,
    SGD,
    Adam,
    DataLoss,
    LinearDecay,
    loop,
    make_train_step,
    progress,
    train,
)
from pinnlab.solvers.evaluate import relative_errors
from pinnlab.solvers.loop import History, peak_memory_mb
from pinnlab.solvers.progress import Progress
from tests.solvers.small_problems import F64, problem, stein

KW = dict(seed=0, test_points=10, progress="off", device="cpu", dtype=F64)


def _data_term(dim=4, n=5):
    x = torch.rand(n, dim, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.5
    return DataLoss(x, torch.zeros(n, dtype=F64))


# -- History, rows and what the result records -------------------------------------------

def test_history_last_terms_are_each_columns_latest_value():
    """What the progress line shows: the value of each term column at the latest row,
    not at the first."""
    history = History()
    common = dict(step=1, loss=1.0, rel_l2=0.5, rel_l1=0.5, max_err=0.5, lr=1e-3, mix=0.0, wall_s=1.0)
    assert history.last_terms() == {}
    history.append(terms={"loss_residual": 4.0, "weight_residual": 1.0}, **common)
    history.append(terms={"loss_residual": 2.0, "weight_residual": 3.0}, **{**common, "step": 2})
    assert history.last_terms() == {"loss_residual": 2.0, "weight_residual": 3.0}


def test_a_run_without_a_hybrid_loss_records_mix_zero():
    """No blend at all: every step of the trace and every row record mix 0 (what the
    plots and the result file read as "biased only"), not 1."""
    result = train(problem(dim=3, batch=8), steps=3, eval_every=2, **KW)
    assert result.history.trace_mix == [0.0, 0.0, 0.0]
    assert result.history.rows["mix"] == [0.0, 0.0]


def test_a_plateau_switch_that_never_happens_records_no_switch_step():
    """SwitchOnPlateau(window=100) over 3 steps never switches: the run ends ok, trains
    the biased loss only (mix 0) and its stats hold no switch_step."""
    p = problem(dim=3, batch=8, estimator=stein(), loss=Hybrid(switch=SwitchOnPlateau(window=100)))
    with pytest.warns(UserWarning):  # (no weight for the unbiased loss within the run)
        result = train(p, steps=3, eval_every=3, **KW)
    assert result.status == "ok"
    assert result.state.plateau is not None and result.state.plateau.switched_at is None
    assert result.history.trace_mix == [0.0, 0.0, 0.0]
    assert "switch_step" not in result.stats


def test_steps_per_second_is_the_timed_steps_over_their_time(monkeypatch):
    """A clock of the loop module that advances 0.5 s per reading: every step takes 0.5 s
    between its two readings; the first (untimed) step left out, 3 timed steps in 1.5 s
    are 2 steps per second."""
    ticks = iter(0.5 * n for n in range(1, 1000))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    result = train(problem(dim=3, batch=8), steps=4, eval_every=10, **KW)
    assert result.state.timed_steps == 3
    assert result.state.train_seconds == 1.5
    assert result.stats["steps_per_second"] == 2.0


def test_a_hybrid_run_with_a_fixed_mix_does_not_warn_of_its_switch():
    """The warning that the switch gives the unbiased loss no weight within the run is
    for runs the switch drives: with ``hyperparams["mix"]`` the switch is not used (the
    trace is that mix), and nothing is said; without it the warning comes."""
    p = problem(dim=3, batch=8, estimator=stein(), loss=Hybrid(switch=SwitchOnPlateau(window=100)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = train(p, steps=2, eval_every=2, hyperparams={"mix": 0.5}, **KW)
    assert fixed.history.trace_mix == [0.5, 0.5]
    with pytest.warns(UserWarning, match="gives its unbiased loss no weight within the run's 2 steps"):
        train(p, steps=2, eval_every=2, **KW)


def test_a_rows_wall_time_includes_its_own_step_and_evaluation(monkeypatch):
    """A row's wall_s is the run's wall-clock time when the row is written, after its
    step and evaluation: with a loop clock that jumps 100 s during each evaluation, the
    row of step 2 (the run's only evaluation) reads at least 100 s, not the time after
    step 1."""
    clock = {"now": 0.0}

    def perf_counter():
        clock["now"] += 0.001
        return clock["now"]

    real_evaluate = loop.evaluate

    def slow_evaluate(*args, **kwargs):
        clock["now"] += 100.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(loop, "evaluate", slow_evaluate)
    result = train(problem(dim=3, batch=8), steps=2, eval_every=2, **KW)
    assert result.history.rows["step"] == [2]
    assert 100.0 < result.history.rows["wall_s"][0] <= result.stats["wall_s"] < 100.1


def _vm_hwm_kb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_memory_on_the_cpu_is_vm_hwm_in_mebibytes():
    """/proc/self/status gives VmHWM in kB (KiB): the peak in MB is kB / 1024, between
    the high-water marks read just before and just after."""
    before = _vm_hwm_kb()
    peak = peak_memory_mb(torch.device("cpu"))
    after = _vm_hwm_kb()
    assert before / 1024 <= peak <= after / 1024


# -- resume ------------------------------------------------------------------------------

def test_a_weighting_state_with_a_stray_entry_is_refused():
    """A resumed weighting state must hold exactly the entries of a fresh one: an extra
    entry (another weighting's state) is refused, not silently carried along."""
    p = problem(extra_terms=(_data_term(),))
    first = train(p, steps=2, eval_every=2, weighting=LRA(every=1), **KW)
    state = first.state.copy()
    state.weighting = {**state.weighting, "initial": {}}
    with pytest.raises(CheckpointError, match="the state's weighting does not fit"):
        train(p, steps=3, eval_every=3, weighting=LRA(every=1), state=state, **KW)
    # the state as it was resumes
    resumed = train(p, steps=3, eval_every=3, weighting=LRA(every=1), state=first.state, **KW)
    assert resumed.state.step == 3


def test_a_resumed_runs_log_counts_its_own_steps_and_shows_the_states_rel_l2(monkeypatch, capsys):
    """Resumed at step 2 of 4 (rows every 2 steps): the line of step 3 shows the relative L2
    of the state's last row (no evaluation since), and the rate counts the steps of this
    process only: 1 step in 10 s, then 2 in 20 s (a clock of the progress module only)."""
    kept = []
    p = problem(dim=3, batch=8)
    train(p, steps=4, eval_every=2, checkpoint_every=2, on_checkpoint=kept.append, **KW)
    state = kept[0]
    assert state.step == 2
    clock = iter([0.0, 10.0, 20.0])
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    capsys.readouterr()
    train(p, steps=4, eval_every=2, state=state, log_every=1, **{**KW, "progress": "log"})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train step 3/4 loss=")
    assert f" rel_l2={state.history.rows['rel_l2'][-1]:.3e} " in lines[0]
    assert lines[0].endswith(" s/it=10.00") and lines[1].endswith(" s/it=10.00")


# -- the training step and the objective -------------------------------------------------

def _hand_adam_run(p, steps, hp, seed, schedule, b1=0.9, b2=0.999, eps=1e-8):
    """Adam by Kingma and Ba's formulas on autograd gradients of the objective."""
    params = p.init_params(dtype=F64)
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v = {k: torch.zeros_like(t) for k, t in params.items()}
    losses, rates = [], []
    for t in range(steps):
        leaves = {k: x.clone().requires_grad_(True) for k, x in params.items()}
        loss, _ = p.objective(leaves, hp, t, seed)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        rate = hp["lr"] * schedule(t)
        new = {}
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            m_hat = m[k] / (1 - b1 ** (t + 1))
            v_hat = v[k] / (1 - b2 ** (t + 1))
            new[k] = params[k] - rate * m_hat / (torch.sqrt(v_hat) + eps)
        params = new
        losses.append(float(loss.detach()))
        rates.append(rate)
    return params, losses, rates


def test_train_follows_the_hand_computed_float64_adam_trajectory():
    """Three steps of ``train`` (Adam, hyperparameter lr 0.02 over the optimizer's 1e-3,
    LinearDecay(4)) equal Adam's formulas applied by hand to autograd gradients of the
    objective; the trace holds each step's loss, the row the rate of its last step."""
    p = problem(dim=3, batch=8)
    hp = {"lr": 0.02, "weights": {"residual": 0.5}}
    result = train(p, steps=3, eval_every=3, optimizer=Adam(1e-3), schedule=LinearDecay(4),
                   hyperparams=hp, **KW)
    params, losses, rates = _hand_adam_run(p, 3, hp, 0, LinearDecay(4))
    for k in params:
        torch.testing.assert_close(result.params[k], params[k], rtol=1e-12, atol=1e-14)
    assert result.history.trace_loss == pytest.approx(losses, rel=1e-12)
    assert result.history.rows["lr"] == [rates[-1]] == [0.02 * 0.5]
    assert result.state.opt_state.count == 3


def test_one_point_per_chunk_is_allowed_and_gives_the_full_step():
    """batch_chunks = batch_size (one point per chunk, the least memory) is within
    1..batch_size: with a deterministic estimator the accumulated gradient is the full
    batch's, in float64; one chunk more is refused."""
    full = problem(dim=3, batch=4)
    single = dataclasses.replace(full, batch_chunks=4)
    params = full.init_params(dtype=F64)
    opt = SGD(lr=0.1)
    a = make_train_step(full, opt, seed=1)(params, opt.init(params), {}, 2)
    b = make_train_step(single, opt, seed=1)(params, opt.init(params), {}, 2)
    for k in params:
        torch.testing.assert_close(a[0][k], b[0][k], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a[2]["loss"], b[2]["loss"], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"batch_chunks must be between 1 and batch_size \(4\), got 5"):
        dataclasses.replace(full, batch_chunks=5)


@pytest.mark.parametrize("hyperparams", [{"lr": True}, {"weights": {"residual": True}}],
                         ids=["lr", "weight"])
def test_a_boolean_hyperparameter_is_refused(hyperparams):
    """True is an int to Python: a flag in a learning rate or a weight would train as 1."""
    p = problem(dim=3, batch=4)
    with pytest.raises(TypeError, match="must be a number or a tensor, got True"):
        p.objective(p.init_params(dtype=F64), hyperparams, 0, 0)


def test_a_collocation_weight_of_zero_at_some_points_is_allowed_and_splits_the_loss():
    """Weights >= 0: a point of weight 0 leaves the loss (mean w·R̂²). The loss with the
    indicator of a set of points plus that with the indicator of the others is the
    unweighted loss (deterministic autograd residuals, float64)."""
    p = problem(dim=3, batch=8)
    params = p.init_params(dtype=F64)

    def on(x):
        return (x[:, 0] > 0).to(x.dtype)

    def off(x):
        return (x[:, 0] <= 0).to(x.dtype)

    whole, _ = p.objective(params, {}, 1, 0)
    a, _ = p.objective(params, {"collocation_weight": on}, 1, 0)
    b, _ = p.objective(params, {"collocation_weight": off}, 1, 0)
    assert 0 < float(a) < float(whole) and 0 < float(b) < float(whole)
    torch.testing.assert_close(a + b, whole, rtol=1e-12, atol=0)


# -- evaluation --------------------------------------------------------------------------

def test_the_rows_errors_are_the_float64_formulas_at_the_net_output():
    """Autograd estimator: u = A·f + B at the test points, f the net itself; rel_l2 =
    ‖u − u*‖₂/‖u*‖₂, rel_l1 = ‖u − u*‖₁/‖u*‖₁, max_err = ‖u − u*‖∞ in numpy float64."""
    p = problem(dim=3, batch=8)
    result = train(p, steps=2, eval_every=1, **KW)
    x = result.test_inputs
    with torch.no_grad():
        f = functional_call(p.net, result.params, (x,))
        u = p.equation.solution(x, f).numpy()
    exact = p.equation.exact_values(x).numpy()
    err = u - exact
    assert result.final.rel_l2 == pytest.approx(np.sqrt(np.sum(err**2) / np.sum(exact**2)), rel=1e-12)
    assert result.final.rel_l1 == pytest.approx(np.sum(np.abs(err)) / np.sum(np.abs(exact)), rel=1e-12)
    assert result.final.max_err == pytest.approx(np.max(np.abs(err)), rel=1e-12)
    assert result.history.rows["rel_l2"][-1] == result.final.rel_l2


@pytest.mark.parametrize("scale", [1e20, 1e-25], ids=["squares-overflow-float32", "squares-underflow-float32"])
def test_float32_relative_errors_take_their_norms_in_float64(scale):
    """u* and u in float32 whose squares overflow or underflow float32 (‖·‖ in float32 is
    inf or 0): the relative errors are those of the float64 formulas, 1/5 and 1/7."""
    exact = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float32) * scale
    prediction = torch.tensor([3.0, 4.0, 1.0], dtype=torch.float32) * scale
    e = relative_errors(prediction, exact)
    ex, pr = exact.double().numpy(), prediction.double().numpy()
    assert e.rel_l2 == pytest.approx(np.linalg.norm(pr - ex) / np.linalg.norm(ex), rel=1e-6)
    assert e.rel_l2 == pytest.approx(0.2, rel=1e-6)
    assert e.rel_l1 == pytest.approx(1 / 7, rel=1e-6)
    assert e.max_err == pytest.approx(scale, rel=1e-6)


def test_a_float32_runs_test_set_holds_u_star_in_float32():
    """u* is computed in float64 and rounded to the run's dtype: the result's test_exact
    is float32 (the ``test_exact`` a result file stores) and the errors are those
    against it (the float64 formula, to float32's rounding of the differences)."""
    p = problem(dim=3, batch=8)
    result = train(p, steps=1, eval_every=1, **{**KW, "dtype": torch.float32})
    u64 = p.equation.exact_values(result.test_inputs)
    assert result.test_exact.dtype == torch.float32
    assert torch.equal(result.test_exact, u64.to(torch.float32))
    u = result.final.prediction.double().numpy()
    exact = result.test_exact.double().numpy()
    assert result.final.rel_l2 == pytest.approx(np.linalg.norm(u - exact) / np.linalg.norm(exact), rel=1e-6)


# -- extra terms -------------------------------------------------------------------------

def test_a_data_batch_of_all_but_one_observation_leaves_one_out():
    """DataLoss(batch_size = M − 1): the term is the mean squared misfit over M − 1 of the
    M observations, i.e. (Σ e − e_j)/(M − 1) for one j (e_i the float64 misfits of the
    deterministic net), not the mean over all M."""
    m = 6
    x = torch.rand(m, 3, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.5
    y = torch.linspace(-1.0, 1.0, m, dtype=F64)
    p = problem(dim=3, batch=4, extra_terms=(DataLoss(x, y, batch_size=m - 1),))
    params = p.init_params(dtype=F64)
    with torch.no_grad():
        e = ((p.equation.solution(x, functional_call(p.net, params, (x,))) - y) ** 2).numpy()
    for step in range(3):
        _, metrics = p.objective(params, {}, step, 0)
        value = float(metrics["loss_data"])
        left_out = [j for j in range(m) if value == pytest.approx((e.sum() - e[j]) / (m - 1), rel=1e-12)]
        assert len(left_out) == 1, (step, value, e)
        assert value != pytest.approx(e.mean(), rel=1e-9)


def test_a_data_term_draws_its_noise_from_its_own_named_stream(monkeypatch):
    """DataLoss("obs") smooths with the stream (seed, "obs/noise", step), not the
    residual's (seed, "noise", step): the term and the residual never share draws."""
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.5
    data = DataLoss(x, torch.zeros(5, dtype=F64), name="obs")
    p = problem(dim=3, batch=4, estimator=SteinAntithetic(sigma=0.05, num_samples=4), extra_terms=(data,))
    noise = []
    real_estimate = type(p.estimator).estimate

    def estimate_spy(self, model, points, queries, *, generator, sigma=None):
        noise.append((points.shape[0], generator.initial_seed()))
        return real_estimate(self, model, points, queries, generator=generator, sigma=sigma)

    monkeypatch.setattr(type(p.estimator), "estimate", estimate_spy)
    p.objective(p.init_params(dtype=F64), {}, 2, 7)
    assert (5, derive_seed(7, "obs/noise", 2)) in noise
    assert (5, derive_seed(7, "noise", 2)) not in noise


# -- progress lines ----------------------------------------------------------------------

def test_one_step_per_second_is_logged_as_steps_per_second(monkeypatch):
    """The log switches to seconds per step below one step per second only: exactly one
    step per second reads it/s=1.00."""
    clock = iter([0.0, 2.0])
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    out = io.StringIO()
    Progress(2, mode="log", log_every=2, stream=out).update(1, 1.0, None)
    assert out.getvalue() == "train step 2/2 loss=1.000e+00 rel_l2=n/a it/s=1.00\n"


def test_a_data_term_used_in_float32_then_in_float64_takes_float64_observations():
    """DataLoss keeps its observations converted per (device, dtype): after a float32 use,
    a float64 objective's data term is the one of a DataLoss never used before, bit for
    bit (not float32 observations cast back)."""
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.5
    y = torch.sin(3 * x.sum(1)) / 3
    used = problem(dim=3, batch=4, extra_terms=(DataLoss(x, y),))
    fresh = problem(dim=3, batch=4, extra_terms=(DataLoss(x, y),))
    used.objective(used.init_params(dtype=torch.float32), {}, 0, 0)
    _, metrics = used.objective(used.init_params(dtype=F64), {}, 0, 0)
    _, expected = fresh.objective(fresh.init_params(dtype=F64), {}, 0, 0)
    assert metrics["loss_data"].dtype == F64
    assert float(metrics["loss_data"]) == float(expected["loss_data"])
