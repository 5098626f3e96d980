"""What a checkpoint holds and what reading it checks, at the library level: every field
of a :class:`TrainState` comes back exactly, the content digest covers dtypes and names,
and states that do not fit their step, their run or their format are refused."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import Autograd
from pinnlab.io import CheckpointError, load_checkpoint, save_checkpoint
from pinnlab.io.checkpoint import (
    DIGEST_KEY,
    check_fits,
    check_progress,
    content_digest,
    read_checkpoint,
    write_checkpoint_file,
)
from pinnlab.losses import Biased
from pinnlab.losses.hybrid import PlateauState
from pinnlab.nets import MLP
from pinnlab.solvers import Adam, ConstraintLoss, PINNProblem, train

F64 = torch.float64
CPU = torch.device("cpu")


def _problem():
    """A soft-constraint problem: two loss terms, so the history has ``terms/`` columns."""
    eq = PoissonTwoBody(3, seed=1, constraint="soft")
    net = MLP(3, width=8, depth=2, generator=torch.Generator().manual_seed(0))
    return PINNProblem(eq, net, Autograd(), Biased(), batch_size=8, extra_terms=(ConstraintLoss(batch_size=4),))


def _state(at=3):
    """The float64 state a 4-step run with rows every 2 steps checkpoints at step ``at``
    (at 3: a row at step 2, one loss pending)."""
    kept = []
    train(_problem(), steps=4, eval_every=2, test_points=10, dtype=F64, device="cpu", progress="off",
          checkpoint_every=at, on_checkpoint=kept.append)
    return kept[0]


@pytest.mark.parametrize("switched_at", [None, 2])
def test_a_saved_state_loads_back_field_for_field(tmp_path, switched_at):
    """Resuming exactly needs every field as it was: the times and the timed-step count
    (steps_per_second of the resumed run), the pending float64 loss window (the next row's
    mean loss), the plateau state of a loss.switch: auto run (when and whether it switches)
    and the history's term columns under their own names."""
    state = _state()
    state.plateau = PlateauState(ema=0.25, best=0.125, best_step=1, switched_at=switched_at)
    assert state.step == 3 and state.timed_steps == 2 and len(state.window_loss) == 1
    assert state.history.terms and state.train_seconds != state.wall_s
    path = tmp_path / "run.h5.ckpt"
    save_checkpoint(path, state, Adam(), "config")
    loaded = load_checkpoint(path, Adam(), "config", CPU, F64)
    assert loaded.step == state.step
    assert all(torch.equal(loaded.params[k], v) for k, v in state.params.items())
    assert loaded.opt_state.count == state.opt_state.count
    for name in ("mu", "nu"):
        assert all(torch.equal(getattr(loaded.opt_state, name)[k], v) for k, v in getattr(state.opt_state, name).items())
    assert loaded.history == state.history
    assert loaded.plateau == state.plateau
    assert loaded.window_loss == state.window_loss
    assert (loaded.train_seconds, loaded.timed_steps, loaded.wall_s) == (state.train_seconds, state.timed_steps,
                                                                         state.wall_s)
    assert loaded.weighting is None


def test_the_loaded_state_resumes_to_the_uninterrupted_runs_rows(tmp_path):
    """Saved at step 3 (row at step 2, one loss pending), loaded and run to step 4: the
    history (the row loss at step 4 is the mean of the saved and the new step's losses)
    and the parameters equal the uninterrupted run's."""
    full = train(_problem(), steps=4, eval_every=2, test_points=10, dtype=F64, device="cpu", progress="off")
    path = tmp_path / "run.h5.ckpt"
    save_checkpoint(path, _state(), Adam(), "config")
    resumed = train(_problem(), steps=4, eval_every=2, test_points=10, dtype=F64, device="cpu", progress="off",
                    state=load_checkpoint(path, Adam(), "config", CPU, F64))
    assert {k: v for k, v in resumed.history.rows.items() if k != "wall_s"} == \
        {k: v for k, v in full.history.rows.items() if k != "wall_s"}
    assert resumed.history.terms == full.history.terms
    assert all(torch.equal(resumed.params[k], v) for k, v in full.params.items())


def test_the_content_digest_covers_dtypes_and_names():
    """The digest is what refuses bytes changed on disk: the same bytes read as another
    dtype, or the same values under other names, are other content."""
    floats = torch.tensor([1.0, 2.0])
    assert content_digest({"a": floats}) != content_digest({"a": floats.view(torch.int32)})
    assert content_digest({"a": 1.0, "b": 2.0}) != content_digest({"a": 1.0, "c": 2.0})
    assert content_digest({"a": floats}) == content_digest({"a": floats.clone()})


def test_a_checkpoint_of_another_run_or_format_is_refused(tmp_path):
    """read_checkpoint with ``metadata`` (the tuning loops' config identity) refuses a file
    saved with other metadata; load_checkpoint refuses another checkpoint format, even
    when the config hash fits."""
    path = tmp_path / "t.ckpt"
    write_checkpoint_file(path, {"metadata": {"config": "abc"}, "step": 1})
    assert read_checkpoint(path, metadata={"config": "abc"})["step"] == 1
    with pytest.raises(CheckpointError, match="belongs to another run"):
        read_checkpoint(path, metadata={"config": "abd"})
    solve = tmp_path / "run.h5.ckpt"
    save_checkpoint(solve, _state(), Adam(), "config")
    data = torch.load(solve, weights_only=True)
    data.pop(DIGEST_KEY)
    write_checkpoint_file(solve, {**data, "format": 2})
    with pytest.raises(CheckpointError, match="has an unknown format"):
        load_checkpoint(solve, Adam(), "config", CPU, F64)


def test_a_checkpoint_holding_python_objects_is_not_unpickled(tmp_path):
    """Checkpoints are read with ``weights_only``: a file that holds anything but tensors
    and plain values (here a Fraction; in general any pickled object, code included) is
    refused unread, not loaded."""
    path = tmp_path / "run.h5.ckpt"
    torch.save({"format": 1, "step": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match="is corrupted or unreadable"):
        read_checkpoint(path)


def test_a_tuning_history_whose_entries_differ_in_length_is_refused(tmp_path):
    """One row per finished outer step in *every* entry: a history with one entry cut (the
    others whole) went to the result file with columns of different lengths."""
    history = {"value": [0.5, 0.25], "grad_norm": [1.0]}
    with pytest.raises(CheckpointError, match="history has 1 or 2 rows"):
        check_progress(tmp_path / "t.ckpt", history, 2, {})
    check_progress(tmp_path / "t.ckpt", {"value": [0.5, 0.25], "grad_norm": [1.0, 2.0]}, 2, {})


def test_a_state_of_another_dtype_or_with_extra_optimizer_entries_does_not_fit():
    """check_fits compares dtypes and sequence lengths, not only shapes and names: a float64
    state in a float32 run, or a saved tuple longer than the fresh one, is refused."""
    fresh = {"w": torch.zeros(2, 3)}
    with pytest.raises(CheckpointError, match=r"params\['w'\] has dtype torch.float64, expected torch.float32"):
        check_fits(None, "params", {"w": torch.zeros(2, 3, dtype=F64)}, fresh)
    with pytest.raises(CheckpointError, match="opt_state is not a sequence of 2 entries"):
        check_fits(None, "opt_state", (0, fresh, fresh), (0, fresh))
    check_fits(None, "opt_state", (5, {"w": torch.ones(2, 3)}), (0, fresh))


def test_train_refuses_a_float64_state_in_a_float32_run():
    state = _state(at=2)
    with pytest.raises(CheckpointError, match="has dtype torch.float64, expected torch.float32"):
        train(_problem(), steps=3, eval_every=2, test_points=10, device="cpu", progress="off", state=state)


@pytest.mark.parametrize("damage, expected", [
    (lambda s: s.history.trace_loss.append(1.0), "history 'trace_loss' has 4 values for its 3 steps"),
    (lambda s: s.history.trace_mix.append(0.0), "history 'trace_mix' has 4 values for its 3 steps"),
    (lambda s: s.window_loss.clear(), "'window_loss' has 0 values, not one for each of the 1 steps"),
])
def test_train_refuses_a_state_with_more_trace_values_or_fewer_pending_losses_than_steps(damage, expected):
    """Too many trace values made /trace/loss longer than the run's steps; a lost loss
    window made the next row's loss the mean of fewer steps than since the previous row."""
    state = _state()
    damage(state)
    with pytest.raises(CheckpointError, match="the state is inconsistent: " + expected.replace("(", r"\(")):
        train(_problem(), steps=4, eval_every=2, test_points=10, dtype=F64, device="cpu", progress="off",
              state=state)
