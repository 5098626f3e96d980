"""The pure training step: one function, looped by the solver and unrolled by the bilevel layer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from pinnlab._typing import Params
from pinnlab.solvers.optim import AbstractOptimizer
from pinnlab.solvers.problem import PINNProblem
from pinnlab.solvers.schedules import Constant

TrainStep = Callable[
    [Params, Any, Mapping[str, Any], int], tuple[Params, Any, dict[str, Tensor]]
]
"""``(params, opt_state, hyperparams, step) -> (params, opt_state, metrics)``."""


def make_train_step(
    problem: PINNProblem,
    optimizer: AbstractOptimizer,
    *,
    seed: int = 0,
    schedule: Callable[[int], float] = Constant(),
) -> TrainStep:
    """Build the pure training step of ``problem``.

    ``step_fn(params, opt_state, hyperparams, step)`` computes the objective's
    parameter gradient with :func:`torch.func.grad` (no in-place updates, no
    ``.backward()``), then applies ``optimizer`` with learning rate
    ``hyperparams.get("lr", optimizer.lr) * schedule(step)``. All randomness is keyed by
    ``(seed, step)``. Because it is built from torch.func transforms and pure
    functional updates, the very same function can be differentiated end to end in
    forward mode (``torch.func.jvp``) or reverse mode through T unrolled steps, with
    respect to parameters, optimizer state and any tensor hyperparameter (σ, mix, lr,
    loss weights, PDE coefficients). Metrics are detached tensors (no ``.item()``).

    Example:
        >>> from pinnlab.equations import PoissonTwoBody
        >>> from pinnlab.estimators import SteinAntithetic
        >>> from pinnlab.losses import Biased
        >>> from pinnlab.nets import MLP
        >>> from pinnlab.solvers import Adam
        >>> eq = PoissonTwoBody(4)
        >>> problem = PINNProblem(eq, MLP(4, width=16), SteinAntithetic(num_samples=8), Biased(),
        ...                       batch_size=10)
        >>> opt = Adam(lr=1e-3)
        >>> step = make_train_step(problem, opt, seed=0)
        >>> params = problem.init_params()
        >>> params, state, metrics = step(params, opt.init(params), {}, 0)
        >>> sorted(metrics)[:2]
        ['loss', 'loss_biased']
    """
    grad_fn = torch.func.grad(problem.objective, has_aux=True)

    def gradient(params, hyperparams, step):
        if problem.batch_chunks == 1:
            return grad_fn(params, hyperparams, step, seed)
        grads, metrics = grad_fn(params, hyperparams, step, seed, 0)
        for chunk in range(1, problem.batch_chunks):
            more, extra = grad_fn(params, hyperparams, step, seed, chunk)
            grads = {k: grads[k] + more[k] for k in grads}
            metrics = {k: v if k == "mix" else v + extra.get(k, 0) for k, v in metrics.items()}
        return grads, metrics

    def step_fn(params, opt_state, hyperparams, step):
        grads, metrics = gradient(params, hyperparams, step)
        lr = hyperparams.get("lr", optimizer.lr) * schedule(step)
        params, opt_state = optimizer.update(grads, opt_state, params, lr)
        metrics["lr"] = torch.as_tensor(lr).detach()
        return params, opt_state, metrics

    return step_fn
