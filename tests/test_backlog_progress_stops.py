"""Progress displays and what a stopped run says: a forced bar into a file, a joint fit's
rate, the steps a solve without checkpoints loses, a stopped tuning's display against its
saved step, a stopped joint fit, and where the tuning display's clock starts."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pinnlab.solvers.progress
from pinnlab.cli import main
from tests.tuning.micro_configs import JOINT_MU

TINY = """\
equation: {name: poisson_two_body, dim: 4, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: STEPS, eval_every: 2, test_points: 20, batch_size: 8, checkpoint_every: 0, log_every: LOG}
"""


def _solve_config(tmp_path, steps=3, log_every=100):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("STEPS", str(steps)).replace("LOG", str(log_every)))
    return path


def _tune_config(tmp_path):
    path = tmp_path / "tune.yaml"
    path.write_text(JOINT_MU)
    return path


def _stop_at(monkeypatch, description: str, shown: int, stop=KeyboardInterrupt):
    """Ctrl-C right after the display whose description starts with ``description`` showed
    ``shown`` done (a stop arrives between any two lines of a run)."""
    update = pinnlab.solvers.progress.Progress.update

    def stopping(self, step, *args, **kwargs):
        update(self, step, *args, **kwargs)
        if self.description.startswith(description) and step + 1 == shown:
            raise stop()

    monkeypatch.setattr(pinnlab.solvers.progress.Progress, "update", stopping)


def test_a_forced_bar_into_a_file_ends_with_its_final_frame(tmp_path, capsys):
    """``pinnlab solve ... --progress bar 2> err.txt`` left the bar's first frames in the
    file and then blanked the last one (the bar cleared itself at the end, as on a terminal):
    the file never showed the run's final step count. A bar into a file now ends with it."""
    assert main(["solve", str(_solve_config(tmp_path)), "-o", str(tmp_path / "r.h5"), "--progress", "bar"]) == 0
    err = capsys.readouterr().err
    assert err.endswith("\n"), repr(err)
    final = err.rstrip("\n").split("\r")[-1]
    assert "3/3" in final and "loss=" in final, repr(err)


def test_a_joint_fits_progress_counts_its_training_steps(tmp_path, capsys):
    """A joint fit's progress line was updated once per tune.horizon training steps, and
    counted those rows: "step 1/2 ... it/s=3" while it trained about 100 steps a second. It
    now counts the training steps (outer_steps × horizon), so its it/s is steps a second."""
    code = main(["tune", str(_tune_config(tmp_path)), "tune.horizon=3", "tune.outer_steps=2",
                 "-o", str(tmp_path / "t.h5"), "--progress", "log"])
    assert code == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tune ")]
    assert [line.split(" step ")[1].split()[0] for line in lines] == ["3/6", "6/6"], lines


def test_sigterm_to_a_solve_without_checkpoints_says_its_steps_are_lost(tmp_path):
    """SIGTERM to ``pinnlab solve`` without trainer.checkpoint_every printed only
    "pinnlab: terminated": nothing said that every step was lost, nor how to keep them."""
    cfg = _solve_config(tmp_path, steps=1_000_000, log_every=1)
    proc = subprocess.Popen([sys.executable, "-m", "pinnlab.cli", "solve", str(cfg), "-o", str(tmp_path / "r.h5"),
                             "--progress", "log"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # the first step's line: the training has started
        assert first.startswith("train step 1/"), first
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:  # never left training for the rest of the suite
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, err
    *_, lost, last = err.strip().splitlines()
    assert last == "pinnlab: terminated", err
    assert lost == ("pinnlab: trainer.checkpoint_every = 0, so the steps since the start are lost; with "
                    "trainer.checkpoint_every=N a run saves every N steps and when stopped, for --resume"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_a_stopped_resume_without_checkpoints_names_the_step_it_keeps(tmp_path, capsys, monkeypatch):
    """A solve resumed without trainer.checkpoint_every and stopped again said nothing of the
    steps since the checkpoint (lost) nor that the checkpoint still holds its step."""
    cfg = _solve_config(tmp_path, steps=8)
    out = tmp_path / "r.h5"
    _stop_at(monkeypatch, "train", 2)
    assert main(["solve", str(cfg), "trainer.checkpoint_every=1", "-o", str(out), "--progress", "off"]) == 130
    capsys.readouterr()
    _stop_at(monkeypatch, "train", 5)
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off", "--resume"]) == 130
    *_, lost, last = capsys.readouterr().err.strip().splitlines()
    assert last == "pinnlab: interrupted"
    assert lost.startswith(f"pinnlab: trainer.checkpoint_every = 0, so the steps since step 2, which "
                           f"{str(out) + '.ckpt'!r} holds and --resume continues from, are lost; "), lost


def test_a_search_stopped_while_it_saves_a_trial_saves_the_trial_it_showed(tmp_path, capsys, monkeypatch):
    """Ctrl-C (or SIGTERM) while a search wrote its checkpoint after trial 2, which its
    progress line already showed ("trial 2/4"), said "trial 1 saved" (the atomic write
    kept the file before it): the two differed by one, and a resume ran trial 2 again. A
    stop during the write now still saves the trial the line showed."""
    import pinnlab.io.checkpoint as checkpoints

    write = checkpoints.write_checkpoint_file
    writes = []

    def stopped_in_second(path, payload):  # (a stop before the new file replaced the old one)
        writes.append(len(payload["trials"]))
        if len(writes) == 2:
            raise KeyboardInterrupt
        write(path, payload)

    monkeypatch.setattr(checkpoints, "write_checkpoint_file", stopped_in_second)
    code = main(["tune", str(_tune_config(tmp_path)), "tune.method=random", "tune.outer_steps=4",
                 "-o", str(tmp_path / "t.h5"), "--progress", "log"])
    assert code == 130
    *lines, saved, last = capsys.readouterr().err.strip().splitlines()
    assert last == "pinnlab: interrupted"
    assert " trial 2/4 " in lines[-1], lines
    assert saved.startswith("pinnlab: trial 2 saved in "), saved


@pytest.mark.parametrize("phase", ["tune", "train"])
def test_a_stopped_joint_fit_says_what_it_keeps(tmp_path, capsys, monkeypatch, phase):
    """Ctrl-C during a joint fit (tune.method = joint), or its final solve, said only
    "pinnlab: interrupted", where the other methods say what is saved and how to go on."""
    _stop_at(monkeypatch, phase, 2)  # (a joint fit shows every tune.horizon = 2 steps)
    code = main(["tune", str(_tune_config(tmp_path)), "-o", str(tmp_path / "t.h5"), "--progress", "log"])
    assert code == 130
    *_, said, last = capsys.readouterr().err.strip().splitlines()
    assert last == "pinnlab: interrupted"
    expected = ("so its steps are lost; the same command runs it again from the start" if phase == "tune" else
                "nor the final solve without trainer.checkpoint_every; the same command runs both again")
    assert said == f"pinnlab: the joint fit (tune.method = 'joint') keeps no checkpoint, {expected}", said
    assert not Path(str(tmp_path / "t.h5") + ".ckpt").exists()


def test_the_tunings_clock_starts_after_torch_optims_one_off_import(tmp_path):
    """The first outer step's s/it counted ~3.5 s of torch importing torch._dynamo when the
    outer optimizer was first made, inside the display's clock. ``pinnlab tune`` now makes
    one before the display starts (checked in a fresh process, where nothing imported it)."""
    script = (
        "import sys\n"
        "import pinnlab.solvers.progress as progress\n"
        "from pinnlab.cli import main\n"
        "init = progress.Progress.__init__\n"
        "def recorded(self, *args, **kwargs):\n"
        "    if kwargs.get('description') == 'tune':\n"
        "        print('dynamo imported:', 'torch._dynamo' in sys.modules)\n"
        "    init(self, *args, **kwargs)\n"
        "progress.Progress.__init__ = recorded\n"
        f"sys.exit(main(['tune', {str(_tune_config(tmp_path))!r}, '-o', {str(tmp_path / 't.h5')!r},"
        " '--progress', 'off']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "dynamo imported: True" in done.stdout, done.stdout
