"""Fourth mutation audit of the DeepXDE adapter (pinnlab.solvers.deepxde_adapter): what the
earlier tests left open. DeepXDE is imported once for the module; every run is a few steps
of a tiny network, checked against independent float64 computations."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pinnlab.equations import PoissonTwoBody

if importlib.util.find_spec("deepxde") is None:  # (importorskip's import would bypass import_deepxde)
    pytest.skip("needs deepxde", allow_module_level=True)

F64 = torch.float64


@pytest.fixture(scope="module")
def dde():
    """DeepXDE, imported once for the module through the adapter's contained import."""
    from pinnlab.solvers.deepxde_adapter import import_deepxde

    return import_deepxde()


def _solve(dde, equation=None, **kwargs):
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    settings = dict(steps=3, width=8, depth=2, batch_size=16, test_points=30, display_every=2)
    return solve_with_deepxde(equation or PoissonTwoBody(3, seed=1), **(settings | kwargs))


def test_history_rows_hold_rel_l1_and_max_err_of_the_test_set(dde):
    """Each row's rel_l1 = Σ|u − u*| / Σ|u*| and max_err = max|u − u*| on the test set (the
    float32 error, summed in float64); the last row's are the final evaluation's; its mix
    is 0, as every step's in the trace (DeepXDE's loss blends no other estimator)."""
    result = _solve(dde, steps=2, display_every=2)
    err = (result.predict(result.test_inputs) - result.test_exact).double()
    exact = result.test_exact.double()
    rows = result.history.rows
    assert rows["step"] == [2] and rows["mix"] == [0.0] and result.history.trace_mix == [0.0, 0.0]
    assert rows["rel_l1"][0] == pytest.approx(float(err.abs().sum() / exact.abs().sum()), rel=1e-12)
    assert rows["max_err"][0] == pytest.approx(float(err.abs().max()), rel=1e-12)
    assert rows["rel_l1"][0] != pytest.approx(rows["max_err"][0], rel=1e-3)
    assert (result.final.rel_l1, result.final.max_err) == (rows["rel_l1"][0], rows["max_err"][0])


def test_a_laplacian_whose_first_column_is_zero_weighs_the_others_by_their_own_weights(dde):
    """y = x₀³ + x₁² + 5x₂³: weights (0, 1, 2) skip column 0 and give 2 + 60x₂ exactly (the
    kept columns' Hessian entries times their own weights, not the first ones)."""
    from pinnlab.estimators.base import WeightedLaplacian
    from pinnlab.solvers.deepxde_adapter import _autograd_estimate

    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=F64, requires_grad=True)
    y = (x[:, 0] ** 3 + x[:, 1] ** 2 + 5 * x[:, 2] ** 3)[:, None]
    (got,) = _autograd_estimate(dde, x, y, [WeightedLaplacian(torch.tensor([0.0, 1.0, 2.0], dtype=F64))])
    torch.testing.assert_close(got.detach(), 2 + 60 * x.detach()[:, 2], rtol=1e-12, atol=1e-12)


def test_a_direct_call_has_the_configs_defaults(dde, monkeypatch):
    """Called as the library API with only ``steps``: the network is model.width wide and
    model.depth affine layers deep, loss.boundary_points boundary points, trainer.batch_size
    collocation points per draw, trainer.test_points test points, and trainer.seed's draws
    (those of (0, "deepxde", k)), as a config left at its defaults would give."""
    from pinnlab._seeding import make_generator
    from pinnlab.config import LossSection, ModelSection, TrainerSection
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    model, loss, trainer = ModelSection(), LossSection(), TrainerSection()
    equation = PoissonTwoBody(3, seed=1, constraint="soft")
    draws = {"sample_collocation": [], "sample_boundary": []}
    for name, found in draws.items():
        sample = getattr(equation, name)

        def recorded(n, *, generator, dtype=torch.float32, sample=sample, found=found):
            found.append(sample(n, generator=generator, dtype=dtype))
            return found[-1]

        monkeypatch.setattr(equation, name, recorded)
    result = solve_with_deepxde(equation, steps=1)
    shapes = [tuple(p.shape) for k, p in result.params.items() if k.endswith("weight")]
    assert shapes == [(model.width, 3)] + [(model.width, model.width)] * (model.depth - 2) + [(1, model.width)]
    assert result.test_inputs.shape == (trainer.test_points, 3)
    ((boundary,),) = [draws["sample_boundary"]]
    assert boundary.shape == (loss.boundary_points, 3)
    collocation = [points for points in draws["sample_collocation"] if len(points) != trainer.test_points]
    assert [len(points) for points in collocation] == [trainer.batch_size] * 3  # training, test, the step's
    first = PoissonTwoBody(3, seed=1).sample_collocation(
        trainer.batch_size, generator=make_generator(trainer.seed, "deepxde", 1), dtype=F64)
    torch.testing.assert_close(collocation[0], first, rtol=0, atol=0)
