"""Third mutation audit of pinnlab.tuning.run and pinnlab.tuning.command (``pinnlab tune``):
behaviour the earlier audits and the tuning suite left unchecked, each test naming the
mutant it kills."""

from __future__ import annotations

import pytest
import torch

from pinnlab import config as configuration

from .tuning.micro_configs import WEIGHT_FG2U


def test_an_explicit_warm_start_of_deepxde_black_box_training_is_refused():
    """zo_fg2u unrolls (its warm_start acts with pinnlab's training), but DeepXDE's
    black-box training starts afresh at every evaluation, so a ``tune.warm_start`` given
    with ``inner: deepxde`` is refused as having no effect (killed mutant: only the
    penalty/f2sa case refused)."""
    from pathlib import Path

    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning

    shipped = Path(__file__).parents[1] / "configs" / "tuning" / "deepxde_loss_weights.yaml"
    small = ["model.width=4", "trainer.test_points=10", "data.points=10"]
    setup = build_tuning(configuration.load(shipped, small))
    check_method(setup)  # (the default warm start is not refused)
    setup = build_tuning(configuration.load(shipped, [*small, "tune.warm_start=true"]))
    with pytest.raises(configuration.ConfigError, match=r"^tune\.warm_start: has no effect here \(penalty and f2sa "
                       r"keep their own lower-level iterates, and DeepXDE's black-box training starts afresh"):
        check_method(setup)


class _Stopped(Exception):
    """Raised in place of the final solve once the tuning's warning is printed."""


@pytest.mark.parametrize("trained, starts_over", [(None, True), (({}, None), False)])
def test_a_stopped_tunings_warning_says_the_final_solve_starts_over_only_without_a_trained_network(
        tmp_path, monkeypatch, capsys, trained, starts_over):
    """With final_init: continue, a tuning that stopped early at its last finite values
    warns that the final solve starts from the initialisation only when no outer step left
    a finite θ (``trained`` None); with one, the solve continues it and the warning says
    nothing of starting over (killed mutant: the clause printed whatever ``trained``)."""
    import pinnlab.tuning.run as run_module
    from pinnlab.cli import main

    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    phi = {"weights.boundary": torch.tensor(0.02, dtype=torch.float64)}
    outcome = run_module.TuneOutcome(phi, {}, "fg2u", 0.0, trained=trained, status="nonfinite",
                                     message="outer step 1: φ became non-finite")
    handed = []

    def final_solve(setup, given, **kwargs):
        handed.append(given)
        raise _Stopped

    monkeypatch.setattr(run_module, "run_tuning", lambda setup, **kwargs: outcome)
    monkeypatch.setattr(run_module, "final_solve", final_solve)
    with pytest.raises(_Stopped):
        main(["tune", str(path), "tune.final_init=continue", "-o", str(tmp_path / "t.h5"), "--progress", "off"])
    assert handed == [outcome]
    expected = ("warning: tuning stopped early (outer step 1: φ became non-finite); the final solve uses the last "
                "finite values" + (" and starts from the initialisation (no outer step left a finite θ)"
                                   if starts_over else ""))
    assert capsys.readouterr().err.splitlines()[-1] == expected


DEEPXDE_RANDOM = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 4, lr: 1.0e-3, batch_size: 4, eval_every: 2, test_points: 10, backend: deepxde}
data: {source: synthetic, points: 10, seed: 0}
tune:
  method: random
  tunables: {weights.boundary: {}}
  objective: {kind: data}
  inner: deepxde
  outer_steps: 3
  trial_steps: 7
"""


def test_a_diverged_deepxde_trial_scores_inf_as_a_pinnlab_trial_does(tmp_path, monkeypatch):
    """A search over DeepXDE trainings scores each trial by the black box over trial_steps
    steps; a diverged training (NaN misfit) is recorded as inf, the score of a diverged
    pinnlab trial, and loses to the finite ones (killed mutant: the NaN kept in /tune/value)."""
    import math

    import pinnlab.tuning.run as run_module
    from pinnlab.bilevel import BlackBox
    from pinnlab.tuning.setup import build_tuning

    path = tmp_path / "tune.yaml"
    path.write_text(DEEPXDE_RANDOM)
    setup = build_tuning(configuration.load(path))
    scores, asked = iter([math.nan, 2.0, 1.0]), []

    def black_box(given, steps=None):
        asked.append(steps)
        return BlackBox(lambda phi: next(scores), horizon=steps)

    monkeypatch.setattr(run_module, "_deepxde_black_box", black_box)
    outcome = run_module.run_tuning(setup)
    assert asked == [7]
    assert outcome.history["value"] == [math.inf, 2.0, 1.0]
    assert outcome.extra["best_trial"] == 2 and outcome.status == "ok"


def test_a_mix_chosen_by_any_search_is_one_constant_for_the_final_solve():
    """A search's trials are drawn, not a sequence of updates: for optuna as for random the
    final solve's mix schedule is the chosen value alone, not φ_0 followed by the trials
    drawn before the last (killed mutant: only random treated as a search)."""
    from pinnlab.tuning.run import TuneOutcome

    tried = [torch.tensor(v, dtype=torch.float64) for v in (0.2, 0.9, 0.4)]
    for method in ("random", "optuna"):
        outcome = TuneOutcome({"mix": tried[1]}, {"phi/mix": tried}, method, 0.0)
        assert outcome.mix_schedule(0.5) == (0.9,)
    # (a hypergradient method's schedule: the start, then the values after each update but the last)
    assert TuneOutcome({"mix": tried[2]}, {"phi/mix": tried}, "fg2u", 0.0).mix_schedule(0.5) == (0.5, 0.2, 0.9)


def test_a_num_directions_that_is_no_integer_is_refused_in_one_line(tmp_path):
    """``tune.options.num_directions: two`` is refused as the method refuses it, a
    ConfigError naming the option (killed mutant: compared with N first, a TypeError
    traceback)."""
    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning

    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    setup = build_tuning(configuration.load(path, ["tune.options={num_directions: two}"]))
    with pytest.raises(configuration.ConfigError, match=r"^tune\.options: tune\.method = 'fg2u': num_directions "
                       r"\(b\) must be an integer >= 1, got 'two'$"):
        check_method(setup)


def test_deepxde_black_box_training_accepts_an_optuna_search(tmp_path):
    """With inner: deepxde the searches random and optuna are accepted, as zo_fg2u: each
    only evaluates trainings (killed mutant: optuna refused with the unrolling methods)."""
    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning

    path = tmp_path / "tune.yaml"
    path.write_text(DEEPXDE_RANDOM)
    for method in ("random", "optuna"):
        check_method(build_tuning(configuration.load(path, [f"tune.method={method}"])))


def test_a_checkpoint_rewritten_at_the_same_size_is_announced_as_this_runs(tmp_path, capsys):
    """A stopped run names the tuning checkpoint it wrote: one replaced (atomically, a new
    file) by a checkpoint of the same size, as every outer step's is, counts as written,
    while one left as it was does not (killed mutant: the size alone told files apart)."""
    from pinnlab.io.checkpoint import write_checkpoint_file
    from pinnlab.tuning.command import _say_saved, _stamp

    output, checkpoint = tmp_path / "t.h5", tmp_path / "t.h5.ckpt"
    write_checkpoint_file(checkpoint, {"outer_step": 4})
    before = {checkpoint: _stamp(checkpoint)}
    _say_saved(output, before, checkpoint)
    assert capsys.readouterr().err == ""  # (an earlier run's, untouched)
    write_checkpoint_file(checkpoint, {"outer_step": 5})
    assert checkpoint.stat().st_size == before[checkpoint][-1]
    _say_saved(output, before, checkpoint)
    assert capsys.readouterr().err == f"pinnlab: outer step 5 saved in {str(checkpoint)!r}; --resume continues from it\n"
