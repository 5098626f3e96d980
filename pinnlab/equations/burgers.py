"""Viscous Burgers equations in d dimensions: the preprint's logistic and the code's affine."""

from __future__ import annotations

import torch

from pinnlab._checks import check_positive
from pinnlab.equations.base import AbstractEquation
from pinnlab.equations.fields import Jet
from pinnlab.equations.terms import LAPLACIAN, TIME_DERIVATIVE, VALUE, Term, directional


def _ones(x, coefficients):
    return x.new_ones(x.shape[1] - 1)


SUM_OF_PARTIALS = directional(_ones, label="Σ_i ∂_i u")


def _time_scale(x):
    grad = torch.zeros_like(x)
    grad[:, -1] = 1
    return Jet(x[:, -1], grad, None)


class Burgers(AbstractEquation):
    r"""Burgers-A ([RS] eqs. 41–43, Table 4): u_t + u·Σ_i ∂_i u − νΔu = 0, ν = 0.5.

    Exact u = 1/(1 + exp((Σ_i x_i − d·t/2)/(2ν))). Hard constraint
    u = t·u_σ + 1/(1 + exp(Σ_i x_i/(2ν))) (the initial condition), with the logistic's
    gradient and diagonal Hessian in closed form. Samplers: t ~ U(0, 1),
    x ~ N(t·1, (2 − t)I); ``sample_boundary`` is t = 0. The nonlinearity u·Σ∂_i u is a
    product of a value and a contraction: unbiased2 draws them from two groups.
    """

    name = "burgers"
    time_dependent = True
    time_interval = (0.0, 1.0)
    published_dims = (5, 10, 20, 25)

    def __init__(self, dim, *, seed=0, constraint="hard", viscosity: float = 0.5):
        check_positive("viscosity", viscosity)  # (an infinite one put −inf·Δu in the residual)
        self.viscosity = float(viscosity)
        super().__init__(dim, seed=seed, constraint=constraint)

    def parameters(self):
        return {**super().parameters(), "viscosity": self.viscosity}

    def terms(self):
        return (
            Term(1.0, (TIME_DERIVATIVE,)),
            Term(1.0, (VALUE, SUM_OF_PARTIALS)),
            Term(-self.viscosity, (LAPLACIAN,)),
        )

    def exact(self, x, coefficients=None):
        s = x[:, :-1].sum(-1) - 0.5 * self.dim * x[:, -1]
        return torch.sigmoid(-s / (2 * self.viscosity))

    def ansatz(self, x, coefficients):
        nu = self.viscosity
        b = torch.sigmoid(-x[:, :-1].sum(-1) / (2 * nu))
        slope = (-b * (1 - b) / (2 * nu))[:, None]
        curvature = ((1 - 2 * b) * b * (1 - b) / (4 * nu**2))[:, None]
        zero = torch.zeros_like(x[:, :1])
        ones = torch.ones_like(x[:, :-1])
        return _time_scale(x), Jet(
            b, torch.cat([slope * ones, zero], 1), torch.cat([curvature * ones, zero], 1)
        )

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        t = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return self._at(t, generator)

    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        return self._at(torch.zeros(n, 1, device=generator.device, dtype=dtype), generator)

    def _at(self, t, generator):
        z = torch.randn(t.shape[0], self.dim, generator=generator, device=t.device, dtype=t.dtype)
        # in place (the values of t + sqrt(2 − t)·z): z and the output, not four (n, d) arrays
        return torch.cat([z.mul_(torch.sqrt(2 - t)).add_(t), t], dim=1)


class BurgersAffine(AbstractEquation):
    r"""Burgers-B (the official code's problem): u_t + u·(1/d)Σ_i ∂_i u − Δu = 0.

    Exact u = (Σ_i x_i + 1)/(1 + t), affine in x. Hard constraint u = t·u_σ + Σ_i x_i + 1;
    samplers t ~ U(0, 1), x ~ N(0, 2(1 − t)I); ``sample_boundary`` is t = 0.
    """

    name = "burgers_affine"
    time_dependent = True
    time_interval = (0.0, 1.0)
    published_dims = (5, 10, 20, 25)

    def terms(self):
        return (
            Term(1.0, (TIME_DERIVATIVE,)),
            Term(1.0 / self.dim, (VALUE, SUM_OF_PARTIALS)),
            Term(-1.0, (LAPLACIAN,)),
        )

    def exact(self, x, coefficients=None):
        return (x[:, :-1].sum(-1) + 1) / (1 + x[:, -1])

    def ansatz(self, x, coefficients):
        grad = torch.cat([torch.ones_like(x[:, :-1]), torch.zeros_like(x[:, :1])], 1)
        return _time_scale(x), Jet(x[:, :-1].sum(-1) + 1, grad, None)

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        t = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return self._at(t, generator)

    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        return self._at(torch.zeros(n, 1, device=generator.device, dtype=dtype), generator)

    def _at(self, t, generator):
        z = torch.randn(t.shape[0], self.dim, generator=generator, device=t.device, dtype=t.dtype)
        return torch.cat([z.mul_(torch.sqrt(2 * (1 - t))), t], dim=1)  # in place: z and the output
