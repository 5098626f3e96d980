"""Claims in docstrings of the private helpers, the size estimate, the plots and the DeepXDE
adapter that no other test pins: each test checks the behaviour a sentence describes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pinnlab import sizes
from pinnlab._typing import inspectable
from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots

# -- pinnlab/_typing.py ---------------------------------------------------------------------------


def test_inspectable_reads_no_values_off_the_cpu():
    """``inspectable``: "or None where they are not read: on an accelerator". A tensor on
    another device (the meta device here, which has no values) gives None; one on the CPU
    its values, detached from autograd."""
    assert inspectable(torch.ones(3, device="meta")) is None
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    seen = inspectable(x * 2)
    assert not seen.requires_grad
    assert torch.equal(seen, torch.tensor([2.0, -4.0]))


# -- pinnlab/cli.py ------------------------------------------------------------------------------


def test_each_commands_help_opens_with_its_summary_as_a_sentence():
    """``add_command``: "A subcommand whose ``--help`` opens with its summary": the summary
    ``pinnlab --help`` lists, its first letter capitalised and a full stop added, nothing
    else of it changed (``PINN``, ``YAML`` keep their capitals)."""
    import argparse

    from pinnlab.cli import make_parser

    parser = make_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {action.dest: action.help for action in sub._choices_actions}
    assert {"solve", "plot", "list"} <= set(summaries)
    for name, summary in summaries.items():
        description = sub.choices[name].description
        assert description == summary[0].upper() + summary[1:] + ".", name
        usage, _, rest = sub.choices[name].format_help().partition("\n\n")
        assert " ".join(rest.split()).startswith(description), name  # (argparse wraps it)
    assert sub.choices["solve"].description == "Train a PINN from a YAML config."


# -- pinnlab/_fields.py --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 0])
def test_a_flag_is_true_or_false_only_not_one_or_zero(value):
    """``Bool``: "A flag: ``true``/``false`` only, not ``1``, ``0`` or ``"yes"``" (``yes`` is
    pinned in test_config.py): ``data.train: 1`` is refused by name, not read as true."""
    from pinnlab.config import ConfigError, validate

    config = {"equation": {"name": "poisson_two_body", "dim": 2}, "data": {"train": value}}
    with pytest.raises(ConfigError) as refused:
        validate(config)
    assert str(refused.value) == f"data.train = {value}: input should be a valid boolean"
    assert validate({**config, "data": {"train": bool(value)}}).data.train is bool(value)


# -- pinnlab/sizes.py ----------------------------------------------------------------------------


def test_a_cgroup_limit_file_reads_as_bytes_or_none(tmp_path):
    """``_read_limit``: "A cgroup limit file's bytes (None: no file, ``max``, or
    unreadable)"."""
    (tmp_path / "number").write_text("8589934592\n")
    (tmp_path / "max").write_text("max\n")
    (tmp_path / "junk").write_text("a lot\n")
    assert sizes._read_limit(str(tmp_path / "number")) == 8 * 2**30
    assert sizes._read_limit(str(tmp_path / "max")) is None
    assert sizes._read_limit(str(tmp_path / "junk")) is None
    assert sizes._read_limit(str(tmp_path / "missing")) is None
    assert sizes._read_limit(str(tmp_path)) is None  # (a directory: OSError)


# -- pinnlab/plots/tune.py -----------------------------------------------------------------------


def test_rows_keeps_the_entry_size_of_a_record_with_no_step():
    """``_rows``: "``values`` [steps, *shape] as [steps, size] (also with no step, where -1
    is ambiguous)"."""
    assert tune_plots._rows(np.zeros((0, 2, 3))).shape == (0, 6)
    values = np.arange(12.0).reshape(2, 3, 2)
    np.testing.assert_array_equal(tune_plots._rows(values), values.reshape(2, 6))


def test_a_long_vector_entry_draws_its_first_coordinates_and_says_how_many_of_how_many():
    """``MAX_LINES``: "Coordinates drawn of a vector φ entry (σ per coordinate, μ): the first
    MAX_LINES"; ``_trajectories`` records (drawn, total) for the title and draws a scalar
    entry as it is."""
    total = tune_plots.MAX_LINES + 3
    mu = np.arange(2.0 * total).reshape(2, total)
    shown = {}
    series = tune_plots._trajectories({"coefficients.mu": mu, "lr": np.array([0.1, 0.2])}, shown)
    assert list(series) == [f"coefficients.mu[{i}]" for i in range(tune_plots.MAX_LINES)] + ["lr"]
    for i in range(tune_plots.MAX_LINES):
        np.testing.assert_array_equal(series[f"coefficients.mu[{i}]"], mu[:, i])
    np.testing.assert_array_equal(series["lr"], [0.1, 0.2])
    assert shown == {"coefficients.mu": (tune_plots.MAX_LINES, total)}


# -- pinnlab/plots/studies.py --------------------------------------------------------------------


def test_the_fit_band_spans_two_standard_errors_of_the_slope_either_way():
    """``_fit_band``: "with a ±2 SE band for the slope": at the largest K the band runs
    from the line of slope - 2 SE to that of slope + 2 SE, both through the weighted means
    (``loglog_fit``'s centre), not ±1 SE."""
    from pinnlab.studies.estimator_study import loglog_fit

    fig = Figure()
    ax = fig.subplots()
    ks = np.array([4.0, 8.0, 16.0, 32.0])
    ys = 3 / ks * np.array([1.0, 1.3, 0.8, 1.1])
    errors = 0.1 * ys
    slope, se = study_plots._fit_band(ax, ks, ys, errors, "C1")
    fitted, fitted_se, cx, cy = loglog_fit(ks, ys, errors)
    assert (slope, se) == (fitted, fitted_se) and se > 0
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    at_end = vertices[np.isclose(vertices[:, 0], 32.0)][:, 1]
    edges = [np.exp(cy + s * (np.log(32.0) - cx)) for s in (slope - 2 * se, slope + 2 * se)]
    np.testing.assert_allclose([at_end.min(), at_end.max()], sorted(edges), rtol=1e-9)


# -- pinnlab/plots/__init__.py, pinnlab/solvers/deepxde_adapter.py ------------------------------


def test_only_the_cli_imports_the_plots_and_nothing_imports_the_deepxde_adapter():
    """plots: "nothing imports this but the CLI and the studies" (``plots`` needs
    matplotlib); deepxde_adapter: "Nothing in pinnlab imports this module unless the
    adapter is used". Importing the library's packages and building the command line's
    parser imports neither, nor matplotlib or DeepXDE."""
    code = (
        "import sys, pinnlab, pinnlab.cli, pinnlab.config, pinnlab.sizes, pinnlab.solvers, pinnlab.io, "
        "pinnlab.studies, pinnlab.tuning, pinnlab.nets, pinnlab.estimators, pinnlab.losses, pinnlab.bilevel\n"
        "pinnlab.cli.make_parser()\n"
        "print(sorted(m for m in ('pinnlab.plots', 'matplotlib', 'pinnlab.solvers.deepxde_adapter', 'deepxde') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_only_the_cli_imports_the_plots_as_the_plots_docstring_says():
    """plots: "nothing in the library imports this but the CLI" (it said "the CLI and the
    studies"; no module of pinnlab.studies does). Every ``import``/``from`` of
    ``pinnlab.plots`` in the package's source, by module."""
    import ast
    import importlib
    from pathlib import Path

    import pinnlab

    root = Path(pinnlab.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        if path.parts[len(root.parts)] == "plots":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(name == "pinnlab.plots" or name.startswith("pinnlab.plots.") for name in names):
                importers.add(path.relative_to(root).parts[0])
    assert "nothing in the library imports this but the CLI" in " ".join(importlib.import_module(
        "pinnlab.plots").__doc__.split())
    assert importers == {"cli.py"}
