"""Fourth mutation audit of the networks (``pinnlab.nets``) and the pre-flight memory
estimate (``pinnlab.sizes``): what the earlier tests let through.

The MLP's defaults and its refusal of an unknown activation; gradients (θ and x) through a
Perturbation's factorised first layer, centre pattern included; and, in
``sizes.memory_moments`` on the tiny configs of tests/test_config_sizes_rules.py, counted by
hand: the reference's independent noise, a shared-noise evaluation's draw, a tuning step
and a reverse-mode unroll, a Hutchinson run's Stein objective, a soft constraint's boundary
points, an objective from a file not yet read, the absence of a noisy evaluation without
Stein, and the overflow message's settings. Each test names the change it catches.
"""

from __future__ import annotations

import re

import pytest
import torch

from pinnlab import sizes as S
from pinnlab.nets import ACTIVATIONS, MLP, Perturbation
from tests.test_config_sizes_rules import RESIDUAL_TUNE, STUDY, _config
from tests.test_nets_sizes_second_audit import HELD, TRAINING_STEP

F64 = torch.float64


# -- the MLP's arguments ------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "Tanh", ""])
def test_an_unknown_activation_is_a_value_error_naming_the_choices(activation):
    """Refused with the sorted choices (caught: the check dropped, a bare KeyError from
    the ACTIVATIONS lookup)."""
    choices = sorted(ACTIVATIONS)
    assert choices == ["gelu", "silu", "sin", "softplus", "tanh"]
    with pytest.raises(ValueError, match=re.escape(f"activation {activation!r} is not one of {choices}")):
        MLP(3, width=4, depth=2, activation=activation)


def test_the_default_mlp_is_the_benchmarks_tanh_network_of_three_hidden_layers_of_128():
    """MLP(D) is [D, 128, 128, 128, 1] with tanh in float32 (the docstring, REFERENCE.md
    §4.1), and computes tanh's network (caught: another default width, depth,
    activation or dtype)."""
    net = MLP(5)
    assert [(layer.in_features, layer.out_features) for layer in net.layers] == [
        (5, 128), (128, 128), (128, 128), (128, 1)]
    assert (net.width, net.depth, net.activation_name) == (128, 4, "tanh") and net.activation is torch.tanh
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    x = torch.linspace(-1, 1, 15).reshape(3, 5)
    h = x
    for layer in net.layers[:-1]:
        h = torch.tanh(h @ layer.weight.T + layer.bias)
    with torch.no_grad():
        torch.testing.assert_close(net(x), (h @ net.layers[-1].weight.T + net.layers[-1].bias)[:, 0])


# -- the memory estimate: noise layouts ---------------------------------------------------------
def test_an_estimator_studys_reference_draws_independent_noise_whatever_the_studys_noise():
    """The reference is computed with independent noise (studies/estimator_study.py), so
    with study.noise = [shared] its two groups still draw (points, K_ref, D), while the
    shared estimates draw one (K, D) (caught: the reference given the study's noise)."""
    moments = S.memory_moments(_config([*STUDY, "study.noise=[shared]"]))
    reference = [t for t in moments["an estimator study's reference"] if t.what.startswith("the noise draw")]
    assert [(t.shape, t.nbytes) for t in reference] == [((64, 16, 3), 64 * 16 * 3 * 4)] * 2
    assert reference[0].settings == ("study.points", "study.reference_samples", "equation.dim")
    (estimates,) = [t for t in moments["an estimator study's estimates (shared noise)"]
                    if t.what.startswith("the noise draw")]
    assert estimates.shape == (8, 3)


def test_a_shared_noise_evaluation_draws_one_k_by_d_noise():
    """An evaluation with shared noise draws ξ of (K_eval, D) for all its points, not
    (1, K_eval, D) (caught: the evaluation sized as independent noise whatever the run's)."""
    evaluation = {t.what: t for t in S.memory_moments(_config(["estimator.noise=shared", "estimator.eval_samples=6"]))[
        "an evaluation"]}
    draw = evaluation["the noise draw ξ of an evaluation"]
    assert draw.shape == (6, 3) and draw.settings == ("estimator.eval_samples", "equation.dim")
    assert evaluation["the hidden activations of an evaluation"].shape == (1, 2, 6, 8)


# -- the memory estimate: a tuning's steps, counted by hand ---------------------------------------
TUNE = [*RESIDUAL_TUNE, "tune.objective.samples=4", "tune.objective.points=7"]


def test_a_tuning_step_holds_the_objectives_points_beside_the_step():
    """SMALL tuned on a residual objective of 7 points (hypergradient fg2u, one step at a
    time): the network and adam state (HELD), the objective's 7 × 3 points and the
    step's points, draw and two hidden layers' activations (caught: the objective's
    points left out of the tuning step)."""
    tensors = S.memory_moments(_config(TUNE))["a tuning step"]
    assert [t.what for t in tensors][4:] == ["the tuning objective's points", "a training step's points",
                                            "the noise draw ξ of a training step",
                                            "the hidden activations of a training step"]
    assert sum(t.nbytes for t in tensors) == (HELD + 7 * 3 * 4 + 10 * 3 * 4 + 10 * 4 * 3 * 4
                                              + 2 * 10 * 2 * 4 * 8 * 4) == 7212


def test_a_reverse_mode_unroll_keeps_each_steps_tensors_and_new_theta_beside_the_run():
    """rgu over T = 3 steps: the run's network and adam state, then per unrolled step its
    points, draw, activations (each layer's pre-activation and output) and θ with the tensors
    adam's update keeps for the backward pass (5 copies of each layer), and the objective's
    points (caught: the run's own state or the kept θ dropped)."""
    tensors = S.memory_moments(_config([*TUNE, "tune.method=rgu", "tune.horizon=3"]))["a reverse-mode unroll"]
    kept = " (kept for each of 3 unrolled steps)"
    assert [(t.what, t.copies) for t in tensors] == [
        ("the network's first layer", 1), ("the network's hidden layers", 1),
        ("the first layer's θ and optimizer state", 3), ("the hidden layers' θ and optimizer state", 3),
        (f"a training step's points{kept}", 3), (f"the noise draw ξ of a training step{kept}", 3),
        (f"the hidden activations of a training step{kept}", 2 * 2 * 3),
        (f"the first layer's θ and its update's tensors{kept}", 5 * 3),
        (f"the hidden layers' θ and their update's tensors{kept}", 5 * 3),
        ("the tuning objective's points", 1)]
    assert sum(t.nbytes for t in tensors) == (HELD + 3 * 10 * 3 * 4 + 3 * 10 * 4 * 3 * 4 + 12 * 10 * 2 * 4 * 8 * 4
                                              + 15 * 8 * 3 * 4 + 15 * 8 * 8 * 4 + 7 * 3 * 4) == 39292


def test_a_hutchinson_runs_stein_residual_objective_is_counted():
    """A Stein residual objective is built from the estimator section whatever its kind
    (config._stein_residual_objective): a Hutchinson run tuned on one holds its 7 points'
    (7, K, D) draw, both hidden layers' activations and the last layer's two gradients
    (caught: the objective counted only for Stein runs)."""
    config = _config([*TUNE, "estimator.kind=hutchinson", "estimator.probes=2"])
    assert (config.tune.objective.estimator, config.estimator.kind) == ("stein", "hutchinson")
    tensors = {t.what: t for t in S.memory_moments(config)["the tuning objective"]}
    assert tensors["the noise draw ξ of the tuning objective"].shape == (7, 4, 3)
    activations = tensors["the hidden activations of the tuning objective"]
    gradients = tensors["the gradients of the tuning objective's last hidden layer"]
    assert (activations.shape, activations.copies, gradients.shape, gradients.copies) == (
        (7, 2, 4, 8), 2, (7, 2, 4, 8), 2)
    assert sum(t.nbytes for t in tensors.values()) == (HELD + 7 * 3 * 4 + 7 * 4 * 3 * 4
                                                       + 2 * 2 * 7 * 2 * 4 * 8 * 4)


def test_a_soft_constraints_training_step_counted_by_hand():
    """SMALL with a soft constraint on 6 boundary points: the step of the second audit
    (TRAINING_STEP) plus the (6, 3) boundary points, their (6, K, D) draw and both hidden
    layers' (6, 2, K, w) activations (caught: the boundary points left out)."""
    step = S.memory_moments(_config(["equation.constraint=soft", "loss.boundary_points=6"]))["a training step"]
    (points,) = [t for t in step if t.what == "the boundary points"]
    assert (points.shape, points.itemsize, points.settings) == ((6, 3), 4, ("loss.boundary_points", "equation.dim"))
    assert sum(t.nbytes for t in step) == TRAINING_STEP + 6 * 3 * 4 + 6 * 4 * 3 * 4 + 2 * 6 * 2 * 4 * 8 * 4 == 10680


def test_a_data_objective_from_an_unread_file_is_counted_once_its_size_is_known(tmp_path):
    """A tuning objective on observations from a file: before it is read (observations
    None) no objective is counted and the check passes; once 50 are known their
    (50, K, D) draw is (caught: the objective sized with None points, a TypeError in
    check_sizes)."""
    import numpy as np

    path = tmp_path / "obs.npz"
    np.savez(path, x=np.full((50, 3), 0.1), u=np.zeros(50))
    config = _config([*RESIDUAL_TUNE[:1], f"data.source={path}", "tune.objective.kind=data",
                      "tune.objective.samples=4"])
    assert "the tuning objective" not in S.memory_moments(config)
    S.check_sizes(config)
    objective = {t.what: t for t in S.memory_moments(config, observations=50)["the tuning objective"]}
    assert objective["the noise draw ξ of the tuning objective"].shape == (50, 4, 3)


@pytest.mark.parametrize("kind", ["autograd", "hutchinson"])
def test_a_run_without_stein_smoothing_has_no_noisy_evaluation(kind):
    """Only a Stein run evaluates u_σ with eval_samples of noise per point; an autograd or
    Hutchinson run evaluates the raw network on its test set, within the training step's
    tensors (caught: a Stein evaluation counted for every estimator)."""
    moments = S.memory_moments(_config([f"estimator.kind={kind}"]))
    assert sorted(moments) == ["a training step", "drawing the test set"]
    assert not [t for tensors in moments.values() for t in tensors if "ξ" in t.what]


# -- the perturbed evaluation's gradients ---------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "independent"])
def test_gradients_through_a_perturbation_are_those_of_its_explicit_inputs(shared):
    """∇θ and ∇x of Σ w_{nsk} f(z_{nsk}) through the factorised first layer, the centre
    pattern included, equal those of the MLP on the materialized inputs (caught: W·x or
    the centre's values detached, which left the values exact and the Stein loss's f(x)
    term, or the smoothed u's input gradient, without a gradient)."""
    g = torch.Generator().manual_seed(21)
    n, k, d = 3, 4, 2
    x = torch.randn(n, d, generator=g, dtype=F64, requires_grad=True)
    shape = (k, d) if shared else (n, k, d)
    parts = (torch.randn(*shape, generator=g, dtype=F64),)
    patterns = ((1.0,), (0.0,), (-1.0,))
    weights = torch.randn(n, len(patterns), k, generator=g, dtype=F64)
    net = MLP(d, width=5, depth=3, dtype=F64, generator=torch.Generator().manual_seed(22))
    params = list(net.parameters())
    p = Perturbation(x, parts, patterns)
    factorised = torch.autograd.grad((weights * net(p)).sum(), [x, *params])
    explicit = torch.autograd.grad((weights * net(p.materialize().reshape(-1, d)).reshape(weights.shape)).sum(),
                                   [x, *params])
    for a, b in zip(factorised, explicit):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# -- the memory estimate: an overflow's message ---------------------------------------------------
def test_an_overflow_names_every_setting_that_lowers_the_tensor():
    """The network's hidden layers beyond torch's sizes: the message gives the shape and
    both settings that shrink a w × w layer (caught: only the first setting named)."""
    with pytest.raises(OverflowError) as info:
        S.check_sizes(_config(["model.width=4000000000", "model.depth=3"]))
    assert str(info.value) == ("the network's hidden layers: 4000000000 × 4000000000 elements, more than torch's sizes "
                               "allow (2**63 - 1); lower model.width, model.depth")
