"""A DeepXDE user's walk through pinnlab's DeepXDE adapter and the notebooks: the solve of
every shipped config with ``trainer.backend=deepxde``, a training study comparing the two
trainers, ``pinnlab tune`` of configs/tuning/deepxde_loss_weights.yaml, and the figures the
notebooks show. Pins what went wrong on the way (a DeepXDE run's slice paying the full Monte
Carlo reference, an error axis calling an unsmoothed network smoothed, a study ignoring
``OMP_NUM_THREADS``, refusals that point at a setting DeepXDE refuses next) and what was
right but not pinned. Nothing here trains more than a few steps of a tiny network."""

from __future__ import annotations

import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnlab import config as C
from pinnlab.plots import solve as solve_plots
from pinnlab.studies import training_study
from pinnlab.studies.training_study import expand_cells
from tests.test_solve_plot_data import _draw, _solve_file
from tests.test_training_study_command_fourth_audit import _config
from tests.test_user_walkthrough_audit import _run

ROOT = Path(__file__).parents[1]
DEEPXDE_TUNING = str(ROOT / "configs" / "tuning" / "deepxde_loss_weights.yaml")
POISSON = str(ROOT / "configs" / "poisson_two_body.yaml")


# -- bugs --------------------------------------------------------------------------------------
def test_a_deepxde_slice_of_a_monte_carlo_reference_takes_the_slices_sample_count(monkeypatch):
    """README (Result files): "hjb_rosenbrock's slice u* takes 2·10⁴ Monte Carlo samples, not
    the test set's 2·10⁵". ``result_slice`` of a DeepXDE result asks the equation for u* at
    no more than ``SLICE_REFERENCE_SAMPLES`` samples, as :func:`compute_slice` does for
    pinnlab's network. (u* is stubbed to record the sample count; nothing is simulated.)"""
    from pinnlab.equations.hjb import HJBRosenbrock
    from pinnlab.io.results import SLICE_REFERENCE_SAMPLES, result_slice
    from pinnlab.solvers.deepxde_adapter import DeepXDEResult

    asked = []

    def exact(self, x, coefficients=None):
        asked.append(self.reference_samples)
        return torch.zeros(x.shape[0], dtype=torch.float64)

    monkeypatch.setattr(HJBRosenbrock, "exact", exact)
    equation = HJBRosenbrock(3, seed=0)
    assert equation.reference_samples == 200_000 > SLICE_REFERENCE_SAMPLES
    result = DeepXDEResult(final=None, test_inputs=equation.test_set(8, dtype=torch.float32), test_exact=None,
                           history=None, predict=lambda x: torch.zeros(x.shape[0]))
    result_slice(types.SimpleNamespace(equation=equation), result)
    assert asked and max(asked) <= SLICE_REFERENCE_SAMPLES, asked


@pytest.mark.parametrize("kind", ["autograd", "hutchinson"])
def test_the_error_axis_of_an_unsmoothed_run_does_not_say_smoothed(tmp_path, figures, kind):
    """An autograd or Hutchinson run evaluates the network itself (the estimator's
    ``evaluate`` is its Value, no noise; its slice is recorded with noise "none"), so the
    test-error axis of curves.png should not call it the smoothed model."""
    config = f"equation: {{name: demo, dim: 6}}\nestimator: {{kind: {kind}}}\n"
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.ones(30), config=config), tmp_path)
    label = figures["curves.png"].axes[1].get_ylabel()
    assert label.startswith("test error of u") and "smoothed" not in label, label


def test_a_studys_cells_keep_the_thread_count_the_user_set(tmp_path, monkeypatch):
    """With ``OMP_NUM_THREADS=1`` in the environment and one worker on a 12-core machine,
    each cell runs with 1 torch thread, not 12. (Cells are stubbed; nothing trains.)"""
    cells = expand_cells({"a": []}, {"trainer.seed": [0, 1]})
    done = {"rel_l2": 0.5, "best_rel_l2": 0.25, "seconds_per_step": 0.5, "peak_mem_mb": 1.0, "status": "ok"}
    threads = []

    def run_cell(config_path, overrides, output, n):
        threads.append(n)
        return dict(done, continued_from=None)

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(training_study.os, "cpu_count", lambda: 12)
    monkeypatch.setattr(training_study, "run_cell", run_cell)
    training_study.run_training_study(str(_config(tmp_path)), cells, tmp_path / "cells", workers=1)
    assert threads == [1, 1], threads


@pytest.mark.parametrize("tunable", ["mix", "weights.data"])
def test_a_tunable_deepxde_cannot_tune_is_refused_as_such(tunable, capsys, tmp_path):
    """``tune.tunables.sigma`` on the DeepXDE tuning config says what DeepXDE can tune; the
    mix and a data weight, which it cannot tune either, should get the same line rather than
    a fix (a hybrid loss, data.train) that the deepxde backend refuses next."""
    said = "with tune.inner: deepxde only lr, weights.residual and weights.boundary can be tuned"
    for name in ("sigma", tunable):
        assert _run(["tune", DEEPXDE_TUNING, f"tune.tunables={{{name}: {{}}}}", "-o", tmp_path / "t.h5"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "t.h5").exists()


# -- behaviour that is right, pinned here ------------------------------------------------------
def test_the_deepxde_tuning_config_tunes_the_boundary_weight_and_lr_by_zo_fg2u_on_deepxde():
    """The header of configs/tuning/deepxde_loss_weights.yaml: "DeepXDE's own PINN tuned as a
    black box: its loss_weights (PDE, boundary) and learning rate by zo_fg2u": the loaded
    config trains with DeepXDE (inner and final solve), a soft constraint (so there is a
    boundary weight), and tunes exactly weights.boundary and lr with zo_fg2u against data."""
    config = C.load(DEEPXDE_TUNING)
    assert config.trainer.backend == "deepxde" and config.tune.inner == "deepxde"
    assert config.tune.method == "zo_fg2u" and set(config.tune.tunables) == {"weights.boundary", "lr"}
    assert config.equation.constraint == "soft" and config.tune.objective.kind == "data"
    assert C.deepxde_loss_weights(config, types.SimpleNamespace(constraint="soft")) == [1.0, 1e-2]


@pytest.mark.parametrize("method", ["rgu", "fg2u", "trgu", "hessian_free"])
def test_a_method_that_differentiates_the_training_is_refused_for_deepxde_in_one_line(method, capsys, tmp_path):
    """``pinnlab tune configs/tuning/deepxde_loss_weights.yaml tune.method=M`` for a method that
    needs derivatives of the inner training: one line naming the black box and the methods
    that work, exit 2, no output file."""
    out = tmp_path / "t.h5"
    assert _run(["tune", DEEPXDE_TUNING, f"tune.method={method}", "-o", out]) == 2
    err = capsys.readouterr().err
    assert err == (f"pinnlab: error: config error: tune.method = {method!r}: DeepXDE training is a black box; "
                   "use zo_fg2u, random or optuna\n"), err
    assert not out.exists()


def test_a_deepxde_tuning_keeps_one_trainer_for_the_inner_runs_and_the_final_solve(capsys, tmp_path):
    """``tune.inner=pinnlab`` on the DeepXDE tuning config (whose final solve is DeepXDE's),
    and ``trainer.backend=pinnlab`` (whose inner runs stay DeepXDE's): each one line, exit 2,
    no output file."""
    out = tmp_path / "t.h5"
    for override, inner, backend in (("tune.inner=pinnlab", "pinnlab", "deepxde"),
                                     ("trainer.backend=pinnlab", "deepxde", "pinnlab")):
        assert _run(["tune", DEEPXDE_TUNING, override, "-o", out]) == 2
        err = capsys.readouterr().err
        assert err == (f"pinnlab: error: config error: tune.inner = {inner!r} with trainer.backend = {backend!r}: "
                       "the tuning's inner training and the final solve use one trainer; set both to deepxde or "
                       "both to pinnlab\n"), err
    assert not out.exists()


def test_a_deepxde_history_row_is_the_mean_of_the_trace_since_the_last_row_and_eval_holds_the_final_errors(
        tmp_path):
    """README (DeepXDE): "a /history row every eval_every steps has the test errors and the
    mean loss since the previous row": in a 4-step DeepXDE solve with eval_every=2 the rows
    are at steps 2 and 4, their losses the means of trace steps 1–2 and 3–4, and /final's
    rel_l2 and max_err are those of /eval's stored prediction against its u*."""
    pytest.importorskip("deepxde")
    out = tmp_path / "dde.h5"
    assert _run(["solve", POISSON, "trainer.backend=deepxde", "trainer.steps=4",
                 "trainer.eval_every=2", "trainer.test_points=20", "trainer.batch_size=8", "model.width=8",
                 "model.depth=2", "equation.dim=3", "-o", out, "--progress", "off"]) == 0
    with h5py.File(out, "r") as fh:
        trace, hist = fh["trace/loss"][()], fh["history"]
        np.testing.assert_array_equal(hist["step"][()], [2, 4])
        np.testing.assert_allclose(hist["loss"][()], [trace[:2].mean(), trace[2:].mean()], rtol=1e-12)
        pred, true = fh["eval/u_pred"][()], fh["eval/u_true"][()]
        final = fh["final"].attrs
        assert final["rel_l2"] == pytest.approx(np.linalg.norm(pred - true) / np.linalg.norm(true), rel=1e-5)
        assert final["max_err"] == pytest.approx(np.abs(pred - true).max(), rel=1e-5)
        assert fh.attrs["dtype"] == "float32" and "linears.0.weight" in fh["params"]


def test_a_deepxde_result_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    """The atomic rename onto the DeepXDE solve's result fails with ENOSPC: one line naming
    the output, the OS's words and that nothing is kept (a DeepXDE run has no checkpoint),
    exit code 1, as a pinnlab-backend solve; it was a traceback."""
    import errno
    import os

    pytest.importorskip("deepxde")
    out = tmp_path / "dde.h5"
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst) == str(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    code = _run(["solve", POISSON, "trainer.backend=deepxde", "trainer.steps=2", "trainer.eval_every=2",
                 "trainer.test_points=20", "trainer.batch_size=8", "model.width=8", "model.depth=2",
                 "equation.dim=3", "-o", out, "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists(), code
    assert not any("Traceback" in line for line in err), err  # (above it: DeepXDE's import banner, once)
    assert err[-1] == (f"pinnlab: error: cannot write {str(out)!r} (No space left on device); a DeepXDE run keeps "
                       "no checkpoint: run it again"), err
