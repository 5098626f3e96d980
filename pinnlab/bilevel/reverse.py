"""Reverse-mode hypergradients: full (RGU) and truncated (TRGU) backpropagation through the loop."""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass

import torch

from pinnlab._checks import check_integer
from pinnlab._typing import is_transform_wrapped
from pinnlab.bilevel.base import AbstractHypergradient, HypergradientResult, independent_of_phi, unroll

DEFAULT_TRUNCATION = 5
"""TRGU's s when none is given (or T, when the horizon is shorter)."""


def _state_leaves(state):
    """:func:`~pinnlab._typing.tensor_leaves`, also into the fields of a dataclass that is
    not a registered pytree (a user's own state type, a leaf to the pytree): its tensors
    too must leave the transform as its output, or the returned state holds the
    transform's wrappers (GradTrackingTensor) instead of tensors."""
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(state)
    tensors, parts = [], []  # parts: per leaf, (how many tensors it holds, tensors -> the leaf)
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            tensors.append(leaf)
            parts.append((1, lambda new: new[0]))
        elif dataclasses.is_dataclass(leaf) and not isinstance(leaf, type):
            names = [f.name for f in dataclasses.fields(leaf)]
            inner, rebuild_fields = _state_leaves([getattr(leaf, name) for name in names])
            tensors.extend(inner)
            parts.append((len(inner), functools.partial(_with_fields, leaf, names, rebuild_fields)))
        else:
            parts.append((0, lambda new, leaf=leaf: leaf))

    def rebuild(new):
        new, out, i = list(new), [], 0
        for n, make in parts:
            out.append(make(new[i : i + n]))
            i += n
        return tree_unflatten(out, spec)

    return tensors, rebuild


def _with_fields(obj, names, rebuild_fields, tensors):
    """A copy of the dataclass ``obj`` with its fields rebuilt from ``tensors`` (set
    directly: no __init__ or __post_init__ to run again, frozen or not)."""
    new = copy.copy(obj)
    for name, value in zip(names, rebuild_fields(tensors)):
        object.__setattr__(new, name, value)
    return new


def _reverse(problem, phi, *, start, init, steps, method, first=None):
    """(∇h, h, θ_T, state_T) by reverse mode; non-tensor state leaves (e.g. Adam's step
    count) travel outside the transform, tensors as its auxiliary output (those in a
    user's dataclass state too, :func:`_state_leaves`). ``first``: the step the inner
    problem started from, when the differentiated steps are a truncated window from
    ``start`` (trgu)."""
    static: dict = {}
    first = start if first is None else first

    def h(phi):
        theta, state = unroll(problem, phi, start=start, init=init, steps=steps)
        # θ_T that no longer tracks φ here gives a gradient of 0 through the steps, silently
        # (inside the transform, requires_grad says whether it was computed from φ)
        if not any(t.requires_grad for t in _state_leaves(theta)[0]):
            error = independent_of_phi(method)
            if start > first:  # (trgu's window: φ may act only in the steps before it, as through θ_0(φ))
                error = type(error)(f"{error}; or φ acts only before trgu's window, the last {steps} of the "
                                   f"{start - first + steps} steps (through θ_0(φ) or early steps), where the "
                                   "truncated hypergradient is 0 by construction: differentiate more steps "
                                   "(TruncatedReverseUnroll(steps=...), up to the horizon) or use rgu")
            raise error
        tensors, static["rebuild"] = _state_leaves(state)
        return problem.outer_loss(theta, phi), (theta, tensors)

    from torch.utils._pytree import tree_flatten, tree_map_only, tree_unflatten

    leaves, spec = tree_flatten(phi)
    if any(is_transform_wrapped(t) or t.requires_grad for t in leaves):  # differentiated further: a transform's
        grad, (value, (theta, tensors)) = torch.func.grad_and_value(h, has_aux=True)(phi)
        return grad, value, theta, static["rebuild"](tensors)
    # else plain autograd: torch.func.grad differentiates with create_graph=True (for higher
    # orders), which keeps every step's saved tensors until the whole backward pass ends;
    # this backward frees each step's as it passes it (measured at d = 4000: the peak of live
    # tensors grew 3.37 MiB per unrolled step against 2.22 MiB, the gradient the same)
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_() for t in leaves]
        value, (theta, tensors) = h(tree_unflatten(inputs, spec))
        grads = torch.autograd.grad(value, inputs, allow_unused=True)
    grad = tree_unflatten([torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)], spec)
    theta = tree_map_only(torch.Tensor, torch.Tensor.detach, theta)
    return grad, value.detach(), theta, static["rebuild"]([t.detach() for t in tensors])


@dataclass(frozen=True)
class ReverseUnroll(AbstractHypergradient):
    r"""RGU (Maclaurin et al. 2015; Franceschi et al. 2017): exact ∇h by reverse mode.

    Backpropagates through all T inner steps: for t = T..1, c_{t−1} = c_t + d_t B_t,
    d_{t−1} = d_t A_t, ∇h = d_0 Z_0 + c_0. Exact for the unrolled h at the cost of one
    backward of the loop, independent of the number of hyperparameters (2.2–2.4× the
    primal unroll on the tuning benchmark's problems; fg2u with one direction 1.7–2.0×,
    benchmarks/TUNING.md's cost table), but it stores the
    whole trajectory: memory O(T·M). Its backward pass frees each step's saved tensors as
    it passes the step (plain autograd; a φ already differentiated by a caller, inside a
    torch.func transform or requiring grad, goes through ``torch.func.grad``, which keeps
    them all until it ends). The reference for every other estimator.
    """

    name = "rgu"

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        grad, value, theta, state = _reverse(problem, phi, start=start, init=init, steps=None, method=self.name)
        return HypergradientResult(
            grad=grad, value=float(value.detach()), theta=theta, state=state,
            diagnostics={"inner_step_evaluations": problem.horizon},
        )


@dataclass(frozen=True)
class TruncatedReverseUnroll(AbstractHypergradient):
    r"""TRGU(s) (Shaban et al. 2019): backpropagate through the last s steps only.

    ∇h ≈ c_{T−s} = c_T + Σ_{t=T−s+1}^{T} d_T A_T⋯A_{t+1} B_t: the first T − s steps run
    without a graph and θ_{T−s} is treated as independent of φ. Memory O(s·M); biased,
    with error ≤ ((1 − ηα)^s/(ηα))·‖d_T‖·max_t‖B_t‖ for α-strongly-convex, L-smooth g and
    gradient descent with step η (REFERENCE.md §6.7, eq. 22).

    Args:
        steps: s, the number of trailing steps differentiated, 1 ≤ s ≤ T (a given s above
            the problem's horizon T is refused: s = T is already full RGU). Default
            (None): 5, or T when the horizon is shorter.
    """

    steps: int | None = None
    name = "trgu"

    def __post_init__(self):
        if self.steps is not None:
            check_integer("steps (s)", self.steps)

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        s = min(DEFAULT_TRUNCATION, problem.horizon) if self.steps is None else self.steps
        if s > problem.horizon:
            raise ValueError(f"trgu: steps (s) = {s} exceeds the horizon T = {problem.horizon}: TRGU differentiates "
                             f"the last s of the T inner steps, so s must be <= T (s = T is full rgu)")
        head = problem.horizon - s
        if head:
            with torch.no_grad():
                init = unroll(problem, phi, start=start, init=init, steps=head)
        # (s = T: θ_0 is made inside the transform, so a θ_0(φ) enters ∇h as in rgu)
        grad, value, theta, state = _reverse(problem, phi, start=start + head, init=init, steps=s, method=self.name,
                                             first=start)
        return HypergradientResult(
            grad=grad, value=float(value.detach()), theta=theta, state=state,
            diagnostics={"inner_step_evaluations": problem.horizon, "truncation": s},
        )
