"""Mutation audit of the unit-ball equations and the Burgers equations: the problem instance
drawn from the seed, the defaults, the published dimensions and the samplers' dtype."""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import Burgers, BurgersAffine, make_equation

F64 = torch.float64

TWO_BODY = ("poisson_two_body", "allen_cahn_two_body", "sine_gordon_two_body")
THREE_BODY = ("poisson_three_body", "allen_cahn_three_body", "sine_gordon_three_body")


@pytest.mark.parametrize("name", TWO_BODY + THREE_BODY)
def test_unit_ball_coefficients_are_the_first_normal_draws_of_the_problem_seed(name):
    """c = randn(d − 1) (two-body) or randn(d − 2) (three-body), the first draws of the
    generator of (seed, name, "coefficients"): same seed, same problem instance; a shifted
    stream or a negated c is still N(0, 1) but a different problem."""
    d, seed = 6, 11
    eq = make_equation(name, d, seed=seed)
    count = d - 1 if name in TWO_BODY else d - 2
    expected = torch.randn(count, generator=make_generator(seed, name, "coefficients"), dtype=F64)
    assert torch.equal(eq.coefficients["c"], expected)


@pytest.mark.parametrize("name", TWO_BODY + THREE_BODY)
def test_unit_ball_defaults_and_parameters(name):
    """Hard constraint and radius="uniform" by default, both reported by parameters()
    (configs and listings rebuild the instance from them); published dims 10, 100, 1000."""
    eq = make_equation(name, 4)
    assert eq.parameters() == {"constraint": "hard", "radius": "uniform"}
    assert make_equation(name, 4, radius="volume", constraint="soft").parameters() == {
        "constraint": "soft", "radius": "volume"}
    assert type(eq).published_dims == (10, 100, 1000)


def test_burgers_defaults_and_parameters():
    """Burgers-A: ν = 0.5 and the hard constraint by default; both Burgers problems were
    published at d = 5, 10, 20, 25."""
    eq = Burgers(3)
    assert eq.viscosity == 0.5 and eq.parameters() == {"constraint": "hard", "viscosity": 0.5}
    assert BurgersAffine(3).parameters() == {"constraint": "hard"}
    assert Burgers.published_dims == BurgersAffine.published_dims == (5, 10, 20, 25)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["poisson_two_body", "allen_cahn_three_body", "burgers", "burgers_affine"])
def test_samplers_return_the_requested_dtype(name, dtype):
    """Both samplers draw in the dtype asked for (the soft-constraint loss asks for the
    model's, float32 by default): unit-ball boundary points lie on the sphere ‖x‖ = 1,
    Burgers initial points at t = 0."""
    eq = make_equation(name, 3)
    g = make_generator(5, "audit-dtype")
    inside, boundary = (eq.sample_collocation(8, generator=g, dtype=dtype),
                        eq.sample_boundary(8, generator=g, dtype=dtype))
    assert inside.dtype == boundary.dtype == dtype
    assert inside.shape == boundary.shape == (8, eq.input_dim)
    if eq.domain == "unit_ball":
        torch.testing.assert_close(boundary.norm(dim=1), torch.ones(8, dtype=dtype))
        assert float(inside.norm(dim=1).max()) < 1
    else:
        assert bool((boundary[:, -1] == 0).all())
