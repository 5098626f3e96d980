"""Settings that a run would ignore are refused in one line (exit code 2, no output),
when given; left at their defaults they are accepted, an override of the key that
decides drops the config's own, and the resolved config leaves them out."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from pinnlab import config as C
from pinnlab.cli import main
from tests.tuning.micro_configs import JOINT_MU
from tests.tuning.test_search_options import WEIGHT

TUNE = WEIGHT  # the smallest fg2u weight-tuning config

DEEPXDE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4, backend: deepxde}
"""

SOLVE = DEEPXDE.replace(", backend: deepxde", "")

SEARCH = ["tune.method=random", "tune.options={}"]
# validation finds DeepXDE without importing it (which would print its backend lines)
needs_deepxde = pytest.mark.skipif(importlib.util.find_spec("deepxde") is None, reason="needs deepxde")

# (command, config text (OBS: an observation file), overrides, the line's start)
REFUSED = {
    "data.points with a file": ("tune", TUNE.replace("source: synthetic, points: 10, noise: 0.01",
                                                     "source: OBS, points: 10"), [],
                                "data.points: has an effect only with data.source: synthetic"),
    "data.noise with a file": ("tune", TUNE.replace("source: synthetic, points: 10, noise: 0.01",
                                                    "source: OBS, noise: 0.01"), [],
                               "data.noise: has an effect only with data.source: synthetic"),
    "data.seed with a file": ("tune", TUNE.replace("source: synthetic, points: 10, noise: 0.01",
                                                   "source: OBS, seed: 3"), [],
                              "data.seed: has an effect only with data.source: synthetic"),
    "trial_steps with fg2u": ("tune", TUNE, ["tune.trial_steps=5"],
                              "tune.trial_steps: has an effect only with tune.method: random or optuna"),
    "objective.points with data": ("tune", TUNE, ["tune.objective.points=64"],
                                   "tune.objective.points: has an effect only with tune.objective.kind: "
                                   "residual or reference (this config has tune.objective.kind = 'data')"),
    "low of a log weight with fg2u": ("tune", TUNE, ["tune.tunables.weights.boundary.low=1.0e-4"],
                                      "tune.tunables.weights.boundary.low: has no effect with tune.method = 'fg2u'"),
    "high of a log sigma with rgu": ("tune", TUNE, ["tune.method=rgu", "tune.options={}", "tune.tunables={sigma: "
                                                    "{high: 0.5}}"],
                                     "tune.tunables.sigma.high: has no effect with tune.method = 'rgu'"),
    # (an identity coefficient's bounds neither bounded a hypergradient step nor joint fitting)
    "low of an identity coefficient with rgu": ("tune", JOINT_MU, ["tune.method=rgu", "tune.tunables={coefficients.mu: "
                                                                   "{init: 0.0, low: -1.0}}"],
                                                "tune.tunables.coefficients.mu.low: has no effect with tune.method = "
                                                "'rgu', which steps coefficients.mu without bounds"),
    "high of an identity coefficient with joint": ("tune", JOINT_MU.replace("{init: 0.0}", "{init: 0.0, high: 3.0}"),
                                                   [], "tune.tunables.coefficients.mu.high: has no effect with "
                                                   "tune.method = 'joint'"),
    # (rgu's and joint fitting's runs were the same whatever the seed)
    "tune.seed with rgu": ("tune", TUNE, ["tune.method=rgu", "tune.options={}", "tune.seed=3"],
                           "tune.seed: has no effect with tune.method = 'rgu' (it seeds the directions"),
    "tune.seed with trgu then hessian_free": ("tune", TUNE, ["tune.method=trgu", "tune.options={}", "tune.outer_steps=3",
                                                             "tune.then={method: hessian_free, after: 1}",
                                                             "tune.seed=0"],
                                              "tune.seed: has no effect with tune.method = 'trgu' and "
                                              "tune.then.method = 'hessian_free'"),
    "tune.seed with joint": ("tune", JOINT_MU, ["tune.seed=1"], "tune.seed: has no effect with tune.method = 'joint'"),
    "distributed not a boolean": ("tune", TUNE, ["tune.options.distributed=abc"],
                                  "tune.options.distributed = 'abc': must be true or false"),
    "then distributed not a boolean": ("tune", TUNE, ["tune.outer_steps=3", "tune.method=rgu", "tune.options={}",
                                                      "tune.then={method: fg2u, after: 1, "
                                                      "options: {distributed: 'no'}}"],
                                       "tune.then.options.distributed = 'no': must be true or false"),
    "checkpoint_every with random": ("tune", TUNE, [*SEARCH, "tune.checkpoint_every=2"],
                                     "tune.checkpoint_every: has an effect only with tune.method: fg2u or"),
    "checkpoint_every with optuna": ("tune", TUNE, ["tune.method=optuna", "tune.options={}",
                                                    "tune.checkpoint_every=0"],
                                     "tune.checkpoint_every: has an effect only with tune.method: fg2u or"),
    # (accepted and ignored: the searches step no φ, joint fitting has no unrolls)
    "outer_lr with random": ("tune", TUNE, [*SEARCH, "tune.outer_lr=0.3"],
                             "tune.outer_lr: has an effect only with tune.method: fg2u or"),
    "outer_betas with optuna": ("tune", TUNE, ["tune.method=optuna", "tune.options={}", "tune.outer_betas=[0.5, 0.5]"],
                                "tune.outer_betas: has an effect only with tune.method: fg2u or"),
    "outer_optimizer with random": ("tune", TUNE, [*SEARCH, "tune.outer_optimizer=sgd"],
                                    "tune.outer_optimizer: has an effect only with tune.method: fg2u or"),
    "warm_start with joint": ("tune", TUNE, ["tune.method=joint", "tune.options={}", "tune.warm_start=false"],
                              "tune.warm_start: has an effect only with tune.method: fg2u or"),
    "accumulate with random": ("tune", TUNE, [*SEARCH, "tune.accumulate=3"],
                               "tune.accumulate: has an effect only with tune.method: fg2u or"),
    "estimator.samples with deepxde": ("solve", DEEPXDE, ["estimator.samples=4"],
                                       "estimator.samples: has no effect with trainer.backend: deepxde"),
    "estimator.kind with deepxde": ("solve", DEEPXDE, ["estimator.kind=autograd"],
                                    "estimator.kind: has no effect with trainer.backend: deepxde"),
    "estimator.sigma with deepxde": ("solve", DEEPXDE, ["estimator.sigma=0.01"],
                                     "estimator.sigma: has no effect with trainer.backend: deepxde"),
    "loss.kind with deepxde": ("solve", DEEPXDE, ["loss.kind=unbiased"],
                               "loss.kind = 'unbiased': not supported by trainer.backend: deepxde"),
    "objective.estimator with data": ("tune", TUNE, ["tune.objective.estimator=stein"],
                                      "tune.objective.estimator: has an effect only with tune.objective.kind: "
                                      "residual (this config has tune.objective.kind = 'data')"),
    "objective.estimator with reference": ("tune", TUNE, ["tune.objective.kind=reference",
                                                          "tune.objective.estimator=autograd"],
                                           "tune.objective.estimator: has an effect only with "
                                           "tune.objective.kind: residual (this config has tune.objective.kind = "
                                           "'reference')"),
    "objective.samples without Stein": ("tune", TUNE, ["estimator.kind=autograd", "tune.objective.samples=8"],
                                        "tune.objective.samples: has an effect only with estimator.kind: stein, "
                                        "or with a Stein residual tuning objective"),
    # autograd and Hutchinson fit the raw network: σ = 0.01 and 0.5 gave the same run
    "estimator.sigma with autograd": ("solve", SOLVE, ["estimator.kind=autograd", "estimator.sigma=0.5"],
                                      "estimator.sigma: has an effect only with estimator.kind: stein, or with a "
                                      "Stein residual tuning objective"),
    "estimator.time_smoothing with hutchinson": ("solve", SOLVE, ["estimator.kind=hutchinson",
                                                                 "estimator.time_smoothing=independent"],
                                                 "estimator.time_smoothing: has an effect only with "
                                                 "estimator.kind: stein"),
    "estimator.noise with autograd": ("solve", SOLVE, ["estimator.kind=autograd", "estimator.noise=independent"],
                                      "estimator.noise: has an effect only with estimator.kind: stein or "
                                      "hutchinson"),
    **{f"collocation_weight {key}": ("tune", TUNE, [f"tune.tunables={{collocation_weight: {{{key}: {value}}}}}"],
                                     f"tune.tunables.collocation_weight.{key}: has no effect on the "
                                     "collocation_weight network")
       for key, value in (("init", 1.0), ("transform", "identity"), ("low", -2.0), ("high", 2.0))},
}


def _observations(tmp_path):
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.zeros((5, 3)), u=np.zeros(5))
    return path


def _config(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text.replace("OBS", str(_observations(tmp_path))))
    return path


@pytest.mark.parametrize("case", REFUSED)
def test_a_setting_without_effect_is_refused_in_one_line(tmp_path, capsys, case):
    """Each was accepted and ignored: noise for a user's own observations added none, a
    log tunable's bounds never bounded a hypergradient method, ``distributed: abc`` (or
    YAML 1.2's string ``no``) read as true, a search checkpointed every trial whatever
    ``checkpoint_every`` said, DeepXDE trained with its own exact derivatives, a data or
    reference objective took u from the training's estimator whatever
    ``objective.estimator`` said, and the collocation_weight network started from its own
    initialisation, unbounded and untransformed."""
    command, text, overrides, expected = REFUSED[case]
    if "deepxde" in case and importlib.util.find_spec("deepxde") is None:
        pytest.skip("needs deepxde")
    if "optuna" in case:
        pytest.importorskip("optuna")
    out = tmp_path / "out.h5"
    code = main([command, str(_config(tmp_path, text)), *overrides, "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert expected in err[0] and err[0].endswith(("remove it", "true or false", "allowed: 'biased')")), err
    assert not out.exists() and not (tmp_path / "out.h5.ckpt").exists()


@pytest.mark.parametrize("overrides", [
    [],  # a file with the data section's defaults
    ["tune.trial_steps=5", *SEARCH],
    ["tune.checkpoint_every=2"],
    ["tune.objective.kind=reference", "tune.objective.points=64"],
    ["tune.tunables.weights.boundary.low=1.0e-4", "tune.tunables.weights.boundary.high=1.0", *SEARCH],
    ["tune.tunables={weights.boundary: {transform: logit, low: 1.0e-4, high: 1.0}}"],
    ["tune.tunables={mix: {low: 0.1, high: 0.9}}", "loss.kind=hybrid", "loss.switch_step=1"],
    ["tune.options.distributed=false"],
    ["tune.options.distributed=true"],
    ["tune.objective.kind=residual", "tune.objective.estimator=autograd"],
    ["tune.tunables={collocation_weight: {width: 8, depth: 3}}"],
    ["tune.objective.samples=8"],  # u of the Stein training at the observations
    ["estimator.kind=autograd", "tune.objective.kind=residual", "tune.objective.samples=8"],  # its Stein residual
    ["estimator.kind=autograd", "tune.objective.kind=residual", "estimator.sigma=0.02", "estimator.noise=independent"],
    ["estimator.kind=hutchinson", "estimator.noise=independent"],  # its probes
])
def test_the_same_settings_where_they_act_are_accepted(tmp_path, overrides):
    text = TUNE.replace("source: synthetic, points: 10, noise: 0.01", "source: OBS")
    config = C.load(_config(tmp_path, text), overrides)
    assert C.validate(yaml.safe_load(config.to_yaml())).resolved() == config.resolved()


@pytest.mark.parametrize("overrides", [
    [],  # fg2u's directions
    ["tune.method=zo_fg2u"],
    SEARCH,
    ["tune.method=rgu", "tune.options={}", "tune.outer_steps=3", "tune.then={method: fg2u, after: 1}"],
    ["tune.method=rgu", "tune.options={}", "tune.tunables={collocation_weight: {}}"],  # its initialisation
])
def test_tune_seed_is_accepted_where_something_of_the_tuning_is_random(tmp_path, overrides):
    config = C.load(_config(tmp_path, TUNE), [*overrides, "tune.seed=5"])
    assert config.tune.seed == 5 and config.resolved()["tune"]["seed"] == 5
    assert C.validate(config.resolved()).resolved() == config.resolved()


def test_an_override_to_an_unseeded_method_drops_the_configs_tune_seed(tmp_path):
    """A config's seed for fg2u's directions goes with tune.method=rgu (and the resolved
    config, what a result file records, leaves it out and validates back), stays with
    tune.method=random, and given as an override itself is refused."""
    path = _config(tmp_path, TUNE.replace("outer_steps: 2", "outer_steps: 2\n  seed: 4"))
    assert C.load(path).tune.seed == 4 and C.load(path, SEARCH).tune.seed == 4
    config = C.load(path, ["tune.method=rgu", "tune.options={}"])
    assert "seed" not in config.tune.model_fields_set and "seed" not in config.resolved()["tune"]
    assert C.validate(config.resolved()).resolved() == config.resolved()
    assert C.load(path, ["tune.method=rgu", "tune.options={}", "tune.then={method: fg2u, after: 1}"]).tune.seed == 4
    with pytest.raises(C.ConfigError, match=r"^tune\.seed: has no effect with tune\.method = 'cg'"):
        C.load(path, ["tune.method=cg", "tune.options={}", "tune.seed=4"])


def test_a_coefficients_search_range_is_accepted_with_a_search(tmp_path):
    """The bounds refused with rgu and joint fitting above are the range a search draws μ from."""
    config = C.load(_config(tmp_path, JOINT_MU), [*SEARCH, "tune.tunables={coefficients.mu: {low: -1.0, high: 3.0}}"])
    assert (config.tune.tunables["coefficients.mu"].low, config.tune.tunables["coefficients.mu"].high) == (-1.0, 3.0)


def test_defaults_of_the_data_section_are_left_out_for_a_file(tmp_path):
    """A file source's resolved config (what a result file records) has no points, noise
    or seed, and validates back; a synthetic source keeps them."""
    config = C.load(_config(tmp_path, TUNE.replace("source: synthetic", "source: OBS").replace(
        ", points: 10, noise: 0.01", "")))
    resolved = config.resolved()
    assert not {"points", "noise", "seed"} & set(resolved["data"])
    assert C.validate(resolved).to_yaml() == config.to_yaml()
    synthetic = C.load(_config(tmp_path, TUNE)).resolved()["data"]
    assert (synthetic["points"], synthetic["noise"], synthetic["seed"]) == (10, 0.01, 0)


def test_an_override_of_the_deciding_key_drops_the_configs_own_setting(tmp_path):
    """As for gamma with trainer.schedule: the config's synthetic-data settings go with
    data.source=<file>, its trial_steps with a hypergradient method, its checkpoint_every
    with a search, its objective points with a data objective."""
    obs = _observations(tmp_path)
    config = C.load(_config(tmp_path, TUNE), [f"data.source={obs}"])
    assert config.data.model_fields_set == {"source"}
    search = _config(tmp_path, TUNE.replace("method: fg2u", "method: random").replace(
        "options: {num_directions: 1}", "options: {}\n  trial_steps: 5").replace("  horizon: 2\n", ""),
        "search.yaml")  # (no horizon: beside trial_steps it is refused)
    assert C.load(search).tune.trial_steps == 5
    assert "trial_steps" not in C.load(search, ["tune.method=fg2u"]).tune.model_fields_set
    bilevel = _config(tmp_path, TUNE.replace("outer_steps: 2", "outer_steps: 2\n  checkpoint_every: 3").replace(
        "{kind: data, samples: 2}", "{kind: residual, points: 64}"), "bilevel.yaml")
    config = C.load(bilevel)
    assert (config.tune.checkpoint_every, config.tune.objective.points) == (3, 64)
    assert "points" not in C.load(bilevel, ["tune.objective.kind=data"]).tune.objective.model_fields_set
    assert "checkpoint_every" not in C.load(bilevel, SEARCH).tune.model_fields_set
    # the outer optimiser's settings go with a search (every shipped tuning config sets outer_lr)
    outer = _config(tmp_path, TUNE.replace("outer_steps: 2", "outer_steps: 2\n  outer_lr: 0.3\n  warm_start: false"),
                    "outer.yaml")
    assert not {"outer_lr", "warm_start"} & C.load(outer, SEARCH).tune.model_fields_set
    assert C.load(outer, ["tune.method=rgu", "tune.options={}"]).tune.outer_lr == 0.3
    with pytest.raises(C.ConfigError, match=r"^tune\.checkpoint_every: has an effect only"):
        C.load(bilevel, [*SEARCH, "tune.checkpoint_every=3"])  # given as an override itself: refused
    # a search with its own trial length: the config's horizon goes (it only sets the default
    # trial length); given as an override too, or beside trial_steps in the file, it is refused
    assert "horizon" not in C.load(bilevel, [*SEARCH, "tune.trial_steps=5"]).tune.model_fields_set
    with pytest.raises(C.ConfigError, match=r"^tune\.horizon: has no effect with tune\.method = 'random'"):
        C.load(bilevel, [*SEARCH, "tune.trial_steps=5", "tune.horizon=3"])
    with pytest.raises(C.ConfigError, match=r"^tune\.horizon: has no effect"):
        C.load(search, ["tune.horizon=3"])
    assert C.load(search, ["tune.trial_steps=null", "tune.horizon=3"]).tune.horizon == 3  # (then 30-step trials)


def test_an_objective_kind_override_drops_the_configs_objective_estimator(tmp_path):
    """The residual objective's own estimator goes with tune.objective.kind=data (whose
    u comes from the training's estimator); given as an override itself it is refused."""
    path = _config(tmp_path, TUNE.replace("{kind: data, samples: 2}", "{kind: residual, estimator: autograd}"))
    assert C.load(path).tune.objective.estimator == "autograd"
    config = C.load(path, ["tune.objective.kind=data"])
    assert "estimator" not in config.tune.objective.model_fields_set
    assert "estimator" not in config.resolved()["tune"]["objective"]
    assert C.validate(config.resolved()).to_yaml() == config.to_yaml()
    with pytest.raises(C.ConfigError, match=r"^tune\.objective\.estimator: has an effect only"):
        C.load(path, ["tune.objective.kind=data", "tune.objective.estimator=stein"])


@needs_deepxde
def test_a_deepxde_override_drops_the_configs_estimator_and_loss_kind(tmp_path):
    """A training study's ``trainer.backend=deepxde`` variant of a config with Stein and
    hybrid-loss settings: they go (the hybrid switch with the loss kind); given as
    overrides they are refused. The resolved config has no estimator and validates back."""
    path = _config(tmp_path, "equation: {name: poisson_two_body, dim: 3, constraint: soft}\n"
                             "estimator: {kind: stein, sigma: 0.05, samples: 4}\n"
                             "loss: {kind: hybrid, switch: auto, window: 10, then: unbiased1, boundary_points: 8}\n"
                             "trainer: {steps: 100, schedule: constant}\n")
    config = C.load(path, ["trainer.backend=deepxde"])
    assert config.estimator.model_fields_set == set() and config.loss.model_fields_set == {"boundary_points"}
    resolved = config.resolved()
    assert "estimator" not in resolved and resolved["loss"]["kind"] == "biased"
    assert C.validate(resolved).to_yaml() == config.to_yaml()
    with pytest.raises(C.ConfigError, match=re.escape("estimator.samples: has no effect with trainer.backend")):
        C.load(path, ["trainer.backend=deepxde", "estimator.samples=8"])
    assert C.load(path, ["trainer.backend=deepxde", "loss.kind=biased"]).loss.kind == "biased"


@needs_deepxde
@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_a_deepxde_override_is_accepted_on_every_shipped_config(name):
    """`trainer.backend=deepxde` was refused on all 15 shipped configs ("trainer.schedule =
    'linear': not supported by trainer.backend: deepxde"): the config's settings DeepXDE
    cannot honour (schedule and its gamma, a hybrid loss) go with the override, as its
    estimator settings did; given as overrides they are still refused."""
    path = Path(__file__).parents[1] / "configs" / name
    config = C.load(path, ["trainer.backend=deepxde"])
    assert config.trainer.schedule == "constant" and config.loss.kind == "biased"
    with pytest.raises(C.ConfigError, match=r"trainer\.schedule = 'linear': not supported by trainer\.backend"):
        C.load(path, ["trainer.backend=deepxde", "trainer.schedule=linear"])
