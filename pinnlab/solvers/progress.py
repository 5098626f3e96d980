"""Progress reporting: a tqdm bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from pinnlab._checks import check_choice


def _has_width(stream: TextIO) -> bool:
    """Whether the terminal of ``stream`` reports a width: a pseudo-terminal of 0 columns
    (some job runners' ptys) got an empty tqdm bar and no log lines, so nothing at all."""
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):  # no file descriptor, or not a terminal after all
        return True


class Progress:
    """Shows loss, latest relative L2 and it/s, and with several loss terms each term's
    loss and weight at the latest evaluation row.

    On a terminal (``mode="auto"`` and stderr is a TTY, or ``mode="bar"``) a tqdm bar is
    drawn; otherwise a plain line is written every ``log_every`` steps (and at the
    end), so logs of batch jobs stay readable. ``mode="off"`` prints nothing.
    ``value_name`` names the reported value (``loss``; ``pinnlab tune``'s outer steps
    report the outer objective as ``outer``), ``unit`` what is counted (``step``; a
    search's ``trial``), ``rel_l2=False`` leaves out the relative L2 column of a loop that
    has none (it read ``rel_l2=n/a`` on every line).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        mode: str = "auto",
        log_every: int = 100,
        stream: TextIO | None = None,
        description: str = "train",
        value_name: str = "loss",
        unit: str = "step",
        rel_l2: bool = True,
    ):
        check_choice("progress", mode, ("auto", "bar", "log", "off"))
        self.stream = stream or sys.stderr
        terminal = getattr(self.stream, "isatty", lambda: False)()
        if mode == "auto":
            mode = "bar" if terminal and _has_width(self.stream) else "log"
        self.mode = mode
        self.total = total
        self.log_every = max(1, log_every)
        self.description = description
        self.value_name = value_name
        self.unit = unit
        self.show_rel_l2 = rel_l2
        self.start = time.perf_counter()
        self.initial = initial
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            # a terminal's bar is cleared at the end (the result line follows); a forced bar
            # into a file is left, so its close writes the final frame (cleared, the file
            # kept only the first frames, the later ones drawn within tqdm's refresh interval)
            self.bar = tqdm(
                total=total, initial=initial, desc=description, file=self.stream,
                dynamic_ncols=True, leave=not terminal,
            )

    def update(self, step: int, loss: float, rel_l2: float | None,
               terms: Mapping[str, float] | None = None, extra: Mapping[str, str] | None = None) -> None:
        """Report that ``step`` (0-based) finished, and any before it not reported; ``terms``: ``loss_<term>`` and
        ``weight_<term>`` of the latest evaluation row (with several loss terms); ``extra``:
        further ``name=text`` fields shown after them (a search's best value so far)."""
        done = step + 1
        shown = {}
        for key, value in (terms or {}).items():
            if key.startswith("loss_"):
                name = key[len("loss_"):]
                shown[name] = f"{value:.2e}(w={terms.get(f'weight_{name}', 1.0):.2g})"  # (·λ2e-05 read as λ₂)
        shown |= dict(extra or {})
        if self.bar is not None:
            postfix = {self.value_name: f"{loss:.3e}"}
            if rel_l2 is not None and self.show_rel_l2:
                postfix["rel_l2"] = f"{rel_l2:.3e}"
            self.bar.set_postfix(postfix | shown, refresh=False)
            self.bar.update(done - self.bar.n)  # (a joint fit reports every tune.horizon steps)
        elif self.mode == "log" and (done % self.log_every == 0 or done == self.total):
            rate = (done - self.initial) / max(time.perf_counter() - self.start, 1e-9)
            rel = "" if not self.show_rel_l2 else " rel_l2=" + ("n/a" if rel_l2 is None else f"{rel_l2:.3e}")
            extra = "".join(f" {name}={text}" for name, text in shown.items())
            speed = f"it/s={rate:.2f}" if rate >= 1 else f"s/it={1 / rate:.2f}"  # (tune's "it/s=0.04")
            print(
                f"{self.description} {self.unit} {done}/{self.total} {self.value_name}={loss:.3e}"
                f"{rel}{extra} {speed}",
                file=self.stream,
                flush=True,
            )

    def note(self, text: str) -> None:
        """One line about an event of the run (the hybrid loss's automatic switch): above
        the bar, or as a log line; nothing with ``mode="off"``."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif self.mode == "log":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def reference_values(equation, x, mode: str, stream: TextIO | None = None):
    """``equation.exact_values(x)`` (float64), with a line before and one after when the
    equation calls it long work (:meth:`~pinnlab.equations.AbstractEquation.reference_work`:
    hjb_rosenbrock's Monte Carlo reference took minutes before the first step in
    silence); nothing is written with ``mode="off"``."""
    work = equation.reference_work(x) if mode != "off" else None
    if not work:
        return equation.exact_values(x)
    stream = stream or sys.stderr
    print(work, file=stream, flush=True)
    start = time.perf_counter()
    values = equation.exact_values(x)
    print(f"{equation.name}: reference u* computed in {time.perf_counter() - start:.1f} s", file=stream, flush=True)
    return values
