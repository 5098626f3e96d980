"""Unbiased RS-PINN losses: products of independent residual draws."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pinnlab.equations.residual import NotUnbiasableError
from pinnlab.losses.base import AbstractLoss, ResidualDraw
from pinnlab.losses.biased import biased_loss


def unbiased_loss(first: Tensor, second: Tensor) -> Tensor:
    """mean_x R̂(x; G)·R̂(x; G') for two independent draws at the same points."""
    return (first * second).mean()


@dataclass(frozen=True)
class Unbiased1(AbstractLoss):
    r"""L_u1 = mean_x R̂(x; G)·R̂(x; G'), G ⟂ G' ([RS] Theorem 4.1; REFERENCE.md §2.2).

    Removes the bias of the square: E L_u1 = mean R(x)² whenever E R̂ = R, i.e. for
    residuals affine in the estimates (linear PDEs). Nonlinear terms keep the small
    bias of estimating e.g. u³ from one group. The gradient is backpropagated through
    both factors, as in the official code. Cost: 2 residual draws.
    """

    def __call__(self, draw: ResidualDraw):
        first, second = draw(False), draw(False)
        loss = unbiased_loss(first, second)
        return loss, {"loss_unbiased": loss.detach(), "loss_biased": biased_loss(first).detach()}


@dataclass(frozen=True)
class Unbiased2(AbstractLoss):
    r"""Unbiased1 with unbiased residual factors for polynomial nonlinearities (§2.3).

    Each residual factor R̃ takes one independent noise group per factor of every
    product term, so E R̃ = R exactly (Allen–Cahn u³: 1 derivative + 2 value groups;
    HJB ‖∇u‖²: 2 derivative groups; Burgers u·Σ∂_i u: 1 + 1), and E L_u2 = mean R².
    The groups are derived from the equation's declared terms, not written per PDE.
    For linear equations this is Unbiased1. Non-polynomial terms (sin u) have no
    unbiased estimate: :meth:`validate` raises and names the alternative.
    """

    def validate(self, equation) -> None:
        if not equation.is_unbiasable:
            bad = [t.label for t in equation.terms() if not hasattr(t, "factors")]
            raise NotUnbiasableError(
                f"loss 'unbiased2' cannot be built for {equation.name}: {', '.join(bad)} has "
                "no unbiased Monte Carlo estimate; use 'unbiased1', which removes only the "
                "bias of the square"
            )

    def __call__(self, draw: ResidualDraw):
        first, second = draw(True), draw(True)
        loss = unbiased_loss(first, second)
        return loss, {"loss_unbiased": loss.detach(), "loss_biased": biased_loss(first).detach()}
