"""ReLoBRaLo with a loss whose residual value can be negative.

Whether a loss reports the non-negative ``loss_biased`` metric is known only from the
metrics of a step, and whether its value goes negative only from the data, so a custom
loss is refused at run time, by one clear ValueError from the weighting. Every loss a
config can build reports ``loss_biased``, so configs never reach that error.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased, Blend, Hybrid, SwitchAt, Unbiased1, Unbiased2
from pinnlab.losses.base import AbstractLoss
from pinnlab.nets import MLP
from pinnlab.solvers import ConstraintLoss, PINNProblem, ReLoBRaLo, train

F64 = torch.float64


class _NegativeWithoutBiased(AbstractLoss):
    """A custom loss that reports no ``loss_biased`` and whose value is negative."""

    def __call__(self, draw):
        r = draw(False)
        return -(r * r).mean() - 1.0, {}


def _problem(loss):
    eq = PoissonTwoBody(4, seed=1, constraint="soft")
    net = MLP(4, width=8, depth=3, generator=torch.Generator().manual_seed(0), dtype=F64)
    return PINNProblem(eq, net, SteinAntithetic(sigma=0.05, num_samples=4), loss,
                       batch_size=8, extra_terms=(ConstraintLoss(batch_size=8),))


def test_a_negative_custom_loss_without_loss_biased_is_one_clear_error():
    with pytest.raises(ValueError, match=r"^ReLoBRaLo balances ratios of term losses, which must be "
                                         r"finite and >= 0; at step 1: residual = -[\d.]+\. A loss that "
                                         r"can be negative must report a non-negative 'loss_biased'"):
        train(_problem(_NegativeWithoutBiased()), steps=3, seed=0, test_points=10,
              progress="off", dtype=F64, weighting=ReLoBRaLo())


@pytest.mark.parametrize("loss", [Biased(), Unbiased1(), Unbiased2(), Hybrid(switch=SwitchAt(1)),
                                  Hybrid(switch=Blend(0, 4), then=Unbiased1())],
                         ids=["biased", "unbiased1", "unbiased2", "hybrid-switch", "hybrid-blend"])
def test_every_config_loss_is_balanced_on_its_biased_metric(loss):
    problem = _problem(loss)
    params, names = problem.init_params(), ["residual", "boundary"]
    for mix in ((0.0, 0.5, 1.0) if isinstance(loss, Hybrid) else (None,)):
        _, metrics = problem.objective(params, {} if mix is None else {"mix": mix}, 0, 0)
        assert ReLoBRaLo().loss_keys(names, metrics) == {"residual": "loss_biased",
                                                         "boundary": "loss_boundary"}
