"""Evaluation of the smoothed model on a fixed test set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from pinnlab._seeding import make_generator
from pinnlab._typing import Params
from pinnlab.estimators.stein import SteinAntithetic
from pinnlab.nets.mlp import MLP
from pinnlab.solvers.problem import PINNProblem

#: elements of the largest tensor of an evaluation chunk (see :func:`eval_chunk_size`)
EVAL_ELEMENT_BUDGET = 2**24


@dataclass(frozen=True)
class Evaluation:
    """Errors of u against u* at test points; ``prediction`` is `(N,)`."""

    rel_l2: float
    rel_l1: float
    max_err: float
    prediction: Tensor


def eval_chunk_size(problem: PINNProblem, num_samples: int | None) -> int:
    """Points per chunk so the largest tensor of one chunk stays within the element budget.

    A smoothed value needs 2K perturbed inputs per point (K = ``num_samples`` antithetic
    pairs). With independent noise, or a network that does not factorise its first layer
    (anything but :class:`~pinnlab.nets.MLP`), a chunk holds them as `(n, 2, K, D)` inputs
    or `(n, K, D)` draws: 2·K·max(D, w) elements per point. With shared noise and an MLP
    the first layer is W x + W(σξ) and the largest tensor is the `(n, 2, K, w)` hidden
    layer, 2·K·w per point whatever D (the one `(K, D)` draw is held once, not per point).
    """
    k = max(1, num_samples or 1)
    width = getattr(problem.net, "width", 128)
    estimator = problem.estimator
    if isinstance(estimator, SteinAntithetic) and estimator.noise == "shared" and isinstance(problem.net, MLP):
        per_point = 2 * k * width
    else:
        per_point = 2 * k * max(problem.equation.input_dim, width)
    return max(1, min(4096, EVAL_ELEMENT_BUDGET // per_point))


def predict(
    problem: PINNProblem,
    params: Params,
    x: Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    sigma=None,
) -> Tensor:
    """u = A·u_σ + B at `(N, D)` points, with ``num_samples`` for the smoothed value.

    Runs without autograd and in chunks of :func:`eval_chunk_size` points (memory bounded
    at any D). Shared noise draws one set of K vectors for all N points (the values do
    not depend on the chunk size); independent noise draws each chunk's in turn from
    ``generator``. Returns `(N,)`.
    """
    estimator = problem.estimator
    if num_samples is not None and hasattr(estimator, "num_samples"):
        estimator = dataclasses.replace(estimator, num_samples=num_samples)
    smoothed = estimator.evaluate(
        problem.model(params),
        x,
        generator=generator,
        chunk_size=eval_chunk_size(problem, getattr(estimator, "num_samples", None)),
        sigma=sigma,
    )
    with torch.no_grad():
        return problem.equation.solution(x, smoothed)


def relative_errors(prediction: Tensor, exact: Tensor) -> Evaluation:
    """Relative L2, relative L1 and max error of ``prediction`` against ``exact`` (one shape:
    an `(N,)` against an `(N, 1)` would broadcast to `(N, N)` and give a wrong number)."""
    if prediction.shape != exact.shape:
        raise ValueError(f"prediction of shape {tuple(prediction.shape)} and exact values of shape "
                         f"{tuple(exact.shape)}: need one shape, `(N,)`")
    err = (prediction - exact).double()
    exact = exact.double()
    return Evaluation(
        rel_l2=float(err.norm() / exact.norm()),
        rel_l1=float(err.abs().sum() / exact.abs().sum()),
        max_err=float(err.abs().max()),
        prediction=prediction.detach(),
    )


def evaluate(
    problem: PINNProblem,
    params: Params,
    x: Tensor,
    exact: Tensor,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    step: int = 0,
    sigma=None,
) -> Evaluation:
    """Errors of the smoothed model on a test set; noise keyed by (seed, "eval", step)."""
    generator = make_generator(seed, "eval", step, device=x.device)
    u = predict(problem, params, x, num_samples=num_samples, generator=generator, sigma=sigma)
    return relative_errors(u, exact)
