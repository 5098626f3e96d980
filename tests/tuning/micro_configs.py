"""Micro tuning configs (width-4 networks, two-step horizons) for the tuning tests that
check settings, records and refusals rather than what the tuning reaches."""

WEIGHT_FG2U = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared, eval_samples: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 4, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10, dtype: float64}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 2}
  outer_steps: 3
  horizon: 2
"""
"""fg2u tuning a soft Poisson problem's boundary weight against synthetic data."""

JOINT_MU = """\
equation: {name: fokker_planck_aniso, dim: 2, seed: 0}
model: {width: 4, depth: 2}
estimator: {samples: 2, eval_samples: 2}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4, schedule: constant}
data: {source: synthetic, points: 10, noise: 0.01}
tune:
  method: joint
  tunables: {coefficients.mu: {init: 0.0}}
  objective: {kind: data, samples: 2}
  outer_steps: 2
  horizon: 2
"""
"""Joint fitting of fokker_planck_aniso's drift μ to synthetic data."""
