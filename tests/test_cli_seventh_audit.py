"""Seventh audit of pinnlab/cli.py: the DeepXDE branch of ``pinnlab solve`` (its exit
codes, the lines it prints, the stale checkpoint it removes, the progress it hands on, a
missing DeepXDE as one line), a terminated run's exit code and line, the one line of an
out-of-memory or a user equation's error (cut, first line only), a broken pipe not on
stdout, the checks of an output kept without a checkpoint, and the tunables `list` names;
the library's training and file writing replaced by recorders where only the glue is
under test."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from pinnlab import cli, solvers
from pinnlab import config as configuration
from pinnlab._interrupts import Terminated
from pinnlab.cli import COMMAND_SIZE_SETTINGS, UsageError, _output_checks, main

from .test_cli_fifth_audit import register_raising_equation
from .test_cli_fourth_audit import _finished, _one_error_line, no_writes  # noqa: F401 (a fixture)
from .test_resume_hints import TINY

DEEPXDE = "".join(line for line in TINY.replace("batch_size: 8}", "batch_size: 8, backend: deepxde}").splitlines(True)
                  if not line.startswith("estimator:"))  # (DeepXDE takes no estimator settings)


def _deepxde_run(monkeypatch, result):
    """solve_config_with_deepxde replaced by one returning ``result``; the progress each
    call was given, in a list."""
    seen = []

    def solve(config, equation, **kwargs):
        seen.append(kwargs.get("progress"))
        return result

    monkeypatch.setattr(configuration, "solve_config_with_deepxde", solve)
    return seen


def test_a_deepxde_solve_reports_removes_the_stale_checkpoint_and_hands_on_its_progress(
        tmp_path, capsys, monkeypatch, no_writes):  # noqa: F811
    """trainer.backend: deepxde with --overwrite over an earlier result and the checkpoint
    of an interrupted pinnlab run: the new result is written, the checkpoint (which went with
    the old result) is removed, the report line is printed, exit 0; --progress reaches
    DeepXDE's training as given, and ``auto`` when not given (DeepXDE's own default is
    ``off``: a run without the flag showed nothing)."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "r.h5"
    cfg.write_text(DEEPXDE)
    ckpt = tmp_path / "r.h5.ckpt"
    out.write_bytes(b"old result")
    ckpt.write_bytes(b"an older run's steps")
    seen = _deepxde_run(monkeypatch, _finished())
    assert main(["solve", str(cfg), "-o", str(out), "--overwrite", "--progress", "log"]) == 0
    assert out.read_bytes() == b"new result" and not ckpt.exists()
    captured = capsys.readouterr()
    assert captured.out == "rel_l2=5.000000e-01 rel_l1=2.500000e-01 steps_per_second=10\n"
    assert captured.err == ""
    assert main(["solve", str(cfg), "-o", str(tmp_path / "s.h5")]) == 0
    assert seen == ["log", "auto"]
    capsys.readouterr()


def test_a_deepxde_solve_that_does_not_end_ok_exits_1_with_its_message(tmp_path, capsys, monkeypatch,
                                                                        no_writes):  # noqa: F811
    """A DeepXDE run whose status is not ``ok`` writes its result, prints its message on
    stderr and its report on stdout, and exits 1 (EXIT_FAILED), as a pinnlab run does."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "r.h5"
    cfg.write_text(DEEPXDE)
    failed = SimpleNamespace(**{**vars(_finished()), "status": "nonfinite",
                                "message": "the loss became non-finite at step 3"})
    _deepxde_run(monkeypatch, failed)
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "the loss became non-finite at step 3\n"
    assert captured.out == "rel_l2=5.000000e-01 rel_l1=2.500000e-01 steps_per_second=10\n"
    assert out.read_bytes() == b"new result"


def test_a_missing_deepxde_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, no_writes):  # noqa: F811
    """trainer.backend: deepxde without DeepXDE installed: the adapter's ImportError (which
    says how to install it) is the one error line, exit 2, no traceback, and no result and
    no checkpoint are written."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "r.h5"
    cfg.write_text(DEEPXDE)

    def missing(config, equation, **kwargs):
        raise ImportError("the DeepXDE adapter needs the optional dependency: pip install 'pinnlab[deepxde]'")

    monkeypatch.setattr(configuration, "solve_config_with_deepxde", missing)
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 2
    assert _one_error_line(capsys) == ("pinnlab: error: the DeepXDE adapter needs the optional dependency: "
                                       "pip install 'pinnlab[deepxde]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_a_terminated_run_exits_143_and_adds_what_the_stop_says_was_kept(tmp_path, capsys, monkeypatch):
    """SIGTERM (as :class:`Terminated`) ends main with 128 + SIGTERM = 143 and the line
    "pinnlab: terminated", followed by what the stop says was kept when it says anything
    (a study's finished cells), as a Ctrl-C's "interrupted" line is."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    for stop, line in ((Terminated(), "pinnlab: terminated"),
                       (Terminated("the finished cells are kept in 'x.cells'"),
                        "pinnlab: terminated; the finished cells are kept in 'x.cells'")):

        def stopped(problem, stop=stop, **kwargs):
            raise stop

        monkeypatch.setattr(solvers, "train", stopped)
        assert main(["solve", str(cfg), "-o", str(tmp_path / "r.h5"), "--progress", "off"]) == 128 + signal.SIGTERM
        # (after the line that says the steps are lost: c.yaml sets no trainer.checkpoint_every)
        assert capsys.readouterr().err.splitlines()[-1] == line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_an_output_without_a_checkpoint_is_measured_and_checked_without_the_ckpt_suffix(tmp_path):
    """A file a run writes without a checkpoint beside it (a study's --json, checked with
    ``checkpoint=False``): a name of 252 bytes fits a 255-byte file system (with ``.ckpt``
    it would not), and a directory named like its checkpoint is none of its business."""
    json = tmp_path / ("j" * 247 + ".json")
    assert len(json.name.encode()) == 252
    _output_checks(json, overwrite=False, checkpoint=False)
    (tmp_path / "s.json.ckpt").mkdir()
    _output_checks(tmp_path / "s.json", overwrite=False, checkpoint=False)
    with pytest.raises(UsageError, match=r"checkpoint '.*s\.json\.ckpt' is a directory"):
        _output_checks(tmp_path / "s.json", overwrite=False)
    with pytest.raises(UsageError, match=r"is too long: 257 bytes with the \.ckpt suffix"):
        _output_checks(json, overwrite=False)


_OOM = "CUDA out of memory. Tried to allocate 20.00 GiB."


@pytest.mark.parametrize("message, shown", [
    (_OOM + " " + "m" * 200, (_OOM + " " + "m" * 200)[:120]),  # one long line: its first 120 characters
    (_OOM + "\nIf reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF", _OOM),
], ids=["long", "several_lines"])
def test_an_out_of_memory_line_carries_the_first_120_characters_of_the_first_line(tmp_path, capsys, monkeypatch,
                                                                                   message, shown):
    """A solve that runs out of memory ends as one line: "out of memory", the first line of
    torch's message cut to 120 characters (a CUDA message runs to several lines of advice
    on allocator settings), and the size settings to lower; exit 2."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)

    def train(problem, **kwargs):
        raise torch.OutOfMemoryError(message)

    monkeypatch.setattr(solvers, "train", train)
    assert main(["solve", str(cfg), "-o", str(tmp_path / "r.h5"), "--progress", "off"]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: out of memory ({shown}): the sizes are too large for "
                                       f"this machine; lower {', '.join(COMMAND_SIZE_SETTINGS['solve'])} or the "
                                       "equation's own sample counts")


@pytest.mark.parametrize("message, shown", [("'c' * 300", ": " + "c" * 200), ("''", "")], ids=["long", "empty"])
def test_an_equation_modules_error_is_cut_to_200_characters_and_an_empty_one_adds_nothing(
        tmp_path, capsys, monkeypatch, message, shown):
    """A user equation raising with a message of 300 characters: the error line carries its
    first 200 and where it was raised; with no message at all, the type and the place only
    (no dangling ": ")."""
    module = register_raising_equation(tmp_path, monkeypatch, "long_message", message)
    assert main(["list"]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: the equation module raised ArithmeticError{shown} "
                                       f"({module} line 6, in __init__)")


def test_a_broken_pipe_not_on_a_piped_stdout_propagates(capsys, monkeypatch):
    """Only a closed pipe on stdout (``pinnlab list | head``) ends the command quietly with
    128 + SIGPIPE; a BrokenPipeError where stdout is no pipe (a notebook, a script's own
    socket) is raised as it is, and stdout's file descriptor is left alone (it was
    redirected to /dev/null for the rest of the process)."""

    def broken(cls):
        raise BrokenPipeError("[Errno 32] Broken pipe")

    monkeypatch.setattr(cli, "_coefficient_sizes", broken)
    with pytest.raises(BrokenPipeError, match="Broken pipe"):
        main(["list"])
    capsys.readouterr()


def test_list_names_every_kind_of_tunable_the_tune_section_takes(capsys):
    """``pinnlab list`` names each kind of ``tune.tunables`` key, ``collocation_weight``
    (the network weighting the collocation points) among them: a tunable left out of the
    list was one a user could not learn of without reading the code."""
    from pinnlab.tuning.spec import COLLOCATION

    assert main(["list"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tunables: ")]
    assert lines == [f"tunables: weights.<term>, sigma, mix, lr, coefficients.<name>, {COLLOCATION}"]
    assert COLLOCATION == "collocation_weight"
