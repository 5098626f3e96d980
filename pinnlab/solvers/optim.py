"""Functional optimizers: state is passed in and returned, so tangents flow through it."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor

from pinnlab._typing import Params

LearningRate = Union[float, Tensor]


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
        lr: η, base learning rate.
        momentum: μ ∈ [0, 1); 0 gives plain SGD and an empty state.
        nesterov: Nesterov's variant.

    Example:
        >>> opt = SGD(lr=0.1)
        >>> p = {"w": torch.tensor([1.0])}
        >>> p, s = opt.update({"w": torch.tensor([2.0])}, opt.init(p), p, 0.1)
        >>> p["w"].tolist()
        [0.8]
    """

    lr: float = 1e-2
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def init(self, params: Params) -> SGDState:
        if self.momentum == 0:
            return SGDState({})
        return SGDState({k: torch.zeros_like(v) for k, v in params.items()})

    def update(self, grads, state, params, lr):
        if self.momentum == 0:
            return {k: params[k] - lr * grads[k] for k in params}, state
        buffers = {k: self.momentum * state.momentum[k] + grads[k] for k in params}
        if self.nesterov:
            direction = {k: grads[k] + self.momentum * buffers[k] for k in params}
        else:
            direction = buffers
        return {k: params[k] - lr * direction[k] for k in params}, SGDState(buffers)

    def state_to_dict(self, state):
        return {f"momentum/{k}": v for k, v in state.momentum.items()}

    def state_from_dict(self, data):
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
        lr: η, base learning rate.
        b1: β₁.
        b2: β₂.
        eps: ε (outside the square root, as in torch.optim.Adam).
    """

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def init(self, params: Params) -> AdamState:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return AdamState(0, zeros, dict(zeros))

    def update(self, grads, state, params, lr):
        count = state.count + 1
        mu = {k: self.b1 * state.mu[k] + (1 - self.b1) * grads[k] for k in params}
        nu = {k: self.b2 * state.nu[k] + (1 - self.b2) * grads[k] * grads[k] for k in params}
        c1 = 1 - self.b1**count
        c2 = 1 - self.b2**count
        new = {
            k: params[k] - lr * (mu[k] / c1) / (torch.sqrt(nu[k] / c2) + self.eps)
            for k in params
        }
        return new, AdamState(count, mu, nu)

    def state_to_dict(self, state):
        out: dict[str, Any] = {"count": torch.tensor(state.count)}
        out.update({f"mu/{k}": v for k, v in state.mu.items()})
        out.update({f"nu/{k}": v for k, v in state.nu.items()})
        return out

    def state_from_dict(self, data):
        mu = {k[3:]: v for k, v in data.items() if k.startswith("mu/")}
        nu = {k[3:]: v for k, v in data.items() if k.startswith("nu/")}
        return AdamState(int(data["count"]), mu, nu)


def adam(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Adam:
    """Shorthand for :class:`Adam`."""
    return Adam(lr=lr, b1=b1, b2=b2, eps=eps)


def sgd(lr: float = 1e-2, momentum: float = 0.0, nesterov: bool = False) -> SGD:
    """Shorthand for :class:`SGD`."""
    return SGD(lr=lr, momentum=momentum, nesterov=nesterov)
