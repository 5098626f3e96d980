"""Edges of RGU and TRGU found by a mutation audit: the truncated head keeps no graph, s = T is
full RGU also for a θ_0(φ), the truncation's checks and diagnostics; against closed forms."""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import ReverseUnroll, TruncatedReverseUnroll, from_inner_loss, hypergradient
from pinnlab.solvers import SGD

F64 = torch.float64


def _tracking_problem(horizon, eta):
    """g = ½‖θ − a‖², f = ‖θ‖², SGD with step η from θ_0 = 0: θ_t = (1 − (1 − η)^t) a."""
    return from_inner_loss(lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum(),
                           lambda th, phi: (th["w"] ** 2).sum(), SGD(lr=eta),
                           {"w": torch.zeros(2, dtype=F64)}, horizon=horizon)


@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad=True to a scalar")
@pytest.mark.parametrize("s", [1, 2])
def test_trgu_head_keeps_no_autograd_graph_for_a_phi_that_requires_grad(s):
    """The first T − s steps run without a graph (memory O(s·M)): with a φ that requires
    grad, θ_T's autograd derivative is that of the last s steps, θ_{T−s} held fixed,
    dθ_T/da = 1 − (1 − η)^s (not 1 − (1 − η)^T), and ∇h = 2θ_T(1 − (1 − η)^s)."""
    horizon, eta = 4, 0.5
    a = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    result = hypergradient(_tracking_problem(horizon, eta), {"a": a}, TruncatedReverseUnroll(steps=s))
    theta = (1 - (1 - eta) ** horizon) * a.detach()
    torch.testing.assert_close(result.theta["w"].detach(), theta, rtol=1e-15, atol=0)
    torch.testing.assert_close(result.grad["a"].detach(), 2 * theta * (1 - (1 - eta) ** s), rtol=1e-14, atol=0)
    (d,) = torch.autograd.grad(result.theta["w"].sum(), a)
    torch.testing.assert_close(d, torch.full((2,), 1 - (1 - eta) ** s, dtype=F64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("steps", [0, -2, 2.0, True])
def test_trgu_steps_must_be_an_integer_of_at_least_one(steps):
    with pytest.raises(ValueError, match=r"^steps \(s\) must be an integer >= 1"):
        TruncatedReverseUnroll(steps=steps)


def test_trgu_reports_its_truncation_and_the_inner_steps_it_ran():
    """diagnostics: the s differentiated (given, or min(5, T)) and all T inner steps."""
    phi = {"a": torch.tensor([1.0, -2.0], dtype=F64)}
    for horizon, steps, s in [(7, 2, 2), (7, None, 5), (3, None, 3)]:
        result = hypergradient(_tracking_problem(horizon, 0.5), phi, TruncatedReverseUnroll(steps=steps))
        assert (result.diagnostics["inner_step_evaluations"], result.diagnostics["truncation"]) == (horizon, s)
        theta = (1 - 0.5 ** horizon) * phi["a"]
        torch.testing.assert_close(result.theta["w"], theta, rtol=1e-15, atol=0)
        assert result.value == pytest.approx(float((theta ** 2).sum()), rel=1e-15)
    rgu = hypergradient(_tracking_problem(7, 0.5), phi, ReverseUnroll())
    assert rgu.diagnostics["inner_step_evaluations"] == 7 and "truncation" not in rgu.diagnostics


@pytest.mark.parametrize("steps", [2, None], ids=["s=T", "default-s=T"])
def test_trgu_with_s_equal_to_the_horizon_is_rgu_for_a_phi_dependent_theta0(steps):
    """s = T is documented as full RGU, and θ_0(φ) enters the hypergradient (BilevelProblem):
    θ_0 = 3a, η = ½, T = 2: θ_T = (¼·3 + ¾)a = 1.5a, h = 2.25‖a‖², ∇h = 4.5a (RGU's).
    TRGU made θ_0 under no_grad also when no step was left out, and gave 2.25a."""
    problem = from_inner_loss(lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum(),
                              lambda th, phi: (th["w"] ** 2).sum(), SGD(lr=0.5),
                              lambda phi: {"w": 3.0 * phi["a"]}, horizon=2)
    phi = {"a": torch.tensor([1.0, -2.0], dtype=F64)}
    rgu = hypergradient(problem, phi, ReverseUnroll()).grad["a"]
    torch.testing.assert_close(rgu, 4.5 * phi["a"], rtol=1e-15, atol=0)
    trgu = hypergradient(problem, phi, TruncatedReverseUnroll(steps=steps)).grad["a"]
    torch.testing.assert_close(trgu, rgu, rtol=1e-12, atol=0)
