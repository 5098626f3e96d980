"""configure_malloc: a training loop reuses its freed memory instead of faulting it in
again every step, and the settings stay the user's where they chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pinnlab
from pinnlab import _malloc
from pinnlab.cli import main

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                                 reason="glibc only")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

STEP_FAULTS = """
import json, resource, sys, torch
import pinnlab

configured = pinnlab.configure_malloc()
sys.path.insert(0, sys.argv[1])
from bench_estimators import training_step  # the benchmarked step: N = 100, K = 128, 4x128 MLP

torch.set_num_threads(1)
step, params, state = training_step("stein-shared", 100)
faults = []
for i in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    params, state, _ = step(params, state, {}, i)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"configured": configured, "faults": faults[2:]}))
"""


def _step_faults(**env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PINNLAB_MALLOC"}
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS, str(BENCHMARKS)], capture_output=True, text=True,
                         check=True, env={**environment, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_glibc
def test_training_steps_stop_faulting_in_their_memory():
    """A Stein step (N = 100, K = 128, d = 100, shared noise) frees ~200 MB at its end;
    with glibc's defaults the heap gave it back to the kernel and the next step faulted
    12,000–38,000 pages in again (measured: about a third of the step's time), with the
    thresholds set steps 3–20 fault on almost none (0–10,000, mostly 0). Both runs are the
    same step in fresh processes; the bound, a third of the default's mean, is far from
    both. With glibc's defaults a process sometimes faults little for a few steps (steps
    3–7 once averaged 944 pages), so the means are over 18 steps: five runs of each gave
    10,110–31,970 pages with the defaults and 179–356 with the thresholds set; a
    clean-clone CI run (2026-12-07) averaged 3,815 with the defaults (most steps ~6,300,
    some near 0), so the premise asks for 2,000: the claim tested is the ratio."""
    default = _step_faults(PINNLAB_MALLOC="default")
    tuned = _step_faults()
    assert not default["configured"] and tuned["configured"]
    mean_default = sum(default["faults"]) / len(default["faults"])
    mean_tuned = sum(tuned["faults"]) / len(tuned["faults"])
    assert mean_default > 2000, default
    assert mean_tuned < mean_default / 3, (tuned, default)


@pytest.mark.parametrize("env", [{"PINNLAB_MALLOC": "default"}, {"PINNLAB_MALLOC": " Default "},
                                 {"MALLOC_TRIM_THRESHOLD_": "1000000"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"MALLOC_TOP_PAD_": "0"}, {"MALLOC_MMAP_MAX_": "0"}])
def test_the_users_own_choice_is_kept(monkeypatch, env):
    """PINNLAB_MALLOC=default, or glibc's own MALLOC_*_ settings (which mallopt would
    override), leave malloc as it is: configure_malloc sets nothing and says so."""
    calls = []
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a: calls.append(a))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert pinnlab.configure_malloc() is False
    assert calls == []


def test_outside_glibc_nothing_is_set(monkeypatch):
    """No glibc (macOS, Windows, musl without gnu_get_libc_version): False, no error."""
    class NotGlibc:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.delenv("PINNLAB_MALLOC", raising=False)
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a: NotGlibc())
    assert pinnlab.configure_malloc() is False
    monkeypatch.setattr(_malloc.sys, "platform", "darwin")
    assert pinnlab.configure_malloc() is False


@linux_glibc
def test_mallopt_gets_both_thresholds(monkeypatch):
    """The two mallopt calls: M_MMAP_THRESHOLD (−3) at 32 MiB, M_TRIM_THRESHOLD (−1) at
    1 GiB (a swapped parameter number set a 1 GiB mmap threshold, which glibc refuses)."""
    calls = []

    class Libc:
        gnu_get_libc_version = object()

        class mallopt:  # noqa: N801 - stands for the C function
            def __new__(cls, param, value):
                calls.append((param, value))
                return 1

    for name in list(os.environ):
        if name.startswith("MALLOC_") or name == "PINNLAB_MALLOC":
            monkeypatch.delenv(name)
    monkeypatch.setattr(_malloc.ctypes, "CDLL", lambda *a: Libc())
    monkeypatch.setattr(_malloc, "configured", False)
    assert pinnlab.configure_malloc() is True
    assert calls == [(-3, 32 * 2**20), (-1, 2**30)]
    assert _malloc.configured


def test_a_study_worker_takes_the_parents_setting(monkeypatch):
    """Spawned study workers start with glibc's defaults: the pool's initializer sets the
    thresholds when the parent has them (initargs (_malloc.configured,)), not otherwise."""
    import signal

    from pinnlab.studies import training_study

    calls = []
    monkeypatch.setattr(_malloc, "configure_malloc", lambda: calls.append(1) or True)
    previous = signal.getsignal(signal.SIGINT)
    try:
        training_study._start_worker(False)
        assert calls == [] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        training_study._start_worker(True)
        assert calls == [1]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_training_commands_set_it_and_list_does_not(tmp_path, monkeypatch):
    """pinnlab solve (tune, study) sets the thresholds before it trains; list trains
    nothing and leaves them."""
    calls = []
    monkeypatch.setattr(_malloc, "configure_malloc", lambda: calls.append(1) or True)
    assert main(["list"]) == 0
    assert calls == []
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1}\nmodel: {width: 8, depth: 3}\n"
                   "estimator: {kind: stein, sigma: 0.05, samples: 4}\n"
                   "trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}\n")
    assert main(["solve", str(cfg), "-o", str(tmp_path / "s.h5"), "--progress", "off"]) == 0
    assert calls == [1]


PEAK_AFTER_RESET = """
import json, sys, torch
import pinnlab
from pinnlab.solvers.loop import peak_memory_mb, reset_peak_memory

configured = pinnlab.configure_malloc()
blocks = [torch.ones(4 * 2**20) for _ in range(64)]  # 64 blocks of 16 MB, all from the heap
del blocks
before = peak_memory_mb(torch.device("cpu"))
reset_peak_memory(torch.device("cpu"))
print(json.dumps({"configured": configured, "before": before, "after": peak_memory_mb(torch.device("cpu"))}))
"""


@linux_glibc
def test_a_fresh_peak_does_not_count_the_memory_kept_for_reuse():
    """With the thresholds set, 1 GB of freed 16 MB blocks stays in the heap (the point of
    them); reset_peak_memory gives it back first, so the next run's peak starts from what
    is in use: about 300 MB (torch), not 1.3 GB as without the release."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PINNLAB_MALLOC"}
    out = subprocess.run([sys.executable, "-c", PEAK_AFTER_RESET], capture_output=True, text=True, check=True,
                         env=environment)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["configured"] and result["before"] > 1000, result
    assert result["after"] < result["before"] - 700, result
