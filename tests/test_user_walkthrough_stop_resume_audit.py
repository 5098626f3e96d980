"""A user whose runs get interrupted: ``pinnlab solve`` with ``trainer.checkpoint_every`` and
``--resume``, ``pinnlab tune --resume`` and the checkpoints each leaves, stopped by Ctrl-C or
SIGTERM at different moments, given another command's checkpoint, or meeting a disk that
cannot take a write. The problems met on the way (a stop while the result is written, a
write that fails mid-run, another command's checkpoint called incomplete, one the user may
not read called corrupted, Ctrl-C while the command still imports, bench_hypergrad's
penalty worker) and the behaviour met there that no other test pinned (a Ctrl-C during a
save keeps the checkpoint before it and names its step)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 5, eval_every: 5, test_points: 20, batch_size: 8, checkpoint_every: 2}
"""


def _run(args):
    return main([str(a) for a in args])


def _solve(tmp_path, *extra):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    return _run(["solve", cfg, "-o", tmp_path / "r.h5", "--progress", "off", *extra])


def _saved_step(path) -> int:
    return int(torch.load(path, weights_only=False)["step"])


def _solve_checkpoint(tmp_path, monkeypatch):
    """The checkpoint a tiny solve stopped by Ctrl-C after its step 2 leaves (r.h5.ckpt)."""
    import pinnlab.solvers as solvers

    real_train = solvers.train

    def stopped_train(problem, **kwargs):
        user = kwargs["on_checkpoint"]

        def on_checkpoint(state):
            user(state)
            raise KeyboardInterrupt

        return real_train(problem, **{**kwargs, "on_checkpoint": on_checkpoint})

    monkeypatch.setattr(solvers, "train", stopped_train)
    assert _solve(tmp_path) == 130
    monkeypatch.setattr(solvers, "train", real_train)
    return tmp_path / "r.h5.ckpt"


def _tune_checkpoint(tmp_path, monkeypatch):
    """The checkpoint a micro tuning stopped by Ctrl-C in its final solve leaves (t.h5.ckpt)."""
    from pinnlab.tuning import command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "write_tune_result", interrupted)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    assert _run(["tune", cfg, "-o", tmp_path / "t.h5", "--progress", "off"]) == 130
    return tmp_path / "t.h5.ckpt"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- bugs -------------------------------------------------------------------------------------
def test_a_stop_while_the_solve_result_is_written_saves_the_last_step_and_says_so(tmp_path, capsys, monkeypatch):
    """README: a solve stopped by Ctrl-C or SIGTERM with trainer.checkpoint_every set first
    saves its last completed step and says so. All 5 steps are done when the result is
    written (its slice and radial error are evaluated there, minutes at a large d)."""
    import pinnlab.io as pio

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pio, "write_solve_result", interrupted)
    assert _solve(tmp_path) == 130
    err = capsys.readouterr().err
    ckpt = tmp_path / "r.h5.ckpt"
    assert ckpt.is_file() and not (tmp_path / "r.h5").exists()
    assert f"pinnlab: step 5 saved in {str(ckpt)!r}; --resume continues from it" in err, err
    assert _saved_step(ckpt) == 5


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_one_before(tmp_path, capsys, monkeypatch):
    """The second periodic save (step 4) fails with ENOSPC: one line naming the error, a
    failure exit code (no traceback), and the step-2 checkpoint left whole for --resume.
    (Measured with a directory made read-only mid-run: torch's RuntimeError 'open file
    failed with strerror: Permission denied', a traceback, exit 1.)"""
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    try:
        code = _solve(tmp_path)
    except OSError as err:
        pytest.fail(f"traceback: {err!r}")
    err = _one_line(capsys)
    assert code not in (0, 130) and "No space left on device" in err, (code, err)
    assert _saved_step(tmp_path / "r.h5.ckpt") == 2


def test_a_result_that_cannot_be_written_is_one_line_and_resumable(tmp_path, capsys, monkeypatch):
    """The run's last act, the atomic rename onto r.h5, fails with ENOSPC: one line (naming
    the output and the error) and a failure exit code; the checkpoint stays, so --resume
    writes the result once there is room."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("r.h5"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    try:
        code = _solve(tmp_path)
    except OSError as err:
        code = f"traceback: {err!r}"
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "r.h5.ckpt").is_file() and not (tmp_path / "r.h5").exists()
    err = capsys.readouterr().err.strip()
    assert isinstance(code, int) and code not in (0, 130), code
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "r.h5" in err, err
    assert _solve(tmp_path, "--resume") == 0 and (tmp_path / "r.h5").is_file()


def test_a_solve_checkpoint_given_to_tune_is_named_as_a_solve_checkpoint(tmp_path, capsys, monkeypatch):
    """A user who ran ``pinnlab solve c.yaml -o run.h5`` and then ``pinnlab tune t.yaml -o
    run.h5 --resume`` (the same output name) meets a complete checkpoint of the other
    command: the line should say so, not call it incomplete; the file stays as it was."""
    solve_ckpt = _solve_checkpoint(tmp_path, monkeypatch)
    capsys.readouterr()
    before = solve_ckpt.read_bytes()
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    assert _run(["tune", cfg, "-o", tmp_path / "r.h5", "--progress", "off", "--resume"]) == 2
    err = _one_line(capsys)
    assert solve_ckpt.read_bytes() == before
    assert "incomplete" not in err and "pinnlab solve" in err, err


def test_a_tune_checkpoint_given_to_solve_is_named_as_a_tuning_checkpoint(tmp_path, capsys, monkeypatch):
    """The converse: ``pinnlab solve t.yaml -o t.h5 --resume`` beside a tuning's t.h5.ckpt
    (the tuning config solved as it is, the README's untuned baseline) is refused; the
    line should name the checkpoint as a tuning's (``pinnlab tune --resume``), not as of an
    unknown format; the file stays as it was."""
    tune_ckpt = _tune_checkpoint(tmp_path, monkeypatch)
    capsys.readouterr()
    before = tune_ckpt.read_bytes()
    cfg = tmp_path / "t.yaml"
    assert _run(["solve", cfg, "-o", tmp_path / "t.h5", "--progress", "off", "--resume"]) == 2
    err = _one_line(capsys)
    assert tune_ckpt.read_bytes() == before
    assert "unknown format" not in err and "pinnlab tune" in err, err


def test_a_checkpoint_that_may_not_be_read_is_not_called_corrupted(tmp_path, capsys, monkeypatch):
    """Measured as a user without the read permission on r.h5.ckpt (chmod 000): ``pinnlab
    solve --resume`` said the checkpoint is corrupted and to pass --overwrite, which throws
    a good checkpoint away; an unreadable config says 'Permission denied'. The checkpoint's
    line should say so too (and not call it corrupted)."""
    ckpt = _solve_checkpoint(tmp_path, monkeypatch)
    capsys.readouterr()
    before = ckpt.read_bytes()

    def load(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", load)
    assert _solve(tmp_path, "--resume") == 2
    err = _one_line(capsys)
    assert ckpt.read_bytes() == before
    assert "Permission denied" in err and "corrupted" not in err, err


STOP_AT_TORCH = """\
import os, signal, sys
from importlib.metadata import entry_points

class StopAtTorch:  # Ctrl-C at the moment the command imports torch (its first seconds)
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

as_module = sys.argv[1:] == ["-m"]
sys.argv = ["pinnlab", "list"]
sys.meta_path.insert(0, StopAtTorch())
if as_module:  # python -m pinnlab list (and torchrun ... -m pinnlab)
    import runpy
    runpy.run_module("pinnlab", run_name="__main__")
(script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "pinnlab"]
sys.exit(script.load()())  # what the installed pinnlab script does
"""


@pytest.mark.parametrize("how", ["script", "-m"])
def test_ctrl_c_while_the_command_imports_is_one_line(how):
    """The console script imported pinnlab (and torch: 2-3 s here) before main() installed its
    handling; a user who pressed Ctrl-C at once got a 20-line traceback through torch's
    import machinery instead of 'pinnlab: interrupted' and exit code 130. ``import pinnlab``
    now imports torch on first use, inside main()."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", STOP_AT_TORCH, *([how] if how == "-m" else [])],
                          capture_output=True, text=True, env=env, timeout=60)
    err = done.stderr.strip()
    assert "Traceback" not in err and done.returncode == 130, (done.returncode, err[-400:])
    assert err.splitlines() == ["pinnlab: interrupted"], err


# -- behaviour met on the way, pinned ---------------------------------------------------------
def test_a_ctrl_c_during_a_save_keeps_the_checkpoint_before_it_and_names_its_step(tmp_path, capsys, monkeypatch):
    """Ctrl-C pressed twice: the first arrives while the periodic save of step 4 is written,
    the second while the stop's own save of that step is. Each write is atomic, so
    r.h5.ckpt still holds step 2, whole, and the line names step 2 (not the step whose save
    was cut); --resume then continues from it to the end."""
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(int(obj["step"]))
        if len(calls) >= 2:
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert _solve(tmp_path) == 130
    monkeypatch.setattr(torch, "save", real_save)
    assert calls == [2, 4, 4], calls
    err = capsys.readouterr().err
    ckpt = tmp_path / "r.h5.ckpt"
    assert f"pinnlab: step 2 saved in {str(ckpt)!r}; --resume continues from it" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "r.h5.ckpt"]  # (no temporary file left)
    assert _saved_step(ckpt) == 2
    assert _solve(tmp_path, "--resume") == 0 and not ckpt.exists()


def test_bench_hypergrad_penalty_worker_runs_at_the_quick_width():
    """Met while stopping benchmarks: ``python benchmarks/bench_hypergrad.py --quick --json
    bh.json``, left to run, timed every method's cost in a worker process until penalty's
    raised LowerLevelDivergence ('gradient norm rose from 32.9 to 4.59e+15 at inner step 7
    of 10') and the script ended with 'RuntimeError: penalty failed:' and the worker's
    traceback, exit 1, nothing kept. The worker at --quick's width 64 and T = 10 alone."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_hypergrad.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PINNLAB_BENCH_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--worker", "penalty", "10", "64"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-300:]
