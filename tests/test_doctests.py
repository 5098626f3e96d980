"""The examples in the library's docstrings run and print what they show (they are
documentation a user copies; one of them printed float32 round-off it did not show)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pinnlab


def _modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(pinnlab.__path__, "pinnlab."):
        source = importlib.util.find_spec(info.name).origin
        if source and source.endswith(".py") and ">>> " in open(source, encoding="utf-8").read():
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert {"pinnlab.solvers.optim", "pinnlab.estimators.stein", "pinnlab.bilevel.base"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0, result
