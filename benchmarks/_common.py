"""What the benchmark scripts share: argument errors in one line, the ``--json PATH``
checks made before any work, its atomic strict write, comma-separated lists, the thread
count ``PINNLAB_BENCH_THREADS``, and Ctrl-C as one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``prog: error: ...``, exit 2) instead of the
    usage block before it (6–8 lines for a mistyped number)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def refuse(self, message: str) -> int:
        """The same line for a check made after parsing; returns exit code 2 for ``main``."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        return 2


def json_path_error(path: str | None) -> str | None:
    """Why ``--json PATH`` cannot be written, or None (no ``--json``). The benchmarks
    write it only after the whole run, so a missing or read-only directory, a path naming
    a directory, or an existing file that is no JSON (a config, a script: it was replaced
    by the results) is refused before any work rather than found at the end."""
    if path is None:
        return None
    if not path:  # (no file was written, exit 0)
        return "an empty path"
    if path == "-":  # (a file named '-' was written where the user meant stdout)
        return "'-' is not stdout here: the results go to a file; name one (./- for a file named '-')"
    if path.endswith(("/", os.sep)):  # (written as DIR/.tmp at the end, a traceback)
        return "names a directory (it ends with a separator)"
    from pinnlab.io import check_writable_directory

    target = Path(path)
    if target.is_dir():
        return "is a directory"
    if target.is_file():
        try:
            json.loads(target.read_text())
        except (UnicodeDecodeError, ValueError):
            return "exists and is not a JSON file (a config or a script?), which the results would replace"
    try:
        check_writable_directory(path)
    except OSError as exc:
        return str(exc)
    return None


def write_json(path: str, payload) -> None:
    """Write ``payload`` to ``path`` atomically as strict JSON (a non-finite number, e.g.
    the standard error of one draw, is ``null``; bare ``NaN`` failed strict parsers)."""
    from pinnlab.io import write_strict_json

    write_strict_json(path, payload)


def listed(option: str, text: str, convert: Callable = str) -> list:
    """The comma-separated values of ``option`` (``--methods a,b``), converted; an empty
    item, a value ``convert`` refuses or one given twice raises ValueError naming the
    option (``--problems b,b`` ran b twice and counted it as two repeats)."""
    items = text.split(",")
    if not all(item.strip() for item in items):
        raise ValueError(f"{option} {text!r}: an empty item")
    try:
        values = [convert(item.strip()) for item in items]
    except ValueError as exc:
        raise ValueError(f"{option} {text!r}: {exc}") from None
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{option} {text!r}: {', '.join(repeated)} given twice")
    return values


def bench_threads() -> int:
    """The torch threads the timed workers run on: ``PINNLAB_BENCH_THREADS``, 2 when it is
    unset (README, Performance). A value that is no positive whole number raises
    ValueError naming the variable (``two`` was int()'s traceback, ``0`` torch's); the
    scripts check it before any work, so that their workers read a valid one."""
    text = os.environ.get("PINNLAB_BENCH_THREADS", "2")
    digits = text.strip()  # (int() also read "1_0" as 10 and "٣" as 3; WORLD_SIZE is read as strictly)
    count = int(digits) if digits.isascii() and digits.isdecimal() else 0
    if count < 1:
        raise ValueError(f"PINNLAB_BENCH_THREADS={text!r}: must be a whole number of threads >= 1 (unset: 2)")
    return count


INTERRUPTED = 130
"""Exit code of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports it)."""


def run_main(main: Callable[[], int]) -> int:
    """``main()``, with Ctrl-C ending it in one line and exit code 130 instead of a
    KeyboardInterrupt traceback (a script that keeps what it finished says so itself)."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        return INTERRUPTED
