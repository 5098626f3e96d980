"""pinnlab.io.observations: behaviours the earlier audits left unpinned (fifth audit)."""

import re

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import make_equation
from pinnlab.io.observations import ObservationError, load_observations, synthetic_observations

F64 = torch.float64


def test_an_inline_hash_in_a_csv_value_is_a_bad_value_not_a_comment(tmp_path):
    """Only lines *starting* with ``#`` are comments: a trailing ``# note`` after a value
    is a bad value named by its line and column (numpy's own comment stripping would
    have cut it off and kept the row without a word)."""
    path = tmp_path / "obs.csv"
    path.write_text("x0,x1,u\n0.1,0.2,1.5\n0.3,0.4,2.5 # checked\n")
    with pytest.raises(ObservationError, match=re.escape("line 3, column 3: '2.5 # checked' is not a number")):
        load_observations(path, 2)


def test_synthetic_points_come_from_the_test_sampler_not_the_collocation_one(tmp_path, monkeypatch):
    """The docstring: observations at *test-distribution* points. For hjb_rosenbrock with
    the official code's training law (x ~ N(0, 2t·I)) the two samplers differ; the points
    are exactly the test sampler's draw from the keyed ``observations`` stream, and u the
    exact values there (noise 0)."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = make_equation("hjb_rosenbrock", 2, seed=0, train_law="code", reference_samples=64)
    x, u = synthetic_observations(eq, 6, seed=5)
    expected = eq.sample_test(6, generator=make_generator(5, "observations", eq.name), dtype=F64)
    collocation = eq.sample_collocation(6, generator=make_generator(5, "observations", eq.name), dtype=F64)
    assert not torch.equal(expected, collocation)  # the test can tell the samplers apart
    assert x.dtype == F64 and x.shape == (6, 3)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    torch.testing.assert_close(u, eq.exact(expected), rtol=1e-12, atol=0)


def test_a_first_data_row_of_one_value_hints_at_the_separator(tmp_path):
    """When the *first* data row holds a single value, the width mismatch on the next
    row still carries the hint about commas: it is the first row's width of 1 that is
    suspect, not the later row's full width."""
    path = tmp_path / "obs.csv"
    path.write_text("x0,x1,u\n1.5\n0.3,0.4,2.5\n")
    expected = "line 3 has 3 values, line 2 has 1 (fields are separated by commas)"
    with pytest.raises(ObservationError, match=re.escape(expected) + "$"):
        load_observations(path, 2)
