"""Third mutation audit of the benchmark scripts (_common, bench_estimators,
bench_step_breakdown, bench_stein_memory): what the first two audits' tests left free.
The FLOP floors at the benchmark's own sizes against hand-computed counts, the records'
keys, a worker's stray stdout line or death by a signal, the seconds of the Stein memory
step, the per-malloc summary, the batched matrix products of the breakdown, and the
``--json`` and list checks. Clocks, memory readings, subprocesses and steps are stand-ins
with known values; everything runs in-process at toy sizes."""

from __future__ import annotations

import json
import types

import pytest


def _ticks(monkeypatch, module, values):
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=iter(values).__next__))


# _common


def test_a_broken_json_file_is_refused_like_any_other_non_json_file(benchmarks, tmp_path):
    """An existing ``.json`` whose text is no JSON (a truncated earlier result, a
    hand-edited file) is replaced by the results like a config would be: refused too,
    whatever its suffix."""
    common = benchmarks("_common")
    broken = tmp_path / "old.json"
    broken.write_text('{"records": [1, 2')
    assert "exists and is not a JSON file" in common.json_path_error(str(broken))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert "exists and is not a JSON file" in common.json_path_error(str(empty))


def test_listed_names_several_repeated_values_once_each_in_sorted_order(benchmarks):
    common = benchmarks("_common")
    with pytest.raises(ValueError, match="^--problems 'c,b,c,b,a': b, c given twice$"):
        common.listed("--problems", "c,b,c,b,a")


# bench_estimators: the FLOP floors at the benchmark's sizes (N = 100, K = 128, V = 16, 4 × 128)


# G = (4 − 2)·128² = 32 768, H = G + 128 = 32 896; at d = 100: F = n·d·w = 1 280 000,
# Stein evaluations 2·100·128 + 100 = 25 700, 3·25 700·H = 2 536 281 600.
HAND_FLOPS_D100 = {
    # 2·(2·(100 + 128)·100·128 + 3·25 700·H + (100·128·100 + 128·100))
    "stein-shared": 2 * (5_836_800 + 2_536_281_600 + 1_292_800),
    # 2·(2·(100 + 100·128)·100·128 + 3·25 700·H + 2·100·128·100)
    "stein-independent": 2 * (330_240_000 + 2_536_281_600 + 2_560_000),
    # 2·(4F + 6nH + 3nG + M·(5F + 6nG)), 4F + 6nH + 3nG = 34 688 000, 5F + 6nG = 26 060 800
    "autograd": 2 * (34_688_000 + 100 * 26_060_800),  # M = d
    "hutchinson": 2 * (34_688_000 + 16 * 26_060_800),  # M = V = 16
}


@pytest.mark.parametrize("method", sorted(HAND_FLOPS_D100))
def test_step_flops_at_the_benchmark_sizes_is_the_hand_count(benchmarks, method):
    """The other tests pass every size explicitly: the defaults (V = 16 probes, depth 4)
    are what the README's ×floor columns divide by."""
    est = benchmarks("bench_estimators")
    assert (est.N, est.K, est.V, est.WIDTH, est.DEPTH) == (100, 128, 16, 128, 4)
    assert est.step_flops(method, 100) == HAND_FLOPS_D100[method]
    assert HAND_FLOPS_D100["stein-shared"] == 5_086_822_400 and HAND_FLOPS_D100["hutchinson"] == 903_321_600


def test_worker_record_holds_the_floor_of_its_step_at_the_benchmark_sizes(benchmarks, monkeypatch):
    import torch

    import pinnlab

    est = benchmarks("bench_estimators")
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    loss = torch.tensor(1.0)
    monkeypatch.setattr(est, "training_step",
                        lambda method, dim: ((lambda p, s, extra, i: (p, s, {"loss": loss})), {}, {}))
    monkeypatch.setattr(est, "_peak_rss_bytes", iter([0, 2**20]).__next__)
    _ticks(monkeypatch, est, [0.0, 0.5, 1.0, 1.25])
    record = est.worker("hutchinson", 100, 2)
    assert record["flops"] == 903_321_600
    assert set(record) == {"estimator", "noise", "method", "dim", "seconds_per_step", "peak_bytes", "flops",
                           "reps", "malloc"}
    assert record["seconds_per_step"] == pytest.approx(0.375, abs=1e-15)  # median of 0.5 and 0.25


def _workers(record_of, returncode=0):
    """A stand-in for ``subprocess.run`` of a script's worker: it prints a stray line, then
    ``record_of(argv)`` as JSON; with a non-zero returncode, nothing (stderr "Killed")."""
    def run(argv, **kwargs):
        stdout = "" if returncode else "a stray line on stdout\n" + json.dumps(record_of(argv)) + "\n"
        return types.SimpleNamespace(returncode=returncode, stdout=stdout, stderr="Killed")
    return run


def _estimator_record(argv):
    method, dim, reps = argv[-3], int(argv[-2]), int(argv[-1])
    return {"estimator": method.split("-")[0], "noise": "independent", "method": method, "dim": dim,
            "seconds_per_step": 0.01, "peak_bytes": 10, "flops": 3e9, "reps": reps, "malloc": "pinnlab"}


def test_run_adds_the_floor_and_how_memory_was_measured_to_each_record(benchmarks, monkeypatch):
    est = benchmarks("bench_estimators")
    monkeypatch.setattr(est.subprocess, "run", _workers(_estimator_record))
    monkeypatch.setattr(est, "gemm_rate", lambda: 1.5e9)
    monkeypatch.setattr(est, "DIMS", (100,))
    records, rate = est.run(True)
    assert rate == 1.5e9 and len(records) == 4
    for r in records:
        assert set(r) == {"estimator", "noise", "method", "dim", "seconds_per_step", "peak_bytes", "flops", "reps",
                          "malloc", "floor_seconds", "memory_method", "skipped"} and r["skipped"] is None
        assert r["floor_seconds"] == 2.0  # the worker's own flops over the rate
        assert "peak RSS" in r["memory_method"]


def test_a_worker_killed_by_a_signal_is_reported_not_parsed(benchmarks, monkeypatch):
    """The kernel's OOM killer ends a worker with SIGKILL: returncode −9, no stdout."""
    est = benchmarks("bench_estimators")
    monkeypatch.setattr(est.subprocess, "run", _workers(_estimator_record, returncode=-9))
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    with pytest.raises(RuntimeError, match="^stein-shared d=100 failed:\nKilled$"):
        est.run(True)


def test_main_summarises_each_malloc_from_its_own_rows(benchmarks, monkeypatch, capsys):
    """With ``--malloc both`` the glibc rows are not a multiple of pinnlab's: each
    summary line is computed from its own malloc's rows."""
    est = benchmarks("bench_estimators")
    seconds = {("stein-shared", 100): (4.0, 1.0), ("stein-shared", 10000): (2.0, 1.5),
               ("stein-independent", 10000): (50.0, 30.0)}
    records = [{"method": m, "dim": d, "malloc": mode, "seconds_per_step": s[i], "floor_seconds": 1.0,
                "peak_bytes": 0} for (m, d), s in seconds.items() for i, mode in enumerate(("default", "pinnlab"))]
    monkeypatch.setattr(est, "run", lambda quick, malloc: (records, 1e9))
    assert est.main(["--malloc", "both"]) == 0
    out = capsys.readouterr().out
    assert "malloc default: stein-shared d=1e4 / d=100: 0.50 (target <= 2)" in out
    assert "malloc default: stein-independent / stein-shared at d=1e4: 25.0 (target >= 10)" in out
    assert "malloc pinnlab: stein-shared d=1e4 / d=100: 1.50 (target <= 2)" in out
    assert "stein-shared d=10000: glibc defaults / pinnlab malloc = 1.33" in out


# bench_step_breakdown


def test_breakdown_counts_batched_products_as_matrix_products(benchmarks, monkeypatch):
    """``bmm`` and ``baddbmm`` (batched noise projections) belong to the matrix products;
    ``tanh`` does not. Every operator call takes 1 s on the stand-in clock."""
    import torch

    sb = benchmarks("bench_step_breakdown")
    b = torch.ones(2, 2, 2)
    loss = torch.tensor(1.0)

    def step(params, state, extra, i):
        torch.tanh(b)
        torch.bmm(b, b)
        torch.baddbmm(b, b, b)
        torch.baddbmm(b, b, b)
        return params, state, {"loss": loss}

    monkeypatch.setattr(sb, "training_step", lambda method, dim: (step, {}, {}))
    monkeypatch.setattr(sb, "gemm_rate", lambda: 1e9)
    ticks = iter(range(10**6))
    monkeypatch.setattr(sb, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    record = sb.breakdown("stein-shared", 3, 2)
    assert record["ops"] == {"baddbmm": 2.0, "tanh": 1.0, "bmm": 1.0}
    assert record["calls"] == {"baddbmm": 2.0, "tanh": 1.0, "bmm": 1.0}
    assert record["matmul_seconds"] == 3.0 and record["timed_ops_seconds"] == 4.0
    assert record["step_seconds"] == 0.5  # (2 steps between two readings 1 s apart)


# bench_stein_memory


def test_stein_memory_worker_times_its_step_and_names_its_fields(benchmarks, monkeypatch):
    import bench_estimators
    import torch

    import pinnlab.solvers.loop as loop

    mem = benchmarks("bench_stein_memory")
    loss = torch.tensor(1.0)
    monkeypatch.setattr(bench_estimators, "training_step",
                        lambda method, dim: ((lambda p, s, extra, i: (p, s, {"loss": loss})), {}, {}))
    monkeypatch.setattr(loop, "reset_peak_memory", lambda device: None)
    peaks = iter([50.0, 50.5])
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: next(peaks))
    _ticks(monkeypatch, mem, [100.0, 100.75])
    record = mem.worker("shared", 8)
    assert record["seconds"] == 0.75
    assert set(record) == {"noise", "dim", "n", "k", "draw_bytes", "peak_bytes", "draws", "seconds",
                           "memory_method"}
    assert record["peak_bytes"] == 2**19 and record["draw_bytes"] == 100 * 128 * 8 * 4
    assert "VmHWM" in record["memory_method"]


def _noise_record(argv):
    return {"noise": argv[-2], "dim": int(argv[-1]), "draw_bytes": 2**20, "peak_bytes": 3 * 2**20, "draws": 3.0,
            "seconds": 1.0}


def test_stein_memory_reads_the_last_stdout_line_of_a_worker(benchmarks, monkeypatch):
    mem = benchmarks("bench_stein_memory")
    monkeypatch.setattr(mem.subprocess, "run", _workers(_noise_record))
    records = mem.run(True)
    assert [(r["noise"], r["dim"], r["draws"]) for r in records] == [(n, d, 3.0) for d in (1000, 10000)
                                                                      for n in ("independent", "shared")]


def test_stein_memory_worker_killed_by_a_signal_is_reported(benchmarks, monkeypatch):
    """d = 10⁵ needs 6–7 GB: the OOM killer's SIGKILL (returncode −9) is a failure."""
    mem = benchmarks("bench_stein_memory")
    monkeypatch.setattr(mem.subprocess, "run", _workers(_noise_record, returncode=-9))
    with pytest.raises(RuntimeError, match="^independent d=1000 failed:\nKilled$"):
        mem.run(True)
