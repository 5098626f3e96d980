"""Mutation audit of the commands ``pinnlab study`` (pinnlab.studies.command) and
``pinnlab tune`` (pinnlab.tuning.command): refusals, exit codes, what is printed and what
the result files hold, each test naming the mutant it kills. The estimates, cells and
trainings are stubbed where the command, not the numbers, is under test."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import h5py
import pytest

from pinnlab.cli import main
from pinnlab.studies import estimator_study
from tests.studies.test_studies import TRAINED_ESTIMATOR
from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator, _refused_before_any_work


def _stub_estimates(monkeypatch, variance=0.25, slopes=None, comparisons=None):
    """Each studied dimension's records as closed forms (one per loss, quantity "loss"),
    the slopes and comparisons as given (none by default): nothing is estimated."""
    def records(spec, **kwargs):
        (d,) = spec.dims
        return {"records": [{"quantity": "loss", "loss": loss, "noise": "independent", "dim": d, "samples": 4,
                             "sigma": 0.1, "bias2": (i + 1) / 8, "variance": variance}
                            for i, loss in enumerate(spec.losses)]}

    monkeypatch.setattr(estimator_study, "run_estimator_study", records)
    monkeypatch.setattr(estimator_study, "fit_slopes", lambda rows: slopes or {})
    monkeypatch.setattr(estimator_study, "compare_losses", lambda rows: comparisons or [])


def test_workers_for_an_estimator_study_is_refused_in_one_line(tmp_path, capsys):
    """``--workers`` is for a training study: given to an estimator study (which runs in one
    process) it is refused in one line, exit 2, before any output (killed mutant: the
    kind test never matched, so the option was silently ignored)."""
    cfg = _estimator(tmp_path, **ONE_CELL)
    err = _refused_before_any_work([cfg, "-o", tmp_path / "e.h5", "--workers", "2"], tmp_path, capsys)
    assert err == ("pinnlab: error: --workers: an estimator study runs in one process (the option is for "
                   "training studies)"), err


def test_a_pretrained_network_without_a_test_error_is_still_studied(tmp_path, monkeypatch, capsys):
    """Only a pretraining that diverged (status nonfinite) stops the study with exit 1; one
    whose test error is undefined (status invalid_reference) trained a network, which is
    studied: exit 0, its NaN error recorded as null (killed mutant: every status other
    than ok refused)."""
    import torch

    import pinnlab.solvers

    _stub_estimates(monkeypatch)

    def train(problem, **kwargs):
        return SimpleNamespace(status="invalid_reference", message="no reference", params={"w": torch.zeros(2)},
                               final=SimpleNamespace(rel_l2=math.nan))

    monkeypatch.setattr(pinnlab.solvers, "train", train)
    cfg = _estimator(tmp_path, base=TRAINED_ESTIMATOR, **ONE_CELL)
    out = tmp_path / "e.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    with h5py.File(out) as fh:
        assert json.loads(fh.attrs["pretrained_rel_l2"]) == {"3": None}
    assert "did not end ok" not in capsys.readouterr().err


def test_only_the_biased_losses_bias_slopes_are_printed(tmp_path, monkeypatch, capsys):
    """The printed slope lines are the bias slopes of ``loss/biased...`` series, with their
    standard errors to three decimals; the unbiased loss's (zero bias: a slope of noise)
    and a series without a bias slope print nothing (killed mutant: every ``loss/`` series
    printed)."""
    slopes = {"loss/biased/independent/d=3": {"bias_slope": -1.0, "bias_slope_se": 0.0125},
              "loss/unbiased/independent/d=3": {"bias_slope": 0.5, "bias_slope_se": 0.25},
              "loss/biased/shared/d=3": {"variance_slope": -1.0}}
    _stub_estimates(monkeypatch, slopes=slopes)
    assert main(["study", str(_estimator(tmp_path, **ONE_CELL)), "-o", str(tmp_path / "e.h5")]) == 0
    assert capsys.readouterr().out.splitlines() == ["loss/biased/independent/d=3: bias slope -1.000 ± 0.013"]


def test_a_non_finite_variance_alone_exits_1(tmp_path, monkeypatch, capsys):
    """A record whose bias² is finite but whose variance is NaN is not a study: the file is
    written, the exit code is 1 and the last line counts those records (killed mutant:
    only bias² checked)."""
    _stub_estimates(monkeypatch, variance=math.nan)
    out = tmp_path / "e.h5"
    assert main(["study", str(_estimator(tmp_path, **ONE_CELL)), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pinnlab: error: 2 of 2 records have a non-finite bias² or variance (at σ = 0.1: "), err
    assert out.is_file()


def test_a_network_file_without_a_test_error_is_studied(tmp_path, monkeypatch):
    """A result file whose training ended with an undefined test error (status
    invalid_reference) holds a trained network: the study reads it, exit 0 (killed
    mutant: only status ok accepted)."""
    from tests.studies.test_studies import _network_file

    _stub_estimates(monkeypatch)
    _network_file(tmp_path / "net.hdf5", status="invalid_reference")
    cfg = _estimator(tmp_path, tmp_path / "net.hdf5", **ONE_CELL)
    out = tmp_path / "e.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    with h5py.File(out) as fh:
        assert fh["records/variance"][...].tolist() == [0.25, 0.25]


def test_records_of_zero_variance_are_warned_about_in_one_line(tmp_path, monkeypatch, capsys):
    """Records whose replicates were all alike (variance exactly 0) are a warning naming
    their count and σ, exit 0 (killed mutant: the warning tested another variance)."""
    _stub_estimates(monkeypatch, variance=0.0)
    assert main(["study", str(_estimator(tmp_path, **ONE_CELL)), "-o", str(tmp_path / "e.h5")]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "warning: 2 of 2 records have a variance of exactly 0 (every replicate alike, at σ = 0.1: a σ that "
        "saturates the network?); their series have no variance slope")


def _one_cell_fails(monkeypatch, failing):
    """Training cells stubbed: the metrics of ``_metrics``, status nonfinite for the seeds
    in ``failing``."""
    from pinnlab.studies import training_study
    from tests.studies.test_study_grid_and_summary import _metrics

    def run_cell(config_path, overrides, output, threads):
        seed = int(next(o for o in overrides if o.startswith("trainer.seed=")).split("=")[1])
        return _metrics(0.1 * (seed + 1), "nonfinite" if seed in failing else "ok")

    monkeypatch.setattr(training_study, "run_cell", run_cell)


@pytest.mark.parametrize("failing, code", [({1}, 0), ({0, 1}, 1)])
def test_a_training_study_fails_only_when_no_cell_ended_ok(tmp_path, monkeypatch, capsys, failing, code):
    """Some cells not ok is a study (the table leaves them out): exit 0; none ok is exit 1
    with one error line, the files written all the same (killed mutant: any cell not ok
    made the study fail); --json holds the records and the summary (killed mutant: no summary)."""
    from tests.studies.test_studies import TINY_TRAINING

    _one_cell_fails(monkeypatch, failing)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    js = tmp_path / "t.json"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert out.is_file() and (tmp_path / "t.md").is_file() and (tmp_path / "t.csv").is_file()
    data = json.loads(js.read_text())  # (killed mutant: the JSON without the summary)
    assert sorted(data) == ["records", "summary"] and len(data["records"]) == 8
    assert [(row["variant"], row["column"]) for row in data["summary"]] == [
        ("biased", 3), ("biased", 4), ("unbiased", 3), ("unbiased", 4)]
    if code:
        assert err[-1] == ("pinnlab: error: no cell of the study ended ok (status nonfinite in all 8); its tables "
                           "have no numbers")
    else:
        assert not any(line.startswith("pinnlab: error") for line in err), err


def test_observations_trained_on_by_a_pretrained_estimator_study_are_not_refused(tmp_path, monkeypatch):
    """``data:`` with ``data.train: true`` acts in an estimator study of ``init: trained``
    (the pretraining fits the observations): studied, exit 0, and the pretraining got the
    section (killed mutant: only a training study's observations counted)."""
    import torch

    import pinnlab.solvers

    _stub_estimates(monkeypatch)
    problems = []

    def train(problem, **kwargs):
        problems.append(problem)
        return SimpleNamespace(status="ok", message="", params={"w": torch.zeros(2)},
                               final=SimpleNamespace(rel_l2=0.5))

    monkeypatch.setattr(pinnlab.solvers, "train", train)
    data = "data: {source: synthetic, points: 10, noise: 0.01, seed: 0, train: true}\n"
    cfg = _estimator(tmp_path, base=TRAINED_ESTIMATOR + data, **ONE_CELL)
    out = tmp_path / "e.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    assert len(problems) == 1
    with h5py.File(out) as fh:
        assert json.loads(fh.attrs["pretrained_rel_l2"]) == {"3": 0.5}


def _stubbed_tune(tmp_path, monkeypatch, text, outcome, *extra, final_status="ok"):
    """``pinnlab tune`` of ``text`` with the tuning returning ``outcome`` and the final solve
    and its file stubbed (a result of status ``final_status``); returns (exit code, output)."""
    import pinnlab.tuning.command as command
    import pinnlab.tuning.run as run_module

    result = SimpleNamespace(status=final_status, final=SimpleNamespace(rel_l2=0.25, rel_l1=0.125),
                             stats={"steps_per_second": 8.0})
    monkeypatch.setattr(run_module, "run_tuning", lambda setup, **kwargs: outcome)
    monkeypatch.setattr(run_module, "final_solve", lambda setup, given, **kwargs: (result, None))
    monkeypatch.setattr(run_module, "coefficient_errors", lambda setup, phi: {})
    monkeypatch.setattr(command, "write_tune_result", lambda output, *args: output.write_bytes(b"result"))
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(text)
    out = tmp_path / "t.h5"
    return main(["tune", str(cfg), "-o", str(out), "--progress", "off", *extra]), out


def _outcome(status="ok", message="", **extra):
    import torch

    from pinnlab.tuning.run import TuneOutcome

    return TuneOutcome({"weights.boundary": torch.tensor(0.02, dtype=torch.float64)}, {}, "fg2u", 0.0,
                       extra=extra, status=status, message=message)


def test_a_tuning_stopped_early_fails_the_run_though_its_final_solve_ended_ok(tmp_path, monkeypatch, capsys):
    """The exit code is 0 only when both the tuning and the final solve ended ok: a tuning
    stopped at its last finite values writes its result and exits 1 (killed mutant: the
    tuning's status left out of the exit code); the summary line is printed either way."""
    from tests.tuning.micro_configs import WEIGHT_FG2U

    code, out = _stubbed_tune(tmp_path, monkeypatch, WEIGHT_FG2U,
                              _outcome("nonfinite", "outer step 2: φ became non-finite"))
    assert code == 1 and out.read_bytes() == b"result"
    captured = capsys.readouterr()
    assert captured.out == "rel_l2=2.500000e-01 rel_l1=1.250000e-01 steps_per_second=8\n"
    assert "warning: tuning stopped early (outer step 2: φ became non-finite)" in captured.err


def test_a_search_that_did_not_end_ok_warns_with_its_own_message(tmp_path, monkeypatch, capsys):
    """A search ran every trial, so its warning is its message alone, not "tuning stopped
    early" (killed mutant: the search test inverted)."""
    from tests.tuning.micro_configs import WEIGHT_FG2U

    code, _ = _stubbed_tune(tmp_path, monkeypatch, WEIGHT_FG2U,
                            _outcome("nonfinite", "2 of 3 trials diverged", trial_steps=2))
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert "warning: 2 of 3 trials diverged" in err, err
    assert not any("stopped early" in line for line in err), err


def test_a_finished_joint_fit_removes_the_final_solves_checkpoint_it_resumed(tmp_path, monkeypatch):
    """A joint fit resumed under --resume continues its final solve's checkpoint
    OUT.h5.final.ckpt; once the result is written that checkpoint is removed like the
    tuning's (killed mutant: only OUT.h5.ckpt removed, the stale one refused the next run)."""
    from tests.tuning.micro_configs import JOINT_MU

    final = tmp_path / "t.h5.final.ckpt"
    final.write_bytes(b"left by an interrupted final solve")
    code, out = _stubbed_tune(tmp_path, monkeypatch, JOINT_MU, _outcome(), "--resume")
    assert code == 0 and out.read_bytes() == b"result"
    assert not final.exists()


def test_one_process_runs_any_method_and_two_only_a_distributed_one():
    """Outside torchrun (a world of 1) every method runs; with 2 processes a method that
    does not spread its work is refused (killed mutant: a world of 1 checked as one of
    several, refusing the joint fit)."""
    import yaml

    from pinnlab import config as configuration
    from pinnlab.tuning.command import check_processes
    from tests.tuning.micro_configs import JOINT_MU

    config = configuration.validate(yaml.safe_load(JOINT_MU))
    check_processes(config, 1)
    with pytest.raises(configuration.ConfigError, match=r"^tune\.method = 'joint' under torchrun with 2 processes"):
        check_processes(config, 2)


def test_a_tuned_sigmas_result_slices_at_that_sigma_and_records_every_terms_weight(tmp_path, monkeypatch):
    """A real micro tuning of σ and the boundary weight: the result's slice is computed at
    the tuned σ the final solve trained with (killed mutant: the config's σ), and
    /tune/final/weights.<term> gives every term's weight, 1 for the residual that neither
    the config nor the tuning set (killed mutant: such a term recorded as 0)."""
    import pinnlab.io
    from tests.tuning.micro_configs import WEIGHT_FG2U

    sigmas = []
    real = pinnlab.io.result_slice

    def spy(*args, sigma=None, **kwargs):
        sigmas.append(sigma)
        return real(*args, sigma=sigma, **kwargs)

    monkeypatch.setattr(pinnlab.io, "result_slice", spy)
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "t.h5"
    assert main(["tune", str(cfg), "tune.tunables={weights.boundary: {}, sigma: {init: 0.2}}", "tune.outer_steps=1",
                 "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        tuned = float(fh["tune/tuned/sigma"][()])
        weights = {k: v for k, v in fh["tune"].attrs.items() if k.startswith("final/weights.")}
        boundary = float(fh["tune/tuned/weights.boundary"][()])
    assert len(sigmas) == 1 and float(sigmas[0]) == pytest.approx(tuned, rel=1e-12) and tuned != 0.05
    assert weights == {"final/weights.residual": 1.0, "final/weights.boundary": pytest.approx(boundary, rel=1e-12)}


def test_only_the_gradients_variance_comparisons_are_printed(tmp_path, monkeypatch, capsys):
    """One line per gradient comparison of the two losses' variances, its ratio and z, and
    the halving prediction where there is one; the comparisons of other quantities are in
    the files only (killed mutant: the loss's printed instead)."""
    rows = [{"quantity": "gradient", "noise": "independent", "dim": 3, "samples": 4, "variance_ratio": 0.5,
             "z": -2.31, "halving_prediction": 0.5},
            {"quantity": "gradient", "noise": "shared", "dim": 3, "samples": 4, "variance_ratio": 1.25,
             "z": 0.74, "halving_prediction": None},
            {"quantity": "loss", "noise": "independent", "dim": 3, "samples": 4, "variance_ratio": 3.0, "z": 9.0}]
    _stub_estimates(monkeypatch, comparisons=rows)
    assert main(["study", str(_estimator(tmp_path, **ONE_CELL)), "-o", str(tmp_path / "e.h5")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "gradient variance unbiased/biased, independent, d=3, K=4: 0.50 (z = -2.3; halving predicts 0.50)",
        "gradient variance unbiased/biased, shared, d=3, K=4: 1.25 (z = +0.7)"]
