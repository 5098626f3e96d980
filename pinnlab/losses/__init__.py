"""Losses of residual draws: biased, unbiased (1 and 2), hybrid."""

from pinnlab.losses.base import AbstractLoss as AbstractLoss
from pinnlab.losses.biased import Biased as Biased
from pinnlab.losses.biased import biased_loss as biased_loss
from pinnlab.losses.hybrid import Blend as Blend
from pinnlab.losses.hybrid import Hybrid as Hybrid
from pinnlab.losses.hybrid import Piecewise as Piecewise
from pinnlab.losses.hybrid import PlateauState as PlateauState
from pinnlab.losses.hybrid import SwitchAt as SwitchAt
from pinnlab.losses.hybrid import SwitchOnPlateau as SwitchOnPlateau
from pinnlab.losses.unbiased import Unbiased1 as Unbiased1
from pinnlab.losses.unbiased import Unbiased2 as Unbiased2
from pinnlab.losses.unbiased import unbiased_loss as unbiased_loss

__all__ = [
    "AbstractLoss",
    "Biased",
    "Blend",
    "Hybrid",
    "Piecewise",
    "PlateauState",
    "SwitchAt",
    "SwitchOnPlateau",
    "Unbiased1",
    "Unbiased2",
    "biased_loss",
    "unbiased_loss",
]
