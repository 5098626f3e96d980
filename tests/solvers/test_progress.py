"""Progress lines: every ``log_every`` steps and at the end, with the loss terms."""

from __future__ import annotations

import io
import os

from pinnlab.solvers.progress import Progress


def test_log_lines_come_every_log_every_steps_and_at_the_end_with_the_terms():
    out = io.StringIO()
    bar = Progress(7, mode="log", log_every=3, stream=out)
    terms = {"loss_residual": 3.25e2, "weight_residual": 1.0, "loss_boundary": 2.5e-3, "weight_boundary": 1.1e4}
    for step in range(7):
        bar.update(step, 1.5, None if step < 3 else 0.25, terms if step >= 5 else {})
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["3/7", "6/7", "7/7"]
    assert "loss=1.500e+00 rel_l2=n/a it/s=" in lines[0]
    assert "rel_l2=2.500e-01 residual=3.25e+02(w=1) boundary=2.50e-03(w=1.1e+04) it/s=" in lines[1]


def test_the_bar_shows_the_terms_and_off_prints_nothing():
    out = io.StringIO()
    bar = Progress(2, mode="bar", stream=out)
    bar.update(0, 2.0, 0.5, {"loss_data": 1e-3, "weight_data": 0.5})
    bar.bar.refresh()
    assert "data=1.00e-03(w=0.5)" in out.getvalue() and "rel_l2=5.000e-01" in out.getvalue()
    bar.close()
    quiet = io.StringIO()
    Progress(2, mode="off", stream=quiet).update(1, 1.0, 0.1)
    assert quiet.getvalue() == ""


def test_a_tuning_progress_line_names_the_outer_objective_and_has_no_rel_l2_column():
    """pinnlab tune's outer steps printed the outer objective as ``loss=`` and
    ``rel_l2=n/a`` on every line (the tuning loop has no relative L2)."""
    out = io.StringIO()
    bar = Progress(2, mode="log", log_every=1, stream=out, description="tune", value_name="outer", rel_l2=False)
    bar.update(0, 0.125, None)
    assert out.getvalue().startswith("tune step 1/2 outer=1.250e-01 it/s=")
    drawn = io.StringIO()
    bar = Progress(2, mode="bar", stream=drawn, value_name="outer", rel_l2=False)
    bar.update(0, 0.125, 0.5)
    bar.bar.refresh()
    assert "outer=1.250e-01" in drawn.getvalue() and "rel_l2" not in drawn.getvalue()
    bar.close()


def test_a_note_is_one_line_above_the_bar_or_in_the_log_and_nothing_when_off():
    for mode, expected in (("bar", True), ("log", True), ("off", False)):
        stream = io.StringIO()
        bar = Progress(4, mode=mode, stream=stream)
        bar.note("train: an event")
        bar.close()
        assert ("train: an event\n" in stream.getvalue()) is expected, (mode, stream.getvalue())


def test_a_note_goes_through_the_bars_own_write_above_the_bar():
    """With a bar, a note is written by ``tqdm.write`` (which clears the bar, writes the
    line and redraws the bar below it), not printed into the bar's line."""
    stream = io.StringIO()
    bar = Progress(4, mode="bar", stream=stream)
    written = []
    bar.bar.write = lambda text, file=None: written.append((text, file))
    bar.update(0, 1.0, None)
    bar.note("train: an event")
    bar.close()
    assert written == [("train: an event", stream)]
    assert "train: an event" not in stream.getvalue()


def test_a_slow_loop_logs_seconds_per_step(monkeypatch):
    """Below one step per second the log gives seconds per step (an outer step of 25 s read
    "it/s=0.04"), above it steps per second."""
    from pinnlab.solvers import progress

    clock = iter([0.0, 50.0, 50.5])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = Progress(4, mode="log", log_every=2, stream=out, description="tune", value_name="outer", rel_l2=False)
    bar.update(1, 0.5, None)  # 2 steps in 50 s
    bar.update(3, 0.25, None)  # 4 steps in 50.5 s: still slow
    assert out.getvalue().splitlines() == ["tune step 2/4 outer=5.000e-01 s/it=25.00",
                                           "tune step 4/4 outer=2.500e-01 s/it=12.62"]
    fast = iter([0.0, 0.5])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(fast))
    out = io.StringIO()
    Progress(2, mode="log", log_every=2, stream=out).update(1, 1.0, None)
    assert out.getvalue().strip().endswith("it/s=4.00")


def test_auto_logs_on_a_terminal_of_zero_columns(monkeypatch):
    """A pseudo-terminal reporting 0 columns got an empty tqdm bar and no log lines; with
    mode auto it now gets the log lines, and a terminal with a width the bar."""
    from pinnlab.solvers import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            return 2

    for columns, mode in ((0, "log"), (120, "bar")):
        monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd, c=columns: os.terminal_size((c, 24)))
        bar = Progress(3, mode="auto", stream=Terminal())
        assert bar.mode == mode
        bar.close()
