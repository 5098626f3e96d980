"""Cost and accuracy of every hypergradient method on a small MLP inner problem.

Methods: every estimator of pinnlab.bilevel; ``fg2u_jvp`` is fg2u with
``tangents="jvp"`` (torch.func.jvp through the whole loop) beside the default
Hessian-vector-product tangents, for comparison.

Inner problem: a 16 → W → W → 1 tanh MLP fitted to noisy regression data by T steps of
heavy-ball SGD (lr 0.05, momentum 0.9), with one weight-decay coefficient per parameter
tensor as φ (N = 6, log-parameterised); outer loss: validation MSE. float64.

Records:
  {"kind": "cost", "method", "horizon", "seconds", "peak_bytes", "rss_increase_bytes",
   "memory_method"}
      one estimate per (method, T); each method runs in its own fresh subprocess at
      T = 10, 100, 1000 in that order, so ``peak_bytes``, the subprocess's peak RSS
      (ru_maxrss, the Python process and torch included), is the peak over all T' ≤ T
      (an upper bound for the peak at T; the set-up of all three problems comes first), and
      ``rss_increase_bytes`` its increase over the high-water mark after set-up (data,
      networks, a warm-up at T = 2). The increase is what the method
      adds, but RSS moves by a few MB for reasons unrelated to T (malloc heap and arena
      growth: fg2u measured +3–4 MB at T = 10, +9 at T = 1000 and +8.6 at T = 3000), so the
      script also reports the memory per unrolled step, the slope of the increase
      between T = 100 and T = 1000. Skipped where the
      estimate would take longer than a minute (extrapolated from the previous T).
  {"kind": "tensor_memory", "method", "horizon", "tensor_peak_bytes", "memory_method"}
      fg2u and rgu: the peak of live CPU tensor bytes during one estimate, summed from
      torch.profiler's allocator events (deterministic; the memory targets are checked
      on this). The profiler slows fg2u at T = 1000 to about 3 minutes and keeps every
      allocator event (peak RSS at width 64, T up to 1000: 12.5 GB for fg2u, 5.9 GB for
      rgu, the two processes side by side), so ``--quick``
      counts T = 10 and 100 beside the accuracy part and ``--memory-only`` counts
      T = 10, 100, 1000 on its own.
  {"kind": "accuracy", "method", "horizon", "directions", "draws", "cosine_single_mean",
   "cosine_of_mean"}
      cosine similarity to the exact hypergradient (reverse mode) of single estimates
      (mean over draws) and of the mean of all draws; W = 32 for these.

Usage:
    python benchmarks/bench_hypergrad.py [--quick] [--memory-only] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time

from _common import Parser, bench_threads, json_path_error, listed, run_main, write_json

METHODS = ("fg2u", "fg2u_jvp", "zo_fg2u", "fgu", "rgu", "trgu", "neumann", "cg", "hessian_free", "darts", "penalty", "f2sa")
HORIZONS = (10, 100, 1000)


def build(horizon: int, width: int, points: int = 256):
    import torch

    from pinnlab.bilevel import from_inner_loss
    from pinnlab.solvers import SGD

    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    x = torch.randn(points, 16, generator=g, dtype=f64)
    xv = torch.randn(points, 16, generator=g, dtype=f64)
    w_true = torch.randn(16, generator=g, dtype=f64)
    y = torch.sin(x @ w_true / 4) + 0.1 * torch.randn(points, generator=g, dtype=f64)
    yv = torch.sin(xv @ w_true / 4)
    sizes = [(width, 16), (width,), (width, width), (width,), (1, width), (1,)]
    names = ["w1", "b1", "w2", "b2", "w3", "b3"]
    theta0 = {n: torch.randn(s, generator=g, dtype=f64) / (s[-1] ** 0.5 if len(s) == 2 else 4)
              for n, s in zip(names, sizes)}

    def net(theta, inputs):
        h = torch.tanh(inputs @ theta["w1"].T + theta["b1"])
        h = torch.tanh(h @ theta["w2"].T + theta["b2"])
        return (h @ theta["w3"].T + theta["b3"])[:, 0]

    def inner(theta, phi, t):
        fit = ((net(theta, x) - y) ** 2).mean()
        decay = sum(torch.exp(phi["log_decay"][i]) * (theta[n] ** 2).sum() for i, n in enumerate(names))
        return fit + 0.5 * decay

    def outer(theta, phi):
        return ((net(theta, xv) - yv) ** 2).mean()

    problem = from_inner_loss(inner, outer, SGD(lr=0.05, momentum=0.9), theta0, horizon=horizon)
    phi = {"log_decay": torch.full((6,), -4.0, dtype=f64)}
    return problem, phi


def method_for(name: str, horizon: int, directions: int = 8):
    from pinnlab.bilevel import make_method

    if name == "fg2u_jvp":  # the same estimator with tangents by torch.func.jvp of the whole loop
        return make_method("fg2u", num_directions=directions, chunk_size=directions, tangents="jvp")
    options = {
        "fg2u": {"num_directions": directions, "chunk_size": directions},
        "zo_fg2u": {"num_directions": directions, "mu": 1e-4, "scheme": "central"},
        "fgu": {"chunk_size": 6},
        "trgu": {"steps": min(5, horizon)},
        "neumann": {"iterations": 20, "alpha": 0.05},
        "cg": {"iterations": 20, "damping": 1e-3},
        "hessian_free": {"alpha": 0.05},
        "darts": {"xi": 0.05},
        # (0.05 diverged at width 64: LowerLevelDivergence at inner step 7 of T = 10, so --quick failed;
        # 0.01 runs at widths 64 and 128 and T up to 1000)
        "penalty": {"inner_iters": horizon, "lr": 0.01},
        "f2sa": {"inner_iters": horizon, "lr_y": 0.05, "lr_z": 0.05},
    }.get(name, {})
    return make_method(name, **options)


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(name: str, horizons: list[int], width: int) -> list[dict]:
    """One method at increasing T in one fresh process (see the module docstring)."""
    import torch

    from pinnlab.bilevel import AbstractOuterAlgorithm, hypergradient

    torch.set_num_threads(bench_threads())  # (checked by main before the workers start)
    warm, phi = build(2, width)

    def run(problem, method):
        if isinstance(method, AbstractOuterAlgorithm):
            state = method.init(problem, phi)
            return method.step(problem, phi, state, outer_step=0, start=0)[0]
        return hypergradient(problem, phi, method).grad

    run(warm, method_for(name, 2))
    problems = {t: build(t, width)[0] for t in horizons}
    baseline = _rss()
    records, last = [], None
    for horizon in sorted(horizons):
        if last is not None and last["seconds"] * horizon / last["horizon"] > 60:
            print(f"skip {name} T={horizon}: predicted {last['seconds'] * horizon / last['horizon']:.0f} s",
                  file=sys.stderr)
            break
        t0 = time.perf_counter()
        run(problems[horizon], method_for(name, horizon))
        seconds = time.perf_counter() - t0
        peak = _rss()
        last = {"kind": "cost", "method": name, "horizon": horizon, "seconds": seconds,
                "peak_bytes": peak, "rss_increase_bytes": max(0, peak - baseline),
                "memory_method": "peak RSS of a fresh subprocess (ru_maxrss) after all T' <= T; "
                                 "increase over the high-water mark after set-up"}
        records.append(last)
    return records


def tensor_bytes_worker(name: str, horizons: list[int], width: int) -> list[dict]:
    """Peak bytes of live CPU tensors during one estimate, from the allocator events that
    ``torch.profiler`` records with ``profile_memory=True``: deterministic, unlike RSS,
    but the profiler slows the estimate 3–4× (fg2u), so it runs only for fg2u and rgu."""
    import torch

    from pinnlab.bilevel import hypergradient

    torch.set_num_threads(1)
    warm, phi = build(2, width)
    hypergradient(warm, phi, method_for(name, 2))
    records = []
    for horizon in horizons:
        problem, _ = build(horizon, width)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            hypergradient(problem, phi, method_for(name, horizon))
        records.append({"kind": "tensor_memory", "method": name, "horizon": horizon,
                        "tensor_peak_bytes": peak_live_bytes(prof),
                        "memory_method": "peak live CPU tensor bytes from torch.profiler allocator events"})
    return records


def peak_live_bytes(prof) -> int:
    """The peak of live CPU tensor bytes over a ``torch.profiler.profile(...,
    profile_memory=True)`` run: its allocator events (+ allocated, − freed) summed in time
    order (deterministic, unlike RSS)."""
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def tensor_bytes(width: int, horizons):
    """:func:`start_tensor_bytes` for the ``with`` block, whose processes end with it (an
    interrupted run, Ctrl-C, left them running for half a minute)."""
    print(f"counting live tensor bytes of fg2u and rgu at T = {', '.join(map(str, horizons))} (width {width}), "
          "in two processes side by side", file=sys.stderr, flush=True)  # (minutes without a word)
    procs = start_tensor_bytes(width, horizons)
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def start_tensor_bytes(width: int, horizons) -> list:
    """Launch the tensor-byte counts for fg2u and rgu (run while the accuracy part runs)."""
    return [subprocess.Popen([sys.executable, __file__, "--tensor-bytes", name, ",".join(map(str, horizons)),
                              str(width)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("fg2u", "rgu")]


def finish_tensor_bytes(procs) -> list[dict]:
    """The counts of :func:`start_tensor_bytes`' processes."""
    records = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"tensor-byte count failed:\n{err}")
        records += json.loads(out.strip().splitlines()[-1])
    for r in records:
        print(f"tensor bytes {r['method']:5s} T={r['horizon']:5d} {r['tensor_peak_bytes'] / 2**20:10.2f} MB",
              file=sys.stderr)
    return records


def costs(width: int) -> list[dict]:
    records = []
    for name in METHODS:
        out = subprocess.run([sys.executable, __file__, "--worker", name, ",".join(map(str, HORIZONS)), str(width)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{out.stderr}")
        sys.stderr.write("".join(line + "\n" for line in out.stderr.splitlines() if line.startswith("skip")))
        for record in json.loads(out.stdout.strip().splitlines()[-1]):
            records.append(record)
            print(f"cost {name:13s} T={record['horizon']:5d} {record['seconds']:8.3f} s "
                  f"+{record['rss_increase_bytes'] / 2**20:8.1f} MB (peak {record['peak_bytes'] / 2**20:.0f} MB)",
                  file=sys.stderr)
    return records


def accuracy(horizons, draws: int, directions: int = 8) -> list[dict]:
    import torch

    from pinnlab.bilevel import ForwardGradientUnroll, ReverseUnroll, hypergradient
    from pinnlab.bilevel.base import flatten

    torch.set_num_threads(1)  # the tensor-byte counts run beside it; accuracy is not timed
    records = []

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    for horizon in horizons:
        problem, phi = build(horizon, width=32)
        exact = flatten(hypergradient(problem, phi, ReverseUnroll()).grad)
        total = draws * directions
        res = hypergradient(problem, phi, ForwardGradientUnroll(num_directions=total, chunk_size=256), seed=1)
        singles = (res.diagnostics["directional"][:, None] * res.diagnostics["directions"])
        estimates = singles.reshape(draws, directions, -1).mean(1)
        records.append({
            "kind": "accuracy", "method": "fg2u", "horizon": horizon, "directions": directions,
            "draws": draws, "cosine_single_mean": sum(cos(e, exact) for e in estimates) / draws,
            "cosine_of_mean": cos(estimates.mean(0), exact),
        })
        zo_draws = min(draws, 20)
        zo = [flatten(hypergradient(problem, phi, method_for("zo_fg2u", horizon), seed=7, outer_step=i).grad)
              for i in range(zo_draws)]
        records.append({
            "kind": "accuracy", "method": "zo_fg2u", "horizon": horizon, "directions": directions,
            "draws": zo_draws, "cosine_single_mean": sum(cos(e, exact) for e in zo) / zo_draws,
            "cosine_of_mean": cos(torch.stack(zo).mean(0), exact),
        })
        for name in ("fgu", "trgu", "neumann", "cg", "hessian_free", "darts"):
            est = flatten(hypergradient(problem, phi, method_for(name, horizon)).grad)
            records.append({"kind": "accuracy", "method": name, "horizon": horizon, "directions": None,
                            "draws": 1, "cosine_single_mean": cos(est, exact), "cosine_of_mean": cos(est, exact)})
        for r in records[-8:]:
            print(f"accuracy {r['method']:13s} T={horizon:4d} cos single {r['cosine_single_mean']:.3f} "
                  f"cos of mean {r['cosine_of_mean']:.4f}", file=sys.stderr)
    return records


def table(records) -> str:
    cost = [r for r in records if r["kind"] == "cost"]
    lines = ["| method | " + " | ".join(f"T={t}: s / +MB / peak MB" for t in HORIZONS) + " |",
             "|---|" + "---|" * len(HORIZONS)] if cost else []
    for name in METHODS if cost else ():
        cells = []
        for t in HORIZONS:
            r = next((c for c in cost if c["method"] == name and c["horizon"] == t), None)
            cells.append("skipped" if r is None else f"{r['seconds']:.3g} / {r['rss_increase_bytes'] / 2**20:.1f}"
                         f" / {r['peak_bytes'] / 2**20:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counted = [r for r in records if r["kind"] == "tensor_memory"]
    if counted:
        lines += ["" if lines else None, "| method | " + " | ".join(f"T={r['horizon']} peak tensor MB" for r in counted
                                                 if r["method"] == counted[0]["method"]) + " |",
                  "|---|" + "---|" * sum(r["method"] == counted[0]["method"] for r in counted)]
        for name in dict.fromkeys(r["method"] for r in counted):
            lines.append(f"| {name} | " + " | ".join(f"{r['tensor_peak_bytes'] / 2**20:.2f}" for r in counted
                                                     if r["method"] == name) + " |")
    acc = [r for r in records if r["kind"] == "accuracy"]
    if acc:
        lines += ["", "| method | T | directions × draws | mean cos(single, exact) | cos(mean, exact) |",
                  "|---|---|---|---|---|"]
    for r in acc:
        lines.append(f"| {r['method']} | {r['horizon']} | {r['directions'] or '-'} × {r['draws']} | "
                     f"{r['cosine_single_mean']:.3f} | {r['cosine_of_mean']:.4f} |")
    return "\n".join(line for line in lines if line is not None)


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller network (width 64) and fewer horizons: accuracy at T = 10, tensor bytes at T = 10 and 100")
    parser.add_argument("--json", metavar="PATH", help="write the records as JSON")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--tensor-bytes", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory-only", action="store_true",
                        help="only the deterministic tensor-byte counts of fg2u and rgu at T = 10, 100, 1000 "
                             "(about 3 minutes and 18 GB of RAM: torch.profiler keeps every allocator event; "
                             "--quick counts only T = 10 and 100 beside its other work)")
    args = parser.parse_args(argv)
    for option, fn, names in ((args.worker, worker, METHODS), (args.tensor_bytes, tensor_bytes_worker,
                                                               ("fg2u", "rgu"))):
        if option:  # (the scripts' own subprocesses; a bad value was a traceback or ran as another method)
            name, horizons, width = option
            try:
                horizons, width = listed("horizons", horizons, int), int(width)
            except ValueError as exc:
                parser.error(str(exc))
            if name not in names or min(horizons) < 1 or width < 1:
                parser.error(f"worker {name} {horizons} {width}: a method of {', '.join(names)}, horizons "
                             "and width >= 1")
            print(json.dumps(fn(name, horizons, width)))
            return 0
    if (why := json_path_error(args.json)) is not None:
        return parser.refuse(f"--json {args.json}: {why}")
    try:
        bench_threads()  # (before the workers, which set it, start)
    except ValueError as exc:
        return parser.refuse(str(exc))
    width = 64 if args.quick else 128
    if args.memory_only:
        with tensor_bytes(width, HORIZONS) as counting:
            records = finish_tensor_bytes(counting)
        print(table(records))
        report_counts(records)
        if args.json is not None:
            write_json(args.json, records)
        return 0
    records = costs(width)
    with tensor_bytes(width, HORIZONS[:2] if args.quick else HORIZONS) as counting:
        records += accuracy((10,) if args.quick else (10, 100), draws=200)
        records += finish_tensor_bytes(counting)
    print(table(records))
    by = {(r["method"], r["horizon"]): r for r in records if r["kind"] == "cost"}
    print()
    report_counts(records)
    for key in ("peak_bytes", "rss_increase_bytes"):
        ratios = {m: by[(m, 1000)][key] / max(by[(m, 10)][key], 1) for m in ("fg2u", "rgu") if (m, 1000) in by}
        print(f"{key} T=1000 / T=10: " + ", ".join(f"{m} {r:.2f}" for m, r in ratios.items()))
    for m in METHODS:
        if (m, 100) in by and (m, 1000) in by:
            slope = (by[(m, 1000)]["rss_increase_bytes"] - by[(m, 100)]["rss_increase_bytes"]) / 900
            print(f"memory per unrolled step {m:13s} {slope / 1024:10.1f} KiB")
    if args.json is not None:
        write_json(args.json, records)
    return 0


def report_counts(records) -> None:
    counted = {(r["method"], r["horizon"]): r["tensor_peak_bytes"] for r in records if r["kind"] == "tensor_memory"}
    first, last = min(t for _, t in counted), max(t for _, t in counted)
    ratios = {m: counted[(m, last)] / max(counted[(m, first)], 1) for m in ("fg2u", "rgu")}
    print(f"tensor_peak_bytes T={last} / T={first}: fg2u {ratios['fg2u']:.3f}, rgu {ratios['rgu']:.1f} "
          f"(targets at T=1000 / T=10: fg2u <= 1.2, rgu >= 10)")


if __name__ == "__main__":
    sys.exit(run_main(main))
