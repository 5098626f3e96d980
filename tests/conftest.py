"""Shared fixtures: CPU by default, float64 for identities, a fixed generator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (`pytest -n 2`, the README's command) the workers share the
    # cores: one thread each, here and in the processes the tests start (CLI runs, study
    # workers, torchrun ranks), which inherit the variable. Two threads per worker on two
    # cores would oversubscribe them, and a test comparing a float32 run here with one in
    # a subprocess needs both to reduce with the same thread count.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Reference-solution caches go to a temporary directory, never to ~/.cache."""
    import os

    previous = os.environ.get("PINNLAB_CACHE")
    os.environ["PINNLAB_CACHE"] = str(tmp_path_factory.mktemp("pinnlab-cache"))
    yield
    if previous is None:
        os.environ.pop("PINNLAB_CACHE", None)
    else:
        os.environ["PINNLAB_CACHE"] = previous


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A test that changes torch's thread count (code meant for a worker process, such as
    a study cell, run in this one) does not leak it: later tests compare runs here with
    runs in subprocesses, whose float32 reductions depend on the thread count."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions (solve, tune, study) save, by file name; nothing is
    written."""
    from pinnlab.plots import solve, studies, tune

    saved = {}

    def keep(fig, path, **kwargs):
        saved[path.name] = fig
        return path

    for module in (solve, tune, studies):
        monkeypatch.setattr(module, "_save", keep)
    return saved


@pytest.fixture
def benchmarks(monkeypatch):
    """``benchmarks("bench_estimators")``: a script of benchmarks/ as a module, its siblings
    importable, torch's thread setting a no-op (the scripts' workers set their own)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return __import__
