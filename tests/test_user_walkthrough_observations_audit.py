"""A scientist's walk through the README with their own measurements: observation files
of each format (HDF5, NPZ, CSV), right and wrong, used with `pinnlab solve` (data.train)
and `pinnlab tune` (a data misfit objective, joint fitting, a tuned coefficient). Pinned
here: what the earlier observation tests left open (float32 files, duplicated points,
spaces after the commas, extra HDF5 datasets, a trailing comma, quoted values, a bad
file under --overwrite, the digest of a file a tuning read); marked xfail: two refusals
that do not say what a user needs to mend the file."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import torch

from pinnlab.cli import main
from pinnlab.config import file_digest
from pinnlab.io.observations import ObservationError, load_observations

# fokker_planck_aniso at d = 2: inputs (x1, x2, t), time last in [0, 1]
TUNE = """\
equation: {name: fokker_planck_aniso, dim: 2, seed: 0}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 1.0e-2, samples: 2, eval_samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 16, batch_size: 8}
data: {source: SOURCE}
tune:
  method: joint
  tunables: {coefficients.mu: {init: 0.0}}
  objective: {kind: data, samples: 2}
  outer_steps: 2
  horizon: 1
  outer_lr: 0.1
"""

POINTS = np.array([[0.1, -0.2, 0.25], [0.3, 0.4, 0.5], [-0.5, 0.6, 0.75], [0.7, 0.1, 1.0]])
VALUES = np.array([1.5, 2.5, 3.5, 4.5])


def _run(args):
    return main([str(a) for a in args])


def _message(path, dim):
    with pytest.raises(ObservationError) as info:
        load_observations(path, dim)
    return str(info.value)


# -- bugs: refusals that do not say what to mend -------------------------------------------
def test_a_csv_without_its_u_column_is_told_in_values_per_line(tmp_path):
    """README: "CSV: lines of D + 1 comma-separated numbers, inputs then u". A file of
    the D = 3 inputs only (x1, x2, t: u forgotten) should be refused by counting values
    per line, as the loader counts a short line ("line 3 has 3 values, line 2 has 4"),
    and name the 3 it has and the 4 it needs."""
    path = tmp_path / "inputs_only.csv"
    np.savetxt(path, POINTS, delimiter=",", header="x1,x2,t", comments="")
    message = _message(path, 3)
    assert re.search(r"\b3 values\b", message) and re.search(r"\b4\b", message), message


def test_an_hdf5_file_with_other_dataset_names_lists_what_it_holds(tmp_path):
    """NPZ: "no array 'x' (it holds 'inputs', 'values')". The same mistake in HDF5
    (MATLAB or pandas names) should say what the file holds too, so the user can rename."""
    path = tmp_path / "capitals.h5"
    with h5py.File(path, "w") as fh:
        fh["X"], fh["U"] = POINTS, VALUES
    message = _message(path, 3)
    assert "'X'" in message and "'U'" in message, message


@pytest.mark.parametrize("content", [b"", b"x1,x2,t,u\n0.1,0.2,0.5,1.0\n"])
def test_an_h5_observation_file_that_is_no_hdf5_file_is_named_as_such(tmp_path, content):
    """An export that failed (0 bytes) or a CSV saved under .h5: the line should say the
    file is not an HDF5 file, as `pinnlab plot` does ("is not an HDF5 file (...)")."""
    path = tmp_path / "measured.h5"
    path.write_bytes(content)
    message = _message(path, 3)
    assert message.startswith(f"observation file {str(path)!r}: ") and "not an HDF5 file" in message, message


def test_a_utf16_csv_is_named_by_its_encoding_not_by_nul_bytes(tmp_path):
    """The loader reads UTF-8 (a byte order mark ignored). A UTF-16 file should be refused
    by saying it is UTF-16 / not UTF-8, not by quoting a value full of NUL bytes."""
    path = tmp_path / "measured.csv"
    path.write_text("x1,x2,t,u\n-0.1,0.2,0.5,1.0\n", encoding="utf-16")
    message = _message(path, 3)
    assert "\\x00" not in message and re.search(r"utf-?16|encod", message, re.IGNORECASE), message


def test_the_readme_says_what_a_coefficient_error_is_measured_against():
    """README, "Result files", /tune attrs: "coefficient_rel_err/<name>". With a user's
    own observations (data.source a file) the number compares μ̂ with the μ that
    equation.seed draws, which the file need not have been measured at; the entry should
    say it is relative to the equation instance's (true, seeded) coefficient."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("coefficient_rel_err/<name>")
    entry = readme[start:readme.index("final/weights.<term>", start)]
    assert re.search(r"true|instance|equation\.seed|problem seed", entry), entry


def test_a_time_outside_the_interval_says_the_time_is_the_last_column(tmp_path):
    """README: "x (M, D) ..., time last". A file with t first has its last spatial
    coordinate read as time; the refusal should tell where the time is read from."""
    from pinnlab.config import ConfigError, build, load

    source = tmp_path / "t_first.csv"
    source.write_text("t,x1,x2,u\n0.25,0.1,-0.5,1.0\n0.5,0.3,0.4,2.0\n")
    config_path = tmp_path / "solve.yaml"
    config_path.write_text(TUNE.split("tune:")[0].replace("SOURCE", str(source)))
    config = load(config_path, ["data.train=true"])
    with pytest.raises(ConfigError) as info:
        build(config)  # (reads the observations of a data term)
    message = str(info.value)
    assert "time outside [0, 1]" in message and "last" in message, message


def test_the_memory_bound_counts_the_data_terms_activations(tmp_path):
    """README: before any tensor is made, a lower bound of the run's memory (... one
    training step's noise draw and activations ...) is compared with the machine's. With
    data.train the step also evaluates u_σ at the M observations with K samples each: at
    least M·K·width values of one hidden layer in the run's dtype."""
    from pinnlab.config import load
    from pinnlab.sizes import memory_moments

    config_path = tmp_path / "solve.yaml"
    config_path.write_text(TUNE.split("tune:")[0].replace("SOURCE", str(tmp_path / "measured.npz")))
    np.savez(tmp_path / "measured.npz", x=POINTS, u=VALUES)
    config = load(config_path, ["data.train=true", "estimator.samples=64", "model.width=64"])
    observations, samples, width = 20_000, 64, 64
    step = memory_moments(config, observations)["a training step"]
    assert sum(t.nbytes for t in step) >= observations * samples * width * 4


def test_a_non_finite_value_names_its_array_and_observation(tmp_path):
    """One NaN among many measurements: the line should say where (u, observation 2
    counting from 0), as the domain refusal does ("observation 3 (counting from 0)")."""
    path = tmp_path / "measured.npz"
    values = VALUES.copy()
    values[2] = np.nan
    np.savez(path, x=POINTS, u=values)
    detail = _message(path, 3).removeprefix(f"observation file {str(path)!r}: ")
    assert "non-finite" in detail
    assert re.search(r"\bu\b", detail) and re.search(r"\b2\b", detail), detail


# -- right behaviour no test pinned ---------------------------------------------------------
@pytest.mark.parametrize("suffix", ["h5", "npz"])
def test_float32_observations_are_read_as_float64_holding_the_same_numbers(tmp_path, suffix):
    """A float32 file is accepted and widened exactly: the float64 tensors hold the
    float32 values bit for bit (not re-rounded, not refused)."""
    path = tmp_path / f"single.{suffix}"
    x32, u32 = POINTS.astype(np.float32), VALUES.astype(np.float32) / 3
    if suffix == "h5":
        with h5py.File(path, "w") as fh:
            fh["x"], fh["u"] = x32, u32
    else:
        np.savez(path, x=x32, u=u32)
    x, u = load_observations(path, 3)
    assert x.dtype == u.dtype == torch.float64
    assert np.array_equal(x.numpy(), x32.astype(np.float64)) and np.array_equal(u.numpy(), u32.astype(np.float64))


def test_duplicated_points_are_kept_as_measured(tmp_path):
    """"Observations from a file are taken as they are": a point measured twice, even
    with two different values, stays twice (neither merged nor refused)."""
    path = tmp_path / "twice.npz"
    np.savez(path, x=np.concatenate([POINTS, POINTS[:1]]), u=np.concatenate([VALUES, [9.0]]))
    x, u = load_observations(path, 3)
    assert x.shape == (5, 3) and torch.equal(x[0], x[4]) and (float(u[0]), float(u[4])) == (1.5, 9.0)


def test_spaces_after_the_commas_are_read(tmp_path):
    """A CSV written "0.1, -0.2, 0.25, 1.5" (a space after each comma, also in the
    header) holds the same numbers as without the spaces."""
    path = tmp_path / "spaced.csv"
    rows = [", ".join(f"{v:g}" for v in row) for row in np.column_stack([POINTS, VALUES])]
    path.write_text("x1, x2, t, u\n" + "\n".join(rows) + "\n")
    x, u = load_observations(path, 3)
    assert np.array_equal(x.numpy(), POINTS) and np.array_equal(u.numpy(), VALUES)


def test_other_datasets_beside_x_and_u_are_ignored(tmp_path):
    """An HDF5 file with more than x and u (a measurement error column, say) is read: x
    and u are taken, the rest left alone."""
    path = tmp_path / "extra.h5"
    with h5py.File(path, "w") as fh:
        fh["x"], fh["u"], fh["sigma_u"] = POINTS, VALUES, np.ones(7)
        fh.create_group("meta").attrs["instrument"] = "probe"
    x, u = load_observations(path, 3)
    assert np.array_equal(x.numpy(), POINTS) and np.array_equal(u.numpy(), VALUES)


@pytest.mark.parametrize("text, expected", [
    # a spreadsheet's export with a comma after the last value of each line
    ("0.1,-0.2,0.25,1.5,\n0.3,0.4,0.5,2.5,\n", "line 1, column 5: '' is not a number"),
    # every value quoted, as some exporters write them
    ('"x1","x2","t","u"\n"0.1","-0.2","0.25","1.5"\n', "line 2, column 1: '\"0.1\"' is not a number"),
    # a units line under the header: not a second header
    ("x1,x2,t,u\nm,m,s,K\n0.1,-0.2,0.25,1.5\n", "line 2, column 1: 'm' is not a number"),
])
def test_common_export_mistakes_are_named_by_line_and_column(tmp_path, text, expected):
    path = tmp_path / "export.csv"
    path.write_text(text)
    assert _message(path, 3) == f"observation file {str(path)!r}: {expected}"


@pytest.mark.parametrize("name, write, expected", [
    ("nan.csv", lambda p: p.write_text("x1,x2,t,u\n0.1,0.2,0.5,nan\n"), "contains non-finite values"),
    ("late.npz", lambda p: np.savez(p, x=POINTS + [0, 0, 0.5], u=VALUES),
     "holds a time outside [0, 1], where fokker_planck_aniso is posed: observation 3 (counting from 0) at t = 1.5 "
     "(the time is x's last column)"),
    ("capitals.h5", lambda p: h5py.File(p, "w").create_dataset("X", data=POINTS).file.close(),
     "no dataset 'x' (or a broken link to it); it holds 'X'"),
    ("empty.npz", lambda p: p.write_bytes(b""), "not an .npz archive (np.savez writes one)"),
])
def test_a_bad_observation_file_under_overwrite_leaves_the_earlier_tuning_result(tmp_path, capsys, name, write,
                                                                                 expected):
    """`pinnlab tune CONFIG -o OUT.h5 --overwrite data.source=BAD` over a finished result:
    one line naming the file and what is wrong, exit 2, OUT.h5 byte for byte as it was
    and no checkpoint left."""
    config = tmp_path / "tune.yaml"
    config.write_text(TUNE.replace("SOURCE", "synthetic"))
    out = tmp_path / "t.h5"
    out.write_bytes(b"an earlier result")
    write(tmp_path / name)
    code = _run(["tune", config, "-o", out, "--overwrite", f"data.source={tmp_path / name}", "--progress", "off"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("pinnlab: error: config error: data.source: observation file ")
    assert str(tmp_path / name) in err and err.endswith(expected), err
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tune.yaml", "t.h5", name])


def test_a_joint_fit_on_a_csv_records_the_files_digest_and_the_coefficient_error(tmp_path, capsys):
    """README, "Result files": input_files holds the SHA-256 of the data.source file, and
    /tune attrs coefficient_rel_err/coefficients.mu = ‖μ̂ − μ‖/‖μ‖ of /tune/tuned; the last
    line gives the same number. Here for a tuning that read its observations from a CSV
    file rather than drawing them."""
    source = tmp_path / "measured.csv"
    np.savetxt(source, np.column_stack([POINTS, VALUES]), delimiter=",", header="x1,x2,t,u", comments="")
    config = tmp_path / "tune.yaml"
    config.write_text(TUNE.replace("SOURCE", str(source)))
    out = tmp_path / "t.h5"
    assert _run(["tune", config, "-o", out, "--progress", "off"]) == 0
    from pinnlab.config import build, load

    truth = build(load(config))[0].equation.coefficients["mu"].double().numpy()
    with h5py.File(out) as fh:
        assert json.loads(fh.attrs["input_files"]) == {"data.source": file_digest(source)}
        tuned = fh["tune/tuned/coefficients.mu"][...]
        recorded = fh["tune"].attrs["coefficient_rel_err/coefficients.mu"]
        assert fh["tune"].attrs["objective"] == "data" and fh["tune"].attrs["method"] == "joint"
    expected = np.linalg.norm(tuned - truth) / np.linalg.norm(truth)
    assert tuned.shape == (2,) and recorded == pytest.approx(expected, rel=1e-12)
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f" coefficients.mu_rel_err={expected:.6e}")
