"""Functional optimizers: state is passed in and returned, so tangents flow through it."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from pinnlab._checks import check_positive
from pinnlab._typing import Params, is_transform_wrapped, tensor_leaves

LearningRate = float | Tensor


class SGDState(NamedTuple):
    """Heavy-ball buffers, one per parameter (empty without momentum)."""

    momentum: dict[str, Tensor]


class AdamState(NamedTuple):
    """Adam's step count and first/second moment estimates."""

    count: int
    mu: dict[str, Tensor]
    nu: dict[str, Tensor]


class AbstractOptimizer(abc.ABC):
    """A pair of pure functions ``init(params) -> state`` and
    ``update(grads, state, params, lr) -> (params, state)``.

    Nothing is updated in place, so the whole update is differentiable in forward
    and reverse mode with respect to the parameters, the state *and* the learning
    rate: this is what lets the bilevel layer push tangents through T optimizer steps
    (REFERENCE.md §6.3), which ``torch.optim`` cannot do. ``lr`` is the base learning
    rate used when a training step is not given one in its hyperparameters.
    """

    lr: float

    @abc.abstractmethod
    def init(self, params: Params) -> Any:
        """The initial optimizer state for ``params``."""

    @abc.abstractmethod
    def update(
        self, grads: Params, state: Any, params: Params, lr: LearningRate
    ) -> tuple[Params, Any]:
        """One step: new parameters and new state."""

    def tangent(
        self, grads: Params, state: Any, params: Params, lr: LearningRate,
        grads_dot: Params, state_dot: Any, params_dot: Params, lr_dot: Tensor | None,
    ) -> tuple[Params, Any, Params, Any]:
        """The update and its Jacobian-vector products along B tangents at once.

        Every ``*_dot`` tensor has a leading dimension B (one row per tangent);
        ``state_dot`` is a state of the same type whose tensors are so batched (its
        non-tensor leaves, like Adam's step count, are ignored); ``lr_dot`` is `(B,)`
        or ``None`` for a constant rate. Returns ``(params', state', params_dot',
        state_dot')``. This default applies :func:`torch.func.jvp` to :meth:`update`,
        vmapped over B (correct for any pure update, but forward-mode AD of ops with
        Python scalars is slow in PyTorch); SGD and Adam override it with closed forms.
        """
        tensors, rebuild = tensor_leaves(state)
        dots = tensor_leaves(state_dot)[0]
        out: dict[str, Any] = {}

        def update(g, s, p, rate):
            new_params, new_state = self.update(g, rebuild(s), p, rate)
            new_tensors, out["rebuild"] = tensor_leaves(new_state)
            return new_params, new_tensors

        rate = torch.as_tensor(lr, dtype=next(iter(params.values())).dtype)
        b = next(iter(params_dot.values())).shape[0]
        rate_dot = rate.new_zeros(b) if lr_dot is None else lr_dot

        def push(gd, sd, pd, rd):
            return torch.func.jvp(update, (grads, tensors, params, rate), (gd, sd, pd, rd))

        (new_params, new_tensors), (params_tangent, tensor_tangents) = torch.func.vmap(push)(
            grads_dot, dots, params_dot, rate_dot)
        return ({k: v[0] for k, v in new_params.items()}, out["rebuild"]([x[0] for x in new_tensors]),
                params_tangent, out["rebuild"](tensor_tangents))

    @abc.abstractmethod
    def state_to_dict(self, state: Any) -> dict[str, Any]:
        """Flat tensors and ints for checkpoints."""

    @abc.abstractmethod
    def state_from_dict(self, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`state_to_dict`."""


@dataclass(frozen=True)
class SGD(AbstractOptimizer):
    r"""Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

    .. math::

        m_t = μ m_{t−1} + g_t, \qquad θ_t = θ_{t−1} − η (g_t + μ m_t \text{ if Nesterov else } m_t)

    Args:
        lr: η > 0, base learning rate.
        momentum: μ ∈ [0, 1); 0 gives plain SGD and an empty state.
        nesterov: Nesterov's variant.

    Example:
        >>> opt = SGD(lr=0.1)
        >>> p = {"w": torch.tensor([1.0])}
        >>> p, s = opt.update({"w": torch.tensor([2.0])}, opt.init(p), p, 0.1)
        >>> round(p["w"].item(), 6)  # 1 − 0.1·2 (float32)
        0.8
    """

    lr: float = 1e-2
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        check_positive("lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def init(self, params: Params) -> SGDState:
        if self.momentum == 0:
            return SGDState({})
        return SGDState({k: torch.zeros_like(v) for k, v in params.items()})

    def update(self, grads, state, params, lr):
        _check_state(self, state, SGDState, params, *(("momentum",) if self.momentum else ()))
        if self.momentum == 0:
            return {k: params[k] - lr * grads[k] for k in params}, state
        buffers = {k: self.momentum * state.momentum[k] + grads[k] for k in params}
        if self.nesterov:
            direction = {k: grads[k] + self.momentum * buffers[k] for k in params}
        else:
            direction = buffers
        return {k: params[k] - lr * direction[k] for k in params}, SGDState(buffers)

    def tangent(self, grads, state, params, lr, grads_dot, state_dot, params_dot, lr_dot):
        if self.momentum == 0:
            direction, direction_dot, buffers, buffers_dot = grads, grads_dot, {}, {}
        else:
            buffers = {k: self.momentum * state.momentum[k] + grads[k] for k in params}
            buffers_dot = {k: self.momentum * state_dot.momentum[k] + grads_dot[k] for k in params}
            if self.nesterov:
                direction = {k: grads[k] + self.momentum * buffers[k] for k in params}
                direction_dot = {k: grads_dot[k] + self.momentum * buffers_dot[k] for k in params}
            else:
                direction, direction_dot = buffers, buffers_dot
        new = {k: params[k] - lr * direction[k] for k in params}
        new_dot = {k: params_dot[k] - lr * direction_dot[k] - _times(lr_dot, direction[k]) for k in params}
        return new, SGDState(buffers), new_dot, SGDState(buffers_dot)

    def state_to_dict(self, state):
        return {f"momentum/{k}": v for k, v in state.momentum.items()}

    def state_from_dict(self, data):
        _only_keys(self, data, "momentum/")
        return SGDState({k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("momentum/")})


@dataclass(frozen=True)
class Adam(AbstractOptimizer):
    r"""Adam (Kingma & Ba 2015) as a pure function.

    .. math::

        m_t = β_1 m_{t−1} + (1−β_1) g_t,\quad v_t = β_2 v_{t−1} + (1−β_2) g_t²,\quad
        θ_t = θ_{t−1} − η\, \frac{m_t/(1−β_1^t)}{\sqrt{v_t/(1−β_2^t)} + ε}

    The step count is a Python int in the state (no tangent), so bias corrections
    are constants under differentiation, as in PyTorch's and optax's Adam.

    Args:
        lr: η > 0, base learning rate.
        b1: β₁ ∈ [0, 1).
        b2: β₂ ∈ [0, 1).
        eps: ε > 0 (outside the square root, as in torch.optim.Adam).
    """

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        check_positive("lr", self.lr)
        check_positive("eps", self.eps)
        for name in ("b1", "b2"):  # β₂ = 1: 1 − β₂ᵗ = 0 and every step is m̂/ε
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")

    def init(self, params: Params) -> AdamState:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return AdamState(0, zeros, dict(zeros))

    def _moments_and_step(self, g, mu, nu, c1, c2):
        """One coordinate block: new first and second moments, √(v̂), and the step m̂/(√v̂ + ε)."""
        mu = self.b1 * mu + (1 - self.b1) * g
        nu = self.b2 * nu + (1 - self.b2) * g * g
        root = _sqrt(nu / c2)
        return mu, nu, root, (mu / c1) / (root + self.eps)

    def update(self, grads, state, params, lr):
        _check_state(self, state, AdamState, params, "mu", "nu")
        count = state.count + 1
        c1, c2 = 1 - self.b1**count, 1 - self.b2**count
        new, mu, nu = {}, {}, {}
        recorded = _recorded(grads, state.mu, state.nu, params, lr)
        for k in params:
            if recorded:
                mu[k], nu[k], _, step = self._moments_and_step(grads[k], state.mu[k], state.nu[k], c1, c2)
                new[k] = params[k] - lr * step
            else:
                new[k], mu[k], nu[k] = self._plain_step(grads[k], state.mu[k], state.nu[k], params[k], c1, c2, lr)
        return new, AdamState(count, mu, nu)

    def _plain_step(self, g, mu, nu, param, c1, c2, lr):
        """:meth:`_moments_and_step` and θ − η·step, bit for bit, for tensors no autograd
        level records: the same operations in the same order, written into the three
        new tensors and one scratch buffer instead of ~17 temporaries. At d = 10⁴ the first
        layer holds 1.3·10⁶ weights and the temporaries cost a quarter of a Stein step."""
        scratch = torch.mul(g, 1 - self.b1)
        mu = torch.mul(mu, self.b1).add_(scratch)
        torch.mul(g, 1 - self.b2, out=scratch).mul_(g)
        nu = torch.mul(nu, self.b2).add_(scratch)
        # √(v̂) + ε; v ≥ 0, and _sqrt's value is the plain square root's
        root = torch.div(nu, c2, out=scratch).sqrt_().add_(self.eps)
        step = torch.div(mu, c1).div_(root).mul_(lr)
        return torch.sub(param, step, out=step), mu, nu

    def tangent(self, grads, state, params, lr, grads_dot, state_dot, params_dot, lr_dot):
        count = state.count + 1
        c1, c2 = 1 - self.b1**count, 1 - self.b2**count
        new, new_dot, mu, nu, mu_dot, nu_dot = {}, {}, {}, {}, {}, {}
        for k in params:
            g, g_dot = grads[k], grads_dot[k]
            mu[k], nu[k], root, step = self._moments_and_step(g, state.mu[k], state.nu[k], c1, c2)
            mu_dot[k] = self.b1 * state_dot.mu[k] + (1 - self.b1) * g_dot
            nu_dot[k] = self.b2 * state_dot.nu[k] + (2 * (1 - self.b2)) * g * g_dot
            # d sqrt(v) = dv / (2 sqrt(v)), taken as 0 where v = 0 (see _sqrt)
            root_dot = torch.where(root > 0, nu_dot[k] / (2 * c2 * torch.where(root > 0, root, 1)), 0.0)
            step_dot = (mu_dot[k] / c1 - step * root_dot) / (root + self.eps)
            new[k] = params[k] - lr * step
            new_dot[k] = params_dot[k] - lr * step_dot - _times(lr_dot, step)
        return new, AdamState(count, mu, nu), new_dot, AdamState(count, mu_dot, nu_dot)

    def state_to_dict(self, state):
        out: dict[str, Any] = {"count": torch.tensor(state.count)}
        out.update({f"mu/{k}": v for k, v in state.mu.items()})
        out.update({f"nu/{k}": v for k, v in state.nu.items()})
        return out

    def state_from_dict(self, data):
        _only_keys(self, data, "mu/", "nu/", "count")
        mu = {k[3:]: v for k, v in data.items() if k.startswith("mu/")}
        nu = {k[3:]: v for k, v in data.items() if k.startswith("nu/")}
        return AdamState(int(data["count"]), mu, nu)


def _only_keys(optimizer, data: Mapping[str, Any], *prefixes: str) -> None:
    """Refuse a saved state with keys of another optimizer (an Adam state read by SGD came
    back as an empty SGD state)."""
    stray = sorted(k for k in data if not k.startswith(prefixes))
    if stray:
        raise ValueError(f"the saved optimizer state has {stray[:3]}, not keys of {type(optimizer).__name__}'s "
                         "state: it was saved by another optimizer")


def _check_state(optimizer, state, kind: type, params: Params, *moments: str) -> None:
    """Refuse a state that is not ``optimizer``'s for ``params``: another optimizer's, or
    ``moments`` (the state's fields named) of other names, shapes or dtypes (Adam wrote
    float64 parameters into a float32 state's buffers and returned float32 parameters)."""
    name = type(optimizer).__name__
    if not isinstance(state, kind):
        raise TypeError(f"{name}.update needs a {kind.__name__} (from {name}.init), got {type(state).__name__}")
    for moment in (getattr(state, field) for field in moments):
        if moment.keys() != params.keys():
            raise ValueError(f"the {name} state's tensors {sorted(moment)} are not the parameters "
                             f"{sorted(params)}: make the state with init() from these parameters")
        for key, value in moment.items():
            param = params[key]
            if value.shape != param.shape or value.dtype != param.dtype:
                raise ValueError(f"the {name} state's {key!r} is {str(value.dtype)[6:]} {tuple(value.shape)}, "
                                 f"the parameter {str(param.dtype)[6:]} {tuple(param.shape)}: make the state "
                                 "with init() from these parameters")


def _recorded(*trees) -> bool:
    """Whether autograd or a torch.func transform records operations on any tensor of
    ``trees`` (then the optimizer must build new tensors out of place)."""
    leaves = [t for tree in trees for t in (tree.values() if isinstance(tree, dict) else (tree,))
              if isinstance(t, Tensor)]
    return any(is_transform_wrapped(t) or (t.requires_grad and torch.is_grad_enabled()) for t in leaves)


def _sqrt(x: Tensor) -> Tensor:
    """√x with derivative 0 instead of ∞ at x = 0, in both modes.

    Adam's second moment is exactly 0 for a coordinate whose gradients have all been
    exactly 0 (it happens in float32 when a sum cancels); the plain square root's
    derivative there is ∞, and ∞·0 turned reverse-mode hypergradients into NaN. The
    value is the plain square root's, bit for bit."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _times(rate_dot: Tensor | None, value: Tensor) -> Tensor | float:
    """rate_dot `(B,)` times value, broadcast to `(B, *value.shape)` (0 if the rate is constant)."""
    if rate_dot is None:
        return 0.0
    return rate_dot.reshape(-1, *([1] * value.dim())) * value


def adam(lr: float = Adam.lr, b1: float = Adam.b1, b2: float = Adam.b2, eps: float = Adam.eps) -> Adam:
    """Shorthand for :class:`Adam`."""
    return Adam(lr=lr, b1=b1, b2=b2, eps=eps)


def sgd(lr: float = SGD.lr, momentum: float = SGD.momentum, nesterov: bool = SGD.nesterov) -> SGD:
    """Shorthand for :class:`SGD`."""
    return SGD(lr=lr, momentum=momentum, nesterov=nesterov)
