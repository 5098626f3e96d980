"""Fourth audit of the outer driver and the problem adapters (in-process, tiny sizes).

Each test pins one behaviour against a hand computation or an independent estimate,
tightly enough that a plausible slip in the loop fails it: a φ of mixed dtypes stepped
by the meta optimizer; a meta step that makes one of two φ entries unusable (φ and θ
of the last usable step kept); a meta optimizer's error about a value that is not an
overflow; one outer-algorithm object used for both phases of a TwoPhase schedule (a
bug this audit found: Phase II kept Phase I's iterates).
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    BlackBox,
    Log,
    Penalty,
    ReverseUnroll,
    TwoPhase,
    ZeroOrderForwardGradient,
    hypergradient,
    optimize,
)
from tests.bilevel.test_validation import PHI, PROBLEM

F64 = torch.float64


def test_a_phi_of_mixed_dtypes_is_stepped_in_each_entrys_own_dtype():
    """φ = {a: float64, s: float32} under ZO over a black box: the flattened estimate is
    float64 for both entries; the meta step casts each entry's gradient to its leaf's
    dtype, so φ after one SGD(0.1) step is φ − 0.1·ĝ entry by entry, s still float32."""
    box = BlackBox(lambda p: float((p["a"] ** 2).sum() + 3.0 * (p["s"] ** 2).sum()))
    phi = {"a": torch.tensor([1.0, 2.0], dtype=F64), "s": torch.tensor([3.0], dtype=torch.float32)}
    method = ZeroOrderForwardGradient(num_directions=2, mu=1e-3)
    estimate = hypergradient(box, phi, method, seed=5, outer_step=0)
    assert estimate.grad["s"].dtype == F64
    result = optimize(box, phi, method, steps=1, seed=5, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert result.status == "ok"
    assert result.phi["s"].dtype == torch.float32 and result.phi["a"].dtype == F64
    assert torch.equal(result.phi["a"], phi["a"].add(estimate.grad["a"], alpha=-0.1))
    assert torch.equal(result.phi["s"], phi["s"].add(estimate.grad["s"].to(torch.float32), alpha=-0.1))


class _SinkFirstLeafOnSecondStep(torch.optim.SGD):
    """SGD(lr=0.1) whose second step sets the first leaf (φ's first entry) to −10⁴ and
    leaves the others where they are."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.calls += 1
        if self.calls == 2:
            self.param_groups[0]["params"][0].fill_(-1e4)
            return None
        return super().step(closure)


def test_one_unusable_entry_among_usable_ones_stops_the_loop():
    """φ = {a (Log), s (unconstrained)}: outer step 1's meta step sends log a to −10⁴
    (a = 0, unusable) while s stays finite; the loop stops at outer step 1 although
    the other entry is usable, φ back at outer step 0's values and θ its θ_T (not the
    θ_T of the step that was undone)."""
    one = optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, parameterization={"a": Log()},
                   meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    result = optimize(PROBLEM, PHI, ReverseUnroll(), steps=3, parameterization={"a": Log()},
                      meta_optimizer=_SinkFirstLeafOnSecondStep)
    assert result.status == "nonfinite"
    assert result.message.startswith("outer step 1: the step made φ non-finite")
    assert result.history["outer_step"] == [0]
    for k in PHI:
        assert torch.equal(result.phi[k], one.phi[k])
    assert torch.equal(result.theta["w"], one.theta["w"])


class _BadValue(torch.optim.SGD):
    """SGD whose step raises a RuntimeError about a value that is not an overflow."""

    def step(self, closure=None):
        raise RuntimeError("a value of the wrong shape in the meta optimizer's state")


def test_only_an_overflow_error_of_the_meta_step_counts_as_a_non_finite_phi():
    """optimizer_stepped turns only torch's overflow error ("value cannot be converted to
    type float without overflow") into a non-finite step; another RuntimeError, even one
    that mentions a value, propagates unchanged instead of a run with status "nonfinite"."""
    with pytest.raises(RuntimeError, match="^a value of the wrong shape in the meta optimizer's state$"):
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, meta_optimizer=lambda p: _BadValue(p, lr=0.1))


def test_one_outer_algorithm_object_for_both_phases_restarts_its_iterates_at_the_switch():
    """TwoPhase(p, p) with the same Penalty(γ₀ = 1, growth 2) object in both phases runs
    as TwoPhase(p, equal copy of p): Phase II starts its own iterates at the switch, so γ
    per outer step is [1, 2, 1, 2] (φ held by SGD(lr = 0)), and θ is the same."""
    still = lambda p: torch.optim.SGD(p, lr=0.0)  # noqa: E731
    runs = {}
    for same in (False, True):
        first = Penalty(gamma=1.0, growth=2.0, inner_iters=2)
        then = first if same else Penalty(gamma=1.0, growth=2.0, inner_iters=2)
        gammas = []
        result = optimize(PROBLEM, PHI, TwoPhase(first, then, switch_after=2), steps=4, meta_optimizer=still,
                          callback=lambda k, phi, d, gammas=gammas: gammas.append(d["gamma"]))
        runs[same] = (gammas, result.theta["w"])
    assert runs[False][0] == [1.0, 2.0, 1.0, 2.0]
    assert runs[True][0] == runs[False][0]
    assert torch.equal(runs[True][1], runs[False][1])
