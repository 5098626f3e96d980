"""Progress displays and what a stopped run says: a forced bar into a file, a joint fit's
rate, the steps a solve without checkpoints loses, a stopped tuning's display against its
saved step, and a stopped joint fit."""

from __future__ import annotations

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
