"""The numbers a solve's result file records, checked against the run they come from:
the root attributes, /trace, /final, /eval, /radial and /slices hold exactly what the
module docstring of :mod:`pinnlab.io.results` says."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab.cli import main

SOLVE = """\
equation: {name: NAME, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
loss: {kind: hybrid, switch_step: 3, then: unbiased2}
trainer: {steps: 5, eval_every: 2, test_points: 40, batch_size: 8, seed: 7, dtype: float64, lr: 0.2}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Result files of a 5-step float64 solve (train seed 7, problem seed 1) on the unit
    ball (hybrid loss switched at step 3) and of a biased one on a time-dependent equation."""
    root = tmp_path_factory.mktemp("results")
    config = root / "solve.yaml"
    config.write_text(SOLVE)
    files = {}
    for name, loss in (("poisson_two_body", "hybrid"), ("hjb_lin", "biased")):
        files[name] = root / f"{name}.h5"
        assert main(["solve", str(config), f"equation.name={name}", f"loss.kind={loss}", "-o", str(files[name]),
                     "--progress", "off"]) == 0
    return files


def test_root_attributes_name_the_seeds_dtype_and_dimension(results):
    """dim is the equation's d, not the width of its inputs (d + 1 with time)."""
    for name, width in (("poisson_two_body", 3), ("hjb_lin", 4)):
        with h5py.File(results[name]) as fh:
            assert (fh.attrs["problem_seed"], fh.attrs["train_seed"]) == (1, 7)
            assert fh.attrs["dtype"] == "float64" and fh.attrs["dim"] == 3
            assert fh["eval/x"].shape == (40, width)


def test_history_trace_and_final_are_the_runs(results):
    """/history/step holds whole steps as integers; /trace/mix is the mix of each step
    (0 before the switch at step 3, 1 after), not the loss; best_rel_l2 is the smallest
    row of /history/rel_l2, not the final one."""
    with h5py.File(results["poisson_two_body"]) as fh:
        assert fh["history/step"].dtype.kind == "i" and fh["history/step"][...].tolist() == [2, 4, 5]
        np.testing.assert_array_equal(fh["trace/mix"][...], [0, 0, 0, 1, 1])
        assert fh["trace/loss"].shape == (5,)
        rel_l2 = fh["history/rel_l2"][...]
        assert rel_l2.argmin() == 0  # (lr 0.2: the error grows after step 2, so best and final differ)
        assert fh["final"].attrs["best_rel_l2"] == rel_l2.min()
        assert fh["final"].attrs["rel_l2"] == rel_l2[-1]


def test_eval_radial_and_slice_errors_are_absolute_and_binned_by_radius(results):
    """/eval/abs_err = |u_pred − u_true|; /radial bins the test points by ‖x‖ over 20
    equal bins of [0, max(1, max ‖x‖)] with the mean |error| and the relative L2 error
    of each bin's own points; the slice is NaN outside the unit ball and its abs_err is
    |u_pred − u_true| inside."""
    with h5py.File(results["poisson_two_body"]) as fh:
        pred, true = fh["eval/u_pred"][...], fh["eval/u_true"][...]
        np.testing.assert_array_equal(fh["eval/abs_err"][...], np.abs(pred - true))
        radius = fh["eval/radius"][...]
        np.testing.assert_allclose(radius, np.linalg.norm(fh["eval/x"][...], axis=1), rtol=1e-15)
        edges = np.linspace(0, max(1.0, radius.max()), 21)
        counts, _ = np.histogram(radius, edges)
        np.testing.assert_array_equal(fh["radial/count"][...], counts)
        np.testing.assert_allclose(fh["radial/r"][...], (edges[:-1] + edges[1:]) / 2, rtol=1e-15)
        index = np.clip(np.digitize(radius, edges) - 1, 0, 19)
        for i in np.flatnonzero(counts):
            err, ref = (pred - true)[index == i], true[index == i]
            assert fh["radial/abs_err"][i] == pytest.approx(np.abs(err).mean(), rel=1e-12)
            assert fh["radial/rel_err"][i] == pytest.approx(np.linalg.norm(err) / np.linalg.norm(ref), rel=1e-12)
        a, b = np.meshgrid(fh["slices/main/grid_a"][...], fh["slices/main/grid_b"][...], indexing="ij")
        outside = a**2 + b**2 >= 1
        for key in ("u_pred", "u_true", "abs_err"):
            assert np.isnan(fh[f"slices/main/{key}"][...][outside]).all()
            assert not np.isnan(fh[f"slices/main/{key}"][...][~outside]).any()
        np.testing.assert_array_equal(fh["slices/main/abs_err"][...][~outside],
                                      np.abs(fh["slices/main/u_pred"][...] - fh["slices/main/u_true"][...])[~outside])


def test_the_test_inputs_are_stored_up_to_the_limit_and_else_how_to_regenerate_them(tmp_path, monkeypatch):
    """/eval/x is written when d × test points ≤ MAX_STORED_INPUTS (here lowered to this
    run's 40 × 3 = 120 values); one value fewer allowed, /eval says instead how to draw the
    points again: sampler, problem seed and the number of test points (not d)."""
    from pinnlab.io import results as results_module

    config = tmp_path / "solve.yaml"
    config.write_text(SOLVE.replace("NAME", "poisson_two_body"))
    for limit, stored in ((120, True), (119, False)):
        monkeypatch.setattr(results_module, "MAX_STORED_INPUTS", limit)
        out = tmp_path / f"{limit}.h5"
        assert main(["solve", str(config), "loss.kind=biased", "-o", str(out), "--progress", "off"]) == 0
        with h5py.File(out) as fh:
            assert ("x" in fh["eval"]) == stored
            if not stored:
                assert dict(fh["eval"].attrs) == {"sampler": "test_set", "problem_seed": 1, "test_points": 40}


def test_the_slice_lies_on_its_grid_over_the_documented_ranges(results):
    """Slice value [i, j] is at (grid_a[i], grid_b[j]) with the other coordinates at 0 on
    the unit ball; off it, x₁ spans the test set's 1–99 % range and t its whole [min, max]."""
    import torch

    from pinnlab.equations import make_equation

    with h5py.File(results["poisson_two_body"]) as fh:
        grid_a, grid_b = fh["slices/main/grid_a"][...], fh["slices/main/grid_b"][...]
        a, b = np.meshgrid(grid_a, grid_b, indexing="ij")
        points = np.stack([a.ravel(), b.ravel(), np.zeros(a.size)], axis=1)
        exact = make_equation("poisson_two_body", 3, seed=1).exact(torch.from_numpy(points)).numpy()
        inside = (a**2 + b**2 < 1).ravel()
        np.testing.assert_allclose(fh["slices/main/u_true"][...].ravel()[inside], exact[inside], rtol=1e-12)
    with h5py.File(results["hjb_lin"]) as fh:
        x = torch.from_numpy(fh["eval/x"][...])
        assert list(fh["slices/main"].attrs["labels"]) == ["x₁", "t"]
        grid_a, grid_b = fh["slices/main/grid_a"][...], fh["slices/main/grid_b"][...]
        assert (grid_a[0], grid_a[-1]) == (float(x[:, 0].quantile(0.01)), float(x[:, 0].quantile(0.99)))
        assert (grid_b[0], grid_b[-1]) == (float(x[:, -1].min()), float(x[:, -1].max()))
