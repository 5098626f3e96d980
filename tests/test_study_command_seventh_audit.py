"""Mutation audit of ``pinnlab study`` (pinnlab/studies/command.py), seventh pass: the
progress lines and where they go, the atomic writes of the study file and its tables,
the one-line refusals (a config error of the config with its overrides, -o a cell's
observations), and what the earlier study tests left open. The estimates and a training
study's cells are stubbed (closed forms, canned records); a pretraining runs its 5 steps."""

from __future__ import annotations

import json

import pytest

from pinnlab.cli import main
from pinnlab.studies import estimator_study
from pinnlab.studies.command import table_paths
from tests.studies.test_studies import TRAINED_ESTIMATOR
from tests.studies.test_study_command_records import spy_on_train
from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator, _refused_before_any_work


def _stub_estimates(monkeypatch):
    """Each studied dimension gives one loss record (bias² 1/d, variance 1/d²); the
    spec's progress callback is called once with ``"estimating d=D"``."""
    def records(spec, progress=None):
        (d,) = spec.dims
        if progress is not None:
            progress(f"estimating d={d}")
        return {"records": [{"quantity": "loss", "loss": "biased", "noise": "independent", "dim": d, "samples": 4,
                             "sigma": 0.1, "bias2": 1 / d, "variance": 1 / d**2}]}

    monkeypatch.setattr(estimator_study, "run_estimator_study", records)
    monkeypatch.setattr(estimator_study, "fit_slopes", lambda rows: {})
    monkeypatch.setattr(estimator_study, "compare_losses", lambda rows: [])


def test_a_pretrained_study_says_what_it_pretrains_and_its_error_on_stderr(tmp_path, monkeypatch, capsys):
    """stderr, in order: the pretraining's dimension and steps, its progress, the pretrained network's
    relative L2 error to 3 significant digits (the error the files record), then the
    study's own progress lines; stdout holds none of them."""
    results = spy_on_train(monkeypatch)
    _stub_estimates(monkeypatch)
    cfg = _estimator(tmp_path, base=TRAINED_ESTIMATOR, **ONE_CELL)
    out, js = tmp_path / "e.h5", tmp_path / "e.json"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == 0
    (result,) = results
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == "pretraining the network at d=3 for 5 steps"
    # the pretraining's own progress (a line at the end, as a solve's log mode writes it)
    assert len(lines) == 4 and lines[1].startswith("train step 5/5 loss=")
    assert lines[2:] == [f"pretrained network: rel_l2={result.final.rel_l2:.3e}", "estimating d=3"]
    assert "pretrain" not in captured.out and "estimating" not in captured.out
    assert json.loads(js.read_text())["pretrained_rel_l2"] == {"3": result.final.rel_l2}


def test_a_failed_write_leaves_the_study_file_it_would_replace(tmp_path, monkeypatch):
    """--overwrite of an existing study file whose writing fails (here its slopes' JSON):
    the old file is untouched and no temporary file is left (the file is written to a
    sibling and renamed; h5py's "w" on the target truncated it first)."""
    import pinnlab.io

    _stub_estimates(monkeypatch)
    cfg = _estimator(tmp_path, **ONE_CELL)
    out = tmp_path / "e.h5"
    out.write_bytes(b"the previous study")

    def broken(value):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pinnlab.io, "strict_json", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["study", str(cfg), "-o", str(out), "--overwrite"])
    assert out.read_bytes() == b"the previous study"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.h5", "est.yaml"]


def test_a_failed_write_of_a_table_leaves_the_table_it_would_replace(tmp_path, monkeypatch, capsys):
    """--overwrite of a training study whose CSV table's writing fails half-way: the old
    STUDY.csv is whole (written to a sibling and renamed, like the study file), and the
    failure is one line naming the table, exit code 1."""
    from pathlib import Path

    from tests.test_study_command_fifth_audit import RECORDS, _canned, _config

    _canned(monkeypatch, RECORDS)
    out = tmp_path / "train.h5"
    md, csv = table_paths(out)
    csv.write_text("the previous table\n")
    write_text = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        if csv.name in self.name:  # (STUDY.csv or a sibling named after it)
            write_text(self, text[:5], *args, **kwargs)
            raise OSError("disk full")
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half_then_full)
    assert main(["study", str(_config(tmp_path)), "-o", str(out), "--overwrite"]) == 1
    monkeypatch.undo()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"pinnlab: error: cannot write {str(csv)!r} (disk full)"), line
    assert csv.read_text() == "the previous table\n"
    assert md.read_text().startswith("| method |")


def test_a_config_error_is_that_of_the_config_with_its_overrides(tmp_path, capsys):
    """A config that does not load without the overrides (trainer.lr: -1), loaded with
    overrides that fix it and break another key: the one line names the key the
    overrides broke, not the one they fixed."""
    cfg = _estimator(tmp_path, **{"trainer: {dtype: float64}": "trainer: {dtype: float64, lr: -1}"})
    args = [cfg, "trainer.lr=0.001", "model.width=0", "-o", tmp_path / "e.h5"]
    err = _refused_before_any_work(args, tmp_path, capsys)
    assert err.startswith("pinnlab: error: config error: ") and "model.width" in err and "trainer.lr" not in err


def test_the_json_file_has_no_checkpoint_to_check(tmp_path, monkeypatch, capsys):
    """--json is written once, at the end: a directory named like its checkpoint
    (``e.json.ckpt``) is nothing of the study's and does not refuse it (it did for -o's)."""
    _stub_estimates(monkeypatch)
    cfg = _estimator(tmp_path, **ONE_CELL)
    js = tmp_path / "e.json"
    (tmp_path / "e.json.ckpt").mkdir()
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5"), "--json", str(js)]) == 0
    assert [r["bias2"] for r in json.loads(js.read_text())["records"]] == [1 / 3]


def test_a_training_studys_progress_goes_to_stderr_and_its_table_to_stdout(tmp_path, monkeypatch, capsys):
    """The cells' progress lines are stderr's (flushed as they come), the table is
    stdout's: ``pinnlab study ... > table.md`` keeps the table alone. The command line's
    overrides reach every cell."""
    from pinnlab.studies import training_study
    from tests.test_study_command_fifth_audit import RECORDS, _config

    seen = {}

    def cells(config, cells, cell_dir, **kwargs):
        seen.update(kwargs)
        kwargs["progress"]("cell 1/2: biased d=3 seed 0 ok")
        return [dict(r) for r in RECORDS]

    monkeypatch.setattr(training_study, "run_training_study", cells)
    out = tmp_path / "train.h5"
    assert main(["study", str(_config(tmp_path)), "trainer.lr=0.002", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "cell 1/2: biased d=3 seed 0 ok\n"
    assert captured.out == table_paths(out)[0].read_text()
    assert list(seen["base_overrides"]) == ["trainer.lr=0.002"]


def test_the_study_file_may_not_be_observations_a_cell_reads(tmp_path, monkeypatch, capsys):
    """A grid of data.source files, one of them an HDF5 file given as -o (with
    --overwrite): refused in one line before any cell (the study file replaced the
    observations the cell trains on; only the base config's data.source was checked for -o)."""
    import torch

    from pinnlab.io.observations import save_observations
    from tests.studies.test_study_cells_kept import ONE_SEED
    from tests.test_study_command_fifth_audit import RECORDS, _canned

    _canned(monkeypatch, RECORDS)
    x = torch.full((12, 3), 0.2, dtype=torch.float64)
    base, in_a = tmp_path / "base.h5", tmp_path / "in_a.h5"
    for path in (base, in_a):
        save_observations(path, x, torch.ones(12, dtype=torch.float64))
    before = in_a.read_bytes()
    cfg = tmp_path / "train.yaml"
    cfg.write_text(ONE_SEED.replace("trainer.seed: [0]", f"data.source: [{in_a}]")
                   + f"data: {{source: {base}, train: true}}\n")
    assert main(["study", str(cfg), "-o", str(in_a), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"output {str(in_a)!r} is data.source, which this run reads" in err, err
    assert in_a.read_bytes() == before and not (tmp_path / "in_a.h5.cells").exists()
