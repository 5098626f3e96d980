"""Test functions whose Gaussian smoothing and its derivatives are known in closed form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Sine:
    """f = sin(a·x + b); u_σ = e^{−Σ_j σ_j² a_j²/2} sin(a·x + b)."""

    a: Tensor
    b: float

    def f(self, z: Tensor) -> Tensor:
        return torch.sin(z @ self.a + self.b)

    def damping(self, sigma: Tensor) -> Tensor:
        return torch.exp(-0.5 * (sigma**2 * self.a**2).sum())

    def value(self, x, sigma):
        return self.damping(sigma) * torch.sin(x @ self.a + self.b)

    def gradient(self, x, sigma):
        return self.damping(sigma) * torch.cos(x @ self.a + self.b)[:, None] * self.a

    def hessian_diagonal(self, x, sigma):
        return -self.value(x, sigma)[:, None] * self.a**2


@dataclass
class Exponential:
    """f = exp(a·x); u_σ = e^{Σ_j σ_j² a_j²/2} exp(a·x)."""

    a: Tensor

    def f(self, z):
        return torch.exp(z @ self.a)

    def value(self, x, sigma):
        return torch.exp(0.5 * (sigma**2 * self.a**2).sum()) * torch.exp(x @ self.a)

    def gradient(self, x, sigma):
        return self.value(x, sigma)[:, None] * self.a

    def hessian_diagonal(self, x, sigma):
        return self.value(x, sigma)[:, None] * self.a**2


@dataclass
class Quadratic:
    """f = ½ xᵀQx + c·x; u_σ = f + ½ Σ_j σ_j² Q_jj, ∇u_σ = Qx + c, ∂_jj u_σ = Q_jj."""

    Q: Tensor
    c: Tensor

    def f(self, z):
        return 0.5 * ((z @ self.Q) * z).sum(-1) + z @ self.c

    def value(self, x, sigma):
        return self.f(x) + 0.5 * (sigma**2 * torch.diagonal(self.Q)).sum()

    def gradient(self, x, sigma):
        return x @ self.Q + self.c

    def hessian_diagonal(self, x, sigma):
        return torch.diagonal(self.Q).expand(x.shape[0], -1)


def make_functions(dim: int, generator: torch.Generator) -> dict[str, object]:
    kw = dict(generator=generator, dtype=torch.float64)
    a = torch.randn(dim, **kw) / dim**0.5 * 2
    m = torch.randn(dim, dim, **kw) / dim**0.5
    return {
        "sine": Sine(a, 0.3),
        "exp": Exponential(0.5 * a),
        "quadratic": Quadratic(0.5 * (m + m.T), torch.randn(dim, **kw)),
    }
