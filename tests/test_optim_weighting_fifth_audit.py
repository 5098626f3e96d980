"""Fifth mutation audit of pinnlab.solvers.optim / weighting (gaps only): Adam differentiated
with respect to its state alone, LRA's update leaving the caller's state, ReLoBRaLo's τ = 0, SGD reading Adam's checkpoint state."""

import copy
import math

import pytest
import torch

from pinnlab.solvers import LRA, SGD, Adam, ReLoBRaLo
from pinnlab.solvers.optim import AdamState

F64 = torch.float64


@pytest.mark.parametrize("moment", ["mu", "nu"])
def test_adam_is_differentiable_with_respect_to_its_state_alone(moment):
    """The update is differentiable with respect to the state too (the class docstring): with
    plain gradients, parameters and rate and only one moment recorded, the second step
    θ' = θ − η (m/c₁)/(√(v/c₂) + ε), m = β₁m₀ + (1−β₁)g, v = β₂ν₀ + (1−β₂)g², c_i = 1 − β_iᵗ, has
    ∂θ'/∂m₀ = −η β₁/(c₁(√(v/c₂) + ε)) and ∂θ'/∂ν₀ = η (m/c₁) β₂/((√(v/c₂) + ε)² 2c₂√(v/c₂)).
    (Only the recorded moments made the update take the out-of-place path: checking the
    gradients, parameters and rate alone sent it to the in-place one, which raised.)"""
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-3
    opt = Adam(lr=lr, b1=b1, b2=b2, eps=eps)
    params = {"w": torch.tensor([1.0, -2.0], dtype=F64)}
    g = torch.tensor([0.5, -1.0], dtype=F64)
    mu0 = torch.tensor([0.2, -0.1], dtype=F64, requires_grad=moment == "mu")
    nu0 = torch.tensor([0.04, 0.09], dtype=F64, requires_grad=moment == "nu")
    new, state = opt.update({"w": g}, AdamState(1, {"w": mu0}, {"w": nu0}), params, lr)

    c1, c2 = 1 - b1**2, 1 - b2**2
    m, v = b1 * mu0.detach() + (1 - b1) * g, b2 * nu0.detach() + (1 - b2) * g * g
    root = torch.sqrt(v / c2)
    assert state.count == 2
    torch.testing.assert_close(new["w"].detach(), params["w"] - lr * (m / c1) / (root + eps), rtol=1e-14, atol=0)
    (d,) = torch.autograd.grad(new["w"].sum(), mu0 if moment == "mu" else nu0)
    if moment == "mu":
        expected = -lr * b1 / (c1 * (root + eps))
    else:
        expected = lr * (m / c1) * b2 / ((root + eps) ** 2 * 2 * c2 * root)
    torch.testing.assert_close(d, expected, rtol=1e-12, atol=0)


def test_lra_update_leaves_the_given_state_unchanged():
    """LRA returns a new state and leaves the one it was given (a checkpointed or logged
    state keeps the weights of its step): λ_b = (1 − α)λ_b + α λ_r max|∇L_r|/(λ_b mean|∇L_b|)
    = 0.5·2 + 0.5·(3·4)/(2·0.5) = 7 in the new state, λ_b = 2 still in the old."""
    w = LRA(alpha=0.5, every=1)
    state = w.init(["residual", "boundary"], {"residual": 3.0, "boundary": 2.0})
    before = copy.deepcopy(state)
    new = w.update(state, 0, {}, lambda: {"residual": (4.0, 1.0), "boundary": (1.0, 0.5)}, seed=0)
    assert new["weights"] == {"residual": 3.0, "boundary": 7.0}
    assert state == before


def test_relobralo_refuses_a_zero_temperature_and_follows_a_small_one():
    """τ must be > 0: τ = 0 is refused when built (it divided by 0 at the second update).
    A small τ = 0.25 sharpens the balance by hand: after losses (1, 1) then (2, 1) with α = 0
    the weights are λ^bal(t, t−1) = 2 softmax(2/τ, 1/τ)."""
    with pytest.raises(ValueError, match=r"^temperature = 0.0: must be > 0"):
        ReLoBRaLo(temperature=0.0)
    w = ReLoBRaLo(alpha=0.0, lookback=0.5, temperature=0.25)
    state = w.init(["a", "b"])
    state = w.update(state, 0, {"a": 1.0, "b": 1.0}, lambda: {}, seed=3)
    state = w.update(state, 1, {"a": 2.0, "b": 1.0}, lambda: {}, seed=3)
    ea, eb = math.exp(8.0), math.exp(4.0)
    assert state["weights"] == pytest.approx({"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)}, rel=1e-14)


def test_sgd_state_from_dict_refuses_an_adam_state():
    """A checkpointed Adam state read by plain SGD is refused (it came back as an empty SGD
    state, silently dropping the moments); SGD's own momentum buffers still read back."""
    params = {"w": torch.ones(3, dtype=F64)}
    adam_data = Adam().state_to_dict(Adam().init(params))
    with pytest.raises(ValueError, match=r"has \['count', 'mu/w', 'nu/w'\], not keys of SGD's state"):
        SGD().state_from_dict(adam_data)
    sgd = SGD(momentum=0.5)
    data = sgd.state_to_dict(sgd.init(params))
    assert sgd.state_from_dict(data).momentum.keys() == {"w"}
