"""Third audit of the estimator bias–variance study (pinnlab/studies/estimator_study.py).

The statistics (bias², jackknife, Welch's t) are already checked on explicit Moments;
these tests check the *wiring* of ``run_estimator_study``: the study's quantities are
replaced by synthetic draws from the generator it hands them (logged as they are
made), and every record is recomputed from those draws in numpy float64 term by term
(debiased bias², variance, mse, the loss's signed bias and its SE, the delete-a-group
jackknife over replicate i in group i mod 10, the projected test against
``scipy.stats.ttest_ind``). That pins which draws make the reference (the unbiased
loss at ``reference_samples``, independent noise, ``reference_replicates`` of them),
the K/2 split, and that every replicate of every cell has its own noise stream,
reproducibly.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from pinnlab.studies import estimator_study as es
from pinnlab.studies.estimator_study import EstimatorStudySpec, run_estimator_study

GROUPS = 10
SIZES = {"residual": 3, "loss": 1, "gradient": 4}


def _fake_study(monkeypatch, spec):
    """Run ``spec`` with synthetic quantities; returns (result, log of draws).

    Each draw is a float64 normal vector from the study's generator, shifted by
    1/num_samples (so the bias falls with K) and, for the biased loss, by 0.3 more.
    The log keeps (num_samples, noise mode, kind, draws and their raw normal noise) in
    the order made."""
    log = []

    def fake_all(self, estimator, generator, kind, quantities):
        noise = torch.randn(sum(SIZES.values()), generator=generator, dtype=torch.float64)
        z = noise * torch.linspace(0.5, 2.0, noise.numel(), dtype=torch.float64)
        z = z + 1.0 / estimator.num_samples + (0.3 if kind == "biased" else 0.0)
        out, start = {}, 0
        for key, size in SIZES.items():
            out[key] = z[start:start + size].clone()
            start += size
        log.append((estimator.num_samples, estimator.noise, kind, {"noise": noise.numpy(), **{k: v.numpy().copy() for k, v in out.items()}}))
        return out

    monkeypatch.setattr(es._Quantities, "all", fake_all)
    return run_estimator_study(spec), log


def _spec(**kw):
    base = dict(equation="poisson_two_body", dims=(3,), samples=(4, 8), sigmas=(0.1,), noise=("independent",),
                replicates=23, points=3, reference_samples=64, reference_replicates=14, width=4, depth=2,
                problem_seed=2)
    base.update(kw)
    return EstimatorStudySpec(**base)


def _jk(values):
    v = np.asarray(values, float)
    g = len(v)
    return math.sqrt((g - 1) / g * float(((v - v.mean()) ** 2).sum()))


def _bias2_terms(e, r):
    """Per coordinate (m̄ − r̄)² − v/R − w/R_ref from two arrays draws × coordinates."""
    return (e.mean(0) - r.mean(0)) ** 2 - e.var(0, ddof=1) / len(e) - r.var(0, ddof=1) / len(r)


def _expected(quantity, e, r):
    """The record's numbers, recomputed from the draws e (R × d) and r (R_ref × d)."""
    agg = np.mean if quantity == "residual" else np.sum
    ge = [np.arange(len(e)) % GROUPS == g for g in range(GROUPS)]
    gr = [np.arange(len(r)) % GROUPS == g for g in range(GROUPS)]
    out = {"bias2": agg(_bias2_terms(e, r)), "variance": agg(e.var(0, ddof=1))}
    se_e = _jk([agg(_bias2_terms(e[~m], r)) for m in ge])
    se_r = _jk([agg(_bias2_terms(e, r[~m])) for m in gr])
    out["bias2_se"] = math.sqrt(se_e**2 + se_r**2)
    out["variance_se"] = _jk([agg(e[~m].var(0, ddof=1)) for m in ge])
    out["mse"] = out["bias2"] + out["variance"]
    if quantity == "loss":
        out["bias"] = e[:, 0].mean() - r[:, 0].mean()
        out["bias_se"] = math.sqrt(e[:, 0].var(ddof=1) / len(e) + r[:, 0].var(ddof=1) / len(r))
    if quantity == "gradient":
        means_e = [e[m].mean(0) for m in ge]
        means_r = [r[m].mean(0) for m in gr]
        u = np.concatenate([e[m] for m in ge[:5]]).mean(0) - np.concatenate([r[m] for m in gr[:5]]).mean(0)
        u = u / np.linalg.norm(u)
        x = np.array([u @ m for m in means_e[5:]])
        y = np.array([u @ m for m in means_r[5:]])
        welch = stats.ttest_ind(x, y, equal_var=False)
        out["bias_t"], out["bias_p"] = float(welch.statistic), float(welch.pvalue)
    return out


@pytest.mark.parametrize("unbiased_samples", ["split", "same"])
def test_every_record_is_the_numpy_float64_summary_of_its_cells_draws_and_the_reference(monkeypatch, unbiased_samples):
    spec = _spec(unbiased_samples=unbiased_samples)
    result, log = _fake_study(monkeypatch, spec)
    reference = [entry for entry in log if entry[0] == spec.reference_samples]
    # the reference: the unbiased quantities at reference_samples with independent noise,
    # reference_replicates of them
    assert len(reference) == spec.reference_replicates
    assert {(kind, noise) for _, noise, kind, _ in reference} == {("unbiased", "independent")}
    assert len(result["records"]) == 2 * 2 * 3
    for record in result["records"]:
        k, loss = record["samples"], record["loss"]
        per_draw = k // 2 if loss == "unbiased" and unbiased_samples == "split" else k
        assert record["samples_per_draw"] == per_draw
        draws = [d for n, noise, kind, d in log if n == per_draw and kind == loss and n != spec.reference_samples]
        assert len(draws) == spec.replicates
        quantity = record["quantity"]
        e = np.stack([d[quantity] for d in draws])
        r = np.stack([d[quantity] for *_, d in reference])
        for key, value in _expected(quantity, e, r).items():
            assert record[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (quantity, loss, k, key)


def test_a_negative_debiased_bias2_enters_the_mse_unclipped(monkeypatch):
    """Where m̄ = r̄ exactly, bias² = −v/R − w/R_ref < 0 and mse = bias² + variance."""
    e = np.array([[1.0, -2.0], [3.0, 0.0], [2.0, -1.0], [2.0, -1.0]])
    r = np.array([[2.5, -0.5], [1.5, -1.5], [2.0, -1.0]])

    def moments(a):
        parts = []
        for row in a:
            parts.append((1, torch.as_tensor(row), torch.zeros(2, dtype=torch.float64)))
        return es.Moments(tuple(parts))

    out = es.summarise("gradient", moments(e), moments(r))
    bias2 = float((-(e.var(0, ddof=1) / 4) - r.var(0, ddof=1) / 3).sum())
    assert bias2 < 0
    assert out["bias2"] == pytest.approx(bias2, rel=1e-12)
    assert out["mse"] == pytest.approx(bias2 + float(e.var(0, ddof=1).sum()), rel=1e-12)


def test_every_replicate_of_every_cell_has_its_own_noise_and_the_study_is_reproducible(monkeypatch):
    spec = _spec(dims=(3, 4), noise=("independent", "shared"), replicates=4, reference_replicates=4)
    first, log = _fake_study(monkeypatch, spec)
    keys = [tuple(d["noise"]) for *_, d in log]
    # 2 dims × (reference + 2 noises × 2 K × 2 losses) cells, each replicate its own stream
    assert len(log) == 2 * (4 + 2 * 2 * 2 * 4)
    assert len(set(keys)) == len(keys)
    again, log_again = _fake_study(monkeypatch, spec)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert all(np.array_equal(a[3]["gradient"], b[3]["gradient"]) for a, b in zip(log, log_again))


def test_the_reference_is_built_at_reference_samples_with_the_spec_time_options(monkeypatch):
    built = []
    real = es._stein

    def spy(spec, equation, sigma, num_samples, noise):
        estimator = real(spec, equation, sigma, num_samples, noise)
        built.append((num_samples, noise, estimator))
        return estimator

    monkeypatch.setattr(es, "_stein", spy)
    spec = _spec(equation="hjb_lin", samples=(4,), noise=("shared",), time_smoothing="independent",
                 time_sigma=0.05, replicates=2, reference_replicates=2)
    _fake_study(monkeypatch, spec)
    assert [b[:2] for b in built] == [(64, "independent"), (4, "shared"), (2, "shared")]
    for _, _, estimator in built:
        assert estimator.time_smoothing == "independent"
        assert torch.as_tensor(estimator.sigma).tolist() == [0.1] * 3 + [0.05]


@pytest.mark.parametrize("kind", ["biased", "unbiased"])
def test_a_chunked_cell_records_the_residual_of_every_chunk(kind):
    """Shared noise: the chunked study's residual draw (7 points in chunks of 3, the last
    short) is the unchunked one at every point; independent noise (biased loss): it is
    each chunk's own draw from the generator in turn."""
    from pinnlab.equations import make_equation
    from pinnlab.estimators import SteinAntithetic
    from pinnlab.nets import MLP

    equation = make_equation("poisson_two_body", 3, seed=1)
    net = MLP(3, width=8, depth=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = equation.sample_collocation(7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    quantities = es._Quantities(equation, net, params, x)
    shared = SteinAntithetic(sigma=0.1, num_samples=4, noise="shared")
    whole = quantities.all(shared, torch.Generator().manual_seed(3), kind, ("residual", "loss"))
    chunked = quantities.all(dataclasses.replace(shared, chunk_size=3), torch.Generator().manual_seed(3), kind,
                             ("residual", "loss"))
    torch.testing.assert_close(chunked["residual"], whole["residual"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked["loss"], whole["loss"], rtol=1e-12, atol=1e-12)
    if kind == "biased":
        independent = SteinAntithetic(sigma=0.1, num_samples=4)
        generator = torch.Generator().manual_seed(3)
        expected = torch.cat([quantities._draw(params, independent, generator, False, x[s:s + 3])
                              for s in range(0, 7, 3)])
        chunked = quantities.all(dataclasses.replace(independent, chunk_size=3), torch.Generator().manual_seed(3),
                                 kind, ("residual", "loss"))
        torch.testing.assert_close(chunked["residual"], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(chunked["loss"], (expected**2).mean().reshape(1), rtol=1e-12, atol=1e-12)
