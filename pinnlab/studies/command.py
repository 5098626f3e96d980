"""``pinnlab study CONFIG [overrides] -o STUDY.h5 [--json PATH]``.

The ``--json`` file is strict JSON: a non-finite number (a slope's standard error from
two values of K, the seconds per step of a cell that did not run a step) is ``null``."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

NAME = "study"


def add_parser(sub):
    from pinnlab.cli import Once, add_command, add_config_arguments, file_argument

    p = add_command(sub, NAME, "run an estimator-level or training-level bias-variance study",
                    "pinnlab study configs/studies/estimator_small.yaml -o est.h5 --json est.json")

    add_config_arguments(p, "configs/studies/ has examples")
    p.add_argument("-o", "--output", required=True, type=file_argument, action=Once, help="study file STUDY.h5")
    p.add_argument("--json", type=file_argument, action=Once, help="also write the records (and slopes) as JSON (strict: a non-finite number "
                                  "is null)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing study file, and a training study's cells of another config "
                        "(finished cells of the same config are reused, not recomputed: adding seeds or "
                        "variants runs only the new ones)")
    p.add_argument("--workers", type=int, action=Once, help="worker processes for a training study (replaces study.workers)")
    return p


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _writing(path: Path, kept: Callable[[], str] | None = None):
    """The write of one of a study's files, after its work: one that fails (a full disk)
    ends the run as a solve's does, in one line naming the file, the OS's error and what
    ``kept()`` says is left (:class:`~pinnlab.cli.RunFailed`, exit code 1), not in a
    traceback."""
    from pinnlab.cli import RunFailed, unwritable

    try:
        yield
    except OSError as err:
        raise RunFailed(unwritable(path, err) + (kept() if kept is not None else "")) from None



def run(args) -> int:
    from pinnlab import config as configuration
    from pinnlab.cli import UsageError, _output_checks, run_inputs

    try:
        config = configuration.load(args.config, args.overrides)
    except configuration.ConfigError as err:
        # an override of a key the study sets in its runs may be what made the study's own
        # config invalid (loss.switch_step=2 beside loss.kind: biased): say that it would be ignored
        _refuse_swept(args)
        raise UsageError(f"config error: {err}") from None
    if "study" not in config.sections:
        raise UsageError("config error: study: required section is missing for `pinnlab study`")
    output = Path(args.output)
    reads = run_inputs(args.config, config)
    training = config.study.kind == "training"
    # (the name of STUDY.h5.cells/ is the longest the study makes from it)
    _output_checks(output, overwrite=args.overwrite, reads=reads, name_suffixes=(".cells",) if training else ())
    _check_other_outputs(output, args, config.study.kind, reads)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.workers is not None and config.study.kind == "estimator":
        raise UsageError("--workers: an estimator study runs in one process (the option is for training studies)")
    if args.workers is not None:  # the config the file records says what the run used (it gave study.workers)
        config = configuration.load(args.config, [*args.overrides, f"study.workers={args.workers}"])
    runs = _validated_runs(config, args)
    # the files each run reads: a grid or a variant may name its own data.source or module
    # (the study's CSV table replaced the observations a cell trained on)
    cell_reads = [read for run in runs.values() for read in run_inputs(args.config, run) if read not in reads]
    if cell_reads:
        _output_checks(output, overwrite=args.overwrite, reads=cell_reads)
        _check_other_outputs(output, args, config.study.kind, cell_reads)
    trains = config.study.kind == "training" or config.study.init == "trained"
    if "data" in config.sections and not (trains and any(
            "data" in run.sections and run.data.train for run in runs.values())):
        # (a grid may set data.train in some cells: then the section acts there)
        raise UsageError("config error: data: the observations have no effect on this study (they enter "
                         "training only with data.train: true, in a training study or study.init: trained); "
                         "set it or remove data:")
    args.training_started = True  # (a stop from here on: the study says what it kept, cli._kept)
    if config.study.kind == "estimator":
        return _estimator(config, output, args, runs)
    return _training(config, output, args)


def _refuse_swept(args) -> None:
    """:func:`~pinnlab.studies.spec.refuse_swept_overrides` for the study of the config
    without the command line's overrides, when it loads."""
    from pinnlab import config as configuration
    from pinnlab.cli import UsageError
    from pinnlab.studies.spec import refuse_swept_overrides

    study = None
    try:
        study = configuration.load(args.config).sections.get("study")
        if study is not None:
            refuse_swept_overrides(study, args.overrides)
    except configuration.ConfigError as err:
        if study is not None:  # (set: the refusal, not the config, failed)
            raise UsageError(f"config error: {err}") from None


def _validated_runs(config, args) -> dict:
    """Every run of the study (label → config), validated and built, each on a device this
    machine has: refused as ``pinnlab solve`` refuses them (one line, exit 2), before any
    work or output file (a training study's cells found an unavailable device only in
    their worker, with a traceback)."""
    from pinnlab import config as configuration
    from pinnlab.cli import UsageError
    from pinnlab.solvers import resolve_device
    from pinnlab.studies.spec import study_runs, validate_runs

    try:
        runs = validate_runs(args.config, study_runs(config), args.overrides)
        for run in runs.values():
            resolve_device(run.trainer.device)
    except (configuration.ConfigError, ValueError) as err:
        raise UsageError(f"config error: {err}") from None
    return runs


def table_paths(output: Path) -> tuple[Path, Path]:
    """The tables a training study writes next to ``STUDY.h5``: ``STUDY.md`` and ``STUDY.csv``,
    named after the whole of ``-o`` when it does not end in ``.h5`` (``-o s.v1``: ``s.v1.md``;
    dropping any last suffix gave ``-o s.v1`` and ``-o s.v2`` the same ``s.md``)."""
    base = str(output)[:-len(".h5")] if output.suffix == ".h5" else str(output)
    return Path(base + ".md"), Path(base + ".csv")


def _kind_of(path: Path) -> str | None:
    """The ``kind`` attribute of the result file at ``path``, or None (none there, or unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            kind = fh.attrs.get("kind")
    except (OSError, ValueError):
        return None
    return kind.decode() if isinstance(kind, bytes) else None if kind is None else str(kind)


def cell_directory(output: Path) -> Path:
    """Where a training study keeps one result file per cell: ``STUDY.h5.cells/``."""
    return Path(str(output) + ".cells")


def _check_other_outputs(output: Path, args, kind: str, reads) -> None:
    """The files a study writes besides ``-o`` (a training study's tables, ``--json``) follow
    the rule of ``-o``: checked before any work, an existing one is replaced only with
    ``--overwrite``, none may be a directory or another output of the same study."""
    from pinnlab.cli import UsageError, _output_checks, resolved_output

    others = []
    taken = {resolved_output(output, f"{str(output)!r}"): "-o"}
    if kind == "training":
        md, csv = table_paths(output)
        others += [(md, "the study's markdown table"), (csv, "the study's CSV table")]
        cells = cell_directory(output)
        where = f"{str(cells)!r} (where the study keeps its cells)"
        if cells.exists() and not cells.is_dir():
            raise UsageError(f"{where} exists and is not a directory")
        taken[resolved_output(cells, where)] = where  # (made by the study: no other output may be it)
    if args.json:
        others.append((Path(args.json), "--json"))
    for path, what in others:
        where = f"{str(path)!r} ({what})"
        resolved = resolved_output(path, where)
        if resolved in taken:
            raise UsageError(f"{where} is the same file as {taken[resolved]}; choose another name")
        taken[resolved] = where
        _output_checks(path, overwrite=args.overwrite, what=what, checkpoint=False, reads=reads)


def _estimator(config, output, args, runs) -> int:
    import h5py
    import torch

    from pinnlab import config as configuration
    from pinnlab._interrupts import STOPS
    from pinnlab.cli import replacing
    from pinnlab.io import atomic_path, strict_json, write_strict_json
    from pinnlab.io.results import _versions
    from pinnlab.solvers import train
    from pinnlab.studies.estimator_study import (
        EstimatorStudySpec,
        compare_losses,
        fit_slopes,
        run_estimator_study,
    )

    study = config.study
    dims = study.dims or [config.equation.dim]
    if study.init not in ("fresh", "trained"):
        _check_init_file(study.init, config, dims)
    dtype = getattr(torch, config.trainer.dtype)
    records, pretrained = [], {}
    try:  # (a stop: nothing is kept before the file is written, which main's line says)
        for dim in dims:
            params = None
            if study.init == "trained":
                problem, kwargs = configuration.build(runs[f"d={dim}"])
                _log(f"pretraining the network at d={dim} for {kwargs['steps']} steps")
                # its progress as a solve's: a bar on a terminal, else a line every trainer.log_every steps
                result = train(problem, **kwargs, progress="auto")
                # a study of a diverged network's estimates is all NaN; a network whose test
                # errors are undefined (status invalid_reference) is a trained one
                if result.status == "nonfinite":
                    print(f"pinnlab: error: the pretraining at d={dim} did not end ok ({result.message}); the "
                          "study needs a trained network, so none was written (lower trainer.lr or "
                          "trainer.steps, or use study.init: fresh)", file=sys.stderr)
                    return 1
                params = {k: v.detach().to(dtype=dtype) for k, v in result.params.items()}
                pretrained[dim] = result.final.rel_l2
                _log(f"pretrained network: rel_l2={result.final.rel_l2:.3e}")
            elif study.init != "fresh":
                with h5py.File(study.init, "r") as fh:
                    params = {k: torch.as_tensor(fh[f"params/{k}"][...]) for k in fh["params"]}
                    final = fh.get("final")
                    if isinstance(final, h5py.Group) and "rel_l2" in final.attrs:  # the file's own test error
                        pretrained[dim] = float(final.attrs["rel_l2"])
            spec = EstimatorStudySpec(
                equation=config.equation.name, dims=(dim,), samples=tuple(study.samples),
                sigmas=tuple(study.sigmas), noise=tuple(study.noise), quantities=tuple(study.quantities),
                losses=tuple(study.losses), replicates=study.replicates, points=study.points,
                reference_samples=study.reference_samples, reference_replicates=study.reference_replicates,
                problem_seed=config.equation.seed, init_seed=config.trainer.seed,
                equation_parameters=config.equation.parameters(), params=params,
                dtype=dtype, device=config.trainer.device, unbiased_samples=study.unbiased_samples,
                time_smoothing=config.estimator.time_smoothing, time_sigma=config.estimator.time_sigma,
                chunk_size=config.estimator.chunk_size,
                **config.model.model_dump(),  # every model option, as the solver's network gets them
            )
            records += run_estimator_study(spec, progress=_log)["records"]
    except STOPS as stop:
        raise type(stop)("nothing was written: an estimator study keeps no partial results; the same command "
                         "runs it again") from None
    slopes = fit_slopes(records)
    comparisons = compare_losses(records)
    payload = {"records": records, "slopes": slopes, "comparisons": comparisons, "pretrained_rel_l2": pretrained}
    with _writing(output), replacing(output), atomic_path(output) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["kind"] = "estimator_study"
        fh.attrs["config"] = config.to_yaml()
        digests = config.input_digests()
        if digests:  # (as a solve's: the files it read, study.init's network among them)
            fh.attrs["input_files"] = json.dumps(digests, sort_keys=True)
        for key, value in _versions().items():
            fh.attrs[key] = str(value)
        fh.attrs["slopes"] = strict_json(slopes)
        fh.attrs["comparisons"] = strict_json(comparisons)
        fh.attrs["pretrained_rel_l2"] = strict_json(pretrained)
        group = fh.create_group("records")
        for key in dict.fromkeys(k for r in records for k in r):
            values = [r.get(key, float("nan")) for r in records]
            group.create_dataset(key, data=[str(v) for v in values] if isinstance(values[0], str) else values)
    if args.json:
        with _writing(Path(args.json)):
            write_strict_json(args.json, payload)
    for name, entry in slopes.items():
        if name.startswith("loss/biased") and "bias_slope" in entry:
            print(f"{name}: bias slope {entry['bias_slope']:.3f} ± {entry['bias_slope_se']:.3f}")
    for r in records:
        if r["quantity"] == "gradient" and math.isfinite(r.get("bias_p", math.nan)):
            print(f"gradient bias, {r['loss']}, {r['noise']}, d={r['dim']}, K={r['samples']}: "
                  f"t = {r['bias_t']:+.2f} ({r['bias_t_df']:.1f} df), p = {r['bias_p']:.3f}")
    for row in comparisons:
        if row["quantity"] == "gradient":
            halving = (f"; halving predicts {row['halving_prediction']:.2f}"
                       if row.get("halving_prediction") is not None else "")
            print(f"gradient variance unbiased/biased, {row['noise']}, d={row['dim']}, K={row['samples']}: "
                  f"{row['variance_ratio']:.2f} (z = {row['z']:+.1f}{halving})")
    alike = [r for r in records if r.get("variance") == 0]
    if alike:  # every replicate gave the same value: no variance, no slope
        where = sorted({f"σ = {r['sigma']:g}" for r in alike})
        print(f"warning: {len(alike)} of {len(records)} records have a variance of exactly 0 (every replicate "
              f"alike, at {', '.join(where)}: a σ that saturates the network?); their series have no "
              "variance slope", file=sys.stderr)
    broken = [r for r in records if not all(math.isfinite(r.get(key, math.nan)) for key in ("bias2", "variance"))]
    if broken:  # written, but not a study: exit 0 hid NaN tables and plots that failed
        where = sorted({f"σ = {r['sigma']:g}" for r in broken})
        print(f"pinnlab: error: {len(broken)} of {len(records)} records have a non-finite bias² or variance (at "
              f"{', '.join(where)}: a σ too small or too large for the network's inputs in "
              f"{config.trainer.dtype}?); the study file holds them as NaN", file=sys.stderr)
        return 1
    return 0


def _check_init_file(path: str, config, dims) -> None:
    """A network read from a result file must be the network the study evaluates: a
    pinnlab-trained network of the config's ``model:`` (width, depth, activation), for the
    same equation at every studied dimension, whose ``/params`` are that network's
    parameters (names and shapes, finite floating-point values). Anything else is one
    line (exit 2), before any work."""
    import h5py
    import numpy as np
    import yaml

    from pinnlab import config as configuration
    from pinnlab.cli import UsageError

    def refuse(problem: str):
        raise UsageError(f"config error: study.init = {path!r}: {problem}")

    try:
        with h5py.File(path, "r") as fh:
            if "config" not in fh.attrs:
                refuse("not a pinnlab result file (it has no config attribute)")
            stored = fh.attrs["config"]
            status = fh.attrs.get("status", "ok")
            status = status.decode() if isinstance(status, bytes) else str(status)
            if status not in ("ok", "invalid_reference"):
                refuse(f"its training did not end ok (status {status}), so its network is not a trained one")
            group = fh.get("params")
            if not isinstance(group, h5py.Group):
                refuse("not a result file with a trained network (it has no /params group)")
            shapes = {k: tuple(v.shape) for k, v in group.items() if isinstance(v, h5py.Dataset)}
            # values a network cannot be (text, NaN): read in full, a network is small
            unusable = next((k for k, v in group.items() if isinstance(v, h5py.Dataset)
                             and (v.dtype.kind != "f" or not np.isfinite(v[...]).all())), None)
    except OSError as err:
        refuse(f"not an HDF5 result file ({err})")
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    try:
        stored = yaml.safe_load(stored)
    except yaml.YAMLError:
        stored = None
    if not isinstance(stored, dict):
        refuse("its config attribute is not a pinnlab configuration")
    model, expected = stored.get("model") or {}, config.model.model_dump(mode="json")
    equation = stored.get("equation") or {}
    if (stored.get("trainer") or {}).get("backend", "pinnlab") != "pinnlab":
        refuse("its network was trained by DeepXDE, not pinnlab")
    if model != expected:
        refuse(f"its network was trained with model {model}, the study's config has model {expected}")
    if equation.get("name") != config.equation.name or any(d != equation.get("dim") for d in dims):
        refuse(f"its network was trained on {equation.get('name')} at d={equation.get('dim')}, the study "
               f"is of {config.equation.name} at d={', '.join(map(str, dims))}")
    differing = _equation_differences(equation, config)
    if differing:
        refuse(f"its network was trained on another instance of {config.equation.name} ("
               + "; ".join(f"equation.{key}: {theirs!r} in the file, {ours!r} in the study"
                           for key, (theirs, ours) in differing.items())
               + "); study it with the file's equation settings or train one with the study's")
    input_dim = configuration.make_equation(config.equation.model_copy(update={"dim": dims[0]})).input_dim
    net = configuration.make_network(config.model, input_dim, seed=0)
    wanted = {k: tuple(v.shape) for k, v in net.named_parameters()}
    if shapes != wanted:
        refuse(f"its /params ({len(shapes)} arrays) are not the parameters of the study's network "
               f"({', '.join(f'{k} {list(v)}' for k, v in list(wanted.items())[:3])}, ...)")
    if unusable is not None:
        refuse(f"its /params/{unusable} is not a network's parameter (not all finite floating-point values)")


def _equation_differences(stored: dict, config) -> dict:
    """The keys (``dim`` aside, compared per studied dimension) where the ``equation:``
    section a network file recorded differs from the study's resolved one (seed,
    constraint, the equation's own parameters, ...): key → (file's value, study's value).
    The stored section is resolved like the study's first, so a file written before a key
    existed compares by that key's default."""
    from pinnlab import config as configuration

    try:
        stored = configuration.validate({"equation": stored}).resolved()["equation"]
    except (configuration.ConfigError, ValueError, TypeError):
        pass  # compared as recorded
    ours = config.resolved()["equation"]
    return {key: (stored.get(key), ours.get(key)) for key in dict.fromkeys([*ours, *stored])
            if key != "dim" and stored.get(key) != ours.get(key)}


def _training(config, output, args) -> int:
    import h5py

    from pinnlab import config as configuration
    from pinnlab._interrupts import STOPS
    from pinnlab.cli import UsageError, refused_checkpoint
    from pinnlab.io import CheckpointError, atomic_path, write_strict_json
    from pinnlab.io.results import _versions
    from pinnlab.studies.training_study import (
        csv_text,
        expand_cells,
        markdown_table,
        run_training_study,
        summarise,
    )

    study = config.study
    cells = expand_cells(study.variants, study.grid)
    cell_dir = cell_directory(output)
    try:
        records = run_training_study(args.config, cells, cell_dir, workers=study.workers,
                                     base_overrides=args.overrides, progress=_log, overwrite=args.overwrite)
    except configuration.ConfigError as err:  # raised before any cell runs
        raise UsageError(f"config error: {err}") from None
    except CheckpointError as err:  # likewise: a cell of an edited config, kept unless --overwrite
        raise refused_checkpoint(err) from None
    except FileExistsError as err:  # a directory where a cell's file goes (no config error)
        raise UsageError(str(err)) from None
    except STOPS as stop:  # main's one line ("interrupted") then says it, as a rerun continues
        raise type(stop)(f"the finished cells are kept in {str(cell_dir)!r} (and a cell's checkpoint, with "
                         "trainer.checkpoint_every); the same command continues the study") from None
    summary = summarise(records, study.columns)
    table = markdown_table(summary, study.columns)
    outputs = [output, *table_paths(output), *([Path(args.json)] if args.json else [])]

    def kept() -> str:  # (without --overwrite none was there before: one there now is this run's)
        again = "" if args.overwrite or not any(path.exists() for path in outputs) else " with --overwrite"
        return (f"; the finished cells are kept in {str(cell_dir)!r}; the same command{again} writes the study "
                "from them")

    with _writing(output, kept), atomic_path(output) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["kind"] = "training_study"
        fh.attrs["config"] = config.to_yaml()
        for key, value in _versions().items():
            fh.attrs[key] = str(value)
        fh.attrs["columns"] = study.columns or ""
        fh.attrs["cell_dir"] = str(cell_dir.resolve())
        fh.attrs["table"] = table
        for name, rows in (("cells", records), ("summary", summary)):
            group = fh.create_group(name)
            for key in rows[0]:
                values = [r.get(key) for r in rows]
                if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                    group.create_dataset(key, data=values, dtype="int64")  # counts, dims, seeds: not 2.0
                elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                    group.create_dataset(key, data=[float(v) for v in values])
                else:
                    group.create_dataset(key, data=[json.dumps(v) if not isinstance(v, str) else v
                                                    for v in values])
    for path, text in zip(table_paths(output), (table + "\n", csv_text(summary))):
        with _writing(path, kept), atomic_path(path) as tmp:
            tmp.write_text(text)
    if args.json:
        with _writing(Path(args.json), kept):
            write_strict_json(args.json, {"records": records, "summary": summary})
    print(table)
    statuses = sorted({r["status"] for r in records})
    if "ok" not in statuses:  # written (the table says so), but as `pinnlab solve` exits for one such run
        print(f"pinnlab: error: no cell of the study ended ok (status {', '.join(statuses)} in all "
              f"{len(records)}); its tables have no numbers", file=sys.stderr)
        return 1
    return 0


