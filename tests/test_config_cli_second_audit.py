"""Second mutation audit of the config and the command line: the defaults of the settings
that act only with another setting (probes, the plateau window, boundary points, the
synthetic data), every limit at its edge (the alias expansion, the message clipping,
batch_chunks without batch_size, float32's largest value, data.batch_size = M, the unit
ball), what :func:`pinnlab.config.build` hands the training (momentum, γ, the
evaluation interval, the Hutchinson noise, a time σ), and the command line's refusals,
hints and exit codes at the cases the first audit did not reach."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from pinnlab import config as C
from tests.test_config_boundaries import POISSON, _config, _refused


# -- defaults ----------------------------------------------------------------------------
def test_the_defaults_of_the_settings_that_act_only_with_another():
    """The resolved config (what a result file records and a resume compares) of a config
    that switches every dependent setting on and leaves its value out: a changed default
    (window 50, tolerance 0.1, boundary points 10, 10 synthetic points, eval_every 100,
    test_points 1000, log_every 10) changed every such run silently."""
    resolved = C.validate(_config(equation={"constraint": "soft"}, loss={"kind": "hybrid", "switch": "auto"},
                                  data={}, trainer={"schedule": "exponential", "optimizer": "sgd"})).resolved()
    assert resolved["loss"] == {
        "kind": "hybrid", "switch_step": None, "switch": "auto", "window": 500, "tolerance": 0.01, "blend": None,
        "then": "unbiased2", "weighting": "none", "weighting_options": {}, "weights": {}, "boundary_points": 100}
    assert resolved["data"] == {"source": "synthetic", "points": 100, "noise": 0.0, "seed": 0, "train": False}
    assert resolved["trainer"] == {
        "steps": 1000, "lr": 0.001, "schedule": "exponential", "gamma": 0.9995, "optimizer": "sgd",
        "momentum": 0.9, "batch_size": 100, "batch_chunks": 1, "eval_every": 500, "test_points": 2000, "seed": 0,
        "device": "auto", "dtype": "float32", "checkpoint_every": 0, "log_every": 100, "backend": "pinnlab"}


def test_the_hutchinson_estimator_defaults_to_16_probes_of_shared_noise():
    """The config's default noise is shared; Hutchinson's own constructor default is
    independent, so a noise setting dropped on the way trained with the other noise."""
    config = C.validate(_config(estimator={"kind": "hutchinson"}))
    assert config.resolved()["estimator"] == {"kind": "hutchinson", "noise": "shared", "probes": 16}
    estimator = C.make_estimator(config.estimator, None)
    assert (estimator.num_probes, estimator.noise) == (16, "shared")
    config = C.validate(_config(estimator={"kind": "hutchinson", "noise": "independent", "probes": 3}))
    estimator = C.make_estimator(config.estimator, None)
    assert (estimator.num_probes, estimator.noise) == (3, "independent")


# -- limits at their edges -----------------------------------------------------------------
def test_the_alias_expansion_limit_allows_exactly_a_million_values():
    """The dict, the list and its N items are N + 2 values: 10**6 in all is allowed, one
    more is refused."""
    assert len(C.apply_overrides({"x": [0] * (C.CONFIG_VALUE_LIMIT - 2)}, [])["x"]) == C.CONFIG_VALUE_LIMIT - 2
    with pytest.raises(C.ConfigError, match=r"^the config holds more than 1,000,000 values"):
        C.apply_overrides({"x": [0] * (C.CONFIG_VALUE_LIMIT - 1)}, [])


def test_a_name_of_60_characters_is_shown_whole_and_one_of_61_clipped():
    """Messages clip a name to 60 characters: 57 and "..." from 61 on."""
    assert C.clip_text("a" * 60) == "a" * 60
    assert C.clip_text("a" * 61) == "a" * 57 + "..."
    for name, shown in (("s" * 60, "s" * 60), ("s" * 61, "s" * 57 + "...")):
        assert _refused({"equation": POISSON, name: {}}).startswith(f"{shown}: unknown section (allowed: ")


def test_batch_chunks_without_batch_size_is_checked_against_the_default_100():
    C.validate(_config(trainer={"batch_chunks": 100}))
    assert _refused(_config(trainer={"batch_chunks": 101})) == (
        "trainer.batch_chunks = 101: must be <= trainer.batch_size (100)")


def test_float32s_largest_value_is_allowed_for_a_tuned_value():
    """FLOAT32_MAX itself is a float32 number; the next float64 above it is not."""
    largest = C.FLOAT32_MAX
    assert largest == float(torch.finfo(torch.float32).max)
    C.validate(_config(tune={"tunables": {"sigma": {}}, "outer_lr": largest}))
    above = float(np.nextafter(largest, math.inf))
    assert _refused(_config(tune={"tunables": {"sigma": {}}, "outer_lr": above})).startswith(
        f"tune.outer_lr = {above:g}: beyond float32's largest value")


def test_a_data_batch_of_all_the_observations_is_allowed():
    """data.batch_size = M takes every observation every step; M + 1 is refused."""
    from pinnlab.equations import make_equation

    equation = make_equation("poisson_two_body", 3, seed=0)
    config = C.validate(_config(data={"points": 10, "train": True, "batch_size": 10}))
    x, u = C.make_observations(config, equation)
    assert x.shape == (10, 3) and u.shape == (10,)
    config = C.validate(_config(data={"points": 10, "train": True, "batch_size": 11}))
    with pytest.raises(C.ConfigError, match=r"^data.batch_size = 11: more than the 10 observations; use at most 10"):
        C.make_observations(config, equation)


def test_an_observation_just_outside_the_unit_ball_is_refused(tmp_path):
    """The tolerance is 1e-9 of the radius: ‖x‖ = 1 + 1e-6 is outside, 1 + 1e-12 inside."""
    from pinnlab.equations import make_equation

    equation = make_equation("poisson_two_body", 3, seed=0)
    for radius, inside in ((1 + 1e-12, True), (1 + 1e-6, False)):
        x = np.array([[0.1, 0.2, 0.3], [radius, 0.0, 0.0]])
        path = tmp_path / f"obs{inside}.npz"
        np.savez(path, x=x, u=np.array([0.5, 0.25]))
        config = C.validate(_config(data={"source": str(path), "train": True}))
        if inside:
            x_obs, u_obs = C.make_observations(config, equation)
            assert x_obs.tolist() == x.tolist() and u_obs.tolist() == [0.5, 0.25]
        else:
            with pytest.raises(C.ConfigError) as info:
                C.make_observations(config, equation)
            assert "a point outside the unit ball" in str(info.value)
            assert str(info.value).endswith("observation 1 (counting from 0) at ‖x‖ = 1")


@pytest.mark.skipif(importlib.util.find_spec("deepxde") is None, reason="needs deepxde")
@pytest.mark.parametrize("activation", ["tanh", "sin", "gelu", "silu"])
def test_deepxde_takes_every_activation_its_fnn_knows(activation):
    C.validate(_config(trainer={"backend": "deepxde"}, model={"activation": activation}))


@pytest.mark.skipif(importlib.util.find_spec("deepxde") is None, reason="needs deepxde")
def test_deepxde_refuses_softplus():
    assert _refused(_config(trainer={"backend": "deepxde"}, model={"activation": "softplus"})) == (
        "model.activation = 'softplus': not supported by trainer.backend: deepxde (allowed: tanh, sin, gelu, silu)")


# -- what build hands the training ---------------------------------------------------------
def test_build_hands_the_trainers_momentum_gamma_and_a_capped_evaluation_interval():
    """SGD's own default momentum is 0 and Exponential takes any γ: the config's values
    must reach them; eval_every beyond the run evaluates at its last step."""
    config = C.validate(_config(model={"width": 4, "depth": 2}, estimator={"kind": "autograd"},
                                trainer={"optimizer": "sgd", "momentum": 0.5, "schedule": "exponential",
                                         "gamma": 0.5, "steps": 7, "lr": 0.25}))
    _, kwargs = C.build(config)
    assert (kwargs["optimizer"].lr, kwargs["optimizer"].momentum) == (0.25, 0.5)
    assert kwargs["schedule"].gamma == 0.5
    assert kwargs["steps"] == 7 and kwargs["eval_every"] == 7
    config = C.validate(_config(model={"width": 4, "depth": 2}, estimator={"kind": "autograd"},
                                trainer={"steps": 7, "eval_every": 3}))
    assert C.build(config)[1]["eval_every"] == 3


def test_a_time_sigma_smooths_the_time_column_only():
    """σ per column: dim copies of estimator.sigma, then time_sigma for t (last)."""
    from pinnlab.equations import make_equation

    equation = make_equation("burgers", 3, seed=0)
    config = C.validate({"equation": {"name": "burgers", "dim": 3},
                         "estimator": {"sigma": 0.02, "time_sigma": 0.5, "samples": 4}})
    estimator = C.make_estimator(config.estimator, equation)
    assert torch.as_tensor(estimator.sigma).tolist() == [0.02, 0.02, 0.02, 0.5]


def test_an_unknown_key_is_named_before_the_required_key_it_misspells():
    """{knd: estimator} misses `kind` because of the misspelt key: the message names the
    unknown key and what is allowed, not "study.kind: required key is missing"."""
    assert _refused(_config(study={"knd": "estimator"})).startswith(
        "study.knd: unknown key (allowed: kind, losses, ")


def test_a_blend_that_starts_at_the_last_step_is_refused_naming_that_step():
    """The mix is above 0 from step start + 1: in 10 steps (0 … 9) a start of 8 is the
    last that blends; 9 is refused, and the message gives the bound 9."""
    C.validate(_config(loss={"kind": "hybrid", "blend": [8, 12]}, trainer={"steps": 10}))
    assert _refused(_config(loss={"kind": "hybrid", "blend": [9, 12]}, trainer={"steps": 10})) == (
        "loss.blend = [9, 12]: its start must be < trainer.steps - 1 (9), or the mix stays 0 and the unbiased "
        "phase never starts")


def test_build_gives_the_boundary_and_data_terms_their_batch_sizes():
    """loss.boundary_points and data.batch_size are the terms' points per step (100 and
    all of them are the terms' own defaults)."""
    config = C.validate(_config(equation={"constraint": "soft"}, model={"width": 4, "depth": 2},
                                estimator={"kind": "autograd"}, loss={"boundary_points": 7},
                                data={"points": 10, "train": True, "batch_size": 3}))
    problem, _ = C.build(config)
    assert [(term.name, term.batch_size) for term in problem.extra_terms] == [("boundary", 7), ("data", 3)]


def test_the_deepxde_solve_takes_the_steps_lr_and_seed_it_is_given(monkeypatch):
    """A tuning's DeepXDE trials and final solve pass their own steps and lr; the rest
    comes from the config (display every min(eval_every, steps))."""
    from pinnlab.equations import make_equation
    from pinnlab.solvers import deepxde_adapter

    seen = {}
    monkeypatch.setattr(deepxde_adapter, "solve_with_deepxde", lambda equation, **kw: seen.update(kw) or "result")
    config = C.validate(_config(model={"width": 4, "depth": 2}, trainer={"steps": 50, "lr": 0.01, "seed": 7,
                                                                         "eval_every": 20}))
    equation = make_equation("poisson_two_body", 3)
    assert C.solve_config_with_deepxde(config, equation, steps=5, lr=0.5) == "result"
    assert {k: seen[k] for k in ("steps", "lr", "seed", "display_every", "width", "depth", "batch_size")} == {
        "steps": 5, "lr": 0.5, "seed": 7, "display_every": 5, "width": 4, "depth": 2, "batch_size": 100}
    C.solve_config_with_deepxde(config, equation)
    assert {k: seen[k] for k in ("steps", "lr", "display_every")} == {"steps": 50, "lr": 0.01, "display_every": 20}


def test_an_observation_just_after_the_time_interval_is_refused(tmp_path):
    """Times are checked against [0, T] with a tolerance of 1e-9: T + 1e-6 is outside."""
    from pinnlab.equations import make_equation

    equation = make_equation("burgers", 2, seed=0)
    start, end = equation.time_interval
    for t, inside in ((end + 1e-12, True), (end + 1e-6, False), (start - 1e-6, False)):
        x = np.array([[0.1, 0.2, (start + end) / 2], [0.0, 0.1, t]])
        path = tmp_path / f"obs{len(list(tmp_path.iterdir()))}.npz"
        np.savez(path, x=x, u=np.array([0.5, 0.25]))
        config = C.validate({"equation": {"name": "burgers", "dim": 2}, "data": {"source": str(path), "train": True}})
        if inside:
            assert C.make_observations(config, equation)[0].tolist() == x.tolist()
        else:
            with pytest.raises(C.ConfigError) as info:
                C.make_observations(config, equation)
            assert f"a time outside [{start:g}, {end:g}], where burgers is posed: observation 1 (counting from 0)" \
                in str(info.value)


# -- the command line ------------------------------------------------------------------------
NO_TERMS = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
loss: {weighting: lra}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""
"""A config that validates but is refused by build (an adaptive weighting of one term):
a solve of it ends with exit 2 right after its output checks, before any work."""


def _main(args, capsys):
    """``pinnlab ARGS``: (exit code, its one stderr line)."""
    from pinnlab.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    return code, err


def test_run_inputs_names_a_study_init_file_but_not_fresh_or_trained(tmp_path, monkeypatch):
    """study.init 'trained' and 'fresh' are no file the run reads (an output named
    'trained' was taken for the study's input)."""
    from pinnlab.cli import run_inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.h5").write_bytes(b"x")
    for init, reads in (("fresh", []), ("trained", []), ("net.h5", [(tmp_path / "net.h5", "study.init")])):
        config = C.validate(_config(study={"kind": "estimator", "init": init}))
        assert [(p.absolute(), k) for p, k in run_inputs("c.yaml", config)] == [
            (tmp_path / "c.yaml", "the config"), *reads]


def test_an_output_name_that_fits_exactly_with_its_checkpoint_suffix_is_allowed(tmp_path, capsys, monkeypatch):
    """250 bytes + '.ckpt' = 255, the file system's limit, is allowed (the solve goes on to
    build, refused here); 251 bytes is refused for its checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(NO_TERMS)
    code, err = _main(["solve", "c.yaml", "-o", "a" * 247 + ".h5", "--progress", "off"], capsys)
    assert code == 2 and err.startswith("pinnlab: error: config error: loss.weighting = 'lra': needs more than one")
    code, err = _main(["solve", "c.yaml", "-o", "b" * 248 + ".h5", "--progress", "off"], capsys)
    assert code == 2 and err.startswith("pinnlab: error: output name 'bbbb") and err.endswith(
        "is too long: 256 bytes with the .ckpt suffix, the file system allows 255")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_a_tuning_output_name_is_checked_with_its_longest_checkpoint_suffix(tmp_path, capsys, monkeypatch):
    """A tuning writes RUN.h5.ckpt and RUN.h5.final.ckpt: the longer one must fit."""
    from .tuning.micro_configs import WEIGHT_FG2U

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(WEIGHT_FG2U)
    code, err = _main(["tune", "t.yaml", "-o", "t" * 242 + ".h5", "--progress", "off"], capsys)
    assert code == 2 and err.endswith("is too long: 256 bytes with the .final.ckpt suffix, the file system "
                                      "allows 255"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_a_tuning_config_with_observations_is_solved_as_it_is(tmp_path, capsys, monkeypatch):
    """Its data: without data.train feeds the tuning objective: `pinnlab solve` of it (the
    untuned baseline) keeps it, where a plain config's is refused as without effect."""
    import h5py

    from .tuning.micro_configs import WEIGHT_FG2U

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(WEIGHT_FG2U)
    code, err = _main(["solve", "t.yaml", "-o", "r.h5", "--progress", "off"], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "r.h5") as fh:
        assert fh["history/step"][-1] == 4
    plain = WEIGHT_FG2U.split("tune:")[0]
    (tmp_path / "p.yaml").write_text(plain)
    code, err = _main(["solve", "p.yaml", "-o", "p.h5", "--progress", "off"], capsys)
    assert code == 2 and err == ("pinnlab: error: config error: data: the observations have no effect on a solve "
                                 "without data.train: true (they feed tuning objectives); set it or remove data:")



@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\n"])
def test_a_line_or_paragraph_separator_in_an_override_is_escaped(tmp_path, capsys, separator):
    """U+2028 and U+2029 end a line as much as \\n does (str.splitlines, terminals): the
    error line shows them escaped."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(NO_TERMS)
    code, err = _main(["solve", cfg, f"trainer.ste{separator}ps=5", "-o", tmp_path / "r.h5"], capsys)
    shown = repr(separator)[1:-1]
    assert code == 2 and err.startswith(f"pinnlab: error: config error: trainer.ste{shown}ps: unknown key"), err
    assert separator not in err
