"""Evaluation of the smoothed model on a fixed test set."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pinnlab._seeding import make_generator
from pinnlab._typing import Params
from pinnlab.estimators.stein import SharedDraw, SteinAntithetic
from pinnlab.nets.mlp import MLP
from pinnlab.solvers.problem import PINNProblem

#: elements of the largest tensor of an evaluation chunk (see :func:`eval_chunk_size`)
EVAL_ELEMENT_BUDGET = 2**24


@dataclass(frozen=True)
class Evaluation:
    """Errors of u against u* at test points; ``prediction`` is `(N,)`. ``rel_l2`` and
    ``rel_l1`` are NaN when u* makes them undefined (see :func:`reference_problem`)."""

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
    draw: SharedDraw | None = None,
) -> Tensor:
    """u = A·u_σ + B at `(N, D)` points, with ``num_samples`` for the smoothed value.

    Runs without autograd and in chunks of :func:`eval_chunk_size` points (memory bounded
    at any D). Shared noise draws one set of K vectors for all N points (the values do
    not depend on the chunk size); independent noise draws each chunk's in turn from
    ``generator``. ``draw``: a :class:`~pinnlab.estimators.stein.SharedDraw` that
    several calls share (blocks of points), so shared Stein noise is drawn once, at the
    first call, for all of them; other noise does not use it. Returns `(N,)`.
    """
    problem.equation._check_points(x)  # before the estimator's own matmul error
    first = next(iter(params.values()), x)
    if (x.dtype, x.device) != (first.dtype, first.device):
        raise ValueError(f"the points are {str(x.dtype)[6:]} on {x.device}, the parameters "
                         f"{str(first.dtype)[6:]} on {first.device}: move one to the other's")
    estimator = problem.estimator
    if num_samples is not None and hasattr(estimator, "num_samples"):
        estimator = dataclasses.replace(estimator, num_samples=num_samples)
    shared = {"draw": draw} if isinstance(estimator, SteinAntithetic) else {}  # only Stein's evaluate takes one
    smoothed = estimator.evaluate(
        problem.model(params),
        x,
        generator=generator,
        chunk_size=eval_chunk_size(problem, getattr(estimator, "num_samples", None)),
        sigma=sigma,
        **shared,
    )
    with torch.no_grad():
        return problem.equation.solution(x, smoothed)


def reference_problem(exact: Tensor) -> str:
    """Why relative errors against the exact values ``exact`` `(N,)` are undefined, or "".

    They divide by ‖u*‖, taken in float64: u* that is not finite (e.g. it overflowed
    ``exact``'s dtype), that is 0 at every point (e.g. it underflowed), or whose norm's
    squares overflow or underflow float64 (|u*| beyond about 1e154, or all below
    1e-154) makes the quotient inf or NaN whatever the prediction. A norm that is
    finite and positive rules out all of these (an inf or NaN value makes it inf or NaN).
    """
    values = exact.detach().double()
    norm = float(values.norm())
    if 0 < norm < math.inf:
        return ""
    n, dtype = values.numel(), str(exact.dtype).replace("torch.", "")
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        return f"u* is not finite (inf or NaN) at {bad} of the {n} test points in {dtype}"
    if not values.any():
        return f"u* is 0 at every one of the {n} test points in {dtype} (underflowed, or zero there)"
    largest = float(values.abs().max())
    if norm == 0:
        return f"‖u*‖ underflows to 0 in float64 (|u*| at most {largest:.3g} at the {n} test points)"
    return f"‖u*‖ overflows float64 (|u*| up to {largest:.3g} at the {n} test points)"


def with_reference(status: str, message: str, reference: str) -> tuple[str, str]:
    """The status and message of a run that ended with ``status`` and ``message`` and whose
    test set's u* has the :func:`reference_problem` ``reference`` ("" for none): an "ok"
    run becomes "invalid_reference"; another status stays, its message saying both."""
    if not reference:
        return status, message
    undefined = f"rel_l2 and rel_l1 are undefined (NaN): {reference}."
    if status == "ok":
        return "invalid_reference", f"{undefined} The training itself ended normally."
    return status, f"{message} Also, {undefined}"


def relative_errors(prediction: Tensor, exact: Tensor) -> Evaluation:
    """Relative L2, relative L1 and max error of ``prediction`` against ``exact`` (one shape:
    an `(N,)` against an `(N, 1)` would broadcast to `(N, N)` and give a wrong number).
    The relative errors are NaN when :func:`reference_problem` finds them undefined (an
    inf from ‖u*‖ = 0 would read as a result)."""
    if prediction.shape != exact.shape:
        raise ValueError(f"prediction of shape {tuple(prediction.shape)} and exact values of shape "
                         f"{tuple(exact.shape)}: need one shape, `(N,)`")
    prediction = prediction.detach()  # no graph behind the errors (float() of a grad-requiring norm warns)
    err = (prediction - exact).double()
    undefined = bool(reference_problem(exact))
    exact = exact.double()
    return Evaluation(
        rel_l2=math.nan if undefined else float(err.norm() / exact.norm()),
        rel_l1=math.nan if undefined else float(err.abs().sum() / exact.abs().sum()),
        max_err=float(err.abs().max()),
        prediction=prediction,
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
