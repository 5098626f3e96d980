"""Argument checks shared by the library (bilevel methods, estimators, the training step): each raises one
clear ValueError.

Constructors call these in ``__post_init__`` so a bad option fails where it is given,
not as a traceback (or a silent NaN) deep inside an estimate.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from pinnlab._fields import SEED_LIMIT


def one_line(text: str) -> str:
    """``text`` on one line: a tensor's or an array's rows (and any other line breaks and
    runs of spaces) joined by single spaces, so a refusal quoting a value stays one line."""
    return " ".join(text.split())


def check_integer(name: str, value: Any, minimum: int = 1) -> None:
    """``value`` is an ``int`` (not a bool) and ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        if isinstance(value, numbers.Integral) and not isinstance(value, int):  # np.int64(4)
            raise ValueError(f"{name} must be a Python int >= {minimum}, got {value!r} (pass int(...) of it)")
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _real(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, numbers.Real)
            and math.isfinite(float(value)))


def check_finite(name: str, value: Any) -> None:
    """``value`` is a finite real number."""
    if not _real(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """``value`` is a finite real number ``> 0``."""
    if not _real(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_nonnegative(name: str, value: Any) -> None:
    """``value`` is a finite real number ``>= 0``."""
    if not _real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_at_least(name: str, value: Any, minimum: float, what: str) -> None:
    """``value`` is a finite real number ``>= minimum`` (``what`` names the bound)."""
    if not _real(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {what}, got {value!r}")


def check_seed(name: str, value: Any) -> None:
    """``value`` is an ``int`` seed that result files can store (0 <= seed < 2**63)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer with 0 <= {name} < 2**63 (result files store it as a "
                         f"64-bit integer), got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_flag(name: str, value: Any) -> None:
    """``value`` is a ``bool`` (a string such as "no" would be true, silently)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


__all__ = ["check_at_least", "check_choice", "check_flag", "check_integer", "check_nonnegative", "check_positive", "check_seed"]


def overlong_path(path: Any) -> str | None:
    """Why the file system cannot name ``path``, or None: a name in it longer than the
    file system's NAME_MAX, or the whole longer than PATH_MAX (every stat of such a path
    raised OSError 36, a traceback where a missing file was expected)."""
    import os

    text = os.fsencode(os.fspath(path))

    def limit(name: str, default: int) -> int:
        try:
            return os.pathconf(".", name)
        except (OSError, ValueError, AttributeError):
            return default

    longest = max((len(part) for part in text.split(os.fsencode(os.sep))), default=0)
    if longest > (name_max := limit("PC_NAME_MAX", 255)):
        return f"a name in it is {longest} bytes long, the file system allows {name_max}"
    if len(text) >= (path_max := limit("PC_PATH_MAX", 4096)):
        return f"it is {len(text)} bytes long, the system allows {path_max - 1}"
    return None
