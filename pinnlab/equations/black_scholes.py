"""Black–Scholes–Barenblatt equation ([STDE], FBSNN)."""

from __future__ import annotations

import math

import torch

from pinnlab._checks import check_finite, check_positive
from pinnlab.equations.base import AbstractEquation
from pinnlab.equations.fields import Jet
from pinnlab.equations.terms import (
    TIME_DERIVATIVE,
    VALUE,
    Term,
    directional,
    weighted_laplacian,
)


def _space(x, coefficients):
    return x[:, :-1]


def _space_squared(x, coefficients):
    return x[:, :-1] ** 2


X_DOT_GRADIENT = directional(_space, label="x·∇u")
X2_HESSIAN = weighted_laplacian(_space_squared, label="Σ x_i² ∂_ii u")


class BlackScholesBarenblatt(AbstractEquation):
    r"""u_t + ½σ_B² Σ_i x_i² ∂_ii u − r(u − x·∇u) = 0, u(x, T) = ‖x‖² (REFERENCE.md §3.7).

    Exact u = exp((r + σ_B²)(T − t))·‖x‖² (r = 0.05, σ_B = 0.4, T = 1 as in FBSNN).
    Linear: the weighted Hessian diagonal Σ x_i² ∂_ii u and the contraction x·∇u are
    estimated in O(K·d) per point without forming the gradient or Hessian. Hard
    constraint u = (T − t)·u_σ + ‖x‖². Samplers (our choice, documented): t ~ U(0, T),
    x_i ~ U(0, 2) i.i.d., a box around FBSNN's initial point (1, 0.5, 1, 0.5, …);
    ``sample_boundary`` is t = T.
    """

    name = "black_scholes_barenblatt"
    time_dependent = True
    published_dims = (100, 1000, 10000)

    def __init__(self, dim, *, seed=0, constraint="hard", rate: float = 0.05,
                 volatility: float = 0.4, horizon: float = 1.0):
        check_finite("rate", rate)  # (an infinite rate made u* NaN at t = T and 0 before)
        check_positive("volatility", volatility)
        check_positive("horizon", horizon)
        self.rate, self.volatility, self.horizon = float(rate), float(volatility), float(horizon)
        super().__init__(dim, seed=seed, constraint=constraint)
        # u* peaks at t = 0, x = (2, …, 2) (or at t = T when r + σ_B² ≤ 0): beyond float64's
        # range the reference is inf at test points in any dtype and every relative error NaN
        growth = self.rate + self.volatility * self.volatility
        log_peak = max(growth, 0.0) * self.horizon + math.log(4 * self.dim)
        if not log_peak <= math.log(torch.finfo(torch.float64).max):
            raise ValueError(
                f"rate = {rate:g}, volatility = {volatility:g}, horizon = {horizon:g}: the exact solution "
                f"exp((rate + volatility²)(horizon − t))·‖x‖² reaches exp({log_peak:.4g}) at t = 0 "
                f"(x up to 2 in each of the {self.dim} coordinates), beyond float64's 1.8e308; lower them")

    def parameters(self):
        return {**super().parameters(), "rate": self.rate, "volatility": self.volatility,
                "horizon": self.horizon}

    @property
    def time_interval(self):
        return (0.0, self.horizon)

    def terms(self):
        r, s = self.rate, self.volatility
        return (
            Term(1.0, (TIME_DERIVATIVE,)),
            Term(0.5 * s * s, (X2_HESSIAN,)),
            Term(-r, (VALUE,)),
            Term(r, (X_DOT_GRADIENT,)),
        )

    def exact(self, x, coefficients=None):
        k = self.rate + self.volatility**2
        return torch.exp(k * (self.horizon - x[:, -1])) * (x[:, :-1] ** 2).sum(-1)

    def ansatz(self, x, coefficients):
        grad = torch.zeros_like(x)
        grad[:, -1] = -1
        space = x[:, :-1]
        zero = torch.zeros_like(x[:, :1])
        return (
            Jet(self.horizon - x[:, -1], grad, None),
            Jet((space**2).sum(-1), torch.cat([2 * space, zero], 1),
                torch.cat([torch.full_like(space, 2.0), zero], 1)),
        )

    def _box(self, n, generator, dtype):
        """`(n, D)` points with x_i ~ U(0, 2) drawn into the first d columns (the same
        numbers as 2·torch.rand(n, d): uniforms are drawn one by one in row order, and
        doubling is exact); the time column is left for the caller. One (n, D) array,
        not three: a 2,000-point float64 test set is 1.6 GB at d = 10⁵."""
        out = torch.empty(n, self.dim + 1, device=generator.device, dtype=dtype)
        torch.rand(n, self.dim, generator=generator, out=out[:, :-1]).mul_(2)
        return out

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        out = self._box(n, generator, dtype)
        out[:, -1:] = self.horizon * torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return out

    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        out = self._box(n, generator, dtype)
        out[:, -1] = self.horizon
        return out
