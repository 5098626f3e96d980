"""Mutation audit of pinnlab/bilevel/base.py and parameterization.py: what the other tests left open.

An empty φ is refused as the TypeError check_phi states (not a StopIteration from the
device look-up), the CPU memory diagnostic is in bytes (Linux reports ru_maxrss in KiB),
``diagnostics["seconds"]`` is the wall time of the estimate unless the estimator set its
own, and ``Logit()`` without bounds maps onto (0, 1).
"""

from __future__ import annotations

import math
import sys
import time

import pytest
import torch

from pinnlab.bilevel import ReverseUnroll, hypergradient
from pinnlab.bilevel.base import AbstractHypergradient, HypergradientResult, peak_memory_bytes
from pinnlab.bilevel.parameterization import Logit

from .bilevel.problems import F64, Ridge


class _Sleeper(AbstractHypergradient):
    """An estimator whose estimate takes ``pause`` seconds and may report its own seconds."""

    name = "sleeper"

    def __init__(self, pause=0.0, own=None):
        self.pause, self.own = pause, own

    def estimate(self, problem, phi, *, start=0, init=None, seed=0, outer_step=0):
        time.sleep(self.pause)
        diagnostics = {} if self.own is None else {"seconds": self.own}
        return HypergradientResult(grad={k: torch.zeros_like(v) for k, v in phi.items()}, diagnostics=diagnostics)


def test_an_empty_phi_is_refused_as_a_type_error():
    """φ = {} has no hyperparameter (and no device to time the call on): the TypeError of
    check_phi, before any estimate, not a StopIteration from reading φ's device."""
    problem = Ridge(features=2).problem(horizon=1)
    with pytest.raises(TypeError, match="φ must be a non-empty dict of tensors"):
        hypergradient(problem, {}, ReverseUnroll())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_cpu_peak_memory_is_in_bytes():
    """On Linux ru_maxrss is in KiB: peak_memory_bytes() is about the kernel's VmHWM (peak
    RSS, KiB) times 1024, read before it (it never falls), not the KiB count, 1/1024 of it.
    Half is the bound: ru_maxrss may exceed VmHWM (it keeps a peak from before an exec),
    and a sandboxed kernel was seen to report it 0.1 % below."""

    def vmhwm_bytes():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    before = vmhwm_bytes()
    assert peak_memory_bytes() >= before / 2 > 10 * 1024 * 1024


def test_seconds_is_the_wall_time_of_the_estimate():
    """An estimate that sleeps 0.05 s is timed at ≥ 0.05 s (and well under 5 s)."""
    problem = Ridge(features=2).problem(horizon=1)
    phi = {"log_reg": torch.zeros(2, dtype=F64)}
    seconds = hypergradient(problem, phi, _Sleeper(pause=0.05)).diagnostics["seconds"]
    assert 0.05 <= seconds < 5.0


def test_an_estimators_own_seconds_is_kept():
    """An estimator that reports its own ``seconds`` keeps it: the call's timing only fills
    in a missing entry."""
    problem = Ridge(features=2).problem(horizon=1)
    phi = {"log_reg": torch.zeros(2, dtype=F64)}
    result = hypergradient(problem, phi, _Sleeper(own=123.0))
    assert result.diagnostics["seconds"] == 123.0
    assert result.diagnostics["rss_increase_bytes"] >= 0


def test_logit_without_bounds_maps_onto_0_1():
    """Logit() is sigmoid (mix weights): forward(0) = 1/2, forward(log 3) = 3/4, and
    inverse(1/4) = −log 3; a value of 1 (the upper bound) is refused."""
    par = Logit()
    assert (par.low, par.high) == (0.0, 1.0)
    assert float(par.forward(torch.tensor(0.0, dtype=F64))) == 0.5
    torch.testing.assert_close(par.forward(torch.tensor(math.log(3.0), dtype=F64)),
                               torch.tensor(0.75, dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(par.inverse(torch.tensor(0.25, dtype=F64)),
                               torch.tensor(-math.log(3.0), dtype=F64), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match=r"must lie in \(0\.0, 1\.0\)"):
        par.inverse(torch.tensor([0.5, 1.0], dtype=F64))
