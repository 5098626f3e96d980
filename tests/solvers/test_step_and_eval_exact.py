"""Exact checks of the pure step and the evaluation: a constant-rate SGD step is
θ − lr·schedule(step)·∇L with ∇L computed independently; a chunked hybrid step records
the mix once; the evaluation's noise, seed, σ and K are the ones ``train`` is given."""
import dataclasses

import torch

from pinnlab._seeding import make_generator
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Hybrid, SwitchAt
from pinnlab.solvers import SGD, evaluate, make_train_step, predict, train

from .small_problems import F64, problem


def _stein(**kw):
    return SteinAntithetic(**{"sigma": 0.1, "num_samples": 4, "noise": "independent", **kw})


def test_sgd_step_is_theta_minus_the_scheduled_hyperparameter_rate_times_the_gradient():
    """hyperparams["lr"] (not the optimizer's lr) times schedule(step), at this step's
    objective gradient (autograd on the objective, not the step's own torch.func.grad)."""
    p = problem(estimator=_stein())
    params = p.init_params(dtype=F64)
    hp = {"lr": 0.05}
    step_fn = make_train_step(p, SGD(lr=1.0), seed=2, schedule=lambda s: 0.5 ** s)
    new, _, metrics = step_fn(params, SGD(lr=1.0).init(params), hp, 3)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss, _ = p.objective(leaves, hp, 3, 2)
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    for k in params:
        torch.testing.assert_close(new[k], params[k] - 0.05 * 0.125 * grads[k], rtol=1e-12, atol=1e-15)
    assert float(metrics["lr"]) == 0.05 * 0.125
    assert float(metrics["loss"]) == float(loss.detach())


def test_a_chunked_hybrid_step_records_the_mix_once_and_equals_the_full_step():
    """The blend weight is no per-chunk quantity: neither summed over the chunks nor
    scaled by a chunk's share of points."""
    full = problem(estimator=_stein(noise="shared"), loss=Hybrid(switch=SwitchAt(0)), batch=12)
    chunked = dataclasses.replace(full, batch_chunks=3)
    params = full.init_params(dtype=F64)
    opt = SGD(lr=0.1)
    hp = {"mix": 0.25}
    for p in (full, chunked):
        _, _, metrics = make_train_step(p, opt, seed=0)(params, opt.init(params), hp, 1)
        assert float(metrics["mix"]) == 0.25


def test_evaluation_noise_is_keyed_by_seed_and_step():
    """evaluate(seed=s, step=t) is predict with the stream (s, "eval", t): another step
    draws other noise (independent Stein noise makes the predictions differ)."""
    p = problem(estimator=_stein())
    params = p.init_params(dtype=F64)
    x = p.equation.test_set(6, dtype=F64)
    u = p.equation.exact_values(x).to(F64)
    at = {t: evaluate(p, params, x, u, seed=3, step=t).prediction for t in (1, 2)}
    for t in (1, 2):
        expected = predict(p, params, x, generator=make_generator(3, "eval", t))
        assert torch.equal(at[t], expected)
    assert not torch.equal(at[1], at[2])


def test_predict_with_num_samples_is_the_estimator_with_that_k():
    """num_samples (train's eval_samples) replaces the estimator's K."""
    p8 = problem(estimator=_stein(num_samples=8))
    p3 = problem(estimator=_stein(num_samples=3))
    params = p8.init_params(dtype=F64)
    x = p8.equation.test_set(5, dtype=F64)
    a = predict(p8, params, x, num_samples=3, generator=make_generator(0, "eval", 1))
    b = predict(p3, params, x, generator=make_generator(0, "eval", 1))
    c = predict(p8, params, x, generator=make_generator(0, "eval", 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_evaluates_with_its_seed_sigma_and_eval_samples():
    """The final prediction is the smoothed model at the run's σ hyperparameter, with
    eval_samples and the stream (seed, "eval", last step)."""
    p = problem(estimator=_stein())
    result = train(p, steps=2, eval_every=2, seed=5, hyperparams={"sigma": 0.3}, eval_samples=3,
                   test_points=7, progress="off", device="cpu", dtype=F64)
    expected = predict(dataclasses.replace(p, estimator=_stein(num_samples=3)), result.params,
                       result.test_inputs, generator=make_generator(5, "eval", 2), sigma=0.3)
    assert torch.equal(result.final.prediction, expected)
    assert result.history.rows["rel_l2"] == [result.final.rel_l2]


def test_the_chunk_losses_add_up_to_the_full_objective():
    """TrainStep.losses (what the bilevel layer differentiates) yields every chunk, the
    first included: their sum is the unchunked objective, in float64 (autograd
    derivatives: no noise, which each chunk draws from its own stream)."""
    full = problem(batch=12)
    chunked = dataclasses.replace(full, batch_chunks=3)
    params = full.init_params(dtype=F64)
    step = make_train_step(chunked, SGD(lr=0.1), seed=4)
    parts = [loss for loss, _ in step.losses(params, {}, 2)]
    whole, _ = full.objective(params, {}, 2, 4)
    assert len(parts) == 3
    torch.testing.assert_close(sum(parts), whole, rtol=1e-12, atol=0)
