"""Third audit of the outer driver and the problem adapters (float64, in-process).

A scalar problem with hand-computable outer steps: g(θ, a) = ½(θ − a)², one inner SGD
step of rate ½ from θ_0 = 0 (θ_1 = a/2), f = ½(θ_1 − 1)², so h(a) = ½(a/2 − 1)² and
dh/da = (a/2 − 1)/2. Each test pins one behaviour tightly enough that a plausible slip
in the loop fails it: the records of a stopped step under Log; the fresh inner
optimizer state an outer algorithm's θ comes with after an estimator phase; an outer
algorithm's θ_0(φ) at the constrained φ; a negative switch_after refused; Phase II's
fresh meta-optimizer moments when it also has its own rate; the θ an outer algorithm
after an estimator phase starts from, with and without warm start.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import Log, Penalty, ReverseUnroll, TwoPhase, from_inner_loss, optimize
from pinnlab.solvers import SGD

F64 = torch.float64


def _scalar(momentum=0.0, horizon=1, theta0=None):
    """The scalar problem of the module docstring (inner SGD, optional heavy ball; θ_0 = 0
    or ``theta0``, a tree or a function of φ)."""

    def g(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    def f(theta, phi):
        return 0.5 * ((theta["w"] - 1.0) ** 2).sum()

    init = {"w": torch.zeros(1, dtype=F64)} if theta0 is None else theta0
    return from_inner_loss(g, f, SGD(lr=0.5, momentum=momentum), init, horizon=horizon)


class _JumpOnSecondStep(torch.optim.SGD):
    """SGD(lr=1) whose second step sets every leaf to −10⁴ (e^u underflows to exactly 0)."""

    def __init__(self, params):
        super().__init__(params, lr=1.0)
        self.calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.calls += 1
        if self.calls == 2:
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(-1e4)
            return None
        return super().step(closure)


def test_a_step_to_an_unusable_phi_is_reported_at_its_own_outer_step():
    """a = 4 under Log (u = log 4): outer step 0 records h = ½(2 − 1)² = ½ and the norm
    of the gradient the meta optimizer takes, ∂h/∂u = ∂h/∂a · a = ½ · 4 = 2 (not ∂h/∂a),
    and steps u to log 4 − 2; outer step 1's meta step sends u to −10⁴ (a = 0, unusable):
    the loop stops with the message of outer step 1, φ and the history those of step 0."""
    phi = {"a": torch.full((1,), 4.0, dtype=F64)}
    result = optimize(_scalar(), phi, ReverseUnroll(), steps=3, parameterization={"a": Log()},
                      meta_optimizer=_JumpOnSecondStep)
    assert result.status == "nonfinite"
    assert result.message.startswith("outer step 1: the step made φ non-finite")
    assert result.history["outer_step"] == [0]
    assert result.history["value"] == [pytest.approx(0.5, rel=1e-14)]
    assert result.history["grad_norm"] == [pytest.approx(2.0, rel=1e-14)]
    expected = torch.exp(torch.log(torch.tensor([4.0], dtype=F64)) - 2.0)
    torch.testing.assert_close(result.history["phi/a"][0], expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(result.phi["a"], expected, rtol=1e-14, atol=0)


def test_an_outer_algorithms_theta_comes_with_a_fresh_state_after_an_estimator_phase():
    """TwoPhase(ReverseUnroll, Penalty) with an inner heavy-ball SGD: after the Penalty
    phase the result's state is the inner optimizer's fresh one (zero momentum), not the
    non-zero momentum buffer the estimator phase's θ_T came with."""
    problem = _scalar(momentum=0.9, horizon=2)
    phi = {"a": torch.full((1,), 3.0, dtype=F64)}
    estimator_only = optimize(problem, phi, ReverseUnroll(), steps=1, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert float(estimator_only.state.momentum["w"].abs().sum()) > 0.1  # the estimator phase leaves momentum
    result = optimize(problem, phi, TwoPhase(ReverseUnroll(), Penalty(inner_iters=2), switch_after=1), steps=2,
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert result.status == "ok" and result.history["method"] == ["rgu", "penalty"]
    assert list(result.state.momentum) == ["w"]
    assert torch.equal(result.state.momentum["w"], torch.zeros(1, dtype=F64))


def test_an_outer_algorithm_starts_from_theta0_at_the_constrained_phi():
    """θ_0(φ) = a under a = e^u (Log): Penalty's first iterates start from θ_0 at the
    constrained a = 4, as with the fixed θ_0 = 4 (same θ, value and φ after two outer
    steps), not at the unconstrained u = log 4."""
    phi = {"a": torch.full((1,), 4.0, dtype=F64)}
    kwargs = dict(steps=2, parameterization={"a": Log()}, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    of_phi = optimize(_scalar(theta0=lambda phi: {"w": phi["a"] * 1.0}), phi, Penalty(inner_iters=1), **kwargs)
    fixed = optimize(_scalar(theta0={"w": torch.full((1,), 4.0, dtype=F64)}), phi, Penalty(inner_iters=1), **kwargs)
    assert of_phi.status == fixed.status == "ok"
    assert of_phi.history["value"] == fixed.history["value"]
    assert torch.equal(of_phi.theta["w"], fixed.theta["w"])
    assert torch.equal(of_phi.phi["a"], fixed.phi["a"])


@pytest.mark.parametrize("switch_after", [-1, -3])
def test_a_negative_switch_after_is_refused(switch_after):
    """TwoPhase's switch_after is a count of outer steps (0 allowed): a negative one is a
    ValueError naming it, not a schedule that silently runs Phase II only."""
    with pytest.raises(ValueError, match=r"TwoPhase\.switch_after must be an integer >= 0"):
        TwoPhase(ReverseUnroll(), Penalty(), switch_after=switch_after)
    assert TwoPhase(ReverseUnroll(), Penalty(), switch_after=0).at(0) == Penalty()


def test_phase_two_with_its_own_rate_also_starts_with_fresh_moments():
    """TwoPhase(switch_after=2, then_lr=0.05) under Adam(0.1), 5 outer steps: the switch
    both clears Adam's moments (step count 3 = Phase II's steps, not 5) and sets the rate
    0.05; a new rate does not replace the reset."""
    made = []

    def adam(params):
        made.append(torch.optim.Adam(params, lr=0.1))
        return made[-1]

    phi = {"a": torch.full((1,), 3.0, dtype=F64)}
    result = optimize(_scalar(), phi, TwoPhase(ReverseUnroll(), ReverseUnroll(), switch_after=2, then_lr=0.05),
                      steps=5, meta_optimizer=adam)
    assert result.status == "ok" and result.history["outer_step"] == [0, 1, 2, 3, 4]
    (opt,) = made
    (leaf,) = opt.param_groups[0]["params"]
    assert float(opt.state[leaf]["step"]) == 3.0
    assert [group["lr"] for group in opt.param_groups] == [0.05]


class _RecordingPenalty(Penalty):
    """Penalty noting the θ its first iterates are built from (None: the problem's θ_0)."""

    seen: list = []

    def init(self, problem, phi, theta=None):
        _RecordingPenalty.seen.append(None if theta is None else theta["w"].clone())
        return super().init(problem, phi, theta)


@pytest.mark.parametrize("warm_start", [True, False])
def test_an_outer_algorithm_after_an_estimator_starts_from_its_theta_only_when_warm_started(warm_start):
    """optimize: "an outer algorithm starts from the estimator phase's θ_T ...; without
    ``warm_start`` an estimator keeps no θ_T, and an outer algorithm after it starts from
    ``problem.init``". One rgu step at a = 3 leaves θ_1 = a/2 = 1.5."""
    import inspect

    assert "without ``warm_start`` an estimator keeps no θ_T, and an outer algorithm after it starts from " \
           "``problem.init``" in " ".join(inspect.getdoc(optimize).split())
    _RecordingPenalty.seen = []
    phi = {"a": torch.full((1,), 3.0, dtype=F64)}
    result = optimize(_scalar(), phi, TwoPhase(ReverseUnroll(), _RecordingPenalty(inner_iters=1), switch_after=1),
                      steps=2, warm_start=warm_start, meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert result.status == "ok" and result.history["method"] == ["rgu", "penalty"]
    (theta,) = _RecordingPenalty.seen
    if warm_start:
        assert torch.equal(theta, torch.full((1,), 1.5, dtype=F64))
    else:
        assert theta is None
