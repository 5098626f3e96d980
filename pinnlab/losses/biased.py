"""The biased RS-PINN loss: the mean of squared residual estimates."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pinnlab.losses.base import AbstractLoss, ResidualDraw


def biased_loss(residual: Tensor) -> Tensor:
    """mean_x R̂(x)²: `(N,)` -> scalar."""
    return (residual * residual).mean()


@dataclass(frozen=True)
class Biased(AbstractLoss):
    r"""L_b = mean_x R̂(x; G)², one noise group G (He et al.; REFERENCE.md §2.1).

    E[R̂²] = R² + Var_G R̂: the variance term depends on θ, so the minimiser of E L_b is
    not that of mean R² (bias from the square). Cheapest loss: one residual draw,
    3 network evaluations per sample and point (2 with f(x) shared).
    """

    def __call__(self, draw: ResidualDraw):
        r = draw(False)
        loss = biased_loss(r)
        return loss, {"loss_biased": loss.detach()}
