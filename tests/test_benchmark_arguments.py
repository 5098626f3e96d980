"""The benchmark scripts refuse bad arguments with one line and exit code 2, before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args, expected", [
    # fg2u_jvp is a --costs comparison only: elsewhere it failed after the warm-up with a traceback
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "fg2u_jvp"], "unknown fg2u_jvp"),
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "default", "--repeats", "0"],
     "--repeats 0: must be >= 1"),  # ran nothing and wrote an empty table
    # nan and inf passed `budget <= 0` and failed in the first tuner's config after the warm-up
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "fg2u", "--budget", "nan"],
     "--budget nan: must be finite and > 0"),
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "fg2u", "--budget", "inf"],
     "--budget inf: must be finite and > 0"),
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "fg2u", "--budget", "-1"],
     "--budget -1.0: must be finite and > 0"),
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then", "bogus@3"], "--then bogus@3: METHOD must be one"),
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then", "fg2u@0"], "--then fg2u@0: expected METHOD@A"),
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then", "fg2u@1,2"], "one per problem (3)"),
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then", "fg2u"], "--then fg2u: expected METHOD@A"),
    ("bench_tuning.py", ["--quick", "--methods", "default,random", "--then", "fg2u@5"],
     "needs a hypergradient method in --methods"),
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then-lr-scale", "0.1"], "--then-lr-scale needs --then"),
    # was a ConfigError traceback at the first tuner, after the warm-up
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then", "fg2u@5", "--outer-steps", "5"],
     "Phase II would start after the last of --outer-steps 5"),
    ("bench_tuning.py", ["--quick", "--methods", "trgu", "--then", "fg2u@5", "--then-lr-scale", "0"],
     "--then-lr-scale 0.0: must be finite and > 0"),
    ("bench_horizon_bias.py", ["--quick", "--warm-steps", "-5"], "--warm-steps -5: must be >= 0"),  # was a traceback
    # mix is logit- and σ log-parameterised: out of range was a traceback after the set-up, nan ran through
    ("bench_horizon_bias.py", ["--quick", "--mix", "2"], "--mix 2.0: must lie in (0, 1)"),
    ("bench_horizon_bias.py", ["--quick", "--mix", "0"], "--mix 0.0: must lie in (0, 1)"),
    ("bench_horizon_bias.py", ["--quick", "--mix", "nan"], "--mix nan: must lie in (0, 1)"),
    ("bench_horizon_bias.py", ["--quick", "--warm-sigma", "-1"], "--warm-sigma -1.0: must be finite and > 0"),
    ("bench_horizon_bias.py", ["--quick", "--warm-sigma", "nan"], "--warm-sigma nan: must be finite and > 0"),
    ("bench_horizon_bias.py", ["--quick", "--sigmas", "0.1,nan"], "--sigmas 0.1,nan: every σ must be finite"),
    ("bench_horizon_bias.py", ["--quick", "--sigmas", "inf"], "--sigmas inf: every σ must be finite"),
    ("bench_horizon_bias.py", ["--quick", "--horizons", "0,-1"], "--horizons 0,-1: must be >= 0"),
    ("bench_horizon_bias.py", ["--quick", "--grad-horizons", "0"], "--grad-horizons 0: must be >= 1"),
    ("bench_horizon_bias.py", ["--quick", "--draws", "0"], "--draws 0: must be >= 1"),
    # argparse's own errors came after its usage block (6–8 lines)
    ("bench_tuning.py", ["--quick", "--repeats", "abc"], "argument --repeats: invalid int value: 'abc'"),
    ("bench_tuning.py", ["--quick", "--bogus"], "unrecognized arguments: --bogus"),
    ("bench_horizon_bias.py", ["--quick", "--draws", "abc"], "argument --draws: invalid int value: 'abc'"),
    ("bench_hypergrad.py", ["--bogus"], "unrecognized arguments: --bogus"),
    # a name given twice ran twice and was counted as two repeats; an empty one was invisible
    ("bench_tuning.py", ["--quick", "--problems", "b,b", "--methods", "default"], "--problems 'b,b': b given twice"),
    ("bench_tuning.py", ["--quick", "--problems", "a,", "--methods", "default"], "--problems 'a,': an empty item"),
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", ""], "--methods '': an empty item"),
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "rgu", "--outer-betas", ""],
     "--outer-betas '': expected two numbers"),  # (ignored)
    # --costs times one estimate: these were accepted and did nothing
    ("bench_tuning.py", ["--quick", "--costs", "--problems", "b", "--methods", "rgu", "--select", "--repeats", "4"],
     "--costs times one estimate of each method; --select, --repeats would not act"),
    # "" fell back to the defaults (a full quick run), "1.5" said "bad list: invalid literal"
    ("bench_horizon_bias.py", ["--quick", "--horizons", ""], "--horizons '': an empty item"),
    ("bench_horizon_bias.py", ["--quick", "--horizons", "1.5"], "--horizons '1.5': invalid literal for int()"),
    ("bench_horizon_bias.py", ["--quick", "--sigmas", "0.1,0.1"], "--sigmas '0.1,0.1': 0.1 given twice"),
    # the scripts' own worker processes: a traceback, or an unknown method run as autograd
    ("bench_estimators.py", ["--worker", "bogus", "10", "1"], "--worker bogus 10 1: a method of stein-shared"),
    ("bench_stein_memory.py", ["--worker", "shared", "abc"], "--worker shared abc: a noise of independent"),
    ("bench_hypergrad.py", ["--worker", "bogus", "10", "x"], "invalid literal for int()"),
    ("bench_step_breakdown.py", ["--quick", "--dim", "0"], "--dim 0: must be >= 1"),
    ("bench_step_breakdown.py", ["--quick", "--method", "bogus"], "argument --method: invalid choice: 'bogus'"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, script, args, expected):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip()
    assert run.returncode == 2, err
    assert len(err.splitlines()) == 1 and expected in err, err
    # one wording, argparse's, also for the scripts' own checks (they said "error: ...")
    assert err.startswith(f"{script}: error: "), err
    assert not out.exists()


@pytest.mark.parametrize("script, args", [
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "fg2u"]),
    ("bench_horizon_bias.py", ["--quick"]),
    ("bench_hypergrad.py", ["--quick"]),
    ("bench_step_breakdown.py", ["--quick"]),
])
@pytest.mark.parametrize("where, expected", [("missing/out.json", "does not exist"), (".", "is a directory")])
def test_unwritable_json_path_is_refused_before_the_run(tmp_path, script, args, where, expected):
    """--json is written only after the whole run: a missing directory (FileNotFoundError)
    or a directory as PATH (IsADirectoryError) was found there, the results lost."""
    path = tmp_path / where
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(path)],
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip()
    assert run.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"{script}: error: --json {path}: ") and expected in err, err


@pytest.mark.parametrize("script", ["bench_tuning.py", "bench_horizon_bias.py", "bench_hypergrad.py",
                                    "bench_estimators.py", "bench_stein_memory.py", "bench_step_breakdown.py"])
def test_a_json_path_that_would_lose_something_is_refused(tmp_path, script):
    """`--json ""` ran and wrote nothing (exit 0); `DIR/` of a missing directory passed and
    the results were lost at the end ('.../newdir/.tmp'); a config as PATH was replaced by
    the results (the next run failed with KeyError: 'model')."""
    config = tmp_path / "c.yaml"
    config.write_text("equation: {name: poisson_two_body, dim: 3}\n")
    for path, expected in (("", "an empty path"), (f"{tmp_path / 'new'}/", "names a directory"),
                           (str(config), "exists and is not a JSON file")):
        run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", path],
                             capture_output=True, text=True, timeout=120)
        err = run.stderr.strip()
        assert run.returncode == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert config.read_text() == "equation: {name: poisson_two_body, dim: 3}\n"


def test_zero_warm_steps_mean_zero_not_the_default(tmp_path):
    """``--warm-steps 0`` measured after 300 steps (``0 or 300``); with one draw the
    standard errors are undefined: null in strict JSON (they were bare NaN)."""
    out = tmp_path / "hb.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_horizon_bias.py"), "--quick",
                          "--warm-steps", "0", "--sigmas", "0.1", "--horizons", "0", "--grad-horizons", "1",
                          "--draws", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "warm start: 0 steps" in run.stdout
    data = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"bare {name} in the JSON"))
    assert data["warm_steps"] == 0
    assert {r.get("h_se", r.get("grad_se")) for r in data["records"]} == {None}


def test_bench_tuning_flags_a_tuner_whose_first_unit_overran_the_budget(monkeypatch):
    """One 500-step trial ran 97 s against a 3 s budget and the table compared it as if
    at equal wall-clock; such records are flagged and their cells marked."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    times = {"fg2u": 1.2, "random": 97.0}
    monkeypatch.setattr(bench_tuning, "run_tuner", lambda name, data, method, budget: {
        "error": 0.5 if method == "fg2u" else 0.4, "seconds": times[method], "tune_seconds": times[method]})
    data = {"trainer": {"steps": 10}, "equation": {}}
    records = [bench_tuning.run_method("a", data, method, 3.0) for method in ("fg2u", "random")]
    assert [r["over_budget"] for r in records] == [False, True]
    table = bench_tuning.markdown(records)
    assert "| random | **4.00e-01** † |" in table and "| fg2u | 5.00e-01 |" in table
    assert "† a tuning run took over 1.25 × the budget" in table
    assert bench_tuning.run_method("a", data, "fg2u", None)["over_budget"] is None


@pytest.mark.parametrize("quick", [True, False])
def test_every_configuration_bench_tuning_runs_is_valid(monkeypatch, quick):
    """A setting the config refuses as having no effect (tune.checkpoint_every with the
    searches) stopped the tuning benchmark at its fourth run, after 2 minutes; the README's
    command must run. Every config of every problem, method, budget mode, repeat and
    ``--select`` setting validates."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    checked = 0
    for name, base in bench_tuning.problems(quick).items():
        soft = base["equation"].get("constraint") == "soft"
        for method in bench_tuning.METHODS:
            settings = [{}] + bench_tuning.selection_grid(base, method, bench_tuning.SGD_LR[name])
            for setting, repeat in [(s, bench_tuning.SELECT_SEED) for s in settings] + [({}, 1)]:
                data = bench_tuning.with_setting(base, repeat, setting)
                if method in ("default", "lra", "relobralo"):
                    if name != "b" and (method == "default" or soft):
                        bench_tuning.untuned_config(data, method, 50)
                        checked += 1
                elif method != "joint" or name == "b":
                    for budget in (15.0, None) if method not in ("random", "optuna") else (15.0,):
                        config = bench_tuning.tuner_config(name, data, method, budget)
                        checked += 1
                        if name == "b":  # the searches' μ range (the config's own is the default init ± 2)
                            mu = config.tune.tunables["coefficients.mu"]
                            searched = method in ("random", "optuna")
                            assert (mu.low, mu.high) == ((-2.0, 4.0) if searched else (None, None))
    assert checked > 100


def test_two_phase_runs_are_valid_configs_and_rows_of_their_own(monkeypatch):
    """``--then fg2u@A``: every problem's config with the second phase (its method's
    benchmark options filled in) validates, and the table keeps a two-phase run apart from
    the single-phase run of the same first method."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    for name, base in bench_tuning.problems(True).items():
        data = bench_tuning._with(base, tune__then={"method": "fg2u", "after": 5})
        config = bench_tuning.tuner_config(name, data, "trgu", 15.0)
        assert config.tune.method == "trgu" and config.tune.then.method == "fg2u"
        assert config.tune.then.options == {"num_directions": 4 if name == "b" else 1}
    records = [{"problem": "a", "method": "trgu", "error": e, "then": then}
               for e, then in ((0.5, None), (0.2, {"method": "fg2u", "after": 5}),
                               (0.3, {"method": "fg2u", "after": 5, "outer_lr": 0.1, "lr_scale": 0.1}))]
    records.append({"problem": "b", "method": "trgu", "error": 0.4,
                    "then": {"method": "fg2u", "after": 5, "outer_lr": 0.01, "lr_scale": 0.010000000000000002 / 0.1}})
    table = bench_tuning.markdown(records)
    assert "| trgu | 5.00e-01 | n/a |" in table and "| trgu → fg2u | **2.00e-01** | n/a |" in table, table
    # one row for Phase II at 0.1 × each problem's rate, whatever the problems' rates
    assert "| trgu → fg2u (lr × 0.1) | 3.00e-01 | **4.00e-01** |" in table, table


def test_then_runs_each_hypergradient_method_both_ways_in_one_run(monkeypatch, capsys):
    """``--then`` adds the two-phase run of every hypergradient method right after its
    single-phase run (the same seed), so the table compares them within one run; other
    methods run once."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    calls = []

    def run_method(name, data, method, budget):
        then = data["tune"].get("then")
        calls.append((name, method, then and (then["method"], then["after"])))
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "note": "",
                **({"then": {"method": then["method"], "after": then["after"]}} if then else {})}

    monkeypatch.setattr(bench_tuning, "run_untuned", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench_tuning, "run_method", run_method)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--quick", "--problems", "a,c", "--methods", "default,trgu",
                                      "--then", "fg2u@3,4"])
    assert bench_tuning.main() == 0
    assert calls == [("a", "default", None), ("a", "trgu", None), ("a", "trgu", ("fg2u", 3)),
                     ("c", "default", None), ("c", "trgu", None), ("c", "trgu", ("fg2u", 4))]
    assert "| trgu → fg2u | **5.00e-01** | **5.00e-01** |" in capsys.readouterr().out  # (ties are all bold)


def test_the_step_breakdown_sums_its_operators(tmp_path):
    """bench_step_breakdown's record: the operators' seconds add up to its total, the
    matrix products' total is the sum of exactly the matmul operators, the calls are per
    step (the same whole number every step), and the malloc setting is recorded."""
    out = tmp_path / "bd.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step_breakdown.py"), "--quick", "--dim",
                          "3", "--method", "stein-independent", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    record = json.loads(out.read_text())
    ops, calls = record["ops"], record["calls"]
    assert record["timed_ops_seconds"] == pytest.approx(sum(ops.values()), rel=1e-12)
    matmuls = [name for name in ops if name in ("mm", "addmm", "bmm", "matmul", "baddbmm")]
    assert "mm" in matmuls and record["matmul_seconds"] == pytest.approx(sum(ops[n] for n in matmuls), rel=1e-12)
    assert record["matmul_seconds"] < record["timed_ops_seconds"]
    assert set(calls) == set(ops) and all(float(c).is_integer() and c >= 1 for c in calls.values())
    assert calls["tanh"] == 6  # (3 hidden tanh layers, f(x ± δ) and f(x) apart)
    assert record["malloc"] in ("pinnlab", "default") and record["method"] == "stein-independent"
    assert 0 < record["floor_seconds"] and 0 < record["step_seconds"]
