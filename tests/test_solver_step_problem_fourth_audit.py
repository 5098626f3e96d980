"""Fourth audit of the pure training step and the problem's objective, pinned on tiny
float64 problems: the step's default rate and seed, uneven point chunks, the chunked
term gradients, the range limits of the hyperparameters and the sampler overrides."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import FokkerPlanckIso
from pinnlab.losses import Hybrid, SwitchAt
from pinnlab.solvers import SGD, DataLoss, TrainStep, make_train_step
from pinnlab.solvers.problem import sampler_overrides
from tests.solvers.small_problems import F64, problem, stein


def _gradient(p, params, hyperparams, step, seed):
    """∇ of the objective by plain autograd (not the step's own torch.func.grad)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss, _ = p.objective(leaves, hyperparams, step, seed)
    return loss.detach(), dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def test_without_an_lr_hyperparameter_the_step_uses_the_optimizers_rate_in_float64():
    """hyperparams without "lr": θ − optimizer.lr·∇L, and metrics["lr"] is that rate as
    a float64 tensor (0.3 exactly, not 0.3 rounded through float32)."""
    p = problem(dim=2, batch=6)
    params = p.init_params(dtype=F64)
    opt = SGD(lr=0.3)
    new, _, metrics = make_train_step(p, opt, seed=1)(params, opt.init(params), {}, 2)
    _, grads = _gradient(p, params, {}, 2, 1)
    for k in params:
        torch.testing.assert_close(new[k], params[k] - 0.3 * grads[k], rtol=1e-12, atol=1e-15)
    assert metrics["lr"].dtype == F64
    assert metrics["lr"].item() == 0.3


def test_make_train_step_keeps_its_seed():
    """The seed given to make_train_step keys the step's noise: the step's loss is the
    objective at that seed (another seed draws other points and noise)."""
    p = problem(dim=2, estimator=stein(), batch=6)
    params = p.init_params(dtype=F64)
    opt = SGD(lr=0.1)
    step = make_train_step(p, opt, seed=5)
    assert step.seed == 5
    _, _, metrics = step(params, opt.init(params), {}, 1)
    at5, _ = p.objective(params, {}, 1, 5)
    at0, _ = p.objective(params, {}, 1, 0)
    assert metrics["loss"].item() == at5.item()
    assert at5.item() != at0.item()


@pytest.mark.parametrize("seed", [-1, 2**63, 1.0])
def test_a_seed_a_result_file_cannot_store_is_refused(seed):
    p = problem(dim=2, batch=4)
    with pytest.raises(ValueError, match="seed must be an integer"):
        TrainStep(p, SGD(lr=0.1), seed=seed)


def _mask(n, keep):
    """A collocation weight of 1 on the points ``keep`` and 0 elsewhere."""
    w = torch.zeros(n, dtype=F64)
    w[keep] = 1.0
    return lambda x: w


def test_an_uneven_chunk_is_its_slice_of_points_scaled_by_its_share():
    """5 points in 4 chunks are split 2, 1, 1, 1 (torch.tensor_split): chunk c's loss is
    (n_c / 5)·mean over its slice of R², the full objective with weight 1 on the slice
    and 0 elsewhere (autograd derivatives: no noise)."""
    full = problem(dim=2, batch=5)
    chunked = dataclasses.replace(full, batch_chunks=4)
    params = full.init_params(dtype=F64)
    step = make_train_step(chunked, SGD(lr=0.1), seed=3)
    parts = [loss for loss, _ in step.losses(params, {}, 2)]
    assert len(parts) == 4
    for part, keep in zip(parts, [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 5)]):
        masked, _ = full.objective(params, {"collocation_weight": _mask(5, keep)}, 2, 3)
        torch.testing.assert_close(part, masked, rtol=1e-12, atol=1e-15)
    whole, _ = full.objective(params, {}, 2, 3)
    torch.testing.assert_close(sum(parts), whole, rtol=1e-12, atol=0)


def test_an_uneven_chunked_step_equals_the_full_step():
    """The step over 4 uneven chunks of 5 points moves the parameters as the full step."""
    full = problem(dim=2, batch=5)
    chunked = dataclasses.replace(full, batch_chunks=4)
    params = full.init_params(dtype=F64)
    opt = SGD(lr=0.2)
    a, _, ma = make_train_step(full, opt, seed=3)(params, opt.init(params), {}, 2)
    b, _, mb = make_train_step(chunked, opt, seed=3)(params, opt.init(params), {}, 2)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(mb["loss"], ma["loss"], rtol=1e-12, atol=0)


def _data_term(dim=2):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, dim, generator=g, dtype=F64) * 0.5
    return DataLoss(x, torch.cos(x.sum(1)))


def test_chunked_term_gradients_add_up_over_the_chunks_and_name_only_the_asked_terms():
    """term_gradients over 3 chunks is the gradient of each unweighted term of the full
    objective (the residual summed over its chunks, the data term counted once); names
    selects exactly the named terms."""
    data = _data_term()
    full = problem(dim=2, batch=6, extra_terms=(data,))
    chunked = dataclasses.replace(full, batch_chunks=3)
    params = full.init_params(dtype=F64)
    step = make_train_step(chunked, SGD(lr=0.1), seed=1)
    got = step.term_gradients(params, {}, 4)
    assert list(got) == ["residual", "data"]
    for name, other in (("residual", "data"), ("data", "residual")):
        _, want = _gradient(full, params, {"weights": {name: 1.0, other: 0.0}}, 4, 1)
        for k in params:
            torch.testing.assert_close(got[name][k], want[k], rtol=1e-12, atol=1e-15, msg=name)
    only = step.term_gradients(params, {}, 4, names=["data"])
    assert list(only) == ["data"]
    for k in params:
        torch.testing.assert_close(only["data"][k], got["data"][k], rtol=0, atol=0)


def test_an_extra_term_named_residual_is_refused():
    """"residual" is the residual's weight key: a term of that name would share it."""
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="duplicate term name"):
        problem(dim=2, batch=4, extra_terms=(DataLoss(x, torch.zeros(2, dtype=F64), name="residual"),))


def test_the_range_limits_of_mix_and_weights_are_allowed():
    """mix = 1 (the second loss only) and a weight of 0 (a term switched off) are in range."""
    data = _data_term()
    p = problem(dim=2, batch=4, extra_terms=(data,), loss=Hybrid(switch=SwitchAt(0)))
    params = p.init_params(dtype=F64)
    loss, metrics = p.objective(params, {"mix": 1.0, "weights": {"residual": 0.0}}, 0, 0)
    assert metrics["mix"].item() == 1.0
    assert loss.item() == metrics["loss_data"].item()


def test_a_negative_chunk_is_refused():
    p = problem(dim=2, batch=4, chunks=2)
    with pytest.raises(ValueError, match="chunk must be None or in 0..1"):
        p.objective(p.init_params(dtype=F64), {}, 0, 0, -1)


def test_sampler_overrides_keep_only_the_samplers_coefficients_detached():
    """Only the coefficients the samplers read (Fokker–Planck's mu) go to them, detached
    (points are data: no gradient flows through them), a float as a float64 tensor."""
    eq = FokkerPlanckIso(2)
    mu = torch.tensor([0.5, 1.5], dtype=F64, requires_grad=True)
    got = sampler_overrides(eq, {"mu": mu, "sigma": 0.3})
    assert list(got) == ["coefficients"]
    assert list(got["coefficients"]) == ["mu"]
    assert not got["coefficients"]["mu"].requires_grad
    torch.testing.assert_close(got["coefficients"]["mu"], mu.detach(), rtol=0, atol=0)
    as_float = sampler_overrides(eq, {"mu": 2.0})["coefficients"]["mu"]
    assert as_float.dtype == F64 and as_float.item() == 2.0
    assert sampler_overrides(eq, {"sigma": 0.3}) == {}
    assert sampler_overrides(eq, None) == {}


def test_the_points_of_a_step_are_drawn_from_its_own_collocation_stream():
    """Step t's points are equation.sample_collocation from (seed, "collocation", t), in
    the parameters' dtype (the points a collocation weight is called on)."""
    p = problem(dim=2, batch=4)
    want = p.equation.sample_collocation(4, generator=make_generator(6, "collocation", 3), dtype=F64)
    seen = []

    def weight(points):
        seen.append(points)
        return torch.ones(points.shape[0], dtype=F64)

    p.objective(p.init_params(dtype=F64), {"collocation_weight": weight}, 3, 6)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], want, rtol=0, atol=0)


@pytest.mark.parametrize("hyperparams", [
    {"lr": float("inf")},
    {"lr": torch.tensor(float("inf"), dtype=F64)},
    {"weights": {"residual": float("inf")}},
    {"weights": {"residual": torch.tensor([1.0, float("inf")], dtype=F64)}},
])
def test_an_infinite_rate_or_weight_is_refused(hyperparams):
    """inf satisfies "> 0" and ">= 0": only the finiteness check refuses it (a float or a
    tensor), before any point is drawn."""
    p = problem(dim=2, batch=4)
    with pytest.raises(ValueError, match="must be finite"):
        p.objective(p.init_params(dtype=F64), hyperparams, 0, 0)


def test_a_column_of_collocation_weights_is_refused():
    """An `(N, 1)` weight would broadcast the `(N,)` residual to `(N, N)`: refused."""
    p = problem(dim=2, batch=4)
    with pytest.raises(ValueError, match=r"to a \(4,\) tensor of weights, got \(4, 1\)"):
        p.objective(p.init_params(dtype=F64),
                    {"collocation_weight": lambda x: torch.ones(x.shape[0], 1, dtype=F64)}, 0, 0)


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_a_step_that_is_no_count_is_refused_by_the_objective(step):
    """A negative, fractional or boolean step would key another random stream."""
    p = problem(dim=2, batch=4)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        p.objective(p.init_params(dtype=F64), {}, step, 0)
