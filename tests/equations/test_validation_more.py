"""Equation parameters outside their mathematical range are refused at construction."""

from __future__ import annotations

import math

import pytest

from pinnlab import config as C
from pinnlab.equations import HJBLin


@pytest.mark.parametrize("power", [-1.0, 0.0, 0.5, math.nan, math.inf])
def test_hjb_lin_refuses_a_power_without_a_convex_hamiltonian(power):
    with pytest.raises(ValueError, match=r"power must be finite and >= 1 .* got "):
        HJBLin(3, power=power)


@pytest.mark.parametrize("power", [1.0, 1.75, 2.0, 3.0])
def test_hjb_lin_accepts_a_convex_power(power):
    assert HJBLin(3, power=power).parameters()["power"] == power


def test_hjb_lin_power_from_a_config_is_one_config_error():
    data = {"equation": {"name": "hjb_lin", "dim": 3, "power": -1}}
    with pytest.raises(C.ConfigError, match=r"^equation\.power = -1: must be finite and >= 1 .* got -1"):
        C.build(C.validate(data))
