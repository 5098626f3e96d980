"""Sixth audit of the result file (pinnlab.io.results) and of the observation files
(pinnlab.io.observations): the HDF5 layout (compression level, attributes only when
there is something to record), atomic writing of both, the loaders' refusals (a group
or a missing dataset in HDF5, a file that is no archive, a directory, boolean or
non-finite points, a first line with one bad value, a table numpy cannot parse), the
saved CSV's header line and the float64 noise of synthetic observations."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.io.observations import ObservationError, load_observations, save_observations, synthetic_observations
from pinnlab.io.results import _git_hash, radial_profile, write_solve_result

F64 = torch.float64


# --- the result file ------------------------------------------------------------------------------


@pytest.fixture
def run():
    """(config, problem, result) as write_solve_result reads them: a finished float64 run
    of 20 test points on a box (no unit ball, no slice), two parameters, two history rows."""
    x = torch.linspace(0, 1, 40, dtype=F64).reshape(20, 2)
    config = SimpleNamespace(to_yaml=lambda: "equation: {}\n", input_digests=dict,
                             trainer=SimpleNamespace(seed=7), loss=SimpleNamespace(kind="biased"))
    equation = SimpleNamespace(seed=1, name="box", dim=2, domain="box", time_dependent=False)
    history = {"step": np.array([1, 2]), "loss": np.array([0.5, 0.25]), "trace_loss": np.array([0.5, 0.25]),
               "trace_mix": np.array([0.0, 0.0])}
    result = SimpleNamespace(
        test_inputs=x, test_exact=x.sum(dim=1), best_rel_l2=0.1, stats={"steps_done": 2}, status="ok", message="",
        final=SimpleNamespace(prediction=x.sum(dim=1) + 0.5, rel_l2=0.1, rel_l1=0.1, max_err=0.5),
        history=SimpleNamespace(arrays=lambda: history), params={"w": torch.ones(2, 3, dtype=F64)},
    )
    return config, SimpleNamespace(equation=equation), result


def test_large_datasets_are_gzip_level_4_and_there_is_no_input_files_attribute_without_files(tmp_path, run):
    """Datasets of more than 16 numbers (here /eval/u_pred of 20 test points) are gzip at
    level 4; a run whose config reads no input file (no digests) has no root attribute
    input_files (not an empty JSON object)."""
    config, problem, result = run
    write_solve_result(tmp_path / "r.h5", config=config, problem=problem, result=result)
    with h5py.File(tmp_path / "r.h5") as fh:
        assert fh["eval/u_pred"].shape == (20,)
        assert (fh["eval/u_pred"].compression, fh["eval/u_pred"].compression_opts) == ("gzip", 4)
        assert "input_files" not in fh.attrs


def test_a_failing_write_leaves_the_previous_result_file_as_it_was(tmp_path, run):
    """The result file is written atomically: when ``extra`` raises in the middle of the
    writing, the file from before is untouched and no partial file replaces it."""
    config, problem, result = run
    path = tmp_path / "r.h5"
    path.write_bytes(b"previous")

    def extra(fh):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_solve_result(path, config=config, problem=problem, result=result, extra=extra)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_a_tiny_reference_still_gives_the_relative_error_of_its_bin():
    """rel_err of a bin is ‖err‖/‖u*‖; the floor under ‖u*‖ (1e-300) only keeps an
    all-zero bin finite: u* = 1e-20, error 1e-20 is a relative error of 1, not 1e-8."""
    x = torch.tensor([[0.6, 0.0]], dtype=F64)
    exact = torch.tensor([1e-20], dtype=F64)
    profile = radial_profile(x, 2 * exact, exact, bins=2)
    assert profile["count"].tolist() == [0, 1]
    assert profile["rel_err"][1] == 1.0


def _repository(root):
    """A git repository at ``root`` with one commit of tracked.txt: (its git runner, the commit hash)."""
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@b", *args], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (root / "tracked.txt").write_text("one\n")
    git("add", "tracked.txt")
    git("commit", "-q", "-m", "one")
    return git, git("rev-parse", "HEAD")


def test_a_staged_change_makes_the_git_hash_dirty(tmp_path):
    """-dirty: the tracked files differ from the commit, staged changes included (git diff
    against HEAD, not only the working tree against the index)."""
    git, commit = _repository(tmp_path)
    assert _git_hash(tmp_path) == commit
    (tmp_path / "tracked.txt").write_text("two\n")
    git("add", "tracked.txt")
    assert _git_hash(tmp_path) == commit + "-dirty"


def test_a_directory_without_tracked_files_inside_a_repository_has_no_git_hash(tmp_path):
    """A copy that is no tracked file of the repository around it (an install in another
    project's ignored environment) records "", not that project's commit."""
    _repository(tmp_path)
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "module.py").write_text("")
    assert _git_hash(tmp_path / "venv") == ""


# --- observation files ----------------------------------------------------------------------------


def test_a_text_file_named_h5_is_an_observation_error(tmp_path):
    """h5py's OSError on bytes that are no HDF5 file becomes an ObservationError naming
    the file, not a bare OSError."""
    path = tmp_path / "obs.h5"
    path.write_text("0.1,0.2,0.3\n")
    with pytest.raises(ObservationError, match=r"^observation file '.*obs\.h5': "):
        load_observations(path, 2)


def test_a_csv_of_a_header_and_comments_only_holds_no_observations(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("x0,x1,u\n# nothing measured\n\n")
    with pytest.raises(ObservationError, match=r"obs\.csv' holds no observations$"):
        load_observations(path, 2)


def test_a_group_named_x_is_refused_as_not_a_dataset(tmp_path):
    path = tmp_path / "obs.h5"
    with h5py.File(path, "w") as fh:
        fh.create_group("x")
        fh["u"] = np.zeros(2)
    with pytest.raises(ObservationError, match=r"'x' is a group, not a dataset$"):
        load_observations(path, 2)


def test_an_hdf5_file_without_u_names_the_missing_dataset(tmp_path):
    path = tmp_path / "obs.h5"
    with h5py.File(path, "w") as fh:
        fh["x"] = np.zeros((2, 2))
    with pytest.raises(ObservationError, match=r"no dataset 'u' \(or a broken link to it\); it holds 'x'$"):
        load_observations(path, 2)


def test_a_text_file_named_npz_is_no_archive(tmp_path):
    """Bytes that are no zip archive are named as such (np.load took them for a pickle)."""
    path = tmp_path / "obs.npz"
    path.write_text("0.1,0.2,0.3\n")
    with pytest.raises(ObservationError, match=r"not an \.npz archive \(np\.savez writes one\)$"):
        load_observations(path, 2)


def test_a_directory_with_the_observation_name_does_not_exist_as_a_file(tmp_path):
    (tmp_path / "obs.csv").mkdir()
    with pytest.raises(ObservationError, match=r"obs\.csv' does not exist$"):
        load_observations(tmp_path / "obs.csv", 2)


def test_boolean_points_are_not_real_numbers(tmp_path):
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.ones((2, 2), dtype=bool), u=np.zeros(2))
    with pytest.raises(ObservationError, match=r"x must hold real numbers, got dtype bool$"):
        load_observations(path, 2)


def test_a_non_finite_point_is_refused_even_with_finite_values(tmp_path):
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.array([[0.1, np.nan], [0.2, 0.3]]), u=np.zeros(2))
    with pytest.raises(ObservationError, match=r"contains non-finite values$"):
        load_observations(path, 2)


def test_a_first_line_with_one_bad_value_among_numbers_is_an_error_not_a_header(tmp_path):
    """Only a first line without any number is a header; '0.1,a,0.3' is reported by its
    line and column, not skipped."""
    path = tmp_path / "obs.csv"
    path.write_text("0.1,a,0.3\n0.4,0.5,0.6\n")
    with pytest.raises(ObservationError, match=r"line 1, column 2: 'a' is not a number$"):
        load_observations(path, 2)


def test_a_semicolon_separated_second_line_after_a_header_has_no_comma(tmp_path):
    """The first two lines are checked for a missing comma: the header x0,x1,u has its
    commas, the data line after it is named."""
    path = tmp_path / "obs.csv"
    path.write_text("x0,x1,u\n0.1;0.2;0.3\n")
    with pytest.raises(ObservationError, match=r"line 2 has no comma \(fields are separated by commas\)$"):
        load_observations(path, 2)


def test_a_value_numpy_cannot_parse_is_not_a_table_of_numbers(tmp_path):
    """'1_0' is a number to Python's float but not to numpy's parser: the file is
    refused as not a table of numbers (not read as no observations)."""
    path = tmp_path / "obs.csv"
    path.write_text("1_0,0.2,0.3\n")
    with pytest.raises(ObservationError, match=r"obs\.csv': not a table of numbers$"):
        load_observations(path, 2)


def test_a_bad_value_after_a_tab_gets_the_comma_hint(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("0.1,0.2,0.3\n0.4,0.5\t9,0.6\n")
    with pytest.raises(ObservationError, match=r"line 2, column 2: '0\.5\\t9' is not a number "
                                               r"\(fields are separated by commas\)$"):
        load_observations(path, 2)


def test_the_saved_csv_header_is_a_plain_first_line(tmp_path):
    """save_observations writes the header x0,x1,u as the first line itself, not as a
    '#' comment."""
    path = tmp_path / "obs.csv"
    save_observations(path, torch.tensor([[0.5, 0.25]], dtype=F64), torch.tensor([1.5], dtype=F64))
    assert path.read_text().splitlines()[0] == "x0,x1,u"


def test_a_failing_observation_write_leaves_the_previous_file(tmp_path, monkeypatch):
    """save_observations writes atomically: an error while writing keeps the old file."""
    path = tmp_path / "obs.npz"
    path.write_bytes(b"previous")

    def savez(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(OSError, match="disk full"):
        save_observations(path, torch.zeros(2, 2, dtype=F64), torch.zeros(2, dtype=F64))
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.npz"]


def test_the_noise_of_synthetic_observations_is_a_float64_normal_draw():
    """noise = 1: u − u* is rms(u*)·z with z the float64 normal draw after the points in
    the keyed generator, to float64 round-off (not a float32 draw, 1e-8 off)."""
    eq = SimpleNamespace(name="box", exact=lambda x: 1.0 + x.sum(dim=1),
                         sample_test=lambda n, generator, dtype: torch.rand(n, 2, generator=generator, dtype=dtype))
    x, u = synthetic_observations(eq, 30, noise=1.0, seed=2)
    generator = make_generator(2, "observations", "box")
    assert torch.equal(x, torch.rand(30, 2, generator=generator, dtype=F64))
    z = torch.randn(30, generator=generator, dtype=F64)
    exact = 1.0 + x.sum(dim=1)
    np.testing.assert_allclose((u - exact).numpy(), (exact.pow(2).mean().sqrt() * z).numpy(), rtol=1e-12, atol=1e-15)
