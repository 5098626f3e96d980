"""Functional optimizers agree with torch.optim and are pure."""

from __future__ import annotations

import pytest
import torch

from pinnlab.solvers import SGD, Adam


def _run_ours(opt, grads_seq, params, lr):
    state = opt.init(params)
    for grads in grads_seq:
        params, state = opt.update(grads, state, params, lr)
    return params


def _run_torch(make, grads_seq, params):
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    optimizer = make(list(leaves.values()))
    for grads in grads_seq:
        for k, p in leaves.items():
            p.grad = grads[k].clone()
        optimizer.step()
    return {k: v.detach() for k, v in leaves.items()}


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(4, 3, generator=g, dtype=torch.float64),
              "b": torch.randn(3, generator=g, dtype=torch.float64)}
    grads = [{k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()}
             for _ in range(7)]
    return params, grads


def test_adam_matches_torch(problem):
    params, grads = problem
    ours = _run_ours(Adam(b1=0.8, b2=0.95, eps=1e-6), grads, params, 0.01)
    ref = _run_torch(lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), eps=1e-6), grads, params)
    for k in params:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_torch(problem, momentum, nesterov):
    params, grads = problem
    ours = _run_ours(SGD(momentum=momentum, nesterov=nesterov), grads, params, 0.05)
    ref = _run_torch(
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum, nesterov=nesterov), grads, params
    )
    for k in params:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-12, atol=1e-12)


def test_update_is_pure_and_state_round_trips(problem):
    params, grads = problem
    opt = Adam()
    state = opt.init(params)
    before = {k: v.clone() for k, v in params.items()}
    new, new_state = opt.update(grads[0], state, params, 0.1)
    for k in params:
        assert torch.equal(params[k], before[k])
        assert torch.equal(state.mu[k], torch.zeros_like(params[k]))
    restored = opt.state_from_dict(opt.state_to_dict(new_state))
    assert restored.count == 1
    for k in params:
        assert torch.equal(restored.nu[k], new_state.nu[k])


@pytest.mark.parametrize("lr", [1e-3, torch.tensor(3e-3), torch.tensor(2e-3, dtype=torch.float64)])
def test_adam_in_place_path_is_bitwise_the_recorded_one_and_pure(lr):
    """Without autograd, Adam writes into its new tensors (the first layer at d = 10⁴ has
    1.3·10⁶ weights); the values must be those of the out-of-place path, bit for bit, and
    no input may change: float32, gradients spanning 10⁻⁸…10², coordinates with g = 0."""
    g = torch.Generator().manual_seed(1)
    params = {"w": torch.randn(64, 300, generator=g), "b": torch.randn(5, generator=g)}
    opt = Adam(lr=1.0)
    plain, plain_state = params, opt.init(params)
    recorded, recorded_state = params, opt.init(params)
    for _ in range(6):
        grads = {k: torch.randn(v.shape, generator=g) * 10.0 ** torch.randint(-8, 3, v.shape, generator=g)
                 for k, v in params.items()}
        grads["w"][:3] = 0
        inputs = [dict(grads), dict(plain), dict(plain_state.mu), dict(plain_state.nu)]
        copies = [{k: v.clone() for k, v in d.items()} for d in inputs]
        plain, plain_state = opt.update(grads, plain_state, plain, lr)
        for d, c in zip(inputs, copies):
            assert all(torch.equal(d[k], c[k]) for k in d)
        tracked = {k: v.clone().requires_grad_(True) for k, v in grads.items()}
        recorded, recorded_state = opt.update(tracked, recorded_state, recorded, lr)
        assert recorded["w"].requires_grad  # the out-of-place path ran
        recorded = {k: v.detach() for k, v in recorded.items()}
        recorded_state = type(recorded_state)(recorded_state.count, *(
            {k: v.detach() for k, v in m.items()} for m in (recorded_state.mu, recorded_state.nu)))
        for k in params:
            assert torch.equal(plain[k], recorded[k])
            assert torch.equal(plain_state.mu[k], recorded_state.mu[k])
            assert torch.equal(plain_state.nu[k], recorded_state.nu[k])


def test_learning_rate_is_differentiable(problem):
    params, grads = problem
    opt = Adam()
    lr = torch.tensor(0.1, dtype=torch.float64)

    def final(lr):
        return _run_ours(opt, grads, params, lr)["w"].sum()

    derivative = torch.func.grad(final)(lr)
    step = 1e-6
    fd = (final(lr + step) - final(lr - step)) / (2 * step)
    torch.testing.assert_close(derivative, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("make,name", [
    (lambda: SGD(momentum=1.5), "momentum"), (lambda: SGD(lr=-0.01), "lr"), (lambda: SGD(lr=0.0), "lr"),
    (lambda: Adam(lr=-1e-3), "lr"), (lambda: Adam(eps=-1.0), "eps"), (lambda: Adam(eps=0.0), "eps"),
    # β₂ = 1 made 1 − β₂ᵗ = 0: every step m̂/ε, a run 'ok' at rel. L2 1e22; β₁ = 1 a NaN stop
    (lambda: Adam(b2=1.0), "b2"), (lambda: Adam(b1=1.0), "b1"), (lambda: Adam(b1=1.5), "b1"),
    (lambda: Adam(b1=-0.1), "b1"), (lambda: Adam(b2=True), "b2"),
], ids=["sgd-momentum", "sgd-lr-negative", "sgd-lr-zero", "adam-lr", "adam-eps", "adam-eps-zero",
        "adam-b2-one", "adam-b1-one", "adam-b1-big", "adam-b1-negative", "adam-b2-bool"])
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        make()


@pytest.mark.parametrize("opt", [SGD(lr=0.1), SGD(lr=0.1, momentum=0.9), SGD(lr=0.1, momentum=0.9, nesterov=True),
                                 Adam(b1=0.8, b2=0.95, eps=1e-6)], ids=["sgd", "momentum", "nesterov", "adam"])
def test_closed_form_tangents_equal_forward_mode(problem, opt):
    """The optimizers' closed-form tangents equal torch.func.jvp of their update (the
    generic base-class tangent) along 3 tangents at once, learning-rate tangent included."""
    from pinnlab.solvers.optim import AbstractOptimizer

    params, grads = problem
    state = opt.init(params)
    for g in grads[:3]:  # a state with non-trivial moments
        params, state = opt.update(g, state, params, 0.01)
    g = torch.Generator().manual_seed(1)

    def batch(tree):
        return {k: torch.randn(3, *v.shape, generator=g, dtype=torch.float64) for k, v in tree.items()}

    grads_dot, params_dot = batch(params), batch(params)
    state_dot = type(state)(*[batch(x) if isinstance(x, dict) else x for x in state])
    lr, lr_dot = torch.tensor(0.01, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    ours = opt.tangent(grads[3], state, params, lr, grads_dot, state_dot, params_dot, lr_dot)
    generic = AbstractOptimizer.tangent(opt, grads[3], state, params, lr, grads_dot, state_dot, params_dot, lr_dot)
    for a, b in zip(ours, generic):
        for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    # the primal half is the update itself
    new, _ = opt.update(grads[3], state, params, lr)
    for k in new:
        torch.testing.assert_close(ours[0][k], new[k], rtol=0, atol=0)


def test_adam_tangent_is_finite_where_a_coordinate_never_had_a_gradient():
    opt = Adam()
    params = {"w": torch.ones(3, dtype=torch.float64)}
    grads = {"w": torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)}
    dots = {"w": torch.ones(2, 3, dtype=torch.float64)}
    state = opt.init(params)
    zero = type(state)(0, {"w": torch.zeros(2, 3, dtype=torch.float64)}, {"w": torch.zeros(2, 3, dtype=torch.float64)})
    _, _, new_dot, _ = opt.tangent(grads, state, params, 0.1, dots, zero, dots, None)
    assert torch.isfinite(new_dot["w"]).all()
