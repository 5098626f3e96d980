"""A wall-clock budget for a loop of similar units of work (outer steps, search trials)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

_now = time.perf_counter


class Budget:
    """Start a unit only if it is expected to end within ``seconds``.

    The expected length of the next unit is the mean of the finished ones (elapsed time
    over units done, so the bookkeeping between units counts too). The first unit always
    runs. Stopping only *after* the unit that crossed the budget, as a plain "time left?"
    check does, overshoots by up to one unit, which favours methods with long units: a
    search trial of 500 training steps took 3–5 s against a 15 s budget, an outer step
    of a hypergradient method 0.1–0.5 s. With this rule every method ends within its
    budget (up to the spread of its unit lengths) and leaves at most one unit unused.

    ``seconds=None`` never stops. ``spent`` and ``units`` carry a resumed loop's earlier
    time and finished units over (a checkpoint stores :meth:`state`), so an interrupted
    run gets the same budget as an uninterrupted one. ``clock`` (default
    :func:`time.perf_counter`) is for tests.
    """

    def __init__(self, seconds: float | None, clock: Callable[[], float] | None = None, *,
                 spent: float = 0.0, units: int = 0):
        self.seconds = seconds
        self.clock = clock or _now
        self.began = self.clock() - spent
        self.units = units

    def spent(self) -> float:
        """Seconds used so far (including a resumed run's earlier ones)."""
        return self.clock() - self.began

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps: ``Budget(seconds, **state)`` resumes it."""
        return {"spent": self.spent(), "units": self.units}

    @staticmethod
    def state_fits(state: dict, units: int) -> bool:
        """Whether ``state`` is a :meth:`state` of a loop that finished ``units`` units: a
        finite float ``spent`` >= 0 and those ``units``, an int (a resume checks a checkpoint's)."""
        spent, done = state.get("spent"), state.get("units")
        return (set(state) == {"spent", "units"} and isinstance(spent, float) and math.isfinite(spent)
                and spent >= 0 and type(done) is int and done == units)

    def allows_another(self) -> bool:
        if self.seconds is None or self.units == 0:
            return True
        elapsed = self.clock() - self.began
        return elapsed * (self.units + 1) / self.units <= self.seconds

    def finished_one(self) -> None:
        self.units += 1
