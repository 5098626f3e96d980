"""Fifth mutation audit of the training study (pinnlab/studies/training_study.py) and the
``study:`` spec (pinnlab/studies/spec.py): what the earlier audits left open. Every
cell's solve is replaced by a stub, so nothing trains here."""

from __future__ import annotations

import math
import warnings

import h5py
import pytest

import pinnlab
from pinnlab.config import ConfigError
from pinnlab.io import CheckpointError
from pinnlab.studies import training_study
from pinnlab.studies.spec import StudySection, swept_by, validate_runs
from pinnlab.studies.training_study import _metrics_or_none, _refuse_repeated_cells, expand_cells, summarise
from tests.test_training_study_command_fourth_audit import _config
from tests.test_training_study_third_audit import _cell_file


def test_a_cell_with_no_measured_rate_has_no_seconds_per_step(tmp_path):
    """A cell file whose /final steps_per_second is 0 (no step was timed) gives NaN
    seconds per step, not 0 s, which the mean over seeds would read as "free" (caught:
    0.0 returned)."""
    path = tmp_path / "cell.h5"
    _cell_file(path, steps_per_second=0.0)
    metrics = _metrics_or_none(path)
    assert (metrics["rel_l2"], metrics["status"]) == (0.5, "ok")
    assert math.isnan(metrics["seconds_per_step"])


def _ran(monkeypatch):
    """run_cell replaced by a stub; returns the outputs it was called for."""
    ran = []

    def run_cell(config_path, overrides, output, threads):
        ran.append(output)
        return {"rel_l2": 0.5, "best_rel_l2": 0.25, "seconds_per_step": 0.5, "peak_mem_mb": 1.0, "status": "ok"}

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    return ran


def test_a_cell_file_of_another_config_beside_a_damaged_checkpoint_is_refused(tmp_path, monkeypatch):
    """A finished cell file of another config is refused (without ``overwrite``) even when
    a damaged checkpoint of the cell lies beside it: the refusal names the cell file, and
    no cell runs (caught: the checkpoint's state looked at in place of the file's, so the
    damaged checkpoint, "start over", replaced the other config's cell without a word)."""
    ran = _ran(monkeypatch)
    cfg = str(_config(tmp_path))
    cell = expand_cells({"a": []}, {"trainer.seed": [0]})[0]
    other = validate_runs(cfg, {"x": ["trainer.lr=0.5"]}, ())["x"]
    cells = tmp_path / "cells"
    cells.mkdir()
    path = cells / f"{cell.key}.h5"
    _cell_file(path)
    with h5py.File(path, "a") as fh:
        fh.attrs["config"] = training_study.run_config(other).to_yaml()
        fh.attrs["pinnlab_version"] = pinnlab.__version__
    (cells / f"{cell.key}.h5.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        training_study.run_training_study(cfg, [cell], cells)
    assert str(err.value).startswith(f"{str(path)!r} (cell a {{'trainer.seed': 0}}) was computed for a different "
                                     "configuration")
    assert ran == []
    records = training_study.run_training_study(cfg, [cell], cells, overwrite=True)
    assert ran == [str(path)] and records[0]["rel_l2"] == 0.5



def test_a_group_of_one_ok_run_has_a_nan_std_without_a_warning():
    """One ok run (the other diverged): its rel_l2 is the mean and the std is NaN, computed
    without numpy's "Degrees of freedom <= 0" RuntimeWarning, which ``pinnlab study``
    printed under its table (caught: the std taken for one run too)."""
    records = [{"variant": "a", "rel_l2": r, "best_rel_l2": r, "seconds_per_step": 1.0, "peak_mem_mb": 2.0,
                "status": s} for r, s in ((0.25, "ok"), (9.0, "nonfinite"))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [row] = summarise(records, None)
    assert (row["runs"], row["left_out"], row["rel_l2_mean"]) == (1, 1, 0.25)
    assert all(math.isnan(row[f"{m}_std"]) for m in ("rel_l2", "best_rel_l2", "seconds_per_step", "peak_mem_mb"))


def test_a_variant_override_below_an_earlier_one_refines_it_and_is_accepted():
    """``trainer={...}`` then ``trainer.lr`` refines the section (the later lies below the
    earlier): accepted, as documented; the other order is refused (caught: either order
    refused, as grid keys are)."""
    section = StudySection(kind="training", variants={"a": ["trainer={steps: 2}", "trainer.lr=0.1"]})
    assert section.variants == {"a": ["trainer={steps: 2}", "trainer.lr=0.1"]}
    with pytest.raises(ValueError, match="variant a: 'trainer={steps: 2}' sets the key of the earlier "
                                         "'trainer.lr=0.1' again"):
        StudySection(kind="training", variants={"a": ["trainer.lr=0.1", "trainer={steps: 2}"]})


def test_an_override_with_spaces_around_its_key_still_sets_the_swept_key():
    """``swept_by`` reads the key of `` trainer.seed =3`` as ``trainer.seed`` (the override
    is applied so), so it is found to set the swept key (caught: the key's spaces kept,
    so the override slipped past the refusal and was silently replaced in every run)."""
    assert swept_by(" trainer.seed =3", ["trainer.seed"]) == "trainer.seed"
    assert swept_by(" trainer.seed.x =3", ["trainer.seed"]) == "trainer.seed"
    assert swept_by(" trainer.lr =3", ["trainer.seed"]) is None


def test_a_training_study_runs_one_worker_unless_told_otherwise():
    """study.workers defaults to 1 (one process, the cells one after the other) and is
    recorded as such (caught: another default, which started a pool)."""
    section = StudySection(kind="training", variants={"a": []})
    assert section.workers == 1 and section.model_dump()["workers"] == 1


def test_two_cells_of_one_run_differing_in_two_keys_name_both_separated_by_a_comma(tmp_path):
    """The refusal of two cells that are one run names each grid key whose value differs
    (in value or type), in the grid's order, joined by ", " (caught: another separator)."""
    cells = expand_cells({"a": []}, {"trainer.lr": [1, 1.0], "trainer.seed": [0, "0"]})
    pair = [cells[0], cells[3]]
    configs = validate_runs(str(_config(tmp_path)), {c.label: c.overrides for c in pair}, ())
    with pytest.raises(ConfigError) as err:
        _refuse_repeated_cells(pair, configs)
    assert str(err.value) == ("study.grid: cells a {'trainer.lr': 1, 'trainer.seed': 0} and a {'trainer.lr': 1.0, "
                              "'trainer.seed': '0'} are the same run (trainer.lr: 1 and 1.0, trainer.seed: 0 and "
                              "'0' are the same value); list each value once")


def test_a_readable_checkpoint_of_another_format_is_refused_naming_its_path_once(tmp_path, monkeypatch):
    """A cell checkpoint that reads as a dictionary but is of no known format is refused
    (without ``overwrite``) before any cell runs, in one line naming the checkpoint once:
    ``'<ckpt>' (cell ...) has an unknown format`` (caught: check_config's own
    "checkpoint '<ckpt>'" prefix kept, which named the path twice)."""
    import torch

    ran = _ran(monkeypatch)
    cfg = str(_config(tmp_path))
    cell = expand_cells({"a": []}, {"trainer.seed": [0]})[0]
    cells = tmp_path / "cells"
    cells.mkdir()
    checkpoint = cells / f"{cell.key}.h5.ckpt"
    torch.save({"step": 3}, checkpoint)
    with pytest.raises(CheckpointError) as err:
        training_study.run_training_study(cfg, [cell], cells)
    assert str(err.value) == f"{str(checkpoint)!r} (cell a {{'trainer.seed': 0}}) has an unknown format"
    assert ran == []
