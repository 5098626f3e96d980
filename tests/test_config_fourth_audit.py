"""Fourth mutation audit of :mod:`pinnlab.config`: the parts the first three audits left
unpinned (underscores in YAML integers, a section written with no keys, the public
:func:`has_no_effect`, a user module that failed to import, ...), each with the exact
value or one-line message the clean code gives."""

from __future__ import annotations

import locale

import pytest

from pinnlab import config as C
from tests.test_config_boundaries import _config, _refused


# -- the YAML 1.2 reader ---------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [
    ("1_000", 1000), ("1__0", 10), ("10_", 10), ("0xff_", 255), ("0o7_7_", 63), ("-1_0_", -10)])
def test_every_underscore_of_an_integer_is_dropped(text, value):
    """The int resolver takes ``_`` anywhere after the first digit; the constructor must drop
    every one (Python's ``int`` refuses a doubled or trailing one: ``10_`` was malformed YAML)."""
    assert C.override_value(text) == value
    assert type(C.override_value(text)) is int


def test_nesting_beyond_the_stack_is_one_line_of_malformed_yaml(tmp_path):
    """3,000 nested lists exhaust Python's stack in the constructor: one line naming the
    file, not a RecursionError traceback."""
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(C.ConfigError) as info:
        C.load_yaml(path)
    assert str(info.value).startswith(f"malformed YAML in {str(path)!r}: maximum recursion depth exceeded")
    assert "\n" not in str(info.value)


def _decodes(data: bytes) -> bool:
    """Whether the locale's encoding (what ``Path.read_text`` uses) reads ``data``."""
    try:
        data.decode(locale.getpreferredencoding(False))
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.skipif(_decodes(b"\xff"), reason="the locale's encoding reads every byte (Latin-1)")
def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    """A byte the locale's encoding cannot read (a Latin-1 file under UTF-8) is "cannot
    read config file", not a UnicodeDecodeError traceback."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"equation: {name: \xff}\n")
    with pytest.raises(C.ConfigError) as info:
        C.load_yaml(path)
    message = str(info.value)
    assert message.startswith(f"cannot read config file {str(path)!r}: ") and "\n" not in message
    assert "codec can't decode byte 0xff in position 17" in message


# -- sections --------------------------------------------------------------------------------
def test_a_section_written_with_no_keys_takes_every_default(tmp_path):
    """``trainer:`` with nothing under it is YAML null: the section's defaults, as if it
    were ``trainer: {}`` (not "trainer: must be a mapping, got None")."""
    path = tmp_path / "c.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\ntrainer:\nmodel:\n")
    config = C.load(path)
    assert (config.trainer.steps, config.trainer.lr, config.model.width, config.model.depth) == (1000, 1e-3, 128, 4)
    assert C.validate({**_config(), "trainer": None}).resolved() == C.validate(_config()).resolved()


@pytest.mark.parametrize("data", [[], None, "equation: x", [("equation", {})]])
def test_a_config_that_is_no_mapping_is_refused_in_one_line(data):
    """validate() of a list, None or a string: one line, not an AttributeError from
    ``data.get``."""
    assert _refused(data) == "a config must be a mapping of sections"


def test_a_weight_of_an_unknown_term_lists_the_terms():
    """``loss.weights`` keys are loss terms: a misspelt one (``residul``) would weigh
    nothing."""
    assert _refused(_config(loss={"weights": {"residul": 2.0}})) == (
        "loss.weights.residul: unknown loss term (allowed: boundary, data, residual)")


@pytest.mark.parametrize("study", [{"kind": "training"}, {"kind": "training", "variants": {}}])
def test_a_training_study_without_variants_is_refused(study):
    """A training study of no variants has no cell to run."""
    assert _refused(_config(study=study)) == (
        "study.variants: a training study needs at least one variant (name: [key=value, ...])")


# -- has_no_effect ---------------------------------------------------------------------------
def test_has_no_effect_answers_only_for_the_keys_controller():
    """γ acts with an exponential schedule whatever the optimiser: asked about another
    controller than its own, the answer is False (it is not made ineffective by it)."""
    assert C.has_no_effect("trainer.gamma", "trainer.schedule", "linear") is True
    assert C.has_no_effect("trainer.gamma", "trainer.schedule", "exponential") is False
    assert C.has_no_effect("trainer.gamma", "trainer.optimizer", "adam") is False
    assert C.has_no_effect("trainer.steps", "trainer.schedule", "linear") is False
    assert C.has_no_effect("tune.outer_lr", "tune.method", "random") is True


# -- user equation modules -------------------------------------------------------------------
def test_a_py_module_that_failed_to_import_fails_again_when_imported_again(tmp_path):
    """A half-run module is not kept as imported: the second validation of the same broken
    file (a study's next cell, a resume in the same process) is refused again, not passed."""
    module = tmp_path / "broken_equation.py"
    module.write_text("raise RuntimeError('boom')\n")
    for _ in range(2):
        with pytest.raises(C.ConfigError) as info:
            C.import_equation_module(str(module))
        assert str(info.value) == f"equation.module = {str(module)!r}: cannot import it: RuntimeError: boom"


# -- adaptive weighting ----------------------------------------------------------------------
def test_the_lra_reference_term_is_not_a_weighting_option():
    """``weighting_options`` holds numbers; LRA's ``reference`` (a term's name) is not one of
    them, and the message lists only the numeric options."""
    data = _config(equation={"constraint": "soft"}, loss={"weighting": "lra", "weighting_options": {"reference": 1.0}})
    assert _refused(data) == "loss.weighting_options.reference: unknown option of lra (allowed: alpha, every)"
    data["loss"]["weighting_options"] = {"every": 3.0}
    assert C.make_weighting(C.validate(data).loss).every == 3


def test_a_plateau_switch_takes_the_configs_window_and_tolerance():
    """``loss.tolerance`` reaches the plateau switch (its own default is 0.01, the config's
    too: only a value other than 0.01 tells them apart)."""
    config = C.validate(_config(loss={"kind": "hybrid", "switch": "auto", "window": 7, "tolerance": 0.25,
                                      "then": "unbiased1"}, trainer={"steps": 100}))
    loss = C.make_loss(config.loss, C.make_equation(config.equation))
    assert (loss.switch.window, loss.switch.tolerance) == (7, 0.25)
    assert type(loss.then).__name__ == "Unbiased1"


def test_build_hands_the_configured_loss_weights_to_the_training():
    """``loss.weights`` reach the training as its ``weights`` hyperparameters (a config
    without them hands none, and each term weighs 1)."""
    config = C.validate(_config(model={"width": 4, "depth": 2}, estimator={"kind": "autograd"},
                                equation={"constraint": "soft"}, loss={"weights": {"boundary": 0.5, "residual": 2.0}}))
    assert C.build(config)[1]["hyperparams"] == {"weights": {"boundary": 0.5, "residual": 2.0}}
    config = C.validate(_config(model={"width": 4, "depth": 2}, estimator={"kind": "autograd"}))
    assert C.build(config)[1]["hyperparams"] == {}


# -- the files a run reads -------------------------------------------------------------------
def test_synthetic_observations_are_no_input_file():
    """``data.source: synthetic`` names no file: a run reads none (else ``-o synthetic``
    was refused as overwriting an input), and its identity is its resolved config alone."""
    config = C.validate(_config(data={"source": "synthetic", "train": True}))
    assert config.input_files() == {} and config.input_digests() == {}
    assert config.identity() == config.to_yaml()


# -- overrides -------------------------------------------------------------------------------
def test_a_tunable_named_weights_alone_is_one_key_part():
    """``weights``/``coefficients`` join the next part into one tunable name only when a
    next part is there: ``tune.tunables.weights=0.5`` is the key ``weights`` (validation then
    names it), not a walk past the end of the key."""
    assert C._key_length({}, ["tune", "tunables"], ["weights"]) == 1
    assert C._key_length({}, ["tune", "tunables"], ["weights", "boundary", "init"]) == 2
    assert C.apply_overrides({}, ["tune.tunables.weights=0.5"]) == {"tune": {"tunables": {"weights": 0.5}}}


def test_a_study_init_override_keeps_the_pretraining_settings_given_with_it():
    """``study.init=fresh`` drops the config's own pretraining settings (steps) but keeps
    those given as overrides next to it, which validation then refuses by name."""
    data = _config(study={"kind": "estimator", "init": "trained"}, trainer={"steps": 50, "seed": 3},
                   loss={"kind": "unbiased"})
    out = C.apply_overrides(data, ["study.init=fresh", "trainer.lr=5"])
    assert out["trainer"] == {"seed": 3, "lr": 5} and out["loss"] == {}
    assert _refused(out).startswith("trainer.lr: has no effect in an estimator study with study.init: 'fresh', "
                                    "which trains nothing")


# -- the DeepXDE backend ---------------------------------------------------------------------
def test_the_deepxde_backend_without_deepxde_names_the_extra_to_install(monkeypatch):
    """Without DeepXDE installed the backend is refused at validation, naming the pip extra
    (not an ImportError after the tuning or in the first step)."""
    real = C.importlib.util.find_spec
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name, *a: None if name == "deepxde" else real(name, *a))
    assert _refused(_config(trainer={"backend": "deepxde"})) == (
        "trainer.backend: deepxde needs the optional dependency: pip install 'pinnlab[deepxde]'")


# -- studies and tuning ----------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "why"), [
    ("hutchinson", "Hutchinson probes estimate the residual of the unsmoothed network, which has no σ"),
    ("autograd", "autograd derivatives are exact, with no Monte Carlo error to study")])
def test_an_estimator_study_of_another_estimator_gives_that_estimators_reason(kind, why):
    """Each non-Stein estimator is refused with its own reason."""
    assert _refused(_config(study={"kind": "estimator", "init": "fresh"}, estimator={"kind": kind})) == (
        f"estimator.kind = {kind!r}: an estimator study measures the Stein estimator of the smoothed residual "
        f"over study.samples and study.sigmas; {why} (use estimator.kind: stein)")


def test_a_second_phase_outer_rate_beyond_float32_is_refused_in_a_float32_run():
    """``tune.then.outer_lr`` lives in the run's dtype as the first phase's does: 1e39 is
    inf in float32 (refused) and a number in float64."""
    tune = {"method": "fg2u", "tunables": {"lr": {}}, "then": {"method": "rgu", "after": 1, "outer_lr": 1e39}}
    assert _refused(_config(tune=tune)) == ("tune.then.outer_lr = 1e+39: beyond float32's largest value "
                                            "(3.403e+38), the dtype of this run (trainer.dtype: float32)")
    C.validate(_config(tune=tune, trainer={"dtype": "float64"}))


@pytest.mark.parametrize("init", ["", "DIR"])
def test_an_estimator_study_init_must_be_a_file(tmp_path, init):
    """``study.init`` other than fresh/trained is a result file: a directory (or an empty
    path, the current directory) is refused at validation, not when the network is read."""
    init = str(tmp_path) if init == "DIR" else init
    assert _refused(_config(study={"kind": "estimator", "init": init})) == (
        f"study.init = {init!r}: must be 'fresh', 'trained' or an existing result file")
