"""Tuning setup: the reference objective is ‖u − u*‖²/‖u*‖² (not divided by N); the
collocation-weight network is ≡ 1 at initialisation."""
import torch

from pinnlab import config as configuration
from pinnlab._seeding import make_generator
from pinnlab.solvers.evaluate import predict, relative_errors
from pinnlab.tuning.setup import build_tuning

BASE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 16, depth: 3}
estimator: {kind: autograd}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 4, lr: 1.0e-2, schedule: constant, batch_size: 16, dtype: float64}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: TUNABLES
  objective: {kind: reference, points: 64}
  outer_steps: 1
  horizon: 2
"""


def _setup(tmp_path, tunables):
    path = tmp_path / "tune.yaml"
    path.write_text(BASE.replace("TUNABLES", tunables))
    return build_tuning(configuration.load(path))


def test_reference_objective_is_the_squared_relative_l2_error(tmp_path):
    setup = _setup(tmp_path, "{weights.boundary: {}}")
    theta = setup.init[0]
    with torch.no_grad():
        value = float(setup.outer_loss(theta, setup.phi0))
    eq = setup.problem.equation
    spec = setup.config.tune.objective
    x = eq.sample_test(spec.points, generator=make_generator(spec.seed, "outer/points"), dtype=torch.float64)
    exact = eq.exact_values(x)
    u = predict(setup.problem, theta, x)  # autograd: the raw network, deterministic
    expected = relative_errors(u, exact).rel_l2 ** 2
    assert 0 < expected
    assert abs(value / expected - 1) < 1e-10, (value, expected)


def test_collocation_weight_is_one_at_initialisation(tmp_path):
    setup = _setup(tmp_path, "{collocation_weight: {width: 8, depth: 2}}")
    hp = setup.to_hyperparams(setup.phi0)
    x = torch.randn(50, setup.problem.equation.input_dim, dtype=torch.float64)
    torch.testing.assert_close(hp["collocation_weight"](x), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-15)
