"""Sixth mutation audit of :mod:`pinnlab.config`: the ``tune:`` and ``study:`` checks and
the override parser the first five audits left unpinned (an override of the method
dropping a searched coefficient's range, a per-coordinate init beyond float32, columns
without a grid, a study from a network file, an override of the tunables dropping the
seed, ``~`` and ``1.`` as override values), each with the exact value or one-line
message the clean code gives."""

from __future__ import annotations

from pinnlab import config as C
from tests.test_config_boundaries import _config, _refused

FOKKER = {"name": "fokker_planck_aniso", "dim": 2}
SEARCHED_MU = {"method": "random", "trial_steps": 2, "tunables": {"coefficients.mu": {"low": -1.0, "high": 1.0}}}


def test_an_override_to_joint_drops_the_range_of_a_searched_identity_coefficient():
    """A coefficient (identity transform) searched in [low, high]: ``tune.method=joint``
    steps it without bounds, so the config's low and high go (as a log tunable's do) and
    the config validates; given as they stand with joint they are refused, naming the
    first of the two (low)."""
    data = _config(equation=FOKKER, tune=SEARCHED_MU)
    overridden = C.apply_overrides(data, ["tune.method=joint"])
    assert overridden["tune"]["tunables"] == {"coefficients.mu": {}}
    assert C.validate(overridden).tune.tunables["coefficients.mu"].low is None
    joint = {"method": "joint", "tunables": SEARCHED_MU["tunables"]}
    assert _refused(_config(equation=FOKKER, tune=joint)).startswith(
        "tune.tunables.coefficients.mu.low: has no effect with tune.method = 'joint', which steps "
        "coefficients.mu without bounds")



def test_a_per_coordinate_init_beyond_float32_is_refused_in_a_float32_run():
    """A per-coordinate σ's ``init`` is a list: each of its numbers lives in the run's
    dtype, so 1e39 among them is refused in float32 (it would be inf) and kept in float64."""
    tune = {"tunables": {"sigma": {"init": [0.1, 1e39, 0.1], "per_coordinate": True}}}
    assert _refused(_config(tune=tune)) == (
        "tune.tunables.sigma.init = 1e+39: beyond float32's largest value (3.403e+38), the dtype of this run "
        "(trainer.dtype: float32)")
    config = C.validate(_config(tune=tune, trainer={"dtype": "float64"}))
    assert config.tune.tunables["sigma"].init == [0.1, 1e39, 0.1]


def test_table_columns_without_a_grid_are_refused_saying_there_are_no_grid_keys():
    """``study.columns`` names a grid key; a training study without ``grid`` has none,
    and the refusal says so rather than listing an empty set."""
    study = {"kind": "training", "variants": {"a": ["trainer.lr=1e-3"]}, "columns": "trainer.seed"}
    assert _refused(_config(study=study)) == "study.columns = 'trainer.seed': must be one of the grid keys (none)"


def test_a_pretraining_setting_is_refused_when_the_study_starts_from_a_network_file(tmp_path):
    """An estimator study from a result file trains nothing, as one from ``fresh`` does:
    ``trainer.steps`` is refused there too, naming the file; with ``trained`` it acts."""
    network = tmp_path / "net.h5"
    network.write_bytes(b"")
    study = {"kind": "estimator", "init": str(network)}
    assert _refused(_config(study=study, trainer={"steps": 5})) == (
        f"trainer.steps: has no effect in an estimator study with study.init: {C.describe_value(str(network))}, "
        "which trains nothing (its estimates use study.samples, sigmas, noise and losses); remove it, or pretrain "
        "with study.init: trained")
    assert C.validate(_config(study={**study, "init": "trained"}, trainer={"steps": 5})).trainer.steps == 5


def test_an_override_to_a_network_file_drops_the_configs_pretraining_settings(tmp_path):
    """``study.init=<file>`` on a config that pretrains (``trained``) leaves its trainer
    settings without effect, as ``study.init=fresh`` does: the config's own go (and the
    config validates); the same given as an override are kept, and refused."""
    network = tmp_path / "net.h5"
    network.write_bytes(b"")
    data = _config(study={"kind": "estimator", "init": "trained"}, trainer={"steps": 5, "seed": 2})
    overridden = C.apply_overrides(data, [f"study.init={network}"])
    assert overridden["trainer"] == {"seed": 2}
    assert C.validate(overridden).study.init == str(network)
    kept = C.apply_overrides(data, [f"study.init={network}", "trainer.lr=0.1"])
    assert kept["trainer"] == {"seed": 2, "lr": 0.1}
    assert _refused(kept).startswith("trainer.lr: has no effect in an estimator study with study.init: ")


def test_an_override_of_the_tunables_drops_a_seed_left_without_effect():
    """With rgu, ``tune.seed`` acts only through the collocation_weight network: an
    override of ``tune.tunables`` to σ alone leaves it without effect, so the config's
    seed goes (and the config validates); a seed given with the override is kept, and
    refused."""
    data = _config(tune={"method": "rgu", "seed": 4, "tunables": {"collocation_weight": {}}})
    assert C.validate(data).tune.seed == 4
    overridden = C.apply_overrides(data, ["tune.tunables={sigma: {}}"])
    assert overridden["tune"] == {"method": "rgu", "tunables": {"sigma": {}}}
    assert C.validate(overridden).tune.seed == 0
    kept = C.apply_overrides(data, ["tune.tunables={sigma: {}}", "tune.seed=4"])
    assert _refused(kept).startswith("tune.seed: has no effect with tune.method = 'rgu' (it seeds")


def test_a_tilde_override_is_null_as_in_a_config_file():
    """``~`` is YAML's null (as ``null`` and empty text are): ``tune.budget_seconds=~``
    unsets a budget the config gave (not the string '~', refused as a number)."""
    assert C.override_value("~") is None
    assert C.override_value("[~, null, '~']") == [None, None, "~"]
    data = _config(tune={"tunables": {"sigma": {}}, "budget_seconds": 60.0})
    overridden = C.apply_overrides(data, ["tune.budget_seconds=~"])
    assert overridden["tune"]["budget_seconds"] is None
    assert C.validate(overridden).tune.budget_seconds is None


def test_a_float_with_a_trailing_point_is_a_number():
    """YAML 1.2 reads ``1.`` and ``1.e-3`` as floats (no digit needed after the point):
    ``tune.outer_lr=1.e-3`` is the rate 0.001, not the string '1.e-3' refused as a number."""
    assert C.override_value("1.") == 1.0
    assert C.override_value("-2.") == -2.0
    overridden = C.apply_overrides(_config(tune={"tunables": {"sigma": {}}}), ["tune.outer_lr=1.e-3"])
    assert overridden["tune"]["outer_lr"] == 0.001
    assert C.validate(overridden).tune.outer_lr == 0.001
