"""glibc malloc settings for training processes (:func:`configure_malloc`).

On the CPU torch takes every tensor's memory from the C library's ``malloc``. glibc
serves a large block from its heap only below a threshold that adapts to the blocks
freed so far (at most 32 MiB), and gives the top of the heap back to the system once
more than twice that threshold is free there. A training step frees hundreds of MB of
activations and noise at its end, so the next step took every page again from the
kernel, zeroed: 19,000–38,000 page faults per Stein step (N = 100, K = 128, d = 100) and
about a third of the step's time (README, "Performance"). With the heap keeping up to
1 GiB free at its top and blocks up to 32 MiB served from it, a step after the first
few faults on almost no page; blocks above 32 MiB (the independent noise at large d)
still come from and go back to the system, so the peak memory does not grow.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 * 2**20
"""Blocks up to this size come from the heap (glibc's largest dynamic threshold)."""
TRIM_THRESHOLD = 2**30
"""Free memory at the top of the heap kept for the next allocations, up to this size."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

configured = False
"""Whether :func:`configure_malloc` has set the thresholds in this process."""


def configure_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process (``mallopt``) so that a
    training loop reuses its freed memory instead of faulting it in again every step.

    ``pinnlab solve``, ``tune`` and ``study`` call it at start; scripts that call
    :func:`pinnlab.train` themselves can call it first. It changes nothing and returns
    False where it does not apply or the user chose: not glibc (macOS, Windows, musl),
    ``PINNLAB_MALLOC=default`` in the environment, or glibc's own ``MALLOC_*_`` settings
    there (``MALLOC_TRIM_THRESHOLD_`` and the like, which this would override).
    Returns True when both thresholds are set.
    """
    global configured
    if os.environ.get("PINNLAB_MALLOC", "").strip().lower() == "default":
        return False
    if any(name in os.environ for name in _USER_SETTINGS) or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt as a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    configured = configured or done
    return done


def release_free_memory() -> bool:
    """Give the heap's free memory back to the system (``malloc_trim(0)``) where
    :func:`configure_malloc` keeps it; returns whether any was released. For a memory
    peak measured afresh (:func:`~pinnlab.solvers.loop.reset_peak_memory`): the up to
    1 GiB an earlier run left free in the heap counted in the next run's resident set,
    and a small study cell after a large one reported the large one's peak."""
    if not configured:
        return False
    return bool(ctypes.CDLL(None).malloc_trim(0))
