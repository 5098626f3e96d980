"""Backlog (helper ZF): what a stopped or failed ``pinnlab tune`` says its --resume does
during the final solve, where the tuning's checkpoint is missing (tune.checkpoint_every: 0),
older than its last outer step (tune.checkpoint_every = k) or resumed."""

from __future__ import annotations

import errno
import os

from pinnlab.cli import main
from pinnlab.tuning import command
from pinnlab.tuning import run as tuning_run

from .tuning.micro_configs import WEIGHT_FG2U


def _stop_while_written(monkeypatch):
    """A Ctrl-C while the result is written, after the final solve (and its saves) ran."""
    real = command.write_tune_result

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "write_tune_result", stopped)
    return real


def _said(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("pinnlab: ") and "interrupted" not in line)


def _counting(monkeypatch):
    """The outer steps the tuning computes (their indices, as its progress sees them) and the
    (steps, starting step) of each training."""
    steps, trained = [], []
    real_train, real_tuning = tuning_run.train, tuning_run.run_tuning

    def train(problem, *, steps, state=None, **kwargs):
        trained.append((steps, None if state is None else state.step))
        return real_train(problem, steps=steps, state=state, **kwargs)

    def run_tuning(setup, *, progress=None, **kwargs):
        def counted(k, phi, diagnostics):
            steps.append(k)
            if progress is not None:
                progress(k, phi, diagnostics)

        return real_tuning(setup, progress=counted, **kwargs)

    monkeypatch.setattr(tuning_run, "train", train)
    monkeypatch.setattr(tuning_run, "run_tuning", run_tuning)
    return steps, trained


def test_a_final_solve_without_the_tunings_checkpoint_keeps_none_and_says_so(tmp_path, capsys, monkeypatch):
    """Before: with tune.checkpoint_every: 0 and trainer.checkpoint_every: 1, a stop (or a
    failed result write) after the final solve's saves said "final solve step 3 saved in
    'OUT.h5.final.ckpt'; --resume continues from it", but --resume refused that checkpoint
    without the tuning's (whose tuned values it needs), and the same command without it was
    refused too ("a checkpoint ... exists"). Now the final solve keeps no checkpoint there,
    the line says that both run again, and the same command does."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    args = ["tune", str(cfg), "tune.checkpoint_every=0", "trainer.checkpoint_every=1", "-o", str(out),
            "--progress", "off"]
    real = _stop_while_written(monkeypatch)
    assert main(args) == 130
    said = _said(capsys.readouterr().err)
    assert said == ("pinnlab: the tuning saved no checkpoint (tune.checkpoint_every), so its final solve keeps "
                    "none either (a --resume needs both); the same command runs both again"), said
    assert not os.path.exists(str(out) + ".final.ckpt") and not os.path.exists(str(out) + ".ckpt")

    real_replace = os.replace  # a full disk refuses the result: the same line ends the error

    def replace(src, dst, *a, **k):
        if str(dst) == str(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(command, "write_tune_result", real)
    monkeypatch.setattr(os, "replace", replace)
    assert main(args) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("; the tuning saved no checkpoint (tune.checkpoint_every), so its final solve keeps none "
                         "either (a --resume needs both); the same command runs both again"), last
    assert not os.path.exists(str(out) + ".final.ckpt")
    assert main(args) == 0 and out.is_file()  # (as the line says)


def test_a_tuning_saved_before_its_last_outer_step_says_a_resume_tunes_again(tmp_path, capsys, monkeypatch):
    """Before: tune.checkpoint_every: 2 of 3 outer steps, stopped in the final solve, said
    "the tuning is saved in 'OUT.h5.ckpt'; --resume runs the final solve again", and the
    --resume then tuned outer step 2 again first. Now the line says so, and it is what the
    --resume does: one outer step, then the whole final solve."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    args = ["tune", str(cfg), "tune.checkpoint_every=2", "-o", str(out), "--progress", "off"]
    real = _stop_while_written(monkeypatch)
    assert main(args) == 130
    said = _said(capsys.readouterr().err)
    assert said == (f"pinnlab: the tuning's outer step 2 is saved in {str(out) + '.ckpt'!r}; --resume tunes again "
                    "from outer step 2 and then runs the final solve (trainer.checkpoint_every saves its steps)"), said
    monkeypatch.setattr(command, "write_tune_result", real)
    tuned, trained = _counting(monkeypatch)
    assert main([*args, "--resume"]) == 0 and out.is_file()
    assert tuned == [2] and trained == [(4, None)]


def test_a_final_solve_saved_beside_an_older_tuning_says_both(tmp_path, capsys, monkeypatch):
    """Before: with trainer.checkpoint_every: 1 too, the line said "final solve step 3 saved
    in ..., the tuning in ...; --resume continues from it", not that the --resume tunes
    outer step 2 again first (and continues the final solve only where the tuned values come
    out the same). Now it says so; here they do, and the final solve continues at step 3."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    args = ["tune", str(cfg), "tune.checkpoint_every=2", "trainer.checkpoint_every=1", "-o", str(out),
            "--progress", "off"]
    real = _stop_while_written(monkeypatch)
    assert main(args) == 130
    said = _said(capsys.readouterr().err)
    final, tuning = str(out) + ".final.ckpt", str(out) + ".ckpt"
    assert said == (f"pinnlab: final solve step 3 saved in {final!r}, the tuning's outer step 2 in {tuning!r}; "
                    "--resume tunes again from outer step 2, then continues the final solve from it if the tuned "
                    "values come out the same (else it starts over)"), said
    monkeypatch.setattr(command, "write_tune_result", real)
    tuned, trained = _counting(monkeypatch)
    assert main([*args, "--resume"]) == 0 and out.is_file()
    assert "starts over" not in capsys.readouterr().err
    assert tuned == [2] and trained == [(4, 3)]


def test_a_resumed_tuning_is_still_said_when_its_final_solve_stops_again(tmp_path, capsys, monkeypatch):
    """Before: a --resume of a run stopped in its final solve (the tuning's checkpoint holds
    every outer step, so the resumed tuning saves none) that was stopped again said nothing
    of the tuning's checkpoint, which this run had not written but which a --resume still
    continues; now it says it as the first stop did."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    args = ["tune", str(cfg), "-o", str(out), "--progress", "off"]

    def stopped(*args, **kwargs):  # a Ctrl-C in the final solve's training
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning_run, "train", stopped)
    assert main(args) == 130
    first = _said(capsys.readouterr().err)
    assert first == (f"pinnlab: the tuning is saved in {str(out) + '.ckpt'!r}; --resume runs the final solve "
                     "again (trainer.checkpoint_every saves its steps)"), first
    assert main([*args, "--resume"]) == 130
    assert _said(capsys.readouterr().err) == first
