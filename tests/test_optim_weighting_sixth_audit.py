"""Sixth mutation audit of pinnlab.solvers.optim / weighting (gaps only): an optimizer state
holding tensors of more parameters than it is given, ReLoBRaLo's first update at a step
other than 0, the temperature dividing a zero reference loss clamped at 1e-30, and Adam's
β that is not a Python number."""

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.solvers import SGD, Adam, ReLoBRaLo

F64 = torch.float64


@pytest.mark.parametrize("opt", [Adam(lr=0.1), SGD(lr=0.1, momentum=0.5)], ids=["adam", "momentum"])
def test_a_state_with_tensors_of_more_parameters_is_refused(opt):
    """A state made by init() for {w, b} is not the state of {w} alone: update refuses it
    (the keys must be the parameters', not merely include them) instead of silently
    stepping w and dropping b's moments from the state it returns."""
    params = {"w": torch.tensor([1.0, 2.0], dtype=F64), "b": torch.tensor([0.5], dtype=F64)}
    state = opt.init(params)
    only_w = {"w": params["w"]}
    with pytest.raises(ValueError, match=r"state's tensors \['b', 'w'\] are not the parameters \['w'\]"):
        opt.update({"w": torch.ones(2, dtype=F64)}, state, only_w, 0.1)
    # the state of exactly these parameters is accepted: θ − η·g for SGD's first step,
    # θ − η·sign(g)·|g|/(|g| + ε) for Adam's
    new, _ = opt.update({"w": torch.ones(2, dtype=F64)}, opt.init(only_w), only_w, 0.1)
    step = 1.0 if isinstance(opt, SGD) else 1.0 / (1.0 + opt.eps)
    torch.testing.assert_close(new["w"], params["w"] - 0.1 * step, rtol=1e-15, atol=0)


def test_relobralo_first_update_at_a_later_step_only_records_the_losses():
    """The first update records L(0) whatever its step is (a run that continues a state
    trained without weighting starts ReLoBRaLo from a fresh state at step k > 0): it keeps
    the configured weights; the next update follows
    λ = α[ρλ(t−1) + (1−ρ)λ^bal(t, 0)] + (1−α)λ^bal(t, t−1) with ρ from (seed, "relobralo", step)
    (here λ^bal(t, 0) = λ^bal(t, t−1), both against the recorded losses)."""
    alpha, tau, lookback, seed, first = 0.6, 0.5, 0.5, 5, 7
    w = ReLoBRaLo(alpha=alpha, lookback=lookback, temperature=tau)
    start = {"a": 2.0, "b": 0.5}
    state = w.update(w.init(["a", "b"], start), first, {"a": 1.0, "b": 4.0}, lambda: {}, seed=seed)
    assert state == {"weights": start, "initial": {"a": 1.0, "b": 4.0}, "previous": {"a": 1.0, "b": 4.0}}

    state = w.update(state, first + 1, {"a": 0.5, "b": 2.0}, lambda: {}, seed=seed)
    # logits L(t)/(τ L(t')) = (0.5/0.5, 2/2) = (1, 1): the balance is (1, 1)
    rho = float(torch.rand((), generator=make_generator(seed, "relobralo", first + 1)) < lookback)
    expected = {n: alpha * (rho * start[n] + (1 - rho) * 1.0) + (1 - alpha) * 1.0 for n in start}
    assert state["weights"] == pytest.approx(expected, rel=1e-15)
    assert state["initial"] == {"a": 1.0, "b": 4.0} and state["previous"] == {"a": 0.5, "b": 2.0}


def test_relobralo_temperature_divides_a_zero_reference_clamped_at_1e_minus_30():
    """A term whose loss was exactly 0 has its reference clamped at 1e-30 and the
    temperature still divides: logit = L(t)/(τ·1e-30). With τ = 0.5, losses (0, 1) then
    (3e-31, 1), α = 0: λ = 2 softmax(3e-31/(0.5e-30), 1/(0.5·1)) = 2 softmax(0.6, 2)
    (clamping τ·L(t') instead gave softmax(0.3, 2))."""
    w = ReLoBRaLo(alpha=0.0, lookback=0.5, temperature=0.5)
    state = w.update(w.init(["a", "b"]), 0, {"a": 0.0, "b": 1.0}, lambda: {}, seed=0)
    state = w.update(state, 1, {"a": 3e-31, "b": 1.0}, lambda: {}, seed=0)
    ea, eb = math.exp(0.6), math.exp(2.0)
    assert state["weights"] == pytest.approx({"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)}, rel=1e-12)


@pytest.mark.parametrize("value", ["0.9", "9e-1", None, torch.tensor(0.9)], ids=["str", "yaml-exponent", "none", "tensor"])
@pytest.mark.parametrize("name", ["b1", "b2"])
def test_adam_refuses_a_beta_that_is_not_a_python_number(name, value):
    """β must be a Python int or float in [0, 1), refused with the ValueError naming it
    otherwise: a string (PyYAML reads ``9e-1`` as one) or None raised a bare TypeError from
    the comparison, and a tensor β made the bias corrections 1 − βᵗ float32 tensors."""
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\), got "):
        Adam(**{name: value})
