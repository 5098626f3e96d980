"""Third mutation audit of the DeepXDE adapter (pinnlab.solvers.deepxde_adapter): what the
earlier tests left open. Every check is against an independent float64 computation, on
runs of one or two steps of a tiny network."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pinnlab.equations import PoissonTwoBody

if importlib.util.find_spec("deepxde") is None:  # (importorskip's import would bypass import_deepxde)
    pytest.skip("needs deepxde", allow_module_level=True)

F64 = torch.float64


def _solve(equation=None, **kwargs):
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    settings = dict(steps=1, width=8, depth=2, batch_size=16, test_points=20, display_every=2)
    return solve_with_deepxde(equation or PoissonTwoBody(3, seed=1), **(settings | kwargs))


def _forward(params, x, activation):
    """DeepXDE's FNN [D, width, ..., 1] from its state dict, in float64."""
    n = len([k for k in params if k.endswith("weight")])
    h = x.double()
    for i in range(n):
        h = h @ params[f"linears.{i}.weight"].double().T + params[f"linears.{i}.bias"].double()
        if i < n - 1:
            h = activation(h)
    return h[:, 0]


def test_the_networks_activation_is_the_one_asked_for():
    """activation="sin": the prediction of a soft-constrained equation (no output
    transform) is sin-MLP(x) of the returned parameters, not tanh-MLP(x)."""
    equation = PoissonTwoBody(3, seed=1, constraint="soft")
    result = _solve(equation, activation="sin", lr=0.0, boundary_points=8)
    x = equation.test_set(10, dtype=F64)
    want = _forward(result.params, x, torch.sin)
    torch.testing.assert_close(result.predict(x).double(), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want, _forward(result.params, x, torch.tanh), rtol=1e-3, atol=1e-3)


def test_loss_weights_are_pde_then_boundary():
    """loss_weights = [PDE, boundary]: with [0, 1] the first step's loss is the boundary
    term alone, the mean squared misfit of the initial network (lr = 0) at the
    boundary_points draw of (seed, "deepxde", "boundary") against boundary_value; with
    [1, 0] it is not that (the PDE residual's)."""
    from pinnlab._seeding import make_generator

    equation = PoissonTwoBody(3, seed=1, constraint="soft")
    only_bc = _solve(equation, lr=0.0, boundary_points=12, seed=3, loss_weights=[0.0, 1.0])
    xb = equation.sample_boundary(12, generator=make_generator(3, "deepxde", "boundary"), dtype=F64)
    misfit = float(((_forward(only_bc.params, xb, torch.tanh) - equation.boundary_value(xb)) ** 2).mean())
    assert only_bc.history.trace_loss[0] == pytest.approx(misfit, rel=1e-4)
    only_pde = _solve(equation, lr=0.0, boundary_points=12, seed=3, loss_weights=[1.0, 0.0])
    assert only_pde.history.trace_loss[0] != pytest.approx(misfit, rel=1e-2)


def test_a_test_set_with_a_non_finite_value_after_the_first_is_an_invalid_reference():
    """u* = [1, inf] (finite network and prediction): the relative errors are undefined,
    so the run is "invalid_reference", judged on the whole test set, not its first point."""
    x = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.4, 0.2]], dtype=F64)
    result = _solve(lr=0.0, test_set=(x, torch.tensor([1.0, float("inf")], dtype=F64)))
    assert result.status == "invalid_reference", (result.status, result.message)
    assert result.message == ("rel_l2 and rel_l1 are undefined (NaN): u* is not finite (inf or NaN) at 1 of the "
                              "2 test points in float32. The training itself ended normally.")


def test_a_history_rows_wall_time_is_from_the_start_of_the_run(monkeypatch):
    """A clock that advances one tick per reading: every step reads it at least twice (its
    callback's timing), so the row at step s is at least 2s ticks from the start, rows
    grow, and none is past the run's wall time (a row's time since its own step's
    callback began would be 1 tick for every row)."""
    import types

    from pinnlab.solvers import deepxde_adapter

    ticks = [0.0]

    def perf_counter():
        ticks[0] += 1.0
        return ticks[0]

    monkeypatch.setattr(deepxde_adapter, "time", types.SimpleNamespace(perf_counter=perf_counter))
    result = _solve(steps=4, display_every=2)
    rows = result.history.rows
    assert rows["step"] == [2, 4]
    assert all(wall >= 2 * step for wall, step in zip(rows["wall_s"], rows["step"])), rows["wall_s"]
    assert rows["wall_s"][0] < rows["wall_s"][1] <= result.stats["wall_s"]
