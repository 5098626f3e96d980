"""The PINN training step as the inner step; the outer driver; distributed directions."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import pytest
import torch

from pinnlab.bilevel import (
    ForwardGradientUnroll,
    HessianFree,
    Identity,
    Log,
    Penalty,
    ReverseUnroll,
    TwoPhase,
    ZeroOrderForwardGradient,
    from_train_step,
    hypergradient,
    optimize,
)
from pinnlab.bilevel.base import flatten
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.io.checkpoint import load_checkpoint_file
from pinnlab.losses import Biased
from pinnlab.nets import MLP
from pinnlab.solvers import Adam, PINNProblem, make_train_step

from .problems import F64, Ridge
from .ranks import end_rank


def _pinn_bilevel(horizon=4, chunks=1, tune_lr=False):
    eq = PoissonTwoBody(3, seed=1)
    net = MLP(3, width=8, depth=3, dtype=F64, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(eq, net, SteinAntithetic(num_samples=8, noise="shared"), Biased(), batch_size=8,
                          batch_chunks=chunks)
    opt = Adam(1e-2)
    step = make_train_step(problem, opt, seed=0)
    params = problem.init_params(dtype=F64)
    x_obs = eq.test_set(16, dtype=F64)
    u_obs = eq.exact(x_obs)

    def to_hyper(phi):
        hp = {"sigma": torch.exp(phi["log_sigma"]), "weights": {"residual": torch.exp(phi["log_weight"])}}
        if tune_lr:
            hp["lr"] = 1e-2 * torch.exp(phi["log_weight"])
        return hp

    def outer(theta, phi):
        u = eq.solution(x_obs, problem.model(theta)(x_obs))
        return ((u - u_obs) ** 2).mean()

    bilevel = from_train_step(step, to_hyper, outer, (params, opt.init(params)), horizon=horizon)
    phi = {"log_sigma": torch.tensor(-3.0, dtype=F64), "log_weight": torch.tensor(0.0, dtype=F64)}
    return bilevel, phi, step, to_hyper


@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
@pytest.mark.parametrize("chunks, tune_lr", [(1, False), (3, True)])
def test_pinn_training_step_is_the_inner_step_and_fg2u_is_exact(tangents, chunks, tune_lr):
    """fg2u's directional derivatives through the unchanged PINN step equal reverse mode,
    with chunked gradients and a tuned learning rate, in both tangent modes."""
    bilevel, phi, train_step, to_hyper = _pinn_bilevel(chunks=chunks, tune_lr=tune_lr)
    reference = flatten(hypergradient(bilevel, phi, ReverseUnroll()).grad)
    result = hypergradient(bilevel, phi, ForwardGradientUnroll(num_directions=4, tangents=tangents))
    w, v = result.diagnostics["directional"], result.diagnostics["directions"]
    assert float((w - v @ reference).abs().max() / (v @ reference).abs().max()) < 1e-10
    # the estimate returns θ_T of the same trajectory (no second primal pass in hvp mode)
    theta = hypergradient(bilevel, phi, ReverseUnroll()).theta
    for k in theta:
        torch.testing.assert_close(result.theta[k], theta[k], rtol=1e-12, atol=1e-14)
    # implicit-style methods get g = the loss the step itself differentiates (every chunk,
    # the step's noise and seed), so ∇_θ g is the step's gradient
    theta0, _ = bilevel.init
    for t in (0, 5):
        grad_g = torch.func.grad(bilevel.inner_loss)(theta0, phi, t)
        grad_step, _ = train_step.gradient(theta0, to_hyper(phi), t)
        for k in grad_g:
            torch.testing.assert_close(grad_g[k], grad_step[k], rtol=1e-12, atol=0)
    hf = hypergradient(bilevel, phi, HessianFree(alpha=1e-2))
    assert torch.isfinite(flatten(hf.grad)).all()


def test_optimize_lowers_outer_loss_with_log_parameterisation():
    ridge = Ridge()
    problem = ridge.problem(horizon=30)
    start = {"log_reg": torch.exp(ridge.phi["log_reg"])}  # constrained values: λ = e^φ
    result = optimize(problem, start, ForwardGradientUnroll(num_directions=6), steps=40,
                      parameterization={"log_reg": Log()},
                      meta_optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    values = result.history["value"]
    assert values[-1] < 0.95 * values[0]
    assert bool((result.phi["log_reg"] > 0).all())
    assert len(result.history["phi/log_reg"]) == 40


def test_two_phase_and_resume_are_exact(tmp_path):
    ridge = Ridge()
    problem = ridge.problem(horizon=10)
    method = TwoPhase(HessianFree(alpha=0.3), ForwardGradientUnroll(num_directions=3), switch_after=3)
    kwargs = dict(steps=8, meta_optimizer=lambda p: torch.optim.Adam(p, lr=0.05), seed=4)
    full = optimize(problem, ridge.phi, method, **kwargs)
    assert full.history["method"][:3] == ["hessian_free"] * 3 and full.history["method"][3:] == ["fg2u"] * 5
    ckpt = tmp_path / "outer.ckpt"
    optimize(problem, ridge.phi, method, checkpoint=ckpt, checkpoint_every=5, **{**kwargs, "steps": 5})
    resumed = optimize(problem, ridge.phi, method, checkpoint=ckpt, resume=True, **kwargs)
    assert torch.equal(resumed.phi["log_reg"], full.phi["log_reg"])
    assert resumed.history["value"] == full.history["value"]


def test_two_phase_then_lr_sets_the_second_phase_rate():
    """With SGD every outer step moves φ by lr·g: the first phase's lr until the switch,
    then_lr after it (also after a resume inside Phase II)."""
    ridge = Ridge()
    problem = ridge.problem(horizon=5)
    method = TwoPhase(ReverseUnroll(), ReverseUnroll(), switch_after=2, then_lr=0.01)
    steps: list = []

    def callback(k, phi, diagnostics):
        steps.append(phi["log_reg"].clone())

    result = optimize(problem, ridge.phi, method, steps=5, seed=1, callback=callback,
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.3))
    moves = [float((b - a).norm()) for a, b in zip([ridge.phi["log_reg"], *steps[:-1]], steps)]
    rates = [m / g for m, g in zip(moves, result.history["grad_norm"])]
    assert rates == pytest.approx([0.3, 0.3, 0.01, 0.01, 0.01], rel=1e-6)


def test_the_second_phase_starts_with_fresh_adam_moments():
    """Adam's first step moves every coordinate by lr·g/(|g| + ε) ≈ lr: at the first outer
    step, and again at the switch, where Phase II starts as a new run from Phase I's φ
    (the moments of Phase I's estimates were carried over and mis-scaled its steps)."""
    ridge = Ridge()
    problem = ridge.problem(horizon=5)
    method = TwoPhase(ReverseUnroll(), ReverseUnroll(), switch_after=2)
    path: list = []
    optimize(problem, ridge.phi, method, steps=4, seed=1, callback=lambda k, phi, d: path.append(phi["log_reg"].clone()),
             meta_optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    moves = [(b - a).abs() for a, b in zip([ridge.phi["log_reg"], *path[:-1]], path)]
    assert moves[0].numel() > 1
    for k in (0, 2):
        torch.testing.assert_close(moves[k], torch.full_like(moves[k], 0.05), rtol=1e-3, atol=0)  # ε/|g| ≤ 2e-4
    assert not torch.allclose(moves[1], torch.full_like(moves[1], 0.05), rtol=1e-2, atol=0)


SPLIT_METHODS = {
    "fg2u": ForwardGradientUnroll(num_directions=7),
    # (the mean over all b directions, not over a rank's share: equal in one process)
    "zo_fg2u": ZeroOrderForwardGradient(num_directions=5, mu=1e-4, scheme="central"),
}


def _worker(rank, world, init_file, out_dir, name):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ridge = Ridge()
    grad = hypergradient(ridge.problem(horizon=10), ridge.phi, SPLIT_METHODS[name], seed=5, outer_step=2).grad
    torch.save(grad["log_reg"], os.path.join(out_dir, f"rank{rank}.pt"))
    end_rank()


@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(SPLIT_METHODS))
def test_two_processes_equal_one(tmp_path, name):
    """Directions split over 2 gloo ranks and all_reduced equal the single-process estimate."""
    import torch.multiprocessing as mp

    ridge = Ridge()
    single = hypergradient(ridge.problem(horizon=10), ridge.phi, SPLIT_METHODS[name], seed=5,
                           outer_step=2).grad["log_reg"]
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), name), nprocs=2, join=True)
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), single, rtol=1e-12, atol=1e-14)




def test_optimize_stops_at_a_non_finite_step_keeping_the_last_finite_phi():
    ridge = Ridge()
    problem = ridge.problem(horizon=5)
    start = {"log_reg": torch.exp(ridge.phi["log_reg"])}

    def run(lr, steps=20):
        return optimize(problem, start, ReverseUnroll(), steps=steps, parameterization={"log_reg": Log()},
                        meta_optimizer=lambda p: torch.optim.SGD(p, lr=lr))

    # lr 10: one step to λ ≈ 14, whose inner unroll then diverges
    result = run(10.0)
    assert result.status == "nonfinite" and "non-finite hypergradient" in result.message
    assert len(result.history["outer_step"]) == 1
    assert torch.isfinite(result.history["phi/log_reg"][0]).all()
    torch.testing.assert_close(result.phi["log_reg"], result.history["phi/log_reg"][-1])
    assert all(torch.isfinite(v).all() for v in result.theta.values())
    # lr 1e4: the very first step overflows λ = e^φ; φ is restored to where it was
    result = run(1e4)
    assert result.status == "nonfinite" and "made φ non-finite" in result.message
    assert result.history["outer_step"] == [] and result.theta is None
    torch.testing.assert_close(result.phi["log_reg"], start["log_reg"])
    # e^φ underflowing to 0 is finite but unusable (σ = 0 divides): refused like inf
    assert not Log().usable(torch.tensor([0.0, 1.0])) and not Log().usable(torch.tensor([float("inf")]))
    assert Log().usable(torch.tensor([1e-300], dtype=torch.float64))
    assert Identity().usable(torch.tensor([0.0, -3.0])) and not Identity().usable(torch.tensor([float("nan")]))
    # a step to φ = −10⁴: every λ = e^φ underflows to exactly 0 (finite, unusable), so the
    # loop stops there too, restoring φ (the path hessian_free under SGD took on tuning (c))
    class JumpTo(torch.optim.Optimizer):
        def __init__(self, params, value):
            super().__init__(params, {"value": value})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(group["value"])

    result = optimize(problem, start, ReverseUnroll(), steps=3, parameterization={"log_reg": Log()},
                      meta_optimizer=lambda p: JumpTo(p, -1e4))
    assert result.status == "nonfinite" and "log value 0" in result.message
    assert result.history["outer_step"] == []
    torch.testing.assert_close(result.phi["log_reg"], start["log_reg"])
    fine = run(1e-3, steps=3)
    assert fine.status == "ok" and fine.message == "" and len(fine.history["outer_step"]) == 3


@dataclass(frozen=True)
class _StopInEstimate(HessianFree):
    """HessianFree that is stopped (Ctrl-C) while it estimates outer step ``at``."""

    at: int = -1

    def estimate(self, problem, phi, *, outer_step=0, **kwargs):
        if outer_step == self.at:
            raise KeyboardInterrupt
        return super().estimate(problem, phi, outer_step=outer_step, **kwargs)


@dataclass(frozen=True)
class _StopInIterate(Penalty):
    """Penalty that is stopped when the driver reads the iterate of outer step ``at``,
    after its step returned the new iterates and before the outer step commits."""

    at: int = -1
    calls: list = field(default_factory=list)

    def iterate(self, state):
        self.calls.append(None)
        if len(self.calls) == self.at + 1:
            raise KeyboardInterrupt
        return super().iterate(state)


def _stop_in_callback(at):
    def callback(k, phi, diagnostics):
        if k == at:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("where, saved_at", [("estimate", 3), ("commit", 3), ("iterate", 3), ("switch", 3),
                                             ("switch-commit", 3)])
def test_a_stopped_outer_loop_checkpoints_its_last_completed_step(tmp_path, where, saved_at):
    """Ctrl-C in outer step 3 (checkpoints every 2): the checkpoint holds step 3's start,
    and resuming it ends where the uninterrupted run ends. A stop while the step commits
    (φ stepped, history appended) undoes that step's part and saves step 3's start too
    (it kept the periodic checkpoint of step 2), also in the commit of a second phase's
    first step, which cleared the meta optimizer's state and set its rate; one after an
    outer algorithm's step, before it commits, must not save its new iterates with the
    old φ; one in the first step of a second phase must not save the meta optimizer's
    state cleared for that phase (a checkpoint its resume refused)."""
    ridge = Ridge()
    problem = ridge.problem(horizon=5)
    plain = Penalty(inner_iters=5) if where == "iterate" else HessianFree(alpha=0.3)
    stopped = {"estimate": _StopInEstimate(alpha=0.3, at=3), "iterate": _StopInIterate(inner_iters=5, at=3),
               "commit": plain, "switch": TwoPhase(plain, _StopInEstimate(alpha=0.3, at=3), switch_after=3),
               "switch-commit": TwoPhase(plain, plain, switch_after=3)}[where]
    if where.startswith("switch"):
        plain = TwoPhase(plain, plain, switch_after=3, then_lr=0.02)
        stopped = dataclasses.replace(stopped, then_lr=0.02)
    kwargs = dict(steps=6, meta_optimizer=lambda p: torch.optim.Adam(p, lr=0.05), seed=2)
    full = optimize(problem, ridge.phi, plain, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    with pytest.raises(KeyboardInterrupt):
        optimize(problem, ridge.phi, stopped, checkpoint=ckpt, checkpoint_every=2,
                 callback=_stop_in_callback(3) if where.endswith("commit") else None, **kwargs)
    assert load_checkpoint_file(ckpt, mmap=True)["outer_step"] == saved_at
    resumed = optimize(problem, ridge.phi, plain, checkpoint=ckpt, resume=True, **kwargs)
    assert torch.equal(resumed.phi["log_reg"], full.phi["log_reg"])
    assert resumed.history["value"] == full.history["value"]
