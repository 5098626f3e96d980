"""Float64 test problems with closed-form answers for the hypergradient layer."""

from __future__ import annotations

import torch

from pinnlab.bilevel import from_inner_loss
from pinnlab.solvers import SGD, Adam

F64 = torch.float64


class Ridge:
    """Ridge regression with per-feature regularisation e^{φ_j} (REFERENCE.md §6.10).

    g(θ, φ) = ½‖Xθ − y‖²/n + ½Σ e^{φ_j} θ_j²,  f(θ, φ) = ½‖X_v θ − y_v‖²/n_v + c‖φ‖²,
    θ*(φ) = (XᵀX/n + diag e^φ)⁻¹ Xᵀy/n and the true hypergradient
    ∇F = 2cφ − (H⁻¹d) ⊙ e^φ ⊙ θ*, H = XᵀX/n + diag e^φ, d = ∂f/∂θ at θ*.
    """

    def __init__(self, features=6, n=40, c=1e-3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, features, generator=g, dtype=F64)
        truth = torch.randn(features, generator=g, dtype=F64)
        self.y = self.X @ truth + 0.5 * torch.randn(n, generator=g, dtype=F64)
        self.Xv = torch.randn(n, features, generator=g, dtype=F64)
        self.yv = self.Xv @ truth + 0.5 * torch.randn(n, generator=g, dtype=F64)
        self.c = c
        self.features = features
        self.phi = {"log_reg": torch.linspace(-1.0, 0.5, features, dtype=F64)}

    def inner_loss(self, theta, phi, t):
        w = theta["w"]
        r = self.X @ w - self.y
        return 0.5 * (r * r).mean() + 0.5 * (torch.exp(phi["log_reg"]) * w * w).sum()

    def outer_loss(self, theta, phi):
        r = self.Xv @ theta["w"] - self.yv
        return 0.5 * (r * r).mean() + self.c * (phi["log_reg"] ** 2).sum()

    def hessian(self, phi):
        n = self.X.shape[0]
        return self.X.T @ self.X / n + torch.diag(torch.exp(phi["log_reg"]))

    def solution(self, phi):
        n = self.X.shape[0]
        return torch.linalg.solve(self.hessian(phi), self.X.T @ self.y / n)

    def true_hypergradient(self, phi):
        theta = self.solution(phi)
        n = self.Xv.shape[0]
        d = self.Xv.T @ (self.Xv @ theta - self.yv) / n
        q = torch.linalg.solve(self.hessian(phi), d)
        return 2 * self.c * phi["log_reg"] - q * torch.exp(phi["log_reg"]) * theta

    def problem(self, horizon, optimizer="sgd", lr=0.3):
        opt = {"sgd": SGD(lr=lr), "momentum": SGD(lr=lr, momentum=0.9), "adam": Adam(lr=lr)}[optimizer]
        theta0 = {"w": torch.zeros(self.features, dtype=F64)}
        return from_inner_loss(self.inner_loss, self.outer_loss, opt, theta0, horizon=horizon)
