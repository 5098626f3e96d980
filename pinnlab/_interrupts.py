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


def ignore_terminate() -> None:
    """From here on SIGTERM is ignored (in the main thread, where handlers are set): for a
    run that is ending on its own error and has said so, such as a torchrun process whose
    peer was lost, to which torchrun then sends SIGTERM; the 'terminated' line that added
    (a third line, after the error and what is saved) named a consequence, not the cause."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
