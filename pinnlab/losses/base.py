"""Loss interface: residual draws in, a scalar out."""

from __future__ import annotations

import abc
from collections.abc import Callable

from torch import Tensor

ResidualDraw = Callable[[bool], Tensor]
"""``draw(unbiased)`` returns one fresh residual estimate R̂ `(N,)` at the step's points;
``unbiased=True`` uses one independent noise group per factor of every product."""


class AbstractLoss(abc.ABC):
    """Maps residual draws at the same collocation points to a scalar loss.

    ``__call__`` returns ``(loss, metrics)``; metrics are tensors (diagnostics, e.g. the
    biased mean R̂² even when training with an unbiased loss).
    """

    @abc.abstractmethod
    def __call__(self, draw: ResidualDraw) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss from fresh residual draws."""

    def validate(self, equation) -> None:  # noqa: B027 - optional hook
        """Raise a clear error if this loss cannot be built for ``equation``."""

