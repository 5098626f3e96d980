"""Stopping a run from outside: Ctrl-C (KeyboardInterrupt) and SIGTERM (:class:`Terminated`)."""

from __future__ import annotations


class Terminated(BaseException):
    """SIGTERM (``kill``, a batch scheduler's time limit) raised in the main thread; the
    ``pinnlab`` command line installs the handler that raises it."""


STOPS = (KeyboardInterrupt, Terminated)
"""What a training loop meets when it is stopped from outside: it saves a checkpoint of
its last completed step (with checkpointing on) and lets the exception go on."""


def raise_terminated(signum, frame):
    """A SIGTERM handler: raise :class:`Terminated` where the main thread is, so the run
    unwinds as from Ctrl-C (the default action ended the process on the spot)."""
    raise Terminated()
