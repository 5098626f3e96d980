"""The ``study:`` section of a config (validated like every other section)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator, model_serializer

from pinnlab._fields import SECTION_CONFIG, Float, Int


def _no_repeats(values: list) -> list:
    for i, value in enumerate(values):
        # (true == 1 in Python: [1, true] was "listed twice", not a bad value where it is used)
        if any(value == earlier and isinstance(value, bool) == isinstance(earlier, bool) for earlier in values[:i]):
            raise ValueError(f"{value!r} is listed twice")
    return values


T = TypeVar("T")
Distinct = Annotated[T, AfterValidator(_no_repeats)]
"""A list whose values are all different: a value listed twice would run (or, keyed by
its label, silently merge) the same cell twice."""

MIN_REPLICATES = 4
"""Fewest replicates (and reference replicates) for which every statistic of a record is
defined: R replicates are kept in min(10, R) groups; the jackknife standard errors need 3
groups (else NaN, and ``pinnlab plot`` has no error bar to draw), the projected bias test
2 groups in each half (see :mod:`pinnlab.studies.estimator_study`)."""


KIND_KEYS = {
    "estimator": ("losses", "unbiased_samples", "dims", "samples", "sigmas", "noise", "quantities", "replicates",
                  "points", "reference_samples", "reference_replicates", "init"),
    "training": ("variants", "grid", "columns", "workers"),
}
"""The keys each kind of study reads (``kind`` aside); the other kind never looks at them."""


class StudySection(BaseModel):
    """``study:`` an estimator-level or a training-level bias–variance study.

    Estimator study keys: dims, samples, sigmas, noise, quantities, losses, replicates,
    points, reference_samples, reference_replicates, init (``fresh``: the seeded
    initial network; ``trained``: first train it with the config's trainer settings;
    or the path of a result file whose ``/params`` hold a trained network),
    unbiased_samples (``split``: the unbiased loss's two draws share the K samples, equal
    cost, so every K must be even; ``same``: K samples per draw).
    Training study keys: variants (name → list of ``key=value`` overrides; the table
    rows), grid (dotted key → list of values), columns (the grid key for the table
    columns), workers.
    A key of the other kind is refused (it would be silently ignored), and so is a grid
    key or variant override inside ``study.`` (a cell runs its config without ``study:``)
    and a variant override of a grid key (the grid's value is set after it in every cell).
    """

    model_config = SECTION_CONFIG
    kind: Literal["estimator", "training"]
    # losses and unbiased_samples come before samples, whose validator reads them
    losses: Distinct[list[Literal["biased", "unbiased"]]] = Field(
        default_factory=lambda: ["biased", "unbiased"], min_length=1)
    unbiased_samples: Literal["split", "same"] = "split"
    dims: Distinct[list[Int]] | None = Field(None, min_length=1)
    samples: Distinct[list[Int]] = Field(default_factory=lambda: [8, 16, 32, 64, 128], min_length=1)
    sigmas: Distinct[list[Float]] = Field(default_factory=lambda: [1e-2], min_length=1)
    noise: Distinct[list[Literal["independent", "shared"]]] = Field(
        default_factory=lambda: ["independent", "shared"], min_length=1)
    quantities: Distinct[list[Literal["residual", "loss", "gradient"]]] = Field(
        default_factory=lambda: ["residual", "loss", "gradient"], min_length=1)
    replicates: Int = 200
    points: Int = Field(64, ge=1)
    reference_samples: Int = Field(4096, ge=1)
    reference_replicates: Int = 50
    init: str = "trained"
    variants: dict[str, list[str]] | None = None
    grid: dict[str, Annotated[Distinct[list], Field(min_length=1)]] = Field(default_factory=dict)
    columns: str | None = None
    workers: Int = Field(1, ge=1)

    @field_validator(*KIND_KEYS["estimator"], *KIND_KEYS["training"])
    @classmethod
    def _of_this_kind(cls, value, info: ValidationInfo):
        """A key the study's kind does not read would be ignored (validators run only on
        the keys given)."""
        kind = info.data.get("kind")
        if kind is not None and info.field_name not in KIND_KEYS[kind]:
            named = {"estimator": "an estimator study", "training": "a training study"}
            other = named["training" if kind == "estimator" else "estimator"]
            hint = " (a cell's own settings go in variants or grid)" if kind == "training" else ""
            raise ValueError(f"only {other} reads it, and this is {named[kind]} (study.kind: {kind}); "
                             f"remove it{hint}")
        return value

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid):
        """Grid keys outside the study section, and apart: each cell sets them one after
        the other, so of two keys one of which lies below the other (``trainer`` and
        ``trainer.seed``) the later would overwrite the earlier's value in every cell, and
        the table would show a sweep that never ran."""
        inside = [key for key in grid if _inside_study(key)]
        if inside:
            raise ValueError(f"{inside[0]}: a grid key inside the study section would change nothing (every cell "
                             "runs its config without study:); use keys of the other sections")
        for key, values in grid.items():
            bad = _first_non_finite(values)
            if bad is not None:
                raise ValueError(f"{key}: {bad} is not a finite number (every setting must be finite)")
        keys = list(grid)
        pair = _overlapping(keys, either_way=True)
        if pair:
            raise ValueError(f"the grid keys {keys[pair[0]]} and {keys[pair[1]]} overlap: every cell would set one "
                             "over the other; sweep one of them")
        return grid

    @field_validator("variants")
    @classmethod
    def _variants_named_and_unambiguous(cls, variants):
        """A variant has a name (the table's row label: an empty one gave a row without
        one), and no override replaces an earlier one's key wholly (``loss.kind`` twice,
        or ``trainer={...}`` after ``trainer.lr``: the earlier was lost silently); a later
        override below an earlier one refines it (``trainer={...}`` then ``trainer.lr``)."""
        for name, overrides in (variants or {}).items():
            if not str(name).strip():
                raise ValueError("a variant needs a name (it labels the table's row)")
            pair = _overlapping([item.partition("=")[0] for item in overrides], either_way=False)
            if pair:
                earlier, later = (overrides[i].strip() for i in pair)
                raise ValueError(f"variant {name}: {later!r} sets the key of the earlier {earlier!r} again, "
                                 "which would be lost; remove one")
        return variants

    @field_validator("variants")
    @classmethod
    def _variants_outside_study(cls, variants):
        for name, overrides in (variants or {}).items():
            inside = [item for item in overrides if _inside_study(item.partition("=")[0])]
            if inside:
                raise ValueError(f"{name}: {inside[0]!r} sets a key inside the study section, which would change "
                                 "nothing (every cell runs its config without study:); use keys of the other "
                                 "sections")
        return variants

    @field_validator("grid")
    @classmethod
    def _variants_off_the_grid(cls, grid, info: ValidationInfo):
        """A cell's overrides are its variant's, then its grid point's: a variant override
        of a grid key would be overwritten in every cell."""
        for name, overrides in (info.data.get("variants") or {}).items():
            for item in overrides:
                key = swept_by(item, grid)
                if key is not None:
                    raise ValueError(f"variant {name}: {item.strip()!r} sets the grid key {key}, which every cell "
                                     "sets after its variant, so the override would be ignored; remove it from "
                                     "the variant or the key from the grid")
        return grid

    @model_serializer(mode="wrap")
    def _own_keys(self, handler):
        """The resolved config records only the keys of this kind, so it validates back."""
        data = handler(self)
        return {key: value for key, value in data.items()
                if key == "kind" or key in KIND_KEYS[self.kind]}

    @field_validator("replicates", "reference_replicates")
    @classmethod
    def _enough_replicates(cls, value):
        if value < MIN_REPLICATES:
            raise ValueError(f"must be >= {MIN_REPLICATES}: the jackknife standard errors need 3 groups of "
                             "replicates and the projected bias test 2 groups in each half")
        return value

    @field_validator("samples", "dims")
    @classmethod
    def _positive(cls, values):
        if values is not None and any(v < 1 for v in values):
            raise ValueError("every entry must be >= 1")
        return values

    @field_validator("samples")
    @classmethod
    def _split_evenly(cls, values, info: ValidationInfo):
        """``unbiased_samples: split`` gives each of the unbiased loss's two draws K/2
        samples: an odd K would give the two losses different numbers of samples."""
        data = info.data
        odd = [k for k in values if k % 2]
        if (odd and data.get("kind") == "estimator" and "unbiased" in data.get("losses", ())
                and data.get("unbiased_samples") == "split"):
            raise ValueError("must all be even with study.unbiased_samples: split, which gives each of the "
                             f"unbiased loss's two residual draws K/2 samples (odd: {', '.join(map(str, odd))}); "
                             "use even K or study.unbiased_samples: same")
        return values

    @field_validator("sigmas")
    @classmethod
    def _sigma(cls, values):
        if any(not v > 0 for v in values):
            raise ValueError("every sigma must be > 0")
        return values


def _first_non_finite(value) -> str | None:
    """The first NaN or ±inf inside ``value`` (nested lists and mappings), written as YAML
    writes it; None if there is none. Grid values are not typed, so the finite check of
    every other number setting does not reach them, and in a cell's override a non-finite
    value would be read back as the string 'Infinity'."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    for item in items:
        bad = _first_non_finite(item)
        if bad is not None:
            return bad
    return None


def _inside_study(key: str) -> bool:
    """Whether the dotted override key ``key`` names the ``study:`` section or a key in it."""
    return key.strip().split(".")[0] == "study"


def _overlapping(keys: list[str], *, either_way: bool) -> tuple[int, int] | None:
    """The indices (earlier, later) of the first pair of the dotted ``keys``, set in this
    order, where the later is the earlier or lies above it (``trainer`` after
    ``trainer.seed``: it replaces the earlier's value wholly); with ``either_way`` also
    where it lies below it. None if there is no such pair. Key parts are compared, not
    text (``trainer.seed_x`` is apart from ``trainer.seed``)."""
    parts = [key.strip().split(".") for key in keys]
    for i, pa in enumerate(parts):
        for j in range(i + 1, len(parts)):
            pb = parts[j]
            if pa[:len(pb)] == pb or (either_way and pb[:len(pa)] == pa):
                return i, j
    return None


def swept_by(override: str, keys) -> str | None:
    """The key of ``keys`` (dotted keys a study sets in every run, e.g. its grid keys)
    whose value the ``key=value`` override ``override`` sets, wholly or in part, or None.
    It sets ``equation.dim`` if its key is ``equation.dim``, lies below it, or is above
    it with a value that contains it (``equation={dim: 7}``)."""
    key, _, text = override.partition("=")
    parts = key.strip().split(".")
    for swept in keys:
        target = swept.strip().split(".")
        if parts[:len(target)] == target:
            return swept
        if target[:len(parts)] == parts:
            import yaml

            from pinnlab.config import override_value

            try:
                value = override_value(text)
            except yaml.YAMLError:  # applying the override reports it
                continue
            if _contains(value, target[len(parts):]):
                return swept
    return None


def _contains(value, parts: list[str]) -> bool:
    """Whether the mapping ``value`` has a value at the dotted path ``parts`` (a key of
    the mapping may itself contain dots, as a grid key does)."""
    if not parts:
        return True
    return isinstance(value, Mapping) and any(
        ".".join(parts[:n]) in value and _contains(value[".".join(parts[:n])], parts[n:])
        for n in range(len(parts), 0, -1))


def swept_keys(study: StudySection) -> dict[str, str]:
    """The keys a study sets after the command line's overrides, each with what sets it:
    a training study's grid keys (every cell) and the keys its variants set (that
    variant's cells), an estimator study's ``equation.dim`` with ``dims``."""
    if study.kind == "training":
        keys = {key: "study.grid sweeps" for key in study.grid}
        for name, overrides in (study.variants or {}).items():
            for item in overrides:
                keys.setdefault(item.partition("=")[0].strip(), f"variant {name} sets")
        return keys
    return {"equation.dim": "study.dims sets"} if study.dims else {}


def refuse_swept_overrides(study: StudySection, overrides: Sequence[str]) -> None:
    """Refuse (one :class:`~pinnlab.config.ConfigError` line) a command-line override of
    a key the study sets in its runs (:func:`swept_keys`): the run's value would silently
    replace it. An
    override of the study section itself (``study.grid={...}``) is the study's own."""
    from pinnlab.config import ConfigError

    keys = swept_keys(study)
    for item in overrides:
        if _inside_study(item.partition("=")[0]):
            continue
        key = swept_by(item, keys)
        if key is not None:
            raise ConfigError(f"override {item.strip()!r}: {keys[key]} {key} in its runs, after the command line's "
                              "overrides, so this one would be ignored there; remove it (or change the study's "
                              "values)")


def study_runs(config) -> dict[str, list[str]]:
    """The override strings of every run a study makes, by label: one per dimension of
    an estimator study, one per cell (variant × grid point) of a training study."""
    study = config.study
    if study.kind == "estimator":
        return {f"d={dim}": [f"equation.dim={dim}"] for dim in (study.dims or [config.equation.dim])}
    from pinnlab.studies.training_study import expand_cells

    return {cell.label: list(cell.overrides) for cell in expand_cells(study.variants, study.grid)}


def validate_runs(config_path, runs: Mapping[str, Sequence[str]], base_overrides: Sequence[str] = ()) -> dict:
    """Load, validate and build the config of every run (label → overrides, after
    ``base_overrides``) before any of them starts, so a typo in one variant is reported
    before the others have run. A base override of a key every run sets (a grid key,
    :func:`swept_keys`) is refused, since the run's value would replace it. Returns
    label → :class:`~pinnlab.config.Config`; a problem is one
    :class:`~pinnlab.config.ConfigError` line naming the run (or the base override)."""
    from pinnlab import config as configuration

    if base_overrides:
        study = configuration.load(config_path, base_overrides).sections.get("study")
        if study is not None:
            refuse_swept_overrides(study, base_overrides)
    configs = {}
    for label, overrides in runs.items():
        try:
            config = configuration.load(config_path, [*base_overrides, *overrides])
            configuration.build(config)
        except (configuration.ConfigError, ValueError) as err:
            raise configuration.ConfigError(f"study run {label}: {err}") from None
        configs[label] = config
    deepxde = [label for label, c in configs.items() if c.trainer.backend == "deepxde"]
    if deepxde:
        from pinnlab.solvers.deepxde_adapter import import_deepxde

        try:
            import_deepxde()
        except ImportError as err:
            raise configuration.ConfigError(f"study run {deepxde[0]}: trainer.backend = 'deepxde': {err}") from None
    return configs
