"""``tune.options`` are a hypergradient method's constructor arguments: the search
baselines (random, optuna) and joint fitting take none, so options given to them are
refused (they were silently ignored), and a second phase's options are checked too."""

from __future__ import annotations

import pytest

from pinnlab import config as configuration
from pinnlab.cli import main
from pinnlab.tuning.run import check_method
from pinnlab.tuning.setup import build_tuning

from .micro_configs import JOINT_MU as COEFFICIENT

WEIGHT = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
estimator: {samples: 2, eval_samples: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4, schedule: constant}
data: {source: synthetic, points: 10, noise: 0.01}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 2}
  outer_steps: 2
  horizon: 2
"""
CONFIGS = {"random": WEIGHT, "optuna": WEIGHT, "joint": COEFFICIENT}


def _config(tmp_path, method):
    path = tmp_path / f"{method}.yaml"
    path.write_text(CONFIGS[method])
    return path


@pytest.mark.parametrize("method", ["random", "optuna", "joint"])
def test_options_of_a_method_without_any_are_refused_in_one_line(tmp_path, capsys, method):
    """``tune.method=random tune.options.bogus=1 tune.options.num_directions=7`` exited 0."""
    out = tmp_path / "t.h5"
    code = main(["tune", str(_config(tmp_path, method)), f"tune.method={method}", "tune.options.bogus=1",
                 "tune.options.num_directions=7", "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"tune.options: tune.method = {method!r} takes no options" in err[0], err
    assert "bogus" in err[0] and "num_directions" in err[0] and "would be ignored" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("method", ["random", "optuna", "joint"])
def test_a_method_without_options_is_accepted_with_none(tmp_path, method):
    setup = build_tuning(configuration.load(_config(tmp_path, method), [f"tune.method={method}", "tune.options={}"]))
    check_method(setup)


def test_the_configs_own_options_never_reach_a_search(tmp_path):
    """The config's fg2u options do not silently carry over to a search: an override of
    the method drops them (config.apply_overrides), and a config file that itself pairs
    a search with options is refused."""
    path = _config(tmp_path, "random")
    check_method(build_tuning(configuration.load(path, ["tune.method=random"])))
    path.write_text(path.read_text().replace("method: fg2u", "method: random"))
    with pytest.raises(configuration.ConfigError, match=r"^tune\.options: .*num_directions would be ignored"):
        check_method(build_tuning(configuration.load(path)))


def test_the_second_phase_options_are_checked(tmp_path):
    """A second (hypergradient) phase's options are its method's constructor arguments;
    a second phase may not be a search at all."""
    path = _config(tmp_path, "random")
    good = build_tuning(configuration.load(path, ["tune.then={method: rgu, after: 1}"]))
    check_method(good)
    bad = build_tuning(configuration.load(path, ["tune.then={method: rgu, after: 1, options: {bogus: 1}}"]))
    with pytest.raises(configuration.ConfigError, match=r"^tune\.then\.options: tune\.then\.method = 'rgu'"):
        check_method(bad)
    search = build_tuning(configuration.load(path, ["tune.then={method: random, after: 1, options: {bogus: 1}}"]))
    with pytest.raises(configuration.ConfigError, match="two-phase schedule needs hypergradient methods"):
        check_method(search)
