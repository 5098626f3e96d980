"""Hybrid loss: biased first, unbiased later (hard switch, plateau switch or blend)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnlab._checks import check_integer, one_line
from pinnlab.losses.base import AbstractLoss, ResidualDraw
from pinnlab.losses.biased import Biased
from pinnlab.losses.unbiased import Unbiased2


@dataclass(frozen=True)
class SwitchAt:
    """mix = 0 before ``step``, 1 from it on: the hard switch of [RS] §2.4."""

    step: int

    def __post_init__(self):
        check_integer("SwitchAt.step", self.step, minimum=0)

    def mix(self, step: int) -> float:
        return float(step >= self.step)

    def starts_within(self, steps: int) -> bool:
        """Whether the mix is above 0 at some step of a run of ``steps`` (0 … steps − 1)."""
        return self.step < steps


@dataclass(frozen=True)
class Blend:
    """mix rises linearly from 0 at ``start`` to 1 at ``end`` (a differentiable relaxation)."""

    start: int
    end: int

    def __post_init__(self):
        check_integer("Blend.start", self.start, minimum=0)
        check_integer("Blend.end", self.end, minimum=0)
        if self.end <= self.start:
            raise ValueError(f"Blend needs end > start, got start={self.start}, end={self.end}")

    def mix(self, step: int) -> float:
        return min(1.0, max(0.0, (step - self.start) / (self.end - self.start)))

    def starts_within(self, steps: int) -> bool:
        """Whether the mix is above 0 at some step of a run of ``steps`` (from start + 1)."""
        return self.start < steps - 1


@dataclass(frozen=True)
class Piecewise:
    """mix = ``values[j]`` on the j-th of ``len(values)`` equal segments of ``total`` steps.

    The schedule a tuned mix followed during bilevel tuning, replayed over a solve of
    ``total`` steps (``pinnlab tune`` writes it this way).
    """

    values: tuple[float, ...]
    total: int

    def __post_init__(self):
        if not self.values or self.total < 1:
            raise ValueError("Piecewise needs at least one value and total >= 1")
        if any(not 0 <= v <= 1 for v in self.values):
            raise ValueError(f"Piecewise mix values must lie in [0, 1], got {self.values}")

    def mix(self, step: int) -> float:
        j = min(len(self.values) - 1, step * len(self.values) // self.total)
        return float(self.values[j])

    def starts_within(self, steps: int) -> bool:
        """Whether the mix is above 0 at some step of a run of ``steps``: some segment with
        a value above 0 starts before it ends (segment j's first step is ⌈j·total/n⌉)."""
        n = len(self.values)
        return any(value > 0 and -(-j * self.total // n) < steps for j, value in enumerate(self.values))


@dataclass
class PlateauState:
    """Running state of :class:`SwitchOnPlateau` (saved in checkpoints)."""

    ema: float = math.nan
    best: float = math.inf
    best_step: int = 0
    switched_at: int | None = None


@dataclass(frozen=True)
class SwitchOnPlateau:
    """Switch when the biased loss stops improving.

    Criterion: the biased loss is smoothed by an exponential moving average with
    weight ``1/window`` per step; the switch happens at the first step where the best
    smoothed value has not improved by more than a relative ``tolerance`` for
    ``window`` consecutive steps (and at least ``min_step`` steps have passed). This
    formalises [RS]'s hand-picked "when the loss of the biased algorithm ceases to
    decrease".

    Args:
        window: steps without relative improvement > tolerance before switching.
        tolerance: a relative improvement must exceed it to count as progress.
        min_step: never switch earlier than this.
    """

    window: int = 500
    tolerance: float = 0.01
    min_step: int = 0

    def __post_init__(self):
        check_integer("SwitchOnPlateau.window", self.window, minimum=1)
        tolerance = self.tolerance  # (a string or None: a bare TypeError at the first step otherwise)
        if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 <= tolerance < 1:
            raise ValueError(
                f"SwitchOnPlateau needs 0 <= tolerance < 1 (a relative improvement), "
                f"got {self.tolerance!r}"
            )
        check_integer("SwitchOnPlateau.min_step", self.min_step, minimum=0)

    def init(self) -> PlateauState:
        return PlateauState()

    def observe(self, state: PlateauState, step: int, loss: float) -> PlateauState:
        """Update the state with the biased loss of ``step``; sets ``switched_at``."""
        if state.switched_at is not None or not math.isfinite(loss):
            return state
        alpha = 1.0 / self.window
        ema = loss if math.isnan(state.ema) else (1 - alpha) * state.ema + alpha * loss
        best, best_step = state.best, state.best_step
        if ema < best * (1 - self.tolerance):
            best, best_step = ema, step
        switched = None
        if step - best_step >= self.window and step >= self.min_step:
            switched = step + 1
        return PlateauState(ema, best, best_step, switched)

    def mix(self, step: int, state: PlateauState) -> float:
        return float(state.switched_at is not None and step >= state.switched_at)

    def starts_within(self, steps: int) -> bool:
        """Whether the switch can happen within a run of ``steps``: the earliest takes
        effect at step max(window, min_step) + 1."""
        return max(self.window, self.min_step) < steps - 1


Switch = SwitchAt | Blend | SwitchOnPlateau | Piecewise


@dataclass(frozen=True)
class Hybrid(AbstractLoss):
    r"""(1 − β)·L_first + β·L_then with β ∈ [0, 1] from a switch policy (REFERENCE.md §2.4).

    [RS]'s hybrid is a hard switch from the biased loss to an unbiased one; the same
    optimizer state and learning-rate schedule continue across the switch. β = 0 or 1
    computes only one loss; a fractional or tensor β (blend, or tuned by the bilevel
    layer) computes both.

    Args:
        first: the loss before the switch (default :class:`Biased`).
        then: the loss after it (default :class:`Unbiased2`; use ``Unbiased1`` for
            equations with non-polynomial terms such as Sine–Gordon).
        switch: :class:`SwitchAt`, :class:`SwitchOnPlateau`, :class:`Blend` or
            :class:`Piecewise` (default ``SwitchAt(5000)``: the biased loss for steps
            0–4999, the unbiased one from step 5000; a config's hybrid loss always
            names its switch).
    """

    switch: Switch = SwitchAt(5000)
    first: AbstractLoss = field(default_factory=Biased)
    then: AbstractLoss = field(default_factory=Unbiased2)

    def __post_init__(self):
        if not callable(getattr(self.switch, "mix", None)):
            hint = (
                f"; for a hard switch at step {self.switch} use switch=SwitchAt({self.switch})"
                if isinstance(self.switch, numbers.Integral) and not isinstance(self.switch, bool)
                else ""
            )
            raise TypeError(
                "Hybrid.switch must be a switch policy (SwitchAt, SwitchOnPlateau, Blend or "
                f"Piecewise), got {type(self.switch).__name__} {self.switch!r}{hint}"
            )

        for name in ("first", "then"):
            if not isinstance(getattr(self, name), AbstractLoss):  # ("unbiased1": "no attribute 'validate'")
                raise TypeError(f"Hybrid.{name} must be a loss instance (e.g. Unbiased1()), got "
                                f"{one_line(repr(getattr(self, name)))}"[:200])

    def validate(self, equation) -> None:
        self.first.validate(equation)
        self.then.validate(equation)

    def __call__(self, draw: ResidualDraw, mix: float | Tensor = 0.0):
        if isinstance(mix, numbers.Real) and mix <= 0:  # (numpy numbers too; a Tensor is no Real)
            loss, metrics = self.first(draw)
        elif isinstance(mix, numbers.Real) and mix >= 1:
            loss, metrics = self.then(draw)
        else:
            a, ma = self.first(draw)
            b, mb = self.then(draw)
            loss = (1 - mix) * a + mix * b
            metrics = {**mb, **ma}
        metrics["mix"] = torch.as_tensor(mix, dtype=loss.dtype).detach()
        return loss, metrics
