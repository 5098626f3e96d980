"""pinnlab tune with the classical baselines: TRGU's s > T refused before any work, cg's
tol accepted, a diverging penalty solve stops with the option to lower, and outer
algorithms record their outer objective."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab import config as configuration
from pinnlab.cli import main
from pinnlab.tuning.run import check_method, make_hypergradient_method
from pinnlab.tuning.setup import build_tuning

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 8, noise: shared, eval_samples: 16}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 10, lr: 1.0e-2, schedule: constant, batch_size: 16, eval_every: 10, test_points: 50, dtype: float64}
data: {source: synthetic, points: 20, noise: 0.01, seed: 0}
tune:
  method: penalty
  options: {}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 16}
  outer_steps: 2
  horizon: 3
  outer_lr: 1.0
"""


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "tune.yaml"
    path.write_text(TINY)
    return path


REFUSED = [
    ("tune.method=trgu; tune.options={steps: 4}", "tune.options.steps = 4: trgu"),
    ("tune.method=rgu; tune.then={method: trgu, after: 1, options: {steps: 9}}", "tune.then.options.steps = 9"),
]


@pytest.mark.parametrize("override, expected", REFUSED, ids=[r[1] for r in REFUSED])
def test_trgu_with_more_steps_than_the_horizon_exits_2_before_any_work(cfg, tmp_path, capsys, override, expected):
    """s > T = tune.horizon = 3 ran full rgu silently."""
    out = tmp_path / "t.h5"
    code = main(["tune", str(cfg), *override.split("; "), "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0] and "must be <= 3" in err[0], err
    assert not out.exists()


def test_trgu_with_steps_up_to_the_horizon_and_cg_with_tol_are_accepted(cfg):
    """trgu with steps = horizon, and without steps (its default, 5, shortened to the
    horizon 3); cg's tol was refused ("cg() got an unexpected keyword argument 'tol'")."""
    for overrides in (["tune.method=trgu", "tune.options={steps: 3}"], ["tune.method=trgu", "tune.options={}"],
                      ["tune.method=cg", "tune.options={tol: 1.0e-8}"]):
        check_method(build_tuning(configuration.load(cfg, overrides)))
    assert make_hypergradient_method("cg", {"tol": 1e-8}).solver.tol == 1e-8


def test_a_diverging_penalty_solve_stops_the_tuning_naming_the_option(cfg, tmp_path, capsys):
    """Penalty's default lr = 0.1 is far too large for a PINN inner loss: the tuning stops
    at outer step 0 with the non-finite stop (exit 1, last finite values, final solve
    written), naming tune.options.lr. Here it stopped without saying why ("non-finite
    hypergradient, outer value or θ"); on the shipped config in float32 it ran on with
    ‖θ‖ ~ 1e22 and status ok."""
    out = tmp_path / "t.h5"
    code = main(["tune", str(cfg), "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err
    assert code == 1
    assert "tuning stopped early (outer step 0: penalty: " in err
    assert "lower penalty's lr (tune.options.lr, now 0.1)" in err
    with h5py.File(out) as fh:
        tune = fh["tune"]
        assert tune.attrs["status"] == "nonfinite" and int(tune.attrs["steps_done"]) == 0
        assert "tune.options.lr" in tune.attrs["message"]
        assert np.isfinite(fh["eval/u_pred"][...]).all()


@pytest.mark.parametrize("method, options", [("penalty", "{lr: 1.0e-4, inner_iters: 3}"),
                                             ("f2sa", "{lr_y: 1.0e-3, lr_z: 1.0e-3, inner_iters: 3}")])
def test_outer_algorithms_record_the_outer_objective(cfg, tmp_path, capsys, method, options):
    """/tune/value was NaN at every outer step for penalty and f2sa (an empty objective
    panel, loss=nan in the progress line)."""
    out = tmp_path / "t.h5"
    code = main(["tune", str(cfg), f"tune.method={method}", f"tune.options={options}", "-o", str(out),
                 "--progress", "log"])
    err = capsys.readouterr().err
    assert code == 0 and "loss=nan" not in err, err
    with h5py.File(out) as fh:
        value = fh["tune/value"][...]
    assert value.shape == (2,) and np.isfinite(value).all() and (value > 0).all()


def test_fg2u_takes_at_most_one_direction_per_tuned_value():
    """b > N directions cost more than fgu's exact N: the library default b = 8 is lowered
    to N, a b above N is refused (a b of 1e8 ran until stopped), a b up to N is kept."""
    assert make_hypergradient_method("fg2u", {}, size=3).num_directions == 3
    assert make_hypergradient_method("fg2u", {}, size=20).num_directions == 8
    assert make_hypergradient_method("fg2u", {"num_directions": 5}, size=5).num_directions == 5
    assert make_hypergradient_method("fg2u", {}).num_directions is None  # N unknown: min(8, N) at each estimate
    with pytest.raises(configuration.ConfigError, match=r"^tune\.then\.options\.num_directions = 6: more directions "
                                                        r"than the N = 5 tuned values; .*fgu"):
        make_hypergradient_method("fg2u", {"num_directions": 6}, "tune.then", size=5)
    assert make_hypergradient_method("zo_fg2u", {"num_directions": 9}, size=2).num_directions == 9  # no exact rival
