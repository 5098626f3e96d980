"""What ``run_tuning`` and ``final_solve`` hand on, checked at the hand-over: the tune
section's settings reach the outer loop, the final solve's schedule spans its own steps,
a tuned mix is left to the replayed schedule, coefficient errors are relative, and
zo_fg2u keeps a configured μ (killed mutants: a constant in place of each setting)."""

from __future__ import annotations

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.losses import Piecewise
from pinnlab.tuning.run import (
    TuneOutcome,
    coefficient_errors,
    final_solve,
    make_hypergradient_method,
    run_tuning,
)
from pinnlab.tuning.setup import build_tuning

from .micro_configs import WEIGHT_FG2U as TINY


class _Handed(Exception):
    """Raised by a spy once it has seen what it was handed."""


def _setup(tmp_path, *overrides):
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    return build_tuning(configuration.load(path, list(overrides)))


def _spy(monkeypatch, name):
    """Replace ``pinnlab.tuning.run.<name>`` by a spy that keeps its arguments and stops."""
    import pinnlab.tuning.run as run_module

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs, args=args)
        raise _Handed

    monkeypatch.setattr(run_module, name, spy)
    return seen


@pytest.mark.parametrize("save, checkpoint_every", [(True, 3), (False, 0)])
def test_the_tune_section_reaches_the_outer_loop(tmp_path, monkeypatch, save, checkpoint_every):
    """seed, warm_start, accumulate and budget_seconds go to ``optimize`` as configured,
    and checkpoint_every too, except where the run may not write (``save=False``, the
    ranks > 0 of a torchrun, which would all write the one checkpoint file)."""
    seen = _spy(monkeypatch, "optimize")
    setup = _setup(tmp_path, "tune.seed=7", "tune.warm_start=false", "tune.accumulate=2",
                   "tune.checkpoint_every=3", "tune.budget_seconds=5.0",
                   "tune.tunables={weights.boundary: {}, weights.residual: {}}")
    with pytest.raises(_Handed):
        run_tuning(setup, checkpoint=tmp_path / "t.ckpt", save=save)
    assert (seen["seed"], seen["warm_start"], seen["accumulate"], seen["time_budget"]) == (7, False, 2, 5.0)
    assert seen["checkpoint_every"] == checkpoint_every


def test_a_linear_final_schedule_decays_over_the_final_steps(tmp_path, monkeypatch):
    """trainer.schedule: linear in the final solve reaches 0 at its own last step,
    ``tune.final_steps`` (6), not at trainer.steps (4)."""
    seen = _spy(monkeypatch, "train")
    setup = _setup(tmp_path, "trainer.schedule=linear", "tune.final_steps=6")
    outcome = TuneOutcome(setup.phi0, {}, "fg2u", 0.0)
    with pytest.raises(_Handed):
        final_solve(setup, outcome, progress="off")
    assert seen["steps"] == 6 and seen["schedule"].total_steps == 6


def test_a_tuned_mix_is_replayed_by_the_schedule_not_fixed_in_the_hyperparameters(tmp_path, monkeypatch):
    """The final solve follows the schedule the tuning followed (φ_0, then the values after
    each update but the last): a ``mix`` in its hyperparameters would override that
    schedule with the last value for every step."""
    seen = _spy(monkeypatch, "train")
    setup = _setup(tmp_path, "loss.kind=hybrid", "loss.switch_step=2", "tune.tunables={mix: {init: 0.3}}",
                   "tune.final_steps=6")
    history = {"phi/mix": [torch.tensor(0.4, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64),
                           torch.tensor(0.8, dtype=torch.float64)]}
    outcome = TuneOutcome({"mix": torch.tensor(0.8, dtype=torch.float64)}, history, "fg2u", 0.0)
    with pytest.raises(_Handed):
        final_solve(setup, outcome, progress="off")
    problem = seen["args"][0]
    assert "mix" not in seen["hyperparams"]
    assert isinstance(problem.loss.switch, Piecewise) and problem.loss.switch.values == pytest.approx((0.3, 0.4, 0.6))


def test_coefficient_errors_are_relative_to_the_true_coefficient(tmp_path):
    """‖c − c*‖/‖c*‖: 1 at c = 0 and at c = 2c*, 0.5 at c = 1.5c*, whatever ‖c*‖."""
    path = tmp_path / "inverse.yaml"
    path.write_text(TINY.replace("poisson_two_body, dim: 3, seed: 1, constraint: soft", "fokker_planck_aniso, dim: 3, seed: 0")
                    .replace("weights: {boundary: 1.0e-2}", "weights: {}")
                    .replace("tunables: {weights.boundary: {}}", "tunables: {coefficients.mu: {init: 0.0}}"))
    setup = build_tuning(configuration.load(path))
    truth = setup.problem.equation.coefficients["mu"].double()
    assert float(truth.norm()) != pytest.approx(1.0)
    for scale, expected in ((0.0, 1.0), (2.0, 1.0), (1.5, 0.5)):
        errors = coefficient_errors(setup, {"coefficients.mu": scale * truth})
        assert errors == {"coefficients.mu": pytest.approx(expected, rel=1e-12)}


def test_zo_fg2u_keeps_a_configured_mu():
    """The tuning's default finite-difference step (0.05) applies only where the config
    gives none: ``tune.options.mu`` is the step used."""
    assert make_hypergradient_method("zo_fg2u", {}).mu == 0.05
    assert make_hypergradient_method("zo_fg2u", {"mu": 0.2}).mu == 0.2


def test_default_starts_of_the_mix_and_the_learning_rate(tmp_path):
    """A tuned mix starts at 0.5 (the middle of its logit range [0, 1]) and a tuned lr at
    the config's own trainer.lr, where the tunable gives no init."""
    setup = _setup(tmp_path, "loss.kind=hybrid", "loss.switch_step=2", "tune.tunables={mix: {}, lr: {}}")
    assert float(setup.phi0["mix"]) == 0.5 and float(setup.phi0["lr"]) == 1.0e-2
