"""Exact checks of the outer driver and its neighbours that the other tests left open (float64).

Each test pins one behaviour against an independent computation, tightly enough that a
plausible slip fails it: a cold start after an outer-algorithm phase without
``warm_start``; each phase of a TwoPhase schedule of two outer algorithms keeping its own
iterates; the default meta optimizer; resuming a finished run; refusing 0 steps or
estimates; the φ at which an outer algorithm's value is recorded; a non-finite θ stopping
the loop; refusing a checkpoint's type outside pinnlab; ``distributed=False`` under a
process group (one process with a stand-in for the group); PeerLost for gloo's "by peer"
messages; the learning rate and step size that from_inner_loss / from_train_step pass on.
"""

from __future__ import annotations

import re

import pytest
import torch

from pinnlab.bilevel import Penalty, ReverseUnroll, TwoPhase, optimize
from tests.bilevel.test_validation import PHI, PROBLEM

T = PROBLEM.horizon


def _phi_after(result):
    return {k: v.clone() for k, v in result.phi.items()}


def test_without_warm_start_an_estimator_after_an_outer_algorithm_starts_from_problem_init():
    """TwoPhase(penalty, rgu), warm_start=False: the rgu step unrolls from problem.init
    (θ_0 = 0), not from penalty's θ, so its recorded h(φ) is cold rgu's at φ after the
    penalty step, inner indices T, …, 2T − 1, to 1e-12; penalty's θ gives another value."""
    first = optimize(PROBLEM, PHI, Penalty(inner_iters=2), steps=1)
    two = optimize(PROBLEM, PHI, TwoPhase(Penalty(inner_iters=2), ReverseUnroll(), switch_after=1), steps=2,
                   warm_start=False)
    cold = ReverseUnroll()(PROBLEM, _phi_after(first), start=T, outer_step=1)
    warm = ReverseUnroll()(PROBLEM, _phi_after(first), start=T, init=(first.theta, first.state), outer_step=1)
    assert two.history["method"] == ["penalty", "rgu"]
    assert two.history["value"][1] == pytest.approx(cold.value, rel=1e-12, abs=0)
    assert abs(warm.value - cold.value) > 1e-3 * abs(cold.value)


def _still(params):
    return torch.optim.SGD(params, lr=0.0)


def test_each_phase_of_two_outer_algorithms_keeps_its_own_iterates():
    """TwoPhase(penalty, penalty): the second phase starts its own iterates at the switch
    (its γ₀ = 5, θ the first phase's), not the first phase's (γ grown 1 → 2 → 4): γ per
    outer step is [1, 2, 5, 5] and θ is the hand-run sequence's (φ held by SGD(lr = 0))."""
    first = Penalty(gamma=1.0, growth=2.0, inner_iters=2)
    then = Penalty(gamma=5.0, growth=1.0, gamma_max=5.0, inner_iters=2)
    gammas = []
    result = optimize(PROBLEM, PHI, TwoPhase(first, then, switch_after=2), steps=4, meta_optimizer=_still,
                      callback=lambda k, phi, d: gammas.append(d["gamma"]))
    assert gammas == [1.0, 2.0, 5.0, 5.0]
    stride = max(T, 2)
    state = first.init(PROBLEM, PHI)
    for k in range(2):
        _, state, _ = first.step(PROBLEM, PHI, state, outer_step=k, start=k * stride)
    state = then.init(PROBLEM, PHI, first.iterate(state))
    for k in range(2, 4):
        _, state, _ = then.step(PROBLEM, PHI, state, outer_step=k, start=k * stride)
    assert torch.equal(result.theta["w"], then.iterate(state)["w"])


def test_the_default_meta_optimizer_is_adam_with_rate_1e_2():
    """Without ``meta_optimizer`` the outer step is Adam(lr = 1e-2): its first step moves
    every coordinate of φ by 1e-2·g/(|g| + 1e-8) against the sign of the hypergradient g."""
    g = ReverseUnroll()(PROBLEM, PHI, start=0, outer_step=0).grad
    result = optimize(PROBLEM, PHI, ReverseUnroll(), steps=1)
    for k in PHI:
        assert bool((g[k].abs() > 1e-3).all())
        expected = PHI[k] - 1e-2 * g[k] / (g[k].abs() + 1e-8)
        torch.testing.assert_close(result.phi[k], expected, rtol=1e-9, atol=1e-12)


def _no_collectives(monkeypatch, rank, world):
    """Make this process look like ``rank`` of ``world`` to the estimators, with every
    collective call refused (an estimator that must not split makes none)."""
    import pinnlab.bilevel.distributed as dist

    def refuse(*args, **kwargs):
        raise AssertionError("a collective call")

    monkeypatch.setattr(dist, "rank_and_world", lambda: (rank, world))
    monkeypatch.setattr(dist, "all_reduce_sum", refuse)
    monkeypatch.setattr(dist, "broadcast_value", refuse)


@pytest.mark.parametrize("name", ["fg2u", "zo_fg2u"])
def test_distributed_false_keeps_every_direction_in_this_process(monkeypatch, name):
    """``distributed=False`` under a process group (here rank 1 of 2): the estimate uses
    all b directions, makes no collective call and equals the single-process estimate."""
    from pinnlab.bilevel import ForwardGradientUnroll, ZeroOrderForwardGradient

    make = {"fg2u": lambda d: ForwardGradientUnroll(num_directions=4, distributed=d),
            "zo_fg2u": lambda d: ZeroOrderForwardGradient(num_directions=4, mu=1e-4, scheme="central", distributed=d)}
    single = make[name](True)(PROBLEM, PHI, seed=3, outer_step=1)
    _no_collectives(monkeypatch, 1, 2)
    local = make[name](False)(PROBLEM, PHI, seed=3, outer_step=1)
    assert torch.equal(local.diagnostics["directions"], single.diagnostics["directions"])
    for k in PHI:
        torch.testing.assert_close(local.grad[k], single.grad[k], rtol=0, atol=0)


def test_resuming_a_finished_run_returns_it_unchanged(tmp_path):
    """A checkpoint at outer step = steps (the run finished) resumes to the same result
    with no further step: outer step `steps` is within the run's 0..steps."""
    kwargs = dict(steps=2, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    ckpt = tmp_path / "outer.ckpt"
    full = optimize(PROBLEM, PHI, ReverseUnroll(), checkpoint=ckpt, checkpoint_every=2, **kwargs)
    again = optimize(PROBLEM, PHI, ReverseUnroll(), checkpoint=ckpt, resume=True, **kwargs)
    assert again.status == "ok" and again.history["outer_step"] == [0, 1]
    assert again.history["value"] == full.history["value"]
    for k in PHI:
        assert torch.equal(again.phi[k], full.phi[k])


@pytest.mark.parametrize("name", ["steps", "accumulate"])
def test_zero_steps_or_estimates_are_refused(name):
    """steps = 0 (a run that does nothing) and accumulate = 0 (a mean of no estimates)
    are refused by name before any work."""
    with pytest.raises(ValueError, match=f"^{name} must be an integer >= 1, got 0"):
        optimize(PROBLEM, PHI, ReverseUnroll(), **{"steps": 1, name: 0})


def test_an_outer_algorithm_records_f_at_the_constrained_phi():
    """Penalty under a Log parameterisation records f(θ, φ) at its iterate θ and the
    constrained φ of the step (λ, not e^λ): Ridge's f has the term c‖φ‖², which tells them
    apart (φ held by SGD(lr = 0)), to 1e-12."""
    from pinnlab.bilevel import Log

    from .problems import Ridge

    ridge = Ridge()
    problem = ridge.problem(horizon=3)
    start = {"log_reg": torch.exp(ridge.phi["log_reg"])}
    result = optimize(problem, start, Penalty(inner_iters=2), steps=1, meta_optimizer=_still,
                      parameterization={"log_reg": Log()})
    expected = float(ridge.outer_loss(result.theta, start))
    assert result.history["value"][0] == pytest.approx(expected, rel=1e-12, abs=0)
    twice = float(ridge.outer_loss(result.theta, {"log_reg": torch.exp(start["log_reg"])}))
    assert abs(twice - expected) > 1e-6


def test_a_non_finite_theta_stops_the_loop_even_with_a_finite_value_and_hypergradient():
    """θ has a leaf the outer loss does not read; it overflows to inf in the first outer
    step while h and ∇h stay finite: the loop stops there (status "nonfinite"), φ and the
    history as before the step, as for a non-finite hypergradient."""
    from pinnlab.bilevel import from_inner_loss
    from pinnlab.solvers import SGD

    def g(theta, phi, t):  # the gradient step doubles `junk` (lr 1, gradient −junk): 1e308 → inf
        return ((theta["w"] - phi["a"]) ** 2).sum() - 0.5 * (theta["junk"] ** 2).sum()

    def f(theta, phi):
        return ((theta["w"] - 1.0) ** 2).sum()

    problem = from_inner_loss(g, f, SGD(lr=1.0), {"w": torch.zeros(2, dtype=torch.float64),
                                                   "junk": torch.tensor([1e308], dtype=torch.float64)}, horizon=2)
    phi = {"a": torch.tensor([0.5, 2.0], dtype=torch.float64)}
    step = ReverseUnroll()(problem, phi)
    assert torch.isfinite(step.grad["a"]).all() and step.value == step.value and abs(step.value) < 1e300
    assert not torch.isfinite(step.theta["junk"]).all()
    result = optimize(problem, phi, ReverseUnroll(), steps=2)
    assert result.status == "nonfinite" and result.message.startswith("outer step 0:")
    assert result.history["outer_step"] == [] and result.theta is None
    assert torch.equal(result.phi["a"], phi["a"])


TRAPPED: list = []


class _Trap:
    """A type outside pinnlab that records being built (as a checkpoint's saved type)."""

    def __init__(self, **fields):
        TRAPPED.append(fields)


def test_a_checkpoint_naming_a_type_outside_pinnlab_is_refused_without_building_it(tmp_path):
    """resume=True reads saved NamedTuples back by their "module:name"; one outside
    pinnlab (a hand-edited or foreign file, with a fitting digest) is refused as a
    CheckpointError naming it, and the type is never imported or called."""
    from pinnlab.io import CheckpointError
    from pinnlab.io.checkpoint import load_checkpoint_file, write_checkpoint_file

    kwargs = dict(steps=2, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, ReverseUnroll(), checkpoint=ckpt, checkpoint_every=1, **{**kwargs, "steps": 1})
    payload = load_checkpoint_file(ckpt)
    name = f"{__name__}:_Trap"
    payload["theta_state"] = [payload["theta_state"][0], {"__namedtuple__": name, "x": 1}]
    payload.pop("content_sha256", None)
    write_checkpoint_file(ckpt, payload)
    TRAPPED.clear()
    with pytest.raises(CheckpointError, match=f"refusing to restore type '{name}'"):
        optimize(PROBLEM, PHI, ReverseUnroll(), checkpoint=ckpt, resume=True, **kwargs)
    assert TRAPPED == []


@pytest.mark.parametrize("text", ["Connection closed by peer [10.0.0.2]:29500", "Connection reset by peer"])
def test_a_peer_closing_the_connection_is_peer_lost_whatever_the_path_of_the_message(text):
    """gloo's "closed by peer"/"reset by peer" raises PeerLost with the message's first line
    also when it names no gloo/transport source file; any other RuntimeError goes on as it is."""
    from pinnlab.bilevel.distributed import PeerLost, _collective

    def lost():
        raise RuntimeError(text + "\nsecond line")

    with pytest.raises(PeerLost, match=rf"^another process of the run ended during a collective call \({re.escape(text)}\)$"):
        _collective(lost)

    def other():
        raise RuntimeError("a peer-less failure")

    with pytest.raises(RuntimeError, match="^a peer-less failure$"):
        _collective(other)


def test_from_inner_loss_takes_a_given_float_learning_rate_over_the_optimizers():
    """``lr=0.5`` with SGD(lr = 0.1): each inner step is θ ← θ − 0.5·∇g, and 0.5 is the
    problem's step size (Hessian-free's default α), in the step and its gradient_step alike."""
    from pinnlab.bilevel import from_inner_loss
    from pinnlab.bilevel.base import unroll
    from pinnlab.solvers import SGD

    def g(theta, phi, t):  # ∇g = θ − a
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    def f(theta, phi):
        return (theta["w"] ** 2).sum()

    phi = {"a": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    problem = from_inner_loss(g, f, SGD(lr=0.1), {"w": torch.zeros(2, dtype=torch.float64)}, horizon=2, lr=0.5)
    theta, _ = unroll(problem, phi)
    torch.testing.assert_close(theta["w"], 0.75 * phi["a"], rtol=0, atol=1e-15)  # 1 − (1 − 0.5)²
    assert problem.step_size(phi, 0) == 0.5


def test_from_train_step_splits_only_a_step_with_both_halves():
    """A step callable with ``losses`` but no ``learning_rate`` (not a TrainStep) is kept
    whole: no gradient_step (which would fail reading its rate), and g comes from
    ``objective`` with the step's seed."""
    from pinnlab.bilevel import from_train_step

    def step(theta, state, hyper, t):
        return {"w": theta["w"] - 0.1 * (theta["w"] - hyper["a"])}, state, {}

    step.losses = lambda theta, hyper, t: iter(())
    seen = []

    def objective(theta, hyper, t, seed):
        seen.append((t, seed))
        return 0.5 * ((theta["w"] - hyper["a"]) ** 2).sum(), {}

    theta0 = {"w": torch.zeros(2, dtype=torch.float64)}
    problem = from_train_step(step, lambda phi: phi, lambda theta, phi: (theta["w"] ** 2).sum(), (theta0, None),
                              horizon=2, objective=objective, seed=7)
    assert problem.gradient_step is None
    phi = {"a": torch.tensor([1.0, 3.0], dtype=torch.float64)}
    assert float(problem.inner_loss(theta0, phi, 4)) == 5.0 and seen == [(4, 7)]


def test_from_train_step_passes_inner_lr_on_as_the_default_step_size():
    """A plain step callable with ``inner_lr=0.3``: the problem's step size is 0.3, so
    Hessian-free without ``alpha`` equals Hessian-free with alpha = 0.3."""
    from pinnlab.bilevel import HessianFree, from_train_step

    def step(theta, state, hyper, t):
        return {"w": theta["w"] - 0.3 * (theta["w"] - hyper["a"])}, state, {}

    def objective(theta, hyper, t, seed):
        return 0.5 * ((theta["w"] - hyper["a"]) ** 2).sum(), {}

    theta0 = {"w": torch.zeros(2, dtype=torch.float64)}
    problem = from_train_step(step, lambda phi: phi, lambda theta, phi: ((theta["w"] - 1.0) ** 2).sum(),
                              (theta0, None), horizon=3, objective=objective, inner_lr=0.3)
    phi = {"a": torch.tensor([1.0, 3.0], dtype=torch.float64)}
    assert problem.step_size(phi, 2) == 0.3
    default = HessianFree()(problem, phi).grad["a"]
    torch.testing.assert_close(default, HessianFree(alpha=0.3)(problem, phi).grad["a"], rtol=0, atol=0)
    assert not torch.equal(default, HessianFree(alpha=0.1)(problem, phi).grad["a"])
