"""The /tune group of a TUNE.h5 written by ``pinnlab tune`` with a search, checked
against closed forms: the tried values in float64 exactly as drawn, the best trial as
the tuned value, per-trial seconds and the total, the run's settings; and a joint fit,
which keeps no checkpoint, restarts under --resume and records its coefficient's
relative error (killed mutants: float32 storage, a dropped ``seconds`` dataset or
attribute or error, a wrong setting recorded, a joint run sent to look for a checkpoint)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from pinnlab import config as configuration
from pinnlab._seeding import derive_seed
from pinnlab.cli import main

from .micro_configs import JOINT_MU as JOINT

SEARCH = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared, eval_samples: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 2, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10, dtype: float64}
tune:
  method: random
  tunables: {weights.boundary: {low: 1.0e-3, high: 1.0e+3}}
  objective: {kind: reference, points: 8}
  outer_steps: 3
  trial_steps: 2
"""



def _run(tmp_path, text, *extra):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(text)
    out = tmp_path / "t.h5"
    return main(["tune", str(cfg), "-o", str(out), "--progress", "off", *extra]), out


def test_a_search_records_its_trials_in_float64_and_its_times(tmp_path):
    code, out = _run(tmp_path, SEARCH)
    assert code == 0
    rng = np.random.default_rng(derive_seed(0, "random_search"))
    drawn = np.array([math.exp(rng.uniform(math.log(1e-3), math.log(1e3))) for _ in range(3)])
    with h5py.File(out) as fh:
        tune = fh["tune"]
        tried = tune["phi/weights.boundary"][...]
        assert tried.dtype == np.float64
        np.testing.assert_array_equal(tried, drawn)
        values = tune["value"][...]
        assert tune["tuned/weights.boundary"][()] == drawn[int(np.argmin(values))]
        seconds = tune["seconds"][...]
        assert seconds.shape == (3,) and (seconds > 0).all()
        assert tune.attrs["seconds"] >= seconds.sum()  # the trials and the bookkeeping between them
        assert (tune.attrs["method"], tune.attrs["objective"], tune.attrs["trial_steps"]) == ("random", "reference", 2)
        assert "horizon" not in tune.attrs  # (the trials train trial_steps: 2 steps, whatever the horizon)
        assert tune.attrs["steps_done"] == 3
        assert tune.attrs["final/weights.boundary"] == tune["tuned/weights.boundary"][()]
        assert "initial" not in tune  # (a search's trials start nowhere: they are drawn)


def test_a_hypergradient_tuning_records_where_phi_started(tmp_path):
    """/tune/initial/<name>: φ₀, the config's weight (1e-2) or a tunable's init, float64,
    which tune.png draws at outer step 0 (it started at outer step 1, so a badly scaled
    start was not visible)."""
    text = (SEARCH.replace("method: random", "method: rgu").replace("{low: 1.0e-3, high: 1.0e+3}", "{}")
            .replace("  trial_steps: 2\n", "  horizon: 2\n"))
    code, out = _run(tmp_path, text, "tune.tunables={weights.boundary: {}, sigma: {init: 0.2}}")
    assert code == 0
    with h5py.File(out) as fh:
        initial = fh["tune/initial"]
        assert sorted(initial) == ["sigma", "weights.boundary"]
        assert initial["weights.boundary"].dtype == np.float64
        assert initial["weights.boundary"][()] == pytest.approx(1e-2, rel=1e-12)
        assert initial["sigma"][()] == pytest.approx(0.2, rel=1e-12)
        assert fh["tune/phi/weights.boundary"].shape == (3,)
        # counts are integers (they were stored as 3.0, 200.0)
        assert fh["tune/outer_step"].dtype == np.int64 and list(fh["tune/outer_step"][...]) == [0, 1, 2]
        steps_done = fh["final"].attrs["steps_done"]
        assert isinstance(steps_done, np.integer) and steps_done == 2


def test_a_joint_fit_restarts_under_resume_and_records_its_coefficient_error(tmp_path, capsys):
    """Joint fitting saves no checkpoint; --resume restarts it (it is not refused for a
    missing OUT.h5.ckpt) and leaves no checkpoint behind. The file and the last line
    give ‖μ − μ*‖/‖μ*‖ of the tuned μ against the instance's true drift."""
    code, out = _run(tmp_path, JOINT, "--resume")
    assert code == 0 and out.is_file()
    assert not (tmp_path / "t.h5.ckpt").exists()
    problem, _ = configuration.build(configuration.load(tmp_path / "tune.yaml"))
    truth = problem.equation.coefficients["mu"].double().numpy()
    with h5py.File(out) as fh:
        tuned = fh["tune/tuned/coefficients.mu"][...]
        recorded = fh["tune"].attrs["coefficient_rel_err/coefficients.mu"]
    expected = np.linalg.norm(tuned - truth) / np.linalg.norm(truth)
    assert recorded == pytest.approx(expected, rel=1e-12) and recorded > 0
    assert f" coefficients.mu_rel_err={expected:.6e}" in capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("tunable, drawn", [("coefficients.mu: {init: 0.0}", ["coefficients.mu[0]", "coefficients.mu[1]"]),
                                           ("collocation_weight: {width: 4, depth: 2}", ["‖collocation net‖"])])
def test_a_tuning_stopped_before_its_first_outer_step_writes_phi_as_no_steps_of_its_shape(tmp_path, figures,
                                                                                          tunable, drawn):
    """μ ∈ R² or a collocation-weight network, outer step 0 already non-finite (Adam at an
    outer lr just below float32's largest value): /tune/phi/<name> is [0, *shape], as the
    schema's [steps, *shape] says; μ's was np.zeros(0), and `pinnlab plot` refused both
    files as damaged (φ₀ of shape (1, 2) concatenated with (0,); a reshape(0, -1) of the
    network's layers). The plot draws φ₀ at outer step 0, the network's by its norm (a
    tuning of the network drew no φ₀ at all)."""
    text = JOINT.replace("coefficients.mu: {init: 0.0}", tunable)
    code, out = _run(tmp_path, text, "tune.method=rgu", "tune.options={}", "tune.outer_optimizer=adam",
                     "tune.outer_lr=3.0e38", "trainer.dtype=float32", "tune.outer_steps=3", "tune.final_init=continue")
    assert code == 1
    with h5py.File(out) as fh:
        tune = fh["tune"]
        assert tune.attrs["status"] == "nonfinite" and int(tune.attrs["steps_done"]) == 0
        phi, initial = {}, {}
        tune["phi"].visititems(lambda k, v: phi.update({k: v.shape}) if isinstance(v, h5py.Dataset) else None)
        tune["initial"].visititems(lambda k, v: initial.update({k: v[...]}) if isinstance(v, h5py.Dataset) else None)
        assert sorted(phi) == sorted(initial) and len(phi) == (1 if "mu" in tunable else 4)
        assert all(phi[k] == (0, *initial[k].shape) for k in phi)
    from pinnlab.plots import plot_file

    assert [p.name for p in plot_file(out, tmp_path)] == ["tune.png", "curves.png", "slice.png"]
    lines = {line.get_label(): line for line in figures["tune.png"].axes[0].get_lines()}
    assert sorted(lines) == drawn
    mu = initial.get("coefficients.mu")
    expected = list(mu) if mu is not None else [math.sqrt(sum(float((v ** 2).sum()) for v in initial.values()))]
    for label, value in zip(drawn, expected):
        assert list(lines[label].get_xdata()) == [0]
        assert lines[label].get_ydata()[0] == pytest.approx(value, rel=1e-12)
