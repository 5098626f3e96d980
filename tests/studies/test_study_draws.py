"""Which draws an estimator study makes: every replicate of every cell (K, noise, loss)
and of the reference draws from its own noise stream, and the reference is
``reference_replicates`` draws of the *unbiased* loss at ``reference_samples``, the
cells ``replicates`` draws at K (biased) or K/2 (unbiased, split) samples per draw.

The statistics cannot see these slips: a reference that repeats one draw (all reference
replicates alike), the biased loss as reference (its bias, Var R̂ at K_ref, is far below
the standard errors at K_ref = 512), or the same noise for two cells (correlated cells,
while the comparisons' z and the slopes' SE assume independent ones)."""

from __future__ import annotations

from collections import Counter

from pinnlab.studies import estimator_study
from pinnlab.studies.estimator_study import EstimatorStudySpec, run_estimator_study

REPLICATES, REFERENCE_REPLICATES, REFERENCE_SAMPLES = 4, 5, 16


def _spec(**changes) -> EstimatorStudySpec:
    settings = dict(equation="poisson_two_body", dims=(3,), samples=(4, 8), sigmas=(0.1,),
                    noise=("independent", "shared"), quantities=("loss",), replicates=REPLICATES, points=3,
                    reference_samples=REFERENCE_SAMPLES, reference_replicates=REFERENCE_REPLICATES, problem_seed=1,
                    width=8, depth=2)
    return EstimatorStudySpec(**{**settings, **changes})


def test_every_replicate_of_every_cell_and_of_the_reference_draws_its_own_noise(monkeypatch):
    """5 reference replicates + 2 noise modes × 2 K × 2 losses × 4 replicates: 37 noise
    generators, no two with the same seed."""
    seeds = []
    real = estimator_study.make_generator

    def spy(*parts, device=None):
        generator = real(*parts, device=device)
        if "study-points" not in parts:
            seeds.append(generator.initial_seed())
        return generator

    monkeypatch.setattr(estimator_study, "make_generator", spy)
    run_estimator_study(_spec())
    assert len(seeds) == REFERENCE_REPLICATES + 2 * 2 * 2 * REPLICATES
    assert len(set(seeds)) == len(seeds)


def _draws(monkeypatch, spec) -> Counter:
    """(samples per draw, noise, loss kind) of every evaluation the study makes."""
    calls = Counter()

    class Spy(estimator_study._Quantities):
        def all(self, estimator, generator, kind, quantities):
            calls[(estimator.num_samples, estimator.noise, kind)] += 1
            return super().all(estimator, generator, kind, quantities)

    monkeypatch.setattr(estimator_study, "_Quantities", Spy)
    run_estimator_study(spec)
    return calls


def test_the_reference_and_the_cells_are_the_draws_the_spec_names(monkeypatch):
    expected = Counter({(REFERENCE_SAMPLES, "independent", "unbiased"): REFERENCE_REPLICATES})
    for noise in ("independent", "shared"):
        for k in (4, 8):
            expected[(k, noise, "biased")] += REPLICATES
            expected[(k // 2, noise, "unbiased")] += REPLICATES
    assert _draws(monkeypatch, _spec()) == expected
    same = _draws(monkeypatch, _spec(samples=(3,), noise=("shared",), unbiased_samples="same"))
    assert same == Counter({(REFERENCE_SAMPLES, "independent", "unbiased"): REFERENCE_REPLICATES,
                            (3, "shared", "biased"): REPLICATES, (3, "shared", "unbiased"): REPLICATES})
