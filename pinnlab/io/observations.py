"""Observations of u: loaded from HDF5, CSV or NPZ, or generated from the exact solution.

File layouts (``D`` = input columns, time last for time-dependent equations):

- HDF5 (``.h5``/``.hdf5``): datasets ``x`` `(M, D)` and ``u`` `(M,)`.
- NPZ (``.npz``): arrays ``x`` `(M, D)` and ``u`` `(M,)`.
- CSV (``.csv``): ``M`` lines of ``D + 1`` comma-separated numbers (inputs, then u);
  a first line without any number is a header and skipped, as are lines starting
  with ``#``. Reading a file over :data:`LARGE_CSV` bytes (seconds) is announced on stderr.

Points must lie where the equation is posed: inside the unit ball for the unit-ball
equations, and at times in the equation's ``time_interval`` ([0, T]) for the
time-dependent ones (checked by :func:`pinnlab.config.make_observations`, or by the data
term :func:`pinnlab.config.build` adds with ``data.train: true``).
"""

from __future__ import annotations

import math
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pinnlab._seeding import make_generator

LARGE_CSV = 50_000_000
"""The size in bytes of a CSV file above which :func:`load_observations` says on stderr
that it reads it: numpy's parser, most of the time, takes over a second for each 100 MB
(a 10⁶-line file of 10 inputs and u at full precision is 280 MB: 4 to 7 s), and the load
said nothing."""


class ObservationError(ValueError):
    """An observation file that cannot be used (missing, malformed, wrong shape)."""


def _hdf5_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    if not h5py.is_hdf5(path):  # (h5py said "Unable to synchronously open file (file signature not found)")
        raise ObservationError(f"observation file {str(path)!r}: not an HDF5 file"
                               + (" (it is empty)" if path.stat().st_size == 0 else ""))
    arrays = []
    with h5py.File(path, "r") as fh:
        for name in ("x", "u"):
            try:
                item = fh[name]
            except KeyError:  # absent, or a link that leads nowhere (h5py: "component not found")
                keys = list(fh)  # (absent: what the file holds, as the .npz refusal lists; a broken link is there)
                held = "" if name in keys else f"; it holds {', '.join(repr(k) for k in keys[:10]) or 'nothing'}"
                raise ObservationError(f"observation file {str(path)!r}: no dataset {name!r} (or a broken link "
                                       f"to it){held}") from None
            if not isinstance(item, h5py.Dataset):
                raise ObservationError(f"observation file {str(path)!r}: {name!r} is a {type(item).__name__.lower()}, "
                                       "not a dataset")
            if item.shape is None:  # a null dataspace (h5py.Empty)
                raise ObservationError(f"observation file {str(path)!r}: dataset {name!r} is empty (no dataspace)")
            arrays.append(np.asarray(item))
    return arrays[0], arrays[1]


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # (np.load takes any other bytes for a pickle and said to load them unsafely)
    data = np.load(path, allow_pickle=False) if zipfile.is_zipfile(path) else None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ObservationError(f"observation file {str(path)!r}: not an .npz archive (np.savez writes one)")
    with data:
        for name in ("x", "u"):
            if name not in data.files:
                raise ObservationError(f"observation file {str(path)!r}: no array {name!r} (it holds "
                                       f"{', '.join(map(repr, data.files)) or 'none'})")
        arrays = [data[name] for name in ("x", "u")]
    for name, array in zip(("x", "u"), arrays):
        if isinstance(array, bytes):  # NpzFile hands back a member without the .npy magic as raw bytes
            raise ObservationError(f"observation file {str(path)!r}: {name!r} is not an .npy array "
                                   f"({len(array)} bytes without the .npy header)")
    return np.asarray(arrays[0]), np.asarray(arrays[1])


def _number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _csv_rows(path: Path) -> list[tuple[int, str]]:
    """The data lines of a CSV file with their line numbers in the file (from 1): lines
    starting with ``#`` skipped, a first line that holds no number at all taken for a
    header (a first line with a bad value is an error, not a header: it was dropped
    without a word), a UTF-8 byte order mark ignored."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:4096]:  # (NUL bytes were shown as the bad value)
        raise ObservationError(f"observation file {str(path)!r}: not UTF-8 text (UTF-16, as Windows PowerShell's "
                               "'>' and Excel's 'Unicode text' write?); save it as UTF-8 CSV")
    lines = raw.decode("utf-8-sig", errors="replace").splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]
    for line_number, line in numbered[:2]:
        if "," not in line and (";" in line or "\t" in line):
            raise ObservationError(f"observation file {str(path)!r}: line {line_number} has no comma (fields are "
                                   "separated by commas)")
    if numbered and not any(_number(field) for field in numbered[0][1].split(",")):
        numbered = numbered[1:]  # the header
    return numbered


def csv_lines(path: str | Path) -> list[int]:
    """The line in the CSV file ``path`` (from 1; the header and ``#`` lines count) of each
    observation, for a refusal a user fixes by editing the file."""
    return [line_number for line_number, _ in _csv_rows(Path(path))]


def _csv_table(path: Path) -> np.ndarray:
    """The numbers of a CSV file (the data lines of :func:`_csv_rows`), comma-separated. A
    bad value is reported by its line and column in the file."""
    size = path.stat().st_size
    if size > LARGE_CSV:
        print(f"reading observation file {str(path)!r} ({size / 1e6:.0f} MB)", file=sys.stderr, flush=True)
    numbered = _csv_rows(path)
    if not numbered:
        return np.zeros((0, 0))
    try:  # numpy's parser; on an error, the loop below finds the line to name
        return np.loadtxt([line for _, line in numbered], delimiter=",", ndmin=2, comments=None)
    except ValueError:
        pass
    width = len(numbered[0][1].split(","))
    for line_number, line in numbered:
        fields = line.split(",")
        if len(fields) != width:
            hint = " (fields are separated by commas)" if width == 1 or len(fields) == 1 else ""
            raise ObservationError(f"observation file {str(path)!r}: line {line_number} has {len(fields)} values, "
                                   f"line {numbered[0][0]} has {width}{hint}")
        bad = next(((j, f) for j, f in enumerate(fields, start=1) if not _number(f)), None)
        if bad is not None:
            hint = " (fields are separated by commas)" if ";" in line or "\t" in line else ""
            raise ObservationError(f"observation file {str(path)!r}: line {line_number}, column {bad[0]}: "
                                   f"{bad[1].strip()[:40]!r} is not a number{hint}")
    raise ObservationError(f"observation file {str(path)!r}: not a table of numbers")


def _csv_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = _csv_table(path)
    return table[:, :-1], table[:, -1] if table.shape[1] else table[:, :0].reshape(0)


_READERS = {".h5": _hdf5_arrays, ".hdf5": _hdf5_arrays, ".npz": _npz_arrays, ".csv": _csv_arrays}

SUFFIXES = tuple(_READERS)
"""The suffixes (any case) of the observation files :func:`load_observations` reads."""


def suffixes_text(separator: str = ", ", last: str = " or ") -> str:
    """:data:`SUFFIXES` for a message: ".h5, .hdf5, .npz or .csv"."""
    return separator.join(SUFFIXES[:-1]) + last + SUFFIXES[-1]


def load_observations(path: str | Path, input_dim: int) -> tuple[Tensor, Tensor]:
    """`(x, u)` as float64 tensors from an HDF5, NPZ or CSV file (layouts above)."""
    path = Path(path)
    if not path.is_file():
        raise ObservationError(f"observation file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix not in _READERS:
            raise ObservationError(f"observation file {str(path)!r}: unknown format (use {suffixes_text()})")
        x, u = _READERS[suffix](path)
    # ValueError also: a truncated .npy member; zlib.error: a damaged stream of np.savez_compressed
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, ObservationError):
            raise
        raise ObservationError(f"observation file {str(path)!r}: {err or type(err).__name__}") from None
    for name, array in (("x", x), ("u", u)):
        # real numbers only: not bool, complex, strings, dates or time spans (numpy files
        # timedelta64 under its integers, and torch takes no float128)
        if array.dtype.kind not in "iuf":
            raise ObservationError(f"observation file {str(path)!r}: {name} must hold real numbers, "
                                   f"got dtype {array.dtype}")
    if x.size == 0 and u.size == 0:
        raise ObservationError(f"observation file {str(path)!r} holds no observations")
    if suffix == ".csv" and x.ndim == 2 and x.shape[1] != input_dim:  # (shapes of x read as a forgotten u column)
        raise ObservationError(f"observation file {str(path)!r}: each line needs {input_dim + 1} values "
                               f"({input_dim} inputs, then u), these have {x.shape[1] + 1} values")
    if x.ndim != 2 or x.shape[1] != input_dim or u.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ObservationError(
            f"observation file {str(path)!r}: need x of shape (M, {input_dim}) and u of shape (M,), "
            f"got {x.shape} and {u.shape}"
        )
    with np.errstate(over="ignore"):  # (a float128 beyond float64 becomes inf, refused next)
        x, u = x.astype(np.float64), u.astype(np.float64)
    for name, array in (("x", x), ("u", u)):
        finite = np.isfinite(array).reshape(array.shape[0], -1).all(axis=1)
        if not finite.all():  # (which array and observation: a domain refusal names its observation too)
            first = int(np.flatnonzero(~finite)[0])
            more = int((~finite).sum()) - 1
            which = f"observation {first} (counting from 0"
            if suffix == ".csv":  # (the line a user edits; the file read again only to refuse it)
                which = f"line {csv_lines(path)[first]} of the file (observation {first}, counting from 0"
            raise ObservationError(f"observation file {str(path)!r}: {name} of {which}"
                                   f"{f'; {more} more' if more else ''}) contains non-finite values")
    return torch.as_tensor(x), torch.as_tensor(u)


def synthetic_observations(equation, points: int, *, noise: float = 0.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``points`` observations u*(x) + ε at test-distribution points (float64).

    ε ~ N(0, (noise · rms(u*))²): ``noise`` is relative to the root mean square of the
    exact values, so it means the same at any scale. Everything is keyed by ``seed``
    (independent of the problem seed that fixes the equation instance).
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:  # (torch.randn's own error)
        raise ValueError(f"points = {points!r}: must be an integer >= 1")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):  # (-1 and NaN: no noise)
        raise ValueError(f"noise = {noise!r}: must be a finite number >= 0 (relative to rms(u*))")
    generator = make_generator(seed, "observations", equation.name)
    x = equation.sample_test(points, generator=generator, dtype=torch.float64)
    u = equation.exact(x)
    if noise > 0:
        scale = noise * u.pow(2).mean().sqrt()
        u = u + scale * torch.randn(u.shape, generator=generator, dtype=torch.float64)
    return x, u


def save_observations(path: str | Path, x: Tensor, u: Tensor) -> None:
    """Write observations atomically in the format given by the suffix (layouts above)."""
    from pinnlab.io.atomic import atomic_path

    path = Path(path)
    x_np, u_np = x.detach().cpu().double().numpy(), u.detach().cpu().double().numpy()
    with atomic_path(path) as tmp:
        suffix = path.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(tmp, "w") as fh:
                fh["x"], fh["u"] = x_np, u_np
        elif suffix == ".npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x_np, u=u_np)
        elif suffix == ".csv":
            header = ",".join([f"x{i}" for i in range(x_np.shape[1])] + ["u"])
            np.savetxt(tmp, np.column_stack([x_np, u_np]), delimiter=",", header=header, comments="")
        else:
            raise ObservationError(f"unknown observation format {suffix!r} (use {suffixes_text()})")
