"""Sixth mutation audit of the DeepXDE adapter (pinnlab.solvers.deepxde_adapter): what the
earlier tests left open. DeepXDE is imported once for the module; every run is a step or
two of a tiny network."""

from __future__ import annotations

import pytest
import torch

from pinnlab.equations import PoissonTwoBody

# (DeepXDE imported once through the adapter's contained import; the module is skipped
# without it, as the fourth audit's)
from tests.test_deepxde_adapter_fourth_audit import F64, dde  # noqa: F401, E402


def _cubic(x):
    """y = x₀³ + x₁² + 5x₂³ as DeepXDE's (N, 1) output: ∂₀₀y = 6x₀, ∂₁₁y = 2, ∂₂₂y = 30x₂."""
    return (x[:, 0] ** 3 + x[:, 1] ** 2 + 5 * x[:, 2] ** 3)[:, None]


def test_the_initial_network_is_deepxdes_for_the_runs_own_seed(dde):  # noqa: F811
    """seed = s: the network starts as DeepXDE's FNN built right after
    ``dde.config.set_random_seed(s)`` (lr = 0 keeps it), not as that of another seed."""
    from pinnlab.solvers.deepxde_adapter import _caller_random_state, solve_with_deepxde

    result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=1, lr=0.0, width=8, depth=2, batch_size=8,
                                test_points=10, seed=4)
    with _caller_random_state():  # (the test's own seeding, undone)
        dde.config.set_random_seed(4)
        want = dde.nn.FNN([3, 8, 1], "tanh", "Glorot normal").state_dict()
    assert want.keys() == result.params.keys()
    for key, value in want.items():
        torch.testing.assert_close(result.params[key], value, rtol=0, atol=0)


def test_a_solve_that_raises_still_leaves_the_callers_random_streams_where_they_were(dde, monkeypatch):  # noqa: F811
    """A solve that fails after DeepXDE seeded everything and built its network (its
    training raises, as a tuning trial's may): the caller's next Python, NumPy and torch
    draws are those it would have got without the solve, and DeepXDE's recorded seed is
    the caller's, as after a solve that ends normally."""
    import random

    import numpy as np

    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    def fail(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(dde.Model, "train", fail)
    monkeypatch.setattr(dde.config, "random_seed", 11)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = draws()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    with pytest.raises(RuntimeError, match="training failed"):
        solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=1, width=8, depth=2, batch_size=8, test_points=10,
                           seed=0)
    assert draws() == expected
    assert dde.config.random_seed == 11


def test_a_given_test_set_that_requires_grad_is_kept_as_plain_values():
    """test_set = (x, u) of tensors that require grad (a tuner's, built in a graph): the
    run's test inputs and exact values are detached float32 copies (the result file
    writes them with .numpy()), and the final error is that of those values."""
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    x = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.4, 0.2]], dtype=F64, requires_grad=True)
    u = torch.tensor([1 / 3, 2 / 3], dtype=F64, requires_grad=True)
    result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=1, width=8, depth=2, batch_size=8,
                                test_set=(x, u))
    assert not result.test_inputs.requires_grad and not result.test_exact.requires_grad
    torch.testing.assert_close(result.test_exact.numpy(), u.detach().float().numpy(), rtol=0, atol=0)
    torch.testing.assert_close(result.test_inputs.numpy(), x.detach().float().numpy(), rtol=0, atol=0)
    assert not result.final.prediction.requires_grad


def test_a_laplacian_weighted_zero_everywhere_is_zero(dde):  # noqa: F811
    """Σ_j 0·∂_jj y = 0 at every point, as pinnlab's Autograd estimator answers it (it
    raised: torch.cat of no Hessian column)."""
    from pinnlab.estimators.base import WeightedLaplacian
    from pinnlab.solvers.deepxde_adapter import _autograd_estimate

    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=F64, requires_grad=True)
    (got,) = _autograd_estimate(dde, x, _cubic(x), [WeightedLaplacian(torch.zeros(3, dtype=F64))])
    torch.testing.assert_close(got.detach(), torch.zeros(2, dtype=F64), rtol=0, atol=0)
