"""The memory estimate's tensors (``sizes.memory_moments``) shape by shape, for settings
whose effect the machine-sized refusals of tests/test_config_sizes.py do not separate:
the dtype's bytes alone, an uneven split of the batch into chunks."""

from __future__ import annotations

from pinnlab import config as C
from pinnlab import sizes as S

SMALL = {
    "equation": {"name": "poisson_two_body", "dim": 3},
    "model": {"width": 8, "depth": 3},
    "estimator": {"samples": 4, "noise": "independent"},
    "trainer": {"steps": 2, "batch_size": 10, "test_points": 10},
}


def _step(overrides=()) -> dict[str, S.SizedTensor]:
    """The tensors of a training step of SMALL with ``overrides``, by what they are."""
    config = C.validate(C.apply_overrides(SMALL, list(overrides)))
    return {t.what: t for t in S.memory_moments(config)["a training step"]}


def test_float64_doubles_every_tensor_of_the_run_dtype():
    """Same settings, another dtype: each run-dtype tensor has 8-byte elements, not 4."""
    single, double = _step(), _step(["trainer.dtype=float64"])
    for what in ("the noise draw ξ of a training step", "the hidden activations of a training step",
                 "a training step's points", "the test set"):
        assert (single[what].itemsize, double[what].itemsize) == (4, 8), what
        assert double[what].nbytes == 2 * single[what].nbytes, what
    # the float32 network build makes (on the host) is the same in both
    assert double["the network's first layer"].nbytes == single["the network's first layer"].nbytes == 8 * 3 * 4


def test_an_uneven_chunk_split_counts_its_largest_chunk():
    """10 points in 3 chunks are chunks of 4, 3 and 3 (torch.tensor_split): the first, of
    4 points, sizes the estimate; the whole batch's points are held as well."""
    step = _step(["trainer.batch_chunks=3"])
    assert step["the noise draw ξ of a training step"].shape == (4, 4, 3)
    assert step["the hidden activations of a training step"].shape == (4, 2, 4, 8)
    assert step["the hidden activations of a training step"].copies == 2  # depth 3: two hidden layers' kept
    assert step["a training step's points"].shape == (10, 3)
    assert _step(["trainer.batch_chunks=5"])["the noise draw ξ of a training step"].shape == (2, 4, 3)


def test_a_tunings_observations_are_held_without_data_train():
    """A data objective reads the observations (float64, on the host) throughout the
    tuning, data.train or not: their (points, D) array is part of every moment (a tuning
    step holds a copy in the run's dtype besides)."""
    config = C.validate(C.apply_overrides(SMALL, ["data.points=50", "tune.tunables={sigma: {}}",
                                                  "tune.objective.kind=data"]))
    for moment, tensors in S.memory_moments(config).items():
        held = [t for t in tensors if t.what == "the observations"]
        assert ((50, 3), 8, True) in [(t.shape, t.itemsize, t.host) for t in held], moment


def test_an_estimator_studys_estimates_are_sized_by_its_chunk():
    """estimator.chunk_size points at a time: the study's draws are (chunk, K, D), not
    (study.points, K, D)."""
    data = C.apply_overrides(SMALL, ["study.kind=estimator", "study.init=fresh", "study.points=100",
                                     "study.samples=[4]", "study.reference_samples=16", "estimator.chunk_size=10"])
    data["trainer"] = {}
    data["estimator"] = {"chunk_size": 10}
    moments = S.memory_moments(C.validate(data))
    draws = [t for t in moments["an estimator study's reference"] if t.what.startswith("the noise draw")]
    assert draws and all(t.shape == (10, 16, 3) for t in draws), draws  # (one per noise group)
    study = [t for t in moments["an estimator study's reference"] if t.what == "the study's points"]
    assert [t.shape for t in study] == [(100, 3)]
