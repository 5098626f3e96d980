"""Cost of one RS-PINN training step per derivative estimator and dimension.

Times one training step (forward + backward of the biased Allen–Cahn two-body loss and
the Adam update: the real ``make_train_step``), N = 100 points, K = 128 samples
(Stein) or V = 16 probes (Hutchinson), default 4-layer 128-wide tanh MLP, float32, for
d ∈ {100, 1000, 10000} × {stein-shared, stein-independent, autograd, hutchinson}.

Each (estimator, d) runs in a fresh subprocess. ``seconds_per_step`` is the median
over the timed steps (10, 3 with ``--quick``; autograd, the slowest, 1) after one warm-up
step. ``peak_bytes`` is the increase of the subprocess's peak RSS (``ru_maxrss``) over
its high-water mark after set-up (network, parameters, optimizer state), measured
across the warm-up and timed steps: the extra memory a training step needs on the CPU
(activations, noise, gradients).
``flops`` is the FLOP floor of a step (``step_flops``): the multiply-adds (×2) of the
matrix products its estimator's passes and the backward pass to the parameters cannot
avoid, and ``floor_seconds`` divides it by this machine's measured float32 GEMM rate, so
``seconds_per_step / floor_seconds`` says how far from the floor a step is. Autograd is
skipped where a step would exceed a minute or ``MEMORY_LIMIT`` bytes (its cost is about D
Hessian-vector products, whose graphs all stay alive for the backward pass: time and
memory grow as D·(D + H/w), predicted from the largest d measured; ``autograd_growth``).

Records (``--json``, a list; one per cell and malloc mode): ``estimator`` (stein,
autograd or hutchinson), ``noise`` (shared or independent; null for autograd, which draws
none), ``method`` (both, as
``stein-shared``), ``dim``, ``seconds_per_step``, ``peak_bytes``, ``flops``,
``floor_seconds``, ``reps`` (the timed steps), ``malloc``, ``memory_method`` (how
``peak_bytes`` was measured) and ``skipped`` (null, or why an autograd cell was not run:
its prediction; the cell's measurements are then null and the table says "skipped").

Each worker calls :func:`pinnlab.configure_malloc` first, as the ``pinnlab`` commands do
(``malloc: "pinnlab"`` in its record); ``--malloc default`` keeps glibc's defaults and
``--malloc both`` times every cell both ways, one after the other, so the two can be
compared in one run.

Usage:
    python benchmarks/bench_estimators.py [--quick] [--json PATH] [--malloc pinnlab|default|both]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from _common import Parser, bench_threads, json_path_error, run_main, write_json

DIMS = (100, 1000, 10000)
METHODS = ("stein-shared", "stein-independent", "autograd", "hutchinson")
NOISE = {"stein-shared": "shared", "stein-independent": "independent", "autograd": None, "hutchinson": "independent"}
"""Each method's noise mode (Hutchinson's probes are drawn per point; autograd draws none)."""
MEMORY_LIMIT = 8 * 2**30
"""An autograd step predicted to need more than this many bytes is skipped (a third of this
machine's 24 GB)."""
N, K, V, WIDTH, DEPTH = 100, 128, 16, 128, 4


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def step_flops(
    method: str, dim: int, *, n: int = N, k: int = K, v: int = V, width: int = WIDTH, depth: int = DEPTH
) -> float:
    """FLOP floor of one training step: 2 × the multiply-adds of the matrix products the
    step cannot avoid (``tests/test_flop_floor.py`` checks it against a counted step).

    The biased Allen–Cahn residual with the hard constraint asks each point for u, a·∇u
    and Δu. Per row a forward pass costs d·w in the first layer and H = G + w after it,
    G = (depth − 2)·w² in the hidden w × w layers. The backward to the parameters costs
    the first layer once (its weight gradient: its input x, noise or tangent is no
    parameter, so its input gradient is never needed) and every later layer twice
    (weight and input gradient), 2H.

    * Stein: 2nk + n evaluations (f(x ± δ) for k pairs, f(x) for Δu), whose first layer
      comes from W·x and W·δ: (n + k)·d·w with shared noise, (n + nk)·d·w with
      independent noise. Projecting the noise onto the directional vector costs nk·d,
      onto the Laplacian weights k·d (shared) or nk·d (independent). Floor: 2·first
      + 3·(2nk + n)·H + projections.
    * Autograd and Hutchinson: M forward-over-reverse Hessian-vector products with dense
      tangents, M = d (one per coordinate) or v (probes). With F = n·d·w, an HVP is a
      tangent forward (F + nG: the output layer's tangent is not needed) and a tangent
      backward (nG + F) pass, and its backward to the parameters F + 2nG + 2nG + 2F (the
      tangent backward's first layer needs both gradients): 5F + 6nG. Once per step: the
      primal forward for u (F + nH, backward F + 2nH), the tangent forward for a·∇u (the
      same), and the primal backward through the hidden layers that the HVPs' second
      derivatives use (nG, backward 2nG). Floor: 4F + 6nH + 3nG + M·(5F + 6nG).

    Not counted: elementwise work (activations, the loss, Adam) and what the implementation
    recomputes on top of the floor (f(x)'s own first layer, a fresh primal pass for the
    tangent of a·∇u and for every vmapped chunk of HVPs).
    """
    hidden_square = (depth - 2) * width * width  # G
    hidden = hidden_square + width  # H: multiply-adds after the first layer, per row
    if method.startswith("stein"):
        evals = 2 * n * k + n
        if method == "stein-shared":
            first, projections = (n + k) * dim * width, n * k * dim + k * dim
        else:
            first, projections = (n + n * k) * dim * width, 2 * n * k * dim
        multiply_adds = 2 * first + 3 * evals * hidden + projections
    else:
        hvps = dim if method == "autograd" else v
        first = n * dim * width  # F
        multiply_adds = (4 * first + 6 * n * hidden + 3 * n * hidden_square
                         + hvps * (5 * first + 6 * n * hidden_square))
    return 2.0 * multiply_adds


def gemm_rate() -> float:
    """Measured float32 matmul FLOP/s of this machine (2048² product, best of 5)."""
    import torch

    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best


def training_step(
    method: str, dim: int, *, n: int = N, k: int = K, v: int = V, width: int = WIDTH, depth: int = DEPTH
):
    """The benchmarked step of ``method`` at dimension ``dim``: (step, params, state)."""
    import torch

    from pinnlab.equations import AllenCahnTwoBody
    from pinnlab.estimators import Autograd, Hutchinson, SteinAntithetic
    from pinnlab.losses import Biased
    from pinnlab.nets import MLP
    from pinnlab.solvers import Adam, PINNProblem, make_train_step

    if method == "stein-shared":
        estimator = SteinAntithetic(sigma=1e-2, num_samples=k, noise="shared")
    elif method == "stein-independent":
        estimator = SteinAntithetic(sigma=1e-2, num_samples=k, noise="independent")
    elif method == "hutchinson":
        estimator = Hutchinson(num_probes=v)
    else:
        estimator = Autograd(chunk_size=32)
    equation = AllenCahnTwoBody(dim, seed=1)
    net = MLP(dim, width=width, depth=depth, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(equation, net, estimator, Biased(), batch_size=n)
    optimizer = Adam(1e-3)
    params = problem.init_params()
    return make_train_step(problem, optimizer, seed=0), params, optimizer.init(params)


def worker(method: str, dim: int, reps: int) -> dict:
    import torch

    import pinnlab

    malloc = "pinnlab" if pinnlab.configure_malloc() else "default"
    torch.set_num_threads(bench_threads())  # (checked by main before the workers start)
    step, params, state = training_step(method, dim)
    baseline = _peak_rss_bytes()
    params, state, _ = step(params, state, {}, 0)  # warm-up
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        params, state, metrics = step(params, state, {}, i + 1)
        times.append(time.perf_counter() - t0)
    assert torch.isfinite(metrics["loss"])
    return {
        "estimator": method.split("-")[0],
        "noise": NOISE[method],
        "method": method,
        "dim": dim,
        "seconds_per_step": statistics.median(times),
        "peak_bytes": max(0, _peak_rss_bytes() - baseline),
        "flops": step_flops(method, dim),
        "reps": reps,
        "malloc": malloc,
    }


def autograd_growth(dim: int, last_dim: int, *, width: int = WIDTH, depth: int = DEPTH) -> float:
    """How much more an autograd step costs at ``dim`` than at ``last_dim``: D
    Hessian-vector products whose graphs all stay alive for the backward pass, each a pass
    over rows of cost d·w + H (H = (depth − 2)·w² + w after the first layer, as in
    :func:`step_flops`), so time and memory grow as D·(D + H/w): about D² only once
    D ≫ H/w = 257 (D² from d = 100 predicted 16 GiB at d = 1,000, where a step takes 2.8)."""
    rest = ((depth - 2) * width * width + width) / width
    return (dim * (dim + rest)) / (last_dim * (last_dim + rest))


def autograd_skip(dim: int, seen: dict[int, tuple[float, int]]) -> str | None:
    """Why an autograd step at ``dim`` is not run (None: run it), predicted from the largest
    d in ``seen`` (d -> (seconds per step, peak bytes)) by :func:`autograd_growth`."""
    if not seen:
        return None
    last_dim, (last_s, last_bytes) = max(seen.items())
    growth = autograd_growth(dim, last_dim)
    seconds, memory = last_s * growth, last_bytes * growth
    if seconds > 60 or memory > MEMORY_LIMIT:
        return (f"predicted {seconds:.0f} s and {memory / 2**30:.0f} GiB per step "
                f"(limits 60 s, {MEMORY_LIMIT / 2**30:.0f} GiB)")
    return None


RECORD_KEYS = ("estimator", "noise", "method", "dim", "seconds_per_step", "peak_bytes", "flops", "reps", "malloc",
               "floor_seconds", "memory_method", "skipped")
"""The keys of every record, in order (a skipped cell's are null but for its estimator,
noise, method, dim, malloc and ``skipped``)."""

MALLOC_MODES = {"pinnlab": ("pinnlab",), "default": ("default",), "both": ("default", "pinnlab")}


def run(quick: bool, malloc: str = "pinnlab") -> tuple[list[dict], float]:
    reps = 3 if quick else 10
    rate = gemm_rate()
    records = []
    autograd_seen: dict[int, tuple[float, int]] = {}  # dim -> (seconds per step, peak bytes)
    for dim in DIMS:
        for method in METHODS:
            if method == "autograd":
                reason = autograd_skip(dim, autograd_seen)
                if reason:  # (a record too: the table and the JSON said nothing of the cell)
                    print(f"skip autograd d={dim}: {reason}", file=sys.stderr)
                    records += [dict.fromkeys(RECORD_KEYS) | {"estimator": "autograd", "noise": NOISE[method],
                                                              "method": method, "dim": dim, "malloc": mode,
                                                              "skipped": reason} for mode in MALLOC_MODES[malloc]]
                    continue
            for mode in MALLOC_MODES[malloc]:
                env = {k: v for k, v in os.environ.items() if k != "PINNLAB_MALLOC"}
                if mode == "default":
                    env["PINNLAB_MALLOC"] = "default"
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", method, str(dim), str(reps if method != "autograd" else 1)],
                    capture_output=True, text=True, check=False, env=env,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{method} d={dim} failed:\n{out.stderr}")
                record = json.loads(out.stdout.strip().splitlines()[-1])
                record["floor_seconds"] = record["flops"] / rate
                record["memory_method"] = "peak RSS increase of a fresh subprocess during the warm-up and timed steps"
                record["skipped"] = None
                records.append(record)
                if method == "autograd":
                    autograd_seen[dim] = (record["seconds_per_step"], record["peak_bytes"])
                print(
                    f"{method:18s} d={dim:6d} malloc {record['malloc']:7s} {record['seconds_per_step']:8.3f} s/step "
                    f"peak +{record['peak_bytes'] / 2**20:7.1f} MB  floor {record['floor_seconds']:.3f} s",
                    file=sys.stderr,
                )
    return records, rate


def table(records: list[dict]) -> str:
    lines = ["| estimator | d | malloc | s/step | ×floor | peak MB |", "|---|---|---|---|---|---|"]
    for r in records:
        if r.get("skipped"):
            lines.append(f"| {r['method']} | {r['dim']} | {r['malloc']} | skipped | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['dim']} | {r['malloc']} | {r['seconds_per_step']:.3f} | "
            f"{r['seconds_per_step'] / r['floor_seconds']:.1f} | {r['peak_bytes'] / 2**20:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps per cell (autograd: 1, as without --quick)")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--malloc", choices=tuple(MALLOC_MODES), default="pinnlab",
                        help="glibc malloc settings of the workers: pinnlab's (configure_malloc, as the pinnlab "
                             "commands), glibc's defaults, or both, side by side (default: pinnlab)")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "DIM", "REPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # (the script's own subprocess; an unknown method ran as autograd)
        method, dim, reps = args.worker
        if method not in METHODS or not (dim.isdigit() and reps.isdigit() and int(dim) >= 1 and int(reps) >= 1):
            parser.error(f"--worker {method} {dim} {reps}: a method of {', '.join(METHODS)}, DIM and REPS >= 1")
        print(json.dumps(worker(method, int(dim), int(reps))))
        return 0
    problem = json_path_error(args.json)
    if problem:
        return parser.refuse(f"--json {args.json}: {problem}")
    try:
        bench_threads()  # (before the workers, which set it, start)
    except ValueError as exc:
        return parser.refuse(str(exc))
    records, rate = run(args.quick, args.malloc)
    print(table(records))
    for mode in dict.fromkeys(r["malloc"] for r in records):  # (no glibc: "default" rows only)
        by = {(r["method"], r["dim"]): r["seconds_per_step"] for r in records if r["malloc"] == mode}
        shared_ratio = by[("stein-shared", 10000)] / by[("stein-shared", 100)]
        speedup = by[("stein-independent", 10000)] / by[("stein-shared", 10000)]
        print(f"\nmalloc {mode}: stein-shared d=1e4 / d=100: {shared_ratio:.2f} (target <= 2)")
        print(f"malloc {mode}: stein-independent / stein-shared at d=1e4: {speedup:.1f} (target >= 10)")
    if args.malloc == "both":
        pairs = {}
        for r in records:
            pairs.setdefault((r["method"], r["dim"]), {})[r["malloc"]] = r["seconds_per_step"]
        for (method, dim), t in pairs.items():
            if len(t) == 2:
                print(f"{method} d={dim}: glibc defaults / pinnlab malloc = {t['default'] / t['pinnlab']:.2f}")
    print(f"machine float32 GEMM rate: {rate / 1e9:.1f} GFLOP/s")
    if args.json is not None:
        write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
