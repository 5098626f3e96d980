"""Fourth mutation audit of pinnlab/tuning/setup.py and sixth of pinnlab/tuning/search.py:
what the earlier audits left open: ``search(save=False)`` writes no checkpoint. Its
other gap, a resumed TPE search re-telling a diverged trial as 1e300 among finite scores
above it, led to telling TPE inf (tests/test_tuning_run_search_fourth_audit.py pins it).
The other mutants of this audit were killed by the earlier tests or are equivalent."""

from __future__ import annotations

from pinnlab.tuning.search import search

from .tuning.test_search_and_budget_exact import _scores, _setup


def test_a_search_told_not_to_save_writes_no_checkpoint(tmp_path):
    """``search(save=False)`` with a checkpoint path runs its trials without writing it."""
    setup = _setup(tmp_path)
    checkpoint = tmp_path / "search.ckpt"
    outcome = search(setup, sampler="random", checkpoint=checkpoint, save=False, score=_scores([3.0, 1.0, 2.0, 4.0, 5.0]))
    assert outcome.extra["best_trial"] == 1
    assert not checkpoint.exists()
