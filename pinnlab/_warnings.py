"""Warnings attributed to the user's line.

``stacklevel=2`` names the direct caller, which for a warning raised deep in the library
(an estimator's ``estimate`` called by the bilevel driver) is another pinnlab file; Python
3.12's ``skip_file_prefixes`` is not available on 3.11. :func:`warn` walks the stack to the
first frame outside the package instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

_PACKAGE = os.path.join(str(Path(__file__).resolve().parent), "")  # (with its trailing separator)


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside pinnlab, seen from the caller of this
    function (1 is that caller itself)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first line outside pinnlab that led here."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
