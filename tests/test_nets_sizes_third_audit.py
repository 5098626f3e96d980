"""Third mutation audit of the networks (``pinnlab.nets``) and the pre-flight memory estimate
(``pinnlab.sizes``): what the earlier tests let through.

All in ``sizes.memory_moments``, shape by shape on the tiny configs of
tests/test_config_sizes_rules.py: the shared noise draw of a time-dependent equation (Stein
perturbs time too, so it is (K, d + 1)) and the settings that shrink a shared draw (not the
number of points); trgu's default truncation min(5, T) on a horizon shorter than 5; and a
chunk larger than the points it chunks (an estimator study's, a search's objective), which
is one chunk of all the points, not of chunk_size points.
"""

from __future__ import annotations

from pinnlab import sizes as S
from pinnlab.bilevel.reverse import DEFAULT_TRUNCATION
from tests.test_config_sizes_rules import RESIDUAL_TUNE, STUDY, _config, _draws, _moment


def _only(tensors: dict[str, list[S.SizedTensor]], what: str) -> S.SizedTensor:
    (tensor,) = tensors[what]
    return tensor


# -- a shared noise draw: (K, D) with time among the D inputs, sized by K and D only ----------------
def test_a_time_dependent_equations_shared_draw_perturbs_time_too():
    """burgers at d = 3 with shared noise: the estimator draws ξ of (K, x.shape[1]) = (5, 4),
    time included (as the independent draw's (N, K, 4)), 5·4 float32 values."""
    step = _moment("a training step", ["equation.name=burgers", "estimator.noise=shared", "estimator.samples=5"])
    draw = _only(step, "the noise draw ξ of a training step")
    assert draw.shape == (5, 4) and draw.nbytes == 5 * 4 * 4
    assert _only(step, "the hidden activations of a training step").shape == (10, 2, 5, 8)


def test_a_shared_draw_is_lowered_by_samples_and_dim_not_by_the_batch():
    """One (K, D) draw for all points: the message names estimator.samples and
    equation.dim; an independent (N, K, D) draw names the batch first."""
    shared = _only(_moment("a training step", ["estimator.noise=shared"]), "the noise draw ξ of a training step")
    assert shared.shape == (4, 3)
    assert shared.settings == ("estimator.samples", "equation.dim")
    independent = _only(_moment("a training step"), "the noise draw ξ of a training step")
    assert independent.shape == (10, 4, 3)
    assert independent.settings == ("trainer.batch_size (or raise trainer.batch_chunks)", "estimator.samples",
                                    "equation.dim")


# -- trgu's default truncation is at most the horizon ---------------------------------------------
def test_trgu_without_steps_keeps_at_most_the_horizons_steps():
    """s = min(5, T) (bilevel/reverse.py): a horizon of 3 unrolls 3 steps, not 5; a horizon
    of 10 keeps the last 5."""
    assert DEFAULT_TRUNCATION == 5
    trgu = [*RESIDUAL_TUNE, "tune.objective.samples=4", "tune.method=trgu"]
    for horizon, kept in ((3, 3), (10, 5)):
        unroll = _moment("a reverse-mode unroll", [*trgu, f"tune.horizon={horizon}"])
        activations = _only(unroll, f"the hidden activations of a training step (kept for each of {kept} "
                                    "unrolled steps)")
        assert activations.copies == 2 * 2 * kept and activations.settings[0] == "tune.horizon"
        theta = _only(unroll, f"the hidden layers' θ and their update's tensors (kept for each of {kept} unrolled "
                              "steps)")
        assert theta.copies == 5 * kept  # what adam's update of the one hidden layer keeps, per step


# -- a chunk larger than its points is one chunk of all of them -------------------------------------
def test_an_estimator_studys_chunk_larger_than_its_points_holds_only_the_points():
    """study.points = 6 in chunks of 16: one chunk of 6 points, draws (6, K, D)."""
    assert _draws("study.points=6", "estimator.chunk_size=16") == ((6, 8, 3), 1)
    reference = S.memory_moments(_config([*STUDY, "study.points=6", "estimator.chunk_size=16"]))[
        "an estimator study's reference"]
    draws = [t.shape for t in reference if t.what.startswith("the noise draw")]
    assert draws == [(6, 16, 3)] * 2  # the reference's 16 samples, both noise groups (the default gradient quantity)


def test_a_searchs_objective_chunk_larger_than_its_points_holds_only_the_points():
    """random search evaluates its 10 objective points in chunks of 16: one chunk of 10,
    (10, K, D) draw and one layer's (10, 2, K, w) activations, not 16 rows."""
    objective = _moment("the tuning objective", [*RESIDUAL_TUNE, "tune.objective.samples=4", "tune.method=random",
                                                 "estimator.chunk_size=16", "tune.objective.points=10"])
    assert _only(objective, "the noise draw ξ of the tuning objective").shape == (10, 4, 3)
    activations = _only(objective, "the hidden activations of the tuning objective")
    assert (activations.shape, activations.copies) == ((10, 2, 4, 8), 1)
    assert activations.nbytes == 10 * 2 * 4 * 8 * 4
