"""Linear Fokker–Planck equations in R^d with drift μ (isotropic and anisotropic)."""

from __future__ import annotations

import torch
from torch import Tensor

from pinnlab.equations.base import AbstractEquation
from pinnlab.equations.fields import Jet
from pinnlab.equations.terms import LAPLACIAN, TIME_DERIVATIVE, Coefficients, Term, directional


def _drift(x: Tensor, coefficients: Coefficients) -> Tensor:
    return coefficients["mu"]


DRIFT = directional(_drift, label="μ·∇u")


class _FokkerPlanck(AbstractEquation):
    r"""u_t = ½Δu − Σ_i μ_i ∂_i u on R^d × [0, 1], u(x, 0) = ‖x‖² (REFERENCE.md §3.2–3.3).

    Residual R = u_t − ½Δu + μ·∇u; exact solution u = ‖x − μt‖² + d·t. Inputs are
    `(N, d + 1)` with time last. Hard constraint (the official code's ansatz)
    u = (d + 1)·t·u_σ + ‖x‖². Samplers ("SDE trajectory", train and test): t ~ U(0, 1),
    x ~ N(μt, (2 − t)I), with the true μ. ``sample_boundary`` gives t = 0,
    x ~ N(0, 2I). The drift is the coefficient ``"mu"`` (shape `(d,)`), so inverse
    problems can override it; collocation points then follow the override (the current
    estimate μ̂, as a value: points are data, not a function of μ̂), not the true μ.
    """

    time_dependent = True
    time_interval = (0.0, 1.0)
    sampler_coefficients = ("mu",)

    def terms(self):
        return (
            Term(1.0, (TIME_DERIVATIVE,)),
            Term(-0.5, (LAPLACIAN,)),
            Term(1.0, (DRIFT,)),
        )

    def exact(self, x, coefficients=None):
        mu = self._merge(x, coefficients)["mu"]
        space, t = x[:, :-1], x[:, -1:]
        return ((space - mu * t) ** 2).sum(-1) + self.dim * t[:, 0]

    def ansatz(self, x, coefficients):
        n, d = x.shape[0], self.dim
        t = x[:, -1]
        scale_grad = torch.zeros_like(x)
        scale_grad[:, -1] = d + 1
        space = x[:, :-1]
        shift_grad = torch.cat([2 * space, torch.zeros_like(t)[:, None]], dim=1)
        shift_hess = torch.cat([torch.full_like(space, 2.0), torch.zeros(n, 1, dtype=x.dtype, device=x.device)], 1)
        return Jet((d + 1) * t, scale_grad, None), Jet((space * space).sum(-1), shift_grad, shift_hess)

    def _sample(self, n, generator, dtype, t, mu=None):
        # (an overridden μ̂ is taken as a value: points are data, and mul(out=) refuses a graph)
        mu = (self.coefficients["mu"] if mu is None else mu).detach().to(device=generator.device, dtype=dtype)
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        # the values of cat([mu·t + sqrt(2 − t)·z, t]) with two (n, d) arrays alive, not five:
        # mu·t is written straight into the output and z is scaled in place (a 2,000-point
        # float64 test set is 1.6 GB at d = 10⁵)
        out = torch.empty(n, self.dim + 1, device=z.device, dtype=dtype)
        space = torch.mul(mu, t, out=out[:, :-1])
        space.add_(z.mul_(torch.sqrt(2 - t)))
        out[:, -1:] = t
        return out

    def sample_collocation(self, n, *, generator, dtype=torch.float32, coefficients=None):
        t = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return self._sample(n, generator, dtype, t, (coefficients or {}).get("mu"))

    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        return self._sample(n, generator, dtype, torch.zeros(n, 1, device=generator.device, dtype=dtype))


class FokkerPlanckIso(_FokkerPlanck):
    """Isotropic Fokker–Planck ("heat" with drift), μ = (1, …, 1) ([RS] Table 1)."""

    name = "fokker_planck_iso"
    published_dims = (10, 100, 1000, 10000)

    def draw_coefficients(self, generator):
        return {"mu": torch.ones(self.dim, dtype=torch.float64)}


class FokkerPlanckAniso(_FokkerPlanck):
    """Anisotropic Fokker–Planck, μ_i ~ N(1, 1) drawn from the problem seed ([RS] Table 2)."""

    name = "fokker_planck_aniso"
    published_dims = (10, 100, 250, 500, 1000, 10000)

    def draw_coefficients(self, generator):
        return {"mu": 1 + torch.randn(self.dim, generator=generator, dtype=torch.float64)}
