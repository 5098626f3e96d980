"""Fourth mutation audit of pinnlab.io.observations (the DeepXDE adapter's mutants were all
caught by the earlier tests): a UTF-8 byte order mark, an HDF5 null dataspace, the
messages for tab-separated rows and padded bad values, a long double beyond float64,
and a small noise level. Every check is exact, on tiny files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import make_equation
from pinnlab.io.observations import ObservationError, load_observations, synthetic_observations

F64 = torch.float64


# --- files -------------------------------------------------------------------------


def test_a_utf8_byte_order_mark_before_the_first_number_is_ignored(tmp_path):
    """A CSV saved as "CSV UTF-8" (a byte order mark first) and without a header: the
    mark is not part of the first value, whose row is read as data."""
    path = tmp_path / "obs.csv"
    path.write_bytes(b"\xef\xbb\xbf0.1,0.2,1.5\n0.3,0.4,2.5\n")
    x, u = load_observations(path, 2)
    torch.testing.assert_close(x, torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(u, torch.tensor([1.5, 2.5], dtype=F64), rtol=0, atol=0)


def test_an_hdf5_dataset_without_a_dataspace_is_an_observation_error(tmp_path):
    """A null dataspace (h5py.Empty) for u is refused as empty, an ObservationError, not
    numpy's TypeError on a shape of None."""
    path = tmp_path / "obs.h5"
    with h5py.File(path, "w") as fh:
        fh["x"] = np.zeros((2, 2))
        fh.create_dataset("u", data=h5py.Empty("f8"))
    with pytest.raises(ObservationError, match=r"dataset 'u' is empty \(no dataspace\)"):
        load_observations(path, 2)


def test_a_tab_separated_file_is_named_as_having_no_comma_on_its_first_line(tmp_path):
    """Tab-separated rows (a spreadsheet's "text" export) are named for what they are at
    line 1, the first line without a comma, not taken for a header and reported as a
    value that is not a number on line 2."""
    path = tmp_path / "obs.csv"
    path.write_text("0.1\t0.2\t1.5\n0.3\t0.4\t2.5\n")
    with pytest.raises(ObservationError, match=r"line 1 has no comma \(fields are separated by commas\)$"):
        load_observations(path, 2)


def test_a_bad_value_is_named_without_the_spaces_around_it(tmp_path):
    """Spaces around a field are not part of the value named (``0.1, abc ,1.5``: 'abc',
    column 2)."""
    path = tmp_path / "obs.csv"
    path.write_text("0.1,0.2,1.5\n0.3, abc ,2.5\n")
    with pytest.raises(ObservationError, match=r"line 2, column 2: 'abc' is not a number$"):
        load_observations(path, 2)


@pytest.mark.filterwarnings("error")
def test_a_long_double_beyond_float64_is_refused_as_non_finite_without_a_warning(tmp_path):
    """A float128 u of 1e400 becomes inf in float64: refused as non-finite, with no
    numpy overflow warning on the way."""
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.zeros((1, 2)), u=np.array(["1e400"], dtype=np.longdouble))
    with pytest.raises(ObservationError, match=r"contains non-finite values$"):
        load_observations(path, 2)


# --- synthetic observations ----------------------------------------------------------


def test_a_small_noise_level_is_still_added():
    """noise = 1e-4 (any positive level, however small) adds ε = noise·rms(u*)·z, z the
    normal draw that follows the points in the keyed generator; not the exact values."""
    eq = make_equation("black_scholes_barenblatt", 3, seed=0)
    x, u = synthetic_observations(eq, 50, noise=1e-4, seed=5)
    generator = make_generator(5, "observations", eq.name)
    torch.testing.assert_close(eq.sample_test(50, generator=generator, dtype=F64), x, rtol=0, atol=0)
    z = torch.randn(50, generator=generator, dtype=F64)
    exact = eq.exact(x)
    torch.testing.assert_close(u - exact, 1e-4 * exact.pow(2).mean().sqrt() * z, rtol=1e-6, atol=1e-12)
    assert not torch.equal(u, exact)
