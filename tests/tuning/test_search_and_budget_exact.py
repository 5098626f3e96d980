"""Random search, TPE and the wall-clock budget in closed form: what a search draws, which
trial wins, what a finished search resumes to, and where the budget rule stops (killed
mutants: linear draws for a log range, the last trial instead of the best, a finished
search refused on resume, the same TPE sampler for every trial, ``<`` for ``<=``)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab._budget import Budget
from pinnlab._seeding import derive_seed
from pinnlab.tuning.search import joint_fit, search, train_trial, trial_objective
from pinnlab.tuning.setup import build_tuning

from .micro_configs import JOINT_MU, WEIGHT_FG2U

TINY = (WEIGHT_FG2U.replace("method: fg2u\n  options: {num_directions: 1}", "method: random")
        .replace("steps: 4,", "steps: 2,").replace("outer_steps: 3", "outer_steps: 5"))
"""Random search over a soft Poisson problem's boundary weight, 5 trials of 2 steps."""

COEFFICIENT = (JOINT_MU.replace("method: joint", "method: random").replace("{init: 0.0}", "{}")
               .replace("outer_steps: 2", "outer_steps: 5").replace("schedule: constant}", "schedule: constant, dtype: float64}"))
"""Random search over fokker_planck_aniso's drift μ (d = 2), in float64."""


def _setup(tmp_path, *overrides, text=TINY):
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return build_tuning(configuration.load(path, list(overrides)))


def _scores(values):
    """A stand-in for a trial's training: the k-th call scores ``values[k]``."""
    it = iter(values)
    return lambda phi: next(it)


def test_the_budget_runs_a_unit_that_ends_exactly_at_the_budget():
    """Units of 3 s: a 9 s budget runs three (the third ends at 9 s, within it), not two;
    a 5 s budget refuses the second (expected to end at 6 s) though only one has run."""
    for seconds, expected in ((9.0, 3), (5.0, 1)):
        now = [0.0]
        budget = Budget(seconds, clock=lambda now=now: now[0])
        ran = 0
        while budget.allows_another():
            now[0] += 3.0
            ran += 1
            budget.finished_one()
        assert ran == expected, (seconds, ran)


def test_a_budget_state_that_spent_no_time_fits():
    """``spent`` >= 0, as documented: a state of 0.0 s (a clock that had not advanced) is
    a valid checkpoint, not a damaged one."""
    assert Budget.state_fits({"spent": 0.0, "units": 1}, 1)
    assert Budget(10.0, clock=lambda: 0.0).state() == {"spent": 0.0, "units": 0}


def test_random_search_draws_log_uniformly_in_the_range(tmp_path):
    """A log tunable's candidates are exp(U(log low, log high)) from the search's own
    generator (seeded by tune.seed), in order; a per-coordinate σ draws one value per coordinate, and so does
    a vector coefficient, uniformly in its default range around its default 0, (−2, 2);
    a logit coefficient's default bounds span every coordinate's init ± 2."""
    setup = _setup(tmp_path, "tune.seed=3", "tune.tunables={weights.boundary: {low: 1.0e-3, high: 1.0e+3}}")
    outcome = search(setup, sampler="random", score=_scores([1.0] * 5))
    rng = np.random.default_rng(derive_seed(3, "random_search"))  # the generator of tune.seed
    expected = [math.exp(rng.uniform(math.log(1e-3), math.log(1e3))) for _ in range(5)]
    drawn = [float(v) for v in outcome.history["phi/weights.boundary"]]
    assert drawn == pytest.approx(expected, rel=1e-12)
    setup = _setup(tmp_path, "tune.tunables={sigma: {per_coordinate: true}}")
    outcome = search(setup, sampler="random", score=_scores([1.0] * 5))
    dim = setup.problem.equation.input_dim
    assert all(tuple(v.shape) == (dim,) for v in outcome.history["phi/sigma"])
    assert len({float(v[0]) for v in outcome.history["phi/sigma"]}) == 5
    setup = _setup(tmp_path, text=COEFFICIENT)
    outcome = search(setup, sampler="random", score=_scores([1.0] * 5))
    rng = np.random.default_rng(derive_seed(0, "random_search"))
    for drawn in outcome.history["phi/coefficients.mu"]:
        np.testing.assert_array_equal(drawn.numpy(), rng.uniform(-2.0, 2.0, size=(2,)))
    setup = _setup(tmp_path, "tune.method=joint", "tune.tunables={coefficients.mu: {init: [0.0, 1.0], transform: logit}}",
                   text=COEFFICIENT)
    assert (setup.tunables["coefficients.mu"].low, setup.tunables["coefficients.mu"].high) == (-2.0, 3.0)


def test_the_best_trial_wins_and_one_diverged_trial_leaves_status_ok(tmp_path):
    """Trial scores (inf, 3, 1, 2, 5): the tuned φ is trial 2's, status ok (one diverged
    trial among finite ones is no failure of the search)."""
    setup = _setup(tmp_path)
    outcome = search(setup, sampler="random", score=_scores([math.inf, 3.0, 1.0, 2.0, 5.0]))
    assert outcome.extra["best_trial"] == 2
    assert torch.equal(outcome.phi["weights.boundary"], outcome.history["phi/weights.boundary"][2])
    assert outcome.status == "ok" and outcome.message == ""


def test_a_search_reports_each_trial_and_the_best_so_far_across_a_resume(tmp_path):
    """The progress callback gets the trial's value and the best finite value so far (the
    display showed the last trial's value only, while the search returns the best); a
    resumed search's best counts the trials its checkpoint holds."""
    setup = _setup(tmp_path, "tune.outer_steps=3")
    checkpoint = tmp_path / "t.ckpt"
    seen = []

    def progress(k, phi, diagnostics):
        seen.append((k, diagnostics["value"], diagnostics["best"]))

    search(setup, sampler="random", checkpoint=checkpoint, score=_scores([math.inf, 3.0, 1.0]), progress=progress)
    assert seen[0][:2] == (0, math.inf) and math.isnan(seen[0][2])
    assert seen[1:] == [(1, 3.0, 3.0), (2, 1.0, 1.0)]
    seen.clear()
    setup = _setup(tmp_path, "tune.outer_steps=5")
    search(setup, sampler="random", checkpoint=checkpoint, resume=True, score=_scores([2.0, 0.5]),
           progress=progress, metadata=None)
    assert seen == [(3, 2.0, 1.0), (4, 0.5, 0.5)]


def test_a_finished_search_resumes_to_the_same_outcome_without_new_trials(tmp_path):
    """`pinnlab tune --resume` after the search finished (stopped in the final solve):
    the checkpoint holds all outer_steps trials; the resume runs none and returns them."""
    setup = _setup(tmp_path)
    checkpoint = tmp_path / "t.ckpt"
    first = search(setup, sampler="random", checkpoint=checkpoint, score=_scores([4.0, 3.0, 1.0, 2.0, 5.0]))
    again = search(setup, sampler="random", checkpoint=checkpoint, resume=True, score=_scores([]))
    assert again.history["value"] == first.history["value"] == [4.0, 3.0, 1.0, 2.0, 5.0]
    assert torch.equal(again.phi["weights.boundary"], first.phi["weights.boundary"])


def test_trial_steps_default_to_ten_horizons_and_run_steps_zero_to_n_minus_one(tmp_path, monkeypatch):
    """A trial trains ``trial_steps`` steps (default 10·horizon) numbered 0..n−1 from θ_0
    (the step number keys the collocation points and noise)."""
    setup = _setup(tmp_path, "tune.horizon=3")
    outcome = search(setup, sampler="random", score=_scores([1.0] * 5))
    assert outcome.extra["trial_steps"] == 30
    seen = []
    step = setup.train_step
    monkeypatch.setattr(setup, "train_step", lambda theta, state, hp, t: seen.append(t) or step(theta, state, hp, t))
    train_trial(setup, setup.phi0, 4)
    assert seen == [0, 1, 2, 3]


def test_a_non_finite_outer_value_scores_inf(tmp_path, monkeypatch):
    """A NaN outer objective is recorded as inf (a diverged trial), like a diverged training."""
    setup = _setup(tmp_path)
    monkeypatch.setattr(setup, "outer_loss", lambda theta, phi: torch.tensor(math.nan))
    assert trial_objective(setup, setup.phi0, 2) == math.inf


def test_tpe_draws_log_uniform_and_distinct_candidates(tmp_path):
    """TPE's first trials (its random start-up) draw a log tunable on a log scale over
    (1e-3, 1e3): about half below 1 (a linear draw puts all ten above 1), and every trial
    draws its own candidate (the sampler is seeded by tune.seed and the trial index, not
    once for all trials)."""
    pytest.importorskip("optuna")
    setup = _setup(tmp_path, "tune.method=optuna", "tune.outer_steps=10",
                   "tune.tunables={weights.boundary: {low: 1.0e-3, high: 1.0e+3}}")
    outcome = search(setup, sampler="optuna", score=_scores([1.0] * 10))
    drawn = [float(v) for v in outcome.history["phi/weights.boundary"]]
    assert len(set(drawn)) == 10
    assert 2 <= sum(v < 1 for v in drawn) <= 8, drawn
    reseeded = _setup(tmp_path, "tune.method=optuna", "tune.outer_steps=2", "tune.seed=1",
                      "tune.tunables={weights.boundary: {low: 1.0e-3, high: 1.0e+3}}")
    other = search(reseeded, sampler="optuna", score=_scores([1.0] * 2))
    assert float(other.history["phi/weights.boundary"][0]) != drawn[0]  # tune.seed seeds TPE


def test_a_resumed_tpe_search_accepts_a_diverged_trial(tmp_path):
    """A TPE checkpoint holding an inf trial (diverged) resumes and continues exactly as
    the uninterrupted search does."""
    pytest.importorskip("optuna")
    setup = _setup(tmp_path, "tune.method=optuna", "tune.outer_steps=3")
    values = [math.inf, 2.0, 1.0]
    whole = search(setup, sampler="optuna", score=_scores(values))
    checkpoint = tmp_path / "t.ckpt"
    stopped = _setup(tmp_path, "tune.method=optuna", "tune.outer_steps=1")
    search(stopped, sampler="optuna", checkpoint=checkpoint, score=_scores(values[:1]))
    resumed = search(setup, sampler="optuna", checkpoint=checkpoint, resume=True, score=_scores(values[1:]))
    assert resumed.history["value"] == values
    for a, b in zip(whole.history["phi/weights.boundary"], resumed.history["phi/weights.boundary"]):
        assert torch.equal(a, b)


def test_joint_fitting_records_one_row_per_outer_step(tmp_path):
    """Joint fitting trains outer_steps·horizon steps (3·2) and records the outer value
    after every horizon-th, numbered by outer step 0, 1, 2 (not by training step 1, 3, 5)."""
    setup = _setup(tmp_path, "tune.method=joint", "tune.outer_steps=3", "tune.tunables={coefficients.mu: {init: 0.0}}",
                   text=COEFFICIENT)
    outcome = joint_fit(setup)
    assert outcome.history["outer_step"] == [0, 1, 2]
    assert outcome.history["method"] == ["joint"] * 3



def test_a_search_counts_trials_and_records_their_length(tmp_path, capsys):
    """`pinnlab tune` of a search: its log lines count trials ("tune trial 5/5"; they said
    "step", while the figure says trial), and /tune records the steps each trial trained
    (tune.trial_steps, or 10 · horizon = 20 here; only the unused horizon was recorded)."""
    import h5py

    from pinnlab.cli import main

    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    out = tmp_path / "t.h5"
    assert main(["tune", str(path), "-o", str(out), "--progress", "log"]) == 0
    err = capsys.readouterr().err
    assert re.findall(r" (step|trial) (\d+)/5 outer=", err) == [("trial", str(k)) for k in range(1, 6)], err
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["trial_steps"] == 20
