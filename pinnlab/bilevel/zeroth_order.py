"""(FG)²U-ZO: finite differences of h along random directions (black-box inner solvers)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pinnlab._checks import check_choice, check_integer, check_positive
from pinnlab._warnings import warn
from pinnlab.bilevel.base import (
    AbstractHypergradient,
    HypergradientResult,
    Phi,
    flatten,
    unflatten,
    unroll,
)
from pinnlab.bilevel.forward import DEFAULT_DIRECTIONS, DirectionKind, directions


@dataclass(frozen=True)
class BlackBox:
    """A hyperparameter objective h(φ) that can only be evaluated (e.g. a DeepXDE run).

    Args:
        objective: φ ↦ h(φ) (a float or 0-d tensor). It runs with autograd enabled (a
            black-box trainer such as DeepXDE needs it); φ carries no gradient.
    """

    objective: Callable[[Phi], float | Tensor]
    horizon: int = 1

    def __post_init__(self):
        if not callable(self.objective):
            raise TypeError(f"BlackBox.objective must be a function φ ↦ h(φ), got {type(self.objective).__name__}")
        check_integer("horizon", self.horizon)


@dataclass(frozen=True)
class ZeroOrderForwardGradient(AbstractHypergradient):
    r"""(FG)²U-ZO ([FG2U] eq. 16): ĝ = (1/b) Σ_i w_i v_i with finite-difference w_i.

    .. math::

        w_i^{fwd} = \frac{h(φ + μ v_i) − h(φ)}{μ},\qquad
        w_i^{ctr} = \frac{h(φ + μ v_i) − h(φ − μ v_i)}{2μ}

    Needs only evaluations of h, so the inner solver can be a black box
    (:class:`BlackBox`, e.g. DeepXDE's training). Per-direction error O(μ) forward,
    O(μ²) central; the forward difference with Gaussian v is exactly unbiased for the
    gradient of the smoothed h_μ(φ) = E h(φ + μu). Cost: b + 1 (forward) or 2b + 1
    (central) inner solves, reported as ``inner_solves``: the base solve at φ gives the
    reported value h(φ) and θ_T (for warm starts), and the forward difference reuses it.
    The central estimate alone needs 2b (REFERENCE.md §6.6), but no shifted solve yields
    h(φ) or θ_T(φ), which the outer loop records and warm-starts from; memory: one
    forward solve.

    A difference that is exactly 0 means the inner solve did not resolve the step μ (in
    float32 training a small μ often changes h by less than its rounding): the result's
    diagnostics count such directions as ``unresolved_directions``, and when every
    difference is exactly 0, so the estimate is exactly 0 and φ would not move, the call
    warns (RuntimeWarning, with the same message at every outer step, so Python's
    default filter shows it once per run) to raise ``mu`` or compute in float64.

    Args:
        num_directions: b. Default (None): 8, or 1 where every direction gives the same
            estimate (:meth:`directions_for`: N = 1 with ±1 or coordinate directions and
            central differences, all ±e_1, so more directions only repeat inner solves).
            Unlike :class:`ForwardGradientUnroll` it is not capped at N: directions
            beyond N still lower the variance, and a black box has no exact
            forward-mode counterpart (fgu) that N directions would cost as much as.
            More than 1 where every direction gives the same estimate is run as given
            (one may check that it is so) but warns (UserWarning, the same message at
            every outer step, so shown once per run) that its extra inner solves are wasted.
        mu: μ, the finite-difference step.
        scheme: ``"forward"`` or ``"central"``.
        kind: direction distribution (as in :class:`ForwardGradientUnroll`).
    """

    num_directions: int | None = None
    mu: float = 1e-3
    scheme: Literal["forward", "central"] = "central"
    kind: DirectionKind = "rademacher"
    distributed: bool = True
    name = "zo_fg2u"
    takes_black_box = True

    def __post_init__(self):
        if self.num_directions is not None:
            check_integer("num_directions (b)", self.num_directions)
        check_positive("mu", self.mu)
        check_choice("scheme", self.scheme, ("forward", "central"))
        check_choice("kind", self.kind, ("rademacher", "gaussian", "coordinate"))

    def varies(self, size):
        # (N = 1: the central difference along −1 is the one along +1)
        return self.kind == "gaussian" or size > 1 or self.scheme == "forward"

    def directions_for(self, size: int) -> int:
        """b for a φ of ``size`` = N scalar entries: ``num_directions``, or 8 (1 where
        :meth:`varies` is false: more directions would repeat the same estimate)."""
        if self.num_directions is not None:
            return self.num_directions
        return DEFAULT_DIRECTIONS if self.varies(size) else 1

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        from pinnlab.bilevel.distributed import all_reduce_sum, rank_and_world

        black_box = isinstance(problem, BlackBox)

        def solve(p):
            """One inner solve: (h(p), θ_T, state), θ_T and state None for a black box."""
            if black_box:
                # (a Python float straight to float64: as_tensor alone would round it to float32)
                return torch.as_tensor(problem.objective(p), dtype=torch.float64), None, None
            theta, state = unroll(problem, p, start=start, init=init)
            return problem.outer_loss(theta, p), theta, state

        def h(p):
            return float(solve(p)[0])

        horizon = problem.horizon
        template = flatten(phi)
        b = self.directions_for(template.numel())
        rank, world = rank_and_world() if self.distributed else (0, 1)
        if b > 1 and not self.varies(template.numel()) and rank == 0:  # (the same message each step: shown once)
            warn(f"zo_fg2u: num_directions = {b} at N = 1 with central differences and {self.kind} directions: "
                 "every direction is +1 or -1, along which the central difference gives the same estimate, so "
                 f"{b - 1} of the {b} directions repeat its {2 * (b - 1)} inner solves and lower no variance; "
                 "num_directions = 1 (the default there) gives the same hypergradient")
        mine = range(rank, b, world)
        v = directions(self.kind, mine, template.numel(), seed=seed, outer_step=outer_step,
                       dtype=template.dtype, device=template.device)
        solves = 0
        phi = {k: v.detach() for k, v in phi.items()}
        with contextlib.nullcontext() if black_box else torch.no_grad():
            value, theta, state = solve(phi)  # the base solve: value, θ_T and (forward) h(φ)
            base = float(value)
            solves += 1
            w = []
            for row in v:
                plus = h(_shift(phi, row, self.mu))
                if self.scheme == "forward":
                    w.append((plus - base) / self.mu)
                    solves += 1
                else:
                    minus = h(_shift(phi, row, -self.mu))
                    w.append((plus - minus) / (2 * self.mu))
                    solves += 2
        w = torch.tensor(w, dtype=template.dtype, device=template.device)
        partial = (w[:, None] * v).sum(0) if len(v) else torch.zeros_like(template)
        total = all_reduce_sum(partial) if world > 1 else partial
        unresolved = int((w == 0).sum())
        if unresolved == len(w) and not bool(total.any()):  # (every rank's differences were 0)
            difference = "h(φ + μv) − h(φ)" if self.scheme == "forward" else "h(φ + μv) − h(φ − μv)"
            warn(
                f"zo_fg2u: every finite difference {difference} over the {b} directions is "
                f"exactly 0 at mu = {self.mu:g}, so the hypergradient estimate is exactly 0 and φ does not move: "
                "either the inner solve does not resolve a step of mu, and then raise mu (tune.options.mu) "
                "or compute in float64 (trainer.dtype=float64), or h is flat, or (central differences) "
                "symmetric about φ along every direction drawn, as at an exact minimum, where 0 is right",
                RuntimeWarning)
        return HypergradientResult(
            grad=unflatten(total / b, phi), value=base, theta=theta, state=state,
            diagnostics={"directional": w, "directions": v, "inner_solves": solves,
                         "inner_step_evaluations": solves * horizon, "unresolved_directions": unresolved},
        )


def _shift(phi: Phi, direction: Tensor, scale: float) -> Phi:
    step = unflatten(scale * direction, phi)
    return {k: phi[k] + step[k] for k in phi}


__all__ = ["BlackBox", "ZeroOrderForwardGradient"]
