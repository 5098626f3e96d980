"""Unconstrained parameterisations of constrained hyperparameters."""

from __future__ import annotations

import abc
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pinnlab.bilevel.base import BilevelProblem, GradientStep, Phi


class AbstractParameterization(abc.ABC):
    """value = forward(u) maps an unconstrained u to the constrained hyperparameter."""

    @abc.abstractmethod
    def forward(self, u: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def inverse(self, value: Tensor) -> Tensor: ...

    def usable(self, value: Tensor) -> bool:
        """Whether a value forward() produced can be used: finite (overridden where the
        map's limit is degenerate, e.g. exp(u) underflowing to 0; not for :class:`Logit`,
        whose saturated bounds are usable values)."""
        return bool(torch.isfinite(value).all())


@dataclass(frozen=True)
class Identity(AbstractParameterization):
    """value = u."""

    def forward(self, u):
        return u

    def inverse(self, value):
        return value


@dataclass(frozen=True)
class Log(AbstractParameterization):
    """value = exp(u) > 0 (loss weights, σ, learning rates)."""

    def forward(self, u):
        return torch.exp(u)

    def inverse(self, value):
        if not bool((value > 0).all()):  # (NaN too)
            raise ValueError("a log-parameterised hyperparameter must be > 0")
        return torch.log(value)

    def usable(self, value):
        return bool((torch.isfinite(value) & (value > 0)).all())


@dataclass(frozen=True)
class Logit(AbstractParameterization):
    """value = low + (high − low)·sigmoid(u) ∈ (low, high) (mix weights, bounded coefficients).

    In floating point sigmoid saturates: beyond about u = 17 in float32 (37 in float64)
    the value is ``high`` itself, and below about u = −19 (−39) ``low`` when ``low`` ≠ 0
    is of the width's size (with low = 0, only where sigmoid underflows: about u = −89
    in float32, −710 in float64). Such a value stays usable (a mix of exactly 0 or 1 is
    one loss alone; the loop goes on tuning the rest of φ), but :meth:`inverse` refuses
    it, so a run that ended there is restarted from its u (its checkpoint), not from its φ."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self):
        if not self.high > self.low:
            raise ValueError(f"Logit needs high > low, got ({self.low}, {self.high})")
        if not math.isfinite(self.high - self.low):  # (every value refused as not in (0, inf); u = 0 gave inf)
            raise ValueError(f"Logit needs finite bounds whose width high − low is finite, got ({self.low}, "
                             f"{self.high}); use Log() for a value bounded on one side only")

    def forward(self, u):
        # Bounds as tensors of u's dtype: Python-scalar arithmetic on the sigmoid under
        # vmap(jvp(grad(...))) promotes to float64 in torch 2.13 and breaks the backward.
        low = torch.as_tensor(self.low, dtype=u.dtype, device=u.device)
        width = torch.as_tensor(self.high - self.low, dtype=u.dtype, device=u.device)
        return torch.addcmul(low, width, torch.sigmoid(u))

    def inverse(self, value):
        p = (value - self.low) / (self.high - self.low)
        if not bool(((p > 0) & (p < 1)).all()):  # (NaN too)
            raise ValueError(f"a logit-parameterised value must lie in ({self.low}, {self.high})")
        return torch.log(p) - torch.log1p(-p)


PARAMETERIZATIONS = {"identity": Identity, "log": Log, "logit": Logit}


def check_parameterization(parameterization: Mapping[str, AbstractParameterization],
                           names: Collection[str]) -> None:
    """Every entry of ``parameterization`` names one of the hyperparameters ``names`` and is a
    parameterisation object; a misspelt name would otherwise leave its hyperparameter
    unconstrained without a word, and a string like ``"log"`` fail as an AttributeError."""
    if not isinstance(parameterization, Mapping):
        raise ValueError(f"parameterization must map hyperparameter names to Identity()/Log()/Logit(...), "
                         f"got {type(parameterization).__name__}")
    for name, entry in parameterization.items():
        if name not in names:
            raise ValueError(f"parameterization names {name!r}, which is not a hyperparameter of φ "
                             f"(φ has {', '.join(repr(n) for n in names)})")
        if not isinstance(entry, AbstractParameterization):
            hint = (f"; use {PARAMETERIZATIONS[entry].__name__}()"
                    if isinstance(entry, str) and entry in PARAMETERIZATIONS else "")
            raise ValueError(f"parameterization[{name!r}] must be a parameterisation object (Identity(), Log(), "
                             f"Logit(low, high)), got {entry!r}{hint}")


def constrain(u: Phi, parameterization: dict[str, AbstractParameterization]) -> Phi:
    check_parameterization(parameterization, u)
    return {k: parameterization.get(k, Identity()).forward(v) for k, v in u.items()}


def unconstrain(values: Phi, parameterization: dict[str, AbstractParameterization]) -> Phi:
    check_parameterization(parameterization, values)
    return {k: parameterization.get(k, Identity()).inverse(v) for k, v in values.items()}


def reparameterize(problem: BilevelProblem, parameterization: dict[str, AbstractParameterization]) -> BilevelProblem:
    """The same problem as a function of unconstrained u (φ = forward(u))."""
    if not parameterization:
        return problem
    from pinnlab.bilevel.zeroth_order import BlackBox

    if isinstance(problem, BlackBox):
        return BlackBox(lambda u: problem.objective(constrain(u, parameterization)), problem.horizon)

    def c(u):
        return constrain(u, parameterization)

    init = problem.init if not callable(problem.init) else (lambda u: problem.init(c(u)))
    inner_loss = None
    if problem.inner_loss is not None:
        def inner_loss(theta, u, t):
            return problem.inner_loss(theta, c(u), t)
    inner_split, split = problem.gradient_step, None
    if inner_split is not None:
        split = GradientStep(lambda theta, u, t: inner_split.losses(theta, c(u), t), inner_split.optimizer,
                             lambda u, t: inner_split.rate(c(u), t))
    return BilevelProblem(
        inner_step=lambda theta, state, u, t: problem.inner_step(theta, state, c(u), t),
        outer_loss=lambda theta, u: problem.outer_loss(theta, c(u)),
        init=init, horizon=problem.horizon, inner_loss=inner_loss, inner_lr=problem.inner_lr,
        gradient_step=split,
    )


