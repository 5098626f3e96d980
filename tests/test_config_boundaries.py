"""Config validation at its edges: each bound accepts its last allowed value and refuses
the next one in one line naming the key, and the cross-field refusals that no other
test reaches (a weight of a term the run does not have, a study or data file that is
not there) are made by :func:`pinnlab.config.validate` itself."""

from __future__ import annotations

import os

import pytest

from pinnlab import config as C
from pinnlab.equations import make_equation

POISSON = {"name": "poisson_two_body", "dim": 3}


def _config(**sections):
    """A Poisson config with ``sections`` (the equation section's keys are added to POISSON's)."""
    data = {name: dict(values) for name, values in sections.items()}
    data["equation"] = {**POISSON, **data.get("equation", {})}
    return data


def _refused(data) -> str:
    with pytest.raises(C.ConfigError) as info:
        C.validate(data)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("allowed", "refused", "message"), [
    # a network needs a hidden layer: depth 1 was accepted and counted -1 hidden layers
    (_config(model={"depth": 2}), _config(model={"depth": 1}),
     "model.depth = 1: input should be greater than or equal to 2"),
    # gamma = 1 is a constant rate, still a decay factor; above 1 the rate grows
    (_config(trainer={"schedule": "exponential", "gamma": 1.0}),
     _config(trainer={"schedule": "exponential", "gamma": 1.0000001}),
     "trainer.gamma = 1.0000001: input should be less than or equal to 1"),
    # momentum 1 never forgets a gradient
    (_config(trainer={"optimizer": "sgd", "momentum": 0.0}), _config(trainer={"optimizer": "sgd", "momentum": 1.0}),
     "trainer.momentum = 1.0: input should be less than 1"),
    # a relative improvement of 100 % or more never counts as a plateau's progress
    (_config(loss={"kind": "hybrid", "switch": "auto", "window": 10, "tolerance": 0.999}, trainer={"steps": 100}),
     _config(loss={"kind": "hybrid", "switch": "auto", "window": 10, "tolerance": 1.0}, trainer={"steps": 100}),
     "loss.tolerance = 1.0: input should be less than 1"),
    # a blend of zero length: Blend(5, 5) raised a ValueError (a traceback) in validate
    (_config(loss={"kind": "hybrid", "blend": [5, 6]}, trainer={"steps": 100}),
     _config(loss={"kind": "hybrid", "blend": [5, 5]}, trainer={"steps": 100}),
     "loss.blend = [5, 5]: must be [start, end] with 0 <= start < end"),
    # one point per chunk is allowed; more chunks than points is not
    (_config(trainer={"batch_size": 8, "batch_chunks": 8}), _config(trainer={"batch_size": 8, "batch_chunks": 9}),
     "trainer.batch_chunks = 9: must be <= trainer.batch_size (8)"),
    # an equation's smallest dimension is allowed
    (_config(equation={"name": "poisson_three_body", "dim": 3}), _config(equation={"name": "poisson_three_body", "dim": 2}),
     "equation.dim = 2: poisson_three_body needs dim >= 3"),
    # a CUDA device with a number, or none; "cuda:" names no device
    (_config(trainer={"device": "cuda:0"}), _config(trainer={"device": "cuda:"}),
     "trainer.device = 'cuda:': must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_a_bound_accepts_its_last_value_and_refuses_the_next(allowed, refused, message):
    C.validate(allowed)
    assert _refused(refused).startswith(message), _refused(refused)


def test_the_defaults_of_the_network_estimator_and_trainer():
    """What a config that leaves them out trains with (and what its result file and
    checkpoint record): a changed default changes every such run and refuses its resume."""
    resolved = C.validate({"equation": POISSON}).resolved()
    assert resolved["model"] == {"width": 128, "depth": 4, "activation": "tanh"}
    assert {k: resolved["estimator"][k] for k in ("kind", "sigma", "samples", "noise")} == {
        "kind": "stein", "sigma": 0.01, "samples": 128, "noise": "shared"}
    assert {k: resolved["trainer"][k] for k in ("steps", "lr", "schedule", "batch_size", "batch_chunks")} == {
        "steps": 1000, "lr": 1e-3, "schedule": "linear", "batch_size": 100, "batch_chunks": 1}


@pytest.mark.parametrize(("data", "message"), [
    (_config(loss={"weights": {"data": 2.0}}), "loss.weights.data: there is no data term (set data.train: true)"),
    (_config(loss={"weights": {"data": 2.0}}, data={"points": 10}),
     "loss.weights.data: there is no data term (set data.train: true)"),
    (_config(loss={"weights": {"boundary": 2.0}}),
     "loss.weights.boundary: there is no boundary term (set equation.constraint: soft)"),
])
def test_a_weight_of_a_term_the_run_does_not_have_is_refused(data, message):
    """The weight would be recorded and ignored: a hard constraint has no boundary term,
    observations without data.train no data term."""
    assert _refused(data) == message
    term = "data" if "data" in data["loss"]["weights"] else "boundary"
    fixed = _config(loss=data["loss"], data={"points": 10, "train": True}) if term == "data" else \
        _config(loss=data["loss"], equation={"constraint": "soft"})
    assert C.validate(fixed).loss.weights == {term: 2.0}


def test_an_empty_config_file_misses_its_equation_section(tmp_path):
    """An empty file (or one of comments) is a config without sections: the missing
    required section is named, not the type of YAML's null."""
    path = tmp_path / "empty.yaml"
    for text in ("", "# nothing yet\n"):
        path.write_text(text)
        with pytest.raises(C.ConfigError) as info:
            C.load(path)
        assert str(info.value) == "equation: required section is missing"


def test_negative_tuned_values_beyond_float32_are_refused():
    """φ lives in the run's dtype: -1e39 is as far beyond float32 as 1e39."""
    data = _config(tune={"method": "random", "tunables": {"sigma": {"low": -1.0e39, "high": 1.0}}})
    assert _refused(data).startswith("tune.tunables.sigma.low = -1e+39: beyond float32's largest value")
    data["trainer"] = {"dtype": "float64"}
    C.validate(data)


def test_a_nested_option_given_with_a_new_tuning_method_is_kept():
    """An override of tune.method drops the config's options but keeps those given with
    it, a nested one (tune.options.KEY.SUB=...) included."""
    data = {"tune": {"method": "fg2u", "options": {"num_directions": 4}}}
    out = C.apply_overrides(data, ["tune.method=rgu", "tune.options.schedule.kind=cosine"])
    assert out["tune"]["options"] == {"schedule": {"kind": "cosine"}}


@pytest.mark.parametrize(("study", "message"), [
    ({"kind": "training", "variants": {"a": []}, "grid": {"trainer.seed": [0, 1]}, "columns": "trainer.lr"},
     "study.columns = 'trainer.lr': must be one of the grid keys (trainer.seed)"),
    ({"kind": "estimator", "init": "no-such-result.h5"},
     "study.init = 'no-such-result.h5': must be 'fresh', 'trained' or an existing result file"),
])
def test_a_study_setting_that_names_nothing_is_refused(tmp_path, monkeypatch, study, message):
    monkeypatch.chdir(tmp_path)
    assert _refused(_config(study=study)) == message


@pytest.mark.parametrize("kind", ["autograd", "hutchinson"])
def test_an_estimator_study_of_another_estimator_than_stein_is_refused(kind):
    """An estimator study measures the Stein estimate over study.sigmas and samples."""
    message = _refused(_config(study={"kind": "estimator", "init": "fresh"}, estimator={"kind": kind}))
    assert message.startswith(f"estimator.kind = {kind!r}: an estimator study measures the Stein estimator")
    C.validate(_config(study={"kind": "estimator", "init": "fresh"}))


def test_a_data_source_that_is_no_file_is_refused_by_validation(tmp_path, monkeypatch):
    """A relative path is read from the current directory, not the config file's: the
    refusal says where it looked (a user whose file lies beside the config sees why)."""
    monkeypatch.chdir(tmp_path)
    data = _config(data={"source": "missing.csv", "train": True})
    assert _refused(data) == ("data.source = 'missing.csv': must be 'synthetic' or an existing .h5/.hdf5/.npz/.csv file "
                              f"(read from the current directory: {str(tmp_path / 'missing.csv')!r})")
    absolute = str(tmp_path / "missing.csv")
    assert _refused(_config(data={"source": absolute, "train": True})) == (
        f"data.source = {absolute!r}: must be 'synthetic' or an existing .h5/.hdf5/.npz/.csv file")


def test_deepxde_loss_weights_default_to_one():
    """A weight left out of loss.weights is 1 for DeepXDE, as for pinnlab's own loss."""
    config = C.validate(_config(equation={"constraint": "soft"}, loss={"weights": {"boundary": 3.0}}))
    equation = make_equation("poisson_two_body", 3, constraint="soft")
    assert C.deepxde_loss_weights(config, equation) == [1.0, 3.0]
    assert C.deepxde_loss_weights(config, equation, {"residual": 0.5}) == [0.5, 3.0]


def test_a_file_rewritten_in_place_with_the_same_size_is_hashed_again(tmp_path):
    """The digest cache is keyed by the file's version: a same-size rewrite in place (same
    inode) with a new modification time is another version, whose digest is new, so a
    resume after the observations changed is refused."""
    path = tmp_path / "obs.csv"
    path.write_text("0.1,0.2\n")
    before = C.file_digest(path)
    stat = path.stat()
    with open(path, "r+") as fh:
        fh.write("0.3,0.4\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert path.stat().st_ino == stat.st_ino and path.stat().st_size == stat.st_size
    assert C.file_digest(path) != before


def test_a_config_file_that_is_not_a_mapping_is_one_line(tmp_path):
    """A YAML list or scalar is no config: refused naming what it holds (apply_overrides
    took it for a mapping: an AttributeError traceback)."""
    path = tmp_path / "list.yaml"
    for text, kind in (("- equation\n- model\n", "list"), ("just words\n", "str")):
        path.write_text(text)
        with pytest.raises(C.ConfigError) as info:
            C.load(path, ["trainer.steps=5"])
        assert str(info.value) == f"{str(path)!r} must contain a mapping of sections, got {kind}"


def test_a_solve_of_a_tuning_config_checks_the_switch_against_trainer_steps():
    """Without tune.final_steps the final solve, and a plain solve of the config, run
    trainer.steps: a switch at or after it never happens."""
    tune = {"tunables": {"sigma": {}}}
    data = _config(loss={"kind": "hybrid", "switch_step": 10}, trainer={"steps": 10}, tune=tune)
    assert _refused(data) == "loss.switch_step = 10: must be < trainer.steps (10), or the unbiased phase never starts"
    data["trainer"]["steps"] = 11
    C.validate(data)
    C.validate(_config(loss={"kind": "hybrid", "switch_step": 10}, trainer={"steps": 10},
                       tune={**tune, "final_steps": 11}))


@pytest.mark.parametrize("override", ["trainer..lr=1", ".lr=1", "=1", "trainer.=1"])
def test_an_override_with_an_empty_key_part_is_refused_naming_it(override):
    with pytest.raises(C.ConfigError) as info:
        C.apply_overrides({"equation": POISSON}, [override])
    assert str(info.value) == f"override {override!r} has an empty key part"


def test_a_config_path_the_file_system_cannot_name_is_one_line(tmp_path):
    """C.load of a 305-byte name: stat raised OSError 36 (the command line refuses it in
    argparse; the library call did not)."""
    path = tmp_path / ("c" * 300 + ".yaml")
    with pytest.raises(C.ConfigError) as info:
        C.load(path)
    assert str(info.value).endswith(": a name in it is 305 bytes long, the file system allows "
                                    f"{os.pathconf(tmp_path, 'PC_NAME_MAX')}")


def test_an_equation_module_that_is_a_file_but_not_python_is_named_as_such(tmp_path, monkeypatch):
    """notes.txt was imported as the module 'notes' ("No module named 'notes'")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x = 1\n")
    assert _refused(_config(equation={"module": "notes.txt"})) == (
        "equation.module = 'notes.txt': a file, but not a .py file; give a .py file or a dotted module name")
