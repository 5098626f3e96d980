"""Sixth mutation audit of the pre-flight memory estimate (``pinnlab.sizes``): what the
earlier tests let through.

The machine's memory: /proc/meminfo without a SwapTotal line (a kernel built without
swap), or with a MemTotal that is no number; no /proc/self/cgroup at all; and nested
cgroups, whose process's own group's limit comes before the mount root's (v2 and v1).
The refusals of a data objective's Stein estimate, which names the observations' setting,
and of a first layer too large by its inputs, which names equation.dim, and of a training
step's points, which name trainer.batch_size.
Each test names the change it catches.
"""

from __future__ import annotations

import os

import pytest

from pinnlab import config as C
from pinnlab import sizes as S
from tests.test_config_sizes_rules import _config
from tests.test_sizes_fifth_audit import FULL, MIB, cgroup  # noqa: F401 (the fake machine's fixture)


def _meminfo(tmp_path, monkeypatch, text):
    """machine_memory("cpu") of a machine whose /proc/meminfo is ``text``, without cgroups."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(S, "_PROC_CGROUP", str(tmp_path / "no_proc_cgroup"))
    monkeypatch.setattr(S, "_CGROUP", str(tmp_path / "no_cgroup"))
    return S.machine_memory("cpu")


# -- /proc/meminfo --------------------------------------------------------------------------------
def test_a_meminfo_without_swaptotal_is_ram_alone(tmp_path, monkeypatch):
    """A kernel without swap support has no SwapTotal line: the memory is MemTotal's
    1000 kB = 1,024,000 bytes exactly (caught: a missing SwapTotal read as 1 kB of swap,
    1,025,024 bytes)."""
    assert _meminfo(tmp_path, monkeypatch, "MemTotal:       1000 kB\nMemFree:         10 kB\n") == ("RAM", 1024000)


def test_no_proc_self_cgroup_is_no_cgroup_limit(tmp_path, monkeypatch):
    """Without /proc/self/cgroup (a kernel without cgroups) the memory is still
    meminfo's RAM + swap, 1 GiB + 1 MiB, not sysconf's (caught: the missing file's
    OSError let through to machine_memory's not-Linux fallback)."""
    assert _meminfo(tmp_path, monkeypatch, "MemTotal:  1048576 kB\nSwapTotal:  1024 kB\n") == FULL


@pytest.mark.parametrize("text", ["MemTotal:\nSwapTotal:  24 kB\n", "MemTotal:  lots kB\nSwapTotal:  24 kB\n"])
def test_an_unreadable_memtotal_falls_back_to_sysconfs_ram(tmp_path, monkeypatch, text):
    """A MemTotal line without a number (empty: an IndexError; not a number: a
    ValueError) is not Linux's meminfo: the RAM is sysconf's pages × page size (caught:
    either error let through, machine_memory, and with it every build, crashing)."""
    assert _meminfo(tmp_path, monkeypatch, text) == ("RAM", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# -- nested cgroups -------------------------------------------------------------------------------
def test_a_process_groups_own_v2_limit_comes_before_the_mount_roots(cgroup):  # noqa: F811
    """Nested v2 groups (0::/job, under a mount root whose own memory.max is 512 MiB, no
    swap): the process's group's 64 MiB is the limit, the root's only when the group has
    none ("max") (caught: the mount root read first, the group's tighter limit missed)."""
    root = {"memory.max": f"{512 * MIB}\n", "memory.swap.max": "0\n"}
    assert cgroup("0::/job\n", {**root, "job/memory.max": f"{64 * MIB}\n", "job/memory.swap.max": "0\n"}) == (
        "RAM (its cgroup's limit)", 64 * MIB)
    assert cgroup("0::/job\n", {"job/memory.max": "max\n"}) == ("RAM (its cgroup's limit)", 512 * MIB)


def test_a_process_groups_own_v1_limit_comes_before_the_controller_roots(cgroup):  # noqa: F811
    """cgroup v1 likewise: 4:memory:/job's 32 MiB (+ the machine's 1 MiB of swap) before
    the memory controller root's 256 MiB (caught: the root read first)."""
    files = {"memory/memory.limit_in_bytes": f"{256 * MIB}\n", "memory/job/memory.limit_in_bytes": f"{32 * MIB}\n"}
    assert cgroup("4:memory:/job\n", files) == ("RAM (its cgroup's limit)", 33 * MIB)


# -- the refusal text -----------------------------------------------------------------------------
def test_a_data_objectives_stein_estimate_names_data_points_to_lower(monkeypatch):
    """A data objective's Stein estimate is made at the 50 observations: its draw and
    activations are sized by data.points, which the refusal (its largest part, the
    (50, 2, 256, 8) float32 activations × 2 layers, 1.56 MiB) tells the user to lower (caught: the
    observations' name, "the observations", given as the setting instead)."""
    config = _config(["data.points=50", "tune.tunables={sigma: {}}", "tune.objective.kind=data"])
    objective = {t.what: t for t in S.memory_moments(config)["the tuning objective"]}
    assert objective["the noise draw ξ of the tuning objective"].settings == (
        "data.points", "tune.objective.samples", "equation.dim")
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", 2**20))
    with pytest.raises(C.ConfigError) as refused:
        S.check_sizes(config)
    assert str(refused.value).endswith("the hidden activations of the tuning objective, 50 × 2 × 256 × 8 values × 2, "
                                       "1.56 MiB); the sizes are too large for this machine; lower data.points, "
                                       "tune.objective.samples, model.width, model.depth")


def test_a_first_layer_beyond_torchs_sizes_by_its_inputs_names_equation_dim():
    """equation.dim = 2**62 makes the first layer (8, 2**62), 2**65 elements, the first
    tensor past torch's sizes: the overflow tells the user to lower model.width or
    equation.dim, the setting at fault here (caught: the first layer sized by
    model.width alone)."""
    with pytest.raises(OverflowError) as refused:
        S.check_sizes(_config([f"equation.dim={2**62}"]))
    assert str(refused.value) == (f"the network's first layer: 8 × {2**62} elements, more than torch's sizes allow "
                                  "(2**63 - 1); lower model.width, equation.dim")


def test_a_training_steps_points_beyond_torchs_sizes_name_the_batch_size():
    """trainer.batch_size = 2**62: the step's (2**62, 3) points are the first tensor past
    torch's sizes, and the overflow tells the user to lower trainer.batch_size (caught:
    the points' settings left empty, the message naming equation.dim alone)."""
    with pytest.raises(OverflowError) as refused:
        S.check_sizes(_config([f"trainer.batch_size={2**62}"]))
    assert str(refused.value) == (f"a training step's points: {2**62} × 3 elements, more than torch's sizes allow "
                                  "(2**63 - 1); lower trainer.batch_size, equation.dim")
