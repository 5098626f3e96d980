"""A new user's walk through the README's tuning sections (``pinnlab tune`` with the shipped
tuning configs, ``--resume``, ``--overwrite``, ``pinnlab plot TUNE.h5``): the problems met on
the way (the progress display of a resumed tuning, a stop while the result is written, the
tune plot of a stopped tuning, tune keys the README leaves out) and the behaviour met there
that no other test pinned (plot of a tuning checkpoint, refused reruns keep it)."""

from __future__ import annotations

import re
import types

import h5py
import pytest

from pinnlab import config as configuration
from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U


def _run(args):
    return main([str(a) for a in args])


def _write(tmp_path, text=WEIGHT_FG2U):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(text)
    return cfg


def _interrupted_after(tmp_path, step):
    """A tuning of WEIGHT_FG2U stopped by Ctrl-C while outer step ``step`` (0-based) is
    reported, before it is saved, as ``pinnlab tune`` leaves it: the checkpoint
    ``t.h5.ckpt`` holds the ``step`` outer steps before it, with the config's hash."""
    from pinnlab.io.checkpoint import comparable_text, config_hash
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    cfg = _write(tmp_path)
    config = configuration.load(cfg, [])
    identity = config.identity()
    ckpt = tmp_path / "t.h5.ckpt"

    def progress(k, phi, diagnostics):
        if k == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tuning(build_tuning(config), checkpoint=ckpt, progress=progress,
                   metadata={"config": config_hash(identity), "config_text": comparable_text(identity)})
    assert ckpt.is_file()
    return cfg, tmp_path / "t.h5"


# -- bugs ---------------------------------------------------------------------------------------
def test_a_resumed_tuning_counts_its_rate_from_the_outer_steps_it_runs(tmp_path, capsys, monkeypatch):
    """README: long work shows progress; ``pinnlab solve --resume`` counts its rate from the
    steps it runs (Progress(initial=state.step)). A tuning resumed after outer step 2 of 3
    runs one outer step; with a clock that reads 1 s after the bar's start, its log line must say
    it/s=1.00 (one step in one second), not 3.00 (the three steps of both runs)."""
    from pinnlab.solvers import progress as progress_module

    cfg, out = _interrupted_after(tmp_path, 2)  # outer steps 0 and 1 saved
    readings = iter([0.0])  # the bar's start at 0 s, every later reading at 1 s
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(perf_counter=lambda: next(readings, 1.0)))
    capsys.readouterr()
    assert _run(["tune", cfg, "-o", out, "--resume", "--progress", "log"]) == 0
    err = capsys.readouterr().err
    line = next(text for text in err.splitlines() if text.startswith("tune ") and " step 3/3 " in text)
    assert line.endswith("it/s=1.00"), line


def test_a_resumed_tuning_bar_continues_at_the_outer_steps_done(tmp_path, capsys):
    """The bar of a tuning resumed after outer step 2 of 3 is first drawn at 2/3 (as a
    resumed solve's bar starts at its checkpoint's step), not at 0/3."""
    cfg, out = _interrupted_after(tmp_path, 2)
    capsys.readouterr()
    assert _run(["tune", cfg, "-o", out, "--resume", "--progress", "bar"]) == 0
    err = capsys.readouterr().err
    counts = re.findall(r"\| *(\d+)/3 \[", err)  # each drawing of the bar: "tune: 67%|...| 2/3 [..."
    assert counts and counts[0] == "2", (counts, err)


def test_a_stop_while_the_result_is_written_says_where_resume_continues(tmp_path, capsys, monkeypatch):
    """README: stopped by Ctrl-C or SIGTERM, ``pinnlab tune`` says where ``--resume``
    continues. A stop after the final solve, while the result file is written (its slice
    and radial error are evaluated there), keeps the tuning's checkpoint and (as pinnlab
    solve's) the finished final solve's last step, so the run must say so as it does during
    the final solve, not end with 'interrupted' alone."""
    from pinnlab.tuning import command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "write_tune_result", interrupted)
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "-o", out, "--progress", "off"]) == 130
    err = capsys.readouterr().err
    assert (tmp_path / "t.h5.ckpt").is_file() and (tmp_path / "t.h5.final.ckpt").is_file() and not out.exists()
    assert "pinnlab: the finished final solve (step " in err, err
    assert (f"saved in {str(tmp_path / 't.h5.final.ckpt')!r}, the tuning in {str(tmp_path / 't.h5.ckpt')!r}; "
            "--resume writes the result from it without training again") in err, err


# -- behaviour met on the way, pinned -----------------------------------------------------------
def test_plot_of_an_interrupted_tunings_checkpoint_points_at_resume(tmp_path, capsys):
    """``pinnlab plot t.h5.ckpt`` (the file an interrupted tuning leaves) is one line and
    exit 2 that names it a checkpoint and points at --resume; no plot directory is made."""
    _, out = _interrupted_after(tmp_path, 1)
    ckpt = tmp_path / "t.h5.ckpt"
    figs = tmp_path / "figs"
    capsys.readouterr()
    assert _run(["plot", ckpt, "-o", figs]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pinnlab: error: cannot plot: {str(ckpt)!r} is a checkpoint of an interrupted run, not a "
                   "result; continue the run with --resume to get its result file"), err
    assert not figs.exists() and not out.exists()


def test_refused_reruns_leave_an_interrupted_tunings_checkpoint_as_it_was(tmp_path, capsys):
    """After Ctrl-C, a rerun without --resume and a --resume with another horizon are each
    one line and exit 2 and leave OUT.h5.ckpt byte for byte; the right --resume then
    finishes (outer steps 0..2) and removes it."""
    import numpy as np

    cfg, out = _interrupted_after(tmp_path, 1)
    ckpt = tmp_path / "t.h5.ckpt"
    saved = ckpt.read_bytes()
    capsys.readouterr()
    for extra, expected in (
            ((), f"pinnlab: error: a checkpoint {str(ckpt)!r} exists from an interrupted run; pass --resume "
                 "to continue it or --overwrite to start over"),
            (("tune.horizon=1", "--resume"),
             f"pinnlab: error: checkpoint {str(ckpt)!r} belongs to another configuration (tune.horizon: 2 in the "
             "checkpoint, 1 in this run); to start over, pass --overwrite instead of --resume")):
        assert _run(["tune", cfg, *extra, "-o", out, "--progress", "off"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == expected, err
        assert ckpt.read_bytes() == saved and not out.exists()
    assert _run(["tune", cfg, "-o", out, "--resume", "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        np.testing.assert_array_equal(fh["tune/outer_step"][...], [0, 1, 2])
    assert not ckpt.exists()


def test_readme_names_every_key_of_the_tune_section():
    """README's Configs table sends the ``tune`` keys to "Tuning PINNs automatically"; a
    user reading it should find every key the section accepts (unknown keys are refused,
    so the schema's list is the whole set), the objective's included."""
    from pathlib import Path

    from pinnlab.tuning.spec import ObjectiveSpec, TuneSection

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [f"tune.{name}" for name in TuneSection.model_fields
               if not re.search(rf"\b{name}\b", readme)]
    missing += [f"tune.objective.{name}" for name in ObjectiveSpec.model_fields
                if f"objective.{name}" not in readme and f"objective: {{kind: data, {name}" not in readme
                and name != "kind"]
    assert not missing, missing


def test_the_tune_plot_of_a_stopped_tuning_says_it_stopped(tmp_path, capsys, monkeypatch):
    """An outer rate of 1e4 on log w overflows φ at the first outer step: /tune status
    'nonfinite', exit code 1, the final solve at the initial weight. Its tune.png must say
    so in a title (as curves.png says a solve's status), not draw an ordinary tuning."""

    from pinnlab.plots import tune as tune_plots

    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "tune.outer_lr=1.0e4", "-o", out, "--progress", "off"]) == 1
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "nonfinite"
    figures = []
    monkeypatch.setattr(tune_plots, "_save", lambda fig, path: figures.append(fig) or path)
    monkeypatch.setattr(tune_plots, "plot_solve", lambda path, outdir: [])
    tune_plots.plot_tune(out, tmp_path / "figs")
    titles = " ".join(ax.get_title() for ax in figures[0].axes) + figures[0].get_suptitle()
    assert "tuned hyperparameters (fg2u; stopped: status nonfinite)" in titles, titles


@pytest.mark.parametrize("method, unit", [("fg2u", "outer steps"), ("random", "trials")])
def test_a_tuning_ended_by_its_budget_says_so(tmp_path, capsys, method, unit):
    """A tuning that tune.budget_seconds ends early (here after its first outer step or
    trial: the first always starts, and a second would not end within 1 ms) said nothing:
    the next line was the summary, as after a finished tuning. It now says how far it got."""
    overrides = ["tune.budget_seconds=0.001", f"tune.method={method}"]
    if method == "random":
        overrides += ["tune.options={}", "tune.trial_steps=2"]
    assert _run(["tune", _write(tmp_path), *overrides, "-o", tmp_path / "t.h5", "--progress", "off"]) == 0
    err = capsys.readouterr().err
    note = f"tune.budget_seconds = 0.001 ended the tuning after 1 of 3 {unit}"
    assert f"note: {note}\n" in err, err
    with h5py.File(tmp_path / "t.h5") as fh:  # (and /tune's message, which was empty)
        assert (fh["tune"].attrs["status"], fh["tune"].attrs["message"]) == ("ok", note)


ROSENBROCK_REFERENCE = """\
equation: {name: hjb_rosenbrock, dim: 3, seed: 0, horizon: 0.3, reference_samples: 64}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, eval_samples: 4}
loss: {kind: biased}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
tune:
  method: fg2u
  tunables: {sigma: {}}
  objective: {kind: reference, points: 10}
  outer_steps: 1
  horizon: 1
"""


@pytest.mark.parametrize("mode", ["log", "off"])
def test_the_objectives_rosenbrock_reference_is_announced_before_the_tuning(tmp_path, capsys, monkeypatch, mode):
    """tune.objective.kind: reference on hjb_rosenbrock computes the Monte Carlo u* at the
    objective's points before the first outer step, which solve announces and times for its
    test set but tune did in silence (minutes at the shipped reference_samples); with
    --progress off nothing is said, as in solve."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "cache"))
    cfg = _write(tmp_path, ROSENBROCK_REFERENCE)
    assert _run(["tune", cfg, "-o", tmp_path / "t.h5", "--progress", mode]) == 0
    lines = capsys.readouterr().err.splitlines()
    said = [i for i, line in enumerate(lines) if "reference u* at 10 points" in line]
    if mode == "off":
        assert not said, lines
        return
    first_outer = next(i for i, line in enumerate(lines) if line.startswith("tune "))
    assert said and said[0] < first_outer and lines[said[0] + 1].startswith("hjb_rosenbrock: reference u* computed in"), lines


def test_a_final_solve_that_diverges_says_so_with_the_tuned_values(tmp_path, capsys):
    """trainer.lr = 1e25: the tuning stops at once and the final solve's loss overflows. solve
    prints the solver's message; tune wrote it only into the file, so the user saw
    rel_l2=7e+25 and exit code 1 without a reason. Now one warning line names the values the
    final solve used and the solver's message and advice."""
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "trainer.lr=1e25", "trainer.dtype=float32", "tune.outer_steps=1", "-o", out,
                 "--progress", "off"]) == 1
    err = capsys.readouterr().err.splitlines()
    with h5py.File(out) as f:
        message = f.attrs["message"]
    assert [line for line in err if "final solve with" in line] == [
        f"warning: the final solve with weights.boundary=0.01 stopped early: {message}"], err
    assert "smaller learning rate" in message


MIX_FG2U = WEIGHT_FG2U.replace("loss: {kind: biased, weights: {boundary: 1.0e-2}}",
                               "loss: {kind: hybrid, switch_step: 2}") \
    .replace("tunables: {weights.boundary: {}}", "tunables: {mix: {}}")
"""fg2u tuning the biased/unbiased mix: the final solve replays the schedule it followed."""


def test_the_summary_of_a_tuned_mix_names_the_schedule_the_final_solve_replays(tmp_path, capsys):
    """`tuned (fg2u, …): mix=0.4` showed the last φ, but the final solve follows the mix
    schedule of the tuning (/tune/tuned/mix, one value per outer step). The line now says
    it is a schedule, with its first and last values, as the file records it."""
    out = tmp_path / "t.h5"
    assert _run(["tune", _write(tmp_path, MIX_FG2U), "-o", out, "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        schedule = fh["tune/tuned/mix"][()]
    assert schedule.shape == (3,)
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("tuned ("))
    assert line.endswith(f"): mix: a schedule of 3 values, {schedule[0]:.4g} to {schedule[-1]:.4g}, which the "
                         "final solve replays"), line
