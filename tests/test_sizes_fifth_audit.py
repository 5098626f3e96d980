"""Fifth mutation audit of the pre-flight memory estimate (``pinnlab.sizes``): what the
earlier tests let through.

The cgroup limit read in a container (a group path holding a colon; a group path that is
not mounted, so the limit is the mount root's, for cgroup v2 and v1), and in
``memory_moments`` on the tiny configs of tests/test_config_sizes_rules.py, counted by
hand: an estimator study's lone noise group and the points its estimates hold, a soft
constraint without Stein and its boundary samples, Hutchinson's probes of a
time-dependent equation, a DeepXDE step, an autograd residual objective's points, a
shared-noise objective draw, the drawing of a tuning objective's points and the run-dtype
copy of trained observations. Each test names the change it catches.
"""

from __future__ import annotations

import pytest

from pinnlab import sizes as S
from tests.test_config_sizes_rules import RESIDUAL_TUNE, SMALL, STUDY, _config
from tests.test_nets_sizes_second_audit import HELD

MIB = 2**20
FULL = ("RAM", 2**30 + MIB)
"""RAM and swap of the fake machine of the cgroup tests: 1 GiB of RAM, 1 MiB of swap."""


@pytest.fixture
def cgroup(tmp_path, monkeypatch):
    """A fake machine (1 GiB of RAM, 1 MiB of swap) whose cgroup files are written by the
    returned function: ``limits(proc_text, {path: text})`` gives ``machine_memory("cpu")``."""
    meminfo, root, proc = tmp_path / "meminfo", tmp_path / "cgroup", tmp_path / "proc_cgroup"
    meminfo.write_text("MemTotal:  1048576 kB\nSwapTotal:  1024 kB\n")
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(S, "_CGROUP", str(root))
    monkeypatch.setattr(S, "_PROC_CGROUP", str(proc))

    def limits(proc_text, files):
        proc.write_text(proc_text)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return S.machine_memory("cpu")

    return limits


# -- the cgroup limit ---------------------------------------------------------------------------
def test_a_cgroup_path_holding_a_colon_is_read_whole(cgroup):
    """/proc/self/cgroup lines are hierarchy:controllers:path, split at the first two
    colons only: a v2 group /job:1 is read from cgroup/job:1 (caught: every colon split,
    the line unpacked into too many fields and the limit lost to a ValueError)."""
    assert cgroup("0::/job:1\n", {"job:1/memory.max": f"{64 * MIB}\n", "job:1/memory.swap.max": "0\n"}) == (
        "RAM (its cgroup's limit)", 64 * MIB)


def test_an_unmounted_v2_group_falls_back_to_the_mounts_root(cgroup):
    """In a container without its own cgroup namespace /proc/self/cgroup names the host's
    path (0::/docker/abc) while /sys/fs/cgroup is the container's group itself: with no
    such directory the root's memory.max (+ the machine's swap, memory.swap.max absent)
    is the limit (caught: only the named path read, the container's limit ignored)."""
    assert cgroup("0::/docker/abc\n", {"memory.max": f"{64 * MIB}\n"}) == ("RAM (its cgroup's limit)", 65 * MIB)


def test_an_unmounted_v1_group_falls_back_to_the_memory_controllers_root(cgroup):
    """cgroup v1 likewise: 4:memory:/docker/abc with only cgroup/memory's own
    memory.limit_in_bytes, 32 MiB + the machine's 1 MiB of swap (caught: only the
    named path read)."""
    assert cgroup("4:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": f"{32 * MIB}\n"}) == (
        "RAM (its cgroup's limit)", 33 * MIB)
    # (memsw read there too: 40 MiB of RAM + swap with the RAM itself unlimited, ~2**63)
    assert cgroup("4:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                              "memory/memory.memsw.limit_in_bytes": f"{40 * MIB}\n"}) == (
        "RAM (its cgroup's limit)", 40 * MIB)


# -- an estimator study's names -----------------------------------------------------------------
def test_a_single_noise_group_is_not_numbered():
    """With the gradient quantity the biased loss is one draw: its tensors are named
    without ", noise group 1", while the reference's two groups are numbered 1 and 2
    (caught: a lone group numbered too)."""
    moments = S.memory_moments(_config([*STUDY, "study.quantities=[gradient]", "study.losses=[biased]"]))
    estimates = [t.what for t in moments["an estimator study's estimates (independent noise)"]
                 if t.what.startswith(("the noise draw", "the hidden activations"))]
    assert estimates == ["the noise draw ξ of the study's estimates", "the hidden activations of the study's estimates"]
    reference = [t.what for t in moments["an estimator study's reference"] if t.what.startswith("the noise draw")]
    assert reference == ["the noise draw ξ of the study's reference, noise group 1",
                         "the noise draw ξ of the study's reference, noise group 2"]


# -- a training step's estimators, counted by hand ----------------------------------------------
@pytest.mark.parametrize("kind", ["autograd", "hutchinson"])
def test_a_soft_constraint_without_stein_draws_no_boundary_noise(kind):
    """The boundary term evaluates the raw network unless the estimator is Stein's: an
    autograd or Hutchinson run with 6 boundary points holds their (6, 3) points and no
    boundary draw or activations (caught: the boundary's Stein tensors counted for every
    estimator)."""
    step = S.memory_moments(_config([f"estimator.kind={kind}", "equation.constraint=soft",
                                      "loss.boundary_points=6"]))["a training step"]
    boundary = [(t.what, t.shape) for t in step if "boundary" in t.what]
    assert boundary == [("the boundary points", (6, 3))]
    assert not [t for t in step if "ξ" in t.what or "activations" in t.what]


def test_a_time_dependent_equations_hutchinson_probes_span_every_input():
    """Hutchinson draws its probes like the inputs, (V, N, x.shape[1]): burgers at d = 3
    has D = 4 (time included), so V = 5 independent probes of 10 points are 5 × 10 × 4 in
    the products, the probes and their int64 bits (caught: d = 3 spatial inputs only)."""
    config = _config(["equation.name=burgers", "estimator.kind=hutchinson", "estimator.probes=5"])
    step = {t.what: t for t in S.memory_moments(config)["a training step"]}
    for what, itemsize in (("the Hessian-vector products of a training step", 4),
                           ("the probes of a training step", 4), ("the probes' random bits of a training step", 8)):
        assert (step[what].shape, step[what].nbytes) == ((5, 10, 4), 5 * 10 * 4 * itemsize), what


# -- a DeepXDE step and a tuning objective, counted by hand --------------------------------------
def test_a_deepxde_step_counted_by_hand():
    """DeepXDE's PDE data holds num_domain = num_test = trainer.batch_size points (10, not
    the 1000 test points pinnlab evaluates), float32, beside the network build made and
    adam's θ and moments (HELD): 1408 + 3 × 10 × 3 × 4 bytes (caught: DeepXDE's test
    points sized by trainer.test_points, the network and its state left out)."""
    data = {k: v for k, v in SMALL.items() if k != "estimator"}
    config = _config(["trainer.backend=deepxde", "trainer.schedule=constant", "trainer.test_points=1000"], data)
    step = S.memory_moments(config)["a DeepXDE training step"]
    assert [(t.what, t.shape) for t in step][4:] == [
        ("a DeepXDE step's points", (10, 3)), ("DeepXDE's test points", (10, 3)),
        ("the input gradient of a DeepXDE step's Laplacian", (10, 3))]
    assert sum(t.nbytes for t in step) == HELD + 3 * 10 * 3 * 4 == 1768


def test_an_autograd_residual_objective_holds_its_points_beside_the_products():
    """The objective's 7 points (float32, 7 × 3) are alive while autograd's batch of 3
    Hessian-vector products (3, 7, 3) is made: HELD + 84 + 252 bytes (caught: the
    objective's points left out of its moment)."""
    config = _config([*RESIDUAL_TUNE, "tune.objective.estimator=autograd", "tune.objective.points=7"])
    objective = S.memory_moments(config)["the tuning objective"]
    assert [(t.what, t.shape) for t in objective][4:] == [
        ("the tuning objective's points", (7, 3)), ("the Hessian-vector products of the tuning objective", (3, 7, 3))]
    assert sum(t.nbytes for t in objective) == HELD + 7 * 3 * 4 + 3 * 7 * 3 * 4 == 1744


# -- which samples and which noise --------------------------------------------------------------
def test_a_soft_constraints_boundary_term_draws_the_training_samples_not_eval_samples():
    """The boundary term is smoothed by the training estimator (K = estimator.samples =
    4), not the evaluation's eval_samples = 6: 5 boundary points draw (5, 4, 3) and keep
    two hidden layers' (5, 2, 4, 8) activations (caught: eval_samples taken)."""
    step = {t.what: t for t in S.memory_moments(_config(["estimator.eval_samples=6", "equation.constraint=soft",
                                                         "loss.boundary_points=5"]))["a training step"]}
    draw, activations = step["the noise draw ξ of the boundary term"], step["the hidden activations of the boundary term"]
    assert (draw.shape, activations.shape, activations.copies) == ((5, 4, 3), (5, 2, 4, 8), 2)
    assert draw.settings == ("loss.boundary_points", "estimator.samples", "equation.dim")


def test_a_shared_noise_residual_objective_draws_one_k_by_d_noise():
    """The Stein residual objective smooths with the estimator section's noise: shared,
    its K = 4 samples are one (4, 3) draw for all 7 points, lowered by the samples and d
    only (caught: the objective sized as independent noise whatever the run's)."""
    config = _config([*RESIDUAL_TUNE, "estimator.noise=shared", "tune.objective.samples=4",
                      "tune.objective.points=7"])
    objective = {t.what: t for t in S.memory_moments(config)["the tuning objective"]}
    draw = objective["the noise draw ξ of the tuning objective"]
    assert (draw.shape, draw.nbytes) == ((4, 3), 4 * 3 * 4)
    assert draw.settings == ("tune.objective.samples", "equation.dim")
    assert objective["the hidden activations of the tuning objective"].shape == (7, 2, 4, 8)


# -- every moment holds what is drawn before it, counted by hand ---------------------------------
def test_an_estimator_studys_estimates_hold_the_studys_points():
    """The study's 64 points (float32, 64 × 3) are drawn once and held through the
    estimates as through the reference: HELD + 768 + the (64, 8, 3) draw + two hidden
    layers' (64, 2, 8, 8) activations, with shared noise one (8, 3) draw (caught: the
    points counted in the reference only)."""
    moments = S.memory_moments(_config([*STUDY, "study.quantities=[gradient]", "study.losses=[biased]",
                                        "study.noise=[independent, shared]"]))
    points, activations = 64 * 3 * 4, 2 * 64 * 2 * 8 * 8 * 4
    for noise, draw in (("independent", 64 * 8 * 3 * 4), ("shared", 8 * 3 * 4)):
        tensors = moments[f"an estimator study's estimates ({noise} noise)"]
        assert [(t.what, t.shape) for t in tensors if t.what == "the study's points"] == [("the study's points", (64, 3))]
        assert sum(t.nbytes for t in tensors) == HELD + points + draw + activations, noise


def test_drawing_a_tuning_objectives_points_holds_the_network_beside_them():
    """A reference objective's 7 points are drawn in float64 (host) and copied to float32
    while the network and adam state exist: HELD + 7 × 3 × (8 + 4) = 1660 bytes (caught:
    the network left out of that moment)."""
    config = _config(["tune.tunables={sigma: {}}", "tune.objective.kind=reference", "tune.objective.points=7"])
    drawing = S.memory_moments(config)["drawing the tuning objective's points"]
    assert [t.what for t in drawing][4:] == ["the tuning objective's points, drawn in float64",
                                             "the tuning objective's points"]
    assert sum(t.nbytes for t in drawing) == HELD + 7 * 3 * 8 + 7 * 3 * 4 == 1660


def test_observations_trained_on_are_held_in_float64_and_copied_to_the_run_dtype():
    """data.train with 50 synthetic observations: the float64 array on the host (8 bytes
    a value) and the step's copy in float32 (4 bytes) on the run's device, 50 × 3 each
    (caught: the copy counted at 8 bytes)."""
    step = S.memory_moments(_config(["data.train=true", "data.points=50"]))["a training step"]
    observations = [(t.shape, t.itemsize, t.host, t.nbytes) for t in step if t.what == "the observations"]
    assert observations == [((50, 3), 8, True, 50 * 3 * 8), ((50, 3), 4, False, 50 * 3 * 4)]
