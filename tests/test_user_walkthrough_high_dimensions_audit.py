"""A user's walk through high dimensions (d = 10³ to 10⁵) and the README's "Performance"
claims: the memory check before a run (``pinnlab.sizes``) against what the runs held,
the devices and dtypes a run accepts, and the benchmark records the README's --quick
commands write. Measured on the way (2 cores, OMP_NUM_THREADS=1, 2026-12-07): Stein
shared and independent noise and Hutchinson at d = 10³, 10⁴ and 10⁵ (2–5 steps, 20 or
2,000 test points) ran within a minute and peaked at 0.65–2.7 GB RSS, at or above the
check's lower bounds (27 MiB–2.43 GiB); an autograd solve at d = 10⁵ passed the check
(2.62 GiB counted) and was killed by the kernel (exit 137, no message)."""

from __future__ import annotations

import pytest

from pinnlab import config as C
from pinnlab import sizes as S

AC = {
    "equation": {"name": "allen_cahn_two_body", "dim": 10000, "seed": 1},
    "model": {"width": 128, "depth": 4},
    "estimator": {"kind": "autograd"},
    "loss": {"kind": "biased"},
    "trainer": {"steps": 3, "batch_size": 100, "test_points": 20, "eval_every": 3},
}
MACHINE = 23.5 * 2**30  # this machine's RAM, as machine_memory reported it


def _config(overrides=()):
    return C.validate(C.apply_overrides(AC, list(overrides)))


@pytest.fixture
def this_machine(monkeypatch):
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", int(MACHINE)))


# -- bugs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [64, 1])
def test_the_check_refuses_an_autograd_step_at_d_10000(this_machine, chunk):
    """README: the check refuses a run that cannot fit; "Autograd at d = 10⁴ is skipped: its
    step does not fit in memory ... on the order of 100 GB". ``hessian_columns``' docstring:
    "every chunk's graph is kept for the backward pass to θ, so memory grows with
    N·D·len(coordinates) whatever chunk_size" -- 100 · 10⁴ · 10⁴ float32 values, 37 GiB,
    more than the 23.5 GiB here, so the check must refuse it whatever estimator.chunk_size
    (which its message says to lower) is. Measured: d = 10³ peaks at 3.0 GB RSS, the
    check counted 27 MiB; d = 10⁵ passed the check and was SIGKILLed."""
    with pytest.raises(C.ConfigError, match="needs at least"):
        S.check_sizes(_config([f"estimator.chunk_size={chunk}"]))


def test_the_autograd_step_counts_every_kept_hessian_vector_product():
    """The counted step holds at least N·D·d values of the kept Hessian-vector products
    (the docstring's own growth law), not one batch of estimator.chunk_size of them."""
    moments = S.memory_moments(_config())
    step = sum(t.nbytes for t in moments["a training step"])
    assert step >= 100 * 10000 * 10000 * 4, step


def test_lowering_chunk_size_does_not_let_an_autograd_step_through(monkeypatch):
    """d = 1000, N = 1000 on a 200 MiB machine: refused, and the message no longer says to
    lower estimator.chunk_size (it did, and a lower one passed the check); with
    estimator.chunk_size=1 the step still keeps N·D·d = 10⁹ float32 values (3.7 GiB), so
    it must still be refused."""
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", 200 * 2**20))
    big = ["equation.dim=1000", "trainer.batch_size=1000"]
    with pytest.raises(C.ConfigError, match="needs at least") as refused:
        S.check_sizes(_config(big))
    assert "chunk_size" not in str(refused.value) and "trainer.batch_chunks" in str(refused.value)
    with pytest.raises(C.ConfigError, match="needs at least"):
        S.check_sizes(_config([*big, "estimator.chunk_size=1"]))


# -- behaviour that is right, pinned here ---------------------------------------------------
def test_the_readmes_d_100000_solve_fits_and_its_bound_is_below_its_measured_peak():
    """README "A whole solve at d = 10⁵" (shared noise, biased, 20 test points, eval_samples
    16) measured 1.2 GiB peak RSS (1.5 GiB here): the check's lower bound for it stays
    below that (328 MiB, its largest moment a training step), so the run is let through."""
    config = C.validate(C.apply_overrides(AC, [
        "equation.dim=100000", "estimator={kind: stein, sigma: 0.01, samples: 128, noise: shared, "
        "eval_samples: 16}", "trainer.steps=5", "trainer.eval_every=5"]))
    moments = S.memory_moments(config)
    totals = {name: sum(t.nbytes for t in tensors) for name, tensors in moments.items()}
    assert max(totals, key=totals.get) == "a training step"
    assert 300 * 2**20 < totals["a training step"] < 1.2 * 2**30, totals


def test_independent_noise_at_d_100000_names_the_draw_and_batch_chunks_let_it_fit(this_machine):
    """N = 1000 points of independent noise at d = 10⁵ (K = 128): the draw alone is
    1000 × 128 × 10⁵ float32 values, 47.7 GiB; the refusal says so and names raising
    trainer.batch_chunks, and 10 chunks (a 5.4 GiB step) are let through."""
    stein = "estimator={kind: stein, sigma: 0.01, samples: 128, noise: independent}"
    big = ["equation.dim=100000", stein, "trainer.batch_size=1000"]
    with pytest.raises(C.ConfigError) as refused:
        S.check_sizes(_config(big))
    message = str(refused.value)
    assert "needs at least 48.6 GiB" in message and "more than this machine's 23.5 GiB of RAM" in message
    assert "the noise draw ξ of a training step, 1000 × 128 × 100000 values, 47.7 GiB" in message
    assert message.endswith("lower trainer.batch_size (or raise trainer.batch_chunks), estimator.samples, "
                            "equation.dim"), message
    S.check_sizes(_config([*big, "trainer.batch_chunks=10"]))
