"""Atomic file writes: write a temporary sibling, flush, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    If the body raises (or the process dies), ``target`` is untouched and the
    temporary file is removed (or left as ``.NAME.<pid>.tmp``, never as ``target``).
    """
    target = Path(target)
    tmp = _hidden_sibling(target, f".{os.getpid()}.tmp")
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


def _hidden_sibling(path: Path, suffix: str) -> Path:
    """``.NAME<suffix>`` next to ``path``, its name shortened so that it fits wherever
    ``path``'s does: file systems limit names in bytes (255 on most), and a name of
    multi-byte characters cut at 200 characters was still too long, so a run lost its
    result at the final write. A cut name ends in a hash of the whole one, so outputs
    that share their first 180 bytes do not share a lock."""
    name = path.name
    encoded = name.encode()
    if len(encoded) > 200:
        digest = hashlib.sha1(encoded).hexdigest()[:10]
        name = encoded[:180].decode(errors="ignore") + "~" + digest
    return path.with_name(f".{name}{suffix}")


class OutputBusy(RuntimeError):
    """Another process holds the lock of an output (:func:`output_lock`)."""


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on writing ``output`` (and its checkpoint) while the body runs;
    raise :class:`OutputBusy` at once if another process holds it. Two runs to one output
    both ended "ok": the later replaced the earlier's result, and each removed the
    checkpoint the other was writing. The lock is ``flock`` on a hidden ``.NAME.lock``
    next to ``output``, released when the process ends however it ends (a left-over file
    locks nothing) and removed when the body is done. Without ``fcntl`` (not POSIX) no
    lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    output = Path(output)
    if not output.name:  # "" or "/": no file to guard (the run's checks refuse it)
        yield
        return
    path = _hidden_sibling(output, ".lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # no such directory, not writable: nothing to guard (the run's checks say why)
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(f"another pinnlab run is writing {str(output)!r} (it holds {str(path)!r}); "
                             "wait for it or choose another output") from None
        try:  # the holder before us may have removed the file after we opened it: lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def check_writable_directory(target: str | Path) -> None:
    """Raise ``PermissionError``/``FileNotFoundError`` if ``target``'s directory is missing,
    not a directory or not writable. The name itself is not checked (the CLI checks its
    length against the file system's limit: ``pinnlab.cli``'s output checks)."""
    directory = Path(target).parent  # as the write opens it: 'FILE/..' resolved as text named a directory
    try:
        is_dir = stat.S_ISDIR(os.stat(directory).st_mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist") from None
    except NotADirectoryError:  # a file on the way ('FILE/..', 'FILE/sub')
        is_dir = False
    if not is_dir:
        raise FileNotFoundError(f"{str(directory)!r} is not a directory")
    probe = directory / f".pinnlab-write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as err:  # (it named the probe, a file the user never gave)
        raise PermissionError(f"directory {str(directory)!r} is not writable ({err.strerror or err})") from None
    finally:
        if probe.exists():
            probe.unlink()


def strict_json(value, **kwargs) -> str:
    """``json.dumps`` of ``value`` with non-finite numbers as ``null`` (the bare
    ``NaN``/``Infinity`` of ``json.dumps`` are refused by strict parsers); numpy and 0-d
    torch numbers become Python ones."""
    return json.dumps(_finite_or_null(value), allow_nan=False, **kwargs)


def _finite_or_null(value):
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    if value is None or isinstance(value, (str, bool)):
        return value
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy and 0-d torch scalars
        return _finite_or_null(value.item())  # (np.bool_ and torch integers were written as 1.0, 3.0)
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def write_strict_json(path: str | Path, payload) -> None:
    """Write ``payload`` to ``path`` atomically as strict JSON (:func:`strict_json`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(strict_json(payload, indent=1))
