"""Sixth mutation audit of checkpoints and atomic writes: the names a refusal lists, parts
of a state that are no dictionary or no tensor, boolean times and step counts in a
hand-edited checkpoint, pending losses after several rows, empty metadata, a config that
is not YAML or is the caller's own dictionary, cut hidden names, integral numbers in
strict JSON, the order of releasing an output lock, and a directory that goes through a
file (a known bug)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
import yaml

from pinnlab.io import CheckpointError, atomic, load_checkpoint, save_checkpoint
from pinnlab.io.atomic import _hidden_sibling, check_writable_directory, output_lock, strict_json, write_strict_json
from pinnlab.io.checkpoint import (
    check_fits,
    check_history,
    comparable_config,
    config_hash,
    read_checkpoint,
    write_checkpoint_file,
)
from pinnlab.solvers import Adam
from pinnlab.solvers.loop import HISTORY_FIELDS, History

from .test_io_second_audit import CPU, _bare_state

F64 = torch.float64


def test_a_refusal_lists_three_names_whole_and_counts_only_more():
    """Up to three names are listed whole; " and N more" follows only when more than three
    are missing (three keys gave "'a', 'b', 'c' and 0 more")."""
    expected = {k: torch.zeros(1) for k in "abcd"}
    with pytest.raises(CheckpointError, match=r"^the state does not fit this run: params lacks 'b', 'c', 'd'$"):
        check_fits(None, "params", {"a": torch.zeros(1)}, expected)
    with pytest.raises(CheckpointError, match=r"^the state does not fit this run: params has unexpected "
                                              r"'x', 'y', 'z' and 1 more$"):
        check_fits(None, "params", {**expected, "x": 0, "y": 0, "z": 0, "w": 0}, expected)


def _edited(path, **changes):
    """The checkpoint at ``path`` with ``changes`` and its digest made again (a hand edit
    that the digest does not catch)."""
    data = read_checkpoint(path)
    write_checkpoint_file(path, {**data, **changes})


@pytest.mark.parametrize("key", ["train_seconds", "wall_s"])
def test_a_boolean_time_is_refused(tmp_path, key):
    """``True`` is an int to Python but no time: a hand-edited ``train_seconds: true``
    resumed as 1 s."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(), Adam(), "config")
    _edited(path, **{key: True})
    with pytest.raises(CheckpointError, match=rf"^checkpoint '.*' is damaged: its {key} True is not a finite "
                                              r"number >= 0$"):
        load_checkpoint(path, Adam(), "config", CPU, F64)


def test_comparable_config_leaves_the_callers_config_as_it_was():
    """The comparison drops the run-only settings and resolves the device in copies of the
    sections: the caller's config (the one the run goes on with) keeps its checkpoint
    interval and its ``auto`` device."""
    config = {"trainer": {"device": "auto", "checkpoint_every": 5, "log_every": 2, "lr": 0.1},
              "tune": {"checkpoint_every": 3}}
    text = comparable_config(config)
    assert config == {"trainer": {"device": "auto", "checkpoint_every": 5, "log_every": 2, "lr": 0.1},
                      "tune": {"checkpoint_every": 3}}
    assert yaml.safe_load(text) == {"trainer": {"device": "cpu", "lr": 0.1}, "tune": {}}


def test_empty_metadata_given_is_compared_too(tmp_path):
    """Only ``metadata=None`` skips the comparison: a caller's empty metadata is other
    metadata than a checkpoint's ``{"config": "abc"}``, and the run is refused."""
    path = tmp_path / "run.ckpt"
    write_checkpoint_file(path, {"metadata": {"config": "abc"}, "history": {}})
    for empty in ({}, ""):
        with pytest.raises(CheckpointError, match=r"belongs to another run \(metadata differ\)$"):
            read_checkpoint(path, metadata=empty)
    assert read_checkpoint(path, metadata={"config": "abc"})["metadata"] == {"config": "abc"}


def test_a_cut_hidden_name_is_the_first_180_bytes_and_a_hash_of_the_whole_name(tmp_path):
    """Names up to 200 bytes are kept whole in ``.NAME.lock`` (one of exactly 200 too);
    longer ones become their first 180 bytes, ``~`` and the first 10 hex digits of the
    SHA-1 of the whole name."""
    whole = tmp_path / ("a" * 197 + ".h5")
    assert _hidden_sibling(whole, ".lock") == tmp_path / f".{whole.name}.lock"
    cut = tmp_path / ("b" * 198 + ".h5")
    digest = hashlib.sha1(cut.name.encode()).hexdigest()[:10]
    assert _hidden_sibling(cut, ".lock") == tmp_path / f".{'b' * 180}~{digest}.lock"


def test_strict_json_writes_an_integral_number_of_any_type_as_an_integer():
    """Any :class:`numbers.Integral` (sympy's Integer here, neither an int nor a 0-d
    array) is written as an integer, 3 and not 3.0."""
    import sympy

    assert strict_json({"n": sympy.Integer(3), "big": sympy.Integer(2**60 + 1)}) == \
        f'{{"n": 3, "big": {2**60 + 1}}}'


def test_an_output_whose_directory_goes_through_a_file_is_refused_before_the_work(tmp_path):
    """``plain/../run.h5`` with ``plain`` a file: the operating system cannot open
    ``plain/..`` (not a directory), so the final write fails after the run; the check
    that exists to say so beforehand refuses it (it resolved ``..`` as text and passed)."""
    (tmp_path / "plain").write_text("x")
    target = tmp_path / "plain" / ".." / "run.json"
    with pytest.raises(NotADirectoryError):
        write_strict_json(target, {"a": 1})
    with pytest.raises(FileNotFoundError, match=r"plain/\.\.' is not a directory"):
        check_writable_directory(target)


def _history(row_steps, steps):
    """A history with rows at ``row_steps`` and one trace value for each of ``steps`` steps."""
    history = History()
    for row in row_steps:
        history.append(**{key: (row if key == "step" else 0.5) for key in HISTORY_FIELDS})
    history.trace_loss = [0.5] * steps
    history.trace_mix = [0.0] * steps
    return history


def test_the_pending_losses_are_those_since_the_last_history_row():
    """Rows at steps 2 and 4 of a state at step 5: one loss is pending (step 5), counted from
    the last row, not the first (which asked for 3)."""
    history = _history([2, 4], 5)
    check_history(None, 5, history, [0.25])
    with pytest.raises(CheckpointError, match=r"^the state is inconsistent: 'window_loss' has 3 values, not one "
                                              r"for each of the 1 steps since the last history row$"):
        check_history(None, 5, history, [0.25, 0.5, 0.75])


@pytest.mark.parametrize("saved, kind", [(["w"], "list"), (None, "NoneType")])
def test_a_part_that_is_no_dictionary_is_refused_as_such(saved, kind):
    """A list of the expected names (or nothing) where a dictionary of tensors belongs is
    refused on one line naming what it is, not with a TypeError from indexing it."""
    with pytest.raises(CheckpointError, match=rf"^the state does not fit this run: params is a {kind}, "
                                              r"not a dictionary$"):
        check_fits(None, "params", saved, {"w": torch.zeros(2)})


def test_a_part_that_is_no_tensor_is_refused_as_such():
    """A list of numbers where a tensor belongs is refused as "not a tensor", not with an
    AttributeError from asking for its shape."""
    with pytest.raises(CheckpointError, match=r"^the state does not fit this run: params\['w'\] is a list, "
                                              r"not a tensor$"):
        check_fits(None, "params", {"w": [0.0, 0.0]}, {"w": torch.zeros(2)})


def test_a_boolean_timed_step_count_is_refused(tmp_path):
    """A state at step 2 with ``timed_steps: true`` (1 to Python) is damaged like one of
    2.5; the same state with ``timed_steps: 1`` loads."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(), Adam(), "config")
    two = torch.zeros(2, dtype=F64)
    history = {**read_checkpoint(path)["history"], "trace_loss": two, "trace_mix": two}
    _edited(path, step=2, timed_steps=1, history=history, window_loss=two)
    assert load_checkpoint(path, Adam(), "config", CPU, F64).timed_steps == 1
    _edited(path, timed_steps=True)
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*' is damaged: its timed_steps True is not a whole "
                                              r"number in 0\.\.2, its step$"):
        load_checkpoint(path, Adam(), "config", CPU, F64)


def test_a_callers_config_text_that_is_no_yaml_is_compared_as_it_is(tmp_path):
    """``config_yaml`` of a library caller need not be YAML: "a: [" (unparseable) is
    hashed as its own text, and a checkpoint saved with it loads with it and is refused
    with another text."""
    assert config_hash("a: [") == hashlib.sha256(b"a: [").hexdigest()
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(), Adam(), "a: [")
    assert load_checkpoint(path, Adam(), "a: [", CPU, F64).step == 0
    with pytest.raises(CheckpointError, match="was written for a different configuration"):
        load_checkpoint(path, Adam(), "a: [[", CPU, F64)


def test_the_lock_file_is_removed_while_the_lock_is_still_held(tmp_path, monkeypatch):
    """Releasing first and removing after lets a run that opened the file meanwhile lock it
    and pass its inode check, and then the file goes: a third run creates a new one and
    locks it too, and two runs write one output. Removed while held, a waiting run finds
    the file gone (its inode check fails) and locks the new one."""
    lock = tmp_path / ".run.h5.lock"
    closed = []
    close = os.close

    def recording_close(fd):
        closed.append(lock.exists())
        close(fd)

    with output_lock(tmp_path / "run.h5"):
        assert lock.exists()
        monkeypatch.setattr(atomic.os, "close", recording_close)
    monkeypatch.undo()
    assert closed == [False]
