"""Edges of the functional optimizers and their tangents found by a mutation audit: a rate that
autograd records or vmap batches, Adam's tangent where v = 0, momentum at its bound, state checks,
the shorthands' defaults, a constant rate's tangent; against closed forms and the generic jvp."""

from __future__ import annotations

import pytest
import torch

from pinnlab.solvers import SGD, Adam
from pinnlab.solvers.optim import AbstractOptimizer, AdamState, adam, sgd

F64 = torch.float64


def _adam_first_step(g, eps):
    """Adam's first step m̂/(√v̂ + ε) = g/(|g| + ε) (m̂ = g, v̂ = g² after bias correction)."""
    return g / (g.abs() + eps)


def test_adam_learning_rate_that_autograd_records_takes_the_out_of_place_path():
    """Plain gradients, parameters and state but an ``lr`` that requires grad (a tuned rate
    under autograd) or is batched by vmap: the update must be recorded for ``lr`` too
    (the in-place path raises for out= under autograd and for vmap), with
    d θ_1/d η = −g/(|g| + ε)."""
    opt = Adam(eps=1e-3)
    g = {"w": torch.tensor([0.5, -3.0, 0.0, 2e-3], dtype=F64)}
    params = {"w": torch.tensor([1.0, -2.0, 0.25, 4.0], dtype=F64)}
    lr = torch.tensor(0.1, dtype=F64, requires_grad=True)
    new, _ = opt.update(g, opt.init(params), params, lr)
    step = _adam_first_step(g["w"], 1e-3)
    torch.testing.assert_close(new["w"].detach(), params["w"] - 0.1 * step, rtol=1e-15, atol=0)
    (d,) = torch.autograd.grad(new["w"] @ torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64), lr)
    torch.testing.assert_close(d, -(step * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)).sum(),
                               rtol=1e-14, atol=0)
    rates = torch.tensor([0.1, 0.2, 0.5], dtype=F64)
    batched = torch.func.vmap(lambda r: opt.update(g, opt.init(params), params, r)[0]["w"])(rates)
    torch.testing.assert_close(batched, params["w"] - rates[:, None] * step, rtol=1e-15, atol=1e-15)


def test_adam_closed_form_tangent_takes_sqrt_v_derivative_as_zero_where_v_is_zero():
    """Where v = 0 (g = 0 now and before) the closed-form tangent takes d√v = 0, as the
    forward-mode derivative of :meth:`Adam.update` does (its square root has derivative 0
    at 0), even for a state tangent that moves v there and a first moment that is not 0
    (reachable when g² underflows): the two agree to rounding."""
    opt = Adam(b1=0.8, b2=0.9, eps=1e-2)
    params = {"w": torch.tensor([1.0, -1.0, 0.5], dtype=F64)}
    state = AdamState(2, {"w": torch.tensor([0.3, -0.2, 0.1], dtype=F64)},
                      {"w": torch.tensor([0.0, 0.04, 0.0], dtype=F64)})
    grads = {"w": torch.tensor([0.0, 0.5, 0.0], dtype=F64)}
    g = torch.Generator().manual_seed(3)

    def batch():
        return {"w": torch.randn(2, 3, generator=g, dtype=F64)}

    grads_dot, params_dot = batch(), batch()
    state_dot = AdamState(2, batch(), {"w": torch.tensor([[1.0, 0.5, 2.0], [-0.5, 1.0, 3.0]], dtype=F64)})
    lr, lr_dot = torch.tensor(0.1, dtype=F64), torch.tensor([1.0, -2.0], dtype=F64)
    ours = opt.tangent(grads, state, params, lr, grads_dot, state_dot, params_dot, lr_dot)
    generic = AbstractOptimizer.tangent(opt, grads, state, params, lr, grads_dot, state_dot, params_dot, lr_dot)
    torch.testing.assert_close(ours[2]["w"], generic[2]["w"], rtol=1e-12, atol=1e-12)
    # the step at a v = 0 coordinate: θ' = θ − η m̂/ε, so θ'_dot = θ_dot − η m̂_dot/ε − η_dot m̂/ε
    c1 = 1 - 0.8 ** 3
    mu, mu_dot = 0.8 * 0.3, 0.8 * state_dot.mu["w"][:, 0] + 0.2 * grads_dot["w"][:, 0]
    expected = params_dot["w"][:, 0] - 0.1 * (mu_dot / c1) / 1e-2 - lr_dot * (mu / c1) / 1e-2
    torch.testing.assert_close(ours[2]["w"][:, 0], expected, rtol=1e-12, atol=1e-12)


def test_sgd_momentum_one_is_refused_and_just_below_it_is_heavy_ball():
    """μ ∈ [0, 1): μ = 1 never forgets a gradient. Just below it, two steps by hand:
    m_1 = g_1, m_2 = μ g_1 + g_2, θ_2 = θ_0 − η(m_1 + m_2)."""
    with pytest.raises(ValueError, match=r"^momentum must be in \[0, 1\), got 1"):
        SGD(momentum=1.0)
    mu, eta = 1.0 - 2.0 ** -20, 0.25
    opt = SGD(lr=eta, momentum=mu)
    theta = {"w": torch.tensor([1.0, 2.0], dtype=F64)}
    g1, g2 = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([2.0, 4.0], dtype=F64)
    p, st = opt.update({"w": g1}, opt.init(theta), theta, eta)
    p, st = opt.update({"w": g2}, st, p, eta)
    torch.testing.assert_close(st.momentum["w"], mu * g1 + g2, rtol=1e-15, atol=0)
    torch.testing.assert_close(p["w"], theta["w"] - eta * (g1 + mu * g1 + g2), rtol=1e-15, atol=0)


def test_optimizer_shorthands_have_the_classes_defaults():
    assert adam() == Adam() == Adam(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8)
    assert sgd() == SGD() == SGD(lr=1e-2, momentum=0.0, nesterov=False)
    assert adam(2e-3, 0.8, 0.95, 1e-6) == Adam(lr=2e-3, b1=0.8, b2=0.95, eps=1e-6)
    assert sgd(0.5, 0.9, True) == SGD(lr=0.5, momentum=0.9, nesterov=True)


def test_sgd_momentum_state_must_match_the_parameters():
    """A heavy-ball buffer of another dtype, shape or set of names is refused (a float32
    buffer made float64 parameters come back as float32 buffers); plain SGD has no state."""
    opt = SGD(lr=0.1, momentum=0.5)
    params = {"w": torch.ones(3, dtype=F64)}
    grads = {"w": torch.full((3,), 2.0, dtype=F64)}
    with pytest.raises(ValueError, match=r"the SGD state's 'w' is float32 \(3,\), the parameter float64 \(3,\)"):
        opt.update(grads, opt.init({"w": torch.ones(3)}), params, 0.1)
    with pytest.raises(ValueError, match=r"the SGD state's 'w' is float64 \(4,\), the parameter float64 \(3,\)"):
        opt.update(grads, opt.init({"w": torch.ones(4, dtype=F64)}), params, 0.1)
    with pytest.raises(ValueError, match=r"the SGD state's tensors \['v'\] are not the parameters \['w'\]"):
        opt.update(grads, opt.init({"v": torch.ones(3, dtype=F64)}), params, 0.1)
    with pytest.raises(TypeError, match=r"SGD.update needs a SGDState \(from SGD.init\), got AdamState"):
        opt.update(grads, Adam().init(params), params, 0.1)
    new, state = SGD(lr=0.1).update(grads, SGD(lr=0.1).init(params), params, 0.1)
    assert state.momentum == {} and torch.equal(new["w"], torch.full((3,), 0.8, dtype=F64))


@pytest.mark.parametrize("opt", [SGD(lr=0.1, momentum=0.5), Adam(b1=0.8, b2=0.95)], ids=["momentum", "adam"])
def test_generic_tangent_of_a_constant_rate_has_no_rate_term(opt):
    """``lr_dot = None`` is a constant rate: the generic (jvp) tangent equals the one with a
    zero rate tangent, and the closed form's, which is θ_dot − η·direction_dot alone."""
    g = torch.Generator().manual_seed(5)
    params = {"w": torch.randn(4, generator=g, dtype=F64)}
    state = opt.init(params)
    params, state = opt.update({"w": torch.randn(4, generator=g, dtype=F64)}, state, params, 0.1)
    grads = {"w": torch.randn(4, generator=g, dtype=F64)}
    dots = [{"w": torch.randn(2, 4, generator=g, dtype=F64)} for _ in range(2)]
    state_dot = type(state)(*[{"w": torch.randn(2, 4, generator=g, dtype=F64)} if isinstance(x, dict) else x
                              for x in state])
    args = (grads, state, params, 0.1, dots[0], state_dot, dots[1])
    generic = AbstractOptimizer.tangent(opt, *args, None)
    zero = AbstractOptimizer.tangent(opt, *args, torch.zeros(2, dtype=F64))
    closed = opt.tangent(*args, None)
    torch.testing.assert_close(generic[2]["w"], zero[2]["w"], rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(generic[2]["w"], closed[2]["w"], rtol=1e-12, atol=1e-14)
