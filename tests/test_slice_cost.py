"""The result file's 64×64 slice is cheap at any d: a Stein run's slice is evaluated with
shared noise drawn once for all its blocks of points (first layer (4096 + K)·D·w, not
4096·K·D·w, nor (4096 + blocks·K)·D·w), hjb_rosenbrock's slice reference takes at most
SLICE_REFERENCE_SAMPLES samples, and the file says so. The test set's shared-noise
evaluation forms W(σξ) once for all its chunks too."""

from __future__ import annotations

import dataclasses
import importlib

import h5py
import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

import pinnlab
from pinnlab import config as configuration
from pinnlab._seeding import make_generator
from pinnlab.cli import main
from pinnlab.equations import base as equation_base
from pinnlab.equations import make_equation
from pinnlab.estimators import SteinAntithetic
from pinnlab.io import compute_slice, result_slice
from pinnlab.io import results as results_module
from pinnlab.io.results import (
    SLICE_REFERENCE_SAMPLES,
    plan_slice,
    rows_per_chunk,
    write_solve_result,
)
from pinnlab.losses import Biased
from pinnlab.nets import MLP
from pinnlab.solvers.evaluate import eval_chunk_size, evaluate, predict

evaluation = importlib.import_module("pinnlab.solvers.evaluate")  # the module, not pinnlab.solvers.evaluate()

RUN = """\
equation: {name: allen_cahn_two_body, dim: 5, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.1, samples: 4, noise: NOISE, eval_samples: 6}
loss: {kind: biased}
trainer: {steps: 3, eval_every: 3, test_points: 50, batch_size: 16, seed: 4}
"""


def _shared(problem):
    return dataclasses.replace(problem, estimator=dataclasses.replace(problem.estimator, noise="shared"))


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_a_slice_forms_the_noise_features_once(noise, monkeypatch):
    """A Stein run's slice makes (4096 + K)·D·w first-layer multiply-adds (W x once per
    point, W(σξ) once for all its blocks of points), not the 4096·K·D·w of an independent
    run's own noise (1/K of the cost when D ≫ w), nor (4096 + blocks·K)·D·w: each block
    formed W(σξ) again (at d = 10⁵, 100 blocks: 3 times W x of all the points)."""
    dim, width, k = 2000, 4, 8
    eq = make_equation("allen_cahn_two_body", dim, seed=1)
    problem = pinnlab.PINNProblem(eq, MLP(dim, width=width, depth=2),
                                  SteinAntithetic(sigma=0.1, num_samples=k, noise=noise), Biased())
    result = pinnlab.train(problem, steps=1, eval_every=1, test_points=50, progress="off")
    monkeypatch.setattr(equation_base, "POINT_ELEMENT_BUDGET", 128 * dim)  # blocks of 128 points
    assert -(-4096 // rows_per_chunk(dim)) == 32
    first_layer = 2 * dim * width * (4096 + k)  # flops: 2 per multiply-add
    flops = _flops(lambda: result_slice(problem, result))
    assert first_layer <= flops <= 1.02 * first_layer  # the deeper layers: w·w, not D·w, per input
    if noise == "independent":
        own_noise = _flops(lambda: compute_slice(problem, result.params, result.test_inputs))
        assert own_noise >= 2 * 4096 * k * dim * width


def test_a_shared_noise_test_set_evaluation_forms_the_noise_features_once(monkeypatch):
    """The test set's evaluation in chunks makes (n + K)·D·w first-layer multiply-adds, not
    (n + chunks·K)·D·w (W(σξ) formed again for every chunk), with the values it had."""
    dim, width, k, n = 2000, 4, 8, 600
    eq = make_equation("allen_cahn_two_body", dim, seed=1)
    problem = pinnlab.PINNProblem(eq, MLP(dim, width=width, depth=2),
                                  SteinAntithetic(sigma=0.1, num_samples=k, noise="shared"), Biased())
    params = problem.init_params()
    x = eq.test_set(n)
    exact = eq.exact(x).float()
    whole = evaluate(problem, params, x, exact, seed=2, step=3).prediction
    monkeypatch.setattr(evaluation, "EVAL_ELEMENT_BUDGET", 2 * k * width * 20)  # chunks of 20 points
    assert eval_chunk_size(problem, k) == 20
    first_layer = 2 * dim * width * (n + k)
    flops = _flops(lambda: evaluate(problem, params, x, exact, seed=2, step=3))
    assert first_layer <= flops <= 1.02 * first_layer
    chunked = evaluate(problem, params, x, exact, seed=2, step=3).prediction
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6 * float(whole.abs().max()))


def test_slice_is_the_shared_noise_model_and_leaves_the_run_as_it_was():
    """An independent-noise run's slice is compute_slice with the run's estimator made
    shared (same seeding, reproducible), and the run's problem keeps its own noise."""
    eq = make_equation("fokker_planck_aniso", 3, seed=0)
    problem = pinnlab.PINNProblem(eq, MLP(eq.input_dim, width=8, depth=2),
                                  SteinAntithetic(sigma=0.1, num_samples=4), Biased())
    result = pinnlab.train(problem, steps=2, eval_every=2, test_points=40, seed=3, progress="off")
    first = result_slice(problem, result, num_samples=5, seed=3)
    again = result_slice(problem, result, num_samples=5, seed=3)
    assert torch.equal(first[6], again[6]) and torch.equal(first[7], again[7])
    shared = compute_slice(_shared(problem), result.params, result.test_inputs, num_samples=5, seed=3)
    assert torch.equal(first[6], shared[6])
    assert first[0].evaluation == {"noise": "shared", "samples": 5}
    # seeded as before: one predict call on all the points with the generator (seed, "slice")
    expected = predict(_shared(problem), result.params, first[0].points().float(), num_samples=5,
                       generator=make_generator(3, "slice"))
    torch.testing.assert_close(first[6], expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    other_seed = result_slice(problem, result, num_samples=5, seed=4)[6]
    assert not torch.allclose(other_seed, first[6])
    assert problem.estimator.noise == "independent"
    own = compute_slice(problem, result.params, result.test_inputs, num_samples=5, seed=3)
    assert own[0].evaluation["noise"] == "independent" and not torch.allclose(own[6], first[6])


def test_a_shared_noise_runs_slice_is_unchanged():
    """A shared-noise run's slice is compute_slice on its own problem, bit for bit."""
    config = configuration.validate(yaml.safe_load(RUN.replace("NOISE", "shared")))
    problem, kwargs = configuration.build(config)
    result = pinnlab.train(problem, **kwargs, progress="off")
    got = result_slice(problem, result, num_samples=6, seed=4)
    expected = compute_slice(problem, result.params, result.test_inputs, num_samples=6, seed=4)
    assert torch.equal(got[0].points(), expected[0].points())
    assert torch.equal(got[6], expected[6]) and torch.equal(got[7], expected[7])
    assert got[0].evaluation == {"noise": "shared", "samples": 6}


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_solve_file_records_the_slice_noise_and_keeps_the_test_metrics(tmp_path, noise):
    """`pinnlab solve`: /slices/main attrs noise="shared" and samples (K = eval_samples);
    /eval and /final are the run's own (its noise), bit for bit; `pinnlab plot` draws the slice."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(RUN.replace("NOISE", noise))
    out = tmp_path / "run.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 0
    problem, kwargs = configuration.build(configuration.load(cfg))
    result = pinnlab.train(problem, **kwargs, progress="off")
    assert problem.estimator.noise == noise
    with h5py.File(out) as fh:
        sl = fh["slices/main"]
        assert sl.attrs["noise"] == "shared" and sl.attrs["samples"] == 6
        assert "reference_samples" not in sl.attrs
        assert torch.equal(torch.as_tensor(fh["eval/u_pred"][()]), result.final.prediction.double())
        assert fh["final"].attrs["rel_l2"] == result.final.rel_l2
    assert main(["plot", str(out), "-o", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "slice.png").is_file()


def test_a_slice_given_as_points_is_recorded_as_the_networks_own_value(tmp_path):
    """A slice whose first element is a tensor of points (the DeepXDE adapter's: its plain
    network) is written with noise="none"."""
    config = configuration.validate(yaml.safe_load(RUN.replace("NOISE", "independent")))
    problem, kwargs = configuration.build(config)
    result = pinnlab.train(problem, **kwargs, progress="off")
    grid, *rest = compute_slice(problem, result.params, result.test_inputs)
    out = tmp_path / "r.h5"
    write_solve_result(out, config=config, problem=problem, result=result, slice_data=(grid.points(), *rest))
    with h5py.File(out) as fh:
        assert dict(fh["slices/main"].attrs)["noise"] == "none" and "samples" not in fh["slices/main"].attrs


def test_hjb_rosenbrock_slice_reference_takes_fewer_samples(tmp_path, monkeypatch):
    """hjb_rosenbrock's slice u* is its Cole–Hopf reference with SLICE_REFERENCE_SAMPLES
    samples (same coefficients and stream), not the test set's count; the file records it."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(results_module, "SLICE_REFERENCE_SAMPLES", 40)
    assert SLICE_REFERENCE_SAMPLES == 20_000
    eq = make_equation("hjb_rosenbrock", 3, seed=2, reference_samples=100)
    problem = pinnlab.PINNProblem(eq, MLP(eq.input_dim, width=8, depth=2),
                                  SteinAntithetic(sigma=0.1, num_samples=4, noise="shared"), Biased())
    params = problem.init_params()
    x = eq.test_set(30)
    grid, *_, true = compute_slice(problem, params, x, num_samples=3)
    assert grid.evaluation == {"noise": "shared", "samples": 3, "reference_samples": 40}
    points = plan_slice(eq, x).points()
    fewer = make_equation("hjb_rosenbrock", 3, seed=2, reference_samples=40).exact(points)
    assert torch.equal(true, fewer.to(true))
    assert not torch.allclose(true, eq.exact(points).to(true))
    assert eq.reference_samples == 100  # the test set's reference is untouched
    monkeypatch.setattr(results_module, "SLICE_REFERENCE_SAMPLES", 100)  # as many as the equation's: its own
    grid, *_, true = compute_slice(problem, params, x, num_samples=3)
    assert "reference_samples" not in grid.evaluation and torch.equal(true, eq.exact(points).to(true))


def stored_slice(problem, out):
    """The result file's slice (/slices/main/u_pred) and a function that computes it again
    from the file's parameters and test points, ``compute_slice``'s keyword arguments
    given (NaN outside the domain, as stored)."""
    with h5py.File(out) as fh:
        params = {k: torch.as_tensor(fh["params"][k][()]) for k in fh["params"]}
        x = torch.as_tensor(fh["eval/x"][()])
        stored = fh["slices/main/u_pred"][()]

    def slice_at(**kwargs):
        *_, inside, pred, _ = compute_slice(problem, params, x, **kwargs)
        return np.where(inside.numpy(), pred.double().numpy().reshape(inside.shape), np.nan)

    return stored, slice_at


@pytest.mark.parametrize("command", ["solve", "study cell"])
def test_the_slice_is_at_the_sigma_the_run_used(tmp_path, monkeypatch, command):
    """A σ in the run's hyperparams (over the estimator's) is the σ of its training, of
    /eval and so of /slices: every caller of result_slice passes it (`pinnlab tune`
    passes its tuned σ; here `pinnlab solve` and a training-study cell)."""
    from pinnlab.studies.training_study import run_cell

    build = configuration.build

    def build_with_sigma(config):
        problem, kwargs = build(config)
        return problem, {**kwargs, "hyperparams": {**kwargs["hyperparams"], "sigma": 0.3}}

    monkeypatch.setattr(configuration, "build", build_with_sigma)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(RUN.replace("NOISE", "shared"))
    out = tmp_path / "run.h5"
    if command == "solve":
        assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 0
    else:
        run_cell(str(cfg), [], str(out), torch.get_num_threads())
    problem, _ = build(configuration.load(cfg))
    assert problem.estimator.sigma == 0.1
    stored, slice_at = stored_slice(problem, out)
    np.testing.assert_array_equal(stored, slice_at(num_samples=6, seed=4, sigma=0.3))  # NaN outside the ball in both
    assert np.nanmax(np.abs(stored - slice_at(num_samples=6, seed=4, sigma=None))) > 1e-3
