"""Claims in the docstrings, comments and help strings of pinnlab/config.py and pinnlab/cli.py
that no other test pins (a second pass): each test checks the behaviour a sentence describes."""

from __future__ import annotations

import inspect
import sys

import pytest
import torch

from pinnlab import config as C
from pinnlab.cli import main, parse_args

POISSON = {"name": "poisson_two_body", "dim": 2}

# -- pinnlab/config.py ---------------------------------------------------------------------------


def test_a_python_config_nested_beyond_the_stack_is_one_config_error():
    """``_deep_copy``: "the config nests mappings and lists too deeply" where the copy meets
    Python's stack (a config dict given to the library, which no loader bounded): a
    ConfigError of one line, not a RecursionError traceback."""
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(C.ConfigError) as refused:
        C.apply_overrides({"equation": dict(POISSON), "model": deep}, [])
    assert str(refused.value) == "the config nests mappings and lists too deeply"


def test_build_gives_every_keyword_of_train_but_the_four_it_names():
    """``build``: "``train_kwargs`` are the keyword arguments of :func:`pinnlab.solvers.train`
    (everything but ``state``/``on_checkpoint``/``progress``/``test_set``)": the names the
    docstring lists are read from it and are exactly those left out (it once forgot
    ``test_set``)."""
    import re

    from pinnlab.solvers import train

    listed = re.search(r"\(everything but ((?:``\w+``/?)+)", " ".join(C.build.__doc__.split()))
    assert listed is not None
    left_out = set(re.findall(r"``(\w+)``", listed[1]))
    assert left_out == {"state", "on_checkpoint", "progress", "test_set", "description"}
    _, kwargs = C.build(C.validate({"equation": dict(POISSON), "trainer": {"steps": 2}}))
    keywords = set(inspect.signature(train).parameters) - {"problem"}
    assert set(kwargs) == keywords - left_out


def test_build_gives_only_keywords_of_train():
    """``build``: ``train_kwargs`` are keyword arguments of ``train`` (``train(problem,
    **kwargs)`` is how ``pinnlab solve`` calls it): none that ``train`` does not take, and
    none of the three the command passes itself."""
    from pinnlab.solvers import train

    _, kwargs = C.build(C.validate({"equation": dict(POISSON), "trainer": {"steps": 2}}))
    keywords = set(inspect.signature(train).parameters) - {"problem"}
    assert set(kwargs) <= keywords
    assert not {"state", "on_checkpoint", "progress"} & set(kwargs)


def test_a_py_equation_module_is_loaded_once_per_process_under_its_resolved_path(tmp_path, monkeypatch):
    """``import_equation_module``: "A file is loaded once per process, under a name made
    from its resolved path": the same file named three ways (relative, through ``..``,
    absolute) runs once, as ``pinnlab_user_<stem>_<8 hex digits of its path's SHA-256>``."""
    import hashlib

    (tmp_path / "sub").mkdir()
    module = tmp_path / "counted_eq.py"
    runs = tmp_path / "runs.txt"
    module.write_text(f"with open({str(runs)!r}, 'a') as fh:\n    fh.write('x')\n")
    name = f"pinnlab_user_counted_eq_{hashlib.sha256(str(module.resolve()).encode()).hexdigest()[:8]}"
    monkeypatch.chdir(tmp_path)
    try:
        for given in ("counted_eq.py", "sub/../counted_eq.py", str(module)):
            C.import_equation_module(given)
        assert runs.read_text() == "x"
        assert sys.modules[name].__file__ == str(module.resolve())
    finally:
        for key in [k for k in sys.modules if k.startswith("pinnlab_user_counted_eq")]:
            del sys.modules[key]


def test_observations_are_float64_whatever_the_runs_dtype(tmp_path):
    """``make_observations``: "The ``data:`` section's observations `(x, u)` (float64)":
    synthetic ones and those of a file, in a float32 run too."""
    import numpy as np

    synthetic = C.validate({"equation": dict(POISSON), "data": {"train": True, "points": 5}})
    assert synthetic.trainer.dtype == "float32"
    equation = C.make_equation(synthetic.equation)
    x, u = C.make_observations(synthetic, equation)
    assert (x.dtype, u.dtype, x.shape, u.shape) == (torch.float64, torch.float64, (5, 2), (5,))
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.full((3, 2), 0.25, dtype=np.float32), u=np.ones(3, dtype=np.float32))
    from_file = C.validate({"equation": dict(POISSON), "data": {"train": True, "source": str(path)}})
    x, u = C.make_observations(from_file, equation)
    assert (x.dtype, u.dtype) == (torch.float64, torch.float64)
    assert torch.equal(x, torch.full((3, 2), 0.25, dtype=torch.float64)) and torch.equal(u, torch.ones(3).double())


def test_a_data_term_takes_all_observations_every_step_by_default():
    """``DataSection``: "``batch_size`` of them per step (all by default)": without
    ``data.batch_size`` the built data term has no batch size, which :class:`DataLoss`
    reads as all of them every step."""
    config = C.validate({"equation": dict(POISSON), "data": {"train": True, "points": 7}})
    problem, _ = C.build(config)
    (term,) = problem.extra_terms
    assert (term.name, term.batch_size, term.inputs.shape[0]) == ("data", None, 7)


@pytest.mark.parametrize(("trainer", "expected"), [
    ({"batch_size": True, "batch_chunks": 5}, "trainer.batch_size = True: input should be a valid integer"),
    ({"batch_chunks": True}, "trainer.batch_chunks = True: input should be a valid integer"),
])
def test_a_boolean_batch_setting_is_refused_by_its_own_key_not_compared(trainer, expected):
    """``validate``: "(a bool is not a count: pydantic names its own key)": ``batch_size:
    true`` with ``batch_chunks: 5`` is refused as a boolean where it stands, not read as 1
    by the batch_chunks <= batch_size check ("must be <= trainer.batch_size (True)")."""
    with pytest.raises(C.ConfigError) as refused:
        C.validate({"equation": dict(POISSON), "trainer": trainer})
    assert str(refused.value) == expected


def test_a_py_modules_directory_already_on_the_path_is_neither_added_again_nor_removed(tmp_path, monkeypatch):
    """``_first_on_path``: "``directory`` first on ``sys.path`` for the duration, unless it
    is there already": a ``.py`` equation module whose directory is on the path sees it
    there once while it is imported, and the path keeps it afterwards."""
    folder = tmp_path / "eqs"
    folder.mkdir()
    seen = tmp_path / "seen.txt"
    (folder / "path_eq.py").write_text(
        f"import sys\nwith open({str(seen)!r}, 'w') as fh:\n    fh.write(str(sys.path.count({str(folder)!r})))\n")
    monkeypatch.syspath_prepend(str(folder))
    before = list(sys.path)
    monkeypatch.chdir(tmp_path)
    try:
        C.import_equation_module("eqs/path_eq.py")
    finally:
        for key in [k for k in sys.modules if k.startswith("pinnlab_user_path_eq")]:
            del sys.modules[key]
    assert seen.read_text() == "1"
    assert sys.path == before


def test_every_model_option_reaches_the_network_initialised_from_the_init_stream():
    """``make_network``: "(every option of the section reaches it), its initialisation
    drawn from ``(seed, "init")``": the same parameters and outputs as the MLP built by
    hand with those options and that stream, and another activation gives other outputs;
    ``dtype`` is the network's."""
    from pinnlab._seeding import make_generator
    from pinnlab.nets import MLP

    section = C.ModelSection(width=3, depth=3, activation="sin")
    net = C.make_network(section, 2, seed=5)
    ref = MLP(2, width=3, depth=3, activation="sin", generator=make_generator(5, "init"))
    state, expected = net.state_dict(), ref.state_dict()
    assert list(state) == list(expected) and all(torch.equal(state[k], expected[k]) for k in state)
    x = torch.linspace(-1, 1, 8).reshape(4, 2)
    assert torch.equal(net(x), ref(x))
    other = C.make_network(C.ModelSection(width=3, depth=3, activation="tanh"), 2, seed=5)
    assert not torch.allclose(other(x), net(x))
    assert {p.dtype for p in C.make_network(section, 2, seed=5, dtype=torch.float64).parameters()} == {torch.float64}


# -- pinnlab/cli.py ------------------------------------------------------------------------------


def test_the_top_level_help_ends_by_pointing_at_each_commands_help(capsys):
    """``make_parser``: the epilog "pinnlab COMMAND --help describes each command" ends
    ``pinnlab --help`` (exit 0), and ``pinnlab COMMAND --help`` does so for every command it
    lists: exit 0 and the command's own usage."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.rstrip().endswith("pinnlab COMMAND --help describes each command")
    commands = ("solve", "plot", "list", "tune", "study")
    assert "{" + ",".join(commands) + "}" in text
    for name in commands:
        with pytest.raises(SystemExit) as stop:
            main([name, "--help"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: pinnlab {name}"), name


@pytest.mark.parametrize("command", ["solve", "tune"])
def test_progress_is_auto_by_default_and_one_of_its_four_choices(command, capsys):
    """``--progress`` help: "(auto, the default)", with "always one of them, or nothing":
    the choices auto, bar, log and off; another word is refused in one line, exit 2."""
    assert parse_args([command, "c.yaml", "-o", "r.h5"]).progress == "auto"
    for choice in ("auto", "bar", "log", "off"):
        assert parse_args([command, "c.yaml", "-o", "r.h5", "--progress", choice]).progress == choice
    assert main([command, "c.yaml", "-o", "r.h5", "--progress", "quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert "argument --progress: invalid choice: 'quiet'" in err


def test_main_without_arguments_reads_the_command_line(monkeypatch, capsys):
    """``main``: "``argv=None`` reads ``sys.argv``" (its first item the program, as
    argparse takes it): ``pinnlab list`` runs, ``pinnlab frobnicate`` is refused."""
    monkeypatch.setattr(sys, "argv", ["pinnlab", "list"])
    assert main() == 0
    assert capsys.readouterr().out.startswith("equations (name: inputs")
    monkeypatch.setattr(sys, "argv", ["pinnlab", "frobnicate"])
    assert main() == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
