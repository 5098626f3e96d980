"""Automatic tuning of PINNs: bilevel methods against the usual baselines, at equal wall-clock.

Problems: the shipped tuning configs (their starting values, horizon T, outer learning
rate and objective); --quick only shrinks the network (width 32) and the final solve
(S = 200 steps). Observations are synthetic, from the exact solution, with 1 % relative
noise; the outer objective is always the data misfit at those observations.

  a  configs/tuning/poisson_boundary_weight.yaml: poisson_two_body, d = 10, soft boundary
     constraint whose weight starts badly scaled (1e-3); φ = the boundary weight; T = 50
     (a 10-step hypergradient is no guide here, see the config). Error: final relative
     L2 of u.
  b  configs/tuning/fokker_planck_inverse.yaml: fokker_planck_aniso, d = 20, inverse
     problem: recover the drift μ ∈ R^20 from 500 observations, starting from μ = 0;
     T = 10. Error: ‖μ̂ − μ‖/‖μ‖.
  c  configs/tuning/allen_cahn_sigma_mix.yaml: allen_cahn_two_body, d = 100, hybrid loss:
     φ = (σ, mix), starting from a badly scaled σ = 0.5 and mix = 0.5 (the default run
     uses σ = 0.5 with a hard switch at half the steps); T = 10. Error: final relative L2
     of u.

Protocol: every tuner (random, optuna, joint, fg2u, rgu, trgu, hessian_free, zo_fg2u) gets
the same tuning budget of B wall-clock seconds (``tune.budget_seconds``), then S more
training steps with the tuned values, continuing from the network the tuning trained
(``tune.final_init: continue``: the warm-started θ of a hypergradient method, the best
trial of a search, the jointly fitted θ); for b the recovered μ is the result. All
hypergradient methods share the outer optimiser (Adam on log σ / log weights / logit
mix / μ; per method with ``--select``, below) and the horizon T of the problem's config;
fg2u uses the b Rademacher directions of ``directions`` (1 for N ≤ 2 tuned values, 4 at
N = 20). The untuned baselines (default, lra, relobralo: ``loss.weighting``) have no
tuning phase; to spend the same wall-clock they train S + B/τ steps, τ being their own
seconds per training step (LRA computes per-term gradients every ``every`` steps, so its
steps cost more; ReLoBRaLo reads the loss values only), measured in one probe run as the wall-clock between its steps 20 and 200 (no
evaluation falls in between; the first steps pay one-off allocations). Methods that do not apply to a problem (LRA and
ReLoBRaLo need several loss terms; joint fitting needs PDE coefficients) are recorded
with ``error: null`` and a ``note``.

Records: {"problem", "method", "error", "seconds", "tune_seconds", "outer_steps",
"tuned", "tune_status", "over_budget", "note"}, every key in every record (null where it
does not apply: the tuning fields for the untuned baselines, but for lra's and
relobralo's ``tuned``, and error and seconds for n/a rows); ``tuned`` is a tuner's tuned
values and, for lra and relobralo, the loss weights their training ended with, every
term's as ``weights.<term>`` (ReLoBRaLo rescales the residual's weight too: compare the
boundary's ratio to it with a tuner's ``weights.boundary``); ``tune_status``
"nonfinite": the outer loop diverged and the error is that of its
last finite values; ``over_budget`` true when the tuning took more than
``OVER_BUDGET`` × B (its first outer step or trial always runs, however long: the
comparison is then not at equal wall-clock; the table marks such cells with †).
The JSON file holds the run's settings (``budget_seconds``, ``outer_steps``, ``quick``,
``repeats``, ``select``, ``malloc``; with ``--costs`` only ``quick`` and ``malloc``),
``interrupted`` and the records; Ctrl-C ends a run in one line, exit code 130, with
``"interrupted": true`` and the records of the runs finished before it.

``--select`` makes the comparison fair to each method's own setting: before the
evaluation repeats, every method with a setting of its own is run on a held-out seed
(``SELECT_SEED``) over a small grid (``selection_grid``: the outer Adam's learning rate
⅓, 1, 3 × the problem's, with β = (0.9, 0.999) or sign steps (0, 0), and plain SGD at
⅓, 1, 3 × ``SGD_LR``, for the hypergradient methods and joint fitting; ½, 1, 2 × the
default trial length for the searches; the LRA and ReLoBRaLo constants), and the
evaluation uses the setting with the lowest error there. Selection records carry
``"phase": "select"`` and ``"setting"``; evaluation records their ``"setting"``.
Evaluation records also carry ``"repeat"``, the repeat's index r (repeat 0 runs the
config's seeds, repeat r > 0 trainer, data and tuning seed r).

``--costs`` instead times one estimate of every hypergradient method at each problem's
horizon against the primal unroll of the same steps (records {"kind": "cost",
"problem", "method", "options", "horizon", "seconds", "ratio"}, the primal unroll's
with method "primal", ratio 1 and no "options"); ``fg2u_jvp`` there is
fg2u with ``tangents: jvp`` (torch.func.jvp through the loop), for comparison.

``--malloc default`` keeps glibc's malloc defaults; by default the process first calls
:func:`pinnlab.configure_malloc`, as ``pinnlab tune`` does (the JSON's ``"malloc"``).

``--outer-steps N`` replaces equal wall-clock by equal inner steps: every tuner runs
exactly N outer steps of horizon T (joint: N·T steps), the untuned baselines S + N·T
steps, with no budget; random and optuna (trials, not outer steps) are recorded n/a.

Usage:
    python benchmarks/bench_tuning.py [--quick] [--json PATH] [--problems a,b,c] [--methods ...]
                                      [--repeats R] [--budget B | --outer-steps N] [--horizon T]
                                      [--outer-optimizer adam|sgd] [--outer-lr LR] [--outer-betas B1,B2]
                                      [--select] [--costs] [--then METHOD@A[,B,C] [--then-lr-scale X]]

``--then fg2u@10,50,15`` also runs the two-phase schedule of [FG2U] §3.2 (a cheap biased
method first, then (FG)²U): every hypergradient method of ``--methods``, after its own
single-phase run, runs again for 10, 50 and 15 outer steps on (a), (b), (c), then fg2u
with its benchmark options for the rest of the budget; those rows read ``trgu → fg2u``
and their records carry ``"then": {"method", "after"}``.
``--then-lr-scale X`` sets Phase II's outer learning rate to X times the problem's
(``"outer_lr"`` and ``"lr_scale"`` in ``then``; [FG2U] refine with a smaller rate).
"""

from __future__ import annotations

import math
import sys
import time

from _common import INTERRUPTED, Parser, json_path_error, listed, run_main, write_json

PROBE_STEPS = (20, 200)
"""The untuned methods' seconds per training step: wall-clock between these two steps of
one probe run, read from the training loop's state, so neither the warm-up nor the final
evaluation counts. (The difference of a 2P- and a P-step run at P = 40 was dominated by
jitter: 40 LRA steps measured 0.76 and 1.10 s, 80 steps 0.90 s.)"""
METHODS = ("default", "lra", "relobralo", "random", "optuna", "joint", "fg2u", "rgu", "trgu",
           "hessian_free", "zo_fg2u")
def directions(n: int) -> int:
    """b for (FG)²U with N = n tuned values: the b that maximises the per-step progress
    factor ρ/(1 + ρ), ρ = b/(N − 1), of [FG2U] Theorem 3.4 per unit cost, with the cost of
    an estimate measured here as ≈ (0.65 + 0.9·b) primal unrolls (Hessian-vector-product
    tangents): b = 1 for N ≤ 2 (exact at N = 1), 4 for N = 20."""
    if n <= 2:
        return 1
    costs = {b: (b / (n - 1)) / (1 + b / (n - 1)) / (0.65 + 0.9 * b) for b in range(1, n + 1)}
    return max(costs, key=costs.get)


BILEVEL_OPTIONS = {
    "fg2u": lambda n: {"num_directions": directions(n)},
    "zo_fg2u": lambda n: {"num_directions": min(n, 4)},
    "rgu": lambda n: {},
    "trgu": lambda n: {"steps": 3},
    "hessian_free": lambda n: {},
}


CONFIGS = {
    "a": "configs/tuning/poisson_boundary_weight.yaml",
    "b": "configs/tuning/fokker_planck_inverse.yaml",
    "c": "configs/tuning/allen_cahn_sigma_mix.yaml",
}
"""The three problems are the shipped tuning configs (their horizon, outer learning rate,
objective and starting values); the benchmark only sets sizes and the protocol."""

SEARCH_RANGES = {"b": {"coefficients.mu": {"low": -2.0, "high": 4.0}}}
"""The range random search and Optuna draw from where it is not the default (μ: init ± 2,
here [-2, 2], while (b)'s true drift 1 + N(0, I) reaches 3.17 at seed 0)."""


def problems(quick: bool) -> dict[str, dict]:
    from pathlib import Path

    from pinnlab.config import load_yaml

    root = Path(__file__).resolve().parent.parent
    steps = 200 if quick else 2000
    out = {}
    for name, path in CONFIGS.items():
        data = load_yaml(root / path)
        data["model"] = {**data["model"], "width": 32 if quick else 64}
        data["trainer"] = {**data["trainer"], "steps": steps, "eval_every": steps, "seed": 0}
        tune = {k: v for k, v in data["tune"].items() if k not in ("method", "options", "outer_steps")}
        data["tune"] = {**tune, "outer_steps": 100000}
        if data["loss"].get("kind") == "hybrid":
            data["loss"] = {**data["loss"], "switch_step": steps // 2}
        out[name] = data
    return out


def _with(data: dict, **sections) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in sections.items():
        section, _, field = key.partition("__")
        out[section] = {**out.get(section, {}), field: value}
    return out


def run_untuned(name: str, data: dict, method: str, steps: int) -> dict:
    """Train ``steps`` steps; ``wall`` maps each step to the loop's wall-clock after it,
    ``weights`` holds the loss weights an adaptive weighting ended with (``weights.<term>``,
    None for the default's fixed ones)."""
    from pinnlab import config as configuration
    from pinnlab.solvers import train

    problem, kwargs = configuration.build(untuned_config(data, method, steps))
    wall = {}
    kwargs.update(checkpoint_every=1, on_checkpoint=lambda state: wall.__setitem__(state.step, state.wall_s))
    start = time.perf_counter()
    result = train(problem, **kwargs, progress="off")
    adapted = result.state.weighting  # (None without a weighting)
    weights = None if adapted is None else {f"weights.{k}": float(v) for k, v in adapted["weights"].items()}
    return {"error": result.final.rel_l2, "seconds": time.perf_counter() - start, "steps": steps, "wall": wall,
            "weights": weights}


def untuned_config(data: dict, method: str, steps: int):
    """The validated config of an untuned baseline (``default``, ``lra``, ``relobralo``)
    training ``steps`` steps."""
    from pinnlab import config as configuration

    overrides = {"trainer__steps": steps, "trainer__eval_every": steps}
    if method != "default":
        overrides["loss__weighting"] = method
    if data["loss"]["kind"] == "hybrid":
        overrides["loss__switch_step"] = steps // 2
    return configuration.validate(_with({k: v for k, v in data.items() if k != "tune"}, **overrides))


def tuner_config(name: str, data: dict, method: str, budget: float | None):
    """The validated config of a tuner (a search, joint fitting or a hypergradient method)."""
    from pinnlab import config as configuration
    from pinnlab.tuning.spec import uses_seed

    size = sum(1 if not isinstance(v.get("init"), list) else len(v["init"])
               for v in data["tune"]["tunables"].values())
    if name == "b":
        size = data["equation"]["dim"]
    options = BILEVEL_OPTIONS[method](size) if method in BILEVEL_OPTIONS else {}
    extra = {}
    # the problem's outer-optimiser settings, which a search or joint fitting would not use
    # (and validation refuses where they would be ignored), go, as an override of tune.method drops them
    data = {**data, "tune": {k: v for k, v in data["tune"].items()
                             if not configuration.has_no_effect(f"tune.{k}", "tune.method", method)}}
    then = data["tune"].get("then")
    if not uses_seed(method, then["method"] if then else None, data["tune"]["tunables"]):
        data["tune"].pop("seed", None)  # (the repeat's direction seed: nothing of this method's is random)
    if method in configuration.SEARCHES and data["tune"].get("trial_steps") is not None:
        data["tune"].pop("horizon", None)  # (--select's trial length: the horizon, its default, is refused then)
    if method in configuration.SEARCHES:  # (they draw every trial from [low, high]: an init is refused)
        data["tune"]["tunables"] = {k: {**{key: x for key, x in v.items() if key != "init"},
                                        **SEARCH_RANGES.get(name, {}).get(k, {})}
                                    for k, v in data["tune"]["tunables"].items()}
    if then:  # --then: the second phase with its method's benchmark options
        extra["tune__then"] = {**then, "options": BILEVEL_OPTIONS[then["method"]](size)}
    return configuration.validate(_with(data, tune__method=method, tune__options=options,
                                        tune__budget_seconds=budget, tune__final_init="continue", **extra))


def run_tuner(name: str, data: dict, method: str, budget: float | None) -> dict:
    from pinnlab.tuning.run import check_method, coefficient_errors, final_solve, run_tuning
    from pinnlab.tuning.setup import build_tuning

    setup = build_tuning(tuner_config(name, data, method, budget))
    check_method(setup)
    start = time.perf_counter()
    outcome = run_tuning(setup)
    tune_seconds = time.perf_counter() - start
    tuned = {k: (float(v) if v.numel() == 1 else [float(x) for x in v.flatten()]) for k, v in outcome.phi.items()}
    record = {"tune_seconds": tune_seconds, "outer_steps": len(outcome.history["outer_step"]), "tuned": tuned,
              "tune_status": outcome.status}
    errors = coefficient_errors(setup, outcome.phi)
    if errors:
        record.update(error=next(iter(errors.values())), seconds=tune_seconds)
        return record
    result, _ = final_solve(setup, outcome, progress="off")
    record.update(error=result.final.rel_l2, seconds=time.perf_counter() - start)
    return record


def estimate_costs(name: str, data: dict, methods: list[str], repeats: int = 3) -> list[dict]:
    """Seconds of one hypergradient estimate per method at the problem's horizon and
    start, against the primal unroll of the same T steps (best of ``repeats``, after a
    warm-up): the overhead a tuner pays over plain training."""
    import torch

    from pinnlab import config as configuration
    from pinnlab.bilevel.base import unroll
    from pinnlab.bilevel.parameterization import reparameterize, unconstrain
    from pinnlab.tuning.run import make_hypergradient_method
    from pinnlab.tuning.setup import build_tuning

    setup = build_tuning(configuration.validate(data))
    problem = reparameterize(setup.bilevel, setup.parameterization)
    u = unconstrain(setup.phi0, setup.parameterization)
    size = sum(v.numel() for v in u.values())

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.no_grad():
        primal = best(lambda: unroll(problem, u))
    records = [{"kind": "cost", "problem": name, "method": "primal", "horizon": problem.horizon,
                "seconds": primal, "ratio": 1.0}]
    for method in methods:
        base = "fg2u" if method == "fg2u_jvp" else method  # fg2u with torch.func.jvp tangents, for comparison
        if base not in BILEVEL_OPTIONS:
            continue
        options = BILEVEL_OPTIONS[base](size) | ({"tangents": "jvp"} if method == "fg2u_jvp" else {})
        estimator = make_hypergradient_method(base, options)
        seconds = best(lambda: estimator(problem, u))  # noqa: B023
        records.append({"kind": "cost", "problem": name, "method": method, "options": options,
                        "horizon": problem.horizon, "seconds": seconds, "ratio": seconds / primal})
    for r in records:
        print(f"cost {name} {r['method']:13s} T={r['horizon']:3d} {r['seconds']:.3f} s ({r['ratio']:.2f}x primal)",
              flush=True)
    return records


def seeded(data: dict, repeat: int) -> dict:
    """Repeat r: training seed (initialisation, collocation points, noise), observation
    draw and direction seed all r; the PDE instance stays the same."""
    if repeat == 0:
        return data
    return _with(data, trainer__seed=repeat, data__seed=repeat, tune__seed=repeat)


def run_method(name: str, data: dict, method: str, budget: float | None) -> dict:
    """One record: the method on the problem at the data's seeds, at the budget (``None``:
    no budget; the tuners run the config's outer steps, see ``--outer-steps``)."""
    record = {"problem": name, "method": method, "error": None, "seconds": None, "tune_seconds": None,
              "outer_steps": None, "tuned": None, "tune_status": None, "over_budget": None,
              "note": ""}  # every record has every key
    steps = data["trainer"]["steps"]
    if method in ("lra", "relobralo") and data["equation"].get("constraint") != "soft":
        record["note"] = "needs several loss terms (hard-constrained problem)"
    elif method in ("random", "optuna") and budget is None:
        record["note"] = "search trials have no outer steps (--outer-steps)"
    elif method == "joint" and name != "b":
        record["note"] = "single-level joint fitting applies to PDE coefficients only"
    elif name == "b" and method == "default":  # (its weightings: the hard-constrained note above)
        record.update(error=1.0, seconds=0.0, note="the initial guess mu = 0")
    elif method in ("default", "lra", "relobralo"):
        if budget is None:  # --outer-steps: the tuners' inner steps, N·T
            equal = steps + data["tune"]["outer_steps"] * data["tune"]["horizon"]
        else:
            first, last = PROBE_STEPS
            wall = run_untuned(name, data, method, last + 1)["wall"]
            per_step = (wall[last] - wall[first]) / (last - first)
            equal = steps + int(round(budget / per_step))
        out = run_untuned(name, data, method, equal)
        record.update(error=out["error"], seconds=out["seconds"], tuned=out.get("weights"), note=f"{equal} steps")
    else:
        record.update(run_tuner(name, data, method, budget))
        if data.get("tune", {}).get("then"):
            then = data["tune"]["then"]
            record["then"] = {k: then[k] for k in ("method", "after")}
            if then.get("outer_lr") is not None:  # --then-lr-scale: the rate and its multiple of the problem's
                record["then"].update(outer_lr=then["outer_lr"], lr_scale=then["outer_lr"] / data["tune"]["outer_lr"])
        if budget is not None:
            record["over_budget"] = record["tune_seconds"] > OVER_BUDGET * budget
    return record


OVER_BUDGET = 1.25
"""A tuning run over this multiple of the budget B is flagged (``over_budget``, † in the table)."""


def report(record: dict) -> None:
    err = "n/a" if record["error"] is None else f"{record['error']:.3e}"
    sec = "" if record["seconds"] is None else f"{record['seconds']:.1f}"
    tag = record.get("phase", record.get("repeat"))
    print(f"{tag} {record['problem']:2s} {row_label(record):13s} error={err:>10s} seconds={sec:>6s} "
          f"{record.get('note', '')} {record.get('setting', '')} "
          f"{(record.get('tuned') or '') if record['problem'] != 'b' else ''}", flush=True)


SELECT_SEED = 100
"""``--select`` picks each method's own setting on this seed (training seed, observation
draw, direction seed), which no evaluation repeat (seeds 0..R−1) uses: ``--select`` refuses
``--repeats`` above it."""


SGD_LR = {"a": 1.0, "b": 0.01, "c": 1.0}
"""Base learning rate of plain SGD as the outer optimiser, per problem: about the problem's
Adam learning rate over the hypergradient norm of the first outer steps (rgu, quick sizes,
held-out seed: (a) 0.002–6 on log w, (b) about 25 on μ ∈ ℝ²⁰, (c) 0.12–0.2 on (log σ,
logit mix)). Adam's per-coordinate steps ignore the hypergradient's direction within φ;
on (b) that decides the ranking (benchmarks/TUNING.md, "Plain SGD as the outer optimiser")."""


def selection_grid(data: dict, method: str, sgd_lr: float | None = None) -> list[dict]:
    """``--select``: the settings of a method's own tuning procedure tried on the held-out
    seed. Hypergradient methods and joint fitting: the outer optimiser, Adam at ⅓, 1, 3 ×
    the problem's learning rate × β ((0.9, 0.999) or (0, 0), sign steps), and plain SGD at
    ⅓, 1, 3 × ``sgd_lr`` (:data:`SGD_LR`); the searches: their trial length (½, 1, 2 × the
    default 10·T steps); the loss weightings their constants (LRA: α 0.1 or 0.5 × every 10
    or 1 steps; ReLoBRaLo: α 0.95 or 0.5 × temperature 1 or 0.1). The untuned default has
    nothing to select."""
    tune = data["tune"]
    if method in BILEVEL_OPTIONS or method == "joint":
        adam = [{"outer_lr": round(m * tune["outer_lr"], 6), "outer_betas": list(b)}
                for m in (1 / 3, 1.0, 3.0) for b in ((0.9, 0.999), (0.0, 0.0))]
        sgd = [] if sgd_lr is None else [{"outer_optimizer": "sgd", "outer_lr": round(m * sgd_lr, 6)}
                                          for m in (1 / 3, 1.0, 3.0)]
        return adam + sgd
    if method in ("random", "optuna"):
        base = tune.get("trial_steps") or 10 * tune["horizon"]
        return [{"trial_steps": max(1, int(m * base))} for m in (0.5, 1.0, 2.0)]
    if method == "lra":
        return [{"weighting_options": {"alpha": a, "every": e}} for a in (0.1, 0.5) for e in (10, 1)]
    if method == "relobralo":
        return [{"weighting_options": {"alpha": a, "temperature": t}} for a in (0.95, 0.5) for t in (1.0, 0.1)]
    return []


def with_setting(data: dict, seed: int, setting: dict) -> dict:
    """The problem at ``seed`` (see :func:`seeded`) with a method's own setting (``tune:``
    keys; ``weighting_options`` goes to ``loss:``)."""
    return _with(seeded(data, seed), **{f"{'loss' if k == 'weighting_options' else 'tune'}__{k}": v
                                        for k, v in setting.items()})


def selection_markdown(chosen: dict) -> str:
    lines = ["| problem | method | selected |", "|---|---|---|"]
    for (name, method), setting in chosen.items():
        lines.append(f"| ({name}) | {method} | " + ", ".join(f"{k} = {v}" for k, v in setting.items()) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 15 s, S = 200 steps, width 32 (≈ 9 min)")
    parser.add_argument("--json", metavar="PATH", help="write the run's settings and records as JSON")
    parser.add_argument("--problems", default="a,b,c", help="comma-separated problems among a, b, c (default all)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods among {', '.join(METHODS)} (default all)")
    parser.add_argument("--budget", type=float, help="tuning budget B in seconds")
    parser.add_argument("--horizon", type=int, help="override every problem's horizon T")
    parser.add_argument("--outer-lr", type=float, help="override every problem's outer learning rate")
    parser.add_argument("--outer-betas", help="override the outer Adam's β1,β2 (default 0.9,0.999)")
    parser.add_argument("--outer-optimizer", choices=("adam", "sgd"),
                        help="override every problem's outer optimiser (sgd: plain SGD at --outer-lr)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="independent repeats (seeds 0..R-1); the table gives mean ± std")
    parser.add_argument("--select", action="store_true",
                        help="first pick each method's own outer optimiser (or trial length) on a held-out "
                             "seed, then evaluate every method with its pick")
    parser.add_argument("--outer-steps", type=int, metavar="N",
                        help="equal inner steps instead of equal wall-clock: every tuner runs exactly N outer "
                             "steps of horizon T (joint: N·T steps), the untuned baselines S + N·T steps; "
                             "no budget (random/optuna run trials, not outer steps: recorded n/a)")
    parser.add_argument("--then", metavar="METHOD@A[,B,C]",
                        help="also the two-phase schedule ([FG2U] §3.2): every hypergradient method runs again "
                             "as its first phase for A outer steps (one value per problem, in --problems order, "
                             "or one for all), then METHOD; records carry 'then'")
    parser.add_argument("--then-lr-scale", type=float, metavar="X",
                        help="with --then: Phase II's outer learning rate is X times the problem's "
                             "([FG2U] refine with a smaller rate; default: the same)")
    parser.add_argument("--costs", action="store_true",
                        help="only time one estimate of each hypergradient method against the primal unroll")
    parser.add_argument("--malloc", choices=("pinnlab", "default"), default="pinnlab",
                        help="glibc malloc settings: pinnlab's (configure_malloc, as pinnlab tune sets them) or "
                             "glibc's defaults, as in the runs before 2026-12-05 (default: pinnlab)")
    args = parser.parse_args()

    budget = args.budget if args.budget is not None else (15.0 if args.quick else 120.0)
    specs = problems(args.quick)
    try:
        names, methods = listed("--problems", args.problems), listed("--methods", args.methods)
    except ValueError as exc:
        return parser.refuse(str(exc))
    unknown = [p for p in names if p not in specs] + \
        [m for m in methods if m not in METHODS and not (m == "fg2u_jvp" and args.costs)]
    if unknown:
        return parser.refuse(f"unknown {', '.join(unknown)} (problems: {', '.join(specs)}; "
                             f"methods: {', '.join(METHODS)}; fg2u_jvp with --costs only)")
    if not 0 < budget < math.inf:  # nan and inf failed in the first tuner's config, after the warm-up
        return parser.refuse(f"--budget {budget}: must be finite and > 0")
    if args.repeats < 1:
        return parser.refuse(f"--repeats {args.repeats}: must be >= 1")
    if args.select and args.repeats > SELECT_SEED:
        return parser.refuse(f"--repeats {args.repeats} with --select: at most {SELECT_SEED} (seed {SELECT_SEED} "
                             "is the held-out seed the settings are selected on)")
    if (why := json_path_error(args.json)) is not None:
        return parser.refuse(f"--json {args.json}: {why}")
    if args.costs:  # it times one estimate per method: the rest of a run's settings do not reach it
        ignored = [option for option, given in (("--select", args.select), ("--repeats", args.repeats != 1),
                                                ("--outer-steps", args.outer_steps is not None),
                                                ("--budget", args.budget is not None),
                                                ("--outer-lr", args.outer_lr is not None),
                                                ("--outer-betas", args.outer_betas is not None),
                                                ("--outer-optimizer", args.outer_optimizer is not None)) if given]
        if ignored:
            return parser.refuse(f"--costs times one estimate of each method; {', '.join(ignored)} would not act; "
                                 "drop them")
        if not any(m in BILEVEL_OPTIONS or m == "fg2u_jvp" for m in methods):  # (it timed the primal unroll alone)
            return parser.refuse(f"--costs times hypergradient estimates ({', '.join(BILEVEL_OPTIONS)}, fg2u_jvp); "
                                 f"--methods {args.methods} has none")
    if args.outer_steps is not None:
        if args.outer_steps < 1 or args.budget is not None:
            why = "must be >= 1" if args.outer_steps < 1 else "replaces the budget; drop --budget"
            return parser.refuse(f"--outer-steps {args.outer_steps}: {why}")
        budget = None
        specs = {name: _with(data, tune__outer_steps=args.outer_steps) for name, data in specs.items()}
    if args.select and (args.outer_lr is not None or args.outer_betas is not None or args.outer_optimizer):
        return parser.refuse("--select picks each method's outer optimiser, learning rate and β itself; "
                             "drop --outer-optimizer/--outer-lr/--outer-betas")
    if args.outer_optimizer == "sgd" and args.outer_betas is not None:
        return parser.refuse("--outer-betas are Adam's; plain SGD (--outer-optimizer sgd) has none")
    if args.outer_optimizer:
        specs = {name: _with(data, tune__outer_optimizer=args.outer_optimizer) for name, data in specs.items()}
    if args.horizon is not None:
        specs = {name: _with(data, tune__horizon=args.horizon) for name, data in specs.items()}
    if args.outer_lr is not None:
        specs = {name: _with(data, tune__outer_lr=args.outer_lr) for name, data in specs.items()}
    if args.outer_betas is not None:  # ("" was taken as not given)
        try:
            betas = [float(b) for b in args.outer_betas.split(",")]
        except ValueError:
            betas = []
        if len(betas) != 2:  # (one number was refused in the config's words: "tune.outer_betas.1")
            return parser.refuse(f"--outer-betas {args.outer_betas!r}: expected two numbers B1,B2")
        specs = {name: _with(data, tune__outer_betas=betas) for name, data in specs.items()}
    phases: dict[str, dict] = {}  # --then: each problem's second phase
    if args.then is not None:  # ("" was taken as not given)
        method, _, steps = args.then.partition("@")
        try:
            after = [int(a) for a in steps.split(",")]
        except ValueError:
            after = []
        why = None
        if method not in BILEVEL_OPTIONS:
            why = f"METHOD must be one of {', '.join(BILEVEL_OPTIONS)}"
        elif len(after) not in (1, len(names)) or min(after) < 1:
            why = f"expected METHOD@A with one step >= 1, or one per problem ({len(names)})"
        elif args.then_lr_scale is not None and not 0 < args.then_lr_scale < math.inf:
            why = f"--then-lr-scale {args.then_lr_scale}: must be finite and > 0"
        elif args.outer_steps is not None and max(after) >= args.outer_steps:
            why = f"Phase II would start after the last of --outer-steps {args.outer_steps}"
        elif args.costs or args.select:
            why = "--costs and --select time or pick single-phase methods; drop one"
        elif not any(m in BILEVEL_OPTIONS for m in methods):
            why = f"a two-phase schedule needs a hypergradient method in --methods ({', '.join(BILEVEL_OPTIONS)})"
        if why:
            return parser.refuse(f"--then {args.then}: {why}")
        after = after * len(names) if len(after) == 1 else after

        def then(data, name):
            phase = {"method": method, "after": after[names.index(name)]}
            if args.then_lr_scale is not None:
                phase["outer_lr"] = args.then_lr_scale * data["tune"]["outer_lr"]
            return phase

        phases = {name: then(specs[name], name) for name in names}
    elif args.then_lr_scale is not None:
        return parser.refuse("--then-lr-scale needs --then")
    import importlib.util

    if "optuna" in methods and importlib.util.find_spec("optuna") is None:  # (it ran every row before it)
        return parser.refuse("--methods lists optuna, which needs the optional dependency: "
                             "pip install 'pinnlab[optuna]' (or leave optuna out of --methods)")
    from pinnlab.config import ConfigError, validate

    try:  # overrides checked once, before any run
        for name, data in specs.items():
            validate(data)
            if name in phases:
                validate(_with(data, tune__then=phases[name]))
    except ConfigError as exc:
        return parser.refuse(str(exc))
    import pinnlab

    malloc = "pinnlab" if args.malloc == "pinnlab" and pinnlab.configure_malloc() else "default"
    print(f"malloc: {malloc}", file=sys.stderr)
    records: list[dict] = []
    if args.costs:
        header = {"quick": args.quick, "malloc": malloc}
    else:
        header = {"budget_seconds": budget, "outer_steps": args.outer_steps, "quick": args.quick,
                  "repeats": args.repeats, "select": args.select, "malloc": malloc}
    try:
        run_all(args, names, methods, specs, phases, budget, records)
    except KeyboardInterrupt:  # (a traceback, and a 23-minute run stopped late kept nothing)
        runs = f"{len(records)} finished run" + ("s are" if len(records) != 1 else " is")
        kept = f"; its {runs} in {args.json}" if args.json else ""
        if args.json:
            write_json(args.json, header | {"interrupted": True, "records": records})
        print(f"bench_tuning.py: interrupted{kept}", file=sys.stderr)
        return INTERRUPTED
    if args.json:
        write_json(args.json, header | {"interrupted": False, "records": records})
    return 0


def run_all(args, names: list[str], methods: list[str], specs: dict, phases: dict, budget: float | None,
            records: list[dict]) -> None:
    """The runs of ``main``: the costs (``--costs``) or every method on every problem,
    each record appended to ``records`` as it ends; then the tables."""
    if args.costs:
        for name in names:
            records += estimate_costs(name, specs[name], methods)
        return
    # One-off process warm-up (thread pools, allocator, lazy imports): the first probe of
    # a fresh process measured 8.3 ms per step where the run it sized took 5.5 ms.
    first = names[0]
    run_untuned(first, specs[first], "default", PROBE_STEPS[1] + 1)
    chosen: dict[tuple[str, str], dict] = {}
    if args.select:
        for name in names:
            for method in methods:
                grid = selection_grid(specs[name], method, SGD_LR.get(name))
                if not grid:
                    continue
                scores = []
                for setting in grid:
                    data = with_setting(specs[name], SELECT_SEED, setting)
                    record = run_method(name, data, method, budget) | {"phase": "select", "setting": setting}
                    if record["error"] is None and record["note"]:
                        break  # the method does not apply to this problem
                    records.append(record)
                    report(record)
                    scores.append(math.inf if record["error"] is None or math.isnan(record["error"])
                                  else record["error"])
                if not scores:
                    continue
                chosen[(name, method)] = grid[min(range(len(grid)), key=scores.__getitem__)]
                print(f"selected {name} {method}: {chosen[(name, method)]}", flush=True)
    for repeat in range(args.repeats):
        for name in names:
            for method in methods:
                setting = chosen.get((name, method), {})
                data = with_setting(specs[name], repeat, setting)
                # --then: a hypergradient method also runs as Phase I of the two-phase
                # schedule, right after its single-phase run, so the two compare in one run
                two_phase = [_with(data, tune__then=phases[name])] if name in phases and method in BILEVEL_OPTIONS else []
                for variant in [data, *two_phase]:
                    record = run_method(name, variant, method, budget) | {"repeat": repeat}
                    if setting:
                        record["setting"] = setting
                    records.append(record)
                    report(record)
    print()
    print(markdown([r for r in records if r.get("phase") != "select"]))
    if chosen:
        print()
        print(selection_markdown(chosen))


def row_label(record: dict) -> str:
    """A record's row in the table: its method, ``→ METHOD`` for a two-phase run (``--then``),
    with Phase II's learning-rate multiple (``--then-lr-scale``)."""
    then = record.get("then")
    if not then:
        return record["method"]
    scale = f" (lr × {then['lr_scale']:.3g})" if "lr_scale" in then else ""  # one row over problems of different lr
    return f"{record['method']} → {then['method']}{scale}"


def markdown(records) -> str:
    """Methods as rows, problems as columns: the error (mean ± std over repeats when
    there are several); the best mean per column in bold."""
    names = list(dict.fromkeys(r["problem"] for r in records))
    methods = list(dict.fromkeys(map(row_label, records)))
    errors: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r["error"] is not None and not (isinstance(r["error"], float) and math.isnan(r["error"])):
            errors.setdefault((r["problem"], row_label(r)), []).append(float(r["error"]))
    means = {key: sum(v) / len(v) for key, v in errors.items()}
    over = {(r["problem"], row_label(r)) for r in records if r.get("over_budget")}
    lines = ["| method | " + " | ".join(f"({n})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for m in methods:
        cells = []
        for n in names:
            values = errors.get((n, m))
            if not values:
                cells.append("n/a")
                continue
            cell = f"{means[(n, m)]:.2e}"
            if len(values) > 1:
                mean = means[(n, m)]
                std = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))
                cell += f" ± {std:.1e}"
            best = min(v for (p, _), v in means.items() if p == n)
            cell = f"**{cell}**" if means[(n, m)] == best else cell
            cells.append(cell + " †" if (n, m) in over else cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if over:
        lines.append(f"\n† a tuning run took over {OVER_BUDGET:g} × the budget (its first outer step or trial "
                     "always runs): not at equal wall-clock")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main))
