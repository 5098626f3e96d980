"""More configs ``pinnlab tune`` refuses before any work, each with its one line (exit 2
at the command line; ConfigError from build_tuning/check_method here): every refusal of
setup.make_tunables and run.check_method not reached by the BAD list of test_tuning.py
(killed mutants: each condition made False or loosened by one comparison)."""

from __future__ import annotations

import pytest

from pinnlab import config as configuration
from pinnlab.cli import main
from pinnlab.tuning.run import check_method
from pinnlab.tuning.setup import build_tuning

from .micro_configs import WEIGHT_FG2U as TINY

INVERSE = """\
equation: {name: fokker_planck_aniso, dim: 2, seed: 0}
model: {width: 4, depth: 2}
estimator: {samples: 2, eval_samples: 2}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4, schedule: constant}
tune:
  method: joint
  tunables: {coefficients.mu: {init: 0.0}}
  objective: {kind: residual, points: 8, samples: 2}
  outer_steps: 2
  horizon: 2
"""

REFUSED = [
    # (low/high bound only a search's range or a logit transform: elsewhere they are refused as no-ops)
    (TINY, "tune.method=random; tune.options={}; tune.tunables={weights.boundary: {low: 1.0, high: 1.0}}", "low = 1.0 must be below high = 1.0"),
    (TINY, "tune.method=random; tune.options={}; tune.tunables={weights.boundary: {low: 0.0}}", "tune.tunables.weights.boundary.low = 0.0: "
     "weights.boundary is positive (log scale); low must be > 0"),
    (TINY, "loss.kind=hybrid; loss.switch_step=2; tune.tunables={mix: {high: 2.0}}",
     "tune.tunables.mix: the mix lies in [0, 1]; got low = 0.0, high = 2.0"),
    (TINY, "tune.tunables={weights.boundary: {per_coordinate: true}}",
     "tune.tunables.weights.boundary.per_coordinate: applies to sigma only"),
    (TINY, "tune.tunables={weights.boundary: {width: 8}}",
     "tune.tunables.weights.boundary: width/depth apply to collocation_weight only"),
    (TINY.replace("poisson_two_body, dim: 3, seed: 1, constraint: soft", "fokker_planck_aniso, dim: 3, seed: 0")
     .replace("weights: {boundary: 1.0e-2}", "weights: {}").replace("sigma: 0.05,", "sigma: 0.05, time_sigma: 0.1,"),
     "tune.tunables={sigma: {}}", "estimator.time_sigma gives time its own σ"),
    (TINY, "tune.final_init=continue; tune.warm_start=false",
     "tune.final_init = 'continue': needs tune.warm_start: true"),
    (TINY, "tune.method=optuna; tune.options={}; tune.tunables={collocation_weight: {}}",
     "tune.method = 'optuna': cannot search over the collocation_weight network's parameters"),
    (INVERSE, "", "tune.method = 'joint': needs tune.objective.kind: data"),
]


@pytest.mark.parametrize("text, override, expected", REFUSED, ids=[r[2][:40] for r in REFUSED])
def test_refused_before_any_work(tmp_path, text, override, expected):
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    overrides = override.split("; ") if override else []
    with pytest.raises(configuration.ConfigError) as err:
        check_method(build_tuning(configuration.load(path, overrides)))
    assert expected in str(err.value), str(err.value)


def test_deepxde_tuning_refuses_continuing_from_the_tuned_network(tmp_path):
    """DeepXDE's black-box trainings leave no θ to continue from."""
    pytest.importorskip("deepxde")
    from pathlib import Path

    config = Path(__file__).parents[2] / "configs" / "tuning" / "deepxde_loss_weights.yaml"
    with pytest.raises(configuration.ConfigError, match="tune.final_init = 'continue': not available for DeepXDE"):
        check_method(build_tuning(configuration.load(config, ["model.width=4", "tune.final_init=continue"])))


ZERO = [
    ("tune.method=random; tune.options={}; tune.trial_steps=0", "tune.trial_steps = 0: input should be greater than or equal to 1"),
    ("tune.final_steps=0", "tune.final_steps = 0: input should be greater than or equal to 1"),
    ("tune.budget_seconds=0", "tune.budget_seconds = 0: input should be greater than 0"),
    ("tune.outer_lr=0", "tune.outer_lr = 0: input should be greater than 0"),
    ("tune.accumulate=0", "tune.accumulate = 0: input should be greater than or equal to 1"),
    ("tune.outer_steps=0", "tune.outer_steps = 0: input should be greater than or equal to 1"),
    ("tune.then={method: rgu, after: 1, outer_lr: 0}", "tune.then.outer_lr = 0: input should be greater than 0"),
    ("tune.objective.points=0", "tune.objective.points = 0: input should be greater than or equal to 1"),
    ("tune.objective.samples=0", "tune.objective.samples = 0: input should be greater than or equal to 1"),
]


@pytest.mark.parametrize("override, expected", ZERO, ids=[z[1].split(":")[0] for z in ZERO])
def test_a_zero_count_rate_or_budget_is_refused_when_loaded(tmp_path, override, expected):
    """0 trial or final steps fell back to the defaults (``or``), a 0 s budget ran one
    unit, a 0 outer lr never moved φ, and 0 outer steps, points or samples failed later:
    each is refused when the config is read, naming the key."""
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    with pytest.raises(configuration.ConfigError) as err:
        configuration.load(path, override.split("; "))
    assert str(err.value).startswith(expected), str(err.value)


def test_a_refusal_is_one_line_and_exit_2(tmp_path, capsys):
    """At the command line, the same refusal: exit 2, one line, no result file."""
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    out = tmp_path / "t.h5"
    code = main(["tune", str(path), "tune.final_init=continue", "tune.warm_start=false", "-o", str(out),
                 "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs tune.warm_start: true" in err[0], err
    assert not out.exists()


def test_optuna_not_installed_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    """Without optuna, `tune.method=optuna` is refused when the config is read (as
    `trainer.backend: deepxde` without deepxde): exit 2, one line naming the extra, no
    result file. The check sat in the search itself, after the set-up, and reached the
    command as a traceback with exit 1."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    out = tmp_path / "t.h5"
    code = main(["tune", str(path), "tune.method=optuna", "tune.options={}", "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "tune.method = 'optuna': needs the optional dependency: pip install 'pinnlab[optuna]'" in err[0]
    assert not out.exists() and not list(tmp_path.glob("t.h5*"))


@pytest.mark.parametrize("method, option, allowed", [
    ("fg2u", "bogus", "(allowed: num_directions, kind, chunk_size, distributed, tangents)"),
    ("rgu", "steps", "(it takes none)"),
    ("neumann", "iters", "(allowed: iterations, alpha)"),
])
def test_an_unknown_method_option_names_the_methods_options(tmp_path, capsys, method, option, allowed):
    """`tune.options.bogus=1` said only `ForwardGradientUnroll.__init__() got an unexpected
    keyword argument 'bogus'` (Python's words, no list of what the method takes); now the
    line names the option and the method's options, exit 2."""
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    code = main(["tune", str(path), f"tune.method={method}", "tune.options={}", f"tune.options.{option}=1",
                 "-o", str(tmp_path / "t.h5"), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"tune.method = {method!r}: unknown option {option!r} of {method} {allowed}" in err[0], err[0]
