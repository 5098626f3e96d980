"""Training-level studies: a grid of solve runs in worker processes, resumable, summarised.

Each cell is the base config plus override strings (a variant, e.g. the loss, and one
point of the grid, e.g. dimension × seed). Every finished cell writes its own result
file atomically under ``<STUDY>.cells/``, recording its own run config (the config
without ``study:``); a rerun skips cells whose file holds that config (up to the
settings that change no number, :data:`~pinnlab.io.checkpoint.RUN_ONLY_SETTINGS`, and
the device as it resolves), so an interrupted or crashed study continues where it
stopped, also with another ``trainer.checkpoint_every``, and a study whose grid gained
seeds or variants computes only the new cells. Every cell's config is
validated before the first cell runs. A cell runs like ``pinnlab solve``: pinnlab's
trainer, or DeepXDE's with ``trainer.backend: deepxde``. The summary groups cells by
(variant, column value) and reports mean ± std over the remaining grid keys (seeds) of
the final and best relative L2, seconds per step and peak memory of the cells whose
status is ``ok`` (how many others were left out is reported with it), in the layout of
the published tables (methods as rows, dimensions as columns).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinnlab import _malloc
from pinnlab._interrupts import Terminated, raise_terminated


@dataclass(frozen=True)
class Cell:
    variant: str
    assignment: tuple[tuple[str, object], ...]
    overrides: tuple[str, ...]

    @property
    def key(self) -> str:
        text = json.dumps([self.variant, list(self.overrides)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.variant} {dict(self.assignment)}"


def expand_cells(variants: Mapping[str, Sequence[str]], grid: Mapping[str, Sequence]) -> list[Cell]:
    """variants × Π grid values, each with its override strings."""
    keys = list(grid)
    cells = []
    for name, base in variants.items():
        for values in itertools.product(*(grid[k] for k in keys)):
            assignment = tuple(zip(keys, values))
            overrides = tuple(base) + tuple(f"{k}={_override_text(v)}" for k, v in assignment)
            cells.append(Cell(name, assignment, overrides))
    return cells


def _override_text(value) -> str:
    """``value`` as override text. A string is override text itself (``'0'`` and ``0`` are
    the same run, :func:`_refuse_repeated_cells`), except where YAML would read it as
    another string or not at all: then it is quoted (JSON, which YAML reads), so that
    ``'obs #2.npz'`` stays that file name (unquoted, ``' #'`` starts a comment: ``obs``)."""
    if not isinstance(value, str):
        return json.dumps(value)
    import yaml

    from pinnlab.config import override_value

    try:
        read = override_value(value)
    except yaml.YAMLError:
        return json.dumps(value)
    return json.dumps(value) if isinstance(read, str) and read != value else value


def run_cell(config_path: str, overrides: Sequence[str], output: str, threads: int) -> dict:
    """Solve one cell (in a worker process) as ``pinnlab solve`` would, with pinnlab's
    trainer or (``trainer.backend: deepxde``) DeepXDE's, and write its result file
    atomically.

    With ``trainer.checkpoint_every`` the cell checkpoints to ``<cell file>.ckpt`` and a
    re-run of the study continues an unfinished cell from it, as ``pinnlab solve
    --resume`` would; a checkpoint of another cell config (the grid was edited) or a
    damaged one is replaced and the cell starts over."""
    global _IN_CELL
    _IN_CELL = True
    try:
        return _run_cell(config_path, overrides, output, threads)
    finally:
        _IN_CELL = False


def _run_cell(config_path: str, overrides: Sequence[str], output: str, threads: int) -> dict:
    import torch

    from pinnlab import config as configuration
    from pinnlab.io import CheckpointError, load_checkpoint, result_slice, save_checkpoint, write_solve_result
    from pinnlab.solvers import resolve_device, train
    from pinnlab.solvers.loop import reset_peak_memory

    torch.set_num_threads(max(1, threads))
    config = run_config(configuration.load(config_path, overrides))
    # the cell's /final peak_mem_mb is its own peak, not an earlier cell's in this process
    reset_peak_memory(resolve_device(config.trainer.device))
    problem, kwargs = configuration.build(config)
    checkpoint = Path(output + ".ckpt")
    state = None
    if config.trainer.backend == "deepxde":
        result = configuration.solve_config_with_deepxde(config, problem.equation)
    else:
        on_checkpoint = None
        if kwargs["checkpoint_every"]:
            config_yaml, optimizer = config.identity(), kwargs["optimizer"]
            if checkpoint.exists():
                try:
                    state = load_checkpoint(checkpoint, optimizer, config_yaml, resolve_device(kwargs["device"]),
                                            kwargs["dtype"])
                except CheckpointError as err:
                    print(f"{err}; the cell starts over", file=sys.stderr)

            def on_checkpoint(train_state):
                save_checkpoint(checkpoint, train_state, optimizer, config_yaml)

        # its steps as plain lines every trainer.log_every (a bar per worker would clash), named by the cell
        name = f"cell {Path(output).stem[:8]}"
        print(f"{name}: {' '.join(overrides) or 'the config as it is'} starts at step "
              f"{0 if state is None else state.step} of {kwargs['steps']}", file=sys.stderr, flush=True)
        result = train(problem, **kwargs, state=state, on_checkpoint=on_checkpoint, progress="log",
                       description=name)
    # at the σ the run trained and evaluated with (a σ in its hyperparams overrides the estimator's), as /eval is
    slice_data = result_slice(problem, result, num_samples=config.estimator.eval_samples, seed=config.trainer.seed,
                              sigma=kwargs["hyperparams"].get("sigma"))
    write_solve_result(output, config=config, problem=problem, result=result, slice_data=slice_data)
    checkpoint.unlink(missing_ok=True)
    metrics = cell_metrics(output)
    if state is not None:  # for the study's progress line only (not a field of /cells)
        metrics["continued_from"] = int(state.step)
    return metrics


def cell_metrics(path: str | Path) -> dict:
    import h5py

    with h5py.File(path, "r") as fh:
        final = fh["final"].attrs
        return {
            "rel_l2": float(final["rel_l2"]),
            "best_rel_l2": float(final["best_rel_l2"]),
            "seconds_per_step": 1.0 / float(final["steps_per_second"]) if final["steps_per_second"] else math.nan,
            "peak_mem_mb": float(final.get("peak_mem_mb", math.nan)),
            "status": str(fh.attrs["status"]),
        }


def _metrics_or_none(path: Path) -> dict | None:
    """:func:`cell_metrics` of a cell file, or None when they cannot be read (a file
    whose ``/final`` is missing or damaged ended the study with a KeyError; it is a cell
    to compute again, as one of another config is)."""
    try:
        return cell_metrics(path)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def run_config(config):
    """A cell's own run configuration: its config without the ``study:`` section. This is
    what a cell's result file records and what identifies a finished cell, so a cell does
    not depend on the rest of the study (adding seeds or variants to the grid keeps the
    finished cells); ``pinnlab solve`` with it reproduces the cell."""
    from pinnlab.config import Config

    return Config({k: v for k, v in config.sections.items() if k != "study"},
                  {k: v for k, v in config.raw.items() if k != "study"})


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cell_file_state(path: Path, config) -> tuple[bool, str]:
    """(reusable, why not) for the cell result ``path`` of this cell's resolved run config.

    Reusable when it holds this cell's run config (:func:`run_config`) and input files
    (``data.source``, ``equation.module``: a cell was reused after its observation file
    had changed), compared as :func:`~pinnlab.io.checkpoint.comparable_config` does
    (another checkpoint or log interval, or ``auto`` for the device it resolves to, reuses
    the cell), and was written by this pinnlab version (its numbers would be mixed
    silently with this version's in one table). A cell file written when cells still
    recorded the ``study:`` section is compared without it. "Why not" is empty when there
    is nothing to keep (no file, or one that cannot be read: it is computed again), else
    what differs: such a cell is replaced only with ``overwrite``."""
    import h5py
    import yaml

    import pinnlab
    from pinnlab.io.checkpoint import comparable_config, comparable_text, config_difference

    try:
        with h5py.File(path, "r") as fh:
            stored = _text(fh.attrs["config"])
            version = _text(fh.attrs.get("pinnlab_version"))
            digests = json.loads(_text(fh.attrs.get("input_files", "{}")))
        stored = yaml.safe_load(stored)
    except (OSError, KeyError, ValueError, yaml.YAMLError):
        return False, ""
    if not isinstance(stored, dict) or not isinstance(digests, dict):
        return False, ""
    if version != pinnlab.__version__:
        return False, f"was written by pinnlab {version}, this is {pinnlab.__version__}"
    stored.pop("study", None)
    # (the cell's side of Config.identity: its config, its input files' digests under input_files)
    saved = comparable_config({**stored, "input_files": digests} if digests else stored)
    current = run_config(config).identity()
    if saved == comparable_text(current):
        return True, ""
    return False, ("was computed for a different configuration"
                   + (config_difference(saved, current, "the cell") or " (another config or other input files)"))


def _checkpoint_state(path: Path, config) -> str:
    """Why the cell checkpoint ``path`` (present) cannot be resumed by this cell but holds
    a readable state, or "" (it fits, or it is damaged: the cell starts over, as
    :func:`run_cell` says)."""
    from pinnlab.io import CheckpointError
    from pinnlab.io.checkpoint import check_config, read_checkpoint

    try:
        data = read_checkpoint(path)
    except CheckpointError:
        return ""
    try:
        check_config(path, data, run_config(config).identity())
    except CheckpointError as err:
        return str(err).removeprefix(f"checkpoint {str(path)!r} ")
    return ""


def _refuse_repeated_cells(cells: list[Cell], configs: Mapping) -> None:
    """Two cells of one variant whose grid values validate to the same run config (``0``
    and ``'0'``, ``0.001`` and ``'1e-3'``) raise :class:`~pinnlab.config.ConfigError`:
    the same cell was computed twice and counted as two seeds."""
    from pinnlab.config import ConfigError
    from pinnlab.io.checkpoint import comparable_text

    seen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        key = (cell.variant, comparable_text(run_config(configs[cell.label]).to_yaml()))
        if key in seen:
            first = dict(seen[key].assignment)
            shown = ", ".join(f"{k}: {first[k]!r} and {v!r}" for k, v in cell.assignment if first[k] != v
                              or type(first[k]) is not type(v))
            raise ConfigError(f"study.grid: cells {seen[key].label} and {cell.label} are the same run ({shown} "
                              "are the same value); list each value once")
        seen[key] = cell


_IN_CELL = False
"""Whether this worker is running a cell (a SIGTERM then lets the cell save its last step)."""


def _worker_terminated(signum, frame):
    """SIGTERM in a worker: inside a cell, raise :class:`~pinnlab._interrupts.Terminated`
    so its training saves its last completed step (as ``pinnlab solve`` does); between
    cells, nothing to save: exit at once (an exception there printed a traceback)."""
    if _IN_CELL:
        raise_terminated(signum, frame)
    os._exit(128 + signal.SIGTERM)


def _start_worker(malloc: bool) -> None:
    """A worker ignores Ctrl-C, which the terminal sends to every process of the group:
    each printed its own KeyboardInterrupt traceback under the parent's one line. The
    parent stops the workers (``pool.terminate``, a SIGTERM) when it is interrupted; a
    cell running then saves its last completed step to its checkpoint first (with
    ``trainer.checkpoint_every``; the default action killed it and lost every step since
    the last periodic checkpoint). A spawned worker starts with glibc's defaults: it
    takes the parent's malloc settings (:func:`~pinnlab._malloc.configure_malloc`) when
    the parent has them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)
    if malloc:
        _malloc.configure_malloc()


def _run_cell_job(args):
    config_path, overrides, output, threads = args
    try:
        return output, run_cell(config_path, overrides, output, threads)
    except Terminated:  # the cell has saved what it could; leave without a traceback
        os._exit(128 + signal.SIGTERM)


def run_training_study(
    config_path: str | Path,
    cells: list[Cell],
    cell_dir: str | Path,
    *,
    workers: int = 1,
    base_overrides: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Run every unfinished cell (``workers`` processes); return one record per cell.

    Every cell's config is validated and built first (:func:`validate_runs`): a bad
    variant raises :class:`~pinnlab.config.ConfigError` before any cell runs, a cell path
    that is not a regular file (a directory) ``FileExistsError``. A cell file
    or checkpoint in ``cell_dir`` of another config, other input files or another pinnlab
    version (the study's config was edited after an interrupted run) raises
    :class:`~pinnlab.io.CheckpointError`, also before any cell runs, unless ``overwrite``:
    then such cells are computed again (it replaced them without a word).
    """
    from pinnlab.io import CheckpointError
    from pinnlab.studies.spec import validate_runs

    configs = validate_runs(config_path, {c.label: c.overrides for c in cells}, base_overrides)
    _refuse_repeated_cells(cells, configs)
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    todo, records = [], {}
    for cell in cells:  # before any word about the cells (a directory there failed after the cell had run)
        for where in (cell_dir / f"{cell.key}.h5", cell_dir / f"{cell.key}.h5.ckpt"):
            if where.exists() and not where.is_file():
                raise FileExistsError(f"{str(where)!r} (cell {cell.label}) exists and is not a regular file; "
                                      "remove it")
    for cell in cells:
        path = cell_dir / f"{cell.key}.h5"
        checkpoint = Path(str(path) + ".ckpt")
        reusable, why_not = _cell_file_state(path, configs[cell.label])
        finished, where = reusable and _metrics_or_none(path), path
        if not finished and not why_not and checkpoint.is_file():
            where, why_not = checkpoint, _checkpoint_state(checkpoint, configs[cell.label])
        if why_not and not overwrite:
            raise CheckpointError(f"{str(where)!r} (cell {cell.label}) {why_not}")
        if finished:
            records[cell.key] = finished
            # a kill between writing the cell's result and removing its checkpoint left
            # the checkpoint behind for good
            checkpoint.unlink(missing_ok=True)
            if progress:
                progress(f"skip finished cell {cell.label}")
        else:
            todo.append((str(config_path), list(base_overrides) + list(cell.overrides), str(path)))
    # No more processes than cells: study.workers=1000 on a 4-cell study started 1000
    # interpreters (each importing torch) for 4 jobs. The threads per cell follow the
    # study's cell count, not the cells left, so a resumed cell runs as it started. The
    # cores are those this process may run on (taskset, a batch scheduler's cpuset), as
    # torch's own default counts them, not all of the machine's.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // max(1, min(workers, len(cells))))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.strip().isdigit() and int(limit) >= 1:  # the user's limit on a shared machine (README, Threads)
        threads = min(threads, int(limit))
    workers = max(1, min(workers, len(todo)))
    todo = [job + (threads,) for job in todo]
    if todo:
        import torch

        threads_before = torch.get_num_threads()  # (one worker runs its cells here, each setting it)
        if workers <= 1:
            results = map(_run_cell_job, todo)
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker,
                                                             initargs=(_malloc.configured,))
            results = pool.imap_unordered(_run_cell_job, todo)
        try:
            for output, metrics in results:
                key = Path(output).stem
                continued = metrics.pop("continued_from", None)
                records[key] = metrics
                if progress:
                    cell = next(c for c in cells if c.key == key)
                    status = "" if metrics["status"] == "ok" else f" (status {metrics['status']})"
                    resumed = "" if continued is None else f" (continued from its checkpoint at step {continued})"
                    progress(f"finished cell {cell.label}{resumed}: rel_l2={metrics['rel_l2']:.3e}{status}")
        finally:
            if workers > 1:
                pool.terminate()
                pool.join()
            torch.set_num_threads(threads_before)  # pinnlab leaves the caller's settings as they were
    out = []
    for cell in cells:
        out.append({"variant": cell.variant, **{k: v for k, v in cell.assignment},
                     "key": cell.key, "overrides": list(cell.overrides), **records[cell.key]})
    return out


def summarise(records: list[dict], columns: str | None) -> list[dict]:
    """mean ± std per (variant, column value) over the other grid keys, of the cells whose
    status is ``ok``: ``runs`` counts those, ``left_out`` the others (e.g. a training
    stopped by a non-finite loss), which are not averaged in. NaN where none is ok.
    Groups are keyed on the column value's JSON text, so a list value (``loss.blend``)
    groups like a number."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        column = r.get(columns) if columns else None
        groups.setdefault((r["variant"], json.dumps(column)), []).append(r)
    rows = []
    for (variant, _), items in groups.items():
        column = items[0].get(columns) if columns else None
        ok = [i for i in items if i.get("status", "ok") == "ok"]
        row = {"variant": variant, "column": column, "runs": len(ok), "left_out": len(items) - len(ok)}
        for metric in ("rel_l2", "best_rel_l2", "seconds_per_step", "peak_mem_mb"):
            values = np.array([i[metric] for i in ok], dtype=float)
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            # (the sample std; undefined, NaN, for one run: 0 read as "no spread")
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return rows


def _cell_text(text: str) -> str:
    """``text`` as a Markdown table cell: ``|`` escaped (a variant named ``a|b`` split its
    row into one column more than the header), line breaks as spaces."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(summary: list[dict], columns: str | None, metric: str = "rel_l2") -> str:
    variants = list(dict.fromkeys(r["variant"] for r in summary))
    values = list({json.dumps(r["column"]): r["column"] for r in summary}.values())  # lists too
    header = [_cell_text(f"{columns}={v}") if columns else "all" for v in values]
    lines = ["| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(values)]
    for variant in variants:
        cells = []
        for v in values:
            row = next((r for r in summary if r["variant"] == variant and r["column"] == v), None)
            if row is None:
                cells.append("—")
                continue
            runs, left_out = row.get("runs"), row.get("left_out", 0)
            text = ("no ok run" if runs == 0 else f"{row[f'{metric}_mean']:.3e} (1 run)" if runs == 1
                    else f"{row[f'{metric}_mean']:.3e} ± {row[f'{metric}_std']:.1e}")
            if left_out:
                text += f" ({left_out} of {runs + left_out} not ok, left out)"
            cells.append(text)
        lines.append(f"| {_cell_text(variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(summary: list[dict]) -> str:
    """The summary as CSV, quoted where a field needs it (a variant named "biased, K=4")."""
    keys = list(summary[0]) if summary else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows([row[k] for k in keys] for row in summary)
    return out.getvalue()
