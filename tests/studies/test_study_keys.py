"""A study refuses the keys of the other kind of study and grid keys or variant overrides
inside ``study:`` (each was silently ignored), and its resolved config validates back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pinnlab import config as C
from pinnlab.cli import main
from pinnlab.studies.spec import KIND_KEYS

BASE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 4, depth: 2}
estimator: {samples: 2, eval_samples: 2}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4}
"""
ESTIMATOR = {"kind": "estimator", "samples": [2, 4], "sigmas": [0.05], "replicates": 4, "points": 2,
             "reference_samples": 8, "reference_replicates": 4, "init": "trained"}
TRAINING = {"kind": "training", "variants": {"biased": ["loss.kind=biased"]}, "grid": {"trainer.seed": [0]},
            "columns": "trainer.seed"}

VALUES = {  # a value each key accepts, so only the kind can refuse it
    "losses": ["biased"], "unbiased_samples": "same", "dims": [2], "samples": [4], "sigmas": [0.1],
    "noise": ["shared"], "quantities": ["loss"], "replicates": 8, "points": 4, "reference_samples": 16,
    "reference_replicates": 8, "init": "trained",
    "variants": {"a": ["loss.kind=biased"]}, "grid": {"trainer.seed": [0]}, "columns": "trainer.seed", "workers": 2,
}
SHIPPED = sorted((Path(__file__).parents[2] / "configs" / "studies").glob("*.yaml"))


def _validate(study: dict):
    return C.validate({**yaml.safe_load(BASE), "study": study})


def test_every_key_has_a_kind_and_a_value_here():
    assert set(VALUES) == {*KIND_KEYS["estimator"], *KIND_KEYS["training"]}
    assert set(VALUES) | {"kind"} == set(C.SECTIONS["study"].model_fields)


@pytest.mark.parametrize("kind,key", [("estimator", k) for k in KIND_KEYS["training"]]
                         + [("training", k) for k in KIND_KEYS["estimator"]])
def test_a_key_of_the_other_kind_is_refused(kind, key):
    """``study.samples`` on a training study, ``study.columns`` on an estimator study...
    were accepted and never read."""
    study = {**(ESTIMATOR if kind == "estimator" else TRAINING), key: VALUES[key]}
    with pytest.raises(C.ConfigError) as info:
        _validate(study)
    message = str(info.value)
    this = {"estimator": "this is an estimator study", "training": "this is a training study"}[kind]
    assert message.startswith(f"study.{key} = ") and this in message and "\n" not in message, message


@pytest.mark.parametrize("kind", ["estimator", "training"])
def test_the_keys_of_the_own_kind_are_accepted_and_the_resolved_config_validates_back(kind):
    own = {key: VALUES[key] for key in KIND_KEYS[kind]}
    if kind == "training":
        own["columns"] = "trainer.seed"
    config = _validate({"kind": kind, **own})
    resolved = config.resolved()["study"]
    assert set(resolved) == {"kind", *KIND_KEYS[kind]}
    assert C.validate(yaml.safe_load(config.to_yaml())).resolved() == config.resolved()


def test_switching_a_training_config_to_an_estimator_study_is_refused(tmp_path, capsys):
    """``study.kind=estimator`` on a training config ran an estimator study that ignored
    the config's variants, grid and columns."""
    cfg = tmp_path / "trn.yaml"
    cfg.write_text(BASE + yaml.safe_dump({"study": TRAINING}))
    out = tmp_path / "s.h5"
    tiny = ["study.samples=[2]", "study.replicates=4", "study.points=1", "study.reference_samples=4",
            "study.reference_replicates=4", "study.init=fresh"]  # quick if it ran
    assert main(["study", str(cfg), "study.kind=estimator", *tiny, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.variants = " in err[0] and "this is an estimator study" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("override,expected", [
    ("study.columns=foo", "study.columns = 'foo'"),
    ("study.workers=3", "study.workers = 3"),
])
def test_the_cli_refuses_a_training_key_on_an_estimator_study(tmp_path, capsys, override, expected):
    cfg = tmp_path / "est.yaml"
    cfg.write_text(BASE + yaml.safe_dump({"study": ESTIMATOR}))
    out = tmp_path / "s.h5"
    assert main(["study", str(cfg), override, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "only a training study reads it" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("grid", [{"study.kind": ["estimator"]}, {"study.workers": [1, 2]}, {"study": [{}]},
                                  {"trainer.seed": [0], " study.columns": ["x"]}])
def test_a_grid_key_inside_the_study_section_is_refused(grid):
    """Every cell runs its config without ``study:``, so such a grid key changed nothing."""
    with pytest.raises(C.ConfigError, match=r"^study\.grid = .*a grid key inside the study section"):
        _validate({**TRAINING, "grid": grid})


def test_a_variant_override_inside_the_study_section_is_refused():
    with pytest.raises(C.ConfigError, match=r"^study\.variants = .*b: 'study\.workers=2' sets a key inside"):
        _validate({**TRAINING, "variants": {"a": ["loss.kind=biased"], "b": ["study.workers=2"]}})


def test_grid_keys_and_variants_outside_the_study_section_are_accepted():
    config = _validate({**TRAINING, "variants": {"a": ["loss.kind=biased", "studying=1"]},
                        "grid": {"trainer.seed": [0], "equation.dim": [3]}})
    assert list(config.study.grid) == ["trainer.seed", "equation.dim"]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_study_configs_validate_and_round_trip(path):
    config = C.load(path)
    assert set(config.resolved()["study"]) == {"kind", *KIND_KEYS[config.study.kind]}
    assert C.validate(yaml.safe_load(config.to_yaml())).resolved() == config.resolved()
