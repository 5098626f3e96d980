"""Automatic tuning of PINNs: bilevel methods against the usual baselines, at equal wall-clock.

Problems (observations are synthetic, from the exact solution, with 1 % relative noise;
the outer objective is always the data misfit at those observations):

  a  poisson_two_body, d = 10, soft boundary constraint whose weight starts badly scaled
     (1e-3); φ = the boundary weight. Error: final relative L2 of u.
  b  fokker_planck_aniso, d = 20, inverse problem: recover the drift μ ∈ R^20 from 500
     observations, starting from μ = 0. Error: ‖μ̂ − μ‖/‖μ‖.
  c  allen_cahn_two_body, d = 100, hybrid loss: φ = (σ, mix), starting from σ = 0.05 and
     mix = 0.5 (the default run uses these with a hard switch at half the steps).
     Error: final relative L2 of u.

Protocol: every tuner (random, optuna, joint, fg2u, rgu, trgu, hessian_free, zo_fg2u) gets
the same tuning budget of B wall-clock seconds (``tune.budget_seconds``), then S more
training steps with the tuned values, continuing from the network the tuning trained
(``tune.final_init: continue``: the warm-started θ of a hypergradient method, the best
trial of a search, the jointly fitted θ); for b the recovered μ is the result. All
hypergradient methods share the outer optimiser (Adam on log σ / log weights / logit
mix / μ, learning rate per problem) and the horizon T = 10. The untuned baselines (default, lra, relobralo: ``loss.weighting``) have no
tuning phase; to spend the same wall-clock (B + t_S, t_S being the measured time of an
S-step default solve) they train for as many steps as their own measured seconds per
step allow (LRA and ReLoBRaLo compute per-term gradients, so their steps cost more). Methods that do not apply to a problem (LRA and
ReLoBRaLo need several loss terms; joint fitting needs PDE coefficients) are recorded
with ``error: null`` and a ``note``.

Records: {"problem", "method", "error", "seconds", "tune_seconds", "outer_steps",
"tuned", "note"}.

Usage:
    python benchmarks/bench_tuning.py [--quick] [--json PATH] [--problems a,b,c] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

PROBE_STEPS = 40
"""Steps of the short run that measures an untuned method's seconds per step."""
METHODS = ("default", "lra", "relobralo", "random", "optuna", "joint", "fg2u", "rgu", "trgu",
           "hessian_free", "zo_fg2u")
BILEVEL_OPTIONS = {
    "fg2u": lambda n: {"num_directions": min(n, 4)},
    "zo_fg2u": lambda n: {"num_directions": min(n, 4)},
    "rgu": lambda n: {},
    "trgu": lambda n: {"steps": 3},
    "hessian_free": lambda n: {},
}


def problems(quick: bool) -> dict[str, dict]:
    steps = 200 if quick else 2000
    net = {"width": 32 if quick else 64, "depth": 3}
    trainer = {"steps": steps, "lr": 1e-3, "schedule": "constant", "batch_size": 64,
               "eval_every": steps, "test_points": 2000, "seed": 0}
    common_tune = {"outer_steps": 100000, "horizon": 10, "checkpoint_every": 0}
    return {
        "a": {
            "equation": {"name": "poisson_two_body", "dim": 10, "seed": 1, "constraint": "soft"},
            "model": net,
            "estimator": {"kind": "stein", "sigma": 1e-2, "samples": 32, "noise": "shared", "eval_samples": 256},
            "loss": {"kind": "biased", "weights": {"boundary": 1e-3}},
            "trainer": trainer,
            "data": {"source": "synthetic", "points": 100, "noise": 0.01, "seed": 0},
            "tune": {**common_tune, "tunables": {"weights.boundary": {}}, "outer_lr": 0.2,
                     "objective": {"kind": "data", "samples": 128}},
        },
        "b": {
            "equation": {"name": "fokker_planck_aniso", "dim": 20, "seed": 0},
            "model": net,
            "estimator": {"kind": "stein", "sigma": 1e-2, "samples": 32, "noise": "shared", "eval_samples": 256},
            "loss": {"kind": "biased"},
            "trainer": trainer,
            "data": {"source": "synthetic", "points": 500, "noise": 0.01, "seed": 0},
            "tune": {**common_tune, "tunables": {"coefficients.mu": {"init": 0.0, "low": -2.0, "high": 4.0}},
                     "outer_lr": 0.1, "objective": {"kind": "data", "samples": 64}},
        },
        "c": {
            "equation": {"name": "allen_cahn_two_body", "dim": 100, "seed": 1},
            "model": net,
            "estimator": {"kind": "stein", "sigma": 0.05, "samples": 32, "noise": "shared", "eval_samples": 256},
            "loss": {"kind": "hybrid", "switch_step": steps // 2},
            "trainer": trainer,
            "data": {"source": "synthetic", "points": 100, "noise": 0.01, "seed": 0},
            "tune": {**common_tune, "tunables": {"sigma": {}, "mix": {"init": 0.5}}, "outer_lr": 0.2,
                     "objective": {"kind": "data", "samples": 128}},
        },
    }


def _with(data: dict, **sections) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in sections.items():
        section, _, field = key.partition("__")
        out[section] = {**out.get(section, {}), field: value}
    return out


def run_untuned(name: str, data: dict, method: str, steps: int) -> dict:
    from pinnlab import config as configuration
    from pinnlab.solvers import train

    overrides = {"trainer__steps": steps, "trainer__eval_every": steps}
    if method != "default":
        overrides["loss__weighting"] = method
    if data["loss"]["kind"] == "hybrid":
        overrides["loss__switch_step"] = steps // 2
    cfg = _with({k: v for k, v in data.items() if k != "tune"}, **overrides)
    config = configuration.validate(cfg)
    problem, kwargs = configuration.build(config)
    start = time.perf_counter()
    result = train(problem, **kwargs, progress="off")
    return {"error": result.final.rel_l2, "seconds": time.perf_counter() - start, "steps": steps}


def run_tuner(name: str, data: dict, method: str, budget: float) -> dict:
    from pinnlab import config as configuration
    from pinnlab.tuning.run import check_method, coefficient_errors, final_solve, run_tuning
    from pinnlab.tuning.setup import build_tuning

    size = sum(1 if not isinstance(v.get("init"), list) else len(v["init"])
               for v in data["tune"]["tunables"].values())
    if name == "b":
        size = data["equation"]["dim"]
    options = BILEVEL_OPTIONS[method](size) if method in BILEVEL_OPTIONS else {}
    cfg = _with(data, tune__method=method, tune__options=options, tune__budget_seconds=budget,
                tune__final_init="continue")
    config = configuration.validate(cfg)
    setup = build_tuning(config)
    check_method(setup)
    start = time.perf_counter()
    outcome = run_tuning(setup)
    tune_seconds = time.perf_counter() - start
    tuned = {k: (float(v) if v.numel() == 1 else [float(x) for x in v.flatten()]) for k, v in outcome.phi.items()}
    record = {"tune_seconds": tune_seconds, "outer_steps": len(outcome.history["outer_step"]), "tuned": tuned}
    errors = coefficient_errors(setup, outcome.phi)
    if errors:
        record.update(error=next(iter(errors.values())), seconds=tune_seconds)
        return record
    result, _ = final_solve(setup, outcome, progress="off")
    record.update(error=result.final.rel_l2, seconds=time.perf_counter() - start)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 15 s, S = 200 steps, width 32 (≈ 10 min)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--problems", default="a,b,c")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=float, help="tuning budget B in seconds")
    args = parser.parse_args()

    budget = args.budget or (15.0 if args.quick else 120.0)
    specs = problems(args.quick)
    records = []
    for name in args.problems.split(","):
        data = specs[name]
        steps = data["trainer"]["steps"]
        t_s = None
        for method in args.methods.split(","):
            record = {"problem": name, "method": method, "error": None, "seconds": None, "note": ""}
            if method in ("lra", "relobralo") and data["equation"].get("constraint") != "soft":
                record["note"] = "needs several loss terms (hard-constrained problem)"
            elif method == "joint" and name != "b":
                record["note"] = "single-level joint fitting applies to PDE coefficients only"
            elif name == "b" and method in ("default", "lra", "relobralo"):
                if method == "default":
                    record.update(error=1.0, seconds=0.0, note="the initial guess mu = 0")
                else:
                    record["note"] = "a loss weighting does not estimate PDE coefficients"
            elif method in ("default", "lra", "relobralo"):
                if t_s is None:
                    t_s = run_untuned(name, data, "default", steps)["seconds"]
                probe = run_untuned(name, data, method, PROBE_STEPS)
                equal = max(steps, int(round((budget + t_s) * PROBE_STEPS / probe["seconds"])))
                out = run_untuned(name, data, method, equal)
                record.update(error=out["error"], seconds=out["seconds"], note=f"{equal} steps")
            else:
                record.update(run_tuner(name, data, method, budget))
            records.append(record)
            err = "n/a" if record["error"] is None else f"{record['error']:.3e}"
            sec = "" if record["seconds"] is None else f"{record['seconds']:.1f}"
            print(f"{name:2s} {method:13s} error={err:>10s} seconds={sec:>6s} {record.get('note', '')} "
                  f"{record.get('tuned', '') if name != 'b' else ''}", flush=True)
    print()
    print(markdown(records))
    if args.json:
        from pinnlab.io import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"budget_seconds": budget, "quick": args.quick, "records": records},
                                      indent=1, default=float))
    return 0


def markdown(records) -> str:
    names = list(dict.fromkeys(r["problem"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    table = {(r["problem"], r["method"]): r for r in records}
    lines = ["| method | " + " | ".join(f"({n})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for m in methods:
        cells = []
        for n in names:
            r = table.get((n, m))
            if r is None or r["error"] is None or (isinstance(r["error"], float) and math.isnan(r["error"])):
                cells.append("n/a")
            else:
                best = min(x["error"] for x in records if x["problem"] == n and x["error"] is not None)
                cell = f"{r['error']:.2e}"
                cells.append(f"**{cell}**" if r["error"] == best else cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
