"""The benchmark scripts' comma-separated options (``benchmarks/_common.listed``): items
are taken without the spaces around them, as written after a comma."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def listed(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import _common

    return _common.listed


def test_items_are_stripped_before_they_are_converted_and_compared(listed):
    """``--methods "fg2u, random"`` is fg2u and random (" random" is no method), and
    ``--problems "b, b"`` names b twice."""
    assert listed("--methods", "fg2u, random") == ["fg2u", "random"]
    assert listed("--horizons", " 1 ,2", int) == [1, 2]
    with pytest.raises(ValueError, match="^--problems 'b, b': b given twice$"):
        listed("--problems", "b, b")
    with pytest.raises(ValueError, match="^--methods 'a, ': an empty item$"):
        listed("--methods", "a, ")
