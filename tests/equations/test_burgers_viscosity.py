"""Burgers at a viscosity other than the default 0.5 (where 2ν = 1 hides slips)."""
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import Burgers
from pinnlab.estimators import Autograd
from pinnlab.nets import Pointwise

F64 = torch.float64


@pytest.mark.parametrize("nu", [0.3, 1.7])
def test_exact_solution_solves_burgers_at_any_viscosity(nu):
    """u = 1/(1+exp((Σx − d t/2)/(2ν))) solves u_t + uΣ∂_iu − νΔu = 0 for every ν (autograd, float64)."""
    eq = Burgers(4, seed=0, constraint="soft", viscosity=nu)
    x = eq.sample_collocation(64, generator=make_generator(0, "x"), dtype=F64)
    residual = eq.residual(x, lambda q: Autograd().estimate(Pointwise(eq.exact), x, q))
    assert float(residual.abs().max()) < 1e-10


@pytest.mark.parametrize("nu", [0.3, 1.7])
def test_exact_solution_matches_the_closed_form_and_the_ansatz_initial_condition(nu):
    eq = Burgers(3, seed=0, viscosity=nu)
    x = eq.sample_collocation(32, generator=make_generator(1, "x"), dtype=F64)
    s = x[:, :-1].sum(-1) - 1.5 * x[:, -1]
    torch.testing.assert_close(eq.exact(x), 1 / (1 + torch.exp(s / (2 * nu))), rtol=1e-13, atol=1e-14)
    x0 = eq.sample_boundary(32, generator=make_generator(2, "x"), dtype=F64)
    scale, shift = eq.ansatz_jets(x0)
    torch.testing.assert_close(shift.value, eq.exact(x0), rtol=1e-13, atol=1e-14)
