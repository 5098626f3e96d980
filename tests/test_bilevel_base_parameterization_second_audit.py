"""Second mutation audit of pinnlab/bilevel/base.py and parameterization.py.

Pins what the earlier tests left open: ``usable()`` (every value finite, and > 0 for
Log), Logit's bounds kept in float64, the GradientStep that reparameterize() builds
(constrained φ for its losses and its rate, the same optimizer), GradientStep.update's
step index, flatten's order (φ's own key order), and the checks of BilevelProblem and
check_phi.
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.bilevel import BilevelProblem, BlackBox, ExactForwardUnroll, ReverseUnroll, hypergradient
from pinnlab.bilevel.adapters import from_inner_loss
from pinnlab.bilevel.base import GradientStep, check_phi, flatten, unflatten
from pinnlab.bilevel.parameterization import Identity, Log, Logit, reparameterize
from pinnlab.solvers import SGD

from .bilevel.problems import F64, Ridge


def test_usable_needs_every_value_finite():
    """One NaN or inf among finite values makes a value unusable (Identity and Logit)."""
    for par in (Identity(), Logit(0.0, 2.0)):
        assert par.usable(torch.tensor([1.0, 0.5], dtype=F64))
        assert not par.usable(torch.tensor([1.0, math.nan], dtype=F64))
        assert not par.usable(torch.tensor([math.inf, 0.5], dtype=F64))


def test_log_usable_needs_every_value_finite_and_positive():
    """exp(u) underflowing to 0 or overflowing to inf is unusable; tiny positive values are fine."""
    par = Log()
    assert par.usable(torch.tensor([1e-300, 2.0], dtype=F64))
    assert not par.usable(torch.tensor([1.0, 0.0], dtype=F64))
    assert not par.usable(par.forward(torch.tensor([0.0, -800.0], dtype=F64)))
    assert not par.usable(torch.tensor([1.0, math.inf], dtype=F64))
    assert not par.usable(par.forward(torch.tensor([0.0, 800.0], dtype=F64)))


def test_logit_forward_keeps_float64_bounds():
    """Logit(0.1, 0.7) on float64 u: forward(0) = 0.4 and forward(log 3) = 0.1 + 0.6·3/4 = 0.55
    to 1e-15 (bounds rounded to float32 would be off by ~1e-9), dtype float64."""
    par = Logit(0.1, 0.7)
    value = par.forward(torch.tensor([0.0, math.log(3.0)], dtype=F64))
    assert value.dtype == F64
    torch.testing.assert_close(value, torch.tensor([0.1 + 0.6 * 0.5, 0.1 + 0.6 * 0.75], dtype=F64),
                               rtol=1e-15, atol=0)


def test_gradient_step_update_passes_the_step_index_to_rate():
    """update() applies rate(φ, t) at the step t it is given: θ − rate·g with rate = a/(1 + t)."""
    seen = []

    def rate(phi, t):
        seen.append(t)
        return phi["a"] / (1 + t)

    step = GradientStep(lambda theta, phi, t: (), SGD(lr=1.0), rate)
    theta = {"w": torch.tensor([1.0, 2.0], dtype=F64)}
    grads = {"w": torch.tensor([4.0, -2.0], dtype=F64)}
    new, _ = step.update(grads, SGD(lr=1.0).init(theta), theta, {"a": torch.tensor(3.0, dtype=F64)}, 2)
    assert seen == [2]
    torch.testing.assert_close(new["w"], torch.tensor([1.0 - 4.0, 2.0 + 2.0], dtype=F64), rtol=1e-15, atol=0)


def _lr_and_mix_problem():
    """g = ½‖w − m·target‖², f = ½‖w‖², inner lr = φ["lr"]: both hyperparameters matter."""
    target = torch.tensor([1.0, -2.0], dtype=F64)

    def inner(theta, phi, t):
        return 0.5 * ((theta["w"] - phi["m"] * target) ** 2).sum()

    def outer(theta, phi):
        return 0.5 * (theta["w"] ** 2).sum()

    optimizer = SGD(lr=0.1)
    theta0 = {"w": torch.tensor([0.5, 0.5], dtype=F64)}
    problem = from_inner_loss(inner, outer, optimizer, theta0, horizon=3, lr=lambda phi: phi["lr"])
    return problem, optimizer


def test_reparameterized_gradient_step_sees_the_constrained_phi():
    """reparameterize() hands forward(u) to the gradient step's losses and rate and keeps its
    optimizer: step_size(u) = exp(u_lr), and the hvp forward-mode u-gradient (which runs the
    split step) equals the reverse one and the φ-gradient times dφ/du (chain rule), to 1e-12."""
    problem, optimizer = _lr_and_mix_problem()
    par = {"lr": Log(), "m": Logit(0.0, 2.0)}
    u = {"lr": torch.tensor(math.log(0.2), dtype=F64), "m": torch.tensor(0.4, dtype=F64)}
    sig = torch.sigmoid(u["m"])
    phi = {"lr": torch.exp(u["lr"]), "m": 2.0 * sig}
    moved = reparameterize(problem, par)
    assert moved.gradient_step.optimizer is optimizer
    assert moved.step_size(u, 0) == pytest.approx(0.2, rel=1e-15)
    g_phi = hypergradient(problem, phi, ReverseUnroll()).grad
    g_rev = flatten(hypergradient(moved, u, ReverseUnroll()).grad)
    g_fwd = flatten(hypergradient(moved, u, ExactForwardUnroll(tangents="hvp")).grad)
    chain = torch.stack([g_phi["lr"] * phi["lr"], g_phi["m"] * 2.0 * sig * (1 - sig)])
    assert float(chain.abs().min()) > 1e-3
    torch.testing.assert_close(g_rev, chain, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_fwd, chain, rtol=1e-12, atol=1e-14)


def test_flatten_follows_phi_key_order_and_unflatten_inverts_it():
    """flatten concatenates in φ's own key order (not sorted), row-major, keeping float64;
    unflatten of it gives back each tensor, shape and dtype."""
    tree = {"b": torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64), "a": torch.tensor(5.0, dtype=F64)}
    flat = flatten(tree)
    assert flat.dtype == F64
    assert flat.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    back = unflatten(flat, tree)
    assert list(back) == ["b", "a"]
    for key in tree:
        assert back[key].dtype == F64
        torch.testing.assert_close(back[key], tree[key], rtol=0, atol=0)


def test_check_phi_refuses_an_integer_tensor():
    """An integer φ entry (no gradient possible) is refused with its dtype named."""
    with pytest.raises(TypeError, match=r"φ\['n'\] must be a floating-point tensor, got torch.int64"):
        check_phi({"a": torch.zeros(1, dtype=F64), "n": torch.tensor([1, 2])})
    with pytest.raises(TypeError, match=r"φ\['log_reg'\] must be a floating-point tensor"):
        hypergradient(Ridge(features=2).problem(horizon=1), {"log_reg": torch.tensor([0, 1])}, ReverseUnroll())


def test_inner_lr_with_a_gradient_step_is_refused():
    """A problem with both an inner_lr and a gradient_step would ignore one of the two rates."""
    full = Ridge(features=2).problem(horizon=1)
    with pytest.raises(ValueError, match="inner_lr is for a problem without gradient_step"):
        BilevelProblem(full.inner_step, full.outer_loss, full.init, full.horizon, inner_lr=0.3,
                       gradient_step=full.gradient_step)


def test_reparameterized_black_box_keeps_its_horizon_and_sees_the_constrained_phi():
    """A BlackBox of horizon 4 stays of horizon 4 (its evaluation count is counted in inner
    steps) and its objective receives forward(u) = exp(u)."""
    seen = []

    def objective(phi):
        seen.append(float(phi["a"]))
        return (phi["a"] - 1.0) ** 2

    moved = reparameterize(BlackBox(objective, horizon=4), {"a": Log()})
    assert isinstance(moved, BlackBox) and moved.horizon == 4
    value = moved.objective({"a": torch.tensor(math.log(3.0), dtype=F64)})
    assert seen == [pytest.approx(3.0, rel=1e-15)]
    assert float(value) == pytest.approx(4.0, rel=1e-14)
