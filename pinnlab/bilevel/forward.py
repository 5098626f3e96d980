"""Forward-mode hypergradients: (FG)²U (random directions) and exact FGU (all directions)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pinnlab._seeding import make_generator
from pinnlab.bilevel.base import (
    AbstractHypergradient,
    BilevelProblem,
    HypergradientResult,
    Phi,
    flatten,
    unflatten,
    unroll,
    unrolled_objective,
)

DirectionKind = Literal["rademacher", "gaussian", "coordinate"]


def sample_direction(kind: DirectionKind, size: int, generator: torch.Generator,
                     dtype: torch.dtype, device: torch.device) -> Tensor:
    """One direction v ∈ R^N with E[vvᵀ] = I: Rademacher ±1, Gaussian N(0, I), or √N·e_j."""
    if kind == "rademacher":
        return (2 * torch.randint(0, 2, (size,), generator=generator) - 1).to(device=device, dtype=dtype)
    if kind == "gaussian":
        return torch.randn(size, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    if kind == "coordinate":
        j = int(torch.randint(0, size, (1,), generator=generator))
        v = torch.zeros(size, dtype=dtype, device=device)
        v[j] = math.sqrt(size)
        return v
    raise ValueError(f"unknown direction kind {kind!r}; use 'rademacher', 'gaussian' or 'coordinate'")


def directions(kind: DirectionKind, indices, size, *, seed, outer_step, dtype, device) -> Tensor:
    """Directions number ``indices`` of this outer step: `(len(indices), N)`.

    Direction i is drawn from the stream (seed, "direction", outer_step, i), so any split
    of the indices over processes reproduces the single-process set exactly."""
    rows = [sample_direction(kind, size, make_generator(seed, "direction", outer_step, i), dtype, device)
            for i in indices]
    return torch.stack(rows) if rows else torch.zeros(0, size, dtype=dtype, device=device)


def directional_derivatives(problem: BilevelProblem, phi: Phi, tangents: Tensor, *, start: int,
                            init, chunk_size: int) -> tuple[Tensor, Tensor]:
    """w_i = ∇h(φ)·v_i for the rows v_i of `tangents` `(B, N)`, by JVP through the loop.

    The B tangents are processed ``chunk_size`` at a time with ``torch.func.vmap``
    (randomness="same", so all directions share the inner randomness); memory is
    O(chunk_size · M) and independent of T. Returns (w `(B,)`, h(φ)).
    """
    h = unrolled_objective(problem, start=start, init=init)

    def one(v_flat):
        return torch.func.jvp(h, (phi,), (unflatten(v_flat, phi),))

    values, outs = None, []
    for i in range(0, tangents.shape[0], chunk_size):
        try:
            value, w = torch.func.vmap(one, randomness="same")(tangents[i : i + chunk_size])
        except (RuntimeError, NotImplementedError) as err:
            raise not_forward_differentiable(err) from err
        values = value[0] if values is None else values
        outs.append(w)
    return torch.cat(outs), values


def not_forward_differentiable(err: Exception) -> RuntimeError:
    text = str(err)
    match = re.search(r"(aten::\w+|'\w+'|\w+_backward|\w+\(\))", text)
    op = f" (operation {match.group(1)})" if match else ""
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return RuntimeError(
        f"the inner step is not differentiable in forward mode{op}: {first}. Forward-mode "
        "methods (fg2u, fgu) need every operation of the inner step to support "
        "torch.func.jvp; use rgu/trgu or zo_fg2u instead."
    )


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _primal(problem, phi, start, init):
    with torch.no_grad():
        return unroll(problem, phi, start=start, init=init)


@dataclass(frozen=True)
class ForwardGradientUnroll(AbstractHypergradient):
    r"""(FG)²U: an unbiased, constant-memory estimate of ∇h ([FG2U] eqs. 8–10, Alg. 1).

    .. math::

        w_i = ∇h(φ)·v_i \;(\text{one JVP through the T-step loop}),\qquad
        \hat g_b = \frac1b Σ_{i=1}^{b} w_i v_i,\qquad E[\hat g_b] = ∇h

    Variance (REFERENCE.md §6.4): E‖ĝ_b − ∇h‖² = ((N − 1)/b)‖∇h‖² for Rademacher and
    ((N + 1)/b)‖∇h‖² for Gaussian directions; expected cosine to ∇h ≈ sqrt(b/(b + N)).
    Cost: b JVPs of the unrolled loop (each ≈ 3 forward passes of every inner step)
    plus one primal unroll for θ_T; memory O(chunk_size·M), independent of T — the
    method of choice for long horizons and many hyperparameters when reverse
    unrolling (O(T·M)) does not fit. Directions are seeded by (seed, outer_step, i),
    and under ``torch.distributed`` each rank evaluates its share of the b directions.

    Args:
        num_directions: b.
        kind: ``"rademacher"`` (default), ``"gaussian"`` or ``"coordinate"`` (√N·e_j).
        chunk_size: directions vmapped together (bounds memory).
        distributed: split directions over ``torch.distributed`` ranks when initialised.
    """

    num_directions: int = 8
    kind: DirectionKind = "rademacher"
    chunk_size: int = 8
    distributed: bool = True
    name = "fg2u"

    def __post_init__(self):
        _check_positive("num_directions (b)", self.num_directions)
        _check_positive("chunk_size", self.chunk_size)
        if self.kind not in ("rademacher", "gaussian", "coordinate"):
            raise ValueError(f"kind must be 'rademacher', 'gaussian' or 'coordinate', got {self.kind!r}")

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        from pinnlab.bilevel.distributed import all_reduce_sum, rank_and_world

        template = flatten(phi)
        rank, world = rank_and_world() if self.distributed else (0, 1)
        mine = range(rank, self.num_directions, world)
        v = directions(self.kind, mine, template.numel(), seed=seed, outer_step=outer_step,
                       dtype=template.dtype, device=template.device)
        if len(v):
            w, value = directional_derivatives(problem, phi, v, start=start, init=init,
                                               chunk_size=self.chunk_size)
            partial = (w[:, None] * v).sum(0)
        else:
            w, value, partial = template.new_zeros(0), None, torch.zeros_like(template)
        total = all_reduce_sum(partial) if world > 1 else partial
        grad = unflatten(total / self.num_directions, phi)
        theta, state = _primal(problem, phi, start, init)
        return HypergradientResult(
            grad={k: g.detach() for k, g in grad.items()},
            value=None if value is None else float(value),
            theta=theta, state=state,
            diagnostics={"directional": w.detach(), "directions": v,
                         "inner_step_evaluations": problem.horizon * (len(v) + 1)},
        )


@dataclass(frozen=True)
class ExactForwardUnroll(AbstractHypergradient):
    r"""FGU (forward-mode RTRL, Franceschi et al. 2017): the exact ∇h from N JVPs.

    Z_t = A_t Z_{t−1} + B_t, ∇h = d_T Z_T + c_T, computed as the JVPs of h along the N
    coordinate directions (vmapped ``chunk_size`` at a time). Exact like reverse
    unrolling, memory O(chunk_size·M) independent of T, cost N JVPs: affordable
    when φ has few entries (loss weights, σ, a mix coefficient).
    """

    chunk_size: int = 16
    name = "fgu"

    def __post_init__(self):
        _check_positive("chunk_size", self.chunk_size)

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        template = flatten(phi)
        eye = torch.eye(template.numel(), dtype=template.dtype, device=template.device)
        w, value = directional_derivatives(problem, phi, eye, start=start, init=init,
                                           chunk_size=self.chunk_size)
        theta, state = _primal(problem, phi, start, init)
        return HypergradientResult(
            grad={k: g.detach() for k, g in unflatten(w, phi).items()}, value=float(value),
            theta=theta, state=state,
            diagnostics={"inner_step_evaluations": problem.horizon * (template.numel() + 1)},
        )
