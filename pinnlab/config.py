"""Typed experiment configuration: YAML + dotted overrides → validated sections → objects.

This is the one place where names in YAML become library objects (the registry
below). Every problem with a configuration is reported as a :class:`ConfigError`
whose message is one line naming the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import math
import os
import re
import types
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pinnlab._checks import overlong_path
from pinnlab._fields import INT64_LIMIT, SECTION_CONFIG, Bool, Float, Int, Seed
from pinnlab.bilevel import METHODS
from pinnlab.equations import EQUATIONS, NotUnbiasableError


class ConfigError(ValueError):
    """A configuration problem; ``str(error)`` is one line for the user."""


class _Loader(yaml.SafeLoader):
    """Safe loader that reads plain scalars as YAML 1.2's core schema does, not as 1.1.

    PyYAML implements YAML 1.1, whose implicit types surprise in a config file: ``010``
    is 8 (octal), ``1:30`` is 90 (base 60), ``yes``/``no``/``on``/``off`` are booleans and
    ``2026-12-03`` is a date. Here ``true``/``false`` are the only booleans, integers are
    decimal (``0x``/``0o`` prefixes for hexadecimal and octal, ``_`` between digits), a
    float needs no dot (``1e-2``), and everything else is a string, which the strict
    fields then refuse with the key's name.
    """

    yaml_implicit_resolvers: dict = {}


class _Dumper(yaml.SafeDumper):
    """Safe dumper that quotes a string either schema would read as something else
    (``yes`` for YAML 1.1 readers such as ``yaml.safe_load``, ``0o17`` for :class:`_Loader`)."""


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9][0-9_]*|0o[0-7][0-7_]*|0x[0-9a-fA-F][0-9a-fA-F_]*)$", "-+0123456789"),
    ("float", r"""^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", "-+0123456789."),
    ("merge", r"^(?:<<)$", "<"),
):
    for _cls in (_Loader, _Dumper):
        _cls.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern, re.X), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text[:2] in ("0o", "0x"):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # leading zeros are decimal, as in YAML 1.2


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _refuse_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    """A key given twice in one mapping is refused (PyYAML keeps the last one silently).
    Keys brought in by a ``<<`` merge may be overridden, as YAML's merge allows."""
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)


def _construct_mapping(self, node, deep=False):
    if isinstance(node, yaml.MappingNode):
        _refuse_duplicate_keys(self, node)
    return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


_Loader.construct_mapping = _construct_mapping


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that both :class:`_Loader` and YAML 1.1 readers read back as is."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def _yaml_load(text: str):
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # an explicit tag on
        # a value it cannot take (``!!int x``, ``!!binary %``), or nesting beyond the stack
        raise yaml.constructor.ConstructorError(
            problem=(str(err).splitlines() or [type(err).__name__])[0]) from None


class _Section(BaseModel):
    model_config = SECTION_CONFIG


class EquationSection(BaseModel):
    """``equation:`` the PDE instance; extra keys are the equation's own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    name: str
    dim: Int = Field(ge=1)
    seed: Seed = 0
    constraint: Literal["hard", "soft"] = "hard"
    module: str | None = None
    """Where a user's equation is registered (:func:`import_equation_module`): imported
    before ``name`` is looked up, in every process (a study's workers too)."""

    def parameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelSection(_Section):
    """``model:`` the MLP f(·; θ)."""

    width: Int = Field(128, ge=1)
    depth: Int = Field(4, ge=2)
    activation: Literal["tanh", "sin", "gelu", "silu", "softplus"] = "tanh"


class EstimatorSection(_Section):
    """``estimator:`` how derivatives of u_σ are computed. With ``kind`` autograd or
    hutchinson the Stein settings (σ, time σ, noise, time smoothing) still define the Stein
    estimate of a tuning residual objective (``tune.objective.estimator: stein``)."""

    kind: Literal["stein", "autograd", "hutchinson"] = "stein"
    sigma: Annotated[Float, Field(gt=0)] | tuple[Float, ...] = 1e-2
    """σ: one number for every space coordinate, or a list of ``equation.dim`` numbers,
    one per space coordinate (a tuned ``per_coordinate`` σ's ``/tune/tuned/sigma``, time's
    entry excluded); time's σ is ``time_sigma``, or the one number when it is not given."""
    time_sigma: Float | None = Field(None, gt=0)
    samples: Int = Field(128, ge=1)
    noise: Literal["shared", "independent"] = "shared"
    time_smoothing: Literal["joint", "independent"] = "joint"
    eval_samples: Int | None = Field(None, ge=1)
    probes: Int = Field(16, ge=1)
    chunk_size: Int | None = Field(None, ge=1)

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma_list(cls, value):
        """A list's entries checked here, each by its position (pydantic's union of a number
        and a list named the list "not a valid number" for one bad entry); its length is
        checked against equation.dim in :func:`validate`."""
        if not isinstance(value, (list, tuple)):
            return value
        if not value:
            raise ValueError("must be a number > 0 or a list of them, one per space coordinate (equation.dim); "
                             "got an empty list")
        for i, entry in enumerate(value):
            number = isinstance(entry, (int, float)) and not isinstance(entry, bool)
            try:
                finite = number and math.isfinite(entry)
            except OverflowError:  # (an integer beyond a float)
                finite = False
            if not (finite and entry > 0):
                raise ValueError(f"entry {i} is {describe_value(entry)}; every entry must be a finite number > 0")
        return tuple(float(entry) for entry in value)


class LossSection(_Section):
    """``loss:`` biased | unbiased (= unbiased2) | unbiased1 | unbiased2 | hybrid."""

    kind: Literal["biased", "unbiased", "unbiased1", "unbiased2", "hybrid"] = "biased"
    switch_step: Int | None = Field(None, ge=0)
    switch: Literal["step", "auto", "blend"] | None = None
    window: Int = Field(500, ge=1)
    tolerance: Float = Field(0.01, gt=0, lt=1)
    blend: tuple[Int, Int] | None = None
    then: Literal["unbiased1", "unbiased2"] = "unbiased2"
    weighting: Literal["none", "lra", "relobralo"] = "none"
    weighting_options: dict[str, Any] = Field(default_factory=dict)  # (checked by make_weighting: the
    # key first, so a misspelt option with a text value is named unknown, not "not an integer")
    weights: dict[str, Float] = Field(default_factory=dict)
    boundary_points: Int = Field(100, ge=1)

    @field_validator("blend")
    @classmethod
    def _blend_order(cls, value):
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError("must be [start, end] with 0 <= start < end")
        return value


class DataSection(_Section):
    """``data:`` observations of u (for a data loss term and for tuning objectives).

    ``source`` is ``synthetic`` (``points`` values of the exact solution at seeded
    test-distribution points, plus Gaussian noise of relative size ``noise``) or the path
    of an HDF5/NPZ/CSV file (layouts in :mod:`pinnlab.io.observations`). With
    ``train: true`` the observations also enter the training loss as the term ``data``
    (weight ``loss.weights.data``), ``batch_size`` of them per step (all by default).
    """

    source: str = "synthetic"
    points: Int = Field(100, ge=1)
    noise: Float = Field(0.0, ge=0)
    seed: Seed = 0
    train: Bool = False
    batch_size: Int | None = Field(None, ge=1)


class TrainerSection(_Section):
    """``trainer:`` optimisation, evaluation, device and checkpoints."""

    steps: Int = Field(1000, ge=1)
    lr: Float = Field(1e-3, gt=0)
    schedule: Literal["constant", "linear", "exponential"] = "linear"
    gamma: Float = Field(0.9995, gt=0, le=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: Float = Field(0.9, ge=0, lt=1)
    batch_size: Int = Field(100, ge=1)
    batch_chunks: Int = Field(1, ge=1)
    eval_every: Int = Field(500, ge=1)
    test_points: Int = Field(2000, ge=1)
    seed: Seed = 0
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    checkpoint_every: Int = Field(0, ge=0)
    log_every: Int = Field(100, ge=1)
    backend: Literal["pinnlab", "deepxde"] = "pinnlab"

    @model_validator(mode="before")
    @classmethod
    def _deepxde_schedule(cls, data):
        # DeepXDE trains at a constant learning rate: with that backend an unset schedule
        # means (and the resolved config records) `constant`, not pinnlab's `linear`.
        if isinstance(data, Mapping) and data.get("backend") == "deepxde" and "schedule" not in data:
            data = {**data, "schedule": "constant"}
        return data

    @field_validator("device")
    @classmethod
    def _device(cls, value: str):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value


SECTIONS: dict[str, type[BaseModel]] = {
    "equation": EquationSection,
    "model": ModelSection,
    "estimator": EstimatorSection,
    "loss": LossSection,
    "trainer": TrainerSection,
    "data": DataSection,
}
"""Top-level sections; other parts of pinnlab (tuning, studies) add theirs here."""

REQUIRED = ("equation",)


def _register_feature_sections() -> None:
    from pinnlab.studies.spec import StudySection

    SECTIONS.setdefault("study", StudySection)
    from pinnlab.tuning.spec import TuneSection

    SECTIONS.setdefault("tune", TuneSection)


_register_feature_sections()


class Config:
    """A validated configuration: one attribute per section, plus the raw dict."""

    def __init__(self, sections: dict[str, BaseModel], raw: dict[str, Any]):
        self.sections = sections
        self.raw = raw
        for name, section in sections.items():
            setattr(self, name, section)

    def resolved(self) -> dict[str, Any]:
        """Every section with its defaults filled in (what a result file records), the
        equation's own parameters (viscosity, radius, ...) included."""
        out = {name: s.model_dump(mode="json") for name, s in self.sections.items()}
        for key in _inapplicable(self):
            parent, _, name = key.rpartition(".")
            _walk(out, parent).pop(name)
        if self.trainer.backend == "deepxde":  # (which refuses estimator settings)
            out.pop("estimator")
        if self.loss.weighting != "none":  # (the options the weighting ran with, its defaults filled in)
            weighting = make_weighting(self.loss)
            out["loss"]["weighting_options"] = {name: getattr(weighting, name)
                                                for name in weighting_option_names(type(weighting))}
        if "tune" in out and not self.tune.seeded:  # (refused where nothing of the tuning is random)
            out["tune"].pop("seed")
        if "tune" in out and not self.tune.horizon_acts:  # (refused beside a search's trial_steps)
            out["tune"].pop("horizon")
        study = self.sections.get("study")
        if study is not None and study.kind == "estimator" and study.init != "trained":
            # it trains nothing: the pretraining's settings are refused there, so its own file's
            # config, defaults written out, could not be run again
            for section, keep in UNTRAINED_STUDY_KEEPS.items():
                if section in out:
                    out[section] = {k: v for k, v in out[section].items() if k in keep}
        equation = out.get("equation")
        if equation is not None and equation.get("module", 0) is None:  # (no user module: as before it existed)
            del equation["module"]
        if equation is not None and equation["name"] in EQUATIONS:
            defaults = equation_defaults(EQUATIONS[equation["name"]])
            out["equation"] = {**equation, **{k: v for k, v in defaults.items() if k not in equation}}
        return out

    def to_yaml(self) -> str:
        return dump_yaml(self.resolved())

    def input_files(self) -> dict[str, str]:
        """The files the run takes numbers or code from (``data.source``, ``equation.module``:
        a ``.py`` path, or the file a dotted module name was imported from), key → path."""
        data, module, study = self.sections.get("data"), self.equation.module, self.sections.get("study")
        files = {"data.source": None if data is None or data.source == "synthetic" else data.source,
                 "equation.module": _module_file(module) if isinstance(module, str) else None,
                 # an estimator study of a network file: every number it gives is that network's
                 "study.init": None if study is None or study.init in ("fresh", "trained") else study.init}
        return {key: path for key, path in files.items() if path is not None}

    def input_digests(self) -> dict[str, str]:
        """SHA-256 of each of :meth:`input_files` (a missing file is reported where it is read)."""
        return {key: file_digest(path) for key, path in self.input_files().items() if Path(path).is_file()}

    def identity(self) -> str:
        """What a checkpoint of this config's run records and its resume compares (and a
        training study's finished cell): the resolved config (:meth:`to_yaml`) and, under
        ``input_files``, :meth:`input_digests`: a run resumed after its observation file had
        changed ran on with the new data as if nothing had."""
        digests = self.input_digests()
        return self.to_yaml() + (dump_yaml({"input_files": digests}) if digests else "")


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file at ``path``, hashed once per version of it (device, inode, size,
    modification time): a run asks for it at its checkpoint identity and again for its
    result file, and a 280 MB observation file took 0.5 s each time."""
    import hashlib

    status = Path(path).stat()
    key = (str(Path(path).resolve()), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:  # (in blocks: hashlib.file_digest is Python 3.11+)
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


# -- loading -------------------------------------------------------------------------
def load_yaml(path: str | Path) -> dict[str, Any]:
    if problem := overlong_path(path):
        raise ConfigError(f"config file {describe_value(str(path))}: {problem}")
    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not path.exists() else (
            "is a directory" if path.is_dir() else "is not a regular file")
        raise ConfigError(f"config file {str(path)!r} {what}")
    try:
        with path.open("rb") as fh:
            signature = fh.read(8)
        if signature == b"\x89HDF\r\n\x1a\n":  # HDF5's, at offset 0 as h5py writes it (a result file)
            raise ConfigError(f"config file {str(path)!r} is an HDF5 file (a result?), not a YAML config")
        data = _yaml_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"malformed YAML in {str(path)!r}{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must contain a mapping of sections, got {type(data).__name__}")
    return data


HYBRID_ONLY = ("switch_step", "switch", "blend")
"""Loss keys that only a hybrid loss accepts."""

SEARCHES = ("random", "optuna")
"""Tuning methods that train ``tune.trial_steps`` per trial, drawing each tunable from its
range [low, high]."""

DEPENDENT: dict[str, tuple[str, tuple[Any, ...]]] = {
    "trainer.gamma": ("trainer.schedule", ("exponential",)),
    "trainer.momentum": ("trainer.optimizer", ("sgd",)),
    "loss.then": ("loss.kind", ("hybrid",)),
    "loss.window": ("loss.switch", ("auto",)),
    "loss.tolerance": ("loss.switch", ("auto",)),
    "estimator.probes": ("estimator.kind", ("hutchinson",)),
    "estimator.samples": ("estimator.kind", ("stein",)),
    "estimator.eval_samples": ("estimator.kind", ("stein",)),
    "estimator.chunk_size": ("estimator.kind", ("stein", "autograd")),
    # the smoothing: autograd and Hutchinson fit the raw network (σ = 0.01 and 0.5 gave the same
    # run); Hutchinson draws its probes with the noise mode
    "estimator.sigma": ("estimator.kind", ("stein",)),
    "estimator.time_sigma": ("estimator.kind", ("stein",)),
    "estimator.time_smoothing": ("estimator.kind", ("stein",)),
    "estimator.noise": ("estimator.kind", ("stein", "hutchinson")),
    "loss.boundary_points": ("equation.constraint", ("soft",)),
    "data.batch_size": ("data.train", (True,)),
    # observations read from a file are taken as they are
    "data.points": ("data.source", ("synthetic",)),
    "data.noise": ("data.source", ("synthetic",)),
    "data.seed": ("data.source", ("synthetic",)),
    "tune.trial_steps": ("tune.method", SEARCHES),
    # the search baselines save a checkpoint after every trial, joint fitting none
    "tune.checkpoint_every": ("tune.method", tuple(METHODS)),
    # the searches train every trial from θ₀ and step no φ; joint fitting steps its
    # coefficients with the outer optimiser but has no unrolls to warm-start or accumulate
    "tune.warm_start": ("tune.method", tuple(METHODS)),
    "tune.accumulate": ("tune.method", tuple(METHODS)),
    "tune.outer_lr": ("tune.method", (*METHODS, "joint")),
    "tune.outer_optimizer": ("tune.method", (*METHODS, "joint")),
    "tune.outer_betas": ("tune.method", (*METHODS, "joint")),
    "tune.objective.points": ("tune.objective.kind", ("residual", "reference")),
    # data and reference objectives take u from the training's own estimator
    "tune.objective.estimator": ("tune.objective.kind", ("residual",)),
    # the K of that estimator's smoothing (a raw network's u has none)
    "tune.objective.samples": ("estimator.kind", ("stein",)),
}
"""Keys (``section.key`` or deeper) that act only when another key has one of some
values: set otherwise they would be ignored, so validation refuses them; the resolved
config leaves them out. A key of :data:`DEPENDENT_ELSEWHERE` also acts where its test on
the raw config holds."""


def _stein_residual_objective(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` (a raw config) tunes against a residual objective with a Stein
    estimate, which is built from the estimator section whatever its kind."""
    from pinnlab.tuning.spec import ObjectiveSpec

    tune = data.get("tune")
    objective = tune.get("objective") if isinstance(tune, Mapping) else None
    if not isinstance(objective, Mapping):
        return False
    defaults = ObjectiveSpec.model_fields
    return (objective.get("kind", defaults["kind"].default) == "residual"
            and objective.get("estimator", defaults["estimator"].default) == "stein")


_STEIN_OBJECTIVE = ("a Stein residual tuning objective (tune.objective.kind: residual)", _stein_residual_objective)

DEPENDENT_ELSEWHERE: dict[str, tuple[str, Callable[[Mapping[str, Any]], bool]]] = {
    # (that objective smooths at the estimator section's settings whatever the training's kind)
    **dict.fromkeys(("estimator.sigma", "estimator.time_sigma", "estimator.time_smoothing", "estimator.noise"),
                    _STEIN_OBJECTIVE),
    "estimator.chunk_size": ("a Stein residual tuning objective (tune.objective.kind: residual)",
                             _stein_residual_objective),
    "tune.objective.samples": ("a Stein residual tuning objective (tune.objective.kind: residual)",
                               _stein_residual_objective),
}
""":data:`DEPENDENT` keys read in another place too: what reads them, and whether a raw
config uses it."""


def _acts_elsewhere(key: str, data: Mapping[str, Any]) -> bool:
    return key in DEPENDENT_ELSEWHERE and DEPENDENT_ELSEWHERE[key][1](data)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``1e-2`` → float).

    An override that sets ``loss.kind`` to a non-hybrid loss also drops the hybrid
    switch settings (``switch_step``, ``switch``, ``blend``) the config itself carried,
    so ``loss.kind=biased`` works on a hybrid config; the same settings given as
    overrides are kept (and then refused by validation). So does an override that leaves
    a :data:`DEPENDENT` key without effect (``trainer.schedule=linear`` drops the
    config's ``gamma``), ``tune.method`` the config's ``tune.options`` (another
    method's constructor arguments), ``loss.weighting`` its ``loss.weighting_options``
    (when the config names a weighting: options it gives without one are kept for the
    override's), and ``trainer.backend=deepxde`` the config's ``estimator`` settings and those of
    :data:`DEEPXDE_FIXED` it sets to another value (a linear schedule, a hybrid loss; a
    study's DeepXDE variant); one that gives a search its own ``tune.trial_steps``
    (``tune.method=random tune.trial_steps=100``) drops the config's ``tune.horizon``,
    which only sets a search's default trial length.
    """
    data = _deep_copy(data)
    # (the config's own choices, whose options an override of them keeps)
    method, weighting = _walk(data, "tune.method"), _walk(data, "loss.weighting")
    trials = method in SEARCHES and _walk(data, "tune.trial_steps") is not None  # (the config's horizon inert)
    overridden: set[str] = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {describe_value(item)} must look like key.sub=value")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {describe_value(item)} has an empty key part")
        try:
            value = override_value(text)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None)
            raise ConfigError(f"override {describe_value(item)}: value is not valid YAML"
                              + (f": {problem}" if problem else "")) from None
        if value is None and len(parts) == 1 and parts[0] in SECTIONS:
            # (a config file's empty section means its defaults; from the command line that
            # silently dropped every setting the config gave: trainer= ran 1000 steps, not 600)
            raise ConfigError(f"override {describe_value(item)}: {parts[0]} is a section and an empty value "
                              f"would reset all its settings; set its keys ({parts[0]}.KEY=VALUE)")
        node, i = data, 0
        while True:
            j = i + _key_length(node, parts[:i], parts[i:])
            part = ".".join(parts[i:j])
            if j == len(parts):
                break
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {describe_value(item)}: {clip_text('.'.join(parts[:j]))} is not a section")
            node, i = child, j
        node[part] = value
        overridden.add(".".join(parts))
    trainer, estimator, loss = data.get("trainer"), data.get("estimator"), data.get("loss")
    if "trainer.backend" in overridden and isinstance(trainer, dict) and trainer.get("backend") == "deepxde":
        # DeepXDE's derivatives are exact: the config's estimator settings go, and so do
        # its settings DeepXDE cannot honour (a linear schedule, a non-biased loss kind, ...:
        # every shipped config had one); the same given as overrides are kept (and refused)
        if isinstance(estimator, dict):
            for key in [k for k in estimator if f"estimator.{k}" not in overridden]:
                del estimator[key]
        for (section, key), (allowed, _) in DEEPXDE_FIXED.items():
            node = data.get(section)
            if (isinstance(node, dict) and key in node and node[key] != allowed
                    and f"{section}.{key}" not in overridden):
                del node[key]
                overridden.add(f"{section}.{key}")  # and with it what depends on it (gamma, the hybrid switch)
    if "loss.kind" in overridden and isinstance(loss, dict) and loss.get("kind") != "hybrid":
        for key in HYBRID_ONLY:
            if f"loss.{key}" not in overridden:
                loss.pop(key, None)
                overridden.add(f"loss.{key}")
    if any(f"loss.{key}" in overridden for key in HYBRID_ONLY) and isinstance(loss, dict):
        for key in HYBRID_ONLY:  # one switch replaces the config's other one (loss.switch=auto, its switch_step)
            if f"loss.{key}" not in overridden:
                loss.pop(key, None)
    tune = data.get("tune")
    # another method's constructor arguments go but for those given as overrides:
    # tune.method=penalty tune.options.lr=1e-6 kept the config's fg2u num_directions too
    # (refused by Penalty), and loss.weighting=none (or trainer.backend=deepxde) the
    # config's LRA alpha (refused without a weighting); options a config gives without a
    # weighting of its own (refused as they stand) are kept for the one an override names
    for section, choice, own, options in ((tune, "tune.method", method, "tune.options"),
                                           (loss, "loss.weighting", weighting, "loss.weighting_options")):
        name, key = choice.rpartition(".")[2], options.rpartition(".")[2]
        if (choice in overridden and isinstance(section, dict) and options not in overridden
                and section.get(name) != own and isinstance(section.get(key), dict)
                and (choice != "loss.weighting" or own not in (None, "none"))):
            given = {k: v for k, v in section.pop(key).items()
                     if any(o == f"{options}.{k}" or o.startswith(f"{options}.{k}.") for o in overridden)}
            if given:
                section[key] = given
    study = data.get("study")
    if "study.init" in overridden and isinstance(study, dict) and study.get("init") != "trained":
        for key in untrained_study_settings(data):  # (pretraining settings, as the config's own)
            if key not in overridden:
                section, _, name = key.partition(".")
                data[section].pop(name, None)
    tunables = tune.get("tunables") if isinstance(tune, dict) else None
    if "tune.method" in overridden and isinstance(tunables, dict) and tune.get("method") in SEARCHES:
        for name, spec in tunables.items():  # where a search does not start: the config's own init goes
            if isinstance(spec, dict) and f"tune.tunables.{name}.init" not in overridden \
                    and f"tune.tunables.{name}" not in overridden and "tune.tunables" not in overridden:
                spec.pop("init", None)
    if "tune.method" in overridden and isinstance(tune, dict) and tune.get("method") not in SEARCHES \
            and isinstance(tunables, dict):
        from pinnlab.tuning.spec import default_transform

        for name, spec in tunables.items():  # a search's range of a tunable stepped without bounds goes
            if (isinstance(spec, dict) and isinstance(name, str)
                    and (spec.get("transform") or default_transform(name)) in ("log", "identity")
                    and f"tune.tunables.{name}" not in overridden and "tune.tunables" not in overridden):
                for key in ("low", "high"):
                    if f"tune.tunables.{name}.{key}" not in overridden:
                        spec.pop(key, None)
    if (any(o == key or o.startswith(f"{key}.") for o in overridden for key in ("tune.method", "tune.then",
                                                                                  "tune.tunables"))
            and isinstance(tune, dict) and "tune.seed" not in overridden):
        from pinnlab.tuning.spec import uses_seed

        then = tune.get("then")
        if not uses_seed(tune.get("method", "fg2u"), then.get("method") if isinstance(then, dict) else None,
                         tunables if isinstance(tunables, dict) else {}):
            tune.pop("seed", None)  # (the config's seed for the directions or draws of the method it had)
    if ("tune.outer_optimizer" in overridden and isinstance(tune, dict) and tune.get("outer_optimizer") == "sgd"
            and "tune.outer_betas" not in overridden):  # (Adam's β; refused with SGD)
        tune.pop("outer_betas", None)
    # likewise a setting the config carried for a value an override changed
    for key, (controller, values) in DEPENDENT.items():
        (parent, _, name), (control_parent, _, control) = key.rpartition("."), controller.rpartition(".")
        node, control_node = _walk(data, parent), _walk(data, control_parent)
        if (controller in overridden and key not in overridden and isinstance(node, dict)
                and isinstance(control_node, dict) and control_node.get(control) not in values
                and not _acts_elsewhere(key, data)):
            node.pop(name, None)
    # a search's trials train tune.trial_steps steps when given, horizon setting only their
    # default: an override that makes the config's horizon inert (tune.method=random
    # tune.trial_steps=100 on a shipped fg2u config) drops it; given as an override, or inert
    # in the config as it stands, it is kept (and refused)
    if (("tune.method" in overridden or "tune.trial_steps" in overridden) and "tune.horizon" not in overridden
            and not trials and isinstance(tune, dict) and tune.get("method") in SEARCHES
            and tune.get("trial_steps") is not None):
        tune.pop("horizon", None)
    return data


def override_value(text: str) -> Any:
    """The value of an override's text after ``=``, as :func:`apply_overrides` reads it
    (YAML 1.2, like a config file; empty text is null). Raises ``yaml.YAMLError``."""
    return _yaml_load(text) if text.strip() else None


def _walk(data: Mapping[str, Any], path: str) -> Any:
    """The value at the dotted ``path`` (``tune.objective``) of nested dicts, or None."""
    for part in path.split("."):
        data = data.get(part) if isinstance(data, Mapping) else None
    return data


def _key_length(node: dict, path: list[str], rest: list[str]) -> int:
    """How many of the override's remaining key parts ``rest`` name the next key below
    ``path``: a grid key is the whole rest (``study.grid.trainer.seed``), a tuned weight
    two parts (``tune.tunables.weights.boundary.init``); else the longest dotted run that
    is already a key of ``node``, or one part."""
    where = ".".join(path)
    if where == "study.grid":
        return len(rest)
    if where == "tune.tunables" and rest[0] in ("weights", "coefficients") and len(rest) > 1:
        return 2  # (coefficients.mu.init was the tunable coefficients with a key mu)
    # (the dotted keys of node, not every prefix of rest joined: that was cubic in the
    # override's parts, two minutes for a key of 5,000 parts)
    dotted = (key.split(".") for key in node if isinstance(key, str) and "." in key)
    return max((len(parts) for parts in dotted if rest[:len(parts)] == parts), default=1)


CONFIG_VALUE_LIMIT = 10**6
"""Values (mappings, lists and scalars) a config may hold with its YAML aliases expanded.
An alias (``*name``) shares the anchored value (``&name``) in the loaded document, but the
copy below repeats it at every use, so aliases of aliases grow exponentially: nine levels
of nine (a "billion laughs") are 9⁹ values, which filled memory before any check."""


def _deep_copy(value):
    """A copy of nested dicts and lists, a value shared by YAML aliases copied at every use.
    More than :data:`CONFIG_VALUE_LIMIT` values in all, or a value that contains itself (an
    alias inside its own anchor: endless), is refused before the copy grows further."""
    count = 0
    inside: set[int] = set()  # the containers being copied, from the top down to here

    def copy(value):
        nonlocal count
        count += 1
        if count > CONFIG_VALUE_LIMIT:
            raise ConfigError(f"the config holds more than {CONFIG_VALUE_LIMIT:,} values once its YAML aliases "
                              "(*name) are expanded; nested aliases grow exponentially (write the values out)")
        if not isinstance(value, (dict, list)):
            return value
        if id(value) in inside:
            raise ConfigError("the config contains itself: a YAML alias (*name) inside the value its anchor "
                              "(&name) marks")
        inside.add(id(value))
        try:
            if isinstance(value, dict):
                return {k: copy(v) for k, v in value.items()}
            return [copy(v) for v in value]
        finally:
            inside.discard(id(value))

    try:
        return copy(value)
    except RecursionError:  # (the loader refuses deeper nesting: see _yaml_load)
        raise ConfigError("the config nests mappings and lists too deeply") from None


def clip_text(text: str) -> str:
    """``text`` cut to 60 characters for a message (a 3,000-character override came back
    in full in its error line)."""
    return text if len(text) <= 60 else text[:57] + "..."


def describe_value(value: Any) -> str:
    """A config value as a message shows it: its repr, cut to 60 characters."""
    return clip_text(repr(value))


def _alternatives(annotation) -> list:
    """``A | B | None`` → [A, B]; ``Annotated[A, ...]`` → [A]; else [annotation]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [x for arg in typing.get_args(annotation) for x in _alternatives(arg) if x is not type(None)]
    if origin is Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    return [annotation]


def _inside(annotation, part):
    """The annotation of ``part`` (a key or an index) inside a value of ``annotation``:
    a model's field, a dict's value, a list's or tuple's item; None if unknown."""
    for option in _alternatives(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            field = option.model_fields.get(str(part))
            if field is not None:
                return field.annotation
        elif typing.get_origin(option) is dict:
            return typing.get_args(option)[1]
        elif typing.get_origin(option) in (list, tuple) and typing.get_args(option):
            return typing.get_args(option)[0]
    return None


def _nested_model(model: type[BaseModel], loc: Sequence) -> type[BaseModel]:
    """The model holding the last key of an error location ``loc`` inside ``model``:
    ``tune`` + ``(objective, foo)`` → ObjectiveSpec; ``(tunables, sigma, foo)`` →
    TunableSpec (the value type of a dict)."""
    annotation: Any = model
    for part in loc[:-1]:
        annotation = _inside(annotation, part)
        if annotation is None:
            return model
    for option in _alternatives(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return model


_UNION_TAG = re.compile(r"int|float|bool|str|constrained-[a-z]+|[a-z-]+\[.*\]")  # (constrained-float: a
# union member with its own bounds, estimator.sigma's number beside its list)
"""What pydantic adds to an error's location for the member of a union that failed
(``tune.tunables.sigma.init.float``); not a key of the config."""


def _format_error(section: str, err: ValidationError, model: type[BaseModel]) -> str:
    errors = err.errors()
    # an unknown key first: a misspelt one is why a required key is "missing" ({method:rgu},
    # without the space YAML needs after a colon, is the one key 'method:rgu')
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in (section, *first["loc"]) if not _UNION_TAG.fullmatch(str(p)))
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_nested_model(model, first["loc"]).model_fields)
        colon = (" (YAML needs a space after the colon of a key: {key: value})"
                 if ":" in str(first["loc"][-1]) else "")
        return f"{clip_text(loc)}: unknown key (allowed: {allowed}){colon}"
    if kind == "missing" and isinstance(first["loc"][-1], int):  # a fixed-length tuple given too few items
        # ("tune.outer_betas.1: required key is missing" for outer_betas=[0.9]): pydantic names each missing position
        size = 1 + max(e["loc"][-1] for e in errors if e["type"] == "missing" and e["loc"][:-1] == first["loc"][:-1])
        value = first.get("input")
        return (f"{loc.rsplit('.', 1)[0]} = {describe_value(value)}: tuple should have {size} items, "
                f"not {len(value) if isinstance(value, Sized) else first['loc'][-1]}")
    if kind == "missing":
        return f"{loc}: required key is missing"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    value = first.get("input")
    if kind == "int_type" and isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
        message += f" (write {int(value)}: YAML reads 1e3 and 1000.0 as floats)"
    return f"{loc} = {describe_value(value)}: {message[0].lower() + message[1:]}"


def validate(data: Mapping[str, Any]) -> Config:
    """Validate a config dict; raise :class:`ConfigError` on the first problem."""
    if not isinstance(data, Mapping):
        raise ConfigError("a config must be a mapping of sections")
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(
            f"{clip_text(str(unknown[0]))}: unknown section (allowed: {', '.join(SECTIONS)})"
        )
    trainer = data.get("trainer") or {}
    if isinstance(trainer, Mapping) and all(  # (a bool is not a count: pydantic names its own key)
            isinstance(v, int) and not isinstance(v, bool) for v in (trainer.get("batch_chunks"),
                                                                       trainer.get("batch_size", 100))) \
            and trainer.get("batch_chunks") > trainer.get("batch_size", 100):
        raise ConfigError(
            f"trainer.batch_chunks = {trainer['batch_chunks']}: must be <= trainer.batch_size "
            f"({trainer.get('batch_size', 100)})"
        )
    for name in REQUIRED:
        if name not in data:
            raise ConfigError(f"{name}: required section is missing")
    sections = {}
    for name, model in SECTIONS.items():
        if name not in data:
            if name in ("tune", "study", "data"):
                continue
            value = {}
        else:
            value = data[name]
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: must be a mapping, got {describe_value(value)}")
        try:
            sections[name] = model.model_validate(dict(value))
        except ValidationError as err:
            raise ConfigError(_format_error(name, err, model)) from None
    config = Config(sections, dict(data))
    _check_equation(config.equation)
    if config.estimator.time_sigma is not None and not EQUATIONS[config.equation.name].time_dependent:
        # whatever the estimator kind (autograd and hutchinson training ignored it silently)
        raise ConfigError(f"estimator.time_sigma: {config.equation.name} has no time variable; remove it")
    _check_sigma_list(config)
    if config.trainer.dtype == "float32":  # a positive scale the run's dtype cannot hold (σ = 1e-320:
        # the first loss was NaN); float32's smallest positive value is 2**-149 ≈ 1.4e-45
        study = sections.get("study")
        sigma = config.estimator.sigma
        for key, value in (*(("estimator.sigma", entry) for entry in (sigma if isinstance(sigma, tuple) else (sigma,))),
                           ("estimator.time_sigma", config.estimator.time_sigma), ("trainer.lr", config.trainer.lr),
                           *(("study.sigmas", sigma) for sigma in (study.sigmas if study is not None else ()))):
            if value is not None and 0 < value <= 2.0**-149 / 2:  # (half of it rounds to even, 0)
                raise ConfigError(f"{key} = {value!r}: rounds to 0 in float32, the dtype of this run "
                                  "(trainer.dtype: float32)")
    if "study" in sections:
        _check_study(config)
    if "data" in sections:
        _check_data(config)
    _check_loss(config)
    for key in _inapplicable(config):
        parent, _, name = key.rpartition(".")
        if name in _get(config, parent).model_fields_set:
            controller, values = DEPENDENT[key]
            elsewhere = f", or with {DEPENDENT_ELSEWHERE[key][0]}" if key in DEPENDENT_ELSEWHERE else ""
            raise ConfigError(f"{key}: has an effect only with {controller}: {' or '.join(map(str, values))}"
                              f"{elsewhere} (this config has {controller} = {_get(config, controller)!r}); "
                              "remove it")
    if "tune" in sections:
        _check_tune(config)
    if config.trainer.backend == "deepxde":
        _check_deepxde(config)
    return config


def _check_sigma_list(config: Config) -> None:
    """A list ``estimator.sigma`` has one σ per space coordinate, ``equation.dim`` of them
    (its entries are checked by :class:`EstimatorSection`); time's is ``time_sigma``, which a
    time-dependent equation then needs (no entry of the list is time's)."""
    sigma, dim = config.estimator.sigma, config.equation.dim
    if not isinstance(sigma, tuple):
        return
    timed = EQUATIONS[config.equation.name].time_dependent
    if len(sigma) != dim:
        raise ConfigError(f"estimator.sigma: a list of {len(sigma)} values, but it needs one per space coordinate, "
                          f"equation.dim = {dim} (or one number for all)"
                          + ("; time's σ goes in estimator.time_sigma" if timed else ""))
    if timed and config.estimator.time_sigma is None:
        raise ConfigError(f"estimator.sigma: a list gives the {dim} space coordinates' σ; {config.equation.name} "
                          "also has time, whose σ estimator.time_sigma must give (a tuned per-coordinate σ's last "
                          "entry)")


def _get(config: Config, key: str) -> Any:
    """The value (or section) at the dotted ``key`` (``tune.objective.kind``)."""
    section, *names = key.split(".")
    value = config.sections[section]
    for name in names:
        value = getattr(value, name)
    return value


def has_no_effect(key: str, controller: str, value: Any) -> bool:
    """Whether the :data:`DEPENDENT` ``key`` acts only with other values of ``controller``
    than ``value`` (``has_no_effect("tune.outer_lr", "tune.method", "random")``)."""
    entry = DEPENDENT.get(key)
    return entry is not None and entry[0] == controller and value not in entry[1]


def _inapplicable(config: Config) -> list[str]:
    """The :data:`DEPENDENT` keys without effect in ``config``."""
    return [key for key, (controller, values) in DEPENDENT.items()
            if key.split(".")[0] in config.sections and controller.split(".")[0] in config.sections
            and has_no_effect(key, controller, _get(config, controller)) and not _acts_elsewhere(key, config.raw)]


def _module_file(module: str) -> str | None:
    """The file ``equation.module`` names: a ``.py`` path as given, or the file a dotted
    module name was imported from (validating the config imported it; a module edited
    between a run and its resume changed the problem as much as a changed file does)."""
    import sys

    if module.endswith(".py"):
        return module
    return getattr(sys.modules.get(module), "__file__", None)


@contextlib.contextmanager
def _first_on_path(directory: str):
    """``directory`` first on ``sys.path`` for the duration, unless it is there already."""
    import sys

    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added:
            sys.path.remove(directory)


def import_equation_module(module: str) -> None:
    """Import ``module``, whose import registers a user's equation
    (:func:`pinnlab.equations.register`): a dotted module name, found with the current
    directory first on the path as ``python -m`` finds it, or the path of a ``.py`` file
    (relative to the current directory), with its own directory first on the path while it
    is imported, as ``python FILE.py`` runs it (a sibling module it imports is found). A
    file is loaded once per process, under a name made from its resolved path."""
    import hashlib
    import importlib.util
    import sys

    if not module.endswith(".py") and Path(module).is_file():  # ("notes.txt": "No module named 'notes'")
        raise ConfigError(f"equation.module = {module!r}: a file, but not a .py file; give a .py file or a "
                          "dotted module name")
    try:
        if module.endswith(".py"):
            path = Path(module).resolve()
            name = f"pinnlab_user_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            if name not in sys.modules:
                if not path.is_file():
                    raise FileNotFoundError(f"no file {str(path)!r}")
                spec = importlib.util.spec_from_file_location(name, path)
                loaded = importlib.util.module_from_spec(spec)
                sys.modules[name] = loaded
                try:
                    with _first_on_path(str(path.parent)):
                        spec.loader.exec_module(loaded)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            with _first_on_path("" if "" in sys.path else os.getcwd()):
                importlib.import_module(module)
    except SystemExit as err:  # sys.exit(0) in the module ended pinnlab with exit 0, no result, no word
        raise ConfigError(f"equation.module = {module!r}: cannot import it: it called sys.exit({err.code!r})") \
            from None
    except Exception as err:  # whatever the user's module raises is bad input, in one line
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"equation.module = {module!r}: cannot import it: {type(err).__name__}"
                          + (f": {detail}" if detail else "")) from None


def _check_equation(section: EquationSection) -> None:
    if section.module is not None:
        import_equation_module(section.module)
    if section.name not in EQUATIONS:
        where = (f"equation.module = {describe_value(section.module)} registered no equation of that name"
                 if section.module is not None else "unknown equation")
        raise ConfigError(
            f"equation.name = {describe_value(section.name)}: {where} "
            f"(registered: {', '.join(sorted(EQUATIONS))})"
        )
    cls = EQUATIONS[section.name]
    allowed = equation_parameters(cls)
    for key in section.parameters():
        if key not in allowed:
            raise ConfigError(
                f"equation.{key}: unknown parameter of {section.name} "
                f"(allowed: name, dim, seed, {', '.join(allowed) or 'none'})"
            )
    types_ = _equation_parameter_types(cls)
    for key, value in section.parameters().items():
        try:
            TypeAdapter(types_.get(key, Any)).validate_python(value)
        except ValidationError as err:
            raise ConfigError(_format_error(f"equation.{key}", err, EquationSection)) from None
    if section.dim < cls.min_dim:
        raise ConfigError(f"equation.dim = {section.dim}: {section.name} needs dim >= {cls.min_dim}")


_STRICT = {float: Annotated[float, Strict(), AllowInfNan(False)], int: Int, bool: Bool}
"""The equations' annotated parameter types, read as strictly as the sections' fields."""


def _equation_parameter_types(cls) -> dict[str, Any]:
    """Keyword parameter → its annotated type (float, int and bool made strict and finite);
    the first class in the MRO that declares a parameter gives its type."""
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for name, hint in typing.get_type_hints(klass.__init__).items():
                found.setdefault(name, _STRICT.get(hint, hint))
    return found


def equation_parameters(cls) -> list[str]:
    """Keyword parameters of an equation class other than dim and seed."""
    names = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in ("seed",) and p.name not in names:
                names.append(p.name)
    return names


def equation_defaults(cls) -> dict[str, Any]:
    """Default of each of :func:`equation_parameters` (the first class in the MRO that
    declares a parameter gives it, as for its type)."""
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
                    found.setdefault(p.name, p.default)
    return {name: found[name] for name in equation_parameters(cls) if name in found}


def _check_study(config: Config) -> None:
    study = config.study
    if study.kind == "training":
        if not study.variants:
            raise ConfigError("study.variants: a training study needs at least one variant "
                              "(name: [key=value, ...])")
        for name, overrides in study.variants.items():
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"study.variants.{name}: {item!r} must look like key.sub=value")
        if study.columns is not None and study.columns not in study.grid:
            raise ConfigError(f"study.columns = {describe_value(study.columns)}: must be one of the grid keys "
                              f"({', '.join(study.grid) or 'none'})")
    elif study.init not in ("fresh", "trained") and (problem := overlong_path(study.init)):
        raise ConfigError(f"study.init = {describe_value(study.init)}: {problem}")
    elif study.init not in ("fresh", "trained") and not Path(study.init).is_file():
        raise ConfigError(f"study.init = {study.init!r}: must be 'fresh', 'trained' or an existing result file")
    elif config.trainer.backend == "deepxde":
        raise ConfigError("trainer.backend = 'deepxde': an estimator study evaluates pinnlab's network "
                          "and estimator (use trainer.backend: pinnlab)")
    elif config.estimator.kind != "stein":
        why = {"autograd": "autograd derivatives are exact, with no Monte Carlo error to study",
               "hutchinson": "Hutchinson probes estimate the residual of the unsmoothed network, which has "
                             "no σ"}[config.estimator.kind]
        raise ConfigError(f"estimator.kind = {config.estimator.kind!r}: an estimator study measures the Stein "
                          f"estimator of the smoothed residual over study.samples and study.sigmas; {why} "
                          f"(use estimator.kind: stein)")
    if study.kind == "estimator" and study.init == "trained" and config.trainer.checkpoint_every:
        raise ConfigError("trainer.checkpoint_every: has no effect in an estimator study, whose pretraining "
                          "keeps no checkpoint (a stopped study starts again; it has no --resume); remove it")
    unused = untrained_study_settings(config.raw) if study.kind == "estimator" and study.init != "trained" else []
    if unused:
        raise ConfigError(f"{unused[0]}: has no effect in an estimator study with study.init: "
                          f"{describe_value(study.init)}, which trains nothing (its estimates use study.samples, "
                          "sigmas, noise and losses); remove it, or pretrain with study.init: trained")


UNTRAINED_STUDY_KEEPS = {"trainer": ("seed", "dtype", "device"), "loss": (),
                         "estimator": ("kind", "time_sigma", "time_smoothing", "chunk_size")}
"""The settings of the trainer, loss and estimator sections an estimator study reads when
it trains nothing (study.init fresh or a network file): the network's seed, dtype and
device, and the estimator settings its Stein estimates share. The rest only pretrain."""


def untrained_study_settings(data: Mapping[str, Any]) -> list[str]:
    """The keys the raw config ``data`` sets that an estimator study training nothing
    ignores (:data:`UNTRAINED_STUDY_KEEPS`): the same settings trainer.steps=5 and
    lr=5 gave the records of the defaults."""
    return [f"{section}.{key}" for section, keep in UNTRAINED_STUDY_KEEPS.items()
            if isinstance(data.get(section), Mapping) for key in data[section] if key not in keep]


DEEPXDE_ACTIVATIONS = ("tanh", "sin", "gelu", "silu")
"""``model.activation`` values DeepXDE's ``FNN`` knows (it has no softplus)."""

DEEPXDE_FIXED: dict[tuple[str, str], tuple[Any, str]] = {
    ("trainer", "optimizer"): ("adam", "DeepXDE trains with adam"),
    ("trainer", "schedule"): ("constant", "DeepXDE trains at a constant learning rate"),
    ("trainer", "dtype"): ("float32", "DeepXDE trains in float32"),
    ("trainer", "batch_chunks"): (1, "DeepXDE takes the batch in one piece"),
    ("trainer", "checkpoint_every"): (0, "DeepXDE runs have no checkpoints"),
    ("loss", "weighting"): ("none", "DeepXDE takes fixed loss.weights"),
    ("loss", "kind"): ("biased", "DeepXDE minimises the mean squared residual of exact autograd derivatives, "
                                 "the biased loss"),
}
"""Options the DeepXDE backend cannot honour: the one value each may have (its default,
or what DeepXDE does), and why."""


def _check_deepxde(config: Config) -> None:
    """``trainer.backend: deepxde``: refuse options :func:`solve_config_with_deepxde` would
    silently ignore. Estimator settings do not apply (DeepXDE's derivatives are exact),
    so none may be given, and ``loss.kind`` only as ``biased`` (every loss kind is
    then the same loss); ``data:`` without ``train`` only feeds tuning objectives."""
    if importlib.util.find_spec("deepxde") is None:  # found without importing it
        raise ConfigError("trainer.backend: deepxde needs the optional dependency: pip install 'pinnlab[deepxde]'")
    backend = os.environ.get("DDE_BACKEND", "pytorch")
    if backend != "pytorch":
        raise ConfigError(f"trainer.backend: deepxde needs DeepXDE's pytorch backend, but the environment sets "
                          f"DDE_BACKEND={backend!r}; unset it or set DDE_BACKEND=pytorch")
    given = [key for key in EstimatorSection.model_fields if key in config.estimator.model_fields_set]
    if given:
        raise ConfigError(f"estimator.{given[0]}: has no effect with trainer.backend: deepxde (DeepXDE takes exact "
                          "autograd derivatives of its own network); remove it")
    for (section, key), (allowed, why) in DEEPXDE_FIXED.items():
        value = getattr(config.sections[section], key)
        if value != allowed:
            raise ConfigError(f"{section}.{key} = {describe_value(value)}: not supported by trainer.backend: "
                              f"deepxde ({why}; allowed: {allowed!r})")
    device = config.trainer.device
    if device not in ("auto", "cpu"):
        raise ConfigError(f"trainer.device = {device!r}: not supported by trainer.backend: deepxde "
                          "(it runs on torch's default device, normally the CPU; allowed: 'auto', 'cpu')")
    activation = config.model.activation
    if activation not in DEEPXDE_ACTIVATIONS:
        raise ConfigError(f"model.activation = {activation!r}: not supported by trainer.backend: deepxde "
                          f"(allowed: {', '.join(DEEPXDE_ACTIVATIONS)})")
    if "data" in config.sections and config.data.train:
        raise ConfigError("data.train = True: not supported by trainer.backend: deepxde "
                          "(DeepXDE's loss has no data term)")


FLOAT32_MAX = 3.4028234663852886e38
"""float32's largest finite value (``torch.finfo(torch.float32).max``)."""


def _check_tune(config: Config) -> None:
    """``tune:`` settings the tuning would ignore or misread: ``low``/``high`` of a log-scale
    or identity-transform tunable when no search draws from them (a hypergradient method or
    joint fitting steps log φ, or φ itself, without bounds; only a logit transform and a
    search read them), ``init``,
    ``transform``, ``low`` or ``high`` of the collocation_weight network (its parameters
    start from its seeded initialisation and are stepped as they are; no search or joint
    fit takes it), and a method's flag that is not a boolean (``distributed: abc`` was
    read as true)."""
    from pinnlab.tuning.spec import COLLOCATION, default_transform

    tune = config.tune
    if tune.method == "optuna" and importlib.util.find_spec("optuna") is None:  # before any work, as deepxde
        raise ConfigError("tune.method = 'optuna': needs the optional dependency: pip install 'pinnlab[optuna]'")
    for name, spec in tune.tunables.items():
        if name == COLLOCATION:
            given = [key for key in ("init", "transform", "low", "high") if getattr(spec, key) is not None]
            if given:
                raise ConfigError(f"tune.tunables.{name}.{given[0]}: has no effect on the {name} network, whose "
                                  "parameters start from its own seeded initialisation (weight 1 everywhere) and "
                                  "are stepped without a transform or bounds (only width and depth apply); "
                                  "remove it")
            continue
        if spec.init is not None and tune.method in SEARCHES:  # (the same trials whatever init)
            raise ConfigError(f"tune.tunables.{name}.init: has no effect with tune.method = {tune.method!r}, which "
                              "draws every trial from [low, high] (init is where a hypergradient method or joint "
                              "fitting starts); remove it")
        transform = spec.transform or default_transform(name)
        given = [key for key in ("low", "high") if getattr(spec, key) is not None]
        if transform in ("log", "identity") and given and tune.method not in SEARCHES:
            stepped = f"log {name}" if transform == "log" else name
            raise ConfigError(f"tune.tunables.{name}.{given[0]}: has no effect with tune.method = {tune.method!r}, "
                              f"which steps {stepped} without bounds (low/high bound a logit transform and the "
                              f"range that {' and '.join(SEARCHES)} search); remove it")
    if "seed" in tune.model_fields_set and not tune.seeded:
        raise ConfigError(f"tune.seed: has no effect with tune.method = {tune.method!r}"
                          + (f" and tune.then.method = {tune.then.method!r}" if tune.then is not None else "")
                          + f" (it seeds the directions of fg2u and zo_fg2u, the draws of random and optuna and "
                          f"the {COLLOCATION} network; the training's noise and points follow trainer.seed); "
                          "remove it")
    if "horizon" in tune.model_fields_set and not tune.horizon_acts:
        raise ConfigError(f"tune.horizon: has no effect with tune.method = {tune.method!r} and tune.trial_steps = "
                          f"{tune.trial_steps} (each trial trains trial_steps steps; horizon only sets their default, "
                          "10 × horizon); remove it")
    if config.trainer.dtype == "float32":  # φ and its optimiser live in the run's dtype
        given = {f"tune.tunables.{name}.{key}": getattr(spec, key) for name, spec in tune.tunables.items()
                 for key in ("init", "low", "high")}
        given["tune.outer_lr"] = tune.outer_lr
        given["tune.then.outer_lr"] = tune.then.outer_lr if tune.then is not None else None
        for key, value in given.items():
            for number in value if isinstance(value, list) else [] if value is None else [value]:
                if abs(number) > FLOAT32_MAX:
                    raise ConfigError(f"{key} = {number:g}: beyond float32's largest value ({FLOAT32_MAX:.4g}), "
                                      "the dtype of this run (trainer.dtype: float32)")
    phases = [("tune", tune.method, tune.options)]
    if tune.then is not None:
        phases.append(("tune.then", tune.then.method, tune.then.options))
    for where, name, options in phases:
        method = METHODS.get(name)
        for field in dataclasses.fields(method) if dataclasses.is_dataclass(method) else ():
            value = options.get(field.name)
            if field.type in ("bool", bool) and field.name in options and not isinstance(value, bool):
                raise ConfigError(f"{where}.options.{field.name} = {describe_value(value)}: must be true or false")


def _check_data(config: Config) -> None:
    from pinnlab.io.observations import suffixes_text

    source = config.data.source
    if source == "":  # (Path("") is the current directory, which the refusal below named)
        raise ConfigError(f"data.source = '': an empty path; use 'synthetic' or an existing "
                          f"{suffixes_text('/', '/')} file")
    if source != "synthetic" and (problem := overlong_path(source)):
        raise ConfigError(f"data.source = {describe_value(source)}: {problem}")
    if source != "synthetic" and not Path(source).is_file():
        where = "" if Path(source).is_absolute() else f" (read from the current directory: {str(Path.cwd() / source)!r})"
        raise ConfigError(f"data.source = {source!r}: must be 'synthetic' or an existing "
                          f"{suffixes_text('/', '/')} file{where}")


def hybrid_never_switches(loss: LossSection, steps: int, steps_name: str) -> str | None:
    """Why a hybrid ``loss`` keeps the unbiased phase out of a run of ``steps`` steps
    (0 … steps − 1), or None: a switch step at or after the end, a blend whose mix is
    still 0 at the last step (mix > 0 from step start + 1), or a plateau window that
    cannot elapse (the earliest plateau switch takes effect at step window + 1)."""
    from pinnlab.losses import Blend, SwitchAt, SwitchOnPlateau

    if loss.kind != "hybrid":
        return None
    if loss.switch_step is not None:
        if not SwitchAt(loss.switch_step).starts_within(steps):
            return (f"loss.switch_step = {loss.switch_step}: must be < {steps_name} ({steps}), "
                    "or the unbiased phase never starts")
    elif loss.blend is not None:
        if not Blend(*loss.blend).starts_within(steps):
            return (f"loss.blend = {list(loss.blend)}: its start must be < {steps_name} - 1 ({steps - 1}), "
                    "or the mix stays 0 and the unbiased phase never starts")
    elif not SwitchOnPlateau(window=loss.window).starts_within(steps):
        return (f"loss.window = {loss.window} with loss.switch: auto: must be < {steps_name} - 1 "
                f"({steps - 1}), or the plateau switch cannot happen and the unbiased phase never starts")
    return None


def _check_loss(config: Config) -> None:
    loss = config.loss
    if loss.kind == "hybrid":
        chosen = [loss.switch_step is not None, loss.switch == "auto", loss.blend is not None]
        if sum(chosen) != 1:
            raise ConfigError(
                "loss: a hybrid loss needs exactly one of switch_step: N, switch: auto, "
                "or blend: [start, end]"
            )
        given = "step" if loss.switch_step is not None else "blend" if loss.blend is not None else "auto"
        if loss.switch is not None and loss.switch != given:
            setting = {"step": "switch_step", "blend": "blend"}[given]
            raise ConfigError(f"loss.switch = {loss.switch!r}: contradicts loss.{setting}, which makes the "
                              f"switch {given!r} (give one of them)")
        tune = config.sections.get("tune")
        # (a tuning's final solve of tune.final_steps steps is checked with the tuning's method)
        late = (hybrid_never_switches(loss, config.trainer.steps, "trainer.steps")
                if tune is None or tune.final_steps is None else None)
        if late:
            raise ConfigError(late)
    elif any(getattr(loss, key) is not None for key in HYBRID_ONLY):
        raise ConfigError(f"loss.kind = {loss.kind!r}: switch settings need loss.kind = hybrid")
    make_weighting(loss)  # refuses options that do not belong to the weighting
    names = {"residual", "boundary", "data"}
    for key in loss.weights:
        if key == "data" and not ("data" in config.sections and config.data.train):
            raise ConfigError("loss.weights.data: there is no data term (set data.train: true)")
        if key == "boundary" and config.equation.constraint != "soft":
            raise ConfigError("loss.weights.boundary: there is no boundary term (set equation.constraint: soft)")
        if key not in names:
            raise ConfigError(f"loss.weights.{key}: unknown loss term (allowed: {', '.join(sorted(names))})")
    for key, value in loss.weights.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"loss.weights.{key} = {value}: must be a finite number >= 0")
        if value == 0 and loss.weighting != "none":
            raise ConfigError(f"loss.weights.{key} = 0: loss.weighting = {loss.weighting!r} starts from the "
                              f"configured weights and adapts them by ratios, which a zero weight breaks "
                              f"(drop the term instead, or use loss.weighting: none)")


def load(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a config file."""
    return validate(apply_overrides(load_yaml(path), overrides))


# -- building objects -------------------------------------------------------------------
def weighting_option_names(cls) -> list[str]:
    """The numeric settings of the weighting class ``cls`` that ``loss.weighting_options``
    sets (LRA's term name ``reference`` is not one)."""
    return [f.name for f in dataclasses.fields(cls) if isinstance(f.default, (int, float))]


def make_weighting(section: LossSection):
    """The adaptive weighting of ``loss.weighting`` with ``loss.weighting_options``
    (LRA: alpha, every; ReLoBRaLo: alpha, lookback, temperature), or None."""
    from pinnlab.solvers import LRA, ReLoBRaLo

    options = section.weighting_options
    if section.weighting == "none":
        if options:
            raise ConfigError("loss.weighting_options: only with loss.weighting: lra or relobralo")
        return None
    cls = {"lra": LRA, "relobralo": ReLoBRaLo}[section.weighting]
    allowed = weighting_option_names(cls)
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(f"loss.weighting_options.{key}: unknown option of {section.weighting} "
                              f"(allowed: {', '.join(allowed)})")
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (isinstance(value, int) and not -INT64_LIMIT <= value < INT64_LIMIT)):
            raise ConfigError(f"loss.weighting_options.{key} = {describe_value(value)}: must be a finite number")
    try:
        return cls(**options)
    except ValueError as err:
        raise ConfigError(f"loss.weighting_options.{err}") from None


def make_network(section: ModelSection, input_dim: int, *, seed: int, dtype=None):
    """The network f(·; θ) of ``model:`` (every option of the section reaches it), its
    initialisation drawn from ``(seed, "init")``: what :func:`build` trains and what an
    estimator study evaluates."""
    from pinnlab._seeding import make_generator
    from pinnlab.nets import MLP

    options = {} if dtype is None else {"dtype": dtype}
    return MLP(input_dim, **section.model_dump(), generator=make_generator(seed, "init"), **options)


def make_equation(section: EquationSection):
    try:
        equation = EQUATIONS[section.name](
            section.dim, seed=section.seed, constraint=section.constraint, **section.parameters()
        )
    except (TypeError, ValueError, RuntimeError) as err:  # torch's messages can carry a C++ trace: its first line
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        name, _, rest = message.partition(" ")
        parameters = section.parameters()
        if name in parameters and rest.startswith("must "):  # "viscosity must be ...": with its key path, as others
            raise ConfigError(f"equation.{name} = {describe_value(parameters[name])}: {rest}") from None
        raise ConfigError(f"equation: {message}") from None
    if section.module is not None:
        check_user_equation(equation, section.module)
    return equation


_CHECKED_EQUATIONS: weakref.WeakSet = weakref.WeakSet()
"""The user equations :func:`check_user_equation` passed (a PINNProblem of one built from a
config does not try it again)."""


def check_user_equation(equation, module: str | None) -> None:
    """A user's equation (``equation.module``; None: one given to
    :class:`~pinnlab.solvers.PINNProblem` from Python) tried on four of its own points before any
    work: its samplers, exact solution, source, terms, ansatz and residual (of a small
    network, exact derivatives), and with a soft constraint its boundary sampler and
    values, must run, give `(4, D)` points and one finite value per point. What they raised came out as a traceback in the first step
    (or, for an exact solution, after the tuning); an `(N, 1)` value trained the wrong
    problem; no boundary sampler failed the first soft-constraint step."""
    import torch

    from pinnlab._seeding import make_generator
    from pinnlab.equations import Jet, Nonpolynomial, Term
    from pinnlab.equations.base import _one_per_point
    from pinnlab.estimators import Autograd
    from pinnlab.nets import MLP

    generator = make_generator(0, "pinnlab", "user-equation-check")
    step = "sample_collocation"
    try:
        x = equation.sample_collocation(4, generator=generator, dtype=torch.float64)
        if not isinstance(x, torch.Tensor) or x.shape != (4, equation.input_dim):
            shown = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"it returned {shown} for 4 points, not (4, {equation.input_dim})")
        coefficients = equation.coefficients_like(x)
        step = "exact"
        try:
            exact = equation.exact(x)
        except NotImplementedError:
            if module is not None:
                raise
            exact = None  # (from Python, train() takes a test_set with reference values instead)
        if exact is not None and not bool(torch.isfinite(exact).all()):
            raise ValueError("it is not finite at the points")
        step = "source"
        source = _one_per_point(equation, "source", equation.source(x, coefficients), x, constant=True)
        if not bool(torch.isfinite(torch.as_tensor(source)).all()):
            raise ValueError("it is not finite at the points")
        step = "terms"
        terms = equation.terms()
        if not (isinstance(terms, (tuple, list)) and terms and all(isinstance(t, (Term, Nonpolynomial))
                                                                    for t in terms)):
            raise ValueError(f"it returned {str(terms)[:60]}, not a tuple of Term/Nonpolynomial objects")
        step = "ansatz_jets"
        jets = equation.ansatz_jets(x, coefficients)
        if isinstance(jets, Jet) or not (isinstance(jets, (tuple, list)) and len(jets) == 2):
            # (one Jet, itself a tuple of three, failed in the residual: "too many values to unpack")
            raise ValueError(f"it returned {'one Jet' if isinstance(jets, Jet) else type(jets).__name__}, not the "
                             "pair (A, B) of Jets of u = A·u_σ + B")
        for which, jet in zip(("A", "B"), jets):
            _check_jet(which, jet, x)
        step = "residual"  # the whole residual, its terms' derivatives exact, of a small network
        net = MLP(equation.input_dim, width=4, depth=2, dtype=torch.float64)
        residual = equation.residual(x, lambda queries: Autograd().estimate(net, x, queries))
        if not bool(torch.isfinite(residual).all()):
            raise ValueError("it is not finite at the points")
        if equation.constraint == "soft":
            step = "sample_boundary"
            boundary = equation.sample_boundary(4, generator=generator, dtype=torch.float64)
            step = "boundary_value"
            equation.boundary_value(boundary)
    except Exception as err:  # noqa: BLE001 - whatever the user's code raises is bad input, in one line
        where = "" if module is None else f" (equation.module = {module!r})"
        if isinstance(err, NotImplementedError) and step == "sample_boundary":
            raise ConfigError(f"equation.constraint = 'soft': {equation.name}{where} has no "
                              "boundary sampler (sample_boundary) for the boundary loss; use constraint: hard") \
                from None
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"equation {equation.name!r}{where}: {step} failed when tried on "
                          f"4 points: {type(err).__name__}" + (f": {detail}" if detail else "")) from None
    try:
        _CHECKED_EQUATIONS.add(equation)
    except TypeError:  # (an unhashable equation is tried again by its PINNProblem)
        pass


def _check_jet(which: str, jet, x) -> None:
    """A user's ansatz jet (``u = A·u_σ + B``) at `(N, D)` points: a value that is a number
    or `(N,)`, a gradient and a Hessian diagonal that are None or `(N, D)`. A wrong shape
    failed later inside the residual with torch's own message ("expand(...)", "index 50
    is out of bounds")."""
    import torch

    n, d = x.shape
    expected = {"value": ((n,), f"({n},) or a number"), "gradient": ((n, d), f"({n}, {d}) or None"),
                "hessian_diagonal": ((n, d), f"({n}, {d}) or None")}
    for field, (shape, text) in expected.items():
        value = getattr(jet, field, None)
        allowed = (shape, ()) if field == "value" else (shape,)  # (a 0-d value broadcasts as a number)
        if isinstance(value, torch.Tensor) and tuple(value.shape) not in allowed:
            raise ValueError(f"{which}.{field} has shape {tuple(value.shape)} for {n} points of {d} columns; "
                             f"it must be {text}")


def make_estimator(section: EstimatorSection, equation):
    from pinnlab.estimators import Autograd, Hutchinson, SteinAntithetic

    if section.kind == "autograd":  # chunk_size: coordinates per batch of HVPs
        return Autograd() if section.chunk_size is None else Autograd(chunk_size=section.chunk_size)
    if section.kind == "hutchinson":
        return Hutchinson(num_probes=section.probes, noise=section.noise)
    sigma: Any = section.sigma
    if isinstance(sigma, tuple) or section.time_sigma is not None:  # one σ per input column: the space
        # coordinates' (one per coordinate, or one for all), then time's (time-dependent equations
        # only, and with a list always given: see validate)
        import torch

        space = list(sigma) if isinstance(sigma, tuple) else [sigma] * equation.dim
        time = [section.time_sigma] if section.time_sigma is not None else []
        sigma = torch.tensor(space + time, dtype=torch.float64)
    return SteinAntithetic(
        sigma=sigma, num_samples=section.samples, noise=section.noise,
        time_smoothing=section.time_smoothing, chunk_size=section.chunk_size,
    )


def make_loss(section: LossSection, equation):
    from pinnlab.losses import Biased, Blend, Hybrid, SwitchAt, SwitchOnPlateau, Unbiased1, Unbiased2

    kinds = {"biased": Biased, "unbiased": Unbiased2, "unbiased1": Unbiased1, "unbiased2": Unbiased2}
    if section.kind != "hybrid":
        loss = kinds[section.kind]()
    else:
        if section.switch_step is not None:
            switch = SwitchAt(section.switch_step)
        elif section.blend is not None:
            switch = Blend(*section.blend)
        else:
            switch = SwitchOnPlateau(window=section.window, tolerance=section.tolerance)
        loss = Hybrid(switch=switch, then=kinds[section.then]())
    try:
        loss.validate(equation)
    except NotUnbiasableError as err:
        raise ConfigError(f"loss.kind = {section.kind!r}: {err}") from None
    return loss


def _observations_where(section) -> tuple[str, str]:
    """How a refusal of the ``data:`` section's observations begins, and what it advises
    for values too large."""
    if section.source == "synthetic":
        return f"data.noise = {section.noise:g}: the synthetic observations hold", "lower data.noise"
    return f"data.source: observation file {section.source!r} holds", "rescale the data"


def _outside(section, equation, x) -> str | None:
    """Why the ``data:`` section's observations ``x`` lie outside ``equation``'s domain, or
    None; a CSV file's observation by its line in the file, which a user edits."""
    from pinnlab.solvers.terms import observations_outside

    label = None
    if section.source != "synthetic" and Path(section.source).suffix.lower() == ".csv":
        from pinnlab.io.observations import csv_lines

        def label(i):  # (the file read again only to refuse it)
            return f"line {csv_lines(section.source)[i]} of the file (observation {i}, counting from 0)"
    return observations_outside(equation, x, label)


def make_observations(config: Config, equation, *, domain: bool = True):
    """The ``data:`` section's observations `(x, u)` (float64); ``domain=False`` leaves the
    check that they lie in the equation's domain to the caller (:func:`build`'s data term
    makes it, once)."""
    import torch

    from pinnlab.io.observations import ObservationError, load_observations, synthetic_observations

    section = config.data
    if section.source == "synthetic":
        x, u = synthetic_observations(equation, section.points, noise=section.noise, seed=section.seed)
    else:
        try:
            x, u = load_observations(section.source, equation.input_dim)
        except ObservationError as err:
            raise ConfigError(f"data.source: {err}") from None
        from pinnlab.sizes import check_sizes

        check_sizes(config, observations=len(x))  # (their number was not known before the file was read)
    where, rescale = _observations_where(section)
    if section.batch_size is not None and section.batch_size > len(x):
        # (a batch of all M observations is data.batch_size = M, or leaving it out)
        raise ConfigError(f"data.batch_size = {section.batch_size}: more than the {len(x)} observations; "
                          f"use at most {len(x)}, or leave it out to use all of them every step")
    # (the PDE holds, and the network is trained, in the domain)
    outside = _outside(section, equation, x) if domain else None
    if outside:
        raise ConfigError(f"{where} {outside}")
    # the data misfit squares u (and the network takes x) in the run's dtype: values whose
    # squares overflow it made every outer value inf, and the tuning stopped at its first step
    dtype = getattr(torch, config.trainer.dtype)
    limit = math.sqrt(torch.finfo(dtype).max)
    for name, values in (("x", x), ("u", u)):
        largest = float(values.abs().max())
        if not largest < limit:
            advice = rescale + (" or use trainer.dtype: float64" if dtype == torch.float32 else "")
            raise ConfigError(f"{where} |{name}| up to {largest:.3g}, whose square overflows "
                              f"{config.trainer.dtype} (largest {torch.finfo(dtype).max:.3g}); {advice}")
    return x, u


def deepxde_loss_weights(config: Config, equation, values: Mapping[str, float] | None = None) -> list[float]:
    """DeepXDE's ``loss_weights``, [residual] or with a soft constraint [residual,
    boundary]: from ``values`` (tuned), else the config's ``loss.weights``, else 1 (a
    hard-constraint solve left ``loss.weights.residual`` out, and recorded it)."""
    given = {**config.loss.weights, **(values or {})}
    names = ["residual"] + (["boundary"] if equation.constraint == "soft" else [])
    return [float(given.get(name, 1.0)) for name in names]


def solve_config_with_deepxde(config: Config, equation, *, steps: int | None = None, lr: float | None = None,
                              loss_weights=None, test_set=None, progress: str = "off"):
    """``trainer.backend: deepxde``: the config's problem solved by DeepXDE's own PINN
    (exact autograd derivatives; estimator settings do not apply); ``progress`` as
    :func:`pinnlab.solvers.train` takes it, every ``trainer.log_every`` steps."""
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    trainer = config.trainer
    if loss_weights is None:
        loss_weights = deepxde_loss_weights(config, equation)
    return solve_with_deepxde(
        equation, steps=steps or trainer.steps, lr=lr or trainer.lr, width=config.model.width,
        depth=config.model.depth, activation=config.model.activation, batch_size=trainer.batch_size,
        boundary_points=config.loss.boundary_points, loss_weights=loss_weights,
        test_points=trainer.test_points, test_set=test_set, seed=trainer.seed,
        display_every=min(trainer.eval_every, steps or trainer.steps),
        progress=progress, log_every=trainer.log_every,
    )


def build(config: Config):
    """Library objects for a validated config: ``(problem, train_kwargs)``.

    ``train_kwargs`` are the keyword arguments of :func:`pinnlab.solvers.train`
    (everything but ``state``/``on_checkpoint``/``progress``/``test_set``/``description``: the
    test set is drawn from ``test_points`` and the seed).
    """
    import torch

    from pinnlab.sizes import check_sizes
    from pinnlab.solvers import (
        SGD,
        Adam,
        Constant,
        ConstraintLoss,
        DataLoss,
        Exponential,
        LinearDecay,
        PINNProblem,
    )
    from pinnlab.solvers.terms import ObservationsOutside

    check_sizes(config)  # before the equation's coefficients (O(D)) or any other tensor
    equation = make_equation(config.equation)
    trainer = config.trainer
    net = make_network(config.model, equation.input_dim, seed=trainer.seed)
    extra = ()
    if equation.constraint == "soft":
        extra = (ConstraintLoss(name="boundary", batch_size=config.loss.boundary_points),)
    if "data" in config.sections and config.data.train:
        # the data term checks the observations' domain when the problem validates it (one
        # pass over them, which make_observations made too), worded here as that would be
        x_obs, u_obs = make_observations(config, equation, domain=False)
        extra = (*extra, DataLoss(x_obs, u_obs, name="data", batch_size=config.data.batch_size))
    try:
        problem = PINNProblem(
            equation, net, make_estimator(config.estimator, equation),
            make_loss(config.loss, equation), batch_size=trainer.batch_size, extra_terms=extra,
            batch_chunks=trainer.batch_chunks,
        )
    except ObservationsOutside:  # (worded as make_observations words it: a second pass, to refuse)
        raise ConfigError(f"{_observations_where(config.data)[0]} {_outside(config.data, equation, x_obs)}") from None
    schedule = {
        "constant": Constant(),
        "linear": LinearDecay(trainer.steps),
        "exponential": Exponential(trainer.gamma),
    }[trainer.schedule]
    optimizer = Adam(trainer.lr) if trainer.optimizer == "adam" else SGD(trainer.lr, trainer.momentum)
    weighting = make_weighting(config.loss)
    if weighting is not None and not extra:
        raise ConfigError(
            f"loss.weighting = {config.loss.weighting!r}: needs more than one loss term "
            "(use equation.constraint: soft or data.train: true)"
        )
    hyperparams = {"weights": dict(config.loss.weights)} if config.loss.weights else {}
    kwargs = dict(
        steps=trainer.steps, optimizer=optimizer, schedule=schedule, seed=trainer.seed,
        hyperparams=hyperparams, eval_every=min(trainer.eval_every, trainer.steps),
        test_points=trainer.test_points, eval_samples=config.estimator.eval_samples,
        device=trainer.device, dtype=getattr(torch, trainer.dtype),
        checkpoint_every=trainer.checkpoint_every, log_every=trainer.log_every,
        weighting=weighting,
    )
    return problem, kwargs
