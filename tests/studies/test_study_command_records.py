"""What ``pinnlab study`` records and refuses beyond the other study tests: the pretrained
network's own error, a network file checked at every studied dimension, an exit code of 1
for a non-finite bias² alone, and where the study file says its cells are."""

from __future__ import annotations

import json
import os

import h5py

from pinnlab.cli import main
from pinnlab.studies import estimator_study, training_study
from tests.studies.test_studies import TINY_TRAINING, TRAINED_ESTIMATOR, _network_file
from tests.studies.test_study_grid_and_summary import _stub_cells
from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator, _refused_before_any_work


def spy_on_train(monkeypatch) -> list:
    """Make ``pinnlab.solvers.train`` record every result it returns in the returned list."""
    import pinnlab.solvers

    results = []
    train = pinnlab.solvers.train

    def spy(*args, **kwargs):
        results.append(train(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(pinnlab.solvers, "train", spy)
    return results


def test_a_pretrained_networks_error_is_its_final_relative_l2(tmp_path, monkeypatch):
    """``pretrained_rel_l2`` is the final relative L2 error of the network the study
    pretrained (the one it evaluates), in the file and the JSON."""
    results = spy_on_train(monkeypatch)
    cfg = _estimator(tmp_path, base=TRAINED_ESTIMATOR, **ONE_CELL)
    out, js = tmp_path / "e.h5", tmp_path / "e.json"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == 0
    (result,) = results
    final = result.final
    assert final.rel_l2 != final.rel_l1
    assert json.loads(js.read_text())["pretrained_rel_l2"] == {"3": final.rel_l2}
    with h5py.File(out) as fh:
        assert json.loads(fh.attrs["pretrained_rel_l2"]) == {"3": final.rel_l2}


def test_a_network_file_is_refused_unless_it_fits_every_studied_dimension(tmp_path, capsys):
    """A network trained at d = 3 is not the network of the study's d = 4 (its first
    layer has 3 inputs): refused in one line though d = 3 is studied too."""
    _network_file(tmp_path / "net.hdf5")
    cfg = _estimator(tmp_path, tmp_path / "net.hdf5", **ONE_CELL)
    err = _refused_before_any_work([cfg, "study.dims=[3, 4]", "-o", tmp_path / "s.h5"], tmp_path, capsys)
    assert "its network was trained on poisson_two_body at d=3, the study is of poisson_two_body at d=3, 4" in err, err


def test_a_non_finite_bias2_alone_exits_1(tmp_path, capsys, monkeypatch):
    """A record whose variance is finite but whose bias² is NaN is not a study either:
    the file is written, the exit code is 1 and the line counts that record."""
    run = estimator_study.run_estimator_study

    def one_nan(spec, **kwargs):
        out = run(spec, **kwargs)
        out["records"][0]["bias2"] = float("nan")
        return out

    monkeypatch.setattr(estimator_study, "run_estimator_study", one_nan)
    cfg = _estimator(tmp_path, **ONE_CELL)
    out = tmp_path / "s.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pinnlab: error: 1 of 6 records have a non-finite bias² or variance (at σ = 0.1: "), err
    assert out.is_file()


def test_the_study_file_records_its_cell_directory_as_an_absolute_path(tmp_path, monkeypatch):
    """``-o t.h5`` from another directory: the recorded cell directory must not depend on
    the directory ``pinnlab plot`` is later run from."""
    _stub_cells(monkeypatch)
    (tmp_path / "run").mkdir()
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    monkeypatch.chdir(tmp_path / "run")
    assert main(["study", str(cfg), "-o", "t.h5"]) == 0
    with h5py.File(tmp_path / "run" / "t.h5") as fh:
        recorded = fh.attrs["cell_dir"]
    assert os.path.isabs(recorded) and recorded == str((tmp_path / "run" / "t.h5.cells").resolve())


def test_boolean_record_values_are_written_as_json_text_not_integers(tmp_path, monkeypatch):
    """A column of true/false (a grid over ``data.train``) is text in the study file, as
    in the config, not the integers 1 and 0 (``True`` is an ``int`` in Python)."""
    _stub_cells(monkeypatch)
    real = training_study.run_training_study

    def flagged(*args, **kwargs):
        return [{**r, "flag": i % 2 == 0} for i, r in enumerate(real(*args, **kwargs))]

    monkeypatch.setattr(training_study, "run_training_study", flagged)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5")]) == 0
    with h5py.File(tmp_path / "t.h5") as fh:
        assert fh["cells/flag"].dtype.kind in "OS"
        assert [v.decode() for v in fh["cells/flag"][...]] == ["true", "false"] * 4


def test_a_file_where_the_cells_go_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    """``STUDY.h5.cells`` is a training study's cell directory: a regular file there is
    named as such before any cell is validated or run."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    (tmp_path / "t.h5.cells").write_text("not a directory")
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pinnlab: error: {str(tmp_path / 't.h5.cells')!r} (where the study keeps its cells) exists and " \
                  "is not a directory", err
    assert not out.exists() and (tmp_path / "t.h5.cells").read_text() == "not a directory"
