"""Seventh mutation audit of the training study (pinnlab/studies/training_study.py): what
the earlier audits left open. Nothing trains here: the study's cells are stubbed, or a
cell file is written by hand."""

from __future__ import annotations

import pytest

from pinnlab.studies import training_study
from tests.test_training_study_command_fourth_audit import _config
from tests.test_training_study_third_audit import _cell_file


@pytest.mark.parametrize("stored", ["equation: {name: [unclosed", "- a list\n- of settings\n"])
def test_a_cell_file_whose_config_is_no_yaml_mapping_is_a_cell_to_compute_again(tmp_path, stored):
    """A cell file of this pinnlab version whose recorded config is not YAML, or YAML of no
    mapping, cannot be compared: (False, ""), computed again without a refusal, as any
    unreadable cell file (caught: the YAMLError not caught, or a list taken for a config,
    either of which ended the study in a traceback)."""
    import h5py

    import pinnlab
    from pinnlab.config import load
    from pinnlab.studies.training_study import _cell_file_state

    config = load(str(_config(tmp_path)), ["trainer.seed=0"])
    path = tmp_path / "cell.h5"
    _cell_file(path)
    with h5py.File(path, "a") as fh:
        fh.attrs["config"] = stored
        fh.attrs["pinnlab_version"] = pinnlab.__version__
    assert _cell_file_state(path, config) == (False, "")


def test_a_lone_damaged_cell_checkpoint_is_no_refusal_the_cell_runs(tmp_path, monkeypatch):
    """A cell with no result file but a damaged ``<cell>.ckpt`` (a kill while it was being
    written) is run, starting over, without ``overwrite`` and without a refusal, as
    run_cell documents (caught: the unreadable checkpoint reported as one of another
    config, which stopped the whole study until --overwrite)."""
    from tests.test_training_study_spec_fifth_audit import _ran

    ran = _ran(monkeypatch)
    cell = training_study.expand_cells({"a": []}, {"trainer.seed": [0]})[0]
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / f"{cell.key}.h5.ckpt").write_bytes(b"not a checkpoint")
    said = []
    records = training_study.run_training_study(str(_config(tmp_path)), [cell], cells, progress=said.append)
    assert ran == [str(cells / f"{cell.key}.h5")] and records[0]["rel_l2"] == 0.5
    assert said == ["finished cell a {'trainer.seed': 0}: rel_l2=5.000e-01"]

