"""Adaptive loss-term weights (tuner baselines): LRA and ReLoBRaLo (REFERENCE.md §7)."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pinnlab._seeding import make_generator

GradientNorms = Callable[[], dict[str, tuple[float, float]]]
"""Returns, per term, (max_θ |∇_θ L_i|, mean_θ |∇_θ L_i|) of the unweighted term."""


class AbstractWeighting(abc.ABC):
    """Adapts the weights λ_i of the loss terms during training.

    The loop calls :meth:`validate` once with the term names, :meth:`init` with them
    and the configured weights (``hyperparams["weights"]``, 1 where absent: the weights
    the adaptation starts from), :meth:`weights` before
    each step (they go to ``hyperparams["weights"]``) and :meth:`update` after it, with
    the step's new parameters and batch, and per term the metric named by
    :meth:`loss_keys` (the unweighted term value by default). State is a plain dict of
    floats/lists so checkpoints can hold it.
    """

    every: int = 1

    def validate(self, names: list[str]) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` if this weighting cannot weight the terms ``names``."""

    @abc.abstractmethod
    def init(self, names: list[str], weights: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Initial state for terms ``names``, starting from ``weights`` (1 for a term
        not in it)."""

    def weights(self, state: Mapping[str, Any]) -> dict[str, float]:
        return dict(state["weights"])

    def needs_gradients(self, step: int) -> bool:
        return False

    def loss_keys(self, names: list[str], metrics: Mapping[str, Any]) -> dict[str, str]:
        """Which step metric :meth:`update` receives for each term (default: the
        unweighted term value ``loss_<name>``)."""
        return {n: f"loss_{n}" for n in names}

    @abc.abstractmethod
    def update(
        self, state: dict[str, Any], step: int, losses: Mapping[str, float],
        gradient_norms: GradientNorms, seed: int,
    ) -> dict[str, Any]:
        """New state after ``step``."""


@dataclass(frozen=True)
class LRA(AbstractWeighting):
    r"""Learning-rate annealing (Wang, Teng, Perdikaris 2021), every ``every`` steps:

    .. math::

        \hat λ_i = \frac{\max_θ |∇_θ (λ_r L_r)|}{\overline{|∇_θ (λ_i L_i)|}}, \qquad
        λ_i ← (1 − α) λ_i + α \hat λ_i

    with L_r the residual term, whose weight λ_r keeps its starting value (1 unless
    configured; REFERENCE.md §7 has λ_r = 1); the other weights start from theirs.
    Written as in REFERENCE.md §7 (λ_i inside the mean, so the fixed point is
    λ_i = sqrt(λ_r max|∇L_r| / mean|∇L_i|)).
    The gradients are taken at the parameters after the step, on the step's points,
    chunks and noise (:meth:`~pinnlab.solvers.TrainStep.term_gradients`): every
    ``every`` steps one more forward of the terms and one backward per term. An update
    where max|∇(λ_r L_r)| is exactly 0 gives no scale and leaves the weights (λ̂_i = 0
    would drop the terms, and at α = 1 divide by 0 at the next update).

    Args:
        alpha: α, the moving-average weight (0.1 in the paper).
        every: steps between updates (10 in the paper).
        reference: the term whose gradient sets the scale.
    """

    alpha: float = 0.1
    every: int = 10
    reference: str = "residual"

    def __post_init__(self):
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha = {self.alpha}: must be in (0, 1]")
        if isinstance(self.every, bool) or not float(self.every).is_integer() or self.every < 1:
            raise ValueError(f"every = {self.every}: must be a whole number >= 1")
        object.__setattr__(self, "every", int(self.every))

    def validate(self, names):
        _several_terms(self, names)
        if self.reference not in names:
            raise ValueError(
                f"LRA reference = {self.reference!r}: not a loss term of this problem "
                f"(terms: {', '.join(repr(n) for n in names)})"
            )

    def init(self, names, weights=None):
        self.validate(names)
        return {"weights": _starting_weights(names, weights)}

    def needs_gradients(self, step):
        return step % self.every == 0

    def update(self, state, step, losses, gradient_norms, seed):
        if not self.needs_gradients(step):
            return state
        norms = gradient_norms()
        weights = dict(state["weights"])
        scale = weights[self.reference] * norms[self.reference][0]
        if scale == 0:  # (the reference gradient vanished: no scale to set, every λ̂ would be 0)
            return state
        for name, (_, mean_abs) in norms.items():
            if name == self.reference or mean_abs == 0:
                continue
            target = scale / (weights[name] * mean_abs)
            weights[name] = (1 - self.alpha) * weights[name] + self.alpha * target
        return {"weights": weights}


@dataclass(frozen=True)
class ReLoBRaLo(AbstractWeighting):
    r"""Relative loss balancing with random lookback (Bischof & Kraus), m terms:

    .. math::

        λ_i^{bal}(t, t') = m \frac{\exp(L_i(t)/(τ L_i(t')))}{Σ_j \exp(L_j(t)/(τ L_j(t')))},\quad
        λ_i(t) = α[ρ λ_i(t−1) + (1−ρ) λ_i^{bal}(t, 0)] + (1 − α) λ_i^{bal}(t, t−1)

    with ρ ~ Bernoulli(``lookback``) drawn from the stream (seed, "relobralo", step) and
    λ(0) the configured weights (1 unless set). Uses loss values only (no extra backward
    passes).

    The ratios L_i(t)/L_i(t') need non-negative magnitudes. Extra terms (squared
    misfits) are; the residual loss need not be: the unbiased losses mean R̂R̂' are
    negative on some steps, and a hybrid loss changes its meaning at the switch. So the
    residual is balanced on the loss's ``loss_biased`` metric (mean R̂², of the same
    draws; identical to the residual term for :class:`~pinnlab.losses.Biased`) whenever
    the loss reports it (:meth:`loss_keys`); a negative or non-finite value is refused
    with a ``ValueError``. The weights still multiply the training terms.

    Args:
        alpha: α (0.95 in PhysicsNeMo-Sym).
        lookback: E[ρ] (0.99).
        temperature: τ (1).
    """

    alpha: float = 0.95
    lookback: float = 0.99
    temperature: float = 1.0

    def __post_init__(self):
        for name in ("alpha", "lookback"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be in [0, 1]")
        if not self.temperature > 0:
            raise ValueError(f"temperature = {self.temperature}: must be > 0")

    def validate(self, names):
        _several_terms(self, names)

    def init(self, names, weights=None):
        return {"weights": _starting_weights(names, weights), "initial": {}, "previous": {}}

    def loss_keys(self, names, metrics):
        keys = super().loss_keys(names, metrics)
        if "residual" in keys and "loss_biased" in metrics:
            keys["residual"] = "loss_biased"
        return keys

    def _balance(self, current, reference):
        names = list(current)
        logits = [current[n] / (self.temperature * max(reference[n], 1e-30)) for n in names]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        return {n: len(names) * e / total for n, e in zip(names, exps)}

    def update(self, state, step, losses, gradient_norms, seed):
        losses = {n: float(losses[n]) for n in state["weights"]}
        bad = {n: v for n, v in losses.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise ValueError(
                f"ReLoBRaLo balances ratios of term losses, which must be finite and >= 0; "
                f"at step {step + 1}: {', '.join(f'{n} = {v:.6g}' for n, v in bad.items())}. "
                "A loss that can be negative must report a non-negative 'loss_biased' "
                "metric (the residual is balanced on it); otherwise use LRA or fixed weights"
            )
        if not state["initial"]:
            return {"weights": dict(state["weights"]), "initial": losses, "previous": losses}
        generator = make_generator(seed, "relobralo", step)
        rho = float(torch.rand((), generator=generator) < self.lookback)
        from_start = self._balance(losses, state["initial"])
        from_last = self._balance(losses, state["previous"])
        weights = {
            n: self.alpha * (rho * state["weights"][n] + (1 - rho) * from_start[n])
            + (1 - self.alpha) * from_last[n]
            for n in losses
        }
        return {"weights": weights, "initial": state["initial"], "previous": losses}


def _starting_weights(names: list[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    weights = weights or {}
    out = {n: float(weights.get(n, 1.0)) for n in names}
    bad = {n: w for n, w in out.items() if not (w > 0 and math.isfinite(w))}
    if bad:
        raise ValueError("adaptive weights start from the configured ones, which must be finite and > 0: "
                         + ", ".join(f"{n} = {w:g}" for n, w in bad.items()))
    return out


def _several_terms(weighting, names) -> None:
    """LRA and ReLoBRaLo balance loss terms against each other: over the residual alone they
    run and only cost time (the config refuses them there)."""
    if len(names) < 2:
        raise ValueError(f"weighting {type(weighting).__name__}: needs more than one loss term, and this problem "
                         f"has {', '.join(map(repr, names)) or 'none'} alone (add a ConstraintLoss of a soft "
                         "constraint or a DataLoss)")
