"""``pinnlab study`` refuses overrides of the keys every run sets and a network file of
another equation instance, writes strict JSON, and records an init file's own error."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from pinnlab import config as C
from pinnlab.cli import main
from pinnlab.io import write_strict_json
from pinnlab.studies.estimator_study import loglog_slope
from pinnlab.studies.spec import study_runs, validate_runs
from tests.studies.test_studies import TINY_ESTIMATOR, TINY_TRAINING, _network_file

ONE_CELL = {"samples: [4, 8]": "samples: [4]", "noise: [independent, shared]": "noise: [independent]"}
"""A tiny estimator study of one K and one noise mode (seconds)."""


def _estimator(tmp_path: Path, init: str = "fresh", *, base: str = TINY_ESTIMATOR, **replace: str) -> Path:
    """``base`` (TINY_ESTIMATOR) with its ``init`` and the ``replace`` substitutions, as est.yaml."""
    text = base.replace("init: fresh", f"init: {init}")
    for old, new in replace.items():
        text = text.replace(old, new)
    cfg = tmp_path / "est.yaml"
    cfg.write_text(text)
    return cfg


def _refused_before_any_work(args, tmp_path, capsys) -> str:
    assert main(["study", *map(str, args)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert not list(tmp_path.glob("*.h5*")) and not list(tmp_path.glob("*.json"))
    return err


@pytest.mark.parametrize("override", ["equation.dim=7", " equation.dim = 7", "equation={name: poisson_two_body, "
                                      "dim: 7}", "trainer.seed=3"])
def test_a_variant_override_of_a_grid_key_is_refused(override):
    """The grid's value is appended after the variant's overrides, so a variant setting
    ``equation.dim`` ran at the grid's dimensions, never at its own."""
    study = yaml.safe_load(TINY_TRAINING.replace("STEPS", "2"))
    study["study"]["variants"]["odd"] = ["loss.kind=biased", override]
    key = override.split("=")[0].strip() if "{" not in override else "equation.dim"
    with pytest.raises(C.ConfigError, match=rf"^study\.grid = .*variant odd: .* sets the grid key {key}, which "
                                            "every cell sets after its variant"):
        C.validate(study)


@pytest.mark.parametrize("grid", ["{trainer.seed: [0, 1], trainer: [{seed: 3}]}",
                                  "{trainer: [{seed: 3}], trainer.seed: [0, 1]}",
                                  "{trainer.seed: [0, 1], ' trainer.seed ': [2]}"])
def test_overlapping_grid_keys_are_refused(grid):
    """``trainer`` set seed 3 after ``trainer.seed`` in every cell: the cells recorded as
    seeds 0 and 1 ran the same seed, and the table showed a spread of 0."""
    study = yaml.safe_load(TINY_TRAINING.replace("STEPS", "2"))
    study["study"]["grid"] = yaml.safe_load(grid)
    study["study"].pop("columns", None)
    with pytest.raises(C.ConfigError, match=r"^study\.grid = .*the grid keys .* overlap: every cell would set one"):
        C.validate(study)


@pytest.mark.parametrize("grid, bad", [("{trainer.lr: [1.0e-3, .inf]}", r"trainer\.lr: \.inf"),
                                       ("{trainer.lr: [-.inf]}", r"trainer\.lr: -\.inf"),
                                       ("{model: [{width: 8}, {width: .nan}]}", r"model: \.nan")])
def test_a_non_finite_grid_value_is_refused_as_a_number(grid, bad):
    """A cell's override is written as JSON, and YAML reads JSON's ``Infinity`` back as a
    string: the refusal said ``trainer.lr = 'Infinity': input should be a valid number``."""
    study = yaml.safe_load(TINY_TRAINING.replace("STEPS", "2"))
    study["study"]["grid"] = yaml.safe_load(grid)
    study["study"].pop("columns", None)
    with pytest.raises(C.ConfigError, match=rf"^study\.grid = .*{bad} is not a finite number"):
        C.validate(study)


@pytest.mark.parametrize("variants, expected", [
    ({"": ["loss.kind=biased"]}, "a variant needs a name"),  # a table row without a label
    ({"a": ["loss.kind=biased", "loss.kind=unbiased"]},  # the first was ignored
     "variant a: 'loss.kind=unbiased' sets the key of the earlier 'loss.kind=biased' again"),
    ({"a": ["trainer.lr=0.2", "trainer={lr: 0.1}"]},
     "variant a: 'trainer={lr: 0.1}' sets the key of the earlier 'trainer.lr=0.2' again"),
])
def test_a_variant_without_a_name_or_with_one_key_twice_is_refused(variants, expected):
    study = yaml.safe_load(TINY_TRAINING.replace("STEPS", "2"))
    study["study"]["variants"] = variants
    with pytest.raises(C.ConfigError, match=re.escape(expected)):
        C.validate(study)


def test_variant_overrides_beside_the_grid_keys_are_accepted():
    study = yaml.safe_load(TINY_TRAINING.replace("STEPS", "2"))
    study["study"]["variants"]["other"] = ["loss.kind=biased", "equation={name: poisson_two_body}", "equation.seed=2",
                                           "trainer.seed_x=1"]  # key parts are compared, not text
    assert list(C.validate(study).study.variants) == ["biased", "unbiased", "other"]


def test_a_command_line_override_of_a_grid_key_is_refused_before_any_cell_runs(tmp_path, capsys):
    """``pinnlab study CFG equation.dim=7 study.grid={equation.dim:[3]}`` ran d = 3: the
    cell's grid value is set after the command line's overrides."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    err = _refused_before_any_work([cfg, "equation.dim=7", "study.grid={equation.dim: [3]}", "-o",
                                    tmp_path / "t.h5"], tmp_path, capsys)
    assert "override 'equation.dim=7': study.grid sweeps equation.dim in its runs" in err, err
    section = "trainer={seed: 4, steps: 2, batch_size: 8}"  # a quick run were it not refused
    err = _refused_before_any_work([cfg, section, "-o", tmp_path / "t.h5"], tmp_path, capsys)
    assert f"override '{section}': study.grid sweeps trainer.seed" in err, err


def test_a_command_line_override_of_a_key_a_variant_sets_is_refused(tmp_path, capsys):
    """``pinnlab study training_small.yaml loss.kind=biased`` ran every variant with its own
    loss.kind: a variant's overrides come after the command line's."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    err = _refused_before_any_work([cfg, "loss.kind=unbiased1", "-o", tmp_path / "t.h5"], tmp_path, capsys)
    assert "override 'loss.kind=unbiased1': variant biased sets loss.kind in its runs" in err, err


def test_command_line_overrides_beside_the_grid_are_accepted(tmp_path):
    """The grid itself, a key next to a grid key, and a section above one that leaves it
    alone; ``equation.dim`` of an estimator study without ``study.dims`` is its dimension."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    overrides = ["study.grid={equation.dim: [3]}", "equation.seed=2", "trainer={steps: 2, batch_size: 8}"]
    config = C.load(cfg, overrides)
    runs = validate_runs(cfg, study_runs(config), overrides)
    assert {(c.equation.dim, c.equation.seed, c.trainer.steps) for c in runs.values()} == {(3, 2, 2)}
    est = _estimator(tmp_path)
    runs = validate_runs(est, study_runs(C.load(est, ["equation.dim=4"])), ["equation.dim=4"])
    assert [c.equation.dim for c in runs.values()] == [4]


def test_a_command_line_dimension_of_an_estimator_study_with_dims_is_refused(tmp_path, capsys):
    """``study.dims`` sets ``equation.dim`` of every run after the command line's overrides."""
    err = _refused_before_any_work([_estimator(tmp_path), "study.dims=[3]", "equation.dim=4", "-o",
                                    tmp_path / "e.h5"], tmp_path, capsys)
    assert "override 'equation.dim=4': study.dims sets equation.dim in its runs" in err, err


def _trained_on(equation: dict) -> str:
    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    return C.validate({**data, "equation": {**data["equation"], **equation}}).to_yaml()


def test_a_network_file_of_another_equation_instance_is_refused(tmp_path, capsys):
    """Only the equation's name and dimension were compared, so a soft-constraint network
    of instance seed 7 was studied as the trained network of the study's (seed 1, hard)."""
    _network_file(tmp_path / "net.hdf5", config_attr=_trained_on({"seed": 7, "constraint": "soft"}))
    err = _refused_before_any_work([_estimator(tmp_path, tmp_path / "net.hdf5", **ONE_CELL), "-o",
                                    tmp_path / "e.h5", "--json", tmp_path / "e.json"], tmp_path, capsys)
    assert ("its network was trained on another instance of poisson_two_body (equation.seed: 7 in the file, 1 in "
            "the study; equation.constraint: 'soft' in the file, 'hard' in the study)") in err, err


def test_a_network_file_of_the_same_instance_recorded_without_a_default_key_is_studied(tmp_path):
    """A file whose ``equation:`` leaves out a key at its default (``constraint: hard``) is
    the same instance: the recorded section is resolved before it is compared."""
    text = _trained_on({})
    data = yaml.safe_load(text)
    assert data["equation"].pop("constraint") == "hard"
    _network_file(tmp_path / "net.hdf5", config_attr=yaml.safe_dump(data))
    assert main(["study", str(_estimator(tmp_path, tmp_path / "net.hdf5", **ONE_CELL)),
                 "-o", str(tmp_path / "e.h5")]) == 0


def test_the_json_file_is_strict_with_null_for_non_finite_numbers(tmp_path):
    """``json.dumps`` wrote bare NaN/Infinity (a slope's standard error from two values of
    K, the seconds per step of a cell without a step), which strict parsers refuse."""
    path = tmp_path / "x.json"
    write_strict_json(str(path), {"a": [math.nan, math.inf, -math.inf, 1.5], "b": {"c": np.float32("nan"),
                            "d": np.float32(0.5), "e": np.int64(3)}, "f": (None, "NaN", True), 4: 1})
    strict = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"bare {name} in the JSON"))
    assert strict == {"a": [None, None, None, 1.5], "b": {"c": None, "d": 0.5, "e": 3}, "f": [None, "NaN", True],
                      "4": 1}
    cfg = _estimator(tmp_path, **{"noise: [independent, shared]": "noise: [independent]"})
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5"), "--json", str(tmp_path / "e.json")]) == 0
    text = (tmp_path / "e.json").read_text()
    payload = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in the JSON"))
    # two K: the slope's SE is the one the points' own errors give (the scatter of two
    # points gave none, NaN, written as null)
    rows = sorted((r for r in payload["records"] if (r["quantity"], r["loss"]) == ("residual", "biased")),
                  key=lambda r: r["samples"])
    expected = loglog_slope([r["samples"] for r in rows], [r["variance"] for r in rows],
                            [r["variance_se"] for r in rows])
    entry = payload["slopes"]["residual/biased/independent/d=3/sigma=0.1"]
    assert (entry["variance_slope"], entry["variance_slope_se"]) == pytest.approx(expected, rel=1e-12)
    with h5py.File(tmp_path / "e.h5") as fh:  # the file's JSON attributes, "as in --json"
        for key in ("slopes", "comparisons", "pretrained_rel_l2"):
            json.loads(fh.attrs[key], parse_constant=lambda name: pytest.fail(f"bare {name} in /{key}"))  # noqa: B023


def test_an_init_files_own_error_is_its_pretrained_rel_l2(tmp_path):
    """``pretrained_rel_l2`` (d → rel. L2 of the studied network) was {} for a network
    read from a file although the file's /final rel_l2 is that network's error."""
    _network_file(tmp_path / "net.hdf5")
    with h5py.File(tmp_path / "net.hdf5", "a") as fh:
        fh.create_group("final").attrs["rel_l2"] = 0.125
    cfg = _estimator(tmp_path, tmp_path / "net.hdf5", **ONE_CELL)
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5"), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["pretrained_rel_l2"] == {"3": 0.125}
    with h5py.File(tmp_path / "e.h5") as fh:
        assert json.loads(fh.attrs["pretrained_rel_l2"]) == {"3": 0.125}


@pytest.mark.parametrize("suffix", ["", ".ckpt"])
def test_a_cell_file_that_is_a_directory_is_refused_before_any_cell_runs(tmp_path, capsys, suffix):
    """A directory where a cell's result (or checkpoint) goes: the cell ran, then writing
    its result raised IsADirectoryError (a traceback, exit 1)."""
    from pinnlab.studies import expand_cells

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    study = C.load(cfg).study
    cell = expand_cells(study.variants, study.grid)[1]
    blocked = tmp_path / "t.h5.cells" / f"{cell.key}.h5{suffix}"
    blocked.mkdir(parents=True)
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pinnlab: error: {str(blocked)!r} (cell {cell.label}) exists and is not a regular file; "
                   "remove it"), err  # (no "config error:": a file system matter)
    assert [p.name for p in (tmp_path / "t.h5.cells").iterdir()] == [blocked.name]  # no cell ran
    assert not (tmp_path / "t.h5").exists()
    # the finished cells before it are not announced as skipped above the refusal
    blocked.rmdir()
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5")]) == 0
    (tmp_path / "t.h5").unlink()
    finished = tmp_path / "t.h5.cells" / f"{cell.key}.h5"
    finished.unlink()
    Path(str(finished) + suffix).mkdir()
    capsys.readouterr()
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "skip finished cell" not in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("grid, expected", [
    # the same cell was computed twice and counted as two seeds
    ("{trainer.seed: [0, '0']}", "cells biased {'trainer.seed': 0} and biased {'trainer.seed': '0'} are the same "
                                 "run (trainer.seed: 0 and '0' are the same value); list each value once"),
    ("{trainer.lr: [0.001, '1e-3']}", "(trainer.lr: 0.001 and '1e-3' are the same value)"),
    # true == 1 in Python: "true is listed twice" hid that true is no seed
    ("{trainer.seed: [1, true]}", "trainer.seed = True: input should be a valid integer"),
])
def test_grid_values_that_validate_to_one_value_are_refused(tmp_path, capsys, grid, expected):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    assert main(["study", str(cfg), f"study.grid={grid}", "study.columns=null", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not Path(str(out) + ".cells").exists() or not any(Path(str(out) + ".cells").iterdir())


def test_a_study_sigma_that_rounds_to_0_in_float32_is_refused(tmp_path, capsys):
    """As estimator.sigma is (solve refused it, the study ran and wrote NaN)."""
    cfg = _estimator(tmp_path, **ONE_CELL)
    err = _refused_before_any_work([cfg, "study.sigmas=[1.0e-46]", "trainer.dtype=float32", "-o",
                                    tmp_path / "s.h5"], tmp_path, capsys)
    assert "study.sigmas = 1e-46: rounds to 0 in float32" in err, err


def test_an_estimator_study_of_non_finite_records_exits_1(tmp_path, capsys):
    """σ = 1e-200: every bias² and variance was NaN, the study exited 0 and its plot then
    failed as "damaged". Now the file is written and the exit code is 1 with one line."""
    cfg = _estimator(tmp_path, **ONE_CELL)
    out = tmp_path / "s.h5"
    assert main(["study", str(cfg), "study.sigmas=[1.0e-200, 0.1]", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pinnlab: error: 6 of 12 records have a non-finite bias² or variance (at σ = 1e-200: "), err
    assert out.is_file()
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0


def test_an_estimator_study_with_records_of_zero_variance_warns(tmp_path, capsys, monkeypatch):
    """Every replicate alike (variance exactly 0, as at a σ that saturates the network) is
    a study without a variance slope there: one warning line naming the σ, exit 0 (the
    numbers are what they are), and no numpy "divide by zero" on stderr."""
    from pinnlab.studies import estimator_study

    run = estimator_study.run_estimator_study

    def saturated(spec, **kwargs):
        out = run(spec, **kwargs)
        for r in out["records"]:
            r["variance"] = r["variance_se"] = 0.0
        return out

    monkeypatch.setattr(estimator_study, "run_estimator_study", saturated)
    cfg = _estimator(tmp_path, **ONE_CELL)
    assert main(["study", str(cfg), "study.sigmas=[0.5]", "-o", str(tmp_path / "s.h5")]) == 0
    err = capsys.readouterr().err
    assert "warning: 6 of 6 records have a variance of exactly 0 (every replicate alike, at σ = 0.5: " in err, err
    assert "divide by zero" not in err, err


def test_an_override_a_variant_sets_is_named_even_where_it_breaks_the_base_config(tmp_path, capsys):
    """loss.switch_step=2 with the study's loss.kind: biased was refused as "switch settings
    need loss.kind = hybrid", not as the override the hybrid variant ignores."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2").replace(
        "unbiased: [loss.kind=unbiased]", "hybrid: [loss.kind=hybrid, loss.switch_step=1]"))
    err = _refused_before_any_work([cfg, "loss.switch_step=2", "-o", tmp_path / "t.h5"], tmp_path, capsys)
    assert "override 'loss.switch_step=2': variant hybrid sets loss.switch_step in its runs" in err, err
    err = _refused_before_any_work([cfg, "estimator.sigma=-1", "-o", tmp_path / "t.h5"], tmp_path, capsys)
    assert "estimator.sigma = -1: input should be greater than 0" in err, err


def test_training_settings_of_a_study_that_trains_nothing_are_refused(tmp_path, capsys):
    """study.init fresh: trainer.steps=5 trainer.lr=5 loss.kind=unbiased estimator.sigma=0.3
    gave records bit-identical to a run without them. The network's seed, dtype, device
    and the estimator settings the study's Stein estimates share are read; an override
    study.init=fresh drops the config's own pretraining settings."""
    cfg = _estimator(tmp_path, **ONE_CELL)
    for override, key in (("trainer.steps=5", "trainer.steps"), ("trainer.lr=5", "trainer.lr"),
                          ("loss.kind=unbiased", "loss.kind"), ("estimator.sigma=0.3", "estimator.sigma")):
        err = _refused_before_any_work([cfg, override, "-o", tmp_path / "s.h5"], tmp_path, capsys)
        assert f"{key}: has no effect in an estimator study with study.init: 'fresh', which trains nothing" in err
    for kept in ("trainer.seed=3", "trainer.dtype=float32", "estimator.chunk_size=2"):
        assert main(["study", str(cfg), kept, "-o", str(tmp_path / "s.h5"), "--overwrite"]) == 0, kept
    trained = tmp_path / "trained.yaml"
    trained.write_text(cfg.read_text().replace("init: fresh", "init: trained").replace(
        "trainer: {dtype: float64}", "trainer: {steps: 2, lr: 0.01, dtype: float64}"))
    assert C.load(trained, ["study.init=fresh"]).resolved()["trainer"].get("steps") == C.load(cfg).resolved()[
        "trainer"].get("steps")  # the config's steps: 2 dropped by the override
