"""Mutation audit of the study figures (pinnlab/plots/studies.py) and of the plot
dispatch (pinnlab/plots/__init__.py), seventh pass: where the estimator legends sit, how
48 (loss, noise) kinds stay distinguishable, the colour of every mark of a series, the
labelled minor ticks of a variance panel, the ticks and joined points of the training
error figure, the loss-curve title, window and y ticks, cell files without a final
error, and plot_file's text paths and quoted read errors, all read back from the
Figure objects (Agg; nothing is written)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba

from pinnlab.plots import NotAResult, plot_file
from pinnlab.plots import studies as study_plots
from tests.studies.test_study_plot_data import _record, _records_file, _training_file
from tests.studies.test_study_plots import _study_file

# the loss-curve panels of a study file without cell files have no legend
pytestmark = pytest.mark.filterwarnings("ignore:No artists with labels found")

KS = (4, 8, 16, 32)


def _draw(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


# ----------------------------------------------------------------------------- estimator study


def test_each_legend_is_centred_at_the_top_of_its_row_without_a_frame(tmp_path, figures):
    """The legend row under the panels: each legend is frameless, centred under its panel
    and hangs from the top of its (switched-off) axes with no padding (caught: an upper
    left legend, a framed one)."""
    records = [*(_record("loss", k) for k in KS), *({**_record("loss", k), "noise": "shared"} for k in KS)]
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    fig = figures["estimator_loss.png"]
    renderer = _draw(fig)
    legend_axes = fig.axes[2:]
    assert len(legend_axes) == 2
    for ax in legend_axes:
        legend = ax.get_legend()
        assert legend is not None and not legend.get_frame_on()
        box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.width < 0.8 * frame.width  # (a narrower legend than its row, so placing it shows)
        assert (box.x0 + box.x1) / 2 == pytest.approx((frame.x0 + frame.x1) / 2, abs=1.0)
        assert box.y1 == pytest.approx(frame.y1, abs=1.0)


def test_every_one_of_48_estimator_kinds_has_its_own_marker_and_line_style():
    """The marker cycles through the 12 MARKERS and each further 12 (loss, noise) kinds take
    the next line style ("None", "-", "--", ":"): 48 kinds, 48 different looks (caught:
    only three line styles, the 37th kind drawn as the first)."""
    kinds = [(f"loss{i:02d}", "independent") for i in range(48)]
    styles = study_plots._series_styles([(*kind, 5, 0.05) for kind in kinds])
    looks = [(styles[(*kind, 5, 0.05)]["marker"], styles[(*kind, 5, 0.05)]["linestyle"]) for kind in kinds]
    assert len(set(looks)) == 48
    assert [look[1] for look in looks] == ["None"] * 12 + ["-"] * 12 + ["--"] * 12 + [":"] * 12


def test_every_mark_of_a_series_has_the_series_colour(tmp_path, figures):
    """Two series (C0, C1): the variance fit's band and dashed line, and the gradient's
    hollow upper bounds with their arrows, are each in their series' colour; the first
    series' loss variances are all 0 (no fit), so the only fit is C1's (caught: a band
    always C0, a fit line, bound or arrow in the next colour of the cycle or black)."""
    records = [_record(quantity, k) for quantity in ("loss", "gradient") for k in KS]
    records += [{**r, "noise": "shared"} for r in records]
    for r in records[:len(KS)]:  # the loss records of (biased, independent)
        r["variance"] = r["variance_se"] = 0.0
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    ax_var = figures["estimator_loss.png"].axes[0]
    bands = [c for c in ax_var.collections if isinstance(c, PolyCollection)]
    fits = [line for line in ax_var.get_lines() if line.get_linestyle() == "--"]
    assert [to_rgba(c.get_facecolor()[0], 1) for c in bands] == [to_rgba("C1")]
    assert [to_rgba(line.get_color()) for line in fits] == [to_rgba("C1")]
    ax_bias = figures["estimator_gradient.png"].axes[1]
    hollow = [line for line in ax_bias.get_lines() if line.get_linestyle() == "None" and len(line.get_xdata())
              and line.get_markerfacecolor() == "none"]
    assert [list(line.get_xdata()) for line in hollow] == [[16, 32], [16, 32]]
    assert [to_rgba(line.get_color()) for line in hollow] == [to_rgba("C0"), to_rgba("C1")]
    arrows = [a for a in ax_bias.texts if getattr(a, "arrow_patch", None) is not None]
    assert [to_rgba(a.arrow_patch.get_edgecolor()) for a in arrows] == [to_rgba(c) for c in ("C0",) * 2 + ("C1",) * 2]


def test_the_hollow_bounds_of_eleven_series_take_their_series_colour(tmp_path, figures):
    """Eleven series are coloured by (d, σ): the unbiased series at d = 1 is C0 like the
    biased one, and so are its hollow upper bounds (caught: bounds coloured by the
    colour cycle, which gives the seventh series C6)."""
    series = [("biased", d) for d in range(1, 7)] + [("unbiased", d) for d in range(1, 6)]
    records = [{**_record("gradient", k), "loss": loss, "dim": d} for loss, d in series for k in KS]
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    ax = figures["estimator_gradient.png"].axes[1]
    hollow = [line for line in ax.get_lines() if line.get_linestyle() == "None" and len(line.get_xdata())
              and line.get_markerfacecolor() == "none"]
    handles, labels = ax.get_legend_handles_labels()
    assert len(hollow) == len(handles) == 11 and labels[6].startswith("unbiased, independent, d=1, ")
    assert [to_rgba(line.get_color()) for line in hollow] == [to_rgba(h.get_color()) for h in handles]
    assert to_rgba(hollow[6].get_color()) == to_rgba(hollow[0].get_color()) == to_rgba("C0")


# ----------------------------------------------------------------------------- training study


def test_the_error_figure_is_ticked_only_at_the_column_values(tmp_path, figures):
    """d = 4 and 64 on the log axis: the ticks are those two values, labelled as the config
    writes them, with no minor ticks between them (caught: the log axis's minor ticks at
    5, 6, ... 60 left on)."""
    _study_file(tmp_path / "t.h5", "equation.dim", [4.0, 64.0], [0.5, 0.2])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_error_vs_dim.png"]
    _draw(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [4.0, 64.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "64"]
    assert list(ax.xaxis.get_minorticklocs()) == []


def test_a_column_value_that_is_not_whole_is_labelled_with_every_digit(tmp_path, figures):
    """A learning rate of 0.123456789 is labelled as written, not rounded to 6 digits
    (``:g``), and a whole 2.0 as 2."""
    _study_file(tmp_path / "t.h5", "trainer.lr", [0.123456789, 2.0], [0.5, 0.2])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.123456789", "2"]


@pytest.mark.parametrize("groups, switch, title", [
    (1, True, "Training study: loss curves\n(first seed; dashed: switch to the unbiased loss)"),
    (2, True, "Training study: loss curves (first seed; dashed: switch to the unbiased loss)"),
    (1, False, "Training study: loss curves\n(first seed)"),
])
def test_the_loss_curve_title_breaks_its_line_only_over_one_panel(tmp_path, figures, groups, switch, title):
    """One 6-inch panel is narrower than the title: two lines; two panels (12 inches) hold
    it on one (caught: the break kept for two panels). The dashed switch is explained only
    where a curve switches (it was named under curves without one)."""
    loss = np.geomspace(10.0, 1.0, 20)
    mix = (np.arange(20) >= 10).astype(float) if switch else 0 * loss
    columns = [4.0, 8.0][:groups]
    _training_file(tmp_path / "t.h5", [("a", c, 0.1, loss, mix) for c in columns],
                   [("a", c, 0.1, 0.0) for c in columns])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_loss_curves.png"]
    assert len(fig.axes) == groups
    assert tuple(fig.get_size_inches()) == pytest.approx((6.0 * groups, 4.4))
    assert fig.get_suptitle() == title


def test_the_average_window_is_the_whole_number_of_fiftieths_not_the_nearest(tmp_path, figures):
    """149 steps: 149 // 50 = 2 steps per average (rounding would give 3), the first average
    drawn at step 2."""
    loss = np.arange(1.0, 150.0)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    (curve,) = ax.get_lines()
    assert list(curve.get_xdata()) == list(range(2, 150))
    np.testing.assert_allclose(curve.get_ydata(), loss[:-1] + 0.5, rtol=1e-12)
    assert ax.get_ylabel() == "training loss (moving average of 2 steps)"


def test_a_cell_file_without_a_final_error_is_drawn_as_the_studys_own(tmp_path, figures):
    """A cell file whose /final group has no rel_l2 has nothing to tell it from the study's
    cell: its curve is drawn and it is not called damaged (caught: the missing attribute
    read, a KeyError that named the file damaged)."""
    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    with h5py.File(tmp_path / "t.h5.cells" / "cell0.h5", "r+") as fh:
        del fh["final"].attrs["rel_l2"]
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_loss_curves.png"]
    (curve,) = fig.axes[0].get_lines()
    assert curve.get_label() == "a"
    np.testing.assert_allclose(curve.get_ydata(), loss, rtol=1e-12)
    assert fig.get_supxlabel() in (None, "")


def test_a_variants_errors_are_joined_across_the_columns(tmp_path, figures):
    """Each variant's mean errors are points joined by a line (``o-``), one line per variant
    (caught: points only)."""
    _study_file(tmp_path / "t.h5", "equation.dim", [4.0, 16.0, 64.0], [0.5, 0.2, 0.1])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert [c.get_label() for c in ax.containers] == ["sgd", "adam"]
    for container in ax.containers:
        line = container.lines[0]
        assert (line.get_linestyle(), line.get_marker()) == ("-", "o")
        assert list(line.get_ydata()) == pytest.approx([0.5, 0.2, 0.1])


def test_a_loss_curve_within_a_decade_is_ticked_at_even_steps_of_six_bins(tmp_path, figures):
    """210 to 290 (holding no 2, 3, ... × 10^k): the labelled ticks in view are the steps
    of 20 from 220 to 280, plain numbers, and no minor ticks (caught: four bins, which
    step by 25 and label only three)."""
    loss = np.geomspace(290.0, 210.0, 60)
    _training_file(tmp_path / "t.h5", [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    fig = figures["training_loss_curves.png"]
    _draw(fig)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    ticks = [(t.get_loc(), t.label1.get_text()) for t in ax.yaxis.get_major_ticks() if low <= t.get_loc() <= high]
    assert [loc for loc, _ in ticks] == pytest.approx([220.0, 240.0, 260.0, 280.0])
    assert [text for _, text in ticks] == ["220", "240", "260", "280"]
    assert list(ax.yaxis.get_minorticklocs()) == []


# ----------------------------------------------------------------------------- plot_file


def test_plot_file_takes_paths_as_text(tmp_path, figures):
    """The path and the output directory may be given as str: the figures are named as
    Paths in that directory (caught: the directory kept as text, ``str / str``)."""
    path = _records_file(tmp_path / "est.h5", [_record("loss", k) for k in KS])
    written = plot_file(str(path), str(tmp_path / "figs"))
    assert written == [tmp_path / "figs" / "estimator_loss.png"]
    assert list(figures) == ["estimator_loss.png"]


def test_a_long_read_error_is_quoted_to_its_first_120_characters(tmp_path, monkeypatch):
    """h5py's reason for refusing a file is quoted in one line, cut after 120 characters
    (caught: cut after 60, which lost the end of h5py's usual reason)."""
    from pinnlab import plots

    path = tmp_path / "r.h5"
    path.write_bytes(b"not a result")
    reason = "Unable to synchronously open file (file signature not found) " + "x" * 100

    def fail(*args, **kwargs):
        raise OSError(reason)

    monkeypatch.setattr(plots.h5py, "File", fail)
    with pytest.raises(NotAResult) as info:
        plot_file(path, tmp_path / "figs")
    assert str(info.value) == f"{str(path)!r} is not an HDF5 file ({reason[:120]})"


def test_a_variance_panel_over_one_to_two_decades_labels_minor_ticks(tmp_path, figures):
    """Variances 10/K for K = 4 … 128 (2.5 to 0.078, about 1.5 decades): besides the powers
    of 10 some of the 2, 3, … × 10^k are labelled (caught: matplotlib's default minor
    labels, none beyond one decade)."""
    ks = (4, 8, 16, 32, 64, 128)
    records = [{**_record("loss", k), "variance_se": 0.1 / k} for k in ks]
    study_plots.plot_estimator_study(_records_file(tmp_path / "est.h5", records), tmp_path)
    fig = figures["estimator_loss.png"]
    _draw(fig)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 1.0 < np.log10(high / low) < 2.0
    minor = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert minor, "no minor tick labelled"
