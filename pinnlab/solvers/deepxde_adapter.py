"""Solve a pinnlab equation with DeepXDE's own PINN (optional extra ``pinnlab[deepxde]``).

DeepXDE is imported lazily, only by :func:`import_deepxde`, which contains its import
side effects (REFERENCE.md §8.1): ``DDE_BACKEND=pytorch`` is set before the first import
(otherwise DeepXDE may probe other backends or prompt to install one) and torch's
default device, which DeepXDE sets to CUDA when it exists, is restored afterwards.
Nothing in pinnlab imports this module unless the adapter is used.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pinnlab._seeding import make_generator
from pinnlab.equations.base import AbstractEquation
from pinnlab.estimators.base import (
    Directional,
    Gradient,
    HessianDiagonal,
    Query,
    Value,
    WeightedLaplacian,
    expand_vector,
)
from pinnlab.solvers.evaluate import Evaluation, relative_errors
from pinnlab.solvers.loop import History


def import_deepxde():
    """Import DeepXDE with the PyTorch backend, leaving torch's global state as it was."""
    try:
        previous_device = torch.get_default_device()
    except AttributeError:  # torch < 2.3
        previous_device = torch.tensor([]).device
    previous_dtype = torch.get_default_dtype()
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    if os.environ["DDE_BACKEND"] != "pytorch":
        raise RuntimeError(
            f"the DeepXDE adapter needs DDE_BACKEND=pytorch, found {os.environ['DDE_BACKEND']!r}"
        )
    try:
        import deepxde as dde
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the DeepXDE adapter needs the optional dependency: pip install 'pinnlab[deepxde]'"
        ) from err
    finally:
        torch.set_default_device(previous_device)
        torch.set_default_dtype(previous_dtype)
    return dde


@dataclass
class DeepXDEResult:
    """What :func:`solve_with_deepxde` returns: the fields of
    :class:`~pinnlab.solvers.TrainResult` that the result writer reads, so a DeepXDE run
    is written to the same HDF5 schema as ``pinnlab solve``. History rows are DeepXDE's
    display steps (training loss; errors only in the last row, evaluated at the end)."""

    final: Evaluation
    test_inputs: Tensor
    test_exact: Tensor
    history: History
    params: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    message: str = ""

    @property
    def best_rel_l2(self) -> float:
        return self.final.rel_l2


def _autograd_estimate(dde, x: Tensor, y: Tensor, queries: Sequence[Query]) -> list[Tensor]:
    """Answer derivative queries about y(x) with DeepXDE's own autograd helpers."""
    out = []
    grad_cache: list[Tensor] = []

    def gradient() -> Tensor:
        if not grad_cache:
            grad_cache.append(dde.grad.jacobian(y, x, i=0))
        return grad_cache[0]

    def hessian_diagonal(columns: Sequence[int]) -> Tensor:
        return torch.cat([dde.grad.hessian(y, x, i=j, j=j) for j in columns], dim=1)

    for q in queries:
        if isinstance(q, Value):
            out.append(y[:, 0])
        elif isinstance(q, Gradient):
            out.append(gradient())
        elif isinstance(q, Directional):
            out.append((gradient() * expand_vector(q.vector, x)).sum(-1))
        elif isinstance(q, HessianDiagonal):
            out.append(hessian_diagonal(range(x.shape[1])))
        elif isinstance(q, WeightedLaplacian):
            weights = expand_vector(q.weights, x)
            columns = [j for j in range(x.shape[1]) if bool((weights[:, j] != 0).any())]
            out.append((hessian_diagonal(columns) * weights[:, columns]).sum(-1))
        else:
            raise TypeError(f"the DeepXDE adapter cannot answer {type(q).__name__}")
    return out


def solve_with_deepxde(
    equation: AbstractEquation,
    *,
    steps: int,
    lr: float = 1e-3,
    width: int = 128,
    depth: int = 4,
    activation: str = "tanh",
    batch_size: int = 100,
    boundary_points: int = 100,
    loss_weights: Sequence[float] | None = None,
    test_points: int = 2000,
    test_set: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
    display_every: int = 1000,
) -> DeepXDEResult:
    """Train DeepXDE's PINN (its data, autograd derivatives, Model.compile/train).

    The domain is a DeepXDE ``Geometry`` whose ``random_points`` are the equation's own
    collocation sampler (seeded from ``(seed, "deepxde", call)``), resampled every step
    by ``PDEPointResampler(period=1)``, as in pinnlab's protocol. Hard-constrained
    equations use the same ansatz through ``net.apply_output_transform``;
    soft-constrained ones get a ``PointSetBC`` on ``boundary_points`` points of
    ``equation.sample_boundary``, and ``loss_weights`` = [PDE, boundary]. Derivatives are
    exact (``dde.grad.jacobian``/``hessian``): a d-dimensional Laplacian costs d extra
    backward passes, so keep d moderate. Evaluation is on the equation's seeded test set,
    or on ``test_set = (x, u)`` (e.g. observations, when tuning DeepXDE as a black box).
    """
    dde = import_deepxde()
    dim = equation.input_dim
    residual_equation = copy.copy(equation)
    residual_equation.constraint = "soft"  # the ansatz lives in the output transform
    calls = [0]

    class SampledDomain(dde.geometry.Geometry):
        def __init__(self):
            super().__init__(dim, (np.full(dim, -np.inf), np.full(dim, np.inf)), np.inf)

        def inside(self, x):
            return np.ones(len(x), dtype=bool)

        def on_boundary(self, x):
            return np.zeros(len(x), dtype=bool)

        def random_points(self, n, random="pseudo"):
            calls[0] += 1
            generator = make_generator(seed, "deepxde", calls[0])
            points = equation.sample_collocation(n, generator=generator, dtype=torch.float64)
            return points.numpy().astype(dde.config.real(np))

        def uniform_points(self, n, boundary=True):
            return self.random_points(n)

        def random_boundary_points(self, n, random="pseudo"):
            raise NotImplementedError("boundary conditions are given as point sets")

    def pde(x, y):
        return residual_equation.residual(x, lambda q: _autograd_estimate(dde, x, y, q))[:, None]

    bcs = []
    if equation.constraint == "soft":
        xb = equation.sample_boundary(
            boundary_points, generator=make_generator(seed, "deepxde", "boundary"),
            dtype=torch.float64,
        )
        bcs.append(dde.icbc.PointSetBC(xb.numpy(), equation.boundary_value(xb).numpy()[:, None]))
    dde.config.set_random_seed(seed)
    data = dde.data.PDE(SampledDomain(), pde, bcs, num_domain=batch_size,
                        train_distribution="pseudo", num_test=batch_size)
    net = dde.nn.FNN([dim] + [width] * (depth - 1) + [1], activation, "Glorot normal")
    if equation.constraint == "hard":
        net.apply_output_transform(lambda x, f: equation.solution(x, f[:, 0])[:, None])
    model = dde.Model(data, net)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # DeepXDE prints; pinnlab's stdout is its result line
        model.compile("adam", lr=lr, loss_weights=list(loss_weights) if loss_weights else None)
        loss_history, _ = model.train(
            iterations=steps, callbacks=[dde.callbacks.PDEPointResampler(period=1)],
            display_every=display_every, verbose=0,
        )
    seconds = time.perf_counter() - start
    if test_set is None:
        x_test = equation.test_set(test_points, dtype=torch.float64)
        u_test = equation.exact(x_test)
    else:
        x_test, u_test = (t.detach().cpu().double() for t in test_set)
    prediction = torch.as_tensor(model.predict(x_test.numpy().astype(dde.config.real(np))))[:, 0]
    final = relative_errors(prediction.double(), u_test)
    history = History()
    steps_seen = list(loss_history.steps)
    for i, (step, losses) in enumerate(zip(steps_seen, loss_history.loss_train)):
        last = i == len(steps_seen) - 1
        history.append(
            step=step, loss=float(np.sum(losses)), rel_l2=final.rel_l2 if last else np.nan,
            rel_l1=final.rel_l1 if last else np.nan, max_err=final.max_err if last else np.nan,
            lr=lr, mix=0.0, wall_s=seconds if last else np.nan,
        )
        history.trace_loss.append(float(np.sum(losses)))
        history.trace_mix.append(0.0)
    params = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    finite = np.isfinite(final.rel_l2) and all(bool(torch.isfinite(v).all()) for v in params.values())
    return DeepXDEResult(
        final=final,
        test_inputs=x_test,
        test_exact=u_test,
        history=history,
        params=params,
        stats={"steps_per_second": steps / seconds if seconds else 0.0, "wall_s": seconds,
               "steps_done": float(steps)},
        status="ok" if finite else "nonfinite",
        message="" if finite else "DeepXDE training diverged: non-finite parameters or error (lower trainer.lr)",
    )
