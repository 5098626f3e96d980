"""``pinnlab plot`` on solve and tune results says what it draws: negative training losses,
the coordinates of a vector φ, the slice's other coordinates, a DeepXDE run's loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from pinnlab.cli import main
from pinnlab.equations import EQUATIONS, register
from pinnlab.plots import solve as solve_plots
from pinnlab.plots import tune as tune_plots

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_equation.py"


def _solve_file(path, *, loss=None, backend="pinnlab", dim=6, labels=("x₁", "x₂"), others=None, radial=False):
    """A minimal solve result file: what the solve figures read."""
    loss = np.linspace(1.0, 0.1, 40) if loss is None else np.asarray(loss, dtype=float)
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = f"equation: {{name: demo, dim: {dim}}}\ntrainer: {{backend: {backend}}}\n"
        fh.attrs["equation"], fh.attrs["dim"], fh.attrs["loss"] = "demo", dim, "unbiased"
        fh["trace/loss"], fh["trace/mix"] = loss, np.zeros(len(loss))
        fh["history/step"] = [len(loss) // 2, len(loss)]
        fh["history/rel_l2"], fh["history/rel_l1"] = [0.5, 0.2], [0.4, 0.1]
        fh.create_group("final").attrs.update({"rel_l2": 0.2, "rel_l1": 0.1, "max_err": 0.3})
        sl = fh.create_group("slices/main")
        sl.attrs["dims"] = [0, 1]
        sl.attrs["labels"] = np.asarray(labels, dtype=h5py.string_dtype())
        if others is not None:
            sl.attrs["others"] = others
        sl["grid_a"] = sl["grid_b"] = np.linspace(-1, 1, 4)
        sl["u_pred"] = sl["u_true"] = np.ones((4, 4))
        sl["abs_err"] = np.zeros((4, 4))
        if radial:
            for key in ("r", "abs_err", "rel_err", "count"):
                fh[f"radial/{key}"] = np.ones(3)
    return path


# ----------------------------------------------------------------------------- curves.png


def test_a_diverged_run_is_drawn_with_its_status_and_without_numpys_warnings(tmp_path, figures):
    """A DeepXDE run keeps its non-finite state: its plot printed three "All-NaN slice
    encountered" RuntimeWarnings with source paths, drew empty panels and named no
    status. Now the title says the status and each empty panel says why it is empty."""
    import warnings

    path = _solve_file(tmp_path / "nf.h5", loss=[2.0] + [np.nan] * 9, backend="deepxde", radial=True)
    with h5py.File(path, "a") as fh:
        fh.attrs["status"] = "nonfinite"
        fh["history/rel_l2"][...] = fh["history/rel_l1"][...] = np.nan
        fh["slices/main/u_pred"][...] = fh["slices/main/abs_err"][...] = np.nan
        fh["radial/abs_err"][...] = fh["radial/rel_err"][...] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_plots.plot_solve(path, tmp_path)

    def notes(ax):
        return [t.get_text() for t in ax.texts]

    curves, sl, radial = figures["curves.png"], figures["slice.png"], figures["radial.png"]
    assert curves.get_suptitle().endswith("(status nonfinite)")
    assert notes(curves.axes[0]) == [] and notes(curves.axes[1]) == ["no finite values"]
    assert [notes(ax) for ax in sl.axes[:3:2]] == [["no finite values"]] * 2 and notes(sl.axes[1]) == []
    assert notes(radial.axes[0]) == ["no finite values"]




def test_negative_training_losses_are_drawn_as_absolute_values_and_marked(tmp_path, figures):
    """An unbiased loss R̂R̂′ can be negative: a log axis dropped those steps silently."""
    loss = 0.5 * 0.95 ** np.arange(120)  # (120 steps: a 2-step moving average is drawn)
    loss[10::7] *= -1  # 16 negative steps
    loss[50] = 0.0
    with h5py.File(_solve_file(tmp_path / "r.h5", loss=loss)) as fh:
        solve_plots.plot_curves(fh, tmp_path)
    ax_loss = figures["curves.png"].axes[0]
    assert ax_loss.get_yscale() == "log"
    assert ax_loss.get_title() == "training loss (absolute values; 1 step with loss 0 not drawn)"
    per_step, average, marked = ax_loss.get_lines()
    np.testing.assert_array_equal(per_step.get_ydata(), np.abs(loss))
    assert np.nanmin(average.get_ydata()) >= 0
    negative = np.flatnonzero(loss < 0)
    np.testing.assert_array_equal(marked.get_xdata(), negative + 1)  # steps are 1-based
    np.testing.assert_array_equal(marked.get_ydata(), -loss[negative])
    assert marked.get_label() == "loss < 0 (16 steps), drawn as |loss|"
    assert per_step.get_label() == "|loss| per step"


def test_a_positive_training_loss_is_drawn_as_it_is(tmp_path, figures):
    loss = 0.5 * 0.95 ** np.arange(120)  # (and its 2-step moving average)
    with h5py.File(_solve_file(tmp_path / "r.h5", loss=loss)) as fh:
        solve_plots.plot_curves(fh, tmp_path)
    ax_loss = figures["curves.png"].axes[0]
    assert ax_loss.get_title() == "training loss" and ax_loss.get_ylabel() == "training loss"
    assert len(ax_loss.get_lines()) == 2
    np.testing.assert_array_equal(ax_loss.get_lines()[0].get_ydata(), loss)


# ----------------------------------------------------------------------------- titles


@pytest.mark.parametrize("backend", ["pinnlab", "deepxde"])
def test_a_deepxde_run_is_titled_by_its_backend_not_by_a_pinnlab_loss(tmp_path, figures, backend):
    path = _solve_file(tmp_path / "r.h5", backend=backend, radial=True)
    solve_plots.plot_solve(path, tmp_path)
    titles = [figures["curves.png"].get_suptitle(), figures["slice.png"].get_suptitle(),
              figures["radial.png"].axes[0].get_title()]
    for title in titles:
        if backend == "deepxde":
            assert "DeepXDE (autograd, MSE loss)" in title and "loss = " not in title, title
        else:
            assert "loss = unbiased" in title and "DeepXDE" not in title, title


@pytest.mark.parametrize(("others", "radial", "dim", "labels", "says"), [
    ("median", False, 6, ("x₁", "x₂"), ", the other 4 coordinates at the test-set median"),
    ("zero", True, 6, ("x₁", "x₂"), ", the other 4 coordinates at 0"),
    ("median", True, 6, ("x₁", "x₂"), ", the other 4 coordinates at the test-set median"),  # the record wins
    # files written before the attribute: 0 only on unit-ball problems (those with /radial)
    (None, False, 6, ("x₁", "x₂"), ", the other 4 coordinates at the test-set median"),
    (None, True, 6, ("x₁", "x₂"), ", the other 4 coordinates at 0"),
    (None, False, 3, ("x₁", "t"), ", the other 2 coordinates at the test-set median"),
    (None, False, 2, ("x₁", "t"), ", the other 1 coordinate at the test-set median"),
    (None, True, 2, ("x₁", "x₂"), ""),  # every coordinate is on the slice
    (None, False, 1, ("x₁", "t"), ""),
])
def test_the_slice_title_says_where_the_other_coordinates_are(tmp_path, figures, others, radial, dim, labels,
                                                              says):
    path = _solve_file(tmp_path / "r.h5", dim=dim, labels=labels, others=others, radial=radial)
    with h5py.File(path) as fh:
        solve_plots.plot_slice(fh, tmp_path)
    title = figures["slice.png"].get_suptitle()
    assert title.endswith(f"slice over ({labels[0]}, {labels[1]}){says}"), title


@pytest.fixture
def sine_poisson():
    """The README's custom equation (a declared unit-ball problem), and the same equation
    without the declaration (``sine_cube``: pinnlab knows nothing of its domain),
    registered for the duration of the test."""
    saved = dict(EQUATIONS)
    spec = importlib.util.spec_from_file_location("custom_equation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register(type("SineCube", (module.SinePoisson,), {"name": "sine_cube", "domain": None}))
    yield
    EQUATIONS.clear()
    EQUATIONS.update(saved)


@pytest.mark.parametrize(("equation", "others", "says"), [
    ("sine_cube", "median", "the other 2 coordinates at the test-set median"),  # the audit's case
    ("sine_poisson", "zero", "the other 2 coordinates at 0"),
    ("poisson_two_body", "zero", "the other 2 coordinates at 0"),
])
def test_a_solve_records_the_slice_rule_and_the_plot_says_it(tmp_path, figures, sine_poisson, equation, others,
                                                              says):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"equation: {{name: {equation}, dim: 4}}\nmodel: {{width: 8, depth: 2}}\n"
                   "estimator: {samples: 4, eval_samples: 8}\n"
                   "trainer: {steps: 4, eval_every: 4, test_points: 100, batch_size: 16}\n")
    out = tmp_path / "r.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert fh["slices/main"].attrs["others"] == others
        x = fh["eval/x"][...]
    if others == "median":  # the stored slice: x₃, x₄ at the test-set medians, not 0
        assert np.all(np.abs(np.median(x[:, 2:], axis=0)) > 0)
    solve_plots.plot_solve(out, tmp_path)
    assert figures["slice.png"].get_suptitle().endswith(says)


# ----------------------------------------------------------------------------- tune.png


def _tune_file(path, coordinates):
    _solve_file(path)
    with h5py.File(path, "a") as fh:
        tune = fh.create_group("tune")
        tune.attrs.update({"method": "fg2u", "objective": "data"})
        tune["outer_step"], tune["value"] = np.arange(3.0), [3.0, 2.0, 1.0]
        tune["phi/coefficients.mu"] = np.arange(3 * coordinates).reshape(3, coordinates) / 10.0
        tune["phi/weights.boundary"] = [1.0, 2.0, 3.0]
    return path


def test_a_vector_phi_gets_a_distinct_colour_per_coordinate_and_says_how_many_are_drawn(tmp_path, figures):
    """20 coordinates of μ: 12 drawn (said in the title), no two lines the same colour (the
    default cycle C0–C9 gave μ[10] the colour of μ[0])."""
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", 20), tmp_path)
    ax_phi = figures["tune.png"].axes[0]
    lines = ax_phi.get_lines()
    assert [line.get_label() for line in lines] == [f"coefficients.mu[{i}]" for i in range(12)] + \
        ["weights.boundary"]
    assert len({to_rgba(line.get_color()) for line in lines}) == len(lines)
    assert ax_phi.get_title().splitlines()[1] == "coefficients.mu: first 12 of 20 coordinates drawn"
    assert len(ax_phi.get_legend().get_texts()) == len(lines)


def test_a_vector_phi_drawn_whole_says_nothing_more(tmp_path, figures):
    tune_plots.plot_tune(_tune_file(tmp_path / "t.h5", 5), tmp_path)
    ax_phi = figures["tune.png"].axes[0]
    assert ax_phi.get_title() == "tuned hyperparameters (fg2u)"
    assert len(ax_phi.get_lines()) == 6 == len({to_rgba(line.get_color()) for line in ax_phi.get_lines()})
