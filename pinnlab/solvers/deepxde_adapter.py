"""Solve a pinnlab equation with DeepXDE's own PINN (optional extra ``pinnlab[deepxde]``).

DeepXDE is imported lazily, only by :func:`import_deepxde`, which contains its import
side effects (REFERENCE.md §8.1): ``DDE_BACKEND=pytorch`` is set before the first import
(otherwise DeepXDE may probe other backends or prompt to install one) and torch's
default device, which DeepXDE sets to CUDA when it exists, is restored afterwards; and
the process's random generators (Python's, NumPy's, torch's), which DeepXDE's
``set_random_seed`` reseeds for every solve, are as the caller left them after
:func:`solve_with_deepxde`. Nothing in pinnlab imports this module unless the adapter is used.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
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
from pinnlab.io.results import SLICE_REFERENCE_SAMPLES, plan_slice, slice_reference
from pinnlab.solvers.evaluate import Evaluation, reference_problem, relative_errors, with_reference
from pinnlab.solvers.loop import History, peak_memory_mb
from pinnlab.solvers.progress import Progress, reference_values


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
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            import deepxde as dde
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the DeepXDE adapter needs the optional dependency: pip install 'pinnlab[deepxde]'"
        ) from err
    finally:
        torch.set_default_device(previous_device)
        torch.set_default_dtype(previous_dtype)
        # its three lines on which backend it uses and which one it recommends are not
        # pinnlab's to print (once per process: every study worker); anything else is passed on
        sys.stderr.write(_BACKEND_LINES.sub("", said.getvalue()))
    return dde


@contextlib.contextmanager
def _caller_random_state():
    """Keep the process's random generators (Python, NumPy, torch's CPU and, once
    initialised, CUDA ones) and DeepXDE's recorded seed as they were: a solve seeds them
    all for its own reproducibility (``dde.config.set_random_seed``), which would
    otherwise reset a caller's streams to the same state after every call."""
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    dde = sys.modules.get("deepxde")
    seed = dde.config.random_seed if dde is not None else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if sys.modules.get("deepxde") is not None:
            sys.modules["deepxde"].config.random_seed = seed


_BACKEND_LINES = re.compile(r"Using backend: pytorch\nOther supported backends: [^\n]*\n[^\n]*recommended\.\n")


@dataclass
class DeepXDEResult:
    """What :func:`solve_with_deepxde` returns: the fields of
    :class:`~pinnlab.solvers.TrainResult` that the result writer reads, so a DeepXDE run
    is written to the same HDF5 schema as ``pinnlab solve``: the loss of every step, and
    a history row with the test errors every ``display_every`` steps and at the end.
    ``predict`` maps `(N, D)` points to DeepXDE's u `(N,)` in its float32."""

    final: Evaluation
    test_inputs: Tensor
    test_exact: Tensor
    history: History
    predict: Callable[[Tensor], Tensor]
    params: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    message: str = ""

    @property
    def best_rel_l2(self) -> float:
        values = self.history.rows["rel_l2"]
        return min(values) if values else self.final.rel_l2

    def slice_data(self, equation: AbstractEquation) -> tuple:
        """The result file's ``/slices`` for DeepXDE's network: what
        :func:`pinnlab.io.results.compute_slice` gives for pinnlab's."""
        grid = plan_slice(equation, self.test_inputs)
        reference = slice_reference(equation)  # (u* from the slice's Monte Carlo sample count, as pinnlab's slice)
        if reference is not equation:  # (and recorded as pinnlab's slice records it)
            grid = dataclasses.replace(grid, evaluation={"noise": "none", "reference_samples": SLICE_REFERENCE_SAMPLES})
        inputs = grid.points()
        pred = self.predict(inputs)
        return grid, grid.grid_a, grid.grid_b, grid.dims, grid.labels, grid.inside, pred, reference.exact(inputs).to(pred)


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
            # (no column weighted anywhere in this batch: 0, as pinnlab's Autograd answers it)
            out.append((hessian_diagonal(columns) * weights[:, columns]).sum(-1) if columns
                       else y.new_zeros(y.shape[0]))
        else:
            raise TypeError(f"the DeepXDE adapter cannot answer {type(q).__name__}")
    return out


@_caller_random_state()
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
    progress: str = "off",
    log_every: int = 100,
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
    or on ``test_set = (x, u)`` (e.g. observations, when tuning DeepXDE as a black box),
    every ``display_every`` steps (DeepXDE's display period) and at the end.

    ``progress`` and ``log_every`` show the training as :func:`pinnlab.solvers.train`
    does (``"auto"``, ``"bar"``, ``"log"`` or ``"off"``: loss and the latest relative
    L2), from a callback that only reads what the step recorded. Off by default, unlike
    ``train``: the library's callers train DeepXDE many times (tuning trials, study
    cells), and ``pinnlab solve`` passes its ``--progress``.
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
    real = dde.config.real(torch)  # DeepXDE's dtype: the test set in it, as pinnlab's trainer has it
    if test_set is None:
        x_test = equation.test_set(test_points, dtype=real)
        u_test = reference_values(equation, x_test, progress).to(real)
    else:
        x_test, u_test = (t.detach().cpu().to(real) for t in test_set)

    def predict(x: Tensor) -> Tensor:
        return torch.as_tensor(model.predict(x.detach().cpu().numpy().astype(dde.config.real(np))))[:, 0]

    history = History()

    def record_step_loss(optimizer, args, kwargs):
        """Optimizer pre-step hook: wrap DeepXDE's closure (its step calls
        ``opt.step(closure)``; ``args`` is ``(optimizer, closure)``) to keep the loss it
        returns, that of the step's batch before the update: pinnlab's per-step trace."""
        _, closure = args

        def recorded():
            loss = closure()
            history.trace_loss.append(float(loss.detach()))
            history.trace_mix.append(0.0)
            return loss

        return (optimizer, recorded), kwargs

    class Recorder(dde.callbacks.Callback):
        """A history row every ``display_every`` steps and at the end, as pinnlab's loop
        writes it: test errors and the mean loss of the steps since the previous row; and
        the progress display after every step."""

        def on_train_begin(self):
            self.hook = self.model.opt.register_step_pre_hook(record_step_loss)
            self.last: tuple[int, Evaluation] | None = None
            self.untimed_seconds = 0.0  # evaluations and the display: pinnlab's loop does not time them either
            # timed from the end of the first step, which pays DeepXDE's one-off costs (its
            # step-0 test evaluation, the first graph), as pinnlab's loop leaves its first out
            self.timed_from = self.timed_to = None

        def on_batch_end(self):
            step = self.model.train_state.step
            t0 = time.perf_counter()
            if self.timed_from is None:
                self.timed_from = t0
            if step % display_every == 0 or step == steps:
                evaluation = relative_errors(predict(x_test), u_test)
                previous = self.last[0] if self.last else 0
                history.append(
                    step=step, loss=float(np.mean(history.trace_loss[previous:step])),
                    rel_l2=evaluation.rel_l2, rel_l1=evaluation.rel_l1, max_err=evaluation.max_err,
                    lr=lr, mix=0.0, wall_s=time.perf_counter() - start,
                )
                self.last = step, evaluation
            rel_l2 = history.rows["rel_l2"]
            bar.update(step - 1, history.trace_loss[-1], rel_l2[-1] if rel_l2 else None, history.last_terms())
            self.timed_to = time.perf_counter()
            self.untimed_seconds += self.timed_to - t0

        def steps_per_second(self, steps_done: int, seconds: float) -> float:
            if steps_done < 2:  # nothing after the first step: the whole run
                return steps_done / seconds if steps_done else 0.0
            return (steps_done - 1) / (self.timed_to - self.timed_from - self.untimed_seconds)

        def on_train_end(self):
            self.hook.remove()

    recorder = Recorder()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # DeepXDE prints; pinnlab's stdout is its result line
        model.compile("adam", lr=lr, loss_weights=list(loss_weights) if loss_weights else None,
                      verbose=0)  # its "Compiling model..." lines, once per tuning trial and study cell
        bar = Progress(steps, mode=progress, log_every=log_every)  # after compile's lines
        try:
            model.train(
                iterations=steps, callbacks=[dde.callbacks.PDEPointResampler(period=1), recorder],
                display_every=display_every, verbose=0,
            )
        finally:
            bar.close()
    seconds = time.perf_counter() - start
    steps_done = model.train_state.step
    # DeepXDE stops a diverged run only at a display step, where the last row was taken
    final = (recorder.last[1] if recorder.last and recorder.last[0] == steps_done
             else relative_errors(predict(x_test), u_test))
    params = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    # (the prediction, not rel_l2: that is NaN too when u* makes it undefined)
    finite = bool(torch.isfinite(final.prediction).all()) and all(bool(torch.isfinite(v).all())
                                                                   for v in params.values())
    status, message = with_reference(
        *(("ok", "") if finite else
          ("nonfinite", "DeepXDE training diverged: non-finite parameters or error (lower trainer.lr).")),
        reference_problem(u_test))
    return DeepXDEResult(
        final=final,
        test_inputs=x_test,
        test_exact=u_test,
        history=history,
        params=params,
        predict=predict,
        stats={"steps_per_second": recorder.steps_per_second(steps_done, seconds),
               "wall_s": seconds, "steps_done": int(steps_done),
               "peak_mem_mb": peak_memory_mb(next(net.parameters()).device)},
        status=status,
        message=message,
    )
