"""Build bilevel problems from an inner loss or from the PINN training step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from pinnlab._typing import Params
from pinnlab.bilevel.base import BilevelProblem, GradientStep, Phi
from pinnlab.solvers.optim import AbstractOptimizer


def from_inner_loss(
    inner_loss: Callable[[Params, Phi, int], Tensor],
    outer_loss: Callable[[Params, Phi], Tensor],
    optimizer: AbstractOptimizer,
    theta0: Params | Callable[[Phi], Params],
    *,
    horizon: int,
    lr: float | Callable[[Phi], Any] | None = None,
) -> BilevelProblem:
    """Inner step θ ← optimizer.update(∇_θ g(θ, φ, t)) with one of pinnlab's functional
    optimizers (SGD, momentum, Adam), whose state is carried so tangents flow through it.

    Args:
        inner_loss: g(θ, φ, t).
        outer_loss: f(θ_T, φ).
        optimizer: :class:`~pinnlab.solvers.SGD` or :class:`~pinnlab.solvers.Adam`.
        theta0: θ_0, or a function of φ.
        horizon: T.
        lr: the inner learning rate: a float, a function of φ (to tune it), or the
            optimizer's own ``lr``.
    """
    grad_fn = torch.func.grad(inner_loss)

    def rate(phi, t):
        return optimizer.lr if lr is None else (lr(phi) if callable(lr) else lr)

    def step(theta, state, phi, t):
        return optimizer.update(grad_fn(theta, phi, t), state, theta, rate(phi, t))

    if callable(theta0):
        def init(phi):
            theta = theta0(phi)
            return theta, optimizer.init(theta)
    else:
        init = (theta0, optimizer.init(theta0))
    split = GradientStep(lambda theta, phi, t: (inner_loss(theta, phi, t),), optimizer, rate)
    return BilevelProblem(step, outer_loss, init, horizon, inner_loss=inner_loss, gradient_step=split)


def from_train_step(
    train_step,
    to_hyperparams: Callable[[Phi], Mapping[str, Any]],
    outer_loss: Callable[[Params, Phi], Tensor],
    init: tuple[Params, Any] | Callable[[Phi], tuple[Params, Any]],
    *,
    horizon: int,
    objective: Callable[..., tuple[Tensor, Any]] | None = None,
    seed: int = 0,
    inner_lr: float | None = None,
) -> BilevelProblem:
    """The PINN training step (``make_train_step``) as the inner step, unchanged.

    φ reaches the step only through ``to_hyperparams(φ)`` (loss weights, σ, mix, lr,
    PDE coefficients, ...). A :class:`~pinnlab.solvers.TrainStep` lends its two halves
    (chunk losses, optimizer update) as the problem's
    :class:`~pinnlab.bilevel.base.GradientStep`, and the sum of its chunk losses is g(θ,
    φ, t) for implicit and penalty methods: the very loss the step differentiates, with
    its points, noise and seed ([FG2U] §6.3: shared inner randomness). Any other step
    callable gets g from ``objective(θ, hyperparams, t, seed)`` (``PINNProblem.objective``
    with the step's seed), if given, and its step size from ``inner_lr`` (the default α/ξ
    of Hessian-free and DARTS; a TrainStep has its own rate and refuses it).
    """

    def step(theta, state, phi, t):
        theta, state, _ = train_step(theta, state, to_hyperparams(phi), t)
        return theta, state

    split = None
    if hasattr(train_step, "losses") and hasattr(train_step, "learning_rate"):
        def losses(theta, phi, t):
            return (loss for loss, _ in train_step.losses(theta, to_hyperparams(phi), t))

        def rate(phi, t):
            return train_step.learning_rate(to_hyperparams(phi), t)

        split = GradientStep(losses, train_step.optimizer, rate)

    inner_loss = None
    if split is not None:
        def inner_loss(theta, phi, t):
            return sum(split.losses(theta, phi, t))
    elif objective is not None:
        def inner_loss(theta, phi, t):
            return objective(theta, to_hyperparams(phi), t, seed)[0]

    return BilevelProblem(step, outer_loss, init, horizon, inner_loss=inner_loss, inner_lr=inner_lr,
                          gradient_step=split)
