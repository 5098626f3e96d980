"""Backlog (helper ZB): what ``pinnlab tune`` keeps when its result cannot be written (the
finished final solve, for a ``--resume`` that only writes the result), and zo_fg2u's
warning for directions that are all the same at N = 1."""

from __future__ import annotations

import errno
import os
from pathlib import Path

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


def _zo_estimate(num_directions, size, **options):
    """One zo_fg2u estimate of h(φ) = ‖φ‖² for a φ of ``size`` values, through a BlackBox;
    the warnings it raised about num_directions (category, message)."""
    import warnings

    import torch

    from pinnlab.bilevel import BlackBox, ZeroOrderForwardGradient

    box = BlackBox(lambda phi: float((phi["a"] ** 2).sum()))
    method = ZeroOrderForwardGradient(num_directions=num_directions, mu=1e-2, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method(box, {"a": torch.full((size,), 0.5, dtype=torch.float64)})
    return [(w.category, str(w.message)) for w in caught if "num_directions" in str(w.message)]


def test_zo_fg2u_warns_of_directions_that_repeat_one_estimate_at_n_1():
    """Before: num_directions = 4 at N = 1 with central differences (±1 directions, all
    giving the same estimate) ran 8 shifted inner solves where 2 give the same
    hypergradient, silently. Now it runs as given and warns, naming num_directions and
    why they are the same; the default (1 there), N = 2 and forward differences do not."""
    ((category, message),) = _zo_estimate(4, 1)
    assert category is UserWarning
    assert message.startswith("zo_fg2u: num_directions = 4 at N = 1 with central differences and rademacher "
                              "directions:") and "3 of the 4 directions repeat its 6 inner solves" in message
    assert _zo_estimate(4, 1, kind="coordinate")
    assert _zo_estimate(None, 1) == [] and _zo_estimate(1, 1) == []
    assert _zo_estimate(4, 2) == [] and _zo_estimate(4, 1, scheme="forward") == []
    assert _zo_estimate(4, 1, kind="gaussian") == []


def test_pinnlab_tune_says_the_repeated_directions_once(tmp_path):
    """The warning comes at every outer step with the same text, so a run shows it once
    (Python's default filter), as the commands' own 'warning:' line."""
    import subprocess
    import sys

    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)  # (N = 1: the boundary weight)
    done = subprocess.run([sys.executable, "-m", "pinnlab", "tune", str(cfg), "tune.method=zo_fg2u",
                           "tune.options={num_directions: 2}", "-o", str(tmp_path / "out.h5"), "--progress", "off"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "num_directions = 2 at N = 1" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: zo_fg2u: num_directions = 2"), done.stderr


DEEPXDE_OPTUNA = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 3, batch_size: 8, eval_every: 3, test_points: 10, backend: deepxde}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0}
tune:
  method: optuna
  tunables: {weights.boundary: {low: 1.0e-3, high: 1.0}}
  objective: {kind: data}
  inner: deepxde
  outer_steps: 2
"""


def test_the_tunings_clock_starts_after_what_its_first_trial_imports(tmp_path):
    """Before: only a hypergradient method's torch._dynamo import (its outer optimizer) was
    paid before the display's clock started; a search's first trial still imported it (its
    first torch.func gradient), optuna (its sampler) and, with tune.inner: deepxde, DeepXDE,
    seconds each, so its line read "s/it=2.58" where the next ones read "it/s=8". Now all
    are imported before the tune display is made (checked in a fresh process, stopped
    there: nothing of the tuning runs)."""
    import subprocess
    import sys

    cfg = tmp_path / "t.yaml"
    cfg.write_text(DEEPXDE_OPTUNA)
    script = (
        "import sys\n"
        "import pinnlab.solvers.progress as progress\n"
        "from pinnlab.cli import main\n"
        "def made(self, *args, **kwargs):\n"
        "    if kwargs.get('description') == 'tune':\n"
        "        print('imported:', *(name in sys.modules for name in ('torch._dynamo', 'optuna', 'deepxde')))\n"
        "        raise SystemExit(0)\n"
        "progress.Progress.__init__ = made\n"
        f"sys.exit(main(['tune', {str(cfg)!r}, '-o', {str(tmp_path / 't.h5')!r}, '--progress', 'off']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["imported: True True True"], done.stdout + done.stderr



CUT_EQUATION = '''\
from pinnlab.equations import register
from pinnlab.equations.fokker_planck import FokkerPlanckAniso
from pinnlab.equations.terms import LAPLACIAN, TIME_DERIVATIVE, Term, directional

DRIFT = directional(lambda x, c: c["mu"].detach(), label="mu.grad u")


@register
class CutDrift(FokkerPlanckAniso):
    name = "cut_drift"

    def terms(self):
        return (Term(1.0, (TIME_DERIVATIVE,)), Term(-0.5, (LAPLACIAN,)), Term(1.0, (DRIFT,)))
'''


def test_a_users_equation_that_cuts_the_tuned_coefficient_off_is_one_line(tmp_path):
    """Before: a user's equation module whose drift read the tuned μ through .detach()
    ended `pinnlab tune` with a traceback through pinnlab/bilevel (exit 1). The user's
    module is input: one line naming equation.module and the cause, exit code 2, and
    nothing written."""
    import subprocess
    import sys

    (tmp_path / "cut.py").write_text(CUT_EQUATION)
    done = subprocess.run([sys.executable, "-m", "pinnlab", "tune", "configs/tuning/fokker_planck_inverse.yaml",
                           "equation.module=" + str(tmp_path / "cut.py"), "equation.name=cut_drift",
                           "equation.dim=3", "tune.outer_steps=2", "tune.horizon=2", "trainer.steps=2",
                           "model.width=8", "tune.options.num_directions=2", "-o", str(tmp_path / "out.h5"),
                           "--progress", "off"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pinnlab: error: equation.module = '{tmp_path / 'cut.py'}': "
                                                   "fg2u: θ_T after the inner steps does not depend on φ"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.py"]
