"""Implicit-differentiation hypergradients at θ_T: Neumann, CG, Hessian-free, DARTS."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pinnlab._checks import check_integer, check_nonnegative, check_positive
from pinnlab._warnings import warn
from pinnlab.bilevel._trees import detach, tree_add, tree_dot, tree_norm, tree_norm64, tree_scale
from pinnlab.bilevel.base import AbstractHypergradient, HypergradientResult, unroll


class _AtSolution:
    """Derivatives of f and g at (θ_T, φ) used by the implicit estimators.

    With d = ∂f/∂θ, c = ∂f/∂φ, H = ∇²_θθ g, Y = ∇²_θφ g (REFERENCE.md §6.7): the first
    derivative ∇_θ g is built once with its graph, and every Hessian-vector product Hq
    (∇_θ⟨∇_θ g, q⟩) and the mixed product qᵀY = ∇_φ⟨∇_θ g, q⟩ is one more backward
    through that graph (no forward-mode AD, which is slow for ops with Python scalars,
    and no recomputation of g per product).
    """

    def __init__(self, problem, phi, theta, step, method: str):
        g = problem.needs_inner_loss(method)
        self.phi, self.theta = phi, detach(theta)
        (self.d, self.c), value = torch.func.grad_and_value(problem.outer_loss, argnums=(0, 1))(
            self.theta, phi)
        self.value = float(value)
        self.hvps = 0
        self.diagnostics: dict = {}  # what the linear solver reports, merged into the result's
        self._th = {k: v.detach().requires_grad_(True) for k, v in self.theta.items()}
        self._ph = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
        with torch.enable_grad():
            loss = g(self._th, self._ph, step)
            self._grad = torch.autograd.grad(loss, list(self._th.values()), create_graph=True)

    def _second(self, q, wrt: dict) -> dict:
        """∇_wrt ⟨∇_θ g, q⟩ through the cached graph (zeros where it does not depend on wrt)."""
        live = [(g, q[k]) for k, g in zip(self._th, self._grad) if g.requires_grad]
        if not live:
            return {k: torch.zeros_like(v) for k, v in wrt.items()}
        with torch.enable_grad():
            out = torch.autograd.grad([g for g, _ in live], list(wrt.values()), grad_outputs=[c for _, c in live],
                                      retain_graph=True, allow_unused=True)
        return {k: torch.zeros_like(v) if o is None else o.detach() for (k, v), o in zip(wrt.items(), out)}

    def hvp(self, q):
        self.hvps += 1
        return self._second(q, self._th)

    def mixed(self, q):
        """qᵀY = ∇_φ (∇_θ g(θ, φ) · q)."""
        return self._second(q, self._ph)

    def hypergradient(self, q):
        """c − qᵀY for q ≈ H⁻¹d."""
        mixed = self.mixed(q)
        return {k: (self.c[k] - mixed[k]).detach() for k in self.c}


def _solution(problem, phi, start, init):
    with torch.no_grad():
        theta, state = unroll(problem, phi, start=start, init=init)
    return theta, state, start + problem.horizon - 1


@dataclass(frozen=True)
class NeumannSolve:
    r"""H⁻¹d ≈ α Σ_{k=0}^{K} (I − αH)^k d (Lorraine et al. 2020): K HVPs; needs ‖I − αH‖ < 1.

    For symmetric H the terms p_k = (I − αH)^k d shrink monotonically when
    ‖I − αH‖ < 1. A term larger than the one before it (beyond rounding, √ε relative)
    shows an eigenvalue of I − αH of modulus > 1 in a direction where d has a part, along
    which the series diverges: α > 2/λ_max(H), or H has a negative eigenvalue (θ_T is not
    near a minimum of g; then no α converges). The result's diagnostics count such terms
    as ``growing_terms`` and give ``last_term`` = ‖p_K‖/‖p_0‖ (how far the truncated
    series is from converged); the call warns once (RuntimeWarning) when a term grew, as
    the answer is then unreliable. The terms themselves are unchanged.
    """

    iterations: int = 20
    alpha: float = 1e-2

    def __post_init__(self):
        check_integer("Neumann iterations (K)", self.iterations, minimum=0)
        check_positive("Neumann alpha (α; ‖I − αH‖ < 1 needs 0 < α < 2/λ_max(H))", self.alpha)

    def __call__(self, at: _AtSolution):
        p, total = at.d, at.d
        first = previous = tree_norm64(p)
        rounding = math.sqrt(torch.finfo(next(iter(p.values())).dtype).eps) if p else 0.0
        growing, grew = 0, None
        for k in range(self.iterations):
            p = tree_add(p, at.hvp(p), -self.alpha)
            total = tree_add(total, p)
            norm = tree_norm64(p)
            if not norm <= previous * (1 + rounding):
                growing += 1
                grew = k + 1 if grew is None else grew
            previous = norm
        at.diagnostics["growing_terms"] = growing
        at.diagnostics["last_term"] = previous / first if first > 0 else 0.0
        if growing:
            warn(
                f"Neumann: the series terms ‖(I − αH)^k d‖ grow ({growing} of {self.iterations} terms larger than "
                f"the one before, from term {grew}; ‖d‖ = {first:.3g}, last term {previous:.3g}): "
                f"‖I − αH‖ ≥ 1 at α = {self.alpha:g}, so the series diverges and the implicit hypergradient is "
                "unreliable; lower alpha (tune.options.alpha) below 2/λ_max(H), or, if H is indefinite (θ_T not near "
                "a minimum of g), use cg with damping or train θ closer to a minimum",
                RuntimeWarning)
        return tree_scale(total, self.alpha)


@dataclass(frozen=True)
class CGSolve:
    r"""Solve (H + λI)q = d by K conjugate-gradient iterations (1 HVP each); H must be SPD
    (λ > 0 damps an indefinite or ill-conditioned H).

    An iteration whose search direction has pᵀ(H + λI)p ≤ 0 shows that H + λI is not
    positive definite (θ_T is not near a minimum of g): the result's diagnostics count
    such iterations as ``negative_curvature`` and the call warns once (RuntimeWarning),
    since CG's answer is then unreliable; the iterations themselves are unchanged, except
    that a curvature of exactly 0 (or not finite) ends them with the iterate so far, where
    the step length rᵀr/pᵀ(H + λI)p would be infinite or NaN (or 0 with a NaN residual:
    a curvature of +inf, an overflow, warns as such).
    """

    iterations: int = 20
    damping: float = 0.0
    tol: float = 1e-12

    def __post_init__(self):
        check_integer("CG iterations (K)", self.iterations)
        check_nonnegative("CG damping (λ)", self.damping)
        check_nonnegative("CG tol", self.tol)

    def __call__(self, at: _AtSolution):
        def op(q):
            hq = at.hvp(q)
            return tree_add(hq, q, self.damping) if self.damping else hq

        x = tree_scale(at.d, 0.0)
        r = dict(at.d)
        p = dict(r)
        rr = tree_dot(r, r)
        negative, first = 0, None
        for k in range(self.iterations):
            if float(rr) <= self.tol**2:
                break
            ap = op(p)
            curvature = tree_dot(p, ap)
            c = float(curvature)
            if not c > 0:
                negative += 1
                if first is None:
                    first = (k + 1, c)
            if c == math.inf:  # positive, but the step 0 would turn the residual into NaN (0·inf)
                warn(f"CG: the curvature pᵀ(H + λI)p overflowed to inf at iteration {k + 1}, so CG stopped "
                     "with the iterate before it; the Hessian-vector products overflow (lower the outer "
                     "objective's scale or use float64)", RuntimeWarning)
            if not math.isfinite(c) or c == 0:
                break
            alpha = rr / curvature
            x = tree_add(x, p, alpha)
            r = tree_add(r, ap, -alpha)
            rr_new = tree_dot(r, r)
            p = tree_add(r, p, rr_new / rr)
            rr = rr_new
        at.diagnostics["negative_curvature"] = negative
        if negative:
            warn(
                f"CG: non-positive curvature pᵀ(H + λI)p = {first[1]:.3g} at iteration {first[0]} "
                f"({negative} such iterations): the inner Hessian at θ_T is not positive definite, so the "
                "implicit hypergradient is unreliable; raise CG's damping λ or train θ closer to a minimum",
                RuntimeWarning)
        return x


@dataclass(frozen=True)
class ImplicitDiff(AbstractHypergradient):
    r"""Implicit function theorem at θ_T: ∇h ≈ c − (H⁻¹d)ᵀY (REFERENCE.md §6.7, eq. 27).

    Assumes θ_T is stationary for g (∇_θ g ≈ 0); its error is
    d(Z + H⁻¹Y) (non-stationary θ_T) + (dĤ⁻¹ − dH⁻¹)Y (inexact inverse). Memory O(M),
    cost T inner steps (without a graph) plus the linear solver's HVPs. For RS-PINN inner
    losses HVPs are plain double backward through ordinary forward passes (no input
    autograd), so implicit methods are much cheaper than for autograd PINNs.

    Args:
        solver: :class:`NeumannSolve` or :class:`CGSolve`.
    """

    solver: NeumannSolve | CGSolve = NeumannSolve()
    name = "implicit"
    sees_the_update = False

    def __post_init__(self):
        if not callable(self.solver) or isinstance(self.solver, type):
            hint = f" (for {self.solver!r} use neumann() or cg())" if isinstance(self.solver, str) else ""
            raise TypeError("ImplicitDiff.solver must be a linear-solver object such as NeumannSolve() or "
                            f"CGSolve(), got {type(self.solver).__name__}{hint}")

    @property
    def _label(self) -> str:
        """The method's name as :func:`neumann` and :func:`cg` build it (for messages)."""
        return {NeumannSolve: "neumann", CGSolve: "cg"}.get(type(self.solver), self.name)

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        problem.needs_inner_loss(self._label)  # before the unroll
        theta, state, step = _solution(problem, phi, start, init)
        at = _AtSolution(problem, phi, theta, step, self._label)
        q = self.solver(at)
        return HypergradientResult(
            grad=at.hypergradient(q), value=at.value, theta=theta, state=state,
            diagnostics={"hvps": at.hvps, "inner_step_evaluations": problem.horizon, **at.diagnostics},
        )


def neumann(iterations: int = NeumannSolve.iterations, alpha: float = NeumannSolve.alpha) -> ImplicitDiff:
    """``ImplicitDiff(NeumannSolve(K, α))``."""
    return ImplicitDiff(NeumannSolve(iterations, alpha))


def cg(iterations: int = CGSolve.iterations, damping: float = CGSolve.damping,
       tol: float = CGSolve.tol) -> ImplicitDiff:
    """``ImplicitDiff(CGSolve(K, λ, tol))``: CG stops early once ‖r‖ ≤ ``tol``."""
    return ImplicitDiff(CGSolve(iterations, damping, tol))


@dataclass(frozen=True)
class HessianFree(AbstractHypergradient):
    r"""H⁻¹ ≈ αI: ∇h ≈ c − α dᵀY (FAST-BAT, BiP, SAMA): one mixed VJP, memory O(M).

    Strong assumption; biased unless H ∝ I. ``alpha=None`` takes α = the inner learning
    rate at the current φ and the last inner step (:meth:`BilevelProblem.step_size
    <pinnlab.bilevel.base.BilevelProblem.step_size>`), so it follows a tuned ``lr``; a
    given ``alpha`` stays fixed.
    """

    alpha: float | None = None
    name = "hessian_free"
    sees_the_update = False  # (α follows a tuned lr, but is not differentiated)

    def __post_init__(self):
        if self.alpha is not None:
            check_positive("hessian_free alpha (α in H⁻¹ ≈ αI, H positive definite)", self.alpha)

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        problem.needs_inner_loss(self.name)  # before the unroll
        last = start + problem.horizon - 1
        alpha = self.alpha if self.alpha is not None else problem.step_size(phi, last)
        if alpha is None:
            raise ValueError("hessian_free needs alpha (or a problem with inner_lr or a gradient step)")
        theta, state, step = _solution(problem, phi, start, init)
        at = _AtSolution(problem, phi, theta, step, self.name)
        return HypergradientResult(
            grad=at.hypergradient(tree_scale(at.d, alpha)), value=at.value, theta=theta, state=state,
            diagnostics={"inner_step_evaluations": problem.horizon},
        )


@dataclass(frozen=True)
class DARTS(AbstractHypergradient):
    r"""DARTS' second-order one-step estimate (Liu et al. 2019) at w = θ_T:

    .. math::

        w' = w − ξ∇_w g(w, φ),\quad
        \hat g = ∇_φ f(w', φ) − ξ \frac{∇_φ g(w^+, φ) − ∇_φ g(w^−, φ)}{2ε},\quad
        w^± = w ± ε∇_{w'} f(w', φ)

    with ε = ``epsilon``/‖∇_{w'} f‖. Memory O(M); three gradients of g (∇_w g at w,
    ∇_φ g at w⁺ and w⁻) and one of f (at w'), besides the reported value f(w, φ). The
    first-order variant (ξ = 0) keeps only ∇_φ f and is zero whenever f does not depend
    on φ directly (loss weights!).

    Args:
        xi: ξ, the virtual step (default: the inner learning rate at the current φ and
            the last inner step, which follows a tuned ``lr``).
        epsilon: finite-difference scale (DARTS uses 0.01).
    """

    xi: float | None = None
    epsilon: float = 1e-2
    name = "darts"
    sees_the_update = False

    def __post_init__(self):
        if self.xi is not None:
            check_nonnegative("darts xi (ξ)", self.xi)
        check_positive("darts epsilon (ε)", self.epsilon)

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        g = problem.needs_inner_loss("darts")
        last = start + problem.horizon - 1
        xi = self.xi if self.xi is not None else problem.step_size(phi, last)
        if xi is None:
            raise ValueError("darts needs xi (or a problem with inner_lr or a gradient step)")
        theta, state, step = _solution(problem, phi, start, init)
        grad_theta_g = torch.func.grad(g, argnums=0)
        grad_phi_g = torch.func.grad(g, argnums=1)
        w_prime = tree_add(theta, grad_theta_g(theta, phi, step), -xi)
        v, direct = torch.func.grad(problem.outer_loss, argnums=(0, 1))(w_prime, phi)
        eps = self.epsilon / max(float(tree_norm(v)), 1e-30)
        plus = grad_phi_g(tree_add(theta, v, eps), phi, step)
        minus = grad_phi_g(tree_add(theta, v, -eps), phi, step)
        grad = {k: (direct[k] - xi * (plus[k] - minus[k]) / (2 * eps)).detach() for k in direct}
        value = float(problem.outer_loss(theta, phi))
        return HypergradientResult(grad=grad, value=value, theta=theta, state=state,
                                   diagnostics={"inner_step_evaluations": problem.horizon})
