"""The Stein path never differentiates with respect to x (optax-style "never called" test)."""

from __future__ import annotations

import pytest
import torch

from pinnlab.equations import AllenCahnTwoBody
from pinnlab.estimators import Autograd, Hutchinson, SteinAntithetic
from pinnlab.losses import Unbiased2
from pinnlab.nets import MLP
from pinnlab.solvers import PINNProblem


def _forbid(*args, **kwargs):
    raise AssertionError("autograd with respect to the inputs was called")


@pytest.fixture
def no_input_autograd(monkeypatch):
    """Every entry point that could differentiate f with respect to x raises."""
    for name in ("grad", "jvp", "vjp", "jacrev", "jacfwd", "hessian", "linearize"):
        monkeypatch.setattr(torch.func, name, _forbid)
    for module in ("pinnlab.estimators.autograd", "pinnlab.estimators.hutchinson"):
        mod = __import__(module, fromlist=["x"])
        for name in ("grad", "jvp", "vmap"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, _forbid)
    monkeypatch.setattr(torch.autograd, "grad", _forbid)
    monkeypatch.setattr(torch.autograd, "backward", _forbid)
    monkeypatch.setattr(torch.Tensor, "backward", _forbid)


def _objective(estimator):
    eq = AllenCahnTwoBody(6, seed=1)
    net = MLP(6, width=16, depth=3, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(eq, net, estimator, Unbiased2(), batch_size=8)
    params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
    return problem, params


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_stein_loss_builds_without_input_autograd(no_input_autograd, noise):
    problem, params = _objective(SteinAntithetic(sigma=0.05, num_samples=16, noise=noise))
    loss, _ = problem.objective(params, {}, 0, 0)
    assert torch.isfinite(loss) and loss.requires_grad


def test_stein_parameter_gradient_exists(noise="shared"):
    problem, params = _objective(SteinAntithetic(sigma=0.05, num_samples=16, noise=noise))
    loss, _ = problem.objective(params, {}, 0, 0)
    grads = torch.autograd.grad(loss, list(params.values()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2)])
def test_positive_control_autograd_estimators_are_caught(no_input_autograd, estimator):
    """The guard is real: estimators that do use input autograd trip it."""
    problem, params = _objective(estimator)
    with pytest.raises(AssertionError, match="autograd with respect to the inputs"):
        problem.objective(params, {}, 0, 0)
