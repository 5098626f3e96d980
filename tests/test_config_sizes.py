"""Sizes this machine cannot hold are refused before any tensor is made, and YAML alias
bombs before they expand.

``config.build`` first compares a lower bound of a run's memory (``sizes.memory_moments``)
with the machine's (``sizes.machine_memory``): ``trainer.batch_size=1000000000`` filled
memory with no message (Linux allows one oversized allocation). The refusals are tested
against a small monkeypatched machine memory, and ``make_equation`` (the first tensor
``build`` makes) is made to fail, so no test allocates what it refuses.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pinnlab import config as C
from pinnlab import sizes as S
from pinnlab.cli import main
from pinnlab.equations import EQUATIONS
from pinnlab.estimators import Autograd
from pinnlab.estimators.base import HessianDiagonal, WeightedLaplacian
from pinnlab.nets import MLP

ROOT = Path(__file__).parents[1]
SMALL = {
    "equation": {"name": "poisson_two_body", "dim": 3},
    "model": {"width": 8, "depth": 3},
    "estimator": {"samples": 4, "eval_samples": 4, "noise": "independent"},
    "trainer": {"steps": 2, "batch_size": 8, "test_points": 10},
}
MACHINE = 64 * 2**20
"""The monkeypatched machine memory: 64 MiB, far above what SMALL needs."""


def _config(data, overrides=()):
    return C.validate(C.apply_overrides(data, list(overrides)))


@pytest.fixture
def small_machine(monkeypatch):
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", MACHINE))

    def no_tensors(section):
        raise AssertionError("build made the equation before refusing the sizes")

    monkeypatch.setattr(C, "make_equation", no_tensors)


def _need(config) -> int:
    return max(sum(t.nbytes for t in tensors) for tensors in S.memory_moments(config).values())


RESIDUAL_TUNE = ["tune.tunables.weights.residual={}", "tune.objective.kind=residual", "tune.objective.samples=4"]

# each case: settings that fit with SMALL, the overrides that make them too large, the part
# the message names as the largest and a setting it says to lower
TOO_LARGE = {
    "independent_draw": ([], ["equation.dim=1000", "estimator.samples=4096"],
                         "the noise draw ξ of a training step, 8 × 4096 × 1000", "estimator.samples"),
    "shared_activations": (["estimator.noise=shared"], ["trainer.batch_size=100000", "estimator.samples=64"],
                           "the hidden activations of a training step, 100000 × 2 × 64 × 8 values × 2",
                           "trainer.batch_size (or raise trainer.batch_chunks)"),
    "autograd": (["estimator.kind=autograd"], ["equation.dim=1000", "trainer.batch_size=1000"],
                 "the Hessian-vector products of a training step, 1000 × 1000 × 1000", "equation.dim"),
    "hutchinson": (["estimator.kind=hutchinson", "estimator.noise=shared", "estimator.probes=64"],
                   ["equation.dim=1000", "trainer.batch_size=1000"],
                   "the Hessian-vector products of a training step, 64 × 1000 × 1000", "estimator.probes"),
    "test_set": ([], ["trainer.test_points=4000000"], "the test set, drawn in float64, 4000000 × 3 values, 91.6 MiB",
                 "trainer.test_points"),
    "evaluation": ([], ["estimator.eval_samples=10000000"],
                   "the hidden activations of an evaluation, 1 × 2 × 10000000 × 8", "estimator.eval_samples"),
    "boundary": (["equation.constraint=soft"], ["loss.boundary_points=1000000"],
                 "the hidden activations of the boundary term", "loss.boundary_points"),
    "observations": (["data.train=true", "data.batch_size=1"], ["data.points=10000000"], "the observations, 10000000 × 3 values, 229 MiB",
                     "data.points"),
    "network": ([], ["model.width=10000"], "the hidden layers' θ and optimizer state, 10000 × 10000 values × 3",
                "model.width"),
    "objective_points": (["tune.tunables.weights.residual={}", "tune.objective.kind=residual",
                          "tune.objective.samples=4"],
                         ["tune.objective.points=10000000"],
                         "the hidden activations of the tuning objective, 10000000 × 2 × 4 × 8",
                         "tune.objective.points"),
    "objective_samples": (["tune.tunables.weights.residual={}", "tune.objective.kind=residual",
                           "tune.objective.points=16"],
                          ["tune.objective.samples=1000000"], "the hidden activations of the tuning objective",
                          "tune.objective.samples"),
    "rgu_horizon": ([*RESIDUAL_TUNE, "tune.method=rgu", "tune.horizon=2"], ["tune.horizon=100000"],
                    "the hidden activations of a training step (kept for each of 100000 unrolled steps), "
                    "8 × 2 × 4 × 8 values × 400000", "tune.horizon"),  # (2 layers, pre-activation and output)
    "trgu_steps": ([*RESIDUAL_TUNE, "tune.method=trgu", "tune.horizon=100000"], ["tune.options.steps=100000"],
                   "the hidden activations of a training step (kept for each of 100000 unrolled steps)",
                   "tune.options.steps"),
    "study_reference": (["study.kind=estimator", "study.samples=[4]", "study.points=64",
                         "study.reference_samples=16"],
                        ["study.reference_samples=1000000"],
                        "the hidden activations of the study's reference, noise group 1, 64 × 2 × 1000000 × 8",
                        "study.reference_samples"),
}


@pytest.mark.parametrize("case", TOO_LARGE, ids=list(TOO_LARGE))
def test_a_run_larger_than_the_machine_is_refused_before_any_tensor(small_machine, case):
    settings, big, part, setting = TOO_LARGE[case]
    small = _config(SMALL, settings)  # the same settings at small sizes fit
    S.check_sizes(small)
    assert _need(small) < MACHINE / 16
    with pytest.raises(C.ConfigError) as info:
        C.build(_config(SMALL, [*settings, *big]))  # (make_equation fails if it is reached)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("this run needs at least ") and "more than this machine's 64 MiB of RAM" in message
    assert f"the largest part: {part}" in message, message
    assert setting in message.split("; lower ")[1].split(", "), message


def test_a_deepxde_run_larger_than_the_machine_is_refused(small_machine):
    """The DeepXDE backend was not counted at all: trainer.batch_size = 10⁹ or d = 2·10⁶
    with 2000 points started DeepXDE, to be killed by the kernel or to fail later with an
    allocation error that named estimator.samples, a setting this backend refuses."""
    data = {**{k: v for k, v in SMALL.items() if k != "estimator"},
            "trainer": {**SMALL["trainer"], "backend": "deepxde", "schedule": "constant"}}
    small = _config(data)
    S.check_sizes(small)
    with pytest.raises(C.ConfigError) as info:
        C.build(_config(data, ["trainer.batch_size=10000000"]))
    message = str(info.value)
    assert "(a DeepXDE training step; the largest part: a DeepXDE step's points, 10000000 × 3 values" in message, \
        message
    assert message.endswith("lower trainer.batch_size, equation.dim"), message


@pytest.mark.parametrize("method", ["fg2u", "hessian_free", "trgu"])
def test_only_reverse_unrolls_grow_with_the_horizon(small_machine, method):
    """rgu keeps all T steps for its backward pass (measured: d = 100, width 64, T = 200,
    peak RSS 6.3 GB against fg2u's 0.5 GB; estimated 0.76 GiB, a lower bound); fg2u, the
    implicit methods and trgu (s = 5 by default) hold one step or s steps whatever T."""
    S.check_sizes(_config(SMALL, [*RESIDUAL_TUNE, f"tune.method={method}", "tune.horizon=100000"]))
    with pytest.raises(C.ConfigError, match="kept for each of 100000 unrolled steps"):
        S.check_sizes(_config(SMALL, [*RESIDUAL_TUNE, "tune.method=fg2u", "tune.then={method: rgu, after: 1}",
                                      "tune.horizon=100000"]))


def test_batch_chunks_divide_the_step_and_dtype_doubles_it(small_machine):
    """The independent draw of the TOO_LARGE case is 125 MiB for 8 points; a quarter of the
    points per chunk fits, in float64 with twice the samples it does not."""
    big = ["equation.dim=1000", "estimator.samples=4096"]
    with pytest.raises(C.ConfigError):
        S.check_sizes(_config(SMALL, big))
    S.check_sizes(_config(SMALL, [*big, "trainer.batch_chunks=4"]))
    with pytest.raises(C.ConfigError, match="the noise draw ξ of a training step, 2 × 8192 × 1000"):
        S.check_sizes(_config(SMALL, [*big, "trainer.batch_chunks=4", "trainer.dtype=float64",
                                      "estimator.samples=8192"]))


def test_an_estimator_study_that_does_not_train_counts_no_training(small_machine):
    """study.init fresh: no training step, no test set (a huge test_points, unused, is
    refused as having no effect; the override drops SMALL's own training settings)."""
    study = ["study.kind=estimator", "study.samples=[4]", "study.reference_samples=64", "study.init=fresh"]
    S.check_sizes(_config(SMALL, study))
    with pytest.raises(C.ConfigError, match="trainer.test_points: has no effect in an estimator study with study.init"):
        _config(SMALL, [*study, "trainer.test_points=4000000"])
    with pytest.raises(C.ConfigError, match="drawing the test set"):
        S.check_sizes(_config(SMALL, [*study, "trainer.test_points=4000000", "study.init=trained"]))


@pytest.mark.parametrize("overrides, part", [
    ([f"model.width={2**63 - 1}"], "the network's first layer: 9223372036854775807 × 3 elements"),
    (["model.width=4000000000", "model.depth=3"], "the network's hidden layers: 4000000000 × 4000000000"),
    ([f"trainer.batch_size={2**40}", f"estimator.samples={2**22}"], "the noise draw ξ of a training step"),
])
def test_a_size_beyond_torchs_sizes_is_an_overflow(small_machine, overrides, part):
    """Reported by ``pinnlab`` as "a size overflows a 64-bit integer" (tests/test_cli_resources.py)."""
    with pytest.raises(OverflowError, match="^" + re.escape(part)):
        C.build(_config(SMALL, overrides))


def test_a_depth_2_network_has_no_hidden_weights_to_overflow(small_machine):
    with pytest.raises(C.ConfigError, match="this run needs"):  # memory, not an overflow of w × w
        S.check_sizes(_config(SMALL, ["model.width=4000000000", "model.depth=2"]))


@pytest.mark.parametrize("override", ["trainer.batch_size=1000000000", "equation.dim=1000000000",
                                      "estimator.eval_samples=1000000000"])
def test_the_audits_sizes_are_refused_on_this_machine(monkeypatch, override):
    """The machine's real memory (RAM and swap): these need terabytes."""
    monkeypatch.setattr(C, "make_equation", lambda section: pytest.fail("a tensor was made"))
    config = C.load(ROOT / "configs/allen_cahn_two_body.yaml", [override])
    with pytest.raises(C.ConfigError, match=r"^this run needs at least [\d.]+ [TP]iB of memory at once, more than "
                                            r"this machine's [\d.]+ [GT]iB of RAM"):
        C.build(config)


def test_the_cli_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run.h5"
    code = main(["solve", str(ROOT / "configs/allen_cahn_two_body.yaml"), "trainer.batch_size=1000000000",
                 "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("pinnlab: error: config error: this run needs at least ")
    assert not out.exists() and not Path(str(out) + ".ckpt").exists()


def _shipped_runs():
    from pinnlab.studies.spec import study_runs

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        config = C.load(path)
        runs = study_runs(config) if "study" in config.sections else {"": []}
        for label, overrides in runs.items():
            yield f"{path.relative_to(ROOT)} {label}".strip(), path, overrides


def test_every_shipped_config_and_study_run_is_accepted():
    """On this machine; and each needs at most 10 GiB by the lower bound, so it fits smaller ones too
    (rs_table1's unbiased run at d = 10⁴ keeps both its draws' (N, K, D) noise: 9 GiB)."""
    for name, path, overrides in _shipped_runs():
        config = C.load(path, overrides)
        S.check_sizes(config)
        assert _need(config) < 10 * 2**30, name


def test_the_estimate_is_below_the_measured_memory():
    """README: the d = 10⁵ solve peaked at 1.2 GiB RSS (1243 MB); one independent-noise step
    at d = 10⁴ (bench_stein_memory: N = 100, K = 128, 4×128 tanh) added 610 MB to the peak,
    1.9 draws at d = 10³."""
    readme = C.load(ROOT / "configs/allen_cahn_two_body.yaml", [
        "equation.dim=100000", "estimator.noise=shared", "loss.kind=biased", "trainer.steps=5",
        "trainer.test_points=20", "trainer.eval_every=5", "estimator.eval_samples=16"])
    S.check_sizes(readme)
    assert 2**28 < _need(readme) < 1243 * 2**20
    for dim, measured in ((10_000, 610 * 2**20), (1000, 1.9 * 100 * 128 * 1000 * 4)):
        bench = C.load(ROOT / "configs/allen_cahn_two_body.yaml", [
            f"equation.dim={dim}", "loss.kind=biased", "trainer.steps=5", "trainer.test_points=20"])
        step = S.memory_moments(bench)["a training step"]
        counted = sum(t.nbytes for t in step if t.what.endswith("of a training step"))
        assert 100 * 128 * dim * 4 <= counted < measured


def test_machine_memory_is_ram_and_swap(tmp_path, monkeypatch):
    """Total RAM and swap, not what is free now (other jobs may end); without MemTotal, sysconf's RAM."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:         10 kB\nMemAvailable:    20 kB\n"
                       "SwapTotal:       24 kB\nHugePages_Total:       0\n")
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    assert S.machine_memory("cpu") == S.machine_memory("auto") == ("RAM", 1024 * 1024)
    meminfo.write_text("SwapTotal:       24 kB\n")
    assert S.machine_memory("cpu") == ("RAM", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def test_a_cgroup_limit_below_the_ram_is_the_machines_memory(tmp_path, monkeypatch):
    """In a container the OOM killer stops a run at its cgroup's limit, far below the
    machine's RAM: cgroup v2 (memory.max + memory.swap.max, in the process's own group) and
    v1 (the lower of memsw and the limit + the machine's swap); no limit ("max", v1's ~2**63) or one
    above RAM + swap leaves RAM + swap."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1048576 kB\nSwapTotal:  1024 kB\n")  # 1 GiB + 1 MiB
    root, proc = tmp_path / "cgroup", tmp_path / "proc_cgroup"
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(S, "_CGROUP", str(root))
    monkeypatch.setattr(S, "_PROC_CGROUP", str(proc))
    full = ("RAM", 2**30 + 2**20)

    def limits(proc_text, files):
        proc.write_text(proc_text)
        if root.exists():
            import shutil

            shutil.rmtree(root)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return S.machine_memory("cpu")

    mib = 2**20
    assert limits("0::/job\n", {"job/memory.max": f"{64 * mib}\n", "job/memory.swap.max": "0\n"}) == (
        "RAM (its cgroup's limit)", 64 * mib)
    assert limits("0::/job\n", {"job/memory.max": f"{64 * mib}\n"}) == ("RAM (its cgroup's limit)", 65 * mib)
    assert limits("0::/\n", {"memory.max": "max\n"}) == full
    assert limits("0::/\n", {"memory.max": f"{4 * 2**30}\n"}) == full
    assert limits("4:memory:/job\n", {"memory/job/memory.limit_in_bytes": "9223372036854771712\n"}) == full
    assert limits("4:cpu,memory:/job\n", {"memory/job/memory.limit_in_bytes": f"{32 * mib}\n"}) == (
        "RAM (its cgroup's limit)", 33 * mib)
    # v1: RAM + swap within memsw, RAM within the limit, swap within the machine's 1 MiB
    assert limits("4:memory:/\n", {"memory/memory.limit_in_bytes": f"{32 * mib}\n",
                                    "memory/memory.memsw.limit_in_bytes": f"{40 * mib}\n"}) == (
        "RAM (its cgroup's limit)", 33 * mib)
    assert limits("4:memory:/\n", {"memory/memory.limit_in_bytes": f"{32 * mib}\n",
                                    "memory/memory.memsw.limit_in_bytes": f"{32 * mib + mib // 2}\n"}) == (
        "RAM (its cgroup's limit)", 32 * mib + mib // 2)
    assert limits("4:memory:/\n", {"memory/memory.limit_in_bytes": f"{32 * mib}\n",  # memsw unlimited
                                    "memory/memory.memsw.limit_in_bytes": "9223372036854771712\n"}) == (
        "RAM (its cgroup's limit)", 33 * mib)
    assert limits("", {}) == full  # no cgroup files at all
    limits("0::/job\n", {"job/memory.max": f"{64 * mib}\n", "job/memory.swap.max": "0\n"})
    with pytest.raises(C.ConfigError, match="more than this machine's 64 MiB of RAM \\(its cgroup's limit\\)"):
        S.check_sizes(_config(SMALL, ["trainer.test_points=4000000"]))  # 92 MiB drawn in float64, on the host


def test_on_cuda_the_devices_memory_holds_the_devices_tensors(tmp_path, monkeypatch):
    """The float64 test set is drawn on the CPU (and the network built there): on CUDA only
    the tensors on the device count against its memory."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {MACHINE // 1024} kB\n")
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=MACHINE))
    config = _config(SMALL, ["trainer.test_points=4000000"])  # 92 MiB in float64 (CPU), 46 MiB on the device
    assert S.machine_memory("auto") == S.machine_memory("cuda") == ("cuda memory", MACHINE)
    assert S.machine_memory("cuda:1") == ("cuda:1 memory", MACHINE)
    S.check_sizes(config)
    with pytest.raises(C.ConfigError, match="more than this machine's 64 MiB of cuda memory"):
        S.check_sizes(_config(SMALL, ["trainer.test_points=8000000"]))
    with pytest.raises(C.ConfigError, match="more than this machine's 64 MiB of RAM"):
        S.check_sizes(_config(SMALL, ["trainer.test_points=4000000", "trainer.device=cpu"]))


def test_a_device_this_machine_lacks_is_left_to_the_device_check():
    """(``resolve_device`` refuses it in one line after build)"""
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert S.machine_memory("cuda:7") == ("", None)
    S.check_sizes(_config(SMALL, ["trainer.device=cuda:7"]))


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_every_registered_equation_is_of_second_order(name):
    """memory_moments counts autograd's Hessian-vector products and Hutchinson's probes at every step."""
    cls = EQUATIONS[name]
    equation = cls(max(cls.min_dim, 4))
    x = equation.sample_collocation(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = MLP(equation.input_dim, width=4, depth=2, dtype=torch.float64)
    params = dict(net.named_parameters())
    asked = []

    def group(queries):
        asked.extend(queries)
        return Autograd().estimate(lambda z: torch.func.functional_call(net, params, (z,)), x, queries)

    equation.residual(x, group)
    assert any(isinstance(q, (HessianDiagonal, WeightedLaplacian)) for q in asked), asked


# -- YAML aliases ------------------------------------------------------------------------------
def _bomb(levels: int) -> str:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text + "equation: {name: poisson_two_body, dim: 3}\n"


@pytest.mark.parametrize("levels", [7, 9])
def test_nested_aliases_are_refused_before_they_expand(tmp_path, levels):
    """9 levels: 9⁹ ≈ 4·10⁸ values (the audit's file hung and filled memory); 7 levels
    (4.8·10⁶) are refused as well, before validation sees the sections."""
    path = tmp_path / "alias.yaml"
    path.write_text(_bomb(levels))
    message = f"the config holds more than {C.CONFIG_VALUE_LIMIT:,} values once its YAML aliases (*name) are expanded"
    with pytest.raises(C.ConfigError, match="^" + re.escape(message)):
        C.load(path)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    path = tmp_path / "self.yaml"
    for text in ("equation: {name: poisson_two_body, dim: 3}\na: &a [1, *a]\n", "tune: &t {x: *t}\n"):
        path.write_text(text)
        with pytest.raises(C.ConfigError, match=r"^the config contains itself: a YAML alias \(\*name\)"):
            C.load(path)


def test_aliases_within_the_limit_are_copied(tmp_path):
    """A value shared by aliases is copied at every use (nothing done to one use changes the
    other), and a config of nearly CONFIG_VALUE_LIMIT values loads."""
    path = tmp_path / "shared.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\n"
                    "study: {kind: training, variants: {a: [loss.kind=biased]}, columns: trainer.seed,\n"
                    "        grid: {trainer.seed: &seeds [0, 1], data.seed: *seeds}}\n")
    grid = C.load(path).study.grid
    assert grid == {"trainer.seed": [0, 1], "data.seed": [0, 1]}
    data = C.apply_overrides(C.load_yaml(path), [])["study"]["grid"]
    assert data["trainer.seed"] == data["data.seed"] and data["trainer.seed"] is not data["data.seed"]
    side = math.isqrt(C.CONFIG_VALUE_LIMIT) - 2  # a list of `side` lists of `side` values, and the mapping
    row = list(range(side))
    assert C.apply_overrides({"x": [row] * side}, [])["x"][side - 1] == row


def test_observations_from_a_file_are_counted_once_read(tmp_path, monkeypatch):
    """Their number is not known before the file is read, so the check runs again after
    it: a file of 10⁷ observations was refused naming data.points (a key a file source
    refuses), and the objective of a hypergradient method keeps its activations for the
    backward pass (counted as one layer's, at a chunk of points, it let runs through that
    the machine could not hold)."""
    import numpy as np

    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", 8 * 2**20))
    rows = 300_000
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.full((rows, 3), 0.1), u=np.zeros(rows))
    # (one observation per step: the data term's Stein estimate at all of them is larger still)
    config = _config(SMALL, [f"data.source={path}", "data.train=true", "data.batch_size=1"])
    S.check_sizes(config)  # (the count is not known yet)
    with pytest.raises(C.ConfigError) as info:
        C.build(config)
    message = str(info.value)
    assert f"the largest part: the observations, {rows} × 3 values" in message, message
    assert message.endswith("; lower the observations in data.source, equation.dim"), message
    tuned = _config(SMALL, [*RESIDUAL_TUNE[:1], "data.points=64", "tune.objective.kind=data",
                            "tune.objective.samples=64"])
    # every hidden layer's activations, and the backward pass's two gradients of the last one
    # (measured on the shipped (a) config at 5·10⁵ observations: peak RSS 15.7 GiB, counted 15.3 GiB;
    # at 10⁶ it was killed at 24 GB, counted 15.4 GiB with one layer's activations at a chunk)
    *_, kept, gradients = S.memory_moments(tuned)["the tuning objective"]
    assert kept.shape == gradients.shape == (64, 2, 64, 8) and kept.copies == gradients.copies == 2
    searched = S.memory_moments(_config(SMALL, [*RESIDUAL_TUNE[:1], "data.points=64", "tune.objective.kind=data",
                                                "tune.objective.samples=64", "tune.method=random",
                                                "tune.options={}"]))["the tuning objective"][-1]
    assert searched.what == "the hidden activations of the tuning objective" and searched.copies == 1
    black_box = S.memory_moments(_config(SMALL, [*RESIDUAL_TUNE[:1], "data.points=64", "tune.objective.kind=data",
                                                 "tune.objective.samples=64", "tune.method=zo_fg2u",
                                                 "tune.options={}"]))["the tuning objective"][-1]
    assert black_box.what == searched.what and black_box.copies == 1  # zo_fg2u only evaluates it too


def test_the_gradient_quantity_counts_the_graph_of_every_noise_group(small_machine):
    """∇θ L̂ keeps every hidden layer of both draws of the unbiased loss (the reference's,
    and an unbiased estimate's): counted one draw's last layer, K = 10^8 reference samples
    passed the check at 14 GiB and were killed at 24 GB. Without the gradient quantity one
    draw at a time is made."""
    study = ["study.kind=estimator", "study.samples=[8]", "study.points=64", "study.reference_samples=1000"]

    def activations(*settings):
        moments = S.memory_moments(_config(SMALL, [*study, *settings]))
        return {moment.split(" (")[0]: sum(t.nbytes for t in tensors if "activations" in t.what)
                for moment, tensors in moments.items() if moment.startswith("an estimator study")}

    one = 64 * 2 * 1000 * 8 * 4  # (points, ±, K, width) in float32, one layer
    assert activations("study.quantities=[residual, loss]")["an estimator study's reference"] == one
    # SMALL has depth 3: two hidden layers, of each of the two noise groups
    assert activations("study.quantities=[gradient]")["an estimator study's reference"] == 4 * one
    per_draw = 64 * 2 * 8 * 8 * 4
    assert activations("study.quantities=[gradient]", "study.losses=[biased]")[
        "an estimator study's estimates"] == 2 * per_draw
    assert activations("study.quantities=[gradient]", "study.losses=[unbiased]", "study.unbiased_samples=same")[
        "an estimator study's estimates"] == 4 * per_draw
