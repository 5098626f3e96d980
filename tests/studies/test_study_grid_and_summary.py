"""A training study's grid, the overrides and workers each cell runs with, its summary
and its table, checked without training (the cells' solve is replaced by a stub)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.studies import training_study
from pinnlab.studies.training_study import expand_cells, markdown_table, summarise
from tests.studies.test_studies import TINY_TRAINING


def test_cells_follow_the_variants_then_the_grid_in_the_configs_key_order():
    """Variants outermost, then the grid keys in the order the config lists them (not
    sorted), the last key varying fastest; each cell's overrides are its variant's, then
    its grid point's."""
    cells = expand_cells({"b": ["loss.kind=biased"], "a": ["loss.kind=unbiased"]},
                         {"trainer.seed": [1, 0], "equation.dim": [4, 3]})
    assert [(c.variant, c.assignment) for c in cells] == [
        (v, (("trainer.seed", s), ("equation.dim", d))) for v in ("b", "a") for s in (1, 0) for d in (4, 3)]
    assert cells[0].overrides == ("loss.kind=biased", "trainer.seed=1", "equation.dim=4")
    assert cells[-1].overrides == ("loss.kind=unbiased", "trainer.seed=0", "equation.dim=3")


def test_two_variants_with_the_same_overrides_are_two_cells_with_their_own_files():
    """A control row (two names, the same overrides) is two table rows: each needs its
    own cell file, or the second was taken for the first's finished cell."""
    cells = expand_cells({"control": ["loss.kind=biased"], "baseline": ["loss.kind=biased"]},
                         {"trainer.seed": [0]})
    assert cells[0].overrides == cells[1].overrides
    assert cells[0].key != cells[1].key


def _metrics(rel_l2, status="ok"):
    return {"rel_l2": rel_l2, "best_rel_l2": rel_l2 / 2, "seconds_per_step": 0.5, "peak_mem_mb": 10.0,
            "status": status}


def test_only_ok_cells_are_averaged_and_a_single_one_has_no_spread():
    """invalid_reference (no test error) and nonfinite cells are left out like any cell
    that is not ok; one ok cell is its own mean, and its sample std is undefined: NaN
    (it was 0, which the table showed as "± 0.0e+00", no spread, and now as "(1 run)")."""
    records = [{"variant": "a", "equation.dim": 3, **_metrics(0.2)},
               {"variant": "a", "equation.dim": 3, **_metrics(math.nan, "invalid_reference")},
               {"variant": "a", "equation.dim": 3, **_metrics(5.0, "nonfinite")}]
    (row,) = summarise(records, "equation.dim")
    assert (row["runs"], row["left_out"]) == (1, 2)
    assert row["rel_l2_mean"] == 0.2 and math.isnan(row["rel_l2_std"])
    assert row["best_rel_l2_mean"] == 0.1 and math.isnan(row["best_rel_l2_std"])
    assert markdown_table([row], "equation.dim").splitlines()[2] == "| a | 2.000e-01 (1 run) (2 of 3 not ok, left out) |"


def test_the_table_keeps_the_grids_column_order():
    """Columns as the grid lists them (8, 4, 16 here), sorted neither as numbers nor as text."""
    summary = summarise([{"variant": "a", "equation.dim": d, **_metrics(0.1)} for d in (8, 4, 16)], "equation.dim")
    assert markdown_table(summary, "equation.dim").splitlines()[0] == \
        "| method | equation.dim=8 | equation.dim=4 | equation.dim=16 |"


def _stub_cells(monkeypatch):
    """Replace the solve of a cell by the metrics of its overrides; returns the calls'
    (overrides, threads)."""
    calls = []

    def run_cell(config_path, overrides, output, threads):
        calls.append(list(overrides))
        seed = int(next(o for o in overrides if o.startswith("trainer.seed=")).split("=")[1])
        return _metrics(0.1 * (seed + 1))

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    return calls


def test_two_variants_of_the_same_run_are_both_computed_and_kept_apart(tmp_path, monkeypatch):
    """Only cells of one variant that validate to the same run are refused (a seed counted
    twice); a control row repeating another variant's overrides runs as its own cells."""
    calls = _stub_cells(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    cells = expand_cells({"control": ["loss.kind=biased"], "baseline": ["loss.kind=biased"]}, {"trainer.seed": [0]})
    records = training_study.run_training_study(cfg, cells, tmp_path / "cells")
    assert len(calls) == 2
    assert [r["variant"] for r in records] == ["control", "baseline"]
    assert records[0]["key"] != records[1]["key"]


def test_a_cell_runs_the_command_lines_overrides_then_its_own(tmp_path, monkeypatch):
    """The base overrides come first: a cell's grid value set before them would be
    replaced by a base ``trainer={...}`` (it replaces the whole section)."""
    calls = _stub_cells(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    base = ["trainer={steps: 2, test_points: 50, batch_size: 8, lr: 0.01}"]
    cells = expand_cells({"biased": ["loss.kind=biased"]}, {"trainer.seed": [0, 1]})
    records = training_study.run_training_study(cfg, cells, tmp_path / "cells", base_overrides=base)
    assert calls == [base + list(c.overrides) for c in cells]
    assert [r["rel_l2"] for r in records] == pytest.approx([0.1, 0.2])


def test_the_workers_option_replaces_the_configs(tmp_path, monkeypatch, capsys):
    """``--workers 3`` with ``study.workers: 1`` in the config runs 3 workers; without the
    option the config's count is used; 0 is refused in one line."""
    seen = []
    real = training_study.run_training_study

    def spy(*args, workers, **kwargs):
        seen.append(workers)
        return real(*args, workers=1, **kwargs)

    _stub_cells(monkeypatch)
    monkeypatch.setattr(training_study, "run_training_study", spy)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    assert main(["study", str(cfg), "-o", str(out), "--workers", "3"]) == 0
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    assert seen == [3, 1]
    capsys.readouterr()
    assert main(["study", str(cfg), "-o", str(tmp_path / "u.h5"), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "pinnlab: error: --workers must be >= 1"


def test_the_study_file_holds_every_cell_and_the_summary_with_their_types(tmp_path, monkeypatch, capsys):
    """/cells: one row per cell in grid order, grid values and counts as int64, metrics as
    floats, overrides as JSON text; /summary: mean ± std (ddof 1) over the seeds. The
    table is printed as written to STUDY.md."""
    _stub_cells(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    with h5py.File(out, "r") as fh:
        cells, summary = fh["cells"], fh["summary"]
        assert [v.decode() for v in cells["variant"][...]] == ["biased"] * 4 + ["unbiased"] * 4
        assert cells["equation.dim"].dtype == np.int64 and list(cells["equation.dim"][...]) == [3, 3, 4, 4] * 2
        assert cells["trainer.seed"].dtype == np.int64 and list(cells["trainer.seed"][...]) == [0, 1] * 4
        assert list(cells["rel_l2"][...]) == pytest.approx([0.1, 0.2] * 4)
        assert [v.decode() for v in cells["status"][...]] == ["ok"] * 8
        assert cells["overrides"][0].decode() == '["loss.kind=biased", "equation.dim=3", "trainer.seed=0"]'
        assert list(summary["column"][...]) == [3, 4, 3, 4] and list(summary["runs"][...]) == [2] * 4
        assert list(summary["rel_l2_mean"][...]) == pytest.approx([0.15] * 4)
        assert list(summary["rel_l2_std"][...]) == pytest.approx([np.std([0.1, 0.2], ddof=1)] * 4)
        assert fh.attrs["columns"] == "equation.dim"
    table = (tmp_path / "t.md").read_text()
    assert table.count("\n") == 4 and capsys.readouterr().out == table
