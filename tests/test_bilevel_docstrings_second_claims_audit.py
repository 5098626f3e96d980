"""Second claims audit of pinnlab.bilevel's docstrings: each test pins a sentence (of a
docstring, comment or message) that no earlier test pinned, by the behaviour it describes
(float64 quadratics with closed forms): the refusals of Hessian-free and DARTS without a
step size, θ_T of the implicit methods unrolled without a graph, which estimators take a
black box, how a custom outer algorithm is spaced, the smoothed objective zo_fg2u's
forward difference is unbiased for, and Logit's saturated bounds."""

from __future__ import annotations

import warnings

import pytest
import torch

from pinnlab.bilevel import (
    DARTS,
    F2SA,
    METHODS,
    AbstractHypergradient,
    AbstractOuterAlgorithm,
    BlackBox,
    CGSolve,
    ForwardGradientUnroll,
    HessianFree,
    ImplicitDiff,
    NeumannSolve,
    Penalty,
    ReverseUnroll,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    from_train_step,
    hypergradient,
    make_method,
    neumann,
    optimize,
)
from pinnlab.bilevel.base import BilevelProblem
from pinnlab.bilevel.forward import sample_direction
from pinnlab.bilevel.parameterization import Logit
from pinnlab.solvers import SGD

from .bilevel.problems import F64, LinearQuadratic


def _counted(problem: BilevelProblem, *, inner_loss=True):
    """``problem`` without gradient step and inner_lr (and optionally without inner_loss),
    recording every inner index its inner step runs."""
    calls: list[int] = []

    def step(theta, state, phi, t):
        calls.append(t)
        return problem.inner_step(theta, state, phi, t)

    bare = BilevelProblem(step, problem.outer_loss, problem.init, problem.horizon,
                          inner_loss=problem.inner_loss if inner_loss else None)
    return bare, calls


# -- base.py and implicit.py: the default step size ------------------------------------------------
@pytest.mark.parametrize("method, text", [(HessianFree(), "hessian_free needs alpha"), (DARTS(), "darts needs xi")])
def test_hessian_free_and_darts_without_a_step_size_are_refused_before_the_unroll(method, text):
    """base.py ``step_size``: "otherwise the fixed inner_lr (None if not given)"; implicit.py
    ``HessianFree``/``DARTS``: ``alpha``/``xi`` = None take that inner rate, so a problem with
    neither inner_lr nor a gradient step is refused (ValueError naming the option) before
    any inner step runs; a given alpha/ξ runs the T steps."""
    lq = LinearQuadratic()
    bare, calls = _counted(lq.problem(horizon=3))
    assert bare.step_size(lq.phi, 2) is None
    with pytest.raises(ValueError, match=rf"^{text} \(or a problem with inner_lr or a gradient step\)$"):
        hypergradient(bare, lq.phi, method)
    assert calls == []
    given = HessianFree(alpha=0.1) if isinstance(method, HessianFree) else DARTS(xi=0.1)
    assert torch.isfinite(hypergradient(bare, lq.phi, given).grad["a"]).all()
    assert calls == [0, 1, 2]


def test_darts_without_inner_loss_is_refused_before_the_unroll():
    """implicit.py ``DARTS``/``BilevelProblem.inner_loss``: DARTS needs g; a problem without it
    is refused naming darts, before any inner step (as the implicit methods, whose
    "before the unroll" comment an earlier test pinned)."""
    lq = LinearQuadratic()
    bare, calls = _counted(lq.problem(horizon=3), inner_loss=False)
    with pytest.raises(ValueError, match=r"^method 'darts' needs the problem's inner_loss g\(θ, φ, t\)$"):
        hypergradient(bare, lq.phi, DARTS(xi=0.1))
    assert calls == []


# -- implicit.py: θ_T without a graph ---------------------------------------------------------------
@pytest.mark.parametrize("method", [neumann(4, 0.1), cg(4), HessianFree(alpha=0.1), DARTS(xi=0.1)],
                         ids=["neumann", "cg", "hessian_free", "darts"])
def test_implicit_methods_unroll_to_theta_t_without_a_graph(method):
    """implicit.py ``ImplicitDiff``: "cost T inner steps (without a graph)" (memory O(M)):
    even with φ leaves that require grad, θ_T and the estimate carry no graph, and the
    estimate is the one at the detached φ."""
    lq = LinearQuadratic()
    problem = lq.problem(horizon=4)
    leaf = {"a": lq.phi["a"].clone().requires_grad_(True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (torch: float() of a value that requires grad)
        result = hypergradient(problem, leaf, method)
    assert not result.theta["w"].requires_grad and result.theta["w"].grad_fn is None
    assert not result.grad["a"].requires_grad
    plain = hypergradient(problem, lq.phi, method)
    torch.testing.assert_close(result.grad["a"], plain.grad["a"], rtol=0, atol=0)
    torch.testing.assert_close(result.theta["w"], plain.theta["w"], rtol=0, atol=0)


def test_implicit_diff_refuses_a_solver_class():
    """implicit.py ``ImplicitDiff``: ``solver`` is a linear-solver *object*; the class itself
    (callable, so it would be called with the derivatives) is refused with a TypeError."""
    for solver in (CGSolve, NeumannSolve):
        with pytest.raises(TypeError, match=r"must be a linear-solver object such as NeumannSolve\(\) or "
                                            r"CGSolve\(\), got type$"):
            ImplicitDiff(solver)


# -- base.py: which estimators take a black box -----------------------------------------------------
def test_only_zeroth_order_takes_a_black_box():
    """base.py ``takes_black_box``: "True for estimators that only evaluate h": of the
    estimators of METHODS only zo_fg2u; every other one refuses a BlackBox (TypeError naming
    it and zo_fg2u) before evaluating it, zo_fg2u evaluates it."""
    evaluations = []
    box = BlackBox(lambda phi: evaluations.append(1) or float((phi["a"] ** 2).sum()))
    phi = {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    estimators = {name: make_method(name) for name in METHODS}
    estimators = {name: m for name, m in estimators.items() if isinstance(m, AbstractHypergradient)}
    assert set(estimators) == set(METHODS) - {"penalty", "f2sa"}
    for name, method in estimators.items():
        assert method.takes_black_box is (name == "zo_fg2u"), name
        if name == "zo_fg2u":
            continue
        with pytest.raises(TypeError, match=rf"^{method.name} needs a BilevelProblem .*only zo_fg2u "
                                            r"\(ZeroOrderForwardGradient\) uses$"):
            hypergradient(box, phi, method)
    assert evaluations == []
    result = hypergradient(box, phi, ZeroOrderForwardGradient(num_directions=2))
    assert len(evaluations) == result.diagnostics["inner_solves"] == 5
    assert result.value == pytest.approx(1.25, rel=1e-15) and result.theta is None


def test_black_box_objective_must_be_a_function():
    """zeroth_order.py ``BlackBox``: ``objective`` is φ ↦ h(φ); anything else is a TypeError
    naming its type."""
    with pytest.raises(TypeError, match=r"^BlackBox\.objective must be a function φ ↦ h\(φ\), got float$"):
        BlackBox(3.0)


# -- forward.py: direction kinds --------------------------------------------------------------------
def test_sample_direction_refuses_an_unknown_kind():
    """forward.py ``sample_direction``: Rademacher, Gaussian or √N·e_j, anything else refused
    naming the three kinds."""
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"^unknown direction kind 'sobol'; use 'rademacher', 'gaussian' or "
                                         r"'coordinate'$"):
        sample_direction("sobol", 3, generator, F64, torch.device("cpu"))


# -- penalty.py / driver.py: an outer algorithm without inner_iters -------------------------------
class _Fixed(AbstractOuterAlgorithm):
    """A minimal outer algorithm without ``inner_iters``: gradient of f at θ_0, records ``start``."""

    name = "fixed"

    def __init__(self):
        self.starts: list[int] = []

    def init(self, problem, phi, theta=None):
        return {"theta": dict(problem.initial(phi)[0] if theta is None else theta)}

    def iterate(self, state):
        return state["theta"]

    def step(self, problem, phi, state, *, outer_step, start):
        self.starts.append(start)
        grad = torch.func.grad(problem.outer_loss, argnums=1)(state["theta"], phi)
        return grad, state, {}


def test_an_outer_algorithm_without_inner_iters_is_spaced_by_the_horizon():
    """penalty.py ``AbstractOuterAlgorithm.inner_iters``: "the driver spaces outer steps by
    max(T, inner_iters); a method without it uses at most T": its outer step k starts at k·T."""
    lq = LinearQuadratic()
    method = _Fixed()
    assert not hasattr(method, "inner_iters")
    result = optimize(lq.problem(horizon=3), lq.phi, method, steps=3)
    assert result.status == "ok" and method.starts == [0, 3, 6]


# -- zeroth_order.py: the smoothed objective --------------------------------------------------------
def test_zo_forward_gaussian_difference_is_unbiased_for_the_smoothed_gradient():
    """zeroth_order.py: "the forward difference with Gaussian v is exactly unbiased for the
    gradient of the smoothed h_μ(φ) = E h(φ + μu)". For h = φ³ + φ² (N = 1) at φ = 0 and
    μ = 0.5: ∇h_μ(0) = 3μ² = 0.75 while ∇h(0) = 0; each ĝ_i = w_i v_i = μ²v⁴ + μv³ exactly,
    and the mean of 4000 draws (standard error ≈ 0.05) is within 0.2 of 0.75."""
    mu = 0.5
    box = BlackBox(lambda phi: float(phi["a"] ** 3 + phi["a"] ** 2))
    phi = {"a": torch.tensor(0.0, dtype=F64)}
    method = ZeroOrderForwardGradient(num_directions=4000, mu=mu, scheme="forward", kind="gaussian")
    result = hypergradient(box, phi, method, seed=3)
    v = result.diagnostics["directions"][:, 0]
    torch.testing.assert_close(result.diagnostics["directional"] * v, mu**2 * v**4 + mu * v**3,
                               rtol=1e-12, atol=1e-12)
    assert float(result.grad["a"]) == pytest.approx(3 * mu**2, abs=0.2)


# -- base.py: the inner loss of the outer algorithms ------------------------------------------------
@pytest.mark.parametrize("method", [Penalty(inner_iters=2), F2SA(inner_iters=2)], ids=["penalty", "f2sa"])
def test_outer_algorithms_need_the_inner_loss_and_name_themselves(method):
    """base.py ``BilevelProblem``: "inner_loss: ... needed by ... penalty and value-function
    methods": without it Penalty and F²SA refuse (ValueError naming the method), also
    under optimize, and the inner step is never run."""
    lq = LinearQuadratic()
    bare, calls = _counted(lq.problem(horizon=3), inner_loss=False)
    message = rf"^method '{method.name}' needs the problem's inner_loss g\(θ, φ, t\)$"
    with pytest.raises(ValueError, match=message):
        method.step(bare, lq.phi, method.init(bare, lq.phi), outer_step=0, start=0)
    with pytest.raises(ValueError, match=message):
        optimize(bare, lq.phi, method, steps=1)
    assert calls == []


# -- parameterization.py: Logit's open interval -----------------------------------------------------
def test_a_saturated_logit_value_is_a_usable_bound_that_inverse_refuses():
    """parameterization.py ``Logit``: "beyond about u = 17 in float32 (37 in float64) the
    value is ``high`` itself ... Such a value stays usable ... but inverse refuses it". One SGD
    meta step of rate 1e3 moves u from 0 to about 125 (h decreases in m): optimize goes on
    (status "ok", every step recorded) with φ = high exactly, which inverse refuses."""
    import inspect

    doc = " ".join(inspect.getdoc(Logit).split())
    assert "the value is ``high`` itself" in doc and "Such a value stays usable" in doc

    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["m"]) ** 2).sum()

    def outer(theta, phi):
        return -theta["w"].sum()

    problem = from_inner_loss(inner, outer, SGD(lr=0.5), {"w": torch.zeros(1, dtype=F64)}, horizon=3)
    par = {"m": Logit(0.0, 1.0)}
    result = optimize(problem, {"m": torch.tensor([0.5], dtype=F64)}, ReverseUnroll(), steps=2,
                      meta_optimizer=lambda leaves: torch.optim.SGD(leaves, lr=1e3), parameterization=par)
    assert result.status == "ok" and len(result.history["outer_step"]) == 2
    assert result.phi["m"].tolist() == [1.0]
    with pytest.raises(ValueError, match=r"must lie in \(0.0, 1.0\)"):
        par["m"].inverse(result.phi["m"])
    assert torch.sigmoid(torch.tensor(17.0)).item() == 1.0  # float32 saturates by |u| = 17
    assert torch.sigmoid(torch.tensor(37.0, dtype=F64)).item() == 1.0
    assert torch.sigmoid(torch.tensor(16.0)).item() < 1.0 and torch.sigmoid(torch.tensor(36.0, dtype=F64)).item() < 1.0


# -- forward.py: the direction kinds of fg2u -------------------------------------------------------
def test_fg2u_refuses_an_unknown_direction_kind():
    """forward.py ``ForwardGradientUnroll``: ``kind`` is "rademacher", "gaussian" or
    "coordinate", anything else refused at construction (not at the first draw)."""
    with pytest.raises(ValueError, match=r"^kind must be 'rademacher', 'gaussian' or 'coordinate', got 'sobol'$"):
        ForwardGradientUnroll(kind="sobol")
    for kind in ("rademacher", "gaussian", "coordinate"):
        assert ForwardGradientUnroll(kind=kind).kind == kind


# -- adapters.py: a TrainStep's own rate ------------------------------------------------------------
def test_from_train_step_with_a_train_step_refuses_inner_lr_and_uses_its_rate():
    """adapters.py ``from_train_step``: ``inner_lr`` is the step size of "any other step
    callable ... a TrainStep has its own rate and refuses it": ValueError; without it the
    problem's step size (Hessian-free's α) is the TrainStep's scheduled rate at step t."""
    from pinnlab.solvers import Adam, LinearDecay, make_train_step

    from .solvers.small_problems import problem, stein

    p = problem(estimator=stein(), batch=8)
    opt = Adam(1e-2)
    step = make_train_step(p, opt, seed=2, schedule=LinearDecay(10))
    params = p.init_params(dtype=F64)

    def to_hp(phi):
        return {"sigma": torch.exp(phi["log_sigma"])}

    def outer(theta, phi):
        return sum((v**2).sum() for v in theta.values())

    phi = {"log_sigma": torch.tensor(-3.0, dtype=F64)}
    with pytest.raises(ValueError, match="^inner_lr is for a problem without gradient_step"):
        from_train_step(step, to_hp, outer, (params, opt.init(params)), horizon=3, inner_lr=0.1)
    bilevel = from_train_step(step, to_hp, outer, (params, opt.init(params)), horizon=3)
    assert bilevel.inner_lr is None
    for t in (0, 5):
        assert bilevel.step_size(phi, t) == pytest.approx(1e-2 * (1 - t / 10), rel=1e-12)
