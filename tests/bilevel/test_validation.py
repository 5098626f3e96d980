"""Bad options fail at construction (or at the start of optimize) with one clear error;
outer algorithms draw fresh inner randomness each outer step; ZO counts its solves."""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    BlackBox,
    CGSolve,
    ForwardGradientUnroll,
    HessianFree,
    ImplicitDiff,
    NeumannSolve,
    Penalty,
    ReverseUnroll,
    TwoPhase,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    hypergradient,
    neumann,
    optimize,
)
from pinnlab.bilevel.base import BilevelProblem
from pinnlab.solvers import SGD

F64 = torch.float64


def _quadratic(horizon=3, record=None):
    """g = ½‖θ − a‖² + ½ e^{s}‖θ‖² (+ a t-dependent constant), f = ‖θ − 1‖²; ``record``
    collects every inner index t that g is evaluated at."""

    def g(theta, phi, t):
        if record is not None:
            record.append(t)
        w = theta["w"]
        return 0.5 * ((w - phi["a"]) ** 2).sum() + 0.5 * torch.exp(phi["s"]) * (w * w).sum() + 1e-3 * t

    def f(theta, phi):
        return ((theta["w"] - 1.0) ** 2).sum()

    problem = from_inner_loss(g, f, SGD(lr=0.3), {"w": torch.zeros(3, dtype=F64)}, horizon=horizon)
    phi = {"a": torch.tensor([0.5, 1.0, 2.0], dtype=F64), "s": torch.tensor(-1.0, dtype=F64)}
    return problem, phi


PROBLEM, PHI = _quadratic()


def _run(method, **kwargs):
    return lambda: optimize(PROBLEM, PHI, method, **{"steps": 1, **kwargs})


BAD = {
    # penalty / value-function methods
    "F2SA(lam=0)": (lambda: F2SA(lam=0.0), ValueError, "lam"),
    "F2SA(lr_y=-1)": (lambda: F2SA(lr_y=-1.0), ValueError, "lr_y"),
    "F2SA(lam_max<lam)": (lambda: F2SA(lam=10.0, lam_max=1.0), ValueError, "lam_max"),
    "Penalty(inner_iters=0)": (lambda: Penalty(inner_iters=0), ValueError, "inner_iters"),
    "Penalty(gamma=0)": (lambda: Penalty(gamma=0.0), ValueError, "gamma"),
    "Penalty(growth=0.5)": (lambda: Penalty(growth=0.5), ValueError, "growth"),
    # implicit
    "DARTS(epsilon=0)": (lambda: DARTS(xi=0.3, epsilon=0.0), ValueError, "epsilon"),
    "DARTS(xi=-1)": (lambda: DARTS(xi=-1.0), ValueError, "xi"),
    "neumann(iterations=-3)": (lambda: neumann(iterations=-3), ValueError, "iterations"),
    "neumann(iterations=2.5)": (lambda: neumann(iterations=2.5), ValueError, "iterations"),
    "neumann(alpha=-1)": (lambda: neumann(alpha=-1.0), ValueError, "alpha"),
    "NeumannSolve(alpha=nan)": (lambda: NeumannSolve(alpha=float("nan")), ValueError, "alpha"),
    "cg(iterations=0)": (lambda: cg(iterations=0), ValueError, "iterations"),
    "CGSolve(damping=-1)": (lambda: CGSolve(damping=-1.0), ValueError, "damping"),
    "HessianFree(alpha=-0.3)": (lambda: HessianFree(alpha=-0.3), ValueError, "alpha"),
    "HessianFree(alpha=0)": (lambda: HessianFree(alpha=0.0), ValueError, "alpha"),
    "ImplicitDiff('cg')": (lambda: ImplicitDiff("cg"), TypeError, "use neumann() or cg()"),
    # zeroth order
    "ZO(kind='sobol')": (lambda: ZeroOrderForwardGradient(kind="sobol"), ValueError, "kind"),
    "ZO(mu='1e-3')": (lambda: ZeroOrderForwardGradient(mu="1e-3"), ValueError, "mu"),
    "ZO(num_directions=True)": (lambda: ZeroOrderForwardGradient(num_directions=True), ValueError, "num_directions"),
    "BlackBox(horizon=0)": (lambda: BlackBox(lambda phi: 0.0, horizon=0), ValueError, "horizon"),
    # driver
    "optimize(method='fg2u')": (_run("fg2u"), TypeError, "make_method('fg2u')"),
    "TwoPhase(first='hf')": (lambda: TwoPhase("hf", ReverseUnroll(), 1), TypeError, "TwoPhase.first"),
    "TwoPhase(switch_after='3')": (lambda: TwoPhase(ReverseUnroll(), ReverseUnroll(), "3"), ValueError,
                                   "switch_after"),
    "TwoPhase(then_lr=0)": (lambda: TwoPhase(ReverseUnroll(), ReverseUnroll(), 1, then_lr=0.0), ValueError,
                            "then_lr"),
    "TwoPhase(nested)": (lambda: TwoPhase(TwoPhase(ReverseUnroll(), ReverseUnroll(), 1), ReverseUnroll(), 1),
                         TypeError, "TwoPhase.first"),
    "resume without checkpoint": (_run(ReverseUnroll(), resume=True), ValueError, "resume"),
    "checkpoint_every without checkpoint": (_run(ReverseUnroll(), checkpoint_every=2), ValueError,
                                            "checkpoint_every"),
    "accumulate with Penalty": (_run(Penalty(inner_iters=2), accumulate=4), ValueError, "accumulate"),
    "accumulate with TwoPhase(.., F2SA)": (_run(TwoPhase(ReverseUnroll(), F2SA(inner_iters=2), 1), accumulate=2),
                                           ValueError, "f2sa"),
    "BilevelProblem(horizon=True)": (lambda: BilevelProblem(lambda *a: a[:2], lambda th, phi: 0.0, ({}, None), True),
                                     ValueError, "horizon"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_options_are_refused_with_a_clear_error(case):
    build, error, fragment = BAD[case]
    with pytest.raises(error) as info:
        build()
    assert fragment in str(info.value), str(info.value)


def test_good_options_still_accepted():
    """The boundary values that mean something stay allowed (ξ = 0 is first-order DARTS,
    K = 0 Neumann terms is Hessian-free, switch_after = 0, λ growth 0, CG without damping)."""
    DARTS(xi=0.0)
    neumann(iterations=0)
    cg(damping=0.0)
    F2SA(lam_growth=0.0)
    Penalty(growth=1.0, gamma=2.0, gamma_max=2.0)
    TwoPhase(HessianFree(alpha=0.3), Penalty(), 0)
    ImplicitDiff(lambda at: at.d)
    result = optimize(PROBLEM, PHI, Penalty(inner_iters=2), steps=1, warm_start=True, seed=3)
    assert result.status == "ok"


@pytest.mark.parametrize("make", [lambda n: Penalty(inner_iters=n), lambda n: F2SA(inner_iters=n)],
                         ids=["penalty", "f2sa"])
@pytest.mark.parametrize("inner_iters", [2, 7])
def test_outer_algorithm_steps_use_disjoint_inner_indices(make, inner_iters):
    """With inner_iters > T as with inner_iters < T, no two outer steps of optimize share an
    inner index t (fresh inner randomness each outer step)."""
    horizon, steps = 3, 4
    seen: list[int] = []
    problem, phi = _quadratic(horizon, record=seen)
    per_step: list[list[int]] = []
    marks = [0]

    def callback(k, p, d):
        per_step.append(sorted(set(seen[marks[-1]:])))
        marks.append(len(seen))

    optimize(problem, phi, make(inner_iters), steps=steps, callback=callback)
    assert len(per_step) == steps
    for k, indices in enumerate(per_step):
        assert indices == list(range(indices[0], indices[0] + inner_iters)), (k, indices)
    assert len(set(seen)) == steps * inner_iters, per_step
    # the common case inner_iters <= T keeps its previous indices t = k·T, …
    if inner_iters <= horizon:
        assert [ix[0] for ix in per_step] == [k * horizon for k in range(steps)]


class _CountingStep:
    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, theta, state, phi, t):
        self.calls += 1
        return self.step(theta, state, phi, t)


@pytest.mark.parametrize("scheme, expected", [("central", lambda b: 2 * b + 1), ("forward", lambda b: b + 1)])
def test_zeroth_order_reports_the_inner_solves_it_runs(scheme, expected):
    b, horizon = 4, 3
    base, phi = _quadratic(horizon)
    counter = _CountingStep(base.inner_step)
    problem = BilevelProblem(counter, base.outer_loss, base.init, horizon, inner_loss=base.inner_loss)
    result = hypergradient(problem, phi, ZeroOrderForwardGradient(num_directions=b, scheme=scheme))
    assert result.diagnostics["inner_solves"] == expected(b)
    assert counter.calls == result.diagnostics["inner_step_evaluations"] == expected(b) * horizon
    # θ_T (for warm starts) and the value come from the base solve
    reference = hypergradient(base, phi, ReverseUnroll())
    torch.testing.assert_close(result.theta["w"], reference.theta["w"])
    assert result.value == pytest.approx(reference.value, rel=1e-12)

    calls = []
    black_box = BlackBox(lambda p: calls.append(1) or float(base.outer_loss(reference.theta, p)), horizon=horizon)
    with pytest.warns(RuntimeWarning, match="every finite difference") as record:  # f(θ, φ) does not depend on φ
        result = hypergradient(black_box, phi, ZeroOrderForwardGradient(num_directions=b, scheme=scheme))
    # attributed to the line above, not to pinnlab's hypergradient() that called the estimator
    assert {w.filename for w in record if "every finite difference" in str(w.message)} == {__file__}
    assert len(calls) == result.diagnostics["inner_solves"] == expected(b)


def test_memory_diagnostic_is_per_call_on_cpu():
    """On CPU the diagnostic is how far the call raised the process's peak RSS, not the
    process-lifetime peak (which made a cheap call report an earlier expensive one's peak)."""
    method = ForwardGradientUnroll(num_directions=2)
    hypergradient(PROBLEM, PHI, method)  # warm-up: lazy imports
    big = torch.ones(32 * 2**20, dtype=torch.float32)  # 128 MB, raises the high-water mark
    del big
    result = hypergradient(PROBLEM, PHI, method)
    assert "peak_bytes" not in result.diagnostics
    assert 0 <= result.diagnostics["rss_increase_bytes"] < 32 * 2**20
