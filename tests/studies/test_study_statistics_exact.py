"""The estimator study's statistics on small explicit inputs, against numpy/scipy
computed independently: the delete-a-group jackknife standard errors (factor (G−1)/G,
the reference's groups jackknifed on their own, residual records averaged over points,
NaN below 3 groups), the projected bias test at odd group counts, below 4 groups and at
a negative t, which keys each quantity's record has, replicate i in group i mod G, the
comparisons where a variance or its SE is exactly 0, a slope from two K, and the
"more than 2 SE" rule at exactly 2 SE."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from pinnlab.studies.estimator_study import (
    Moments,
    _moments,
    bias_signs,
    compare_losses,
    loglog_slope,
    projected_bias_test,
    summarise,
)


def _groups(seed, sizes, dim, shift=0.0):
    rng = np.random.default_rng(seed)
    return [shift + rng.standard_normal((n, dim)) * np.linspace(0.5, 2.0, dim) for n in sizes]


def _moments_of(groups) -> Moments:
    """Moments kept in the given groups (each an array draws × coordinates)."""
    parts = []
    for g in groups:
        t = torch.as_tensor(g, dtype=torch.float64)
        mean = t.mean(0)
        parts.append((t.shape[0], mean, ((t - mean) ** 2).sum(0)))
    return Moments(tuple(parts))


def _pooled(groups, skip=None):
    """(count, mean, variance with ddof 1) of all groups but ``skip``."""
    a = np.concatenate([g for i, g in enumerate(groups) if i != skip])
    return len(a), a.mean(0), a.var(0, ddof=1)


def _bias2(est, ref):
    (n, m, v), (nr, r, w) = est, ref
    return float(((m - r) ** 2 - v / n - w / nr).sum())


def _jackknife(values):
    v = np.asarray(values)
    return math.sqrt((len(v) - 1) / len(v) * float(((v - v.mean()) ** 2).sum()))


def test_the_standard_errors_are_delete_a_group_jackknives_of_the_estimate_and_the_reference():
    """bias2_se = hypot(jackknife over the estimate's G groups, jackknife over the
    reference's own G_ref groups), variance_se the jackknife of the trace, both with the
    factor (G−1)/G; 5 estimate groups against 4 reference groups, so the two loops cannot
    share a count. A residual record averages over points: every number is the sum's /2."""
    est_groups = _groups(0, [3, 3, 3, 2, 2], 2, shift=0.7)
    ref_groups = _groups(1, [2, 3, 2, 2], 2)
    est, ref = _moments_of(est_groups), _moments_of(ref_groups)
    full_est, full_ref = _pooled(est_groups), _pooled(ref_groups)
    se_est = _jackknife([_bias2(_pooled(est_groups, g), full_ref) for g in range(5)])
    se_ref = _jackknife([_bias2(full_est, _pooled(ref_groups, h)) for h in range(4)])
    variance_se = _jackknife([float(_pooled(est_groups, g)[2].sum()) for g in range(5)])

    gradient = summarise("gradient", est, ref)
    assert gradient["bias2"] == pytest.approx(_bias2(full_est, full_ref), rel=1e-12)
    assert gradient["bias2_se"] == pytest.approx(math.hypot(se_est, se_ref), rel=1e-12)
    assert gradient["variance"] == pytest.approx(float(full_est[2].sum()), rel=1e-12)
    assert gradient["variance_se"] == pytest.approx(variance_se, rel=1e-12)
    residual = summarise("residual", est, ref)
    for key in ("bias2", "bias2_se", "variance", "variance_se", "mse"):
        assert residual[key] == pytest.approx(gradient[key] / 2, rel=1e-12), key


def test_the_jackknife_needs_three_groups():
    """Two groups give NaN standard errors (as documented for MIN_REPLICATES), three a number."""
    ref = _moments_of(_groups(2, [3, 3, 3, 3], 2))
    two = summarise("gradient", _moments_of(_groups(3, [3, 3], 2)), ref)
    assert math.isnan(two["bias2_se"]) and math.isnan(two["variance_se"])
    assert math.isfinite(two["bias2"]) and math.isfinite(two["variance"])
    three = summarise("gradient", _moments_of(_groups(3, [3, 3, 3], 2)), ref)
    assert math.isfinite(three["bias2_se"]) and math.isfinite(three["variance_se"])


def _welch_on_halves(est_groups, ref_groups):
    """The projected test by hand: direction from the first ⌊G/2⌋ groups of each side,
    Welch's t-test (scipy) on the other groups' means projected on it."""
    ge, gr = len(est_groups) // 2, len(ref_groups) // 2
    u = np.concatenate(est_groups[:ge]).mean(0) - np.concatenate(ref_groups[:gr]).mean(0)
    u /= np.linalg.norm(u)
    x = np.array([g.mean(0) @ u for g in est_groups[ge:]])
    y = np.array([g.mean(0) @ u for g in ref_groups[gr:]])
    return stats.ttest_ind(x, y, equal_var=False)


@pytest.mark.parametrize("est_sizes, ref_sizes", [([3, 4, 3, 3, 4], [3] * 7), ([3] * 6, [2, 3, 4, 3, 2])])
def test_the_projected_bias_test_splits_odd_group_counts_at_the_floor_of_half(est_sizes, ref_sizes):
    """With 5 (or 7) groups the direction comes from the first 2 (3) and the t-test runs on
    the remaining 3 (4): scipy's Welch t, p and (Satterthwaite) df on those."""
    est_groups, ref_groups = _groups(4, est_sizes, 3, shift=0.4), _groups(5, ref_sizes, 3)
    out = projected_bias_test(_moments_of(est_groups), _moments_of(ref_groups))
    welch = _welch_on_halves(est_groups, ref_groups)
    assert out["bias_t"] == pytest.approx(float(welch.statistic), rel=1e-10)
    assert out["bias_p"] == pytest.approx(float(welch.pvalue), rel=1e-8)
    assert out["bias_t_df"] == pytest.approx(float(welch.df), rel=1e-10)


def test_a_negative_t_has_the_two_sided_p_of_its_magnitude():
    """The second halves' projected means lie below the reference's (the first halves'
    difference points the other way): t < 0, and p = 2·P(T > |t|) as scipy's, in (0, 1]."""
    est_groups = [0.2 * g + (1.5 if i < 2 else -1.5) for i, g in enumerate(_groups(6, [3] * 4, 2))]
    ref_groups = [0.2 * g for g in _groups(7, [3] * 4, 2)]
    out = projected_bias_test(_moments_of(est_groups), _moments_of(ref_groups))
    welch = _welch_on_halves(est_groups, ref_groups)
    assert out["bias_t"] < 0 and float(welch.statistic) < 0
    assert out["bias_t"] == pytest.approx(float(welch.statistic), rel=1e-10)
    assert out["bias_p"] == pytest.approx(float(welch.pvalue), rel=1e-8) and 0 < out["bias_p"] <= 1


@pytest.mark.parametrize("est_count, ref_count", [(3, 10), (10, 3)])
def test_the_projected_bias_test_is_nan_below_four_groups_on_either_side(est_count, ref_count):
    est = _moments_of(_groups(8, [3] * est_count, 2, shift=1.0))
    ref = _moments_of(_groups(9, [3] * ref_count, 2))
    assert all(math.isnan(v) for v in projected_bias_test(est, ref).values())
    four = projected_bias_test(_moments_of(_groups(8, [3] * 4, 2, shift=1.0)), _moments_of(_groups(9, [3] * 4, 2)))
    assert all(math.isfinite(v) for v in four.values())


def test_each_quantity_has_its_own_record_keys():
    """Signed bias for the loss only, the projected bias test for the gradient only."""
    est, ref = _moments_of(_groups(10, [3] * 4, 1, shift=0.5)), _moments_of(_groups(11, [3] * 4, 1))
    common = {"bias2", "bias2_se", "variance", "variance_se", "mse"}
    assert set(summarise("residual", est, ref)) == common
    assert set(summarise("loss", est, ref)) == common | {"bias", "bias_se"}
    assert set(summarise("gradient", est, ref)) == common | {"bias_t", "bias_t_df", "bias_p"}


def test_replicate_i_falls_in_group_i_mod_g():
    """7 draws in 3 groups: groups {0, 3, 6}, {1, 4}, {2, 5} (a block split 0–2, 3–4,
    5–6 has the same counts but other members)."""
    draws = torch.arange(14, dtype=torch.float64).reshape(7, 2) ** 2
    moments = _moments(lambda i: {"x": draws[i]}, 7, groups=3)["x"]
    assert [p[0] for p in moments.parts] == [3, 2, 2]
    for g, part in enumerate(moments.parts):
        members = draws[g::3]
        torch.testing.assert_close(part[1], members.mean(0), rtol=1e-14, atol=0)
        torch.testing.assert_close(part[2], ((members - members.mean(0)) ** 2).sum(0), rtol=1e-13, atol=0)


def test_a_comparison_with_a_zero_variance_or_a_zero_standard_error_is_nan():
    """A biased variance of exactly 0 (every replicate alike: the command warns of it) gives
    no ratio and no halving prediction, and standard errors of 0 no z: NaN/None, not a
    ZeroDivisionError after the whole study ran."""
    def row(loss, k, per_draw, variance):
        return {"quantity": "gradient", "loss": loss, "noise": "shared", "dim": 3, "samples": k,
                "samples_per_draw": per_draw, "sigma": 0.1, "variance": variance, "variance_se": 0.0}

    rows = [row("biased", 4, 4, 0.0), row("biased", 8, 8, 0.0), row("unbiased", 8, 4, 2.0)]
    (out,) = [r for r in compare_losses(rows) if r["samples"] == 8]
    assert math.isnan(out["variance_ratio"]) and math.isnan(out["z"]) and out["halving_prediction"] is None


def test_a_slope_from_two_k_is_exact_without_a_standard_error():
    """Two points determine the line: its slope, and NaN for the SE (no residual degree of
    freedom). K or y not positive: NaN for both, without numpy's log warnings."""
    slope, se = loglog_slope([4, 16], [3.0, 0.75])
    assert slope == pytest.approx(-1.0, abs=1e-12) and math.isnan(se)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(v) for v in loglog_slope([0, 4, 16], [1.0, 0.5, 0.25]))


def test_a_bias_of_exactly_two_standard_errors_is_not_more_than_two():
    """The rule is strictly 'more than 2 SE from 0' for the loss's signed bias (either
    sign) and the debiased bias²."""
    loss = [{"bias": 2.0, "bias_se": 1.0}, {"bias": -2.0, "bias_se": 1.0}, {"bias": 2.5, "bias_se": 1.0},
            {"bias": -2.5, "bias_se": 1.0}]
    assert bias_signs("loss", loss) == [0, 0, 1, -1]
    gradient = [{"bias2": 2.0, "bias2_se": 1.0}, {"bias2": 2.5, "bias2_se": 1.0}, {"bias2": -2.5, "bias2_se": 1.0}]
    assert bias_signs("gradient", gradient) == [0, 1, 0]
