"""bench_tuning's protocol, the numbers behind the README's tuning table: the problems'
sizes and seeds, the per-repeat seeds, each method's options, the equal wall-clock
arithmetic of the untuned baselines, the n/a rows, the record fields, ``--select``'s pick
and the table's mean ± std. The runs themselves are replaced by stand-ins: only the
script's own arithmetic and bookkeeping are checked (a few seconds in all)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    return bench_tuning


def _forbid(*names):
    def fail(*args, **kwargs):
        raise AssertionError(f"{names} ran for a row that does not apply")
    return fail


@pytest.mark.parametrize("quick, width, steps", [(True, 32, 200), (False, 64, 2000)])
def test_problems_are_the_shipped_configs_at_the_documented_sizes(bench, quick, width, steps):
    """--quick shrinks only the width (32) and the final solve (S = 200 steps); every
    problem trains at seed 0 (repeat 0), evaluates once at the end, keeps its config's
    horizon and outer learning rate, and (c)'s hard switch sits at half the steps."""
    specs = bench.problems(quick)
    assert list(specs) == ["a", "b", "c"]
    for data in specs.values():
        assert data["model"]["width"] == width and data["model"]["depth"] == 3
        assert data["trainer"]["steps"] == steps and data["trainer"]["eval_every"] == steps
        assert data["trainer"]["seed"] == 0
        assert data["tune"]["outer_steps"] == 100000  # (the budget ends the tuning, not a count)
        assert "method" not in data["tune"] and "options" not in data["tune"]
    assert [specs[n]["tune"]["horizon"] for n in "abc"] == [50, 10, 10]
    assert [specs[n]["tune"]["outer_lr"] for n in "abc"] == [1.0, 0.1, 0.2]
    assert specs["c"]["loss"]["switch_step"] == steps // 2


def test_each_hypergradient_method_runs_with_its_documented_options(bench):
    """fg2u: 1 direction for N ≤ 2 tuned values, 4 at N = 20; zo_fg2u: min(N, 4)
    directions; trgu differentiates 3 of the T steps (benchmarks/TUNING.md)."""
    assert [bench.BILEVEL_OPTIONS["fg2u"](n)["num_directions"] for n in (1, 2, 20)] == [1, 1, 4]
    assert [bench.BILEVEL_OPTIONS["zo_fg2u"](n) for n in (1, 2, 20)] == [
        {"num_directions": 1}, {"num_directions": 2}, {"num_directions": 4}]
    assert bench.BILEVEL_OPTIONS["trgu"](2) == {"steps": 3}
    assert bench.BILEVEL_OPTIONS["rgu"](20) == {} and bench.BILEVEL_OPTIONS["hessian_free"](20) == {}


def test_an_untuned_baseline_trains_the_given_steps_with_its_switch_at_half(bench):
    """The untuned baselines train S + B/τ steps: the hybrid switch moves to half of
    those, the single evaluation to the end, and ``lra``/``relobralo`` set the weighting."""
    specs = bench.problems(True)
    config = bench.untuned_config(specs["c"], "default", 300)
    assert config.trainer.steps == 300 and config.trainer.eval_every == 300
    assert config.loss.switch_step == 150
    config = bench.untuned_config(specs["a"], "relobralo", 301)
    assert config.trainer.steps == 301 and config.loss.weighting == "relobralo"


@pytest.mark.parametrize("budget", [7.5, None])
def test_a_tuner_gets_the_budget_and_continues_from_its_network(bench, budget):
    """Every tuner gets the same B seconds (None: ``--outer-steps``, no budget) and the
    final solve continues from the tuned network."""
    config = bench.tuner_config("a", bench.problems(True)["a"], "rgu", budget)
    assert config.tune.budget_seconds == budget and config.tune.final_init == "continue"


def test_repeat_r_seeds_training_observations_and_directions_with_r(bench):
    """Repeat 0 is the problem as shipped; repeat r ≥ 1 sets the training seed, the
    observation draw and the direction seed to r, never the PDE instance."""
    data = bench.problems(True)["b"]
    assert bench.seeded(data, 0) is data
    for repeat in (1, 2):
        out = bench.seeded(data, repeat)
        assert (out["trainer"]["seed"], out["data"]["seed"], out["tune"]["seed"]) == (repeat, repeat, repeat)
        assert out["equation"] == data["equation"]
    assert data["trainer"]["seed"] == 0 and data["data"]["seed"] == 0 and "seed" not in data["tune"]
    chosen = bench.with_setting(data, bench.SELECT_SEED, {"outer_lr": 0.3})
    assert chosen["tune"]["outer_lr"] == 0.3 and chosen["trainer"]["seed"] == bench.SELECT_SEED


def test_rows_that_do_not_apply_are_na_without_running(bench, monkeypatch):
    """LRA and ReLoBRaLo need a soft constraint (a hard one is the default when the
    config names none); joint fitting applies to (b) only; on (b) the untuned default is
    the initial guess μ = 0 (error 1 exactly) and a loss weighting estimates nothing."""
    specs = bench.problems(True)
    monkeypatch.setattr(bench, "run_untuned", _forbid("run_untuned"))
    monkeypatch.setattr(bench, "run_tuner", _forbid("run_tuner"))
    for name, method in (("c", "lra"), ("c", "relobralo"), ("a", "joint"), ("c", "joint"), ("b", "lra")):
        record = bench.run_method(name, specs[name], method, 15.0)
        assert record["error"] is None and record["seconds"] is None and record["note"], (name, method)
    record = bench.run_method("b", specs["b"], "default", 15.0)
    assert (record["error"], record["seconds"]) == (1.0, 0.0)
    monkeypatch.setattr(bench, "run_tuner", lambda name, data, method, budget: {"error": 0.25, "tune_seconds": 1.0})
    assert bench.run_method("b", specs["b"], "joint", 15.0)["error"] == 0.25


def _fake_untuned(calls, per_step):
    def run_untuned(name, data, method, steps):
        calls.append(steps)
        wall = {s: 2.0 + s * per_step for s in range(1, steps + 1)}  # (2 s of one-off set-up)
        return {"error": 0.125, "seconds": 9.0, "steps": steps, "wall": wall}
    return run_untuned


def test_an_untuned_baseline_spends_the_budget_at_its_probed_seconds_per_step(bench, monkeypatch):
    """τ = (wall at step 200 − wall at step 20) / 180 from a 201-step probe; the run then
    trains S + round(B/τ) steps (rounded, not truncated: B/τ = 299.7 is 300 steps)."""
    calls = []
    per_step = 3.0 / 299.7
    monkeypatch.setattr(bench, "run_untuned", _fake_untuned(calls, per_step))
    data = bench.problems(True)["a"]
    record = bench.run_method("a", data, "lra", 3.0)
    assert calls == [201, 200 + 300]
    assert record["note"] == "500 steps" and (record["error"], record["seconds"]) == (0.125, 9.0)
    assert record["tune_seconds"] is None and record["over_budget"] is None


def test_with_outer_steps_an_untuned_baseline_trains_s_plus_n_times_t(bench, monkeypatch):
    """--outer-steps N: no probe; the baselines train S + N·T steps."""
    calls = []
    monkeypatch.setattr(bench, "run_untuned", _fake_untuned(calls, 0.01))
    data = bench._with(bench.problems(True)["a"], tune__outer_steps=7)
    record = bench.run_method("a", data, "default", None)
    assert calls == [200 + 7 * 50] and record["note"] == "550 steps"


def test_over_budget_is_strictly_more_than_the_allowed_multiple(bench, monkeypatch):
    """A tuning that took exactly OVER_BUDGET × B is at the limit, not over it."""
    data = {"trainer": {"steps": 10}, "equation": {}}
    for seconds, over in ((5.0, False), (5.000001, True)):
        monkeypatch.setattr(bench, "run_tuner", lambda name, data, method, budget, s=seconds: {
            "error": 0.5, "seconds": s, "tune_seconds": s})
        assert bench.run_method("a", data, "rgu", 4.0)["over_budget"] is over


def test_a_two_phase_record_carries_its_schedule_and_learning_rate_multiple(bench, monkeypatch):
    """``then``: Phase II's method, when it starts, its outer learning rate and that
    rate over the problem's (the table's "lr × X" row)."""
    monkeypatch.setattr(bench, "run_tuner", lambda name, data, method, budget: {
        "error": 0.5, "seconds": 1.0, "tune_seconds": 1.0})
    data = {"trainer": {"steps": 10}, "equation": {},
            "tune": {"outer_lr": 0.5, "then": {"method": "fg2u", "after": 7, "outer_lr": 0.125}}}
    record = bench.run_method("a", data, "trgu", 3.0)
    assert record["then"] == {"method": "fg2u", "after": 7, "outer_lr": 0.125, "lr_scale": 0.25}
    data["tune"]["then"] = {"method": "fg2u", "after": 7}
    assert bench.run_method("a", data, "trgu", 3.0)["then"] == {"method": "fg2u", "after": 7}


def test_a_tuner_record_counts_its_outer_steps_and_takes_the_coefficient_error(bench, monkeypatch):
    """A tuner's record: the outer steps it ran (the history's length), the tuned values
    as numbers, its status; on (b) the coefficient error with the tuning's seconds and no
    final solve, elsewhere the final solve's relative L2."""
    import torch

    import pinnlab.tuning.run as run
    import pinnlab.tuning.setup as setup

    class Outcome:
        phi = {"sigma": torch.tensor(0.5), "coefficients.mu": torch.tensor([1.0, 2.0])}
        history = {"outer_step": [0, 1, 2, 3]}
        status = "nonfinite"

    class Final:
        class final:
            rel_l2 = 0.0625

    coefficient = {}
    monkeypatch.setattr(setup, "build_tuning", lambda config: "setup")
    monkeypatch.setattr(run, "check_method", lambda s: None)
    monkeypatch.setattr(run, "run_tuning", lambda s: Outcome())
    monkeypatch.setattr(run, "coefficient_errors", lambda s, phi: dict(coefficient))
    monkeypatch.setattr(run, "final_solve", lambda s, outcome, progress: (Final(), None))
    monkeypatch.setattr(bench, "tuner_config", lambda *args: None)
    record = bench.run_tuner("a", {}, "rgu", 3.0)
    assert record["outer_steps"] == 4 and record["tune_status"] == "nonfinite"
    assert record["tuned"] == {"sigma": 0.5, "coefficients.mu": [1.0, 2.0]}
    assert record["error"] == 0.0625 and record["seconds"] >= record["tune_seconds"]
    coefficient["coefficients.mu"] = 0.375
    monkeypatch.setattr(run, "final_solve", _forbid("final_solve"))
    record = bench.run_tuner("b", {}, "rgu", 3.0)
    assert record["error"] == 0.375 and record["seconds"] == record["tune_seconds"]


def test_the_table_gives_mean_and_sample_std_and_skips_nan(bench):
    """Mean ± sample standard deviation (n − 1) over repeats; a single value has no ±;
    a NaN error (a diverged run) counts as no value, and a column with none is n/a."""
    records = [{"problem": "a", "method": "rgu", "error": e} for e in (1.0, 3.0)]
    records += [{"problem": "a", "method": "fg2u", "error": e} for e in (float("nan"), 0.5)]
    records += [{"problem": "b", "method": "fg2u", "error": float("nan")},
                {"problem": "b", "method": "rgu", "error": None}]
    table = bench.markdown(records)
    assert "| rgu | 2.00e+00 ± 1.4e+00 | n/a |" in table, table  # std √2, not 1
    assert "| fg2u | **5.00e-01** | n/a |" in table, table


def _main(bench, monkeypatch, argv, error):
    """bench_tuning.main with the runs replaced by ``error(name, data, method)``."""
    calls = []

    def run_method(name, data, method, budget):
        calls.append((name, method, data["trainer"]["seed"], data["tune"].get("outer_lr"), budget))
        return {"problem": name, "method": method, "error": error(name, data, method), "seconds": 1.0, "note": ""}

    monkeypatch.setattr(bench, "run_untuned", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench, "run_method", run_method)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--malloc", "default", *argv])
    assert bench.main() == 0
    return calls


def test_select_picks_the_lowest_error_on_the_held_out_seed(bench, monkeypatch, tmp_path, capsys):
    """--select runs every setting of the grid at SELECT_SEED and evaluates with the one of
    lowest error (a NaN error is never picked, even as the first); the evaluation repeats
    use seeds 0..R−1, carry their setting, and the selection records stay out of the table."""
    grid = bench.selection_grid(bench.problems(True)["b"], "rgu", bench.SGD_LR["b"])
    best = grid[4]

    def error(name, data, method):
        if data["trainer"]["seed"] != bench.SELECT_SEED:
            return 0.5
        if data["tune"] == {**data["tune"], **grid[0]} and "outer_optimizer" not in data["tune"]:
            return float("nan")
        return 0.25 if data["tune"] == {**data["tune"], **best} else 0.75

    out = tmp_path / "t.json"
    calls = _main(bench, monkeypatch, ["--quick", "--problems", "b", "--methods", "rgu", "--select", "--repeats", "2",
                                       "--json", str(out)], error)
    assert [c[2] for c in calls] == [bench.SELECT_SEED] * len(grid) + [0, 1]
    assert [c[3] for c in calls[-2:]] == [best["outer_lr"]] * 2 and {c[4] for c in calls} == {15.0}
    payload = json.loads(out.read_text())
    assert payload["repeats"] == 2 and payload["budget_seconds"] == 15.0 and payload["select"] is True
    evaluation = [r for r in payload["records"] if r.get("phase") != "select"]
    assert [r["repeat"] for r in evaluation] == [0, 1] and all(r["setting"] == best for r in evaluation)
    assert sum(r.get("phase") == "select" for r in payload["records"]) == len(grid)
    text = capsys.readouterr().out
    assert "| rgu | **5.00e-01 ± 0.0e+00** |" in text, text  # (the held-out 0.25 is no evaluation)


def test_the_full_run_gives_each_tuner_120_seconds(bench, monkeypatch):
    """B = 120 s by default, 15 s with --quick (as the README's runs)."""
    calls = _main(bench, monkeypatch, ["--problems", "b", "--methods", "rgu"], lambda *args: 0.5)
    assert [c[4] for c in calls] == [120.0]


def test_costs_take_the_best_of_repeats_against_the_primal_unroll(bench, monkeypatch):
    """--costs: each estimate's seconds are the best of ``repeats`` timed calls after a
    warm-up, its ratio those seconds over the primal unroll's; fg2u_jvp is fg2u with
    jvp tangents and methods without an estimator (the searches) are left out."""
    import types

    import torch

    import pinnlab.bilevel.base as base
    import pinnlab.bilevel.parameterization as parameterization
    import pinnlab.config as configuration
    import pinnlab.tuning.run as run
    import pinnlab.tuning.setup as setup

    monkeypatch.setattr(configuration, "validate", lambda data: data)
    monkeypatch.setattr(setup, "build_tuning", lambda config: types.SimpleNamespace(
        bilevel=None, parameterization=None, phi0=None))
    monkeypatch.setattr(parameterization, "reparameterize", lambda b, p: types.SimpleNamespace(horizon=10))
    monkeypatch.setattr(parameterization, "unconstrain", lambda phi, p: {"coefficients.mu": torch.zeros(20)})
    monkeypatch.setattr(base, "unroll", lambda problem, u: None)
    made = []
    monkeypatch.setattr(run, "make_hypergradient_method",
                        lambda name, options: made.append((name, options)) or (lambda problem, u: None))
    ticks, now = [], 0.0
    for duration in (3.0, 1.0, 2.0, 5.0, 4.0, 6.0, 2.5, 2.0, 2.25):  # primal, fg2u_jvp, trgu: 3 repeats each
        ticks += [now, now + duration]
        now += 10.0
    it = iter(ticks)
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: next(it)))
    records = bench.estimate_costs("b", {}, ["fg2u_jvp", "random", "trgu"], repeats=3)
    assert [(r["method"], r["seconds"], r["ratio"], r["horizon"]) for r in records] == [
        ("primal", 1.0, 1.0, 10), ("fg2u_jvp", 4.0, 4.0, 10), ("trgu", 2.0, 2.0, 10)]
    assert made == [("fg2u", {"num_directions": 4, "tangents": "jvp"}), ("trgu", {"steps": 3})]
    assert records[1]["options"] == {"num_directions": 4, "tangents": "jvp"}


def test_select_grids_are_the_documented_settings(bench):
    """--select's grid (the module docstring): Adam at ⅓, 1, 3 × the problem's rate with
    β (0.9, 0.999) or (0, 0), plain SGD at ⅓, 1, 3 × SGD_LR; the searches' trial length
    ½, 1, 2 × 10·T; LRA α 0.1 or 0.5 × every 10 or 1 steps; ReLoBRaLo α 0.95 or 0.5 ×
    temperature 1 or 0.1; nothing for the untuned default."""
    data = bench.problems(True)["c"]  # outer lr 0.2, T = 10
    adam = [{"outer_lr": lr, "outer_betas": betas} for lr in (0.066667, 0.2, 0.6)
            for betas in ([0.9, 0.999], [0.0, 0.0])]
    sgd = [{"outer_optimizer": "sgd", "outer_lr": lr} for lr in (0.333333, 1.0, 3.0)]
    for method in ("fg2u", "joint"):
        assert bench.selection_grid(data, method, bench.SGD_LR["c"]) == adam + sgd
    assert bench.selection_grid(data, "rgu") == adam
    assert bench.selection_grid(data, "optuna") == [{"trial_steps": s} for s in (50, 100, 200)]
    assert bench.selection_grid(data, "lra") == [{"weighting_options": {"alpha": a, "every": e}}
                                                 for a, e in ((0.1, 10), (0.1, 1), (0.5, 10), (0.5, 1))]
    assert bench.selection_grid(data, "relobralo") == [{"weighting_options": {"alpha": a, "temperature": t}}
                                                       for a, t in ((0.95, 1.0), (0.95, 0.1), (0.5, 1.0), (0.5, 0.1))]
    assert bench.selection_grid(data, "default") == []
    assert bench.SGD_LR == {"a": 1.0, "b": 0.01, "c": 1.0} and bench.SELECT_SEED == 100


@pytest.mark.parametrize("args, expected", [
    (["--select", "--outer-lr", "0.1"], "--select picks each method's outer optimiser"),
    (["--select", "--outer-optimizer", "adam"], "--select picks each method's outer optimiser"),
    (["--outer-optimizer", "sgd", "--outer-betas", "0.9,0.99"], "--outer-betas are Adam's"),
    (["--outer-steps", "0"], "--outer-steps 0: must be >= 1"),
    (["--outer-steps", "5", "--budget", "10"], "--outer-steps 5: replaces the budget; drop --budget"),
])
def test_contradictory_protocol_options_are_refused_before_any_run(bench, monkeypatch, capsys, args, expected):
    """Options that another one overrides, or that would not act, exit 2 with one line
    before the warm-up."""
    monkeypatch.setattr(bench, "run_untuned", _forbid("run_untuned"))
    monkeypatch.setattr(bench, "run_method", _forbid("run_method"))
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--quick", "--problems", "c", "--methods", "rgu", *args])
    assert bench.main() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_then_lr_scale_multiplies_each_problems_own_rate(bench, monkeypatch):
    """--then-lr-scale X: Phase II's outer learning rate is X × the problem's (0.2 on (c))."""
    calls = []

    def run_method(name, data, method, budget):
        calls.append(data["tune"].get("then"))
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "note": ""}

    monkeypatch.setattr(bench, "run_untuned", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench, "run_method", run_method)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--malloc", "default", "--quick", "--problems", "c",
                                      "--methods", "trgu", "--then", "fg2u@3", "--then-lr-scale", "0.5"])
    assert bench.main() == 0
    assert calls == [None, {"method": "fg2u", "after": 3, "outer_lr": 0.1}]


def test_outer_steps_replace_the_budget_by_n_outer_steps(bench, monkeypatch):
    """--outer-steps N: no budget, and every problem's tuners run exactly N outer steps."""
    seen = []

    def run_method(name, data, method, budget):
        seen.append((name, data["tune"]["outer_steps"], budget))
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "note": ""}

    monkeypatch.setattr(bench, "run_untuned", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench, "run_method", run_method)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--malloc", "default", "--quick", "--problems", "a,c",
                                      "--methods", "rgu", "--outer-steps", "7"])
    assert bench.main() == 0
    assert seen == [("a", 7, None), ("c", 7, None)]
