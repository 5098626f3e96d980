"""Config validation: one-line errors naming the key path, the value and what is allowed."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from pinnlab import config as C
from pinnlab.equations import EQUATIONS, make_equation
from pinnlab.solvers import LRA, ReLoBRaLo

BASE = {"equation": {"name": "allen_cahn_two_body", "dim": 5}}
TUNE = {"tunables": {"sigma": {}}}
INF, NAN = float("inf"), float("nan")


def test_the_smallest_float32_scales_and_float64_runs_are_accepted():
    """2**-149 (and a little above half of it) is float32's smallest positive value; in
    float64 1e-320 is a number."""
    for sigma in (2.0**-149, 2.0**-150 * 1.02):
        C.validate(_with(estimator={"sigma": sigma}))
    C.validate(_with(estimator={"sigma": 1e-320}, trainer={"dtype": "float64"}))


def _with(**sections):
    data = {k: dict(v) for k, v in BASE.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"equation": {"name": "heat", "dim": 3}}, "equation.name = 'heat': unknown equation"),
        (_with(equation={"dim": 0}), "equation.dim = 0: input should be greater than or equal to 1"),
        (_with(estimator={"sigma": -1.0}), "estimator.sigma = -1.0: input should be greater than 0"),
        (_with(estimator={"sigma": 0}), "estimator.sigma = 0"),
        # positive, but 0 in float32 (the first loss was NaN); half the smallest float32 rounds to 0 too
        (_with(estimator={"sigma": 1e-320}), "estimator.sigma = 1e-320: rounds to 0 in float32"),
        (_with(trainer={"lr": 2.0**-150}), f"trainer.lr = {2.0**-150!r}: rounds to 0 in float32"),
        (_with(estimator={"samples": 0}), "estimator.samples = 0"),
        (_with(trainer={"steps": 0}), "trainer.steps = 0"),
        (_with(trainer={"steps": "many"}), "trainer.steps = 'many'"),
        (_with(estimator={"sigmaa": 1.0}), "estimator.sigmaa: unknown key (allowed: kind, sigma"),
        (_with(trainer={"device": "gpu"}), "trainer.device = 'gpu'"),
        (_with(loss={"kind": "fancy"}), "loss.kind = 'fancy'"),
        (_with(equation={"foo": 1}), "equation.foo: unknown parameter of allen_cahn_two_body"),
        ({**BASE, "solver": {}}, "solver: unknown section"),
        ({"model": {}}, "equation: required section is missing"),
        (_with(loss={"kind": "hybrid"}), "loss: a hybrid loss needs exactly one of"),
        (_with(loss={"kind": "biased", "switch_step": 3}), "switch settings need loss.kind = hybrid"),
        (_with(loss={"kind": "hybrid", "switch_step": 5000}), "must be < trainer.steps"),
        (_with(trainer={"batch_chunks": 500}), "trainer.batch_chunks = 500"),
        (_with(loss={"weighting_options": {"alpha": 0.5}}), "only with loss.weighting: lra or relobralo"),
        (_with(loss={"weighting": "lra", "weighting_options": {"alpha": 2}}), "weighting_options.alpha = 2"),
        (_with(loss={"weighting": "lra", "weighting_options": {"every": 2.5}}), "every = 2.5: must be a whole"),
        (_with(loss={"weighting": "relobralo", "weighting_options": {"every": 5}}),
         "weighting_options.every: unknown option of relobralo (allowed: alpha, lookback, temperature)"),
        (_with(loss={"weighting": "relobralo", "weighting_options": {"temperature": 0}}), "temperature = 0"),
        # trainer.backend: deepxde refuses what DeepXDE's training would silently ignore
        (_with(trainer={"backend": "deepxde", "optimizer": "sgd"}),
         "trainer.optimizer = 'sgd': not supported by trainer.backend: deepxde"),
        (_with(trainer={"backend": "deepxde", "momentum": 0.5}), "trainer.momentum: has an effect only with"),
        (_with(trainer={"backend": "deepxde", "schedule": "exponential"}), "trainer.schedule = 'exponential'"),
        (_with(trainer={"backend": "deepxde", "schedule": "linear"}), "trainer.schedule = 'linear'"),
        (_with(trainer={"backend": "deepxde", "schedule": "constant", "gamma": 0.5}),
         "trainer.gamma: has an effect only with trainer.schedule: exponential"),
        (_with(trainer={"backend": "deepxde", "dtype": "float64"}), "trainer.dtype = 'float64': not supported"),
        (_with(trainer={"backend": "deepxde", "batch_chunks": 2}), "trainer.batch_chunks = 2: not supported"),
        (_with(trainer={"backend": "deepxde", "checkpoint_every": 5}), "trainer.checkpoint_every = 5: not supported"),
        (_with(trainer={"backend": "deepxde", "device": "cuda"}), "trainer.device = 'cuda': not supported"),
        (_with(trainer={"backend": "deepxde"}, equation={"constraint": "soft"}, loss={"weighting": "relobralo"}),
         "loss.weighting = 'relobralo': not supported by trainer.backend: deepxde"),
        (_with(trainer={"backend": "deepxde"}, model={"activation": "softplus"}),
         "model.activation = 'softplus': not supported by trainer.backend: deepxde"),
        (_with(trainer={"backend": "deepxde"}, data={"train": True}),
         "data.train = True: not supported by trainer.backend: deepxde"),
        (_with(trainer={"backend": "deepxde"}, study={"kind": "estimator", "init": "fresh"}),
         "trainer.backend = 'deepxde': an estimator study evaluates pinnlab's network"),
        # seeds are stored as 64-bit integers: refused before a run, not when its result is written
        (_with(trainer={"seed": 2**64}), f"trainer.seed = {2**64}: must be an integer with 0 <= seed < 2**63"),
        (_with(trainer={"seed": 2**63}), "trainer.seed = 9223372036854775808: must be an integer with 0 <="),
        (_with(equation={"seed": 2**64}), "equation.seed = 18446744073709551616: must be an integer"),
        (_with(data={"seed": 2**64}), "data.seed = 18446744073709551616: must be an integer"),
        (_with(equation={"seed": -1}), "equation.seed = -1: must be an integer with 0 <= seed"),
        # every integer setting: one beyond 64 bits was accepted, then failed where stored
        (_with(trainer={"steps": 2**64}), f"trainer.steps = {2**64}: must be an integer with -2**63 <= value < 2**63"),
        (_with(model={"width": 2**63}), f"model.width = {2**63}: must be an integer with -2**63 <= value"),
        (_with(tune={**TUNE, "horizon": 2**63}), f"tune.horizon = {2**63}: must be an integer with -2**63"),
        (_with(tune={**TUNE, "seed": 2**64}), "tune.seed = 18446744073709551616: must be an integer"),
        (_with(tune={**TUNE, "objective": {"seed": 2**64}}), "tune.objective.seed = 18446744073709551616"),
        # non-finite numbers are refused in every section
        (_with(estimator={"sigma": INF}), "estimator.sigma = inf: input should be a finite number"),
        (_with(trainer={"lr": INF}), "trainer.lr = inf: input should be a finite number"),
        (_with(data={"noise": INF}), "data.noise = inf: input should be a finite number"),
        (_with(data={"noise": NAN}), "data.noise = nan: input should be a finite number"),
        (_with(loss={"weights": {"residual": INF}}), "loss.weights.residual = inf: input should be a finite"),
        # adaptive weights start from the configured ones and adapt them by ratios
        ({"equation": {"name": "poisson_two_body", "dim": 3, "constraint": "soft"},
          "loss": {"weighting": "lra", "weights": {"boundary": 0}}}, "loss.weights.boundary = 0: loss.weighting = 'lra'"),
        (_with(estimator={"time_sigma": INF}), "estimator.time_sigma = inf"),
        (_with(study={"kind": "estimator", "sigmas": [0.1, INF]}), "study.sigmas.1 = inf"),
        (_with(tune={**TUNE, "outer_lr": INF}), "tune.outer_lr = inf: input should be a finite number"),
        (_with(tune={"tunables": {"sigma": {"init": NAN}}}), "tune.tunables.sigma.init = nan: input should be a finite"),
        ({"equation": {"name": "burgers", "dim": 3, "viscosity": INF}}, "equation.viscosity = inf: input should be a finite"),
        # an equation's own parameters are read by their annotated types, as strictly as fields
        ({"equation": {"name": "burgers", "dim": 3, "viscosity": True}}, "equation.viscosity = True: input should be a valid number"),
        ({"equation": {"name": "burgers", "dim": 3, "viscosity": "0.1"}}, "equation.viscosity = '0.1': input should be a valid number"),
        ({"equation": {"name": "hjb_rosenbrock", "dim": 4, "reference_samples": 1e5}},
         "equation.reference_samples = 100000.0: input should be a valid integer"),
        ({"equation": {"name": "hjb_rosenbrock", "dim": 4, "chain": "ring"}}, "equation.chain = 'ring': input should be"),
        # a nested unknown key lists the keys of its own model
        (_with(tune={**TUNE, "objective": {"foo": 1}}),
         "tune.objective.foo: unknown key (allowed: kind, points, estimator, samples, seed)"),
        (_with(tune={"tunables": {"sigma": {"foo": 1}}}),
         "tune.tunables.sigma.foo: unknown key (allowed: init, transform, low, high, per_coordinate, width, depth)"),
        (_with(tune={**TUNE, "then": {"method": "rgu", "after": 2, "foo": 1}}),
         "tune.then.foo: unknown key (allowed: method, options, after, outer_lr)"),
        # booleans are not integers (true was read as 1)
        (_with(equation={"dim": True}), "equation.dim = True: input should be a valid integer"),
        (_with(trainer={"steps": True}), "trainer.steps = True: input should be a valid integer"),
        (_with(estimator={"samples": False}), "estimator.samples = False"),
        (_with(trainer={"seed": True}), "trainer.seed = True"),
        (_with(estimator={"sigma": True}), "estimator.sigma = True: input should be a valid number"),
        (_with(study={"kind": "estimator", "samples": [4, True]}), "study.samples.1 = True"),
        (_with(study={"kind": "estimator", "dims": [True]}), "study.dims.0 = True"),
        (_with(tune={**TUNE, "horizon": True}), "tune.horizon = True: input should be a valid integer"),
        # a pair given one value or none: pydantic names the missing position as if it were a key
        (_with(tune={**TUNE, "outer_betas": [0.9]}), "tune.outer_betas = [0.9]: tuple should have 2 items, not 1"),
        (_with(tune={**TUNE, "outer_betas": []}), "tune.outer_betas = []: tuple should have 2 items, not 0"),
        (_with(loss={"kind": "hybrid", "switch": "blend", "blend": [3]}), "loss.blend = [3]: tuple should have 2 items"),
        # a study with nothing to run, or too few replicates for its statistics
        (_with(study={"kind": "estimator", "samples": []}), "study.samples = []: list should have at least 1 item"),
        (_with(study={"kind": "estimator", "sigmas": []}), "study.sigmas = []"),
        (_with(study={"kind": "estimator", "noise": []}), "study.noise = []"),
        (_with(study={"kind": "estimator", "losses": []}), "study.losses = []"),
        (_with(study={"kind": "estimator", "quantities": []}), "study.quantities = []"),
        (_with(study={"kind": "estimator", "dims": []}), "study.dims = []"),
        (_with(study={"kind": "training", "variants": {"a": []}, "grid": {"trainer.seed": []}}),
         "study.grid.trainer.seed = []"),
        # a value listed twice would run the same cell twice (or merge two under one label)
        (_with(study={"kind": "training", "variants": {"a": []}, "grid": {"trainer.seed": [0, 1, 0]}}),
         "study.grid.trainer.seed = [0, 1, 0]: 0 is listed twice"),
        (_with(study={"kind": "estimator", "dims": [4, 4]}), "study.dims = [4, 4]: 4 is listed twice"),
        (_with(study={"kind": "estimator", "sigmas": [0.1, 0.1]}), "study.sigmas = [0.1, 0.1]: 0.1 is listed twice"),
        (_with(study={"kind": "estimator", "losses": ["biased", "biased"]}), "study.losses = ['biased', 'biased']"),
        (_with(study={"kind": "estimator", "replicates": 3}),
         "study.replicates = 3: must be >= 4: the jackknife standard errors need 3 groups"),
        (_with(study={"kind": "estimator", "reference_replicates": 2}), "study.reference_replicates = 2: must be >= 4"),
    ],
)
def test_bad_values_give_one_line(data, expected):
    with pytest.raises(C.ConfigError) as info:
        C.validate(data)
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message


def test_weighting_options_reach_the_weighting():
    data = {"equation": {"name": "allen_cahn_two_body", "dim": 3, "constraint": "soft"},
            "loss": {"weighting": "lra", "weighting_options": {"alpha": 0.5, "every": 5}}}
    _, kwargs = C.build(C.validate(data))
    assert kwargs["weighting"] == LRA(alpha=0.5, every=5) and isinstance(kwargs["weighting"].every, int)
    data["loss"] = {"weighting": "relobralo", "weighting_options": {"temperature": 0.1}}
    assert C.build(C.validate(data))[1]["weighting"] == ReLoBRaLo(temperature=0.1)


def test_non_polynomial_unbiased_refused_at_build():
    config = C.validate({"equation": {"name": "sine_gordon_two_body", "dim": 4}, "loss": {"kind": "unbiased"}})
    with pytest.raises(C.ConfigError, match="use 'unbiased1'"):
        C.build(config)


def test_overriding_a_hybrid_config_to_another_loss_drops_its_switch():
    hybrid = C.apply_overrides(BASE, ["loss.kind=hybrid", "loss.switch_step=3"])
    config = C.validate(C.apply_overrides(hybrid, ["loss.kind=biased"]))
    assert config.loss.kind == "biased" and config.loss.switch_step is None
    with pytest.raises(C.ConfigError, match="switch settings need loss.kind = hybrid"):
        C.validate(C.apply_overrides(hybrid, ["loss.kind=biased", "loss.switch_step=3"]))


def test_overrides_are_yaml_typed_and_nested():
    data = C.apply_overrides(BASE, ["trainer.steps=500", "estimator.sigma=1e-2", "loss.kind=hybrid",
                                    "loss.switch=auto", "loss.window=100", "equation.radius=volume"])
    assert data["trainer"]["steps"] == 500
    assert data["estimator"]["sigma"] == 0.01
    assert data["equation"]["radius"] == "volume"
    config = C.validate(data)
    assert config.loss.switch == "auto"
    assert BASE["equation"] == {"name": "allen_cahn_two_body", "dim": 5}  # input untouched
    with pytest.raises(C.ConfigError, match="key.sub=value"):
        C.apply_overrides(BASE, ["trainer.steps"])
    with pytest.raises(C.ConfigError, match="is not a section"):
        C.apply_overrides(BASE, ["equation.dim.x=1"])


def test_every_shipped_config_validates_and_builds():
    from pathlib import Path

    from pinnlab.equations import EQUATIONS

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    names = {p.stem for p in configs}
    builtin = {n for n, cls in EQUATIONS.items() if cls.__module__.startswith("pinnlab.")}
    assert builtin <= names, builtin - names
    for path in configs:
        problem, kwargs = C.build(C.load(path))
        assert kwargs["steps"] >= 1
        if path.stem in EQUATIONS:
            assert problem.equation.name == path.stem


def test_resolved_config_round_trips():
    import yaml

    config = C.validate(_with(estimator={"sigma": 0.05}))
    again = C.validate(yaml.safe_load(config.to_yaml()))
    assert again.resolved() == config.resolved()


def test_the_documented_biased_run_of_the_hybrid_allen_cahn_config_validates():
    path = Path(__file__).resolve().parents[1] / "configs" / "allen_cahn_two_body.yaml"
    config = C.load(path, ["equation.dim=100", "trainer.steps=1000", "estimator.samples=128",
                           "estimator.sigma=0.01", "loss.kind=biased"])
    assert (config.loss.kind, config.trainer.steps, config.loss.switch_step) == ("biased", 1000, None)


def test_deepxde_backend_accepts_its_defaults_and_records_its_constant_schedule():
    """Options left at their defaults are accepted with trainer.backend: deepxde, and the
    resolved config records what DeepXDE does (a constant learning rate), so it validates
    again; a data section without train (a tuning objective) is accepted too."""
    import yaml

    config = C.validate(_with(trainer={"backend": "deepxde"}, loss={"kind": "biased"},
                              data={"source": "synthetic", "points": 10}))
    assert config.trainer.schedule == "constant"
    assert C.validate(yaml.safe_load(config.to_yaml())).resolved() == config.resolved()
    explicit = _with(trainer={"backend": "deepxde", "optimizer": "adam", "schedule": "constant",
                              "dtype": "float32", "checkpoint_every": 0, "device": "cpu"}, model={"activation": "sin"})
    assert C.validate(explicit).trainer.backend == "deepxde"
    assert C.validate(BASE).trainer.schedule == "linear"  # pinnlab's default is unchanged


def test_every_shipped_config_validates_including_studies_and_tuning():
    configs = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert {p.parent.name for p in configs} >= {"configs", "studies", "tuning"}
    backends = {C.load(path).trainer.backend for path in configs}
    assert backends == {"pinnlab", "deepxde"}


def test_deepxde_config_with_unsupported_options_exits_2_with_one_line(tmp_path, capsys):
    from pinnlab.cli import main

    cfg = tmp_path / "dde.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}\n"
                   "trainer: {steps: 2, backend: deepxde, schedule: exponential, gamma: 0.5}\n")
    assert main(["solve", str(cfg), "-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainer.schedule = 'exponential': not supported by trainer.backend" in err
    assert not (tmp_path / "out.h5").exists()


def _alternatives(annotation):
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [x for a in typing.get_args(annotation) for x in _alternatives(a)]
    if typing.get_origin(annotation) is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    return [annotation]


NESTED = {"tune.objective": ("tune", "objective"), "tune.tunables.sigma": ("tune", "tunables", "sigma"),
          "tune.then": ("tune", "then")}
"""Nested sections: dotted name → key path into the config."""


def _models():
    from pinnlab.tuning.spec import ObjectiveSpec, PhaseSpec, TunableSpec

    yield from C.SECTIONS.items()
    yield from {"tune.objective": ObjectiveSpec, "tune.tunables.sigma": TunableSpec, "tune.then": PhaseSpec}.items()


def _fields(kinds):
    """(section, key, kind) for every field of every section (nested ones too) whose type
    admits one of ``kinds`` (int, float, bool)."""
    for name, model in _models():
        for key, field in model.model_fields.items():
            found = [t for t in (bool, int, float) if t in kinds and t in _alternatives(field.annotation)]
            if found:
                yield name, key, found[0]


def _number_fields():
    return _fields((int, float))


NEEDS = {"study": {"kind": "estimator"}, "tune": TUNE, "tune.then": {"method": "rgu", "after": 2}}
"""What a section needs besides the key under test to validate."""


def _config_with(section, values):
    """The base config with ``values`` in (nested) ``section``."""
    path = NESTED.get(section, (section,))
    data = copy.deepcopy(_with(**{path[0]: NEEDS.get(path[0], {})}))
    node = data[path[0]]
    for key in path[1:]:
        node = node.setdefault(key, {})
        if isinstance(node, dict):
            node.update(NEEDS.get(section, {}) if key == path[-1] else {})
    node.update(values)
    return data


@pytest.mark.parametrize("section, key, kind", list(_number_fields()), ids=lambda v: str(v))
def test_no_number_field_reads_a_boolean_or_a_non_finite_number(section, key, kind):
    """Every int and float field of every section (tune's too): ``true`` is not read as 1,
    and a float field refuses .inf and .nan (the run would end nonfinite, after the work)."""
    bad = [True, False] + ([INF, -INF, NAN] if kind is float else [])
    for value in bad:
        data = _config_with(section, {key: value})
        with pytest.raises(C.ConfigError) as info:
            C.validate(data)
        assert str(info.value).startswith(f"{section}.{key} = {value}"), (value, str(info.value))


@pytest.mark.parametrize("section, key, kind", [f for f in _fields((int, bool)) if f[2] is not float],
                         ids=lambda v: str(v))
def test_integer_and_flag_fields_take_values_as_written(section, key, kind):
    """An integer field refuses 10.0 and "10" (not read as 10), a flag refuses 1 and "yes"
    (not read as true): in every section, the nested tune sections too."""
    for value in ([10.0, "10"] if kind is int else [1, "yes"]):
        with pytest.raises(C.ConfigError) as info:
            C.validate(_config_with(section, {key: value}))
        assert str(info.value).startswith(f"{section}.{key} = {value!r}"), (value, str(info.value))


def test_the_number_fields_are_found():
    found = {(s, k) for s, k, _ in _fields((int, float, bool))}
    assert {("equation", "dim"), ("trainer", "steps"), ("estimator", "sigma"), ("data", "noise"),
            ("tune", "outer_lr"), ("study", "replicates"), ("tune.objective", "samples"),
            ("tune.tunables.sigma", "width"), ("tune.then", "after"), ("tune", "warm_start"),
            ("data", "train")} <= found


def test_largest_stored_seed_is_accepted():
    config = C.validate(_with(trainer={"seed": 2**63 - 1}, equation={"seed": 2**63 - 1}))
    assert config.trainer.seed == 2**63 - 1


@pytest.mark.parametrize("text, where", [
    ("equation: {name: poisson_two_body, dim: 3}\ntrainer:\n  steps: 5\n  steps: 10\n",
     "at line 4, column 3: duplicate key 'steps'"),
    ("equation: {name: poisson_two_body, dim: 3, dim: 4}\n", "at line 1, column 44: duplicate key 'dim'"),
    ("equation: {name: poisson_two_body, dim: 3}\nequation: {name: poisson_two_body, dim: 4}\n",
     "at line 2, column 1: duplicate key 'equation'"),
])
def test_a_key_given_twice_is_refused_naming_it(tmp_path, text, where):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(C.ConfigError) as info:
        C.load(path)
    assert where in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(C.ConfigError, match="value is not valid YAML: duplicate key 'steps'"):
        C.apply_overrides(BASE, ["trainer={steps: 1, steps: 2}"])


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("equation: &eq {name: poisson_two_body, dim: 3, seed: 1}\n"
                    "study: {kind: estimator, init: fresh}\n"
                    "model: {<<: {width: 8, depth: 3}, width: 16}\n")
    assert C.load(path).model.width == 16


@pytest.mark.parametrize(("line", "expected"), [
    ("equation: {name: poisson_two_body, dim: 3, seed: 010}", ("equation", "seed", 10)),  # 1.1: octal 8
    ("equation: {name: poisson_two_body, dim: 0x10}", ("equation", "dim", 16)),
    ("trainer: {steps: 10_000}", ("trainer", "steps", 10000)),
    ("trainer: {lr: 1e-3}", ("trainer", "lr", 1e-3)),
    ("trainer: {steps: 1:30}", "trainer.steps = '1:30': input should be a valid integer"),  # 1.1: 90
    ("data: {train: yes}", "data.train = 'yes': input should be a valid boolean"),  # 1.1: true
    ("estimator: {kind: on}", "estimator.kind = 'on'"),  # 1.1: true
    ("trainer: {steps: 2026-12-03}", "trainer.steps = '2026-12-03'"),  # 1.1: a date
    ("trainer: {steps: !!int x}", "malformed YAML in"),  # was a ValueError traceback
])
def test_config_scalars_are_read_as_yaml_1_2(tmp_path, line, expected):
    """Plain scalars follow YAML 1.2's core schema (PyYAML reads 1.1: ``010`` = 8, ``1:30``
    = 90, ``yes``/``on`` = true, dates), so a value is either what it looks like or refused
    with its key; an explicit tag on a value it cannot take is one line too."""
    path = tmp_path / "c.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\n" * ("equation" not in line) + line + "\n")
    if isinstance(expected, tuple):
        section, key, value = expected
        assert getattr(getattr(C.load(path), section), key) == value
        return
    with pytest.raises(C.ConfigError) as info:
        C.load(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_config_yaml_written_is_read_back_by_either_schema():
    """to_yaml quotes strings that YAML 1.1 readers (``yaml.safe_load``, what users and the
    plot command read result files with) or pinnlab's 1.2 loader would take for another
    type, so both read back the same values."""
    import yaml

    data = {"a": "yes", "b": "0o17", "c": "1e5", "d": "010", "e": "1:30", "f": "2026-12-03",
            "g": 10, "h": 1e-5, "i": True, "j": None, "k": [1, "on"], "l": "plain"}
    text = C.dump_yaml(data)
    assert C._yaml_load(text) == data and yaml.safe_load(text) == data


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_the_resolved_config_records_every_equation_parameter(name):
    """A result file's config says which viscosity, horizon, radius law ... was solved
    (only the section's own fields were recorded), exactly as the built equation reports
    them; an explicit default resolves (and hashes) like the implicit one, and the
    resolved config validates back to itself."""
    dim = max(EQUATIONS[name].min_dim, 4)
    config = C.validate({"equation": {"name": name, "dim": dim}})
    section = config.resolved()["equation"]
    built = make_equation(name, dim)
    assert section == {"name": name, "dim": dim, "seed": 0, **built.parameters()}
    explicit = C.validate({"equation": {"name": name, "dim": dim, **built.parameters()}})
    assert explicit.to_yaml() == config.to_yaml()
    assert C.validate(config.resolved()).to_yaml() == config.to_yaml()


@pytest.mark.parametrize(("section", "values", "message"), [
    ("trainer", {"gamma": 0.9995}, "trainer.gamma: has an effect only with trainer.schedule: exponential "
                                   "(this config has trainer.schedule = 'linear')"),
    ("trainer", {"momentum": 0.5}, "trainer.momentum: has an effect only with trainer.optimizer: sgd"),
    ("loss", {"then": "unbiased1"}, "loss.then: has an effect only with loss.kind: hybrid"),
    ("loss", {"kind": "hybrid", "switch_step": 10, "window": 3}, "loss.window: has an effect only with loss.switch: auto"),
    ("loss", {"tolerance": 0.1}, "loss.tolerance: has an effect only with loss.switch: auto"),
    ("estimator", {"probes": 4}, "estimator.probes: has an effect only with estimator.kind: hutchinson"),
    ("estimator", {"kind": "hutchinson", "samples": 64}, "estimator.samples: has an effect only with estimator.kind: stein"),
    ("estimator", {"kind": "autograd", "eval_samples": 64}, "estimator.eval_samples: has an effect only with estimator.kind: stein"),
    ("loss", {"boundary_points": 50}, "loss.boundary_points: has an effect only with equation.constraint: soft"),
    ("data", {"batch_size": 10}, "data.batch_size: has an effect only with data.train: True"),
])
def test_a_setting_without_effect_is_refused(section, values, message):
    """gamma with the default linear schedule was silently ignored (lr decayed linearly to
    0), as were momentum with adam, window/tolerance without switch: auto, then without a
    hybrid loss and probes without Hutchinson."""
    with pytest.raises(C.ConfigError, match="^" + re.escape(message)):
        C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, section: values})


def test_an_override_that_leaves_a_setting_without_effect_drops_it(tmp_path):
    """The shipped configs carry gamma (exponential) and then (hybrid): overriding the
    schedule or the loss kind drops them instead of refusing the run; given as overrides
    themselves they are refused. The resolved config (what result files record) leaves
    out what has no effect and validates back to itself."""
    path = Path(__file__).parents[1] / "configs" / "fokker_planck_aniso.yaml"
    config = C.load(path, ["trainer.schedule=linear", "loss.kind=biased"])
    resolved = config.resolved()
    assert "gamma" not in resolved["trainer"] and "then" not in resolved["loss"]
    assert "momentum" not in resolved["trainer"] and "probes" not in resolved["estimator"]
    assert C.validate(resolved).to_yaml() == config.to_yaml()
    with pytest.raises(C.ConfigError, match=r"^trainer\.gamma: has an effect only"):
        C.load(path, ["trainer.schedule=linear", "trainer.gamma=0.99"])
    exponential = C.load(path).resolved()
    assert exponential["trainer"]["gamma"] == 0.9995 and exponential["loss"]["then"] == "unbiased2"
    sgd = C.load(path, ["trainer.optimizer=sgd"]).resolved()
    assert sgd["trainer"]["momentum"] == 0.9


@pytest.mark.parametrize(("loss", "message"), [
    ({"switch": "step", "blend": [0, 2]}, "loss.switch = 'step': contradicts loss.blend, which makes the switch 'blend'"),
    ({"switch": "blend", "switch_step": 1}, "loss.switch = 'blend': contradicts loss.switch_step"),
    ({"switch": "auto", "switch_step": 1}, "loss: a hybrid loss needs exactly one of"),
])
def test_a_switch_kind_that_contradicts_its_setting_is_refused(loss, message):
    """switch: step with a blend trained a blend and recorded 'step' in the result file."""
    with pytest.raises(C.ConfigError, match="^" + re.escape(message)):
        C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, "trainer": {"steps": 10},
                    "loss": {"kind": "hybrid", **loss}})
    agreeing = {k: v for k, v in loss.items() if k != "switch"}
    if "blend" in loss or "switch_step" in loss:
        kind = "blend" if "blend" in loss else "step"
        C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, "trainer": {"steps": 10},
                    "loss": {"kind": "hybrid", "switch": kind, **agreeing}})


def test_a_cross_section_override_drops_the_settings_it_leaves_without_effect(tmp_path):
    path = tmp_path / "soft.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3, constraint: soft}\n"
                    "loss: {boundary_points: 50}\ndata: {train: true, batch_size: 5, points: 20}\n")
    config = C.load(path, ["equation.constraint=hard", "data.train=false"])
    assert "boundary_points" not in config.resolved()["loss"] and "batch_size" not in config.resolved()["data"]
    assert C.load(path).resolved()["loss"]["boundary_points"] == 50


def test_overrides_reach_dotted_keys():
    """Tunable names (weights.boundary) and grid keys (trainer.seed) contain dots: an
    override split them into nested sections and was refused as an unknown key."""
    data = {"tune": {"tunables": {"weights.boundary": {"init": 1e-3}}}, "study": {"grid": {"trainer.seed": [0]}}}
    out = C.apply_overrides(data, ["tune.tunables.weights.boundary.init=0.5", "tune.tunables.weights.residual.init=2",
                                   "study.grid.trainer.seed=[0, 1]", "study.grid.loss.kind=[biased]",
                                   "tune.tunables.sigma.init=0.1"])
    assert out["tune"]["tunables"] == {"weights.boundary": {"init": 0.5}, "weights.residual": {"init": 2},
                                       "sigma": {"init": 0.1}}
    assert out["study"]["grid"] == {"trainer.seed": [0, 1], "loss.kind": ["biased"]}
    assert data["tune"]["tunables"]["weights.boundary"]["init"] == 1e-3  # the input is not changed
    # an existing dotted key elsewhere is matched too; ordinary keys still nest
    assert C.apply_overrides({"a": {"b.c": {"d": 1}}}, ["a.b.c.d=2"]) == {"a": {"b.c": {"d": 2}}}
    # the longest dotted key that the override's parts begin with (keys of other types aside)
    assert C.apply_overrides({"a": {"b.c": {}, "b.c.d": {"e": 0}, 3: 1}}, ["a.b.c.d.e=1"])["a"]["b.c.d"] == {"e": 1}
    assert C.apply_overrides({}, ["trainer.lr=0.1"]) == {"trainer": {"lr": 0.1}}


def test_a_config_path_that_is_no_file_says_what_it_is(tmp_path):
    import os

    with pytest.raises(C.ConfigError, match=r"is a directory$"):
        C.load(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(C.ConfigError, match=r"is not a regular file$"):
        C.load(tmp_path / "fifo")
    with pytest.raises(C.ConfigError, match=r"does not exist$"):
        C.load(tmp_path / "missing.yaml")


def test_an_equation_that_cannot_be_built_is_one_line():
    """dim = 10²² overflowed torch's size argument; its message carried a C++ stack of a
    dozen lines into the 'one line' error. (The config now refuses dims beyond 64 bits;
    2**63 − 1 overflows torch's storage size, a RuntimeError.)"""
    config = C.validate({"equation": {"name": "poisson_two_body", "dim": 2**63 - 1}})
    with pytest.raises(C.ConfigError) as info:
        C.make_equation(config.equation)
    assert str(info.value).startswith("equation: ") and len(str(info.value).splitlines()) == 1


def test_an_override_of_the_tuning_method_drops_the_configs_method_options():
    """tune.options are the constructor arguments of the config's method: with
    ``tune.method=joint`` on a config tuned by fg2u they were refused (and the config's
    own comment gave that command); options given with the override are kept."""
    data = {"tune": {"method": "fg2u", "options": {"num_directions": 4}}}
    assert "options" not in C.apply_overrides(data, ["tune.method=joint"])["tune"]
    kept = C.apply_overrides(data, ["tune.method=rgu", "tune.options={truncate: 3}"])["tune"]
    assert kept["options"] == {"truncate": 3}
    assert C.apply_overrides(data, ["tune.method=zo_fg2u", "tune.options.num_directions=2"])["tune"]["options"] == {
        "num_directions": 2}
    assert C.apply_overrides(data, ["tune.outer_lr=0.1"])["tune"]["options"] == {"num_directions": 4}
    # one option given for the new method: the config's other options go (the README's
    # penalty advice, tune.method=penalty tune.options.lr=1.0e-6, kept fg2u's num_directions)
    assert C.apply_overrides(data, ["tune.method=penalty", "tune.options.lr=1.0e-6"])["tune"]["options"] == {
        "lr": 1.0e-6}
    # the config's own method again keeps its options (fp's num_directions 2 became the default 4)
    assert C.apply_overrides(data, ["tune.method=fg2u"])["tune"]["options"] == {"num_directions": 4}


def test_a_search_refuses_an_init_and_an_override_to_one_drops_the_configs():
    """random and optuna draw every trial from [low, high]: an init changed nothing (two
    runs with init 1e-3 and 500 gave the same file). An override tune.method=random drops
    the config's own init (fokker_planck_inverse.yaml's μ init 0 for fg2u)."""
    data = {**BASE, "loss": {"kind": "hybrid", "switch_step": 5},
            "tune": {"method": "fg2u", "tunables": {"mix": {"init": 0.5}}}}
    assert C.validate(C.apply_overrides(data, ["tune.method=random"])).tune.tunables["mix"].init is None
    with pytest.raises(C.ConfigError, match=r"^tune.tunables.mix.init: has no effect with tune.method = 'optuna', "
                                            r"which draws every trial from \[low, high\]"):
        C.validate(C.apply_overrides(data, ["tune.method=optuna", "tune.tunables.mix.init=0.3"]))
    assert C.validate(C.apply_overrides(data, ["tune.method=rgu"])).tune.tunables["mix"].init == 0.5


def test_an_override_to_a_hypergradient_method_drops_the_configs_search_ranges():
    """The other way round: a search's range of a log or identity tunable (refused with a
    method that steps it without bounds) goes with an override tune.method=rgu; a logit
    tunable's bounds stay (they bound its transform), and so do bounds given as overrides
    (then refused)."""
    data = {**BASE, "loss": {"kind": "hybrid", "switch_step": 5},
            "tune": {"method": "random", "tunables": {"weights.residual": {"low": 0.1, "high": 10.0},
                                                      "mix": {"low": 0.2, "high": 0.8}}}}
    config = C.validate(C.apply_overrides(data, ["tune.method=rgu"]))
    weight, mix = config.tune.tunables["weights.residual"], config.tune.tunables["mix"]
    assert (weight.low, weight.high, mix.low, mix.high) == (None, None, 0.2, 0.8)
    assert C.validate(C.apply_overrides(data, ["tune.method=optuna"])).tune.tunables["weights.residual"].high == 10.0
    with pytest.raises(C.ConfigError, match=r"^tune.tunables.weights.residual.low: has no effect with "
                                            r"tune.method = 'rgu', which steps log weights.residual without bounds"):
        C.validate(C.apply_overrides(data, ["tune.method=rgu", "tune.tunables.weights.residual.low=0.5"]))


def test_an_override_to_sgd_drops_the_configs_adam_betas():
    """As ``trainer.schedule=linear`` drops gamma: tune.outer_optimizer=sgd on a config with
    outer_betas was refused ("β belongs to outer_optimizer: adam")."""
    data = {"tune": {"outer_optimizer": "adam", "outer_betas": [0.5, 0.9]}}
    assert "outer_betas" not in C.apply_overrides(data, ["tune.outer_optimizer=sgd"])["tune"]
    assert C.apply_overrides(data, ["tune.outer_optimizer=adam"])["tune"]["outer_betas"] == [0.5, 0.9]
    given = C.apply_overrides(data, ["tune.outer_optimizer=sgd", "tune.outer_betas=[0.1, 0.2]"])["tune"]
    assert given["outer_betas"] == [0.1, 0.2]  # (then refused by validation, as given)


def test_a_coefficient_tunable_can_be_added_by_override():
    """coefficients.mu.init was read as a tunable 'coefficients' with a key 'mu' (unknown
    key), as weights.<term> had been."""
    data = {"tune": {"tunables": {"lr": {}}}}
    tunables = C.apply_overrides(data, ["tune.tunables.coefficients.mu.init=0.0"])["tune"]["tunables"]
    assert tunables == {"lr": {}, "coefficients.mu": {"init": 0.0}}


@pytest.mark.parametrize("kind", ["stein", "autograd", "hutchinson"])
def test_time_sigma_on_a_stationary_equation_is_refused_for_every_estimator(kind):
    """Refused for Stein only when the estimator was built; autograd and Hutchinson
    training accepted it without effect."""
    data = _with(estimator={"kind": kind, "time_sigma": 0.1})
    with pytest.raises(C.ConfigError, match="estimator.time_sigma: allen_cahn_two_body has no time variable"):
        C.validate(data)
    C.validate(_with(estimator={"kind": kind}))


@pytest.mark.parametrize("override, expected", [
    ("trainer.steps=1e3", "trainer.steps = 1000.0: input should be a valid integer (write 1000: YAML reads 1e3 "
                          "and 1000.0 as floats)"),
    ("model.width=64.0", "model.width = 64.0: input should be a valid integer (write 64: "),
    # not a whole number, or out of int64: no such hint
    ("trainer.steps=1.5", "trainer.steps = 1.5: input should be a valid integer"),
    ("trainer.steps=1e30", "trainer.steps = 1e+30: input should be a valid integer"),
])
def test_a_whole_float_for_an_integer_says_how_to_write_it(override, expected):
    with pytest.raises(C.ConfigError) as err:
        C.validate(C.apply_overrides(BASE, [override]))
    assert str(err.value).startswith(expected), str(err.value)
    if "write" not in expected:
        assert "write" not in str(err.value)
