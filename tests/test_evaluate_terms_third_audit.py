"""Third mutation audit of evaluation and the extra loss terms.

Each test pins a behaviour a plausible slip left unnoticed by the other tests: relative
errors comparing a one-value prediction with N exact values by broadcasting, prediction
with a parameter-free network, the soft constraint's default batch of 100 points, a data
batch of every observation permuting them, and observation points that are not a matrix."""
from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import Pointwise
from pinnlab.solvers import ConstraintLoss, DataLoss, PINNProblem
from pinnlab.solvers.evaluate import predict, relative_errors

F64 = torch.float64


def _soft_problem(fn, *terms):
    """A soft-constraint Poisson problem in D = 4 (identity ansatz: u = u_σ) of ``fn``."""
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    return PINNProblem(eq, Pointwise(fn), SteinAntithetic(sigma=0.1, num_samples=4),
                       Biased(), batch_size=8, extra_terms=terms)


def test_relative_errors_refuse_one_prediction_against_several_exact_values():
    """A `(1,)` prediction against `(3,)` exact values has the same rank but another shape:
    broadcasting would compare the one value with every exact value and give a number."""
    with pytest.raises(ValueError, match=r"shape \(1,\) and exact values of shape \(3,\)"):
        relative_errors(torch.ones(1, dtype=F64), torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    with pytest.raises(ValueError, match="need one shape"):
        relative_errors(torch.ones(3, dtype=F64), torch.ones(1, dtype=F64))


def test_predict_takes_a_network_without_parameters():
    """Pointwise closed forms have no parameters: ``{}`` is a valid parameter dict and the
    points' own dtype is then the reference. A linear f is its own antithetic mean, so
    u = u_σ = f(x) = Σ x exactly."""
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    u = predict(_soft_problem(lambda z: z.sum(-1)), {}, x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(u, x.sum(-1), rtol=1e-12, atol=1e-12)


def test_the_soft_constraint_draws_100_boundary_points_by_default():
    """f = Σ z is its own antithetic mean, so u = Σ x: ConstraintLoss() is the mean of
    (Σ x − u*)² over 100 sphere points drawn from (seed, "boundary/points", step) in the
    parameters' dtype (u* vanishes there, so the points' own spread sets the value)."""
    problem = _soft_problem(lambda z: z.sum(-1), ConstraintLoss())
    _, metrics = problem.objective({"dummy": torch.zeros(1, dtype=F64)}, {}, 3, 7)
    eq = problem.equation
    x = eq.sample_boundary(100, generator=make_generator(7, "boundary/points", 3), dtype=F64)
    expected = ((x.sum(-1) - eq.boundary_value(x)) ** 2).mean()
    assert float(metrics["loss_boundary"]) == pytest.approx(float(expected), rel=1e-12)


def test_a_data_batch_of_all_observations_is_the_full_term_in_order():
    """batch_size = M takes every observation in its given order, as batch_size=None:
    with independent noise (one draw per point, in point order) and a non-linear f a
    permutation would pair the points with other draws and change the value."""
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5  # (inside the unit ball)
    y = torch.arange(6.0, dtype=F64)
    square = lambda z: (z ** 2).sum(-1)  # noqa: E731
    params = {"dummy": torch.zeros(1, dtype=F64)}
    _, full = _soft_problem(square, DataLoss(x, y)).objective(params, {}, 2, 3)
    _, batch = _soft_problem(square, DataLoss(x, y, batch_size=6)).objective(params, {}, 2, 3)
    assert float(batch["loss_data"]) == float(full["loss_data"])


@pytest.mark.parametrize("shape", [(3,), (3, 4, 1)], ids=["points-as-a-vector", "a-trailing-axis"])
def test_observation_points_must_be_a_matrix(shape):
    """Inputs of 1 or 3 axes whose first axis matches the values are refused at
    construction, by name: a `(M, D, 1)` array would pass the column-count check."""
    with pytest.raises(ValueError, match=r"DataLoss needs inputs \(M, D\) and values \(M,\)"):
        DataLoss(torch.zeros(shape, dtype=F64), torch.zeros(3, dtype=F64))
