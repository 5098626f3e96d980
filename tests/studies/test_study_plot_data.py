"""The study figures draw the file's own numbers: every plotted point, error bar and
hollow bound is checked against the records (or the summary) it comes from, in K order
whatever the order of the records in the file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab.plots import studies

KS = (4, 8, 16, 32)
FILE_ORDER = (32, 4, 16, 8)
"""The order the records are written in: the figure sorts them by K."""

GRADIENT_BIAS2 = {4: (1.0, 0.1), 8: (0.5, 0.24), 16: (0.05, 0.1), 32: (-1.0, 0.1)}
"""K → (bias², SE): 2 SE above 0 at K = 4 and 8 (error bars), not at 16 (hollow at
bias² + 2 SE = 0.25) and far below 0 at 32 (hollow at 2 SE = 0.2)."""


def _record(quantity, k):
    record = {"quantity": quantity, "loss": "biased", "noise": "independent", "dim": 5, "sigma": 0.05,
              "samples": k, "samples_per_draw": k, "variance": 10.0 / k,
              "variance_se": 6.0 / k if k == 8 else 1.0 / k}  # at K = 8, 2 SE reaches below 0
    if quantity == "loss":  # 10 SE below 0 at every K
        record.update(bias=-3.0 / k, bias_se=0.3 / k, bias2=9.0 / k**2, bias2_se=1.8 / k**2)
    else:
        record["bias2"], record["bias2_se"] = GRADIENT_BIAS2[k]
        if k == 32:
            record["variance"] = 0.0  # one zero: the other variances still get a log axis
    record["mse"] = record["variance"] + record["bias2"] + 100.0  # (not what is drawn)
    return record


def _records_file(path, records, config="equation:\n  name: heat\n"):
    """An estimator study's file of ``records`` (one dataset per key, NaN where a record
    has none)."""
    with h5py.File(path, "w") as fh:
        fh.attrs["kind"] = "estimator_study"
        fh.attrs["config"] = config
        group = fh.create_group("records")
        for key in dict.fromkeys(k for r in records for k in r):
            values = [r.get(key, float("nan")) for r in records]
            group.create_dataset(key, data=[str(v) for v in values] if isinstance(values[0], str) else values)
    return path


def _estimator_file(path):
    _records_file(path, [_record(quantity, k) for k in FILE_ORDER for quantity in ("loss", "gradient")])


def _bars(container):
    """(x, y, lower error, upper error) of an errorbar container, per point."""
    x, y = (np.asarray(v, float) for v in container.lines[0].get_data())
    segments = container.lines[2][0].get_segments()
    lows = np.array([min(s[:, 1]) for s in segments])
    highs = np.array([max(s[:, 1]) for s in segments])
    return x, y, y - lows, highs - y


def _markers(ax, container):
    """The marker-only lines of ``ax`` besides the errorbar's own: (x, y, filled) each."""
    own = {id(container.lines[0]), *map(id, container.lines[1])}
    return [(list(line.get_xdata()), list(line.get_ydata()), line.get_markerfacecolor() != "none")
            for line in ax.lines if id(line) not in own and len(line.get_xdata())
            and line.get_linestyle() == "None"]


@pytest.fixture
def drawn(tmp_path, figures):
    _estimator_file(tmp_path / "est.h5")
    studies.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    return figures


def test_the_variance_panel_draws_each_variance_at_its_k_with_two_se_bars(drawn):
    ks = np.array(KS, float)
    ax = drawn["estimator_loss.png"].axes[0]
    (container,) = ax.containers
    x, y, low, high = _bars(container)
    assert list(x) == list(KS) and y == pytest.approx(10.0 / ks)
    se = np.where(ks == 8, 6.0, 1.0) / ks
    # the lower bar stops short of 0, which a log axis cannot show; the upper one is the
    # full 2 SE (at K = 8, 2 SE > the variance, it was cut with the lower one)
    assert low == pytest.approx(np.minimum(2 * se, 0.999 * 10.0 / ks))
    assert high == pytest.approx(2 * se)
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    gradient = drawn["estimator_gradient.png"].axes[0]
    assert list(gradient.containers[0].lines[0].get_ydata()) == pytest.approx([2.5, 1.25, 0.625, 0.0])
    assert gradient.get_yscale() == "log"


def test_the_loss_bias_panel_draws_the_magnitude_with_two_se_bars_filled_where_significant(drawn):
    ks = np.array(KS, float)
    ax = drawn["estimator_loss.png"].axes[1]
    (container,) = ax.containers
    x, y, low, high = _bars(container)
    assert list(x) == list(KS) and y == pytest.approx(3.0 / ks)  # |bias| of a negative bias
    assert low == pytest.approx(0.6 / ks) and high == pytest.approx(0.6 / ks)
    # more than 2 SE below 0 at every K: every point filled
    (filled,) = [m for m in _markers(ax, container) if m[2]]
    assert filled[0] == list(KS) and filled[1] == pytest.approx(list(3.0 / ks))
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_the_gradient_bias_panel_draws_significant_bias2_with_bars_and_the_rest_at_their_bound(drawn):
    ax = drawn["estimator_gradient.png"].axes[1]
    (container,) = ax.containers
    x, y, low, high = _bars(container)
    assert list(x) == [4, 8] and y == pytest.approx([1.0, 0.5])
    assert low == pytest.approx([0.2, 0.48]) and high == pytest.approx([0.2, 0.48])
    (hollow,) = [m for m in _markers(ax, container) if not m[2]]
    assert hollow[0] == [16, 32] and hollow[1] == pytest.approx([0.25, 0.2])
    assert ax.get_yscale() == "log"


# ----------------------------------------------------------------------------- training studies


def _training_file(path, cells, summary, columns="equation.dim"):
    """A training-study file with its cell files beside it: ``cells`` are (variant,
    column value, rel_l2, loss trace, mix trace) per cell in grid order, ``summary`` the
    (variant, column value, mean, std) rows."""
    cell_dir = path.parent / (path.name + ".cells")
    cell_dir.mkdir()
    for i, (_, _, rel_l2, loss, mix) in enumerate(cells):
        with h5py.File(cell_dir / f"cell{i}.h5", "w") as fh:
            fh["trace/loss"], fh["trace/mix"] = np.asarray(loss, float), np.asarray(mix, float)
            fh.create_group("final").attrs["rel_l2"] = rel_l2
    with h5py.File(path, "w") as fh:
        fh.attrs.update(kind="training_study", columns=columns, cell_dir=str(cell_dir))
        group = fh.create_group("summary")
        for key, values in zip(("variant", "column", "rel_l2_mean", "rel_l2_std"), zip(*summary)):
            group[key] = list(values)
        group = fh.create_group("cells")
        group["variant"], group["key"] = [c[0] for c in cells], [f"cell{i}" for i in range(len(cells))]
        group[columns], group["rel_l2"] = [c[1] for c in cells], [c[2] for c in cells]


def _errors(ax):
    """variant → (x, y, lower error, upper error) of the error figure."""
    return {c.get_label(): _bars(c) for c in ax.containers}


def test_the_error_figure_draws_each_mean_with_its_std(tmp_path, figures):
    path = tmp_path / "t.h5"
    flat = np.ones(10)
    _training_file(path, [("a", 4.0, 0.1, flat, 0 * flat), ("a", 8.0, 0.3, flat, 0 * flat)],
                   [("a", 4.0, 0.1, 0.02), ("a", 8.0, 0.3, 0.05)])
    studies.plot_training_study(path, tmp_path)
    x, y, low, high = _errors(figures["training_error_vs_dim.png"].axes[0])["a"]
    assert list(x) == [4.0, 8.0] and y == pytest.approx([0.1, 0.3])
    assert low == pytest.approx([0.02, 0.05]) and high == pytest.approx([0.02, 0.05])


def test_a_column_starting_at_zero_gets_evenly_spaced_places_on_a_linear_axis(tmp_path, figures):
    """0 has no place on a log axis: columns 0, 1, 2 (a seed, a switch step) are drawn
    at evenly spaced places, as text columns are."""
    path = tmp_path / "t.h5"
    flat = np.ones(10)
    values = [0.0, 1.0, 2.0]
    _training_file(path, [("a", v, 0.1, flat, 0 * flat) for v in values], [("a", v, 0.1, 0.0) for v in values],
                   columns="trainer.seed")
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    assert ax.get_xscale() == "linear"
    assert list(_errors(ax)["a"][0]) == [0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]


def test_the_loss_curve_is_the_first_seeds_moving_average_at_the_last_step_it_averages(tmp_path, figures):
    """200 steps: a window of 200 // 50 = 4 steps, the average of steps i + 1 … i + 4 drawn
    at step i + 4; the second seed of the same variant and column is not drawn, and the
    switch is marked just before the first step whose mix is 1 (after step 50)."""
    path = tmp_path / "t.h5"
    first = np.arange(1.0, 201.0) ** 2
    mix = (np.arange(200) >= 50).astype(float)  # step 51 is the first unbiased one
    _training_file(path, [("a", 4.0, 0.1, first, mix), ("a", 4.0, 0.2, first + 1000.0, 0 * mix)],
                   [("a", 4.0, 0.15, 0.05)])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    (curve,) = [line for line in ax.lines if line.get_label() == "a"]
    assert list(curve.get_xdata()) == list(range(4, 201))
    expected = [first[i:i + 4].mean() for i in range(197)]
    assert curve.get_ydata() == pytest.approx(expected)
    (switch,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert list(switch.get_xdata()) == [50.5, 50.5]


def test_a_run_unbiased_from_its_first_step_has_no_switch_mark(tmp_path, figures):
    path = tmp_path / "t.h5"
    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(path, [("a", 4.0, 0.1, loss, np.ones(20))], [("a", 4.0, 0.1, 0.0)])
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    assert [line.get_label() for line in ax.lines] == ["a"]


def test_a_cell_file_replaced_since_the_study_is_not_drawn(tmp_path, figures):
    """A rerun of another config wrote another cell at the same place: its final error is
    not the one the study recorded, so its curve is not this study's."""
    path = tmp_path / "t.h5"
    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(path, [("a", 4.0, 0.1, loss, 0 * loss), ("b", 4.0, 0.2, loss, 0 * loss)],
                   [("a", 4.0, 0.1, 0.0), ("b", 4.0, 0.2, 0.0)])
    with h5py.File(str(path) + ".cells/cell1.h5", "r+") as fh:
        fh["final"].attrs["rel_l2"] = 0.25
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_loss_curves.png"].axes[0]
    assert [line.get_label() for line in ax.lines] == ["a"]


@pytest.mark.parametrize("steps, ylabel", [(200, "training loss (moving average of 4 steps)"),
                                           (60, "training loss")])
def test_the_loss_axis_names_the_average_it_draws(tmp_path, figures, steps, ylabel):
    """The axis said "moving average" also for runs under 100 steps, where the window is one
    step and each step's loss is drawn as it is; now it names the window, or none."""
    path = tmp_path / "t.h5"
    loss = np.arange(1.0, steps + 1.0)
    _training_file(path, [("a", 4.0, 0.1, loss, 0 * loss)], [("a", 4.0, 0.1, 0.0)])
    studies.plot_training_study(path, tmp_path)
    assert figures["training_loss_curves.png"].axes[0].get_ylabel() == ylabel


def test_coinciding_variants_stay_visible_the_first_drawn_widest(tmp_path, figures):
    """Two variants with the same loss curve (the biased and the hybrid loss before its
    switch, one seed): the second was drawn over the first, which vanished; now the first
    is the widest line (2.5), the last the thinnest (1.0), so the first shows around it."""
    path = tmp_path / "t.h5"
    loss = np.arange(1.0, 201.0)
    _training_file(path, [("biased", 4.0, 0.1, loss, 0 * loss), ("hybrid", 4.0, 0.1, loss, 0 * loss)],
                   [("biased", 4.0, 0.1, 0.0), ("hybrid", 4.0, 0.1, 0.0)])
    studies.plot_training_study(path, tmp_path)
    lines = {line.get_label(): line for line in figures["training_loss_curves.png"].axes[0].lines}
    assert (lines["biased"].get_linewidth(), lines["hybrid"].get_linewidth()) == (2.5, 1.0)
    np.testing.assert_array_equal(lines["biased"].get_ydata(), lines["hybrid"].get_ydata())


@pytest.mark.parametrize("columns, values, logarithmic", [("equation.dim", [4.0, 16.0], True),
                                                          ("loss.kind", ["a", "b"], False)])
def test_variants_with_equal_errors_are_drawn_side_by_side(tmp_path, figures, columns, values, logarithmic):
    """Two variants with the same mean and std at every column were drawn on top of each
    other (one vanished); now each sits beside the column's value, symmetrically (in log
    units on a log axis), together within 30 % of the gap between columns, and the ticks
    stay at the values."""
    path = tmp_path / "t.h5"
    flat = np.ones(10)
    _training_file(path, [(v, c, 0.1, flat, 0 * flat) for v in ("p", "q") for c in values],
                   [(v, c, 0.1, 0.02) for v in ("p", "q") for c in values], columns=columns)
    studies.plot_training_study(path, tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    bars = _errors(ax)
    places = [4.0, 16.0] if logarithmic else [0.0, 1.0]
    scale = np.log if logarithmic else np.asarray
    gap = scale(places[1]) - scale(places[0])
    left, right = scale(np.asarray(bars["p"][0], float)), scale(np.asarray(bars["q"][0], float))
    centre = scale(np.asarray(places))
    np.testing.assert_allclose(left - centre, centre - right, atol=1e-12)
    assert np.all(right - left > 0.05 * gap) and np.all(right - left <= 0.3 * gap + 1e-12)
    for name in ("p", "q"):
        assert bars[name][1] == pytest.approx([0.1, 0.1]) and bars[name][2] == pytest.approx([0.02, 0.02])
    assert list(ax.get_xticks()) == places
    assert ax.get_xlabel() == f"{columns} (variants side by side)"


def test_many_variants_side_by_side_stay_within_30_percent_of_the_gap(tmp_path, figures):
    """Seven variants at d = 4 and 16: seven distinct places per column, evenly spaced in
    log units, spanning 30 % of the log gap (so they never reach the next column)."""
    path = tmp_path / "t.h5"
    flat = np.ones(10)
    names = [f"v{i}" for i in range(7)]
    _training_file(path, [(v, c, 0.1, flat, 0 * flat) for v in names for c in (4.0, 16.0)],
                   [(v, c, 0.1, 0.0) for v in names for c in (4.0, 16.0)])
    studies.plot_training_study(path, tmp_path)
    bars = _errors(figures["training_error_vs_dim.png"].axes[0])
    for column, value in enumerate((4.0, 16.0)):
        logs = np.log([bars[v][0][column] for v in names])
        np.testing.assert_allclose(np.diff(logs), 0.05 * np.log(4.0), rtol=1e-9)
        assert logs.mean() == pytest.approx(np.log(value))


def test_each_upper_bound_has_an_arrow_down_inside_the_axis(tmp_path, figures, monkeypatch):
    """A hollow marker is an upper bound: each gets the usual arrow pointing down from it,
    0.3 decades long, and the y axis reaches the arrow tips (none is cut off; here the
    tips, 0.125 and 0.1, are the lowest things drawn)."""
    monkeypatch.setitem(GRADIENT_BIAS2, 8, (0.5, 0.05))  # (its bar no longer reaches below the tips)
    _estimator_file(tmp_path / "est.h5")
    studies.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    fig = figures["estimator_gradient.png"]
    ax = fig.axes[1]
    arrows = [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None]
    tails = sorted(a.xyann for a in arrows)
    assert [x for x, _ in tails] == [16, 32] and [y for _, y in tails] == pytest.approx([0.25, 0.2])
    for arrow in arrows:
        assert arrow.xy[0] == arrow.xyann[0] and arrow.xy[1] == pytest.approx(arrow.xyann[1] / 10 ** 0.3)
    fig.canvas.draw()  # (autoscaling)
    assert ax.get_ylim()[0] <= min(a.xy[1] for a in arrows)
    assert ax.get_ylabel().endswith("hollow ↓: upper bound)")
