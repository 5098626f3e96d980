"""Exact checks of the outer driver's loop and of the problem adapters (float64).

Each test pins one behaviour against a hand computation or an independent run, tightly
enough that a plausible slip in the loop fails it: resuming a TwoPhase schedule inside its
outer-algorithm phase; the outer_step and start an outer algorithm is given; one NaN entry
(or a NaN value) stopping the loop; a meta optimizer's own error propagating; Phase II's
meta-optimizer state cleared once; a missing value recorded as NaN; a checkpoint with a
NaN φ or θ refused; the losses from_inner_loss / from_train_step split off; tree_norm64
in float64.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pinnlab.bilevel import Penalty, ReverseUnroll, TwoPhase, from_inner_loss, from_train_step, optimize
from pinnlab.bilevel._trees import tree_norm64
from pinnlab.io import CheckpointError
from pinnlab.io.checkpoint import load_checkpoint_file, write_checkpoint_file
from pinnlab.solvers import SGD, Adam, make_train_step
from tests.bilevel.test_validation import PHI, PROBLEM
from tests.solvers import small_problems

F64 = torch.float64


def _sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr)


def test_a_two_phase_run_resumes_inside_its_outer_algorithm_phase(tmp_path):
    """TwoPhase(rgu, penalty) checkpointed after 2 outer steps (penalty's iterates in the
    second phase's slot) resumes to the uninterrupted run's φ, θ and values exactly."""
    method = TwoPhase(ReverseUnroll(), Penalty(inner_iters=2), switch_after=1)
    kwargs = dict(meta_optimizer=_sgd(0.1))
    full = optimize(PROBLEM, PHI, method, steps=4, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, method, steps=2, checkpoint=ckpt, checkpoint_every=2, **kwargs)
    resumed = optimize(PROBLEM, PHI, method, steps=4, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.history["method"] == ["rgu", "penalty", "penalty", "penalty"]
    assert resumed.history["value"] == full.history["value"]
    for k in PHI:
        assert torch.equal(resumed.phi[k], full.phi[k])
    assert torch.equal(resumed.theta["w"], full.theta["w"])


CALLS: list = []


class _Recording(Penalty):
    """Penalty that records the ``outer_step`` and ``start`` the driver passes to each step."""

    def step(self, problem, phi, state, *, outer_step, start):
        CALLS.append((outer_step, start))
        return super().step(problem, phi, state, outer_step=outer_step, start=start)


def test_an_outer_algorithm_gets_the_outer_step_index_and_its_stride():
    """Outer step k of an outer algorithm is called with outer_step = k and start = k·S,
    S = max(T, inner_iters) = 5 here (T = 3), also after an estimator phase."""
    CALLS.clear()
    method = TwoPhase(ReverseUnroll(), _Recording(inner_iters=5), switch_after=1)
    optimize(PROBLEM, PHI, method, steps=4, meta_optimizer=_sgd(0.1))
    assert CALLS == [(1, 5), (2, 10), (3, 15)]


@dataclasses.dataclass(frozen=True)
class _OneNaN(ReverseUnroll):
    """ReverseUnroll whose estimate of outer step 1 has one NaN entry in ``part`` (the
    hypergradient or θ_T, every other entry finite) or a NaN value h(φ)."""

    part: str = "grad"

    def estimate(self, problem, phi, *, outer_step=0, **kwargs):
        result = super().estimate(problem, phi, outer_step=outer_step, **kwargs)
        if outer_step == 1 and self.part == "value":
            result.value = math.nan
        elif outer_step == 1:
            tree = result.grad if self.part == "grad" else result.theta
            tree["a" if self.part == "grad" else "w"][1] = math.nan
        return result


@pytest.mark.parametrize("part", ["grad", "theta", "value"])
def test_one_non_finite_entry_stops_the_loop(part):
    """A hypergradient (or θ_T) with a single NaN entry among finite ones, or a NaN value
    with a finite hypergradient and θ_T, stops the loop at that outer step: status
    "nonfinite", one step recorded, φ and θ those of outer step 0."""
    kwargs = dict(meta_optimizer=_sgd(0.1))
    one = optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, **kwargs)
    result = optimize(PROBLEM, PHI, _OneNaN(part=part), steps=3, **kwargs)
    assert result.status == "nonfinite" and result.message.startswith("outer step 1: non-finite")
    assert result.history["outer_step"] == [0]
    for k in PHI:
        assert torch.equal(result.phi[k], one.phi[k])
    assert torch.equal(result.theta["w"], one.theta["w"])


class _Failing(torch.optim.SGD):
    """SGD whose step raises a RuntimeError that is not about an overflow."""

    def step(self, closure=None):
        raise RuntimeError("a broken meta optimizer")


def test_a_meta_optimizer_error_other_than_an_overflow_is_raised():
    """Only torch's overflow error in the meta step counts as a step that made φ
    non-finite; any other RuntimeError of the optimizer propagates unchanged, not
    reported as status "nonfinite"."""
    with pytest.raises(RuntimeError, match="^a broken meta optimizer$"):
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, meta_optimizer=lambda p: _Failing(p, lr=0.1))


def test_phase_two_clears_the_meta_optimizers_state_once_at_the_switch():
    """TwoPhase(switch_after=2), 5 outer steps under Adam: the moments are cleared at the
    switch only, so Adam's step count at the end is that of Phase II's 3 steps (not 5: no
    clear; not 1: a clear at every Phase II step)."""
    made = []

    def adam(params):
        made.append(torch.optim.Adam(params, lr=0.05))
        return made[-1]

    optimize(PROBLEM, PHI, TwoPhase(ReverseUnroll(), ReverseUnroll(), switch_after=2), steps=5, meta_optimizer=adam)
    (opt,) = made
    assert [float(opt.state[p]["step"]) for p in opt.param_groups[0]["params"]] == [3.0] * len(PHI)


@dataclasses.dataclass(frozen=True)
class _NoValue(ReverseUnroll):
    """ReverseUnroll that reports no value h(φ) (``value=None``, allowed by HypergradientResult)."""

    def estimate(self, problem, phi, **kwargs):
        return dataclasses.replace(super().estimate(problem, phi, **kwargs), value=None)


def test_an_estimate_without_a_value_is_recorded_as_nan():
    """An estimator that reports no value still steps φ; its outer steps' values are
    recorded (and passed to the callback) as NaN, not as a number."""
    seen = []
    result = optimize(PROBLEM, PHI, _NoValue(), steps=2, meta_optimizer=_sgd(0.1),
                      callback=lambda k, phi, d: seen.append(d["value"]))
    assert result.status == "ok" and result.history["outer_step"] == [0, 1]
    assert all(math.isnan(v) for v in result.history["value"] + seen) and len(seen) == 2


def test_from_inner_loss_splits_the_loss_of_the_steps_own_index():
    """from_inner_loss's gradient_step (the split step tangents='hvp' uses) evaluates g at
    the index t of the step: its one loss is g(θ, φ, t), a t-dependent g included."""

    def g(theta, phi, t):
        return 0.5 * (t + 1.0) * ((theta["w"] - phi["a"]) ** 2).sum()

    bilevel = from_inner_loss(g, lambda theta, phi: (theta["w"] ** 2).sum(), SGD(lr=0.1),
                              {"w": torch.zeros(2, dtype=F64)}, horizon=2)
    theta, phi = {"w": torch.tensor([1.0, 0.0], dtype=F64)}, {"a": torch.tensor([0.0, 2.0], dtype=F64)}
    for t in (0, 4):
        (loss,) = bilevel.gradient_step.losses(theta, phi, t)
        assert float(loss) == 2.5 * (t + 1)


def test_a_train_steps_own_losses_are_g_even_when_an_objective_is_given():
    """from_train_step with a TrainStep (which has losses and learning_rate) and an
    ``objective``: g is the sum of the step's chunk losses, the loss the step itself
    differentiates; the objective is only for step callables without them."""
    pinn = small_problems.problem(estimator=small_problems.stein(), batch=8, chunks=2)
    opt = Adam(1e-2)
    params = pinn.init_params(dtype=F64)
    step = make_train_step(pinn, opt, seed=2)

    def to_hp(phi):
        return {"sigma": torch.exp(phi["log_sigma"])}

    def other(theta, hp, t, seed):
        return torch.zeros((), dtype=F64), {}

    bilevel = from_train_step(step, to_hp, lambda theta, phi: torch.zeros((), dtype=F64), (params, opt.init(params)),
                              horizon=2, objective=other)
    phi = {"log_sigma": torch.tensor(-3.0, dtype=F64)}
    expected = sum(loss for loss, _ in step.losses(params, to_hp(phi), 3))
    assert float(expected) != 0.0
    assert torch.equal(bilevel.inner_loss(params, phi, 3), expected)


def test_tree_norm64_does_not_overflow_a_float32_tree():
    """tree_norm64 sums the squares in float64: a float32 tree of entries 1e20 (squares
    beyond float32's range) has the norm 2e20, not inf."""
    tree = {"a": torch.full((3,), 1e20), "b": torch.full((1,), -1e20)}
    assert tree_norm64(tree) == pytest.approx(2e20, rel=1e-7)


@pytest.mark.parametrize("part", ["u", "theta"])
def test_a_checkpoint_with_a_non_finite_phi_or_theta_is_refused(tmp_path, part):
    """A checkpoint whose φ (or warm-start θ) holds a NaN, with a fitting digest (a
    hand-edited file, or one a bug wrote), is refused on resume as a CheckpointError before
    any outer step, not resumed into a run of NaN values."""
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, checkpoint=ckpt, checkpoint_every=1, meta_optimizer=_sgd(0.1))
    payload = load_checkpoint_file(ckpt)
    payload.pop("content_sha256")
    (payload["u"]["a"] if part == "u" else payload["theta_state"][0]["w"])[0] = math.nan
    write_checkpoint_file(ckpt, payload)
    with pytest.raises(CheckpointError, match="its tuned values or network are not finite"):
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, checkpoint=ckpt, resume=True, meta_optimizer=_sgd(0.1))
