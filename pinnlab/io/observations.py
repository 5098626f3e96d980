"""Observations of u: loaded from HDF5, CSV or NPZ, or generated from the exact solution.

File layouts (``D`` = input columns, time last for time-dependent equations):

- HDF5 (``.h5``/``.hdf5``): datasets ``x`` `(M, D)` and ``u`` `(M,)`.
- NPZ (``.npz``): arrays ``x`` `(M, D)` and ``u`` `(M,)`.
- CSV (``.csv``): ``M`` rows of ``D + 1`` numbers (inputs, then u); one header line
  is allowed and skipped when it is not numeric.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pinnlab._seeding import make_generator


class ObservationError(ValueError):
    """An observation file that cannot be used (missing, malformed, wrong shape)."""


def load_observations(path: str | Path, input_dim: int) -> tuple[Tensor, Tensor]:
    """`(x, u)` as float64 tensors from an HDF5, NPZ or CSV file (layouts above)."""
    path = Path(path)
    if not path.is_file():
        raise ObservationError(f"observation file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as fh:
                x, u = np.asarray(fh["x"]), np.asarray(fh["u"])
        elif suffix == ".npz":
            # (np.load takes any other bytes for a pickle and said to load them unsafely)
            data = np.load(path, allow_pickle=False) if zipfile.is_zipfile(path) else None
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ObservationError(f"observation file {str(path)!r}: not an .npz archive (np.savez writes one)")
            with data:
                x, u = np.asarray(data["x"]), np.asarray(data["u"])
        elif suffix == ".csv":
            with warnings.catch_warnings():  # an empty file: numpy warns, then the shape check refuses it
                warnings.simplefilter("ignore", UserWarning)
                try:
                    table = np.loadtxt(path, delimiter=",", ndmin=2)
                except ValueError:
                    table = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
            x, u = table[:, :-1], table[:, -1]
        else:
            raise ObservationError(
                f"observation file {str(path)!r}: unknown format (use .h5, .hdf5, .npz or .csv)"
            )
    except KeyError as err:
        raise ObservationError(f"observation file {str(path)!r}: missing dataset {err}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # EOFError: an empty .npz
        if isinstance(err, ObservationError):
            raise
        raise ObservationError(f"observation file {str(path)!r}: {err or type(err).__name__}") from None
    for name, array in (("x", x), ("u", u)):
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ObservationError(f"observation file {str(path)!r}: {name} must hold real numbers, "
                                   f"got dtype {array.dtype}")
    if x.size == 0 and u.size == 0:
        raise ObservationError(f"observation file {str(path)!r} holds no observations")
    if x.ndim != 2 or x.shape[1] != input_dim or u.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ObservationError(
            f"observation file {str(path)!r}: need x of shape (M, {input_dim}) and u of shape (M,), "
            f"got {x.shape} and {u.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(u).all()):
        raise ObservationError(f"observation file {str(path)!r}: contains non-finite values")
    return torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(u, dtype=torch.float64)


def synthetic_observations(equation, points: int, *, noise: float = 0.0, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``points`` observations u*(x) + ε at test-distribution points (float64).

    ε ~ N(0, (noise · rms(u*))²): ``noise`` is relative to the root mean square of the
    exact values, so it means the same at any scale. Everything is keyed by ``seed``
    (independent of the problem seed that fixes the equation instance).
    """
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
            raise ObservationError(f"unknown observation format {suffix!r} (use .h5, .npz or .csv)")
