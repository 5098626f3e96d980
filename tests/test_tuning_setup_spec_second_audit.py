"""Second dedicated mutation audit of pinnlab/tuning/setup.py and spec.py: what the earlier
audits left open. The shapes a tunable's init must have (a per-coordinate σ, a vector
coefficient) and the broadcast of a scalar one, a vector init named by its range, a
coefficient's default range around a vector init, the refusals of σ without Stein
training, of a mix with an identity transform, of a misspelt tunable and of an unknown
coefficient of an equation without coefficients (each by its exact line), the
objective's defaults, the required tunables, which methods tune.seed acts for, each
tunable's default parameterisation, the observations the data objective reads (count,
noise level, seed) and the Stein residual objective recomputed by hand."""

from __future__ import annotations

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.tuning.spec import ObjectiveSpec, TuneSection, default_transform, uses_seed

from .tuning.micro_configs import JOINT_MU
from .tuning.test_tuning_audit_edges import AUTOGRAD, BURGERS, FP3, _setup


def _refusal(tmp_path, *overrides, text):
    """The one line build_tuning refuses these overrides with."""
    with pytest.raises(configuration.ConfigError) as err:
        _setup(tmp_path, *overrides, text=text)
    return str(err.value)


# -- the shapes of a tunable's init ---------------------------------------------------------------
@pytest.mark.parametrize("text, override, expected", [
    (FP3, "tune.tunables={sigma: {per_coordinate: true, init: [0.1, 0.2]}}",
     "tune.tunables.sigma.init: needs shape (4,), got (2,)"),
    (JOINT_MU, "tune.tunables={coefficients.mu: {init: [0.0, 1.0, 2.0]}}",
     "tune.tunables.coefficients.mu.init: needs shape (2,), got (3,)"),
], ids=["sigma", "mu"])
def test_an_init_of_the_wrong_length_is_refused(tmp_path, text, override, expected):
    """A per-coordinate σ over 3 space coordinates and time takes 4 values, fokker_planck's
    drift μ in d = 2 two: a list of another length is refused, naming both shapes."""
    assert _refusal(tmp_path, override, text=text) == expected


def test_a_scalar_init_of_a_per_coordinate_sigma_is_every_coordinates_start(tmp_path):
    """init: 0.2 with per_coordinate: true starts all 4 coordinates (3 space, time) at 0.2
    (not at the estimator's (0.05, 0.05, 0.05, 0.1))."""
    setup = _setup(tmp_path, "tune.tunables={sigma: {per_coordinate: true, init: 0.2}}", text=FP3)
    init = setup.tunables["sigma"].init
    assert init.tolist() == [0.2] * 4 and init.dtype == torch.float64


def test_a_vector_init_outside_its_transforms_domain_is_named_by_its_range(tmp_path):
    """A per-coordinate σ with a negative entry is refused as init = [min … max] (the
    smallest entry first), with the log transform's reason."""
    message = _refusal(tmp_path, "tune.tunables={sigma: {per_coordinate: true, init: [0.1, -0.2, 0.3, 0.05]}}",
                       text=FP3)
    assert message == ("tune.tunables.sigma.init = [-0.2 … 0.3]: a log-parameterised hyperparameter must be > 0; "
                       "set init")


def test_an_init_exact_in_the_runs_dtype_is_named_as_given(tmp_path):
    """init: -1.0 in float64 is -1 exactly: named by its value alone (the '(… in float32)'
    note is for values the run's dtype rounds)."""
    message = _refusal(tmp_path, "tune.tunables={weights.boundary: {init: -1.0}}", text=AUTOGRAD)
    assert message == ("tune.tunables.weights.boundary.init = -1: a log-parameterised hyperparameter must be > 0; "
                       "set init")


# -- a coefficient's default range ------------------------------------------------------------------
def test_a_logit_coefficients_default_range_spans_its_vector_init_plus_two(tmp_path):
    """Without low/high, a coefficient's range is [min(init) − 2, max(init) + 2]: μ from
    [0, 1] has the logit transform over (−2, 3), so its start 0 is at logit⁻¹ of
    log(2/3) and 1 at log(3/2)."""
    setup = _setup(tmp_path, "tune.method=fg2u", "trainer.dtype=float64",
                   "tune.tunables={coefficients.mu: {init: [0.0, 1.0], transform: logit}}", text=JOINT_MU)
    t = setup.tunables["coefficients.mu"]
    assert (t.low, t.high) == (-2.0, 3.0)
    u = t.transform.inverse(t.init)
    torch.testing.assert_close(u, torch.log(torch.tensor([2 / 3, 3 / 2], dtype=torch.float64)), rtol=1e-12, atol=0)


# -- refusals by their exact line --------------------------------------------------------------------
def test_sigma_is_refused_without_stein_training(tmp_path):
    """σ smooths only a Stein estimator: tuning it under autograd training is refused."""
    assert _refusal(tmp_path, "tune.tunables={sigma: {}}", text=AUTOGRAD) == (
        "tune.tunables.sigma: sigma is tuned only with estimator.kind: stein")


def test_a_mix_with_an_identity_transform_is_refused_for_its_range(tmp_path):
    """The mix must stay in [low, high]: identity, like log, is refused with the logit reason
    (not the 'must stay positive' line of a log-default tunable)."""
    message = _refusal(tmp_path, "loss.kind=hybrid", "loss.switch_step=2", "tune.tunables={mix: {transform: identity}}",
                       text=AUTOGRAD)
    assert message == ("tune.tunables.mix.transform = identity: mix must stay within [low, high] = [0, 1], "
                       "which only logit keeps")


def test_an_equation_without_coefficients_says_none(tmp_path):
    """Burgers has no PDE coefficient: a tuned coefficients.nu is refused naming 'none'."""
    assert _refusal(tmp_path, "tune.tunables={coefficients.nu: {}}", text=BURGERS) == (
        "tune.tunables.coefficients.nu: burgers has no coefficient 'nu' (coefficients: none)")


# -- spec: defaults and required keys --------------------------------------------------------------------
def test_the_objectives_defaults():
    """An objective that gives nothing: the data misfit, a Stein residual estimator if the
    kind is switched to residual, 256 points and samples, objective seed 0."""
    spec = ObjectiveSpec()
    assert (spec.kind, spec.estimator, spec.points, spec.samples, spec.seed) == ("data", "stein", 256, 256, 0)
    assert ObjectiveSpec(kind="residual").estimator == "stein"


@pytest.mark.parametrize("section", [{}, {"tunables": {}}], ids=["missing", "empty"])
def test_a_tune_section_needs_a_tunable(section):
    """Nothing to tune is refused when the section is read (missing or empty tunables)."""
    with pytest.raises(ValueError, match="tunables"):
        TuneSection(**section)


@pytest.mark.parametrize("method, then, tunables, acts", [
    ("fg2u", None, ["lr"], True), ("zo_fg2u", None, ["lr"], True), ("random", None, ["lr"], True),
    ("optuna", None, ["lr"], True), ("rgu", None, ["lr"], False), ("joint", None, ["coefficients.mu"], False),
    ("rgu", "zo_fg2u", ["lr"], True), ("rgu", "trgu", ["lr"], False),
    ("rgu", None, ["collocation_weight"], True),
])
def test_the_methods_tune_seed_acts_for(method, then, tunables, acts):
    """tune.seed acts for fg2u and zo_fg2u directions (in either phase), the searches' draws
    and the collocation network's initialisation, and for nothing else."""
    assert uses_seed(method, then, tunables) is acts


def test_the_seed_acts_through_a_second_phase():
    """TuneSection.seeded reads then.method: rgu then fg2u draws fg2u's directions from
    tune.seed, rgu then trgu draws nothing."""
    def section(then):
        return TuneSection(method="rgu", then={"method": then, "after": 1}, tunables={"lr": {}})

    assert section("fg2u").seeded is True and section("trgu").seeded is False


# -- each tunable's default parameterisation ---------------------------------------------------------------
def test_each_tunables_default_transform(tmp_path):
    """Without transform: a loss weight, σ and lr are stepped in log space (exp(u)), the
    mix through a logit over [0, 1], a coefficient as it is."""
    setup = _setup(tmp_path, "loss.kind=hybrid", "loss.switch_step=2",
                   "tune.tunables={weights.boundary: {}, sigma: {}, lr: {}, mix: {}}")
    u = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    for name in ("weights.boundary", "sigma", "lr"):
        transform = setup.tunables[name].transform
        torch.testing.assert_close(transform.forward(u), torch.exp(u), rtol=1e-14, atol=0, msg=name)
    torch.testing.assert_close(setup.tunables["mix"].transform.forward(u), torch.sigmoid(u), rtol=1e-14, atol=0)
    coefficient = _setup(tmp_path, "trainer.dtype=float64", "tune.method=fg2u", "tune.tunables={coefficients.mu: {}}",
                         text=JOINT_MU).tunables["coefficients.mu"]
    assert coefficient.init.tolist() == [0.0, 0.0]
    torch.testing.assert_close(coefficient.transform.forward(u), u, rtol=0, atol=0)


@pytest.mark.parametrize("name, expected", [
    ("weights.boundary", "log"), ("sigma", "log"), ("lr", "log"), ("mix", "logit"), ("coefficients.mu", "identity"),
    ("collocation_weight", None), ("lrate", None), ("sigmas", None), ("mixture", None), ("weights", None),
])
def test_default_transform_matches_whole_names_and_dotted_prefixes(name, expected):
    """Only the keys ending in '.' are prefixes: a misspelt 'lrate' or 'sigmas' has no
    default transform (it is then refused as an unknown tunable, not as a log one)."""
    assert default_transform(name) == expected


def test_a_misspelt_tunable_is_refused_as_unknown(tmp_path):
    """lrate with a low bound under fg2u is named an unknown tunable (read as lr's log
    transform, it was refused for a low/high that has no effect)."""
    message = _refusal(tmp_path, "tune.tunables={lrate: {low: 1.0e-4}}", text=AUTOGRAD)
    assert message.startswith("tune.tunables.lrate: unknown tunable (allowed: "), message


# -- the observations the data objective reads ----------------------------------------------------------------
@pytest.mark.parametrize("train", [False, True], ids=["read", "trained"])
def test_the_observations_are_the_data_sections_synthetic_draw(tmp_path, train):
    """data: {points: 7, noise: 0.02, seed: 3}: the tuning's observations are the 7
    synthetic ones u* + ε of that noise level and seed (those the data term trains on when
    data.train is true), and the data objective is their mean squared misfit."""
    from pinnlab.io.observations import synthetic_observations
    from pinnlab.solvers.evaluate import predict

    overrides = ["data.train=true"] if train else []
    setup = _setup(tmp_path, "data.points=7", "data.noise=0.02", "data.seed=3", *overrides, text=AUTOGRAD)
    x, y = synthetic_observations(setup.problem.equation, 7, noise=0.02, seed=3)
    clean = setup.problem.equation.exact(x)
    assert 0 < float((y - clean).abs().max()) < 0.1 * float(clean.abs().max())
    torch.testing.assert_close(setup.observations[0].double(), x, rtol=0, atol=0)
    torch.testing.assert_close(setup.observations[1].double(), y, rtol=0, atol=0)
    u = predict(setup.problem, setup.init[0], x).double().reshape(y.shape)
    with torch.no_grad():
        value = float(setup.outer_loss(setup.init[0], setup.phi0))
    assert value == pytest.approx(float(((u - y) ** 2).mean()), rel=1e-12)


# -- the Stein residual objective by hand ----------------------------------------------------------------
def test_the_stein_residual_objective_draws_its_noise_from_the_objectives_seed(tmp_path):
    """objective {kind: residual, points: 8, samples: 4, seed: 3} under Stein training: f is
    mean(r²) of the estimator section's Stein residual at 4 samples, with the held-out
    points from seed 3's 'outer/points' stream and the noise from seed 3's 'outer/residual'
    stream (one generator for all the residual's factors)."""
    import dataclasses

    from pinnlab._seeding import make_generator

    setup = _setup(tmp_path, "tune.objective={kind: residual, points: 8, samples: 4, seed: 3}")
    equation, theta = setup.problem.equation, setup.init[0]
    x = equation.sample_test(8, generator=make_generator(3, "outer/points"), dtype=torch.float64)
    estimator = dataclasses.replace(setup.problem.estimator, num_samples=4)
    model = setup.problem.model(theta)
    generator = make_generator(3, "outer/residual")

    def group(queries):
        return estimator.estimate(model, x, queries, generator=generator, sigma=None)

    with torch.no_grad():
        expected = float((equation.residual(x, group, unbiased=False, coefficients=None) ** 2).mean())
        value = float(setup.outer_loss(theta, setup.phi0))
    assert value == pytest.approx(expected, rel=1e-12)


def test_a_float32_runs_reference_objective_is_float32(tmp_path):
    """The exact values (float64) are rounded to the run's dtype like the held-out points:
    a float32 run's reference objective is a float32 value, as its data objective is."""
    setup = _setup(tmp_path, "trainer.dtype=float32", "tune.objective={kind: reference, points: 16}", text=AUTOGRAD)
    with torch.no_grad():
        value = setup.outer_loss(setup.init[0], setup.phi0)
    assert value.dtype == torch.float32 and 0 < float(value) < float("inf")
