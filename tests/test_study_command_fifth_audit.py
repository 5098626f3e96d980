"""What ``pinnlab study`` writes for a training study (the cells' and summary's datasets
by type, the attributes, the tables, the exit code) from the records its cells return, and
the one-line refusals (exit 2, nothing written) of a study's outputs and options."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.studies import training_study
from pinnlab.studies.command import cell_directory, table_paths
from tests.studies.test_studies import TINY_TRAINING
from tests.studies.test_study_inputs_refused import _estimator, _refused_before_any_work

RECORDS = [
    {"variant": "a", "equation.dim": 3, "seed": 0, "status": "ok", "rel_l2": 0.1, "best_rel_l2": 0.05,
     "seconds_per_step": 2.0, "peak_mem_mb": 1, "flag": True, "blend": [1, 2], "note": None},
    {"variant": "a", "equation.dim": 3, "seed": 1, "status": "ok", "rel_l2": 0.3, "best_rel_l2": 0.15,
     "seconds_per_step": 4.0, "peak_mem_mb": 2.5, "flag": False, "blend": [3, 4], "note": None},
]
"""Two cells of one variant and column: ints, a mixed int/float column, bools, lists, None."""


def _config(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    return cfg


def _canned(monkeypatch, records):
    """The study's cells return ``records`` (copies) without training."""
    def fake(config, cells, cell_dir, **kwargs):
        cell_dir.mkdir(exist_ok=True)
        return [dict(r) for r in records]
    monkeypatch.setattr(training_study, "run_training_study", fake)


def test_a_training_study_file_holds_its_cells_and_summary_by_type(tmp_path, monkeypatch, capsys):
    """Counts and seeds int64, a column of ints and floats float, bools, lists and None as
    JSON text, strings as they are; the attributes and the tables are those of the summary,
    and the table is printed; exit 0 when a cell ended ok."""
    _canned(monkeypatch, RECORDS)
    out, js = tmp_path / "train.h5", tmp_path / "train.json"
    assert main(["study", str(_config(tmp_path)), "-o", str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    summary = training_study.summarise(RECORDS, "equation.dim")
    table = training_study.markdown_table(summary, "equation.dim")
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == "training_study"
        assert fh.attrs["columns"] == "equation.dim"
        assert fh.attrs["cell_dir"] == str(cell_directory(out).resolve())
        assert fh.attrs["table"] == table
        cells = fh["cells"]
        assert set(cells) == set(RECORDS[0])
        assert cells["seed"].dtype == "int64" and list(cells["seed"][...]) == [0, 1]
        assert cells["equation.dim"].dtype == "int64"
        assert cells["peak_mem_mb"].dtype.kind == "f" and list(cells["peak_mem_mb"][...]) == [1.0, 2.5]
        assert [v.decode() for v in cells["flag"][...]] == ["true", "false"]
        assert [json.loads(v) for v in cells["blend"][...]] == [[1, 2], [3, 4]]
        assert [v.decode() for v in cells["note"][...]] == ["null", "null"]
        assert [v.decode() for v in cells["status"][...]] == ["ok", "ok"]
        row = fh["summary"]
        assert row["runs"].dtype == "int64" and list(row["runs"][...]) == [2]
        assert list(row["left_out"][...]) == [0]
        assert row["rel_l2_mean"][0] == pytest.approx(0.2)
        assert row["rel_l2_std"][0] == pytest.approx(math.sqrt(0.02))
    md, csv = table_paths(out)
    assert md.read_text() == table + "\n"
    assert csv.read_text() == training_study.csv_text(summary)
    assert table in printed
    data = json.loads(js.read_text())
    assert data["records"] == RECORDS
    assert data["summary"][0]["runs"] == 2


def test_a_training_study_without_an_ok_cell_is_written_and_exits_1(tmp_path, monkeypatch, capsys):
    """Every cell nonfinite: the file is written, the error names the statuses and the count."""
    _canned(monkeypatch, [{**r, "status": "nonfinite"} for r in RECORDS])
    out = tmp_path / "train.h5"
    assert main(["study", str(_config(tmp_path)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no cell of the study ended ok (status nonfinite in all 2)" in err
    with h5py.File(out) as fh:
        assert list(fh["summary/runs"][...]) == [0] and list(fh["summary/left_out"][...]) == [2]


def test_one_ok_cell_is_enough_for_exit_0(tmp_path, monkeypatch):
    _canned(monkeypatch, [RECORDS[0], {**RECORDS[1], "status": "nonfinite"}])
    assert main(["study", str(_config(tmp_path)), "-o", str(tmp_path / "train.h5")]) == 0


def test_a_file_where_the_cell_directory_goes_is_refused(tmp_path, monkeypatch, capsys):
    """STUDY.h5.cells a file: one line, exit 2, before any cell."""
    _canned(monkeypatch, [])  # (never reached)
    out = tmp_path / "train.h5"
    cell_directory(out).write_text("x")
    assert main(["study", str(_config(tmp_path)), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "(where the study keeps its cells) exists and is not a directory" in err
    assert not out.exists()


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_fewer_than_one_worker_is_refused(tmp_path, monkeypatch, capsys, workers):
    _canned(monkeypatch, [])
    assert main(["study", str(_config(tmp_path)), "-o", str(tmp_path / "t.h5"), "--workers", workers]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "workers", "overwrite"), [
    ([], 1, False), (["--workers", "1"], 1, False), (["--workers", "2", "--overwrite"], 2, True)])
def test_the_workers_and_overwrite_reach_the_cells(tmp_path, monkeypatch, options, workers, overwrite):
    """--workers (1 is accepted) over study.workers (1 in the config), and --overwrite, reach the cells' run."""
    seen = {}

    def fake(config, cells, cell_dir, **kwargs):
        seen.update(kwargs)
        return [dict(r) for r in RECORDS]
    monkeypatch.setattr(training_study, "run_training_study", fake)
    assert main(["study", str(_config(tmp_path)), "-o", str(tmp_path / "t.h5"), *options]) == 0
    assert seen["workers"] == workers and seen["overwrite"] is overwrite


def test_the_cell_dir_attribute_is_absolute_for_a_relative_output(tmp_path, monkeypatch):
    """-o given relative to the working directory: /cell_dir is the absolute STUDY.h5.cells."""
    _canned(monkeypatch, RECORDS)
    cfg = _config(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["study", str(cfg), "-o", "rel.h5"]) == 0
    with h5py.File(tmp_path / "rel.h5") as fh:
        assert fh.attrs["cell_dir"] == str(tmp_path.resolve() / "rel.h5.cells")


def test_the_study_tables_are_refused_without_overwrite(tmp_path, monkeypatch, capsys):
    """An existing STUDY.md (the markdown table) is refused like -o, and replaced with --overwrite."""
    _canned(monkeypatch, RECORDS)
    out = tmp_path / "train.h5"
    md, _ = table_paths(out)
    md.write_text("old")
    cfg = _config(tmp_path)
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    assert "markdown table" in capsys.readouterr().err and md.read_text() == "old" and not out.exists()
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    assert md.read_text().startswith("| method |")


@pytest.mark.parametrize(("attrs", "params", "said"), [
    ({"config": "x"}, False, "not a result file with a trained network (it has no /params group)"),
    ({"config": "x", "status": "nonfinite"}, True, "its training did not end ok (status nonfinite)"),
    ({"config": "x", "status": np.bytes_(b"nonfinite")}, True, "its training did not end ok (status nonfinite)")])
def test_an_init_file_without_a_trained_network_is_one_line(tmp_path, capsys, attrs, params, said):
    """study.init naming a file with no /params, or of a training that did not end ok: exit 2, one line."""
    (tmp_path / "nets").mkdir()
    net = tmp_path / "nets" / "net.h5"
    with h5py.File(net, "w") as fh:
        fh.attrs.update(attrs)
        if params:
            fh.create_dataset("params/w", data=[1.0])
    err = _refused_before_any_work([_estimator(tmp_path, init=str(net)), "-o", tmp_path / "est.h5"],
                                   tmp_path, capsys)
    assert f"config error: study.init = {str(net)!r}: {said}" in err
