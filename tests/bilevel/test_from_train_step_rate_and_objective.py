"""`from_train_step`'s split step uses the rate of step t; its objective path the index t."""
import torch

from pinnlab.bilevel import from_train_step
from pinnlab.solvers import Adam, LinearDecay, make_train_step

from ..solvers.small_problems import F64, problem, stein


def _setup():
    p = problem(estimator=stein(), batch=8)
    opt = Adam(1e-2)
    step = make_train_step(p, opt, seed=2, schedule=LinearDecay(10))
    params = p.init_params(dtype=F64)
    to_hp = lambda phi: {"sigma": torch.exp(phi["log_sigma"])}
    outer = lambda theta, phi: sum((v ** 2).sum() for v in theta.values())
    phi = {"log_sigma": torch.tensor(-3.0, dtype=F64)}
    return p, opt, step, params, to_hp, outer, phi


def test_split_step_equals_the_train_step_under_a_schedule():
    p, opt, step, params, to_hp, outer, phi = _setup()
    bilevel = from_train_step(step, to_hp, outer, (params, opt.init(params)), horizon=3)
    split, t, state = bilevel.gradient_step, 6, opt.init(params)
    grads = torch.func.grad(lambda th: sum(split.losses(th, phi, t)))(params)
    a = split.update(grads, state, params, phi, t)
    b = bilevel.inner_step(params, state, phi, t)
    for k in params:
        torch.testing.assert_close(a[0][k], b[0][k], rtol=1e-12, atol=1e-14)


def test_objective_inner_loss_uses_the_step_index():
    p, opt, step, params, to_hp, outer, phi = _setup()
    plain = lambda theta, state, hp, t: step(theta, state, hp, t)  # no losses/learning_rate
    bilevel = from_train_step(plain, to_hp, outer, (params, opt.init(params)), horizon=3,
                              objective=p.objective, seed=5, inner_lr=1e-2)
    for t in (0, 4):
        torch.testing.assert_close(bilevel.inner_loss(params, phi, t),
                                   p.objective(params, to_hp(phi), t, 5)[0], rtol=0, atol=0)
