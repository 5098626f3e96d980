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


class LinearQuadratic:
    """A problem whose unrolled h is exactly quadratic in φ (finite differences exact up to O(μ)).

    g(θ, φ) = ½θᵀAθ − θᵀBφ, f(θ, φ) = ½‖θ − y‖² + ½φᵀCφ, inner gradient descent with step η
    from a fixed θ_0: θ_T = M^T θ_0 + Qφ with M = I − ηA (M^T its T-th power),
    Q = (I − M^T)A⁻¹B (= Σ_{t<T} M^t ηB),
    so h(φ) = ½‖θ_T − y‖² + ½φᵀCφ, ∇h = Qᵀ(θ_T − y) + Cφ and ∇²h = QᵀQ + C.
    """

    def __init__(self, inner=4, outer=3, eta=0.2, seed=0):
        g = torch.Generator().manual_seed(seed)
        root = torch.randn(inner, inner, generator=g, dtype=F64)
        self.A = root @ root.T / inner + torch.eye(inner, dtype=F64)
        self.B = torch.randn(inner, outer, generator=g, dtype=F64)
        self.y = torch.randn(inner, generator=g, dtype=F64)
        self.C = 0.1 * torch.eye(outer, dtype=F64)
        self.theta0 = torch.randn(inner, generator=g, dtype=F64)
        self.eta = eta
        self.phi = {"a": torch.randn(outer, generator=g, dtype=F64)}

    def inner_loss(self, theta, phi, t):
        w = theta["w"]
        return 0.5 * w @ self.A @ w - w @ self.B @ phi["a"]

    def outer_loss(self, theta, phi):
        r = theta["w"] - self.y
        return 0.5 * r @ r + 0.5 * phi["a"] @ self.C @ phi["a"]

    def problem(self, horizon):
        return from_inner_loss(self.inner_loss, self.outer_loss, SGD(lr=self.eta), {"w": self.theta0},
                               horizon=horizon)

    def closed_form(self, phi, horizon):
        """(h, ∇h, ∇²h) of the T-step unrolled problem."""
        eye = torch.eye(self.A.shape[0], dtype=F64)
        m_t = torch.linalg.matrix_power(eye - self.eta * self.A, horizon)
        q = (eye - m_t) @ torch.linalg.solve(self.A, self.B)
        a = phi["a"]
        r = m_t @ self.theta0 + q @ a - self.y
        return 0.5 * r @ r + 0.5 * a @ self.C @ a, q.T @ r + self.C @ a, q.T @ q + self.C
