"""The ``study:`` section of a config (validated like every other section)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator, model_serializer

from pinnlab._fields import SECTION_CONFIG, Float, Int


def _no_repeats(values: list) -> list:
    for i, value in enumerate(values):
        if any(value == earlier for earlier in values[:i]):
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
    key or variant override inside ``study.`` (a cell runs its config without ``study:``).
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
    def _grid_outside_study(cls, grid):
        inside = [key for key in grid if _inside_study(key)]
        if inside:
            raise ValueError(f"{inside[0]}: a grid key inside the study section would change nothing (every cell "
                             "runs its config without study:); use keys of the other sections")
        return grid

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


def _inside_study(key: str) -> bool:
    """Whether the dotted override key ``key`` names the ``study:`` section or a key in it."""
    return key.strip().split(".")[0] == "study"


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
    before the others have run. Returns label → :class:`~pinnlab.config.Config`; a
    problem is one :class:`~pinnlab.config.ConfigError` line naming the run."""
    from pinnlab import config as configuration

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
