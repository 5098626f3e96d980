"""Fifth mutation audit of the forward-mode and reverse-mode hypergradients (float64).

The reference values come from an explicit Python loop of the inner steps written out in
the test (no pinnlab estimator), differentiated by plain ``torch.autograd``: a diagonal
quadratic g_t(θ, φ) = ½Σ a_j θ_j² − c_t Σ θ_j p_j with a step-dependent c_t = 1 + t,
f(θ, φ) = ½‖θ − y‖² + ½κ‖p‖², plain gradient descent or Adam.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import pinnlab.bilevel.distributed as dist_helpers
from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    ReverseUnroll,
    TruncatedReverseUnroll,
    from_inner_loss,
)
from pinnlab.bilevel.base import GradientStep
from pinnlab.bilevel.forward import directions, sample_direction
from pinnlab.solvers import SGD, Adam
from pinnlab.solvers.optim import AdamState

F64 = torch.float64
A = torch.tensor([1.5, 0.5], dtype=F64)
Y = torch.tensor([0.3, -0.7], dtype=F64)
KAPPA = 0.2
ETA = 0.3


def _inner(th, phi, t):
    return 0.5 * (A * th["w"] ** 2).sum() - (1.0 + t) * (th["w"] * phi["p"]).sum()


def _outer(th, phi):
    return 0.5 * ((th["w"] - Y) ** 2).sum() + 0.5 * KAPPA * (phi["p"] ** 2).sum()


def _reference(phi, horizon, *, start=0, theta0=None, differentiated=None, rate=None):
    """∇h (and θ_T) of the explicit gradient-descent loop; only the last ``differentiated``
    steps see φ as a variable (all of them by default)."""
    leaf = {k: v.detach().clone().requires_grad_(True) for k, v in phi.items()}
    const = {k: v.detach() for k, v in phi.items()}
    w = torch.zeros(2, dtype=F64) if theta0 is None else theta0.detach().clone()
    cut = horizon - (horizon if differentiated is None else differentiated)
    for i, t in enumerate(range(start, start + horizon)):
        p = const if i < cut else leaf
        eta = ETA if rate is None else rate(p)
        w = w - eta * (A * w - (1.0 + t) * p["p"])
    value = _outer({"w": w}, leaf)
    grads = torch.autograd.grad(value, list(leaf.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaf.items(), grads)}, w.detach()


def _problem(horizon, **kwargs):
    return from_inner_loss(_inner, _outer, SGD(lr=ETA), {"w": torch.zeros(2, dtype=F64)}, horizon=horizon, **kwargs)


PHI = {"p": torch.tensor([0.4, -1.1], dtype=F64)}


def _close(a, b):
    assert a.dtype == b.dtype == F64 and a.shape == b.shape
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), (a, b)


# -- 1. the direction laws ---------------------------------------------------------------------------
def test_rademacher_directions_are_signs_of_both_kinds():
    """Rademacher entries are exactly ±1 (E[vvᵀ] = I), and both signs occur."""
    v = directions("rademacher", range(6), 5, seed=3, outer_step=0, dtype=F64, device=torch.device("cpu"))
    assert set(v.flatten().tolist()) == {-1.0, 1.0}


def test_gaussian_directions_are_the_standard_normal_draws_of_their_stream():
    """A Gaussian direction is the N(0, I) draw of the stream (seed, "direction", step, i)."""
    from pinnlab._seeding import make_generator

    v = directions("gaussian", [2, 5], 4, seed=7, outer_step=3, dtype=F64, device=torch.device("cpu"))
    for row, i in zip(v, [2, 5]):
        _close(row, torch.randn(4, generator=make_generator(7, "direction", 3, i), dtype=F64))
    assert (v < 0).any()


def test_coordinate_directions_are_root_n_times_a_unit_vector_and_reach_every_coordinate():
    """√N·e_j with j uniform over all N coordinates (E[vvᵀ] = I needs every j)."""
    from pinnlab._seeding import make_generator

    hit = set()
    for i in range(60):
        v = sample_direction("coordinate", 3, make_generator(0, "direction", 0, i), F64, torch.device("cpu"))
        (j,) = v.nonzero().flatten().tolist()
        assert v[j].item() == pytest.approx(3 ** 0.5, rel=1e-15)
        hit.add(j)
    assert hit == {0, 1, 2}


def test_fg2u_records_the_directions_of_its_outer_step_and_the_mean_of_w_v():
    """The recorded directions are those of (seed, outer_step, i), signs included; the
    estimate is Σ w_i v_i / b with w_i = ∇h·v_i exact."""
    horizon = 3
    exact, _ = _reference(PHI, horizon)
    result = ForwardGradientUnroll(num_directions=4, chunk_size=3)(_problem(horizon), PHI, seed=5, outer_step=2)
    v = directions("rademacher", range(4), 2, seed=5, outer_step=2, dtype=F64, device=torch.device("cpu"))
    _close(result.diagnostics["directions"], v)
    assert not torch.equal(v, directions("rademacher", range(4), 2, seed=5, outer_step=0, dtype=F64,
                                         device=torch.device("cpu")))
    w = v @ exact["p"]
    _close(result.diagnostics["directional"], w)
    _close(result.grad["p"], (w[:, None] * v).sum(0) / 4)


def test_a_single_tuned_value_varies_only_with_gaussian_directions():
    """N = 1: ±1 and √1·e_1 give v² = 1, one estimate; Gaussian ones vary."""
    assert not ForwardGradientUnroll(kind="rademacher").varies(1)
    assert not ForwardGradientUnroll(kind="coordinate").varies(1)
    assert ForwardGradientUnroll(kind="gaussian").varies(1)
    assert ForwardGradientUnroll(kind="rademacher").varies(2)


# -- 2. the tangents through the steps -------------------------------------------------------------
def _two_chunk_problem(horizon):
    """The same inner step with g split in two chunk losses (quadratic first, linear second)."""
    base = _problem(horizon)

    def losses(th, phi, t):
        yield 0.5 * (A * th["w"] ** 2).sum()
        yield -(1.0 + t) * (th["w"] * phi["p"]).sum()

    return dataclasses.replace(base, gradient_step=GradientStep(losses, SGD(lr=ETA), lambda phi, t: ETA))


@pytest.mark.parametrize("tangents", ["auto", "hvp"])
def test_fgu_sums_gradients_and_tangents_over_every_chunk_loss(tangents):
    """Both the gradient and its tangent H θ̇ + H_θφ v are summed over the chunk losses."""
    horizon = 4
    exact, theta = _reference(PHI, horizon)
    result = ExactForwardUnroll(tangents=tangents)(_two_chunk_problem(horizon), PHI)
    _close(result.grad["p"], exact["p"])
    _close(result.theta["w"], theta)


@pytest.mark.parametrize("method", [ExactForwardUnroll(), ReverseUnroll(), TruncatedReverseUnroll(steps=5)],
                         ids=["fgu-hvp", "rgu", "trgu-full"])
def test_exact_methods_use_the_inner_indices_from_start(method):
    """Step t of the window is inner step start + t (c_t = 1 + t enters ∇h)."""
    horizon, start = 5, 3
    exact, theta = _reference(PHI, horizon, start=start)
    assert not torch.allclose(exact["p"], _reference(PHI, horizon)[0]["p"])
    result = method(_problem(horizon), PHI, start=start)
    _close(result.grad["p"], exact["p"])
    _close(result.theta["w"], theta)


def test_trgu_differentiates_the_last_window_at_its_own_inner_indices():
    """TRGU(s): the head runs steps start..start+T−s−1 without a graph, the window the rest."""
    horizon, start, s = 6, 2, 2
    exact, theta = _reference(PHI, horizon, start=start, differentiated=s)
    result = TruncatedReverseUnroll(steps=s)(_problem(horizon), PHI, start=start)
    _close(result.grad["p"], exact["p"])
    _close(result.theta["w"], theta)
    assert result.diagnostics["truncation"] == s
    assert result.diagnostics["inner_step_evaluations"] == horizon


@pytest.mark.parametrize("s", [1, 4, 5])
def test_trgu_with_a_head_of_one_or_more_steps_and_a_warm_start(s):
    """A warm start θ_0 enters the head (or the window when s = T); a head of a single
    step is run too."""
    horizon = 5
    theta0 = torch.tensor([2.0, -1.0], dtype=F64)
    exact, theta = _reference(PHI, horizon, theta0=theta0, differentiated=s)
    result = TruncatedReverseUnroll(steps=s)(_problem(horizon), PHI, init=({"w": theta0}, SGD(lr=ETA).init({"w": theta0})))
    _close(result.grad["p"], exact["p"])
    _close(result.theta["w"], theta)


def test_trgu_default_window_is_five_steps_and_s_equal_to_t_is_rgu():
    horizon = 8
    result = TruncatedReverseUnroll()(_problem(horizon), PHI)
    assert result.diagnostics["truncation"] == 5
    _close(result.grad["p"], _reference(PHI, horizon, differentiated=5)[0]["p"])
    full = TruncatedReverseUnroll(steps=horizon)(_problem(horizon), PHI)
    _close(full.grad["p"], _reference(PHI, horizon)[0]["p"])
    short = TruncatedReverseUnroll()(_problem(3), PHI)
    assert short.diagnostics["truncation"] == 3


def test_fgu_from_a_warm_start_carries_zero_initial_tangents():
    """A given ``init`` (warm start) replaces problem.init, and its θ_0 is constant in φ."""
    horizon = 3
    theta0 = torch.tensor([2.0, -1.0], dtype=F64)
    exact, theta = _reference(PHI, horizon, theta0=theta0)
    problem = _problem(horizon)
    problem = dataclasses.replace(problem, init=lambda phi: ({"w": 5 * phi["p"]}, SGD(lr=ETA).init({"w": phi["p"]})))
    result = ExactForwardUnroll()(problem, PHI, init=({"w": theta0}, SGD(lr=ETA).init({"w": theta0})))
    _close(result.grad["p"], exact["p"])
    _close(result.theta["w"], theta)


def test_rate_tangent_sums_over_a_rate_vector_entry():
    """η(φ) = r₀ + 2r₁ with φ["r"] of two entries: ⟨∇_r η, ṙ⟩ sums over both."""
    horizon = 3
    phi = {"p": PHI["p"], "r": torch.tensor([0.1, 0.05], dtype=F64)}

    def rate(q):
        return q["r"][0] + 2 * q["r"][1]

    exact, _ = _reference(phi, horizon, rate=rate)
    problem = _problem(horizon, lr=rate)
    for method in (ExactForwardUnroll(), ReverseUnroll()):
        result = method(problem, phi)
        _close(result.grad["r"], exact["r"])
        _close(result.grad["p"], exact["p"])
    _close(exact["r"][1], 2 * exact["r"][0])


def test_fgu_through_adam_carries_the_tangents_of_a_phi_dependent_initial_state():
    """θ_0 and Adam's (m_0, v_0) as functions of φ: their tangents start the propagation."""
    horizon = 3
    adam = Adam(lr=0.1)

    def init(phi):
        w0 = 0.5 * phi["p"]
        return {"w": w0}, AdamState(1, {"w": 0.2 * phi["p"]}, {"w": 0.1 + phi["p"] ** 2})

    problem = dataclasses.replace(
        from_inner_loss(_inner, _outer, adam, {"w": torch.zeros(2, dtype=F64)}, horizon=horizon), init=init)

    leaf = {"p": PHI["p"].clone().requires_grad_(True)}
    theta, state = init(leaf)
    for t in range(horizon):
        g = torch.autograd.grad(_inner(theta, leaf, t), [theta["w"]], create_graph=True)[0]
        theta, state = adam.update({"w": g}, state, theta, 0.1)
    (exact,) = torch.autograd.grad(_outer(theta, leaf), [leaf["p"]])

    for method in (ExactForwardUnroll(), ReverseUnroll()):
        result = method(problem, PHI)
        _close(result.grad["p"], exact)
    zero_state = dataclasses.replace(problem, init=lambda phi: (
        {"w": 0.5 * phi["p"]}, AdamState(1, {"w": 0.2 * PHI["p"]}, {"w": 0.1 + PHI["p"] ** 2})))
    assert not torch.allclose(ExactForwardUnroll()(zero_state, PHI).grad["p"], exact)


# -- 3. the average over the ranks' directions and what is recorded --------------------------------
def test_a_rank_averages_its_share_of_the_directions_over_all_b(monkeypatch):
    """Rank 0 of 2 with b = 3 holds directions 0 and 2; its partial sum is divided by b = 3
    (the all-reduce adds the other rank's share), not by its own count."""
    horizon = 3
    problem = _problem(horizon)
    single = ForwardGradientUnroll(num_directions=3, distributed=False)(problem, PHI, seed=1)
    v, w = single.diagnostics["directions"], single.diagnostics["directional"]
    monkeypatch.setattr(dist_helpers, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(dist_helpers, "all_reduce_sum", lambda x: x)
    monkeypatch.setattr(dist_helpers, "broadcast_value", lambda x: x)
    ranked = ForwardGradientUnroll(num_directions=3)(problem, PHI, seed=1)
    _close(ranked.diagnostics["directions"], v[[0, 2]])
    _close(ranked.grad["p"], (w[0] * v[0] + w[2] * v[2]) / 3)


@pytest.mark.parametrize(("tangents", "passes"), [("auto", 0), ("hvp", 0), ("jvp", 1)])
def test_inner_step_evaluations_count_the_primal_unroll_only_where_it_runs(tangents, passes):
    """fg2u: T·(b + 1) when the jvp path needs its primal unroll for θ_T, else T·b; fgu: T·(N + 1) or T·N."""
    horizon = 3
    problem = _problem(horizon)
    fg = ForwardGradientUnroll(num_directions=2, tangents=tangents)(problem, PHI)
    assert fg.diagnostics["inner_step_evaluations"] == horizon * (2 + passes)
    fgu = ExactForwardUnroll(tangents=tangents)(problem, PHI)
    assert fgu.diagnostics["inner_step_evaluations"] == horizon * (2 + passes)


def test_a_plain_problem_uses_the_jvp_path_by_default():
    """Without a gradient_step ``auto`` is the jvp path (with its primal unroll)."""
    horizon = 3
    plain = dataclasses.replace(_problem(horizon), gradient_step=None)
    exact, theta = _reference(PHI, horizon)
    result = ExactForwardUnroll()(plain, PHI)
    _close(result.grad["p"], exact["p"])
    _close(result.theta["w"], theta)
    assert result.diagnostics["inner_step_evaluations"] == horizon * 3
    assert isinstance(plain, BilevelProblem)


def test_fg2u_defaults_are_min_8_n_rademacher_directions_through_hvp_tangents():
    """ForwardGradientUnroll(): b = min(8, N) = 2 Rademacher directions for N = 2 tuned
    values (it was 8 for any N), tangents by Hessian-vector products for a problem with a
    gradient step (no primal unroll: T·b evaluations)."""
    horizon = 2
    exact, _ = _reference(PHI, horizon)
    result = ForwardGradientUnroll()(_problem(horizon), PHI, seed=4)
    v = directions("rademacher", range(2), 2, seed=4, outer_step=0, dtype=F64, device=torch.device("cpu"))
    _close(result.diagnostics["directions"], v)
    _close(result.grad["p"], v.T @ (v @ exact["p"]) / 2)
    assert result.diagnostics["inner_step_evaluations"] == horizon * 2
