"""Unit-ball problems (a radial error profile, a slice over [−1, 1]² with the others at 0)
are the equations that declare ``domain = "unit_ball"``: the result file used to look for
an attribute named ``radius`` (the built-in family's radius law), which a user's unit-ball
equation need not have and an unrelated equation may."""

from __future__ import annotations

import h5py
import pytest
import torch

from pinnlab.cli import main
from pinnlab.equations import EQUATIONS, make_equation, register
from pinnlab.io.results import is_unit_ball, plan_slice
from tests.equations.conftest import load_example

BUILT_IN = sorted(EQUATIONS)  # at import: before any test registers its own
_SinePoisson = load_example().SinePoisson  # the README's equation, which declares its domain
EQUATIONS.pop(_SinePoisson.name)  # (registered by the import; the tests register their own)


class BallSine(_SinePoisson):
    name = "ball_sine"
    domain = "unit_ball"


class CubeWithRadius(_SinePoisson):
    """Not a unit-ball problem, though it has an attribute ``radius`` (of something else)."""

    name = "cube_with_radius"
    domain = None
    radius = 0.5


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_registered_equation_keeps_its_classification(name):
    """Same answer as the rule it replaces, hasattr(equation, "radius") and not
    time_dependent: the six unit-ball equations, and no other."""
    eq = make_equation(name, max(3, EQUATIONS[name].min_dim))
    old = hasattr(eq, "radius") and not eq.time_dependent
    assert is_unit_ball(eq) == old == name.endswith("_body")


def test_the_declared_domain_decides_not_an_attribute_named_radius():
    assert is_unit_ball(BallSine(3)) and not hasattr(BallSine(3), "radius")
    assert not is_unit_ball(CubeWithRadius(3))
    grid = plan_slice(BallSine(3), torch.full((10, 3), 0.5))
    assert grid.base.tolist() == [0.0, 0.0, 0.0] and grid.grid_a[[0, -1]].tolist() == [-1.0, 1.0]


def test_a_custom_unit_ball_equation_gets_the_radial_group(tmp_path):
    """`pinnlab solve` of a registered unit-ball equation without ``radius``: /radial,
    /eval/radius and a slice with the other coordinates at 0; the equation with an
    unrelated ``radius`` gets none of them."""
    register(BallSine)
    register(CubeWithRadius)
    config = tmp_path / "c.yaml"
    config.write_text("equation: {name: NAME, dim: 4}\nmodel: {width: 8, depth: 2}\nestimator: {samples: 4}\n"
                      "trainer: {steps: 2, eval_every: 2, test_points: 50, batch_size: 8}\n")
    for name, ball in (("ball_sine", True), ("cube_with_radius", False)):
        out = tmp_path / f"{name}.h5"
        assert main(["solve", str(config), f"equation.name={name}", "-o", str(out), "--progress", "off"]) == 0
        with h5py.File(out, "r") as fh:
            assert ("radial" in fh) == ball and ("radius" in fh["eval"]) == ball
            assert fh["slices/main"].attrs["others"] == ("zero" if ball else "median")
            if ball:
                assert fh["radial/count"][()].sum() == 50
