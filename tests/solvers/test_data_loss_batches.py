"""DataLoss with a random subset of observations keeps each x with its own y."""
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import Pointwise
from pinnlab.solvers import DataLoss, PINNProblem

F64 = torch.float64


def test_a_data_batch_of_exact_observations_has_zero_misfit():
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    x_obs = eq.sample_collocation(40, generator=make_generator(0, "obs"), dtype=F64)
    data = DataLoss(x_obs, eq.exact(x_obs), batch_size=7)
    problem = PINNProblem(eq, Pointwise(eq.exact), SteinAntithetic(sigma=1e-3, num_samples=8), Biased(),
                          batch_size=16, extra_terms=(data,))
    for step in range(3):
        _, metrics = problem.objective({"dummy": torch.zeros(1, dtype=F64)}, {}, step, 0)
        assert float(metrics["loss_data"]) < 1e-8, (step, float(metrics["loss_data"]))
