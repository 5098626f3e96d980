"""What a run records and says: the weighting options it ran with, the final weights of
the weighting baselines, why a search's trials were all non-finite, a solve of a study
config."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import yaml

from pinnlab import config as configuration
from pinnlab.cli import main

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 3, eval_every: 3, test_points: 50, batch_size: 8}
loss: {boundary_points: 8}
"""


def _write(tmp_path, text=TINY, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("weighting, given, expected", [
    ("lra", {}, {"alpha": 0.1, "every": 10}),
    ("lra", {"every": 2}, {"alpha": 0.1, "every": 2}),
    ("relobralo", {"temperature": 0.5}, {"alpha": 0.95, "lookback": 0.99, "temperature": 0.5}),
])
def test_a_solve_records_the_weighting_options_it_ran_with(tmp_path, weighting, given, expected):
    """A solve with loss.weighting: lra recorded ``weighting_options: {}`` in its result
    file's config, not the alpha and every LRA ran with (every other section's defaults
    are written out), so the record did not say what ran."""
    options = [f"loss.weighting_options.{k}={v}" for k, v in given.items()]
    out = tmp_path / "w.h5"
    assert main(["solve", str(_write(tmp_path)), f"loss.weighting={weighting}", *options, "-o", str(out),
                 "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        recorded = yaml.safe_load(fh.attrs["config"])
    assert recorded["loss"]["weighting_options"] == expected
    # the record is a config that runs the same weighting again
    weighting_of = configuration.make_weighting(configuration.validate(recorded).loss)
    assert {k: getattr(weighting_of, k) for k in expected} == expected


def test_a_solve_without_a_weighting_records_no_options(tmp_path):
    """loss.weighting: none has no options (they are refused there): the record keeps {}."""
    config = configuration.load(_write(tmp_path))
    assert config.resolved()["loss"]["weighting_options"] == {}


def _tiny_problem_a(bt):
    """bench_tuning's problem (a) at test size, one outer step of horizon 1 (--outer-steps)."""
    data = bt.problems(True)["a"]
    data["model"] = {**data["model"], "width": 8}
    data["estimator"] = {**data["estimator"], "samples": 4, "eval_samples": 8}
    data["trainer"] = {**data["trainer"], "steps": 3, "eval_every": 3, "test_points": 50, "batch_size": 8}
    data["loss"] = {**data["loss"], "boundary_points": 8}
    data["data"] = {**data["data"], "points": 10}
    data["tune"] = {**data["tune"], "outer_steps": 1, "horizon": 1}
    return data


@pytest.mark.parametrize("method", ["lra", "relobralo"])
def test_the_tuning_benchmark_records_the_weights_a_weighting_ended_with(benchmarks, method):
    """bench_tuning's JSON kept ``tuned: null`` for the lra and relobralo rows: what the
    adaptive weighting ended with (the weights it trained with last, its answer to the
    badly scaled boundary weight 1e-3 of (a)) was not recorded, while every tuner's
    tuned weight was."""
    bt = benchmarks("bench_tuning")
    record = bt.run_method("a", _tiny_problem_a(bt), method, None)
    assert record["note"] == "4 steps" and record["error"] is not None
    tuned = record["tuned"]
    assert set(tuned) == {"weights.residual", "weights.boundary"}, record
    assert all(isinstance(v, float) and v > 0 for v in tuned.values()), record
    assert tuned["weights.boundary"] != 1e-3  # (adapted from the configured start)
    if method == "lra":
        assert tuned["weights.residual"] == 1.0  # (LRA's reference term keeps its weight)
    default = bt.run_method("a", _tiny_problem_a(bt), "default", None)
    assert default["tuned"] is None  # (fixed weights: nothing was tuned)
    assert "for lra and relobralo, the loss weights" in " ".join(bt.__doc__.split())


SEARCH = TINY.replace("batch_size: 8}", "batch_size: 8, lr: 1.0e+30, optimizer: sgd}") + """\
data: {source: synthetic, points: 10}
tune:
  method: random
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 4}
  outer_steps: 2
  final_steps: 2
"""


@pytest.mark.parametrize("method", ["random", "optuna"])
@pytest.mark.parametrize("trial_steps, cause", [
    (1, "the training stayed finite: the objective itself was not finite"),
    (3, "the training diverged"),
])
def test_a_search_whose_every_trial_is_nonfinite_says_whether_the_training_diverged(tmp_path, capsys, method,
                                                                                   trial_steps, cause):
    """Every trial of a search scored a non-finite outer objective: the warning said "the
    training diverged" also where each trial's training stayed finite (one SGD step at
    lr 1e30 leaves θ finite, but u at the observations overflows the data misfit)."""
    if method == "optuna":
        pytest.importorskip("optuna")
    out = tmp_path / "s.h5"
    code = main(["tune", str(_write(tmp_path, SEARCH)), f"tune.method={method}", f"tune.trial_steps={trial_steps}",
                 "-o", str(out), "--progress", "off"])
    assert code == 1
    err = capsys.readouterr().err
    assert (f"warning: every one of the 2 trials ended with a non-finite outer objective ({cause}); the final "
            "solve uses trial 0's values\n") in err, err


def test_a_search_with_both_kinds_of_nonfinite_trial_counts_them():
    """Trials whose training diverged and trials whose objective alone was not finite:
    the warning gives how many of each; where it cannot know (trials a resumed search
    replayed, DeepXDE trainings) it names both causes."""
    from pinnlab.tuning import search

    assert search._nonfinite_cause([True, False, True], 3) == (
        "the training diverged in 2 of them; in the other 1 it stayed finite and the objective itself was not finite")
    assert search._nonfinite_cause([True], 3) == (
        "the training diverged, or the objective itself was not finite after a finite training")


SEEDED = TINY.replace("batch_size: 8}", "batch_size: 8, lr: 0.01, schedule: constant}").replace(
    "loss: {boundary_points: 8}", "loss: {boundary_points: 8, weights: {boundary: 0.01}}") + """\
data: {source: synthetic, points: 10}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 4}
  outer_steps: 3
  horizon: 3
  final_steps: 2
"""


@pytest.mark.parametrize("tunables, acts", [("{weights.boundary: {}}", False),
                                            ("{weights.boundary: {}, sigma: {}}", True)])
def test_tune_seed_changes_nothing_with_one_tuned_value_and_rademacher_directions(tmp_path, tunables, acts):
    """``tune.seed`` is accepted with fg2u and one direction: README says where it has no
    effect (one tuned value, ±1 directions: v·vᵀ = 1 whatever the draw) and that with
    N >= 2 even a single direction depends on it; both hold for the outer steps' φ."""
    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert ("With a single tuned value (N = 1) and ±1 or coordinate directions (zo_fg2u: central differences) "
            "every direction gives the same estimate, so there the seed changes nothing") in text
    assert "(with N ≥ 2 even one direction depends on it)" in text
    config = _write(tmp_path, SEEDED)
    phis = []
    for seed in (0, 7):
        out = tmp_path / f"seed{seed}.h5"
        assert main(["tune", str(config), f"tune.seed={seed}", f"tune.tunables={tunables}", "-o", str(out),
                     "--progress", "off"]) == 0
        with h5py.File(out) as fh:
            phis.append({k: v[...].tolist() for k, v in fh["tune/phi"].items()})
    assert (phis[0] != phis[1]) == acts, phis


def test_solve_of_a_study_config_says_it_ignores_the_study(tmp_path, capsys):
    """``pinnlab solve`` of a config with a ``study:`` section trained its base run and
    said nothing of the study it left out; now one warning line says so and names the
    command that runs it (the solve itself still runs: its network can be an estimator
    study's ``study.init``)."""
    config = _write(tmp_path, TINY + "study: {kind: estimator, samples: [4], sigmas: [0.05], replicates: 4, "
                                     "points: 2, reference_samples: 8, reference_replicates: 4, init: trained}\n")
    out = tmp_path / "base.h5"
    assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: study: is ignored by solve, which trains the config's base run; `pinnlab study "
                   f"{config}` runs the study\n"), err
    assert out.is_file()
    assert main(["solve", str(_write(tmp_path)), "-o", str(tmp_path / "plain.h5"), "--progress", "off"]) == 0
    assert capsys.readouterr().err == ""  # (no study: no line)


def test_solve_of_a_study_config_records_the_run_it_trained_not_the_study(tmp_path):
    """The result of ``pinnlab solve`` on a study config recorded the ``study:`` section it
    ignored (and for an estimator study on a fresh init, its trainer and loss sections cut
    down to the study's few settings): the record did not say what the solve trained. It
    now records the base run, as the same config without ``study:`` records it."""
    study = ("study: {kind: estimator, samples: [4], sigmas: [0.05], replicates: 4, points: 2, "
             "reference_samples: 8, reference_replicates: 4, init: trained}\n")
    recorded = []
    for name, text in (("study.yaml", TINY + study), ("plain.yaml", TINY)):
        out = tmp_path / f"{name}.h5"
        assert main(["solve", str(_write(tmp_path, text, name)), "-o", str(out), "--progress", "off"]) == 0
        with h5py.File(out) as fh:
            recorded.append(yaml.safe_load(fh.attrs["config"]))
    assert recorded[0] == recorded[1]
    assert "study" not in recorded[0] and recorded[0]["trainer"]["steps"] == 3
