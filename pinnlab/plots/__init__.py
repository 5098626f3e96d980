"""Figures drawn from result files (never from live objects; nothing imports this but
the CLI and the studies)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py

PLOTTERS: dict[str, Callable[[Path, Path], list[Path]]] = {}


def _plotter(kind: str):
    if kind == "solve":
        from pinnlab.plots.solve import plot_solve

        return plot_solve
    if kind == "tune":
        from pinnlab.plots.tune import plot_tune

        return plot_tune
    if kind in ("estimator_study", "training_study"):
        from pinnlab.plots.studies import plot_study

        return plot_study
    raise ValueError(f"unknown result kind {kind!r}")


def plot_file(path: str | Path, outdir: str | Path) -> list[Path]:
    """Write the PNGs for a result file (solve, tune or study) into ``outdir``."""
    path, outdir = Path(path), Path(outdir)
    with h5py.File(path, "r") as fh:
        kind = fh.attrs.get("kind", "")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if not kind:  # (it said "unknown result kind ''")
        raise ValueError(f"{str(path)!r} is not a pinnlab result file (it has no 'kind' attribute; "
                         "pinnlab solve, tune and study write one)")
    return _plotter(kind)(path, outdir)


__all__ = ["plot_file"]
