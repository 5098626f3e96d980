"""Mutation audit of the ``study:`` spec (pinnlab/studies/spec.py, second pass) and the
study figures (pinnlab/plots/studies.py): what the earlier spec, study and plot audits
left open. Everything runs in-process on tiny hand-written files; the figures are
checked by what they draw (data, labels, scales), not by a file being written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pinnlab.plots import studies as study_plots
from tests.studies.test_study_plot_data import _record, _records_file
from tests.studies.test_study_plots import _study_file

# the loss-curve panels of a study file without cell files have no legend
pytestmark = pytest.mark.filterwarnings("ignore:No artists with labels found")


def test_a_sigma_of_one_is_labelled_as_the_config_writes_it(tmp_path, figures):
    """Series labels give σ in ``:g`` form: σ = 1 is ``σ=1`` and a float32-stored 0.05
    is ``σ=0.05`` (caught: str(σ), ``σ=1.0`` and ``σ=0.05000000074505806``)."""
    records = [{**_record("loss", k), "sigma": sigma} for sigma in (1.0, float(np.float32(0.05))) for k in (4, 8)]
    _records_file(tmp_path / "est.h5", records)
    study_plots.plot_estimator_study(tmp_path / "est.h5", tmp_path)
    ax_var = figures["estimator_loss.png"].axes[0]
    labels = ax_var.get_legend_handles_labels()[1]
    assert labels == ["biased, independent, d=5, σ=0.05 (no fit: fewer than 3 K)",
                      "biased, independent, d=5, σ=1 (no fit: fewer than 3 K)"], labels


@pytest.mark.parametrize("columns, values, places", [
    ("equation.dim", [4.0], [4.0 * 2 ** -0.05, 4.0 * 2 ** 0.05]),
    ("loss.kind", ["biased"], [-0.05, 0.05]),
])
def test_two_variants_at_a_single_column_value_are_set_apart_by_a_default_gap(tmp_path, figures, columns, values,
                                                                             places):
    """With one column value there is no gap between values to take a share of: on a log
    axis the gap is a factor 2 (each variant 5 % of it, in log units, beside the value),
    on a linear axis 1 (caught: 1 log unit, a factor e, on the log axis too)."""
    _study_file(tmp_path / "t.h5", columns, values, [0.1])
    study_plots.plot_training_study(tmp_path / "t.h5", tmp_path)
    ax = figures["training_error_vs_dim.png"].axes[0]
    drawn = [float(bars.lines[0].get_xdata()[0]) for bars in ax.containers]
    assert drawn == pytest.approx(places, rel=1e-12, abs=1e-12)
    assert ax.get_xscale() == ("log" if isinstance(values[0], float) else "linear")


def test_an_estimator_key_on_a_training_study_points_to_variants_or_grid():
    """A training study refusing an estimator key (``samples``: a cell setting, perhaps
    meant for the cells) says where a cell's own settings go; an estimator study refusing
    a training key has no such hint (caught: the hint dropped)."""
    from pydantic import ValidationError

    from pinnlab.studies.spec import StudySection

    with pytest.raises(ValidationError) as training:
        StudySection.model_validate({"kind": "training", "samples": [4]})
    assert ("only an estimator study reads it, and this is a training study (study.kind: training); remove it "
            "(a cell's own settings go in variants or grid)") in str(training.value)
    with pytest.raises(ValidationError) as estimator:
        StudySection.model_validate({"kind": "estimator", "workers": 2})
    message = str(estimator.value)
    assert "only a training study reads it, and this is an estimator study (study.kind: estimator); remove it" in message
    assert "variants or grid" not in message


def test_an_override_whose_value_does_not_parse_is_left_to_the_loader():
    """An override above a grid key whose value is not YAML (``equation={dim: [``) is not
    called a setting of the grid key: what it sets is unknown, and applying it reports the
    YAML error (caught: named as setting equation.dim, telling the user to remove an
    override whose real fault is its syntax)."""
    from pinnlab.studies.spec import StudySection, swept_by

    assert swept_by("equation={dim: [", ["equation.dim"]) is None
    assert swept_by("equation={dim: 4}", ["equation.dim"]) == "equation.dim"
    section = StudySection.model_validate({"kind": "training", "variants": {"a": ["equation={dim: ["]},
                                           "grid": {"equation.dim": [3]}})
    assert section.variants == {"a": ["equation={dim: ["]}


def test_a_plain_value_error_building_a_run_is_one_config_error_naming_the_run(tmp_path, monkeypatch):
    """Building a run's objects can fail with a plain ValueError (a library check, not a
    config one): it is reported as the ConfigError line ``study run LABEL: ...`` like a
    config problem, and the runs after it are not built (caught: only ConfigError
    caught, so the bare ValueError escaped without the run's name)."""
    from pinnlab import config as C
    from pinnlab.studies.spec import validate_runs
    from tests.studies.test_studies import TINY_TRAINING

    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    built = []

    def build(config):
        built.append(config.trainer.seed)
        if config.trainer.seed == 1:
            raise ValueError("momentum must be in [0, 1), got 1.0")

    monkeypatch.setattr(C, "build", build)
    runs = {"s0": ["trainer.seed=0"], "s1": ["trainer.seed=1"], "s2": ["trainer.seed=2"]}
    with pytest.raises(C.ConfigError, match=r"^study run s1: momentum must be in \[0, 1\), got 1\.0$"):
        validate_runs(cfg, runs)
    assert built == [0, 1]


def _two_cell_study(tmp_path, rel_l2=(0.1, 0.2)):
    from tests.studies.test_study_plot_data import _training_file

    loss = np.geomspace(10.0, 1.0, 20)
    _training_file(tmp_path / "t.h5", [(v, 4.0, e, loss, 0 * loss) for v, e in zip("ab", rel_l2)],
                   [(v, 4.0, e, 0.0) for v, e in zip("ab", rel_l2)])
    return tmp_path / "t.h5", loss


def test_a_failed_cells_loss_curve_is_drawn_its_nan_error_matching_its_record(tmp_path, figures):
    """A cell that ended non-finite has the final error NaN in its file and in the study's
    record: it is the study's own cell, and its loss curve (up to where it failed) is
    drawn beside the others (caught: NaN compared unequal, the curve left out)."""
    path, loss = _two_cell_study(tmp_path, rel_l2=(0.1, float("nan")))
    study_plots.plot_training_study(path, tmp_path)
    fig = figures["training_loss_curves.png"]
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert list(lines) == ["a", "b"]
    assert np.array_equal(lines["b"].get_ydata(), loss) and list(lines["b"].get_xdata()) == list(range(1, 21))
    assert fig.get_supxlabel() in (None, "")


def test_a_cell_file_with_a_final_error_that_is_not_a_number_is_named_damaged(tmp_path, figures):
    """A /final rel_l2 that is text (float() raises ValueError) is a damaged cell file: left
    out and named under the panels while the other cells are drawn (caught: the
    ValueError escaped and failed the whole plot)."""
    path, _ = _two_cell_study(tmp_path)
    with h5py.File(str(path) + ".cells/cell1.h5", "r+") as fh:
        fh["final"].attrs["rel_l2"] = "n/a"
    study_plots.plot_training_study(path, tmp_path)
    fig = figures["training_loss_curves.png"]
    assert [line.get_label() for line in fig.axes[0].lines] == ["a"]
    assert fig.get_supxlabel() == "not drawn: damaged cell file cell1.h5"
