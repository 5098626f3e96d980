"""LinearDecay and Exponential factors in closed form (killed mutants: off-by-one step)."""

import pytest

from pinnlab.solvers.schedules import Constant, Exponential, LinearDecay


@pytest.mark.parametrize("step, expected", [(0, 1.0), (1, 0.9), (5, 0.5), (9, 0.1), (10, 0.0), (13, 0.0)])
def test_linear_decay_is_one_minus_step_over_total(step, expected):
    assert LinearDecay(10)(step) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("step", [0, 1, 2, 7])
def test_exponential_is_gamma_to_the_step(step):
    assert Exponential(0.5)(step) == pytest.approx(0.5**step, rel=1e-15)
    assert Exponential()(0) == 1.0  # the first step runs at the base learning rate


def test_constant_is_one():
    assert all(Constant()(s) == 1.0 for s in (0, 1, 100))
