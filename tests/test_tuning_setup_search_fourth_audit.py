"""Fourth mutation audit of pinnlab/tuning/setup.py and sixth of pinnlab/tuning/search.py:
what the earlier audits left open. A resumed TPE search re-tells a diverged trial as 1e300
even when finite trials scored above 1e300 (the resumed draw equals the uninterrupted one,
bit for bit); ``search(save=False)`` writes no checkpoint. The other mutants of this audit
were killed by the earlier tests or are equivalent."""

from __future__ import annotations

import math

import pytest

from pinnlab.tuning.search import search

from .test_tuning_run_search_fourth_audit import TPE_TRIALS, _Stop, _tpe_draws
from .tuning.test_search_and_budget_exact import _scores, _setup


def test_a_resumed_tpe_search_retells_a_diverged_trial_as_1e300_above_it_too(tmp_path):
    """Finite scores of about 1e305 (above the 1e300 stand-in, which then ranks the diverged
    first trial the best): a TPE search interrupted after 11 trials resumes to draw its 12th
    candidate exactly as the uninterrupted search did, the checkpoint's inf re-told as
    1e300 as it was told live (told as inf, it would rank worst and the draw would differ)."""
    pytest.importorskip("optuna")
    setup = _setup(tmp_path, "tune.method=optuna", f"tune.outer_steps={TPE_TRIALS}")
    values = [math.inf, *(1e301 * float(10**4 + k) for k in range(1, TPE_TRIALS))]
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
    assert _tpe_draws(setup, values[-1:], checkpoint=checkpoint, resume=True) == whole


def test_a_search_told_not_to_save_writes_no_checkpoint(tmp_path):
    """``search(save=False)`` with a checkpoint path runs its trials without writing it."""
    setup = _setup(tmp_path)
    checkpoint = tmp_path / "search.ckpt"
    outcome = search(setup, sampler="random", checkpoint=checkpoint, save=False, score=_scores([3.0, 1.0, 2.0, 4.0, 5.0]))
    assert outcome.extra["best_trial"] == 1
    assert not checkpoint.exists()
