"""Seventh mutation audit of the forward-mode and reverse-mode hypergradients (float64).

Pins what the earlier audits leave open: the device of every direction kind, the inner
randomness shared by the jvp path's tangents, the single-line "not differentiable in
forward mode" error (the operation it names, its first line, its cause, a
NotImplementedError raised by a jvp), the constructors' refusals, the all-reduce of a
world of two, the chunk sizes by default and TRGU's whole refusal message. The closed
form is that of g = ½‖θ − a‖², f = ‖θ‖², gradient descent of step η from θ_0 = 0:
θ_T = k·a, ∇h = 2k²a, k = 1 − (1 − η)^T.
"""

from __future__ import annotations

import pytest
import torch

import pinnlab.bilevel.distributed as dist_helpers
import pinnlab.bilevel.forward as forward
from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    TruncatedReverseUnroll,
    from_inner_loss,
)
from pinnlab.bilevel.forward import (
    directional_derivatives,
    directions,
    not_forward_differentiable,
    sample_direction,
)
from pinnlab.solvers import SGD

F64 = torch.float64
ETA, HORIZON = 0.5, 3
K = 1 - (1 - ETA) ** HORIZON
TAIL = (". Forward-mode methods (fg2u, fgu) need every operation of the inner step to support "
        "torch.func.jvp; rgu/trgu need only a backward pass (an autograd.Function's own backward will do, "
        "an operation outside autograd such as NumPy has none); zo_fg2u only evaluates the step.")


def _tracking(horizon=HORIZON, size=2):
    """g = ½‖θ − a‖², f = ‖θ‖², SGD(η) from θ_0 = 0 (with a gradient step: hvp tangents)."""
    return from_inner_loss(lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum(),
                           lambda th, phi: (th["w"] ** 2).sum(), SGD(lr=ETA),
                           {"w": torch.zeros(size, dtype=F64)}, horizon=horizon)


A = torch.tensor([1.0, -2.0], dtype=F64)


# -- 1. directions on the requested device -------------------------------------------------------
@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "coordinate"])
def test_directions_of_every_kind_are_made_on_the_requested_device(kind):
    """A direction lives on φ's device (here "meta", which needs no accelerator) for every
    kind, and so does the empty `(0, N)` batch of a rank without directions. (One direction
    at a time: stacking meta tensors would import torch._dynamo, seconds on first use.)"""
    meta = torch.device("meta")
    v = sample_direction(kind, 4, torch.Generator().manual_seed(1), F64, meta)
    assert v.device == meta and v.dtype == F64 and v.shape == (4,)
    empty = directions(kind, range(0), 4, seed=1, outer_step=0, dtype=F64, device=meta)
    assert empty.device == meta and empty.dtype == F64 and empty.shape == (0, 4)


# -- 2. the jvp path shares the inner randomness ------------------------------------------------
def test_jvp_tangents_share_the_inner_randomness_of_the_step():
    """An inner step with noise from the global generator, θ ← θ − η(θ − a) + 0.1ξ_t: all
    tangents of the jvp path see the same ξ_t (vmap with randomness "same"), so two equal
    tangent rows give equal w, and w = v·2k·θ_T for the θ_T of that one noise path."""
    def step(theta, state, phi, t):
        return {"w": theta["w"] - ETA * (theta["w"] - phi["a"]) + 0.1 * torch.randn(2, dtype=F64)}, state

    problem = BilevelProblem(step, lambda th, phi: (th["w"] ** 2).sum(),
                             ({"w": torch.zeros(2, dtype=F64)}, None), HORIZON)
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=F64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        w, value, _ = directional_derivatives(problem, {"a": A}, v, start=0, init=None, chunk_size=3, mode="jvp")
    assert float(w[0]) == float(w[1])
    theta_t = value  # h = ‖θ_T‖², ∂h/∂a = 2kθ_T: w_0² + w_2² = 4k²‖θ_T‖²
    assert float(w[0] ** 2 + w[2] ** 2) == pytest.approx(4 * K * K * float(theta_t), rel=1e-12)


# -- 3. the "not differentiable in forward mode" error -----------------------------------------
@pytest.mark.parametrize("text, op", [
    ("aten::_foo is not implemented for forward AD", " (operation aten::_foo)"),
    ("Trying to use forward AD with mul_backward that does not support it", " (operation mul_backward)"),
    ("the derivative for 'lgamma' is not implemented", " (operation 'lgamma')"),
    ("calling my_op() under jvp failed", " (operation my_op())"),
    ("no operation named here", ""),
])
def test_not_forward_differentiable_names_the_operation_found_anywhere_in_the_message(text, op):
    """The operation is the first ``aten::name``, ``'name'``, ``name_backward`` or ``name()``
    anywhere in the message (not only at its start), quoted after "forward mode"."""
    message = str(not_forward_differentiable(RuntimeError(text)))
    assert message == f"the inner step is not differentiable in forward mode{op}: {text}{TAIL}"


def test_not_forward_differentiable_keeps_one_line_and_names_an_empty_error_by_type():
    """A multi-line message contributes its first line only (the error stays one line); an
    empty one is named by its type."""
    message = str(not_forward_differentiable(RuntimeError("\n  first line\nsecond line\n")))
    assert message == f"the inner step is not differentiable in forward mode: first line{TAIL}"
    assert "\n" not in message
    empty = str(not_forward_differentiable(NotImplementedError("  ")))
    assert empty == f"the inner step is not differentiable in forward mode: NotImplementedError{TAIL}"


class _JvpNotImplemented(torch.autograd.Function):
    """x ↦ 2x with a vmap rule and a backward, but a jvp that raises NotImplementedError."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad * 2

    @staticmethod
    def jvp(ctx, tangent):
        raise NotImplementedError("jvp of this operation is not implemented yet\nsee the tracker")


@pytest.mark.parametrize("method", [ExactForwardUnroll(), ForwardGradientUnroll(num_directions=2)],
                         ids=["fgu", "fg2u"])
def test_a_jvp_raising_not_implemented_is_the_one_line_forward_mode_error(method):
    """A NotImplementedError from the jvp path (an operation without a forward derivative)
    becomes the RuntimeError naming forward mode, its first line only, chained from it."""
    def step(theta, state, phi, t):
        return {"w": _JvpNotImplemented.apply(theta["w"] + phi["a"])}, state

    problem = BilevelProblem(step, lambda th, phi: (th["w"] ** 2).sum(),
                             ({"w": torch.zeros(2, dtype=F64)}, None), 2)
    with pytest.raises(RuntimeError) as info:
        method(problem, {"a": A})
    assert str(info.value) == ("the inner step is not differentiable in forward mode: jvp of this operation is "
                               f"not implemented yet{TAIL}")
    assert isinstance(info.value.__cause__, NotImplementedError)


# -- 4. the constructors refuse bad options ------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: ForwardGradientUnroll(num_directions=0), r"^num_directions \(b\) must be an integer >= 1, got 0$"),
    (lambda: ForwardGradientUnroll(num_directions=2.0), r"^num_directions \(b\) must be an integer >= 1, got 2\.0$"),
    (lambda: ForwardGradientUnroll(chunk_size=0), r"^chunk_size must be an integer >= 1, got 0$"),
    (lambda: ForwardGradientUnroll(tangents="hpv"), r"^tangents must be 'auto', 'hvp' or 'jvp', got 'hpv'$"),
    (lambda: ExactForwardUnroll(chunk_size=0), r"^chunk_size must be an integer >= 1, got 0$"),
    (lambda: ExactForwardUnroll(chunk_size=True), r"^chunk_size must be an integer >= 1, got True$"),
    (lambda: ExactForwardUnroll(tangents="JVP"), r"^tangents must be 'auto', 'hvp' or 'jvp', got 'JVP'$"),
], ids=["fg2u-b0", "fg2u-b-float", "fg2u-chunk0", "fg2u-tangents", "fgu-chunk0", "fgu-chunk-bool",
        "fgu-tangents"])
def test_forward_methods_refuse_bad_options_when_constructed(make, message):
    """Refused when the method is made (not at its first estimate), with a one-line message
    naming the option as documented (b for the number of directions)."""
    with pytest.raises(ValueError, match=message):
        make()


# -- 5. the ranks' shares ------------------------------------------------------------------------
def test_rank_0_of_two_adds_the_other_ranks_share_before_dividing_by_b(monkeypatch):
    """World of two: the partial sums Σ w_i v_i of the ranks are all-reduced (here the other
    rank's share is a known vector s), then divided by b = 3."""
    problem = _tracking()
    single = ForwardGradientUnroll(num_directions=3, distributed=False)(problem, {"a": A}, seed=2)
    v, w = single.diagnostics["directions"], single.diagnostics["directional"]
    other = torch.tensor([0.25, -0.75], dtype=F64)
    monkeypatch.setattr(dist_helpers, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(dist_helpers, "all_reduce_sum", lambda x: x + other)
    monkeypatch.setattr(dist_helpers, "broadcast_value", lambda x: x)
    ranked = ForwardGradientUnroll(num_directions=3)(problem, {"a": A}, seed=2)
    torch.testing.assert_close(ranked.grad["a"], (w[0] * v[0] + w[2] * v[2] + other) / 3, rtol=1e-13, atol=0)
    torch.testing.assert_close(w, v @ (2 * K * K * A), rtol=1e-13, atol=0)


def test_a_rank_without_directions_records_an_empty_w_of_phis_dtype(monkeypatch):
    """Rank 2 of 3 with b = 2: its "directional" diagnostic is a `(0,)` tensor of φ's dtype
    (float64), like its `(0, N)` directions, so the ranks' diagnostics concatenate."""
    monkeypatch.setattr(dist_helpers, "rank_and_world", lambda: (2, 3))
    monkeypatch.setattr(dist_helpers, "all_reduce_sum", lambda x: x)
    monkeypatch.setattr(dist_helpers, "broadcast_value", lambda x: 0.0)
    result = ForwardGradientUnroll(num_directions=2)(_tracking(), {"a": A})
    w = result.diagnostics["directional"]
    assert w.shape == (0,) and w.dtype == F64
    assert result.diagnostics["directions"].dtype == F64


# -- 6. chunk sizes by default -------------------------------------------------------------------
@pytest.mark.parametrize("method, expected", [(ForwardGradientUnroll(num_directions=20), [8, 8, 4]),
                                              (ExactForwardUnroll(), [16, 4]),
                                              (ExactForwardUnroll(chunk_size=20), [20])],
                         ids=["fg2u", "fgu", "fgu-20"])
def test_default_chunk_sizes_bound_the_tangents_carried_together(monkeypatch, method, expected):
    """Memory O(chunk_size·M): by default (FG)²U carries 8 tangents through the loop at a
    time and FGU 16 (N = 20 here), and the result is exact all the same (FGU: ∇h = 2k²a)."""
    sizes = []
    original = forward.tangent_unroll

    def recording(problem, phi, tangents, **kwargs):
        sizes.append(tangents.shape[0])
        return original(problem, phi, tangents, **kwargs)

    monkeypatch.setattr(forward, "tangent_unroll", recording)
    a = torch.linspace(-1.0, 1.0, 20, dtype=F64)
    result = method(_tracking(size=20), {"a": a})
    assert sizes == expected
    if isinstance(method, ExactForwardUnroll):
        torch.testing.assert_close(result.grad["a"], 2 * K * K * a, rtol=1e-13, atol=1e-15)


# -- 7. TRGU's refusal ----------------------------------------------------------------------------
def test_trgu_refuses_s_above_the_horizon_with_the_whole_one_line_message():
    """The refusal states the rule s ≤ T and that s = T is already full RGU."""
    with pytest.raises(ValueError) as info:
        TruncatedReverseUnroll(steps=4)(_tracking(), {"a": A})
    assert str(info.value) == ("trgu: steps (s) = 4 exceeds the horizon T = 3: TRGU differentiates the last s "
                               "of the T inner steps, so s must be <= T (s = T is full rgu)")


# -- 8. the jvp path keeps a float32 problem in float32 ------------------------------------------
@pytest.mark.parametrize("method", [ExactForwardUnroll(tangents="jvp"),
                                    ForwardGradientUnroll(num_directions=3, tangents="jvp")], ids=["fgu", "fg2u"])
def test_jvp_path_returns_float32_w_for_a_step_with_a_python_number_schedule(method):
    """A float32 problem whose step rate is a Python number of t, η_t = 0.2(1 + t): the
    jvp path's w (promoted to float64 under vmap(jvp)) is cast back to the tangents'
    float32; θ_T = (1 − Π_t(1 − η_t))a = 0.808a and ∇h = 0.808²a for f = ½‖θ‖²."""
    def step(theta, state, phi, t):
        return {"w": theta["w"] - 0.2 * (1.0 + t) * (theta["w"] - phi["a"])}, state

    problem = BilevelProblem(step, lambda th, phi: 0.5 * (th["w"] ** 2).sum(), ({"w": torch.zeros(2)}, None), 3)
    a = A.float()
    result = method(problem, {"a": a})
    exact = 0.808**2 * a
    v = result.diagnostics.get("directions", torch.eye(2))
    w = result.diagnostics.get("directional", result.grad["a"])
    assert w.dtype == result.grad["a"].dtype == torch.float32
    torch.testing.assert_close(w, v @ exact, rtol=1e-5, atol=1e-6)


# -- 9. an inner parameter the inner loss does not touch -----------------------------------------
@pytest.mark.parametrize("method", [ExactForwardUnroll(tangents="hvp"),
                                    ForwardGradientUnroll(num_directions=1, tangents="hvp"),
                                    ForwardGradientUnroll(num_directions=3, tangents="hvp")],
                         ids=["fgu", "fg2u-b1", "fg2u-b3"])
def test_hvp_tangents_with_a_theta_entry_outside_the_inner_loss(method):
    """θ = {w, u} with g = ½‖w − a‖² (u absent from g, kept at θ_0 = 1) and f = ‖w‖² + ‖u‖²:
    the Hessian-vector products have no path to u (single and batched directions alike);
    θ_T = (k·a, 1) and ∇h = 2k²a."""
    problem = from_inner_loss(lambda th, phi, t: 0.5 * ((th["w"] - phi["a"]) ** 2).sum(),
                              lambda th, phi: (th["w"] ** 2).sum() + (th["u"] ** 2).sum(), SGD(lr=ETA),
                              {"w": torch.zeros(2, dtype=F64), "u": torch.ones(2, dtype=F64)}, horizon=HORIZON)
    result = method(problem, {"a": A})
    torch.testing.assert_close(result.theta["w"], K * A, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(result.theta["u"], torch.ones(2, dtype=F64), rtol=0, atol=0)
    v = result.diagnostics.get("directions", torch.eye(2, dtype=F64))
    w = result.diagnostics.get("directional", result.grad["a"])
    torch.testing.assert_close(w, v @ (2 * K * K * A), rtol=1e-13, atol=1e-15)
