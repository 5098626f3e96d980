"""Sixth mutation audit of the forward-mode hypergradients: what one rank of several does,
the refusal of an unknown tangent mode, and the dtype of every direction kind.

``torch.distributed`` is replaced by in-process stand-ins (``rank_and_world``,
``all_reduce_sum`` and ``broadcast_value`` of :mod:`pinnlab.bilevel.distributed`), so a
single process plays rank r of a world of size W. The references are the float64
closed-form loop of the fifth audit (diagonal quadratic inner loss, gradient descent).
"""

from __future__ import annotations

import pytest
import torch

import pinnlab.bilevel.distributed as dist_helpers
from pinnlab.bilevel import ForwardGradientUnroll, from_inner_loss
from pinnlab.bilevel.forward import directional_derivatives, directions
from pinnlab.solvers import SGD

from .test_bilevel_forward_reverse_fifth_audit import ETA, F64, PHI, _close, _outer, _problem, _reference

HORIZON = 3


def _as_rank(monkeypatch, rank, world, rank0_value=None):
    """Play rank ``rank`` of ``world``: the all-reduce returns this rank's share, the
    broadcast returns ``rank0_value`` (what rank 0 would send) and records each call."""
    calls = []

    def broadcast(value):
        calls.append(value)
        return rank0_value

    monkeypatch.setattr(dist_helpers, "rank_and_world", lambda: (rank, world))
    monkeypatch.setattr(dist_helpers, "all_reduce_sum", lambda x: x)
    monkeypatch.setattr(dist_helpers, "broadcast_value", broadcast)
    return calls


@pytest.mark.parametrize(("tangents", "passes"), [("hvp", 0), ("jvp", 1)])
def test_a_rank_counts_the_inner_steps_of_its_own_directions_only(monkeypatch, tangents, passes):
    """Rank 1 of 2 with b = 3 holds direction 1 only: it runs T·(1 + primal) inner steps,
    not T·(b + primal) (its diagnostics are its own work, the other rank did the rest)."""
    problem = _problem(HORIZON)
    single = ForwardGradientUnroll(num_directions=3, distributed=False, tangents=tangents)(problem, PHI, seed=2)
    _as_rank(monkeypatch, 1, 2, rank0_value=single.value)
    ranked = ForwardGradientUnroll(num_directions=3, tangents=tangents)(problem, PHI, seed=2)
    _close(ranked.diagnostics["directions"], single.diagnostics["directions"][[1]])
    assert ranked.diagnostics["inner_step_evaluations"] == HORIZON * (1 + passes)
    v, w = single.diagnostics["directions"][1], single.diagnostics["directional"][1]
    _close(ranked.grad["p"], w * v / 3)


@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
def test_a_rank_without_directions_only_unrolls_and_takes_rank_0s_value(monkeypatch, tangents):
    """Rank 2 of 3 with b = 2 holds no direction: its share of Σ w_i v_i is 0, it runs one
    primal unroll (T inner steps) from the given warm start for θ_T, and records rank 0's
    h(φ) from the broadcast (its own is None)."""
    problem = _problem(HORIZON)
    theta0 = torch.tensor([0.25, -0.5], dtype=F64)
    _, theta_t = _reference(PHI, HORIZON, theta0=theta0)
    h0 = float(_outer({"w": theta_t}, PHI))
    calls = _as_rank(monkeypatch, 2, 3, rank0_value=h0)
    result = ForwardGradientUnroll(num_directions=2, tangents=tangents)(
        problem, PHI, init=({"w": theta0}, SGD(lr=ETA).init({"w": theta0})), seed=1)
    assert result.diagnostics["directions"].shape == (0, 2)
    assert result.diagnostics["inner_step_evaluations"] == HORIZON
    _close(result.grad["p"], torch.zeros(2, dtype=F64))
    _close(result.theta["w"], theta_t)
    assert len(calls) == 1 and result.value == h0


@pytest.mark.parametrize("b", [1, 3])
def test_every_rank_of_two_records_rank_0s_value(monkeypatch, b):
    """World size 2 already broadcasts h(φ): rank 1 records rank 0's value, whether it
    holds a direction (b = 3) or none (b = 1)."""
    problem = _problem(HORIZON)
    single = ForwardGradientUnroll(num_directions=b, distributed=False)(problem, PHI, seed=0)
    rank0_value = single.value + 1.0  # distinguishable from rank 1's own h(φ)
    calls = _as_rank(monkeypatch, 1, 2, rank0_value=rank0_value)
    result = ForwardGradientUnroll(num_directions=b)(problem, PHI, seed=0)
    assert len(calls) == 1 and result.value == rank0_value


def test_directional_derivatives_refuse_an_unknown_tangent_mode():
    """A misspelt ``mode`` is refused rather than silently taking the jvp path."""
    v = torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match="tangents must be 'auto', 'hvp' or 'jvp'"):
        directional_derivatives(_problem(HORIZON), PHI, v, start=0, init=None, chunk_size=2, mode="hpv")


@pytest.mark.parametrize("tangents", ["hvp", "jvp"])
@pytest.mark.parametrize("kind", ["coordinate", "gaussian"])
def test_float32_problem_gets_float32_directions_of_every_kind(kind, tangents):
    """Coordinate (√N·e_j) and Gaussian directions take φ's dtype like Rademacher ones: a
    float32 problem (g = ½‖θ − a‖², f = ‖θ‖², SGD η) gets float32 directions, w_i and ∇h,
    with w_i = v_i·2k²a, k = 1 − (1 − η)^T, and ∇h = mean of w_i v_i."""
    eta, horizon, b = 0.5, 3, 4
    problem = from_inner_loss(lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum(),
                              lambda th, phi: (th["w"] ** 2).sum(), SGD(lr=eta), {"w": torch.zeros(2)},
                              horizon=horizon)
    a = torch.tensor([1.0, -2.0])
    result = ForwardGradientUnroll(num_directions=b, kind=kind, tangents=tangents)(problem, {"a": a}, seed=3)
    v, w = result.diagnostics["directions"], result.diagnostics["directional"]
    assert v.dtype == w.dtype == result.grad["a"].dtype == torch.float32
    k = 1 - (1 - eta) ** horizon
    torch.testing.assert_close(w, v @ (2 * k * k * a), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.grad["a"], (w[:, None] * v).sum(0) / b, rtol=1e-6, atol=1e-6)
    assert directions(kind, range(2), 3, seed=0, outer_step=0, dtype=torch.float32,
                      device=torch.device("cpu")).dtype == torch.float32
