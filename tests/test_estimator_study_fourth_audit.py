"""Fourth mutation audit of the estimator study (pinnlab/studies/estimator_study.py).

A study run from Python (no config validation in front of it) refuses Stein time options
its equation cannot take, as the solver's estimator does; an evaluation of the residual
and the loss alone (chunked or not), and the reference of a study without the gradient
quantity, never differentiate the loss; the progress lines name the reference and every
cell by its K in the order made; a weighted slope through two K has the SE its points'
errors give; and each σ's unbiased cells are compared with that σ's biased cells."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pinnlab.config import ModelSection, make_network
from pinnlab.equations import make_equation
from pinnlab.estimators import SteinAntithetic
from pinnlab.studies import estimator_study as es
from pinnlab.studies.estimator_study import EstimatorStudySpec, compare_losses, loglog_fit, run_estimator_study


def _spec(**changes) -> EstimatorStudySpec:
    settings = dict(equation="poisson_two_body", dims=(3,), samples=(4,), sigmas=(0.1,), noise=("shared",),
                    quantities=("loss",), losses=("biased",), replicates=4, points=3, reference_samples=8,
                    reference_replicates=4, problem_seed=1, width=8, depth=2)
    return EstimatorStudySpec(**{**settings, **changes})


def _quantities(name="poisson_two_body", points=5):
    equation = make_equation(name, 3, seed=0)
    net = make_network(ModelSection(width=8, depth=2), equation.input_dim, seed=0, dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = equation.sample_collocation(points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return es._Quantities(equation, net, params, x)


def test_time_smoothing_independent_on_an_equation_without_time_is_refused_before_any_draw(monkeypatch):
    """Poisson has no time column: ``time_smoothing="independent"`` would smooth its last
    spatial coordinate as time. The study refuses it (the estimator's own message) before
    it evaluates any quantity."""
    calls = []
    monkeypatch.setattr(es._Quantities, "all", lambda self, *a: calls.append(a))
    with pytest.raises(ValueError, match="has no time variable"):
        run_estimator_study(_spec(time_smoothing="independent"))
    assert calls == []


@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("kind", ["biased", "unbiased"])
def test_a_chunked_evaluation_without_the_gradient_quantity_takes_no_gradient(monkeypatch, noise, kind):
    """5 points in chunks of 2, only the residual and the loss asked for: the answer has no
    ``gradient`` entry, no autograd pass runs, and nothing returned carries a graph; the
    unchunked evaluation (``torch.func``, not ``torch.autograd.grad``) has no gradient entry
    either."""
    quantities = _quantities()
    estimator = SteinAntithetic(sigma=0.1, num_samples=4, noise=noise, chunk_size=2)
    backward = []
    real = torch.autograd.grad

    def spy(*args, **kwargs):
        backward.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    out = quantities.all(estimator, torch.Generator().manual_seed(3), kind, ("residual", "loss"))
    assert set(out) == {"residual", "loss"}
    assert backward == []
    assert not out["loss"].requires_grad and not out["residual"].requires_grad
    whole = quantities.all(dataclasses.replace(estimator, chunk_size=None), torch.Generator().manual_seed(3), kind,
                           ("residual", "loss"))
    assert set(whole) == {"residual", "loss"}
    assert not whole["loss"].requires_grad and not whole["residual"].requires_grad


def test_progress_names_the_reference_and_every_cell_by_its_k_in_order():
    """One line per reference (d, σ) and one per cell after its draws, in the order made;
    an unbiased cell is named by its K (4), not by the K/2 = 2 samples of each draw."""
    messages = []
    spec = _spec(dims=(3,), sigmas=(0.1, 0.05), losses=("biased", "unbiased"))
    run_estimator_study(spec, progress=messages.append)
    assert messages == [
        "reference d=3 σ=0.1 done",
        "d=3 σ=0.1 noise=shared K=4 biased done",
        "d=3 σ=0.1 noise=shared K=4 unbiased done",
        "reference d=3 σ=0.05 done",
        "d=3 σ=0.05 noise=shared K=4 biased done",
        "d=3 σ=0.05 noise=shared K=4 unbiased done",
    ]


def test_a_weighted_slope_through_two_k_has_the_standard_error_its_points_errors_give():
    """Two K (4, 8) with relative errors 10 % each: weights 100, Σ w (log K − log x̂)² =
    50·ln²2, so the slope −1 has SE 1/(√50·ln 2) from the points' errors alone (no scatter
    to scale it by); without errors two points give no SE (no degrees of freedom)."""
    slope, se, cx, cy = loglog_fit([4, 8], [1.0, 0.5], [0.1, 0.05])
    assert slope == pytest.approx(-1.0, rel=1e-12)
    assert se == pytest.approx(1.0 / (math.sqrt(50.0) * math.log(2.0)), rel=1e-12)
    assert (cx, cy) == (pytest.approx(math.log(32.0) / 2, rel=1e-12), pytest.approx(-math.log(2.0) / 2, rel=1e-12))
    slope, se, _, _ = loglog_fit([4, 8], [1.0, 0.5])
    assert slope == pytest.approx(-1.0, rel=1e-12) and math.isnan(se)


def test_each_sigma_is_compared_with_its_own_biased_cells():
    """Two σ with the same K grid: every unbiased record is compared with the biased record
    at its own σ, one row per (K, σ): the ratio (1.5 at σ = 0.1, 2.5 at σ = 0.05), z from
    the two variance SEs, the halving prediction V_b(K/2)/(2·V_b(K)) = 1 at K = 8 from
    the biased cell at K/2 of that σ (none at K = 4)."""
    unbiased = {0.1: 12.0, 0.05: 20.0}
    records = []
    for sigma, scale in ((0.1, 1.0), (0.05, 10.0)):
        for k in (4, 8):
            for loss, variance in (("biased", 8.0 / k), ("unbiased", unbiased[sigma] / k)):
                records.append({"quantity": "loss", "loss": loss, "noise": "shared", "dim": 3, "samples": k,
                                "samples_per_draw": k // 2 if loss == "unbiased" else k, "sigma": sigma,
                                "variance": scale * variance, "variance_se": 0.1 * k})
    rows = {(r["sigma"], r["samples"]): r for r in compare_losses(records)}
    assert set(rows) == {(0.1, 4), (0.1, 8), (0.05, 4), (0.05, 8)} and len(compare_losses(records)) == 4
    for (sigma, k), row in rows.items():
        scale = 1.0 if sigma == 0.1 else 10.0
        assert row["variance_ratio"] == pytest.approx(unbiased[sigma] / 8.0, rel=1e-12)
        assert row["z"] == pytest.approx(scale * (unbiased[sigma] - 8.0) / k / (math.sqrt(2.0) * 0.1 * k), rel=1e-12)
        assert row["halving_prediction"] == (None if k == 4 else pytest.approx(1.0, rel=1e-12))
        assert (row["quantity"], row["noise"], row["dim"]) == ("loss", "shared", 3)


def test_the_reference_evaluates_only_the_quantities_the_spec_names(monkeypatch):
    """With ``quantities=("loss",)`` neither the reference (K_ref samples, the costly
    draws) nor any cell is asked for the gradient (an autograd pass per replicate)."""
    asked = []

    def fake_all(self, estimator, generator, kind, quantities):
        asked.append((estimator.num_samples, tuple(quantities)))
        z = torch.randn(3, generator=generator, dtype=torch.float64)
        return {"loss": z[:1], "residual": z}

    monkeypatch.setattr(es._Quantities, "all", fake_all)
    run_estimator_study(_spec())
    assert asked == [(8, ("loss",))] * 4 + [(4, ("loss",))] * 4
