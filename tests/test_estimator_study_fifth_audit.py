"""Fifth mutation audit of the estimator study (pinnlab/studies/estimator_study.py).

The records come in the grid's order (per d and σ: noise, then K, then loss), the order
the HDF5 rows and the printed table keep."""

from __future__ import annotations

from pinnlab.studies.estimator_study import EstimatorStudySpec

from .test_estimator_study_third_audit import _fake_study


def _tiny(**changes) -> EstimatorStudySpec:
    settings = dict(equation="poisson_two_body", dims=(3,), samples=(4,), sigmas=(0.1,), noise=("shared",),
                    quantities=("loss",), losses=("biased",), replicates=3, points=3, reference_samples=8,
                    reference_replicates=3, problem_seed=1, width=8, depth=2)
    return EstimatorStudySpec(**{**settings, **changes})


def test_records_come_per_sigma_in_noise_then_k_then_loss_order(monkeypatch):
    """Two σ, two noise modes, two K, two losses, one quantity: 16 records, σ slowest,
    then noise, then K, then loss (``itertools.product`` of the grid in the spec's order),
    the order the HDF5 rows and the printed table keep."""
    spec = _tiny(sigmas=(0.1, 0.05), noise=("independent", "shared"), samples=(8, 4),
                 losses=("biased", "unbiased"), replicates=2, reference_replicates=2)
    result, _ = _fake_study(monkeypatch, spec)
    order = [(r["sigma"], r["noise"], r["samples"], r["loss"]) for r in result["records"]]
    assert order == [(s, n, k, loss) for s in (0.1, 0.05) for n in ("independent", "shared") for k in (8, 4)
                     for loss in ("biased", "unbiased")]

