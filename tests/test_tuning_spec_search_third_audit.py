"""Third mutation audit of pinnlab/tuning/spec.py, search.py and setup.py: what the two
earlier audits left open (the collocation network's size edges and seed, the default
search ranges, the distributions a resumed TPE search re-tells, joint fitting's training
seed and handed-on network, and the outer objectives at a tuned σ, a tuned ansatz
coefficient and the objective's own seed), and one bug it found (a search over a log
coefficient whose range reaches 0). Each test checks a closed form, a
hand-written float64 formula, a spy on what was handed on, or a documented boundary."""

from __future__ import annotations

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.tuning.search import search
from pinnlab.tuning.setup import build_tuning

from .tuning.micro_configs import JOINT_MU
from .tuning.test_tuning_audit_edges import _load, _setup


def _scores(values):
    """A stand-in for a trial's training: the k-th call scores ``values[k]``."""
    it = iter(values)
    return lambda phi: next(it)


# -- spec: the collocation network's smallest sizes ---------------------------------------------
@pytest.mark.parametrize("spec, accepted", [
    ("{width: 1, depth: 2}", True), ("{width: 0, depth: 2}", False),
    ("{width: 4, depth: 2}", True), ("{width: 4, depth: 1}", False),
])
def test_the_collocation_networks_smallest_sizes(tmp_path, spec, accepted):
    """collocation_weight: width >= 1 and depth >= 2 (depth counts the output layer: depth
    2 is one hidden layer of width units; a depth-1 network would be linear in x)."""
    overrides = ["tune.method=fg2u", f"tune.tunables={{collocation_weight: {spec}}}"]
    if accepted:
        _load(tmp_path, *overrides)
    else:
        with pytest.raises(configuration.ConfigError, match=r"tune\.tunables\.collocation_weight\.(width|depth)"):
            _load(tmp_path, *overrides)


# -- setup: default search ranges, the collocation network's seed -----------------------------
def test_the_default_search_ranges(tmp_path):
    """Without low/high a search draws a loss weight from [1e-3, 1e3], σ from [1e-3, 1],
    lr from [1e-5, 1e-1] and the mix from [0, 1]; a coefficient from its init ± 2."""
    setup = _setup(tmp_path, "tune.method=random", "tune.options={}", "loss.kind=hybrid", "loss.switch_step=2",
                   "tune.tunables={weights.boundary: {}, sigma: {}, lr: {}, mix: {}}")
    ranges = {name: (t.low, t.high) for name, t in setup.tunables.items()}
    assert ranges == {"weights.boundary": (1e-3, 1e3), "sigma": (1e-3, 1.0), "lr": (1e-5, 1e-1), "mix": (0.0, 1.0)}
    coefficient = _setup(tmp_path, "tune.method=random", "tune.tunables={coefficients.mu: {}}", text=JOINT_MU)
    t = coefficient.tunables["coefficients.mu"]
    assert (t.low, t.high) == (-2.0, 2.0)


def test_the_collocation_network_is_seeded_by_tune_seed(tmp_path):
    """The collocation_weight network's first layer is drawn from tune.seed's stream: the
    same seed draws the same layer, another seed another."""
    def first_layer(seed):
        setup = _setup(tmp_path, "tune.method=fg2u", f"tune.seed={seed}",
                       "tune.tunables={collocation_weight: {width: 4, depth: 2}}")
        return setup.phi0["collocation_weight/0.weight"]

    assert torch.equal(first_layer(3), first_layer(3))
    assert not torch.equal(first_layer(3), first_layer(0))


# -- search: the ranges a resumed TPE search re-tells ----------------------------------------------
def test_a_resumed_tpe_search_tells_optuna_each_coordinates_log_range(tmp_path, monkeypatch):
    """A per-coordinate σ is searched as sigma[0], sigma[1], ... each on the log scale over
    σ's range [1e-3, 1]; a resumed TPE search re-tells optuna its finished trials with
    exactly those distributions."""
    optuna = pytest.importorskip("optuna")
    checkpoint = tmp_path / "t.ckpt"
    tunables = "tune.tunables={sigma: {per_coordinate: true}}"
    first = _setup(tmp_path, "tune.method=optuna", "tune.options={}", "tune.outer_steps=1", tunables)
    search(first, sampler="optuna", checkpoint=checkpoint, score=_scores([1.0]))
    told = []
    real = optuna.trial.create_trial

    def spy(**kwargs):
        told.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(optuna.trial, "create_trial", spy)
    setup = _setup(tmp_path, "tune.method=optuna", "tune.options={}", "tune.outer_steps=2", tunables)
    search(setup, sampler="optuna", checkpoint=checkpoint, resume=True, score=_scores([2.0]))
    dim = setup.problem.equation.input_dim
    assert len(told) == 1 and told[0]["value"] == 1.0
    expected = optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
    assert told[0]["distributions"] == {f"sigma[{i}]": expected for i in range(dim)}


# -- joint fitting: the training's seed, the network it hands on ------------------------------------
def test_joint_fitting_trains_with_the_trainers_seed_and_hands_on_its_network(tmp_path, monkeypatch):
    """Joint fitting evaluates the training loss with trainer.seed (5 here; tune.seed, which
    joint fitting refuses, is 0), and the network it returns for final_init: continue is
    the one it trained, not θ₀."""
    from pinnlab.solvers import PINNProblem
    from pinnlab.tuning.search import joint_fit

    setup = _setup(tmp_path, "trainer.seed=5", "tune.horizon=1", "tune.outer_steps=2", text=JOINT_MU)
    seeds = []
    real = PINNProblem.objective

    def spy(self, params, hyperparams, step, seed, *args, **kwargs):
        seeds.append(seed)
        return real(self, params, hyperparams, step, seed, *args, **kwargs)

    monkeypatch.setattr(PINNProblem, "objective", spy)
    outcome = joint_fit(setup)
    assert seeds == [5, 5]
    theta0, theta = setup.init[0], outcome.trained[0]
    assert set(theta) == set(theta0)
    assert any(not torch.equal(theta[k], theta0[k]) for k in theta0)
    assert all(bool(torch.isfinite(v).all()) for v in theta.values())


# -- setup: the outer objectives ---------------------------------------------
def test_the_reference_objectives_points_follow_the_objectives_seed(tmp_path):
    """kind reference at tune.objective.seed = 7: the squared relative L2 error at the
    points drawn from seed 7's 'outer/points' stream (autograd training: deterministic u)."""
    from pinnlab._seeding import make_generator
    from pinnlab.solvers.evaluate import predict

    from .tuning.test_objective_values import BASE

    path = tmp_path / "ref.yaml"
    path.write_text(BASE.replace("TUNABLES", "{weights.boundary: {}}").replace("points: 64}", "points: 64, seed: 7}"))
    setup = build_tuning(configuration.load(path))
    theta = setup.init[0]
    with torch.no_grad():
        value = float(setup.outer_loss(theta, setup.phi0))
    equation = setup.problem.equation
    x = equation.sample_test(64, generator=make_generator(7, "outer/points"), dtype=torch.float64)
    exact = equation.exact_values(x).double()
    u = predict(setup.problem, theta, x).double().reshape(exact.shape)
    expected = float(((u - exact) ** 2).sum() / (exact ** 2).sum())
    assert value == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("objective", ["{kind: data, samples: 4}", "{kind: residual, points: 8, samples: 4}"])
def test_the_outer_objective_smooths_at_the_tuned_sigma(tmp_path, objective):
    """With σ tuned, f(θ, φ) at σ = 0.3 is the objective of the same run whose estimator
    smooths at σ = 0.3 untuned (same draws): the data objective's u_σ and the Stein
    residual objective both read the tuned σ, not the estimator section's 0.05."""
    tuned = _setup(tmp_path, f"tune.objective={objective}", "tune.tunables={sigma: {}}")
    fixed = _setup(tmp_path, f"tune.objective={objective}", "estimator.sigma=0.3")
    theta = tuned.init[0]
    sigma = torch.tensor(0.3, dtype=torch.float64)
    with torch.no_grad():
        at_tuned = float(tuned.outer_loss(theta, {"sigma": sigma}))
        at_fixed = float(fixed.outer_loss(fixed.init[0], fixed.phi0))
        at_start = float(tuned.outer_loss(theta, tuned.phi0))
    assert at_tuned == pytest.approx(at_fixed, rel=1e-12)
    assert at_tuned != pytest.approx(at_start, rel=1e-6)


HJB = """\
equation: {name: hjb_rosenbrock, dim: 2, seed: 0, reference_samples: 200}
model: {width: 4, depth: 2}
estimator: {kind: autograd}
trainer: {steps: 2, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10, dtype: float64}
data: {source: synthetic, points: 6, noise: 0.0}
tune:
  method: joint
  tunables: {coefficients.c1: {}}
  objective: {kind: data}
  outer_steps: 1
  horizon: 1
"""
"""hjb_rosenbrock (d = 2) whose hard ansatz's shift g = c₁(x₁ − x₂)² + c₂x₂² reads c₁."""


def test_the_data_objective_reads_a_tuned_coefficient_of_the_hard_ansatz(tmp_path):
    """u = A·f + g(x; c₁, c₂): at a tuned c₁ = v the data objective's u is the reported
    solution (at the true c₁) plus (v − c₁)(x₁ − x₂)², so f = mean((u − y)²) of that."""
    from pinnlab.solvers.evaluate import predict

    setup = _setup(tmp_path, text=HJB)
    x, y = setup.observations
    theta = setup.init[0]
    true_c1 = float(setup.problem.equation.coefficients["c1"][0])
    u_true = predict(setup.problem, theta, x).double().reshape(y.shape)
    for v in (0.7, true_c1):
        u = u_true + (v - true_c1) * ((x[:, 0] - x[:, 1]) ** 2).reshape(y.shape)
        expected = float(((u - y) ** 2).mean())
        with torch.no_grad():
            value = float(setup.outer_loss(theta, {"coefficients.c1": torch.tensor([v], dtype=torch.float64)}))
        assert value == pytest.approx(expected, rel=1e-10), v


# -- a bug this audit found: a log coefficient searched from a range reaching 0 --------------------
@pytest.mark.parametrize("method", ["random", "optuna"])
@pytest.mark.parametrize("spec", ["{transform: log}", "{transform: log, low: -1.0, high: 2.0}"])
def test_a_search_over_a_log_coefficient_refuses_a_range_reaching_zero(tmp_path, method, spec):
    """A log coefficient is positive: a search draws exp(U(log low, log high)), so low must
    be > 0, as for the positive tunables; it should be refused before any work (exit 2)."""
    from pinnlab.tuning.run import check_method

    with pytest.raises(configuration.ConfigError, match=r"tune\.tunables\.coefficients\.mu"):
        check_method(_setup(tmp_path, f"tune.method={method}", f"tune.tunables={{coefficients.mu: {spec}}}",
                            text=JOINT_MU))


@pytest.mark.parametrize("method, spec", [
    ("random", "{transform: log, low: 0.5, high: 2.0}"),   # a positive range: drawn log-uniformly
    ("fg2u", "{transform: log, init: 1.0}"),                # no search: its default range (-1, 3) is never drawn from
])
def test_a_log_coefficient_with_a_positive_range_or_no_search_is_accepted(tmp_path, method, spec):
    from pinnlab.tuning.run import check_method

    setup = _setup(tmp_path, f"tune.method={method}", f"tune.tunables={{coefficients.mu: {spec}}}", text=JOINT_MU)
    check_method(setup)
    assert type(setup.tunables["coefficients.mu"].transform).__name__ == "Log"


def test_a_search_over_a_log_coefficient_reaching_zero_is_one_line_and_exit_2(tmp_path, capsys):
    from pinnlab.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(JOINT_MU)
    code = main(["tune", str(config), "tune.method=random", "tune.tunables={coefficients.mu: {transform: log}}",
                 "-o", str(tmp_path / "out.h5")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "tune.tunables.coefficients.mu.low = -2 (the default, init - 2)" in err and "must be > 0" in err, err
    assert not (tmp_path / "out.h5").exists()


def test_a_searched_mix_with_transform_log_keeps_its_own_message(tmp_path):
    """Only a coefficient's range is init ± 2: a mix with transform: log is refused for its
    transform (logit keeps it within [low, high]), not for its range reaching 0."""
    with pytest.raises(configuration.ConfigError, match=r"tune\.tunables\.mix\.transform = log: .*only logit keeps"):
        _setup(tmp_path, "tune.method=random", "loss.kind=hybrid", "loss.switch_step=1",
               "tune.tunables={mix: {transform: log}}")
