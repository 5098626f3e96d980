"""Figures of a ``pinnlab tune`` result: φ trajectories, outer objective, and the final solve."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pinnlab.plots.solve import _colors, _save, plot_solve

FIGURES = ("tune.png",)
"""The figure this module draws itself (the final solve's are :mod:`pinnlab.plots.solve`'s)."""

MAX_LINES = 12
"""Coordinates drawn of a vector φ entry (σ per coordinate, μ): the first MAX_LINES."""


def _rows(values: np.ndarray) -> np.ndarray:
    """``values`` [steps, *shape] as [steps, size] (also with no step, where -1 is ambiguous)."""
    return values.reshape(len(values), int(np.prod(values.shape[1:])))


def _arrays(group, prefix: str = "") -> dict[str, np.ndarray]:
    """The datasets below ``group`` by their paths (``collocation_weight/<layer>``)."""
    out: dict[str, np.ndarray] = {}
    for name, item in group.items():
        if isinstance(item, h5py.Group):
            out.update(_arrays(item, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = item[...]
    return out


def _trajectories(group: dict[str, np.ndarray], shown: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Scalar φ entries as 1-D series; vector entries (σ per coordinate, μ) by their
    coordinates (at most MAX_LINES of them; ``shown[name]`` = (drawn, total) when some are
    left out); the collocation network by its norm."""
    out: dict[str, np.ndarray] = {}
    net = []
    for name, values in group.items():
        if name.startswith("collocation_weight"):
            net.append(_rows(values))
            continue
        if values.ndim == 1:
            out[name] = values
        else:
            flat = _rows(values)
            for i in range(min(flat.shape[1], MAX_LINES)):
                out[f"{name}[{i}]"] = flat[:, i]
            if flat.shape[1] > MAX_LINES:
                shown[name] = (MAX_LINES, flat.shape[1])
    if net:
        out["‖collocation net‖"] = np.sqrt(sum((a ** 2).sum(1) for a in net))
    return out


def plot_tune(path: Path, outdir: Path) -> list[Path]:
    """φ against outer step, from φ₀ at step 0 (log scale for positive quantities), and the
    outer objective; then the final solve's own figures."""
    with h5py.File(path, "r") as fh:
        tune = fh["tune"]
        steps = tune["outer_step"][...] + 1
        value = tune["value"][...]
        shown: dict[str, tuple[int, int]] = {}
        values = _arrays(tune["phi"])
        # φ₀, drawn at outer step 0 (files before it was kept, and searches: none)
        first = _arrays(tune["initial"]) if "initial" in tune else {}
        start = bool(first) and all(name in first for name in values)
        if start:  # (φ with no outer step was written with shape (0,) before 1ff68d0)
            values = {name: np.concatenate([first[name][None], v.reshape(-1, *first[name].shape)])
                      for name, v in values.items()}
        series = _trajectories(values, shown)
        phi_steps = np.concatenate([[0], steps]) if start else steps
        truth = {k[len("coefficient_rel_err/"):]: v for k, v in tune.attrs.items()
                 if k.startswith("coefficient_rel_err/")}
        method, objective = tune.attrs["method"], tune.attrs["objective"]
        final = fh["final"].attrs["rel_l2"]
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        ax_phi, ax_obj = fig.subplots(1, 2)
        for (name, values), color in zip(series.items(), _colors(len(series))):  # one colour each
            ax_phi.plot(phi_steps[: len(values)], values, "o-", ms=3, color=color, label=name)
        if series and all((v > 0).all() for v in series.values()):
            ax_phi.set_yscale("log")
        ax_phi.set_xlabel("outer step" if method not in ("random", "optuna") else "trial")
        ax_phi.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_phi.set_ylabel("value")
        phases = method
        if "then_method" in tune.attrs:  # a two-phase schedule: mark the switch on both axes
            after = int(tune.attrs["then_after"])
            switch = after + 0.5  # between outer steps `after` and `after` + 1 (1-based on the axis)
            phases = f"{method} → {tune.attrs['then_method']} after {after} outer steps"
            for ax in (ax_phi, ax_obj):
                ax.axvline(switch, color="0.5", ls="--", lw=1)
        status = tune.attrs.get("status", "ok")
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status != "ok":  # (a tuning stopped early looked like a finished one)
            phases += f"; stopped: status {status}"
        title = f"tuned hyperparameters ({phases})"
        for name, (drawn, total) in shown.items():
            title += f"\n{name}: first {drawn} of {total} coordinates drawn"
        ax_phi.set_title(title)
        if len(series) > 6:  # beside the axes, where it hides no line
            ax_phi.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0,
                          ncols=1 + (len(series) - 1) // 16)
        elif series:
            ax_phi.legend(fontsize=8)
        finite = np.isfinite(value)
        unit = "outer step" if method not in ("random", "optuna") else "trial"
        if finite.any():
            ax_obj.semilogy(steps[finite], value[finite], "o-", ms=3, color="C3", label="outer objective")
        if method in ("random", "optuna") and finite.any():
            ax_obj.semilogy(steps[finite], np.minimum.accumulate(value[finite]), "-", color="k",
                            lw=1.5, label="best so far")
        if not finite.all():  # marked along the top, at their steps: left out, a search whose every
            # trial diverged drew an empty panel over -1..1 with nothing that said why
            ax_obj.plot(steps[~finite], np.full((~finite).sum(), 0.95), "x", color="C3",
                        transform=ax_obj.get_xaxis_transform(),
                        label=f"non-finite (diverged): {(~finite).sum()} of {len(value)} {unit}s")
        ax_obj.set_xlabel(unit)
        ax_obj.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_obj.set_ylabel(f"outer objective ({objective})")
        text = f"final solve rel. L2 = {final:.2e}"
        for name, err in truth.items():
            text += f"\n{name}: rel. error {err:.2e}"
        ax_obj.set_title(text, fontsize=10)
        if ax_obj.lines:
            ax_obj.legend(fontsize=8)
        for ax in (ax_phi, ax_obj):  # one or two steps: a span under 2 gave ticks at 0.95, 0.96, ... 1.05
            low, high = ax.get_xlim()
            if high - low < 2:  # (centred on the steps drawn: round(1.5) == 2 added a step 3 never run)
                middle = (low + high) / 2
                ax.set_xlim(min(low, middle - 1), max(high, middle + 1))
        written = [_save(fig, outdir / "tune.png")]
    return written + plot_solve(path, outdir)
