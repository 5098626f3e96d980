"""Each chunk must draw its own noise, keyed by (seed, "noise/<chunk>", step)."""

from pinnlab._seeding import derive_seed
from pinnlab.solvers import Adam, make_train_step

from .small_problems import F64, problem, stein


def test_each_chunk_draws_its_own_noise_stream(monkeypatch):
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
