"""Study formulas in closed form: a cell's seconds per step, the loss bias's standard
error, the projected bias test against Welch's t-test, and the split of K between the
unbiased loss's two draws. Each fails when its formula is changed."""

import math

import h5py
import numpy as np
import pytest
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.nets import MLP
from pinnlab.studies.estimator_study import (
    EstimatorStudySpec,
    Moments,
    _combine,
    _moments,
    _Quantities,
    projected_bias_test,
    run_estimator_study,
    summarise,
)
from pinnlab.studies.training_study import cell_metrics


# training_study.cell_metrics: seconds per step is the reciprocal of steps per second.
def test_cell_metrics_reads_and_inverts_the_rate(tmp_path):
    path = tmp_path / "cell.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["status"] = "ok"
        fh.create_group("final").attrs.update({"rel_l2": 0.25, "best_rel_l2": 0.125, "steps_per_second": 4.0,
                                                "peak_mem_mb": 12.0})
    m = cell_metrics(path)
    assert m["seconds_per_step"] == pytest.approx(0.25)
    assert (m["rel_l2"], m["best_rel_l2"], m["peak_mem_mb"], m["status"]) == (0.25, 0.125, 12.0, "ok")
    with h5py.File(path, "a") as fh:
        fh["final"].attrs["steps_per_second"] = 0.0
    assert math.isnan(cell_metrics(path)["seconds_per_step"])


# The loss record's signed bias SE adds the estimate's and the reference's variances.
def test_loss_bias_standard_error_closed_form():
    g = torch.Generator().manual_seed(0)
    est_draws = 1.0 + 2.0 * torch.randn(60, 1, generator=g, dtype=torch.float64)
    ref_draws = 0.5 + 3.0 * torch.randn(20, 1, generator=g, dtype=torch.float64)
    est = _moments(lambda i: {"x": est_draws[i]}, 60)["x"]
    ref = _moments(lambda i: {"x": ref_draws[i]}, 20)["x"]
    out = summarise("loss", est, ref)
    expected = math.sqrt(float(est_draws.var()) / 60 + float(ref_draws.var()) / 20)
    assert out["bias"] == pytest.approx(float(est_draws.mean() - ref_draws.mean()), rel=1e-12)
    assert out["bias_se"] == pytest.approx(expected, rel=1e-12)


# projected_bias_test's t, df and p are Welch's (scipy.stats.ttest_ind, equal_var=False)
# on the second halves' group means projected on the first halves' direction.
def _grouped_moments(generator, groups, shift):
    parts = []
    for _ in range(groups):
        draws = shift + torch.randn(7, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5],
                                                                                                    dtype=torch.float64)
        mean = draws.mean(0)
        parts.append((7, mean, ((draws - mean) ** 2).sum(0)))
    return Moments(tuple(parts))


def test_projected_bias_test_is_welchs_t_test():
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    est, ref = _grouped_moments(g, 10, 0.3), _grouped_moments(g, 6, 0.0)
    out = projected_bias_test(est, ref)
    u = _combine(list(est.parts[:5]))[1] - _combine(list(ref.parts[:3]))[1]
    u = u / u.norm()
    x = np.array([float(u @ p[1]) for p in est.parts[5:]])
    y = np.array([float(u @ p[1]) for p in ref.parts[3:]])
    welch = stats.ttest_ind(x, y, equal_var=False)
    assert out["bias_t"] == pytest.approx(float(welch.statistic), rel=1e-10)
    assert out["bias_p"] == pytest.approx(float(welch.pvalue), rel=1e-8)
    a, b = x.var(ddof=1) / 5, y.var(ddof=1) / 3
    assert out["bias_t_df"] == pytest.approx((a + b) ** 2 / (a * a / 4 + b * b / 2), rel=1e-10)


# unbiased_samples='split': the unbiased loss's residual draws get K/2 samples each.
def test_split_gives_each_unbiased_draw_half_the_samples():
    spec = EstimatorStudySpec(equation="poisson_two_body", dims=(3,), samples=(4, 8), sigmas=(0.1,),
                              noise=("independent",), quantities=("residual",), replicates=100, points=8,
                              reference_samples=64, reference_replicates=4, problem_seed=1, width=8, depth=3)
    records = {(r["loss"], r["samples"]): r for r in run_estimator_study(spec)["records"]}
    for k in (4, 8):
        assert records[("biased", k)]["samples_per_draw"] == k
        assert records[("unbiased", k)]["samples_per_draw"] == k // 2
    # Poisson is linear: the unbiased residual record is one K/2-sample draw of the same
    # estimator, so its variance is ≈ 2× the biased one's at K (1.96 at this seed; ≈ 1 if
    # each draw got K samples). Heavy-tailed Stein draws at small K make the variance noisy
    # (the K/2-vs-K/2 ratio came out 0.75 at 100 replicates), so the threshold is loose: 1.4.
    ratio_double = records[("unbiased", 8)]["variance"] / records[("biased", 8)]["variance"]
    assert ratio_double > 1.4, ratio_double


def test_the_unbiased_study_loss_multiplies_two_independent_draws():
    """L̂ = mean R̂·R̂′ with R̂, R̂′ two consecutive draws of the generator, and L̂ biased =
    mean R̂² of one draw (replayed exactly; the statistical tests cannot tell R̂·R̂ from
    R̂·R̂′ at their replicate counts)."""
    equation = PoissonTwoBody(3, seed=1)
    net = MLP(3, width=8, depth=3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = dict(net.named_parameters())
    x = equation.sample_collocation(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    quantities = _Quantities(equation, net, params, x)
    estimator = SteinAntithetic(sigma=0.1, num_samples=4)

    def draws(n):
        generator = torch.Generator().manual_seed(5)
        return [quantities._draw(params, estimator, generator, True, x) for _ in range(n)]

    first, second = draws(2)
    assert not torch.allclose(first, second)
    loss, r = quantities.loss(params, estimator, torch.Generator().manual_seed(5), "unbiased")
    torch.testing.assert_close(loss, (first * second).mean(), rtol=1e-14, atol=0)
    torch.testing.assert_close(r, first, rtol=0, atol=0)
    loss, r = quantities.loss(params, estimator, torch.Generator().manual_seed(5), "biased")
    torch.testing.assert_close(loss, (first * first).mean(), rtol=1e-14, atol=0)
