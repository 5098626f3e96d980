"""Observation files and study files: reading a large CSV file of observations says so,
and reads every format it read before to the same values (a bad line still named by its
line); an overwritten training study's cells do not outlive it."""

from __future__ import annotations

import numpy as np
import pytest

from pinnlab.io import observations
from pinnlab.io.observations import ObservationError, load_observations

# (file text, the (x, u) it loads) for the layouts the reader accepts
ACCEPTED = [
    ("0.1,0.2,1.5\n0.3,-0.4,2\n", [[0.1, 0.2], [0.3, -0.4]], [1.5, 2.0]),
    ("x0,x1,u\n0.1,0.2,1.5\n", [[0.1, 0.2]], [1.5]),
    ("\ufeffx0,x1,u\r\n0.1,0.2,1.5\r\n0.3,0.4,2\r\n", [[0.1, 0.2], [0.3, 0.4]], [1.5, 2.0]),
    ("# written by hand\n\n  # indented comment\nx0,x1,u\n\n 0.1 , 0.2 ,1.5 \n   \n# more\n0.3,0.4,2", [[0.1, 0.2], [0.3, 0.4]],
     [1.5, 2.0]),
    ("0.1,0.2,1e-3\r0.3,0.4,+2.5E1\n", [[0.1, 0.2], [0.3, 0.4]], [1e-3, 25.0]),
]

# (file text, the words of its refusal)
REFUSED = [
    ("x0,x1,u\n0.1,0.2,1.5\n0.3,abc,2\n", "line 3, column 2: 'abc' is not a number"),
    ("# c\n\n0.1,0.2,1.5\n0.3,0.2\n", "line 4 has 2 values, line 3 has 3"),
    ("0.1;0.2;1.5\n0.3;0.4;2\n", "line 1 has no comma"),
    ("bad,0.2,1.5\n0.3,0.4,2\n", "line 1, column 1: 'bad' is not a number"),
    ("0.1,0.2,1.5\n0.3,0.4,1.5 # note\n", "line 2, column 3: '1.5 # note' is not a number"),
]


@pytest.mark.parametrize("text, x, u", ACCEPTED)
def test_csv_layouts_load_the_same_values(tmp_path, capsys, text, x, u):
    """Headers, a byte order mark, comments, blank lines, spaces around values and CR or
    CRLF line ends load as they did (these files are small: nothing said on stderr)."""
    path = tmp_path / "obs.csv"
    path.write_bytes(text.encode())
    got_x, got_u = load_observations(path, 2)
    assert got_x.tolist() == x and got_u.tolist() == u
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("text, words", REFUSED)
def test_csv_refusals_name_the_same_line(tmp_path, text, words):
    """A bad value, a short line, semicolons and a comment after a value are refused by
    their line in the file, as before."""
    path = tmp_path / "obs.csv"
    path.write_text(text)
    with pytest.raises(ObservationError, match=words.replace("(", r"\(").replace("+", r"\+")):
        load_observations(path, 2)


def test_large_csv_file_is_announced_on_stderr(tmp_path, capsys, monkeypatch):
    """A CSV file of 10⁶ lines of 10 inputs and u (280 MB) took 4 to 7 s to read, with no
    word that anything was happening. Now a file over LARGE_CSV bytes is announced on
    stderr, once, with its size, and still loads the same values."""
    path = tmp_path / "obs.csv"
    table = np.arange(30, dtype=float).reshape(10, 3) / 100
    np.savetxt(path, table, delimiter=",", header="x0,x1,u", comments="")
    monkeypatch.setattr(observations, "LARGE_CSV", path.stat().st_size - 1)
    x, u = load_observations(path, 2)
    assert np.array_equal(x.numpy(), table[:, :2]) and np.array_equal(u.numpy(), table[:, 2])
    err = capsys.readouterr().err
    assert err == f"reading observation file {str(path)!r} (0 MB)\n"
    monkeypatch.setattr(observations, "LARGE_CSV", path.stat().st_size)
    load_observations(path, 2)
    assert capsys.readouterr().err == ""


def test_large_csv_threshold_is_documented():
    """The README states the size above which the read is announced."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"a file over {observations.LARGE_CSV // 1_000_000} MB" in readme


def _training_study(tmp_path):
    """A finished one-cell training study ``train.h5``, with its tables and its cells."""
    from .test_user_walkthrough_cli_paths_audit import TRAINING, _run

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TRAINING)
    out = tmp_path / "train.h5"
    assert _run(["study", cfg, "-o", out]) == 0
    cells = tmp_path / "train.h5.cells"
    assert len(list(cells.glob("*.h5"))) == 1 and (tmp_path / "train.md").exists()
    return cfg, out, cells


@pytest.mark.parametrize("command", ["solve", "tune"])
def test_a_result_written_over_a_training_study_removes_its_cells(tmp_path, command):
    """``pinnlab solve CONFIG -o train.h5 --overwrite`` (or ``pinnlab tune``) over a training
    study replaced the file and removed its tables, but left ``train.h5.cells/``, the
    study's per-cell results, orphaned beside a file that no longer holds the study. Now
    they go with the tables, once the new result is written."""
    import h5py

    from .test_user_walkthrough_cli_paths_audit import _run, _solve
    from .tuning.micro_configs import WEIGHT_FG2U

    _, out, cells = _training_study(tmp_path)
    if command == "solve":
        assert _solve(tmp_path, out, "--overwrite") == 0
    else:
        (tmp_path / "t.yaml").write_text(WEIGHT_FG2U)
        assert _run(["tune", tmp_path / "t.yaml", "-o", out, "--overwrite", "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert fh.attrs["kind"] == command
    assert not cells.exists() and not (tmp_path / "train.md").exists()


def test_a_run_that_fails_before_writing_keeps_the_training_studys_cells(tmp_path, monkeypatch, capsys):
    """The cells are removed only once the new result is written: a solve refused for want
    of --overwrite, and one whose result cannot be written (a full disk), leave the study
    whole, its file, tables and cells; ``pinnlab study --overwrite`` over itself keeps
    (reuses) its own cells."""
    import errno

    import pinnlab.io

    from .test_user_walkthrough_cli_paths_audit import _run, _solve

    cfg, out, cells = _training_study(tmp_path)
    cell_files = sorted(cells.iterdir())
    before = out.read_bytes()
    assert _solve(tmp_path, out) == 2

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pinnlab.io, "write_solve_result", full_disk)
    assert _solve(tmp_path, out, "--overwrite") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == before and (tmp_path / "train.md").exists() and sorted(cells.iterdir()) == cell_files
    monkeypatch.undo()
    assert _run(["study", cfg, "-o", out, "--overwrite"]) == 0
    assert sorted(cells.iterdir()) == cell_files
