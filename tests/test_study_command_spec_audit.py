"""Mutation audit of ``pinnlab study`` (pinnlab/studies/command.py) and its ``study:``
spec (pinnlab/studies/spec.py): what the earlier study tests left open. Nothing trains
here: a training study's cells are stubbed (tests/test_training_study_third_audit.py)
and the spec is validated in-process."""

from __future__ import annotations

import pytest

from pinnlab import config as C
from pinnlab.studies.spec import StudySection


def _section(**study):
    return StudySection.model_validate({"kind": "training", **study})


def test_true_beside_1_is_two_grid_values_but_1_beside_1_0_is_one():
    """``[1, true]`` lists two values (the bool and the int compare equal in Python, but a
    grid over ``data.train`` or a seed reads them apart); ``[1, 1.0]`` lists 1 twice
    (caught: the bool check dropped, which refused ``[1, true]``)."""
    grid = _section(grid={"trainer.seed": [1, True], "data.train": [False, 0]}).grid
    assert [type(v) for v in grid["trainer.seed"]] == [int, bool]
    assert [type(v) for v in grid["data.train"]] == [bool, int]
    with pytest.raises(ValueError, match="1.0 is listed twice"):
        _section(grid={"trainer.seed": [1, 1.0]})


def test_an_estimator_records_key_missing_from_some_records_reads_back_as_nan(tmp_path, monkeypatch):
    """/records holds one dataset per record key (first seen first), in record order over
    the studied dimensions, numbers as float64 and text as text; a key only some records
    have is NaN in the others (caught: filled with 0.0, a value a real record could
    hold). A fresh network has no pretrained error. The estimates are stubbed: closed
    forms of the spec's dimension, so nothing is estimated."""
    import json
    import math

    import h5py
    import numpy as np

    from pinnlab.cli import main
    from pinnlab.studies import estimator_study
    from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator

    def records(spec, **kwargs):
        (d,) = spec.dims
        rows = [{"quantity": "loss", "loss": loss, "noise": "independent", "dim": d, "samples": 4, "sigma": 0.1,
                 "bias2": (i + 1) / 3 + d, "variance": d / 7} for i, loss in enumerate(spec.losses)]
        rows[0]["extra"] = d / 11
        return {"records": rows}

    monkeypatch.setattr(estimator_study, "run_estimator_study", records)
    monkeypatch.setattr(estimator_study, "fit_slopes", lambda rows: {})
    monkeypatch.setattr(estimator_study, "compare_losses", lambda rows: [])
    cfg = _estimator(tmp_path, **ONE_CELL)
    out = tmp_path / "s.h5"
    assert main(["study", str(cfg), "study.dims=[4, 3]", "-o", str(out)]) == 0
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == "estimator_study" and json.loads(fh.attrs["pretrained_rel_l2"]) == {}
        group = fh["records"]
        assert list(group) == sorted(["quantity", "loss", "noise", "dim", "samples", "sigma", "bias2", "variance",
                                      "extra"])  # (h5py lists names sorted)
        assert group["dim"][...].tolist() == [4, 4, 3, 3]
        assert [v.decode() for v in group["loss"][...]] == ["biased", "unbiased"] * 2
        assert group["bias2"].dtype == np.float64
        assert group["bias2"][...].tolist() == [1 / 3 + 4, 2 / 3 + 4, 1 / 3 + 3, 2 / 3 + 3]
        extra = group["extra"][...].tolist()
        assert (extra[0], extra[2]) == (4 / 11, 3 / 11) and math.isnan(extra[1]) and math.isnan(extra[3])


@pytest.mark.parametrize("values, shown", [
    ([1.0, -float("inf")], "-.inf"),
    ([float("inf")], ".inf"),
    ([[0.5, float("nan")]], ".nan"),
    ([{"lr": 0.1}, {"lr": 0.01, "schedule": {"gamma": -float("inf")}}], "-.inf"),
])
def test_a_non_finite_grid_value_is_named_as_yaml_writes_it_even_inside_a_mapping(values, shown):
    """The refusal names the value as the config would spell it (-.inf for minus
    infinity; caught: the sign test flipped), also deep inside a mapping value (caught:
    mappings not searched, so a cell would read the override text 'Infinity')."""
    with pytest.raises(ValueError, match=f"trainer: {shown.replace('.', '[.]')} is not a finite number"):
        _section(grid={"trainer": values})


def _training_config(tmp_path, text=None):
    from tests.studies.test_studies import TINY_TRAINING

    cfg = tmp_path / "train.yaml"
    cfg.write_text(text or TINY_TRAINING.replace("STEPS", "2"))
    return cfg


def test_a_study_without_columns_records_an_empty_columns_attribute(tmp_path, monkeypatch, capsys):
    """``columns`` absent: the study file's ``columns`` attribute is the empty string
    (what ``pinnlab plot`` reads as "no column key"; caught: written as the text 'None',
    a grid key that does not exist), and the tables go to STUDY.md and STUDY.csv."""
    import h5py

    from pinnlab.cli import main
    from tests.studies.test_studies import TINY_TRAINING
    from tests.test_training_study_third_audit import _stub

    _stub(monkeypatch)
    cfg = _training_config(tmp_path, TINY_TRAINING.replace("STEPS", "2").replace("  columns: equation.dim\n", ""))
    out = tmp_path / "t.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    with h5py.File(out) as fh:
        assert fh.attrs["columns"] == "" and fh.attrs["kind"] == "training_study"
        table = fh.attrs["table"]
    assert (tmp_path / "t.md").read_text() == table + "\n" and printed == table + "\n"
    assert table.startswith("| method |")
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("variant,")


def test_the_runs_of_a_study_and_the_keys_it_sets_in_them():
    """An estimator study runs once per listed dimension, in the listed order, labelled
    ``d=D`` (the label the command looks its pretraining up by), else once at the
    config's own dimension; it sets ``equation.dim`` only with ``dims``. A training study
    runs variants × grid in order, its grid keys named before its variants' keys, each
    key named by the first variant that sets it (caught: the last)."""
    from pinnlab.studies.spec import refuse_swept_overrides, study_runs, swept_keys

    base = {"equation": {"name": "poisson_two_body", "dim": 5}, "model": {"width": 4, "depth": 2}}
    study = {"kind": "estimator", "samples": [4], "replicates": 4, "reference_replicates": 4}
    listed = C.validate({**base, "study": {**study, "dims": [4, 2]}})
    own = C.validate({**base, "study": study})
    assert study_runs(listed) == {"d=4": ["equation.dim=4"], "d=2": ["equation.dim=2"]}
    assert study_runs(own) == {"d=5": ["equation.dim=5"]}
    assert swept_keys(listed.study) == {"equation.dim": "study.dims sets"} and swept_keys(own.study) == {}

    training = _section(variants={"a": ["loss.kind=biased", "trainer.lr=0.1"], "b": ["loss.kind=unbiased"]},
                        grid={"trainer.seed": [1, 0], "equation.dim": [3]})
    assert swept_keys(training) == {"trainer.seed": "study.grid sweeps", "equation.dim": "study.grid sweeps",
                                    "loss.kind": "variant a sets", "trainer.lr": "variant a sets"}
    with pytest.raises(C.ConfigError, match=r"^override 'loss={kind: biased}': variant a sets loss\.kind in its "
                                            "runs, after the command line's overrides"):
        refuse_swept_overrides(training, ["model.width=8", "loss={kind: biased}"])
    refuse_swept_overrides(training, ["study.grid={trainer.seed: [2]}", "loss={switch_step: 2}"])


@pytest.mark.parametrize("extra, expected", [
    (["trainer.seed=3"], "pinnlab: error: config error: override 'trainer.seed=3': study.grid sweeps trainer.seed in its runs"),
    (["loss={kind: biased}"], "pinnlab: error: config error: override 'loss={kind: biased}': variant biased sets loss.kind in its "
                              "runs"),
    (["--json", "T.md"], "(--json) is the same file as "),
    (["--json", "T.h5.cells"], "(--json) is the same file as "),
    (["--workers", "0"], "pinnlab: error: --workers must be >= 1"),
])
def test_a_refused_study_is_one_line_and_leaves_the_existing_outputs_as_they_were(tmp_path, monkeypatch, capsys,
                                                                                 extra, expected):
    """Even with --overwrite, a refusal (an override the study would ignore, --json onto
    another output of the study, --workers 0) is exit 2 and one line, and the earlier
    study's file and tables are untouched and no cell directory is made."""
    from pinnlab.cli import main
    from tests.test_training_study_third_audit import _stub

    calls = []
    _stub(monkeypatch)
    monkeypatch.setattr("pinnlab.studies.training_study.run_training_study",
                        lambda *a, **k: calls.append(a) or [])
    cfg = _training_config(tmp_path)
    before = {tmp_path / name: f"earlier {name}".encode() for name in ("t.h5", "t.md", "t.csv")}
    for path, data in before.items():
        path.write_bytes(data)
    args = [str(tmp_path / a.replace("T.", "t.")) if a.startswith("T.") else a for a in extra]
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5"), "--overwrite", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err, err
    assert calls == [] and {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.h5", "t.md", "train.yaml"]


def test_a_training_config_expands_to_its_cells_in_order_with_their_labels_and_overrides(tmp_path):
    """study_runs of TINY_TRAINING: variants outermost in the config's order, then the
    grid keys in the config's order (the last fastest), each run labelled by its variant
    and grid point and overridden by its variant's overrides, then its grid values."""
    from pinnlab.studies.spec import study_runs

    runs = study_runs(C.load(_training_config(tmp_path)))
    expected = {f"{v} {{'equation.dim': {d}, 'trainer.seed': {s}}}": [f"loss.kind={v}", f"equation.dim={d}",
                                                                      f"trainer.seed={s}"]
                for v in ("biased", "unbiased") for d in (3, 4) for s in (0, 1)}
    assert list(runs.items()) == list(expected.items())


@pytest.mark.parametrize("key", ["points", "reference_samples"])
def test_an_estimator_study_of_no_points_or_no_reference_samples_is_refused(key):
    """0 collocation points (or reference samples) has no residual to estimate: refused at
    validation, 1 accepted (caught: the bound lowered to 0)."""
    study = {"kind": "estimator", "samples": [4], "replicates": 4, "reference_replicates": 4}
    base = {"equation": {"name": "poisson_two_body", "dim": 3}}
    with pytest.raises(C.ConfigError, match=rf"study\.{key} = 0: input should be greater than or equal to 1"):
        C.validate({**base, "study": {**study, key: 0}})
    assert getattr(C.validate({**base, "study": {**study, key: 1}}).study, key) == 1


def test_a_network_file_trained_by_deepxde_is_refused_in_one_line(tmp_path, capsys):
    """``study.init: FILE`` of a DeepXDE-trained network (its parameters are named and laid
    out by DeepXDE) is refused before any work, exit 2 and one line, nothing written."""
    import yaml

    from tests.studies.test_studies import TINY_ESTIMATOR, _network_file
    from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator, _refused_before_any_work

    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    recorded = C.validate(data).resolved()
    recorded["trainer"]["backend"] = "deepxde"
    _network_file(tmp_path / "net.hdf5", config_attr=yaml.safe_dump(recorded))
    cfg = _estimator(tmp_path, tmp_path / "net.hdf5", **ONE_CELL)
    err = _refused_before_any_work([cfg, "-o", tmp_path / "s.h5"], tmp_path, capsys)
    assert err.endswith(f"study.init = '{tmp_path / 'net.hdf5'}': its network was trained by DeepXDE, not pinnlab"), err
