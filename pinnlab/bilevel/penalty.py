"""Penalty and value-function methods: whole outer algorithms targeting the true bilevel problem."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pinnlab._checks import (
    check_at_least,
    check_integer,
    check_nonnegative,
    check_positive,
)
from pinnlab.bilevel._trees import detach, tree_add, tree_dot, tree_norm64
from pinnlab.bilevel.base import BilevelProblem, Phi


class AbstractOuterAlgorithm(abc.ABC):
    """A method with its own lower-level iterates that returns a φ-gradient per outer step.

    Its steps are its own, on the inner loss g: a learning rate of the inner training has
    no hypergradient here (``sees_the_update``).

    Unlike per-step hypergradient estimators, these target the *true* bilevel problem
    (θ*(φ) = argmin g), not the unrolled h; comparisons must say which objective is
    evaluated. State is a dict of tensors and floats (checkpointable).

    The lower-level iterates live in the method's state, so under :func:`optimize` they
    always continue from the previous outer step; ``warm_start`` and ``seed`` do not
    apply, and ``accumulate`` must be 1. In a :class:`TwoPhase` schedule they start from
    the θ the estimator phase before them left, and :meth:`iterate` is the θ they hand on.
    """

    name: str
    sees_the_update = False
    inner_iters: int
    """Inner indices one outer step uses, ``t = start, …, start + inner_iters − 1`` (the
    driver spaces outer steps by max(T, inner_iters); a method without it uses at most T)."""

    def varies(self, size: int) -> bool:
        """(as :meth:`AbstractHypergradient.varies`: it takes one φ-gradient per outer step)"""
        return False

    @abc.abstractmethod
    def init(self, problem: BilevelProblem, phi: Phi, theta: Any = None) -> dict[str, Any]:
        """Initial lower-level iterates: at ``theta``, or at the problem's θ_0 (None)."""

    @abc.abstractmethod
    def iterate(self, state: dict[str, Any]) -> Any:
        """The lower-level θ of ``state`` that goes with the current φ."""

    @abc.abstractmethod
    def step(self, problem: BilevelProblem, phi: Phi, state: dict[str, Any], *,
             outer_step: int, start: int) -> tuple[dict, dict[str, Any], dict[str, Any]]:
        """(φ-gradient estimate, new state, diagnostics); the inner randomness of the step is
        that of indices ``t = start, …, start + inner_iters − 1``."""


def _theta0(problem, phi, theta=None):
    return detach(problem.initial(phi)[0] if theta is None else theta)


DIVERGENCE_FACTOR = 1e6
"""A lower-level solve counts as diverging when the gradient norm of the objective it
descends becomes non-finite or exceeds this many times its first nonzero value in the
outer step (gradient descent with a stable step keeps it at its scale; an unstable step
raises it geometrically: on a small float32 PINN, F²SA's defaults took it from 0.8 to
1.7e9 in nine inner steps, penalty's from 2e4 to 3.5e23 in one)."""


class LowerLevelDivergence(FloatingPointError):
    """The lower-level gradient descent of an outer algorithm diverged within one outer
    step (its step size is too large for the curvature). The message names the method and
    the step-size option to lower; :func:`~pinnlab.bilevel.optimize` stops there with
    ``status="nonfinite"``, keeping the last usable φ and θ."""


def _watch(method: str, option: str, value: float, descends: str) -> Callable[[dict, int, int], None]:
    """A check of ‖∇‖ along one lower-level solve of ``method`` (gradient descent on
    ``descends`` with step-size option ``option`` = ``value``): raises
    :class:`LowerLevelDivergence` at a non-finite norm or one above DIVERGENCE_FACTOR times
    the first nonzero one."""
    first = None

    def check(grad: dict, i: int, total: int) -> None:
        nonlocal first
        norm = tree_norm64(grad)
        if first is None and norm > 0:
            first = norm
        if math.isfinite(norm) and not (first and norm > DIVERGENCE_FACTOR * first):
            return
        grew = f"rose from {first:.3g} to {norm:.3g}" if first and math.isfinite(norm) else f"is {norm:.3g}"
        raise LowerLevelDivergence(
            f"{method}: the lower-level gradient descent on {descends} diverged (its gradient norm {grew} at "
            f"inner step {i + 1} of {total}): its step is too large for the curvature; lower {method}'s "
            f"{option} (tune.options.{option}, now {value:g})")

    return check


@dataclass(frozen=True)
class Penalty(AbstractOuterAlgorithm):
    r"""Mehra & Hamm (2021) penalty method: min_{φ,θ} f(θ, φ) + (γ_k/2)‖∇_θ g(θ, φ)‖², γ_k ↑ ∞.

    Each outer step runs ``inner_iters`` gradient steps on θ for the penalised
    objective P with step ``lr/(1 + γ)``, then returns
    ∇_φ P = ∇_φ f + γ ∇²_φθ g ∇_θ g. At θ-stationarity γ∇_θ g = −H⁻¹∇_θ f, so the
    estimate tends to the implicit hypergradient c − dH⁻¹Y with error O(1/γ).
    Inversion-free but needs HVPs (double backward); memory O(M + N).

    Step size: P's Hessian is ∇²f + γ(H² + ∇³g[∇_θ g]) ≈ ∇²f + γH² near θ-stationarity,
    so its curvature grows like γ·λ_max(H)², not like γ. The 1/(1 + γ) factor removes the
    growth in γ but not the square: the steps are stable only while
    lr·(λ_max(∇²f) + γ λ_max(H)²)/(1 + γ) < 2, i.e. for lr below about
    2/max(λ_max(∇²f), λ_max(H)²): on the scale of the square of a stable gradient step
    on g itself (2/λ_max(H)). The default 0.1 suits λ_max(H) up to about 4; a PINN inner
    loss has a far larger λ_max(H) and needs a far smaller ``lr``. A solve whose gradient
    norm becomes non-finite or grows by ``DIVERGENCE_FACTOR`` raises
    :class:`LowerLevelDivergence`, naming ``lr``.

    Args:
        gamma: γ₀.
        growth: γ_{k+1} = min(γ_max, growth·γ_k).
        gamma_max: cap on γ.
        inner_iters: θ steps per outer step.
        lr: θ step size before the 1/(1 + γ) scaling.
    """

    gamma: float = 1.0
    growth: float = 1.05
    gamma_max: float = 1e4
    inner_iters: int = 20
    lr: float = 0.1
    name = "penalty"

    def __post_init__(self):
        check_positive("gamma (γ₀)", self.gamma)
        check_at_least("growth", self.growth, 1.0, "1 (γ must not shrink)")
        check_at_least("gamma_max", self.gamma_max, self.gamma, f"gamma = {self.gamma!r}")
        check_integer("inner_iters", self.inner_iters)
        check_positive("lr", self.lr)

    def _objective(self, problem, gamma):
        g = problem.needs_inner_loss("penalty")
        grad_theta = torch.func.grad(g, argnums=0)

        def objective(theta, phi, t):
            residual = grad_theta(theta, phi, t)
            return problem.outer_loss(theta, phi) + 0.5 * gamma * tree_dot(residual, residual)

        return objective

    def init(self, problem, phi, theta=None):
        return {"theta": _theta0(problem, phi, theta), "gamma": float(self.gamma)}

    def iterate(self, state):
        return state["theta"]

    def step(self, problem, phi, state, *, outer_step, start):
        gamma = state["gamma"]
        objective = self._objective(problem, gamma)
        grad_theta = torch.func.grad(objective, argnums=0)
        theta = state["theta"]
        rate = self.lr / (1 + gamma)
        check = _watch("penalty", "lr", self.lr, f"P = f + (γ/2)‖∇_θ g‖² (γ = {gamma:.3g}, step lr/(1 + γ) = "
                       f"{rate:.3g})")
        for i in range(self.inner_iters):
            direction = grad_theta(theta, phi, start + i)
            check(direction, i, self.inner_iters)
            theta = detach(tree_add(theta, direction, -rate))
        grad = torch.func.grad(objective, argnums=1)(theta, phi, start + self.inner_iters - 1)
        new_state = {"theta": theta, "gamma": min(self.gamma_max, gamma * self.growth)}
        return detach(grad), new_state, {"gamma": gamma, "inner_step_evaluations": self.inner_iters}


@dataclass(frozen=True)
class F2SA(AbstractOuterAlgorithm):
    r"""Fully first-order value-function method F²SA (Kwon, Kwon, Wright, Nowak, ICML 2023).

    With L_λ(φ, y, z) = f(y, φ) + λ(g(y, φ) − g(z, φ)), each outer step runs
    ``inner_iters`` of z ← z − η_z∇_θ g(z, φ) and y ← y − η_y(∇_θ f(y, φ)/λ + ∇_θ g(y, φ))
    (the y-step of L_λ scaled by 1/λ), then returns
    ∇̂F = ∇_φ f(y, φ) + λ(∇_φ g(y, φ) − ∇_φ g(z, φ)), whose error is O(1/λ); λ grows
    by ``lam_growth`` per outer step. No Hessians, no HVPs; memory O(M + N).

    Both are plain gradient descent, stable for η_z < 2/λ_max(H) and η_y below about
    2/λ_max(H + ∇²f/λ); a PINN inner loss needs far smaller steps than the defaults. A
    solve whose gradient norm becomes non-finite or grows by ``DIVERGENCE_FACTOR`` raises
    :class:`LowerLevelDivergence`, naming ``lr_z`` or ``lr_y``.

    Args:
        lam: λ₀.
        lam_growth: additive growth of λ per outer step.
        lam_max: cap on λ.
        inner_iters: y/z steps per outer step.
        lr_y: η_y, lr_z: η_z.
    """

    lam: float = 1.0
    lam_growth: float = 1.0
    lam_max: float = 1e4
    inner_iters: int = 20
    lr_y: float = 0.1
    lr_z: float = 0.1
    name = "f2sa"

    def __post_init__(self):
        check_positive("lam (λ₀)", self.lam)
        check_nonnegative("lam_growth", self.lam_growth)
        check_at_least("lam_max", self.lam_max, self.lam, f"lam = {self.lam!r}")
        check_integer("inner_iters", self.inner_iters)
        check_positive("lr_y", self.lr_y)
        check_positive("lr_z", self.lr_z)

    def init(self, problem, phi, theta=None):
        theta = _theta0(problem, phi, theta)
        return {"y": theta, "z": dict(theta), "lam": float(self.lam)}

    def iterate(self, state):
        return state["z"]  # z minimises g alone: the lower-level solution (y leans towards f)

    def step(self, problem, phi, state, *, outer_step, start):
        g = problem.needs_inner_loss("f2sa")
        lam = state["lam"]
        g_theta = torch.func.grad(g, argnums=0)
        f_theta = torch.func.grad(problem.outer_loss, argnums=0)
        y, z = state["y"], state["z"]
        check_z = _watch("f2sa", "lr_z", self.lr_z, "g for z")
        check_y = _watch("f2sa", "lr_y", self.lr_y, f"g + f/λ for y (λ = {lam:.3g})")
        for i in range(self.inner_iters):
            t = start + i
            direction = g_theta(z, phi, t)
            check_z(direction, i, self.inner_iters)
            z = detach(tree_add(z, direction, -self.lr_z))
            direction = tree_add(g_theta(y, phi, t), f_theta(y, phi), 1.0 / lam)
            check_y(direction, i, self.inner_iters)
            y = detach(tree_add(y, direction, -self.lr_y))
        t = start + self.inner_iters - 1
        f_phi = torch.func.grad(problem.outer_loss, argnums=1)(y, phi)
        g_phi = torch.func.grad(g, argnums=1)
        gy, gz = g_phi(y, phi, t), g_phi(z, phi, t)
        grad = {k: (f_phi[k] + lam * (gy[k] - gz[k])).detach() for k in f_phi}
        new_state = {"y": y, "z": z, "lam": min(self.lam_max, lam + self.lam_growth)}
        return grad, new_state, {"lambda": lam, "inner_step_evaluations": 2 * self.inner_iters}
