"""Fourth mutation audit of pinnlab.solvers.optim / weighting (gaps only)."""

import math

import pytest
import torch

from pinnlab.solvers import LRA, SGD, Adam, ReLoBRaLo
from pinnlab.solvers.optim import AdamState

F64 = torch.float64


@pytest.mark.parametrize("momentum", [-0.5, -1e-9])
def test_sgd_refuses_a_negative_momentum(momentum):
    """μ ∈ [0, 1): a negative μ (an oscillating heavy ball) is refused, not run."""
    with pytest.raises(ValueError, match="^momentum must be in"):
        SGD(momentum=momentum)


def test_adam_refuses_a_bool_beta():
    """β₁ = False is 0 to Python but not a rate: refused like β₂ = True."""
    with pytest.raises(ValueError, match="^b1 must be in"):
        Adam(b1=False)
    with pytest.raises(ValueError, match="^b2 must be in"):
        Adam(b2=False)


def test_adam_state_from_dict_refuses_keys_of_another_optimizer():
    """An Adam checkpoint state with an SGD momentum buffer in it is refused, not read."""
    w = torch.ones(3, dtype=F64)
    data = {"count": torch.tensor(2), "mu/w": w, "nu/w": w, "momentum/w": w}
    with pytest.raises(ValueError, match=r"has \['momentum/w'\], not keys of Adam's state"):
        Adam().state_from_dict(data)
    assert Adam().state_from_dict({k: v for k, v in data.items() if k != "momentum/w"}).count == 2


def test_adam_refuses_a_second_moment_of_another_dtype():
    """The second-moment buffers are checked like the first: a float32 ν for float64
    parameters is refused (it gave float32 moments back)."""
    params = {"w": torch.ones(3, dtype=F64)}
    state = Adam().init(params)
    bad = AdamState(0, state.mu, {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"the Adam state's 'w' is float32 \(3,\), the parameter float64 \(3,\)"):
        Adam().update({"w": torch.ones(3, dtype=F64)}, bad, params, 0.1)


def test_adam_reverse_mode_derivative_at_a_zero_gradient_is_lr_over_eps():
    """First Adam step, θ' = θ − η g/(|g| + ε) (bias corrections cancel). At g = 0 the
    derivative of √v is taken as 0, so dθ'/dg = −η/ε exactly (−100 here); the plain square
    root gave ∞·0 = NaN in reverse mode. At g = 2: dθ'/dg = −η ε/(|g| + ε)²."""
    opt = Adam(lr=0.1, b1=0.9, b2=0.99, eps=1e-3)
    params = {"w": torch.ones(2, dtype=F64)}
    g = torch.tensor([0.0, 2.0], dtype=F64, requires_grad=True)
    new, _ = opt.update({"w": g}, opt.init(params), params, 0.1)
    assert new["w"].requires_grad  # the recorded path
    (dg,) = torch.autograd.grad(new["w"].sum(), g)
    expected = [-0.1 / 1e-3, -0.1 * 1e-3 / (2.0 + 1e-3) ** 2]
    assert dg.tolist() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("lookback", [1.5, -0.1])
def test_relobralo_refuses_a_lookback_outside_the_unit_interval(lookback):
    """lookback is E[ρ] of a Bernoulli draw: outside [0, 1] it is refused."""
    with pytest.raises(ValueError, match=r"^lookback = .*: must be in \[0, 1\]"):
        ReLoBRaLo(lookback=lookback)


@pytest.mark.parametrize("make", [LRA, ReLoBRaLo], ids=["lra", "relobralo"])
def test_adaptive_weights_refuse_an_infinite_start(make):
    """Starting weights must be finite: λ = ∞ is refused at init (as 0 and < 0 are)."""
    with pytest.raises(ValueError, match="must be finite and > 0: boundary = inf"):
        make().init(["residual", "boundary"], {"boundary": math.inf})


def test_relobralo_balances_the_residual_on_loss_biased_only_for_a_residual_term():
    """Without a residual term, a reported loss_biased metric adds no key: each term
    is balanced on its own loss."""
    metrics = {"loss_biased": 1.0, "loss_boundary": 2.0, "loss_data": 3.0}
    assert ReLoBRaLo().loss_keys(["boundary", "data"], metrics) == {
        "boundary": "loss_boundary", "data": "loss_data"}


def test_relobralo_update_uses_only_the_weighted_terms_losses():
    """Losses of names that are not weighted terms are ignored: the weights keep the
    terms' names and equal those computed without the extra entry."""
    w = ReLoBRaLo(alpha=0.5, lookback=0.0)
    history = [{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 3.0}]
    plain = extra = w.init(["a", "b"])
    for step, losses in enumerate(history):
        plain = w.update(plain, step, losses, lambda: {}, seed=0)
        extra = w.update(extra, step, {**losses, "c": 7.0}, lambda: {}, seed=0)
    assert extra["weights"] == plain["weights"]
    # ρ = 0: λ = α λ^bal(t, 0) + (1 − α) λ^bal(t, t−1), and t − 1 = 0 here: λ = 2 softmax(0.5, 1.5)
    e = [math.exp(0.5), math.exp(1.5)]
    assert list(plain["weights"].values()) == pytest.approx([2 * x / sum(e) for x in e], rel=1e-12)


def test_adam_tangent_is_itself_differentiable_where_v_is_zero():
    """Adam.tangent's first step from a zero state along ġ: θ̇' = −η ε ġ/(|g| + ε)², which
    is −η ġ/ε where g = 0 (√v's derivative taken as 0). Reverse mode through the tangent
    gives the same coefficients, with no NaN from the v = 0 coordinate (the guarded
    division inside the where)."""
    eta, eps = 0.1, 1e-3
    opt = Adam(lr=eta, b1=0.9, b2=0.99, eps=eps)
    params = {"w": torch.ones(2, dtype=F64)}
    state = opt.init(params)
    zero = AdamState(0, {"w": torch.zeros(1, 2, dtype=F64)}, {"w": torch.zeros(1, 2, dtype=F64)})
    g_dot = torch.tensor([[1.0, 1.0]], dtype=F64, requires_grad=True)
    _, _, new_dot, _ = opt.tangent({"w": torch.tensor([0.0, 2.0], dtype=F64)}, state, params, eta,
                                   {"w": g_dot}, zero, {"w": torch.zeros(1, 2, dtype=F64)}, None)
    expected = [-eta / eps, -eta * eps / (2.0 + eps) ** 2]
    assert new_dot["w"][0].tolist() == pytest.approx(expected, rel=1e-9)
    (d,) = torch.autograd.grad(new_dot["w"].sum(), g_dot)
    assert d[0].tolist() == pytest.approx(expected, rel=1e-9)
