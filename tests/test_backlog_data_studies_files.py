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

