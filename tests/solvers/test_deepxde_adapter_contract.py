"""DeepXDE adapter, what its solve promises beyond the stated error: exact derivatives,
pinnlab's collocation protocol, the configured network and learning rate, a diverged run
reported as such, torch's defaults restored after the import, and the config's settings
(and the tuned ones) reaching the solve. Every check is exact or closed-form, on runs of a
few steps."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators.base import Directional, Gradient, HessianDiagonal, Value, WeightedLaplacian

if importlib.util.find_spec("deepxde") is None:  # (importorskip's import would bypass import_deepxde)
    pytest.skip("needs deepxde", allow_module_level=True)


def _solve(equation=None, **kwargs):
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    settings = dict(steps=3, width=8, depth=2, batch_size=16, test_points=50, display_every=2)
    return solve_with_deepxde(equation or PoissonTwoBody(3, seed=1), **(settings | kwargs))


def test_the_import_restores_torchs_default_dtype_and_device(tmp_path):
    """A stand-in deepxde that changes torch's default dtype and device when imported (as
    DeepXDE does with CUDA present): both are as before afterwards, and DDE_BACKEND was
    pytorch during its import though the environment did not set it."""
    fake = tmp_path / "deepxde"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os, torch\n"
        "BACKEND = os.environ.get('DDE_BACKEND')\n"
        "torch.set_default_dtype(torch.float64)\n"
        "torch.set_default_device('meta')\n"
    )
    code = ("import torch\nfrom pinnlab.solvers.deepxde_adapter import import_deepxde\n"
            "dde = import_deepxde()\n"
            "assert dde.BACKEND == 'pytorch', dde.BACKEND\n"
            "assert torch.get_default_dtype() == torch.float32, torch.get_default_dtype()\n"
            "assert torch.empty(1).device.type == 'cpu', torch.empty(1).device\n")
    env = {k: v for k, v in os.environ.items() if k != "DDE_BACKEND"}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_derivative_queries_are_answered_exactly():
    """y = x₀³ + 2x₁²x₂ + x₀x₂ in float64: value, gradient, a directional derivative, the
    Hessian diagonal (not a row of the Hessian: ∂₀₂y = 1 ≠ ∂₂₂y = 0) and a Laplacian whose
    per-point weights are 0 for some points of a column."""
    from pinnlab.solvers.deepxde_adapter import _autograd_estimate, import_deepxde

    dde = import_deepxde()
    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=torch.float64, requires_grad=True)
    y = (x[:, 0] ** 3 + 2 * x[:, 1] ** 2 * x[:, 2] + x[:, 0] * x[:, 2])[:, None]
    x0, x1, x2 = x.detach().unbind(1)
    gradient = torch.stack([3 * x0 ** 2 + x2, 4 * x1 * x2, 2 * x1 ** 2 + x0], dim=1)
    hessian_diagonal = torch.stack([6 * x0, 4 * x2, torch.zeros_like(x0)], dim=1)
    v = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    answers = _autograd_estimate(dde, x, y, [Value(), Gradient(), Directional(v), HessianDiagonal(),
                                             WeightedLaplacian(w)])
    expected = [y.detach()[:, 0], gradient, gradient @ v, hessian_diagonal, (hessian_diagonal * w).sum(1)]
    for got, want in zip(answers, expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)


def _recorded(monkeypatch, equation, sampler: str) -> list:
    """The points every call of ``equation``'s ``sampler`` returns, in order."""
    draws, sample = [], getattr(equation, sampler)

    def recorded(n, *, generator, dtype=torch.float32):
        draws.append(sample(n, generator=generator, dtype=dtype))
        return draws[-1]

    monkeypatch.setattr(equation, sampler, recorded)
    return draws


def test_each_step_trains_on_a_fresh_batch_of_the_equations_own_sampler(monkeypatch):
    """pinnlab's protocol: batch_size collocation points per draw, draw k from the
    generator (seed, "deepxde", k), a new draw for every step (DeepXDE's resampler
    with period 1); never the boundary point count, never one draw repeated."""
    equation = PoissonTwoBody(3, seed=1)
    sample, draws = equation.sample_collocation, _recorded(monkeypatch, equation, "sample_collocation")
    steps = 4
    _solve(equation, steps=steps, batch_size=16, boundary_points=24, test_points=50, seed=7)
    draws = [points for points in draws if len(points) != 50]  # (the seeded test set draws from it too)
    assert len(draws) == 2 + steps  # DeepXDE's initial training and test batches, then one per step
    for k, points in enumerate(draws, start=1):
        assert points.shape == (16, 3)
        torch.testing.assert_close(points, sample(16, generator=make_generator(7, "deepxde", k), dtype=torch.float64),
                                   rtol=0, atol=0)
    assert len({tuple(p[0].tolist()) for p in draws}) == len(draws)


def test_a_soft_constraint_fits_the_boundary_draw_of_the_runs_seed(monkeypatch):
    """The PointSetBC's points are boundary_points draws of the equation's boundary
    sampler from the generator (seed, "deepxde", "boundary"): another seed, other points."""
    equation = PoissonTwoBody(3, seed=1, constraint="soft")
    sample, draws = equation.sample_boundary, _recorded(monkeypatch, equation, "sample_boundary")
    _solve(equation, steps=1, boundary_points=24, seed=7)
    expected = sample(24, generator=make_generator(7, "deepxde", "boundary"), dtype=torch.float64)
    assert len(draws) == 1
    torch.testing.assert_close(draws[0], expected, rtol=0, atol=0)


def test_the_network_has_depth_affine_layers_as_pinnlabs_mlp():
    """model.depth counts affine layers, [D, width, ..., 1], as for pinnlab's MLP."""
    result = _solve(width=8, depth=3)
    shapes = [tuple(p.shape) for k, p in result.params.items() if k.endswith("weight")]
    assert shapes == [(8, 3), (8, 8), (1, 8)]


def test_a_hard_constraint_holds_exactly_on_the_boundary():
    """The ansatz is DeepXDE's output transform: at points of the boundary sampler the
    prediction is the boundary value whatever the network (float32 rounding only)."""
    equation = PoissonTwoBody(3, seed=1)
    result = _solve(equation)
    xb = equation.sample_boundary(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(result.predict(xb).double(), equation.boundary_value(xb), rtol=1e-5, atol=1e-5)


def test_the_learning_rate_is_adams_and_the_historys():
    """lr = 0: the parameters after 3 steps are the initial ones (those after 1 step) and
    every history row records lr 0."""
    one, three = _solve(steps=1, lr=0.0), _solve(steps=3, lr=0.0)
    assert all(torch.equal(one.params[k], three.params[k]) for k in one.params)
    assert three.history.rows["lr"] == [0.0, 0.0]
    moved = _solve(steps=3, lr=1e-2)
    assert not all(torch.equal(one.params[k], moved.params[k]) for k in one.params)
    assert moved.history.rows["lr"] == [1e-2, 1e-2]


def test_a_single_step_run_reports_its_speed_over_the_whole_run():
    """Nothing is timed after the first step of a one-step run: steps per second is
    1 / the run's wall time (not 0, not a division by zero)."""
    result = _solve(steps=1)
    assert result.stats["steps_done"] == 1.0
    assert result.stats["steps_per_second"] == 1.0 / result.stats["wall_s"]


def test_a_diverged_run_is_reported_nonfinite():
    """An absurd learning rate sends the parameters to inf/NaN: status "nonfinite" with the
    message that says so, not "ok"."""
    result = _solve(steps=4, lr=1e30)
    assert not all(bool(torch.isfinite(v).all()) for v in result.params.values())
    assert result.status == "nonfinite", (result.status, result.message)
    assert "DeepXDE training diverged" in result.message


# ----------------------------------------------------------------------------- the config's settings


def _config(tmp_path, *overrides):
    from pinnlab import config as configuration

    cfg = tmp_path / "dde.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}\n"
                   "model: {width: 12, depth: 3, activation: sin}\n"
                   "loss: {kind: biased, weights: {boundary: 1.0e-2}, boundary_points: 40}\n"
                   "trainer: {steps: 30, lr: 2.0e-3, batch_size: 24, eval_every: 50, test_points: 70, seed: 5,"
                   " log_every: 9, backend: deepxde}\n")
    return configuration.load(cfg, list(overrides))


def test_the_config_reaches_the_adapter(tmp_path, monkeypatch):
    """Every setting of the config that DeepXDE's training takes is passed on as given;
    the display period is at most the steps (a row at the end only when eval_every >
    steps); loss weights [residual, boundary] with the residual's default 1."""
    from pinnlab import config as configuration
    from pinnlab.solvers import deepxde_adapter

    calls = []
    monkeypatch.setattr(deepxde_adapter, "solve_with_deepxde", lambda equation, **kw: calls.append(kw))
    config = _config(tmp_path)
    equation = configuration.build(config)[0].equation
    configuration.solve_config_with_deepxde(config, equation)
    assert calls == [dict(steps=30, lr=2e-3, width=12, depth=3, activation="sin", batch_size=24, boundary_points=40,
                          loss_weights=[1.0, 1e-2], test_points=70, test_set=None, seed=5, display_every=30,
                          progress="off", log_every=9)]


def test_tuned_weights_override_the_configs_and_the_residual_defaults_to_one(tmp_path):
    from pinnlab import config as configuration

    config = _config(tmp_path)
    soft = configuration.build(config)[0].equation
    assert configuration.deepxde_loss_weights(config, soft) == [1.0, 1e-2]
    assert configuration.deepxde_loss_weights(config, soft, {"boundary": 0.5}) == [1.0, 0.5]
    hard = PoissonTwoBody(3, seed=1)  # no boundary term; loss.weights has no residual entry
    assert configuration.deepxde_loss_weights(config, hard) == [1.0]


def test_the_final_solve_trains_with_the_tuned_lr_and_weights_for_final_steps(tmp_path, monkeypatch):
    """tune.inner: deepxde: the final solve's DeepXDE training gets the tuned φ (learning
    rate and boundary weight), not the start values, for tune.final_steps steps."""
    from pinnlab import config as configuration
    from pinnlab.tuning.run import TuneOutcome, _deepxde_settings, final_solve
    from pinnlab.tuning.setup import build_tuning

    config = _config(tmp_path, "data={source: synthetic, points: 20, seed: 0}",
                     "tune={method: zo_fg2u, options: {num_directions: 1}, inner: deepxde, objective: {kind: data},"
                     " tunables: {weights.boundary: {}, lr: {}}, outer_steps: 1, horizon: 3, final_steps: 11}")
    setup = build_tuning(config)
    phi = {"lr": torch.tensor(7e-3), "weights.boundary": torch.tensor(0.25)}
    lr, weights = _deepxde_settings(setup, phi)
    assert lr == pytest.approx(7e-3) and weights == pytest.approx([1.0, 0.25])
    calls = []
    monkeypatch.setattr(configuration, "solve_config_with_deepxde", lambda *a, **kw: calls.append(kw) or "result")
    outcome = TuneOutcome(phi=phi, history={}, method="zo_fg2u", seconds=0.0)
    assert final_solve(setup, outcome, progress="off")[0] == "result"
    assert calls[0]["steps"] == 11
    assert calls[0]["lr"] == pytest.approx(7e-3) and calls[0]["loss_weights"] == pytest.approx([1.0, 0.25])


@pytest.mark.parametrize("constraint", ["hard", "soft"])
def test_the_residual_is_of_the_networks_output_as_it_is(monkeypatch, constraint):
    """The residual DeepXDE trains on is the PDE's residual of the output it is given: the
    output transform already applied a hard constraint's ansatz, so the residual must not
    apply it again. With the exact solution as the output the residual is 0 (float64
    rounding), for the hard and the soft variant of the equation (the residual of the
    ansatz applied to u again is not: the hard case fails with it)."""
    from pinnlab.solvers import deepxde_adapter

    dde = deepxde_adapter.import_deepxde()
    captured = []

    def stop(geometry, pde, *args, **kwargs):
        captured.append(pde)
        raise RuntimeError("captured")

    monkeypatch.setattr(dde.data, "PDE", stop)
    equation = PoissonTwoBody(4, seed=1, constraint=constraint)
    with pytest.raises(RuntimeError, match="captured"):
        _solve(equation)
    x = equation.sample_collocation(16, generator=make_generator(5, "test"), dtype=torch.float64)
    x.requires_grad_(True)
    residual = captured[0](x, equation.exact(x)[:, None])
    assert residual.shape == (16, 1)
    torch.testing.assert_close(residual.detach(), torch.zeros(16, 1, dtype=torch.float64), rtol=0, atol=1e-10)
