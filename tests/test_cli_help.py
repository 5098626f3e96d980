"""`pinnlab --help`, `pinnlab COMMAND --help` and `--version`: every argument says what it
is, and each command's example is a command line that parses, with files that exist."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

import pinnlab
from pinnlab import cli

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.make_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse_args(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"pinnlab {pinnlab.__version__}"


def test_every_command_and_argument_has_a_help_text():
    commands = _commands()
    assert set(commands) == {"solve", "plot", "list", "tune", "study"}
    for name, parser in commands.items():
        assert parser.description and parser.description.endswith("."), name
        for action in parser._actions:
            assert action.help, f"pinnlab {name}: {action.dest} has no help"


@pytest.mark.parametrize("name", ["solve", "plot", "tune", "study"])
def test_each_example_parses_and_names_existing_files(name, monkeypatch):
    epilog = _commands()[name].epilog
    assert epilog.startswith("example: pinnlab ")
    argv = shlex.split(epilog.removeprefix("example: pinnlab "))
    monkeypatch.chdir(ROOT)
    if name == "plot":  # (its input is the result of the solve example)
        assert argv[:2] == ["plot", "run.h5"] and "-o run.h5" in _commands()["solve"].epilog
    else:
        assert Path(argv[1]).is_file(), argv[1]
    args = cli.parse_args(argv)
    assert args.command == name


def test_run_options_say_where_resume_reads(capsys):
    for name, checkpoint in (("solve", "RUN.h5.ckpt"), ("tune", "TUNE.h5.ckpt")):
        text = _commands()[name].format_help()
        assert f"continue from {checkpoint}" in " ".join(text.split()), name
