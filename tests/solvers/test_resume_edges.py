"""Edges of ``train(state=...)``: a finished state, the wall-clock time a resumed run
carries on from, and a stop right after a periodic checkpoint."""

from __future__ import annotations

import pytest
import torch

from pinnlab.solvers import LinearDecay, train
from tests.solvers.small_problems import problem

KWARGS = dict(seed=1, eval_every=2, test_points=10, progress="off", device="cpu")


def test_a_state_at_the_last_step_is_taken_and_trains_no_further():
    """The state of a finished run (its step equal to ``steps``) is within the run: it is
    evaluated again, not refused and not trained on."""
    done = train(problem(dim=3), steps=4, **KWARGS)
    again = train(problem(dim=3), steps=4, state=done.state, **KWARGS)
    assert again.state.step == 4 and len(again.history.trace_loss) == 4
    assert all(torch.equal(again.params[k], v) for k, v in done.params.items())
    assert again.final.rel_l2 == done.final.rel_l2


def test_a_resumed_run_adds_its_wall_time_to_the_states():
    """wall_s counts the time of every process of the run: a resumed run's rows and final
    wall_s go on from the state's, not from 0."""
    kept = []
    train(problem(dim=3), steps=6, checkpoint_every=2, on_checkpoint=kept.append, **KWARGS)
    state = kept[0]
    state.wall_s = 1000.0  # as if the first process had run for 1000 s
    resumed = train(problem(dim=3), steps=6, state=state, **KWARGS)
    assert resumed.history.rows["step"] == [2.0, 4.0, 6.0]
    assert all(w > 1000.0 for w in resumed.history.rows["wall_s"][1:])
    assert resumed.stats["wall_s"] == resumed.state.wall_s > 1000.0


def test_a_stop_right_after_a_periodic_checkpoint_saves_it_once():
    """Stopped in the step after the checkpoint of step 4: that state is already saved and
    is not handed to on_checkpoint a second time (a second write of the same checkpoint)."""

    class Stop(LinearDecay):
        def __call__(self, step):
            if step == 4:
                raise KeyboardInterrupt
            return super().__call__(step)

    kept = []
    with pytest.raises(KeyboardInterrupt):
        train(problem(dim=3), steps=8, checkpoint_every=4, on_checkpoint=kept.append,
              **{**KWARGS, "schedule": Stop(8)})
    assert [s.step for s in kept] == [4]
