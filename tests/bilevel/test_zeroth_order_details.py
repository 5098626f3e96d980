"""zo_fg2u details the agreement tests leave open (float64).

Its direction distribution, a black box evaluated with autograd enabled, the horizon a
reparameterised black box keeps, and the all-zero warning of a rank that holds no
direction.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pinnlab.bilevel import BlackBox, ZeroOrderForwardGradient, hypergradient
from pinnlab.bilevel.base import flatten
from pinnlab.bilevel.forward import directions
from pinnlab.bilevel.parameterization import Log, reparameterize

from .problems import F64, LinearQuadratic


def test_gaussian_kind_draws_gaussian_directions():
    """kind="gaussian": the directions are the stream's Gaussian ones (not ±1), and on the
    exactly quadratic LinearQuadratic h the central estimate is (1/b) Σ_i ⟨∇h, v_i⟩ v_i to 1e-9."""
    lq = LinearQuadratic()
    horizon, b = 5, 4
    _, g, _ = lq.closed_form(lq.phi, horizon)
    result = hypergradient(lq.problem(horizon), lq.phi,
                           ZeroOrderForwardGradient(num_directions=b, mu=0.1, kind="gaussian"), seed=4, outer_step=2)
    v = result.diagnostics["directions"]
    torch.testing.assert_close(v, directions("gaussian", range(b), g.numel(), seed=4, outer_step=2, dtype=F64,
                                             device="cpu"), rtol=0, atol=0)
    assert not bool((v.abs() == 1).all())
    torch.testing.assert_close(flatten(result.grad), (v @ g) @ v / b, rtol=1e-9, atol=1e-11)


def test_a_black_box_runs_with_autograd_enabled():
    """A black-box trainer (DeepXDE) differentiates its own losses: every evaluation of the
    objective, the base solve and the 2b shifted ones, sees torch.is_grad_enabled(), and
    φ carries no gradient, also when the φ passed in is a leaf that requires one (as the
    outer loop's is)."""
    seen = []

    def objective(phi):
        seen.append((torch.is_grad_enabled(), phi["a"].requires_grad))
        return (phi["a"] ** 2).sum()

    result = hypergradient(BlackBox(objective), {"a": torch.tensor([0.5, -1.0], dtype=F64, requires_grad=True)},
                           ZeroOrderForwardGradient(num_directions=3, mu=1e-3))
    assert seen == [(True, False)] * 7
    assert result.diagnostics["inner_solves"] == 7


def test_a_reparameterised_black_box_keeps_its_horizon():
    """reparameterize() wraps a black box in one of φ = forward(u) with the same horizon, so
    zo_fg2u still reports inner_step_evaluations = inner_solves · horizon; the wrapped
    objective sees exp(u)."""
    seen = []

    def objective(phi):
        seen.append(phi["s"].clone())
        return (phi["s"] - 2.0) ** 2

    box = reparameterize(BlackBox(objective, horizon=7), {"s": Log()})
    assert isinstance(box, BlackBox) and box.horizon == 7
    u = {"s": torch.tensor(0.3, dtype=F64)}
    result = hypergradient(box, u, ZeroOrderForwardGradient(num_directions=2, mu=1e-3, scheme="forward"))
    assert result.diagnostics["inner_step_evaluations"] == 3 * 7
    torch.testing.assert_close(seen[0], torch.exp(u["s"]), rtol=0, atol=0)


@pytest.mark.parametrize("other_rank, warns", [(1.0, False), (0.0, True)])
def test_a_rank_without_directions_warns_only_when_every_rank_found_zero(monkeypatch, other_rank, warns):
    """Rank 1 of 2 with b = 1 holds no direction; its all-reduced estimate is rank 0's.
    It warns that every difference is 0 only when that total is 0 too, not merely because
    it has no differences of its own (here the collective is simulated)."""
    import pinnlab.bilevel.distributed as dist

    monkeypatch.setattr(dist, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(dist, "all_reduce_sum", lambda tensor: tensor + other_rank)
    lq = LinearQuadratic()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = hypergradient(lq.problem(3), lq.phi, ZeroOrderForwardGradient(num_directions=1, mu=1e-3))
    assert result.diagnostics["directions"].shape == (0, 3)
    assert any("zo_fg2u: every finite difference" in str(w.message) for w in record) == warns
    torch.testing.assert_close(flatten(result.grad), torch.full((3,), other_rank, dtype=F64), rtol=0, atol=0)


def test_a_black_box_returning_a_python_float_keeps_float64():
    """BlackBox.objective may return a Python float (the DeepXDE black box of `pinnlab
    tune` does). It was turned into a float32 tensor before .double(), so h(φ) was rounded
    to float32: an objective 1 + 1e-6·Σφ gave finite differences of exactly 0 at μ = 1e-3
    (all-zero estimate and the warning). In float64 the central differences of this linear
    h are exact to rounding: every component is 1e-6."""
    phi = {"a": torch.zeros(3, dtype=F64)}
    box = BlackBox(lambda p: float(1.0 + 1e-6 * p["a"].sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(box, phi, ZeroOrderForwardGradient(num_directions=4, mu=1e-3))
    v = result.diagnostics["directions"]
    expected = (v @ torch.full((3,), 1e-6, dtype=F64)) @ v / 4
    torch.testing.assert_close(flatten(result.grad), expected, rtol=1e-6, atol=0)
