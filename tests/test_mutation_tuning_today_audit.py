"""Mutation audit of today's changes (helper GQ): Optuna's start-up trials (d + 1 capped at
10, d counting a vector tunable's entries), a search trial's divergence check (θ and the
optimizer state, not the loss alone), the warnings ``check_processes`` returns for idle
processes, what a tune whose result cannot be written says is kept, ``environment_rank``
outside torchrun (and tune's say-it-once setup by it), ``PINNLAB_BENCH_THREADS``'s default
and message, and ``loss.weighting_options``' value check. Each test checks exact values,
an exact line, or a stand-in training step."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import pytest
import torch

from pinnlab import config as configuration
from pinnlab._seeding import derive_seed
from pinnlab.bilevel import distributed
from pinnlab.cli import main
from pinnlab.tuning.command import check_processes
from pinnlab.tuning.search import _searched, search, startup_trials, train_trial

from .tuning.micro_configs import JOINT_MU, WEIGHT_FG2U
from .tuning.test_search_and_budget_exact import _scores, _setup

ROOT = Path(__file__).resolve().parents[1]


def _load(tmp_path, *overrides, text=WEIGHT_FG2U):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(text)
    return configuration.load(cfg, list(overrides))


# -- Optuna's start-up trials ---------------------------------------------------------------------
def test_startup_trials_are_d_plus_one_at_most_optunas_ten():
    """README: TPE models the scores after d + 1 random trials (d values a trial draws), at
    most Optuna's default 10: 9 values give 10, 10 and more still 10 (not 11, 51)."""
    assert [startup_trials(d) for d in (1, 2, 8, 9, 10, 50)] == [2, 3, 9, 10, 10, 10]


def test_a_vector_tunable_counts_each_entry_in_the_start_up(tmp_path):
    """fokker_planck_aniso's drift μ in dim 2 is one tunable of two values: d = 2, so TPE's
    first 3 trials (not 2) are its random start-up, each the first draw of a fresh study
    seeded for that trial; trial 3 is the model's."""
    optuna = pytest.importorskip("optuna")
    setup = _setup(tmp_path, "tune.method=optuna", "tune.seed=3", "tune.outer_steps=4",
                   "tune.tunables={coefficients.mu: {low: -1.0, high: 1.0}}", text=JOINT_MU)
    assert _searched(setup) == 2 and startup_trials(_searched(setup)) == 3
    outcome = search(setup, sampler="optuna", score=_scores([4.0, 3.0, 2.0, 1.0]))

    def first_draw(k):
        sampler = optuna.samplers.TPESampler(seed=derive_seed(3, "tpe", k) % 2**32)
        trial = optuna.create_study(direction="minimize", sampler=sampler).ask()
        values = [trial.suggest_float(f"coefficients.mu[{i}]", -1.0, 1.0) for i in range(2)]
        return torch.tensor(values, dtype=setup.dtype).tolist()  # (held in the setup's dtype)

    drawn = [v.tolist() for v in outcome.history["phi/coefficients.mu"]]
    assert drawn[:3] == [first_draw(k) for k in range(3)]
    assert drawn[3] != first_draw(3)


# -- a trial's divergence check -------------------------------------------------------------------
def _stand_in_step(setup, monkeypatch, spoil):
    """setup.train_step, with ``spoil(theta, state)`` applied to what step 1 returns."""
    step, seen = setup.train_step, []

    def spoiled(theta, state, hp, t):
        seen.append(t)
        theta, state, metrics = step(theta, state, hp, t)
        return (*spoil(theta, state), metrics) if t == 1 else (theta, state, metrics)

    monkeypatch.setattr(setup, "train_step", spoiled)
    return seen


def test_a_trial_whose_theta_turns_nan_with_a_finite_loss_is_diverged(tmp_path, monkeypatch):
    """Step 1 returns a NaN θ, its loss (of the θ before) and optimizer state finite: the
    trial is diverged there (None), not trained on from a NaN network."""
    setup = _setup(tmp_path)
    seen = _stand_in_step(setup, monkeypatch,
                          lambda theta, state: ({k: torch.full_like(v, math.nan) for k, v in theta.items()}, state))
    assert train_trial(setup, setup.phi0, 4) is None
    assert seen == [0, 1]


def test_a_trial_whose_optimizer_state_overflows_is_diverged(tmp_path, monkeypatch):
    """Step 1 leaves θ and the loss finite but an inf in the optimizer state (a gradient
    that overflowed into Adam's moments): diverged there, as pinnlab.solvers.train stops."""
    from pinnlab.solvers.loop import tensor_leaves

    setup = _setup(tmp_path)

    def overflow(theta, state):
        for t in tensor_leaves(state)[0]:
            if t.is_floating_point() and t.numel() > 1:
                t.fill_(math.inf)
                break
        else:
            raise AssertionError("no floating tensor in the optimizer state")
        return theta, state

    seen = _stand_in_step(setup, monkeypatch, overflow)
    assert train_trial(setup, setup.phi0, 4) is None
    assert seen == [0, 1]


# -- check_processes's warnings -------------------------------------------------------------------
def test_the_idle_process_count_is_processes_minus_directions(tmp_path):
    """2 directions on 4 processes: 2 of them (not 1, not 3) compute none and wait."""
    config = _load(tmp_path, "tune.options.num_directions=2")
    assert check_processes(config, 4) == [
        "tune.options.num_directions = 2 < 4 processes: 2 of them compute no direction and wait (each direction "
        "is one process's work)"]


def test_a_phase_that_does_not_spread_its_directions_warns_of_no_idle_process(tmp_path):
    """fg2u with distributed: false, then zo_fg2u with 8 directions on 2 processes: the
    first phase runs in full on every process (it spreads nothing, so none of them is
    idle for want of a direction); only a spreading phase with too few directions warns."""
    config = _load(tmp_path, "tune.options.distributed=false",
                   "tune.then={method: zo_fg2u, after: 1, options: {num_directions: 8}}")
    assert check_processes(config, 2) == []
    config = _load(tmp_path, "tune.then={method: zo_fg2u, after: 1, options: {num_directions: 1}}",
                   "tune.options.num_directions=2")
    assert [line.split(" < ")[0] for line in check_processes(config, 2)] == ["tune.then.options.num_directions = 1"]


# -- a tune result that cannot be written ---------------------------------------------------------
def test_an_unwritable_tune_result_says_the_tuning_is_kept_for_a_rerun_of_the_final_solve(
        tmp_path, capsys, monkeypatch):
    """The final solve ran and the rename onto -o fails (ENOSPC), as does the one that would
    keep the finished final solve in out.h5.final.ckpt: the one line names the output and
    the OS's error, then what --resume continues: the finished tuning's checkpoint, from
    which it runs the final solve again (not 'outer step N ... continues from it', as a
    stop during the tuning says)."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst) in (str(out), str(out) + ".final.ckpt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in last
    assert last.endswith(f"; the tuning is saved in {str(out) + '.ckpt'!r}; --resume runs the final solve again "
                         "(trainer.checkpoint_every saves its steps)"), last
    assert (tmp_path / "out.h5.ckpt").is_file() and not out.exists()


# -- environment_rank -----------------------------------------------------------------------------
@pytest.mark.parametrize("world, rank, expected", [(None, "1", 0), ("1", "1", 0), ("0", "2", 0), ("2", "1", 1),
                                                   (" 3 ", " 2 ", 2), ("2", "x", 0)])
def test_environment_rank_is_rank_only_under_more_than_one_process(monkeypatch, world, rank, expected):
    """RANK counts only with a WORLD_SIZE above 1 (torchrun's): WORLD_SIZE=1 is one process,
    the one that writes, whatever RANK says; a RANK that is no number is 0 (never raises)."""
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", rank)
    assert distributed.environment_rank() == expected


# -- PINNLAB_BENCH_THREADS ------------------------------------------------------------------------
@pytest.fixture
def bench_common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _common

    return _common


def test_bench_threads_default_to_two_and_read_the_variable(bench_common, monkeypatch):
    """README, Performance: the timed workers run on 2 threads unless PINNLAB_BENCH_THREADS=N."""
    monkeypatch.delenv("PINNLAB_BENCH_THREADS", raising=False)
    assert bench_common.bench_threads() == 2
    monkeypatch.setenv("PINNLAB_BENCH_THREADS", "1")
    assert bench_common.bench_threads() == 1


@pytest.mark.parametrize("value", ["two", "0", "-3", "1_0", "2.0"])
def test_a_bad_bench_thread_count_is_named_as_written(bench_common, monkeypatch, value):
    """The message quotes the value as set (not the 0 it was read as) and the default."""
    monkeypatch.setenv("PINNLAB_BENCH_THREADS", value)
    with pytest.raises(ValueError) as info:
        bench_common.bench_threads()
    assert str(info.value) == f"PINNLAB_BENCH_THREADS={value!r}: must be a whole number of threads >= 1 (unset: 2)"


# -- loss.weighting_options' values ---------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [("true", "True"), ("9223372036854775808", "9223372036854775808")])
def test_a_weighting_option_that_is_a_bool_or_beyond_int64_is_refused(tmp_path, value, shown):
    """LRA's ``every=true`` is no number (a bool is an int to Python), and 2**63 is beyond
    what an int64 holds (the largest is 2**63 - 1): both are refused by name and value."""
    with pytest.raises(configuration.ConfigError) as info:
        _load(tmp_path, "loss.weighting=lra", f"loss.weighting_options.every={value}")
    assert str(info.value) == f"loss.weighting_options.every = {shown}: must be a finite number"


@pytest.mark.parametrize("world, rank, shown", [(None, "1", "log"), ("2", "1", "off"), ("2", "0", "log")])
def test_tune_says_its_setup_once_by_environment_rank(tmp_path, monkeypatch, world, rank, shown):
    """The setup's messages (an equation's long reference computation) are said by rank 0
    only: a RANK=1 left in the shell without torchrun's WORLD_SIZE is one process, which
    says them; rank 1 of torchrun's 2 does not. (The setup is stopped right there.)"""
    from pinnlab.tuning import setup as tuning_setup

    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        for key, value in {"WORLD_SIZE": world, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("RANK", rank)
    seen = []

    def build(config, progress="off"):
        seen.append(progress)
        raise configuration.ConfigError("stopped here")

    monkeypatch.setattr(tuning_setup, "build_tuning", build)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    assert main(["tune", str(cfg), "-o", str(tmp_path / "t.h5"), "--progress", "log"]) == 2
    assert seen == [shown]
