"""Eighth mutation audit of the training study (pinnlab/studies/training_study.py) and of
``pinnlab study`` (pinnlab/studies/command.py): what the earlier audits left open. Nothing
trains here: a study's cells and estimates are stubbed, and a cell file or a network
file is written by hand."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

import pinnlab
from pinnlab.cli import main
from pinnlab.studies import training_study
from pinnlab.studies.spec import validate_runs
from pinnlab.studies.training_study import expand_cells, markdown_table, summarise
from tests.test_training_study_command_fourth_audit import _config

DONE = {"rel_l2": 0.5, "best_rel_l2": 0.25, "seconds_per_step": 0.5, "peak_mem_mb": 1.0, "status": "ok"}


def _record(variant, rel_l2, status="ok"):
    return {"variant": variant, "rel_l2": rel_l2, "best_rel_l2": rel_l2, "seconds_per_step": 1.0,
            "peak_mem_mb": 2.0, "status": status}


def test_a_cell_file_whose_config_and_version_are_fixed_length_bytes_is_reused(tmp_path):
    """h5py reads a fixed-length string attribute back as bytes: a cell file whose config
    and pinnlab version were written so holds this cell's run all the same, and is
    reusable (caught: the bytes read with str(), "b'...'", which is no YAML config, so
    every such finished cell was computed again)."""
    from pinnlab.studies.training_study import _cell_file_state, run_config

    cell = expand_cells({"a": []}, {"trainer.seed": [0]})[0]
    config = validate_runs(str(_config(tmp_path)), {cell.label: cell.overrides}, ())[cell.label]
    path = tmp_path / "cell.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = np.bytes_(run_config(config).to_yaml().encode())
        fh.attrs["pinnlab_version"] = np.bytes_(pinnlab.__version__.encode())
    with h5py.File(path, "r") as fh:
        assert isinstance(fh.attrs["config"], bytes)
    assert _cell_file_state(path, config) == (True, "")


class _Pool:
    """A pool that runs its jobs in this process and records its size and its end."""

    def __init__(self, processes, initializer, initargs):
        self.calls = [("start", processes)]
        _Pool.last = self

    def imap_unordered(self, job, todo):
        return map(job, todo)

    def terminate(self):
        self.calls.append("terminate")

    def join(self):
        self.calls.append("join")


def _pooled(monkeypatch, cores):
    monkeypatch.setattr(training_study.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(training_study.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(training_study.multiprocessing, "get_context", lambda method: type("C", (), {"Pool": _Pool}))


def test_a_machine_whose_core_count_is_unknown_gives_each_cell_one_thread(tmp_path, monkeypatch):
    """os.cpu_count() may be None (it counts the cores where os.sched_getaffinity is
    missing): the study counts one core, so its one cell runs with 1 thread (caught:
    another count assumed, which oversubscribed such a machine)."""
    seen = []

    def run_cell(config_path, overrides, output, threads):
        seen.append(threads)
        return dict(DONE)

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    monkeypatch.setattr(training_study.os, "cpu_count", lambda: None)
    monkeypatch.delattr(training_study.os, "sched_getaffinity", raising=False)
    cells = expand_cells({"a": []}, {"trainer.seed": [0]})
    training_study.run_training_study(str(_config(tmp_path)), cells, tmp_path / "cells")
    assert seen == [1]


def test_the_pool_is_terminated_and_joined_also_when_a_cell_fails(tmp_path, monkeypatch):
    """The study ends its worker pool with terminate then join, after its cells and when
    a cell raises (caught: the pool not terminated, so workers outlived a failed study,
    and a plain join of a running pool raised)."""
    def run_cell(config_path, overrides, output, threads):
        if overrides[-1] == "trainer.seed=1":
            raise RuntimeError("cell failed")
        return dict(DONE)

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    _pooled(monkeypatch, 4)
    cfg = str(_config(tmp_path))
    ok = expand_cells({"a": []}, {"trainer.seed": [0, 2]})
    training_study.run_training_study(cfg, ok, tmp_path / "ok", workers=2)
    assert _Pool.last.calls == [("start", 2), "terminate", "join"]
    failing = expand_cells({"a": []}, {"trainer.seed": [0, 1]})
    with pytest.raises(RuntimeError, match="cell failed"):
        training_study.run_training_study(cfg, failing, tmp_path / "failing", workers=2)
    assert _Pool.last.calls == [("start", 2), "terminate", "join"]


def test_a_cell_of_another_status_than_ok_says_it_in_its_progress_line(tmp_path, monkeypatch):
    """Any status but ``ok`` is named in the cell's progress line, e.g. a cell whose test
    error is undefined (caught: only ``nonfinite`` named)."""
    monkeypatch.setattr(training_study, "run_cell", lambda *args: {**DONE, "status": "invalid_reference"})
    lines = []
    cells = expand_cells({"a": []}, {"trainer.seed": [0]})
    training_study.run_training_study(str(_config(tmp_path)), cells, tmp_path / "cells", progress=lines.append)
    assert lines == ["finished cell a {'trainer.seed': 0}: rel_l2=5.000e-01 (status invalid_reference)"]


def test_a_group_without_an_ok_run_has_nan_means_without_a_warning():
    """No ok run in a group: every mean (and std) is NaN, computed without numpy's "Mean
    of empty slice" RuntimeWarning, which ``pinnlab study`` printed under its table
    (caught: the mean taken of no values)."""
    records = [_record("a", 0.5, "nonfinite"), _record("a", 0.25, "nonfinite")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [row] = summarise(records, None)
    assert (row["runs"], row["left_out"]) == (0, 2)
    for metric in ("rel_l2", "best_rel_l2", "seconds_per_step", "peak_mem_mb"):
        assert np.isnan(row[f"{metric}_mean"]) and np.isnan(row[f"{metric}_std"]), metric


def test_any_run_of_white_space_in_a_variant_name_is_one_space_in_the_table():
    """A carriage return, a tab or several spaces in a variant name are one space each run
    in its table cell, so a CRLF name does not split its row; a study without columns has
    the one column "all" (caught: only "\\n" replaced; an empty header)."""
    row = {"column": None, "runs": 1, "left_out": 0, "rel_l2_mean": 0.5}
    table = markdown_table([{"variant": "a\r\nb\t c", **row}], None).splitlines()
    assert table == ["| method | all |", "|---|---|", "| a b c | 5.000e-01 (1 run) |"]


def test_a_training_study_without_an_ok_cell_names_every_status_sorted(tmp_path, monkeypatch, capsys):
    """No cell ended ok, of two statuses: the error names both, sorted, joined by ", ",
    and the count of all cells (caught: one status named)."""
    from tests.test_study_command_fifth_audit import RECORDS, _canned

    _canned(monkeypatch, [{**RECORDS[0], "status": "nonfinite"}, {**RECORDS[1], "status": "invalid_reference"}])
    assert main(["study", str(_config(tmp_path)), "-o", str(tmp_path / "t.h5")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pinnlab: error: no cell of the study ended ok (status invalid_reference, nonfinite in all 2); its tables "
        "have no numbers")


def test_a_network_file_of_other_parameters_names_the_first_three_the_study_expects(tmp_path, capsys):
    """study.init naming a file whose /params are not the study's network's: one line
    naming how many arrays the file has and the first three of the network's parameters
    with their shapes (caught: two named)."""
    import yaml

    from pinnlab import config as C
    from tests.studies.test_studies import TINY_ESTIMATOR, _network_file
    from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator, _refused_before_any_work

    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    wanted = list(C.make_network(C.validate(data).model, 3, seed=0).named_parameters())
    assert len(wanted) > 3
    net = tmp_path / "net.hdf5"
    _network_file(net, params={"w": np.zeros(3), "b": np.zeros(2)})
    err = _refused_before_any_work([_estimator(tmp_path, net, **ONE_CELL), "-o", tmp_path / "e.h5"], tmp_path, capsys)
    named = ", ".join(f"{k} {list(v.shape)}" for k, v in wanted[:3])
    assert err == (f"pinnlab: error: config error: study.init = {str(net)!r}: its /params (2 arrays) are not the "
                   f"parameters of the study's network ({named}, ...)")


def test_a_cells_slice_is_drawn_with_its_own_seed_and_evaluation_samples(tmp_path, monkeypatch):
    """A cell's /slices are computed as ``pinnlab solve`` computes them: with the cell's
    trainer.seed and estimator.eval_samples (caught: seed 0 for every cell; the
    estimator's own sample count). Training is stubbed; the slice stops the cell."""
    import pinnlab.io
    import pinnlab.solvers

    class Stop(Exception):
        pass

    seen = {}

    def result_slice(problem, result, **kwargs):
        seen.update(kwargs, result=result)
        raise Stop

    monkeypatch.setattr(pinnlab.solvers, "train", lambda problem, **kwargs: "trained")
    monkeypatch.setattr(pinnlab.io, "result_slice", result_slice)
    with pytest.raises(Stop):
        training_study.run_cell(str(_config(tmp_path)), ["trainer.seed=5", "estimator.eval_samples=16"],
                                str(tmp_path / "cell.h5"), 1)
    assert seen == {"num_samples": 16, "seed": 5, "sigma": None, "result": "trained"}


def test_a_network_file_whose_final_group_has_no_error_is_studied_without_one(tmp_path, monkeypatch):
    """A network file with a /final group but no rel_l2 in it (a file written by hand, or
    cut short) is studied, and its pretrained error is left out (caught: the error read
    without looking, a KeyError traceback after the file had been accepted)."""
    import json

    from tests.studies.test_studies import _network_file
    from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator
    from tests.test_study_command_seventh_audit import _stub_estimates

    _stub_estimates(monkeypatch)
    net = tmp_path / "net.hdf5"
    _network_file(net)
    with h5py.File(net, "a") as fh:
        fh.create_group("final").attrs["best_rel_l2"] = 0.125
    cfg = _estimator(tmp_path, net, **ONE_CELL)
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5"), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["pretrained_rel_l2"] == {}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_study_on_a_device_this_machine_lacks_is_one_line_before_any_work(tmp_path, capsys):
    """trainer.device=cuda on a machine without CUDA: ``config error: ...`` in one line,
    exit 2, nothing written, as ``pinnlab solve`` refuses it (caught: only a ConfigError
    turned into that line, so the device's ValueError ended the study in a traceback)."""
    cfg = _config(tmp_path)
    assert main(["study", str(cfg), "trainer.device=cuda", "-o", str(tmp_path / "t.h5")]) == 2
    assert capsys.readouterr().err == ("pinnlab: error: config error: trainer.device = 'cuda': CUDA is not "
                                       "available; use 'auto' or 'cpu'\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"]
