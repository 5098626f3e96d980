"""Observation files that do not hold one finite real u per point are refused by
load_observations with an ObservationError naming the file (a ValueError: exit code 2
under the pinnlab command), before any work."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pinnlab.io.observations import ObservationError, load_observations


def _npz(tmp_path, x, u, name="obs.npz"):
    path = tmp_path / name
    np.savez(path, x=x, u=u)
    return path


def test_a_u_of_another_length_than_x_is_refused(tmp_path):
    """u with one value more (or less) than x has points: the values would not belong to
    their points."""
    x = np.full((4, 2), 0.25)
    for u in (np.zeros(5), np.zeros(3), np.zeros((4, 1))):
        with pytest.raises(ObservationError, match=re.escape(f"got (4, 2) and {u.shape}")):
            load_observations(_npz(tmp_path, x, u), 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", ["x", "u"])
def test_a_non_finite_value_is_refused_in_x_and_in_u(tmp_path, bad, column):
    """One NaN or infinite value, in a point or in u, would make every data misfit NaN."""
    arrays = {"x": np.full((4, 2), 0.25), "u": np.ones(4)}
    arrays[column].reshape(-1)[5 if column == "x" else 2] = bad
    x, u = arrays["x"], arrays["u"]
    with pytest.raises(ObservationError, match="contains non-finite values"):
        load_observations(_npz(tmp_path, x, u), 2)


def test_a_boolean_array_is_not_taken_for_numbers(tmp_path):
    """True/False are no measurements of u (nor coordinates): refused like strings."""
    x = np.full((3, 2), 0.25)
    with pytest.raises(ObservationError, match="u must hold real numbers, got dtype bool"):
        load_observations(_npz(tmp_path, x, np.array([True, False, True])), 2)
    x2, u2 = load_observations(_npz(tmp_path, x, np.array([1, 0, 1])), 2)  # integers are numbers
    assert u2.tolist() == [1.0, 0.0, 1.0] and u2.dtype == torch.float64



class _Touch:
    """Unpickling it creates the file ``path``: what any code in a pickle could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_an_npz_holding_pickled_objects_is_refused_unread(tmp_path):
    """An .npz is read without unpickling (``allow_pickle=False``): an object array that
    would run code when loaded is refused, and the code does not run."""
    marker = tmp_path / "ran"
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.full((1, 2), 0.25), u=np.array([_Touch(marker)], dtype=object))
    with pytest.raises(ObservationError, match="obs.npz"):
        load_observations(path, 2)
    assert not marker.exists()
