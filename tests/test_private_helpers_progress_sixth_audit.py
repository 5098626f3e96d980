"""Sixth mutation audit of the private helpers (``_checks``) and of the progress reporter:
what the earlier audits left unchecked (the seed refusal naming the argument it is
given, an unknown progress mode refused where it is given)."""

from __future__ import annotations

import io

import pytest

from pinnlab._checks import check_seed
from pinnlab.solvers.progress import Progress

from .test_checks import _refused


@pytest.mark.parametrize("value", [-1, 2**63, True])
def test_check_seed_names_the_argument_it_is_given(value):
    """The seed refusal names the checked argument twice (what must be an integer, and in
    the bound), not a fixed ``seed``: a check of ``outer_seed`` reads ``outer_seed``."""
    message = _refused(check_seed, "outer_seed", value)
    assert message == (f"outer_seed must be an integer with 0 <= outer_seed < 2**63 (result files store it "
                       f"as a 64-bit integer), got {value!r}")


@pytest.mark.parametrize("mode", ["bars", "logs", "quiet", "", None, "Log"])
def test_an_unknown_progress_mode_is_refused_where_it_is_given(mode):
    """A misspelt mode (``bars``, ``Log``) is one ValueError naming the choices at
    construction, not a reporter that silently prints nothing for the whole run."""
    out = io.StringIO()
    with pytest.raises(ValueError) as info:
        Progress(3, mode=mode, stream=out)
    assert str(info.value) == f"progress must be one of 'auto', 'bar', 'log', 'off', got {mode!r}"
    assert out.getvalue() == ""
