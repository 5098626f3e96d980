"""A stop from outside (Ctrl-C, SIGTERM as :class:`pinnlab._interrupts.Terminated`) is no
error: the library's ``except Exception`` handlers, which turn whatever a file or a user's
code raises into one line of bad input, let it through."""

from __future__ import annotations

import pytest
import torch

from pinnlab._interrupts import STOPS, Terminated
from pinnlab.io.checkpoint import CheckpointError, load_checkpoint_file


@pytest.mark.parametrize("stop", STOPS)
def test_a_stop_while_a_checkpoint_is_read_is_not_a_corrupted_checkpoint(tmp_path, monkeypatch, stop):
    """SIGTERM during ``torch.load`` of a checkpoint went on as the stop it is, not as
    "checkpoint ... is corrupted or unreadable" (which a resume reports as damage, exit 2,
    rather than "pinnlab: terminated", exit 143); a failure of the file still is."""
    path = tmp_path / "run.h5.ckpt"
    torch.save({"step": 3}, path)
    assert load_checkpoint_file(path) == {"step": 3}

    def interrupted(*args, **kwargs):
        raise stop()

    monkeypatch.setattr(torch, "load", interrupted)
    with pytest.raises(stop):
        load_checkpoint_file(path)
    monkeypatch.undo()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is corrupted or unreadable"):
        load_checkpoint_file(path)


def test_terminated_is_a_stop_like_ctrl_c():
    assert STOPS == (KeyboardInterrupt, Terminated)
    assert issubclass(Terminated, BaseException) and not issubclass(Terminated, Exception)
