"""Third mutation audit of the unit-ball and Burgers equations: the samplers' default dtype
(float32, the models' default) and the viscosity stored as a Python float."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import Burgers, make_equation


@pytest.mark.parametrize("name", ["poisson_two_body", "sine_gordon_three_body", "burgers", "burgers_affine"])
def test_samplers_draw_float32_by_default(name):
    """Without ``dtype`` both samplers return float32 points, the dtype of a default
    model's parameters (the signatures' default), not float64 at twice the memory."""
    eq = make_equation(name, 3)
    g = make_generator(2, "audit-default-dtype")
    inside, boundary = eq.sample_collocation(5, generator=g), eq.sample_boundary(5, generator=g)
    assert inside.dtype == boundary.dtype == torch.float32
    assert inside.shape == boundary.shape == (5, eq.input_dim)


def test_burgers_viscosity_is_stored_as_a_python_float():
    """A NumPy scalar ν (a numbers.Real that is not a float, e.g. read from an array) is
    stored as float(ν): parameters() go into result files as JSON, where np.float32 fails;
    an int ν is stored as a float too."""
    eq = Burgers(3, viscosity=np.float32(0.25))
    assert type(eq.viscosity) is float and eq.viscosity == 0.25
    assert json.dumps(eq.parameters()) == '{"constraint": "hard", "viscosity": 0.25}'
    assert type(Burgers(3, viscosity=2).parameters()["viscosity"]) is float
