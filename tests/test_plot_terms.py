"""terms.png marks the rows whose term loss is negative (drawn as |loss| on the log axis),
as the loss-curve figure does for the total loss."""

from __future__ import annotations

import h5py
import numpy as np

from pinnlab.plots import solve as solve_plots


def test_negative_term_losses_are_marked(tmp_path, monkeypatch):
    path = tmp_path / "r.h5"
    residual = np.array([2.0, -0.5, 0.3, -0.1, 0.05])  # an unbiased R̂R̂′ term goes below 0
    boundary = np.array([1.0, 0.5, 0.2, 0.1, 0.05])
    with h5py.File(path, "w") as fh:
        fh.attrs["config"] = "loss: {kind: unbiased}\n"
        fh.attrs["equation"], fh.attrs["dim"], fh.attrs["loss"] = "demo", 5, "unbiased"
        fh["history/step"] = np.arange(1, 6) * 10
        fh["history/terms/loss_residual"], fh["history/terms/loss_boundary"] = residual, boundary
        fh["history/terms/weight_residual"], fh["history/terms/weight_boundary"] = np.ones(5), np.ones(5)
        fh.create_group("final").attrs.update({"rel_l2": 0.5})
    figures = {}
    monkeypatch.setattr(solve_plots, "_save", lambda fig, p, **kw: figures.setdefault(p.name, fig) and p)
    with h5py.File(path, "r") as fh:
        solve_plots.plot_terms(fh, tmp_path)
    ax_loss = figures["terms.png"].axes[0]
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    marked = lines["residual < 0 (2 rows), drawn as |loss|"]
    np.testing.assert_array_equal(marked.get_xdata(), [20, 40])
    np.testing.assert_array_equal(marked.get_ydata(), [0.5, 0.1])
    assert not any(label.startswith("boundary <") for label in lines)  # never negative: no marks
    assert "absolute values" in ax_loss.get_title()
