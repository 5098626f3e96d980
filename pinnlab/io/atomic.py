"""Atomic file writes: write a temporary sibling, flush, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    If the body raises (or the process dies), ``target`` is untouched and the
    temporary file is removed (or left as ``.NAME.<pid>.tmp``, never as ``target``).
    """
    target = Path(target)
    # the name is shortened so the temporary fits wherever the target's name does
    tmp = target.with_name(f".{target.name[:200]}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        try:  # make the rename itself durable
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable_directory(target: str | Path) -> None:
    """Raise ``PermissionError``/``FileNotFoundError`` if ``target`` cannot be created."""
    directory = Path(target).resolve().parent
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist")
    probe = directory / f".pinnlab-write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    finally:
        if probe.exists():
            probe.unlink()
