"""DataLoss in closed form: a subset of exactly ``batch_size`` observations drawn from
(seed, "data/subset", step), the run's σ hyperparameter, non-finite inputs refused."""
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import Pointwise
from pinnlab.solvers import DataLoss, PINNProblem

F64 = torch.float64
PARAMS = {"dummy": torch.zeros(1, dtype=F64)}


def _problem(data, sigma=1e-3, model=None):
    eq = PoissonTwoBody(4, seed=1, constraint="soft")  # identity ansatz: u = u_σ
    return PINNProblem(eq, Pointwise(model or (lambda z: 0.0 * z.sum(-1))),
                       SteinAntithetic(sigma=sigma, num_samples=4), Biased(), batch_size=8, extra_terms=(data,))


def test_a_data_batch_is_batch_size_observations_of_the_subset_stream():
    """u = 0: the misfit is mean(y_i²) over the first batch_size indices of the
    permutation drawn from (seed, "data/subset", step)."""
    x = torch.rand(10, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5
    y = torch.arange(1.0, 11.0, dtype=F64)
    data = DataLoss(x, y, batch_size=3)
    _, metrics = _problem(data).objective(PARAMS, {}, 4, 2)
    index = torch.randperm(10, generator=make_generator(2, "data/subset", 4))[:3]
    assert float(metrics["loss_data"]) == pytest.approx(float((y[index] ** 2).mean()), rel=1e-12)


def test_the_data_term_smooths_at_the_sigma_hyperparameter():
    """hyperparams["sigma"] reaches the term's estimate as it reaches the residual's: u_σ of
    |z|² is |x|² + σ²·D in expectation, so the estimator's own σ would give another value."""
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5
    data = DataLoss(x, torch.zeros(6, dtype=F64))
    square = lambda z: (z ** 2).sum(-1)  # noqa: E731
    _, at_hp = _problem(data, sigma=1e-3, model=square).objective(PARAMS, {"sigma": 0.3}, 1, 0)
    _, own = _problem(data, sigma=0.3, model=square).objective(PARAMS, {}, 1, 0)
    _, small = _problem(data, sigma=1e-3, model=square).objective(PARAMS, {}, 1, 0)
    assert float(at_hp["loss_data"]) == float(own["loss_data"]) != float(small["loss_data"])


@pytest.mark.parametrize("where", ["inputs", "values"])
def test_non_finite_observations_are_refused(where):
    x = torch.zeros(3, 4, dtype=F64)
    y = torch.zeros(3, dtype=F64)
    (x if where == "inputs" else y).view(-1)[1] = float("nan")
    with pytest.raises(ValueError, match="1 of 3 observations are not finite"):
        DataLoss(x, y)


def test_the_data_term_reads_u_at_the_coefficient_hyperparameters():
    """An inverse problem's data misfit uses u = A·u_σ + B at the current coefficient
    estimate: at t = T the HJB-Rosenbrock ansatz is u = g_c(x), so observations of g at
    overridden coefficients have zero misfit there, and a positive one at the true ones."""
    from pinnlab.equations import HJBRosenbrock

    eq = HJBRosenbrock(3, seed=0)
    z = torch.rand(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = torch.cat([z, torch.full((5, 1), eq.horizon, dtype=F64)], dim=1)
    other = {k: 2.0 * v + 0.5 for k, v in eq.coefficients.items()}
    data = DataLoss(x, eq.terminal_value(z, other))
    p = PINNProblem(eq, Pointwise(lambda q: 0.0 * q.sum(-1)), SteinAntithetic(sigma=1e-3, num_samples=4),
                    Biased(), batch_size=8, extra_terms=(data,))
    _, at_other = p.objective(PARAMS, {"coefficients": other}, 0, 0)
    _, at_true = p.objective(PARAMS, {}, 0, 0)
    assert float(at_other["loss_data"]) < 1e-20 < float(at_true["loss_data"])
