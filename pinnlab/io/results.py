"""The HDF5 result file of one solve run (schema below), written atomically.

Schema (one file per run; gzip-compressed datasets)::

    /                       attrs: kind="solve", config (resolved YAML), input_files (JSON
                            SHA-256 of data.source / the equation.module file, when read), pinnlab_version,
                            torch_version, numpy_version, h5py_version, python_version,
                            git_hash (when available; -dirty: with uncommitted changes),
                            problem_seed, train_seed, device, dtype, equation, dim, loss,
                            status ("ok"|"nonfinite"|"invalid_reference"), message
    /history/step, loss, rel_l2, rel_l1, max_err, lr, mix, wall_s    one row per evaluation
    /history/terms/loss_<term>, weight_<term>                         with several loss terms
    /trace/loss, /trace/mix                                           one value per step
    /final                  attrs: rel_l2, rel_l1, max_err, best_rel_l2, steps_per_second,
                            wall_s, peak_mem_mb, steps_done[, switch_step: where a
                            loss.switch: auto run switched, when it did]; peak_mem_mb:
                            the process's peak RSS (CUDA: peak allocated) in MB up to
                            the writing of this file, slice included (a training-study
                            cell: since the cell started, reset_peak_memory)
    /eval/u_pred, u_true, abs_err                                     test-set predictions
    /eval/x                 only when inputs × test points ≤ 10⁷ values (inputs: d, or
                            d + 1 with time); otherwise /eval attrs
                            sampler="test_set", problem_seed, test_points regenerate it
    /eval/radius            ‖x‖ of each test point (unit-ball problems)
    /slices/main/grid_a, grid_b, u_pred[na, nb], u_true, abs_err      attrs: dims, labels, others
                            (the coordinates not on the slice: "zero" or "median", see plan_slice),
                            noise (u_pred's Stein noise: "shared", one set of K vectors for
                            all points, see result_slice; "none": no noise), samples (K),
                            reference_samples (Monte Carlo u* with fewer samples than the
                            test set's, see compute_slice); absent for a steady equation
                            of one coordinate (no plane to slice; /eval holds u along x)
    /radial/r, abs_err, rel_err, count                                (unit-ball problems:
                            20 bins of ‖x‖; mean |u − u*| and ‖u − u*‖/‖u*‖ per bin, NaN if empty)
    /params/<name>          the final network parameters

A ``pinnlab tune`` file (kind="tune") is the result of its final solve plus::

    /tune                   attrs: method, objective, horizon (where it acted: not with a search's
                            tune.trial_steps), trial_steps (searches), seconds, steps_done,
                            inner ("pinnlab"|"deepxde"), processes (torchrun's WORLD_SIZE, 1
                            without), status, message, coefficient_rel_err/<name>;
                            then_method, then_after with a two-phase schedule (tune.then)
    /tune/outer_step, value, grad_norm, seconds, method   one row per outer step (or trial);
                            method: that step's phase (then_method from outer step then_after on)
    /tune/phi/<name>        φ after each outer step, constrained values [steps, *shape]
    /tune/initial/<name>    φ₀, where the outer steps started [*shape] (not for the searches
                            random and optuna, whose trials draw from the ranges)
    /tune/tuned/<name>      the values the final solve used; a tuned mix is the schedule it
                            replayed on equal segments of its steps (φ₀, then φ after each
                            outer step but the last: the mix each outer step's inner steps
                            used), a single value with final_init: continue or a search

``loss`` in /history is the mean training loss since the previous row; ``rel_l2`` is
that of the smoothed model u = A·u_σ + B with ``estimator.eval_samples`` samples.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pinnlab.equations.base import rows_per_chunk
from pinnlab.io.atomic import atomic_path

MAX_STORED_INPUTS = 10**7
SLICE_POINTS = 64
#: most Monte Carlo samples of a slice's u* (hjb_rosenbrock's Cole–Hopf reference, 2·10⁵ for
#: the test set): 4,096 points took 33 min at d = 40 with 2·10⁵ samples, 3.6 min with 2·10⁴,
#: whose error is about 1.5 % of u* at d = 40 (0.45 % at d = 10), root mean square
SLICE_REFERENCE_SAMPLES = 20_000


def _versions() -> dict[str, str]:
    import pinnlab

    return {
        "pinnlab_version": pinnlab.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
        "python_version": platform.python_version(),
        "git_hash": _package_git_hash(),  # "" outside a git checkout
    }


@functools.cache
def _package_git_hash() -> str:
    """:func:`_git_hash` of the pinnlab checkout, asked once per process (the ``git``
    subprocesses for every result file a study writes were spent on the same answer)."""
    return _git_hash()


def _git_hash(where: Path | None = None) -> str:
    """The commit of the pinnlab checkout (or of the one at ``where``), ``-dirty``
    appended when its tracked files differ from it (the hash alone named code the run
    did not use); "" outside a git checkout, and for a copy that is no tracked file of
    the repository around it (an install in another project's ignored virtual
    environment: that project's commit named code the run did not use either)."""
    where = where or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=where)
        if out.returncode != 0:
            return ""
        tracked = subprocess.run(["git", "ls-files", "--", "."], capture_output=True, text=True, timeout=5, cwd=where)
        if tracked.returncode != 0 or not tracked.stdout.strip():
            return ""
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=5, cwd=where)
        return out.stdout.strip() + ("-dirty" if changed.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def is_unit_ball(equation) -> bool:
    """Whether ``equation`` declares the unit ball as its domain (``domain = "unit_ball"``)
    and has no time column: ‖x‖ of its points is then the radius in the ball."""
    return equation.domain == "unit_ball" and not equation.time_dependent


@dataclass(frozen=True)
class SliceGrid:
    """The points of a 2-D slice, built block by block: ``base`` `(D,)` (float64) with
    coordinates ``dims`` replaced by the grid values; point ``i·nb + j`` lies at
    (``grid_a[i]``, ``grid_b[j]``). The 64×64 grid as one `(4096, D)` float64 matrix is
    3.3 GB at d = 10⁵; a slice needs only the base point and the two grids.
    ``inside`` `(na, nb)` marks the points inside the domain (the unit ball).
    ``evaluation``: how :func:`compute_slice` computed u and u* there (the result file's
    slice attributes noise, samples, reference_samples); empty for :func:`plan_slice`'s."""

    base: torch.Tensor
    grid_a: torch.Tensor
    grid_b: torch.Tensor
    dims: tuple[int, int]
    labels: tuple[str, str]
    inside: torch.Tensor
    evaluation: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.grid_a) * len(self.grid_b)

    def points(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Points ``start`` to ``stop`` (default: all) of the row-major grid, `(stop − start, D)`."""
        stop = len(self) if stop is None else min(stop, len(self))
        index = torch.arange(start, max(start, stop))
        inputs = self.base.repeat(len(index), 1)
        inputs[:, self.dims[0]] = self.grid_a[index // len(self.grid_b)]
        inputs[:, self.dims[1]] = self.grid_b[index % len(self.grid_b)]
        return inputs


def _median(block: torch.Tensor) -> torch.Tensor:
    """The median of each column, the mean of the two middle values for an even count (as
    NumPy's; torch's ``median`` takes the lower one, so a slice's u* at "the test set's
    medians" could not be recomputed from the file's test set)."""
    ordered = block.sort(dim=0).values
    n = block.shape[0]
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def plan_slice(equation, x_test: torch.Tensor, points: int = SLICE_POINTS) -> SliceGrid:
    """A 2-D grid over two coordinates with the others fixed, as a :class:`SliceGrid`.

    Unit ball: x₁ × x₂ over [−1, 1]², other coordinates 0, points outside the ball NaN.
    Time-dependent: x₁ × t over the test set's 1–99 % range of x₁ and [min t, max t],
    other spatial coordinates at the test set's median. Otherwise x₁ × x₂ over the
    1–99 % ranges, others at the median. The medians are taken over blocks of columns
    (a float64 copy of a 2,000-point test set is 1.6 GB at d = 10⁵).
    """
    x = x_test.detach()
    width = x.shape[1]
    if width < 2:
        raise ValueError(f"a slice is a plane of two input coordinates; this equation's points have {width}")
    base = torch.zeros(width, dtype=torch.float64)
    if is_unit_ball(equation):
        dims = (0, 1)
        grid_a = grid_b = torch.linspace(-1, 1, points, dtype=torch.float64)
        labels = ("x₁", "x₂")
    else:
        columns = rows_per_chunk(x.shape[0])  # a block of all rows and this many columns
        base = torch.cat([_median(x[:, start : start + columns].cpu().double()) for start in range(0, width, columns)])
        last = width - 1
        dims = (0, last) if equation.time_dependent else (0, 1)
        ranges = []
        for dim in dims:
            column = x[:, dim].cpu().double()
            if dim == last and equation.time_dependent:
                ranges.append((float(column.min()), float(column.max())))
            else:
                ranges.append((float(column.quantile(0.01)), float(column.quantile(0.99))))
        grid_a = torch.linspace(*ranges[0], points, dtype=torch.float64)
        grid_b = torch.linspace(*ranges[1], points, dtype=torch.float64)
        labels = ("x₁", "t" if equation.time_dependent else "x₂")
    inside = torch.ones(points, points, dtype=torch.bool)
    if is_unit_ball(equation):
        a, b = torch.meshgrid(grid_a, grid_b, indexing="ij")
        inside = (a**2 + b**2) < 1
    return SliceGrid(base, grid_a, grid_b, dims, labels, inside)


def slice_grid(equation, x_test: torch.Tensor, points: int = SLICE_POINTS):
    """:func:`plan_slice` with its points built at once: (inputs `(na·nb, D)` float64,
    grid_a, grid_b, (dim_a, dim_b), labels, inside mask `(na, nb)`). For small d (the
    DeepXDE adapter); :func:`compute_slice` builds the points block by block."""
    grid = plan_slice(equation, x_test, points)
    return grid.points(), grid.grid_a, grid.grid_b, grid.dims, grid.labels, grid.inside


def point_radii(x: torch.Tensor) -> np.ndarray:
    """‖x‖ of every row in float64, block by block: ``x.double()`` copied the whole test set
    (1.6 GB for 2,000 points at d = 10⁵, the peak of writing a result file)."""
    rows = max(1, min(rows_per_chunk(x.shape[-1]), x.shape[0]))
    radii = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    # one float64 buffer for every block: fresh blocks left holes glibc did not reuse, and
    # the process grew by ~0.7 of the whole copy anyway (measured at 2,000 × 50,000)
    buffer = torch.empty((rows, x.shape[-1]), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        block = buffer[: chunk.shape[0]].copy_(chunk)
        torch.linalg.vector_norm(block, dim=1, out=radii[start : start + rows])
    return radii.cpu().numpy()


def radial_profile(x: torch.Tensor, prediction: torch.Tensor, exact: torch.Tensor, bins: int = 20):
    """Mean absolute and relative-L2 error of the test points binned by ‖x‖."""
    radius = point_radii(x)
    err = (prediction - exact).double().cpu().numpy()
    ref = exact.double().cpu().numpy()
    edges = np.linspace(0, max(1.0, radius.max()), bins + 1)
    index = np.clip(np.digitize(radius, edges) - 1, 0, bins - 1)
    r, abs_err, rel_err, count = [], [], [], []
    for i in range(bins):
        mask = index == i
        r.append(0.5 * (edges[i] + edges[i + 1]))
        count.append(int(mask.sum()))
        if mask.any():
            abs_err.append(float(np.abs(err[mask]).mean()))
            rel_err.append(float(np.linalg.norm(err[mask]) / max(np.linalg.norm(ref[mask]), 1e-300)))
        else:
            abs_err.append(np.nan)
            rel_err.append(np.nan)
    return {"r": np.array(r), "abs_err": np.array(abs_err), "rel_err": np.array(rel_err),
            "count": np.array(count)}


def _dataset(group, name, data):
    data = np.asarray(data)
    if data.size > 16 and data.dtype.kind in "fiu":
        group.create_dataset(name, data=data, compression="gzip", compression_opts=4)
    else:
        group.create_dataset(name, data=data)


def write_solve_result(path: str | Path, *, config, problem, result, slice_data=None,
                       kind: str = "solve", extra=None) -> None:
    """Write the result of :func:`pinnlab.solvers.train` for ``config`` to ``path``.

    ``slice_data`` is ``(grid, grid_a, grid_b, dims, labels, inside, u_pred, u_true)``
    from :func:`compute_slice` (``grid``, the points, is not written). ``kind`` is the
    root attribute ``kind``; ``extra(file)`` may add groups (``pinnlab tune`` adds
    ``/tune``) inside the same atomic write.

    ``/final`` ``peak_mem_mb`` is measured again here, after the slice and the datasets:
    the process's peak so far (``result.stats`` holds the value at the end of training).
    """
    if not all(hasattr(config, name) for name in ("to_yaml", "input_digests")):  # ('NoneType' ... 'to_yaml')
        raise TypeError(f"config must be the pinnlab.config.Config the run was built from (pinnlab.config.load), "
                        f"got {type(config).__name__}: a result file records its config")
    equation = problem.equation
    x, u_true = result.test_inputs, result.test_exact
    u_pred = result.final.prediction
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["kind"] = kind
        fh.attrs["config"] = config.to_yaml()
        digests = config.input_digests()
        if digests:  # (what a training study's rerun compares besides the config)
            fh.attrs["input_files"] = json.dumps(digests, sort_keys=True)
        for key, value in _versions().items():
            fh.attrs[key] = str(value)
        fh.attrs["problem_seed"] = equation.seed
        fh.attrs["train_seed"] = config.trainer.seed
        fh.attrs["device"] = str(x.device)
        fh.attrs["dtype"] = str(x.dtype).replace("torch.", "")
        # (float32 reductions, and so every number after the first step, change with it)
        fh.attrs["torch_threads"] = torch.get_num_threads()
        fh.attrs["equation"] = equation.name
        fh.attrs["dim"] = equation.dim
        fh.attrs["loss"] = config.loss.kind
        fh.attrs["status"] = result.status
        fh.attrs["message"] = result.message
        history = fh.create_group("history")
        for key, values in result.history.arrays().items():
            if key.startswith("trace_"):
                continue
            _dataset(history, key, values)
        trace = fh.create_group("trace")
        arrays = result.history.arrays()
        _dataset(trace, "loss", arrays["trace_loss"])
        _dataset(trace, "mix", arrays["trace_mix"])
        final = fh.create_group("final")
        final.attrs["rel_l2"] = result.final.rel_l2
        final.attrs["rel_l1"] = result.final.rel_l1
        final.attrs["max_err"] = result.final.max_err
        final.attrs["best_rel_l2"] = result.best_rel_l2
        for key, value in result.stats.items():
            final.attrs[key] = value
        ev = fh.create_group("eval")
        _dataset(ev, "u_pred", u_pred.double().cpu().numpy())
        _dataset(ev, "u_true", u_true.double().cpu().numpy())
        _dataset(ev, "abs_err", (u_pred - u_true).abs().double().cpu().numpy())
        if x.numel() <= MAX_STORED_INPUTS:
            _dataset(ev, "x", x.cpu().numpy())
        else:
            ev.attrs["sampler"] = "test_set"
            ev.attrs["problem_seed"] = equation.seed
            ev.attrs["test_points"] = x.shape[0]
        if is_unit_ball(equation):
            _dataset(ev, "radius", point_radii(x))
            radial = fh.create_group("radial")
            for key, values in radial_profile(x, u_pred, u_true).items():
                _dataset(radial, key, values)
        if slice_data is not None:
            inputs, grid_a, grid_b, dims, labels, inside, pred, true = slice_data
            sl = fh.create_group("slices/main")
            sl.attrs["dims"] = np.asarray(dims)
            sl.attrs["labels"] = np.asarray(labels, dtype=h5py.string_dtype())
            sl.attrs["others"] = "zero" if is_unit_ball(equation) else "median"  # as slice_grid fixes them
            if isinstance(inputs, SliceGrid):  # the point whose dims coordinates the grid replaces
                _dataset(sl, "point", inputs.base)
            # a SliceGrid from compute_slice says how it evaluated; other slices (DeepXDE's
            # network, points given as a tensor) are the network's own values
            evaluation = inputs.evaluation if isinstance(inputs, SliceGrid) else {}
            for key, value in (evaluation or {"noise": "none"}).items():
                sl.attrs[key] = value
            shape = (len(grid_a), len(grid_b))
            mask = inside.numpy()
            p = np.where(mask, pred.double().cpu().numpy().reshape(shape), np.nan)
            t = np.where(mask, true.double().cpu().numpy().reshape(shape), np.nan)
            _dataset(sl, "grid_a", grid_a.numpy())
            _dataset(sl, "grid_b", grid_b.numpy())
            _dataset(sl, "u_pred", p)
            _dataset(sl, "u_true", t)
            _dataset(sl, "abs_err", np.abs(p - t))
        params = fh.create_group("params")
        for key, value in result.params.items():
            _dataset(params, key, value.detach().cpu().numpy())
        if extra is not None:
            extra(fh)
        from pinnlab.solvers.loop import peak_memory_mb

        final.attrs["peak_mem_mb"] = max(float(result.stats.get("peak_mem_mb", 0.0)), peak_memory_mb(x.device))


def compute_slice(problem, params, x_test, *, num_samples=None, seed=0, sigma=None):
    """Predictions and exact values on :func:`plan_slice`'s grid (for the result file):
    ``(grid, grid_a, grid_b, dims, labels, inside, u_pred, u_true)`` with ``grid`` the
    :class:`SliceGrid` (``grid.points()`` builds the `(na·nb, D)` inputs) and u_pred,
    u_true `(na·nb,)`.

    The points are built, predicted and compared block by block (:func:`_slice_blocks`),
    with the same values as one :func:`~pinnlab.solvers.evaluate.predict` call on all of
    them with the generator ``(seed, "slice")``: shared noise is drawn once for all the
    blocks, and its first-layer features W(σξ) formed once
    (:class:`~pinnlab.estimators.stein.SharedDraw`). ``sigma`` overrides the estimator's σ
    (scalar or per coordinate) as in :func:`~pinnlab.solvers.evaluate.predict`: pass the
    σ the run trained and evaluated with (``hyperparams["sigma"]``, e.g. a tuned σ), so
    the slice shows the same model. The noise is ``problem``'s (:func:`result_slice`
    passes shared noise).

    u* from a Monte Carlo reference (hjb_rosenbrock) takes at most
    :data:`SLICE_REFERENCE_SAMPLES` samples: with the test set's it cost more than the
    rest of a shrunk run. ``grid.evaluation`` records the noise, K and such a sample count.
    """
    from pinnlab._seeding import make_generator
    from pinnlab.estimators.stein import SharedDraw, SteinAntithetic
    from pinnlab.solvers.evaluate import predict

    grid = plan_slice(problem.equation, x_test)
    reference = problem.equation
    evaluation: dict[str, Any] = {"noise": "none"}  # autograd, Hutchinson: the network's own value
    if isinstance(problem.estimator, SteinAntithetic):
        evaluation = {"noise": problem.estimator.noise, "samples": num_samples or problem.estimator.num_samples}
    reference = slice_reference(reference)
    if reference is not problem.equation:
        evaluation["reference_samples"] = SLICE_REFERENCE_SAMPLES
    device = x_test.device
    dtype = next(iter(params.values())).dtype
    rows = _slice_blocks(problem, num_samples, grid.base.numel())
    generator = make_generator(seed, "slice", device=device)
    draw = SharedDraw()
    preds, trues = [], []
    for start in range(0, len(grid), rows):
        inputs = grid.points(start, start + rows)
        preds.append(predict(problem, params, inputs.to(device=device, dtype=dtype), num_samples=num_samples,
                             generator=generator, sigma=sigma, draw=draw))
        trues.append(reference.exact(inputs))
    pred = torch.cat(preds)
    true = torch.cat(trues).to(pred)
    grid = dataclasses.replace(grid, evaluation=evaluation)
    return grid, grid.grid_a, grid.grid_b, grid.dims, grid.labels, grid.inside, pred, true


def slice_reference(equation):
    """The equation whose ``exact`` gives a slice's u*: ``equation`` itself, or for a Monte
    Carlo reference of more than :data:`SLICE_REFERENCE_SAMPLES` samples (hjb_rosenbrock's
    test set takes 2·10⁵) a copy with that many."""
    if getattr(equation, "reference_samples", 0) > SLICE_REFERENCE_SAMPLES:
        return equation.with_reference_samples(SLICE_REFERENCE_SAMPLES)
    return equation


def _slice_blocks(problem, num_samples, width: int) -> int:
    """Points per block of the slice, so that blocks give what one ``predict`` call on all
    the points gives.

    Shared noise (Stein, ``noise="shared"``) is drawn once for all the blocks (their
    ``predict`` calls share a :class:`~pinnlab.estimators.stein.SharedDraw`): blocks of
    :data:`~pinnlab.equations.base.POINT_ELEMENT_BUDGET` elements. Otherwise ``predict``
    draws noise for each of its chunks of :func:`~pinnlab.solvers.evaluate.eval_chunk_size`
    points in turn: a block is a whole number of those chunks (at least one) and the
    blocks continue one generator.
    """
    from pinnlab.estimators.stein import SteinAntithetic
    from pinnlab.solvers.evaluate import eval_chunk_size

    estimator = problem.estimator
    rows = rows_per_chunk(width)
    if isinstance(estimator, SteinAntithetic) and estimator.noise == "shared":
        return rows
    samples = getattr(estimator, "num_samples", None)
    if num_samples is not None and samples is not None:
        samples = num_samples  # as predict replaces them
    chunk = eval_chunk_size(problem, samples)
    return chunk * max(1, rows // chunk)


def result_slice(problem, result, *, num_samples=None, seed=0, sigma=None):
    """The ``/slices`` data of a finished run: :func:`compute_slice` with pinnlab's smoothed
    model (at ``sigma``, the σ the run's training step and evaluation used, when it is not
    the estimator's own: a tuned σ), or a DeepXDE run's own network
    (:class:`~pinnlab.solvers.deepxde_adapter.DeepXDEResult`); ``None`` when the points
    have one column (a steady equation at d = 1: no plane to slice).

    A Stein estimator evaluates the slice with shared noise, whatever the run's: one set of
    K vectors ξ for all 4,096 points, so the first layer costs (4096 + K)·D·w (W(σξ) once
    for all the slice's blocks of points), not 4096·K·D·w: 12 s instead of 205 s at
    d = 10⁴, K = 128, where the slice had cost 5 times the training and evaluation of a
    2-step run (with W(σξ) once a block, (4096 + b·K)·D·w for b blocks, it took 20 s
    instead of 9 s at d = 10⁵, b = 100). Each point's value is still unbiased with the
    same variance; only the errors of different points are correlated (a smoother
    picture). The test set's metrics keep the run's noise.
    """
    from pinnlab.estimators.stein import SteinAntithetic
    from pinnlab.solvers.deepxde_adapter import DeepXDEResult

    if problem.equation.input_dim < 2:  # (a custom steady equation at d = 1: no plane to slice)
        return None
    if isinstance(result, DeepXDEResult):
        return result.slice_data(problem.equation)
    if isinstance(problem.estimator, SteinAntithetic) and problem.estimator.noise != "shared":
        problem = dataclasses.replace(problem, estimator=dataclasses.replace(problem.estimator, noise="shared"))
    with torch.no_grad():
        return compute_slice(problem, result.params, result.test_inputs, num_samples=num_samples, seed=seed,
                             sigma=sigma)


def read_attrs(path: str | Path) -> dict[str, Any]:
    with h5py.File(path, "r") as fh:
        return dict(fh.attrs)
