"""Backlog (helper ZB): what ``pinnlab tune`` keeps when its result cannot be written (the
finished final solve, for a ``--resume`` that only writes the result), and zo_fg2u's
warning for directions that are all the same at N = 1."""

from __future__ import annotations

import errno
import os

from pinnlab.cli import main
from pinnlab.tuning import run as tuning_run

from .tuning.micro_configs import WEIGHT_FG2U


def _failing_replace(monkeypatch, *targets):
    """os.replace onto any of ``targets`` fails as on a full disk (the atomic writers' rename)."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst) in {str(t) for t in targets}:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return real_replace


def test_an_unwritable_tune_result_keeps_the_finished_final_solve_for_resume(tmp_path, capsys, monkeypatch):
    """Before: the final solve finished, the result's write failed (ENOSPC), and its
    trained θ was lost: the line said only that the tuning was saved and that --resume
    runs the final solve again (its trainer.steps, minutes to hours). Now its last step is
    kept in OUT.h5.final.ckpt, the line says so, and a --resume runs no outer step and no
    training step: it writes the result from the kept state."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    real_replace = _failing_replace(monkeypatch, out)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    final, tuning = str(out) + ".final.ckpt", str(out) + ".ckpt"
    assert last == (f"pinnlab: error: cannot write {str(out)!r} (No space left on device); the finished final solve "
                    f"(step 4) saved in {final!r}, the tuning in {tuning!r}; --resume writes the result from it "
                    "without training again"), last
    assert not out.exists()

    trained, directions = [], []
    real_train, real_make = tuning_run.train, tuning_run.make_hypergradient_method

    def train(problem, *, steps, state=None, **kwargs):
        trained.append((steps, None if state is None else state.step))
        return real_train(problem, steps=steps, state=state, **kwargs)

    def make(*args, **kwargs):  # the tuning's method, its class counting the outer steps it computes
        method = real_make(*args, **kwargs)
        call = type(method).__call__

        def counted(self, *a, **k):
            directions.append(1)
            return call(self, *a, **k)

        monkeypatch.setattr(type(method), "__call__", counted)
        return method

    monkeypatch.setattr(tuning_run, "train", train)
    monkeypatch.setattr(tuning_run, "make_hypergradient_method", make)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off", "--resume"]) == 0
    assert out.is_file() and not os.path.exists(final) and not os.path.exists(tuning)
    assert directions == [] and trained == [(4, 4)]  # (from its last step: no step left to train)


def test_a_stop_while_the_tune_result_is_written_keeps_the_finished_final_solve(tmp_path, capsys, monkeypatch):
    """As pinnlab solve's: a Ctrl-C while the result is written (its slice takes minutes at
    a large d) came after the final solve finished, whose θ was lost; now it is kept and
    said, as for a result that cannot be written."""
    from pinnlab.tuning import command

    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "write_tune_result", stopped)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 130
    said = next(line for line in capsys.readouterr().err.splitlines() if "final solve" in line)
    assert said.startswith("pinnlab: the finished final solve (step 4) saved in ") and said.endswith(
        "; --resume writes the result from it without training again"), said
    assert os.path.isfile(str(out) + ".final.ckpt") and not out.exists()


def test_no_finished_final_solve_is_kept_where_a_resume_would_tune_again(tmp_path, capsys, monkeypatch):
    """tune.checkpoint_every: 2 of 3 outer steps (the tuning's checkpoint holds 2) or 0
    (none): a --resume would tune again (or is refused without the tuning's checkpoint), so
    the result's failed write keeps no final solve that the new tuned values would not use
    (or that would block the next run)."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    for every in (2, 0):
        out = tmp_path / f"out{every}.h5"
        real_replace = _failing_replace(monkeypatch, out)
        assert main(["tune", str(cfg), f"tune.checkpoint_every={every}", "-o", str(out), "--progress", "off"]) == 1
        monkeypatch.setattr(os, "replace", real_replace)
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "the finished final solve" not in last, last
        assert not os.path.exists(str(out) + ".final.ckpt")

