"""README claims checked against the code (audit of the README's behavioural statements).

Each test quotes the README passage it pins. Only claims that no other test pinned are
here; all are config- or setup-level (no training), so the file runs in a few seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pinnlab import config as C
from pinnlab.bilevel.parameterization import Identity, Log, Logit
from pinnlab.sizes import memory_moments
from pinnlab.tuning.run import check_method
from pinnlab.tuning.setup import build_tuning, make_tunables

ROOT = Path(__file__).resolve().parents[1]

TUNE_YAML = """\
equation: {name: allen_cahn_two_body, dim: 4, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.02, samples: 8, noise: shared}
loss: {kind: hybrid, switch_step: 2, weights: {residual: 3.0}}
trainer: {steps: 5, lr: 2.0e-3, schedule: constant, batch_size: 8, eval_every: 5, test_points: 20}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0}
tune:
  method: METHOD
  tunables: TUNABLES
  objective: {kind: data}
  outer_steps: 2
  horizon: 2
EXTRA
"""


def _tune_config(tmp_path, method: str, tunables: str, extra: str = "", overrides=()):
    path = tmp_path / "tune.yaml"
    path.write_text(TUNE_YAML.replace("METHOD", method).replace("TUNABLES", tunables).replace("EXTRA", extra))
    return C.load(path, list(overrides))


def _checked(config):
    """What `pinnlab tune` checks of the method against the built problem, before any work."""
    check_method(build_tuning(config))
    return config


def _tunables(config):
    problem, kwargs = C.build(config)
    tunables, _ = make_tunables(config, problem, "cpu", kwargs["dtype"])
    return tunables


def test_the_readme_memory_example_needs_at_least_2_37_pib():
    """README: "`trainer.batch_size=1000000000` on `configs/allen_cahn_two_body.yaml` needs
    at least 2.37 PiB": the lower bound of its largest moment (the estimate, not the machine
    it is compared with; the refusal itself is tests/test_config_sizes.py's). (405 TiB when a
    training step was counted one noise group; its unbiased2 phase draws 6 at u³.)"""
    config = C.load(ROOT / "configs/allen_cahn_two_body.yaml", ["trainer.batch_size=1000000000"])
    moments = memory_moments(config)  # (what C.build compares with the machine's memory)
    need = max(sum(t.nbytes for t in tensors) for tensors in moments.values())
    assert 2.365 * 2**50 <= need < 2.375 * 2**50


@pytest.mark.parametrize("kind, expected", [
    ("lra", {"alpha": 0.1, "every": 10}),
    ("relobralo", {"alpha": 0.95, "lookback": 0.99, "temperature": 1.0}),
])
def test_weighting_options_default_to_the_readme_values(kind, expected):
    """README, Configs: "`weighting_options` (LRA: `alpha` 0.1, `every` 10; ReLoBRaLo:
    `alpha` 0.95, `lookback` 0.99, `temperature` 1)"."""
    config = C.load(ROOT / "configs/quickstart.yaml", [f"loss.weighting={kind}", "equation.dim=4"])
    weighting = C.make_weighting(config.loss)
    assert {key: getattr(weighting, key) for key in expected} == expected


def test_random_search_draws_from_the_readme_default_ranges(tmp_path):
    """README: each tunable is drawn "by default log-uniformly from [1e-3, 1e3] for a loss
    weight, [1e-3, 1] for σ and [1e-5, 1e-1] for lr, and uniformly from [0, 1] for the mix
    and from init ± 2 for a coefficient"."""
    config = _tune_config(tmp_path, "random",
                          "{weights.residual: {}, sigma: {}, lr: {}, mix: {}, coefficients.c: {}}")
    tunables = _tunables(config)
    ranges = {name: (t.low, t.high) for name, t in tunables.items()}
    assert ranges == {"weights.residual": (1e-3, 1e3), "sigma": (1e-3, 1.0), "lr": (1e-5, 1e-1),
                      "mix": (0.0, 1.0), "coefficients.c": (-2.0, 2.0)}


def test_tunables_start_where_the_readme_says_with_its_transforms(tmp_path):
    """README: "Each tunable has a transform (`log` for positive values, `logit` with
    `low`/`high` for the mix, `identity` for coefficients) and an `init` (default: the
    config's own value; for `mix` 0.5 and for a coefficient 0)"."""
    config = _tune_config(tmp_path, "rgu",
                          "{weights.residual: {}, sigma: {}, lr: {}, mix: {}, coefficients.c: {}}")
    tunables = _tunables(config)
    inits = {name: t.init.tolist() for name, t in tunables.items()}
    assert inits["weights.residual"] == pytest.approx(3.0)
    assert inits["sigma"] == pytest.approx(0.02)
    assert inits["lr"] == pytest.approx(2e-3)
    assert inits["mix"] == 0.5
    assert inits["coefficients.c"] == [0.0] * 3  # allen_cahn_two_body at d = 4: c has d − 1 entries
    kinds = {name: type(t.transform) for name, t in tunables.items()}
    assert kinds == {"weights.residual": Log, "sigma": Log, "lr": Log, "mix": Logit, "coefficients.c": Identity}


def test_a_method_override_drops_what_the_configs_method_set(tmp_path):
    """README: "`tune.seed` fg2u or zo_fg2u ... (an override to another method drops it)";
    "a tunable's `init` a hypergradient method ... (an override `tune.method=random` drops
    the config's inits)"; "`tune.outer_lr` ... (an override `tune.method=random` drops the
    config's own)"; a log tunable's "`low`/`high` a search (an override `tune.method=rgu`
    drops them)"."""
    seeded = _tune_config(tmp_path, "fg2u", "{weights.residual: {init: 2.0}}", "  seed: 3\n  outer_lr: 0.5",
                          ["tune.method=rgu"])
    assert seeded.tune.seed == 0
    assert seeded.tune.tunables["weights.residual"].init == 2.0  # rgu keeps the init
    searched = _tune_config(tmp_path, "fg2u", "{weights.residual: {init: 2.0}}", "  outer_lr: 0.5",
                            ["tune.method=random"])
    assert searched.tune.tunables["weights.residual"].init is None
    assert searched.tune.outer_lr == C.load(ROOT / "configs/tuning/poisson_boundary_weight.yaml",
                                            ["tune.method=random"]).tune.outer_lr  # the default, not 0.5
    bounded = _tune_config(tmp_path, "random", "{weights.residual: {low: 1.0e-2, high: 10.0}}", "",
                           ["tune.method=rgu"])
    spec = bounded.tune.tunables["weights.residual"]
    assert (spec.low, spec.high) == (None, None)


def test_a_method_override_keeps_each_setting_the_new_method_uses(tmp_path):
    """The same overrides keep what still acts: a seed under zo_fg2u, low/high under optuna."""
    seeded = _tune_config(tmp_path, "fg2u", "{weights.residual: {}}", "  seed: 3", ["tune.method=zo_fg2u"])
    assert seeded.tune.seed == 3
    bounded = _tune_config(tmp_path, "random", "{weights.residual: {low: 1.0e-2, high: 10.0}}", "",
                           ["tune.method=optuna"])
    spec = bounded.tune.tunables["weights.residual"]
    assert (spec.low, spec.high) == (1e-2, 10.0)


@pytest.mark.parametrize("method", ["darts", "penalty", "f2sa", "hessian_free", "neumann", "cg"])
def test_a_tuned_lr_is_refused_with_methods_that_do_not_unroll(tmp_path, method):
    """README: "a tuned `lr` one that unrolls the steps: fg2u, fgu, rgu, trgu or zo_fg2u, not
    the implicit ones, darts, penalty or f2sa, whose hypergradient of it is 0"."""
    with pytest.raises(C.ConfigError, match=r"^tune\.tunables\.lr: .*hypergradient is 0"):
        _checked(_tune_config(tmp_path, method, "{lr: {}}", "", ["loss.kind=biased"]))


@pytest.mark.parametrize("method", ["fg2u", "fgu", "rgu", "trgu", "zo_fg2u"])
def test_a_tuned_lr_is_accepted_with_methods_that_unroll(tmp_path, method):
    extra = "  options: {steps: 1}" if method == "trgu" else ""
    config = _checked(_tune_config(tmp_path, method, "{lr: {}}", extra, ["loss.kind=biased"]))
    assert math.isclose(_tunables(config)["lr"].init.item(), 2e-3, rel_tol=1e-6)


def test_accumulate_needs_random_directions_over_several_tuned_values(tmp_path):
    """README: "`accumulate` > 1 one whose estimates at a point differ: random directions
    of fg2u or zo_fg2u, not with one tuned value and ±1 directions"."""
    one = "{weights.residual: {}}"
    several = "{sigma: {per_coordinate: true}}"
    for method, tunables, accepted in [("fg2u", one, False), ("zo_fg2u", one, False), ("rgu", several, False),
                                       ("fg2u", several, True), ("zo_fg2u", several, True)]:
        if accepted:
            assert _checked(_tune_config(tmp_path, method, tunables, "  accumulate: 2")).tune.accumulate == 2
        else:
            with pytest.raises(C.ConfigError, match=r"^tune\.accumulate = 2: "):
                _checked(_tune_config(tmp_path, method, tunables, "  accumulate: 2"))
