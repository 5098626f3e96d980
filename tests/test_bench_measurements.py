"""The measurement benchmarks' own arithmetic (bench_estimators, bench_hypergrad,
bench_step_breakdown, bench_stein_memory, bench_horizon_bias): the record fields, the
ratios and units of their tables and summaries, the skip rules. Clocks, RSS readings,
worker subprocesses and profiler events are replaced by stand-ins with known values, so
the expectations are exact; what runs for real runs at toy sizes (a few seconds in all)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clock(monkeypatch, module, durations):
    """Replace ``module.time.perf_counter`` by a clock whose successive (start, stop) pairs
    are ``durations`` apart (each timing in ``module`` reads it twice)."""
    ticks = []
    now = 0.0
    for d in durations:
        ticks += [now, now + d]
        now += d + 1.0
    it = iter(ticks)
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: next(it)))


# bench_estimators


def test_peak_rss_is_read_in_kibibytes(benchmarks):
    """Linux reports ru_maxrss in KiB: bytes are × 1024 (not 1000)."""
    import resource

    bench = benchmarks("bench_estimators")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = bench._peak_rss_bytes()
    assert value % 1024 == 0 and before * 1024 <= value <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_autograd_growth_is_d_times_d_plus_h_over_w(benchmarks):
    """H/w = ((depth − 2)·w² + w)/w = 257 for the 4 × 128 network."""
    bench = benchmarks("bench_estimators")
    assert bench.autograd_growth(1000, 500) == pytest.approx(1000 * 1257 / (500 * 757), rel=1e-14)
    assert bench.autograd_growth(10, 10, width=2, depth=3) == 1.0
    assert bench.autograd_growth(4, 2, width=2, depth=3) == pytest.approx(4 * 7 / (2 * 5), rel=1e-14)


def test_autograd_is_skipped_above_eight_gib(benchmarks):
    """MEMORY_LIMIT is 8 GiB (a third of the 24 GB machine): a predicted step just below
    runs, just above is skipped."""
    bench = benchmarks("bench_estimators")
    growth = bench.autograd_growth(1000, 100)
    assert bench.autograd_skip(1000, {100: (0.001, 0.99 * 8 * 2**30 / growth)}) is None
    assert "GiB" in bench.autograd_skip(1000, {100: (0.001, 1.01 * 8 * 2**30 / growth)})


def test_worker_record_median_seconds_and_peak_increase(benchmarks, monkeypatch):
    """A worker's record: the median of the timed steps (not the fastest), the peak RSS
    increase over the mark after set-up, the FLOP floor of its own method and dimension,
    and estimator/noise split from the method name (Hutchinson's probes: independent)."""
    import torch

    import pinnlab

    bench = benchmarks("bench_estimators")
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    built = []

    def training_step(method, dim):  # (the real step is timed by bench_estimators itself)
        built.append((method, dim))
        return (lambda params, state, extra, i: (params, state, {"loss": torch.tensor(1.0)})), {}, {}

    monkeypatch.setattr(bench, "training_step", training_step)
    for method, estimator, noise in (("stein-shared", "stein", "shared"), ("hutchinson", "hutchinson", "independent")):
        _clock(monkeypatch, bench, [0.3, 0.1, 0.2])
        monkeypatch.setattr(bench, "_peak_rss_bytes", iter([10 * 2**20, 13 * 2**20]).__next__)
        record = bench.worker(method, 4, 3)
        assert record["seconds_per_step"] == pytest.approx(0.2, abs=1e-12)
        assert record["peak_bytes"] == 3 * 2**20 and record["reps"] == 3 and record["dim"] == 4
        assert (record["estimator"], record["noise"], record["method"]) == (estimator, noise, method)
        assert record["flops"] == bench.step_flops(method, 4) and record["malloc"] == "default"
    assert built == [("stein-shared", 4), ("hutchinson", 4)]


def test_run_divides_flops_by_the_rate_and_extrapolates_autograd_from_its_record(benchmarks, monkeypatch):
    """floor_seconds = flops / GEMM rate; autograd workers time one step; the autograd
    skip rule reads (seconds, bytes) of the last autograd record in that order."""
    bench = benchmarks("bench_estimators")
    calls = []

    def run(argv, **kwargs):
        method, dim, reps = argv[-3], int(argv[-2]), int(argv[-1])
        calls.append((method, dim, reps))
        record = {"method": method, "dim": dim, "seconds_per_step": 0.001, "peak_bytes": 10**6,
                  "flops": 4e9, "malloc": "pinnlab"}
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(record) + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", run)
    monkeypatch.setattr(bench, "gemm_rate", lambda: 2e9)
    monkeypatch.setattr(bench, "DIMS", (100, 1000))
    records, rate = bench.run(True)
    assert rate == 2e9 and {r["floor_seconds"] for r in records} == {2.0}
    assert calls == [(m, d, 1 if m == "autograd" else 3) for d in (100, 1000) for m in bench.METHODS]
    table = bench.table([{"method": "stein-shared", "dim": 10, "malloc": "pinnlab", "seconds_per_step": 0.5,
                          "floor_seconds": 0.125, "peak_bytes": 3 * 2**20}])
    assert table.splitlines()[-1] == "| stein-shared | 10 | pinnlab | 0.500 | 4.0 | 3 |"


def test_main_reports_the_shared_noise_scaling_and_the_malloc_ratio(benchmarks, monkeypatch, capsys):
    """The summary: stein-shared d = 10⁴ over d = 100, stein-independent over stein-shared
    at 10⁴, and with ``--malloc both`` glibc's defaults over pinnlab's."""
    bench = benchmarks("bench_estimators")
    seconds = {("stein-shared", 100): 1.0, ("stein-shared", 10000): 1.5, ("stein-independent", 10000): 30.0}
    records = [{"method": m, "dim": d, "malloc": mode, "seconds_per_step": s * (2 if mode == "default" else 1),
                "floor_seconds": 1.0, "peak_bytes": 0} for (m, d), s in seconds.items() for mode in ("default", "pinnlab")]
    monkeypatch.setattr(bench, "run", lambda quick, malloc: (records, 1e9))
    assert bench.main(["--malloc", "both"]) == 0
    out = capsys.readouterr().out
    assert "malloc pinnlab: stein-shared d=1e4 / d=100: 1.50 (target <= 2)" in out
    assert "malloc pinnlab: stein-independent / stein-shared at d=1e4: 20.0 (target >= 10)" in out
    assert "stein-shared d=100: glibc defaults / pinnlab malloc = 2.00" in out


@pytest.mark.parametrize("script, args, expected", [
    ("bench_estimators.py", ["--worker", "stein-shared", "10", "0"], "DIM and REPS >= 1"),
    ("bench_stein_memory.py", ["--worker", "shared", "0"], "DIM >= 1"),
    ("bench_hypergrad.py", ["--worker", "rgu", "10,0", "4"], "horizons and width >= 1"),
    ("bench_horizon_bias.py", ["--quick", "--mix", "1"], "--mix 1.0: must lie in (0, 1)"),
    ("bench_horizon_bias.py", ["--quick", "--warm-sigma", "inf"], "--warm-sigma inf: must be finite and > 0"),
])
def test_boundary_arguments_are_refused(script, args, expected):
    """The boundary values of the refusals: 0 repetitions timed nothing (a median of
    none), mix = 1 is logit +∞, σ = ∞ log +∞."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip()
    assert run.returncode == 2 and len(err.splitlines()) == 1 and expected in err, err


# bench_hypergrad


def test_hypergrad_worker_skips_by_the_time_extrapolated_linearly_in_t(benchmarks, monkeypatch):
    """An estimate predicted (last seconds × T / last T) over a minute is skipped, with all
    longer horizons; the RSS increase is over the mark after set-up."""
    bench = benchmarks("bench_hypergrad")
    _clock(monkeypatch, bench, [7.0, 1.0])  # T = 2: 7 s, so T = 20 is predicted at 70 s
    rss = iter([100, 150, 170])
    monkeypatch.setattr(bench, "_rss", lambda: next(rss))
    records = bench.worker("rgu", [2, 20], 2)
    assert [(r["horizon"], r["seconds"], r["peak_bytes"], r["rss_increase_bytes"]) for r in records] == [
        (2, 7.0, 150, 50)]
    _clock(monkeypatch, bench, [5.0, 1.0])  # 50 s predicted: runs
    rss = iter([100, 150, 170])
    assert [r["horizon"] for r in bench.worker("rgu", [2, 20], 2)] == [2, 20]


def test_tensor_peak_is_the_highest_running_sum_of_allocator_events(benchmarks, monkeypatch):
    """Live bytes add allocations and subtract frees in time order; the peak is their
    running maximum, not what is live at the end."""
    import torch

    import pinnlab.bilevel

    bench = benchmarks("bench_hypergrad")
    events = [(3, 10), (0, 100), (2, -120), (1, 50), (5, 7)]  # (start_ns, bytes), unsorted

    class Event:
        def __init__(self, start, nbytes, name="[memory]"):
            self.start, self.bytes, self._name = start, nbytes, name

        def start_ns(self):
            return self.start

        def nbytes(self):
            return self.bytes

        def name(self):
            return self._name

    class Profile:
        def __init__(self, **kwargs):
            all_events = [Event(*e) for e in events] + [Event(4, 10**9, "aten::mm")]
            self.profiler = types.SimpleNamespace(kineto_results=types.SimpleNamespace(events=lambda: all_events))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(torch.profiler, "profile", Profile)
    monkeypatch.setattr(pinnlab.bilevel, "hypergradient", lambda *args, **kwargs: None)
    records = bench.tensor_bytes_worker("rgu", [2, 3], 2)
    assert [(r["horizon"], r["tensor_peak_bytes"]) for r in records] == [(2, 150), (3, 150)]


def test_accuracy_cosines_of_single_estimates_and_of_their_mean(benchmarks):
    """fg2u's ``cosine_single_mean`` is the mean over draws of cos(estimate, exact), each
    estimate the mean of its directions' d_i·v_i, and ``cosine_of_mean`` the cosine of the
    mean estimate; zo_fg2u takes min(draws, 20) draws; single-draw methods report one
    cosine twice. Recomputed here with torch's cosine_similarity."""
    import torch

    from pinnlab.bilevel import ForwardGradientUnroll, ReverseUnroll, hypergradient
    from pinnlab.bilevel.base import flatten

    bench = benchmarks("bench_hypergrad")
    records = bench.accuracy((2,), draws=3, directions=2)
    problem, phi = bench.build(2, width=32)
    exact = flatten(hypergradient(problem, phi, ReverseUnroll()).grad)
    res = hypergradient(problem, phi, ForwardGradientUnroll(num_directions=6, chunk_size=256), seed=1)
    singles = res.diagnostics["directional"][:, None] * res.diagnostics["directions"]
    estimates = [singles[2 * i:2 * i + 2].mean(0) for i in range(3)]

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    fg2u = next(r for r in records if r["method"] == "fg2u")
    assert fg2u["cosine_single_mean"] == pytest.approx(sum(cos(e, exact) for e in estimates) / 3, rel=1e-9)
    assert fg2u["cosine_of_mean"] == pytest.approx(cos(sum(estimates) / 3, exact), rel=1e-9)
    assert (fg2u["directions"], fg2u["draws"]) == (2, 3)
    zo = next(r for r in records if r["method"] == "zo_fg2u")
    assert zo["draws"] == 3
    trgu = next(r for r in records if r["method"] == "trgu")
    est = flatten(hypergradient(problem, phi, bench.method_for("trgu", 2)).grad)
    assert trgu["cosine_single_mean"] == trgu["cosine_of_mean"] == pytest.approx(cos(est, exact), rel=1e-9)
    assert bench.method_for("trgu", 2).steps == 2 and bench.method_for("trgu", 100).steps == 5


def test_hypergrad_summary_ratios_slope_and_table_units(benchmarks, monkeypatch, capsys):
    """The summary: tensor peaks at the longest over the shortest T, RSS ratios T = 1000
    over T = 10, memory per unrolled step = the increase from T = 100 to 1000 over 900
    steps, in KiB; the table's increase and peak in MiB."""
    bench = benchmarks("bench_hypergrad")
    cost = [{"kind": "cost", "method": m, "horizon": t, "seconds": 0.5, "peak_bytes": 64 * 2**20,
             "rss_increase_bytes": {10: 2**20, 100: 2**20, 1000: 2**20 + 900 * 2048}[t] * (1 if m == "fg2u" else 4)}
            for m in ("fg2u", "rgu") for t in bench.HORIZONS]
    counted = [{"kind": "tensor_memory", "method": m, "horizon": t, "tensor_peak_bytes": b}
               for m, t, b in (("fg2u", 10, 1000), ("fg2u", 100, 1050), ("rgu", 10, 1000), ("rgu", 100, 30000))]
    monkeypatch.setattr(bench, "costs", lambda width: list(cost))
    monkeypatch.setattr(bench, "accuracy", lambda horizons, draws: [])
    monkeypatch.setattr(bench, "start_tensor_bytes", lambda width, horizons: [])
    monkeypatch.setattr(bench, "finish_tensor_bytes", lambda procs: list(counted))
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "tensor_peak_bytes T=100 / T=10: fg2u 1.050, rgu 30.0" in out, out
    assert f"memory per unrolled step {'fg2u':13s} {2.0:10.1f} KiB" in out, out
    assert f"memory per unrolled step {'rgu':13s} {8.0:10.1f} KiB" in out, out
    assert "| fg2u | 0.5 / 1.0 / 64 | 0.5 / 1.0 / 64 | 0.5 / 2.8 / 64 |" in out, out


# bench_step_breakdown


def test_breakdown_reports_per_step_seconds_and_the_floor_at_the_rate(benchmarks, monkeypatch):
    """With a clock that advances 1 s per reading pair, the plain step takes 1/steps s per
    step, every operator call 1 s: an operator's seconds per step equal its calls per step,
    and the FLOP floor is step_flops / rate."""
    bench = benchmarks("bench_step_breakdown")
    ticks = iter(range(10**7))
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    monkeypatch.setattr(bench, "gemm_rate", lambda: 1e9)
    steps = 2
    record = bench.breakdown("stein-shared", 3, steps)
    assert record["step_seconds"] == pytest.approx(1.0 / steps)
    assert record["ops"] == pytest.approx(record["calls"]) and record["calls"]["tanh"] >= 1
    assert record["matmul_seconds"] == pytest.approx(sum(record["calls"][n] for n in ("mm", "addmm", "bmm", "matmul",
                                                                                      "baddbmm") if n in record["calls"]))
    assert record["floor_seconds"] == bench.step_flops("stein-shared", 3) / 1e9
    assert record["gemm_flops_per_second"] == 1e9


# bench_stein_memory


def test_stein_memory_counts_draws_of_n_k_d_float32_values(benchmarks, monkeypatch):
    """A draw is N·K·D float32 values; the step's peak is the VmHWM increase in MiB × 2²⁰
    bytes; ``draws`` is their ratio, whatever the noise mode draws."""
    import pinnlab.solvers.loop as loop

    bench = benchmarks("bench_stein_memory")
    peaks = iter([100.0, 105.0])
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: next(peaks))
    monkeypatch.setattr(loop, "reset_peak_memory", lambda device: None)
    record = bench.worker("shared", 4)
    assert (record["n"], record["k"], record["dim"], record["noise"]) == (100, 128, 4, "shared")
    assert record["draw_bytes"] == 100 * 128 * 4 * 4 and record["peak_bytes"] == 5 * 2**20
    assert record["draws"] == 5 * 2**20 / (100 * 128 * 4 * 4)


# bench_horizon_bias


def test_mean_and_standard_error(benchmarks):
    """SE = sample std / √n; one value has none (NaN, null in the JSON)."""
    bench = benchmarks("bench_horizon_bias")
    mean, se = bench._mean_se([1.0, 2.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(math.sqrt(7.0) / math.sqrt(3.0), rel=1e-14)
    mean, se = bench._mean_se([0.5])
    assert mean == 0.5 and math.isnan(se)


def test_horizon_bias_draws_start_after_the_warm_up_a_full_span_apart(benchmarks, monkeypatch):
    """Draw s starts at W + s·span, span the longest of --horizons and --grad-horizons, so
    no two draws share training steps and none reuses the warm-up's; every h and gradient
    uses the same starts. The set-up, unrolls and evaluations are stand-ins."""
    import dataclasses

    import torch

    import pinnlab.bilevel.base as base
    import pinnlab.bilevel.parameterization as parameterization
    import pinnlab.solvers.evaluate  # noqa: F401
    import pinnlab.tuning.run as run
    import pinnlab.tuning.setup as setup

    bench = benchmarks("bench_horizon_bias")

    @dataclasses.dataclass
    class Problem:
        horizon: int = 10

        def outer_loss(self, theta, u):
            return torch.tensor(0.5)

    class Equation:
        def test_set(self, n, device, dtype):
            return torch.zeros(n, 2)

        def exact_values(self, x):
            return torch.zeros(x.shape[0])

    fake = types.SimpleNamespace(bilevel=None, parameterization=None, dtype=torch.float64, device=torch.device("cpu"),
                                 problem=types.SimpleNamespace(equation=Equation()))
    unrolls, grads = [], []

    def unroll(problem, u, start, steps, init=None):
        unrolls.append((start, steps, init))
        return ("theta", None) if init is not None else "warm"

    def reverse(problem, u, start, init):
        grads.append((start, problem.horizon, init))
        return types.SimpleNamespace(grad={"sigma": torch.tensor(0.25)})

    monkeypatch.setattr(setup, "build_tuning", lambda config: fake)
    monkeypatch.setattr(parameterization, "reparameterize", lambda b, p: Problem())
    monkeypatch.setattr(parameterization, "unconstrain", lambda phi, p: phi)
    monkeypatch.setattr(base, "unroll", unroll)
    evaluate = sys.modules["pinnlab.solvers.evaluate"]  # (the package exports a function of that name)
    monkeypatch.setattr(evaluate, "evaluate", lambda *args, **kwargs: types.SimpleNamespace(rel_l2=0.125))
    monkeypatch.setattr(run, "make_hypergradient_method", lambda name, options: reverse)
    monkeypatch.setattr(sys, "argv", ["bench_horizon_bias.py", "--quick", "--sigmas", "0.1", "--horizons", "0,2",
                                      "--grad-horizons", "3", "--draws", "2", "--warm-steps", "5"])
    assert bench.main() == 0
    assert unrolls == [(0, 5, None), (5, 0, "warm"), (8, 0, "warm"), (5, 2, "warm"), (8, 2, "warm")]
    assert grads == [(5, 3, "warm"), (8, 3, "warm")]


@pytest.mark.parametrize("method, expected", [
    # G = (depth − 2)·w² = 16, H = G + w = 20, n = 2, k = 3, d = 5, w = 4, v = 7
    ("stein-shared", 2 * (2 * (2 + 3) * 5 * 4 + 3 * (2 * 2 * 3 + 2) * 20 + (2 * 3 * 5 + 3 * 5))),
    ("stein-independent", 2 * (2 * (2 + 2 * 3) * 5 * 4 + 3 * (2 * 2 * 3 + 2) * 20 + 2 * 2 * 3 * 5)),
    ("autograd", 2 * (4 * 40 + 6 * 2 * 20 + 3 * 2 * 16 + 5 * (5 * 40 + 6 * 2 * 16))),  # F = n·d·w = 40, M = d
    ("hutchinson", 2 * (4 * 40 + 6 * 2 * 20 + 3 * 2 * 16 + 7 * (5 * 40 + 6 * 2 * 16))),  # M = v
])
def test_step_flops_is_the_documented_closed_form(benchmarks, method, expected):
    """step_flops term by term as its docstring derives it: Stein 2·first + 3·(2nk + n)·H
    + projections (nk·d + k·d shared, 2nk·d independent); autograd and Hutchinson
    4F + 6nH + 3nG + M·(5F + 6nG). The counted-FLOP test allows 2–30 % on top of the
    floor, which the projections and the nG/nH terms stay within."""
    bench = benchmarks("bench_estimators")
    assert bench.step_flops(method, 5, n=2, k=3, v=7, width=4, depth=3) == expected


def test_an_autograd_record_has_no_noise_mode(benchmarks, monkeypatch):
    """Autograd draws no noise: its records (run or skipped) say ``noise: null``; they said
    "independent", as if it were a Stein or Hutchinson mode."""
    import torch

    import pinnlab

    bench = benchmarks("bench_estimators")
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    monkeypatch.setattr(bench, "training_step", lambda method, dim: (
        (lambda params, state, extra, i: (params, state, {"loss": torch.tensor(1.0)})), {}, {}))
    _clock(monkeypatch, bench, [0.3, 0.1, 0.2])
    monkeypatch.setattr(bench, "_peak_rss_bytes", iter([10 * 2**20, 13 * 2**20]).__next__)
    record = bench.worker("autograd", 4, 3)
    assert (record["estimator"], record["noise"]) == ("autograd", None)
    assert set(bench.NOISE) == set(bench.METHODS)
