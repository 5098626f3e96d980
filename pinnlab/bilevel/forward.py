"""Forward-mode hypergradients: (FG)²U (random directions) and exact FGU (all directions)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.forward_ad import unpack_dual

from pinnlab._checks import check_integer
from pinnlab._seeding import make_generator
from pinnlab._typing import tensor_leaves
from pinnlab.bilevel.base import (
    AbstractHypergradient,
    BilevelProblem,
    HypergradientResult,
    Phi,
    flatten,
    independent_of_phi,
    unflatten,
    unroll,
    unrolled_objective,
)

DEFAULT_DIRECTIONS = 8
"""(FG)²U's b when none is given: at most this many, and at most N (the number of
scalar entries of φ)."""

DirectionKind = Literal["rademacher", "gaussian", "coordinate"]
TangentMode = Literal["auto", "hvp", "jvp"]


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
                            init, chunk_size: int, mode: TangentMode = "auto", method: str = "fg2u"
                            ) -> tuple[Tensor, Tensor, tuple[Any, Any] | None]:
    """w_i = ∇h(φ)·v_i for the rows v_i of `tangents` `(B, N)`, by forward mode through the loop.

    ``mode="hvp"`` (the default, ``"auto"``, when the problem has a
    :class:`~pinnlab.bilevel.base.GradientStep`) carries the B tangents through each
    step with Hessian-vector products by double backward (:func:`tangent_unroll`);
    ``mode="jvp"`` applies :func:`torch.func.jvp` to the whole unrolled map. Either way
    the B tangents are processed ``chunk_size`` at a time, all directions share the
    inner randomness, and memory is O(chunk_size · M), independent of T. Returns
    (w `(B,)` in the tangents' dtype, h(φ), (θ_T, state_T) or ``None`` when the mode
    does not produce them). Inner steps that leave θ_T independent of φ (a step that
    reads φ through ``float`` or ``detach``) raise ``ValueError`` naming ``method``.
    """
    _check_mode(mode)
    if mode == "auto":
        mode = "hvp" if problem.gradient_step is not None else "jvp"
    if mode == "hvp":
        if problem.gradient_step is None:
            raise ValueError("tangents='hvp' needs a problem with a gradient_step (from_inner_loss or "
                             "from_train_step build one); use tangents='jvp'")
        outs, value, final = [], None, None
        for i in range(0, tangents.shape[0], chunk_size):
            w, value, theta, state = tangent_unroll(problem, phi, tangents[i : i + chunk_size], start=start,
                                                    init=init, method=method)
            final = (theta, state)
            outs.append(w.to(tangents.dtype))  # (θ's dtype: float64 for a float64 problem's float32 φ)
        return torch.cat(outs), value, final
    def outer_loss(theta, phi):
        # (inside jvp a tensor computed from φ is dual: θ_T without a tangent does not depend on φ)
        if not any(unpack_dual(v).tangent is not None for v in tensor_leaves(theta)[0]):
            raise independent_of_phi(method)
        return problem.outer_loss(theta, phi)

    h = unrolled_objective(dataclasses.replace(problem, outer_loss=outer_loss), start=start, init=init)

    def one(v_flat):
        return torch.func.jvp(h, (phi,), (unflatten(v_flat, phi),))

    values, outs = None, []
    for i in range(0, tangents.shape[0], chunk_size):
        try:
            value, w = torch.func.vmap(one, randomness="same")(tangents[i : i + chunk_size])
        except RuntimeError as err:  # (NotImplementedError, too: a subclass)
            raise not_forward_differentiable(err) from err
        values = value[0] if values is None else values
        outs.append(w.to(tangents.dtype))  # (Python numbers under vmap(jvp) promote float32 to float64)
    return torch.cat(outs), values, None


def _batched(flat: Tensor, like: Phi) -> dict[str, Tensor]:
    """`(B, N)` rows → a dict of `(B, *shape)` tensors shaped like ``like``."""
    out, offset = {}, 0
    for key, value in like.items():
        out[key] = flat[:, offset : offset + value.numel()].reshape(flat.shape[0], *value.shape)
        offset += value.numel()
    return out


def _hessian_vector_products(split, theta, phi, t, theta_dot, phi_dot):
    """One step's gradient and what its tangents need, by one double backward per chunk.

    Returns (∇_θ g summed over chunks, ġ_i = H_θθ θ̇_i + H_θφ φ̇_i `(B, ...)`, the learning
    rate, its tangents ⟨∇_φ rate, φ̇_i⟩ `(B,)` or ``None`` when it does not depend on φ,
    whether the step's losses or rate use φ at all)."""
    keys, pkeys = list(theta), list(phi)
    b = next(iter(phi_dot.values())).shape[0]
    th = {k: theta[k].detach().requires_grad_(True) for k in keys}
    ph = {k: phi[k].detach().requires_grad_(True) for k in pkeys}
    inputs = [*th.values(), *ph.values()]
    cotangents = [*(theta_dot[k] for k in keys), *(phi_dot[k] for k in pkeys)]
    grads = {k: torch.zeros_like(theta[k]) for k in keys}
    grads_dot = {k: theta_dot[k].new_zeros(theta_dot[k].shape) for k in keys}
    uses_phi = False
    with torch.enable_grad():
        for loss in split.losses(th, ph, t):
            first = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
            uses_phi = uses_phi or any(g is not None for g in first[len(keys):])
            for k, g in zip(keys, first):
                if g is not None:
                    grads[k] = grads[k] + g.detach()
            live = [(g, c) for g, c in zip(first, cotangents) if g is not None and g.requires_grad]
            if not live:
                continue
            outputs = [g for g, _ in live]
            if b == 1:
                second = torch.autograd.grad(outputs, list(th.values()), grad_outputs=[c[0] for _, c in live],
                                             allow_unused=True)
                second = [None if x is None else x[None] for x in second]
            else:
                second = torch.autograd.grad(outputs, list(th.values()), grad_outputs=[c for _, c in live],
                                             allow_unused=True, is_grads_batched=True)
            for k, x in zip(keys, second):
                if x is not None:
                    grads_dot[k] = grads_dot[k] + x.detach()
        rate = split.rate(ph, t)
        rate_dot = None
        if isinstance(rate, Tensor) and rate.requires_grad:
            d_rate = torch.autograd.grad(rate, list(ph.values()), allow_unused=True)
            rate_dot = sum((phi_dot[k] * d).reshape(b, -1).sum(1) for k, d in zip(pkeys, d_rate) if d is not None)
            rate = rate.detach()
    return grads, grads_dot, rate, rate_dot, uses_phi or rate_dot is not None


def tangent_unroll(problem: BilevelProblem, phi: Phi, tangents: Tensor, *, start: int = 0, init=None,
                   method: str = "tangent_unroll") -> tuple[Tensor, Tensor, Any, Any]:
    r"""One pass of T inner steps carrying B tangents: (w = ∇h·v_i `(B,)`, h, θ_T, state_T).

    Per step t, with (θ̇_i, ṡ_i) the tangents of (θ, state) along φ̇ = v_i: the
    gradient's tangent ġ_i = H_θθ θ̇_i + H_θφ v_i comes from one double backward of the
    step's loss (``is_grads_batched`` over the B directions), and the optimizer maps
    (ġ_i, ṡ_i, θ̇_i, ṙate_i) to the next (θ̇_i, ṡ_i) with its own closed-form
    :meth:`~pinnlab.solvers.optim.AbstractOptimizer.tangent`. Only one step's graph is
    alive at a time: memory O(B·M), independent of T, as in (FG)²U, at about the cost of
    a Hessian-vector product per step and direction, without forward-mode AD through
    the backward pass. Finally w_i = ⟨∂f/∂θ_T, θ̇_{T,i}⟩ + ⟨∂f/∂φ, v_i⟩ from one
    reverse pass of f. A θ_0 and steps that do not use φ at all (losses and rate) raise
    ``ValueError`` (``method`` names the estimator): θ̇_T would be 0, silently.
    """
    split = problem.gradient_step
    phi = {k: v.detach() for k, v in phi.items()}
    phi_dot = _batched(tangents, phi)
    b = tangents.shape[0]
    if init is None and callable(problem.init):
        _, rebuild = tensor_leaves(problem.init(phi)[1])

        def initial(p):
            theta, state = problem.init(p)
            return theta, tensor_leaves(state)[0]

        (theta, tensors), (theta_dot, tensors_dot) = torch.func.vmap(
            lambda v: torch.func.jvp(initial, (phi,), (v,)))(phi_dot)
        theta = {k: v[0] for k, v in theta.items()}
        state, state_dot = rebuild([x[0] for x in tensors]), rebuild(tensors_dot)
    else:
        theta, state = problem.initial(phi) if init is None else init
        theta_dot = {k: v.new_zeros(b, *v.shape) for k, v in theta.items()}
        tensors, rebuild = tensor_leaves(state)
        state_dot = rebuild([x.new_zeros(b, *x.shape) for x in tensors])
    theta = {k: v.detach() for k, v in theta.items()}
    # (θ_0(φ) counts as a use: its tangents are not known to be 0)
    uses_phi = init is None and callable(problem.init)
    for t in range(start, start + problem.horizon):
        grads, grads_dot, rate, rate_dot, used = _hessian_vector_products(split, theta, phi, t, theta_dot, phi_dot)
        uses_phi = uses_phi or used
        theta, state, theta_dot, state_dot = split.optimizer.tangent(
            grads, state, theta, rate, grads_dot, state_dot, theta_dot, rate_dot)
    if not uses_phi:  # θ̇_T = 0 along every direction: the estimate would be ∂f/∂φ alone, silently
        raise independent_of_phi(method)
    th = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
    ph = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
    with torch.enable_grad():
        value = problem.outer_loss(th, ph)
        d_value = torch.autograd.grad(value, [*th.values(), *ph.values()], allow_unused=True)
    w = tangents.new_zeros(b)
    for dot, d in zip([*theta_dot.values(), *phi_dot.values()], d_value):
        if d is not None:
            w = w + (dot * d).reshape(b, -1).sum(1)
    return w, value.detach(), theta, state


def not_forward_differentiable(err: Exception) -> RuntimeError:
    text = str(err)
    match = re.search(r"(aten::\w+|'\w+'|\w+_backward|\w+\(\))", text)
    op = f" (operation {match.group(1)})" if match else ""
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return RuntimeError(
        f"the inner step is not differentiable in forward mode{op}: {first}. Forward-mode "
        "methods (fg2u, fgu) need every operation of the inner step to support "
        "torch.func.jvp; rgu/trgu need only a backward pass (an autograd.Function's own backward will do, "
        "an operation outside autograd such as NumPy has none); zo_fg2u only evaluates the step."
    )


def _check_mode(mode) -> None:
    if mode not in ("auto", "hvp", "jvp"):
        raise ValueError(f"tangents must be 'auto', 'hvp' or 'jvp', got {mode!r}")


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
    Cost: per inner step, the step's own forward and backward pass plus b
    Hessian-vector products (double backward; ``tangents="auto"`` when the problem
    exposes its :class:`~pinnlab.bilevel.base.GradientStep`, else b JVPs of the
    unrolled loop and one more primal unroll for θ_T); at b = 1 that is about 1.5× the
    primal unroll, less than reverse unrolling. Memory O(chunk_size·M), independent of T — the
    method of choice for long horizons and many hyperparameters when reverse
    unrolling (O(T·M)) does not fit. Directions are seeded by (seed, outer_step, i),
    and under ``torch.distributed`` each rank evaluates its share of the b directions;
    every rank returns the summed estimate and rank 0's h(φ) (a rank left without
    directions, when b is below the number of ranks, only unrolls for θ_T).

    Args:
        num_directions: b. Default (None): min(8, N) for the N scalar entries of the φ
            estimated at (:meth:`directions_for`): more than N directions cost more than
            the exact :class:`ExactForwardUnroll` (N directions, no variance); at N = 1 one
            Rademacher direction already gives the exact ∇h.
        kind: ``"rademacher"`` (default), ``"gaussian"`` or ``"coordinate"`` (√N·e_j).
        chunk_size: directions carried together (bounds memory).
        distributed: split directions over ``torch.distributed`` ranks when initialised.
        tangents: how tangents cross a step (:func:`directional_derivatives`):
            ``"auto"`` (Hessian-vector products by double backward when the problem
            exposes its gradient step, else ``"jvp"``), ``"hvp"`` or ``"jvp"``
            (:func:`torch.func.jvp` of the whole loop).
    """

    num_directions: int | None = None
    kind: DirectionKind = "rademacher"
    chunk_size: int = 8
    distributed: bool = True
    tangents: TangentMode = "auto"
    name = "fg2u"

    def __post_init__(self):
        if self.num_directions is not None:
            check_integer("num_directions (b)", self.num_directions)
        check_integer("chunk_size", self.chunk_size)
        if self.kind not in ("rademacher", "gaussian", "coordinate"):
            raise ValueError(f"kind must be 'rademacher', 'gaussian' or 'coordinate', got {self.kind!r}")
        _check_mode(self.tangents)

    def varies(self, size):
        return self.kind == "gaussian" or size > 1  # (N = 1: v·vᵀ = 1 for ±1 and √1·e_1)

    def directions_for(self, size: int) -> int:
        """b for a φ of ``size`` = N scalar entries: ``num_directions``, or min(8, N)."""
        return min(DEFAULT_DIRECTIONS, size) if self.num_directions is None else self.num_directions

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        from pinnlab.bilevel.distributed import all_reduce_sum, broadcast_value, rank_and_world

        template = flatten(phi)
        b = self.directions_for(template.numel())
        rank, world = rank_and_world() if self.distributed else (0, 1)
        mine = range(rank, b, world)
        v = directions(self.kind, mine, template.numel(), seed=seed, outer_step=outer_step,
                       dtype=template.dtype, device=template.device)
        final = None
        if len(v):
            w, value, final = directional_derivatives(problem, phi, v, start=start, init=init,
                                                      chunk_size=self.chunk_size, mode=self.tangents,
                                                      method=self.name)
            partial = (w[:, None] * v).sum(0)
        else:
            w, value, partial = template.new_zeros(0), None, torch.zeros_like(template)
        total = all_reduce_sum(partial) if world > 1 else partial
        value = None if value is None else float(value.detach())
        if world > 1:  # h(φ) of rank 0 (which holds direction 0), also on a rank without directions
            value = broadcast_value(value)
        grad = unflatten(total / b, phi)
        theta, state = final if final is not None else _primal(problem, phi, start, init)
        primal_passes = 0 if final is not None else 1
        return HypergradientResult(
            grad={k: g.detach() for k, g in grad.items()},
            value=value,
            theta=theta, state=state,
            diagnostics={"directional": w.detach(), "directions": v,
                         "inner_step_evaluations": problem.horizon * (len(v) + primal_passes)},
        )


@dataclass(frozen=True)
class ExactForwardUnroll(AbstractHypergradient):
    r"""FGU (forward-mode RTRL, Franceschi et al. 2017): the exact ∇h from N JVPs.

    Z_t = A_t Z_{t−1} + B_t, ∇h = d_T Z_T + c_T, computed as the JVPs of h along the N
    coordinate directions (``chunk_size`` at a time, Hessian-vector products per step
    as in :class:`ForwardGradientUnroll`). Exact like reverse unrolling, memory
    O(chunk_size·M) independent of T, cost N directional derivatives: affordable when
    φ has few entries (loss weights, σ, a mix coefficient).
    """

    chunk_size: int = 16
    tangents: TangentMode = "auto"
    name = "fgu"

    def __post_init__(self):
        check_integer("chunk_size", self.chunk_size)
        _check_mode(self.tangents)

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        template = flatten(phi)
        eye = torch.eye(template.numel(), dtype=template.dtype, device=template.device)
        w, value, final = directional_derivatives(problem, phi, eye, start=start, init=init,
                                                  chunk_size=self.chunk_size, mode=self.tangents,
                                                  method=self.name)
        theta, state = final if final is not None else _primal(problem, phi, start, init)
        return HypergradientResult(
            grad={k: g.detach() for k, g in unflatten(w, phi).items()}, value=float(value.detach()),
            theta=theta, state=state,
            diagnostics={"inner_step_evaluations": problem.horizon * (template.numel() + (final is None))},
        )
