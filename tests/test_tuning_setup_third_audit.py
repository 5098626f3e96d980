"""Third mutation audit of pinnlab/tuning/setup.py: the collocation-weight network's hidden
layers drawn exactly from tune.seed's 'collocation_weight/init' stream (weights then biases,
each U(±1/√fan_in)), the reference and data objectives of a Stein-trained run smoothed with
the objective's own samples and each its own stream ('outer/reference', 'outer/data'), and
the mix's range refused just past [0, 1]."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.config import ConfigError
from pinnlab.estimators.base import Value

from .tuning.test_tuning_audit_edges import _setup


def test_the_collocation_networks_hidden_layers_are_tune_seeds_uniform_draws(tmp_path):
    """collocation_weight {width: 4, depth: 3} at tune.seed 5: one generator of seed 5's
    'collocation_weight'/'init' stream draws, in order, W₁ (4, d) and c₁ (4) from
    U(−1/√d, 1/√d), then W₂ (4, 4) and c₂ (4) from U(−1/2, 1/2) (biases too over the
    whole symmetric range); the output layer stays 0."""
    setup = _setup(tmp_path, "tune.method=fg2u", "tune.seed=5", "tune.tunables={collocation_weight: {width: 4, depth: 3}}")
    d = setup.problem.equation.input_dim
    assert d == 3  # (≠ width: the fan-in, not the fan-out, sets the bound)
    generator = make_generator(5, "collocation_weight", "init")
    expected = {}
    for index, fan_in in ((0, d), (2, 4)):
        bound = 1 / math.sqrt(fan_in)
        expected[f"{index}.weight"] = torch.empty(4, fan_in, dtype=torch.float64).uniform_(-bound, bound,
                                                                                          generator=generator)
        expected[f"{index}.bias"] = torch.empty(4, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
    phi = setup.phi0
    for key, value in expected.items():
        torch.testing.assert_close(phi[f"collocation_weight/{key}"], value, rtol=0, atol=0, msg=key)
    assert not phi["collocation_weight/4.weight"].any() and not phi["collocation_weight/4.bias"].any()


def test_a_stein_runs_reference_objective_smooths_with_the_objectives_samples_and_stream(tmp_path):
    """kind reference under Stein training {points: 16, samples: 3, seed: 2}: f = ‖u_σ − u*‖²/‖u*‖²
    at seed 2's 'outer/points', with u_σ the estimator's smoothed value at 3 samples whose
    noise comes from seed 2's own 'outer/reference' stream (not the data objective's
    'outer/data' one, nor the training's sample count)."""
    setup = _setup(tmp_path, "tune.objective={kind: reference, points: 16, samples: 3, seed: 2}")
    equation, theta = setup.problem.equation, setup.init[0]
    x = equation.sample_test(16, generator=make_generator(2, "outer/points"), dtype=torch.float64)
    exact = equation.exact_values(x)
    estimator = dataclasses.replace(setup.problem.estimator, num_samples=3)
    assert setup.problem.estimator.num_samples != 3

    def value_from(stream, est=estimator):
        smoothed = est.estimate(setup.problem.model(theta), x, [Value()],
                                generator=make_generator(2, stream), sigma=None)[0]
        u = equation.solution(x, smoothed, None)
        return float(((u - exact) ** 2).sum() / (exact ** 2).sum())

    with torch.no_grad():
        value = float(setup.outer_loss(theta, setup.phi0))
        expected = value_from("outer/reference")
        others = [value_from("outer/data"), value_from("outer/reference", setup.problem.estimator)]
    assert value == pytest.approx(expected, rel=1e-12)
    assert all(other != pytest.approx(expected, rel=1e-9) for other in others), (expected, others)


@pytest.mark.parametrize("bounds, accepted", [
    ("{low: 0.0, high: 1.0}", True), ("{low: 0.0, high: 1.01}", False), ("{low: -0.01, high: 1.0}", False),
])
def test_the_mixs_range_is_refused_just_past_zero_and_one(tmp_path, bounds, accepted):
    """A mix range of exactly [0, 1] is accepted; 1.01 or −0.01 past either end is refused,
    naming both bounds (not only a range as far off as high = 2)."""
    overrides = ["loss.kind=hybrid", "loss.switch_step=2", f"tune.tunables={{mix: {bounds}}}"]
    if accepted:
        mix = _setup(tmp_path, *overrides).tunables["mix"]
        assert (mix.low, mix.high) == (0.0, 1.0)
        return
    with pytest.raises(ConfigError) as err:
        _setup(tmp_path, *overrides)
    low, high = (float(v) for v in bounds.strip("{}").replace("low:", "").replace("high:", "").split(","))
    assert str(err.value) == f"tune.tunables.mix: the mix lies in [0, 1]; got low = {low}, high = {high}"


def test_a_stein_runs_data_objective_smooths_with_its_own_outer_data_stream(tmp_path):
    """kind data under Stein training {samples: 3, seed: 4}: f = mean((u_σ − y)²) at the
    observations, with u_σ drawn from seed 4's 'outer/data' stream (not the reference
    objective's 'outer/reference' one)."""
    setup = _setup(tmp_path, "tune.objective={kind: data, samples: 3, seed: 4}")
    equation, theta = setup.problem.equation, setup.init[0]
    x, y = setup.observations
    estimator = dataclasses.replace(setup.problem.estimator, num_samples=3)

    def value_from(stream):
        smoothed = estimator.estimate(setup.problem.model(theta), x, [Value()],
                                      generator=make_generator(4, stream), sigma=None)[0]
        return float(((equation.solution(x, smoothed, None) - y) ** 2).mean())

    with torch.no_grad():
        value = float(setup.outer_loss(theta, setup.phi0))
        expected, other = value_from("outer/data"), value_from("outer/reference")
    assert value == pytest.approx(expected, rel=1e-12)
    assert other != pytest.approx(expected, rel=1e-9), (expected, other)
