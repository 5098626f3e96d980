"""Fifth audit of pinnlab/cli.py: the `list` lines of an equation (its inputs, its
published dims or "any"), what `plot` refuses, main called from a thread other than the
main one, a missing command, which run locks its output, and the one line of a user
equation's error of several lines."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
from types import SimpleNamespace

import pytest

from pinnlab.cli import _output_lock, main
from pinnlab.equations import EQUATIONS, PoissonTwoBody
from pinnlab.io.atomic import OutputBusy, output_lock

from .test_cli_fourth_audit import _one_error_line


class _AnyDim(PoissonTwoBody):
    name = "user_any_dim"
    published_dims = ()


def test_list_names_an_equations_inputs_and_any_dimension_where_none_is_published(capsys, monkeypatch):
    """Each equation line says ``inputs (x,t)`` for a time-dependent equation and
    ``inputs (x)`` otherwise, its published d, or ``any`` for an equation published at none
    (a registered user equation): an empty field there said nothing."""
    monkeypatch.setitem(EQUATIONS, _AnyDim.name, _AnyDim)
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert " inputs (x,t); published d: 5, 10, 20, 25; parameters: constraint, viscosity" in lines["burgers"]
    assert " inputs (x); published d: 10, 100, 1000; parameters: constraint, radius;" in lines["poisson_two_body"]
    assert " inputs (x); published d: any; parameters: constraint, radius;" in lines["user_any_dim"]


def test_plot_refuses_its_file_as_the_directory_a_directory_under_a_file_and_a_fifo(tmp_path, capsys):
    """``plot run.h5 -o run.h5`` names the -o given (not the default directory, which was
    not asked for); a directory that cannot be made (under a regular file) is one line,
    not a traceback. Neither changes the result. A FIFO to plot is not a regular file (it
    is no directory, as the other refusal says)."""
    result = tmp_path / "run.h5"
    result.write_bytes(b"the result")
    assert main(["plot", str(result), "-o", str(result)]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: -o {str(result)!r}: is the result file being plotted; "
                                       "choose a directory")
    figures = result / "figs"
    assert main(["plot", str(result), "-o", str(figures)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"pinnlab: error: cannot create plot directory {str(figures)!r}: "), line
    assert result.read_bytes() == b"the result" and sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    assert main(["plot", str(fifo)]) == 2
    assert _one_error_line(capsys) == f"pinnlab: error: result file {str(fifo)!r} is not a regular file"


def test_no_command_is_one_line_naming_the_missing_command(capsys):
    """``pinnlab`` alone: argparse's line that a command is required, exit 2 (an optional
    command ran none and failed looking it up, a traceback)."""
    assert main([]) == 2
    assert _one_error_line(capsys) == "pinnlab: error: the following arguments are required: command"


def test_main_runs_in_a_thread_other_than_the_main_one_and_leaves_sigterm_alone(capsys):
    """Only the main thread can set a signal handler: called from another thread (a
    notebook's or a server's worker), main runs the command without the SIGTERM handler
    instead of failing with "signal only works in main thread"."""
    before = signal.getsignal(signal.SIGTERM)
    codes = []
    worker = threading.Thread(target=lambda: codes.extend([main(["list"]), main(["frobnicate"])]))
    worker.start()
    worker.join()
    assert codes == [0, 2]
    captured = capsys.readouterr()
    assert "studies: estimator, training" in captured.out
    assert captured.err.startswith("pinnlab: error: argument command: invalid choice: 'frobnicate'"), captured.err
    assert signal.getsignal(signal.SIGTERM) is before


def test_only_a_run_of_rank_0_locks_its_output(tmp_path, monkeypatch):
    """A tune under torchrun: rank 0 writes the result, so only it takes the output's lock
    (ranks 1, 2, ... taking it too found it held by rank 0 and refused the run); a plot
    writes no result file and takes none. Here the lock is held already: who takes it is
    refused. (torchrun sets WORLD_SIZE beside RANK: a RANK alone is one process's, which
    locks.)"""
    monkeypatch.setenv("WORLD_SIZE", "3")
    out = tmp_path / "t.h5"
    with output_lock(out):
        for rank in ("1", "2"):
            monkeypatch.setenv("RANK", rank)
            with _output_lock(SimpleNamespace(command="tune", output=str(out))):
                pass
        monkeypatch.setenv("RANK", "0")
        with _output_lock(SimpleNamespace(command="plot", output=str(out))):
            pass
        with pytest.raises(OutputBusy, match="another pinnlab run is writing"):
            with _output_lock(SimpleNamespace(command="tune", output=str(out))):
                pass


def register_raising_equation(tmp_path, monkeypatch, name: str, message: str):
    """Register ``user_<name>``, a user equation (a module file ``<name>.py``) whose
    constructor raises ``ArithmeticError(<message>)`` at its line 6; returns that file."""
    module = tmp_path / f"{name}.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody\n\n\n"
                      "class Raising(PoissonTwoBody):\n"
                      "    def __init__(self, *args, **kwargs):\n"
                      f"        raise ArithmeticError({message})\n")
    spec = importlib.util.spec_from_file_location(f"user_{name}_module", module)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, f"user_{name}_module", loaded)
    spec.loader.exec_module(loaded)
    monkeypatch.setitem(EQUATIONS, f"user_{name}", loaded.Raising)
    return module


def test_an_equation_modules_error_of_several_lines_gives_its_first_only(tmp_path, capsys, monkeypatch):
    """A registered user equation raising with a message of several lines (here when
    `list` makes one to read its coefficients): the one error line carries the first line
    and where it was raised (the whole message, its newlines escaped, ran on into it)."""
    module = register_raising_equation(tmp_path, monkeypatch, "several", "'no coefficients\\nat d = 5'")
    assert main(["list"]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: the equation module raised ArithmeticError: no coefficients "
                                       f"({module} line 6, in __init__)")
