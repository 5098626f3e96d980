"""Edges of LRA and ReLoBRaLo found by a mutation audit: α = 1, a zero or non-finite loss, the
lookback draw at its boundary, a vanishing reference gradient; each against values by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.solvers import LRA, ReLoBRaLo


def test_lra_alpha_one_is_accepted_and_jumps_to_the_target():
    """α = 1 is in (0, 1]: the weight becomes λ̂ itself, λ̂ = λ_r max|∇L_r| / (λ_i mean|∇L_i|)."""
    w = LRA(alpha=1.0, every=1)
    state = {"weights": {"residual": 2.0, "boundary": 4.0}}
    norms = {"residual": (6.0, 1.0), "boundary": (1.0, 0.5)}
    state = w.update(state, 0, {}, lambda: norms, seed=0)
    assert state["weights"] == {"residual": 2.0, "boundary": 2.0 * 6.0 / (4.0 * 0.5)}
    for bad in (0.0, 1.0 + 1e-12, -0.5):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
            LRA(alpha=bad)


def test_relobralo_accepts_a_zero_loss():
    """A term whose loss is exactly 0 (an exact boundary fit) is finite and >= 0: it is
    balanced (its reference clamped at 1e-30), not refused."""
    alpha, tau, lookback, seed = 0.7, 1.0, 0.5, 2
    w = ReLoBRaLo(alpha=alpha, lookback=lookback, temperature=tau)
    history = [{"a": 0.0, "b": 2.0}, {"a": 0.0, "b": 1.0}, {"a": 3e-31, "b": 0.5}]
    state = w.init(["a", "b"])
    lam = dict(state["weights"])
    for step, losses in enumerate(history):
        state = w.update(state, step, losses, lambda: {}, seed=seed)
        if step == 0:
            continue
        rho = float(torch.rand((), generator=make_generator(seed, "relobralo", step)) < lookback)

        def bal(now, then):
            e = {n: math.exp(now[n] / (tau * max(then[n], 1e-30))) for n in now}
            return {n: 2 * e[n] / sum(e.values()) for n in now}

        start, last = bal(losses, history[0]), bal(losses, history[step - 1])
        lam = {n: alpha * (rho * lam[n] + (1 - rho) * start[n]) + (1 - alpha) * last[n] for n in lam}
        assert state["weights"] == pytest.approx(lam, rel=1e-12), step


@pytest.mark.parametrize("side", ["at", "above"])
def test_relobralo_lookback_draw_is_strictly_below_lookback(side):
    """ρ = 1 exactly when the stream's uniform u ∈ [0, 1) is < lookback (so P(ρ = 1) is
    lookback, also at u's float32 grid points): lookback = u gives ρ = 0, a float32 just
    above u gives ρ = 1. With α = 1 the update is ρλ(t−1) + (1−ρ)λ^bal(t, 0)."""
    seed, step = 4, 1
    u = float(torch.rand((), generator=make_generator(seed, "relobralo", step)))
    lookback = u if side == "at" else u + 2.0 ** -24  # a float32 above u (u is compared in float32)
    w = ReLoBRaLo(alpha=1.0, lookback=lookback, temperature=1.0)
    state = w.init(["a", "b"], {"a": 3.0, "b": 0.25})
    state = w.update(state, 0, {"a": 1.0, "b": 1.0}, lambda: {}, seed=seed)
    state = w.update(state, step, {"a": 2.0, "b": 1.0}, lambda: {}, seed=seed)
    if side == "at":  # ρ = 0: the balance from the start, 2·softmax(2, 1)
        e = math.exp(1.0)
        assert state["weights"] == pytest.approx({"a": 2 * e / (e + 1), "b": 2 / (e + 1)}, rel=1e-14)
    else:  # ρ = 1: the previous weights
        assert state["weights"] == {"a": 3.0, "b": 0.25}


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1e-3])
def test_relobralo_refuses_an_infinite_or_negative_loss(bad):
    """An infinite loss gives ratios inf/inf: refused like a negative or NaN one."""
    w = ReLoBRaLo()
    state = w.update(w.init(["residual", "boundary"]), 0, {"residual": 1.0, "boundary": 1.0},
                     lambda: {}, seed=0)
    with pytest.raises(ValueError, match=r"must be finite and >= 0; at step 2: boundary = "):
        w.update(state, 1, {"residual": 1.0, "boundary": bad}, lambda: {}, seed=0)


@pytest.mark.parametrize("every", [0, -1, 2.5, True])
def test_lra_every_must_be_a_whole_number_of_at_least_one(every):
    with pytest.raises(ValueError, match=r"must be a whole number >= 1"):
        LRA(every=every)
    assert LRA(every=1.0).every == 1 and isinstance(LRA(every=3.0).every, int)


def test_lra_with_alpha_one_survives_a_step_where_the_reference_gradient_vanishes():
    """α = 1 is allowed; a step where the reference term's gradient is exactly 0 gave
    λ̂_i = 0 and so λ_i = 0 (the term dropped), and the next update divided by
    0 · mean|∇L_i| (ZeroDivisionError). Such a step now leaves the weights; the next
    one jumps to its target 1·2/(1·0.5) = 4."""
    w = LRA(alpha=1.0, every=1)
    state = w.init(["residual", "boundary"])
    state = w.update(state, 0, {}, lambda: {"residual": (0.0, 0.0), "boundary": (1.0, 0.5)}, seed=0)
    assert state["weights"] == {"residual": 1.0, "boundary": 1.0}
    state = w.update(state, 1, {}, lambda: {"residual": (2.0, 1.0), "boundary": (1.0, 0.5)}, seed=0)
    assert state["weights"] == {"residual": 1.0, "boundary": 4.0}
