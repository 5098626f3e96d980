"""The memory estimate's rules (``sizes.memory_moments``, ``sizes.check_sizes``) that the
machine-sized refusals of tests/test_config_sizes.py pass either way, shape by shape:
the time input, a batch of Hessian-vector products, what an optimizer keeps, the
float32 copies of the test set and of a tuning's observations, what a study that trains
nothing counts, the largest of two phases' unrolls, an estimator study's draws, and the
bounds of the refusals themselves (a need equal to the memory fits, a tensor of exactly
torch's most elements is no overflow)."""

from __future__ import annotations

import pytest

from pinnlab import config as C
from pinnlab import sizes as S

SMALL = {
    "equation": {"name": "poisson_two_body", "dim": 3},
    "model": {"width": 8, "depth": 3},
    "estimator": {"samples": 4, "noise": "independent"},
    "trainer": {"steps": 2, "batch_size": 10, "test_points": 10},
}
RESIDUAL_TUNE = ["tune.tunables.weights.residual={}", "tune.objective.kind=residual"]


def _config(overrides=(), data=SMALL):
    return C.validate(C.apply_overrides(data, list(overrides)))


def _moment(name: str, overrides=(), data=SMALL) -> dict[str, list[S.SizedTensor]]:
    """The tensors of moment ``name`` of SMALL with ``overrides``, by what they are."""
    out: dict[str, list[S.SizedTensor]] = {}
    for t in S.memory_moments(_config(overrides, data))[name]:
        out.setdefault(t.what, []).append(t)
    return out


def test_a_time_dependent_equation_counts_time_as_an_input():
    """burgers at d = 3 takes (x, t): D = 4 inputs, in the points, the first layer and the
    noise draw ξ (Stein perturbs every input, time included)."""
    step = _moment("a training step", ["equation.name=burgers"])
    assert step["a training step's points"][0].shape == (10, 4)
    assert step["the network's first layer"][0].shape == (8, 4)
    assert step["the noise draw ξ of a training step"][0].shape == (10, 4, 4)


def test_a_training_step_keeps_all_d_hessian_vector_products_whatever_the_chunk_size():
    """Autograd's second derivatives come in batches of estimator.chunk_size products, but
    a training step keeps every batch's graph for its backward pass to θ: all d products
    of (N, D) at d = 3, with chunk_size 2 too (counted as one batch of chunk_size, an
    autograd step at d = 10⁴ passed the check with 269 MiB and needed ~100 GB; lowering
    chunk_size, which the refusal advised, passed it without saving memory)."""
    for chunk in ([], ["estimator.chunk_size=2"]):
        step = _moment("a training step", ["estimator.kind=autograd", *chunk])
        products = step["the Hessian-vector products of a training step"][0]
        assert products.shape == (3, 10, 3) and "estimator.chunk_size" not in products.settings


def test_an_autograd_residual_objective_takes_the_estimators_chunk_size():
    """A search only evaluates the tuning objective: its Hessian-vector products come in
    the run's autograd chunks (estimator.chunk_size 2: 2 of them), not the default 64 (3
    at d = 3); a hypergradient method differentiates it and keeps all 3 whatever the
    chunk_size."""
    overrides = [*RESIDUAL_TUNE, "tune.objective.estimator=autograd", "estimator.kind=autograd"]
    objective = _moment("the tuning objective", [*overrides, "estimator.chunk_size=2", "tune.method=random"])
    assert objective["the Hessian-vector products of the tuning objective"][0].shape == (2, 256, 3)
    objective = _moment("the tuning objective", [*overrides, "tune.method=random"])
    assert objective["the Hessian-vector products of the tuning objective"][0].shape == (3, 256, 3)
    objective = _moment("the tuning objective", [*overrides, "estimator.chunk_size=2"])
    assert objective["the Hessian-vector products of the tuning objective"][0].shape == (3, 256, 3)


@pytest.mark.parametrize("overrides, copies", [([], 3), (["trainer.optimizer=sgd"], 2),
                                               (["trainer.optimizer=sgd", "trainer.momentum=0"], 1)])
def test_the_optimizer_state_is_theta_and_its_moments(overrides, copies):
    """adam keeps θ and two moments, SGD with momentum θ and one buffer, plain SGD
    (momentum 0, an empty state) θ alone."""
    step = _moment("a training step", overrides)
    assert step["the first layer's θ and optimizer state"][0].copies == copies
    assert step["the hidden layers' θ and optimizer state"][0].copies == copies  # (depth 3: one hidden layer)


def test_a_float32_run_draws_its_test_set_in_float64_and_keeps_a_copy():
    """The test set is drawn in float64 on the host and copied to the run's float32; a
    float64 run has the one array."""
    drawn = _moment("drawing the test set")
    assert [(t.itemsize, t.host) for t in drawn["the test set, drawn in float64"]] == [(8, True)]
    assert [(t.shape, t.itemsize) for t in drawn["the test set"]] == [((10, 3), 4)]
    assert "the test set" not in _moment("drawing the test set", ["trainer.dtype=float64"])


def test_a_tunings_observations_are_copied_to_the_run_dtype_for_the_objective_only():
    """A data objective holds the observations in float64 on the host throughout, and in a
    float32 run a float32 copy of them for the tuning; without data.train a training step
    does not fit them, so it holds no copy of its own."""
    overrides = ["data.points=50", "tune.tunables={sigma: {}}", "tune.objective.kind=data"]
    tuning = _moment("a tuning step", overrides)
    assert sorted((t.itemsize, t.host) for t in tuning["the observations"]) == [(4, False), (8, True)]
    step = _moment("a training step", overrides)
    assert [(t.itemsize, t.host) for t in step["the observations"]] == [(8, True)]
    float64 = _moment("a tuning step", [*overrides, "trainer.dtype=float64"])
    assert [(t.itemsize, t.host) for t in float64["the observations"]] == [(8, True)]


def test_an_estimator_study_from_a_network_file_trains_nothing(tmp_path):
    """study.init naming a result file loads its network: no training step, no test set
    (only study.init: trained trains before the study)."""
    network = tmp_path / "net.h5"
    network.write_bytes(b"")
    data = C.apply_overrides(SMALL, ["study.kind=estimator", f"study.init={network}", "study.samples=[4]",
                                     "study.reference_samples=16"])
    data["trainer"], data["estimator"] = {}, {}
    moments = S.memory_moments(C.validate(data))
    assert sorted(moments) == ["an estimator study's estimates (independent noise)",
                               "an estimator study's estimates (shared noise)", "an estimator study's reference"]


def test_the_longer_of_two_phases_unrolls_is_kept():
    """trgu (s = 3) then rgu (T = 10): the rgu phase keeps all 10 steps, so the unroll is
    counted at 10 steps, not at trgu's 3."""
    unroll = _moment("a reverse-mode unroll", [*RESIDUAL_TUNE, "tune.objective.samples=4", "tune.method=trgu",
                                               "tune.options.steps=3", "tune.then={method: rgu, after: 1}",
                                               "tune.horizon=10"])
    kept = unroll["the hidden activations of a training step (kept for each of 10 unrolled steps)"][0]
    # (depth − 1 = 2 hidden layers, each's pre-activation and output, per kept step)
    assert kept.copies == 2 * 2 * 10 and kept.settings[0] == "tune.horizon"


STUDY = ["study.kind=estimator", "study.samples=[8]", "study.points=64", "study.reference_samples=16"]


def _draws(*settings):
    """(shape, count) of the noise draws of the study's estimates (independent noise)."""
    tensors = S.memory_moments(_config([*STUDY, *settings]))["an estimator study's estimates (independent noise)"]
    draws = [t.shape for t in tensors if t.what.startswith("the noise draw")]
    return draws[0], len(draws)


def test_a_split_unbiased_estimate_draws_half_the_samples_per_group():
    """study.unbiased_samples split: the unbiased loss's K = 8 samples are two groups of 4
    (with the gradient quantity both groups' graphs are kept); same: two groups of 8."""
    assert _draws("study.quantities=[gradient]", "study.losses=[unbiased]", "study.unbiased_samples=split") == (
        (64, 4, 3), 2)
    assert _draws("study.quantities=[gradient]", "study.losses=[unbiased]", "study.unbiased_samples=same") == (
        (64, 8, 3), 2)


def test_without_the_gradient_quantity_the_largest_single_draw_counts():
    """One draw at a time: the biased loss's K = 8 samples, larger than a split unbiased
    estimate's groups of 4 (whose two groups, never held together, do not count twice)."""
    assert _draws("study.quantities=[residual, loss]", "study.losses=[unbiased, biased]",
                  "study.unbiased_samples=split") == ((64, 8, 3), 1)


def test_a_need_equal_to_the_memory_fits(monkeypatch):
    """Refused only when the lower bound exceeds the memory: a run needing exactly the
    machine's bytes is let through, one byte less memory refuses it."""
    config = _config()
    need = max(sum(t.nbytes for t in tensors) for tensors in S.memory_moments(config).values())
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", need))
    S.check_sizes(config)
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", need - 1))
    with pytest.raises(C.ConfigError, match=f"^this run needs at least {need / 1024:.3g} KiB of memory at once"):
        S.check_sizes(config)


def test_a_tensor_of_exactly_torchs_most_elements_is_no_overflow(monkeypatch):
    """TORCH_SIZE_LIMIT (2**63 - 1) elements is what torch's signed 64-bit sizes hold: only
    more is an OverflowError (then the memory check, here of an unknown memory, decides)."""
    def moments(shape):
        return lambda config, observations=None: {"a step": [S.SizedTensor("x", shape, 4, ("model.width",))]}

    monkeypatch.setattr(S, "machine_memory", lambda device: ("", None))
    monkeypatch.setattr(S, "memory_moments", moments((S.TORCH_SIZE_LIMIT, 1)))
    S.check_sizes(_config())
    monkeypatch.setattr(S, "memory_moments", moments((2**62, 2)))
    with pytest.raises(OverflowError, match=r"^x: 4611686018427387904 × 2 elements"):
        S.check_sizes(_config())


def test_byte_counts_change_unit_at_1024():
    assert [S._format_bytes(n) for n in (1023, 1024, 1536, 2**20 - 1, 2**20, 2**30)] == [
        "1023 B", "1 KiB", "1.5 KiB", "1.02e+03 KiB", "1 MiB", "1 GiB"]


def test_a_cgroup_limit_equal_to_ram_and_swap_is_no_limit(tmp_path, monkeypatch):
    """"(its cgroup's limit)" is named only when the limit is below RAM + swap."""
    meminfo, root, proc = tmp_path / "meminfo", tmp_path / "cgroup", tmp_path / "proc_cgroup"
    meminfo.write_text("MemTotal:  1024 kB\nSwapTotal:  1024 kB\n")
    (root / "job").mkdir(parents=True)
    (root / "job" / "memory.max").write_text(f"{2**20}\n")
    proc.write_text("0::/job\n")
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(S, "_CGROUP", str(root))
    monkeypatch.setattr(S, "_PROC_CGROUP", str(proc))
    assert S.machine_memory("cpu") == ("RAM", 2 * 2**20)  # 1 MiB + the 1 MiB of swap it may use
    (root / "job" / "memory.swap.max").write_text(f"{2**20 - 1}\n")
    assert S.machine_memory("cpu") == ("RAM (its cgroup's limit)", 2 * 2**20 - 1)
