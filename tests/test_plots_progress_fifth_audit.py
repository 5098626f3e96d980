"""Fifth mutation audit of the tune and study figures and of the progress bar: what the
earlier audits left unchecked (the bar's description and pace, flushed log lines, a
stream whose file descriptor cannot be asked for, the objective panel's legend, axis
labels), checked through matplotlib's objects and the text written."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pinnlab.plots import studies as study_plots
from pinnlab.plots import tune as tune_plots
from pinnlab.solvers.progress import Progress
from tests.studies.test_study_plot_data import _estimator_file
from tests.test_solve_plot_data import _tune_file

# ----------------------------------------------------------------------------- progress


def test_the_bar_is_headed_by_its_description_and_counts_to_its_total():
    """``pinnlab tune``'s bar reads ``tune: … 0/3``, not an unnamed bar."""
    out = io.StringIO()
    bar = Progress(3, mode="bar", stream=out, description="tune")
    bar.update(0, 1.0, None)
    bar.close()
    first = out.getvalue().split("\r")[1]
    assert first.startswith("tune: ") and " 0/3 " in first


def test_auto_draws_the_bar_on_a_terminal_whose_descriptor_raises_value_error():
    """A stream that says it is a TTY but whose ``fileno()`` raises ValueError (as a closed
    file's does) gets the bar: the width check does not fail the run."""

    class Tty(io.StringIO):
        def isatty(self):
            return True

        def fileno(self):
            raise ValueError("I/O operation on closed file")

    bar = Progress(2, stream=Tty())
    assert bar.mode == "bar"
    bar.close()


def test_the_bar_is_redrawn_at_its_own_pace_not_at_every_step():
    """Setting the loss, rel. L2 and term columns does not redraw the bar: within the bar's
    minimum interval 50 steps leave only the first drawing (a redraw per step flooded slow
    terminals and logs of the run)."""
    out = io.StringIO()
    bar = Progress(100, mode="bar", stream=out)
    bar.bar.mininterval = 1e9  # (no redraw for time passing, however slow the machine)
    for step in range(50):
        bar.update(step, 1.0, 0.5, {"loss_pde": 0.5})
    assert out.getvalue().count("\r") == 1 and bar.bar.n == 50
    bar.close()


def test_each_log_line_and_note_is_flushed_as_soon_as_it_is_written():
    """Without a terminal (a batch job's log file, a pipe) each line reaches the stream's
    file at once: the stream is flushed after every complete log line and note, not
    left to its buffer until the run ends."""

    class Recorder(io.StringIO):
        def __init__(self):
            super().__init__()
            self.flushed = []

        def flush(self):
            self.flushed.append(self.getvalue())
            super().flush()

    out = Recorder()
    bar = Progress(2, mode="log", log_every=1, stream=out)
    bar.update(0, 1.0, None)
    bar.note("switched")
    bar.update(1, 0.5, None)
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == 3 and lines[1] == "switched\n"
    assert out.flushed == ["".join(lines[:1]), "".join(lines[:2]), "".join(lines)]


# ----------------------------------------------------------------------------- tune.png


@pytest.fixture
def tune_figures(figures, monkeypatch):
    """The saved figures of plot_tune, the final solve's own figures not drawn."""
    monkeypatch.setattr(tune_plots, "plot_solve", lambda path, outdir: [])
    return figures


def test_the_objective_panel_has_a_legend_naming_its_curves(tmp_path, tune_figures):
    """The objective panel's legend names its curve, and for a search the running best too."""
    for method, names in (("fg2u", ["outer objective"]), ("random", ["outer objective", "best so far"])):
        path = _tune_file(tmp_path / f"{method}.h5", method=method, phi={"weights.boundary": [1.0, 2.0, 4.0]})
        tune_plots.plot_tune(path, tmp_path)
        legend = tune_figures["tune.png"].axes[1].get_legend()
        assert legend is not None, method
        assert [text.get_text() for text in legend.get_texts()] == names



def test_a_search_whose_every_trial_failed_has_no_best_so_far_curve(tmp_path, tune_figures):
    """Every trial of a random search diverged (NaN): there is no best value to draw, and
    the legend does not name a "best so far" curve that is not there (nor an objective line
    with no point: only the marks of the trials that diverged)."""
    path = _tune_file(tmp_path / "t.h5", method="random", phi={"weights.boundary": [1.0, 2.0, 4.0]},
                      value=[np.nan, np.nan, np.nan])
    tune_plots.plot_tune(path, tmp_path)
    ax_obj = tune_figures["tune.png"].axes[1]
    assert [line.get_label() for line in ax_obj.get_lines()] == ["non-finite (diverged): 3 of 3 trials"]
    assert list(ax_obj.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert [text.get_text() for text in ax_obj.get_legend().get_texts()] == ["non-finite (diverged): 3 of 3 trials"]


def test_the_phi_panel_labels_both_axes(tmp_path, tune_figures):
    """The φ panel says what its axes are: the outer step, and the value of each entry."""
    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]})
    tune_plots.plot_tune(path, tmp_path)
    ax_phi = tune_figures["tune.png"].axes[0]
    assert (ax_phi.get_xlabel(), ax_phi.get_ylabel()) == ("outer step", "value")


# ----------------------------------------------------------------------------- study figures


def test_both_estimator_panels_are_drawn_against_the_samples_k(tmp_path, figures):
    """The variance and the bias panel of every quantity have the samples K on their x
    axis, logarithmic, and are titled by what they show."""
    _estimator_file(tmp_path / "est.h5")
    study_plots.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    for quantity in ("loss", "gradient"):
        ax_var, ax_bias = figures[f"estimator_{quantity}.png"].axes[:2]
        for ax in (ax_var, ax_bias):
            assert (ax.get_xlabel(), ax.get_xscale(), ax.get_yscale()) == ("samples K", "log", "log"), quantity
        assert ax_var.get_title() == f"{quantity}: variance of the estimate"
        assert ax_bias.get_title() == f"{quantity}: bias against the large-K reference"
