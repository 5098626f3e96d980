"""Fifth mutation audit of pinnlab/tuning/run.py and command.py (``pinnlab tune``): what
the earlier audits left open. A final solve without --resume starts over past a checkpoint
of its own config and tuned values; the line a stopped final solve prints names only the
checkpoints this run wrote; /tune keeps the run's total seconds, each row's numbers and
phase, and the final weight of every trained term; fg2u in the outer loop (either phase)
takes one direction per tuned value and the second phase starts where configured; a
second phase and DeepXDE's tunables are refused before any work; a final solve that ended
non-finite exits 1. Each test compares parameters bit for bit with a fresh solve (float64,
seeded), reads exact values back, spies on what is handed on, or matches the whole line.
One test pins a bug: the refused second-phase method under DeepXDE is named tune.method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinnlab.config import ConfigError
from pinnlab.tuning.run import check_method

from .test_tune_run_command_second_audit import _params, stop_final_solve_at_its_first_checkpoint
from .tuning.micro_configs import WEIGHT_FG2U
from .tuning.test_tune_run_handover import _Handed, _spy
from .tuning.test_tuning_audit_edges import DEEPXDE, _setup


# -- final_solve: a checkpoint is continued only under resume ---------------------------------------
def test_a_final_solve_without_resume_starts_over_past_its_own_checkpoint(tmp_path, monkeypatch):
    """A final-solve checkpoint of this very config and these tuned values (as ``--overwrite``
    leaves it, which removes no checkpoint) is not continued without ``resume``: the solve
    trains from the initialisation, the same parameters as a solve with no checkpoint at
    all (the saved ones were shifted by 0.5, so a continued solve ends elsewhere)."""
    from pinnlab.tuning.run import TuneOutcome, final_solve

    setup = _setup(tmp_path, "trainer.checkpoint_every=2")
    outcome = TuneOutcome({"weights.boundary": torch.tensor(0.25, dtype=torch.float64)}, {}, "fg2u", 0.0)
    ckpt = tmp_path / "t.h5.final.ckpt"
    stop_final_solve_at_its_first_checkpoint(setup, outcome, monkeypatch, ckpt)
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    again, _ = final_solve(setup, outcome, progress="off", checkpoint=ckpt, resume=False)
    fresh, _ = final_solve(setup, outcome, progress="off")
    np.testing.assert_array_equal(_params(again), _params(fresh))
    continued, _ = final_solve(setup, outcome, progress="off", checkpoint=copy, resume=True)
    assert not np.array_equal(_params(continued), _params(fresh))  # (what the checkpoint would have given)


# -- the line a stopped final solve prints -----------------------------------------------------------
def test_a_stopped_final_solve_names_only_the_checkpoints_this_run_wrote(tmp_path, capsys):
    """Stopped in the final solve: the final solve's checkpoint this run wrote is named
    with its step, and a tuning checkpoint left as it was (an earlier run's, this run
    saving none) is not announced beside it; with neither written this run the line says
    that nothing is kept (a resumed tuning's checkpoint, which ``before`` gives no stamp,
    is this run's: tests/test_backlog_resume_lines.py)."""
    from pinnlab.tuning.command import _say_saved, _stamp

    output, tuning, final = tmp_path / "t.h5", tmp_path / "t.h5.ckpt", tmp_path / "t.h5.final.ckpt"
    torch.save({"outer_step": 3}, tuning)
    before = {tuning: _stamp(tuning), final: _stamp(final)}
    assert before[final] is None
    _say_saved(output, before, tuning, final)
    assert capsys.readouterr().err == ("pinnlab: the tuning saved no checkpoint (tune.checkpoint_every), so its final "
                                       "solve keeps none either (a --resume needs both); the same command runs both "
                                       "again\n")
    torch.save({"step": 7}, final)
    _say_saved(output, before, tuning, final)
    assert capsys.readouterr().err == f"pinnlab: final solve step 7 saved in {str(final)!r}; --resume continues from it\n"


# -- the /tune group: the run's own numbers, exactly -------------------------------------------------
def test_the_tune_group_keeps_the_runs_total_seconds_and_each_rows_numbers(tmp_path):
    """/tune.attrs["seconds"] is the tuning's wall-clock time (12.5 s here, more than its
    rows' 0.1 + 0.2 s: the bookkeeping between steps), and every row's value, grad_norm,
    seconds and phase (fg2u, then rgu from outer step 1) is the run's own; a run stopped
    by its budget after 2 of 3 outer steps is ``ok`` with 2 steps done."""
    import h5py

    from pinnlab.tuning.command import write_tune_result
    from pinnlab.tuning.run import TuneOutcome, final_solve

    setup = _setup(tmp_path, "tune.then={method: rgu, after: 1}")
    f64 = torch.float64
    phi = {"weights.boundary": torch.tensor(0.25, dtype=f64)}
    history = {"outer_step": [0, 1], "value": [0.5, 0.375], "grad_norm": [1.5, 2.5], "seconds": [0.1, 0.2],
               "method": ["fg2u", "rgu"],
               "phi/weights.boundary": [torch.tensor(0.125, dtype=f64), torch.tensor(0.25, dtype=f64)]}
    outcome = TuneOutcome(phi, history, "fg2u", 12.5, message="budget_seconds reached")
    result, problem = final_solve(setup, outcome, progress="off")
    out = tmp_path / "tuned.h5"
    write_tune_result(out, setup, outcome, result, problem)
    with h5py.File(out) as fh:
        tune = fh["tune"]
        attrs = {k: tune.attrs[k] for k in ("seconds", "steps_done", "status", "message", "then_method",
                                             "then_after", "inner", "horizon", "objective")}
        assert attrs == {"seconds": 12.5, "steps_done": 2, "status": "ok", "message": "budget_seconds reached",
                         "then_method": "rgu", "then_after": 1, "inner": "pinnlab", "horizon": 2,
                         "objective": "data"}
        assert "trial_steps" not in tune.attrs
        assert tune["method"].asstr()[...].tolist() == ["fg2u", "rgu"]
        rows = {key: tune[key][...].tolist() for key in ("outer_step", "value", "grad_norm", "seconds")}
        assert rows == {"outer_step": [0, 1], "value": [0.5, 0.375], "grad_norm": [1.5, 2.5], "seconds": [0.1, 0.2]}
        assert tune["phi/weights.boundary"][...].tolist() == [0.125, 0.25]


def test_the_final_weights_cover_every_term_of_the_trained_loss(tmp_path):
    """/tune/final/weights.<term> for each term the final solve trained: the residual (1,
    unset), the tuned boundary weight (0.25) and the data term of data.train: true at the
    config's 0.5, not a fixed residual and boundary pair."""
    import h5py

    from pinnlab.tuning.command import write_tune_result
    from pinnlab.tuning.run import TuneOutcome, final_solve

    setup = _setup(tmp_path, "data.train=true", "loss.weights={boundary: 1.0e-2, data: 0.5}")
    f64 = torch.float64
    outcome = TuneOutcome({"weights.boundary": torch.tensor(0.25, dtype=f64)},
                          {"outer_step": [], "value": [], "grad_norm": [], "seconds": [], "phi/weights.boundary": []},
                          "fg2u", 0.0)
    result, problem = final_solve(setup, outcome, progress="off")
    out = tmp_path / "tuned.h5"
    write_tune_result(out, setup, outcome, result, problem)
    with h5py.File(out) as fh:
        weights = {k: v for k, v in fh["tune"].attrs.items() if k.startswith("final/")}
    assert weights == {"final/weights.residual": 1.0, "final/weights.boundary": 0.25, "final/weights.data": 0.5}


# -- run_tuning: the method it builds ------------------------------------------------------------------
@pytest.mark.parametrize("phases", [("tune.options={}",),
                                    ("tune.method=rgu", "tune.options={}", "tune.then={method: fg2u, after: 1}")],
                         ids=["one_phase", "second_phase"])
def test_fg2u_in_the_outer_loop_takes_one_direction_per_tuned_value(tmp_path, monkeypatch, phases):
    """fg2u without num_directions, in either phase, runs with N = 2 directions (the two
    tuned weights), as check_method validated it: not the library default 8, which costs
    4 times exact forward-mode unrolling."""
    from pinnlab.tuning.run import run_tuning

    seen = _spy(monkeypatch, "optimize")
    setup = _setup(tmp_path, "tune.tunables={weights.boundary: {}, weights.residual: {}}", *phases)
    with pytest.raises(_Handed):
        run_tuning(setup)
    method = seen["args"][2]
    fg2u = method.then if len(phases) > 1 else method
    assert fg2u.num_directions == 2
    if len(phases) > 1:
        assert (method.switch_after, method.then_lr) == (1, None)


# -- check_method: the second phase and DeepXDE's tunables ------------------------------------------
SECOND_PHASE_OR_DEEPXDE = [
    (DEEPXDE, "tune.then={method: fg2u, after: 1}",
     r"'fg2u': DeepXDE training is a black box; use zo_fg2u, random or optuna$"),
    (DEEPXDE, "tune.tunables={collocation_weight: {}}",
     r"^tune\.tunables\.collocation_weight: with tune\.inner: deepxde only lr, weights\.residual and "
     r"weights\.boundary can be tuned$"),
    (None, "tune.tunables={weights.boundary: {}, weights.residual: {}}; tune.then={method: f2sa, after: 1}; "
           "tune.accumulate=2",
     r"^tune\.accumulate = 2: f2sa takes its own outer steps and has no hypergradient estimates to accumulate; "
     r"use accumulate: 1$"),
    (None, "tune.method=rgu; tune.options={}; tune.then={method: trgu, after: 1}; tune.accumulate=2",
     r"^tune\.accumulate = 2: tune\.method = 'rgu' and tune\.then\.method = 'trgu' give the same estimate at a "
     r"given φ every time \(no random directions for the N = 1 tuned values\), so all 2 would be equal; use "
     r"accumulate: 1$"),
]


@pytest.mark.parametrize("text, overrides, expected", SECOND_PHASE_OR_DEEPXDE,
                         ids=["deepxde_then_fg2u", "deepxde_collocation_weight", "then_f2sa_accumulate",
                              "two_deterministic_phases_accumulate"])
def test_the_second_phase_and_deepxdes_tunables_are_checked_before_any_work(tmp_path, text, overrides, expected):
    """A second phase is held to the first's rules (fg2u cannot differentiate DeepXDE's
    black box; f2sa has no estimates to accumulate; accumulating two deterministic phases
    is refused naming both), and DeepXDE tunes lr and the two loss weights only: a
    collocation weight network is refused, naming its key (when the tuning is built, before
    the tunables' own checks)."""
    with pytest.raises(ConfigError, match=expected):
        check_method(_setup(tmp_path, *overrides.split("; "), **({"text": text} if text else {})))


def test_a_refused_second_phase_method_under_deepxde_is_named_by_its_own_key(tmp_path):
    """tune.method is zo_fg2u here; the refused fg2u is tune.then.method's, and the line
    says so (as the unknown-method refusal does; it once said tune.method = 'fg2u')."""
    setup = _setup(tmp_path, "tune.then={method: fg2u, after: 1}", text=DEEPXDE)
    with pytest.raises(ConfigError, match=r"^tune\.then\.method = 'fg2u': DeepXDE training is a black box"):
        check_method(setup)


# -- the exit code: the final solve's status counts too ---------------------------------------------
def test_a_final_solve_that_ended_nonfinite_exits_1_after_a_tuning_that_ended_ok(tmp_path, monkeypatch):
    """A tuning that ended ``ok`` followed by a final solve that did not (its status
    ``nonfinite``) writes its result and exits 1, as ``pinnlab solve`` does for that
    solve: exit 0 said the run succeeded."""
    import dataclasses

    import h5py

    import pinnlab.tuning.run as run_module
    from pinnlab.cli import main

    f64 = torch.float64
    outcome = run_module.TuneOutcome(
        {"weights.boundary": torch.tensor(0.25, dtype=f64)},
        {"outer_step": [0], "value": [0.5], "grad_norm": [1.0], "seconds": [0.1],
         "phi/weights.boundary": [torch.tensor(0.25, dtype=f64)]}, "fg2u", 0.1)
    solve = run_module.final_solve

    def diverged(*args, **kwargs):
        result, problem = solve(*args, **kwargs)
        return dataclasses.replace(result, status="nonfinite", message="training loss became inf"), problem

    monkeypatch.setattr(run_module, "run_tuning", lambda setup, **kwargs: outcome)
    monkeypatch.setattr(run_module, "final_solve", diverged)
    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    out = tmp_path / "t.h5"
    assert main(["tune", str(path), "-o", str(out), "--progress", "off"]) == 1
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "ok" and fh["tune/tuned/weights.boundary"][()] == 0.25
