"""Config validation: one-line errors naming the key path, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinnlab import config as C
from pinnlab.solvers import LRA, ReLoBRaLo

BASE = {"equation": {"name": "allen_cahn_two_body", "dim": 5}}


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
        (_with(loss={"weighting": "lra", "weighting_options": {"alpha": 2}}), "weighting_options.alpha = 2.0"),
        (_with(loss={"weighting": "lra", "weighting_options": {"every": 2.5}}), "every = 2.5: must be a whole"),
        (_with(loss={"weighting": "relobralo", "weighting_options": {"every": 5}}),
         "weighting_options.every: unknown option of relobralo (allowed: alpha, lookback, temperature)"),
        (_with(loss={"weighting": "relobralo", "weighting_options": {"temperature": 0}}), "temperature = 0.0"),
        # trainer.backend: deepxde refuses what DeepXDE's training would silently ignore
        (_with(trainer={"backend": "deepxde", "optimizer": "sgd"}),
         "trainer.optimizer = 'sgd': not supported by trainer.backend: deepxde"),
        (_with(trainer={"backend": "deepxde", "momentum": 0.5}), "trainer.momentum = 0.5: not supported"),
        (_with(trainer={"backend": "deepxde", "schedule": "exponential"}), "trainer.schedule = 'exponential'"),
        (_with(trainer={"backend": "deepxde", "schedule": "linear"}), "trainer.schedule = 'linear'"),
        (_with(trainer={"backend": "deepxde", "schedule": "constant", "gamma": 0.5}),
         "trainer.gamma = 0.5: not supported by trainer.backend: deepxde"),
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
                                    "loss.switch=auto", "equation.radius=volume"])
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
    explicit = _with(trainer={"backend": "deepxde", "optimizer": "adam", "schedule": "constant", "gamma": 0.9995,
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
