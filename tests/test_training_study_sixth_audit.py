"""Sixth mutation audit of the training study (pinnlab/studies/training_study.py): what
the earlier audits left open. Nothing trains here: a cell's training is stubbed, or the
summary and cell-file functions are called on explicit records and files."""

from __future__ import annotations

import h5py
import pytest

from pinnlab.studies import training_study
from pinnlab.studies.training_study import summarise
from tests.test_training_study_command_fourth_audit import _config


def _record(variant, column, rel_l2, status="ok"):
    return {"variant": variant, "k": column, "rel_l2": rel_l2, "best_rel_l2": rel_l2 / 4,
            "seconds_per_step": 2 * rel_l2, "peak_mem_mb": 8 * rel_l2, "status": status}


def test_the_summary_mean_is_the_mean_of_three_skewed_seeds_not_their_median():
    """Three ok seeds 1, 2 and 9 (and one not ok): mean 4 (median 2), sample std √19, for
    every metric scaled alike; left_out counts only the not-ok cell (caught: the median,
    which equals the mean for the two seeds the other tests use; every cell counted as
    left out)."""
    records = [_record("a", 3, r) for r in (1.0, 2.0, 9.0)] + [_record("a", 3, 50.0, "nonfinite")]
    [row] = summarise(records, "k")
    assert (row["runs"], row["left_out"], row["column"]) == (3, 1, 3)
    for metric, scale in (("rel_l2", 1), ("best_rel_l2", 0.25), ("seconds_per_step", 2), ("peak_mem_mb", 8)):
        assert row[f"{metric}_mean"] == pytest.approx(4.0 * scale, rel=1e-15), metric
        assert row[f"{metric}_std"] == pytest.approx(19 ** 0.5 * scale, rel=1e-15), metric


def test_a_cell_sets_torchs_threads_to_its_share_before_it_loads_its_config(tmp_path, monkeypatch):
    """run_cell gives torch the threads the study assigned the cell (its share of the cores)
    first, and at least 1 for a share of 0 (caught: the threads argument ignored, so
    every worker of a pool used every core). The config load is stopped, so nothing runs."""
    import torch

    import pinnlab.config

    class Stop(Exception):
        pass

    def load(path, overrides):
        raise Stop

    monkeypatch.setattr(pinnlab.config, "load", load)
    before = torch.get_num_threads()
    try:
        for threads, expected in ((2, 2), (0, 1)):
            torch.set_num_threads(3)
            with pytest.raises(Stop):
                training_study.run_cell(str(_config(tmp_path)), [], str(tmp_path / "cell.h5"), threads)
            assert torch.get_num_threads() == expected, threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("input_files", ["{not json", "[1, 2]"])
def test_a_cell_file_with_a_damaged_input_files_record_is_computed_again(tmp_path, input_files):
    """A cell file holding this cell's config but an ``input_files`` attribute that is not
    JSON, or JSON of no mapping, cannot be compared: (False, ""), a cell to compute again
    without a refusal, as any unreadable cell file (caught: the JSONDecodeError not
    caught, which ended the study in a traceback; a list compared as digests, which
    refused the cell as one of another configuration). The same file with a readable
    ``input_files`` of {} is reusable."""
    import pinnlab
    from pinnlab.config import load
    from pinnlab.studies.training_study import _cell_file_state, run_config

    config = load(str(_config(tmp_path)), ["trainer.seed=0"])
    path = tmp_path / "cell.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = run_config(config).to_yaml()
        fh.attrs["pinnlab_version"] = pinnlab.__version__
        fh.attrs["input_files"] = input_files
    assert _cell_file_state(path, config) == (False, "")
    with h5py.File(path, "a") as fh:
        fh.attrs["input_files"] = "{}"
    assert _cell_file_state(path, config) == (True, "")


def test_a_cell_file_without_a_status_is_a_cell_to_compute_again(tmp_path):
    """A cell file whose /final metrics are there but whose ``status`` attribute is not (a
    write cut short) cannot say whether its run ended ok: None, computed again (caught:
    a missing status read as "ok", which averaged a run of unknown outcome into the
    table)."""
    from pinnlab.studies.training_study import _metrics_or_none
    from tests.test_training_study_third_audit import _cell_file

    path = tmp_path / "cell.h5"
    _cell_file(path)
    assert _metrics_or_none(path)["status"] == "ok"
    with h5py.File(path, "a") as fh:
        del fh.attrs["status"]
    assert _metrics_or_none(path) is None


def test_a_cells_checkpoint_records_its_input_files_digests(tmp_path, monkeypatch):
    """With trainer.checkpoint_every a cell checkpoints under its run config's identity,
    which holds its observation file's digest (``input_files``), as the study's resume
    check compares it (caught: the config's YAML alone, without the digest, so a
    checkpoint would be resumed after its observation file had changed). Training is
    stubbed: it checkpoints once and stops."""
    import pinnlab.io
    import pinnlab.solvers
    from pinnlab.config import load
    from pinnlab.studies.training_study import run_config
    from tests.studies.test_study_cells_kept import _observations

    data = tmp_path / "obs.npz"
    _observations(data, 1.0)
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + f"data: {{source: {data}, train: true}}\n")
    overrides = ["trainer.checkpoint_every=1", "trainer.seed=0"]
    saved = []

    class Stop(Exception):
        pass

    def train(problem, **kwargs):
        kwargs["on_checkpoint"]("state")
        raise Stop

    monkeypatch.setattr(pinnlab.solvers, "train", train)
    monkeypatch.setattr(pinnlab.io, "save_checkpoint", lambda path, state, optimizer, text: saved.append(text))
    with pytest.raises(Stop):
        training_study.run_cell(str(cfg), overrides, str(tmp_path / "cell.h5"), 1)
    expected = run_config(load(str(cfg), overrides)).identity()
    assert "input_files" in expected and saved == [expected]


def test_a_continued_cells_step_is_for_the_progress_line_only(tmp_path, monkeypatch):
    """A cell continued from its checkpoint says so in its progress line, but its record
    has the same keys as any other cell's, without ``continued_from`` (caught: the key
    kept in the record, so a resumed cell's record had a field the others had not)."""
    from pinnlab.studies.training_study import expand_cells

    def run_cell(config_path, overrides, output, threads):
        metrics = {"rel_l2": 0.5, "best_rel_l2": 0.25, "seconds_per_step": 0.5, "peak_mem_mb": 1.0, "status": "ok"}
        return {**metrics, "continued_from": 7} if overrides[-1] == "trainer.seed=1" else metrics

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    cells = expand_cells({"a": []}, {"trainer.seed": [0, 1]})
    lines = []
    records = training_study.run_training_study(str(_config(tmp_path)), cells, tmp_path / "cells",
                                                progress=lines.append)
    assert [sorted(r) for r in records] == [sorted(["variant", "trainer.seed", "key", "overrides", "rel_l2",
                                                    "best_rel_l2", "seconds_per_step", "peak_mem_mb", "status"])] * 2
    assert lines[1] == "finished cell a {'trainer.seed': 1} (continued from its checkpoint at step 7): rel_l2=5.000e-01"
