"""PINNProblem.objective's hyperparameter refusals and defaults, and term_gradients'
``names``: a learning rate of 0, a mix without a Hybrid loss, a Hybrid without a mix."""
import pytest
import torch

from pinnlab.losses import Biased, Hybrid, SwitchAt
from pinnlab.solvers import SGD, make_train_step
from pinnlab.solvers.terms import DataLoss

from .small_problems import F64, problem, stein


@pytest.mark.parametrize("lr", [0.0, -1e-3])
def test_a_learning_rate_that_is_not_positive_is_refused(lr):
    """lr 0 trains nothing, a negative one ascends the loss."""
    p = problem()
    with pytest.raises(ValueError, match=r"lr must be finite and > 0"):
        p.objective(p.init_params(dtype=F64), {"lr": lr}, 0, 0)


def test_a_mix_without_a_hybrid_loss_is_refused():
    p = problem(loss=Biased())
    with pytest.raises(ValueError, match="needs a Hybrid loss"):
        p.objective(p.init_params(dtype=F64), {"mix": 0.5}, 0, 0)


def test_a_hybrid_without_a_mix_trains_its_first_loss():
    """No ``mix`` hyperparameter: the blend weight is 0 (the biased loss), not 1."""
    hybrid = problem(estimator=stein(), loss=Hybrid(switch=SwitchAt(0)))
    biased = problem(estimator=stein(), loss=Biased())
    params = hybrid.init_params(dtype=F64)
    a, metrics = hybrid.objective(params, {}, 1, 0)
    b, _ = biased.objective(params, {}, 1, 0)
    assert float(metrics["mix"]) == 0.0
    assert torch.equal(a, b)


def test_term_gradients_returns_the_named_terms_only():
    x_obs = torch.rand(5, 4, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.5
    p = problem(extra_terms=(DataLoss(x_obs, torch.zeros(5, dtype=F64)),))
    params = p.init_params(dtype=F64)
    step = make_train_step(p, SGD(lr=0.1))
    everything = step.term_gradients(params, {}, 0)
    only = step.term_gradients(params, {}, 0, names=["data"])
    assert sorted(everything) == ["data", "residual"] and list(only) == ["data"]
    for k in params:
        assert torch.equal(only["data"][k], everything["data"][k])


def test_a_chunk_beyond_the_last_is_refused_clearly():
    p = problem(batch=12, chunks=3)
    with pytest.raises(ValueError, match=r"chunk must be None or in 0\.\.2"):
        p.objective(p.init_params(dtype=F64), {}, 0, 0, 3)


def test_a_constraint_term_draws_from_its_own_named_streams(monkeypatch):
    """ConstraintLoss("initial") draws its points from (seed, "initial/points", step) and
    its smoothing noise from (seed, "initial/noise", step): two constraint terms, or a
    term and the residual, never share draws."""
    from pinnlab._seeding import derive_seed
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers.terms import ConstraintLoss

    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    p = problem(estimator=stein(), eq=eq, extra_terms=(ConstraintLoss("initial", batch_size=5),))
    points, noise = [], []
    real_boundary, real_estimate = type(eq).sample_boundary, type(p.estimator).estimate

    def boundary_spy(self, n, *, generator, **kw):
        points.append(generator.initial_seed())
        return real_boundary(self, n, generator=generator, **kw)

    def estimate_spy(self, model, x, queries, *, generator, sigma=None):
        noise.append((x.shape[0], generator.initial_seed()))
        return real_estimate(self, model, x, queries, generator=generator, sigma=sigma)

    monkeypatch.setattr(type(eq), "sample_boundary", boundary_spy)
    monkeypatch.setattr(type(p.estimator), "estimate", estimate_spy)
    p.objective(p.init_params(dtype=F64), {}, 2, 7)
    assert points == [derive_seed(7, "initial/points", 2)]
    assert (5, derive_seed(7, "initial/noise", 2)) in noise
    assert all(seed != derive_seed(7, "initial/noise", 2) for n, seed in noise if n != 5)
