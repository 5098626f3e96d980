"""The residual tuning objective uses the estimator its own section asks for, whatever the
training estimator: Stein with ``samples`` draws, or exact autograd.

It used to fall back to the training estimator unless that was Stein: Hutchinson at the
training probes, or exact autograd, either way ignoring ``samples`` (identical values at
4 and 4096 draws).
"""

from __future__ import annotations

import pytest
import torch

from pinnlab import config as configuration
from pinnlab._seeding import make_generator
from pinnlab.cli import main
from pinnlab.estimators import SteinAntithetic
from pinnlab.tuning.setup import build_tuning

CONFIG = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 16, depth: 2}
estimator: {sigma: 0.05, samples: 8, probes: 4, noise: shared}
trainer: {steps: 10, lr: 1.0e-2, schedule: constant, batch_size: 16, dtype: float64}
tune:
  tunables: {weights.residual: {}}
  objective: {kind: residual, points: 64}
  outer_steps: 1
  horizon: 2
"""
KINDS = ["stein", "hutchinson", "autograd"]


def _config(tmp_path, *overrides):
    path = tmp_path / "tune.yaml"
    path.write_text(CONFIG)
    return configuration.load(path, list(overrides))


def _objective(tmp_path, *overrides):
    """The outer objective at the initial network and φ, and the setup."""
    setup = build_tuning(_config(tmp_path, *overrides))
    with torch.no_grad():
        return float(setup.outer_loss(setup.init[0], setup.phi0)), setup


@pytest.mark.parametrize("kind", KINDS)
def test_stein_residual_objective_uses_its_own_samples_for_every_training_estimator(tmp_path, kind):
    values = {k: _objective(tmp_path, f"estimator.kind={kind}", "tune.objective.estimator=stein",
                            f"tune.objective.samples={k}")[0] for k in (4, 1024)}
    assert values[4] != pytest.approx(values[1024], rel=1e-3), values
    # Stein at the estimator section's σ and noise mode: the same draws as under Stein
    # training (the network's initialisation does not depend on the estimator)
    stein = _objective(tmp_path, "estimator.kind=stein", "tune.objective.samples=4")[0]
    assert values[4] == pytest.approx(stein, rel=1e-12)


def _record_chunk_sizes(monkeypatch, estimator_class) -> list:
    """The ``chunk_size`` of every ``estimator_class`` estimate made from now on (the list
    fills as they run)."""
    chunks = []
    real = estimator_class.estimate

    def spy(self, *args, **kwargs):
        chunks.append(self.chunk_size)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(estimator_class, "estimate", spy)
    return chunks


@pytest.mark.parametrize("kind", ["stein", "hutchinson"])
def test_the_stein_outer_objective_chunks_as_the_estimator_section_says(tmp_path, monkeypatch, kind):
    """estimator.chunk_size bounds the memory of the outer objective's (large-K) Stein
    estimate too (it was dropped: all points × samples in one piece)."""
    chunks = _record_chunk_sizes(monkeypatch, SteinAntithetic)
    plain = _objective(tmp_path, f"estimator.kind={kind}", "tune.objective.samples=64")[0]
    chunks.clear()
    chunked = _objective(tmp_path, f"estimator.kind={kind}", "tune.objective.samples=64", "estimator.chunk_size=16")[0]
    assert chunks and set(chunks) == {16}
    assert chunked == pytest.approx(plain, rel=0.2)  # the same objective, other draws at most


@pytest.mark.parametrize("kind", KINDS)
def test_autograd_residual_objective_is_the_exact_residual_of_the_network(tmp_path, kind):
    value, setup = _objective(tmp_path, f"estimator.kind={kind}", "tune.objective.estimator=autograd")
    spec = setup.config.tune.objective
    equation = setup.problem.equation
    x = equation.sample_test(spec.points, generator=make_generator(spec.seed, "outer/points"),
                             dtype=torch.float64).requires_grad_(True)
    net = setup.problem.model(setup.init[0])

    def laplacian(u):
        (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        return sum(torch.autograd.grad(grad[:, j].sum(), x, create_graph=True)[0][:, j]
                   for j in range(x.shape[1]))

    u = (1 - (x * x).sum(-1)) * net(x).reshape(-1)  # the hard constraint u = (1 − ‖x‖²)·f
    source = laplacian(equation.exact(x))  # Poisson: Δu = f with f = Δu*
    exact = float(((laplacian(u) - source) ** 2).mean().detach())
    assert value == pytest.approx(exact, rel=1e-9)


def test_the_autograd_outer_objective_takes_the_autograd_estimators_chunk_size(tmp_path, monkeypatch):
    """With autograd training, estimator.chunk_size (coordinates per batch of HVPs) is the
    objective's memory knob too; it built a plain Autograd() and dropped it."""
    from pinnlab.estimators import Autograd

    chunks = _record_chunk_sizes(monkeypatch, Autograd)
    plain = _objective(tmp_path, "estimator.kind=autograd", "tune.objective.estimator=autograd")[0]
    chunks.clear()
    chunked = _objective(tmp_path, "estimator.kind=autograd", "tune.objective.estimator=autograd",
                         "estimator.chunk_size=2")[0]
    assert chunks and set(chunks) == {2}
    assert chunked == pytest.approx(plain, rel=1e-12)  # exact either way


def test_time_smoothing_the_stationary_objective_is_refused_with_one_line(tmp_path, capsys):
    """Hutchinson training ignores estimator.time_smoothing, but the Stein objective would
    smooth the last space column as time."""
    path = tmp_path / "tune.yaml"
    path.write_text(CONFIG)
    out = tmp_path / "t.h5"
    code = main(["tune", str(path), "estimator.kind=hutchinson", "estimator.time_smoothing=independent",
                 "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no time variable" in err[0], err
    assert not out.exists()
