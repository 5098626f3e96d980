"""A reference u* that is not finite or is 0 everywhere: refused, or a run that does not end ok.

Relative errors divide by ‖u*‖ on the test set. Black–Scholes–Barenblatt parameters
whose u* overflows float64 are refused when the equation is built (config error, exit
code 2); a test set whose u* overflows or underflows in the run's dtype (Burgers at high
d, Black–Scholes with a large rate in float32) makes the relative errors NaN and the run
end with status ``invalid_reference`` (exit code 1), not ``ok`` with rel_l2 = inf.
"""

from __future__ import annotations

import math

import h5py
import pytest
import torch

from pinnlab.cli import main
from pinnlab.equations import EQUATIONS, BlackScholesBarenblatt, PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import MLP
from pinnlab.solvers import Adam, PINNProblem, train
from pinnlab.solvers.evaluate import reference_problem, relative_errors

FLOAT64_LOG_MAX = math.log(torch.finfo(torch.float64).max)


def _problem(equation, width=8):
    net = MLP(equation.input_dim, width=width, depth=2, generator=torch.Generator().manual_seed(0))
    return PINNProblem(equation, net, SteinAntithetic(sigma=0.05, num_samples=4, noise="shared"), Biased(),
                       batch_size=8)


@pytest.mark.parametrize("exact, cause", [
    (torch.zeros(6), "u* is 0 at every one of the 6 test points in float32"),
    (torch.tensor([1.0, 1e39, 2.0], dtype=torch.float64).float(), "not finite (inf or NaN) at 1 of the 3"),
    (torch.tensor([1.0, math.nan, 2.0]), "not finite (inf or NaN) at 1 of the 3"),
    (torch.tensor([1e200, 1.0], dtype=torch.float64), "‖u*‖ overflows float64"),
    (torch.tensor([1e-200, 1e-170], dtype=torch.float64), "‖u*‖ underflows to 0 in float64"),
], ids=["zero", "overflowed-float32", "nan", "norm-overflow", "norm-underflow"])
def test_relative_errors_are_nan_against_an_unusable_reference(exact, cause):
    """Before: rel_l2 = inf (‖u*‖ = 0) or NaN, either read as a result."""
    prediction = torch.full_like(exact, 0.5)
    assert cause in reference_problem(exact)
    evaluation = relative_errors(prediction, exact)
    assert math.isnan(evaluation.rel_l2) and math.isnan(evaluation.rel_l1)
    max_err = float((prediction - exact).double().abs().max())  # absolute: as before
    assert evaluation.max_err == max_err or math.isnan(evaluation.max_err) and math.isnan(max_err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relative_errors_are_unchanged_for_a_usable_reference(dtype):
    """A finite reference with a positive norm (some values underflowed to 0 included, as
    Burgers' u* at high d) gives the old quotients, bit for bit."""
    g = torch.Generator().manual_seed(0)
    exact = torch.rand(100, generator=g, dtype=torch.float64).to(dtype)
    exact[::3] = 0
    prediction = exact + 1e-3 * torch.randn(100, generator=g, dtype=dtype)
    assert reference_problem(exact) == ""
    evaluation = relative_errors(prediction, exact)
    err = (prediction - exact).double()
    assert evaluation.rel_l2 == float(err.norm() / exact.double().norm())
    assert evaluation.rel_l1 == float(err.abs().sum() / exact.double().abs().sum())


def test_every_family_has_a_usable_reference_at_d_10_000():
    """The audit's check: each registered equation's u* on its seeded test set, at d = 10⁴
    in float32 and float64, is finite with ‖u*‖ > 0. Burgers' u* underflows at most of its
    points (u* ≈ exp(−d·t/4) away from t = 0); the relative error stays defined and
    accurate (those values are below 1e-38 against a norm of order 1)."""
    names = sorted(name for name, cls in EQUATIONS.items() if cls.__module__.startswith("pinnlab.equations"))
    assert len(names) == 14
    for name in names:
        options = {"reference_samples": 16} if name == "hjb_rosenbrock" else {}  # its Monte Carlo reference
        equation = EQUATIONS[name](10_000, **options)
        for dtype in (torch.float32, torch.float64):
            exact = equation.exact_values(equation.test_set(64, dtype=dtype)).to(dtype)
            assert reference_problem(exact) == "", (name, dtype, reference_problem(exact))
            if name == "burgers":
                assert int((exact == 0).sum()) > 48


def test_black_scholes_refuses_a_solution_beyond_float64_and_only_then():
    """u* = exp((r + σ_B²)(T − t))·‖x‖² peaks at 4d·exp((r + σ_B²)T): the refusal is at
    float64's largest value, to 1e-6 in the rate."""
    dim, vol = 100, 0.4
    edge = FLOAT64_LOG_MAX - math.log(4 * dim) - vol * vol  # the rate at which the peak is float64's max
    inside = BlackScholesBarenblatt(dim, rate=edge - 1e-6, volatility=vol)
    corner = torch.cat([torch.full((1, dim), 2.0, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)], 1)
    peak = float(inside.exact(corner)[0])
    assert 1e307 < peak < math.inf
    with pytest.raises(ValueError, match=r"rate = 70\d\.\d+, volatility = 0\.4, horizon = 1: .*beyond float64"):
        BlackScholesBarenblatt(dim, rate=edge + 1e-6, volatility=vol)
    assert torch.exp(torch.tensor(edge + 1e-6 + vol * vol, dtype=torch.float64)) * 4 * dim == math.inf
    with pytest.raises(ValueError, match="beyond float64"):  # σ_B² overflows: refused, not an OverflowError
        BlackScholesBarenblatt(dim, volatility=1e200)
    BlackScholesBarenblatt(dim, rate=-1e6, horizon=10.0)  # decaying u*: its peak is ‖x‖² at t = T


def test_cli_refuses_such_parameters_in_one_line(tmp_path, capsys):
    config = tmp_path / "bs.yaml"
    config.write_text("equation: {name: black_scholes_barenblatt, dim: 10, rate: 800}\n"
                      "model: {width: 8, depth: 2}\n"
                      "estimator: {kind: stein, samples: 4, noise: shared}\n"
                      "trainer: {steps: 1, test_points: 10, batch_size: 8}\n")  # quick if it were not refused
    out = tmp_path / "run.h5"
    assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config error: equation: rate = 800" in err[0] and "float64" in err[0]
    assert not out.exists()


def test_train_with_a_zero_reference_trains_and_ends_invalid_reference():
    equation = PoissonTwoBody(3, seed=1)
    x = equation.test_set(20)
    result = train(_problem(equation), steps=4, seed=0, eval_every=2, test_set=(x, torch.zeros(20)),
                   progress="off")
    assert result.status == "invalid_reference"
    assert result.message == ("rel_l2 and rel_l1 are undefined (NaN): u* is 0 at every one of the 20 test "
                              "points in float32 (underflowed, or zero there). The training itself ended normally.")
    assert result.state.step == 4 and len(result.history.trace_loss) == 4
    assert math.isnan(result.final.rel_l2) and math.isnan(result.best_rel_l2)
    assert all(math.isnan(v) for v in result.history.rows["rel_l2"] + result.history.rows["rel_l1"])


def test_black_scholes_large_rate_overflows_float32_only():
    """rate = 100 (the audit's case): u* up to ~1e45, inf in float32 at the test points
    near t = 0, finite in float64. float32 ends invalid_reference and says that float64
    holds u*; float64 ends ok."""
    equation = BlackScholesBarenblatt(4, rate=100.0)
    result = train(_problem(equation), steps=2, seed=0, eval_every=2, test_points=50, progress="off")
    assert result.status == "invalid_reference"
    assert "u* is not finite (inf or NaN) at" in result.message and "of the 50 test points in float32" in result.message
    assert "float64 holds it (trainer.dtype: float64)" in result.message
    assert math.isnan(result.final.rel_l2)
    result = train(_problem(equation), steps=2, seed=0, eval_every=2, test_points=50, progress="off",
                   dtype=torch.float64)
    assert result.status == "ok" and result.message == "" and math.isfinite(result.final.rel_l2)


def test_diverged_run_with_a_zero_reference_stays_nonfinite_and_says_both():
    equation = PoissonTwoBody(3, seed=1)
    x = equation.test_set(20)
    result = train(_problem(equation), steps=20, optimizer=Adam(1e-3), seed=0, eval_every=5,
                   test_set=(x, torch.zeros(20)), progress="off", hyperparams={"lr": 1e30})
    assert result.status == "nonfinite"
    assert "at step" in result.message and "smaller learning rate" in result.message
    assert "Also, rel_l2 and rel_l1 are undefined (NaN): u* is 0 at every one of the 20" in result.message


def test_cli_burgers_whose_reference_underflows_exits_1_with_status_invalid_reference(tmp_path, capsys):
    """The audit's Burgers case: at d = 300 (problem seed 2) the one test point's u*
    underflows in float32; the run used to end ok with rel_l2 = inf."""
    config = tmp_path / "burgers.yaml"
    config.write_text(
        "equation: {name: burgers, dim: 300, seed: 2}\n"
        "model: {width: 8, depth: 2}\n"
        "estimator: {kind: stein, sigma: 0.01, samples: 4, noise: shared}\n"
        "loss: {kind: biased}\n"
        "trainer: {steps: 2, eval_every: 2, test_points: 1, batch_size: 8}\n"
    )
    out = tmp_path / "run.h5"
    assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 1
    captured = capsys.readouterr()
    assert "u* is 0 at every one of the 1 test points in float32" in captured.err
    assert "float64 holds it" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("rel_l2=nan rel_l1=nan ")
    with h5py.File(out, "r") as fh:
        assert fh.attrs["status"] == "invalid_reference"
        assert "u* is 0 at every one" in fh.attrs["message"]
        assert math.isnan(fh["final"].attrs["rel_l2"]) and math.isnan(fh["final"].attrs["best_rel_l2"])
        assert math.isnan(fh["history/rel_l2"][-1])


BURGERS_UNDERFLOW = (
    "equation: {name: burgers, dim: 300, seed: 2}\n"
    "model: {width: 8, depth: 2}\n"
    "trainer: {steps: 2, eval_every: 2, test_points: 1, batch_size: 8, backend: deepxde}\n"
)


def test_deepxde_backend_reports_the_reference_not_a_divergence(tmp_path, capsys):
    """The DeepXDE adapter took a NaN rel_l2 for a diverged training ("DeepXDE training
    diverged ... lower trainer.lr"): with the Burgers case above it ends
    invalid_reference like pinnlab's trainer, its parameters and prediction finite."""
    pytest.importorskip("deepxde")
    config = tmp_path / "burgers.yaml"
    config.write_text(BURGERS_UNDERFLOW)
    out = tmp_path / "run.h5"
    assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 1
    err = capsys.readouterr().err
    assert "u* is 0 at every one of the 1 test points in float32" in err and "diverged" not in err
    with h5py.File(out, "r") as fh:
        assert fh.attrs["status"] == "invalid_reference"


def test_reference_tuning_objective_with_an_unusable_reference_is_refused(tmp_path, capsys):
    """The reference objective divides by ‖u*‖² on its points: Black–Scholes with rate 100
    in float32 has inf there, and every outer value would be NaN. Refused in one line."""
    config = tmp_path / "tune.yaml"
    config.write_text(
        "equation: {name: black_scholes_barenblatt, dim: 4, seed: 1, rate: 100.0}\n"
        "model: {width: 8, depth: 2}\n"
        "estimator: {kind: stein, sigma: 0.05, samples: 4}\n"
        "trainer: {steps: 4, eval_every: 4, test_points: 20, batch_size: 8}\n"
        "tune: {method: fg2u, tunables: {lr: {}}, objective: {kind: reference, points: 200},"
        " outer_steps: 1, horizon: 2}\n"
    )
    out = tmp_path / "t.h5"
    assert main(["tune", str(config), "-o", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind reference needs a usable exact solution" in err, err
    assert "u* is not finite" in err and not out.exists()
    assert main(["tune", str(config), "trainer.dtype=float64", "-o", str(out), "--progress", "off"]) == 0
