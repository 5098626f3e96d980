"""Fifth audit of the pure training step and the problem's objective, pinned on tiny
problems: a tensor loss weight of exactly 1, the noise stream of an unchunked step and
the dtype of the lr metric."""

from __future__ import annotations

import torch

from pinnlab.solvers import SGD, make_train_step
from tests.solvers.small_problems import F64, problem, stein
from tests.test_solver_step_problem_fourth_audit import _data_term, _gradient


def test_a_tensor_weight_of_one_is_differentiated_through():
    """A loss weight given as a tensor equal to 1 (a hypergradient's starting point) still
    enters the loss: d loss / d w_data is the unweighted data term, d / d w_residual the
    residual term (only a plain number 1 is skipped)."""
    p = problem(dim=2, batch=4, extra_terms=(_data_term(),))
    params = p.init_params(dtype=F64)
    w_data = torch.tensor(1.0, dtype=F64, requires_grad=True)
    w_res = torch.tensor(1.0, dtype=F64, requires_grad=True)
    loss, metrics = p.objective(params, {"weights": {"residual": w_res, "data": w_data}}, 3, 1)
    g_res, g_data = torch.autograd.grad(loss, [w_res, w_data])
    torch.testing.assert_close(g_data, metrics["loss_data"], rtol=1e-14, atol=0)
    torch.testing.assert_close(g_res, metrics["loss_residual"], rtol=1e-14, atol=0)
    plain, _ = p.objective(params, {"weights": {"residual": 1, "data": 1.0}}, 3, 1)
    torch.testing.assert_close(loss.detach(), plain, rtol=0, atol=0)


def test_an_unchunked_step_draws_its_noise_from_the_plain_noise_stream():
    """With batch_chunks = 1 (a stochastic estimator) losses, gradient, term_gradients and
    the step all use the objective without a chunk (stream "noise", not "noise/0"): the one
    loss of losses() is objective(..., chunk=None), the gradients are its autograd ones."""
    data = _data_term()
    p = problem(dim=2, estimator=stein(), batch=6, extra_terms=(data,))
    params = p.init_params(dtype=F64)
    opt = SGD(lr=0.1)
    step = make_train_step(p, opt, seed=7)
    want, grads = _gradient(p, params, {}, 2, 7)
    chunk0, _ = p.objective(params, {}, 2, 7, 0)
    assert chunk0.item() != want.item()  # the two streams differ: the test can tell them apart
    parts = [loss for loss, _ in step.losses(params, {}, 2)]
    assert len(parts) == 1
    assert parts[0].item() == want.item()
    got, metrics = step.gradient(params, {}, 2)
    assert metrics["loss"].item() == want.item()
    for k in params:
        torch.testing.assert_close(got[k], grads[k], rtol=1e-12, atol=1e-15)
    _, residual = _gradient(p, params, {"weights": {"data": 0.0}}, 2, 7)
    terms = step.term_gradients(params, {}, 2, names=["residual"])
    for k in params:
        torch.testing.assert_close(terms["residual"][k], residual[k], rtol=1e-12, atol=1e-15)


def test_the_lr_metric_of_a_float32_run_is_float32():
    """metrics["lr"] is in the parameters' dtype: float32 parameters give a float32 rate
    (the rate 0.3 rounded to float32), as the loss metrics are."""
    p = problem(dim=2, batch=4)
    params = p.init_params(dtype=torch.float32)
    opt = SGD(lr=0.3)
    _, _, metrics = make_train_step(p, opt, seed=0)(params, opt.init(params), {}, 1)
    assert metrics["lr"].dtype == torch.float32 == metrics["loss"].dtype
    assert metrics["lr"].item() == torch.tensor(0.3, dtype=torch.float32).item()
