"""Define your own equation: Poisson on the unit ball with u* = (1 − ‖x‖²)·Σ_i sin x_i.

Run: python examples/custom_equation.py
"""

import torch

import pinnlab
from pinnlab.equations import LAPLACIAN, ZERO, AbstractEquation, Jet, Term, register


@register
class SinePoisson(AbstractEquation):
    """Δu = f on the unit ball, u = 0 on the sphere."""

    name = "sine_poisson"
    domain = "unit_ball"  # result files get the radial profile and the unit-ball slice

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        r = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
        return r * z / z.norm(dim=1, keepdim=True)

    def exact(self, x, coefficients=None):
        return (1 - (x * x).sum(-1)) * torch.sin(x).sum(-1)

    def terms(self):  # the residual is Δu − f
        return (Term(1.0, (LAPLACIAN,)),)

    def source(self, x, coefficients):  # f = Δu* in closed form, O(N·d)
        s, c = torch.sin(x).sum(-1), (x * torch.cos(x)).sum(-1)
        return -(1 - (x * x).sum(-1)) * s - 4 * c - 2 * self.dim * s

    def ansatz(self, x, coefficients):  # u = (1 − ‖x‖²)·u_σ vanishes on the sphere
        return Jet(1 - (x * x).sum(-1), -2 * x, torch.full_like(x, -2.0)), ZERO


if __name__ == "__main__":
    equation = SinePoisson(20)
    net = pinnlab.nets.MLP(20, width=64, depth=3)
    problem = pinnlab.PINNProblem(
        equation, net, pinnlab.estimators.SteinAntithetic(sigma=1e-2, num_samples=64), pinnlab.losses.Biased()
    )
    result = pinnlab.train(problem, steps=300, eval_every=100, progress="log")
    print(f"rel_l2={result.final.rel_l2:.3e}")
