"""Short-horizon bias of σ's hypergradient on tuning problem (c) (Allen–Cahn two-body, d = 100).

In the tuning benchmark every hypergradient method drives σ to ≈ 0.02 on (c) while the
searches pick 0.04–0.05 and end with a lower error. Is that the horizon? From one warm
network (W steps at σ_w, mix m), this script measures, for each σ on a grid and each
horizon T:

- h_T(σ): the outer objective of (c) (data misfit at the observations) after T more
  training steps with σ, mean ± SE over S draws of the inner randomness (start indices;
  the same draws for every σ, so differences between σ are common-random-number
  differences);
- the relative L2 error of u after those T steps (test set of the trainer, the
  smoothed model at that σ with the final solve's ``eval_samples``; its noise drawn at
  (seed 0, step 0), the same for every cell);
- for T in ``--grad-horizons``, the exact hypergradient ∂h_T/∂log σ (reverse mode
  through the T steps, i.e. rgu; what fg2u estimates without bias) at the same draws.

If the sign of ∂h_T/∂log σ at σ ≈ 0.02–0.05 flips between T = 10 (the shipped horizon)
and longer T, or the σ that minimises h_T moves with T, the short horizon biases the
hypergradient methods. Sizes follow bench_tuning.py (``--quick``: width 32).

Records: {"kind": "h", "horizon", "sigma", "h", "h_se", "rel_l2", "rel_l2_se"} and
{"kind": "grad", "horizon", "sigma", "grad", "grad_se"} (per draw values in "draws").

Usage:
    python benchmarks/bench_horizon_bias.py [--quick] [--json PATH] [--sigmas 0.01,0.02,0.05,0.1,0.2,0.5]
        [--horizons 0,10,50,200] [--grad-horizons 10,50] [--draws S] [--warm-steps W] [--warm-sigma S]

Measured (full size, defaults; 43 minutes here with the test suite running alongside):
at a network warmed up for 1000 steps the T = 10 hypergradient is ≈ 0 (|∂h/∂log σ| ≤ 3.5e-5,
within 2 SE) for σ in [0.01, 0.05] and +1.4e-2 at 0.2, against +0.06 at σ = 0.5; h_200 is
lowest at σ = 0.1 (benchmarks/TUNING.md, "Full size").
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

from _common import Parser, json_path_error, listed, run_main, write_json


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 32, W = 300, horizons 0, 10 and 100 (2 min)")
    parser.add_argument("--json", metavar="PATH", help="write the records as JSON")
    parser.add_argument("--sigmas", default="0.01,0.02,0.05,0.1,0.2,0.5",
                        help="comma-separated σ grid (default 0.01,0.02,0.05,0.1,0.2,0.5)")
    parser.add_argument("--horizons", help="default 0,10,50,200 (quick: 0,10,100); 0 = the warm network itself")
    parser.add_argument("--grad-horizons", help="default 10,50 (quick: 10)")
    parser.add_argument("--draws", type=int, default=4, help="S draws of the inner randomness (default 4)")
    parser.add_argument("--warm-steps", type=int, help="W steps before the measurement (default 1000, quick 300)")
    parser.add_argument("--warm-sigma", type=float, default=0.03, help="σ of the W warm-up steps (default 0.03)")
    parser.add_argument("--mix", type=float, default=0.5, help="mix weight of the unbiased loss, held fixed (default 0.5)")
    args = parser.parse_args()

    default_horizons, default_grad = ("0,10,100", "10") if args.quick else ("0,10,50,200", "10,50")
    try:  # ("" fell back to the defaults, a full run; "1.5" said only "bad list: invalid literal")
        sigmas = listed("--sigmas", args.sigmas, float)
        horizons = listed("--horizons", default_horizons if args.horizons is None else args.horizons, int)
        grad_horizons = listed("--grad-horizons", default_grad if args.grad_horizons is None else args.grad_horizons,
                               int)
    except ValueError as exc:
        return parser.refuse(str(exc))
    warm_steps = args.warm_steps if args.warm_steps is not None else (300 if args.quick else 1000)
    # σ is log- and mix logit-parameterised: a value outside (0, ∞) or (0, 1) failed with a
    # traceback at its first use, after the set-up; a nan ran through into the JSON
    checks = [
        (all(0 < s < math.inf for s in sigmas), f"--sigmas {args.sigmas}: every σ must be finite and > 0"),
        (0 < args.warm_sigma < math.inf, f"--warm-sigma {args.warm_sigma}: must be finite and > 0"),
        (0 < args.mix < 1, f"--mix {args.mix}: must lie in (0, 1)"),
        (min(horizons) >= 0, f"--horizons {','.join(map(str, horizons))}: must be >= 0"),
        (min(grad_horizons) >= 1, f"--grad-horizons {','.join(map(str, grad_horizons))}: must be >= 1"),
        (args.draws >= 1, f"--draws {args.draws}: must be >= 1"),
        (warm_steps >= 0, f"--warm-steps {warm_steps}: must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            return parser.refuse(message)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench_tuning import problems

    from pinnlab import config as configuration
    from pinnlab.bilevel.base import unroll
    from pinnlab.bilevel.parameterization import reparameterize, unconstrain
    from pinnlab.solvers.evaluate import evaluate
    from pinnlab.tuning.run import make_hypergradient_method
    from pinnlab.tuning.setup import build_tuning

    if (why := json_path_error(args.json)) is not None:
        return parser.refuse(f"--json {args.json}: {why}")
    draws = args.draws
    data = problems(args.quick)["c"]
    setup = build_tuning(configuration.validate(data))
    problem = reparameterize(setup.bilevel, setup.parameterization)
    dtype, device = setup.dtype, setup.device

    def u_of(sigma: float) -> dict:
        phi = {"sigma": torch.tensor(sigma, dtype=dtype, device=device),
               "mix": torch.tensor(args.mix, dtype=dtype, device=device)}
        return unconstrain(phi, setup.parameterization)

    x_test = setup.problem.equation.test_set(data["trainer"].get("test_points", 2000), device=device, dtype=dtype)
    u_test = setup.problem.equation.exact_values(x_test).to(dtype)
    eval_samples = data["estimator"].get("eval_samples")

    began = time.perf_counter()
    with torch.no_grad():
        warm = unroll(problem, u_of(args.warm_sigma), start=0, steps=warm_steps)
    print(f"warm start: {warm_steps} steps at sigma={args.warm_sigma} "
          f"({time.perf_counter() - began:.1f} s)", flush=True)
    span = max(horizons + grad_horizons)
    starts = [warm_steps + s * span for s in range(draws)]
    records = []
    for horizon in horizons:
        for sigma in sigmas:
            u, h, err = u_of(sigma), [], []
            for start in starts:
                with torch.no_grad():
                    theta, _ = unroll(problem, u, start=start, init=warm, steps=horizon)
                    h.append(float(problem.outer_loss(theta, u)))
                    err.append(evaluate(setup.problem, theta, x_test, u_test, num_samples=eval_samples,
                                        sigma=sigma).rel_l2)
            (hm, hs), (em, es) = _mean_se(h), _mean_se(err)
            records.append({"kind": "h", "horizon": horizon, "sigma": sigma, "h": hm, "h_se": hs,
                            "rel_l2": em, "rel_l2_se": es, "draws": h})
            print(f"h   T={horizon:4d} sigma={sigma:.3g}: h={hm:.4e} ± {hs:.1e}  rel_l2={em:.4e} ± {es:.1e}",
                  flush=True)
    reverse = make_hypergradient_method("rgu", {})
    for horizon in grad_horizons:
        at_horizon = dataclasses.replace(problem, horizon=horizon)
        for sigma in sigmas:
            g = [float(reverse(at_horizon, u_of(sigma), start=start, init=warm).grad["sigma"])
                 for start in starts]
            gm, gs = _mean_se(g)
            records.append({"kind": "grad", "horizon": horizon, "sigma": sigma, "grad": gm, "grad_se": gs,
                            "draws": g})
            print(f"dh/dlog(sigma) T={horizon:4d} sigma={sigma:.3g}: {gm:+.3e} ± {gs:.1e}", flush=True)
    print(f"total {time.perf_counter() - began:.0f} s")
    if args.json is not None:  # (an SE of one draw is NaN: null in the strict JSON)
        write_json(args.json, {"quick": args.quick, "warm_steps": warm_steps, "warm_sigma": args.warm_sigma,
                               "mix": args.mix, "draws": draws, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
