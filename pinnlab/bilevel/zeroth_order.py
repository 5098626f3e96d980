"""(FG)²U-ZO: finite differences of h along random directions (black-box inner solvers)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pinnlab.bilevel.base import (
    AbstractHypergradient,
    HypergradientResult,
    Phi,
    flatten,
    unflatten,
    unroll,
)
from pinnlab.bilevel.forward import DirectionKind, _check_positive, directions


@dataclass(frozen=True)
class BlackBox:
    """A hyperparameter objective h(φ) that can only be evaluated (e.g. a DeepXDE run).

    Args:
        objective: φ ↦ h(φ) (a float or 0-d tensor). It runs with autograd enabled (a
            black-box trainer such as DeepXDE needs it); φ carries no gradient.
    """

    objective: Callable[[Phi], float | Tensor]
    horizon: int = 1


@dataclass(frozen=True)
class ZeroOrderForwardGradient(AbstractHypergradient):
    r"""(FG)²U-ZO ([FG2U] eq. 16): ĝ = (1/b) Σ_i w_i v_i with finite-difference w_i.

    .. math::

        w_i^{fwd} = \frac{h(φ + μ v_i) − h(φ)}{μ},\qquad
        w_i^{ctr} = \frac{h(φ + μ v_i) − h(φ − μ v_i)}{2μ}

    Needs only evaluations of h, so the inner solver can be a black box
    (:class:`BlackBox`, e.g. DeepXDE's training). Per-direction error O(μ) forward,
    O(μ²) central; the forward difference with Gaussian v is exactly unbiased for the
    gradient of the smoothed h_μ(φ) = E h(φ + μu). Cost: b + 1 (forward) or 2b
    (central) inner solves; memory: one forward solve.

    Args:
        num_directions: b.
        mu: μ, the finite-difference step.
        scheme: ``"forward"`` or ``"central"``.
        kind: direction distribution (as in :class:`ForwardGradientUnroll`).
    """

    num_directions: int = 8
    mu: float = 1e-3
    scheme: Literal["forward", "central"] = "central"
    kind: DirectionKind = "rademacher"
    distributed: bool = True
    name = "zo_fg2u"

    def __post_init__(self):
        _check_positive("num_directions (b)", self.num_directions)
        if not self.mu > 0:
            raise ValueError(f"mu must be > 0, got {self.mu}")
        if self.scheme not in ("forward", "central"):
            raise ValueError(f"scheme must be 'forward' or 'central', got {self.scheme!r}")

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        from pinnlab.bilevel.distributed import all_reduce_sum, rank_and_world

        if isinstance(problem, BlackBox):
            def h(p):
                return torch.as_tensor(problem.objective(p)).double()
            horizon = problem.horizon
        else:
            def h(p):
                theta, _ = unroll(problem, p, start=start, init=init)
                return problem.outer_loss(theta, p)
            horizon = problem.horizon
        template = flatten(phi)
        rank, world = rank_and_world() if self.distributed else (0, 1)
        mine = range(rank, self.num_directions, world)
        v = directions(self.kind, mine, template.numel(), seed=seed, outer_step=outer_step,
                       dtype=template.dtype, device=template.device)
        solves = 0
        phi = {k: v.detach() for k, v in phi.items()}
        with contextlib.nullcontext() if isinstance(problem, BlackBox) else torch.no_grad():
            base = float(h(phi))
            solves += 1
            w = []
            for row in v:
                plus = float(h(_shift(phi, row, self.mu)))
                if self.scheme == "forward":
                    w.append((plus - base) / self.mu)
                    solves += 1
                else:
                    minus = float(h(_shift(phi, row, -self.mu)))
                    w.append((plus - minus) / (2 * self.mu))
                    solves += 2
        w = torch.tensor(w, dtype=template.dtype, device=template.device)
        partial = (w[:, None] * v).sum(0) if len(v) else torch.zeros_like(template)
        total = all_reduce_sum(partial) if world > 1 else partial
        theta = state = None
        if not isinstance(problem, BlackBox):
            with torch.no_grad():
                theta, state = unroll(problem, phi, start=start, init=init)
        return HypergradientResult(
            grad=unflatten(total / self.num_directions, phi), value=base, theta=theta, state=state,
            diagnostics={"directional": w, "directions": v, "inner_solves": solves,
                         "inner_step_evaluations": solves * horizon},
        )


def _shift(phi: Phi, direction: Tensor, scale: float) -> Phi:
    step = unflatten(scale * direction, phi)
    return {k: phi[k] + step[k] for k in phi}


__all__ = ["BlackBox", "ZeroOrderForwardGradient"]
