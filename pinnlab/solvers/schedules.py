"""Learning-rate schedules: step ↦ factor multiplying the base learning rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    """factor = 1."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class LinearDecay:
    """factor = 1 − step/total_steps (to 0 at the end), the AC/SG protocol of [RS].

    It decays over a run of ``total_steps`` steps (its last step, ``total_steps`` − 1,
    at factor 1/total_steps); :func:`~pinnlab.solvers.train` refuses it for a longer run,
    whose steps from ``total_steps`` on would train at learning rate 0.

    Args:
        total_steps: the step at which the factor reaches 0.
    """

    total_steps: int

    def __post_init__(self):
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {self.total_steps!r}")

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.total_steps)


@dataclass(frozen=True)
class Exponential:
    """factor = γ^step (γ = 0.9995 in the FP/HJB/Burgers protocol of [RS])."""

    gamma: float = 0.9995

    def __post_init__(self):
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")

    def __call__(self, step: int) -> float:
        return self.gamma**step
