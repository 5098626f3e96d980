"""Fixtures of the equation tests: tests that register equations leave the registry as
they found it, and the shipped custom-equation example, loaded as a module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pinnlab.equations import EQUATIONS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_equation.py"


@pytest.fixture(autouse=True)
def _restore_registry():
    saved = dict(EQUATIONS)
    yield
    EQUATIONS.clear()
    EQUATIONS.update(saved)


def load_example():
    """examples/custom_equation.py as a module (importing it registers ``sine_poisson``)."""
    spec = importlib.util.spec_from_file_location("custom_equation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
