"""Figures drawn from result files (never from live objects; nothing in the library
imports this but the CLI)."""

from __future__ import annotations

import errno
import functools
import importlib
import zipfile
from pathlib import Path

import h5py

PLOTTERS: dict[str, tuple[str, str]] = {
    "solve": ("pinnlab.plots.solve", "plot_solve"),
    "tune": ("pinnlab.plots.tune", "plot_tune"),
    "estimator_study": ("pinnlab.plots.studies", "plot_study"),
    "training_study": ("pinnlab.plots.studies", "plot_study"),
}
"""The plotter of each result kind: its module (imported when it is needed: matplotlib) and
the function in it that draws a file."""


def _plotter(kind: str):
    if kind not in PLOTTERS:
        raise ValueError(f"unknown result kind {kind!r}")
    module, function = PLOTTERS[kind]
    return getattr(importlib.import_module(module), function)


@functools.cache
def _figures() -> frozenset[str]:
    return frozenset(name for module in sorted({module for module, _ in PLOTTERS.values()})
                     for name in importlib.import_module(module).FIGURES)


def __getattr__(name: str):
    """``FIGURES``: the names of every figure a plotter may write (each draws some of them),
    those in a plot directory that a new plot does not draw being of an earlier result,
    removed. It is the union of the ``FIGURES`` each plotter module of :data:`PLOTTERS`
    declares, and a figure saved under a name none of them declares is refused (``_save``):
    kept by hand beside the plotters, a set a new figure was left out of would leave that
    figure in a directory from an earlier plot. Computed when first asked for (it imports
    the plotters)."""
    if name == "FIGURES":
        return _figures()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class NotAResult(ValueError):
    """The file to plot is not a pinnlab result file at all (not HDF5, no or an unknown
    ``kind``), or cannot be opened (truncated, locked by a writer), as opposed to one that
    fails while it is drawn (damaged, or written by another version)."""


class FigureNotWritten(OSError):
    """A figure that cannot be written (a full disk, a directory made read-only): the disk's
    fault, told apart from a result that fails to be drawn (whose read errors are OSErrors
    too). ``path`` is the figure's file, ``error`` the OSError."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(f"cannot write {str(path)!r} ({error.strerror or error})")
        self.path, self.error = path, error


def plot_file(path: str | Path, outdir: str | Path) -> list[Path]:
    """Write the PNGs for a result file (solve, tune or study) into ``outdir``, created
    with its parents when missing; a file that is no pinnlab result raises
    :class:`NotAResult`."""
    path, outdir = Path(path), Path(outdir)
    try:
        with h5py.File(path, "r") as fh:
            kind = fh.attrs.get("kind", "")
    except OSError as err:
        detail = " ".join(str(err).split())[:120]
        if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(err):
            # HDF5's lock of a writer elsewhere (h5py's "r+" in a notebook): it was called damaged
            raise NotAResult(f"{str(path)!r} is locked: another process has it open for writing; close it "
                             f"there and plot again ({detail})") from None
        if h5py.is_hdf5(path):  # the signature is there: a truncated or damaged result, not a foreign file
            raise NotAResult(f"{str(path)!r} is an HDF5 file that cannot be read, truncated or damaged "
                             f"({detail})") from None
        if zipfile.is_zipfile(path) and path.suffix == ".ckpt":
            how = ("rerun the same pinnlab study command" if path.parent.name.endswith(".cells")  # (a study's cell)
                   else "continue the run with --resume")
            raise NotAResult(f"{str(path)!r} is a checkpoint of an interrupted run, not a result; {how} "
                             "to get its result file") from None
        raise NotAResult(f"{str(path)!r} is not an HDF5 file ({detail})") from None
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if not kind:  # (it said "unknown result kind ''")
        raise NotAResult(f"{str(path)!r} is not a pinnlab result file (it has no 'kind' attribute; "
                         "pinnlab solve, tune and study write one)")
    try:
        plotter = _plotter(kind)
    except ValueError as err:
        raise NotAResult(f"{str(path)!r}: {err}") from None
    return plotter(path, outdir)


__all__ = ["FigureNotWritten", "NotAResult", "plot_file"]
