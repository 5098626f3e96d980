"""Fourth mutation audit of pinnlab/tuning/run.py and search.py: what the earlier audits
left open. A search or joint fit followed by a second phase (refused, naming the first
method); the final solve's length with DeepXDE, the best trial's optimizer state it
continues from, and the identity its checkpoint must match; the seconds of a joint fit's
row; the value TPE is told for a diverged trial, live and on resume. Each test checks a
spy on what was handed on, an exact replay, a stand-in clock, or draws compared bit for
bit with a stated equivalent search."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from pinnlab._typing import tensor_leaves
from pinnlab.config import ConfigError
from pinnlab.tuning.run import TuneOutcome, check_method, final_identity, final_solve
from pinnlab.tuning.search import search, train_trial
from pinnlab.tuning.setup import build_tuning

from .test_tune_run_command_third_audit import DEEPXDE_RANDOM
from .tuning.micro_configs import JOINT_MU, WEIGHT_FG2U
from .tuning.test_search_and_budget_exact import _scores
from .tuning.test_search_and_budget_exact import _setup as _search_setup
from .tuning.test_tune_run_handover import _Handed, _setup, _spy
from .tuning.test_tuning_audit_edges import _load


class _Stop(Exception):
    """Raised by a stand-in score to interrupt a search between two trials."""


# -- check_method: a search or joint fit followed by a second phase -------------------------------
@pytest.mark.parametrize("method", ["random", "optuna", "joint"])
def test_a_search_or_joint_fit_has_no_second_phase(tmp_path, method):
    """tune.then switches a hypergradient method's estimator after some outer steps; a
    search or a joint fit has none to switch, so a second phase after one is refused
    naming the first method (it would be silently ignored)."""
    if method == "optuna":
        pytest.importorskip("optuna")
    text = JOINT_MU if method == "joint" else WEIGHT_FG2U
    overrides = [f"tune.method={method}", "tune.options={}", "tune.then={method: rgu, after: 1}"]
    setup = build_tuning(_load(tmp_path, *overrides, text=text))
    with pytest.raises(ConfigError, match=f"two-phase schedule needs hypergradient methods, not '{method}'$"):
        check_method(setup)


# -- final_solve: its length with DeepXDE, the trial it replays, its checkpoint's identity ------
def test_a_deepxde_final_solve_trains_the_final_steps_at_the_tuned_values(tmp_path, monkeypatch):
    """inner: deepxde: the final solve is one DeepXDE training of tune.final_steps (6, not
    trainer.steps = 4) steps with the tuned boundary weight in DeepXDE's loss weights and
    the config's learning rate (not tuned here)."""
    from pinnlab import config as configuration
    from pinnlab.config import deepxde_loss_weights

    seen = {}

    def spy(config, equation, **kwargs):
        seen.update(kwargs)
        raise _Handed

    monkeypatch.setattr(configuration, "solve_config_with_deepxde", spy)
    setup = build_tuning(_load(tmp_path, "tune.final_steps=6", text=DEEPXDE_RANDOM))
    tuned = {"weights.boundary": torch.tensor(0.5, dtype=setup.dtype)}
    with pytest.raises(_Handed):
        final_solve(setup, TuneOutcome(tuned, {}, "random", 0.0), progress="off")
    expected = deepxde_loss_weights(setup.config, setup.problem.equation, {"boundary": tuned["weights.boundary"]})
    assert (seen["steps"], seen["lr"], seen["loss_weights"]) == (6, 1.0e-3, expected)


def test_continuing_a_search_starts_from_the_best_trials_optimizer_state(tmp_path, monkeypatch):
    """final_init: continue after a search replays the best trial (trial_steps = 2 steps
    from θ_0 at the tuned values) and starts from the network that trial trained and its
    optimizer state, bit for bit: Adam's moments after 2 steps, not a fresh state."""
    setup = _setup(tmp_path, "tune.method=random", "tune.options={}", "tune.trial_steps=2",
                   "tune.final_init=continue")
    outcome = search(setup, sampler="random", score=_scores([3.0, 1.0, 2.0]))
    assert outcome.extra == {"best_trial": 1, "trial_steps": 2}
    seen = _spy(monkeypatch, "train")
    with pytest.raises(_Handed):
        final_solve(setup, outcome, progress="off")
    params, opt_state = train_trial(setup, outcome.phi, 2)
    state = seen["state"]
    for name, value in params.items():
        assert torch.equal(state.params[name], value), name
    leaves, fresh = tensor_leaves(state.opt_state)[0], tensor_leaves(setup.init[1])[0]
    expected = tensor_leaves(opt_state)[0]
    assert len(leaves) == len(expected) and all(torch.equal(a, b) for a, b in zip(leaves, expected))
    assert any(not torch.equal(a, b) for a, b in zip(leaves, fresh))


def test_the_final_solves_identity_tells_tuned_values_apart_by_name_and_shape(tmp_path):
    """A final-solve checkpoint is continued only for the same tuned values: the same
    numbers under other names (the same bytes in sorted order), or a scalar beside the same
    number as a one-element vector, are another identity; swapped values too, and the same
    values are the same identity."""
    config = _setup(tmp_path).config
    one, two = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    tuned = {"weights.boundary": one, "weights.residual": two}
    assert final_identity(config, tuned) == final_identity(config, {k: v.clone() for k, v in tuned.items()})
    swapped = {"weights.boundary": two, "weights.residual": one}
    assert final_identity(config, swapped) != final_identity(config, tuned)
    renamed = {"weights.boundary": two, "weights.residual_": one}
    assert final_identity(config, renamed) != final_identity(config, swapped)
    assert final_identity(config, {"sigma": one.reshape(1)}) != final_identity(config, {"sigma": one})


# -- joint fitting: the seconds of a row ------------------------------------------------------------
def test_a_joint_rows_seconds_are_its_own_outer_steps_time(tmp_path, monkeypatch):
    """A clock that advances 1 s per training-loss evaluation (one per inner step): with
    horizon 2 each of the 2 rows took exactly 2 s, its own two steps, not the time since
    the fit began (2 s, then 4 s)."""
    import types

    import pinnlab.tuning.search as search_module
    from pinnlab.solvers import PINNProblem
    from pinnlab.tuning.search import joint_fit

    now = [0.0]
    real = PINNProblem.objective

    def ticking(self, *args, **kwargs):
        now[0] += 1.0
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PINNProblem, "objective", ticking)
    monkeypatch.setattr(search_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    outcome = joint_fit(_search_setup(tmp_path, "tune.method=joint", "tune.horizon=2", "tune.outer_steps=2",
                                      text=JOINT_MU))
    assert outcome.history["seconds"] == [2.0, 2.0]


# -- TPE: a diverged trial is told as the worst value ---------------------------------------------
TPE_TRIALS = 12
"""More than TPE's 10 random start-up trials, so the last draws follow the told values."""


def _tpe_draws(setup, values, **kwargs):
    outcome = search(setup, sampler="optuna", score=_scores(values), **kwargs)
    return [float(v) for v in outcome.history["phi/weights.boundary"]]


def test_tpe_is_told_a_diverged_trial_as_the_worst(tmp_path):
    """A diverged trial (inf) is told to TPE as inf, worse than any finite trial: the
    search then draws exactly what it draws when that trial scores a huge finite value
    above all the others (1e300 among scores of about 1e4, the largest float among scores
    of about 1e305), and not what it draws when the trial scores a merely large 1e3 (a
    value TPE would rank among the good), nor 1e300 among scores of 1e305 (the stand-in
    it was once told as, which then ranked the diverged trial the best)."""
    pytest.importorskip("optuna")
    setup = _search_setup(tmp_path, "tune.method=optuna", f"tune.outer_steps={TPE_TRIALS}")
    rest = [float(10**4 + k) for k in range(1, TPE_TRIALS)]
    diverged = _tpe_draws(setup, [math.inf, *rest])
    assert diverged == _tpe_draws(setup, [1e300, *rest])
    assert diverged[-1] != _tpe_draws(setup, [1e3, *rest])[-1]
    huge = [1e301 * v for v in rest]
    diverged = _tpe_draws(setup, [math.inf, *huge])
    assert diverged == _tpe_draws(setup, [sys.float_info.max, *huge])
    assert diverged[-1] != _tpe_draws(setup, [1e300, *huge])[-1]


@pytest.mark.parametrize("scale", [1.0, 1e96, 1e301])
def test_a_resumed_tpe_search_retells_a_diverged_trial_as_the_worst(tmp_path, scale):
    """Interrupted after 11 trials, the first of which diverged, a TPE search resumes to
    draw its 12th candidate exactly as the uninterrupted search did (the checkpoint's inf
    re-told as inf, as it was told live; as 0 it would be the best trial). Also among
    finite scores of about 1e100 (a nearly diverged training), where a merely large
    stand-in such as 1e30 would rank it the best, and of about 1e305, above any fixed
    stand-in but the largest float."""
    pytest.importorskip("optuna")
    setup = _search_setup(tmp_path, "tune.method=optuna", f"tune.outer_steps={TPE_TRIALS}")
    values = [math.inf, *(scale * float(10**4 + k) for k in range(1, TPE_TRIALS))]
    whole = _tpe_draws(setup, values)
    checkpoint = tmp_path / "t.ckpt"

    before = iter(values[:-1])

    def stop_at_the_last(phi):
        value = next(before, None)
        if value is None:
            raise _Stop
        return value

    with pytest.raises(_Stop):
        search(setup, sampler="optuna", checkpoint=checkpoint, score=stop_at_the_last)
    resumed = _tpe_draws(setup, values[-1:], checkpoint=checkpoint, resume=True)
    assert resumed == whole
