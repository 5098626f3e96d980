"""The pure training step: one function, looped by the solver and unrolled by the bilevel layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pinnlab._checks import check_seed, one_line
from pinnlab._typing import Params
from pinnlab.solvers.optim import AbstractOptimizer
from pinnlab.solvers.problem import PINNProblem
from pinnlab.solvers.schedules import Constant

TrainStepFn = Callable[
    [Params, Any, Mapping[str, Any], int], tuple[Params, Any, dict[str, Tensor]]
]
"""``(params, opt_state, hyperparams, step) -> (params, opt_state, metrics)``."""


@dataclass(frozen=True)
class TrainStep:
    """The pure training step of ``problem``: the gradient of its objective, then ``optimizer``.

    ``step(params, opt_state, hyperparams, step)`` computes the objective's parameter
    gradient with :func:`torch.func.grad` (no in-place updates, no ``.backward()``),
    then applies ``optimizer`` with learning rate ``hyperparams.get("lr", optimizer.lr) *
    schedule(step)``. All randomness is keyed by ``(seed, step)``. Because it is built
    from torch.func transforms and pure functional updates, the very same function can
    be differentiated end to end in forward mode (``torch.func.jvp``) or reverse mode
    through T unrolled steps, with respect to parameters, optimizer state and any tensor
    hyperparameter (σ, mix, lr, loss weights, PDE coefficients). Metrics are detached
    tensors (no ``.item()``).

    The two halves are public, so the bilevel layer can differentiate the same step
    piecewise (Hessian-vector products of :meth:`losses`, then the optimizer's
    tangent): ``step(p, s, hp, t)`` is ``optimizer.update(Σ_c ∇_p ℓ_c, s, p,
    learning_rate(hp, t))`` over the chunk losses ℓ_c of :meth:`losses`.
    """

    problem: PINNProblem
    optimizer: AbstractOptimizer
    seed: int = 0
    schedule: Callable[[int], float] = field(default_factory=Constant)

    def __post_init__(self):
        for name, kind in (("problem", PINNProblem), ("optimizer", AbstractOptimizer)):
            if not isinstance(getattr(self, name), kind):  # ("adam": "'str' object has no attribute 'lr'")
                raise TypeError(f"{name} must be a {kind.__name__} instance, got "
                                f"{one_line(repr(getattr(self, name)))}"[:200])
        check_seed("seed", self.seed)  # else a result that records it fails to write, after the training

    def losses(self, params: Params, hyperparams: Mapping[str, Any], step: int
               ) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        """The step's objective as (loss, metrics) per point chunk; the chunks' parameter
        gradients add up to the step's gradient (one chunk unless ``batch_chunks`` > 1)."""
        if self.problem.batch_chunks == 1:
            yield self.problem.objective(params, hyperparams, step, self.seed)
            return
        for chunk in range(self.problem.batch_chunks):
            yield self.problem.objective(params, hyperparams, step, self.seed, chunk)

    def gradient(self, params: Params, hyperparams: Mapping[str, Any], step: int
                 ) -> tuple[Params, dict[str, Tensor]]:
        """∇_params of the objective at ``step`` (summed over chunks) and its metrics."""
        grad_fn = torch.func.grad(self.problem.objective, has_aux=True)
        if self.problem.batch_chunks == 1:
            return grad_fn(params, hyperparams, step, self.seed)
        grads, metrics = grad_fn(params, hyperparams, step, self.seed, 0)
        for chunk in range(1, self.problem.batch_chunks):
            more, extra = grad_fn(params, hyperparams, step, self.seed, chunk)
            grads = {k: grads[k] + more[k] for k in grads}
            metrics = {k: v if k == "mix" else v + extra.get(k, 0) for k, v in metrics.items()}
        return grads, metrics

    def term_gradients(self, params: Params, hyperparams: Mapping[str, Any], step: int,
                       names: Sequence[str] | None = None) -> dict[str, Params]:
        """∇_params of each unweighted term at ``step`` (summed over the same chunks and
        noise streams as the step), for the terms ``names`` (default: all).

        One forward pass of :meth:`PINNProblem.term_losses` per chunk, then one backward
        per term through the retained graph: a term's gradient never recomputes the
        other terms (the residual's forward and backward are the expensive part).
        Plain autograd on detached copies of ``params``; nothing is differentiated
        through (the results are detached). Parameters a term does not use get zeros.
        """
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        keys = list(leaves)
        chunks = [None] if self.problem.batch_chunks == 1 else range(self.problem.batch_chunks)
        out: dict[str, Params] = {}
        with torch.enable_grad():
            for chunk in chunks:
                terms, _ = self.problem.term_losses(leaves, hyperparams, step, self.seed, chunk)
                wanted = [n for n in terms if names is None or n in names]
                last = max((i for i, n in enumerate(wanted) if terms[n].requires_grad), default=-1)
                for i, name in enumerate(wanted):
                    grads = (torch.autograd.grad(
                        terms[name], [leaves[k] for k in keys],
                        retain_graph=i < last, allow_unused=True,
                    ) if terms[name].requires_grad else [None] * len(keys))
                    grads = {k: torch.zeros_like(leaves[k]) if g is None else g
                             for k, g in zip(keys, grads)}
                    if name in out:
                        grads = {k: out[name][k] + grads[k] for k in keys}
                    out[name] = grads
                del terms
        return out

    def learning_rate(self, hyperparams: Mapping[str, Any], step: int):
        """``hyperparams["lr"]`` (default ``optimizer.lr``) times ``schedule(step)``."""
        return hyperparams.get("lr", self.optimizer.lr) * self.schedule(step)

    def __call__(self, params: Params, opt_state: Any, hyperparams: Mapping[str, Any], step: int
                 ) -> tuple[Params, Any, dict[str, Tensor]]:
        grads, metrics = self.gradient(params, hyperparams, step)
        lr = self.learning_rate(hyperparams, step)
        params, opt_state = self.optimizer.update(grads, opt_state, params, lr)
        # in the parameters' dtype: a Python float became float32 (a float64 run recorded
        # 0.0010000000474974513 for 1e-3)
        metrics["lr"] = torch.as_tensor(lr, dtype=next(iter(params.values())).dtype).detach()
        return params, opt_state, metrics


def make_train_step(
    problem: PINNProblem,
    optimizer: AbstractOptimizer,
    *,
    seed: int = 0,
    schedule: Callable[[int], float] = Constant(),  # noqa: B008 (frozen: one shared instance is safe)
) -> TrainStep:
    """Build the pure training step of ``problem`` (see :class:`TrainStep`).

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
    return TrainStep(problem, optimizer, seed, schedule)
