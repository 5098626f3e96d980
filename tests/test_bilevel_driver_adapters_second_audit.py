"""Second audit of the outer driver and the tree helpers (float64, in-process).

Each test pins one behaviour against a hand computation or an independent run, tightly
enough that a plausible slip fails it: the seconds recorded per outer step and for the
loop (a controlled clock), carried over a resume, with the time budget; a Ctrl-C right
after a periodic checkpoint keeping it; the φ and value a callback sees; a warm start
carrying the inner optimizer's state with θ; tree_norm and detach.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from pinnlab.bilevel import Log, ReverseUnroll, hypergradient, optimize
from pinnlab.bilevel import driver as driver_module
from pinnlab.bilevel._trees import detach, tree_norm
from tests.bilevel.problems import Ridge
from tests.bilevel.test_validation import PHI, PROBLEM

F64 = torch.float64


def _sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr)


class _Clock:
    """A clock that moves only when told (dyadic amounts: sums are exact)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


CLOCK = _Clock()


@dataclasses.dataclass(frozen=True)
class _Slow(ReverseUnroll):
    """ReverseUnroll whose estimate of outer step k takes 0.5·(k + 1) seconds of CLOCK."""

    def estimate(self, problem, phi, *, outer_step=0, **kwargs):
        CLOCK.now += 0.5 * (outer_step + 1)
        return super().estimate(problem, phi, outer_step=outer_step, **kwargs)


@dataclasses.dataclass(frozen=True)
class _Stopped(_Slow):
    """_Slow whose estimate of outer step ``at`` is stopped by Ctrl-C after its time passed."""

    at: int = 2

    def estimate(self, problem, phi, *, outer_step=0, **kwargs):
        result = super().estimate(problem, phi, outer_step=outer_step, **kwargs)
        if outer_step == self.at:
            raise KeyboardInterrupt
        return result


@pytest.fixture
def clock(monkeypatch):
    """CLOCK as the driver's and the budget's time (the estimator's own timing untouched)."""
    CLOCK.now = 100.0
    monkeypatch.setattr(driver_module, "time", types.SimpleNamespace(perf_counter=CLOCK))
    monkeypatch.setattr("pinnlab._budget._now", CLOCK)
    return CLOCK


def test_the_seconds_of_each_outer_step_and_of_the_loop(clock):
    """history["seconds"][k] is the length of outer step k alone (0.5, 1.0, 1.5: not a
    clock reading), and the result's seconds the whole loop's (3.0)."""
    result = optimize(PROBLEM, PHI, _Slow(), steps=3, meta_optimizer=_sgd(0.1))
    assert result.history["seconds"] == [0.5, 1.0, 1.5]
    assert result.seconds == 3.0


def test_a_resumed_run_counts_the_seconds_before_the_resume(clock, tmp_path):
    """Checkpointed after 2 of 4 outer steps and resumed, the run reports the seconds of
    all 4 (0.5 + 1 + 1.5 + 2 = 5), as the uninterrupted run does, and the history keeps
    each step's own length."""
    kwargs = dict(meta_optimizer=_sgd(0.1))
    full = optimize(PROBLEM, PHI, _Slow(), steps=4, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, _Slow(), steps=2, checkpoint=ckpt, checkpoint_every=1, **kwargs)
    clock.now += 64.0  # time between the runs does not count
    resumed = optimize(PROBLEM, PHI, _Slow(), steps=4, checkpoint=ckpt, resume=True, **kwargs)
    assert full.seconds == resumed.seconds == 5.0
    assert resumed.history["seconds"] == full.history["seconds"] == [0.5, 1.0, 1.5, 2.0]


def test_a_resumed_run_keeps_its_time_budget(clock, tmp_path):
    """A time budget of 3 s with steps of 0.5, 1, 1.5, ... s: after 3 steps (3 s spent,
    3·4/3 = 4 s expected at the end of a fourth) the loop stops. Resumed after 2 steps,
    the run carries their 1.5 s and 2 steps over and stops at the same step (a fresh
    budget would run a fourth)."""
    kwargs = dict(meta_optimizer=_sgd(0.1), time_budget=3.0)
    full = optimize(PROBLEM, PHI, _Slow(), steps=6, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, _Slow(), steps=2, checkpoint=ckpt, checkpoint_every=1, **kwargs)
    resumed = optimize(PROBLEM, PHI, _Slow(), steps=6, checkpoint=ckpt, resume=True, **kwargs)
    assert full.history["outer_step"] == resumed.history["outer_step"] == [0, 1, 2]


def test_the_callback_sees_the_constrained_phi_that_is_recorded():
    """With a Log parameterisation, the φ passed to the callback after outer step k is
    the constrained value (one small step from a = (0.5, 1, 2), not its logarithm),
    equal to history["phi/a"][k], and the last one the result's φ."""
    seen = []
    result = optimize(PROBLEM, PHI, ReverseUnroll(), steps=3, meta_optimizer=_sgd(0.1),
                      parameterization={"a": Log()},
                      callback=lambda k, phi, d: seen.append({n: v.clone() for n, v in phi.items()}))
    assert len(seen) == 3
    for k, phi in enumerate(seen):
        assert torch.equal(phi["a"], result.history["phi/a"][k])
        assert torch.equal(phi["s"], result.history["phi/s"][k])
    assert torch.equal(seen[-1]["a"], result.phi["a"])
    assert torch.allclose(seen[0]["a"], PHI["a"], rtol=0.1)  # one small step from a, not log a


def test_a_stop_right_after_a_periodic_checkpoint_keeps_that_checkpoint(clock, tmp_path):
    """checkpoint_every=2 and Ctrl-C during outer step 2: the checkpoint of step 2 already
    holds the last completed step and is not rewritten, so its time is the 1.5 s of steps
    0 and 1 (not the stopped step's too) and the resumed run reports 5 s like an
    uninterrupted one; a stop during outer step 0 writes no checkpoint at all."""
    kwargs = dict(meta_optimizer=_sgd(0.1))
    ckpt = tmp_path / "outer.ckpt"
    with pytest.raises(KeyboardInterrupt):
        optimize(PROBLEM, PHI, _Stopped(at=0), steps=4, checkpoint=ckpt, checkpoint_every=2, **kwargs)
    assert not ckpt.exists()
    with pytest.raises(KeyboardInterrupt):
        optimize(PROBLEM, PHI, _Stopped(at=2), steps=4, checkpoint=ckpt, checkpoint_every=2, **kwargs)
    resumed = optimize(PROBLEM, PHI, _Slow(), steps=4, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.history["outer_step"] == [0, 1, 2, 3]
    assert resumed.seconds == 5.0


@dataclasses.dataclass(frozen=True)
class _ValueInDiagnostics(ReverseUnroll):
    """ReverseUnroll whose diagnostics also hold a key "value" (not h(φ))."""

    def estimate(self, problem, phi, **kwargs):
        result = super().estimate(problem, phi, **kwargs)
        result.diagnostics["value"] = -1.0
        return result


def test_the_callbacks_value_is_the_recorded_one_over_a_diagnostic_of_that_name():
    """The callback's "value" is the outer value recorded for the step (h(φ) > 0 here),
    even when the estimator's diagnostics carry an entry of that name; the other
    diagnostics pass through."""
    seen = []
    result = optimize(PROBLEM, PHI, _ValueInDiagnostics(), steps=2, meta_optimizer=_sgd(0.1),
                      callback=lambda k, phi, d: seen.append(d))
    assert [d["value"] for d in seen] == result.history["value"]
    assert all(v > 0 for v in result.history["value"])
    assert all("seconds" in d for d in seen)


def test_tree_norm_is_the_euclidean_norm_over_every_leaf():
    """tree_norm of {a: (3, 4), b: (12,)} is √(9 + 16 + 144) = 13 (DARTS scales its
    finite-difference step ε by it), a 0-d tensor."""
    tree = {"a": torch.tensor([3.0, 4.0], dtype=F64), "b": torch.tensor([12.0], dtype=F64)}
    norm = tree_norm(tree)
    assert norm.shape == () and float(norm) == 13.0


def test_detach_cuts_every_leaf_from_the_graph_and_keeps_its_values():
    """detach (the outer algorithms' iterates, the implicit methods' θ_T) returns each
    leaf without a graph, with the same values and storage, under the same names."""
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    tree = {"a": 3.0 * x, "b": x.sum()}
    out = detach(tree)
    assert list(out) == ["a", "b"]
    for k in tree:
        assert out[k].grad_fn is None and not out[k].requires_grad
        assert out[k].data_ptr() == tree[k].data_ptr()
        assert torch.equal(out[k], tree[k].detach())


def test_a_warm_start_carries_the_inner_optimizers_state_with_theta():
    """Warm-started outer step 1 (inner SGD with momentum 0.9) continues from θ_T and the
    momentum buffer of outer step 0 at inner indices T..2T−1: the result's θ and φ equal
    two hand-chained estimates and one SGD step of the meta optimizer between them."""
    ridge = Ridge(features=3, n=8)
    problem = ridge.problem(horizon=2, optimizer="momentum", lr=0.1)
    phi0 = ridge.phi
    r0 = hypergradient(problem, phi0, ReverseUnroll())
    phi1 = {k: v.add(r0.grad[k], alpha=-0.5) for k, v in phi0.items()}
    r1 = hypergradient(problem, phi1, ReverseUnroll(), start=2, init=(r0.theta, r0.state), outer_step=1)
    result = optimize(problem, phi0, ReverseUnroll(), steps=2, meta_optimizer=_sgd(0.5))
    assert torch.equal(result.theta["w"], r1.theta["w"])
    assert result.history["value"] == [float(r0.value), float(r1.value)]
    assert torch.equal(result.phi["log_reg"], phi1["log_reg"].add(r1.grad["log_reg"], alpha=-0.5))
    fresh = hypergradient(problem, phi1, ReverseUnroll(), start=2, init=(r0.theta, problem.initial(phi1)[1]))
    assert not torch.allclose(fresh.theta["w"], r1.theta["w"])
