"""Fifth mutation audit of the DeepXDE adapter (pinnlab.solvers.deepxde_adapter): what the
earlier tests left open. Every run is a couple of steps of a tiny network."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pinnlab.equations import PoissonTwoBody

if importlib.util.find_spec("deepxde") is None:  # (importorskip's import would bypass import_deepxde)
    pytest.skip("needs deepxde", allow_module_level=True)


def test_the_slice_of_a_time_dependent_run_has_its_axes_in_slice_grids_order():
    """HJBLin at d = 2 slices the (x₁, t) plane: grid_a spans x₁'s range and grid_b t's
    (different ranges, so a swap shows), as :func:`slice_grid` gives them for the run's
    test set; the prediction is DeepXDE's network at the grid's points and the exact
    values u* there."""
    from pinnlab.equations import HJBLin
    from pinnlab.io.results import slice_grid
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    equation = HJBLin(2, seed=1)
    result = solve_with_deepxde(equation, steps=1, width=8, depth=2, batch_size=8, test_points=20,
                                display_every=1)
    inputs, grid_a, grid_b, dims, labels, inside, pred, exact = result.slice_data(equation)
    want = slice_grid(equation, result.test_inputs)
    assert dims == want[3] == (0, 2) and labels == want[4] == ("x₁", "t")
    assert float(grid_a.min()) < 0.0 <= float(grid_b.min())  # x₁'s range, then t's
    for got, expected in zip((inputs.points(), grid_a, grid_b, inside), (want[0], want[1], want[2], want[5])):
        torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), rtol=0, atol=0)
    torch.testing.assert_close(pred, result.predict(want[0]), rtol=0, atol=0)
    torch.testing.assert_close(exact, equation.exact(want[0]).float(), rtol=0, atol=0)


def test_a_solve_that_first_imports_deepxde_leaves_its_recorded_seed_unset():
    """DeepXDE not yet imported when the solve began (as in a fresh process: its modules
    are taken out of sys.modules for the test, so the solve's import_deepxde imports it
    anew): the seed the solve gave ``set_random_seed`` is not left recorded, the new
    DeepXDE's config has random_seed = None, its default."""
    import sys

    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    def deepxde_modules():
        return {name: module for name, module in sys.modules.items()
                if name == "deepxde" or name.startswith("deepxde.")}

    imported = deepxde_modules()
    for name in imported:
        del sys.modules[name]
    try:
        solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=1, width=8, depth=2, batch_size=8, test_points=10,
                           seed=7)
        assert sys.modules["deepxde"].config.random_seed is None
    finally:  # the process's own DeepXDE back, none of the new one's modules left beside it
        for name in deepxde_modules():
            del sys.modules[name]
        sys.modules.update(imported)


def test_a_slice_of_a_monte_carlo_reference_records_its_sample_count_as_pinnlabs_does():
    """hjb_rosenbrock's u* is a Monte Carlo reference; a slice computes it with
    SLICE_REFERENCE_SAMPLES samples when the equation's own count is larger, and pinnlab's
    slice records that count (``reference_samples``) beside ``noise``. DeepXDE's slice
    used the same smaller count but recorded only ``noise: none`` (and no ``point``): its
    grid now carries the same record; with the equation's own count, nothing is added."""
    from pinnlab.equations import HJBRosenbrock
    from pinnlab.io.results import SLICE_REFERENCE_SAMPLES, SliceGrid
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    for samples, record in ((SLICE_REFERENCE_SAMPLES + 1, {"noise": "none",
                                                           "reference_samples": SLICE_REFERENCE_SAMPLES}),
                            (SLICE_REFERENCE_SAMPLES, {})):
        equation = HJBRosenbrock(2, seed=1, reference_samples=samples)
        result = solve_with_deepxde(equation, steps=1, width=8, depth=2, batch_size=8, test_points=20,
                                    display_every=1)
        grid = result.slice_data(equation)[0]
        assert isinstance(grid, SliceGrid) and dict(grid.evaluation) == record
