"""Figures of a ``pinnlab tune`` result: φ trajectories, outer objective, and the final solve."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pinnlab.plots.solve import _colors, _save, plot_solve

MAX_LINES = 12
"""Coordinates drawn of a vector φ entry (σ per coordinate, μ): the first MAX_LINES."""


def _trajectories(group, shown: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Scalar φ entries as 1-D series; vector entries (σ per coordinate, μ) by their
    coordinates (at most MAX_LINES of them; ``shown[name]`` = (drawn, total) when some are
    left out); the collocation network by its norm."""
    out: dict[str, np.ndarray] = {}
    net = []
    for name in group:
        values = group[name][...]
        if name.startswith("collocation_weight"):
            for sub in values.values() if isinstance(values, h5py.Group) else [values]:
                net.append(sub.reshape(len(sub), -1))
            continue
        if values.ndim == 1:
            out[name] = values
        else:
            flat = values.reshape(len(values), -1)
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
        series, shown = {}, {}
        phi = tune["phi"]
        initial = tune.get("initial", {})  # φ₀, drawn at outer step 0 (files before it was kept: none)
        start = len(initial) > 0 and all(isinstance(phi[n], h5py.Dataset) and n in initial for n in phi)
        for name in phi:
            item = phi[name]
            if isinstance(item, h5py.Group):  # collocation_weight/<layer>
                series.update(_trajectories({f"collocation_weight/{k}": item[k] for k in item}, shown))
            else:
                if start:  # (a file written before a tuning stopped at outer step 0 had φ of shape (0,))
                    first = initial[name][...]
                    values = np.concatenate([first[None], item[...].reshape(-1, *first.shape)])
                else:
                    values = item
                series.update(_trajectories({name: values}, shown))
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
        ax_obj.semilogy(steps[finite], value[finite], "o-", ms=3, color="C3", label="outer objective")
        if method in ("random", "optuna") and finite.any():
            ax_obj.semilogy(steps[finite], np.minimum.accumulate(value[finite]), "-", color="k",
                            lw=1.5, label="best so far")
        ax_obj.set_xlabel("outer step" if method not in ("random", "optuna") else "trial")
        ax_obj.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_obj.set_ylabel(f"outer objective ({objective})")
        text = f"final solve rel. L2 = {final:.2e}"
        for name, err in truth.items():
            text += f"\n{name}: rel. error {err:.2e}"
        ax_obj.set_title(text, fontsize=10)
        ax_obj.legend(fontsize=8)
        outdir.mkdir(parents=True, exist_ok=True)
        written = [_save(fig, outdir / "tune.png")]
    return written + plot_solve(path, outdir)
