"""The Stein path never differentiates with respect to x (optax-style "never called" test).

Two independent guards:

- ``no_input_autograd`` replaces every public entry point of input differentiation
  (``torch.func.grad/jvp/...``, ``torch.autograd.grad``, ``backward``) by a function that
  raises. It cannot see a function bound before the patch (``from torch.func import
  jvp`` at import time), so
- ``guarded_net`` also checks, at every forward call of the network, that its inputs are
  plain tensors: not requiring grad, not wrapped by a torch.func transform
  (grad/jvp/vmap), not forward-AD duals, and that no torch.func transform is active.
  Any differentiation with respect to x has to feed the network such an input.

The positive controls show that each guard catches estimators that do use input
autograd, including one that calls a ``jvp`` bound at import time (the bypass of the
first guard). Neither guard patches torch internals, so importing ``torch._dynamo``
(which keeps references to ``torch.func``) does not affect them.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jvp as _jvp_bound_at_import

from pinnlab._typing import is_transform_wrapped
from pinnlab.equations import AllenCahnTwoBody
from pinnlab.estimators import Autograd, Hutchinson, SteinAntithetic
from pinnlab.losses import Unbiased2
from pinnlab.nets import MLP
from pinnlab.solvers import PINNProblem

FORBIDDEN = "autograd with respect to the inputs was called"


def _forbidden(name):
    """A distinct raising stand-in per patched name: torch._dynamo (imported lazily, e.g.
    by torch.func.jvp) indexes torch's functions and refuses one object registered under
    two names ("Duplicate torch object ... with different rules")."""

    def forbid(*args, **kwargs):
        raise AssertionError(f"{FORBIDDEN} ({name})")

    return forbid


@pytest.fixture
def no_input_autograd(monkeypatch):
    """Every entry point that could differentiate f with respect to x raises."""
    for name in ("grad", "jvp", "vjp", "jacrev", "jacfwd", "hessian", "linearize"):
        monkeypatch.setattr(torch.func, name, _forbidden(f"torch.func.{name}"))
    for module in ("pinnlab.estimators.autograd", "pinnlab.estimators.hutchinson"):
        mod = __import__(module, fromlist=["x"])
        for name in ("grad", "jvp", "vmap"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, _forbidden(f"{module}.{name}"))
    monkeypatch.setattr(torch.autograd, "grad", _forbidden("torch.autograd.grad"))
    monkeypatch.setattr(torch.autograd, "backward", _forbidden("torch.autograd.backward"))
    monkeypatch.setattr(torch.Tensor, "backward", _forbidden("Tensor.backward"))


def _input_tensors(inputs):
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    return [inputs.center, *inputs.parts]  # a Perturbation


def _check_plain_inputs(module, args):
    """Forward pre-hook: the network only ever sees inputs nothing differentiates."""
    if torch._C._functorch.maybe_current_level() is not None:
        raise AssertionError(f"{FORBIDDEN} (the network ran inside a torch.func transform)")
    for tensor in _input_tensors(args[0]):
        if is_transform_wrapped(tensor):
            raise AssertionError(f"{FORBIDDEN} (input wrapped by a torch.func transform)")
        if tensor.requires_grad:
            raise AssertionError(f"{FORBIDDEN} (input requires grad)")
        if fwAD._current_level >= 0 and fwAD.unpack_dual(tensor).tangent is not None:
            raise AssertionError(f"{FORBIDDEN} (input is a forward-mode dual tensor)")


def _objective(estimator, *, guarded=False):
    eq = AllenCahnTwoBody(6, seed=1)
    net = MLP(6, width=16, depth=3, generator=torch.Generator().manual_seed(0))
    if guarded:
        net.register_forward_pre_hook(_check_plain_inputs)
    problem = PINNProblem(eq, net, estimator, Unbiased2(), batch_size=8)
    params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
    return problem, params


@pytest.fixture
def guarded_net():
    return lambda estimator: _objective(estimator, guarded=True)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_stein_loss_builds_without_input_autograd(no_input_autograd, guarded_net, noise):
    problem, params = guarded_net(SteinAntithetic(sigma=0.05, num_samples=16, noise=noise))
    loss, _ = problem.objective(params, {}, 0, 0)
    assert torch.isfinite(loss) and loss.requires_grad


@pytest.mark.parametrize("time_smoothing", ["joint", "independent"])
def test_stein_time_smoothing_modes_never_differentiate_inputs(guarded_net, time_smoothing):
    from pinnlab.equations import FokkerPlanckIso

    eq = FokkerPlanckIso(4, seed=1)
    net = MLP(5, width=8, depth=2, generator=torch.Generator().manual_seed(0))
    net.register_forward_pre_hook(_check_plain_inputs)
    est = SteinAntithetic(sigma=0.05, num_samples=8, time_smoothing=time_smoothing)
    problem = PINNProblem(eq, net, est, Unbiased2(), batch_size=8)
    params = {k: v.detach().requires_grad_(True) for k, v in net.named_parameters()}
    loss, _ = problem.objective(params, {}, 0, 0)
    assert torch.isfinite(loss) and loss.requires_grad


def test_stein_parameter_gradient_exists(noise="shared"):
    problem, params = _objective(SteinAntithetic(sigma=0.05, num_samples=16, noise=noise))
    loss, _ = problem.objective(params, {}, 0, 0)
    grads = torch.autograd.grad(loss, list(params.values()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2)])
def test_positive_control_autograd_estimators_are_caught(no_input_autograd, estimator):
    """The patching guard is real: estimators that do use input autograd trip it."""
    problem, params = _objective(estimator)
    with pytest.raises(AssertionError, match=FORBIDDEN):
        problem.objective(params, {}, 0, 0)


class _SteinWithHiddenJvp(SteinAntithetic):
    """A Stein estimator that also differentiates f in x through a jvp bound at import
    time, which the patching guard cannot see."""

    def _joint(self, model, x, queries, s, xi):
        _jvp_bound_at_import(model, (x,), (torch.ones_like(x),))
        return super()._joint(model, x, queries, s, xi)


class _SteinWithInputGrad(SteinAntithetic):
    """Input differentiation by plain reverse mode on an x that requires grad."""

    def _joint(self, model, x, queries, s, xi):
        x = x.detach().requires_grad_(True)
        model(x).sum()
        return super()._joint(model, x.detach(), queries, s, xi)


class _SteinWithForwardAD(SteinAntithetic):
    def _joint(self, model, x, queries, s, xi):
        with fwAD.dual_level():
            model(fwAD.make_dual(x, torch.ones_like(x)))
        return super()._joint(model, x, queries, s, xi)


@pytest.mark.parametrize(
    "estimator",
    [Autograd(), Hutchinson(num_probes=2), _SteinWithHiddenJvp(sigma=0.05, num_samples=4),
     _SteinWithInputGrad(sigma=0.05, num_samples=4), _SteinWithForwardAD(sigma=0.05, num_samples=4)],
    ids=["autograd", "hutchinson", "stein+import-time-jvp", "stein+requires-grad", "stein+forward-ad"],
)
def test_positive_control_guarded_net_catches_input_differentiation(guarded_net, estimator):
    problem, params = guarded_net(estimator)
    with pytest.raises(AssertionError, match=FORBIDDEN):
        problem.objective(params, {}, 0, 0)


def test_positive_control_import_time_jvp_bypasses_the_patching_guard(no_input_autograd):
    """Why the network guard exists: the patching guard alone misses this estimator."""
    problem, params = _objective(_SteinWithHiddenJvp(sigma=0.05, num_samples=4))
    loss, _ = problem.objective(params, {}, 0, 0)
    assert torch.isfinite(loss)
