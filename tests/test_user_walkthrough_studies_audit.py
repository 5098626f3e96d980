"""A new user's walk through the README's bias–variance studies (``pinnlab study`` with the
shipped configs at tiny sizes, reruns, interrupts, ``pinnlab plot STUDY.h5``, the public
``pinnlab.studies`` API): what went wrong (a training study's cells show no progress and
ignore ``trainer.log_every``, its loss-curve panels tick fractional steps, a multi-worker
study stopped by Ctrl-C loses each cell's steps since its last periodic checkpoint, the
public ``EstimatorStudySpec`` runs misspelt options, plot of a cell checkpoint hints a
``--resume`` the study command lacks, README names few study keys, an estimator study over
a training study leaves the old tables), and behaviour met on the way that no other test
pinned (an interrupted estimator study keeps the study it was to overwrite, a study onto a
solve result, ``study --resume``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import h5py
import pytest
import torch

from pinnlab.cli import main

TRAINING = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
study:
  kind: training
  variants:
    biased: [loss.kind=biased]
  grid:
    trainer.seed: [0]
"""

ESTIMATOR = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
trainer: {dtype: float64}
study:
  kind: estimator
  samples: [4, 8]
  sigmas: [0.1]
  noise: [shared]
  quantities: [loss]
  replicates: 8
  points: 4
  reference_samples: 16
  reference_replicates: 4
  init: fresh
"""

SPEC = dict(equation="poisson_two_body", dims=(3,), samples=(4,), sigmas=(0.1,), noise=("shared",),
            quantities=("loss",), width=8, depth=2, replicates=8, points=4, reference_samples=16,
            reference_replicates=4)


def _run(args):
    return main([str(a) for a in args])


# -- bugs ---------------------------------------------------------------------------------------
def test_a_training_study_cell_reports_its_steps_with_log_every(tmp_path, capsys):
    """``pinnlab study training.yaml trainer.log_every=1`` is accepted; a cell's steps should
    be logged as ``pinnlab solve`` (and an estimator study's pretraining) log them when
    stderr is no terminal. Only "finished cell ..." was printed, after the cell ended."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    assert _run(["study", cfg, "trainer.log_every=1", "-o", tmp_path / "train.h5"]) == 0
    err = capsys.readouterr().err
    assert "finished cell biased" in err, err
    assert "step 1/2" in err and "step 2/2" in err, err


def test_training_loss_curves_are_ticked_at_whole_steps(tmp_path, figures):
    """``pinnlab plot train.h5`` of a 2-step study: the step axis of training_loss_curves.png
    should show steps 1 and 2 only, not 1.2, 1.4, 1.6, 1.8 (steps are whole numbers; the tune
    figure's axes use whole-number ticks for the same reason)."""
    from pinnlab.plots import studies

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    out = tmp_path / "train.h5"
    assert _run(["study", cfg, "-o", out]) == 0
    studies.plot_training_study(out, tmp_path / "plots")
    (ax,) = figures["training_loss_curves.png"].axes
    assert ax.lines, "the cell's loss curve was not drawn"
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def _terminated_cell(config, output, marker):
    """A pool worker's life, in a forked child: the worker initializer, then one cell; the
    marker file appears once the cell's step 4 is evaluated (eval_every 2)."""
    from pinnlab.solvers import loop
    from pinnlab.studies import training_study

    real_append = loop.History.append

    def append(self, terms=None, **values):
        real_append(self, terms, **values)
        if values["step"] == 4:
            Path(marker).touch()

    loop.History.append = append
    training_study._start_worker(False)
    training_study.run_cell(config, ["loss.kind=biased", "trainer.seed=0"], output, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a worker")
def test_a_terminated_study_worker_saves_its_cells_last_step(tmp_path):
    """README: a solve stopped by Ctrl-C or SIGTERM with trainer.checkpoint_every set first
    saves its last completed step; a training study continues a cell from its checkpoint.
    With ``--workers 2``, Ctrl-C stops the parent, which ``pool.terminate()``s the workers
    (they ignore SIGINT): SIGTERM killed a cell mid-training and left no checkpoint of the
    steps it had done (seen: cells at steps 200 and 200, multiples of checkpoint_every=50,
    or none at all with checkpoint_every=999; with --workers 1 the same Ctrl-C saved step
    176). Here a forked worker runs one cell (checkpoint_every far away) and gets the SIGTERM
    that pool.terminate sends after its step 4."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING.replace("steps: 2, eval_every: 2",
                                    "steps: 1000000, eval_every: 2, checkpoint_every: 500000"))
    output, marker = tmp_path / "cell.h5", tmp_path / "step4"
    child = multiprocessing.get_context("fork").Process(target=_terminated_cell,
                                                       args=(str(cfg), str(output), str(marker)))
    child.start()
    try:
        deadline = time.time() + 60
        while not marker.exists() and child.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the cell did not reach step 4"
        os.kill(child.pid, signal.SIGTERM)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    checkpoint = Path(str(output) + ".ckpt")
    assert checkpoint.exists(), "no checkpoint of the terminated cell"
    assert torch.load(checkpoint, weights_only=True)["step"] >= 4


@pytest.mark.parametrize("wrong, named", [
    ({"losses": ("biassed",)}, "biassed"),
    ({"unbiased_samples": "half"}, "half"),
    ({"replicates": 0}, "replicates"),  # (2 and 3 stay allowed from Python: NaN standard errors, documented)
    ({"points": 0}, "points"),
])
def test_the_public_estimator_study_spec_refuses_what_the_config_refuses(wrong, named):
    """``pinnlab.studies.EstimatorStudySpec`` / ``run_estimator_study`` (exported in
    ``pinnlab.studies.__all__``): values ``pinnlab study`` refuses in one line (study.losses
    'biased' or 'unbiased', unbiased_samples 'split' or 'same', replicates >= 4, points >= 1)
    should raise a ValueError naming them, not give records: ``losses=("biassed",)``
    computed the *unbiased* loss (``kind != "biased"``) and labelled its records 'biassed'."""
    from pinnlab.studies import EstimatorStudySpec, run_estimator_study

    with pytest.raises(ValueError, match=named):
        run_estimator_study(EstimatorStudySpec(**{**SPEC, **wrong}))


def test_plot_of_a_study_cells_checkpoint_points_at_the_study_command(tmp_path, capsys):
    """After an interrupted training study (trainer.checkpoint_every), a user may plot the
    cell checkpoint left in ``STUDY.h5.cells/``. The one-line refusal said to continue the
    run with ``--resume``, which ``pinnlab study`` refuses (``unrecognized arguments:
    --resume``); its own stop message says the same command continues the study."""
    cells = tmp_path / "train.h5.cells"
    cells.mkdir()
    checkpoint = cells / "39d0744b299e9927.h5.ckpt"
    torch.save({"format": 1, "step": 3}, checkpoint)  # a torch archive, as a cell's checkpoint is
    assert _run(["plot", checkpoint]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "checkpoint of an interrupted run" in err, err
    assert "--resume" not in err, err


def test_readme_names_every_key_of_the_study_section():
    """README, Configs: "`study` | see Bias–variance studies". A user writing a study config
    from the README should find every key ``study:`` accepts (unknown keys are refused) as
    ``study.KEY``, ```KEY``` or ``KEY:``; the tune section is held to the same (see
    test_user_walkthrough_tuning_audit)."""
    import re

    from pinnlab.studies.spec import StudySection

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in StudySection.model_fields
               if not re.search(rf"study\.{name}\b|`{name}`|\b{name}:", readme)]
    assert not missing, missing


def test_an_estimator_study_over_a_training_study_leaves_no_stale_tables(tmp_path, capsys):
    """README: a training study is summarised as Markdown, CSV and HDF5, an estimator study
    writes the HDF5 (and --json) only, and the companion .md/.csv files follow --overwrite
    like -o. ``pinnlab study est.yaml -o train.h5 --overwrite`` replaced train.h5 with an
    estimator study but kept train.md and train.csv, the old training table: a reader of
    train.md sees results of a study that is gone."""
    train_cfg, est_cfg = tmp_path / "train.yaml", tmp_path / "est.yaml"
    train_cfg.write_text(TRAINING)
    est_cfg.write_text(ESTIMATOR)
    out = tmp_path / "train.h5"
    assert _run(["study", train_cfg, "-o", out]) == 0
    assert (tmp_path / "train.md").exists() and (tmp_path / "train.csv").exists()
    assert _run(["study", est_cfg, "-o", out, "--overwrite"]) == 0
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == "estimator_study"
    assert not (tmp_path / "train.md").exists() and not (tmp_path / "train.csv").exists()


# -- behaviour that is right, pinned here ------------------------------------------------------
def test_an_interrupted_estimator_study_keeps_the_study_it_was_to_overwrite(tmp_path, capsys, monkeypatch):
    """Ctrl-C during ``pinnlab study est.yaml -o est.h5 --json est.json --overwrite`` (after
    the first cell) ends with 130 and one line, and leaves the finished study's HDF5 and
    JSON files byte for byte as they were, with no temporary file or lock beside them."""
    from pinnlab.studies import estimator_study

    cfg = tmp_path / "est.yaml"
    cfg.write_text(ESTIMATOR)
    out, js = tmp_path / "est.h5", tmp_path / "est.json"
    assert _run(["study", cfg, "-o", out, "--json", js]) == 0
    before = {p: p.read_bytes() for p in (out, js)}
    capsys.readouterr()
    real = estimator_study._moments
    calls = []

    def moments(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the reference and the first cell are done
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(estimator_study, "_moments", moments)
    assert _run(["study", cfg, "study.samples=[4,8,16]", "-o", out, "--json", js, "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("pinnlab: interrupted; nothing was written: an estimator study keeps no partial "
                                    "results; the same command runs it again"), err
    assert "d=3 σ=0.1 noise=shared K=4 biased done" in err, err
    assert {p: p.read_bytes() for p in (out, js)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est.h5", "est.json", "est.yaml"]


def test_a_study_onto_a_solve_result_is_refused_and_keeps_it(tmp_path, capsys):
    """``pinnlab study train.yaml -o run.h5`` where run.h5 holds a solve's result: one line,
    exit 2, before any cell runs; the result, byte for byte, and no cell directory."""
    solve_cfg = tmp_path / "tiny.yaml"
    solve_cfg.write_text(TRAINING.split("study:")[0])
    run = tmp_path / "run.h5"
    assert _run(["solve", solve_cfg, "-o", run, "--progress", "off"]) == 0
    before = run.read_bytes()
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    capsys.readouterr()
    assert _run(["study", cfg, "-o", run]) == 2
    err = capsys.readouterr().err
    assert err == f"pinnlab: error: output {str(run)!r} exists; pass --overwrite to replace it\n", err
    assert run.read_bytes() == before
    assert not (tmp_path / "run.h5.cells").exists() and not (tmp_path / "run.md").exists()


def test_study_has_no_resume_option_and_says_so_in_one_line(tmp_path, capsys):
    """A user who stopped a study may try ``--resume`` (solve and tune have it); ``pinnlab
    study`` has none (the same command continues a training study): one line, exit 2, no
    usage block, and nothing written."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    out = tmp_path / "train.h5"
    assert _run(["study", cfg, "-o", out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == "pinnlab: error: unrecognized arguments: --resume\n", err
    assert not out.exists() and not (tmp_path / "train.h5.cells").exists()
