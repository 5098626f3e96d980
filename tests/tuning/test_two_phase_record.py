"""pinnlab tune: a two-phase schedule is checked and recorded, and /tune/tuned/mix is the
mix the final solve used."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.plots import tune as plots_tune

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 3}
estimator: {kind: stein, sigma: 0.05, samples: 8, noise: shared, eval_samples: 16}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 20, lr: 1.0e-2, schedule: constant, batch_size: 16, eval_every: 10, test_points: 100, dtype: float64}
data: {source: synthetic, points: 20, noise: 0.01, seed: 0}
tune:
  method: trgu
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 16}
  outer_steps: 3
  horizon: 2
  outer_lr: 1.0
"""


def _tune(tmp_path, *overrides, text=TINY):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(text)
    out = tmp_path / "t.h5"
    return main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]), out


@pytest.mark.parametrize("after", [3, 10])
def test_a_second_phase_that_would_never_run_is_refused(tmp_path, capsys, after):
    code, out = _tune(tmp_path, f"tune.then={{method: fg2u, after: {after}}}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"tune.then.after = {after}" in err[0], err
    assert not out.exists()


def test_an_empty_first_phase_is_refused(tmp_path, capsys):
    code, _ = _tune(tmp_path, "tune.then={method: fg2u, after: 0}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tune.then.after" in err[0], err


@pytest.mark.parametrize("method", ["fg2u", "trgu"])  # trgu: the same method as the first phase
def test_a_bad_second_phase_option_is_reported_under_tune_then(tmp_path, capsys, method):
    code, out = _tune(tmp_path, f"tune.then={{method: {method}, after: 1, options: {{num_direction: 3}}}}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"tune.then.options: tune.then.method = {method!r}" in err[0] and "num_direction" in err[0], err
    assert not out.exists()


def test_a_bad_first_phase_option_is_reported_under_tune_options(tmp_path, capsys):
    code, _ = _tune(tmp_path, "tune.method=fg2u", "tune.options={num_direction: 3}",
                    "tune.then={method: trgu, after: 1}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tune.options: tune.method = 'fg2u'" in err[0], err


def test_the_result_file_records_both_phases(tmp_path, monkeypatch, capsys):
    code, out = _tune(tmp_path, "tune.then={method: fg2u, after: 1}")
    assert code == 0
    assert "tuned (trgu → fg2u after 1 outer steps, " in capsys.readouterr().err
    with h5py.File(out) as fh:
        tune = fh["tune"]
        assert tune.attrs["method"] == "trgu"
        assert tune.attrs["then_method"] == "fg2u" and tune.attrs["then_after"] == 1
        assert list(tune["method"].asstr()[...]) == ["trgu", "fg2u", "fg2u"]
        assert tune["method"].shape == tune["outer_step"].shape == tune["phi/weights.boundary"].shape
    # the φ figure names both phases and marks the switch between outer steps 1 and 2 (1-based)
    figures = []
    monkeypatch.setattr(plots_tune, "_save", lambda fig, path: figures.append(fig) or path)
    plots_tune.plot_tune(out, tmp_path / "figs")
    ax_phi, ax_obj = figures[0].axes
    assert ax_phi.get_title() == "tuned hyperparameters (trgu → fg2u after 1 outer steps)"
    for ax in (ax_phi, ax_obj):
        assert [list(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "--"] == [[1.5, 1.5]]


def test_a_single_phase_run_records_its_method_per_step_and_no_second_phase(tmp_path):
    code, out = _tune(tmp_path, "tune.outer_steps=2")
    assert code == 0
    with h5py.File(out) as fh:
        assert list(fh["tune/method"].asstr()[...]) == ["trgu", "trgu"]
        assert "then_method" not in fh["tune"].attrs and "then_after" not in fh["tune"].attrs


MIX = TINY.replace("loss: {kind: biased, weights: {boundary: 1.0e-3}}", "loss: {kind: hybrid, switch_step: 10}") \
    .replace("tunables: {weights.boundary: {}}", "tunables: {mix: {init: 0.5}}")


def test_tuned_mix_is_the_schedule_the_final_solve_replayed(tmp_path):
    """The final solve replays φ₀ and the mix after each outer step but the last; the file
    stores that schedule (the last φ is only in /tune/phi/mix), matching /trace/mix."""
    code, out = _tune(tmp_path, "tune.final_steps=6", text=MIX)
    assert code == 0
    with h5py.File(out) as fh:
        phi = fh["tune/phi/mix"][...]
        tuned = fh["tune/tuned/mix"][...]
        trace = fh["trace/mix"][...]
    assert phi.shape == (3,) and len(set(np.round(phi, 12))) == 3
    np.testing.assert_allclose(tuned, [0.5, phi[0], phi[1]])
    np.testing.assert_allclose(trace, np.repeat(tuned, 2))


def test_tuned_mix_with_final_init_continue_is_the_last_value(tmp_path):
    code, out = _tune(tmp_path, "tune.final_steps=6", "tune.final_init=continue", text=MIX)
    assert code == 0
    with h5py.File(out) as fh:
        phi = fh["tune/phi/mix"][...]
        np.testing.assert_allclose(fh["tune/tuned/mix"][...], [phi[-1]])
        np.testing.assert_allclose(fh["trace/mix"][...], phi[-1])
