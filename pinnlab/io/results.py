"""The HDF5 result file of one solve run (schema below), written atomically.

Schema (one file per run; gzip-compressed datasets)::

    /                       attrs: kind="solve", config (resolved YAML), pinnlab_version,
                            torch_version, numpy_version, h5py_version, python_version,
                            git_hash (when available), problem_seed, train_seed, device,
                            dtype, equation, dim, loss, status ("ok"|"nonfinite"), message
    /history/step, loss, rel_l2, rel_l1, max_err, lr, mix, wall_s    one row per evaluation
    /history/terms/loss_<term>, weight_<term>                         with several loss terms
    /trace/loss, /trace/mix                                           one value per step
    /final                  attrs: rel_l2, rel_l1, max_err, best_rel_l2, steps_per_second,
                            wall_s, peak_mem_mb, steps_done[, switch_step]
    /eval/u_pred, u_true, abs_err                                     test-set predictions
    /eval/x                 only when d × test points ≤ 10⁷ values; otherwise /eval attrs
                            sampler="test_set", problem_seed, test_points regenerate it
    /eval/radius            ‖x‖ of each test point (unit-ball problems)
    /slices/main/grid_a, grid_b, u_pred[na, nb], u_true, abs_err      attrs: dims, labels, others
                            (the coordinates not on the slice: "zero" or "median", see slice_grid)
    /radial/r, abs_err, rel_err, count                                (unit-ball problems)
    /params/<name>          the final network parameters

A ``pinnlab tune`` file (kind="tune") is the result of its final solve plus::

    /tune                   attrs: method, objective, horizon, seconds, steps_done,
                            inner ("pinnlab"|"deepxde"), coefficient_rel_err/<name>;
                            then_method, then_after with a two-phase schedule (tune.then)
    /tune/outer_step, value, grad_norm, seconds, method   one row per outer step (or trial);
                            method: that step's phase (then_method from outer step then_after on)
    /tune/phi/<name>        φ after each outer step, constrained values [steps, *shape]
    /tune/tuned/<name>      the values the final solve used; a tuned mix is the schedule it
                            replayed on equal segments of its steps (φ₀, then φ after each
                            outer step but the last: the mix each outer step's inner steps
                            used), a single value with final_init: continue or a search

``loss`` in /history is the mean training loss since the previous row; ``rel_l2`` is
that of the smoothed model u = A·u_σ + B with ``estimator.eval_samples`` samples.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pinnlab.io.atomic import atomic_path

MAX_STORED_INPUTS = 10**7
SLICE_POINTS = 64


def _versions() -> dict[str, str]:
    import pinnlab

    return {
        "pinnlab_version": pinnlab.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
        "python_version": platform.python_version(),
        "git_hash": _git_hash(),  # "" outside a git checkout
    }


def _git_hash() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def is_unit_ball(equation) -> bool:
    return hasattr(equation, "radius") and not equation.time_dependent


def slice_grid(equation, x_test: torch.Tensor, points: int = SLICE_POINTS):
    """A 2-D grid over two coordinates with the others fixed.

    Unit ball: x₁ × x₂ over [−1, 1]², other coordinates 0, points outside the ball NaN.
    Time-dependent: x₁ × t over the test set's 1–99 % range of x₁ and [min t, max t],
    other spatial coordinates at the test set's median. Otherwise x₁ × x₂ over the
    1–99 % ranges, others at the median. Returns (inputs `(na·nb, D)`, grid_a, grid_b,
    (dim_a, dim_b), labels, inside mask `(na, nb)`).
    """
    x = x_test.detach().double().cpu()
    base = torch.zeros(x.shape[1], dtype=torch.float64)
    if is_unit_ball(equation):
        dims = (0, 1)
        grid_a = grid_b = torch.linspace(-1, 1, points, dtype=torch.float64)
        labels = ("x₁", "x₂")
    else:
        base = x.median(dim=0).values
        last = x.shape[1] - 1
        dims = (0, last) if equation.time_dependent else (0, 1)
        ranges = []
        for dim in dims:
            column = x[:, dim]
            if dim == last and equation.time_dependent:
                ranges.append((float(column.min()), float(column.max())))
            else:
                ranges.append((float(column.quantile(0.01)), float(column.quantile(0.99))))
        grid_a = torch.linspace(*ranges[0], points, dtype=torch.float64)
        grid_b = torch.linspace(*ranges[1], points, dtype=torch.float64)
        labels = ("x₁", "t" if equation.time_dependent else "x₂")
    a, b = torch.meshgrid(grid_a, grid_b, indexing="ij")
    inputs = base.repeat(points * points, 1)
    inputs[:, dims[0]] = a.flatten()
    inputs[:, dims[1]] = b.flatten()
    inside = torch.ones(points, points, dtype=torch.bool)
    if is_unit_ball(equation):
        inside = (a**2 + b**2) < 1
    return inputs, grid_a, grid_b, dims, labels, inside


def radial_profile(x: torch.Tensor, prediction: torch.Tensor, exact: torch.Tensor, bins: int = 20):
    """Mean absolute and relative-L2 error of the test points binned by ‖x‖."""
    radius = x.double().norm(dim=1).cpu().numpy()
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

    ``slice_data`` is ``(inputs, grid_a, grid_b, dims, labels, inside, u_pred, u_true)``
    from :func:`slice_grid` plus predictions; see :func:`compute_slice`. ``kind`` is the
    root attribute ``kind``; ``extra(file)`` may add groups (``pinnlab tune`` adds
    ``/tune``) inside the same atomic write.
    """
    equation = problem.equation
    x, u_true = result.test_inputs, result.test_exact
    u_pred = result.final.prediction
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["kind"] = kind
        fh.attrs["config"] = config.to_yaml()
        for key, value in _versions().items():
            fh.attrs[key] = str(value)
        fh.attrs["problem_seed"] = equation.seed
        fh.attrs["train_seed"] = config.trainer.seed
        fh.attrs["device"] = str(x.device)
        fh.attrs["dtype"] = str(x.dtype).replace("torch.", "")
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
            _dataset(ev, "radius", x.double().norm(dim=1).cpu().numpy())
            radial = fh.create_group("radial")
            for key, values in radial_profile(x, u_pred, u_true).items():
                _dataset(radial, key, values)
        if slice_data is not None:
            inputs, grid_a, grid_b, dims, labels, inside, pred, true = slice_data
            sl = fh.create_group("slices/main")
            sl.attrs["dims"] = np.asarray(dims)
            sl.attrs["labels"] = np.asarray(labels, dtype=h5py.string_dtype())
            sl.attrs["others"] = "zero" if is_unit_ball(equation) else "median"  # as slice_grid fixes them
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


def compute_slice(problem, params, x_test, *, num_samples=None, seed=0, sigma=None):
    """Predictions and exact values on :func:`slice_grid` (for the result file).

    ``sigma`` overrides the estimator's σ (scalar or per coordinate) as in
    :func:`~pinnlab.solvers.evaluate.predict`: pass the σ the run trained and evaluated
    with (``hyperparams["sigma"]``, e.g. a tuned σ), so the slice shows the same model.
    """
    from pinnlab._seeding import make_generator
    from pinnlab.solvers.evaluate import predict

    inputs, grid_a, grid_b, dims, labels, inside = slice_grid(problem.equation, x_test)
    device = x_test.device
    dtype = next(iter(params.values())).dtype
    grid = inputs.to(device=device, dtype=dtype)
    pred = predict(problem, params, grid, num_samples=num_samples,
                   generator=make_generator(seed, "slice", device=device), sigma=sigma)
    true = problem.equation.exact(inputs).to(pred)
    return inputs, grid_a, grid_b, dims, labels, inside, pred, true


def result_slice(problem, result, *, num_samples=None, seed=0, sigma=None):
    """The ``/slices`` data of a finished run: :func:`compute_slice` with pinnlab's smoothed
    model (at ``sigma``, the σ the run's training step and evaluation used, when it is not
    the estimator's own: a tuned σ), or a DeepXDE run's own network
    (:class:`~pinnlab.solvers.deepxde_adapter.DeepXDEResult`)."""
    from pinnlab.solvers.deepxde_adapter import DeepXDEResult

    if isinstance(result, DeepXDEResult):
        return result.slice_data(problem.equation)
    with torch.no_grad():
        return compute_slice(problem, result.params, result.test_inputs, num_samples=num_samples, seed=seed,
                             sigma=sigma)


def read_attrs(path: str | Path) -> dict[str, Any]:
    with h5py.File(path, "r") as fh:
        return dict(fh.attrs)
