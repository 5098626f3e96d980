"""Fourth mutation audit of the training study (pinnlab/studies/training_study.py) and
second of ``pinnlab study`` (pinnlab/studies/command.py): what the earlier audits left
open. Every cell's solve is replaced by a stub, so nothing trains here."""

from __future__ import annotations

import hashlib
import json

import h5py
import pytest

from pinnlab.cli import main
from pinnlab.config import ConfigError, apply_overrides
from pinnlab.studies import training_study
from pinnlab.studies.spec import validate_runs
from pinnlab.studies.training_study import (
    _metrics_or_none,
    _refuse_repeated_cells,
    expand_cells,
    markdown_table,
    summarise,
)
from tests.studies.test_studies import TINY_TRAINING


def test_a_cell_key_is_the_first_16_hex_digits_of_the_sha256_of_its_variant_and_overrides():
    """The cell file's name is sha256(JSON [variant, overrides])[:16]: a finished study's
    cells are found again by it (caught: another length, which recomputed every cell)."""
    cell = expand_cells({"a": ["loss.kind=biased"]}, {"trainer.seed": [0]})[0]
    text = json.dumps(["a", ["loss.kind=biased", "trainer.seed=0"]])
    assert cell.key == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert len(cell.key) == 16


def test_a_none_or_bool_grid_value_reaches_its_cell_as_that_value():
    """A non-string grid value is written as JSON, which YAML reads back as the same value:
    None stays None, not the string 'None' (caught: written with str())."""
    cells = expand_cells({"a": []}, {"k": [None, True, 0.001, [1, 2]]})
    assert [apply_overrides({}, c.overrides)["k"] for c in cells] == [None, True, 0.001, [1, 2]]
    assert cells[0].overrides == ("k=null",)


def test_a_cell_file_without_final_is_a_cell_to_compute_again(tmp_path):
    """A cell file with no /final group (a write cut short) gives None, so the cell is
    computed again (caught: KeyError not caught, the study ended in a traceback)."""
    path = tmp_path / "cell.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["status"] = "ok"
    assert _metrics_or_none(path) is None


def _config(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    return cfg


def test_a_repeated_run_of_equal_values_of_two_types_names_both_values(tmp_path):
    """trainer.lr: [1, 1.0] is one run listed twice; the refusal names the two values,
    which compare equal but are not the same type (caught: only values that compare
    unequal named, so the message read "( are the same value)")."""
    cells = expand_cells({"a": []}, {"trainer.lr": [1, 1.0]})
    configs = validate_runs(str(_config(tmp_path)), {c.label: c.overrides for c in cells}, ())
    with pytest.raises(ConfigError) as err:
        _refuse_repeated_cells(cells, configs)
    assert str(err.value) == ("study.grid: cells a {'trainer.lr': 1} and a {'trainer.lr': 1.0} are the same run "
                              "(trainer.lr: 1 and 1.0 are the same value); list each value once")



def test_a_resumed_study_runs_its_cells_with_the_threads_and_workers_it_started_with(tmp_path, monkeypatch):
    """Of 4 cells (2 finished) with workers=8 on 12 cores: a pool of 2 processes (no more
    than the cells left), each cell with 12 // min(8, 4) = 3 threads (the study's cell
    count, not the cells left, so a resumed cell runs as it started); the progress lines
    say a cell's status when not ok and the checkpoint step it continued from, and a
    finished cell's stale checkpoint is removed (caught: a pool of 8; 6 threads from the
    cells left; the status or the step left out; the stale checkpoint kept for good)."""
    cells = expand_cells({"a": []}, {"trainer.seed": [0, 1, 2, 3]})
    finished = {cells[0].key, cells[2].key}
    done = {"rel_l2": 0.5, "best_rel_l2": 0.25, "seconds_per_step": 0.5, "peak_mem_mb": 1.0, "status": "ok"}
    monkeypatch.setattr(training_study, "_cell_file_state", lambda path, config: (path.stem in finished, ""))
    monkeypatch.setattr(training_study, "_metrics_or_none", lambda path: dict(done))
    monkeypatch.setattr(training_study.os, "cpu_count", lambda: 12)
    monkeypatch.setattr(training_study.os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # (a limit the user set caps the threads)
    threads, pools = [], []

    def run_cell(config_path, overrides, output, n):
        threads.append(n)
        seed = int(overrides[-1].split("=")[1])
        return {**done, "status": "nonfinite" if seed == 1 else "ok", "continued_from": 7 if seed == 3 else None}

    class Pool:
        def __init__(self, processes, initializer, initargs):
            pools.append(processes)

        def imap_unordered(self, job, todo):
            return map(job, todo)

        def terminate(self):
            pass

        def join(self):
            pass

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    monkeypatch.setattr(training_study.multiprocessing, "get_context", lambda method: type("C", (), {"Pool": Pool}))
    lines = []
    stale = tmp_path / "cells" / f"{cells[0].key}.h5.ckpt"  # left by a kill after the cell's result was written
    stale.parent.mkdir()
    stale.write_bytes(b"")
    records = training_study.run_training_study(str(_config(tmp_path)), cells, tmp_path / "cells", workers=8,
                                                progress=lines.append)
    assert (pools, threads) == ([2], [3, 3])
    assert not stale.exists()
    assert [r["status"] for r in records] == ["ok", "nonfinite", "ok", "ok"]
    assert lines == ["skip finished cell a {'trainer.seed': 0}", "skip finished cell a {'trainer.seed': 2}",
                     "finished cell a {'trainer.seed': 1}: rel_l2=5.000e-01 (status nonfinite)",
                     "finished cell a {'trainer.seed': 3} (continued from its checkpoint at step 7): rel_l2=5.000e-01"]


def test_a_cell_file_that_recorded_the_study_section_is_reused(tmp_path):
    """A cell file written when cells still recorded the ``study:`` section holds this
    cell's run config otherwise: it is reusable, compared without the section (caught:
    compared with it, so every such cell was refused as of a different configuration)."""
    import pinnlab
    from pinnlab.studies.training_study import _cell_file_state, run_config

    cell = expand_cells({"a": []}, {"trainer.seed": [0]})[0]
    config = validate_runs(str(_config(tmp_path)), {cell.label: cell.overrides}, ())[cell.label]
    assert "study" in config.sections
    path = tmp_path / "cell.h5"
    for written in (config, run_config(config)):
        with h5py.File(path, "w") as fh:
            fh.attrs["config"] = written.to_yaml()
            fh.attrs["pinnlab_version"] = pinnlab.__version__
        assert _cell_file_state(path, config) == (True, "")


def test_a_record_without_a_status_is_counted_as_ok():
    """summarise counts a record with no ``status`` key (a record of before statuses) as
    ok, in the mean (caught: only status == "ok" counted, so such a study had no ok run)."""
    records = [{"variant": "a", "rel_l2": r, "best_rel_l2": r, "seconds_per_step": 1.0, "peak_mem_mb": 2.0}
               for r in (0.25, 0.75)]
    [row] = summarise(records, None)
    assert (row["runs"], row["left_out"], row["rel_l2_mean"], row["column"]) == (2, 0, 0.5, None)


def test_the_markdown_table_has_one_separator_per_column_and_a_dash_for_a_missing_cell():
    """Two variants, two column values, one (variant, value) pair absent: the separator
    row has one ``---|`` per column (not per variant), the absent cell is "—", a line
    break in a name is a space (caught: the separator sized by the variants; the absent
    cell empty; the line break kept, which split the row)."""
    row = {"runs": 2, "left_out": 0, "rel_l2_mean": 0.5, "rel_l2_std": 0.25}
    summary = [{"variant": "a\nb", "column": 3, **row}, {"variant": "a\nb", "column": 4, **row},
               {"variant": "c", "column": 3, **row}]
    table = markdown_table(summary, "k").splitlines()
    assert table == ["| method | k=3 | k=4 |", "|---|---|---|",
                     "| a b | 5.000e-01 ± 2.5e-01 | 5.000e-01 ± 2.5e-01 |", "| c | 5.000e-01 ± 2.5e-01 | — |"]
    summary = [{"variant": v, "column": 3, **row} for v in ("a", "b", "c")]
    assert markdown_table(summary, "k").splitlines()[1] == "|---|---|"



def test_the_json_file_may_not_be_the_cell_directory(tmp_path, monkeypatch, capsys):
    """``--json STUDY.h5.cells`` names the directory the study makes for its cells: refused
    in one line before any cell runs (caught: the cell directory not among the taken
    outputs, so the study ran and its JSON clashed with its cells)."""
    ran = []
    monkeypatch.setattr(training_study, "run_cell", lambda *args: ran.append(args))
    out = tmp_path / "t.h5"
    assert main(["study", str(_config(tmp_path)), "-o", str(out), "--json", f"{out}.cells"]) == 2
    err = capsys.readouterr().err
    assert f"{str(out) + '.cells'!r} (--json) is the same file as" in err and "where the study keeps its cells" in err
    assert ran == []
