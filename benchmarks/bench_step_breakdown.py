"""Where one training step's time goes, operator by operator: what the FLOP floor leaves out.

Runs the step of ``bench_estimators.py`` (``training_step``: the biased Allen–Cahn
two-body loss, N = 100 points, K = 128 samples, 4×128 tanh MLP, float32, Adam) for one
estimator and dimension, first plain (the step's time), then under a
``TorchDispatchMode`` that times every aten operator it runs (the timer adds a few per
cent). Reported per step: the plain step's seconds, the operators' seconds by name
(``mm``, ``tanh``, ``tanh_backward``, ...), the matrix products' total against their FLOP
floor (``step_flops`` at this machine's float32 GEMM rate, as in ``bench_estimators``)
and the rest. The process first calls :func:`pinnlab.configure_malloc`, as the
``pinnlab`` commands do (``--malloc default``: glibc's defaults).

Records (``--json``): {"method", "dim", "malloc", "step_seconds", "timed_ops_seconds",
"matmul_seconds", "floor_seconds", "gemm_flops_per_second", "ops": {name: seconds per
step}, "calls": {name: calls per step}}.

Usage:
    python benchmarks/bench_step_breakdown.py [--method stein-shared] [--dim 100] [--quick] [--json PATH]
        [--malloc pinnlab|default]
"""

from __future__ import annotations

import collections
import sys
import time

from _common import Parser, bench_threads, json_path_error, run_main, write_json
from bench_estimators import METHODS, gemm_rate, step_flops, training_step

MATMULS = ("mm", "addmm", "bmm", "matmul", "baddbmm")
"""The aten operators that are matrix products (the FLOP floor counts only these)."""


def breakdown(method: str, dim: int, steps: int) -> dict:
    """One record: ``steps`` plain steps timed, then ``steps`` more under the operator timer."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    step, params, state = training_step(method, dim)
    for i in range(2):  # warm-up: lazy set-up, the allocator's first growth
        params, state, _ = step(params, state, {}, i)
    begin = time.perf_counter()
    for i in range(steps):
        params, state, _ = step(params, state, {}, 2 + i)
    plain = (time.perf_counter() - begin) / steps
    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()

    class OperatorTimer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            seconds[name] += time.perf_counter() - start
            calls[name] += 1
            return out

    with OperatorTimer():
        for i in range(steps):
            params, state, metrics = step(params, state, {}, 2 + steps + i)
    assert torch.isfinite(metrics["loss"])
    ops = {name: s / steps for name, s in seconds.most_common()}
    rate = gemm_rate()
    return {
        "method": method, "dim": dim, "step_seconds": plain, "timed_ops_seconds": sum(ops.values()),
        "matmul_seconds": sum(s for name, s in ops.items() if name in MATMULS),
        "floor_seconds": step_flops(method, dim) / rate, "gemm_flops_per_second": rate, "ops": ops,
        "calls": {name: calls[name] / steps for name in ops},
    }


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=METHODS, default="stein-shared",
                        help="the estimator whose step is broken down (default stein-shared)")
    parser.add_argument("--dim", type=int, default=100, help="the dimension d (default 100)")
    parser.add_argument("--quick", action="store_true", help="3 steps each way instead of 10")
    parser.add_argument("--json", metavar="PATH", help="write the record as JSON")
    parser.add_argument("--malloc", choices=("pinnlab", "default"), default="pinnlab",
                        help="glibc malloc settings: pinnlab's (configure_malloc) or glibc's defaults")
    args = parser.parse_args(argv)
    if args.dim < 1:
        parser.error(f"--dim {args.dim}: must be >= 1")
    problem = json_path_error(args.json)
    if problem:
        return parser.refuse(f"--json {args.json}: {problem}")
    try:
        threads = bench_threads()
    except ValueError as exc:
        return parser.refuse(str(exc))
    import torch

    import pinnlab

    malloc = "pinnlab" if args.malloc == "pinnlab" and pinnlab.configure_malloc() else "default"
    torch.set_num_threads(threads)  # (as bench_estimators' workers)
    steps = 3 if args.quick else 10
    # (the run takes up to a minute before its table: say what it is measuring)
    print(f"measuring {args.method} d={args.dim} malloc {malloc}: {steps} steps plain, then {steps} under the "
          f"operator timer", file=sys.stderr, flush=True)
    record = {**breakdown(args.method, args.dim, steps), "malloc": malloc}
    step, matmul, floor = record["step_seconds"], record["matmul_seconds"], record["floor_seconds"]
    print(f"{args.method} d={args.dim} malloc {malloc}: {step * 1e3:.1f} ms per step "
          f"({step / floor:.1f}× the FLOP floor {floor * 1e3:.1f} ms); under the timer the operators sum to "
          f"{record['timed_ops_seconds'] * 1e3:.1f} ms")
    print(f"matrix products {matmul * 1e3:.1f} ms ({matmul / floor:.2f}× the floor), "
          f"everything else {(record['timed_ops_seconds'] - matmul) * 1e3:.1f} ms")
    print("| operator | ms per step | calls per step |\n|---|---|---|")
    for name, seconds in list(record["ops"].items())[:12]:
        print(f"| {name} | {seconds * 1e3:.2f} | {record['calls'][name]:g} |")
    if args.json is not None:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
