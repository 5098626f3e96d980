"""The solve figures draw the file's own numbers: each line's data is the stored array
(or its closed-form transform), on the axes and with the ranges the file gives.

The existing figure tests check labels, titles and markers; these check the data behind
them, so a plot that draws the wrong array, averages with the wrong kernel or swaps the
slice's axes is caught."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from pinnlab.plots import solve as solve_plots


def _solve_file(path, *, loss, mix=None, config="equation: {name: demo, dim: 6}\n", grid_a=None, grid_b=None,
                radial=None, terms=None):
    """What the solve figures read; errors and slice values chosen so that no two arrays
    coincide (rel_l2 ≠ rel_l1, u_pred ≠ u_true)."""
    loss = np.asarray(loss, dtype=float)
    a = np.linspace(-1.0, 1.0, 4) if grid_a is None else np.asarray(grid_a, dtype=float)
    b = np.linspace(-1.0, 1.0, 4) if grid_b is None else np.asarray(grid_b, dtype=float)
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = config
        fh.attrs["equation"], fh.attrs["dim"], fh.attrs["loss"] = "demo", 6, "biased"
        fh["trace/loss"] = loss
        fh["trace/mix"] = np.zeros(len(loss)) if mix is None else np.asarray(mix, dtype=float)
        fh["history/step"] = [10, 20, 30]
        fh["history/rel_l2"], fh["history/rel_l1"] = [0.5, 0.25, 0.125], [0.4, 0.3, 0.2]
        fh.create_group("final").attrs.update({"rel_l2": 0.125, "rel_l1": 0.2, "max_err": 0.3})
        sl = fh.create_group("slices/main")
        sl.attrs["labels"] = np.asarray(("x₁", "t"), dtype=h5py.string_dtype())
        sl["grid_a"], sl["grid_b"] = a, b
        pred = np.arange(len(a) * len(b), dtype=float).reshape(len(a), len(b))
        sl["u_pred"], sl["u_true"] = pred - 2.0, pred + 5.0
        sl["abs_err"] = np.full((len(a), len(b)), 7.0)
        sl["abs_err"][0, 0] = 3.0
        if radial is not None:
            for key, values in radial.items():
                fh[f"radial/{key}"] = values
        if terms is not None:
            for key, values in terms.items():
                fh[f"history/terms/{key}"] = values
    return path


def _draw(plot, path, outdir):
    with h5py.File(path, "r") as fh:
        plot(fh, outdir)


def test_the_moving_average_is_the_mean_of_the_last_window_steps(tmp_path, figures):
    """200 steps: a window of 200 // 50 = 4 steps, the first 3 points undefined, then the
    plain mean of each 4 consecutive losses (the figure's label names the window)."""
    loss = 1.0 / np.arange(1, 201)
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss), tmp_path)
    per_step, average = figures["curves.png"].axes[0].get_lines()[:2]
    assert average.get_label() == "moving average (4 steps)"
    expected = np.r_[[np.nan] * 3, [loss[i - 3:i + 1].mean() for i in range(3, 200)]]
    np.testing.assert_allclose(average.get_ydata(), expected, rtol=1e-12)
    np.testing.assert_array_equal(average.get_xdata(), np.arange(1, 201))


def test_the_error_panel_draws_the_history_rows(tmp_path, figures):
    """Relative L2 and L1 at the history steps, each its own stored array."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.ones(30)), tmp_path)
    lines = {line.get_label(): line for line in figures["curves.png"].axes[1].get_lines()}
    np.testing.assert_array_equal(lines["relative L2"].get_ydata(), [0.5, 0.25, 0.125])
    np.testing.assert_array_equal(lines["relative L1"].get_ydata(), [0.4, 0.3, 0.2])
    for line in lines.values():
        np.testing.assert_array_equal(line.get_xdata(), [10, 20, 30])
    assert figures["curves.png"].axes[1].get_yscale() == "log"


def test_a_panel_with_one_finite_curve_is_not_called_empty(tmp_path, figures):
    """The error panel with relative L2 undefined (NaN) at every row but relative L1
    finite still draws a curve: no "no finite values" note (only a panel where none of
    its arrays has a finite value gets one)."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh["history/rel_l2"][...] = np.nan
    _draw(solve_plots.plot_curves, path, tmp_path)
    assert [t.get_text() for t in figures["curves.png"].axes[1].texts] == []


def test_the_title_names_the_final_relative_l2_and_a_file_without_status_or_backend_is_ok(tmp_path, figures):
    """No ``status`` attribute: a run that ended ok (nothing appended); no
    ``trainer.backend`` in the config: pinnlab's trainer, titled by its loss kind."""
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=np.ones(30)), tmp_path)
    assert figures["curves.png"].get_suptitle() == "demo, d = 6, loss = biased, final rel. L2 = 1.25e-01"


def test_a_loss_of_exactly_zero_is_counted_even_without_negative_steps(tmp_path, figures):
    """A loss of 0 cannot be drawn on the log axis: the title says so even when no step
    was negative (100 steps: a 2-step moving average, positive everywhere)."""
    loss = np.linspace(1.0, 0.5, 100)
    loss[7] = 0.0
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss), tmp_path)
    ax = figures["curves.png"].axes[0]
    assert ax.get_title() == "training loss (absolute values; 1 step with loss 0 not drawn)"
    assert ax.get_ylabel() == "|training loss|"


def test_the_switch_is_where_the_mix_first_reaches_one_and_absent_when_unbiased_from_the_start(
        tmp_path, figures):
    """A mix that ramps (0.25, 0.5, ...) switches where it reaches 1, not where it first
    leaves 0; an unbiased run from step 1 has no switch to mark."""
    loss = np.linspace(2.0, 1.0, 8)
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss, mix=[0, 0.25, 0.5, 0.75, 1, 1, 1, 1]),
          tmp_path)
    switches = [line for line in figures["curves.png"].axes[0].lines if line.get_linestyle() == "--"]
    assert [list(line.get_xdata()) for line in switches] == [[4.5, 4.5]]  # after step 4, before step 5
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "u.h5", loss=loss, mix=np.ones(8)), tmp_path)
    for ax in figures["curves.png"].axes:
        assert not [line for line in ax.lines if line.get_linestyle() == "--"]


def test_a_loss_of_zero_between_positive_ones_on_the_log_axis_isolates_its_neighbours(tmp_path, figures):
    """On the log axis 0 is not drawable: the positive point between two zeros gets a
    marker, the zeros do not."""
    loss = [1.0, 0.0, 0.5, 0.0, 0.25, 0.2]
    _draw(solve_plots.plot_curves, _solve_file(tmp_path / "r.h5", loss=loss), tmp_path)
    per_step = figures["curves.png"].axes[0].get_lines()[0]
    assert list(per_step.get_markevery()) == [0, 2]


def test_the_slice_is_drawn_on_its_own_grid_with_shared_colour_limits(tmp_path, figures):
    """A 3 × 5 slice over (x₁ ∈ [0, 1], t ∈ [-2, 3]): each image has the stored values,
    t across and x₁ upwards, each pixel centred on its grid point (the extent half a
    spacing, 0.625 in t and 0.25 in x₁, beyond the grid's ends); prediction and exact
    share the limits of both, the error panel runs from 0 to its largest value."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), grid_a=np.linspace(0, 1, 3),
                       grid_b=np.linspace(-2, 3, 5))
    _draw(solve_plots.plot_slice, path, tmp_path)
    axes = figures["slice.png"].axes[:3]
    images = [ax.get_images()[0] for ax in axes]
    with h5py.File(path) as fh:
        stored = [fh[f"slices/main/{k}"][...] for k in ("u_pred", "u_true", "abs_err")]
    for image, values in zip(images, stored):
        np.testing.assert_array_equal(image.get_array(), values)
        assert tuple(image.get_extent()) == (-2.625, 3.625, -0.25, 1.25) and image.origin == "lower"
    assert solve_plots._pixel_edges(np.array([0.25])) == (-0.25, 0.75)  # one point: a pixel of width 1
    assert images[0].get_clim() == images[1].get_clim() == (-2.0, 19.0)  # min of pred, max of true
    assert images[2].get_clim() == (0.0, 7.0)
    for ax in axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("t", "x₁")


def test_the_radial_profile_leaves_out_empty_shells(tmp_path, figures):
    """Shells without test points (count 0, NaN errors) are not drawn: each line holds the
    stored errors at the populated radii only, mean |u − u*| and the shell's relative L2
    each from its own array."""
    radial = {"r": [0.1, 0.3, 0.5, 0.7], "count": [4, 0, 2, 5],
              "abs_err": [1e-2, np.nan, 2e-2, 3e-2], "rel_err": [0.1, np.nan, 0.2, 0.4]}
    _draw(solve_plots.plot_radial, _solve_file(tmp_path / "r.h5", loss=np.ones(30), radial=radial), tmp_path)
    lines = {line.get_label(): line for line in figures["radial.png"].axes[0].get_lines()}
    for label, values in (("mean |u − u*|", [1e-2, 2e-2, 3e-2]), ("relative L2 in the shell", [0.1, 0.2, 0.4])):
        np.testing.assert_array_equal(lines[label].get_xdata(), [0.1, 0.5, 0.7])
        np.testing.assert_array_equal(lines[label].get_ydata(), values)


def test_a_one_coordinate_result_draws_u_and_its_error_along_x_sorted(tmp_path, figures):
    """Without a slice, a result whose /eval/x has one column gets line.png: u* and u
    against x in increasing x (the test points are drawn in random order), and |u − u*|
    there; a file with a slice, or with points of two columns, gets none."""
    path = _solve_file(tmp_path / "line.h5", loss=np.ones(30))
    x = np.array([[0.5], [-0.25], [0.75], [-1.0]])
    pred, true = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.25, 3.5, 4.125])
    with h5py.File(path, "a") as fh:
        del fh["slices"]
        for key, values in (("x", x), ("u_pred", pred), ("u_true", true), ("abs_err", np.abs(pred - true))):
            if f"eval/{key}" in fh:
                del fh[f"eval/{key}"]
            fh[f"eval/{key}"] = values
    _draw(solve_plots.plot_line, path, tmp_path)
    exact, predicted = figures["line.png"].axes[0].get_lines()[:2]
    order = [3, 1, 0, 2]
    for line, values in ((exact, true), (predicted, pred)):
        np.testing.assert_array_equal(line.get_xdata(), [-1.0, -0.25, 0.5, 0.75])
        np.testing.assert_array_equal(line.get_ydata(), values[order])
    np.testing.assert_array_equal(figures["line.png"].axes[1].get_lines()[0].get_ydata(),
                                  np.abs(pred - true)[order])
    with h5py.File(path, "a") as fh:
        del fh["eval/x"]
        fh["eval/x"] = np.concatenate([x, x], axis=1)
    with h5py.File(path, "r") as fh:
        assert solve_plots.plot_line(fh, tmp_path) is None
    with h5py.File(_solve_file(tmp_path / "slice.h5", loss=np.ones(30)), "a") as fh:
        fh["eval/x"], fh["eval/u_pred"], fh["eval/u_true"], fh["eval/abs_err"] = x, pred, true, np.abs(pred - true)
        assert "slices/main" in fh and solve_plots.plot_line(fh, tmp_path) is None


def _terms(weight_residual):
    return {"loss_residual": [0.5, 0.25, 0.125], "loss_boundary": [0.1, 0.2, 0.3],
            "weight_residual": weight_residual, "weight_boundary": [1.0, 1.0, 1.0]}


def test_term_weights_are_on_a_log_axis_only_when_all_are_positive_and_titled_by_the_weighting(
        tmp_path, figures):
    """LRA-moved weights, all positive: log axis, title "(lra)"; a weight of 0 (a term
    switched off) is not drawable on a log axis, so the axis stays linear; no weighting in
    the config: "(fixed)"."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), terms=_terms([1.0, 2.0, 4.0]),
                       config="loss: {weighting: lra}\n")
    _draw(solve_plots.plot_terms, path, tmp_path)
    ax_weight = figures["terms.png"].axes[1]
    assert ax_weight.get_yscale() == "log" and ax_weight.get_title() == "weights (lra)"
    path = _solve_file(tmp_path / "z.h5", loss=np.ones(30), terms=_terms([1.0, 0.0, 0.0]))
    _draw(solve_plots.plot_terms, path, tmp_path)
    ax_weight = figures["terms.png"].axes[1]
    assert ax_weight.get_yscale() == "linear" and ax_weight.get_title() == "weights (fixed)"


def test_colours_are_distinct_for_any_number_of_lines():
    """The default cycle up to 10 lines, tab20 up to 20, viridis beyond: never two equal."""
    for n in (1, 10, 11, 20, 21, 40):
        colours = solve_plots._colors(n)
        assert len(colours) == n and len({to_rgba(c) for c in colours}) == n, n


def test_the_finite_range_ignores_non_finite_values():
    assert solve_plots._finite_range([np.nan, 3.0, -1.0], [[np.inf, 2.0]]) == (-1.0, 3.0)
    assert solve_plots._finite_range([np.nan, np.inf]) == (0.0, 1.0)


# ----------------------------------------------------------------------------- tune.png


def _tune_file(path, *, method="fg2u", phi, value=(3.0, 2.0, 1.0), truth=None):
    """A solve file with a /tune group of three outer steps (outer_step 0, 1, 2)."""
    _solve_file(path, loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        tune = fh.create_group("tune")
        tune.attrs.update({"method": method, "objective": "data"})
        tune.attrs.update({f"coefficient_rel_err/{k}": v for k, v in (truth or {}).items()})
        tune["outer_step"], tune["value"] = np.arange(3), np.asarray(value, dtype=float)
        for name, values in phi.items():
            tune[f"phi/{name}"] = np.asarray(values, dtype=float)
    return path


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_phi_and_the_objective_are_drawn_against_the_one_based_outer_step(tmp_path, figures):
    from pinnlab.plots import tune as tune_plots

    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]}, value=[3.0, np.nan, 1.0])
    tune_plots.plot_tune(path, tmp_path)
    ax_phi, ax_obj = figures["tune.png"].axes[:2]
    line = _lines(ax_phi)["weights.boundary"]
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(line.get_ydata(), [1.0, 2.0, 4.0])
    objective = _lines(ax_obj)["outer objective"]  # the non-finite value left out
    np.testing.assert_array_equal(objective.get_xdata(), [1, 3])
    np.testing.assert_array_equal(objective.get_ydata(), [3.0, 1.0])
    assert ax_phi.get_yscale() == "log" and ax_obj.get_yscale() == "log"


def test_phi_is_drawn_from_where_it_started_at_outer_step_zero(tmp_path, figures):
    """With /tune/initial (φ₀) each φ line starts at outer step 0 with φ₀, the collocation
    network's by its norm too; the objective, measured after each outer step, is not moved."""
    from pinnlab.plots import tune as tune_plots

    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0],
                                                "collocation_weight": [[0.0, 1.0], [3.0, 4.0], [6.0, 8.0]]})
    with h5py.File(path, "a") as fh:
        fh["tune/initial/weights.boundary"] = 1e-3
        fh["tune/initial/collocation_weight"] = [0.0, 2.0]
    tune_plots.plot_tune(path, tmp_path)
    ax_phi, ax_obj = figures["tune.png"].axes[:2]
    line = _lines(ax_phi)["weights.boundary"]
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
    np.testing.assert_array_equal(line.get_ydata(), [1e-3, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(_lines(ax_phi)["‖collocation net‖"].get_ydata(), [2.0, 1.0, 5.0, 10.0])
    np.testing.assert_array_equal(_lines(ax_obj)["outer objective"].get_xdata(), [1, 2, 3])


def test_a_search_draws_the_best_value_so_far_over_its_finite_trials(tmp_path, figures):
    """random search: a failed (NaN) trial is left out, and "best so far" is the running
    minimum of the others."""
    from pinnlab.plots import tune as tune_plots

    path = _tune_file(tmp_path / "t.h5", method="random", phi={"weights.boundary": [1.0, 2.0, 4.0]},
                      value=[2.0, np.nan, 5.0])
    tune_plots.plot_tune(path, tmp_path)
    ax_obj = figures["tune.png"].axes[1]
    best = _lines(ax_obj)["best so far"]
    np.testing.assert_array_equal(best.get_xdata(), [1, 3])
    np.testing.assert_array_equal(best.get_ydata(), [2.0, 2.0])
    assert ax_obj.get_xlabel() == "trial"


def test_exactly_max_lines_coordinates_are_all_drawn_without_a_note(tmp_path, figures):
    from pinnlab.plots import tune as tune_plots

    mu = np.arange(3 * tune_plots.MAX_LINES).reshape(3, tune_plots.MAX_LINES) / 10.0 + 0.1
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi={"coefficients.mu": mu}), tmp_path)
    ax_phi = figures["tune.png"].axes[0]
    assert ax_phi.get_title() == "tuned hyperparameters (fg2u)"
    assert len(_lines(ax_phi)) == tune_plots.MAX_LINES


def test_a_phi_with_a_negative_value_is_drawn_on_a_linear_axis(tmp_path, figures):
    """One negative coordinate of μ: a log axis would drop it, so the φ axis is linear."""
    from pinnlab.plots import tune as tune_plots

    phi = {"coefficients.mu": [[0.5, -0.1], [0.6, -0.2], [0.7, -0.3]], "weights.boundary": [1.0, 2.0, 4.0]}
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", phi=phi), tmp_path)
    assert figures["tune.png"].axes[0].get_yscale() == "linear"


def test_the_collocation_network_is_drawn_by_its_euclidean_norm(tmp_path, figures):
    """Layers of the collocation-weight network: one line, the norm over all its
    parameters at each outer step, sqrt(Σ w²) (not Σ w²)."""
    from pinnlab.plots import tune as tune_plots

    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]})
    with h5py.File(path, "a") as fh:
        fh["tune/phi/collocation_weight/0.weight"] = np.array([[[3.0, 0.0]], [[0.0, 6.0]], [[1.0, 2.0]]])
        fh["tune/phi/collocation_weight/0.bias"] = np.array([[4.0], [8.0], [2.0]])
    tune_plots.plot_tune(path, tmp_path)
    line = _lines(figures["tune.png"].axes[0])["‖collocation net‖"]
    np.testing.assert_allclose(line.get_ydata(), [5.0, 10.0, 3.0])


def test_the_objective_title_gives_the_final_relative_l2_and_the_coefficient_errors(tmp_path, figures):
    from pinnlab.plots import tune as tune_plots

    path = _tune_file(tmp_path / "t.h5", phi={"weights.boundary": [1.0, 2.0, 4.0]}, truth={"mu": 0.03})
    tune_plots.plot_tune(path, tmp_path)
    assert figures["tune.png"].axes[1].get_title() == "final solve rel. L2 = 1.25e-01\nmu: rel. error 3.00e-02"


# ----------------------------------------------------------------------------- pinnlab plot


def test_plot_prints_the_path_of_every_figure_it_wrote(tmp_path, capsys):
    """stdout of `pinnlab plot` is the list of figures written, one path a line, in the
    order they are drawn (curves, then the slice): what a script collects."""
    from pinnlab.cli import main

    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "solve"
    out = tmp_path / "figs"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out / "curves.png"), str(out / "slice.png")]


def test_the_slice_axes_have_at_most_five_ticks(tmp_path, figures):
    """On a [-1, 1]² slice matplotlib's default put nine ticks (−1.00, −0.75, …) on each
    axis, whose labels ran together on the 5-inch panels; now −1, −0.5, 0, 0.5, 1."""
    path = _solve_file(tmp_path / "r.h5", loss=np.ones(30), grid_a=np.linspace(-1, 1, 9),
                       grid_b=np.linspace(-1, 1, 9))
    _draw(solve_plots.plot_slice, path, tmp_path)
    for ax in figures["slice.png"].axes[:3]:
        for ticks, (low, high) in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), ax.get_ylim())):
            shown = [t for t in ticks if low - 1e-9 <= t <= high + 1e-9]
            assert shown == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
