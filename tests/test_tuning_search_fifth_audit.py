"""Fifth mutation audit of pinnlab/tuning/search.py: what the earlier audits left open.
Which of equally good trials wins and how a NaN score ranks; the seed and dtype of TPE's
draw for trial k (a resumed search re-telling a diverged trial among huge scores: the
fourth audit's test, parametrized); a trial whose loss is +inf at one step; a joint fit's progress numbering and its
stop when θ (not a coefficient) turns NaN. Each test checks stand-in scores, a spy or a
poisoned optimizer, or draws compared bit for bit with a stated equivalent."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import derive_seed
from pinnlab.bilevel.parameterization import Log
from pinnlab.tuning.search import joint_fit, search, startup_trials, train_trial, trial_objective

from .tuning.micro_configs import JOINT_MU
from .tuning.test_search_and_budget_exact import _scores, _setup


def test_equally_good_trials_hand_on_the_first(tmp_path):
    """Scores (2, 1, 1, 3, 1): three trials tie at the best value; the tuned φ is the first
    of them, trial 1 (not the last, trial 4)."""
    setup = _setup(tmp_path)
    outcome = search(setup, sampler="random", score=_scores([2.0, 1.0, 1.0, 3.0, 1.0]))
    assert outcome.extra["best_trial"] == 1
    assert torch.equal(outcome.phi["weights.boundary"], outcome.history["phi/weights.boundary"][1])


def test_a_nan_score_is_never_the_best_trial(tmp_path):
    """A caller's score (``search(score=...)``) that returns NaN ranks like a diverged trial:
    scores (3, NaN, 2, NaN, 4) hand on trial 2 with status ok (np.argmin alone picks the
    first NaN, trial 1)."""
    setup = _setup(tmp_path)
    outcome = search(setup, sampler="random", score=_scores([3.0, math.nan, 2.0, math.nan, 4.0]))
    assert outcome.extra["best_trial"] == 2
    assert torch.equal(outcome.phi["weights.boundary"], outcome.history["phi/weights.boundary"][2])
    assert outcome.status == "ok"


def test_a_joint_fit_reports_each_outer_step_to_progress(tmp_path):
    """Joint fitting (3 outer steps of horizon 2) calls progress once per outer step,
    numbered 0, 1, 2 (not by training step 1, 3, 5), with the value of that step's row."""
    setup = _setup(tmp_path, "tune.method=joint", "tune.outer_steps=3", "tune.horizon=2", text=JOINT_MU)
    seen = []
    outcome = joint_fit(setup, progress=lambda k, phi, info: seen.append((k, info["value"])))
    assert [k for k, _ in seen] == [0, 1, 2] == outcome.history["outer_step"]
    assert [v for _, v in seen] == outcome.history["value"]


def test_tpe_seeds_trial_ks_sampler_by_tune_seed_and_k(tmp_path):
    """Trial k is drawn by TPESampler(seed=derive_seed(tune.seed, "tpe", k) mod 2³²): in TPE's
    random start-up (d + 1 = 2 trials for one tuned value) each trial's candidate is the
    first draw of a fresh study so seeded (not the one seeded for trial k + 1), held in the
    setup's float64 as drawn (not rounded through float32); trial 2 is TPE's model's."""
    optuna = pytest.importorskip("optuna")
    setup = _setup(tmp_path, "tune.method=optuna", "tune.seed=4", "tune.outer_steps=3")
    outcome = search(setup, sampler="optuna", score=_scores([3.0, 2.0, 1.0]))
    t = setup.tunables["weights.boundary"]
    log = isinstance(t.transform, Log)

    def first_draw(k):
        sampler = optuna.samplers.TPESampler(seed=derive_seed(4, "tpe", k) % 2**32)
        trial = optuna.create_study(direction="minimize", sampler=sampler).ask()
        return trial.suggest_float("weights.boundary", t.low, t.high, log=log)

    assert all(v.dtype == torch.float64 for v in outcome.history["phi/weights.boundary"])  # the setup's dtype
    drawn = [float(v) for v in outcome.history["phi/weights.boundary"]]
    assert startup_trials(1) == 2
    assert drawn[:2] == [first_draw(k) for k in range(2)] and drawn[2] != first_draw(2)


class _PoisonedOptimizer:
    """The trainer's optimizer, except that its update at step ``at`` (from 0) makes θ NaN."""

    def __init__(self, inner, at):
        self.inner, self.lr, self.at, self.calls = inner, inner.lr, at, 0

    def update(self, grads, state, params, lr):
        theta, state = self.inner.update(grads, state, params, lr)
        self.calls += 1
        if self.calls == self.at + 1:
            theta = {k: torch.full_like(v, math.nan) for k, v in theta.items()}
        return theta, state


def test_a_joint_step_that_makes_theta_nan_stops_the_fit_at_the_theta_before(tmp_path):
    """A step whose θ update is NaN (coefficients still finite) ends the fit there:
    status nonfinite naming joint step 2, the θ and μ handed on exactly those after steps 0
    and 1 (a one-outer-step fit's), and only outer step 0's row (a check of the coefficients
    alone lets the NaN θ take one more step)."""
    setup = _setup(tmp_path, "tune.method=joint", "tune.outer_steps=3", "tune.horizon=2", text=JOINT_MU)
    setup.train_kwargs["optimizer"] = _PoisonedOptimizer(setup.train_kwargs["optimizer"], at=2)
    outcome = joint_fit(setup)
    assert outcome.status == "nonfinite"
    assert outcome.message.startswith("joint step 2:")
    assert outcome.history["outer_step"] == [0]
    short = joint_fit(_setup(tmp_path, "tune.method=joint", "tune.outer_steps=1", "tune.horizon=2", text=JOINT_MU))
    theta, expected = outcome.trained[0], short.trained[0]
    assert theta.keys() == expected.keys()
    assert all(torch.equal(theta[k], expected[k]) for k in theta)
    assert torch.equal(outcome.phi["coefficients.mu"], short.phi["coefficients.mu"])


def test_a_trial_whose_loss_is_inf_at_one_step_is_diverged(tmp_path, monkeypatch):
    """train_trial gives None once the loss is non-finite, +inf as well as NaN: a stand-in
    step whose loss is inf at step 1 only (finite before and after) ends the trial there,
    and trial_objective scores it inf, though θ itself stays finite."""
    setup = _setup(tmp_path)
    step = setup.train_step
    seen = []

    def spiking(theta, state, hp, t):
        seen.append(t)
        theta, state, metrics = step(theta, state, hp, t)
        return theta, state, {**metrics, "loss": math.inf if t == 1 else metrics["loss"]}

    monkeypatch.setattr(setup, "train_step", spiking)
    assert train_trial(setup, setup.phi0, 4) is None
    assert seen == [0, 1]
    assert trial_objective(setup, setup.phi0, 4) == math.inf
