"""README claims checked against the code: "Performance" and "Configs" → "Estimators and the
noise trade-off". Measured timings, memory figures and errors are out of scope as
numbers; the commands, the sizes behind the worked numbers, what each benchmark script
runs and measures, and the costs the estimator table states are in. Claims the earlier
audits pin (tests/test_readme_claims_*audit.py, tests/test_bench*.py,
tests/test_benchmarks*.py, tests/test_flop_floor.py, tests/test_malloc*.py) are not
repeated. What runs for real runs at toy sizes."""

from __future__ import annotations

import collections
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import pinnlab
import pinnlab._malloc
from pinnlab import config as C
from pinnlab.equations import AllenCahnTwoBody
from pinnlab.equations import base as equation_base
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.estimators.base import Directional, WeightedLaplacian
from pinnlab.nets import MLP
from pinnlab.solvers import Adam

from .test_benchmarks_second_audit import _hypergrad_main, _tuning_main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAT = re.sub(r"\s+", " ", README)


def _says(*texts: str) -> None:
    """The README still makes the claim a test checks (its words, whitespace collapsed)."""
    for text in texts:
        assert text in FLAT, f"the README no longer says {text!r}"


class _OperatorLog(TorchDispatchMode):
    """Every aten operator run inside the block: (name, mutable?) counts and the elements of
    each operator's first tensor argument."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()
        self.elements: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls[(func.overloadpacket.__name__, func._schema.is_mutable)] += 1
        if args and isinstance(args[0], torch.Tensor):
            self.elements[func.overloadpacket.__name__] += args[0].numel()
        return out


@pytest.fixture
def no_malloc_settings(monkeypatch):
    """configure_malloc, wherever it is looked up, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("configure_malloc was called")

    monkeypatch.setattr(pinnlab, "configure_malloc", refuse)
    monkeypatch.setattr(pinnlab._malloc, "configure_malloc", refuse)


# -- "Estimators and the noise trade-off" ------------------------------------------------


def _first_order_and_laplacian_macs_per_column(noise: str, n: int, k: int, width: int) -> tuple[float, float]:
    """Multiply-adds per input column of one Stein estimate through the MLP (the slope of
    the counted FLOPs between D = 40 and 80, halved): a first-order query (no f(x)) and
    a Laplacian (f(x) for the second differences)."""

    def flops(dim, query):
        net = MLP(dim, width=width, depth=3, generator=torch.Generator().manual_seed(0))
        x = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            SteinAntithetic(sigma=0.1, num_samples=k, noise=noise).estimate(
                net, x, [query(torch.ones(dim))], generator=torch.Generator().manual_seed(2))
        return counter.get_total_flops()

    return tuple((flops(80, q) - flops(40, q)) / 2 / 40 for q in (Directional, WeightedLaplacian))


def test_a_shared_noise_laplacian_shares_the_first_layer_with_f_of_x():
    """README: "`stein`, `noise: shared` | first layer (N + K)·d·w (Wx and Wδ, shared by ±δ
    and by the f(x) of second derivatives)": a Laplacian costs per input column what a
    first-order query costs, about (N + K)·w multiply-adds, not one more N·w for f(x)."""
    _says("first layer (N + K)·d·w (Wx and Wδ, shared by ±δ and by the f(x) of second derivatives)")
    n, k, width = 4, 3, 16
    first_order, laplacian = _first_order_and_laplacian_macs_per_column("shared", n, k, width)
    assert laplacian == first_order
    assert (n + k) * width <= first_order < (n + k) * width + n * width


@pytest.mark.parametrize("noise, shape", [("shared", "kd"), ("independent", "nkd")])
def test_shared_noise_draws_k_vectors_for_the_whole_batch(monkeypatch, noise, shape):
    """README: "With shared noise the K noise vectors are the same for every point of the
    batch"; "Shared noise draws only K·d values" (independent noise one draw of N·K·d)."""
    _says("the K noise vectors are the same for every point of the batch", "Shared noise draws only K·d values")
    n, k, dim = 5, 3, 7
    drawn = []
    real_randn = torch.randn

    def randn(*args, **kwargs):
        out = real_randn(*args, **kwargs)
        drawn.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "randn", randn)
    net = MLP(dim, width=4, depth=2, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(n, dim)
    SteinAntithetic(sigma=0.1, num_samples=k, noise=noise).estimate(
        net, x, [WeightedLaplacian(torch.ones(dim)), Directional(torch.ones(dim))],
        generator=torch.Generator().manual_seed(0))
    assert drawn == [(k, dim) if shape == "kd" else (n, k, dim)]


# -- "Performance": the benchmarks' sizes and the worked numbers ------------------------


def test_the_worked_numbers_are_those_of_the_benchmark_sizes(benchmarks):
    """README: the step is N = 100, K = 128, a 4×128 tanh MLP, float32; "2NK = 25,600 rows
    of 128", "25,600 × 128 by 128 × 128", "N·K·d = 1.28·10⁷ draws" at d = 10³, "610 MB
    over a 488 MB draw" at d = 10⁴ (one draw, above the 32 MiB mmap threshold, goes back
    to the system), "the first layer's 1.3·10⁶ weights made ~17 temporaries of 5 MB each",
    "2,000 points at d = 10⁵: 0.75 GB in float32"."""
    _says("2NK = 25,600 rows of 128", "25,600 × 128 by 128 × 128", "(N·K·d = 1.28·10⁷ draws)",
          "610 MB over a 488 MB draw", "1.3·10⁶ weights made ~17 temporaries of 5 MB each",
          "2,000 points at d = 10⁵: 0.75 GB in float32", "such as the independent noise at d = 10⁴")
    est = benchmarks("bench_estimators")
    n, k, width = est.N, est.K, est.WIDTH
    assert (n, k, width, est.DEPTH) == (100, 128, 128, 4)
    assert 2 * n * k == 25_600
    assert n * k * 1000 == 1.28e7
    draw = n * k * 10**4 * 4  # float32 bytes
    assert round(draw / 2**20) == 488 and draw > pinnlab._malloc.MMAP_THRESHOLD == 32 * 2**20
    weights = width * 10**4 + width
    assert round(weights / 1e5) == 13 and round(weights * 4 / 1e6) == 5
    assert round(2000 * 10**5 * 4 / 2**30, 2) == 0.75


def test_tanh_runs_on_three_hidden_layers_of_2nk_plus_n_rows(benchmarks):
    """README: "tanh itself, about a fifth of a shared-noise step (three hidden layers on 2NK
    = 25,600 rows of 128)": a Stein step's tanh (and its backward) covers three layers of
    2NK rows f(x ± σξ) and N rows f(x), w units each, in both noise modes."""
    _says("(three hidden layers on 2NK = 25,600 rows of 128)")
    est = benchmarks("bench_estimators")
    n, k, width = 5, 3, 4
    for method in ("stein-shared", "stein-independent"):
        step, params, state = est.training_step(method, 7, n=n, k=k, width=width)
        log = _OperatorLog()
        with log:
            step(params, state, {}, 0)
        assert (log.elements["tanh"], log.elements["tanh_backward"]) == (3 * (2 * n * k + n) * width,) * 2, method


def test_point_blocks_hold_about_2_to_the_22_input_numbers():
    """README: "built and evaluated in blocks of about 2²² input numbers, points × D
    (`POINT_ELEMENT_BUDGET` in `pinnlab/equations/base.py`)"."""
    _says("blocks of about 2²² input numbers, points × D (`POINT_ELEMENT_BUDGET` in `pinnlab/equations/base.py`)")
    assert equation_base.POINT_ELEMENT_BUDGET == 2**22


def test_the_autograd_memory_step_is_the_configs_at_n_100():
    """README: "peak RSS of one step (N = 100, `make_train_step` on
    `configs/allen_cahn_two_body.yaml` with `estimator.kind=autograd`)": the override is
    accepted as it stands (the config's Stein-only keys drop) and the step is N = 100 with
    exact derivatives."""
    _says("`make_train_step` on `configs/allen_cahn_two_body.yaml` with `estimator.kind=autograd`")
    config = C.load(ROOT / "configs" / "allen_cahn_two_body.yaml", ["estimator.kind=autograd", "equation.dim=500"])
    assert config.trainer.batch_size == 100 and config.equation.dim == 500
    assert isinstance(C.make_estimator(config.estimator, None), Autograd)


@pytest.mark.parametrize("quick, steps", [(False, 10), (True, 3)])
def test_every_cell_times_ten_steps_and_autograd_one(benchmarks, monkeypatch, quick, steps):
    """README: "`python benchmarks/bench_estimators.py --json estimators.json` (10 timed steps per
    cell, one per autograd cell, ...; `--quick` times 3)"."""
    _says("(10 timed steps per cell, one per autograd cell, whose steps are the slow ones; 1.3 minutes here; "
          "`--quick` times 3)")
    est = benchmarks("bench_estimators")
    reps = []

    def run(argv, **kwargs):
        method, dim = argv[-3], int(argv[-2])
        reps.append((method, int(argv[-1])))
        record = {"method": method, "dim": dim, "seconds_per_step": 0.001, "peak_bytes": 0, "flops": 1e9,
                  "malloc": "pinnlab"}
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(record) + "\n", stderr="")

    monkeypatch.setattr(est.subprocess, "run", run)
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    monkeypatch.setattr(est, "DIMS", (100,))
    est.run(quick)
    assert [m for m, _ in reps] == list(est.METHODS)
    assert reps == [(m, 1 if m == "autograd" else steps) for m in est.METHODS]


def test_the_two_body_solution_takes_cos_and_sin_once_per_column():
    """README: "the two-body solution takes cos and sin once per column": u*, Δu* at N
    points of D columns take cos and sin of the N·D inputs once, and of the N·(D − 1)
    arguments x_i + cos x_{i+1} + x_{i+1} cos x_i once (not of x_i and x_{i+1} apart)."""
    _says("the two-body solution takes cos and sin once per column")
    n, dim = 3, 6
    equation = AllenCahnTwoBody(dim, seed=1)
    x = torch.rand(n, dim, generator=torch.Generator().manual_seed(0))
    log = _OperatorLog()
    with log:
        equation.exact_with_laplacian(x)
    assert (log.elements["cos"], log.elements["sin"]) == (n * dim + n * (dim - 1),) * 2


def test_adam_without_autograd_writes_into_three_new_tensors_and_one_scratch():
    """README: "Adam writes its update into its new tensors when nothing differentiates it
    (the first layer's 1.3·10⁶ weights made ~17 temporaries ...)": per parameter tensor an
    update allocates the new θ, m and v and one scratch buffer; every other operation
    writes in place or into them."""
    _says("Adam writes its update into its new tensors when nothing differentiates it")
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(5, generator=g)}
    grads = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
    optimizer = Adam(1e-3)
    state = optimizer.init(params)
    log = _OperatorLog()
    with log:
        optimizer.update(grads, state, params, 1e-3)
    allocating = sum(count for (_, mutable), count in log.calls.items() if not mutable)
    assert allocating == 4 * len(params), log.calls


# -- "Memory reuse between steps" ----------------------------------------------------------


def test_hypergradient_and_stein_memory_scripts_keep_glibcs_defaults(benchmarks, monkeypatch, no_malloc_settings):
    """README: "the hypergradient and memory scripts still run with glibc's defaults": their
    workers (a bench_hypergrad cost worker, a bench_stein_memory step) never call
    configure_malloc (bench_estimators' and bench_step_breakdown's do)."""
    _says("the hypergradient and memory scripts still run with glibc's defaults")
    import pinnlab.solvers.loop as loop

    hg = benchmarks("bench_hypergrad")
    assert [r["horizon"] for r in hg.worker("rgu", [2], 2)] == [2]
    mem = benchmarks("bench_stein_memory")
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: 10.0)
    monkeypatch.setattr(loop, "reset_peak_memory", lambda device: None)
    assert mem.worker("shared", 2)["dim"] == 2


def test_bench_tuning_with_malloc_default_keeps_glibcs_settings(benchmarks, monkeypatch, tmp_path):
    """README: "`bench_tuning.py` calls `configure_malloc` as `pinnlab tune` does (`--malloc
    default` for glibc's)": with --malloc default the run records "default" even where
    configure_malloc would act."""
    _says("`bench_tuning.py` calls `configure_malloc` as `pinnlab tune` does (`--malloc default` for glibc's)")
    tuning = benchmarks("bench_tuning")
    path = tmp_path / "t.json"
    code, _, calls = _tuning_main(tuning, monkeypatch, ["--malloc", "default", "--quick", "--problems", "c",
                                                        "--methods", "rgu", "--json", str(path)], malloc=True)
    assert code == 0 and [c[1] for c in calls] == ["rgu"]
    assert json.loads(path.read_text())["malloc"] == "default"


# -- "Hypergradients" ------------------------------------------------------------------


def test_each_method_runs_in_its_own_process_at_t_10_100_1000(benchmarks, monkeypatch):
    """README: "Each method runs in its own fresh subprocess at T = 10, 100, 1000 in that
    order": one worker process per method, in the table's order, given all three T and the
    network width, its records kept in order."""
    _says("Each method runs in its own fresh subprocess at T = 10, 100, 1000 in that order")
    hg = benchmarks("bench_hypergrad")
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        records = [{"kind": "cost", "method": argv[-3], "horizon": t, "seconds": 0.1, "peak_bytes": 2**20,
                    "rss_increase_bytes": 0} for t in map(int, argv[-2].split(","))]
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(records) + "\n", stderr="")

    monkeypatch.setattr(hg.subprocess, "run", run)
    records = hg.costs(64)
    assert calls == [[sys.executable, hg.__file__, "--worker", m, "10,100,1000", "64"] for m in hg.METHODS]
    assert [(r["method"], r["horizon"]) for r in records] == [(m, t) for m in hg.METHODS for t in (10, 100, 1000)]


@pytest.mark.parametrize("name", ["penalty", "f2sa"])
def test_penalty_and_f2sa_time_one_outer_step(benchmarks, monkeypatch, name):
    """README: "Seconds of one estimate (penalty and f2sa: one outer step)": their cost
    worker runs one `step` of the outer algorithm per T (and one at warm-up), no
    hypergradient."""
    _says("Seconds of one estimate (penalty and f2sa: one outer step)")
    import pinnlab.bilevel

    hg = benchmarks("bench_hypergrad")
    monkeypatch.setattr(pinnlab.bilevel, "hypergradient", lambda *a, **k: pytest.fail("a hypergradient ran"))
    steps = []
    real = hg.method_for

    def method_for(method, horizon):
        algorithm = real(method, horizon)
        step = algorithm.step
        object.__setattr__(algorithm, "step", lambda *a, **k: steps.append(horizon) or step(*a, **k))
        return algorithm

    monkeypatch.setattr(hg, "method_for", method_for)
    assert [r["horizon"] for r in hg.worker(name, [3], 2)] == [3]
    assert steps == [2, 3]


@pytest.mark.parametrize("name, by_hvp", [("fg2u", True), ("fgu", True), ("fg2u_jvp", False)])
def test_fg2u_carries_tangents_by_hvps_and_fg2u_jvp_by_jvp(benchmarks, monkeypatch, name, by_hvp):
    """README: "`fg2u` is the default (tangents by Hessian-vector products, below);
    `fg2u_jvp` is the same estimator with `tangents: jvp`, `torch.func.jvp` through the
    whole loop"; "fg2u and fgu then carry their b tangents through a step without
    forward-mode AD of the backward pass": on the benchmark's problem fg2u and fgu carry
    their tangents step by step (tangent_unroll) and fg2u_jvp does not."""
    _says("`fg2u` is the default (tangents by Hessian-vector products, below); `fg2u_jvp` is the same "
          "estimator with `tangents: jvp`, `torch.func.jvp` through the whole loop")
    import pinnlab.bilevel.forward as forward
    from pinnlab.bilevel import hypergradient

    hg = benchmarks("bench_hypergrad")
    carried, jvps = [], []
    tangent_unroll, jvp = forward.tangent_unroll, torch.func.jvp
    monkeypatch.setattr(forward, "tangent_unroll", lambda *a, **k: carried.append(1) or tangent_unroll(*a, **k))
    monkeypatch.setattr(torch.func, "jvp", lambda *a, **k: jvps.append(1) or jvp(*a, **k))
    problem, phi = hg.build(2, width=2, points=8)
    method = hg.method_for(name, 2) if name == "fgu" else hg.method_for(name, 2, directions=2)
    result = hypergradient(problem, phi, method)
    assert torch.isfinite(result.grad["log_decay"]).all()
    assert bool(carried) is by_hvp and bool(jvps) is not by_hvp


@pytest.mark.parametrize("name", ["neumann", "cg"])
def test_neumann_and_cg_take_20_hvps_through_one_cached_first_derivative_graph(benchmarks, name):
    """README: "Neumann and CG take their 20 Hessian-vector products the same way, by one
    more backward through a cached first-derivative graph": with the benchmark's options
    an estimate makes 20 products and evaluates the inner loss g once."""
    _says("Neumann and CG take their 20 Hessian-vector products the same way, by one more backward through a "
          "cached first-derivative graph")
    import dataclasses
    import warnings

    from pinnlab.bilevel import hypergradient

    hg = benchmarks("bench_hypergrad")
    problem, phi = hg.build(2, width=2, points=8)
    calls = []
    inner = problem.inner_loss
    counted = dataclasses.replace(problem, inner_loss=lambda *args: calls.append(1) or inner(*args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (θ_T is no inner optimum: series or curvature warn)
        result = hypergradient(counted, phi, hg.method_for(name, 2))
    assert result.diagnostics["hvps"] == 20 and len(calls) == 1


def test_hypergrad_peak_rss_is_ru_maxrss_in_kibibytes(benchmarks):
    """README: "the process's total peak RSS (ru_maxrss ...)", in MB in the table: Linux
    reports ru_maxrss in KiB, so bytes are × 1024."""
    _says("the process's total peak RSS (ru_maxrss;")
    import resource

    hg = benchmarks("bench_hypergrad")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = hg._rss()
    assert value % 1024 == 0 and before * 1024 <= value <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_fg2u_tensor_peak_does_not_grow_with_t_and_rgus_does(benchmarks):
    """README: "One step's graph is alive at a time, so memory stays independent of T"
    (fg2u's tensor peak the same at every T) against rgu's, which grows with T: the
    script's tensor-byte count at toy size."""
    _says("One step's graph is alive at a time, so memory stays independent of T")
    hg = benchmarks("bench_hypergrad")
    fg2u = [r["tensor_peak_bytes"] for r in hg.tensor_bytes_worker("fg2u", [2, 10], 2)]
    rgu = [r["tensor_peak_bytes"] for r in hg.tensor_bytes_worker("rgu", [2, 10], 2)]
    assert fg2u[0] == fg2u[1] > 0
    assert rgu[1] > 3 * rgu[0]


def test_quick_memory_only_counts_all_three_horizons_at_width_64(benchmarks, monkeypatch):
    """README: the memory table comes from `bench_hypergrad.py --quick --memory-only`:
    T = 10, 100 and 1000, at the --quick width (64, the MLP of the cost table)."""
    _says("`python benchmarks/bench_hypergrad.py --quick --memory-only --json tensor_memory.json`")
    hg = benchmarks("bench_hypergrad")
    asked = _hypergrad_main(hg, monkeypatch)
    assert hg.main(["--quick", "--memory-only"]) == 0
    assert asked == {"tensor": (64, (10, 100, 1000))}


def test_hutchinson_takes_estimator_probes_hessian_vector_products():
    """README: "`hutchinson` | `estimator.probes` Hessian-vector products (Rademacher probes,
    16 by default)"."""
    _says("`estimator.probes` Hessian-vector products (Rademacher probes, 16 by default)")
    section = C.EstimatorSection(kind="hutchinson")
    assert section.probes == 16
    estimator = C.make_estimator(C.EstimatorSection(kind="hutchinson", probes=5), AllenCahnTwoBody(3, seed=0))
    assert estimator.num_probes == 5
