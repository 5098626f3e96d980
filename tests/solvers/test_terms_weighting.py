"""Soft-constraint and data terms; LRA and ReLoBRaLo weightings."""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased, Unbiased1
from pinnlab.nets import MLP, Pointwise, evaluate_pointwise
from pinnlab.solvers import (
    LRA,
    Adam,
    ConstraintLoss,
    DataLoss,
    LinearDecay,
    PINNProblem,
    ReLoBRaLo,
    make_train_step,
    train,
)

F64 = torch.float64


def _soft_problem(model, extra, dim=4):
    eq = PoissonTwoBody(dim, seed=1, constraint="soft")
    return PINNProblem(eq, model, SteinAntithetic(sigma=1e-3, num_samples=8), Biased(),
                       batch_size=16, extra_terms=extra)


def test_terms_vanish_at_the_exact_solution_and_not_elsewhere():
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    g = torch.Generator().manual_seed(0)
    x_obs = eq.sample_collocation(20, generator=g, dtype=F64)
    data = DataLoss(x_obs, eq.exact(x_obs))
    constraint = ConstraintLoss(batch_size=32)
    exact_model = Pointwise(eq.exact)
    problem = _soft_problem(exact_model, (constraint, data))
    _, metrics = problem.objective({"dummy": torch.zeros(1, dtype=F64)}, {}, 0, 0)
    # smoothing with σ = 1e-3 moves u by ≈ σ²Δu*/2: tiny
    assert float(metrics["loss_boundary"]) < 1e-10
    assert float(metrics["loss_data"]) < 1e-8
    shifted = _soft_problem(Pointwise(lambda z: eq.exact(z) + 0.1), (constraint, data))
    _, metrics = shifted.objective({"dummy": torch.zeros(1, dtype=F64)}, {}, 0, 0)
    assert math.isclose(float(metrics["loss_boundary"]), 0.01, rel_tol=1e-3)
    assert math.isclose(float(metrics["loss_data"]), 0.01, rel_tol=1e-3)


def test_weights_scale_terms_in_the_objective():
    net = MLP(4, width=8, depth=3, dtype=F64)
    problem = _soft_problem(net, (ConstraintLoss(batch_size=8),))
    params = problem.init_params()
    base, m = problem.objective(params, {}, 3, 0)
    weighted, m2 = problem.objective(params, {"weights": {"boundary": 10.0, "residual": 0.5}}, 3, 0)
    expected = 0.5 * m["loss_residual"] + 10.0 * m["loss_boundary"]
    torch.testing.assert_close(weighted.detach(), expected)


def _relobralo_by_hand(history, weights, rho, alpha, tau):
    """REFERENCE.md §7, written out: λ_i(t) = α[ρλ_i(t−1) + (1−ρ)λ_i^bal(t,0)]
    + (1−α)λ_i^bal(t,t−1), λ_i^bal(t,t') = m·softmax_i(L_i(t)/(τL_i(t')))."""
    def bal(now, then):
        e = {n: math.exp(now[n] / (tau * then[n])) for n in now}
        return {n: len(now) * e[n] / sum(e.values()) for n in now}
    start, last = bal(history[-1], history[0]), bal(history[-1], history[-2])
    return {n: alpha * (rho * weights[n] + (1 - rho) * start[n]) + (1 - alpha) * last[n]
            for n in weights}


def test_relobralo_formula_by_hand():
    alpha, tau, lookback, seed = 0.8, 0.5, 0.5, 3
    w = ReLoBRaLo(alpha=alpha, lookback=lookback, temperature=tau)
    history = [{"a": 1.0, "b": 2.0, "c": 4.0}, {"a": 0.5, "b": 3.0, "c": 2.0},
               {"a": 0.25, "b": 1.0, "c": 3.0}, {"a": 0.3, "b": 0.5, "c": 1.0},
               {"a": 0.1, "b": 0.6, "c": 0.5}]
    state = w.init(["a", "b", "c"])
    state = w.update(state, 0, history[0], lambda: {}, seed=seed)
    assert state["weights"] == {"a": 1.0, "b": 1.0, "c": 1.0}  # t = 0 only records L(0)
    expected, rhos = dict(state["weights"]), []
    for step in range(1, len(history)):
        state = w.update(state, step, history[step], lambda: {}, seed=seed)
        # ρ ~ Bernoulli(lookback) from the stream (seed, "relobralo", step)
        rho = float(torch.rand((), generator=make_generator(seed, "relobralo", step)) < lookback)
        rhos.append(rho)
        expected = _relobralo_by_hand(history[: step + 1], expected, rho, alpha, tau)
        for n in expected:
            assert math.isclose(state["weights"][n], expected[n], rel_tol=1e-12), (step, n)
    assert set(rhos) == {0.0, 1.0}  # both the lookback and the restart branch are exercised
    assert len({round(v, 6) for v in state["weights"].values()}) == 3


def test_relobralo_refuses_negative_losses():
    w = ReLoBRaLo()
    state = w.update(w.init(["residual", "boundary"]), 0, {"residual": 1.0, "boundary": 1.0},
                     lambda: {}, seed=0)
    with pytest.raises(ValueError, match=r"must be finite and >= 0; at step 2: residual = -0\.001"):
        w.update(state, 1, {"residual": -1e-3, "boundary": 1.0}, lambda: {}, seed=0)


def test_lra_moves_towards_gradient_ratio():
    w = LRA(alpha=0.5, every=2)
    state = {"weights": {"residual": 1.0, "boundary": 4.0, "data": 3.0}}
    norms = {"residual": (8.0, 1.0), "boundary": (1.0, 2.0), "data": (0.0, 0.0)}
    assert w.update(state, 1, {}, lambda: norms, seed=0) is state  # not an update step
    state = w.update(state, 2, {}, lambda: norms, seed=0)
    # λ̂ = max|∇L_r| / mean|∇(λ L_b)| = 8 / (4·2) = 1; λ = 0.5·4 + 0.5·1; a term without
    # gradient keeps its weight, the reference stays at 1
    assert state["weights"] == {"residual": 1.0, "boundary": 2.5, "data": 3.0}


def test_lra_reference_must_be_a_term():
    with pytest.raises(ValueError, match="LRA reference = 'boundary': not a loss term"):
        LRA(reference="boundary").init(["residual", "data"])
    net = MLP(4, width=8, depth=3, generator=torch.Generator().manual_seed(0))
    problem = _soft_problem(net, (ConstraintLoss(batch_size=8),))
    with pytest.raises(ValueError, match="not a loss term of this problem .terms: 'residual', 'boundary'"):
        train(problem, steps=1, progress="off", test_points=10, weighting=LRA(reference="data"))


def test_duplicate_term_names_are_refused():
    net = MLP(4, width=8, depth=3)
    with pytest.raises(ValueError, match=r"duplicate term name\(s\) \['boundary'\]"):
        _soft_problem(net, (ConstraintLoss(batch_size=8), ConstraintLoss(batch_size=4)))
    with pytest.raises(ValueError, match=r"\['residual'\]"):
        _soft_problem(net, (ConstraintLoss(name="residual"),))


def _weighted_problem(batch_chunks=1, dtype=None):
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    net = MLP(4, width=16, depth=3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return PINNProblem(eq, net, SteinAntithetic(sigma=0.05, num_samples=8), Biased(),
                       batch_size=16, extra_terms=(ConstraintLoss(batch_size=16),),
                       batch_chunks=batch_chunks)


def test_term_gradients_are_the_one_hot_objective_gradients():
    """LRA's per-term gradients (one forward, one backward per term) equal the gradient of
    the objective with all other weights 0, as LRA computed them before, to float64
    round-off (bit-identical on some CPUs; not on all: the two graphs may take other
    kernel paths)."""
    problem = _weighted_problem(dtype=F64)
    step = make_train_step(problem, Adam(), seed=2)
    params = problem.init_params()
    hp = {"sigma": 0.1, "weights": {"residual": 3.0, "boundary": 5.0}}
    grads = step.term_gradients(params, hp, 4)
    assert list(grads) == ["residual", "boundary"]
    grad_fn = torch.func.grad(problem.objective, has_aux=True)
    for name in grads:
        only = {n: float(n == name) for n in grads}
        expected, _ = grad_fn(params, {**hp, "weights": only}, 4, 2)
        # relative to the whole gradient: the output bias's is round-off around 0 (the
        # Stein differences cancel it)
        scale = max(float(g.abs().max()) for g in expected.values())
        for k in params:
            torch.testing.assert_close(grads[name][k], expected[k], rtol=1e-13, atol=1e-13 * scale,
                                       msg=lambda m, name=name, k=k: f"{name} {k}: {m}")


def test_term_gradients_use_the_steps_chunks_and_noise():
    """With batch_chunks the per-term gradients add up to the step's own gradient (same
    chunks, same noise streams), whatever the weights."""
    problem = _weighted_problem(batch_chunks=3, dtype=F64)
    step = make_train_step(problem, Adam(), seed=1)
    params = problem.init_params()
    weights = {"residual": 0.5, "boundary": 7.0}
    terms = step.term_gradients(params, {}, 5)
    full, _ = step.gradient(params, {"weights": weights}, 5)
    # round-off relative to the whole gradient (the output bias's is round-off around 0)
    scale = max(float(g.abs().max()) for g in full.values())
    for k in params:
        combined = sum(w * terms[n][k] for n, w in weights.items())
        torch.testing.assert_close(combined, full[k], rtol=1e-12, atol=1e-12 * scale)


def test_lra_step_forwards_each_chunk_once(monkeypatch):
    """An LRA update costs one more forward of each chunk (not one per term) and uses
    the step's chunks, never the whole batch at once."""
    problem = _weighted_problem(batch_chunks=4)
    calls = []
    original = PINNProblem.term_losses

    def spy(self, params, hyperparams, step, seed, chunk=None):
        calls.append((step, chunk))
        return original(self, params, hyperparams, step, seed, chunk)

    monkeypatch.setattr(PINNProblem, "term_losses", spy)
    train(problem, steps=2, seed=0, eval_every=10, test_points=10, progress="off",
          weighting=LRA(every=2))
    # step 0: the step's 4 chunks, then the LRA update's 4; step 1: no update
    assert calls == [(0, c) for c in range(4)] * 2 + [(1, c) for c in range(4)]


class _Slow(LRA):
    def update(self, state, step, losses, gradient_norms, seed):
        time.sleep(0.05)
        return super().update(state, step, losses, gradient_norms, seed)


def test_steps_per_second_includes_the_weighting_update():
    result = train(_weighted_problem(), steps=4, seed=0, eval_every=10, test_points=10,
                   progress="off", weighting=_Slow(every=1))
    assert 0 < result.stats["steps_per_second"] < 1 / 0.05


class _NaNAtStep2(LRA):
    def update(self, state, step, losses, gradient_norms, seed):
        value = math.nan if step == 2 else 2.0 + step
        return {"weights": {n: 1.0 if n == "residual" else value for n in state["weights"]}}


def test_nonfinite_loss_weights_stop_training_and_keep_the_last_finite_state():
    result = train(_weighted_problem(), steps=5, seed=0, eval_every=10, test_points=10,
                   progress="off", weighting=_NaNAtStep2(every=1))
    assert result.status == "nonfinite"
    assert "loss weights became non-finite at step 3; stopped and kept the state after step 2" in result.message
    assert result.state.step == 2 and result.state.weighting["weights"]["boundary"] == 3.0


class _ExactPlusShift(torch.nn.Module):
    """u* + b: the residual is pure estimator noise, so unbiased losses go negative."""

    def __init__(self, equation):
        super().__init__()
        self.equation = equation
        self.b = torch.nn.Parameter(torch.full((1,), 0.1, dtype=F64))

    def forward(self, inputs):
        return evaluate_pointwise(lambda z: self.equation.exact(z) + self.b, inputs)


def test_relobralo_balances_an_unbiased_residual_on_its_biased_metric(monkeypatch):
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    problem = PINNProblem(eq, _ExactPlusShift(eq), SteinAntithetic(sigma=0.01, num_samples=2),
                          Unbiased1(), batch_size=4, extra_terms=(ConstraintLoss(batch_size=8),))
    params = problem.init_params()
    _, first = problem.objective(params, {}, 0, 0)
    assert float(first["loss_residual"]) < 0  # the case ReLoBRaLo's ratios cannot take
    seen = []
    original = ReLoBRaLo.update

    def spy(self, state, step, losses, gradient_norms, seed):
        seen.append(dict(losses))
        return original(self, state, step, losses, gradient_norms, seed)

    monkeypatch.setattr(ReLoBRaLo, "update", spy)
    result = train(problem, steps=6, optimizer=Adam(1e-3), seed=0, eval_every=6,
                   test_points=10, progress="off", dtype=F64,
                   weighting=ReLoBRaLo(alpha=0.5, lookback=0.5))
    assert result.status == "ok" and len(seen) == 6
    assert seen[0] == {"residual": float(first["loss_biased"]),
                       "boundary": float(first["loss_boundary"])}
    assert all(v["residual"] > 0 for v in seen)
    weights = result.state.weighting["weights"]
    assert all(0.2 < v < 1.8 for v in weights.values()), weights  # no one-hot collapse


@pytest.mark.parametrize("weighting", [LRA(alpha=0.3, every=3), ReLoBRaLo(lookback=0.5)],
                         ids=["lra", "relobralo"])
def test_resume_from_a_checkpoint_file_is_bit_identical_with_weighting(weighting, tmp_path):
    from pinnlab.io.checkpoint import load_checkpoint, save_checkpoint

    steps, half, path = 8, 4, tmp_path / "state.pt"
    problem = _weighted_problem()
    opt = Adam(1e-2)
    kwargs = dict(optimizer=opt, schedule=LinearDecay(steps), seed=0, eval_every=3,
                  test_points=20, progress="off", weighting=weighting, dtype=F64)
    full = train(problem, steps=steps, **kwargs)

    def save(state):
        if state.step == half:
            save_checkpoint(path, state, opt, "config")

    train(problem, steps=steps, checkpoint_every=half, on_checkpoint=save, **kwargs)
    state = load_checkpoint(path, opt, "config", torch.device("cpu"), F64)
    resumed = train(problem, steps=steps, state=state, **kwargs)
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k])
    assert resumed.state.weighting == full.state.weighting
    assert len(set(full.state.weighting["weights"].values())) > 1  # the weights moved
    assert resumed.history.terms == full.history.terms
    assert resumed.history.trace_loss == full.history.trace_loss


@pytest.mark.parametrize("weighting", [LRA(every=5), ReLoBRaLo()])
def test_training_with_adaptive_weights_logs_terms(weighting):
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    net = MLP(4, width=16, depth=3, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(eq, net, SteinAntithetic(sigma=0.05, num_samples=8), Biased(),
                          batch_size=16, extra_terms=(ConstraintLoss(batch_size=16),))
    result = train(problem, steps=40, optimizer=Adam(1e-3), seed=0, eval_every=10,
                   test_points=50, progress="off", weighting=weighting)
    terms = result.history.terms
    assert set(terms) == {"loss_residual", "weight_residual", "loss_boundary", "weight_boundary"}
    assert len(terms["weight_boundary"]) == 4
    assert any(v != 1.0 for v in terms["weight_boundary"])
    assert result.state.weighting is not None


def _trajectory(weighting, weights, steps, monkeypatch):
    """Train the weighted problem in float64 with ``weights`` configured; per step the
    weights it trained with, the parameters after it, and the step's term losses."""
    from pinnlab.solvers import step as step_module

    problem = _weighted_problem(dtype=F64)
    after = {}
    real = step_module.TrainStep.__call__

    def spy(self, params, opt_state, hp, step):
        out = real(self, params, opt_state, hp, step)
        after[step] = ({k: v.detach().clone() for k, v in out[0].items()}, dict(hp["weights"]),
                       {k: float(v) for k, v in out[2].items() if k.startswith("loss_")})
        return out

    monkeypatch.setattr(step_module.TrainStep, "__call__", spy)
    result = train(problem, steps=steps, optimizer=Adam(1e-2), seed=3, eval_every=steps, test_points=20,
                   progress="off", weighting=weighting, dtype=F64, hyperparams={"weights": weights})
    return problem, after, result


def test_lra_weights_follow_the_reference_formula_from_the_configured_weights(monkeypatch):
    """REFERENCE §7, computed independently at the parameters after each update step:
    λ̂_i = max|∇(λ_r L_r)| / mean|∇(λ_i L_i)| over all parameters, λ_i ← (1−α)λ_i + αλ̂_i,
    starting from the configured weights; λ_r keeps its value. Fails if max and mean are
    swapped, if the weights start at 1 (they did: loss.weights was dropped), or if λ_i
    or λ_r leaves the ratio."""
    alpha, every, start = 0.3, 3, {"residual": 2.0, "boundary": 1e-3}
    problem, after, result = _trajectory(LRA(alpha=alpha, every=every), start, 10, monkeypatch)
    lam = dict(start)
    for step in range(10):
        params, used, _ = after[step]
        assert used == pytest.approx(lam, rel=1e-12), step
        if step % every == 0:
            stats = {}
            for name in lam:
                one_hot = {"weights": {n: float(n == name) for n in lam}}
                grad = torch.func.grad(lambda p: problem.objective(p, one_hot, step, 3)[0])(params)  # noqa: B023
                flat = torch.cat([g.abs().flatten() for g in grad.values()])
                stats[name] = (float(flat.max()), float(flat.mean()))
            target = start["residual"] * stats["residual"][0] / (lam["boundary"] * stats["boundary"][1])
            lam["boundary"] = (1 - alpha) * lam["boundary"] + alpha * target
    assert result.state.weighting["weights"] == pytest.approx(lam, rel=1e-12)
    assert lam["residual"] == 2.0 and lam["boundary"] > 1.0  # it moved far from its start


def test_relobralo_starts_from_the_configured_weights(monkeypatch):
    """λ(0) is the configured weights (they were dropped for 1), and the next weights mix
    it by the formula of REFERENCE §7 (ρ from its stream)."""
    weighting = ReLoBRaLo(alpha=0.6, lookback=0.5, temperature=0.7)
    start = {"residual": 1.0, "boundary": 1e-3}
    _, after, _ = _trajectory(weighting, start, 3, monkeypatch)
    assert after[0][1] == start and after[1][1] == start  # the first update records L(0) only
    losses = [{n: after[s][2][f"loss_{n}"] for n in start} for s in range(3)]

    def balance(now, then):
        e = {n: math.exp(now[n] / (0.7 * then[n])) for n in now}
        return {n: 2 * v / sum(e.values()) for n, v in e.items()}

    rho = float(torch.rand((), generator=make_generator(3, "relobralo", 1)) < 0.5)
    b0, b1 = balance(losses[1], losses[0]), balance(losses[1], losses[0])
    expected = {n: 0.6 * (rho * start[n] + (1 - rho) * b0[n]) + 0.4 * b1[n] for n in start}
    assert after[2][1] == pytest.approx(expected, rel=1e-12)


def test_adaptive_weights_refuse_a_zero_or_negative_start():
    with pytest.raises(ValueError, match=r"boundary = 0"):
        LRA().init(["residual", "boundary"], {"boundary": 0.0})
    with pytest.raises(ValueError, match=r"residual = -1"):
        ReLoBRaLo().init(["residual", "boundary"], {"residual": -1.0})


def test_steps_per_second_leaves_out_the_first_step_of_a_resumed_process(monkeypatch):
    """The first step of every ``train`` call pays its one-off costs (a resumed run's
    too: it was timed, so a resumed run reported a fraction of the rate): a 2 s stall
    on the first call after the resume must not enter train_seconds: the two timed steps
    after it fit in the call's wall-clock time less the stall (with the stall timed they
    would not, unless everything else in the call took longer than the stall)."""
    from pinnlab.solvers import step as step_module

    problem = _weighted_problem()
    saved = []
    kwargs = dict(steps=6, seed=0, eval_every=10, test_points=10, progress="off")
    train(problem, checkpoint_every=3, on_checkpoint=lambda s: saved.append(copy.deepcopy(s)), **kwargs)
    before = saved[0].train_seconds
    real, calls = step_module.TrainStep.__call__, []

    def stall_first(self, *args):
        calls.append(args[-1])
        if len(calls) == 1:
            time.sleep(2.0)
        return real(self, *args)

    monkeypatch.setattr(step_module.TrainStep, "__call__", stall_first)
    started = time.perf_counter()
    resumed = train(problem, state=saved[0], **kwargs)
    elapsed = time.perf_counter() - started
    assert calls == [3, 4, 5]
    assert resumed.state.timed_steps == 2 + 2  # steps 1, 2 before; 4, 5 after the resume
    # (a bound that holds on any machine: the timed steps fit in the call's time less the stall)
    assert resumed.state.train_seconds - before <= elapsed - 2.0


def test_a_one_step_run_reports_the_rate_of_its_only_step(monkeypatch):
    """A run of one step times nothing after its first, untimed step: it reported
    steps_per_second = 0 (read as "not measured" by the training study). It now reports
    that step's rate (the DeepXDE adapter its whole run's): with a 0.3 s stall in the step the rate
    is at most 1 / 0.3 and at least 1 / the run's wall time."""
    from pinnlab.solvers import step as step_module

    real = step_module.TrainStep.__call__

    def stall(self, *args):
        time.sleep(0.3)
        return real(self, *args)

    monkeypatch.setattr(step_module.TrainStep, "__call__", stall)
    result = train(_weighted_problem(), steps=1, seed=0, eval_every=10, test_points=10, progress="off")
    assert result.state.timed_steps == 0
    assert 1.0 / result.stats["wall_s"] <= result.stats["steps_per_second"] <= 1.0 / 0.3


def test_relobralo_balance_survives_a_logit_spread_beyond_exp_overflow():
    """ReLoBRaLo's softmax is shifted by the largest logit, so a term whose loss grew by far
    more than e^709 relative to its reference still gives finite weights (the closed form:
    weight m on that term's balance, 0 on the others)."""
    w = ReLoBRaLo(alpha=0.0, lookback=0.0, temperature=1.0)  # λ = λ_bal(t, t − 1)
    state = w.init(["residual", "boundary", "data"])
    state = w.update(state, 0, {"residual": 1.0, "boundary": 1.0, "data": 1.0}, lambda: {}, seed=0)
    state = w.update(state, 1, {"residual": 1.0, "boundary": 2000.0, "data": 1.0}, lambda: {}, seed=0)
    weights = state["weights"]
    assert all(math.isfinite(v) for v in weights.values())
    assert abs(weights["boundary"] - 3.0) < 1e-12 and weights["residual"] < 1e-300
