"""Independent (space, time) smoothing needs a space column besides time."""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import Gradient, SteinAntithetic, Value
from pinnlab.nets import Pointwise

F64 = torch.float64
_F = Pointwise(lambda z: (z**2).sum(-1))


@pytest.mark.parametrize("columns", [0, 1])
@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_independent_time_smoothing_refuses_points_without_a_space_column(columns, noise):
    est = SteinAntithetic(sigma=0.1, num_samples=4, noise=noise, time_smoothing="independent")
    x = torch.zeros(3, columns, dtype=F64)
    with pytest.raises(ValueError, match=rf"at least one space column, got {columns} column\(s\); "
                                         "use time_smoothing='joint'"):
        est.estimate(_F, x, [Value(), Gradient()], generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="at least one space column"):
        est.evaluate(_F, x, generator=torch.Generator().manual_seed(0))


def test_one_column_stays_allowed_with_joint_smoothing_and_two_with_independent():
    generator = torch.Generator().manual_seed(0)
    one, two = torch.zeros(3, 1, dtype=F64), torch.zeros(3, 2, dtype=F64)
    value, = SteinAntithetic(sigma=0.1, num_samples=4).estimate(_F, one, [Value()], generator=generator)
    assert value.shape == (3,)
    est = SteinAntithetic(sigma=0.1, num_samples=4, time_smoothing="independent")
    value, grad = est.estimate(_F, two, [Value(), Gradient()], generator=generator)
    assert value.shape == (3,) and grad.shape == (3, 2)


def test_independent_time_smoothing_on_an_equation_without_time_is_refused_when_the_problem_is_built():
    """Else the last space column is silently smoothed as if it were time."""
    from pinnlab import config as C
    from pinnlab.equations import Burgers, PoissonTwoBody
    from pinnlab.losses import Biased
    from pinnlab.nets import MLP
    from pinnlab.solvers import PINNProblem

    est = SteinAntithetic(sigma=0.1, num_samples=4, time_smoothing="independent")
    with pytest.raises(ValueError, match="poisson_two_body has no time variable; use time_smoothing='joint'"):
        PINNProblem(PoissonTwoBody(3), MLP(3, width=8), est, Biased(), batch_size=4)
    PINNProblem(Burgers(3), MLP(4, width=8), est, Biased(), batch_size=4)  # time-dependent: fine
    config = C.validate({"equation": {"name": "poisson_two_body", "dim": 3},
                         "estimator": {"time_smoothing": "independent"}})
    with pytest.raises(ValueError, match="^time_smoothing='independent' smooths the last input column"):
        C.build(config)
