"""Figures of study files: bias/variance against K, error against d, loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure

from pinnlab.plots.solve import _save


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _records(group) -> list[dict]:
    keys = list(group)
    n = len(group[keys[0]])
    columns = {}
    for k in keys:
        data = group[k][...]
        columns[k] = _strings(data) if data.dtype.kind in "OSU" else data.tolist()
    return [{k: columns[k][i] for k in keys} for i in range(n)]


def _fit_band(ax, ks, ys, color):
    """Least-squares log–log line with a ±2 SE band for the slope."""
    lx, ly = np.log(ks), np.log(ys)
    if len(lx) < 3:
        return None
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    se = np.sqrt(resid @ resid / (len(lx) - 2) / ((lx - lx.mean()) ** 2).sum())
    grid = np.linspace(lx.min(), lx.max(), 50)
    center = intercept + slope * lx.mean()
    lines = [np.exp(center + s * (grid - lx.mean())) for s in (slope - 2 * se, slope + 2 * se)]
    ax.fill_between(np.exp(grid), np.minimum(*lines), np.maximum(*lines), color=color, alpha=0.15)
    ax.plot(np.exp(grid), np.exp(intercept + slope * grid), color=color, lw=1, ls="--")
    return slope, se


def plot_estimator_study(path: Path, outdir: Path) -> list[Path]:
    with h5py.File(path, "r") as fh:
        records = _records(fh["records"])
        equation = fh.attrs["config"].split("name: ")[1].split("\n")[0]
    written = []
    for quantity in ("loss", "gradient", "residual"):
        rows = [r for r in records if r["quantity"] == quantity]
        if not rows:
            continue
        fig = Figure(figsize=(12, 6.4), layout="constrained")
        ax_var, ax_bias = fig.subplots(1, 2)
        series = sorted({(r["loss"], r["noise"], r["dim"], r["sigma"]) for r in rows})
        for i, key in enumerate(series):
            color = f"C{i}"
            sel = sorted((r for r in rows if (r["loss"], r["noise"], r["dim"], r["sigma"]) == key),
                         key=lambda r: r["samples"])
            ks = np.array([r["samples"] for r in sel], float)
            label = f"{key[0]}, {key[1]}, d={key[2]}, σ={key[3]:g}"
            var = np.array([r["variance"] for r in sel])
            var_err = 2 * np.nan_to_num(np.array([r.get("variance_se", np.nan) for r in sel], float))
            fit = _fit_band(ax_var, ks, var, color)
            ax_var.errorbar(ks, var, yerr=np.minimum(var_err, 0.999 * var), fmt="o", color=color, capsize=3,
                            label=label + (f" (slope {fit[0]:.2f} ± {fit[1]:.2f})" if fit else ""))
            if quantity == "loss":
                bias = np.array([r["bias"] for r in sel])
                err = 2 * np.array([r["bias_se"] for r in sel])
                positive = bias > 0
                fit = _fit_band(ax_bias, ks[positive], bias[positive], color) if positive.all() else None
                ax_bias.errorbar(ks, np.abs(bias), yerr=err, fmt="o", color=color, capsize=3,
                                 label=label + (f" (slope {fit[0]:.2f} ± {fit[1]:.2f})" if fit else
                                                " (bias consistent with 0: |bias| shown)"))
            else:
                b2 = np.array([r["bias2"] for r in sel])
                err = 2 * np.array([r["bias2_se"] for r in sel])
                # A debiased bias² not 2 SE above 0 is drawn as ▽ at its upper bound bias² + 2 SE,
                # or at 2 SE where that is ≤ 0 (bias² far below 0 happens near zero bias: the SE
                # is not pivotal there, see pinnlab.studies.estimator_study), so no cell is dropped.
                up = b2 - err > 0
                ax_bias.errorbar(ks[up], b2[up], yerr=np.stack([np.minimum(err[up], 0.999 * b2[up]), err[up]]),
                                 fmt="o", color=color, capsize=3, label=label if up.any() else None)
                bound = np.where(b2 + err > 0, b2 + err, err)
                keep = ~up & (bound > 0)
                ax_bias.plot(ks[keep], bound[keep], "v", color=color, mfc="none",
                             label=None if up.any() else label + " (▽: not 2 SE above 0, upper bound)")
        ax_var.set(xscale="log", yscale="log", xlabel="samples K", ylabel="variance (±2 SE)",
                   title=f"{quantity}: variance of the estimate")
        ylabel = "|E L̂ − L| (±2 SE)" if quantity == "loss" else "bias² (debiased, ±2 SE; ▽ upper bound)"
        ax_bias.set(xscale="log", yscale="log", xlabel="samples K", ylabel=ylabel,
                    title=f"{quantity}: bias against the large-K reference")
        ks_all = sorted({r["samples"] for r in rows})
        for ax in (ax_var, ax_bias):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
            ax.set_xticks(ks_all, [str(k) for k in ks_all])
            ax.minorticks_off()
        fig.suptitle(f"Estimator study, {equation}: {quantity} (dashed: log–log fit, band: ±2 SE of the slope)")
        target = outdir / f"estimator_{quantity}.png"
        _save(fig, target, bbox_inches=None)
        written.append(target)
    return written


def plot_training_study(path: Path, outdir: Path) -> list[Path]:
    with h5py.File(path, "r") as fh:
        summary = _records(fh["summary"])
        cells = _records(fh["cells"])
        columns = fh.attrs["columns"]
        cell_dir = Path(fh.attrs["cell_dir"])
    written = []
    fig = Figure(figsize=(7, 4.6), layout="constrained")
    ax = fig.subplots()
    values = list(dict.fromkeys(r["column"] for r in summary))
    numbers = _numbers(values)
    # a numeric column (d, K, lr, ...) on a log axis at its values; anything else (text,
    # zero or negative numbers, no column) at evenly spaced positions, one per value
    logarithmic = numbers is not None and all(math.isfinite(v) and v > 0 for v in numbers)
    positions = numbers if logarithmic else list(range(len(values)))
    where = dict(zip(values, positions))
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in summary)):
        rows = [r for r in summary if r["variant"] == variant and r["rel_l2_mean"] > 0]
        if rows:  # NaN (no cell ok) and 0 have no place on the log error axis
            ax.errorbar([where[r["column"]] for r in rows], [r["rel_l2_mean"] for r in rows],
                        yerr=[r["rel_l2_std"] for r in rows], fmt="o-", capsize=4, color=f"C{i}",
                        label=variant)
    if ax.containers:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no cell finished with status ok: no error to draw", transform=ax.transAxes,
                ha="center", va="center")
    ax.set(xscale="log" if logarithmic else "linear", yscale="log", xlabel=columns or "cell",
           ylabel="final relative L2 (mean ± std)",
           title="Training study: error against dimension per method")
    ax.set_xticks(positions, [_label(v) if columns else "all" for v in (numbers or values)])
    ax.set_xticks([], minor=True)
    ax.grid(True, which="both", alpha=0.3)
    target = outdir / "training_error_vs_dim.png"
    _save(fig, target, bbox_inches=None)
    written.append(target)

    shown = {}
    for cell in cells:
        shown.setdefault((cell["variant"], cell.get(columns)), cell)
    groups = sorted({c.get(columns) for c in cells}, key=str)
    fig = Figure(figsize=(6 * len(groups), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, group in zip(axes, groups):
        lowest = np.inf
        for i, ((variant, _), cell) in enumerate(x for x in shown.items() if x[0][1] == group):
            file = cell_dir / f"{cell['key']}.h5"
            if not file.exists():
                continue
            with h5py.File(file, "r") as fh:
                loss = fh["trace/loss"][...]
                mix = fh["trace/mix"][...]
            window = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(len(smooth)) + window, smooth, color=f"C{i}", label=variant)
            positive = smooth[smooth > 0]
            lowest = min(lowest, positive.min()) if positive.size else lowest
            switched = np.flatnonzero(mix >= 1)
            if len(switched) and switched[0] > 0:
                ax.axvline(switched[0], color=f"C{i}", ls="--", lw=1)
        # the unbiased loss is a product of independent draws: its average can touch or
        # cross 0, so the axis is logarithmic above the smallest positive value, linear below
        if np.isfinite(lowest):
            ax.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(lowest)))
        ax.set(xlabel="step", ylabel="training loss (moving average; symlog)",
               title=f"{columns} = {_label(group)}" if columns else "all cells")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:  # every cell file of this group is missing (moved or deleted)
            ax.text(0.5, 0.5, "no cell file found", transform=ax.transAxes, ha="center", va="center")
    fig.suptitle("Training study: loss curves (first seed; dashed: switch to the unbiased loss)")
    target = outdir / "training_loss_curves.png"
    _save(fig, target, bbox_inches=None)
    written.append(target)
    return written


def plot_study(path: Path, outdir: Path) -> list[Path]:
    with h5py.File(path, "r") as fh:
        kind = fh.attrs["kind"]
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "estimator_study":
        return plot_estimator_study(path, outdir)
    return plot_training_study(path, outdir)


def _numbers(values) -> list[float] | None:
    """The column values as numbers (HDF5 stores a numeric column as floats, a column
    with any other value as text), or None when one of them is not a number."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def _label(value) -> str:
    """A grid value as written in the config (10, not 10.0: HDF5 stores numbers as floats)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
