"""The public surface: every name in each package's ``__all__`` resolves, and the top
level reaches the sub-packages and entry points its docstring names."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["pinnlab", "pinnlab.equations", "pinnlab.estimators", "pinnlab.losses", "pinnlab.nets",
            "pinnlab.solvers", "pinnlab.bilevel", "pinnlab.tuning", "pinnlab.studies", "pinnlab.io",
            "pinnlab.plots", "pinnlab.cli"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


def test_the_top_level_reaches_every_sub_package_and_hypergradient():
    """`import pinnlab; pinnlab.bilevel` raised AttributeError although the docstring lists it."""
    import pinnlab
    from pinnlab.bilevel import hypergradient

    for name in ("bilevel", "tuning", "studies", "io", "plots", "equations", "solvers"):
        assert getattr(pinnlab, name) is importlib.import_module(f"pinnlab.{name}")
        assert name in pinnlab.__all__
    assert pinnlab.hypergradient is hypergradient
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pinnlab.nope  # noqa: B018


def test_importing_pinnlab_stays_light():
    """The lazy sub-packages are not imported with pinnlab (plots would pull in matplotlib)."""
    code = ("import sys, pinnlab; print(sorted(m for m in ('matplotlib', 'h5py', 'pinnlab.bilevel', "
            "'pinnlab.plots', 'pinnlab.tuning', 'pinnlab.studies') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
