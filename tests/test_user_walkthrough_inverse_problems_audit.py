"""A new user's walk through inverse problems (README "Tuning PINNs automatically",
``configs/tuning/fokker_planck_inverse.yaml``): recovering PDE coefficients from noisy
observations with fg2u and the single-level ``joint`` baseline, reading
``coefficient_rel_err`` from the result file, ``--resume``, ``tune.budget_seconds``. The
problems met on the way (a true coefficient of 0, a joint fit ended by its budget, a joint
``--resume`` that removes an interrupted tuning's checkpoint) and behaviour met there that
no other test pinned."""

from __future__ import annotations

import math
import types

import h5py
import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab.cli import main
from pinnlab.tuning.run import coefficient_errors

from .tuning.micro_configs import JOINT_MU


def _run(args):
    return main([str(a) for a in args])


def _write(tmp_path, text=JOINT_MU):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(text)
    return cfg


def _interrupted_rgu(tmp_path, step):
    """JOINT_MU tuned by rgu (3 outer steps), stopped by Ctrl-C while outer step ``step`` is
    reported, as ``pinnlab tune`` leaves it: ``t.h5.ckpt`` with the config's hash."""
    from pinnlab.io.checkpoint import comparable_text, config_hash
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    cfg = _write(tmp_path)
    overrides = ["tune.method=rgu", "tune.outer_steps=3"]
    config = configuration.load(cfg, overrides)
    identity = config.identity()
    ckpt = tmp_path / "t.h5.ckpt"

    def progress(k, phi, diagnostics):
        if k == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tuning(build_tuning(config), checkpoint=ckpt, progress=progress,
                   metadata={"config": config_hash(identity), "config_text": comparable_text(identity)})
    assert ckpt.is_file()
    return cfg, overrides, tmp_path / "t.h5"


# -- bugs ---------------------------------------------------------------------------------------
def test_a_true_coefficient_of_zero_gives_no_finite_relative_error():
    """README: coefficient_rel_err/<name> is ‖ĉ − c‖/‖c‖. An equation whose true drift is 0
    (a user's "is there any drift?" problem) has no relative error: an estimate 0.6 away
    was recorded as 6.07e+299, a number that looks measured. It should be inf (or NaN),
    not a finite value."""
    truth = {"mu": torch.zeros(3, dtype=torch.float64)}
    setup = types.SimpleNamespace(problem=types.SimpleNamespace(equation=types.SimpleNamespace(coefficients=truth)))
    err = coefficient_errors(setup, {"coefficients.mu": torch.tensor([0.3, 0.4, 0.0], dtype=torch.float64)})
    assert not math.isfinite(err["coefficients.mu"]), err


def test_a_joint_fit_ended_by_its_budget_says_so(tmp_path, capsys):
    """README, /tune attrs: message "(why it stopped early: the non-finite value, or that
    tune.budget_seconds ended it; "" otherwise)". A joint fit of 5 outer steps (horizon 1)
    under a budget below one step's time runs 1 of them, then reads as a finished fit."""
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "tune.horizon=1", "tune.outer_steps=5", "tune.budget_seconds=1.0e-9",
                 "-o", out, "--progress", "off"]) == 0
    err = capsys.readouterr().err
    with h5py.File(out) as fh:
        assert int(fh["tune"].attrs["steps_done"]) == 1  # (stopped early: 1 of 5)
        message = fh["tune"].attrs["message"]
    assert "tune.budget_seconds" in message, message
    assert "tune.budget_seconds" in err, err


def test_a_joint_fit_stopped_inside_an_outer_step_records_the_values_it_hands_over(tmp_path):
    """README: /tune/phi/<name> is "φ after each outer step", tuned/<name> "the values the
    final solve used". A joint fit (horizon 2) whose budget ends after its first inner
    step hands μ after that step to the final solve, but records no outer step at all
    (phi of shape (0, 2)); with a larger budget the last rows differ the same way (22
    rows, tuned one inner step further). The values used should be the last recorded."""
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "tune.horizon=2", "tune.outer_steps=3", "tune.budget_seconds=1.0e-9",
                 "-o", out, "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        tuned = fh["tune/tuned/coefficients.mu"][...]
        initial = fh["tune/initial/coefficients.mu"][...]
        phi = fh["tune/phi/coefficients.mu"][...]
    assert not np.array_equal(tuned, initial)  # (the fit moved μ: one inner step ran)
    assert phi.shape[0] >= 1, phi.shape
    np.testing.assert_array_equal(phi[-1], tuned)


def test_a_joint_resume_keeps_an_interrupted_tunings_checkpoint(tmp_path, capsys):
    """After Ctrl-C of an rgu tuning, the rerun without --resume says "a checkpoint ...
    exists from an interrupted run; pass --resume to continue it". A user who follows it
    with the joint baseline (`tune.method=joint --resume`) got a joint result and the rgu
    checkpoint removed. A checkpoint of another configuration is refused under --resume
    for every other method (one line, exit 2, checkpoint byte for byte)."""
    cfg, overrides, out = _interrupted_rgu(tmp_path, 1)
    ckpt = tmp_path / "t.h5.ckpt"
    saved = ckpt.read_bytes()
    capsys.readouterr()
    code = _run(["tune", cfg, "-o", out, "--resume", "--progress", "off"])  # (JOINT_MU's own method: joint)
    assert ckpt.is_file() and ckpt.read_bytes() == saved
    assert code == 2 and not out.exists()
    assert "belongs to another configuration" in capsys.readouterr().err


# -- behaviour met on the way that no other test pinned ----------------------------------------
def test_the_interrupted_tunings_checkpoint_is_refused_to_a_joint_rerun_without_resume(tmp_path, capsys):
    """Without --resume the joint rerun is refused in one line (exit 2) and the rgu
    checkpoint stays byte for byte; its own --resume then finishes it."""
    cfg, overrides, out = _interrupted_rgu(tmp_path, 1)
    ckpt = tmp_path / "t.h5.ckpt"
    saved = ckpt.read_bytes()
    capsys.readouterr()
    assert _run(["tune", cfg, "-o", out, "--progress", "off"]) == 2
    assert capsys.readouterr().err.strip() == (f"pinnlab: error: a checkpoint {str(ckpt)!r} exists from an "
                                               "interrupted run; pass --resume to continue it or --overwrite "
                                               "to start over")
    assert ckpt.read_bytes() == saved and not out.exists()
    assert _run(["tune", cfg, *overrides, "-o", out, "--resume", "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        np.testing.assert_array_equal(fh["tune/outer_step"][...], [0, 1, 2])
        assert fh["tune"].attrs["method"] == "rgu"
    assert not ckpt.exists()


def test_a_true_coefficient_met_exactly_has_relative_error_zero():
    """ĉ = c bit for bit gives 0 (also for a nonzero c: the numerator is exactly 0), and a
    vector error is the 2-norm ratio ‖ĉ − c‖/‖c‖ (3-4-5: 5/13 against c = (5, 12))."""
    truth = {"mu": torch.tensor([5.0, 12.0], dtype=torch.float64)}
    setup = types.SimpleNamespace(problem=types.SimpleNamespace(equation=types.SimpleNamespace(coefficients=truth)))
    assert coefficient_errors(setup, {"coefficients.mu": truth["mu"].clone()}) == {"coefficients.mu": 0.0}
    err = coefficient_errors(setup, {"coefficients.mu": torch.tensor([8.0, 16.0], dtype=torch.float64),
                                     "sigma": torch.tensor(0.1)})  # (not a coefficient: no error)
    assert err == {"coefficients.mu": pytest.approx(5.0 / 13.0, rel=1e-15)}


def test_the_same_observations_as_npz_h5_and_csv_recover_the_same_coefficients(tmp_path, capsys):
    """README: observations "from a .h5/.npz/.csv file" (x (M, D), u (M,), time last; CSV
    inputs then u). The same float64 numbers in the three formats give a joint fit the
    same μ bit for bit, and each result's input_files names its own file's digest."""
    from pinnlab.equations import make_equation
    from pinnlab.io.observations import save_observations

    equation = make_equation("fokker_planck_aniso", 2, seed=0)
    x = equation.sample_test(12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = equation.exact(x) * (1 + 0.01 * torch.randn(12, generator=torch.Generator().manual_seed(4),
                                                    dtype=torch.float64))
    cfg = _write(tmp_path)
    tuned, digests = [], set()
    for suffix in ("npz", "h5", "csv"):
        data = tmp_path / f"obs.{suffix}"
        save_observations(data, x, u)
        out = tmp_path / f"t_{suffix}.h5"
        assert _run(["tune", cfg, f"data.source={data}", "-o", out, "--progress", "off"]) == 0
        with h5py.File(out) as fh:
            tuned.append(fh["tune/tuned/coefficients.mu"][...])
            digests.add(fh.attrs["input_files"])
    np.testing.assert_array_equal(tuned[0], tuned[1])
    np.testing.assert_array_equal(tuned[0], tuned[2])
    assert len(digests) == 3


def test_a_one_outer_step_tunings_plot_counts_outer_steps_in_whole_numbers(tmp_path, figures):
    """`tune.outer_steps=1` (a quick look at the first step): the φ axis shows 0 and 1, but
    the outer objective's axis, with its one point at outer step 1, was ticked at
    fractional outer steps around it. Every visible tick should be a whole outer step."""
    from pinnlab.plots import plot_file

    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "tune.outer_steps=1", "-o", out, "--progress", "off"]) == 0
    plot_file(out, tmp_path)
    for ax in figures["tune.png"].axes[:2]:
        low, high = sorted(ax.get_xlim())
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_xlabel(), ticks)


def test_the_advice_for_a_log_coefficients_start_can_be_followed(tmp_path, capsys):
    """README: low/high of a log-scale tunable "only set the range random and optuna draw
    from, and are refused with other methods". `coefficients.mu: {transform: log}` under
    joint is refused with "... must be > 0; set init or low/high"; the user who sets
    low/high as told gets "low: has no effect with tune.method = 'joint' ... remove it".
    Under a method that refuses low/high the advice should name init only."""
    cfg = _write(tmp_path)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "tune.tunables={coefficients.mu: {transform: log}}", "-o", out,
                 "--progress", "off"]) == 2
    first = capsys.readouterr().err.strip()
    assert "must be > 0" in first, first  # (the refusal meant)
    assert _run(["tune", cfg, "tune.tunables={coefficients.mu: {transform: log, low: 0.5, high: 2.0}}", "-o", out,
                 "--progress", "off"]) == 2  # (low/high: refused with joint, as the README says)
    assert "low/high" not in first, first


HJB_TWO = """\
equation: {name: hjb_rosenbrock, dim: 2, seed: 0, reference_samples: 200}
model: {width: 4, depth: 2}
estimator: {kind: autograd}
trainer: {steps: 2, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10, dtype: float64}
data: {source: synthetic, points: 6, noise: 0.0}
tune:
  method: joint
  tunables: {coefficients.c1: {}, coefficients.c2: {init: 0.5}}
  objective: {kind: data}
  outer_steps: 2
  horizon: 1
"""
"""Both coefficients of hjb_rosenbrock (d = 2: c₁, c₂ ∈ R¹) fitted jointly."""


def test_every_tuned_coefficient_gets_its_own_error_in_the_file_the_last_line_and_the_plot(tmp_path, capsys,
                                                                                            figures):
    """README: "coefficient_rel_err/<name>" for each tuned coefficient. Two at once (c1 and
    c2 of hjb_rosenbrock, `pinnlab list`: "coefficients: c1 (d-1), c2 (d-1)"): each has its
    attribute against its own true value, the last line lists both in the tunables'
    order, and tune.png's objective title gives one line each."""
    from pinnlab.plots import plot_file

    cfg = _write(tmp_path, HJB_TWO)
    out = tmp_path / "t.h5"
    assert _run(["tune", cfg, "-o", out, "--progress", "off"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    truth = configuration.build(configuration.load(cfg))[0].equation.coefficients
    expected = {}
    with h5py.File(out) as fh:
        tune = fh["tune"]
        assert tune["initial/coefficients.c2"][...].tolist() == [0.5]
        for name in ("c1", "c2"):
            tuned = tune[f"tuned/coefficients.{name}"][...]
            true = truth[name].double().numpy()
            expected[name] = np.linalg.norm(tuned - true) / np.linalg.norm(true)
            assert tune.attrs[f"coefficient_rel_err/coefficients.{name}"] == pytest.approx(expected[name], rel=1e-12)
    assert last.endswith(f" coefficients.c1_rel_err={expected['c1']:.6e} "
                         f"coefficients.c2_rel_err={expected['c2']:.6e}"), last
    plot_file(out, tmp_path)
    title = figures["tune.png"].axes[1].get_title()
    assert title.splitlines()[1:] == [f"coefficients.c1: rel. error {expected['c1']:.2e}",
                                      f"coefficients.c2: rel. error {expected['c2']:.2e}"], title
