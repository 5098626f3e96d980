"""Peak memory of one Stein training step against the size of one noise draw.

Runs the training step of ``bench_estimators`` (biased Allen–Cahn two-body loss: u, a·∇u
and Δu of every point; N = 100 points, K = 128 samples, 4-layer 128-wide tanh MLP,
float32, Adam) once per noise mode and dimension, each in a fresh subprocess, and
reports the increase of the process's peak RSS (Linux VmHWM, reset after set-up:
network, parameters, optimizer state, and one step at d = 100 for one-time allocations)
during its first step. ``draws`` divides it by
the size of one independent draw ξ, N·K·D float32 values, whether the step draws that
(independent noise) or only K·D values (shared noise): independent noise's step holds ξ
for the backward pass, so its floor is about one draw. Before the first layer took
(W diag σ)ξ, an audit measured 4.3 draws at d = 10⁴ (ξ, the offsets σ⊙ξ, ξ⊙ξ and
ξ⊙ξ − 1), and d = 10⁵ at N = 100 needed over 20 GB; now about 1.3 (README, "Memory of one
Stein step"). At d = 10³ a draw is 49 MB and the allocator's noise of the same order:
two runs there measured 1.95 and 4.47 draws.

Records (``--json``, a list; one per noise mode and d): ``noise``, ``dim``, ``n`` and ``k``
(N points, K samples), ``draw_bytes`` (one independent draw, N·K·D·4), ``peak_bytes`` (the
peak RSS increase during the step), ``draws`` (their ratio), ``seconds`` (the step's) and
``memory_method`` (how ``peak_bytes`` was measured).

Usage:
    python benchmarks/bench_stein_memory.py [--quick] [--json PATH]

``--quick``: d ∈ {10³, 10⁴}; otherwise also d = 10⁵ (one draw 5.1 GB; the independent
step needs about 6–7 GB and a minute or two).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import Parser, bench_threads, json_path_error, run_main, write_json

QUICK_DIMS = (1000, 10000)
FULL_DIMS = (1000, 10000, 100000)
NOISES = ("independent", "shared")


def worker(noise: str, dim: int) -> dict:
    import torch
    from bench_estimators import K, N, training_step

    from pinnlab.solvers.loop import peak_memory_mb, reset_peak_memory

    torch.set_num_threads(bench_threads())  # (checked by main before the workers start)
    cpu = torch.device("cpu")
    warm, warm_params, warm_state = training_step(f"stein-{noise}", 100)
    warm(warm_params, warm_state, {}, 0)  # one-time allocations (thread pools, first calls) are not the step's
    step, params, state = training_step(f"stein-{noise}", dim)
    reset_peak_memory(cpu)
    start = peak_memory_mb(cpu)
    t0 = time.perf_counter()
    _, _, metrics = step(params, state, {}, 0)
    seconds = time.perf_counter() - t0
    assert torch.isfinite(metrics["loss"])
    peak_bytes = round(max(0.0, peak_memory_mb(cpu) - start) * 2**20)  # (bytes: an integer)
    draw_bytes = N * K * dim * 4
    return {
        "noise": noise,
        "dim": dim,
        "n": N,
        "k": K,
        "draw_bytes": draw_bytes,
        "peak_bytes": peak_bytes,
        "draws": peak_bytes / draw_bytes,
        "seconds": seconds,
        "memory_method": "VmHWM increase of a fresh subprocess during its first training step (after one at d=100)",
    }


def run(quick: bool) -> list[dict]:
    records = []
    for dim in QUICK_DIMS if quick else FULL_DIMS:
        for noise in NOISES:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", noise, str(dim)],
                capture_output=True, text=True, check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"{noise} d={dim} failed:\n{out.stderr}")
            record = json.loads(out.stdout.strip().splitlines()[-1])
            records.append(record)
            print(
                f"{noise:12s} d={dim:6d} peak +{record['peak_bytes'] / 2**20:8.0f} MB "
                f"= {record['draws']:5.2f} draws of {record['draw_bytes'] / 2**20:.0f} MB  "
                f"{record['seconds']:.1f} s",
                file=sys.stderr,
            )
    return records


def table(records: list[dict]) -> str:
    lines = ["| noise | d | one draw MB | step peak MB | draws |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['noise']} | {r['dim']} | {r['draw_bytes'] / 2**20:.0f} | "
            f"{r['peak_bytes'] / 2**20:.0f} | {r['draws']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d in {1e3, 1e4} only")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--worker", nargs=2, metavar=("NOISE", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # (the script's own subprocess; a bad value was a traceback)
        noise, dim = args.worker
        if noise not in NOISES or not (dim.isdigit() and int(dim) >= 1):
            parser.error(f"--worker {noise} {dim}: a noise of {', '.join(NOISES)} and DIM >= 1")
        print(json.dumps(worker(noise, int(dim))))
        return 0
    problem = json_path_error(args.json)
    if problem:
        return parser.refuse(f"--json {args.json}: {problem}")
    try:
        bench_threads()  # (before the workers, which set it, start)
    except ValueError as exc:
        return parser.refuse(str(exc))
    records = run(args.quick)
    print(table(records))
    if args.json is not None:
        write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
