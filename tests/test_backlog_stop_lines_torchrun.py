"""What the one line of a stopped run says: a stop (Ctrl-C, SIGTERM) that arrives before a
solve or a tuning starts training, in one process and under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pinnlab._interrupts import Terminated
from pinnlab.cli import main

from .test_cli_resources import ESTIMATOR_STUDY, TRAINING_STUDY
from .tuning.micro_configs import WEIGHT_FG2U

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 3, eval_every: 3, test_points: 20, batch_size: 8, checkpoint_every: 1}
"""

NOTHING = "before training started; nothing was written"

TERM_AT_TORCH = """\
import os, signal, sys
from importlib.metadata import entry_points

class TermAtTorch:  # SIGTERM at the moment the command imports torch (its first seconds)
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.argv = ["pinnlab", *sys.argv[1:]]
sys.meta_path.insert(0, TermAtTorch())
(script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "pinnlab"]
sys.exit(script.load()())  # what the installed pinnlab script does
"""


def _torchrun_environment(monkeypatch, rank: int = 0, world: int = 2):
    for key, value in {"WORLD_SIZE": world, "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": 29500}.items():
        monkeypatch.setenv(key, str(value))


def _files(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("command", ["solve", "tune"])
def test_a_sigterm_while_the_command_imports_torch_says_nothing_was_written(tmp_path, command):
    """``kill`` in the first seconds of ``pinnlab solve`` (torch's import) printed only
    ``pinnlab: terminated``: the user could not tell whether a checkpoint was left to
    --resume from. The line now says the run had not started and wrote nothing (and it did
    not: only the config is there)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY if command == "solve" else WEIGHT_FG2U)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", TERM_AT_TORCH, command, str(cfg), "-o", str(tmp_path / "r.h5"),
                           "--progress", "off"], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 143, (done.returncode, done.stderr[-400:])
    assert done.stderr.strip().splitlines() == [f"pinnlab: terminated {NOTHING}"], done.stderr[-400:]
    assert _files(tmp_path) == ["c.yaml"]


@pytest.mark.parametrize("stop, word, code", [(KeyboardInterrupt, "interrupted", 130),
                                              (Terminated, "terminated", 143)])
def test_a_stop_while_the_solve_builds_its_problem_says_nothing_was_written(tmp_path, capsys, monkeypatch,
                                                                            stop, word, code):
    """Ctrl-C or SIGTERM while the equation and network are made (seconds at a large d):
    one line saying nothing was written, and nothing was (no checkpoint, no result)."""
    from pinnlab import config as configuration

    def build(config):
        raise stop

    monkeypatch.setattr(configuration, "build", build)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    assert main(["solve", str(cfg), "-o", str(tmp_path / "r.h5"), "--progress", "off"]) == code
    assert capsys.readouterr().err.strip().splitlines() == [f"pinnlab: {word} {NOTHING}"]
    assert _files(tmp_path) == ["c.yaml"]


def test_a_stop_after_training_started_keeps_its_own_lines(tmp_path, capsys, monkeypatch):
    """The line is for the stops before training only: once a solve trains, a stop before
    its first checkpoint is not called one that wrote nothing by design (its lost steps
    are the run's to say), and one after a checkpoint names it."""
    import pinnlab.solvers as solvers

    real_train = solvers.train

    def stopped_train(problem, **kwargs):
        user = kwargs["on_checkpoint"]

        def on_checkpoint(state):
            user(state)
            raise Terminated

        return real_train(problem, **{**kwargs, "on_checkpoint": on_checkpoint})

    monkeypatch.setattr(solvers, "train", stopped_train)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    assert main(["solve", str(cfg), "-o", str(tmp_path / "r.h5"), "--progress", "off"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "pinnlab: terminated" and "step 1 saved in" in err[0], err


def test_under_torchrun_a_rank_stopped_before_the_tuning_says_nothing_was_written(tmp_path, capsys, monkeypatch):
    """Each process of ``torchrun ... -m pinnlab tune`` stopped while it builds the tuning
    printed ``pinnlab: terminated (rank R of W)`` and nothing else; it now says, per rank,
    that it had not started and wrote nothing."""
    import pinnlab.tuning.setup

    def build_tuning(config, progress):
        raise Terminated

    _torchrun_environment(monkeypatch, rank=1)
    monkeypatch.setattr(pinnlab.tuning.setup, "build_tuning", build_tuning)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    assert main(["tune", str(cfg), "-o", str(tmp_path / "t.h5"), "--progress", "off"]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [f"pinnlab: terminated (rank 1 of 2) {NOTHING}"]
    assert _files(tmp_path) == ["t.yaml"]


TERM_IN_RENDEZVOUS = """\
import os, signal, sys, threading
import torch.distributed as dist

real = dist.init_process_group

def init_process_group(*args, **kwargs):  # SIGTERM once the rank waits there for its peers
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    return real(*args, **kwargs)

dist.init_process_group = init_process_group
from pinnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_rank_waiting_for_its_peers_acts_on_sigterm_at_once(tmp_path):
    """torchrun with a busy output: rank 0 refuses it (``pinnlab: error (rank 0 of 2):
    another pinnlab run is writing ...``) before it joins the process group, and torchrun
    sends SIGTERM to rank 1, which by then may wait in torch's rendezvous for rank 0, a
    C++ call in which Python's signal handler does not run: rank 1 then said nothing and
    torchrun killed it 30 s later (2 of 6 runs here). Rank 1 alone, its rank 0 never
    coming, SIGTERM 1 s into the wait: one line at once, exit 143."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    done = subprocess.run([sys.executable, "-c", TERM_IN_RENDEZVOUS, "tune", str(cfg), "-o", str(tmp_path / "t.h5"),
                           "--progress", "off"], capture_output=True, text=True, env=env, timeout=20, cwd=tmp_path)
    assert done.returncode == 143, (done.returncode, done.stderr[-400:])
    assert done.stderr.strip().splitlines() == [f"pinnlab: terminated (rank 1 of 2) {NOTHING}"], done.stderr[-400:]
    assert _files(tmp_path) == ["t.yaml"]


GLOO_CLOSED = ("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1. This is typically "
               "caused by a remote worker crashing.")


@pytest.mark.parametrize("rank, world, who", [(1, 2, "rank 0 of the run"), (0, 2, "rank 1 of the run"),
                                              (1, 3, "another process of the run")])
def test_a_lost_peer_is_named_where_it_is_the_only_other_rank(monkeypatch, rank, world, who):
    """torchrun with fewer fg2u directions than processes and an inner step that leaves θ_T
    independent of φ: rank 0, which holds the direction, raises (its traceback), and rank 1,
    waiting in the all_reduce, said 'another process of the run ended during a collective
    call'. With two processes that process is the other rank, and the line names it; with
    more, gloo names only an address, and the line stays as it was."""
    import torch

    from pinnlab.bilevel import distributed

    def closed(*args, **kwargs):
        raise RuntimeError(GLOO_CLOSED)

    monkeypatch.setattr(torch.distributed, "all_reduce", closed)
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (rank, world))
    with pytest.raises(distributed.PeerLost) as lost:
        distributed.all_reduce_sum(torch.ones(2))
    assert str(lost.value) == f"{who} ended during a collective call ({GLOO_CLOSED[:160]})"


LONG_TUNE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.5, samples: 4, noise: shared, eval_samples: 8}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 10, lr: 1.0e-3, schedule: constant, batch_size: 16, eval_every: 10, test_points: 100}
data: {source: synthetic, points: 20, noise: 0.01, seed: 0}
tune:
  method: fg2u
  options: {num_directions: 2}
  tunables: {sigma: {}, weights.boundary: {}}
  objective: {kind: data, samples: 8}
  outer_steps: 100000
  horizon: 2
  outer_lr: 1.0e-3
"""
"""A tuning that runs until it is stopped, both processes holding a direction."""


def _rank_pids(parent: int) -> dict[int, int]:
    """{RANK: pid} of torchrun's worker processes (its children)."""
    from pathlib import Path

    pids = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                    continue
                env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode(errors="replace")
                           .split("\0") if "=" in kv)
                pids[int(env["RANK"])] = int(proc.name)
            except (OSError, KeyError, ValueError, IndexError):
                pass
    return pids


@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers in /proc")
def test_a_killed_rank_leaves_rank_0_with_one_of_the_readmes_two_lines(tmp_path):
    """README (torchrun): a process killed from outside ends the others with the lost-peer
    error or, where torchrun's SIGTERM comes first, 'terminated': a race, so either; rank 0
    then adds what it saved, and the lost-peer line names rank 1 (the only other rank)."""
    import signal
    import time

    (tmp_path / "t.yaml").write_text(LONG_TUNE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "pinnlab", "tune", "t.yaml", "-o", "t.h5", "--progress", "off"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "t.h5.ckpt").exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = _rank_pids(run.pid)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[1], signal.SIGKILL)
        err = run.communicate(timeout=60)[1]
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    lines = [line for line in err.splitlines() if line.startswith("pinnlab:")]
    saved = [line for line in lines if line.startswith("pinnlab: outer step ")
             and line.endswith(" saved in 't.h5.ckpt'; --resume continues from it")]
    assert len(lines) == 2 and len(saved) == 1, err[-2000:]
    # (the lost peer: its line, then what is saved; SIGTERM: what is saved, then main's line)
    lost = lines[0].startswith("pinnlab: error (rank 0 of 2): rank 1 of the run ended during a collective call (")
    assert (lost and lines[1] == saved[0]) or lines == [saved[0], "pinnlab: terminated (rank 0 of 2)"], lines
    assert run.returncode == 1 and (tmp_path / "t.h5.ckpt").is_file()


BROKEN_INNER_STEP = """\
import sys
from pinnlab.bilevel import forward
from pinnlab.bilevel.base import independent_of_phi

def broken(*args, method="fg2u", **kwargs):  # as an inner step that reads φ through float(φ)
    raise independent_of_phi(method)

forward.directional_derivatives = broken
from pinnlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.distributed
def test_the_rank_without_directions_leaves_when_the_one_with_them_raises(tmp_path):
    """README (torchrun): with fewer directions than processes, the ones without directions
    wait in a collective call, and leave it as soon as the raising process has exited:
    fg2u with one direction on two processes and an inner step that leaves θ_T independent
    of φ. Rank 0 raises (its traceback, naming the step); rank 1's one line names rank 0
    (it said 'another process'), or is torchrun's SIGTERM if that came first."""
    script = tmp_path / "broken.py"
    script.write_text(BROKEN_INNER_STEP)
    (tmp_path / "t.yaml").write_text(WEIGHT_FG2U)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "tune", "t.yaml", "-o", "t.h5", "--progress", "off"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 1 and "does not depend on φ" in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("pinnlab:")]
    assert len(lines) == 1, done.stderr[-2000:]
    assert (lines[0].startswith("pinnlab: error (rank 1 of 2): rank 0 of the run ended during a collective call (")
            or lines[0] == "pinnlab: terminated (rank 1 of 2)"), lines


def test_torchruns_sigterm_after_a_lost_peer_adds_no_terminated_line(tmp_path, capsys, monkeypatch):
    """Under load, torchrun's SIGTERM (sent once a rank is gone) reached rank 0 while it
    said what it saved after the lost-peer error, and a third line 'pinnlab: terminated'
    followed: the consequence, named as if it were the cause. Now the lost-peer path
    ignores SIGTERM: the error, what is saved, exit code 1. (Deterministic here: the
    SIGTERM is sent from inside the saved line's function.)"""
    import signal

    from pinnlab.bilevel.distributed import PeerLost
    from pinnlab.tuning import command as tune_command
    from pinnlab.tuning import run as tuning_run

    def lost(*args, **kwargs):
        raise PeerLost("rank 1 of the run ended during a collective call (Connection closed by peer)")

    said = tune_command._say_saved

    def say_saved(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # (torchrun's, as the line is printed)
        said(*args, **kwargs)

    monkeypatch.setattr(tuning_run, "run_tuning", lost)
    monkeypatch.setattr(tune_command, "_say_saved", say_saved)
    (tmp_path / "t.yaml").write_text(WEIGHT_FG2U)
    assert main(["tune", str(tmp_path / "t.yaml"), "-o", str(tmp_path / "t.h5"), "--progress", "off"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pinnlab:")]
    assert lines == ["pinnlab: error (rank 0 of 1): rank 1 of the run ended during a collective call "
                     "(Connection closed by peer)"], lines
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # (main put its handler back)


@pytest.mark.parametrize("stop, word, code", [(KeyboardInterrupt, "interrupted", 130),
                                              (Terminated, "terminated", 143)])
def test_a_study_stopped_before_it_starts_says_nothing_was_written(tmp_path, capsys, monkeypatch, stop, word, code):
    """`pinnlab study` stopped while its runs are validated and built (before any cell or
    estimate) printed only 'interrupted' or 'terminated', as solve and tune did; now the
    line says that nothing was written, and nothing was."""
    from pinnlab.studies import command as study_command

    def validated(config, args):
        raise stop

    monkeypatch.setattr(study_command, "_validated_runs", validated)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TRAINING_STUDY)
    assert main(["study", str(cfg), "-o", str(tmp_path / "s.h5")]) == code
    assert capsys.readouterr().err.strip().splitlines() == [f"pinnlab: {word} before the study started; nothing was "
                                                             "written"]
    assert _files(tmp_path) == ["s.yaml"]


def test_an_estimator_study_stopped_midway_says_it_keeps_nothing(tmp_path, capsys, monkeypatch):
    """An estimator study keeps no partial results: stopped while it estimates, its line
    said only 'terminated'; now it says that nothing was written and that the same command
    runs it again (and nothing was written)."""
    def estimate(spec, progress=None):
        raise Terminated

    # (the command imports it at its call)
    monkeypatch.setattr("pinnlab.studies.estimator_study.run_estimator_study", estimate)
    cfg = tmp_path / "e.yaml"
    cfg.write_text(ESTIMATOR_STUDY)
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5")]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        "pinnlab: terminated; nothing was written: an estimator study keeps no partial results; the same command "
        "runs it again"]
    assert _files(tmp_path) == ["e.yaml"]
