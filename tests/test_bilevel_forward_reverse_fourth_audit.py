"""Fourth mutation audit of the forward-mode and reverse-mode hypergradients (float64).

The tests pin what the agreement tests (which compare values of ∇h) cannot see: the
detach points that keep the forward methods' memory independent of T (no autograd graph
survives in θ_T, the optimizer state or the estimate), chunk losses whose θ-gradient is
constant, and dtypes. The closed forms use g = ½‖θ − a‖² (+ c·θ) and f = ‖θ‖² with
gradient descent of step η from θ_0 = 0: θ_T = (1 − (1 − η)^T)(a − c).
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    ReverseUnroll,
    from_inner_loss,
    hypergradient,
)
from pinnlab.bilevel.base import GradientStep, flatten
from pinnlab.bilevel.forward import directional_derivatives, directions
from pinnlab.solvers import SGD, Adam
from pinnlab.solvers.optim import SGDState

F64 = torch.float64


def _tracking(optimizer, horizon, lr=None):
    """g = ½‖θ − a‖², f = ‖θ‖², θ_0 = 0, the rate ``lr`` (a function of φ or None)."""
    return from_inner_loss(lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum(),
                           lambda th, phi: (th["w"] ** 2).sum(), optimizer,
                           {"w": torch.zeros(2, dtype=F64)}, horizon=horizon, lr=lr)


FORWARD = [ExactForwardUnroll(tangents="hvp"), ExactForwardUnroll(tangents="jvp"),
           ForwardGradientUnroll(num_directions=3, chunk_size=2, tangents="hvp"),
           ForwardGradientUnroll(num_directions=3, chunk_size=2, tangents="jvp")]
FORWARD_IDS = ["fgu-hvp", "fgu-jvp", "fg2u-hvp", "fg2u-jvp"]


def _graph_free(tree):
    return not any(v.requires_grad for v in tree.values())


# -- 1. no autograd graph survives a forward-mode estimate ----------------------------------------
@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad=True to a scalar")
@pytest.mark.parametrize("method", FORWARD, ids=FORWARD_IDS)
def test_forward_methods_return_no_autograd_graph_even_for_a_phi_that_requires_grad(method):
    """Memory O(chunk_size·M) independent of T: θ_T, the momentum buffer, ∇h and the w_i
    hold no autograd graph, also with a φ leaf that requires grad, a rate depending on φ
    and a heavy-ball buffer (which would chain every step's graph over the T steps),
    while the values are RGU's (to 1e-10). A step's gradient or rate kept attached, or
    the jvp path's primal unroll for θ_T run with a graph, fail it; so does h(φ) converted to
    a float before it is detached (torch warns, an error here: once per process, so only
    where no earlier test in the process triggered it)."""
    problem = _tracking(SGD(lr=0.1, momentum=0.5), horizon=4, lr=lambda phi: phi["lr"])
    phi = {"a": torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True),
           "lr": torch.tensor(0.3, dtype=F64, requires_grad=True)}
    result = hypergradient(problem, phi, method)
    assert _graph_free(result.grad) and _graph_free(result.theta)
    assert _graph_free(result.state.momentum)
    assert isinstance(result.value, float)
    if "directional" in result.diagnostics:
        assert not result.diagnostics["directional"].requires_grad
    plain = {k: v.detach() for k, v in phi.items()}
    reference = hypergradient(problem, plain, ReverseUnroll())
    if isinstance(method, ExactForwardUnroll):
        torch.testing.assert_close(flatten(result.grad), flatten(reference.grad), rtol=1e-10, atol=1e-12)
    else:
        v = result.diagnostics["directions"]
        torch.testing.assert_close(result.diagnostics["directional"], v @ flatten(reference.grad),
                                   rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.theta["w"], reference.theta["w"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", [SGD(lr=0.2, momentum=0.9), Adam(lr=0.1)], ids=["momentum", "adam"])
def test_hvp_tangents_keep_no_graph_in_the_state_with_a_plain_phi(optimizer):
    """Hessian-vector tangents with an ordinary φ (no requires_grad): the double backward
    of each step builds a graph on detached copies of θ and φ; the gradient fed to the
    optimizer is detached from it, so θ_T, the momentum buffer and Adam's moments
    carry no graph (a graph chained through the state would hold all T steps)."""
    problem = _tracking(optimizer, horizon=5, lr=lambda phi: phi["lr"])
    phi = {"a": torch.tensor([1.0, -2.0], dtype=F64), "lr": torch.tensor(0.2, dtype=F64)}
    result = hypergradient(problem, phi, ExactForwardUnroll(tangents="hvp"))
    assert _graph_free(result.theta) and _graph_free(result.grad)
    leaves = [x for x in torch.utils._pytree.tree_leaves(result.state) if isinstance(x, torch.Tensor)]
    assert leaves and not any(x.requires_grad for x in leaves)


@pytest.mark.parametrize("method", [ExactForwardUnroll(tangents="hvp"),
                                    ForwardGradientUnroll(num_directions=2, tangents="hvp")], ids=["fgu", "fg2u"])
def test_hvp_tangents_of_a_phi_dependent_initial_state_keep_no_graph(method):
    """θ_0 = tanh(a) and a heavy-ball buffer m_0 = a/2 made from a φ leaf that requires grad:
    the initial tangents come from a jvp of ``problem.init`` at a detached φ, so neither
    θ_T nor the buffer (which would chain the graph of m_0 through all T steps) holds a
    graph, and the w_i equal ⟨RGU, v_i⟩ to 1e-10 (RGU at the plain φ)."""
    opt = SGD(lr=0.1, momentum=0.8)

    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    grad = torch.func.grad(inner)

    def init(phi):
        return {"w": torch.tanh(phi["a"])}, SGDState({"w": 0.5 * phi["a"]})

    problem = BilevelProblem(lambda th, s, phi, t: opt.update(grad(th, phi, t), s, th, opt.lr),
                             lambda th, phi: (th["w"] ** 2).sum(), init, 3,
                             gradient_step=GradientStep(lambda th, phi, t: (inner(th, phi, t),), opt,
                                                        lambda phi, t: opt.lr))
    a = torch.tensor([0.3, -0.4], dtype=F64)
    result = method(problem, {"a": a.clone().requires_grad_(True)})
    assert _graph_free(result.theta) and _graph_free(result.state.momentum) and _graph_free(result.grad)
    reference = flatten(ReverseUnroll()(problem, {"a": a}).grad)
    v = result.diagnostics.get("directions", torch.eye(2, dtype=F64))
    w = result.diagnostics.get("directional", flatten(result.grad))
    torch.testing.assert_close(w, v @ reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", FORWARD, ids=FORWARD_IDS)
def test_a_warm_start_from_rgu_with_a_graph_leaves_none_in_the_forward_result(method):
    """RGU with a φ leaf that requires grad returns a θ_T attached to φ (documented for
    TRGU); a forward method warm-started from that (θ, state) holds the start fixed
    (θ_{3+T} = (1 − (1 − η)^{3+T})a, ∂h/∂a = 2θ·(1 − (1 − η)^T)) and returns no graph."""
    eta, horizon = 0.5, 2
    problem = _tracking(SGD(lr=eta), horizon=3)
    a = torch.tensor([1.0, -2.0], dtype=F64)
    first = ReverseUnroll()(problem, {"a": a.clone().requires_grad_(True)})
    assert first.theta["w"].requires_grad
    problem = _tracking(SGD(lr=eta), horizon=horizon)
    result = method(problem, {"a": a}, init=(first.theta, first.state))
    assert _graph_free(result.theta) and _graph_free(result.grad)
    theta = (1 - (1 - eta) ** (3 + horizon)) * a
    torch.testing.assert_close(result.theta["w"], theta, rtol=1e-14, atol=1e-15)
    exact = 2 * theta * (1 - (1 - eta) ** horizon)
    v = result.diagnostics.get("directions", torch.eye(2, dtype=F64))
    w = result.diagnostics.get("directional", flatten(result.grad))
    torch.testing.assert_close(w, v @ exact, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("mode", ["hvp", "jvp"])
def test_directional_derivatives_return_h_without_a_graph(mode):
    """:func:`directional_derivatives` returns (w, h(φ), …) with h a value, not a graph
    of the outer loss: h = ‖θ_T‖², θ_T = (1 − (1 − η)^T)a, w = v·2θ_T(1 − (1 − η)^T)."""
    eta, horizon = 0.5, 3
    problem = _tracking(SGD(lr=eta), horizon=horizon)
    a = torch.tensor([1.0, -2.0], dtype=F64)
    v = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]], dtype=F64)
    w, value, _ = directional_derivatives(problem, {"a": a}, v, start=0, init=None, chunk_size=2, mode=mode)
    k = 1 - (1 - eta) ** horizon
    assert not value.requires_grad and not w.requires_grad
    assert float(value) == pytest.approx(float(((k * a) ** 2).sum()), rel=1e-14)
    torch.testing.assert_close(w, v @ (2 * k * k * a), rtol=1e-14, atol=1e-15)


# -- 2. chunk losses whose θ-gradient is constant ---------------------------------------------
def _linear_chunk_problem(eta, horizon, c):
    """g = ½‖θ − a‖² + c·θ as two chunk losses, the second linear in θ (a constant gradient c
    that does not depend on φ: nothing to differentiate twice), SGD with step η."""
    sgd = SGD(lr=eta)

    def quad(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["a"]) ** 2).sum()

    def linear(theta, phi, t):
        return (c * theta["w"]).sum()

    grad = torch.func.grad(lambda th, phi, t: quad(th, phi, t) + linear(th, phi, t))

    def step(theta, state, phi, t):
        return sgd.update(grad(theta, phi, t), state, theta, eta)

    split = GradientStep(lambda th, phi, t: (quad(th, phi, t), linear(th, phi, t)), sgd, lambda phi, t: eta)
    theta0 = {"w": torch.zeros(2, dtype=F64)}
    return BilevelProblem(step, lambda th, phi: (th["w"] ** 2).sum(), (theta0, sgd.init(theta0)), horizon,
                          gradient_step=split)


@pytest.mark.parametrize("method", [ExactForwardUnroll(tangents="hvp"),
                                    ForwardGradientUnroll(num_directions=2, tangents="hvp")], ids=["fgu", "fg2u"])
def test_hvp_tangents_skip_a_chunk_whose_gradient_is_constant(method):
    """A chunk loss linear in θ has a gradient without a graph: it enters the step's
    gradient but has no Hessian-vector product. θ_T = (1 − (1 − η)^T)(a − c) and
    ∇_a h = 2θ_T(1 − (1 − η)^T) exactly (a double backward through that chunk raised)."""
    eta, horizon = 0.4, 3
    c = torch.tensor([0.5, -0.25], dtype=F64)
    phi = {"a": torch.tensor([1.0, -2.0], dtype=F64)}
    result = method(_linear_chunk_problem(eta, horizon, c), phi)
    k = 1 - (1 - eta) ** horizon
    theta = k * (phi["a"] - c)
    torch.testing.assert_close(result.theta["w"], theta, rtol=1e-14, atol=1e-15)
    if isinstance(method, ExactForwardUnroll):
        torch.testing.assert_close(result.grad["a"], 2 * k * theta, rtol=1e-13, atol=1e-15)
    else:
        v = result.diagnostics["directions"]
        torch.testing.assert_close(result.diagnostics["directional"], v @ (2 * k * theta), rtol=1e-13, atol=1e-15)


def test_hvp_tangents_of_a_step_whose_only_loss_is_linear_come_from_the_rate_alone():
    """g = c·θ (no Hessian at all) with a tuned rate η = φ_lr: θ_T = −Tηc, h = T²η²‖c‖²,
    dh/dη = 2T²η‖c‖², carried only by the rate's tangent."""
    horizon = 3
    c = torch.tensor([0.5, -1.5], dtype=F64)
    sgd = SGD(lr=1.0)
    loss = lambda th, phi, t: (c * th["w"]).sum()  # noqa: E731
    grad = torch.func.grad(loss)

    def step(theta, state, phi, t):
        return sgd.update(grad(theta, phi, t), state, theta, phi["lr"])

    theta0 = {"w": torch.zeros(2, dtype=F64)}
    problem = BilevelProblem(step, lambda th, phi: (th["w"] ** 2).sum(), (theta0, sgd.init(theta0)), horizon,
                             gradient_step=GradientStep(lambda th, phi, t: (loss(th, phi, t),), sgd,
                                                        lambda phi, t: phi["lr"]))
    eta = 0.3
    result = ExactForwardUnroll(tangents="hvp")(problem, {"lr": torch.tensor(eta, dtype=F64)})
    torch.testing.assert_close(result.theta["w"], -horizon * eta * c, rtol=1e-14, atol=1e-15)
    assert float(result.grad["lr"]) == pytest.approx(2 * horizon**2 * eta * float(c @ c), rel=1e-13)


@pytest.mark.parametrize("method", [ExactForwardUnroll(tangents="hvp"),
                                    ForwardGradientUnroll(num_directions=2, tangents="hvp")], ids=["fgu", "fg2u"])
def test_hvp_tangents_with_a_constant_tensor_rate(method):
    """A rate given as a tensor that does not depend on φ (``lr=torch.tensor(η)``) has no
    tangent: ∇_a h = 2θ_T(1 − (1 − η)^T), θ_T = (1 − (1 − η)^T)a exactly (differentiating
    that rate with respect to φ raised)."""
    eta, horizon = 0.4, 3
    problem = _tracking(SGD(lr=1.0), horizon=horizon, lr=torch.tensor(eta, dtype=F64))
    a = torch.tensor([1.0, -2.0], dtype=F64)
    result = method(problem, {"a": a})
    k = 1 - (1 - eta) ** horizon
    torch.testing.assert_close(result.theta["w"], k * a, rtol=1e-14, atol=1e-15)
    v = result.diagnostics.get("directions", torch.eye(2, dtype=F64))
    w = result.diagnostics.get("directional", flatten(result.grad))
    torch.testing.assert_close(w, v @ (2 * k * k * a), rtol=1e-13, atol=1e-15)


# -- 3. dtypes -------------------------------------------------------------------------------
def test_no_directions_is_an_empty_batch_of_the_requested_dtype():
    """A process left without directions (fewer directions than ranks) gets a `(0, N)`
    batch of φ's dtype, so its diagnostics and partial sum match the other ranks'."""
    for dtype in (F64, torch.float32):
        v = directions("gaussian", range(0), 5, seed=0, outer_step=0, dtype=dtype, device="cpu")
        assert v.shape == (0, 5) and v.dtype == dtype


@pytest.mark.parametrize("method", FORWARD, ids=FORWARD_IDS)
def test_forward_methods_on_a_float32_problem_stay_in_float32(method):
    """The tangents (FGU's identity, (FG)²U's directions) take φ's dtype: a float32
    problem gets a float32 ∇h, w_i and θ_T, equal to the closed form ∇_a h = 2θ_T(1 − (1 − η)^T),
    θ_T = (1 − (1 − η)^T)a to float32 precision (float64 tangents promoted them)."""
    eta, horizon = 0.5, 3
    g = lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum()  # noqa: E731
    f = lambda th, phi: (th["w"] ** 2).sum()  # noqa: E731
    problem = from_inner_loss(g, f, SGD(lr=eta), {"w": torch.zeros(2)}, horizon=horizon)
    a = torch.tensor([1.0, -2.0])
    result = method(problem, {"a": a})
    k = 1 - (1 - eta) ** horizon
    assert result.grad["a"].dtype == torch.float32 and result.theta["w"].dtype == torch.float32
    if isinstance(method, ExactForwardUnroll):
        torch.testing.assert_close(result.grad["a"], 2 * k * k * a, rtol=1e-6, atol=1e-6)
    else:
        v = result.diagnostics["directions"]
        assert v.dtype == torch.float32 and result.diagnostics["directional"].dtype == torch.float32
        torch.testing.assert_close(result.diagnostics["directional"], v @ (2 * k * k * a), rtol=1e-6, atol=1e-6)
