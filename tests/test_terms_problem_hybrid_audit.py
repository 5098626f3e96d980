"""Mutation audit of the hybrid switch, the extra loss terms and PINNProblem.

Each test pins a behaviour a plausible slip left unnoticed by the other tests: a renamed
data term drawing its subset from the default name's stream, an `(M, 1)` value column
broadcast against `(M,)` predictions, metrics holding the step's graph, ``init_params``
sharing storage with the network, the plateau switch keeping a raw loss as its best
average, and a problem built without asking its estimator and loss to validate."""
from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased, Unbiased2
from pinnlab.nets import MLP, Pointwise
from pinnlab.solvers import DataLoss, PINNProblem

F64 = torch.float64


def _data_problem(*terms):
    """u = 0 on a soft-constraint Poisson problem (identity ansatz: u = u_σ = 0)."""
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    net = Pointwise(lambda z: 0.0 * z.sum(-1))
    return PINNProblem(eq, net, SteinAntithetic(sigma=0.2, num_samples=4), Biased(),
                       batch_size=8, extra_terms=terms)


def _observations(m=10):
    x = torch.rand(m, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.5
    return x, torch.arange(1.0, m + 1.0, dtype=F64)


def test_a_renamed_data_term_draws_its_subset_from_its_own_stream():
    """u = 0: the misfit of DataLoss(name="obs") is mean(y_i²) over the first batch_size
    indices of the permutation from (seed, "obs/subset", step), not "data/subset"."""
    x, y = _observations()
    data = DataLoss(x, y, name="obs", batch_size=3)
    _, metrics = _data_problem(data).objective({"dummy": torch.zeros(1, dtype=F64)}, {}, 4, 2)
    index = torch.randperm(10, generator=make_generator(2, "obs/subset", 4))[:3]
    other = torch.randperm(10, generator=make_generator(2, "data/subset", 4))[:3]
    assert float((y[index] ** 2).mean()) != float((y[other] ** 2).mean())  # the test can tell
    assert float(metrics["loss_obs"]) == pytest.approx(float((y[index] ** 2).mean()), rel=1e-12)


def test_observed_values_as_a_column_are_refused():
    """values of shape (M, 1) would broadcast against the (M,) predictions to (M, M),
    a misfit of every prediction against every observation."""
    x, y = _observations(4)
    with pytest.raises(ValueError, match=r"values \(M,\), got \(4, 4\) and \(4, 1\)"):
        DataLoss(x, y[:, None])


def test_the_objective_metrics_hold_no_graph():
    """The reported loss and term values are detached: a metrics row kept for logging
    does not keep the step's autograd graph alive."""
    x, y = _observations(5)
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    net = MLP(4, width=4, depth=2, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(eq, net, SteinAntithetic(sigma=0.1, num_samples=4), Biased(),
                          batch_size=4, extra_terms=(DataLoss(x, y),))
    params = {k: v.requires_grad_(True) for k, v in problem.init_params(dtype=F64).items()}
    total, metrics = problem.objective(params, {}, 0, 0)
    assert total.requires_grad and torch.equal(metrics["loss"], total.detach())
    assert not any(v.requires_grad for v in metrics.values()), sorted(k for k, v in metrics.items()
                                                                      if v.requires_grad)


def test_init_params_are_a_copy_of_the_network():
    """Updating the returned parameters in place (as an optimizer does) leaves the
    network's own parameters as they were, also at their own dtype and device."""
    net = MLP(4, width=4, depth=2, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(PoissonTwoBody(4, seed=1), net, SteinAntithetic(sigma=0.1, num_samples=4),
                          Biased(), batch_size=4)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    params = problem.init_params()
    for v in params.values():
        v.add_(1.0)
    for k, v in net.named_parameters():
        assert torch.equal(v.detach(), before[k]), k


def test_the_plateau_best_is_the_moving_average_and_progress_is_relative():
    """The best value is the best moving average, not a raw loss, and progress is
    relative to it: at a loss of 1e-3 then 0 (window 2) the average 5e-4 beats 1e-3 by
    more than 1 % and becomes the best; at a loss of 1000 an average of 995
    ((1000 + 990)/2) is no progress (it needs < 990), so the run switches `window`
    steps after step 0."""
    from pinnlab.losses import SwitchOnPlateau

    policy = SwitchOnPlateau(window=2, tolerance=0.01)
    state = policy.init()
    for step, loss in enumerate([1e-3, 0.0]):
        state = policy.observe(state, step, loss)
    assert (state.best, state.best_step, state.switched_at) == (5e-4, 1, None)
    state = policy.init()
    for step, loss in enumerate([1000.0, 990.0, 995.0]):
        state = policy.observe(state, step, loss)
    assert (state.ema, state.best, state.best_step, state.switched_at) == (995.0, 1000.0, 0, 3)


def test_the_problem_asks_its_estimator_and_loss_whether_they_fit_the_equation():
    """Built with an estimator or a loss that cannot serve the equation, the problem
    refuses at once (not at the first step, or never: Unbiased2 on Sine–Gordon's sin u
    would train a loss that is no unbiased estimate)."""
    from pinnlab.equations import NotUnbiasableError, SineGordonTwoBody
    from pinnlab.estimators import Autograd

    net = MLP(4, width=4, depth=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NotUnbiasableError, match="unbiased1"):
        PINNProblem(SineGordonTwoBody(4), net, Autograd(), Unbiased2(), batch_size=4)
    with pytest.raises(ValueError, match="has no time variable"):
        PINNProblem(PoissonTwoBody(4, seed=1), net,
                    SteinAntithetic(sigma=0.1, num_samples=4, time_smoothing="independent"), Biased(), batch_size=4)
