"""Figures of study files: bias/variance against K, error against the columns key, loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import (
    LogFormatterSciNotation,
    MaxNLocator,
    NullLocator,
    ScalarFormatter,
)

from pinnlab.plots.solve import _colors, _lone_points, _save

QUANTITIES = ("loss", "gradient", "residual")
"""The quantities of an estimator study, one figure each."""

FIGURES = (*(f"estimator_{quantity}.png" for quantity in QUANTITIES),
           "training_error_vs_dim.png", "training_loss_curves.png")
"""The figures this module's plotters write (:data:`pinnlab.plots.FIGURES` is every plotter
module's)."""


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


def _fit_band(ax, ks, ys, y_se, color):
    """The log–log line ``fit_slopes`` reports (:func:`loglog_fit`, weighted by the points'
    standard errors) with a ±2 SE band for the slope."""
    if len(ks) < 3:
        return None
    from pinnlab.studies.estimator_study import loglog_fit

    slope, se, cx, cy = loglog_fit(ks, ys, y_se)
    if not math.isfinite(slope):  # a value ≤ 0: no logarithm, no line
        return None
    lx = np.log(ks)
    grid = np.linspace(lx.min(), lx.max(), 50)  # (the weighted line passes through the weighted means)
    lines = [np.exp(cy + s * (grid - cx)) for s in (slope - 2 * se, slope + 2 * se)]
    ax.fill_between(np.exp(grid), np.minimum(*lines), np.maximum(*lines), color=color, alpha=0.15)
    ax.plot(np.exp(grid), np.exp(cy + slope * (grid - cx)), color=color, lw=1, ls="--")
    return slope, se


MARKERS = ("o", "s", "^", "D", "P", "X", "*", "h", "<", ">", "p", "d")
"""Series markers, one per (loss, noise); ▽ is left out (it reads as an upper bound)."""


def _series_styles(series: list[tuple]) -> dict[tuple, dict]:
    """A colour and marker per series (loss, noise, d, σ), no two alike: the marker by
    (loss, noise); the colour by series while there are at most 10 of them, beyond that by
    (d, σ) (tab10, tab20, or viridis for more than 20 (d, σ) pairs), so that the colour
    says the problem and the marker the estimator."""
    kinds = sorted({key[:2] for key in series})
    marker = {kind: MARKERS[i % len(MARKERS)] for i, kind in enumerate(kinds)}
    linestyle = {kind: ("None", "-", "--", ":")[i // len(MARKERS) % 4] for i, kind in enumerate(kinds)}
    groups = sorted({key[2:] for key in series}) if len(series) > 10 else series
    color = dict(zip(groups, _colors(len(groups))))
    return {key: {"color": color[key[2:] if len(series) > 10 else key], "marker": marker[key[:2]],
                  "linestyle": linestyle[key[:2]]} for key in series}


LEGEND_ENTRY_INCHES = 0.16
"""Height of one fontsize-7 legend entry (with its spacing), for sizing the figure."""


ARROW_DECADES = 0.3
"""Length of the arrow below an upper bound, in decades of the log axis."""


def _down_arrows(ax, xs, tops, color) -> None:
    """The usual mark of an upper limit: an arrow from each hollow marker down by
    ARROW_DECADES (the axis is widened to hold the arrow tips)."""
    for x, top in zip(xs, tops):
        tip = top * 10 ** -ARROW_DECADES
        ax.annotate("", xy=(x, tip), xytext=(x, top), annotation_clip=False,
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1, "shrinkA": 4, "shrinkB": 0,
                                "mutation_scale": 8})
        ax.update_datalim([(x, tip)])


def plot_estimator_study(path: Path, outdir: Path) -> list[Path]:
    # (imported here: it imports torch, which pinnlab.plots.FIGURES, importing this module
    # whatever the result plotted, would otherwise cost every plot, seconds)
    from pinnlab.studies.estimator_study import BIAS_Z, bias_is_significant, bias_signs, series_points

    with h5py.File(path, "r") as fh:
        records = _records(fh["records"])
        equation = fh.attrs["config"].split("name: ")[1].split("\n")[0]
    written = []
    for quantity in QUANTITIES:
        rows = [r for r in records if r["quantity"] == quantity]
        if not rows:
            continue
        series = sorted({(r["loss"], r["noise"], r["dim"], r["sigma"]) for r in rows})
        styles = _series_styles(series)
        # the legends get a row of their own below the panels, as tall as they need
        legend_height = LEGEND_ENTRY_INCHES * len(series) + 0.3
        fig = Figure(figsize=(12, 4.6 + legend_height), layout="constrained")
        (ax_var, ax_bias), legend_axes = fig.subplots(2, 2, height_ratios=[4.2, legend_height])
        for key in series:
            style = styles[key]
            color = style["color"]
            sel = sorted((r for r in rows if (r["loss"], r["noise"], r["dim"], r["sigma"]) == key),
                         key=lambda r: r["samples"])
            ks = np.array([r["samples"] for r in sel], float)
            label = f"{key[0]}, {key[1]}, d={key[2]}, σ={key[3]:g}"
            # the values and standard errors the slopes are fitted to, drawn with the same
            var, var_se = (np.array(a, float) for a in series_points(quantity, "variance", sel))
            var_err = 2 * np.nan_to_num(var_se)
            fit = _fit_band(ax_var, ks, var, var_se, color)
            # (clipped below only, to stay on the log axis: the upper bar is the full 2 SE)
            ax_var.errorbar(ks, var, yerr=np.stack([np.minimum(var_err, 0.999 * var), var_err]), capsize=3, **style)
            # legend entries are the series' filled marker, whatever was drawn
            # (without a line, why: the study's JSON still gives a two-K slope, which the plot does not draw)
            why = "fewer than 3 K" if len(ks) < 3 else "a variance ≤ 0 has no logarithm"
            ax_var.plot([], [], **style, label=label + (f" (slope {fit[0]:.2f} ± {fit[1]:.2f})" if fit else
                                                        f" (no fit: {why})"))
            # one rule for the points, the fit and the label: the bias is distinguishable
            # from 0 where it is more than BIAS_Z SE from it (filled), a slope is fitted
            # where it is at every K (the slopes of fit_slopes)
            signs = np.array(bias_signs(quantity, sel))
            significant = bias_is_significant(quantity, sel)
            fit = None
            if quantity == "loss":
                bias, bias_se = (np.array(a, float) for a in series_points(quantity, "bias", sel))
                err = BIAS_Z * bias_se
                if significant:
                    fit = _fit_band(ax_bias, ks, bias, bias_se, color)
                ax_bias.errorbar(ks, bias, yerr=err, capsize=3, **style, mfc="none")
                ax_bias.plot(ks[signs != 0], bias[signs != 0], color=color, marker=style["marker"], ls="None")
                note = f"no fit: not {BIAS_Z:g} SE from 0, with one sign, at every K"
            else:
                # A debiased bias² not BIAS_Z SE above 0 is drawn hollow at its upper bound
                # bias² + BIAS_Z SE, or at BIAS_Z SE where that is ≤ 0 (bias² far below 0
                # happens near zero bias: the SE is not pivotal there, see
                # pinnlab.studies.estimator_study), so no cell is dropped.
                b2, b2_se = (np.array(a, float) for a in series_points(quantity, "bias2", sel))
                err = BIAS_Z * b2_se
                up = signs > 0
                if significant:
                    fit = _fit_band(ax_bias, ks, b2, b2_se, color)
                bound = np.where(b2 + err > 0, b2 + err, err)
                keep = ~up & (bound > 0)
                ax_bias.errorbar(ks[up], b2[up], yerr=np.stack([np.minimum(err[up], 0.999 * b2[up]), err[up]]),
                                 capsize=3, **style)
                ax_bias.plot(ks[keep], bound[keep], color=color, marker=style["marker"], mfc="none", ls="None")
                _down_arrows(ax_bias, ks[keep], bound[keep], color)
                note = f"no fit: not {BIAS_Z:g} SE above 0 at every K"
            if significant:
                note = "no fit: fewer than 3 K"
            ax_bias.plot([], [], **style, label=label + (f" (slope {fit[0]:.2f} ± {fit[1]:.2f})" if fit else
                                                         f" ({note})"))
        # a log axis has no place for variances that are all 0 (every replicate alike, as
        # at a σ that saturates the network): those get a linear axis that shows the zeros
        positive = any(r["variance"] > 0 for r in rows)
        ax_var.set(xscale="log", yscale="log" if positive else "linear", xlabel="samples K",
                   ylabel="variance (±2 SE)" if positive else "variance (0 at every K: every replicate alike)",
                   title=f"{quantity}: variance of the estimate")
        ylabel = (f"|E L̂ − L| (±{BIAS_Z:g} SE; hollow: within {BIAS_Z:g} SE of 0)" if quantity == "loss" else
                  f"bias² (debiased, ±{BIAS_Z:g} SE; hollow ↓: upper bound)")
        ax_bias.set(xscale="log", yscale="log", xlabel="samples K", ylabel=ylabel,
                    title=f"{quantity}: bias against the large-K reference")
        ks_all = sorted({r["samples"] for r in rows})
        for ax, legend_ax in zip((ax_var, ax_bias), legend_axes):
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xticks(ks_all, [str(k) for k in ks_all])
            ax.xaxis.set_minor_locator(NullLocator())
            if ax.get_yscale() == "log":  # labelled minor ticks where the range spans about a decade
                # (with the minor ticks off, 0.03-0.5 had one label, 10⁻¹)
                ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            else:
                ax.yaxis.set_minor_locator(NullLocator())
            legend_ax.axis("off")
            legend_ax.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="upper center", frameon=False,
                             borderaxespad=0)
        fig.suptitle(f"Estimator study, {equation}: {quantity} (dashed: log–log fit, band: ±2 SE of the slope)")
        target = outdir / f"estimator_{quantity}.png"
        _save(fig, target, bbox_inches=None)
        written.append(target)
    return written


def _gap(positions, logarithmic: bool) -> float:
    """The smallest gap between the columns' places (on the log axis in log units; one
    place: a factor 2, or 1)."""
    scale = np.log if logarithmic else np.asarray
    gaps = np.diff(np.unique(scale(np.asarray(positions, float))))
    return float(gaps.min()) if len(gaps) else (np.log(2.0) if logarithmic else 1.0)


def _dodged(xs, positions, logarithmic: bool, index: int, count: int) -> list[float]:
    """The places of the ``index``-th of ``count`` variants: each variant a little beside
    its column's value (together within 30 % of the smallest gap between values, on the
    log axis in log units), so that variants with the same mean and std are not drawn on
    top of one another."""
    if count == 1:
        return list(xs)
    shift = (index - (count - 1) / 2) * min(0.1, 0.3 / (count - 1)) * _gap(positions, logarithmic)
    return [float(x * np.exp(shift)) if logarithmic else float(x + shift) for x in xs]


def plot_training_study(path: Path, outdir: Path) -> list[Path]:
    with h5py.File(path, "r") as fh:
        summary = _records(fh["summary"])
        cells = _records(fh["cells"])
        columns = fh.attrs["columns"]
        cell_dir = Path(fh.attrs["cell_dir"])
    beside = Path(str(path) + ".cells")  # a study moved or copied with its cells: not the recorded place
    cell_dir = beside if beside.is_dir() else cell_dir
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
    variants = list(dict.fromkeys([*(r["variant"] for r in summary), *(c["variant"] for c in cells)]))
    color = dict(zip(variants, _colors(len(variants))))  # one colour per variant in both figures
    for index, variant in enumerate(variants):
        rows = [r for r in summary if r["variant"] == variant and r["rel_l2_mean"] > 0]
        if rows:  # NaN (no cell ok) and 0 have no place on the log error axis
            ax.errorbar(_dodged([where[r["column"]] for r in rows], positions, logarithmic, index, len(variants)),
                        [r["rel_l2_mean"] for r in rows],
                        yerr=[r["rel_l2_std"] for r in rows], fmt="o-", capsize=4, color=color[variant],
                        label=variant)
    if ax.containers:
        for variant in variants:  # named, not dropped: it ran (the study's table says "no ok run")
            if not any(r["variant"] == variant and r["rel_l2_mean"] > 0 for r in summary):
                ax.plot([], [], "o", mfc="none", color=color[variant], label=f"{variant}: no cell ended ok")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no cell finished with status ok: no error to draw", transform=ax.transAxes,
                ha="center", va="center")
    beside = " (variants side by side)" if len(variants) > 1 else ""
    ax.set(xscale="log" if logarithmic else "linear", yscale="log", xlabel=(columns or "cell") + beside,
           ylabel="final relative L2 (mean ± std)",
           # (the file keeps its name, training_error_vs_dim.png, whatever the column is)
           title=f"Training study: final error against {columns} per method" if columns
           else "Training study: final error per method")
    ax.set_xticks(positions, [_label(v) if columns else "all" for v in (numbers or values)])
    ax.set_xticks([], minor=True)
    if positions:  # half a gap beyond the outer columns (the dodged variants stay within 0.15 of it):
        # autoscaled to the points drawn, a variant drawn alone beside its column put the tick on the frame
        pad = _gap(positions, logarithmic) / 2
        low, high = min(positions), max(positions)
        ax.set_xlim(*((low * np.exp(-pad), high * np.exp(pad)) if logarithmic else (low - pad, high + pad)))
    ax.grid(True, which="both", alpha=0.3)
    target = outdir / "training_error_vs_dim.png"
    _save(fig, target, bbox_inches=None)
    written.append(target)

    shown = {}
    for cell in cells:
        shown.setdefault((cell["variant"], cell.get(columns)), cell)
    groups = list(dict.fromkeys(c.get(columns) for c in cells))  # the grid's order (not 16 before 4)
    damaged = []  # cell files that cannot be read: not drawn, and named under the panels
    switches = False  # whether a dashed switch line is drawn (the title explains it only then)
    fig = Figure(figsize=(6 * len(groups), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, group in zip(axes, groups):
        drawn, windows = [], set()
        for (variant, _), cell in (x for x in shown.items() if x[0][1] == group):
            file = cell_dir / f"{cell['key']}.h5"
            if not file.exists():
                continue
            try:
                with h5py.File(file, "r") as fh:
                    # a cell file replaced since (a rerun of another config there) is not this study's cell
                    final = fh.get("final")
                    if final is not None and "rel_l2" in final.attrs and not np.isclose(
                            float(final.attrs["rel_l2"]), float(cell["rel_l2"]), rtol=0, atol=0, equal_nan=True):
                        continue
                    loss = fh["trace/loss"][...]
                    mix = fh["trace/mix"][...]
            except (OSError, KeyError, ValueError):  # one damaged cell file failed the whole plot, as "the study"
                damaged.append(file.name)
                continue
            window = max(1, len(loss) // 50)
            windows.add(window)
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            # the first variant widest: where two variants' curves coincide (the biased and
            # the hybrid loss before its switch) the earlier shows around the later
            width = 1.0 + 1.5 * (len(variants) - 1 - variants.index(variant)) / max(len(variants) - 1, 1)
            # smooth[i] averages steps i + 1 … i + window (1-based) and is drawn at the last
            ax.plot(np.arange(len(smooth)) + window, smooth, color=color[variant], label=variant, lw=width,
                    **_lone_points(smooth))
            drawn.append(smooth)
            switched = np.flatnonzero(mix >= 1)
            if len(switched) and switched[0] > 0:  # mix[i] is step i + 1's, as in plot_curves
                ax.axvline(switched[0] + 0.5, color=color[variant], ls="--", lw=1)  # (as in the solve figure)
                switches = True
        scale = _scale_loss_axis(ax, np.concatenate(drawn) if drawn else np.array([]))
        # (a run of fewer than 100 steps is drawn as it is: no average to name)
        averaged = sorted(w for w in windows if w > 1)
        notes = ([f"moving average of {averaged[0]} steps" if len(averaged) == 1 else "moving average of 1/50 of the steps"]
                 if averaged else []) + (["symlog"] if scale == "symlog" else [])
        ylabel = "training loss" + (f" ({'; '.join(notes)})" if notes else "")
        ax.set(xlabel="step", ylabel=ylabel,
               title=f"{columns} = {_label(group)}" if columns else "all cells")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # (1.2, 1.4, ... for a 2-step run)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:  # every cell file of this group is missing (moved or deleted) or replaced
            ax.text(0.5, 0.5, "no cell file of this study found", transform=ax.transAxes, ha="center", va="center")
    # one 6-inch panel is narrower than the one-line title
    fig.suptitle("Training study: loss curves" + ("\n" if len(groups) == 1 else " ")
                 + "(first seed" + ("; dashed: switch to the unbiased loss)" if switches else ")"))
    if damaged:
        shown_names = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        fig.supxlabel(f"not drawn: damaged cell file{'s' if len(damaged) > 1 else ''} {shown_names}", fontsize=8,
                      color="C3")
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


def _scale_loss_axis(ax, values: np.ndarray) -> str:
    """Give ``ax`` a y scale that shows the loss ``values`` with labelled ticks; returns it.

    Positive values get a log axis. Its labelled ticks are the powers of 10, and a curve
    within one decade (158 to 301) may hold none of them, nor a 2, 3, ... × 10^k (210 to
    290): there the ticks are evenly stepped numbers (200, 250, 300 in view for 158 to 301). Up to about two
    decades (matplotlib's default: one), 2, 3, 4, 6 × 10^k are labelled too. The unbiased
    loss is a product of independent draws, so its average can touch or cross 0: then
    the axis is symlog, linear below the power of 10 at or below the smallest positive
    value (0.1 for 0.37; 0 and that threshold are both ticks in view). Without any
    positive value it stays linear.
    """
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if positive.size and positive.size == finite.size:
        ax.set_yscale("log")
        if positive.max() < 10 * positive.min():
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_locator(NullLocator())
        else:
            ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        return "log"
    if positive.size:
        ax.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(positive.min())))
        return "symlog"
    return "linear"


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
