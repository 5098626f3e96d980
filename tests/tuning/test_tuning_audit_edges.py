"""Tests from a second mutation audit of the tuning layer (pinnlab/tuning), in closed form
where there is one: the data objective's mean, its own samples and seed, the Stein residual
objective's single draw, a tuned weight beside the config's other weights, the collocation
network's shape and value, logit ranges and default starts, the outer SGD and Adam steps,
the tune section's defaults and edges, joint fitting's budget and step indices, diverged
trials, the horizon an outer step unrolls, a search's best trial handed to the final solve,
the DeepXDE black box's settings, combinations near a refusal that must be accepted, the
/tune record of a run that stopped early, and the command's summary line, process check and
--overwrite past a lone final checkpoint. Two tests pin the bugs it found, now fixed (joint
fitting's per-row seconds; searches refused over a range without the default init).
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.tuning.setup import build_tuning

from .micro_configs import JOINT_MU, WEIGHT_FG2U

AUTOGRAD = (WEIGHT_FG2U.replace("estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared, eval_samples: 2}",
                                "estimator: {kind: autograd}")
            .replace("objective: {kind: data, samples: 2}", "objective: {kind: data}"))
"""WEIGHT_FG2U with exact autograd training: a deterministic network value u(x)."""


def _load(tmp_path, *overrides, text=WEIGHT_FG2U):
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return configuration.load(path, list(overrides))


def _setup(tmp_path, *overrides, text=WEIGHT_FG2U):
    return build_tuning(_load(tmp_path, *overrides, text=text))


class _Handed(Exception):
    """Raised by a spy once it has seen what it was handed."""


def _outer(setup, phi=None):
    """The outer objective at the initial network and φ (default φ₀)."""
    with torch.no_grad():
        return float(setup.outer_loss(setup.init[0], setup.phi0 if phi is None else phi))


# -- outer objectives ------------------------------------------------------------------
def test_the_data_objective_is_the_mean_squared_misfit_at_the_observations(tmp_path):
    """f = (1/M) Σ (u(x_m) − y_m)² over the M observations (not their sum), with u the
    solution the solver reports (autograd training: the raw network, deterministic)."""
    from pinnlab.solvers.evaluate import predict

    setup = _setup(tmp_path, text=AUTOGRAD)
    x, y = setup.observations
    u = predict(setup.problem, setup.init[0], x)
    expected = float(((u.reshape(y.shape) - y) ** 2).mean())
    assert x.shape[0] == 10 and expected > 0
    assert _outer(setup) == pytest.approx(expected, rel=1e-12)


def test_the_data_objective_smooths_with_its_own_samples_and_seed(tmp_path):
    """Under Stein training the data objective's u_σ takes tune.objective.samples draws
    (not the training's estimator.samples) from tune.objective.seed's stream: the same
    objective whatever the training's sample count, another at another seed or count."""
    value = {(k, train, seed): _outer(_setup(tmp_path, f"tune.objective.samples={k}", f"estimator.samples={train}",
                                             f"tune.objective.seed={seed}"))
             for k, train, seed in ((4, 2, 0), (4, 4, 0), (1024, 2, 0), (4, 2, 5))}
    assert value[4, 2, 0] == pytest.approx(value[4, 4, 0], rel=1e-12)  # training's count plays no part
    assert value[4, 2, 0] != pytest.approx(value[1024, 2, 0], rel=1e-6)
    assert value[4, 2, 0] != pytest.approx(value[4, 2, 5], rel=1e-6)


# -- φ ↦ hyperparameters -----------------------------------------------------------------
def test_a_tuned_weight_replaces_its_own_term_and_keeps_the_configs_others(tmp_path):
    """Tuning weights.residual leaves loss.weights.boundary = 1e-2 in the training step's
    weights (a map that rebuilt them from φ alone trained the boundary at weight 1)."""
    setup = _setup(tmp_path, "tune.tunables={weights.residual: {init: 3.0}}")
    weights = setup.to_hyperparams(setup.phi0)["weights"]
    assert set(weights) >= {"boundary", "residual"}
    assert float(weights["boundary"]) == 1.0e-2 and float(weights["residual"]) == 3.0


# -- the outer optimiser -----------------------------------------------------------------
def _two_steps(optimizer_of, grads):
    """φ = 1 after two steps of ``optimizer_of([φ])`` with the gradients ``grads``."""
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_of([p])
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        optimizer.step()
    return float(p.detach())


def test_the_outer_sgd_is_plain_gradient_descent(tmp_path):
    """outer_optimizer: sgd steps φ by −outer_lr·g, with no momentum: gradients 2 then 2
    at lr 0.1 end at 1 − 0.2 − 0.2 = 0.6 (heavy-ball momentum 0.9 would give 0.42)."""
    tune = _load(tmp_path, "tune.outer_optimizer=sgd", "tune.outer_lr=0.1").tune
    assert _two_steps(tune.outer_optimizer_for, [2.0, 2.0]) == pytest.approx(0.6, rel=1e-14)


def test_the_outer_adam_takes_the_configured_betas(tmp_path):
    """Adam at outer_betas (0.5, 0.6): the second step with gradients 1 then 3 is
    lr·m̂/(√v̂ + ε), m̂ = (0.5·0.5·1 + 0.5·3)/(1 − 0.5²), v̂ = (0.6·0.4·1 + 0.4·9)/(1 − 0.6²)
    (the first step is lr·sign(g) whatever the betas)."""
    tune = _load(tmp_path, "tune.outer_lr=0.1", "tune.outer_betas=[0.5, 0.6]").tune
    b1, b2, lr, eps = 0.5, 0.6, 0.1, 1e-8
    m = (b1 * (1 - b1) * 1 + (1 - b1) * 3) / (1 - b1 ** 2)
    v = (b2 * (1 - b2) * 1 + (1 - b2) * 9) / (1 - b2 ** 2)
    first = lr * 1 / (1 + eps)
    expected = 1.0 - first - lr * m / (math.sqrt(v) + eps)
    assert _two_steps(tune.outer_optimizer_for, [1.0, 3.0]) == pytest.approx(expected, rel=1e-12)


def test_the_tune_sections_defaults(tmp_path):
    """What a tune: section that gives only its tunables runs: fg2u, 20 outer steps of
    horizon 10, Adam at lr 0.05 with betas (0.9, 0.999), one estimate per step, a
    checkpoint after every outer step, trials of 10·horizon steps, objective data at 256
    points and 256 samples, seed 0."""
    from pinnlab.tuning.spec import TuneSection

    tune = TuneSection(tunables={"weights.boundary": {}})
    assert (tune.method, tune.outer_steps, tune.horizon, tune.outer_optimizer) == ("fg2u", 20, 10, "adam")
    assert tune.outer_lr == 0.05 and tuple(tune.outer_betas) == (0.9, 0.999)
    assert (tune.accumulate, tune.checkpoint_every, tune.seed, tune.warm_start) == (1, 1, 0, True)
    assert (tune.trial_steps, tune.final_steps, tune.final_init, tune.inner) == (None, None, "scratch", "pinnlab")
    assert (tune.objective.kind, tune.objective.points, tune.objective.samples) == ("data", 256, 256)


@pytest.mark.parametrize("override, accepted", [
    ("tune.objective={kind: residual, points: 0}", False), ("tune.objective={kind: residual, points: 1}", True),
    ("tune.checkpoint_every=0", True), ("tune.outer_betas=[0.0, 0.0]", True), ("tune.outer_betas=[0.9, 1.0]", False),
    ("tune.then={method: rgu, after: 0}", False),
])
def test_the_edges_of_the_tune_sections_ranges(tmp_path, override, accepted):
    """objective.points >= 1, checkpoint_every >= 0 (0: none), β in [0, 1), then.after >= 1."""
    if accepted:
        _load(tmp_path, override)
    else:
        with pytest.raises(configuration.ConfigError):
            _load(tmp_path, override)


# -- joint fitting ----------------------------------------------------------------------
def test_joint_fitting_stops_at_its_budget(tmp_path):
    """tune.budget_seconds bounds joint fitting too: with a budget below one step's time
    only the first (always allowed) of the 5 steps runs, and its row is recorded."""
    from pinnlab.tuning.search import joint_fit

    setup = _setup(tmp_path, "tune.horizon=1", "tune.outer_steps=5", "tune.budget_seconds=1.0e-9", text=JOINT_MU)
    outcome = joint_fit(setup)
    assert outcome.history["outer_step"] == [0] and outcome.status == "ok"
    setup = _setup(tmp_path, "tune.horizon=1", "tune.outer_steps=5", text=JOINT_MU)
    assert joint_fit(setup).history["outer_step"] == [0, 1, 2, 3, 4]


def test_joint_fitting_trains_on_each_steps_own_points(tmp_path, monkeypatch):
    """Step t of a joint fit evaluates the training loss at step t (its collocation points
    and noise), as the trainer does: 0, 1, ..., outer_steps·horizon − 1."""
    from pinnlab.solvers import PINNProblem
    from pinnlab.tuning.search import joint_fit

    setup = _setup(tmp_path, "tune.horizon=2", "tune.outer_steps=2", text=JOINT_MU)
    steps = []
    real = PINNProblem.objective

    def spy(self, params, hyperparams, step, seed, *args, **kwargs):
        steps.append(step)
        return real(self, params, hyperparams, step, seed, *args, **kwargs)

    monkeypatch.setattr(PINNProblem, "objective", spy)
    joint_fit(setup)
    assert steps == [0, 1, 2, 3]


# -- search trials ----------------------------------------------------------------------
def test_a_trial_whose_training_diverges_gives_no_network(tmp_path):
    """train_trial stops at a non-finite loss and returns None (the final solve then does
    not continue from a NaN network); a trial at a sane lr returns a finite θ, and the
    diverged trial scores inf."""
    from pinnlab.tuning.search import train_trial, trial_objective

    setup = _setup(tmp_path, "tune.method=random", "tune.options={}", "tune.tunables={lr: {}}")
    trained = train_trial(setup, {"lr": torch.tensor(1.0e-2, dtype=torch.float64)}, 3)
    assert trained is not None and all(bool(torch.isfinite(v).all()) for v in trained[0].values())
    huge = {"lr": torch.tensor(1.0e300, dtype=torch.float64)}
    assert train_trial(setup, huge, 3) is None
    assert trial_objective(setup, huge, 3) == math.inf


# -- refusals, and what they must not refuse ----------------------------------------------
FP3 = (WEIGHT_FG2U.replace("poisson_two_body, dim: 3, seed: 1, constraint: soft", "fokker_planck_aniso, dim: 3, seed: 0")
       .replace("weights: {boundary: 1.0e-2}", "weights: {}").replace("sigma: 0.05,", "sigma: 0.05, time_sigma: 0.1,"))
"""A time-dependent problem (time last) whose estimator gives time its own σ."""

TWO_WEIGHTS = "tune.tunables={weights.boundary: {}, weights.residual: {}}"

ACCEPTED = [
    (FP3, "tune.tunables={sigma: {per_coordinate: true}}"),  # time keeps its σ as the last coordinate
    (WEIGHT_FG2U, f"tune.method=rgu; tune.options={{}}; tune.then={{method: fg2u, after: 1}}; {TWO_WEIGHTS}; "
                  "tune.accumulate=2"),  # the second phase's directions vary
    (WEIGHT_FG2U, "tune.method=fg2u; tune.then={method: penalty, after: 1}; tune.warm_start=false"),
    (WEIGHT_FG2U, "loss.kind=hybrid; loss.switch_step=3; tune.final_steps=2; tune.tunables={mix: {}}"),
    (WEIGHT_FG2U, "data.train=true; tune.objective={kind: residual, points: 8, samples: 2}"),  # data trains
]


@pytest.mark.parametrize("text, override", ACCEPTED, ids=[a[1][:60] for a in ACCEPTED])
def test_accepted_combinations(tmp_path, text, override):
    """Combinations near a refusal that work: a per-coordinate σ beside time_sigma, accumulating
    a second phase whose directions vary, warm starts of one unrolling phase, a hybrid
    switch after the final steps when the mix (replayed as a schedule) is tuned, observations
    that a residual objective does not read but the training's data term does."""
    setup = _setup(tmp_path, *override.split("; "), text=text)
    from pinnlab.tuning.run import check_method

    check_method(setup)


def test_a_per_coordinate_sigma_starts_at_the_estimators_sigmas(tmp_path):
    """Beside estimator.time_sigma, a per-coordinate σ starts at (σ, σ, σ, time_sigma): d = 3
    space coordinates, then time."""
    setup = _setup(tmp_path, "tune.tunables={sigma: {per_coordinate: true}}", text=FP3)
    assert setup.phi0["sigma"].tolist() == [0.05, 0.05, 0.05, 0.1]


REFUSED = [
    (WEIGHT_FG2U, "loss.kind=hybrid; loss.switch_step=2; tune.tunables={mix: {transform: log}}",
     "tune.tunables.mix.transform = log: mix must stay within [low, high] = [0, 1], which only logit keeps"),
    (WEIGHT_FG2U, "loss.kind=hybrid; loss.switch_step=3; tune.final_steps=2",
     "loss.switch_step = 3: must be < tune.final_steps (2)"),
]


@pytest.mark.parametrize("text, override, expected", REFUSED, ids=[r[2][:40] for r in REFUSED])
def test_refused_combinations(tmp_path, text, override, expected):
    from pinnlab.tuning.run import check_method

    with pytest.raises(configuration.ConfigError) as err:
        check_method(_setup(tmp_path, *override.split("; "), text=text))
    assert expected in str(err.value), str(err.value)


BURGERS = """\
equation: {name: burgers, dim: 2, seed: 0}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared, eval_samples: 2}
trainer: {steps: 4, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10, dtype: float64}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.residual: {}}
  objective: {kind: residual, points: 16, samples: 8}
  outer_steps: 3
  horizon: 2
"""
"""A residual objective over Burgers' equation, whose residual has a product u·∇u."""


def test_the_stein_residual_objective_takes_every_factor_from_one_draw(tmp_path):
    """The residual objective is mean r² with r from one Stein estimate (the biased
    residual: both factors of u·∇u from the same draws of the outer/residual stream), not
    the unbiased residual's independent groups, which draw more noise and differ."""
    import dataclasses

    from pinnlab._seeding import make_generator

    setup = _setup(tmp_path, text=BURGERS)
    equation, spec = setup.problem.equation, setup.config.tune.objective
    x = equation.sample_test(spec.points, generator=make_generator(spec.seed, "outer/points"), dtype=torch.float64)
    estimator = dataclasses.replace(setup.problem.estimator, num_samples=spec.samples)
    model = setup.problem.model(setup.init[0])
    sigma = setup.to_hyperparams(setup.phi0).get("sigma")

    def mean_square(unbiased):
        generator = make_generator(spec.seed, "outer/residual")
        with torch.no_grad():
            r = equation.residual(x, lambda q: estimator.estimate(model, x, q, generator=generator, sigma=sigma),
                                  unbiased=unbiased)
        return float((r ** 2).mean())

    assert _outer(setup) == pytest.approx(mean_square(False), rel=1e-12)
    assert mean_square(True) != pytest.approx(mean_square(False), rel=1e-6)


def test_the_inner_steps_are_the_solvers_steps(tmp_path):
    """Trials train with the very training step of ``pinnlab solve``: at φ = the config's
    own values, 3 steps of a search trial give the parameters of a 3-step solve bit for
    bit, also for a trainer.seed other than 0 (its collocation points and noise)."""
    from pinnlab.solvers import train
    from pinnlab.tuning.search import train_trial

    setup = _setup(tmp_path, "trainer.seed=3", "trainer.steps=3")
    assert float(setup.phi0["weights.boundary"]) == 1.0e-2
    theta, _ = train_trial(setup, setup.phi0, 3)
    solved = train(setup.problem, **{**setup.train_kwargs, "steps": 3, "progress": "off"})
    assert set(theta) == set(solved.params)
    for key in theta:
        torch.testing.assert_close(theta[key], solved.params[key], rtol=0, atol=0)


# -- the command ------------------------------------------------------------------------
def test_the_summary_line_names_scalars_and_norms_of_vectors_only():
    """`tuned (...): weights.boundary=0.25 |coefficients.mu|=5`: a scalar by value, a
    vector by its norm, the collocation_weight network's parameters left out."""
    from pinnlab.tuning.command import _summary

    phi = {"weights.boundary": torch.tensor(0.25), "coefficients.mu": torch.tensor([3.0, 4.0]),
           "collocation_weight/0.weight": torch.ones(2, 3), "collocation_weight/2.bias": torch.zeros(1)}
    assert _summary(phi) == "weights.boundary=0.25 |coefficients.mu|=5"


def test_one_process_runs_any_method(tmp_path):
    """check_processes refuses a method that does not spread its work only under torchrun
    with several processes: rgu as one process is fine, with 2 it is refused."""
    from pinnlab.tuning.command import check_processes

    config = _load(tmp_path, "tune.method=rgu", "tune.options={}")
    check_processes(config, 1)
    with pytest.raises(configuration.ConfigError, match="under torchrun with 2 processes"):
        check_processes(config, 2)
    check_processes(_load(tmp_path), 2)  # fg2u spreads its directions



def test_a_final_solve_shorter_than_eval_every_evaluates_at_its_end(tmp_path, monkeypatch):
    """final_steps = 1 below trainer.eval_every = 2: the final solve evaluates every
    step (min(eval_every, final_steps)), as its steps are what it trains."""
    import pinnlab.tuning.run as run_module
    from pinnlab.tuning.run import TuneOutcome, final_solve

    seen = {}

    def spy(problem, **kwargs):
        seen.update(kwargs)
        raise _Handed

    monkeypatch.setattr(run_module, "train", spy)
    setup = _setup(tmp_path, "tune.final_steps=1")
    with pytest.raises(_Handed):
        final_solve(setup, TuneOutcome(setup.phi0, {}, "fg2u", 0.0), progress="off")
    assert (seen["steps"], seen["eval_every"]) == (1, 1)


DEEPXDE = WEIGHT_FG2U.replace("trainer: {steps: 4,", "trainer: {backend: deepxde, steps: 4,").replace(
    "estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared, eval_samples: 2}", "estimator: {}").replace(
    "  method: fg2u\n  options: {num_directions: 1}\n", "  method: zo_fg2u\n  inner: deepxde\n").replace(
    "objective: {kind: data, samples: 2}", "objective: {kind: data}").replace(", dtype: float64}", "}")


def test_deepxde_trains_with_the_tuned_lr_and_weights_for_the_asked_steps(tmp_path, monkeypatch):
    """The DeepXDE black box hands DeepXDE the tuned lr and loss weights ([residual,
    boundary]) and trains ``steps`` steps (a search trial's 10·horizon), horizon by
    default."""
    pytest.importorskip("deepxde")
    from pinnlab.tuning.run import _deepxde_black_box

    seen = {}

    def spy(config, equation, **kwargs):
        seen.update(kwargs)
        raise _Handed

    monkeypatch.setattr(configuration, "solve_config_with_deepxde", spy)
    setup = _setup(tmp_path, "tune.tunables={lr: {}, weights.boundary: {}}", text=DEEPXDE)
    phi = {"lr": torch.tensor(3.0e-3, dtype=torch.float64), "weights.boundary": torch.tensor(5.0, dtype=torch.float64)}
    for steps, expected in ((7, 7), (None, 2)):
        box = _deepxde_black_box(setup, steps)
        with pytest.raises(_Handed):
            box.objective(phi)
        assert (seen["steps"], seen["lr"], seen["loss_weights"]) == (expected, 3.0e-3, [1.0, 5.0])


# -- tunables -----------------------------------------------------------------------------
def test_a_logit_tunable_maps_onto_its_own_range(tmp_path):
    """A mix with low/high (0.2, 0.6) is 0.2 + 0.4·sigmoid(u): 0.4 at u = 0, 0.2 + 0.4/(1 + e^−2)
    at u = 2, and its init 0.3 at u = log(1/3) (not the full (0, 1) range)."""
    setup = _setup(tmp_path, "loss.kind=hybrid", "loss.switch_step=2",
                   "tune.tunables={mix: {low: 0.2, high: 0.6, init: 0.3}}")
    t = setup.tunables["mix"]
    assert (t.low, t.high) == (0.2, 0.6)
    u = torch.tensor([0.0, 2.0], dtype=torch.float64)
    expected = [0.4, 0.2 + 0.4 / (1 + math.exp(-2.0))]
    assert t.transform.forward(u).tolist() == pytest.approx(expected, rel=1e-14)
    assert float(t.transform.inverse(setup.phi0["mix"])) == pytest.approx(math.log(1 / 3), rel=1e-12)


def test_a_tuned_weight_of_a_term_the_config_leaves_out_starts_at_one(tmp_path):
    """weights.residual without init starts at the config's loss.weights.residual, which
    WEIGHT_FG2U leaves out: the loss's default weight 1."""
    setup = _setup(tmp_path, "tune.tunables={weights.residual: {}, weights.boundary: {}}")
    assert float(setup.phi0["weights.residual"]) == 1.0 and float(setup.phi0["weights.boundary"]) == 1.0e-2


def test_a_per_coordinate_sigma_counts_one_tuned_value_per_coordinate(tmp_path):
    """N counts the entries of φ (a per-coordinate σ over 3 space coordinates and time is
    4), so fg2u takes 4 directions by default and accepts num_directions: 4."""
    from pinnlab.tuning.run import check_method, make_hypergradient_method, tuned_size

    setup = _setup(tmp_path, "tune.tunables={sigma: {per_coordinate: true}, weights.residual: {}}", text=FP3)
    assert tuned_size(setup) == 5
    assert make_hypergradient_method("fg2u", {}, size=tuned_size(setup)).num_directions == 5
    check_method(_setup(tmp_path, "tune.tunables={sigma: {per_coordinate: true}}", "tune.options={num_directions: 4}",
                        text=FP3))


def test_a_joint_rows_seconds_cover_its_whole_outer_step(tmp_path, monkeypatch):
    """Each inner step made ≥ 50 ms long (a sleep in the training loss): a row of a joint
    fit with horizon 5 stands for 5 steps, so its seconds are ≥ 0.25 (the timer restarted
    at every inner step: a row timed the last of its 5 steps, about 0.08 s)."""
    import time

    from pinnlab.solvers import PINNProblem
    from pinnlab.tuning.search import joint_fit

    real = PINNProblem.objective

    def slow(self, *args, **kwargs):
        time.sleep(0.05)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PINNProblem, "objective", slow)
    outcome = joint_fit(_setup(tmp_path, "tune.horizon=5", "tune.outer_steps=2", text=JOINT_MU))
    assert len(outcome.history["seconds"]) == 2
    assert all(s >= 0.25 for s in outcome.history["seconds"]), outcome.history["seconds"]


def test_overwrite_starts_over_past_a_lone_final_solve_checkpoint(tmp_path, capsys):
    """A final-solve checkpoint left without the tuning's is refused with 'pass --overwrite
    to start over'; with --overwrite the run starts over (exit 0), writes its result and
    leaves neither checkpoint behind, though trainer.checkpoint_every saved the final solve's."""
    import h5py

    from pinnlab.cli import main

    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    out = tmp_path / "run.h5"
    final = tmp_path / "run.h5.final.ckpt"
    final.write_bytes(b"a final solve's steps")
    args = ["tune", str(path), "trainer.checkpoint_every=2", "-o", str(out), "--progress", "off"]
    assert main(args) == 2 and "pass --overwrite to start over" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert not final.exists() and not (tmp_path / "run.h5.ckpt").exists()
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["steps_done"] == 3 and fh["tune"].attrs["status"] == "ok"


def test_the_collocation_weight_network_is_two_sigmoid_of_a_tanh_mlp(tmp_path):
    """collocation_weight {width: 8, depth: 2}: w(x) = 2·sigmoid(v·tanh(W x + c) + b) with
    W (8, d), c (8), v (1, 8), b (1): one hidden layer, W and c drawn from U(±1/√d) (the
    torch default), v = b = 0 at the start; depth 3 adds a second hidden layer (8, 8)."""
    setup = _setup(tmp_path, "tune.method=fg2u", "tune.tunables={collocation_weight: {width: 8, depth: 2}}")
    d = setup.problem.equation.input_dim
    shapes = {name: tuple(t.init.shape) for name, t in setup.tunables.items()}
    prefix = "collocation_weight/"
    assert shapes == {prefix + "0.weight": (8, d), prefix + "0.bias": (8,), prefix + "2.weight": (1, 8),
                      prefix + "2.bias": (1,)}
    W, c = setup.phi0[prefix + "0.weight"], setup.phi0[prefix + "0.bias"]
    bound = 1 / math.sqrt(d)
    assert float(W.abs().max()) <= bound and float(c.abs().max()) <= bound
    assert float(W.abs().max()) > 0.9 * bound  # (drawn over the whole range, not 1/d)
    phi = dict(setup.phi0)
    v = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(1, 8)
    phi[prefix + "2.weight"], phi[prefix + "2.bias"] = v, torch.tensor([0.3], dtype=torch.float64)
    x = torch.linspace(-0.5, 0.5, 5 * d, dtype=torch.float64).reshape(5, d)
    expected = 2 * torch.sigmoid((torch.tanh(x @ W.T + c) @ v.T)[:, 0] + 0.3)
    torch.testing.assert_close(setup.to_hyperparams(phi)["collocation_weight"](x), expected, rtol=1e-14, atol=0)
    deeper = _setup(tmp_path, "tune.method=fg2u", "tune.tunables={collocation_weight: {width: 8, depth: 3}}")
    assert tuple(deeper.tunables[prefix + "2.weight"].init.shape) == (8, 8)
    assert tuple(deeper.tunables[prefix + "4.weight"].init.shape) == (1, 8)


def test_an_outer_step_scores_phi_after_horizon_inner_steps(tmp_path):
    """The first outer step's value is f(θ_T(φ₀), φ₀) with θ_T after exactly tune.horizon = 2
    inner steps from θ₀: a search trial of 2 steps at φ₀ scores the same, bit for bit
    (1 or 3 steps score otherwise)."""
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.search import trial_objective

    setup = _setup(tmp_path, "tune.outer_steps=1")
    value = run_tuning(setup).history["value"][0]
    scores = [trial_objective(setup, setup.phi0, steps) for steps in (1, 2, 3)]
    assert value == pytest.approx(scores[1], rel=1e-12)
    assert value != pytest.approx(scores[0], rel=1e-6) and value != pytest.approx(scores[2], rel=1e-6)


def test_the_tune_group_records_the_steps_that_ran_and_the_final_weights_in_float64(tmp_path):
    """A tuning that stopped after 2 of its 3 outer steps records steps_done = 2 and
    those 2 rows; /tune/final/weights.boundary is the tuned weight 0.3 in float64 (not
    float32's 0.30000001192...), and /tune/tuned and /tune/initial hold φ and φ₀."""
    import h5py

    from pinnlab.tuning.command import write_tune_result
    from pinnlab.tuning.run import TuneOutcome, final_solve

    setup = _setup(tmp_path)
    f64 = torch.float64
    phi = {"weights.boundary": torch.tensor(0.3, dtype=f64)}
    history = {"outer_step": [0, 1], "value": [0.5, 0.25], "grad_norm": [1.0, 2.0], "seconds": [0.1, 0.2],
               "method": ["fg2u", "fg2u"],
               "phi/weights.boundary": [torch.tensor(0.2, dtype=f64), torch.tensor(0.3, dtype=f64)]}
    outcome = TuneOutcome(phi, history, "fg2u", 0.3, status="nonfinite", message="stopped")
    result, problem = final_solve(setup, outcome, progress="off")
    out = tmp_path / "tuned.h5"
    write_tune_result(out, setup, outcome, result, problem)
    with h5py.File(out) as fh:
        tune = fh["tune"]
        assert tune.attrs["steps_done"] == 2 and tune.attrs["status"] == "nonfinite"
        assert tune["outer_step"][...].tolist() == [0, 1] and tune["value"][...].tolist() == [0.5, 0.25]
        assert tune["phi/weights.boundary"][...].tolist() == [0.2, 0.3]
        assert float(tune["tuned/weights.boundary"][()]) == 0.3 and float(tune["initial/weights.boundary"][()]) == 1.0e-2
        assert tune.attrs["final/weights.boundary"] == 0.3


def test_a_search_continued_from_its_best_trial_starts_from_that_trials_network(tmp_path, monkeypatch):
    """final_init: continue after a search replays the best trial for its trial_steps (7
    here, not the horizon 2): the final solve starts from exactly that network."""
    import pinnlab.tuning.run as run_module
    from pinnlab.tuning.run import final_solve, run_tuning
    from pinnlab.tuning.search import train_trial

    setup = _setup(tmp_path, "tune.method=random", "tune.options={}", "tune.trial_steps=7", "tune.final_init=continue")
    outcome = run_tuning(setup)
    assert outcome.extra["trial_steps"] == 7
    seen = {}

    def spy(problem, **kwargs):
        seen.update(kwargs)
        raise _Handed

    monkeypatch.setattr(run_module, "train", spy)
    with pytest.raises(_Handed):
        final_solve(setup, outcome, progress="off")
    expected, _ = train_trial(setup, outcome.phi, 7)
    started = seen["state"].params
    for key in expected:
        torch.testing.assert_close(started[key], expected[key], rtol=0, atol=0)


def test_a_search_whose_every_trial_diverged_hands_on_trial_0(tmp_path):
    """Every trial scored inf: status nonfinite, best_trial 0 and φ the values trial 0
    drew (as the warning says), not the last trial's."""
    from pinnlab.tuning.search import search

    setup = _setup(tmp_path, "tune.method=random", "tune.options={}")
    outcome = search(setup, sampler="random", score=lambda phi: math.inf)
    drawn = [float(v) for v in outcome.history["phi/weights.boundary"]]
    assert len(set(drawn)) == 3
    assert outcome.status == "nonfinite" and outcome.extra["best_trial"] == 0
    assert float(outcome.phi["weights.boundary"]) == drawn[0]
    assert "every one of the 3 trials" in outcome.message


NO_ZERO = [
    (JOINT_MU, ["tune.tunables={coefficients.mu: {transform: logit, low: 0.5, high: 2.0}}"], "coefficients.mu"),
    (JOINT_MU, ["tune.tunables={coefficients.mu: {transform: log, low: 0.5, high: 2.0}}"], "coefficients.mu"),
    (WEIGHT_FG2U, ["tune.options={}", "loss.kind=hybrid", "loss.switch_step=2", "tune.tunables={mix: {low: 0.6, high: 0.9}}"],
     "mix"),
]


@pytest.mark.parametrize("text, overrides, name", NO_ZERO, ids=["mu-logit", "mu-log", "mix"])
def test_a_search_over_a_range_without_the_default_init(tmp_path, text, overrides, name):
    """A random search over μ in [0.5, 2] (or the mix in [0.6, 0.9]) draws every trial
    from that range; the default start, which a search does not use, plays no part (it
    was checked against the range and refused: "init = 0.5 (the default): ... set init
    or low/high", and init is refused for a search)."""
    from pinnlab.tuning.run import check_method, run_tuning

    setup = _setup(tmp_path, "tune.method=random", *overrides, text=text)
    check_method(setup)
    drawn = torch.stack(run_tuning(setup).history[f"phi/{name}"])
    low, high = setup.tunables[name].low, setup.tunables[name].high
    assert float(drawn.min()) >= low and float(drawn.max()) <= high


def test_a_searchs_rows_number_its_trials_from_zero(tmp_path):
    """Trials scored (3, 1, 2): rows outer_step 0, 1, 2 (the trial index, as /tune/method's
    phase and the plots read it), method 'trial', no gradient norm; trial 1 wins."""
    from pinnlab.tuning.search import search

    setup = _setup(tmp_path, "tune.method=random", "tune.options={}")
    scores = iter([3.0, 1.0, 2.0])
    outcome = search(setup, sampler="random", score=lambda phi: next(scores))
    history = outcome.history
    assert history["outer_step"] == [0, 1, 2] and history["value"] == [3.0, 1.0, 2.0]
    assert history["method"] == ["trial"] * 3 and all(math.isnan(g) for g in history["grad_norm"])
    assert outcome.extra["best_trial"] == 1
    assert float(outcome.phi["weights.boundary"]) == float(history["phi/weights.boundary"][1])
