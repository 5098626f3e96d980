"""Fifth mutation audit of :mod:`pinnlab.config`: what the first four audits left unpinned
(a zero weight under ReLoBRaLo, the last plateau window a run can hold, an override's
blank value, the DeepXDE override dropping every setting it cannot honour, an override to
optuna dropping the config's inits), each with the exact value or one-line message the
clean code gives."""

from __future__ import annotations

import pytest

from pinnlab import config as C
from tests.test_config_boundaries import _config, _refused
from tests.test_config_no_effect import needs_deepxde

SOFT = {"constraint": "soft"}


def test_a_zero_weight_is_refused_under_relobralo_as_under_lra():
    """ReLoBRaLo, like LRA, adapts the configured weights by ratios: a zero weight is
    refused naming the weighting; with no weighting it is a term switched off."""
    assert _refused(_config(equation=SOFT, loss={"weighting": "relobralo", "weights": {"boundary": 0}})) == (
        "loss.weights.boundary = 0: loss.weighting = 'relobralo' starts from the configured weights and "
        "adapts them by ratios, which a zero weight breaks (drop the term instead, or use loss.weighting: none)")
    assert C.validate(_config(equation=SOFT, loss={"weights": {"boundary": 0}})).loss.weights == {"boundary": 0.0}


def test_the_last_plateau_window_a_run_can_hold_is_steps_minus_2():
    """The earliest plateau switch takes effect at step window + 1, so in a run of 100
    steps (0 … 99) window 98 can switch and window 99 cannot: refused in one line."""
    loss = {"kind": "hybrid", "switch": "auto"}
    assert C.validate(_config(loss={**loss, "window": 98}, trainer={"steps": 100})).loss.window == 98
    assert _refused(_config(loss={**loss, "window": 99}, trainer={"steps": 100})) == (
        "loss.window = 99 with loss.switch: auto: must be < trainer.steps - 1 (99), or the plateau switch "
        "cannot happen and the unbiased phase never starts")


@pytest.mark.parametrize("text", ["", " ", "\t", "\u00a0", "\u2003", "\x0b"])
def test_an_override_value_of_only_blanks_is_null(text):
    """Text after ``=`` that is blank (a tab, a pasted no-break space or vertical tab)
    is null, as empty text is: YAML itself refused a lone tab or vertical tab as
    malformed and read a no-break space as the string '\\xa0'."""
    assert C.override_value(text) is None
    assert C.apply_overrides({}, [f"estimator.time_sigma={text}"]) == {"estimator": {"time_sigma": None}}


@needs_deepxde
def test_a_deepxde_override_drops_every_setting_deepxde_cannot_honour():
    """A config whose trainer and loss set each of DEEPXDE_FIXED to another value (SGD
    with momentum, an exponential schedule with its gamma, float64, two batch chunks,
    checkpoints, LRA, an unbiased loss): ``trainer.backend=deepxde`` drops them all, their
    dependents too, and the run validates at DeepXDE's values."""
    data = _config(equation=SOFT, loss={"kind": "unbiased", "weighting": "lra"},
                   trainer={"optimizer": "sgd", "momentum": 0.5, "schedule": "exponential", "gamma": 0.99,
                            "dtype": "float64", "batch_chunks": 2, "checkpoint_every": 10})
    config = C.validate(C.apply_overrides(data, ["trainer.backend=deepxde"]))
    # (the schedule is the one DeepXDE's backend sets: constant)
    assert config.trainer.model_fields_set == {"backend", "schedule"} and config.loss.model_fields_set == set()
    trainer = config.resolved()["trainer"]
    assert {key: trainer[key] for key in ("optimizer", "schedule", "dtype", "batch_chunks", "checkpoint_every")} \
        == {"optimizer": "adam", "schedule": "constant", "dtype": "float32", "batch_chunks": 1, "checkpoint_every": 0}
    assert "momentum" not in trainer and "gamma" not in trainer
    assert _refused(C.apply_overrides(data, ["trainer.backend=deepxde", "trainer.dtype=float64"])) == (
        "trainer.dtype = 'float64': not supported by trainer.backend: deepxde (DeepXDE trains in float32; "
        "allowed: 'float32')")


@pytest.mark.parametrize("override", ["trainer.backend=deepxde", "loss.weighting=none"])
def test_an_override_that_drops_the_weighting_drops_its_options(override):
    """The weighting's options act only with lra or relobralo; an override leaving the
    weighting at none drops the config's options as it drops gamma with the schedule (they
    were kept, and refused: "loss.weighting_options: only with loss.weighting: lra or
    relobralo")."""
    data = _config(equation=SOFT, loss={"weighting": "lra", "weighting_options": {"alpha": 0.5}})
    config = C.validate(C.apply_overrides(data, [override]))
    assert config.loss.weighting == "none" and config.loss.weighting_options == {}


def test_an_override_of_the_weighting_keeps_only_the_options_it_gives():
    """Like tune.method with tune.options: loss.weighting=relobralo drops LRA's options
    the config carried (``every`` is no ReLoBRaLo option) and keeps those given as
    overrides; the same weighting again keeps the config's."""
    data = _config(equation=SOFT, loss={"weighting": "lra", "weighting_options": {"alpha": 0.5, "every": 3}})
    config = C.validate(C.apply_overrides(
        data, ["loss.weighting=relobralo", "loss.weighting_options.temperature=0.5"]))
    assert (config.loss.weighting, config.loss.weighting_options) == ("relobralo", {"temperature": 0.5})
    assert C.validate(C.apply_overrides(data, ["loss.weighting=relobralo"])).loss.weighting_options == {}
    kept = C.validate(C.apply_overrides(data, ["loss.weighting=lra"]))
    assert kept.loss.weighting_options == {"alpha": 0.5, "every": 3}


@pytest.mark.parametrize("own", [{}, {"weighting": "none"}])
def test_options_given_without_a_weighting_are_kept_for_the_overrides(own):
    """A config that gives LRA's options but no weighting (refused as it stands) and an
    override ``loss.weighting=lra``: the options belong to no weighting of the config's,
    so they are the override's, not dropped as another weighting's."""
    data = _config(equation=SOFT, loss={**own, "weighting_options": {"alpha": 0.5}})
    assert _refused(data) == "loss.weighting_options: only with loss.weighting: lra or relobralo"
    config = C.validate(C.apply_overrides(data, ["loss.weighting=lra"]))
    assert (config.loss.weighting, config.loss.weighting_options) == ("lra", {"alpha": 0.5})


def test_an_override_to_optuna_drops_the_configs_inits():
    """optuna, like random, draws every trial from [low, high]: an override
    ``tune.method=optuna`` drops the init the config gave for fg2u; given with the
    override it is kept, and refused."""
    data = _config(loss={"kind": "hybrid", "switch_step": 5},
                   tune={"method": "fg2u", "tunables": {"mix": {"init": 0.5}, "sigma": {"init": 0.02}}})
    config = C.validate(C.apply_overrides(data, ["tune.method=optuna"]))
    assert config.tune.method == "optuna"
    assert (config.tune.tunables["mix"].init, config.tune.tunables["sigma"].init) == (None, None)
    assert _refused(C.apply_overrides(data, ["tune.method=optuna", "tune.tunables.sigma.init=0.03"])).startswith(
        "tune.tunables.sigma.init: has no effect with tune.method = 'optuna', which draws every trial from "
        "[low, high]")
