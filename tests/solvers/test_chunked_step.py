"""A step in `batch_chunks` chunks: each chunk draws its own noise stream, and the chunked
step's metrics, extra terms and update equal the unchunked step's."""

import dataclasses

import torch

from pinnlab._seeding import derive_seed
from pinnlab.solvers import Adam, make_train_step
from pinnlab.solvers.terms import DataLoss

from .small_problems import F64, problem, stein


def _both(full, chunks, hyperparams):
    """The unchunked and the chunked step's (params, state, metrics), at step 3."""
    chunked = dataclasses.replace(full, batch_chunks=chunks)
    opt = Adam(1e-2)
    params = full.init_params(dtype=F64)
    state = opt.init(params)
    return [make_train_step(p, opt, seed=1)(params, state, hyperparams, 3) for p in (full, chunked)]


def test_chunked_metrics_equal_the_full_metrics():
    (_, _, a), (_, _, b) = _both(problem(batch=12), 5, {})
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-12, msg=k)


def test_chunked_step_with_a_data_term_equals_the_full_step():
    """Extra terms are counted once, not once per chunk."""
    g = torch.Generator().manual_seed(3)
    x_obs = torch.rand(6, 4, generator=g, dtype=F64) * 0.5
    data = DataLoss(x_obs, torch.sin(x_obs.sum(1)))
    # 5 chunks of 3, 3, 2, 2, 2 points
    a, b = _both(problem(batch=12, extra_terms=(data,)), 5, {"weights": {"data": 2.0}})
    torch.testing.assert_close(a[2]["loss"], b[2]["loss"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[2]["loss_data"], b[2]["loss_data"], rtol=1e-12, atol=1e-12)
    for k in a[0]:
        torch.testing.assert_close(a[0][k], b[0][k], rtol=1e-10, atol=1e-12)


def test_each_chunk_draws_its_own_noise_stream(monkeypatch):
    """Keyed by (seed, "noise/<chunk>", step)."""
    p = problem(estimator=stein(), batch=12, chunks=3)
    seen = []
    cls = type(p.estimator)
    original = cls.estimate

    def spy(self, model, x, queries, *, generator, sigma=None):
        seen.append(generator.initial_seed())
        return original(self, model, x, queries, generator=generator, sigma=sigma)

    monkeypatch.setattr(cls, "estimate", spy)
    params = p.init_params(dtype=F64)
    opt = Adam(1e-3)
    make_train_step(p, opt, seed=7)(params, opt.init(params), {}, 4)
    expected = [derive_seed(7, f"noise/{c}", 4) for c in range(3)]
    assert len(set(expected)) == 3
    # every estimate call of chunk c uses chunk c's stream, in chunk order
    assert sorted(set(seen)) == sorted(expected)
    assert [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]] == expected
