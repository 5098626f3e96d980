"""Second mutation audit of the benchmark scripts (benchmarks/): what the first audit's
tests left free. The shared ``--json`` checks and strict write, the record fields and
defaults each script runs with, the statistics of bench_horizon_bias, bench_hypergrad's
inner problem and method options, the units of the tables, and bench_tuning's overrides
and JSON payload. Clocks, RSS readings, subprocesses, set-ups and runs are stand-ins with
known values, so every expectation is exact; nothing runs at benchmark size."""

from __future__ import annotations

import json
import math
import statistics
import sys
import types
from pathlib import Path

import pytest

from .test_bench_measurements import _clock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    """``bench("bench_estimators")``: a benchmark script as a module (its siblings importable),
    torch's thread setting recorded instead of applied."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch

    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)

    def load(name):
        module = __import__(name)
        module.threads_set = threads
        return module
    return load


def _strict(path):
    return json.loads(Path(path).read_text(), parse_constant=lambda name: pytest.fail(f"bare {name} in the JSON"))


# _common


def test_json_path_error_names_each_unwritable_path(bench, tmp_path):
    """No --json: nothing to check; "" , "DIR/", a directory, a file that is no JSON and a
    missing directory are refused, each with its reason; a new file in an existing
    directory and an earlier JSON result (the file a rerun replaces) pass."""
    common = bench("_common")
    assert common.json_path_error(None) is None
    assert common.json_path_error("") == "an empty path"
    assert common.json_path_error(f"{tmp_path}/") == "names a directory (it ends with a separator)"
    assert common.json_path_error(str(tmp_path)) == "is a directory"
    config = tmp_path / "c.yaml"
    config.write_text("equation: {name: poisson_two_body}\n")
    assert "exists and is not a JSON file" in common.json_path_error(str(config))
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "exists and is not a JSON file" in common.json_path_error(str(binary))
    earlier = tmp_path / "earlier.json"
    earlier.write_text('{"records": []}')
    assert common.json_path_error(str(earlier)) is None
    assert common.json_path_error(str(tmp_path / "new.json")) is None
    assert "does not exist" in common.json_path_error(str(tmp_path / "missing" / "out.json"))


def test_parser_errors_are_one_line_with_exit_code_2(bench, capsys):
    common = bench("_common")
    parser = common.Parser(prog="bench.py")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--n", "x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "bench.py: error: argument --n: invalid int value: 'x'\n"
    assert parser.refuse("--n 0: must be >= 1") == 2
    assert capsys.readouterr().err == "bench.py: error: --n 0: must be >= 1\n"


def test_write_json_is_strict_with_null_for_non_finite_numbers(bench, tmp_path):
    """The standard error of one draw is NaN: ``null`` in the file, not bare NaN."""
    common = bench("_common")
    path = tmp_path / "out.json"
    common.write_json(str(path), {"se": math.nan, "h": 0.5, "records": [1, math.inf]})
    assert _strict(path) == {"se": None, "h": 0.5, "records": [1, None]}


def test_listed_keeps_the_given_order_and_converts_each_item(bench):
    common = bench("_common")
    assert common.listed("--horizons", "200,0,10", int) == [200, 0, 10]
    assert common.listed("--sigmas", "0.5, 0.01", float) == [0.5, 0.01]
    with pytest.raises(ValueError, match="^--sigmas '0.1,0.2,0.1': 0.1 given twice$"):
        common.listed("--sigmas", "0.1,0.2,0.1", float)
    with pytest.raises(ValueError, match="^--methods ' ,a': an empty item$"):
        common.listed("--methods", " ,a")


# bench_estimators


def test_gemm_rate_is_two_n_cubed_over_the_fastest_of_five_products(bench, monkeypatch):
    """2·2048³ FLOP per product over the best of five timings (the fastest is the 2nd here)."""
    import torch

    est = bench("bench_estimators")
    monkeypatch.setattr(torch, "randn", lambda *shape: torch.zeros(2, 2))
    _clock(monkeypatch, est, [0.5, 0.25, 1.0, 0.4, 0.3])
    assert est.gemm_rate() == 2 * 2048**3 / 0.25


def test_training_step_is_the_documented_step(bench, monkeypatch):
    """σ = 10⁻² with the method's noise and K samples (Stein), V probes (Hutchinson), HVP
    chunks of 32 (autograd); the Allen–Cahn instance of seed 1, an N-point batch, Adam at
    10⁻³ and the step's seed 0: the benchmark's numbers are those of this step."""
    import pinnlab.equations
    import pinnlab.estimators
    import pinnlab.nets
    import pinnlab.solvers

    est = bench("bench_estimators")
    made = []

    def record(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            made.append((name, args, kwargs))
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapped)

    for module, name in ((pinnlab.estimators, "SteinAntithetic"), (pinnlab.estimators, "Hutchinson"),
                         (pinnlab.estimators, "Autograd"), (pinnlab.equations, "AllenCahnTwoBody"),
                         (pinnlab.solvers, "Adam"), (pinnlab.solvers, "make_train_step"),
                         (pinnlab.solvers, "PINNProblem"), (pinnlab.nets, "MLP")):
        record(module, name)
    sizes = {"n": 3, "k": 5, "v": 7, "width": 8, "depth": 3}
    for method in est.METHODS:
        made.clear()
        est.training_step(method, 4, **sizes)
        by = {name: (args, kwargs) for name, args, kwargs in made}
        if method.startswith("stein"):
            assert by["SteinAntithetic"][1] == {"sigma": 1e-2, "num_samples": 5, "noise": method.split("-")[1]}
        elif method == "hutchinson":
            assert by["Hutchinson"][1] == {"num_probes": 7}
        else:
            assert by["Autograd"][1] == {"chunk_size": 32}
        assert by["AllenCahnTwoBody"] == ((4,), {"seed": 1})
        assert by["MLP"][0] == (4,) and (by["MLP"][1]["width"], by["MLP"][1]["depth"]) == (8, 3)
        assert by["PINNProblem"][1] == {"batch_size": 3}
        assert by["Adam"] == ((1e-3,), {})
        assert by["make_train_step"][1] == {"seed": 0}


def _fake_step(calls):
    import torch

    def step(params, state, extra, i):
        calls.append(("step", i))
        return params, state, {"loss": torch.tensor(1.0)}
    return step


def test_worker_times_the_median_of_steps_one_to_reps_after_the_mark(bench, monkeypatch):
    """The median of the timed steps (0.2 s of 0.5, 0.1, 0.2: their mean is 0.27), steps
    1..reps after the warm-up step 0, the RSS mark taken before the warm-up, and the
    workers' 2 threads unless PINNLAB_BENCH_THREADS says otherwise."""
    import pinnlab

    est = bench("bench_estimators")
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: True)
    monkeypatch.delenv("PINNLAB_BENCH_THREADS", raising=False)
    calls = []
    monkeypatch.setattr(est, "training_step", lambda method, dim: (_fake_step(calls), {}, {}))
    rss = iter([4 * 2**20, 9 * 2**20])
    monkeypatch.setattr(est, "_peak_rss_bytes", lambda: calls.append(("rss",)) or next(rss))
    _clock(monkeypatch, est, [0.5, 0.1, 0.2])
    record = est.worker("stein-independent", 7, 3)
    assert record["seconds_per_step"] == pytest.approx(0.2, abs=1e-12)
    assert calls == [("rss",), ("step", 0), ("step", 1), ("step", 2), ("step", 3), ("rss",)]
    assert record["peak_bytes"] == 5 * 2**20 and record["malloc"] == "pinnlab"
    assert (record["estimator"], record["noise"]) == ("stein", "independent")
    assert est.threads_set == [2]


def test_autograd_skip_limits_are_strict_and_its_message_in_gib(bench):
    """A predicted step of exactly 60 s or exactly MEMORY_LIMIT runs; the reason gives
    seconds and GiB (2³⁰ bytes) with the limits."""
    est = bench("bench_estimators")
    assert est.autograd_skip(100, {100: (60.0, est.MEMORY_LIMIT)}) is None
    assert est.autograd_skip(100, {100: (1.0, 9.4 * 2**30)}) == "predicted 1 s and 9 GiB per step (limits 60 s, 8 GiB)"
    assert est.autograd_skip(100, {100: (60.5, 0)}) == "predicted 60 s and 0 GiB per step (limits 60 s, 8 GiB)"


def _fake_workers(calls, peak_bytes=10**6):
    def run(argv, env=None, **kwargs):
        method, dim, reps = argv[-3], int(argv[-2]), int(argv[-1])
        calls.append((method, dim, reps, env.get("PINNLAB_MALLOC")))
        record = {"method": method, "dim": dim, "seconds_per_step": 0.001, "peak_bytes": peak_bytes,
                  "flops": 1e9, "malloc": env.get("PINNLAB_MALLOC", "pinnlab")}
        return types.SimpleNamespace(returncode=0, stdout="noise\n" + json.dumps(record) + "\n", stderr="")
    return run


def test_run_times_ten_steps_and_malloc_both_runs_glibc_first(bench, monkeypatch):
    """The full run times 10 steps a cell (autograd 1); ``--malloc both`` runs each cell
    with PINNLAB_MALLOC=default first, then without it (pinnlab's settings, whatever the
    caller's environment says)."""
    est = bench("bench_estimators")
    calls = []
    monkeypatch.setattr(est.subprocess, "run", _fake_workers(calls))
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    monkeypatch.setattr(est, "DIMS", (100,))
    monkeypatch.setenv("PINNLAB_MALLOC", "default")
    records, _ = est.run(False, "both")
    assert calls == [(m, 100, 1 if m == "autograd" else 10, mode) for m in est.METHODS for mode in ("default", None)]
    assert [r["malloc"] for r in records] == ["default", "pinnlab"] * len(est.METHODS)
    calls.clear()
    est.run(False, "pinnlab")
    assert {c[3] for c in calls} == {None}


def test_autograd_is_skipped_by_the_memory_of_its_last_record(bench, monkeypatch):
    """1 GiB at d = 100 grows × 1000·1257/(100·357) ≈ 35 to d = 1000: over 8 GiB, skipped,
    although its time (0.035 s) is far below a minute."""
    est = bench("bench_estimators")
    calls = []
    monkeypatch.setattr(est.subprocess, "run", _fake_workers(calls, peak_bytes=2**30))
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    monkeypatch.setattr(est, "DIMS", (100, 1000))
    records, _ = est.run(True)
    assert [(c[0], c[1]) for c in calls] == [(m, d) for d in (100, 1000) for m in est.METHODS
                                             if not (m == "autograd" and d == 1000)]


def _estimator_records():
    seconds = {("stein-shared", 100): 1.0, ("stein-shared", 10000): 1.5, ("stein-independent", 10000): 30.0}
    return [{"method": m, "dim": d, "malloc": "pinnlab", "seconds_per_step": s, "floor_seconds": 0.5,
             "peak_bytes": 100 * 2**20} for (m, d), s in seconds.items()]


def test_estimators_main_writes_every_record_and_reports_the_rate_in_gflops(bench, monkeypatch, tmp_path, capsys):
    est = bench("bench_estimators")
    records = _estimator_records()
    monkeypatch.setattr(est, "run", lambda quick, malloc: (records, 2.5e9))
    path = tmp_path / "est.json"
    assert est.main(["--json", str(path)]) == 0
    assert _strict(path) == records
    out = capsys.readouterr().out
    assert "machine float32 GEMM rate: 2.5 GFLOP/s" in out
    assert "| stein-shared | 100 | pinnlab | 1.000 | 2.0 | 100 |" in out  # (peak in MiB)


# bench_stein_memory


def test_stein_memory_worker_warms_up_at_d_100_then_resets_the_peak(bench, monkeypatch):
    """One step at d = 100 first (one-time allocations), then the measured step at d,
    the peak reset after its set-up and before it."""
    import bench_estimators

    import pinnlab.solvers.loop as loop

    mem = bench("bench_stein_memory")
    events = []

    def training_step(method, dim):
        events.append(("build", method, dim))
        step = _fake_step(events)
        return (lambda *args: step(*args) if events.append(("dim", dim)) is None else None), {}, {}

    monkeypatch.setattr(bench_estimators, "training_step", training_step)
    peaks = iter([100.0, 103.0])
    monkeypatch.setattr(loop, "reset_peak_memory", lambda device: events.append(("reset",)))
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: events.append(("peak",)) or next(peaks))
    record = mem.worker("independent", 6)
    assert events == [("build", "stein-independent", 100), ("dim", 100), ("step", 0),
                      ("build", "stein-independent", 6), ("reset",), ("peak",), ("dim", 6), ("step", 0), ("peak",)]
    assert record["peak_bytes"] == 3 * 2**20


def _fake_noise_workers(calls):
    def run(argv, **kwargs):
        noise, dim = argv[-2], int(argv[-1])
        calls.append((noise, dim))
        record = {"noise": noise, "dim": dim, "draw_bytes": 100 * 128 * dim * 4, "peak_bytes": 2**30,
                  "draws": 1.234, "seconds": 1.0}
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(record) + "\n", stderr="")
    return run


def test_stein_memory_runs_both_noises_at_each_dimension(bench, monkeypatch, tmp_path, capsys):
    """--quick: d = 10³ and 10⁴; the full run adds 10⁵; the table's sizes in MiB, draws to
    two decimals; --json holds every record."""
    mem = bench("bench_stein_memory")
    calls = []
    monkeypatch.setattr(mem.subprocess, "run", _fake_noise_workers(calls))
    mem.run(True)
    assert calls == [(n, d) for d in (1000, 10000) for n in ("independent", "shared")]
    calls.clear()
    path = tmp_path / "mem.json"
    assert mem.main(["--json", str(path)]) == 0
    assert calls == [(n, d) for d in (1000, 10000, 100000) for n in ("independent", "shared")]
    assert [(r["noise"], r["dim"]) for r in _strict(path)] == calls
    assert "| independent | 1000 | 49 | 1024 | 1.23 |" in capsys.readouterr().out  # 51.2e6 B = 48.8 MiB


# bench_step_breakdown


def test_breakdown_uses_fresh_step_indices_and_sorts_operators_by_time(bench, monkeypatch):
    """Steps 0 and 1 warm up, 2..S+1 are timed plain and S+2..2S+1 under the operator timer
    (no index repeats: a repeat redraws the same noise); ``mm`` and ``addmm`` are matrix
    products; the operators are listed by their seconds, most first."""
    import torch

    sb = bench("bench_step_breakdown")
    indices = []
    a = torch.ones(2, 2)

    def step(params, state, extra, i):
        indices.append(i)
        torch.tanh(a)
        for _ in range(3):
            torch.mm(a, a)
        torch.addmm(a, a, a)
        return params, state, {"loss": torch.tensor(1.0)}

    monkeypatch.setattr(sb, "training_step", lambda method, dim: (step, {}, {}))
    monkeypatch.setattr(sb, "gemm_rate", lambda: 1e9)
    ticks = iter(range(10**6))
    monkeypatch.setattr(sb, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    record = sb.breakdown("stein-shared", 3, 3)
    assert indices == list(range(8))
    seconds = list(record["ops"].values())
    assert seconds == sorted(seconds, reverse=True) and list(record["ops"])[0] == "mm"
    assert record["calls"]["mm"] == 3 and record["calls"]["addmm"] == 1
    assert record["matmul_seconds"] == record["ops"]["mm"] + record["ops"]["addmm"]


def test_step_breakdown_main_defaults_summary_and_record(bench, monkeypatch, tmp_path, capsys):
    """Defaults: stein-shared at d = 100, 10 steps each way (3 with --quick); ``--malloc
    default`` leaves glibc's settings alone; the summary's ratios are over the floor and
    "everything else" is the operators' time without the matrix products; 12 rows."""
    import pinnlab

    sb = bench("bench_step_breakdown")
    asked, configured = [], []
    ops = {f"op{i}": 0.001 * (20 - i) for i in range(13)}
    monkeypatch.setattr(sb, "breakdown", lambda method, dim, steps: asked.append((method, dim, steps)) or {
        "step_seconds": 0.02, "floor_seconds": 0.005, "matmul_seconds": 0.01, "timed_ops_seconds": 0.03,
        "ops": ops, "calls": {name: 1.0 for name in ops}})
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: configured.append(True) or True)
    path = tmp_path / "bd.json"
    assert sb.main(["--malloc", "default", "--json", str(path)]) == 0
    assert asked == [("stein-shared", 100, 10)] and configured == []
    assert _strict(path)["malloc"] == "default"
    out = capsys.readouterr().out
    assert "20.0 ms per step (4.0× the FLOP floor 5.0 ms)" in out
    assert "matrix products 10.0 ms (2.00× the floor), everything else 20.0 ms" in out
    assert "| op11 |" in out and "| op12 |" not in out
    assert sb.main(["--quick"]) == 0
    assert asked[-1] == ("stein-shared", 100, 3) and configured == [True]


# bench_hypergrad


def test_hypergrad_inner_problem_is_the_documented_regression(bench, monkeypatch):
    """Heavy-ball SGD (lr 0.05, momentum 0.9); φ = log weight decay −4 for each of the six
    tensors; inner loss = training MSE + ½ Σ e^{φ_i}‖θ_i‖², outer = validation MSE of the
    noise-free targets. A network with zero weights outputs its last bias c, so both
    losses are closed forms of the data, drawn here again from the same generator."""
    import torch

    import pinnlab.solvers

    hg = bench("bench_hypergrad")
    made = []
    real_sgd = pinnlab.solvers.SGD
    monkeypatch.setattr(pinnlab.solvers, "SGD", lambda **kw: made.append(kw) or real_sgd(**kw))
    problem, phi = hg.build(3, width=5, points=40)
    assert made == [{"lr": 0.05, "momentum": 0.9}] and problem.horizon == 3
    assert torch.equal(phi["log_decay"], torch.full((6,), -4.0, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    x, xv = torch.randn(40, 16, generator=g, dtype=f64), torch.randn(40, 16, generator=g, dtype=f64)
    w = torch.randn(16, generator=g, dtype=f64)
    y = torch.sin(x @ w / 4) + 0.1 * torch.randn(40, generator=g, dtype=f64)
    yv = torch.sin(xv @ w / 4)
    theta0, _ = problem.init
    theta = {k: torch.zeros_like(v) for k, v in theta0.items()}
    theta["b3"] = torch.tensor([0.3], dtype=f64)
    no_decay = {"log_decay": torch.full((6,), -math.inf, dtype=f64)}
    assert float(problem.inner_loss(theta, no_decay, 0)) == pytest.approx(float(((0.3 - y) ** 2).mean()), rel=1e-12)
    assert float(problem.outer_loss(theta, phi)) == pytest.approx(float(((0.3 - yv) ** 2).mean()), rel=1e-12)
    decay = problem.inner_loss(theta0, phi, 0) - problem.inner_loss(theta0, no_decay, 0)
    expected = 0.5 * math.exp(-4.0) * sum(float((v ** 2).sum()) for v in theta0.values())
    assert float(decay) == pytest.approx(expected, rel=1e-10)


def test_hypergrad_methods_run_with_their_benchmark_options(bench, monkeypatch):
    import pinnlab.bilevel

    hg = bench("bench_hypergrad")
    monkeypatch.setattr(pinnlab.bilevel, "make_method", lambda name, **options: (name, options))
    assert hg.method_for("fg2u_jvp", 10, directions=3) == (
        "fg2u", {"num_directions": 3, "chunk_size": 3, "tangents": "jvp"})
    assert {name: hg.method_for(name, 50)[1] for name in hg.METHODS if name != "fg2u_jvp"} == {
        "fg2u": {"num_directions": 8, "chunk_size": 8},
        "zo_fg2u": {"num_directions": 8, "mu": 1e-4, "scheme": "central"},
        "fgu": {"chunk_size": 6}, "rgu": {}, "trgu": {"steps": 5},
        "neumann": {"iterations": 20, "alpha": 0.05}, "cg": {"iterations": 20, "damping": 1e-3},
        "hessian_free": {"alpha": 0.05}, "darts": {"xi": 0.05},
        "penalty": {"inner_iters": 50, "lr": 0.01}, "f2sa": {"inner_iters": 50, "lr_y": 0.05, "lr_z": 0.05},
    }


def test_hypergrad_worker_runs_at_exactly_a_minute_and_in_increasing_t(bench, monkeypatch):
    """6 s at T = 2 predicts exactly 60 s at T = 20: it runs (only over a minute skips);
    the horizons run shortest first whatever their order."""
    hg = bench("bench_hypergrad")
    monkeypatch.setattr(hg, "build", lambda horizon, width: (horizon, {}))
    monkeypatch.setattr(hg, "method_for", lambda name, horizon: name)
    import pinnlab.bilevel

    monkeypatch.setattr(pinnlab.bilevel, "hypergradient", lambda problem, phi, method: types.SimpleNamespace(grad=None))
    monkeypatch.setattr(hg, "_rss", lambda: 100)
    _clock(monkeypatch, hg, [6.0, 1.0])
    assert [(r["horizon"], r["seconds"]) for r in hg.worker("rgu", [20, 2], 4)] == [(2, 6.0), (20, 1.0)]


def test_tensor_byte_counts_run_fg2u_and_rgu_and_end_with_the_block(bench, monkeypatch):
    """One subprocess per method (fg2u, rgu) with the horizons and width; a failed count
    raises; leaving the ``with`` block kills those still running."""
    hg = bench("bench_hypergrad")

    class Proc:
        def __init__(self, argv, **kwargs):
            self.argv, self.returncode, self.events = argv, 0, []

        def poll(self):
            return None if self.argv[-3] == "rgu" else 0

        def kill(self):
            self.events.append("kill")

        def wait(self):
            self.events.append("wait")

        def communicate(self):
            return json.dumps([{"method": self.argv[-3], "horizon": 10, "tensor_peak_bytes": 2**20}]), ""

    monkeypatch.setattr(hg.subprocess, "Popen", Proc)
    with hg.tensor_bytes(64, (10, 100)) as procs:
        assert [p.argv[-4:] for p in procs] == [["--tensor-bytes", "fg2u", "10,100", "64"],
                                                ["--tensor-bytes", "rgu", "10,100", "64"]]
        assert [r["method"] for r in hg.finish_tensor_bytes(procs)] == ["fg2u", "rgu"]
    assert [p.events for p in procs] == [[], ["kill", "wait"]]
    procs[1].returncode = 1
    with pytest.raises(RuntimeError, match="tensor-byte count failed"):
        hg.finish_tensor_bytes(procs)


def test_accuracy_draws_and_seeds_of_each_method(bench, monkeypatch):
    """fg2u: draws × directions directions at seed 1; zo_fg2u: min(draws, 20) estimates at
    seed 7, outer steps 0, 1, ... (a different draw each); one estimate of every other
    method. Stand-in estimates make each cosine a closed form: zo's i-th is (1, i, 0)
    against the exact (1, 0, 0)."""
    import torch

    import pinnlab.bilevel

    hg = bench("bench_hypergrad")
    calls = []

    def hypergradient(problem, phi, method, **kwargs):
        calls.append((method, kwargs))
        if method == "exact":
            grad = torch.tensor([1.0, 0.0, 0.0])
        elif method == "zo_fg2u":
            grad = torch.tensor([1.0, float(kwargs["outer_step"]), 0.0])
        elif isinstance(method, tuple):
            total = method[1]["num_directions"]
            return types.SimpleNamespace(diagnostics={"directional": torch.ones(total),
                                                      "directions": torch.eye(3)[torch.arange(total) % 3]})
        else:
            grad = torch.tensor([1.0, 1.0, 0.0])
        return types.SimpleNamespace(grad={"g": grad})

    monkeypatch.setattr(pinnlab.bilevel, "hypergradient", hypergradient)
    monkeypatch.setattr(pinnlab.bilevel, "ReverseUnroll", lambda: "exact")
    monkeypatch.setattr(pinnlab.bilevel, "ForwardGradientUnroll", lambda **kw: ("fg2u", kw))
    monkeypatch.setattr(hg, "build", lambda horizon, width: (None, None))
    monkeypatch.setattr(hg, "method_for", lambda name, horizon: name)
    records = hg.accuracy((2,), draws=25, directions=3)
    assert [r["method"] for r in records] == ["fg2u", "zo_fg2u", "fgu", "trgu", "neumann", "cg", "hessian_free",
                                              "darts"]
    assert calls[1] == (("fg2u", {"num_directions": 75, "chunk_size": 256}), {"seed": 1})
    assert [c[1] for c in calls if c[0] == "zo_fg2u"] == [{"seed": 7, "outer_step": i} for i in range(20)]
    zo = records[1]
    assert zo["draws"] == 20
    assert zo["cosine_single_mean"] == pytest.approx(sum(1 / math.hypot(1, i) for i in range(20)) / 20, rel=1e-6)
    assert zo["cosine_of_mean"] == pytest.approx(1 / math.hypot(1, 9.5), rel=1e-6)
    fg2u = records[0]  # each draw: the mean of e1, e2, e3
    assert fg2u["cosine_single_mean"] == pytest.approx(1 / math.sqrt(3), rel=1e-6)
    assert records[-1]["cosine_of_mean"] == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def _hypergrad_main(hg, monkeypatch):
    asked = {}
    cost = [{"kind": "cost", "method": m, "horizon": t, "seconds": 0.5, "peak_bytes": {10: 100, 100: 200, 1000: 400}[t],
             "rss_increase_bytes": {10: 10, 100: 20, 1000: 50}[t] * (1 if m == "fg2u" else 3)}
            for m in ("fg2u", "rgu") for t in hg.HORIZONS]
    counted = [{"kind": "tensor_memory", "method": m, "horizon": t, "tensor_peak_bytes": 1000}
               for m in ("fg2u", "rgu") for t in (10, 1000)]
    monkeypatch.setattr(hg, "costs", lambda width: asked.setdefault("costs", width) and list(cost))
    monkeypatch.setattr(hg, "accuracy", lambda horizons, draws: asked.setdefault("accuracy", (horizons, draws)) and [])
    monkeypatch.setattr(hg, "start_tensor_bytes",
                        lambda width, horizons: asked.__setitem__("tensor", (width, horizons)) or [])
    monkeypatch.setattr(hg, "finish_tensor_bytes", lambda procs: list(counted))
    return asked


@pytest.mark.parametrize("quick, width, horizons, tensor", [(True, 64, (10,), (10, 100)),
                                                            (False, 128, (10, 100), (10, 100, 1000))])
def test_hypergrad_main_sizes_and_rss_ratios(bench, monkeypatch, capsys, quick, width, horizons, tensor):
    """Width 64 with --quick (128 otherwise) for the costs and the tensor counts; accuracy
    at T = 10 (and 100), 200 draws; RSS ratios of T = 1000 over T = 10."""
    hg = bench("bench_hypergrad")
    asked = _hypergrad_main(hg, monkeypatch)
    assert hg.main(["--quick"] if quick else []) == 0
    assert asked == {"costs": width, "accuracy": (horizons, 200), "tensor": (width, tensor)}
    out = capsys.readouterr().out
    assert "peak_bytes T=1000 / T=10: fg2u 4.00, rgu 4.00" in out, out
    assert "rss_increase_bytes T=1000 / T=10: fg2u 5.00, rgu 5.00" in out, out


def test_hypergrad_memory_only_writes_its_counts(bench, monkeypatch, tmp_path):
    hg = bench("bench_hypergrad")
    asked = _hypergrad_main(hg, monkeypatch)
    path = tmp_path / "hg.json"
    assert hg.main(["--memory-only", "--json", str(path)]) == 0
    assert asked == {"tensor": (128, (10, 100, 1000))}
    assert [(r["method"], r["horizon"]) for r in _strict(path)] == [("fg2u", 10), ("fg2u", 1000), ("rgu", 10),
                                                                     ("rgu", 1000)]


@pytest.mark.parametrize("script, argv, what", [
    ("bench_estimators", ["--worker", "stein-shared", "0", "1"], "at d = 0"),
    ("bench_hypergrad", ["--worker", "rgu", "10", "0"], "at width 0"),
])
def test_a_worker_refuses_a_size_of_zero(bench, monkeypatch, script, argv, what):
    module = bench(script)
    monkeypatch.setattr(module, "worker", lambda *args: pytest.fail(f"a worker ran {what}"))
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2


# bench_horizon_bias


def _horizon_bias(bench, monkeypatch, argv):
    """bench_horizon_bias.main with stand-ins: θ after an unroll is its start, h = start/100,
    rel_l2 = start/1000 + σ, ∂h/∂log σ = start/10; returns what was asked of them."""
    import torch

    import pinnlab.bilevel.base as base
    import pinnlab.bilevel.parameterization as parameterization
    import pinnlab.solvers.evaluate  # noqa: F401
    import pinnlab.tuning.run as run
    import pinnlab.tuning.setup as setup

    hb = bench("bench_horizon_bias")
    seen = {"unrolls": [], "grads": [], "evaluations": [], "test_points": []}

    class Problem:
        horizon = 10

        def outer_loss(self, theta, u):
            return torch.tensor(theta / 100, dtype=torch.float64)

    class Equation:
        def test_set(self, n, device, dtype):
            seen["test_points"].append(n)
            return torch.zeros(n, 2)

        def exact_values(self, x):
            return torch.zeros(x.shape[0])

    def build_tuning(config):
        seen["width"] = config.model.width
        return types.SimpleNamespace(bilevel=None, parameterization=None, dtype=torch.float64,
                                     device=torch.device("cpu"), problem=types.SimpleNamespace(equation=Equation()))

    def unroll(problem, u, start, steps, init=None):
        seen["unrolls"].append((start, steps, {k: float(v) for k, v in u.items()}, init))
        return (start, None) if init is not None else "warm"

    def reverse(problem, u, start, init):
        seen["grads"].append((start, problem.horizon))
        return types.SimpleNamespace(grad={"sigma": torch.tensor(start / 10, dtype=torch.float64)})

    def evaluate(problem, theta, x, u, num_samples, sigma):
        seen["evaluations"].append((num_samples, sigma))
        return types.SimpleNamespace(rel_l2=theta / 1000 + sigma)

    monkeypatch.setattr(setup, "build_tuning", build_tuning)
    monkeypatch.setattr(parameterization, "reparameterize", lambda b, p: Problem())
    monkeypatch.setattr(parameterization, "unconstrain", lambda phi, p: phi)
    monkeypatch.setattr(base, "unroll", unroll)
    monkeypatch.setattr(sys.modules["pinnlab.solvers.evaluate"], "evaluate", evaluate)
    monkeypatch.setattr(run, "make_hypergradient_method", lambda name, options: reverse)
    monkeypatch.setattr("dataclasses.replace", lambda problem, horizon: types.SimpleNamespace(horizon=horizon))
    monkeypatch.setattr(sys, "argv", ["bench_horizon_bias.py", *argv])
    assert hb.main() == 0
    return seen


@pytest.mark.parametrize("quick, width, warm, horizons, grad_horizons", [
    (True, 32, 300, [0, 10, 100], [10]), (False, 64, 1000, [0, 10, 50, 200], [10, 50])])
def test_horizon_bias_defaults(bench, monkeypatch, quick, width, warm, horizons, grad_horizons):
    """--quick: width 32, W = 300, T ∈ {0, 10, 100}, gradients at T = 10; otherwise width
    64, W = 1000, T ∈ {0, 10, 50, 200}, gradients at 10 and 50; 4 draws, σ_w = 0.03, mix
    0.5 held fixed, the six σ of the grid, the test set of 2000 points."""
    seen = _horizon_bias(bench, monkeypatch, ["--quick"] if quick else [])
    sigmas = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    span = max(horizons + grad_horizons)
    starts = [warm + s * span for s in range(4)]
    assert seen["width"] == width and seen["test_points"] == [2000]
    assert seen["unrolls"][0] == (0, warm, {"sigma": 0.03, "mix": 0.5}, None)
    assert [(s, t, u) for s, t, u, _ in seen["unrolls"][1:]] == [
        (start, t, {"sigma": pytest.approx(sigma), "mix": 0.5})
        for t in horizons for sigma in sigmas for start in starts]
    assert seen["grads"] == [(start, t) for t in grad_horizons for _ in sigmas for start in starts]


def test_horizon_bias_records_mean_and_standard_error_of_the_draws(bench, monkeypatch, tmp_path):
    """Per (T, σ): h and rel_l2 as mean ± sample SE over the draws, their per-draw values
    of h in ``draws``; per gradient horizon: ∂h/∂log σ likewise; evaluated at that σ with
    the config's eval_samples; the warm-up runs at --warm-sigma and every unroll at --mix;
    the header holds the run's own settings."""
    path = tmp_path / "hb.json"
    seen = _horizon_bias(bench, monkeypatch, ["--quick", "--sigmas", "0.1", "--horizons", "2", "--grad-horizons", "3",
                                              "--draws", "3", "--warm-sigma", "0.07", "--mix", "0.25",
                                              "--json", str(path)])
    payload = _strict(path)
    starts = [300, 303, 306]
    assert {k: payload[k] for k in ("quick", "warm_steps", "warm_sigma", "mix", "draws")} == {
        "quick": True, "warm_steps": 300, "warm_sigma": 0.07, "mix": 0.25, "draws": 3}
    assert seen["unrolls"][0][:3] == (0, 300, {"sigma": pytest.approx(0.07), "mix": 0.25})
    assert {u["mix"] for _, _, u, _ in seen["unrolls"]} == {0.25}
    h, grad = payload["records"]
    se = statistics.stdev(starts) / math.sqrt(3)
    assert h["kind"] == "h" and (h["horizon"], h["sigma"]) == (2, 0.1)
    assert h["draws"] == pytest.approx([s / 100 for s in starts], rel=1e-12)
    assert h["h"] == pytest.approx(3.03, rel=1e-12) and h["h_se"] == pytest.approx(se / 100, rel=1e-9)
    assert h["rel_l2"] == pytest.approx(0.403, rel=1e-12) and h["rel_l2_se"] == pytest.approx(se / 1000, rel=1e-9)
    assert grad["kind"] == "grad" and (grad["horizon"], grad["sigma"]) == (3, 0.1)
    assert grad["grad"] == pytest.approx(30.3, rel=1e-12) and grad["grad_se"] == pytest.approx(se / 10, rel=1e-9)
    assert grad["draws"] == pytest.approx([s / 10 for s in starts], rel=1e-12)
    assert seen["evaluations"] == [(256, 0.1)] * 3


# bench_tuning


@pytest.fixture
def tuning(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    return bench_tuning


def test_fg2u_directions_maximise_the_documented_progress_per_cost(tuning):
    """b = argmax over 1..N of ρ/(1 + ρ)/(0.65 + 0.9·b), ρ = b/(N − 1), and 1 for N ≤ 2,
    recomputed here by brute force for N up to 40."""
    for n in range(1, 41):
        if n <= 2:
            expected = 1
        else:
            score = [(b / (n - 1)) / (1 + b / (n - 1)) / (0.65 + 0.9 * b) for b in range(1, n + 1)]
            expected = 1 + score.index(max(score))
        assert tuning.directions(n) == expected, n
    assert [tuning.directions(n) for n in (4, 20, 40)] == [2, 4, 5]


def test_each_problem_tunes_with_its_own_number_of_values(tuning):
    """(a) tunes one weight, (c) σ and mix, (b) μ ∈ ℝ²⁰: fg2u's and zo_fg2u's directions
    follow N = 1, 2, 20."""
    specs = tuning.problems(True)
    for name, n in (("a", 1), ("b", 20), ("c", 2)):
        options = tuning.tuner_config(name, specs[name], "fg2u", 15.0).tune.options
        assert options == {"num_directions": tuning.directions(n)}
        assert tuning.tuner_config(name, specs[name], "zo_fg2u", 15.0).tune.options == {"num_directions": min(n, 4)}


def test_untuned_lra_sets_its_weighting(tuning):
    config = tuning.untuned_config(tuning.problems(True)["a"], "lra", 10)
    assert config.loss.weighting == "lra" and config.trainer.steps == 10
    assert tuning.untuned_config(tuning.problems(True)["a"], "default", 10).loss.weighting != "lra"


def test_run_untuned_reads_the_wall_clock_after_every_step(tuning):
    """The probe reads the loop's wall-clock at every step before the last
    (checkpoint_every = 1): steps 20 and 200 of its 201 must both be there. Four real
    steps of (a) at quick size."""
    out = tuning.run_untuned("a", tuning.problems(True)["a"], "default", 4)
    assert sorted(out["wall"]) == [1, 2, 3] and out["steps"] == 4
    assert out["wall"][1] <= out["wall"][2] <= out["wall"][3] and 0 < out["error"] < math.inf


def test_searches_are_na_under_outer_steps(tuning, monkeypatch):
    """Random search and Optuna run trials, not outer steps: n/a with --outer-steps."""
    monkeypatch.setattr(tuning, "run_tuner", lambda *args: pytest.fail("a search ran"))
    data = tuning.problems(True)["a"]
    for method in ("random", "optuna"):
        record = tuning.run_method("a", data, method, None)
        assert record["error"] is None and record["note"] == "search trials have no outer steps (--outer-steps)"


def test_search_grid_scales_the_configured_trial_length(tuning):
    """½, 1, 2 × the config's own trial_steps when it sets one, never below 1 step."""
    data = tuning._with(tuning.problems(True)["c"], tune__trial_steps=1)
    assert tuning.selection_grid(data, "random") == [{"trial_steps": s} for s in (1, 1, 2)]
    data = tuning._with(data, tune__trial_steps=30)
    assert tuning.selection_grid(data, "optuna") == [{"trial_steps": s} for s in (15, 30, 60)]


def test_a_weighting_setting_goes_to_the_loss_section(tuning):
    data = tuning.problems(True)["a"]
    out = tuning.with_setting(data, 3, {"weighting_options": {"alpha": 0.5, "every": 1}, "outer_lr": 0.3})
    assert out["loss"]["weighting_options"] == {"alpha": 0.5, "every": 1}
    assert "weighting_options" not in out["tune"] and out["tune"]["outer_lr"] == 0.3
    assert out["trainer"]["seed"] == 3


def test_selection_table_names_each_setting(tuning):
    table = tuning.selection_markdown({("b", "rgu"): {"outer_lr": 0.3, "outer_betas": [0.0, 0.0]}})
    assert table.splitlines()[-1] == "| (b) | rgu | outer_lr = 0.3, outer_betas = [0.0, 0.0] |"


def _tuning_main(tuning, monkeypatch, argv, malloc=False):
    """bench_tuning.main with stand-in runs; returns (run_untuned calls, run_method calls)."""
    import pinnlab

    untuned, calls = [], []

    def run_method(name, data, method, budget):
        calls.append((name, method, data, budget))
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "note": ""}

    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: malloc)
    monkeypatch.setattr(tuning, "run_untuned", lambda *args: untuned.append(args) or {})
    monkeypatch.setattr(tuning, "run_method", run_method)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", *argv])
    code = tuning.main()
    return code, untuned, calls


def test_tuning_warms_up_with_one_probe_length_run(tuning, monkeypatch):
    """The process warm-up is one untuned run of the probe's length (201 steps) of the
    first problem, before any measured run."""
    code, untuned, calls = _tuning_main(tuning, monkeypatch, ["--quick", "--problems", "c,a", "--methods", "rgu"])
    assert code == 0 and len(untuned) == 1
    name, data, method, steps = untuned[0]
    assert (name, method, steps) == ("c", "default", 201) and data["equation"]["dim"] == 100


def test_tuning_overrides_reach_every_problem(tuning, monkeypatch):
    """--horizon, --outer-lr, --outer-betas and --outer-optimizer set every problem's tune section."""
    code, _, calls = _tuning_main(tuning, monkeypatch, ["--quick", "--problems", "a,c", "--methods", "rgu",
                                                        "--horizon", "7", "--outer-lr", "0.3",
                                                        "--outer-betas", "0.5,0.8"])
    assert code == 0
    assert [(c[0], c[2]["tune"]["horizon"], c[2]["tune"]["outer_lr"], c[2]["tune"]["outer_betas"]) for c in calls] == [
        ("a", 7, 0.3, [0.5, 0.8]), ("c", 7, 0.3, [0.5, 0.8])]
    code, _, calls = _tuning_main(tuning, monkeypatch, ["--quick", "--problems", "c", "--methods", "rgu",
                                                        "--outer-optimizer", "sgd", "--outer-lr", "1.0"])
    assert code == 0 and calls[0][2]["tune"]["outer_optimizer"] == "sgd"


def test_tuning_json_header_records_outer_steps_and_the_malloc_in_effect(tuning, monkeypatch, tmp_path):
    """``malloc`` is what the process runs with: "default" where configure_malloc could
    not act, although pinnlab's was asked for; ``outer_steps`` the --outer-steps N."""
    path = tmp_path / "t.json"
    code, _, calls = _tuning_main(tuning, monkeypatch, ["--quick", "--problems", "c", "--methods", "rgu",
                                                        "--outer-steps", "3", "--json", str(path)])
    assert code == 0
    payload = _strict(path)
    assert (payload["outer_steps"], payload["budget_seconds"], payload["malloc"]) == (3, None, "default")
    assert [r["method"] for r in payload["records"]] == ["rgu"]


def test_tuning_costs_writes_its_records_with_the_header(tuning, monkeypatch, tmp_path):
    """--costs: each problem's estimate_costs with the default 3 repeats; the JSON is
    {"quick", "malloc", "interrupted", "records"}."""
    asked = []

    def estimate_costs(name, data, methods, repeats=3):
        asked.append((name, methods, repeats))
        return [{"kind": "cost", "problem": name, "method": "primal"}]

    monkeypatch.setattr(tuning, "estimate_costs", estimate_costs)
    path = tmp_path / "c.json"
    code, untuned, _ = _tuning_main(tuning, monkeypatch, ["--quick", "--costs", "--problems", "b,c", "--methods",
                                                          "fg2u_jvp,rgu", "--json", str(path)], malloc=True)
    assert code == 0 and untuned == []
    assert asked == [("b", ["fg2u_jvp", "rgu"], 3), ("c", ["fg2u_jvp", "rgu"], 3)]
    assert _strict(path) == {"quick": True, "malloc": "pinnlab", "interrupted": False, "records": [
        {"kind": "cost", "problem": "b", "method": "primal"}, {"kind": "cost", "problem": "c", "method": "primal"}]}


def _stub_cost_estimation(monkeypatch):
    """bench_tuning.estimate_costs without a tuning set-up: a problem of horizon 7 whose
    unroll and every method's estimate do nothing (only the records are looked at)."""
    import torch

    import pinnlab.bilevel.base as base
    import pinnlab.bilevel.parameterization as parameterization
    import pinnlab.config as configuration
    import pinnlab.tuning.run as run
    import pinnlab.tuning.setup as setup

    monkeypatch.setattr(configuration, "validate", lambda data: data)
    monkeypatch.setattr(setup, "build_tuning", lambda config: types.SimpleNamespace(
        bilevel=None, parameterization=None, phi0=None))
    monkeypatch.setattr(parameterization, "reparameterize", lambda b, p: types.SimpleNamespace(horizon=7))
    monkeypatch.setattr(parameterization, "unconstrain", lambda phi, p: {"sigma": torch.zeros(())})
    monkeypatch.setattr(base, "unroll", lambda problem, u: None)
    monkeypatch.setattr(run, "make_hypergradient_method", lambda name, options: (lambda problem, u: None))


def test_estimate_costs_records_the_problems_horizon(tuning, monkeypatch):
    _stub_cost_estimation(monkeypatch)
    _clock(monkeypatch, tuning, [2.0, 1.0, 4.0, 3.0])  # (best of 2: 1.0 and 3.0)
    records = tuning.estimate_costs("c", {}, ["rgu"], repeats=2)
    assert [(r["method"], r["horizon"], r["seconds"], r["ratio"]) for r in records] == [
        ("primal", 7, 1.0, 1.0), ("rgu", 7, 3.0, 3.0)]


@pytest.mark.parametrize("args, expected", [
    (["--budget", "0"], "--budget 0.0: must be finite and > 0"),
    (["--then", "fg2u@3", "--select"], "--then fg2u@3: --costs and --select time or pick single-phase methods"),
    (["--costs", "--outer-lr", "0.1"], "--outer-lr would not act"),
    (["--costs", "--outer-optimizer", "adam"], "--outer-optimizer would not act"),
])
def test_tuning_refuses_options_that_cannot_act(tuning, monkeypatch, capsys, args, expected):
    code, untuned, calls = _tuning_main(tuning, monkeypatch, ["--quick", "--problems", "c", "--methods", "rgu", *args])
    assert code == 2 and untuned == [] and calls == []
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
