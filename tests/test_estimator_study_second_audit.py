"""Second mutation audit of the estimator study (pinnlab/studies/estimator_study.py and
the estimator part of ``pinnlab study``): what stdout tells a user about the gradient
(its projected bias test and the unbiased/biased variance comparison, and no line for an
undefined test), the spec's defaults against the config's, the fitted line's centre,
float64 moments of float32 draws, a bias test without spread, series names, the network's
init seed and the equation's parameters reaching the study, the unbiased loss's noise
groups, the returned slopes and comparisons, and the biased loss as the mean square of the
residual draw recorded beside it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pinnlab.cli import main
from pinnlab.studies.estimator_study import (
    EstimatorStudySpec,
    fit_slopes,
    loglog_fit,
)
from tests.studies.test_study_inputs_refused import _estimator


def test_stdout_gives_each_gradient_records_bias_test_and_variance_comparison(tmp_path, capsys):
    """One line per gradient record with a finite p (t with its sign, df, two-sided p) and
    one per gradient comparison (V_u/V_b, z with its sign, and the halving prediction where
    the biased cell at K/2 exists: at K=4, not at K=2), from the numbers the JSON holds."""
    cfg = _estimator(tmp_path, **{"samples: [4, 8]": "samples: [2, 4]",
                                  "noise: [independent, shared]": "noise: [independent]"})
    js = tmp_path / "e.json"
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5"), "--json", str(js)]) == 0
    out = capsys.readouterr().out.splitlines()
    data = json.loads(js.read_text())
    tests = [r for r in data["records"] if r["quantity"] == "gradient"]
    assert len(tests) == 4 and all(math.isfinite(r["bias_p"]) for r in tests)
    expected = [f"gradient bias, {r['loss']}, independent, d=3, K={r['samples']}: t = {r['bias_t']:+.2f} "
                f"({r['bias_t_df']:.1f} df), p = {r['bias_p']:.3f}" for r in tests]
    rows = [c for c in data["comparisons"] if c["quantity"] == "gradient"]
    assert [c["samples"] for c in rows] == [2, 4]
    assert rows[0]["halving_prediction"] is None and rows[1]["halving_prediction"] is not None
    for c in rows:
        halving = "" if c["halving_prediction"] is None else f"; halving predicts {c['halving_prediction']:.2f}"
        expected.append(f"gradient variance unbiased/biased, independent, d=3, K={c['samples']}: "
                        f"{c['variance_ratio']:.2f} (z = {c['z']:+.1f}{halving})")
    assert [line for line in out if line.startswith("gradient ")] == expected


def test_the_spec_defaults_are_the_configs_study_model_and_estimator_defaults():
    """A study run from Python with only the grid given is the one ``pinnlab study`` runs
    for a config leaving ``study:``, ``model:`` and the Stein options out (200 replicates
    of 64 points against 50 of K_ref = 4096, both losses split, both noise modes, every
    quantity, the 128×4 tanh network, seeds 0), in float64 on the CPU."""
    from pinnlab import config as C

    config = C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, "study": {"kind": "estimator"}})
    spec = EstimatorStudySpec(equation="poisson_two_body", dims=(3,), samples=(8,), sigmas=(0.01,))
    study = config.study
    assert (spec.noise, spec.quantities, spec.losses) == (tuple(study.noise), tuple(study.quantities),
                                                          tuple(study.losses))
    assert (spec.replicates, spec.points, spec.reference_samples, spec.reference_replicates,
            spec.unbiased_samples) == (study.replicates, study.points, study.reference_samples,
                                       study.reference_replicates, study.unbiased_samples)
    assert (spec.replicates, spec.points, spec.reference_samples, spec.reference_replicates) == (200, 64, 4096, 50)
    assert {k: getattr(spec, k) for k in ("width", "depth", "activation")} == config.model.model_dump()
    assert (spec.time_smoothing, spec.time_sigma, spec.chunk_size) == (
        config.estimator.time_smoothing, config.estimator.time_sigma, config.estimator.chunk_size)
    assert (spec.problem_seed, spec.init_seed) == (config.equation.seed, config.trainer.seed) == (0, 0)
    assert (spec.dtype, spec.device, spec.params, spec.equation_parameters) == (torch.float64, "cpu", None, {})


def test_the_fitted_line_passes_through_the_weighted_means_of_the_logs():
    """``loglog_fit``'s centre (log x̂, log ŷ) is the mean of log K and of log y weighted by
    (y/SE)², the point the plotted line and its band pivot on; at one K throughout there is
    no slope but the centre is still that weighted mean."""
    ks = np.array([8.0, 16.0, 32.0, 64.0])
    ys = np.array([1.0, 0.6, 0.2, 0.13])
    se = np.array([0.01, 0.3, 0.05, 0.001])
    w = (ys / se) ** 2
    slope, slope_se, cx, cy = loglog_fit(ks, ys, se)
    assert cx == pytest.approx(float((w * np.log(ks)).sum() / w.sum()), rel=1e-12)
    assert cy == pytest.approx(float((w * np.log(ys)).sum() / w.sum()), rel=1e-12)
    assert slope == pytest.approx(np.polyfit(np.log(ks), np.log(ys), 1, w=np.sqrt(w))[0], rel=1e-10)
    one_k = loglog_fit([16, 16, 16], ys[:3], se[:3])
    assert math.isnan(one_k[0]) and math.isnan(one_k[1])
    assert one_k[2:] == pytest.approx((math.log(16), float((w[:3] * np.log(ys[:3])).sum() / w[:3].sum())),
                                      rel=1e-12)


def test_moments_of_float32_draws_are_accumulated_in_float64():
    """A float32 study's draws (a mean of 1000 ± 1) are pooled in float64: the mean and the
    variance are those of the same float32 numbers in float64 to 1e-12 (a float32 Welford
    update gets the variance wrong in the fourth digit)."""
    from pinnlab.studies.estimator_study import _moments

    draws = (1000.0 + torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).float()
    moments = _moments(lambda i: {"x": draws[i]}, 40)["x"]
    exact = draws.double().numpy()
    assert moments.mean.dtype == torch.float64 and moments.var.dtype == torch.float64
    np.testing.assert_allclose(moments.mean.numpy(), exact.mean(0), rtol=1e-13)
    np.testing.assert_allclose(moments.var.numpy(), exact.var(0, ddof=1), rtol=1e-12)


def test_a_gradient_record_without_a_bias_test_prints_no_bias_line(tmp_path, capsys, monkeypatch):
    """Where the projected bias test is undefined (NaN p: a zero direction or zero spread),
    stdout has no "gradient bias" line for the record (not "t = +nan ..."); the variance
    comparison is still printed."""
    from pinnlab.studies import estimator_study

    monkeypatch.setattr(estimator_study, "projected_bias_test",
                        lambda est, ref: {"bias_t": math.nan, "bias_t_df": math.nan, "bias_p": math.nan})
    cfg = _estimator(tmp_path, **{"samples: [4, 8]": "samples: [4]",
                                  "noise: [independent, shared]": "noise: [independent]"})
    assert main(["study", str(cfg), "-o", str(tmp_path / "e.h5")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gradient ")]
    assert len(lines) == 1 and lines[0].startswith("gradient variance unbiased/biased, independent, d=3, K=4: ")


def test_a_series_is_named_by_its_sigma_in_shortest_form():
    """The slopes' keys (JSON, HDF5 attribute, stdout) name σ as ``{σ:g}``: 1.0 as
    ``sigma=1``, 0.05 as ``sigma=0.05``, 1/3 to six significant digits."""
    records = [{"quantity": "loss", "loss": "biased", "noise": "shared", "dim": 2, "samples": k, "sigma": sigma,
                "variance": 1.0 / k, "variance_se": 0.1 / k, "bias": 0.0, "bias_se": 1.0}
               for sigma in (1.0, 0.05, 1 / 3) for k in (8, 16)]
    assert list(fit_slopes(records)) == ["loss/biased/shared/d=2/sigma=1", "loss/biased/shared/d=2/sigma=0.05",
                                         "loss/biased/shared/d=2/sigma=0.333333"]


def test_a_projected_bias_test_without_spread_along_its_direction_is_nan():
    """Second-half group means that agree exactly along u (s_x² = s_y² = 0) give no t
    statistic: NaN t, df and p, not an infinite t with p = 0 from a division by zero."""
    from pinnlab.studies.estimator_study import Moments, projected_bias_test

    def moments(means):
        return Moments(tuple((3, torch.tensor(m, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
                             for m in means))

    est = moments([[1.0, 0.0]] * 4)
    ref = moments([[0.0, 0.0], [0.0, 0.0], [0.0, 0.5], [0.0, -0.5]])
    out = projected_bias_test(est, ref)
    assert set(out) == {"bias_t", "bias_t_df", "bias_p"} and all(math.isnan(v) for v in out.values())


def _tiny_spec(**changes) -> EstimatorStudySpec:
    settings = dict(equation="poisson_two_body", dims=(3,), samples=(4,), sigmas=(0.1,), noise=("shared",),
                    quantities=("loss",), losses=("biased",), replicates=4, points=3, reference_samples=8,
                    reference_replicates=4, problem_seed=1, width=8, depth=2)
    return EstimatorStudySpec(**{**settings, **changes})


def test_the_studied_network_is_initialised_with_init_seed_not_the_problem_seed():
    """init_seed=5 studies the network ``make_network`` seeds with 5: the records are those
    of the same study given that network's parameters explicitly (and not those of the
    network seeded with the problem seed)."""
    from pinnlab.config import ModelSection, make_network
    from pinnlab.studies.estimator_study import run_estimator_study

    def params(seed):
        net = make_network(ModelSection(width=8, depth=2), 3, seed=seed, dtype=torch.float64)
        return {k: v.detach().clone() for k, v in net.named_parameters()}

    seeded = run_estimator_study(_tiny_spec(init_seed=5))["records"]
    assert seeded == run_estimator_study(_tiny_spec(init_seed=0, params=params(5)))["records"]
    assert seeded != run_estimator_study(_tiny_spec(init_seed=0, params=params(1)))["records"]


def test_the_equation_parameters_reach_the_studied_equation(monkeypatch):
    """``equation_parameters`` (the config's extra ``equation:`` keys) build the equation
    studied: a soft-constrained Poisson problem's records are not the hard one's."""
    from pinnlab.studies import estimator_study

    built = []
    real = estimator_study.make_equation

    def spy(name, dim, **kwargs):
        built.append(kwargs)
        return real(name, dim, **kwargs)

    monkeypatch.setattr(estimator_study, "make_equation", spy)
    soft = estimator_study.run_estimator_study(_tiny_spec(equation_parameters={"constraint": "soft"}))["records"]
    hard = estimator_study.run_estimator_study(_tiny_spec())["records"]
    assert built == [{"seed": 1, "constraint": "soft"}, {"seed": 1}]
    assert soft[0]["variance"] != hard[0]["variance"]


@pytest.mark.parametrize("name, groups", [("allen_cahn_two_body", 3), ("sine_gordon_two_body", 1),
                                          ("poisson_two_body", 1)])
def test_the_unbiased_loss_draws_one_noise_group_per_factor_where_the_equation_allows(name, groups, monkeypatch):
    """The unbiased loss multiplies two residual draws, each with one noise group per factor
    of every product where the equation is unbiasable (Allen–Cahn's u³: 3 groups), else one
    group (sine-Gordon's sin u is not a product; Poisson is linear); the biased loss draws
    one group."""
    from pinnlab.config import ModelSection, make_network
    from pinnlab.equations import make_equation
    from pinnlab.estimators import SteinAntithetic
    from pinnlab.studies.estimator_study import _Quantities

    calls = []
    real = SteinAntithetic.estimate

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SteinAntithetic, "estimate", counting)
    equation = make_equation(name, 3, seed=0)
    net = make_network(ModelSection(width=8, depth=2), equation.input_dim, seed=0, dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = equation.sample_collocation(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    quantities = _Quantities(equation, net, params, x)
    estimator = SteinAntithetic(sigma=0.1, num_samples=4)
    counts = {}
    for kind in ("biased", "unbiased"):
        calls.clear()
        quantities.all(estimator, torch.Generator().manual_seed(1), kind, ("loss",))
        counts[kind] = len(calls)
    assert counts == {"biased": 1, "unbiased": 2 * groups}


def test_the_studys_slopes_and_comparisons_are_those_of_all_its_records():
    """``run_estimator_study`` returns the slopes and comparisons of every record it returns
    (two K, both losses: a variance slope per series, a comparison per K)."""
    from pinnlab.studies.estimator_study import compare_losses, run_estimator_study

    out = run_estimator_study(_tiny_spec(samples=(4, 8), losses=("biased", "unbiased")))
    assert len(out["records"]) == 4 and len(out["comparisons"]) == 2 and len(out["slopes"]) == 2
    assert all(math.isfinite(e["variance_slope"]) for e in out["slopes"].values())
    assert out["slopes"] == fit_slopes(out["records"])
    assert out["comparisons"] == compare_losses(out["records"])


def test_a_series_without_records_has_no_significant_bias():
    """No K, no evidence: ``bias_is_significant`` of an empty series is False (``all`` of
    nothing would say every K has a significant bias)."""
    from pinnlab.studies.estimator_study import bias_is_significant

    assert bias_is_significant("loss", []) is False and bias_is_significant("gradient", []) is False
    row = {"bias": 3.0, "bias_se": 1.0, "bias2": 3.0, "bias2_se": 1.0}
    assert bias_is_significant("loss", [row]) is True and bias_is_significant("gradient", [row]) is True


def test_the_biased_loss_is_the_mean_square_of_the_residual_draw_recorded_with_it(monkeypatch):
    """Each biased replicate's loss is mean R̂² of the residual draw recorded beside it, and
    the residual record's variance is the point average of those draws' variances (ddof 1)
    and the loss record's that of the losses."""
    from pinnlab.studies import estimator_study

    draws = []

    class Spy(estimator_study._Quantities):
        def all(self, estimator, generator, kind, quantities):
            out = super().all(estimator, generator, kind, quantities)
            if kind == "biased":
                draws.append({k: v.clone() for k, v in out.items()})
            return out

    monkeypatch.setattr(estimator_study, "_Quantities", Spy)
    records = estimator_study.run_estimator_study(_tiny_spec(quantities=("residual", "loss"), replicates=6))["records"]
    assert len(draws) == 6
    for d in draws:
        assert float(d["loss"][0]) == pytest.approx(float((d["residual"] ** 2).mean()), rel=1e-14, abs=0)
    residuals = np.stack([d["residual"].numpy() for d in draws])
    losses = np.array([float(d["loss"][0]) for d in draws])
    by_quantity = {r["quantity"]: r for r in records}
    assert by_quantity["residual"]["variance"] == pytest.approx(residuals.var(0, ddof=1).mean(), rel=1e-12)
    assert by_quantity["loss"]["variance"] == pytest.approx(losses.var(ddof=1), rel=1e-12)
