"""Training checkpoints: plain tensors and numbers only, loaded with ``weights_only=True``.

Whatever reads a checkpoint back (:func:`load_checkpoint` here, the bilevel driver's
resume) reports a missing, truncated, damaged or hand-edited one as a
:class:`CheckpointError` naming the file, before any work, and never touches the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pinnlab.io.atomic import atomic_path
from pinnlab.losses.hybrid import PlateauState
from pinnlab.solvers.loop import History, TrainState, resolve_device
from pinnlab.solvers.optim import AbstractOptimizer

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupted, or from another config)."""


RUN_ONLY_SETTINGS = ("trainer.checkpoint_every", "trainer.log_every", "tune.checkpoint_every")
"""Config keys that decide only when a run saves a checkpoint or writes a log line, never
a number it computes (the training loop and the tuning loops read them for nothing
else): a resume (:func:`config_hash`) and a training study's rerun ignore them, so that
a run can be continued with another checkpoint or log interval. ``trainer.device`` is
compared as the device it resolves to (:func:`comparable_config`)."""


def comparable_config(config: Mapping[str, Any]) -> str:
    """The resolved config ``config`` (the dictionary its YAML holds) as a resume and a
    training study's rerun compare it, as text: without :data:`RUN_ONLY_SETTINGS`, and
    with ``trainer.device`` the device it resolves to on this machine (``auto`` is ``cpu``
    without CUDA and ``cuda`` with it; ``cpu`` and ``cuda`` stay apart). A device this
    machine lacks stays as written, unlike any device it has."""
    sections = {name: dict(section) if isinstance(section, Mapping) else section
                for name, section in config.items()}
    for key in RUN_ONLY_SETTINGS:
        section, name = key.split(".")
        if isinstance(sections.get(section), dict):
            sections[section].pop(name, None)
    trainer = sections.get("trainer")
    if isinstance(trainer, dict) and "device" in trainer:
        try:
            trainer["device"] = str(resolve_device(trainer["device"]))
        except (ValueError, RuntimeError):  # no CUDA here, or not a device (a hand-edited file)
            pass
    return yaml.safe_dump(sections, sort_keys=False)


def config_hash(config_yaml: str) -> str:
    """SHA-256 of :func:`comparable_config` of the resolved config ``config_yaml`` (its
    YAML): what a checkpoint records of its run, and what a resume must match."""
    return hashlib.sha256(comparable_text(config_yaml).encode()).hexdigest()


def comparable_text(config_yaml: str) -> str:
    """:func:`comparable_config` of the YAML ``config_yaml``; a library caller's own text
    that is no config mapping as it is."""
    try:
        config = yaml.safe_load(config_yaml)
    except yaml.YAMLError:
        config = None
    return comparable_config(config) if isinstance(config, Mapping) else config_yaml


def config_difference(saved_text: Any, config_yaml: str, saved_in: str = "the checkpoint") -> str:
    """Where the config a checkpoint recorded (``saved_text``, :func:`comparable_config`
    YAML) first differs from ``config_yaml``'s, as `` (trainer.lr: 0.001 in the checkpoint,
    0.5 in this run)``; ``""`` when the checkpoint recorded none (written before it was kept)
    or nothing differs in the comparable settings. The refusal said only "a different
    configuration", and its hash cannot say which setting."""
    try:
        saved, current = yaml.safe_load(saved_text), yaml.safe_load(comparable_text(config_yaml))
    except (yaml.YAMLError, TypeError, AttributeError):
        return ""

    def first(a: Any, b: Any, where: list[str]) -> tuple[str, Any, Any] | None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in [*a, *(k for k in b if k not in a)]:
                found = first(a.get(key, "(not set)"), b.get(key, "(not set)"), [*where, str(key)])
                if found:
                    return found
            return None
        return (".".join(where), a, b) if a != b else None

    found = first(saved, current, [])
    if found is None:
        return ""
    key, was, now = found
    shown = [text if len(text) <= 40 else text[:37] + "..." for text in (repr(was), repr(now))]
    return f" ({key}: {shown[0]} in {saved_in}, {shown[1]} in this run)"


def load_checkpoint_file(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load`` of a checkpoint (safe: ``weights_only``; ``mmap``: tensors are read
    when used); an unreadable, truncated or non-torch file raises :class:`CheckpointError`
    saying so (with ``mmap`` torch's own message was about memory mapping)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError as err:  # a good checkpoint this user may not read: not to be discarded
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({err.strerror or err})") from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupted
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted or unreadable ({type(err).__name__})"
        ) from None


DIGEST_KEY = "content_sha256"
"""The key under which a checkpoint holds :func:`content_digest` of the rest of it."""


def content_digest(value: Any) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes and every
    other value's repr, through dictionaries (in key order), lists and tuples. torch.load
    does not check the archive's CRCs, so bytes changed on disk inside a tensor were
    resumed from as if they were the run's (a trace value of 3.8e117 in the result)."""
    digest = hashlib.sha256()

    def add(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            flat = item.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{item.dtype}{tuple(item.shape)}:".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(item, np.ndarray):
            digest.update(f"A{item.dtype}{item.shape}:".encode())
            digest.update(np.ascontiguousarray(item).tobytes())
        elif isinstance(item, Mapping):
            digest.update(f"D{len(item)}{{".encode())
            for key in sorted(item, key=repr):
                add(key)
                add(item[key])
            digest.update(b"}")
        elif isinstance(item, (list, tuple)):
            digest.update(f"{type(item).__name__}{len(item)}[".encode())
            for entry in item:
                add(entry)
            digest.update(b"]")
        else:
            digest.update(f"{type(item).__name__}:{item!r};".encode())

    add(value)
    return digest.hexdigest()


def write_checkpoint_file(path: str | Path, payload: dict[str, Any]) -> None:
    """``payload`` with its :func:`content_digest` written to ``path`` atomically;
    :func:`read_checkpoint` checks the digest."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # (opened here: a refused write is an OSError,
        # where torch's own open raised a RuntimeError quoting the strerror)
        torch.save({**payload, DIGEST_KEY: content_digest(payload)}, fh)


def read_checkpoint(path: str | Path, *, metadata: Any = None,
                    history: dict | None = None) -> dict[str, Any]:
    """The dictionary saved at ``path`` (safe: ``weights_only``); a missing, unreadable or
    truncated file, or one that holds no dictionary, raises :class:`CheckpointError`, as
    does (for the tuning loops' checkpoints) one saved with other ``metadata`` than given
    or whose ``"history"`` does not have the entries of ``history``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r} to resume from")
    data = load_checkpoint_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} has an unknown format")
    saved_digest = data.pop(DIGEST_KEY, None)  # (absent in checkpoints written before it was kept)
    if saved_digest is not None and saved_digest != content_digest(data):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: its content does not match the digest "
                              "saved with it")
    if metadata is not None and data.get("metadata") != metadata:
        raise CheckpointError(f"checkpoint {str(path)!r} belongs to another run (metadata differ)")
    saved = data.get("history")
    if history is not None and (not isinstance(saved, dict) or set(saved) != set(history)):
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: its history has other "
                              f"entries than {', '.join(history)}")
    return data


def check_progress(path: str | Path, history: Mapping[str, Any], rows: int, budget: Mapping[str, Any],
                   values: Any = ()) -> None:
    """Refuse a tuning checkpoint at ``path`` unless its ``history`` has one row per
    finished outer step or trial (``rows``) in every entry, its ``budget`` (if saved) is
    ``{"spent": s, "units": rows}`` with a finite s ≥ 0, and the tensors of ``values``
    (the current φ and θ) are finite: a cut history was written to the result file as
    if complete, and a NaN φ ran on to a result of NaN values."""
    from pinnlab._budget import Budget
    from pinnlab._typing import tensor_leaves

    lengths = sorted({len(v) for v in history.values()})
    if lengths != [rows]:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: it is at {rows} finished outer steps "
                              f"(trials), but its history has {' or '.join(map(str, lengths))} rows")
    if budget and not Budget.state_fits(budget, rows):
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its budget {dict(budget)} does not fit "
                              f"{rows} finished outer steps (trials)")
    if not all(bool(torch.isfinite(t).all()) for t in tensor_leaves(values)[0]):
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its tuned values or network are not finite")


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Report what taking a checkpoint's content apart raises (a missing key, a value of
    the wrong kind, a state ``load_state_dict`` refuses, a saved type that does not
    import) as one :class:`CheckpointError` naming ``path``: a damaged or hand-edited
    checkpoint whose config hash still matches gives one line, not a traceback."""
    try:
        yield
    except CheckpointError:
        raise
    except KeyError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: it has no {err}") from None
    except (TypeError, ValueError, AttributeError, IndexError, RuntimeError, ImportError) as err:
        detail = " ".join(str(err).split())[:200]  # load_state_dict's messages span lines
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged ({type(err).__name__}: {detail})") from None


def check_fits(path: str | Path | None, name: str, saved: Any, expected: Any) -> None:
    """Refuse ``saved`` (the part ``name`` of the checkpoint at ``path``, or of a state
    passed directly when ``path`` is None) unless it is built like ``expected``, its
    freshly initialised counterpart: dictionaries with the same keys, tuples or lists
    (optimizer states are named tuples) of the same length, and tensors of the same
    shapes and dtypes; other leaves (step counts, penalty weights) are not compared.
    Nothing else checks this on resume: the functional networks and optimizers fail on a
    renamed or reshaped tensor only at the first step, or broadcast it silently, or fall
    back to the module's own parameter for a missing name."""
    def refuse(problem: str):
        where = "the state" if path is None else f"checkpoint {str(path)!r}"
        raise CheckpointError(f"{where} does not fit this run: {problem}")

    if isinstance(expected, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            refuse(f"{name} is a {type(saved).__name__}, not a tensor")
        if saved.shape != expected.shape:
            refuse(f"{name} has shape {tuple(saved.shape)}, expected {tuple(expected.shape)}")
        if saved.dtype != expected.dtype:
            refuse(f"{name} has dtype {saved.dtype}, expected {expected.dtype}")
    elif isinstance(expected, dict):
        if not isinstance(saved, dict):
            refuse(f"{name} is a {type(saved).__name__}, not a dictionary")
        missing = [k for k in expected if k not in saved]
        unexpected = [k for k in saved if k not in expected]
        if missing or unexpected:
            refuse(f"{name} " + " and ".join(([f"lacks {_names(missing)}"] if missing else [])
                                             + ([f"has unexpected {_names(unexpected)}"] if unexpected else [])))
        for key, value in expected.items():
            check_fits(path, f"{name}[{key!r}]", saved[key], value)
    elif isinstance(expected, (tuple, list)):
        if not isinstance(saved, (tuple, list)) or len(saved) != len(expected):
            refuse(f"{name} is not a sequence of {len(expected)} entries")
        fields = getattr(expected, "_fields", None)
        for i, value in enumerate(expected):
            check_fits(path, f"{name}.{fields[i]}" if fields else f"{name}[{i}]", saved[i], value)


def check_history(path: str | Path | None, step: int, history: History, window_loss: list[float]) -> None:
    """Refuse the history of the checkpoint at ``path`` (or of a state passed directly
    when ``path`` is None) unless it is what
    :func:`~pinnlab.solvers.train` leaves after ``step`` completed steps: one value per
    step in each trace, evaluation rows whose columns (``terms/*`` too) are equally long
    and whose steps increase from 1 to at most ``step``, and in ``window_loss`` the
    losses of the steps since the last row. Nothing else checks this on resume: the run
    would go on from ``step`` and write a result whose columns and traces do not match
    its steps."""
    def refuse(problem: str):
        where = "the state" if path is None else f"checkpoint {str(path)!r}"
        raise CheckpointError(f"{where} is inconsistent: {problem}")

    steps = history.rows["step"]
    columns = {**history.rows, **{f"terms/{k}": v for k, v in history.terms.items()}}
    for name, values in columns.items():
        if len(values) != len(steps):
            refuse(f"history column {name!r} has {len(values)} rows, column 'step' has {len(steps)}")
    if not all(float(row).is_integer() and before < row <= step for before, row in zip([0.0, *steps], steps)):
        shown = ", ".join(f"{row:g}" for row in steps[:6]) + (", ..." if len(steps) > 6 else "")
        refuse(f"its history rows are at steps {shown}, not at increasing whole steps up to its step {step}")
    for name in ("trace_loss", "trace_mix"):
        values = getattr(history, name)
        if len(values) != step:
            refuse(f"history {name!r} has {len(values)} values for its {step} steps")
    since = step - (int(steps[-1]) if steps else 0)
    if len(window_loss) != since:
        refuse(f"'window_loss' has {len(window_loss)} values, not one for each of the {since} steps "
               "since the last history row")


def _names(keys: list) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def save_checkpoint(
    path: str | Path, state: TrainState, optimizer: AbstractOptimizer, config_yaml: str
) -> None:
    """Write everything :class:`TrainState` holds to ``path`` atomically."""
    history = {k: torch.as_tensor(v) for k, v in state.history.arrays().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "config_hash": config_hash(config_yaml),
        "config": comparable_text(config_yaml),  # (what a refusal names: config_difference)
        "step": state.step,
        "params": {k: v.detach().cpu() for k, v in state.params.items()},
        "opt_state": {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                      for k, v in optimizer.state_to_dict(state.opt_state).items()},
        "history": history,
        "plateau": None if state.plateau is None else {
            "ema": state.plateau.ema, "best": state.plateau.best,
            "best_step": state.plateau.best_step,
            "switched_at": -1 if state.plateau.switched_at is None else state.plateau.switched_at,
        },
        "weighting": state.weighting,
        "train_seconds": state.train_seconds,
        "timed_steps": state.timed_steps,
        "wall_s": state.wall_s,
        "window_loss": torch.tensor(state.window_loss, dtype=torch.float64),
    }
    write_checkpoint_file(path, payload)


def _shown(value: Any) -> str:
    """A saved value as a refusal shows it: its repr on one line, cut to 60 characters."""
    return " ".join(repr(value).split())[:60]


def check_config(path: str | Path, data: Mapping[str, Any], config_yaml: str) -> None:
    """Refuse the checkpoint ``data`` (read from ``path`` by :func:`read_checkpoint`) of
    another format, or written for another config than ``config_yaml`` (the refusal names
    the first setting that differs)."""
    if data.get("format") != FORMAT:
        if "metadata" in data and "history" in data:  # (a user who solved a tuning's config under its name)
            raise CheckpointError(f"checkpoint {str(path)!r} is a tuning's (pinnlab tune --resume continues it), "
                                  "not a solve's")
        raise CheckpointError(f"checkpoint {str(path)!r} has an unknown format")
    # a checkpoint written before RUN_ONLY_SETTINGS were left out holds the whole YAML's hash
    if data.get("config_hash") not in (config_hash(config_yaml), hashlib.sha256(config_yaml.encode()).hexdigest()):
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for a different configuration"
            f"{config_difference(data.get('config'), config_yaml) or ' (another config or other overrides)'}"
        )


def load_checkpoint(
    path: str | Path, optimizer: AbstractOptimizer, config_yaml: str,
    device: torch.device, dtype: torch.dtype,
) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` (safe: ``weights_only``);
    anything unreadable, a step that is no whole number >= 0, or a history that does not
    fit the step raises :class:`CheckpointError`. Whether the state fits the run (names,
    shapes, step within its steps) is checked by :func:`~pinnlab.solvers.train`, which
    takes it.
    """
    data = read_checkpoint(path)
    check_config(path, data, config_yaml)
    with reading(path):
        # (an edited checkpoint whose digest was made again: int64 parameters were cast, a
        # negative or infinite time resumed into steps_per_second)
        damaged = [f"its parameter {k!r} is not a floating-point tensor" for k, v in data["params"].items()
                   if not (isinstance(v, torch.Tensor) and v.is_floating_point())]
        damaged += [f"its {key} {_shown(data[key])} is not a finite number >= 0" for key in ("train_seconds", "wall_s")
                    if not (isinstance(data[key], (int, float)) and not isinstance(data[key], bool)
                            and math.isfinite(data[key]) and data[key] >= 0)]
        if damaged:
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged: {damaged[0]}")
        params = {k: v.to(device=device, dtype=dtype) for k, v in data["params"].items()}
        opt = {k: (v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor)
                   and v.is_floating_point() else v) for k, v in data["opt_state"].items()}
        step = data["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its step {_shown(step)} is not "
                                  "a whole number >= 0")
        timed = data["timed_steps"]
        if not isinstance(timed, int) or isinstance(timed, bool) or not 0 <= timed <= step:
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its timed_steps "
                                  f"{_shown(timed)} is not a whole number in 0..{step}, its step")
        history = History.from_arrays({k: np.asarray(v) for k, v in data["history"].items()})
        window_loss = [float(v) for v in data["window_loss"]]
        check_history(path, step, history, window_loss)
        plateau = None
        if data["plateau"] is not None:
            p = data["plateau"]
            plateau = PlateauState(float(p["ema"]), float(p["best"]), int(p["best_step"]),
                                   None if p["switched_at"] < 0 else int(p["switched_at"]))
        return TrainState(
            params=params, opt_state=optimizer.state_from_dict(opt), step=step,
            history=history, plateau=plateau, train_seconds=float(data["train_seconds"]),
            timed_steps=int(data["timed_steps"]), wall_s=float(data["wall_s"]),
            window_loss=window_loss, weighting=data["weighting"],
        )
