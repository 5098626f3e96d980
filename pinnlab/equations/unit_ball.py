"""Poisson, Allen–Cahn and Sine–Gordon on the unit ball with two- and three-body solutions."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pinnlab.equations.base import AbstractEquation
from pinnlab.equations.fields import ZERO, Jet
from pinnlab.equations.terms import LAPLACIAN, VALUE, Coefficients, Nonpolynomial, Term

RadiusLaw = Literal["uniform", "volume"]


class _UnitBall(AbstractEquation):
    r"""Shared domain, sampler, ansatz and exact solutions (REFERENCE.md §3.1).

    Domain B^d = {‖x‖ < 1}, u = 0 on the sphere, imposed by u = (1 − ‖x‖²)·u_σ.
    Samplers: x = r·z/‖z‖, z ~ N(0, I); ``radius="uniform"`` draws r ~ U(0, 1) as all
    RS-PINN/SDGD/HTE/STDE experiments do (despite "uniformly" in the text);
    ``radius="volume"`` draws r = U^{1/d}, uniform in volume (DeepXDE's Hypersphere),
    which puts almost every point next to the sphere when d is large.

    Exact solutions u* = (1 − ‖x‖²)·u₂ with c_i ~ N(0, 1) from the problem seed:
    two-body u₂ = Σ_{i<d} c_i sin(x_i + cos x_{i+1} + x_{i+1} cos x_i),
    three-body u₂ = Σ_{i<d−1} c_i exp(x_i x_{i+1} x_{i+2}); the forcing uses
    Δu* = (1 − ‖x‖²)Δu₂ − 4x·∇u₂ − 2d·u₂ in closed form, O(N·d).
    """

    published_dims = (10, 100, 1000)
    domain = "unit_ball"
    body: str

    def __init__(self, dim: int, *, seed: int = 0, constraint="hard", radius: RadiusLaw = "uniform"):
        if radius not in ("uniform", "volume"):
            raise ValueError(f"radius must be 'uniform' or 'volume', got {radius!r}")
        self.radius = radius
        super().__init__(dim, seed=seed, constraint=constraint)

    def parameters(self):
        return {**super().parameters(), "radius": self.radius}

    def draw_coefficients(self, generator):
        count = self.dim - (1 if self.body == "two_body" else 2)
        return {"c": torch.randn(count, generator=generator, dtype=torch.float64)}

    # -- samplers ------------------------------------------------------------------
    def _directions(self, n, generator, dtype):
        # in place (the same values as z / ‖z‖ and r·direction): one (n, d) array at a
        # time, not two (a 2,000-point float64 test set is 1.6 GB at d = 10⁵)
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        return z.div_(z.norm(dim=1, keepdim=True))

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        direction = self._directions(n, generator, dtype)
        r = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        if self.radius == "volume":
            r = r ** (1.0 / self.dim)
        return direction.mul_(r)

    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        return self._directions(n, generator, dtype)

    # -- solution ------------------------------------------------------------------
    def ansatz(self, x: Tensor, coefficients: Coefficients) -> tuple[Jet, Jet]:
        two = torch.full_like(x, -2.0)
        return Jet(1 - (x * x).sum(-1), -2 * x, two), ZERO

    def _body_terms(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(u₂, x·∇u₂, Δu₂), each `(N,)`."""
        if self.body == "two_body":
            xi, xn = x[:, :-1], x[:, 1:]
            # x_i and x_{i+1} are the same columns shifted by one: cos and sin once per column
            # (2 transcendental passes over (N, D) instead of 7 over (N, D − 1)), same values
            cos_x, sin_x = torch.cos(x), torch.sin(x)
            cos_i, cos_n = cos_x[:, :-1], cos_x[:, 1:]
            a = xi + cos_n + xn * cos_i
            da_i = 1 - xn * sin_x[:, :-1]
            da_n = cos_i - sin_x[:, 1:]
            d2a_i = -xn * cos_i
            d2a_n = -cos_n
            sin_a, cos_a = torch.sin(a), torch.cos(a)
            u2 = sin_a @ c
            x_grad = (cos_a * (xi * da_i + xn * da_n)) @ c
            lap = (-sin_a * (da_i**2 + da_n**2) + cos_a * (d2a_i + d2a_n)) @ c
            return u2, x_grad, lap
        x0, x1, x2 = x[:, :-2], x[:, 1:-1], x[:, 2:]
        p = x0 * x1 * x2
        e = torch.exp(p)
        q = (x1 * x2) ** 2 + (x0 * x2) ** 2 + (x0 * x1) ** 2
        return e @ c, (3 * p * e) @ c, (e * q) @ c

    def _body_value(self, x: Tensor, c: Tensor) -> Tensor:
        """u₂ alone, `(N,)`: the value of :meth:`_body_terms` by the same operations, without
        the derivatives' temporaries (a third of the work for the two-body solution)."""
        if self.body == "two_body":
            cos_x = torch.cos(x)
            return torch.sin(x[:, :-1] + cos_x[:, 1:] + x[:, 1:] * cos_x[:, :-1]) @ c
        return torch.exp(x[:, :-2] * x[:, 1:-1] * x[:, 2:]) @ c

    def exact_with_laplacian(self, x: Tensor, coefficients: Coefficients | None = None):
        """(u*, Δu*) in closed form."""
        c = self._merge(x, coefficients)["c"]
        u2, x_grad, lap2 = self._body_terms(x, c)
        u1 = 1 - (x * x).sum(-1)
        return u1 * u2, u1 * lap2 - 4 * x_grad - 2 * self.dim * u2

    def exact(self, x, coefficients=None):
        c = self._merge(x, coefficients)["c"]
        return (1 - (x * x).sum(-1)) * self._body_value(x, c)


class _TwoBody(_UnitBall):
    body = "two_body"
    min_dim = 2


class _ThreeBody(_UnitBall):
    body = "three_body"
    min_dim = 3


class _Poisson:
    """Δu = f."""

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)),)

    def source(self, x, coefficients):
        return self.exact_with_laplacian(x, coefficients)[1]


class _AllenCahn:
    """Δu + u − u³ = f: a cubic nonlinearity (unbiased2 needs 3 groups per residual)."""

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)), Term(1.0, (VALUE,)), Term(-1.0, (VALUE, VALUE, VALUE)))

    def source(self, x, coefficients):
        u, lap = self.exact_with_laplacian(x, coefficients)
        return lap + u - u**3


class _SineGordon:
    """Δu + sin u = f: sin u has no unbiased estimate (unbiased1 only)."""

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)), Nonpolynomial(torch.sin, VALUE, label="sin u"))

    def source(self, x, coefficients):
        u, lap = self.exact_with_laplacian(x, coefficients)
        return lap + torch.sin(u)


class PoissonTwoBody(_Poisson, _TwoBody):
    """Poisson Δu = f on the unit ball, two-body exact solution."""

    name = "poisson_two_body"


class AllenCahnTwoBody(_AllenCahn, _TwoBody):
    """Allen–Cahn Δu + u − u³ = f on the unit ball, two-body exact solution ([RS] Table 5)."""

    name = "allen_cahn_two_body"


class SineGordonTwoBody(_SineGordon, _TwoBody):
    """Sine–Gordon Δu + sin u = f on the unit ball, two-body exact solution ([RS] Table 5)."""

    name = "sine_gordon_two_body"


class PoissonThreeBody(_Poisson, _ThreeBody):
    """Poisson Δu = f on the unit ball, three-body exact solution."""

    name = "poisson_three_body"


class AllenCahnThreeBody(_AllenCahn, _ThreeBody):
    """Allen–Cahn on the unit ball, three-body exact solution."""

    name = "allen_cahn_three_body"


class SineGordonThreeBody(_SineGordon, _ThreeBody):
    """Sine–Gordon on the unit ball, three-body exact solution."""

    name = "sine_gordon_three_body"
