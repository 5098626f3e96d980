"""Loss curves of runs too short for a line, and the hybrid switch, in the solve and the
training-study figures.

A one-step solve, or a study cell stopped non-finite after its first step, drew a single
point as a line without marker: a legend entry with nothing drawn. The training study's
figure also marked the switch to the unbiased loss one step before the solve's figure did.
"""

from __future__ import annotations

import h5py
import numpy as np

from pinnlab.plots import solve as solve_plots
from pinnlab.plots import studies as study_plots


def _solve_file(path, loss, mix=None):
    """What ``plot_curves`` reads of a solve result file."""
    loss = np.asarray(loss, dtype=float)
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = "equation: {name: demo, dim: 5}\n"
        fh.attrs["equation"], fh.attrs["dim"], fh.attrs["loss"] = "demo", 5, "hybrid"
        fh["trace/loss"] = loss
        fh["trace/mix"] = np.zeros(len(loss)) if mix is None else np.asarray(mix, dtype=float)
        fh["history/step"] = [len(loss)]
        fh["history/rel_l2"], fh["history/rel_l1"] = [0.5], [0.4]
        fh.create_group("final").attrs.update({"rel_l2": 0.5, "rel_l1": 0.4, "max_err": 1.0})
    return path


def _study_file(path, traces):
    """A training study with one cell per variant, ``traces``: variant -> (loss, mix)."""
    cell_dir = path.parent / "cells"
    cell_dir.mkdir()
    for i, (loss, mix) in enumerate(traces.values()):
        with h5py.File(cell_dir / f"cell{i}.h5", "w") as fh:
            fh["trace/loss"], fh["trace/mix"] = np.asarray(loss, dtype=float), np.asarray(mix, dtype=float)
    n = len(traces)
    with h5py.File(path, "w") as fh:
        fh.attrs.update(kind="training_study", columns="", cell_dir=str(cell_dir))
        summary = fh.create_group("summary")
        summary["variant"], summary["column"] = list(traces), [""] * n
        summary["rel_l2_mean"], summary["rel_l2_std"] = [0.5] * n, [0.0] * n
        cells = fh.create_group("cells")
        cells["variant"], cells["key"] = list(traces), [f"cell{i}" for i in range(n)]
    return path


def _plot_curves(path, outdir):
    with h5py.File(path, "r") as fh:
        solve_plots.plot_curves(fh, outdir)


def _marked(line) -> list[int]:
    """Indices of the points of ``line`` drawn with a marker."""
    if line.get_marker() in (None, "", "None", " "):
        return []
    every = line.get_markevery()
    return list(range(len(line.get_xdata()))) if every is None else list(every)


def _curves(ax) -> dict:
    return {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}


def test_a_one_step_solve_draws_its_loss_as_markers(tmp_path, figures):
    _plot_curves(_solve_file(tmp_path / "one.h5", [464.3]), tmp_path)
    curves = _curves(figures["curves.png"].axes[0])
    assert set(curves) == {"loss per step"}  # (no "moving average (1 steps)": the same curve again)
    for line in curves.values():
        assert list(line.get_xdata()) == [1] and np.isfinite(line.get_ydata()).all()
        assert _marked(line) == [0]


def test_only_points_a_line_cannot_join_get_a_marker(tmp_path, figures):
    """A long curve stays a plain line; a finite point between non-finite ones (or,
    on the log axis, between losses of 0) is marked, and only it."""
    _plot_curves(_solve_file(tmp_path / "long.h5", np.geomspace(1, 0.1, 40)), tmp_path)
    assert all(_marked(line) == [] for line in _curves(figures["curves.png"].axes[0]).values())
    loss = [np.nan, 3.0, np.nan, 2.0, 1.0, np.inf, 0.0, 0.5, 0.0]
    _plot_curves(_solve_file(tmp_path / "gaps.h5", loss), tmp_path)
    assert _marked(_curves(figures["curves.png"].axes[0])["|loss| per step"]) == [1, 7]  # a loss of 0: |·|


def test_a_cell_stopped_after_one_step_is_drawn_in_the_loss_curves(tmp_path, figures):
    path = _study_file(tmp_path / "t.h5", {"ok": (np.geomspace(400, 200, 20), np.zeros(20)),
                                           "diverge": ([464.3], [0.0])})
    study_plots.plot_training_study(path, tmp_path)
    curves = _curves(figures["training_loss_curves.png"].axes[0])
    assert list(curves["diverge"].get_xdata()) == [1] and _marked(curves["diverge"]) == [0]
    assert _marked(curves["ok"]) == []


def test_both_figures_mark_the_switch_before_the_first_unbiased_step(tmp_path, figures):
    """mix[i] is step i + 1's: with the mix reaching 1 at index 3 the first unbiased step is
    step 4, where the curves draw that step's loss, and the switch is marked between steps 3
    and 4, "after step 3" as loss.switch_step = 3 and /final's switch_step count it (the
    label said "step 4" where the config said 3), in the solve and the training-study
    figure."""
    mix = [0.0, 0.3, 0.7, 1.0, 1.0, 1.0]
    loss = [5.0, 4.0, 3.0, 2.0, 1.5, 1.0]
    _plot_curves(_solve_file(tmp_path / "hybrid.h5", loss, mix), tmp_path)
    study_plots.plot_training_study(_study_file(tmp_path / "t.h5", {"hybrid": (loss, mix)}), tmp_path)
    for name in ("curves.png", "training_loss_curves.png"):
        ax = figures[name].axes[0]
        switches = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert [list(line.get_xdata()) for line in switches] == [[3.5, 3.5]], name
        curve = next(line for line in ax.lines if line.get_linestyle() == "-")
        assert curve.get_xdata()[3] == 4 and curve.get_ydata()[3] == loss[3], name
    # the solve figure names the switch in each panel's legend, not in a text that a
    # legend in the upper corner covered
    for ax in figures["curves.png"].axes:
        assert "switch to unbiased after step 3" in [t.get_text() for t in ax.get_legend().get_texts()]
        assert not ax.texts


def test_the_loss_curves_title_fits_a_one_panel_figure(tmp_path, figures):
    """With one column group the figure is 6 inches wide and its one-line suptitle was cut
    off at both sides ("raining study … unbiased loss")."""
    path = _study_file(tmp_path / "t.h5", {"ok": (np.geomspace(400, 200, 20), np.zeros(20))})
    study_plots.plot_training_study(path, tmp_path)
    fig = figures["training_loss_curves.png"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # constrained layout places the title
    box, frame = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1, (box, frame)


def test_a_damaged_cell_file_is_left_out_and_named_not_the_whole_plot_failed(tmp_path, figures):
    """A truncated cell file failed the study's plot as "cannot plot 'STUDY.h5': the file
    is damaged", the study file intact, and not even the error figure (which reads no
    cell file) was written."""
    path = _study_file(tmp_path / "t.h5", {"ok": (np.geomspace(400, 200, 20), np.zeros(20)),
                                           "cut": (np.geomspace(300, 100, 20), np.zeros(20))})
    cell = tmp_path / "cells" / "cell1.h5"
    cell.write_bytes(cell.read_bytes()[: cell.stat().st_size // 2])
    study_plots.plot_training_study(path, tmp_path)
    fig = figures["training_loss_curves.png"]
    assert set(_curves(fig.axes[0])) == {"ok"}
    assert fig.get_supxlabel() == "not drawn: damaged cell file cell1.h5"
    assert "training_error_vs_dim.png" in figures
