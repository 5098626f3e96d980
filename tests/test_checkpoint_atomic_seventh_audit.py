"""Seventh mutation audit of checkpoints and atomic writes: which setting a refusal names
when the two configs order their keys differently, a shown value of exactly 40
characters, six history rows in a refusal, a multi-line step on one line, the digest of
an array's shape, a state saved while autograd records it, a state with no timed step,
a checkpoint without its weighting state or its format, tuning history entries of the
same count, and the permissions of an atomic write."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from pinnlab.io import CheckpointError, load_checkpoint, save_checkpoint
from pinnlab.io.atomic import write_strict_json
from pinnlab.io.checkpoint import (
    check_history,
    comparable_text,
    config_difference,
    content_digest,
    read_checkpoint,
    write_checkpoint_file,
)
from pinnlab.solvers import Adam
from pinnlab.solvers.loop import TrainState
from pinnlab.solvers.optim import AdamState

from .test_checkpoint_atomic_sixth_audit import _edited, _history
from .test_io_second_audit import CPU, F64, _bare_state


def test_config_difference_follows_the_checkpoints_key_order():
    """Both settings differ and this run's YAML lists them the other way round: the
    refusal names the first one in the checkpoint's config (``x``), not in this run's."""
    saved = comparable_text("x: 1\ny: 2\n")
    assert config_difference(saved, "y: 3\nx: 4\n") == " (x: 1 in the checkpoint, 4 in this run)"


def test_a_shown_value_of_exactly_40_characters_is_not_cut():
    """A repr of 40 characters is shown whole; one of 41 is cut to 37 and "..."."""
    forty, forty_one = "a" * 38, "a" * 39  # (their reprs add two quotes)
    assert config_difference(comparable_text(f"m: {forty}\n"), "m: b\n") == \
        f" (m: '{forty}' in the checkpoint, 'b' in this run)"
    assert config_difference(comparable_text(f"m: {forty_one}\n"), "m: b\n") == \
        f" (m: '{'a' * 36}... in the checkpoint, 'b' in this run)"


def test_the_digest_covers_an_arrays_shape():
    """The same bytes as a 2x3 and a 3x2 array (or a flat 6) are different content: a
    reshaped array is no longer what was saved."""
    values = np.arange(6.0)
    digests = {content_digest(values), content_digest(values.reshape(2, 3)), content_digest(values.reshape(3, 2))}
    assert len(digests) == 3


def test_a_state_saved_while_autograd_records_it_loads_back_as_plain_tensors(tmp_path):
    """Parameters and Adam moments that require grad (a state taken inside a
    differentiated computation) are saved detached: the resumed run gets tensors with
    the saved values that require no grad (saved as they were, they came back requiring
    grad, and autograd would record every step of the resumed run)."""
    leaf = torch.tensor([[0.5, -1.25]], dtype=F64, requires_grad=True)
    moment = {"w": leaf * 0.5}
    state = TrainState(params={"w": leaf * 2}, opt_state=AdamState(3, moment, dict(moment)))
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, state, Adam(), "config")
    loaded = load_checkpoint(path, Adam(), "config", CPU, F64)
    tensors = [loaded.params["w"], loaded.opt_state.mu["w"], loaded.opt_state.nu["w"]]
    assert [t.requires_grad for t in tensors] == [False, False, False]
    assert loaded.params["w"].tolist() == [[1.0, -2.5]] and loaded.opt_state.mu["w"].tolist() == [[0.25, -0.625]]


def test_a_refusal_shows_six_history_rows_whole_and_cuts_only_a_seventh():
    """Six rows are all shown (the last, at step 7 of a state at step 6, is the wrong
    one); of seven, the first six and ", ..."."""
    with pytest.raises(CheckpointError, match=r"rows are at steps 1, 2, 3, 4, 5, 7, not at increasing whole steps "
                                              r"up to its step 6$"):
        check_history(None, 6, _history([1, 2, 3, 4, 5, 7], 6), [])
    with pytest.raises(CheckpointError, match=r"rows are at steps 1, 2, 3, 4, 5, 6, \.\.\., not at increasing"):
        check_history(None, 6, _history([1, 2, 3, 4, 5, 6, 6], 6), [])


def _at_step_two(path, **changes):
    """The bare state saved at ``path`` and edited (digest made again) to a consistent
    state at step 2 with no history row, then with ``changes``."""
    save_checkpoint(path, _bare_state(), Adam(), "config")
    two = torch.zeros(2, dtype=F64)
    history = {**read_checkpoint(path)["history"], "trace_loss": two, "trace_mix": two}
    _edited(path, **{"step": 2, "timed_steps": 1, "history": history, "window_loss": two, **changes})


def test_a_step_that_is_a_tensor_is_refused_on_one_line(tmp_path):
    """A hand-edited step of a 2x2 tensor is shown as its repr on one line (torch's repr
    spans two)."""
    path = tmp_path / "run.ckpt"
    _at_step_two(path, step=torch.tensor([[1, 2], [3, 4]]))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path, Adam(), "config", CPU, F64)
    assert str(refused.value) == f"checkpoint {str(path)!r} is damaged: its step tensor([[1, 2], [3, 4]]) is not a " \
                                 "whole number >= 0"


def test_a_state_with_no_timed_step_keeps_its_step(tmp_path):
    """A state at step 2 none of whose steps was timed (``timed_steps`` 0) resumes at
    step 2 with 0 timed steps."""
    path = tmp_path / "run.ckpt"
    _at_step_two(path, timed_steps=0)
    loaded = load_checkpoint(path, Adam(), "config", CPU, F64)
    assert (loaded.step, loaded.timed_steps, len(loaded.history.trace_loss)) == (2, 0, 2)


def test_a_checkpoint_without_its_weighting_state_is_incomplete(tmp_path):
    """The weighting state is part of an exact resume: a checkpoint without the key is
    refused as incomplete, not resumed with the weighting started afresh."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(), Adam(), "config")
    data = read_checkpoint(path)
    del data["weighting"]
    write_checkpoint_file(path, data)
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*' is incomplete: it has no 'weighting'$"):
        load_checkpoint(path, Adam(), "config", CPU, F64)


def test_a_tuning_history_with_as_many_but_other_entries_is_refused(tmp_path):
    """Two entries where this run has two others of the same count (a history of another
    method) do not fit: the names are compared, not how many there are."""
    path = tmp_path / "t.ckpt"
    write_checkpoint_file(path, {"history": {"value": [1.0], "lr": [0.1]}})
    with pytest.raises(CheckpointError, match=r"its history has other entries than value, grad_norm$"):
        read_checkpoint(path, history={"value": [], "grad_norm": []})


def test_an_atomic_write_gets_the_permissions_of_a_plain_new_file(tmp_path):
    """The written file is created as ``open`` creates one (0o666 less the umask: 0o644
    under umask 022), not owner-only like a reserved temporary file (a result the
    user's group could no longer read)."""
    old = os.umask(0o022)
    try:
        write_strict_json(tmp_path / "run.json", {"a": 1})
        save_checkpoint(tmp_path / "run.ckpt", _bare_state(), Adam(), "config")
    finally:
        os.umask(old)
    assert [stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("run.json", "run.ckpt")] == [0o644, 0o644]


def test_a_checkpoint_without_a_format_is_of_an_unknown_format(tmp_path):
    """A checkpoint of this config that records no format (written by something else) is
    refused as of an unknown format, not read as if it were of this one."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(), Adam(), "config")
    data = read_checkpoint(path)
    del data["format"]
    write_checkpoint_file(path, data)
    with pytest.raises(CheckpointError, match=r"^checkpoint '.*' has an unknown format$"):
        load_checkpoint(path, Adam(), "config", CPU, F64)
