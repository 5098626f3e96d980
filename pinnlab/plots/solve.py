"""Figures of one solve result file: training curves, slice heatmaps (for a steady
equation of one coordinate, which has no slice, u and u* along x instead), radial error."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGURES = ("curves.png", "terms.png", "slice.png", "line.png", "radial.png")
"""The figures this module's plotters write (:data:`pinnlab.plots.FIGURES` is every plotter
module's; ``_save`` refuses a name none of them declares)."""


def _backend(fh) -> str:
    """``trainer.backend`` of the run: "pinnlab" or "deepxde"."""
    config = yaml.safe_load(fh.attrs["config"]) or {}
    return (config.get("trainer") or {}).get("backend", "pinnlab")


def _evaluated(fh) -> str:
    """What the test error measures: the smoothed model u_σ of a Stein run, the network
    itself where derivatives are exact or Hutchinson-probed (its evaluation has no noise),
    DeepXDE's network."""
    if _backend(fh) == "deepxde":
        return "DeepXDE network"
    config = yaml.safe_load(fh.attrs["config"]) or {}
    return "smoothed model" if (config.get("estimator") or {}).get("kind", "stein") == "stein" else "network"


def _title(fh) -> str:
    final = fh["final"].attrs
    # a DeepXDE run minimises its own mean-squared residual with exact derivatives; the
    # file's ``loss`` attribute is the (unused) pinnlab loss kind of the config
    loss = "DeepXDE (autograd, MSE loss)" if _backend(fh) == "deepxde" else f"loss = {fh.attrs['loss']}"
    status = fh.attrs.get("status", "ok")
    status = status.decode() if isinstance(status, bytes) else str(status)
    return (f"{fh.attrs['equation']}, d = {fh.attrs['dim']}, {loss}, final rel. L2 = {final['rel_l2']:.2e}"
            + ("" if status == "ok" else f" (status {status})"))


def _no_finite_values(ax, *arrays) -> bool:
    """Say so on ``ax`` when none of ``arrays`` has a finite value (a diverged DeepXDE run
    keeps its non-finite state: its panels were empty, with numpy's All-NaN warnings)."""
    if any(np.isfinite(np.asarray(a, dtype=float)).any() for a in arrays):
        return False
    ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="0.4")
    return True


def _finite_range(*arrays) -> tuple[float, float]:
    """(min, max) over the finite values of ``arrays``, (0, 1) where there are none."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def _colors(n: int) -> list:
    """``n`` distinct colours: the default cycle up to 10, tab20 up to 20, then viridis."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0, 0.95, n)]


def _save(fig: Figure, path: Path, **kwargs) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees a half-written image), creating
    the directory with its parents when missing. The name must be one a plotter module
    declares in its ``FIGURES``: a figure left out of :data:`pinnlab.plots.FIGURES` would
    not be removed from a plot directory as an earlier plot's."""
    from pinnlab.io.atomic import atomic_path
    from pinnlab.plots import FIGURES, FigureNotWritten

    if path.name not in FIGURES:  # the plotter's mistake, found the first time it draws
        raise ValueError(f"figure {path.name!r} is not declared in its plotter module's FIGURES")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # (it named the hidden temporary file missing)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **({"dpi": 120, "bbox_inches": "tight"} | kwargs))
    except OSError as err:  # the disk's fault (full, read-only): it was called a damaged result
        raise FigureNotWritten(path, err) from err
    return path


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    core = np.convolve(values, kernel, mode="valid")
    return np.concatenate([np.full(window - 1, np.nan), core])


def _lone_points(values: np.ndarray, *, log: bool = False, ms: float = 3) -> dict:
    """``plot`` keywords that mark the points of a curve its line cannot show: a segment
    needs two neighbouring drawable points, so a curve of one step (or a point between
    NaNs) would be a legend entry with nothing drawn. Those points get a marker; on a
    ``log`` axis values ≤ 0 are not drawable either. Empty when every point is joined."""
    values = np.asarray(values, dtype=float)
    drawable = np.isfinite(values) & ((values > 0) if log else True)
    joined = np.r_[False, drawable[:-1]] | np.r_[drawable[1:], False]
    lone = np.flatnonzero(drawable & ~joined)
    return {"marker": "o", "ms": ms, "markevery": lone.tolist()} if len(lone) else {}


def _steps(count) -> str:
    return f"{int(count)} step{'' if count == 1 else 's'}"


def plot_curves(fh, outdir: Path) -> Path:
    """Loss per step (with a moving average) and test errors, log scale; switch marked.

    An unbiased or hybrid loss (R̂R̂′) can be negative: then, as in :func:`plot_terms`, the
    absolute values are drawn and the title says so, the steps with a negative loss are
    marked, and steps with a loss of exactly 0 (not on a log axis) are counted in the title.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    loss = fh["trace/loss"][...]
    steps = np.arange(1, len(loss) + 1)
    window = max(1, len(loss) // 50)
    average = _moving_average(loss, window)  # of the signed loss: it estimates the expected loss
    signed = bool((loss <= 0).any() or (average <= 0).any())
    bars = "|" if signed else ""
    ax_loss.semilogy(steps, np.abs(loss), color="0.75" if window > 1 else "C0", lw=0.6,
                     label=f"{bars}loss{bars} per step", **_lone_points(np.abs(loss), log=True, ms=5))
    if window > 1:  # (fewer than 100 steps: an "average" of one step would be the same curve again)
        ax_loss.semilogy(steps, np.abs(average), color="C0", lw=1.6,
                         label=f"{bars}moving average{bars} ({window} steps)",
                         **_lone_points(np.abs(average), log=True))
    negative = loss < 0
    if negative.any():
        ax_loss.semilogy(steps[negative], -loss[negative], "v", color="C3", ms=3, ls="none",
                         label=f"loss < 0 ({_steps(negative.sum())}), drawn as |loss|")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("|training loss|" if signed else "training loss")
    title = "training loss"
    if signed:
        zero = int((loss == 0).sum())
        title += " (absolute values" + (f"; {_steps(zero)} with loss 0 not drawn" if zero else "") + ")"
    ax_loss.set_title(title)
    hist = fh["history"]
    step = hist["step"][...]
    for key, color, label in (("rel_l2", "C3", "relative L2"), ("rel_l1", "C2", "relative L1")):
        ax_err.semilogy(step, hist[key][...], "o-", color=color, ms=3, label=label)
    ax_err.set_xlabel("step")
    ax_err.set_ylabel(f"test error of u ({_evaluated(fh)})")
    ax_err.set_title("test error")
    _no_finite_values(ax_loss, loss)
    _no_finite_values(ax_err, hist["rel_l2"][...], hist["rel_l1"][...])
    mix = fh["trace/mix"][...]
    switched = np.flatnonzero(mix >= 1)
    if len(switched) and switched[0] > 0:
        for ax in (ax_loss, ax_err):  # in the legend: a text at the top ran into a legend placed there
            # between the last step before the switch and the first after it; numbered as
            # loss.switch_step and /final's switch_step count (the steps before the switch)
            ax.axvline(switched[0] + 0.5, color="k", ls="--", lw=1, label=f"switch to unbiased after step {switched[0]}")
    for ax in (ax_loss, ax_err):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(fh))
    return _save(fig, outdir / "curves.png")


def _others(fh, sl, labels) -> str:
    """What the slice title says of the coordinates not on the slice: the rule the writer
    recorded in the ``others`` attribute. Files written before that attribute: the writer
    fixed them at 0 on unit-ball problems, the only ones with ``/radial``, and at the
    test-set median otherwise. Nothing when the slice holds every coordinate."""
    inputs = int(fh.attrs["dim"]) + (labels[1] == "t")  # x and, time-dependent, t
    if inputs <= 2:
        return ""
    rule = sl.attrs.get("others", "zero" if "radial" in fh else "median")
    rule = rule.decode() if isinstance(rule, bytes) else str(rule)
    value = {"zero": "0", "median": "the test-set median"}.get(rule, rule)
    return f", the other {inputs - 2} coordinate{'s' if inputs > 3 else ''} at {value}"


def _pixel_edges(grid) -> tuple[float, float]:
    """The image's edges along an evenly spaced grid: half a spacing beyond each end, so
    that pixel i is centred on grid point i (a single point gets a pixel of width 1)."""
    half = 0.5 if len(grid) < 2 else 0.5 * (float(grid[-1]) - float(grid[0])) / (len(grid) - 1)
    return float(grid[0]) - half, float(grid[-1]) + half


def plot_slice(fh, outdir: Path) -> Path | None:
    if "slices/main" not in fh:
        return None
    sl = fh["slices/main"]
    a, b = sl["grid_a"][...], sl["grid_b"][...]
    labels = [str(s.decode() if isinstance(s, bytes) else s) for s in sl.attrs["labels"]]
    pred, true, err = sl["u_pred"][...], sl["u_true"][...], sl["abs_err"][...]
    for name, values in (("u_pred", pred), ("u_true", true), ("abs_err", err)):  # (a 3×3 one was stretched)
        if values.shape != (len(a), len(b)):
            raise ValueError(f"/slices/main/{name} has shape {values.shape}, not that of its grid "
                             f"({len(a)}, {len(b)})")
    vmin, vmax = _finite_range(pred, true)
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    extent = (*_pixel_edges(b), *_pixel_edges(a))
    for ax, data, title, cmap, lim in (
        (axes[0], pred, "prediction u", "viridis", (vmin, vmax)),
        (axes[1], true, "exact u*", "viridis", (vmin, vmax)),
        (axes[2], err, "|u − u*|", "magma", (0, _finite_range(err)[1])),
    ):
        im = ax.imshow(data, origin="lower", extent=extent, aspect="auto", cmap=cmap,
                       vmin=lim[0], vmax=lim[1])
        _no_finite_values(ax, data)
        ax.set_xlabel(labels[1])
        ax.set_ylabel(labels[0])
        for axis in (ax.xaxis, ax.yaxis):  # (nine ticks of a [-1, 1] axis ran together)
            axis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.9)
    fig.suptitle(f"{_title(fh)}\nslice over ({labels[0]}, {labels[1]}){_others(fh, sl, labels)}")
    return _save(fig, outdir / "slice.png")


def plot_line(fh, outdir: Path) -> Path | None:
    """u and u* against x at the test points, for a steady equation of one coordinate (the
    results of which have no slice): ``/eval/x`` of one column."""
    if "slices/main" in fh or "eval/x" not in fh:
        return None
    x = fh["eval/x"][...]
    if x.ndim != 2 or x.shape[1] != 1:
        return None
    order = np.argsort(x[:, 0])
    x = x[order, 0]
    pred, true, err = (fh[f"eval/{k}"][...][order] for k in ("u_pred", "u_true", "abs_err"))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_u, ax_err = fig.subplots(1, 2)
    ax_u.plot(x, true, "-", color="k", lw=1.5, label="exact u*")
    ax_u.plot(x, pred, "o", color="C0", ms=3, label="prediction u")
    ax_u.set_ylabel("u")
    ax_u.legend(fontsize=8)
    ax_err.semilogy(x, err, "o-", color="C3", ms=3)
    _no_finite_values(ax_err, err)
    ax_err.set_ylabel("|u − u*|")
    for ax in (ax_u, ax_err):
        ax.set_xlabel("x₁")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{_title(fh)}\nat the {len(x)} test points")
    return _save(fig, outdir / "line.png")


def plot_radial(fh, outdir: Path) -> Path | None:
    if "radial" not in fh:
        return None
    rad = fh["radial"]
    r, abs_err, rel, count = (rad[k][...] for k in ("r", "abs_err", "rel_err", "count"))
    keep = count > 0
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.semilogy(r[keep], abs_err[keep], "o-", label="mean |u − u*|")
    ax.semilogy(r[keep], rel[keep], "s-", label="relative L2 in the shell")
    _no_finite_values(ax, abs_err[keep], rel[keep])
    ax.set_xlabel("radius ‖x‖")
    ax.set_ylabel("error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(fh), fontsize=9)
    return _save(fig, outdir / "radial.png")


def plot_terms(fh, outdir: Path) -> Path | None:
    """Per-term unweighted loss and weight at every history row (``/history/terms``, with
    several loss terms only); the weights on a log axis when all are positive."""
    if "history/terms" not in fh:
        return None
    terms = fh["history/terms"]
    step = fh["history/step"][...]
    names = sorted(key[len("loss_"):] for key in terms if key.startswith("loss_"))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_weight = fig.subplots(1, 2)
    negative = False
    for i, name in enumerate(names):
        loss = terms[f"loss_{name}"][...]
        below = loss < 0  # an unbiased residual loss R̂R̂' can be
        negative |= bool(below.any())
        ax_loss.plot(step, np.abs(loss), "o-", color=f"C{i}", ms=3, label=name)
        if below.any():  # as plot_curves: the rows drawn as |loss| are marked
            ax_loss.plot(step[below], -loss[below], "v", color=f"C{i}", mfc="none", ms=8, ls="none",
                         label=f"{name} < 0 ({int(below.sum())} row{'' if below.sum() == 1 else 's'}), drawn as |loss|")
        ax_weight.plot(step, terms[f"weight_{name}"][...], "o-", color=f"C{i}", ms=3, label=name)
    ax_loss.set_yscale("log")
    ax_loss.set_title("loss terms, unweighted" + (" (absolute values)" if negative else ""))
    ax_loss.set_ylabel("term loss at the row's step")
    if all((terms[f"weight_{n}"][...] > 0).all() for n in names):
        ax_weight.set_yscale("log")
    config = yaml.safe_load(fh.attrs["config"]) or {}
    weighting = (config.get("loss") or {}).get("weighting", "none")
    ax_weight.set_title("weights" + (f" ({weighting})" if weighting != "none" else " (fixed)"))
    ax_weight.set_ylabel("weight λ")
    for ax in (ax_loss, ax_weight):
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(fh))
    return _save(fig, outdir / "terms.png")


def plot_solve(path: Path, outdir: Path) -> list[Path]:
    with h5py.File(path, "r") as fh:
        written = [plot_curves(fh, outdir), plot_terms(fh, outdir), plot_slice(fh, outdir),
                   plot_line(fh, outdir), plot_radial(fh, outdir)]
    return [p for p in written if p is not None]
