"""``pinnlab solve | plot | list | tune | study``: config → objects → library calls.

Bad input (missing or malformed config, unknown keys, bad values, unwritable or
existing outputs, missing or corrupted checkpoints) ends with one line on stderr and
exit code 2, before any work starts and without touching existing files.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from pinnlab._checks import overlong_path
from pinnlab._interrupts import STOPS, Terminated, raise_terminated

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2."""


class RunFailed(Exception):
    """A run that cannot go on (a file it must write cannot be written: a full disk, a
    directory made read-only): reported as one line, exit code 1."""


def unwritable(path: Path, err: OSError) -> str:
    """``path`` could not be written, and why (the OS's words: "No space left on device")."""
    return f"cannot write {str(path)!r} ({err.strerror or err})"


def resume_hint(output: Path) -> str:
    """The flags that continue an interrupted run writing ``output``: ``--resume``, and
    with ``--overwrite`` when an earlier result is there (--resume alone is refused then)."""
    return "--resume --overwrite" if Path(output).exists() else "--resume"


START_OVER = "pass --overwrite to start over"
"""How a run not given --resume starts over from a checkpoint it cannot use."""


def refused_checkpoint(err: Exception, prefix: str = "", *, hint: str = START_OVER) -> UsageError:
    """A checkpoint a run cannot use, as the one line a command prints: the library's
    reason (which gives no advice: it knows no command-line flags) and how to start over
    instead (``hint``; for a run given --resume, :func:`start_over_hint`)."""
    return UsageError(f"{prefix}{err}; {hint}")


def start_over_hint(overwrite: bool, *files: Path) -> str:
    """How a run given --resume that cannot resume starts over instead: without --resume,
    and with --overwrite where it is not given yet and one of the run's ``files`` (its
    output, its checkpoints) exists, which a fresh run refuses to replace without it.
    ("pass --overwrite instead of --resume" was the advice also where nothing was there
    to overwrite, and to a run given both.)"""
    if not overwrite and any(path.exists() for path in files):
        return "to start over, pass --overwrite instead of --resume"
    return "to start over, leave out --resume"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits with 2 already; keep it to one line
        raise UsageError(message)


CHECKPOINT_SUFFIX = ".ckpt"


def run_inputs(config_path: str | Path, config) -> list[tuple[Path, str]]:
    """The files a run reads, named for messages: CONFIG, a file ``data.source``, a ``.py``
    ``equation.module``, a result file ``study.init``. No output may be one of them
    (``solve cfg.yaml -o cfg.yaml --overwrite`` replaced the config; ``study.init=net.h5
    -o net.h5`` the trained network)."""
    reads = [(Path(config_path), "the config")]
    return reads + [(Path(path), key) for key, path in config.input_files().items()]


def resolved_output(path: Path, where: str) -> Path:
    """``path.resolve()``, or one line for an output that is a loop of symbolic links
    (Path.resolve raised RuntimeError, a traceback)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as err:
        raise UsageError(f"output {where} cannot be resolved: a loop of symbolic links ({err})") from None


def _output_checks(output: Path, *, overwrite: bool, what: str = "", checkpoint: bool = True,
                   extra_checkpoints: Sequence[str] = (), name_suffixes: Sequence[str] = (),
                   reads: Sequence[tuple[Path, str]] = (), resume: bool = False) -> None:
    """Refuse an output that exists and is not a regular file (a directory, a FIFO, a
    device: the atomic write would rename over it), exists without ``overwrite``, cannot
    be written, or whose name (with the ``.ckpt`` suffix when ``checkpoint``, or the longest
    of ``extra_checkpoints``, the suffixes of the run's other checkpoints, or of
    ``name_suffixes``, those of other files or directories named after it) is too long;
    with ``checkpoint`` also a checkpoint path that exists and is not a regular file (its
    first write would fail after the work); an output (or its checkpoint) that is one of
    the files the run ``reads`` (:func:`run_inputs`). ``what`` names the output in the
    message (e.g. ``--json``); ``resume``: the run was given --resume, and an output
    without a checkpoint beside it is a finished run, which the refusal says."""
    from pinnlab.io import check_writable_directory

    where = f"{str(output)!r}" + (f" ({what})" if what else "")
    if str(output) == "-":  # (a file named '-' was written where the user meant stdout)
        raise UsageError(f"output {where}: pinnlab writes HDF5 files, not to stdout; name a file")
    resolved_output(output, where)
    try:
        limit = os.pathconf(output.absolute().parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    suffixes = [CHECKPOINT_SUFFIX, *extra_checkpoints] if checkpoint else []
    suffix = max([*suffixes, *name_suffixes], key=len, default="")
    size = len(output.name.encode()) + len(suffix)
    if size > limit:  # else the checkpoint (RUN.h5.ckpt) cannot be written, after the work is done
        raise UsageError(f"output name {output.name[:40]!r}... is too long: {size} bytes"
                         + (f" with the {suffix} suffix" if suffix else "")
                         + f", the file system allows {limit}")
    for path, name in [(output, f"output {where}")] + [
            (Path(str(output) + end), f"checkpoint {str(output) + end!r}") for end in suffixes]:
        if path.exists() and not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise UsageError(f"{name} is {kind}")
        for source, label in reads:
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise UsageError(f"{name} is {label}, which this run reads; choose another name")
    if output.exists() and not overwrite:
        if resume and suffixes and not any(Path(str(output) + end).exists() for end in suffixes):
            raise UsageError(f"output {where} holds a finished run: there is no checkpoint to resume; "
                             "pass --overwrite instead of --resume to run it again")
        raise UsageError(f"output {where} exists; pass --overwrite to replace it")
    try:
        check_writable_directory(output)
    except (OSError, PermissionError) as err:
        raise UsageError(f"cannot write output {where}: {err}") from None


@contextlib.contextmanager
def replacing(output: Path):
    """Around the write of a result onto ``output``: once it is written, the tables and the
    cells of the training study ``output`` held before (its .md/.csv,
    :func:`~pinnlab.studies.command.table_paths`, and ``STUDY.h5.cells/``,
    :func:`~pinnlab.studies.command.cell_directory`) are removed, as they describe a study
    the file no longer holds (a solve, a tuning or an estimator study written over one
    with --overwrite left them beside it). What the file held is read before the write;
    a run that fails before it is written keeps them."""
    from pinnlab.studies.command import _kind_of, cell_directory, table_paths

    study = _kind_of(output) == "training_study"
    stale = table_paths(output) if study else ()
    yield
    for table in stale:
        table.unlink(missing_ok=True)
    cells = cell_directory(output)
    if study and cells.is_dir() and not cells.is_symlink():
        try:
            shutil.rmtree(cells)
        except OSError as err:  # (the result is written: the run does not fail for it)
            print(f"warning: the overwritten study's cells {str(cells)!r} are not all removed ({err})",
                  file=sys.stderr)


def cmd_solve(args) -> int:
    from pinnlab import config as configuration
    from pinnlab.io import (
        CheckpointError,
        load_checkpoint,
        result_slice,
        save_checkpoint,
        write_solve_result,
    )
    from pinnlab.solvers import resolve_device, train

    try:
        config = configuration.load(args.config, args.overrides)
    except configuration.ConfigError as err:
        raise UsageError(f"config error: {err}") from None
    if "data" in config.sections and not config.data.train and "tune" not in config.sections:
        # (a tuning config solved as it is, the untuned baseline, keeps its data: for tune)
        raise UsageError("config error: data: the observations have no effect on a solve without "
                         "data.train: true (they feed tuning objectives); set it or remove data:")
    # validation checks a tuning config's switch against its final solve (tune.final_steps);
    # solved as it is, the run has trainer.steps
    late = configuration.hybrid_never_switches(config.loss, config.trainer.steps, "trainer.steps")
    if late:
        raise UsageError(f"config error: {late}")
    output = Path(args.output)
    checkpoint = Path(str(output) + CHECKPOINT_SUFFIX)
    _output_checks(output, overwrite=args.overwrite, reads=run_inputs(args.config, config), resume=args.resume)
    if "study" in config.sections:  # (solved, it trains the base config: a network for an estimator study's init)
        print(f"warning: study: is ignored by solve, which trains the config's base run; `pinnlab study "
              f"{args.config}` runs the study", file=sys.stderr)
        # the result records what it ran: not the study, which an estimator study on a fresh or
        # file init also cuts trainer and loss down to (Config.resolved)
        config = configuration.Config({k: v for k, v in config.sections.items() if k != "study"},
                                      {k: v for k, v in config.raw.items() if k != "study"})
    try:
        problem, kwargs = configuration.build(config)
        device = resolve_device(kwargs["device"])
    except (configuration.ConfigError, ValueError) as err:
        raise UsageError(f"config error: {err}") from None
    config_yaml = config.identity()  # what the checkpoint records (the config and its input files)
    state = None
    if args.resume and config.trainer.backend == "deepxde":  # (then "no checkpoint ...; pass --overwrite")
        raise UsageError("--resume: a DeepXDE run (trainer.backend: deepxde) keeps no checkpoint to resume "
                         f"from; {start_over_hint(args.overwrite, output, checkpoint)}")
    if args.resume:
        try:
            state = load_checkpoint(checkpoint, kwargs["optimizer"], config_yaml, device, kwargs["dtype"])
        except CheckpointError as err:
            raise refused_checkpoint(err, hint=start_over_hint(args.overwrite, output, checkpoint)) from None
    elif checkpoint.exists() and not args.overwrite:
        raise UsageError(
            f"a checkpoint {str(checkpoint)!r} exists from an interrupted run; pass --resume "
            "to continue it or --overwrite to start over"
        )
    args.training_started = True  # (a stop from here on: the run says what it kept, main's _kept)
    if config.trainer.backend == "deepxde":
        return _solve_deepxde(config, problem, output, checkpoint, progress=args.progress)
    on_checkpoint = None
    saved = []  # the steps checkpointed

    def kept() -> str:
        return (f"; step {saved[-1]} saved in {str(checkpoint)!r}; {resume_hint(output)} continues from it"
                if saved else "")

    def say_stopped() -> None:  # what a stopped solve keeps (it said nothing of the steps it lost)
        if saved:
            print(f"pinnlab: step {saved[-1]} saved in {str(checkpoint)!r}; {resume_hint(output)} continues "
                  "from it", file=sys.stderr)
        elif not kwargs["checkpoint_every"]:
            since = (f"since step {state.step}, which {str(checkpoint)!r} holds and {resume_hint(output)} "
                     "continues from," if state is not None else "since the start")
            print(f"pinnlab: trainer.checkpoint_every = 0, so the steps {since} are lost; with "
                  "trainer.checkpoint_every=N a run saves every N steps and when stopped, for --resume",
                  file=sys.stderr)

    if kwargs["checkpoint_every"]:
        optimizer = kwargs["optimizer"]

        def on_checkpoint(train_state):
            try:
                save_checkpoint(checkpoint, train_state, optimizer, config_yaml)
            except OSError as err:  # (the one before stays whole: the write is atomic)
                raise RunFailed(unwritable(checkpoint, err) + kept()) from None
            saved.append(train_state.step)

    try:
        result = train(problem, **kwargs, state=state, on_checkpoint=on_checkpoint,
                       progress=args.progress)
    except CheckpointError as err:  # the resumed state does not fit this run, found before any step
        raise refused_checkpoint(err, f"checkpoint {str(checkpoint)!r}: ",
                                 hint=start_over_hint(args.overwrite, output, checkpoint)) from None
    except STOPS:
        say_stopped()
        raise

    def keep_last_step():  # every step is done: a --resume then only writes the result
        if on_checkpoint is not None and (not saved or saved[-1] < result.state.step):
            on_checkpoint(result.state)

    try:
        # at the σ the run trained and evaluated with (a σ in its hyperparams overrides the estimator's), as /eval is
        slice_data = result_slice(problem, result, num_samples=config.estimator.eval_samples,
                                  seed=config.trainer.seed, sigma=kwargs["hyperparams"].get("sigma"))
        with replacing(output):
            write_solve_result(output, config=config, problem=problem, result=result, slice_data=slice_data)
    except STOPS:  # (the slice and the result file take minutes at a large d)
        keep_last_step()
        say_stopped()
        raise
    except OSError as err:
        keep_last_step()
        raise RunFailed(unwritable(output, err) + kept()) from None
    if checkpoint.exists():
        checkpoint.unlink()
    if result.status != "ok":
        print(result.message, file=sys.stderr)
    _report(result)
    return EXIT_OK if result.status == "ok" else EXIT_FAILED


def _report(result) -> None:
    print(
        f"rel_l2={result.final.rel_l2:.6e} rel_l1={result.final.rel_l1:.6e} "
        f"steps_per_second={result.stats['steps_per_second']:.4g}"
    )


def _solve_deepxde(config, problem, output: Path, checkpoint: Path, *, progress: str) -> int:
    """``trainer.backend: deepxde``: same result file, DeepXDE's training (no checkpoints;
    an earlier run's at ``checkpoint``, overwritten with --overwrite, goes with the result
    it was for, as after a pinnlab run)."""
    from pinnlab.config import solve_config_with_deepxde
    from pinnlab.io import result_slice, write_solve_result

    try:
        result = solve_config_with_deepxde(config, problem.equation, progress=progress)
    except ImportError as err:
        raise UsageError(str(err)) from None
    except STOPS:
        print("pinnlab: a DeepXDE run keeps no checkpoint; run it again to start over", file=sys.stderr)
        raise
    slice_data = result_slice(problem, result)
    try:
        with replacing(output):
            write_solve_result(output, config=config, problem=problem, result=result, slice_data=slice_data)
    except OSError as err:  # (a full disk) one line, as a pinnlab-backend solve's (it was a traceback)
        raise RunFailed(unwritable(output, err) + "; a DeepXDE run keeps no checkpoint: run it again") from None
    checkpoint.unlink(missing_ok=True)
    if result.status != "ok":
        print(result.message, file=sys.stderr)
    _report(result)
    return EXIT_OK if result.status == "ok" else EXIT_FAILED


def default_plot_directory(path: Path) -> Path:
    """Where ``pinnlab plot FILE`` draws without -o: FILE_plots, the whole name of FILE with
    ``_plots`` appended (run.h5_plots), whatever it ends with. Two results never share it:
    FILE without .h5 (run/ of run.h5) was also the FILE_plots of a name not ending with
    .h5 (run_plots/ of run_plots.h5 and of run), the second plot replacing the first's
    figures, and it could be a directory of the user's own (data/ of data.h5) where a plot
    removes figures of an earlier plot by their names."""
    return path.with_name(path.name + "_plots")


def cmd_plot(args) -> int:
    from pinnlab.plots import FIGURES, FigureNotWritten, NotAResult, plot_file

    path = Path(args.file)
    if not path.is_file():
        what = "does not exist" if not path.exists() else (
            "is a directory" if path.is_dir() else "is not a regular file")
        raise UsageError(f"result file {str(path)!r} {what}")
    outdir = Path(args.output) if args.output else default_plot_directory(path)
    if outdir == path:  # (mkdir said "File exists")
        raise UsageError(f"-o {str(outdir)!r}: is the result file being plotted; choose a directory")
    if outdir.exists() and not outdir.is_dir():  # (mkdir said "File exists", as if the directory were there)
        raise UsageError(f"-o {str(outdir)!r}: is a file, not a directory; choose a directory" if args.output
                         else f"the default plot directory of {str(path)!r}, {str(outdir)!r}, is a file, not a "
                              "directory; choose one with -o DIR")
    # the outermost directory this command creates: removed again if the plot fails (only
    # the last one was, and -o new/figs left an empty new/ behind)
    created = next((d for d in reversed((outdir, *outdir.parents)) if not d.exists()), None)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create plot directory {str(outdir)!r}: {err}") from None
    # drawn into a staging directory and moved into place only when every figure is drawn:
    # a file that fails half-way (a config attribute that is not YAML, a slice of the wrong
    # shape) leaves the directory as it was, not with some figures replaced
    try:
        staging = Path(tempfile.mkdtemp(prefix=".pinnlab-plot-", dir=outdir))
    except OSError as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(err, PermissionError) or err.errno == errno.EROFS:  # a directory the user cannot write
            raise UsageError(f"cannot write into plot directory {str(outdir)!r}: {err}") from None
        # the disk (full, failing), not the input: exit 1 in one line, as a figure not written
        # (a full disk was exit 2, "cannot write into plot directory")
        raise RunFailed(unwritable(outdir, err)) from None
    try:
        try:
            drawn = plot_file(path, staging)
        except Exception as err:  # whatever the file holds that cannot be drawn is bad input
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            if isinstance(err, MemoryError):  # the machine, not the file
                raise
            if isinstance(err, FigureNotWritten):  # the disk (full, read-only), not the file: exit 1
                raise RunFailed(unwritable(outdir / err.path.relative_to(staging), err.error)) from None
            if isinstance(err, NotAResult):
                raise UsageError(f"cannot plot: {err}") from None
            detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            # (the library's own words alone, "x and y must have same first dimension", did not say why)
            raise UsageError(f"cannot plot {str(path)!r}: the file is damaged or was written by another pinnlab "
                             f"version ({type(err).__name__}" + (f": {detail})" if detail else ")")) from None
        targets = [outdir / item.relative_to(staging) for item in drawn]
        for target in targets:  # checked before any is moved: not half the figures replaced
            if target.exists() and not target.is_file():
                raise UsageError(f"cannot plot into {str(target)!r}: it exists and is not a regular file")
            if target.exists() and os.path.samefile(target, path):  # (the figure replaced the result)
                raise UsageError(f"cannot plot into {str(target)!r}: it is the result file being plotted; "
                                 "choose another directory with -o DIR")
        try:
            _move_figures(drawn, targets, staging)
        except RunFailed:
            if created is not None:  # (it held no figure before)
                shutil.rmtree(created, ignore_errors=True)
            raise
        # figures of another result drawn here before (tune.png and terms.png of a tuning
        # the file held before a solve was written over it) would pass for this one's
        for stale in sorted(FIGURES - {target.name for target in targets}):
            try:
                if (outdir / stale).is_file() and not os.path.samefile(outdir / stale, path):  # (not the result)
                    (outdir / stale).unlink()
            except OSError as err:
                raise RunFailed(f"cannot remove {str(outdir / stale)!r}, a figure of an earlier plot "
                                f"({err.strerror or err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for item in targets:
        print(item)
    return EXIT_OK


def _move_figures(drawn: list[Path], targets: list[Path], staging: Path) -> None:
    """Move the figures ``drawn`` in ``staging`` onto their ``targets``, each atomically. A
    move that fails (a full disk, an I/O error) was a traceback, with some figures of the
    directory replaced and some not: the figures moved before it are taken back (an earlier
    figure they replaced is put back from a hard link kept in ``staging``) and the failure
    is one line, exit 1."""
    moved: list[tuple[Path, Path | None, bool]] = []  # (target, its earlier figure kept, it existed)
    for index, (item, target) in enumerate(zip(drawn, targets)):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            existed, kept = target.exists(), None
            if existed:
                kept = staging / f".previous-{index}"
                try:
                    os.link(target, kept)
                except OSError:  # (a file system without hard links: this one cannot be put back)
                    kept = None
            os.replace(item, target)
        except OSError as err:
            for done, previous, had in reversed(moved):
                with contextlib.suppress(OSError):
                    if previous is not None:
                        os.replace(previous, done)
                    elif not had:
                        done.unlink()
            raise RunFailed(unwritable(target, err)) from None
        moved.append((target, kept, existed))


def cmd_list(args) -> int:
    from typing import get_args

    from pinnlab.bilevel import METHODS
    from pinnlab.config import equation_parameters
    from pinnlab.equations import EQUATIONS
    from pinnlab.studies.spec import StudySection
    from pinnlab.tuning.spec import COLLOCATION, SEARCH_METHODS, ObjectiveSpec

    objectives = get_args(ObjectiveSpec.model_fields["kind"].annotation)  # (training_loss is refused, not a choice)
    study_kinds = get_args(StudySection.model_fields["kind"].annotation)

    print("equations (name: inputs (x, or x,t when time-dependent); published dims; parameters)")
    for name in sorted(EQUATIONS):
        cls = EQUATIONS[name]
        params = ", ".join(equation_parameters(cls))
        dims = ", ".join(str(d) for d in cls.published_dims) or "any"
        kind = "x,t" if cls.time_dependent else "x"
        coefficients = _coefficient_sizes(cls)
        print(f"  {name:26s} inputs ({kind}); published d: {dims}; parameters: {params}"
              + (f"; coefficients: {coefficients}" if coefficients else ""))
    print("estimators: stein (antithetic + control variate; noise shared|independent), "
          "autograd (exact), hutchinson (Rademacher probes)")
    print("losses: biased, unbiased (= unbiased2), unbiased1, unbiased2, hybrid "
          "(switch_step | switch: auto | blend)")
    print(f"tune methods: hypergradients {', '.join(METHODS)}; baselines {', '.join(SEARCH_METHODS)}")
    print(f"tunables: weights.<term>, sigma, mix, lr, coefficients.<name>, {COLLOCATION}")
    print(f"tune objectives: {', '.join(objectives)}")
    print(f"studies: {', '.join(study_kinds)}")
    return EXIT_OK


def _coefficient_sizes(cls) -> str:
    """An equation's PDE coefficients (the ``coefficients.<name>`` an inverse problem tunes),
    each with its length in terms of d, read off two instances (d = 5 and 6)."""
    small, large = cls(5, seed=0).coefficients, cls(6, seed=0).coefficients
    sizes = []
    for key, value in small.items():
        if value.dim() == 1 and large[key].numel() == value.numel() + 1:
            offset = value.numel() - 5
            sizes.append(f"{key} (d{offset:+d})" if offset else f"{key} (d)")
        else:
            sizes.append(f"{key} {tuple(value.shape)}")
    return ", ".join(sizes)


COMMANDS: dict[str, tuple[Callable, Callable]] = {}


def path_argument(text: str) -> str:
    """An argparse type for a path: not empty (``''`` became ``'.'``, "is a directory", or
    as ``plot -o`` was ignored), and one the file system can name (:func:`overlong_path`)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    if problem := overlong_path(text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}...: {problem}")
    return text


def file_argument(text: str) -> str:
    """An argparse type for an output file: a path that does not end with a separator
    (``-o newdir/`` wrote a file named newdir)."""
    path_argument(text)
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} names a directory (it ends with a separator); the output is a "
                                         "file: give its name")
    return text


class Once(argparse.Action):
    """Store an option's value, refusing the option a second time (argparse kept the last:
    ``-o a.h5 -o b.h5`` wrote b.h5 only)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_once", set())
        if self.dest in given:
            parser.error(f"argument {'/'.join(self.option_strings)}: given twice; give it once")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


def add_command(sub, name: str, summary: str, example: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` opens with its summary and ends with an example."""
    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                          epilog=f"example: {example}" if example else None)


def add_config_arguments(p, examples: str = "configs/ has one per equation") -> None:
    """CONFIG and its dotted overrides (optional: a default, else argparse named them among
    the missing arguments, "required: config, overrides"); ``examples`` says where the
    shipped configs of the command are."""
    p.add_argument("config", type=path_argument, help=f"YAML config ({examples})")
    p.add_argument("overrides", nargs="*", default=[],
                   help="dotted key=value settings over the config's, YAML-typed, anywhere after CONFIG "
                        "(e.g. equation.dim=1000 trainer.steps=500)")


def add_run_arguments(p, output: str, checkpoints: str) -> None:
    """The output, resume and progress options of a run (solve, tune)."""
    p.add_argument("-o", "--output", required=True, type=file_argument, action=Once, help=f"result file {output}")
    p.add_argument("--resume", action="store_true", help=f"continue from {output}.ckpt ({checkpoints})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.add_argument("--progress", choices=("auto", "bar", "log", "off"), default="auto", action=Once,
                   help="a progress bar on a terminal and log lines otherwise (auto, the default), "
                        "always one of them, or nothing")


def _add_solve(sub):
    p = add_command(sub, "solve", "train a PINN from a YAML config",
                    "pinnlab solve configs/quickstart.yaml equation.dim=20 -o run.h5")
    add_config_arguments(p)
    add_run_arguments(p, "RUN.h5", "saved every trainer.checkpoint_every steps and, when that is set, "
                                   "on Ctrl-C or SIGTERM")
    return p


def _add_plot(sub):
    p = add_command(sub, "plot", "draw PNGs from a result file", "pinnlab plot run.h5 -o run_plots")
    p.add_argument("file", type=path_argument, help="a result file of pinnlab solve, tune or study")
    p.add_argument("-o", "--output", type=path_argument, action=Once,
                   help="directory for the PNGs (default: FILE_plots, FILE's whole name with _plots appended)")
    return p


def _add_list(sub):
    return add_command(sub, "list", "list equations, estimators, losses, tuning methods and study kinds",
                       "pinnlab list")


COMMANDS.update({
    "solve": (_add_solve, cmd_solve),
    "plot": (_add_plot, cmd_plot),
    "list": (_add_list, cmd_list),
})


def _register_optional_commands() -> None:
    """Subcommands that live with their feature (tuning, studies)."""
    for module_name in ("pinnlab.tuning.command", "pinnlab.studies.command"):
        try:
            module = __import__(module_name, fromlist=["add_parser", "run"])
        except ModuleNotFoundError as err:
            if err.name is None or not module_name.startswith(err.name):
                raise
            continue
        COMMANDS[module.NAME] = (module.add_parser, module.run)


def make_parser() -> argparse.ArgumentParser:
    _register_optional_commands()
    parser = _Parser(prog="pinnlab", description="RS-PINN solver and bilevel tuner",
                     epilog="pinnlab COMMAND --help describes each command")
    from pinnlab import __version__

    parser.add_argument("--version", action="version", version=f"pinnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may stand anywhere after CONFIG.

    argparse gives the ``overrides`` positional only the run of tokens right after CONFIG
    (its intermixed parsing does not support subparsers), so the non-option tokens it leaves
    over are appended to the overrides in command-line order (a later override of a key wins,
    as before); a leftover option, or any leftover of a subcommand without overrides, is
    refused as argparse refuses it. A ``--`` ends the options as usual (argparse leaves it
    among the leftovers when CONFIG came before it). An override standing where CONFIG
    belongs (``pinnlab solve a=1 c.yaml``) is refused with a line saying so, instead of
    being read as the path of a config that does not exist."""
    parser = make_parser()
    try:
        args, extras = parser.parse_known_args(argv)
    except UsageError as err:  # `pinnlab -V`: "a command is required" did not name the -V typed
        given = [token for token in (sys.argv[1:] if argv is None else argv) if token.startswith("-")]
        if "required: command" not in str(err) or not given:
            raise
        raise UsageError(f"unrecognized arguments: {' '.join(given)} (pinnlab --help lists the commands and "
                         "options)") from None
    takes_overrides = hasattr(args, "overrides")
    if takes_overrides and "--" in extras:
        cut = extras.index("--")
        extras = [*extras[:cut], *extras[cut + 1:]]
        options = [token for token in extras[:cut] if token.startswith("-")]
    else:
        options = [token for token in extras if token.startswith("-")]
    unknown = options if takes_overrides else extras
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    config = getattr(args, "config", None)
    if takes_overrides and config is not None and "=" in config and not Path(config).exists():
        parser.error(f"CONFIG must come first: {config!r} looks like an override "
                     f"(pinnlab {args.command} CONFIG [key=value ...])")
    if extras:
        args.overrides = [*args.overrides, *extras]
    return args


SIZE_SETTINGS = ("equation.dim", "model.width", "model.depth", "estimator.samples", "estimator.eval_samples",
                 "trainer.batch_size", "trainer.test_points", "loss.boundary_points", "data.points")
COMMAND_SIZE_SETTINGS: dict[str, tuple[str, ...]] = {
    "solve": SIZE_SETTINGS,
    "tune": (*SIZE_SETTINGS, "tune.objective.points", "tune.objective.samples"),
    "study": (*SIZE_SETTINGS, "study.dims", "study.samples", "study.points", "study.reference_samples"),
}
"""The settings that size what ``pinnlab solve | tune | study`` allocate, named when a run
does not fit this machine."""


def _size_problem(err: BaseException) -> str | None:
    """What ``err`` says if it is a size this machine cannot hold (memory exhausted, or a
    size beyond torch's 64-bit sizes: Python's MemoryError/OverflowError, torch's
    OutOfMemoryError, its allocator's and size unpacking's RuntimeError/TypeError), else
    None."""
    text = (str(err).strip().splitlines() or [""])[0]
    torch = sys.modules.get("torch")
    if isinstance(err, MemoryError) or (torch is not None and isinstance(err, torch.OutOfMemoryError)):
        return "out of memory" + (f" ({text[:120]})" if text else "")
    if isinstance(err, RuntimeError) and "can't allocate memory" in text:
        tried = re.search(r"tried to allocate (\d+) bytes", text)
        return f"cannot allocate {tried[1]} bytes" if tried else "cannot allocate memory"
    if isinstance(err, OverflowError) or (isinstance(err, (RuntimeError, TypeError))
                                          and "Overflow when unpacking" in text):
        return "a size overflows a 64-bit integer"
    return None


def _output_lock(args):
    """The lock a solve, tune or study holds on its ``-o`` while it runs
    (:func:`pinnlab.io.atomic.output_lock`); under torchrun only rank 0 writes, so only it
    locks (a ``RANK`` left in the shell without torchrun's WORLD_SIZE is one process, which
    writes: it locks)."""
    from pinnlab.bilevel.distributed import environment_rank
    from pinnlab.io.atomic import output_lock

    output = getattr(args, "output", None)
    if args.command not in COMMAND_SIZE_SETTINGS or output is None or environment_rank() != 0:
        return contextlib.nullcontext()
    return output_lock(output)


def _run(args) -> int:
    """Run the subcommand; a solve, tune or study whose sizes this machine cannot hold
    ends as bad input (one line naming the size settings, exit code 2) instead of a
    traceback. The commands replace an existing result or checkpoint only by writing a
    new one, so a run stopped this way leaves both as they were."""
    from pinnlab.bilevel.distributed import environment_world_size
    from pinnlab.io.atomic import OutputBusy

    try:
        world = environment_world_size()
    except ValueError as err:
        raise UsageError(str(err)) from None
    if world > 1 and args.command not in ("tune", "list"):  # each would do the same work, to the same output
        raise UsageError(f"pinnlab {args.command} runs as one process, not under torchrun ({world} processes would "
                         "each do the same work and write the same output); only pinnlab tune spreads its "
                         "directions over processes")
    if args.command in COMMAND_SIZE_SETTINGS:  # the commands that train: reuse freed memory across steps
        from pinnlab._malloc import configure_malloc

        configure_malloc()
    try:
        with _output_lock(args):
            return COMMANDS[args.command][1](args)
    except OutputBusy as err:
        raise UsageError(str(err)) from None
    except Exception as err:  # (UsageError too: raised by no user code, it goes on as it is)
        sizes = isinstance(err, (OverflowError, MemoryError, RuntimeError, TypeError))
        problem = _size_problem(err) if sizes and args.command in COMMAND_SIZE_SETTINGS else None
        if problem is not None:
            raise UsageError(f"{problem}: the sizes are too large for this machine; lower "
                             f"{', '.join(COMMAND_SIZE_SETTINGS[args.command])} or the equation's own sample "
                             "counts") from None
        where = _user_equation_frame(err)
        if where is None:
            raise
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"the equation module raised {type(err).__name__}" + (f": {detail}" if detail else "")
                         + f" ({where})") from None


def _user_equation_frame(err: BaseException) -> str | None:
    """Where in a user's equation module (``equation.module``: a registered class from
    outside pinnlab) ``err`` was raised, ``FILE line N, in NAME``, or None. Its code runs
    in every step: what it raises at sizes the four-point check before the run does not
    meet (config.check_user_equation) is the user's input, one line, not a traceback."""
    import traceback

    from pinnlab.equations import EQUATIONS

    files = {os.path.realpath(path) for cls in EQUATIONS.values() if not cls.__module__.startswith("pinnlab.")
             if (path := getattr(sys.modules.get(cls.__module__), "__file__", None))}
    frames = [frame for frame in traceback.extract_tb(err.__traceback__) if os.path.realpath(frame.filename) in files]
    return f"{frames[-1].filename} line {frames[-1].lineno}, in {frames[-1].name}" if frames else None


def _one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n`` → ``\\\\n``): a newline or
    carriage return in a config key, an override or a file name, quoted into a message,
    split the one line into several or overwrote it on the terminal."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _rank() -> str:
    """`` (rank R of W)`` under torchrun, which starts W processes that each meet the same
    bad input, Ctrl-C or SIGTERM: the user then sees which process said each of the W lines."""
    world, rank = (os.environ.get(name, "").strip() for name in ("WORLD_SIZE", "RANK"))
    if not (world.isdecimal() and world.isascii() and int(world) > 1):
        return ""  # not torchrun's (a stray or bad WORLD_SIZE is the error line's own subject)
    return f" (rank {rank if rank.isdecimal() and rank.isascii() else '?'} of {int(world)})"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line as a function (public: notebooks and scripts call it):
    ``main(["solve", "cfg.yaml", "-o", "run.h5"])`` runs ``pinnlab solve cfg.yaml -o
    run.h5`` and returns its exit code (bad input: the one line on stderr and
    :data:`EXIT_USAGE`), ``argv=None`` reads ``sys.argv``."""
    previous = _terminate_as_exception()
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line  # a library warning as the commands' own lines, not Python's two
    args = None
    try:
        args = parse_args(argv)
        code = _run(args)
        sys.stdout.flush()  # (here, where a closed pipe is caught, not at the interpreter's exit)
        return code
    except BrokenPipeError:
        if not _stdout_is_a_pipe():
            raise
        # stdout's reader is gone (pinnlab list | head -2): end quietly, as a command a
        # shell's SIGPIPE stops, and send what is still buffered nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except UsageError as err:
        print(f"pinnlab: error{_rank()}: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as err:
        print(f"pinnlab: error{_rank()}: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as stop:  # (a command may add what is kept: the stop's message)
        print(f"pinnlab: interrupted{_rank()}{_kept(stop, args, argv)}", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"pinnlab: terminated{_rank()}{_kept(stop, args, argv)}", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        warnings.formatwarning = formatwarning
        if previous is not False:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


TRAINING_COMMANDS = {"solve": "training", "tune": "training", "study": "the study"}
"""The commands that mark, on ``args.training_started``, the moment they start their work
(training; a study's runs), with its name in the stop line: before it a stop has written
nothing (the output lock and any temporary file are removed as the stop unwinds), after it
the command says what it kept."""


def _kept(stop: BaseException, args, argv: Sequence[str] | None) -> str:
    """What main's "interrupted" or "terminated" line adds: the stop's message, where the
    command gave one (what it kept); for a solve, tune or study stopped before it started
    its work (in the seconds torch is imported, the config is checked and the equation and
    network, or the study's runs, are made) that nothing was written: the line said only "terminated", leaving the user
    to look for a checkpoint. ``args`` is None for a stop while the command line is parsed
    (which imports the commands, and torch with them): the command is then the first word
    that is no option (the only options before it, --version and --help, take no value)."""
    if str(stop):
        return f"; {stop}"
    if args is None:
        words = [token for token in (sys.argv[1:] if argv is None else argv) if not token.startswith("-")]
        command, started = (words[0] if words else None), False
    else:
        command, started = args.command, getattr(args, "training_started", False)
    work = TRAINING_COMMANDS.get(command)
    return f" before {work} started; nothing was written" if work is not None and not started else ""


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning shown while a command runs: ``warning: <message>`` on one line (Python's
    display named the ``pinnlab`` script's line 6 and quoted ``sys.exit(main())``)."""
    return "warning: " + " ".join(part.strip() for part in str(message).splitlines()) + "\n"


def _stdout_is_a_pipe() -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # (captured: no file descriptor)
        return False


def _terminate_as_exception():
    """Make SIGTERM raise :class:`~pinnlab._interrupts.Terminated`, so a terminated run unwinds like Ctrl-C:
    its output lock and temporary files are removed and a study's worker processes are
    stopped (the default action ended the process on the spot and left them). Returns
    the previous handler (None: one not set from Python), or False where none could be
    set (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.signal(signal.SIGTERM, raise_terminated)


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageError", "main"]


if __name__ == "__main__":  # python -m pinnlab.cli: run the imported module's main, whose
    # UsageError is the one the subcommand modules raise (this file's copy, __main__, is another class)
    from pinnlab.cli import main as _main

    sys.exit(_main())
