"""Third mutation audit of the config and the command line: the numeric bounds the first
two audits left at one side only (a time σ, the switch step, the plateau window and
tolerance, ... each at the bound, just inside and just outside), the override parser
(a value holding ``=``, spaces around the key), the message naming the right key, and
the command line's ``-o`` / ``--resume`` refusals at the cases no test reached."""

from __future__ import annotations

import importlib.util

import pytest

from pinnlab import config as C
from tests.test_config_boundaries import _config, _refused

BURGERS = {"name": "burgers", "dim": 2}


# -- every numeric bound at its edge ------------------------------------------------------
@pytest.mark.parametrize(("allowed", "refused", "message"), [
    # a time σ of 0 smooths nothing in t (and divides by 0 in the Stein weights)
    ({"equation": BURGERS, "estimator": {"time_sigma": 5e-324}, "trainer": {"dtype": "float64"}},
     {"equation": BURGERS, "estimator": {"time_sigma": 0}, "trainer": {"dtype": "float64"}},
     "estimator.time_sigma = 0: input should be greater than 0"),
    # switching at step 0 is a run of the unbiased loss from the start; -1 is no step
    (_config(loss={"kind": "hybrid", "switch_step": 0}, trainer={"steps": 10}),
     _config(loss={"kind": "hybrid", "switch_step": -1}, trainer={"steps": 10}),
     "loss.switch_step = -1: input should be greater than or equal to 0"),
    # a plateau window of one step is a window; of none it is not
    (_config(loss={"kind": "hybrid", "switch": "auto", "window": 1}, trainer={"steps": 10}),
     _config(loss={"kind": "hybrid", "switch": "auto", "window": 0}, trainer={"steps": 10}),
     "loss.window = 0: input should be greater than or equal to 1"),
    # a tolerance of 0 never detects a plateau (no relative improvement is below it)
    (_config(loss={"kind": "hybrid", "switch": "auto", "window": 5, "tolerance": 1e-300}, trainer={"steps": 10}),
     _config(loss={"kind": "hybrid", "switch": "auto", "window": 5, "tolerance": 0}, trainer={"steps": 10}),
     "loss.tolerance = 0: input should be greater than 0"),
    # one synthetic observation is data; none is not
    (_config(data={"points": 1}), _config(data={"points": 0}), "data.points = 0: input should be greater than or equal to 1"),
    # the smallest positive float64 is a learning rate in a float64 run; 0 never moves θ
    (_config(trainer={"lr": 5e-324, "dtype": "float64"}), _config(trainer={"lr": 0, "dtype": "float64"}),
     "trainer.lr = 0: input should be greater than 0"),
    # γ = 0 zeroes the rate after the first step
    (_config(trainer={"schedule": "exponential", "gamma": 5e-324, "dtype": "float64"}),
     _config(trainer={"schedule": "exponential", "gamma": 0}), "trainer.gamma = 0: input should be greater than 0"),
    # every step is an interval; 0 divides by zero in `step % every`
    (_config(trainer={"log_every": 1}), _config(trainer={"log_every": 0}),
     "trainer.log_every = 0: input should be greater than or equal to 1"),
    (_config(trainer={"eval_every": 1}), _config(trainer={"eval_every": 0}),
     "trainer.eval_every = 0: input should be greater than or equal to 1"),
    (_config(trainer={"test_points": 1}), _config(trainer={"test_points": 0}),
     "trainer.test_points = 0: input should be greater than or equal to 1"),
    (_config(data={"train": True, "batch_size": 1}), _config(data={"train": True, "batch_size": 0}),
     "data.batch_size = 0: input should be greater than or equal to 1"),
    (_config(data={"noise": 0}), _config(data={"noise": -5e-324}),
     "data.noise = -5e-324: input should be greater than or equal to 0"),
])
def test_a_bound_accepts_its_edge_and_refuses_one_step_past_it(allowed, refused, message):
    C.validate(allowed)
    assert _refused(refused) == message


# -- override parsing ----------------------------------------------------------------------
def test_an_override_value_may_hold_an_equals_sign():
    """The key ends at the first '=': a file name with '=' in it is the value's."""
    assert C.apply_overrides({}, ["data.source=run=3.npz"]) == {"data": {"source": "run=3.npz"}}
    assert C.apply_overrides({}, ["study.variants.a=[trainer.steps=5]"]) == {
        "study": {"variants": {"a": ["trainer.steps=5"]}}}


def test_spaces_around_an_override_key_are_not_part_of_it():
    """`pinnlab solve c.yaml ' trainer.steps =5'` (a quoted override with spaces) sets
    trainer.steps, not a key 'steps ' that validation refuses as unknown."""
    assert C.apply_overrides({"trainer": {"steps": 3}}, [" trainer.steps =5"]) == {"trainer": {"steps": 5}}


def test_override_values_are_yaml_1_2_scalars_and_a_later_one_wins():
    """Overrides are typed as the config file is (010 is ten, a quoted 010 a string, 1e-2
    a float, an empty value null, [..] a list); a key given twice keeps the last value."""
    data = C.apply_overrides({"trainer": {"steps": 3}}, [
        "trainer.seed=010", "data.source='010'", "trainer.lr=1e-2", "trainer.device=", "study.sigmas=[0.1, 2]",
        "trainer.steps=5", "trainer.steps=0x10"])
    assert data == {"trainer": {"steps": 16, "seed": 10, "lr": 0.01, "device": None},
                    "data": {"source": "010"}, "study": {"sigmas": [0.1, 2]}}
    assert type(data["trainer"]["lr"]) is float and type(data["trainer"]["seed"]) is int


def test_an_override_below_a_new_key_creates_nested_sections_not_a_dotted_key():
    """Without a dotted key already there to extend, each key part is one level."""
    assert C.apply_overrides({"tune": {}}, ["tune.objective.kind=data"]) == {"tune": {"objective": {"kind": "data"}}}
    assert C.apply_overrides({"a": {"b.c": {"d": 1}}}, ["a.b.c.d=2"]) == {"a": {"b.c": {"d": 2}}}


def test_an_override_does_not_change_the_dict_it_is_given():
    data = {"trainer": {"steps": 3}, "loss": {"kind": "hybrid", "switch_step": 1}}
    C.apply_overrides(data, ["trainer.steps=5", "loss.kind=biased"])
    assert data == {"trainer": {"steps": 3}, "loss": {"kind": "hybrid", "switch_step": 1}}


# -- trainer.device --------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_every_documented_device_form_is_accepted(device):
    """Validation does not ask whether CUDA is there (the run does, at resolve_device):
    a config written for a GPU machine validates on a CPU one."""
    assert C.validate(_config(trainer={"device": device})).trainer.device == device


@pytest.mark.parametrize("device", ["cpu0", "cuda:0x", "cpu ", "auto\n", "CPU", "auto:0", "cuda:-1", "cudacpu"])
def test_a_device_is_matched_whole(device):
    """A valid prefix is not a device: the pattern must match the whole value (a prefix
    match took 'cpu0', 'cuda:0x' and 'auto' followed by a newline)."""
    assert _refused(_config(trainer={"device": device})) == (
        f"trainer.device = {device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


@pytest.mark.skipif(importlib.util.find_spec("deepxde") is None, reason="needs deepxde")
def test_deepxde_runs_on_the_cpu_when_asked_to():
    """'auto' and 'cpu' are both torch's default device on a CPU machine; only CUDA is refused."""
    for device in ("auto", "cpu"):
        C.validate(_config(trainer={"backend": "deepxde", "device": device}))
    assert _refused(_config(trainer={"backend": "deepxde", "device": "cuda:0"})).startswith(
        "trainer.device = 'cuda:0': not supported by trainer.backend: deepxde")


def test_an_untrained_estimator_study_keeps_the_device_dtype_and_seed_of_the_trainer():
    """They place and seed the network it evaluates; every other trainer key only pretrains."""
    C.validate(_config(study={"kind": "estimator", "init": "fresh"},
                       trainer={"device": "cpu", "dtype": "float64", "seed": 3}))
    assert _refused(_config(study={"kind": "estimator", "init": "fresh"}, trainer={"lr": 0.1})).startswith(
        "trainer.lr: has no effect in an estimator study with study.init: 'fresh'")


# -- values the run's dtype cannot hold, and the resolved record -----------------------------
def test_a_study_sigma_that_rounds_to_zero_in_float32_is_refused_but_not_in_float64():
    study = {"kind": "estimator", "sigmas": [0.1, 1e-320]}
    assert _refused(_config(study=study)) == (
        "study.sigmas = 1e-320: rounds to 0 in float32, the dtype of this run (trainer.dtype: float32)")
    assert C.validate(_config(study=study, trainer={"dtype": "float64"})).study.sigmas == [0.1, 1e-320]


def test_the_resolved_equation_leaves_out_an_unset_module():
    """A config without equation.module resolves (and is recorded, and compared at a resume)
    as before the key existed; the equation's own defaults are filled in."""
    for equation in ({}, {"module": None}):
        assert C.validate(_config(equation=equation)).resolved()["equation"] == {
            "name": "poisson_two_body", "dim": 3, "seed": 0, "constraint": "hard", "radius": "uniform"}


def test_a_weight_of_zero_is_allowed_without_an_adaptive_weighting():
    """0 drops a term's contribution (allowed); only below 0 is refused."""
    assert C.validate(_config(loss={"weights": {"residual": 0}})).loss.weights == {"residual": 0}
    assert _refused(_config(loss={"weights": {"residual": -5e-324}})) == (
        "loss.weights.residual = -5e-324: must be a finite number >= 0")


def test_a_data_source_that_is_a_directory_is_refused(tmp_path):
    assert _refused(_config(data={"source": str(tmp_path)})) == (
        f"data.source = {str(tmp_path)!r}: must be 'synthetic' or an existing .h5/.hdf5/.npz/.csv file")



# -- messages naming the right key and value ---------------------------------------------
def test_the_hint_for_a_whole_float_is_given_for_whole_floats_within_64_bits_only():
    """1.5 is no integer written as a float (no "write 1" hint); 2**62 as a float is one;
    2**63 is beyond every integer setting, and no hint suggests it."""
    assert _refused(_config(model={"width": 1.5})) == "model.width = 1.5: input should be a valid integer"
    assert _refused(_config(model={"width": 2.0**62})) == (
        "model.width = 4.611686018427388e+18: input should be a valid integer (write 4611686018427387904: YAML "
        "reads 1e3 and 1000.0 as floats)")
    assert _refused(_config(model={"width": -(2.0**62)})).endswith("(write -4611686018427387904: YAML reads 1e3 "
                                                                   "and 1000.0 as floats)")
    assert _refused(_config(model={"width": 2.0**63})) == (
        "model.width = 9.223372036854776e+18: input should be a valid integer")


def test_an_unknown_equation_parameter_lists_every_key_the_equation_section_takes():
    assert _refused(_config(equation={"foo": 1})) == (
        "equation.foo: unknown parameter of poisson_two_body (allowed: name, dim, seed, constraint, radius)")
    assert _refused({"equation": {**BURGERS, "radius": "volume"}}) == (
        "equation.radius: unknown parameter of burgers (allowed: name, dim, seed, constraint, viscosity)")


def test_a_checkpoint_interval_is_any_64_bit_count():
    """A checkpoint interval beyond the run's steps saves none before the end: allowed."""
    assert C.validate(_config(trainer={"checkpoint_every": 2**63 - 1})).trainer.checkpoint_every == 2**63 - 1



def test_the_identity_of_a_run_whose_input_file_went_missing_leaves_out_its_digest(tmp_path):
    """input_digests hashes the files that are there; a missing one is reported where it
    is read (the run's own message), not as a FileNotFoundError from the checkpoint identity."""
    import hashlib

    source = tmp_path / "obs.npz"
    source.write_bytes(b"observations")
    config = C.validate(_config(data={"source": str(source), "train": True}))
    assert config.input_digests() == {"data.source": hashlib.sha256(b"observations").hexdigest()}
    source.unlink()
    assert config.input_files() == {"data.source": str(source)} and config.input_digests() == {}
    assert config.identity() == config.to_yaml()


def test_a_training_study_variant_override_without_an_equals_sign_is_refused():
    assert _refused(_config(study={"kind": "training", "variants": {"a": ["model.width=8", "trainer.steps"]}})) == (
        "study.variants.a: 'trainer.steps' must look like key.sub=value")


def test_an_equation_parameter_takes_the_type_of_the_class_that_declares_it_last():
    """The first class in the MRO (the subclass) gives a parameter's type and default, as
    Python's own call does: a user subclass that makes a float parameter an int has it
    read as an int (strictly: 2.0 refused), not as its base class's float."""

    class Base:
        def __init__(self, dim: int, *, seed: int = 0, scale: float = 1.0, shift: float = 0.5):
            pass

    class Child(Base):
        def __init__(self, dim: int, *, seed: int = 0, scale: int = 2, **rest):
            super().__init__(dim, seed=seed, **rest)

    types_ = C._equation_parameter_types(Child)
    assert types_["scale"] is C._STRICT[int] and types_["shift"] is C._STRICT[float]
    assert C.equation_defaults(Child) == {"scale": 2, "shift": 0.5}


def test_an_ansatz_jet_value_may_be_a_number_or_one_per_point():
    """A 0-d value broadcasts as a number (an ansatz A = 1 written as a tensor); (N,) is
    one per point; (N, 1) is refused naming the jet and the shapes allowed."""
    from types import SimpleNamespace

    import torch

    x = torch.zeros(4, 3, dtype=torch.float64)
    for value in (torch.tensor(1.0), torch.ones(4), 1.0):
        C._check_jet("A", SimpleNamespace(value=value, gradient=None, hessian_diagonal=None), x)
    with pytest.raises(ValueError, match=r"^A.value has shape \(4, 1\) for 4 points of 3 columns; it must be "
                                         r"\(4,\) or a number$"):
        C._check_jet("A", SimpleNamespace(value=torch.ones(4, 1), gradient=None, hessian_diagonal=None), x)

# -- what build hands the training ---------------------------------------------------------
def test_build_gives_the_loss_the_schedule_and_the_autograd_chunks_of_the_config():
    """unbiased is unbiased2 (the README's table); the linear schedule reaches 0 at the
    run's last step count (1 - step/steps), not one step early; autograd takes chunk_size."""
    from pinnlab.equations import make_equation
    from pinnlab.losses import Biased, Unbiased1, Unbiased2

    equation = make_equation("poisson_two_body", 3, seed=0)
    for kind, cls in (("biased", Biased), ("unbiased", Unbiased2), ("unbiased1", Unbiased1),
                      ("unbiased2", Unbiased2)):
        assert type(C.make_loss(C.validate(_config(loss={"kind": kind})).loss, equation)) is cls
    hybrid = C.make_loss(C.validate(_config(loss={"kind": "hybrid", "switch_step": 3, "then": "unbiased1"},
                                            trainer={"steps": 10})).loss, equation)
    assert type(hybrid.then) is Unbiased1 and hybrid.switch.step == 3
    config = C.validate(_config(model={"width": 4, "depth": 2}, estimator={"kind": "autograd", "chunk_size": 3},
                                trainer={"steps": 4}))
    problem, kwargs = C.build(config)
    assert [kwargs["schedule"](step) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert problem.estimator.chunk_size == 3

# -- the command line: -o, --resume, --overwrite ----------------------------------------------
TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: autograd}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""
"""A config whose solve takes well under a second."""


def _main(args, capsys):
    """``pinnlab ARGS``: (exit code, stderr stripped), stderr at most one line, no traceback."""
    from pinnlab.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    return code, err


def test_the_resume_hint_adds_overwrite_only_where_a_result_is_there(tmp_path):
    """--resume alone is refused when the output exists (it would be replaced): the hint
    printed on Ctrl-C must then say --resume --overwrite."""
    from pinnlab.cli import resume_hint

    out = tmp_path / "run.h5"
    assert resume_hint(out) == "--resume"
    out.write_bytes(b"earlier result")
    assert resume_hint(out) == "--resume --overwrite"


def test_overwrite_starts_over_past_a_stale_checkpoint_and_the_solve_removes_it(tmp_path, capsys):
    """Without --overwrite a checkpoint of an interrupted run is refused (pass --resume or
    --overwrite); with it the run starts over, and a finished run leaves no checkpoint
    behind (a later --resume would have continued a finished run's stale state)."""
    import h5py

    cfg, out = tmp_path / "c.yaml", tmp_path / "run.h5"
    cfg.write_text(TINY)
    checkpoint = tmp_path / "run.h5.ckpt"
    checkpoint.write_bytes(b"an interrupted run's checkpoint")
    code, err = _main(["solve", cfg, "-o", out, "--progress", "off"], capsys)
    assert (code, err) == (2, f"pinnlab: error: a checkpoint {str(checkpoint)!r} exists from an interrupted run; "
                              "pass --resume to continue it or --overwrite to start over")
    assert checkpoint.read_bytes() == b"an interrupted run's checkpoint" and not out.exists()
    code, err = _main(["solve", cfg, "-o", out, "--progress", "off", "--overwrite"], capsys)
    assert code == 0 and err == "", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "run.h5"]
    with h5py.File(out) as fh:
        assert fh["history/step"][-1] == 2


@pytest.mark.skipif(importlib.util.find_spec("deepxde") is None, reason="needs deepxde")
def test_resume_of_a_deepxde_run_says_it_keeps_no_checkpoint(tmp_path, capsys):
    """Not "no checkpoint ... to resume from", which reads as if one had been lost."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY.replace("estimator: {kind: autograd}\n", ""))  # (DeepXDE takes no estimator settings)
    code, err = _main(["solve", cfg, "trainer.backend=deepxde", "-o", tmp_path / "r.h5", "--resume"], capsys)
    assert (code, err) == (2, "pinnlab: error: --resume: a DeepXDE run (trainer.backend: deepxde) keeps no "
                              "checkpoint to resume from; to start over, leave out --resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]



@pytest.mark.parametrize("command", ["solve", "tune"])
def test_a_run_given_only_its_output_neither_resumes_nor_overwrites_and_shows_progress_as_auto(command):
    """The documented defaults: --progress auto (a bar on a terminal, log lines otherwise),
    no --resume, no --overwrite, no overrides."""
    from pinnlab.cli import parse_args

    args = parse_args([command, "c.yaml", "-o", "o.h5"])
    assert (args.config, args.output, args.overrides, args.resume, args.overwrite, args.progress) == (
        "c.yaml", "o.h5", [], False, False, "auto")

@pytest.mark.parametrize(("world", "rank", "shown"), [
    ("", "", ""), ("1", "0", ""), ("2", "1", " (rank 1 of 2)"), ("3", "x", " (rank ? of 3)"), ("abc", "0", "")])
def test_the_error_line_names_the_rank_only_under_several_processes(monkeypatch, world, rank, shown):
    """torchrun --nproc_per_node 1 sets WORLD_SIZE=1: one process, whose line needs no rank."""
    from pinnlab.cli import _rank

    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", rank)
    assert _rank() == shown


# -- bugs found by this audit, fixed -----------------------------------------
def test_an_override_that_replaces_the_tune_section_after_its_method_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    for value in ("5", "[1]"):
        code, err = _main(["solve", cfg, "tune.method=random", f"tune={value}", "-o", tmp_path / "r.h5"], capsys)
        assert (code, err) == (2, f"pinnlab: error: config error: tune: must be a mapping, got {value}")
    assert not (tmp_path / "r.h5").exists()


def test_a_boolean_batch_size_is_refused_naming_batch_size():
    assert _refused(_config(trainer={"batch_chunks": 2, "batch_size": True})) == (
        "trainer.batch_size = True: input should be a valid integer")


def test_a_closed_output_pipe_ends_the_command_quietly():
    """``pinnlab list | head -2``: once stdout's reader is gone the command ends with
    128 + SIGPIPE and nothing on stderr (a BrokenPipeError traceback before), as a command
    a shell's SIGPIPE stops."""
    import os
    import signal
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes its first line
    try:
        done = subprocess.run([sys.executable, "-m", "pinnlab", "list"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")


def test_every_commands_help_ends_with_an_example(capsys):
    """The README: `pinnlab COMMAND --help` gives each command's arguments and an example."""
    import re

    from pinnlab.cli import COMMANDS, make_parser

    make_parser()  # (registers tune and study)
    assert set(COMMANDS) == {"solve", "plot", "list", "tune", "study"}
    for name in COMMANDS:
        with pytest.raises(SystemExit) as stop:
            make_parser().parse_args([name, "--help"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert re.search(rf"\n\nexample: pinnlab {name}\b", out), (name, out)
