"""Second claims audit of the benchmark scripts' docstrings, comments, help and printed
lines (benchmarks/*.py): the promises the first claims pass and the mutation audits left
unpinned. Each test reads the sentence it pins and checks the behaviour behind it with
stand-ins or toy sizes; nothing runs at benchmark size. Claims the text gets wrong are
strict xfails naming what the text says and what happens."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
import torch

from .test_bench_tuning_protocol import _main


def _doc(text: str) -> str:
    """A docstring with its whitespace collapsed."""
    return " ".join(text.split())


def _help(module, monkeypatch, capsys, argv_main=True) -> str:
    """The script's ``--help`` text, whitespace collapsed."""
    monkeypatch.setattr(sys, "argv", ["script", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"]) if argv_main else module.main()
    assert exit_info.value.code == 0
    return _doc(capsys.readouterr().out)


class _Stop(Exception):
    """Raised by a stand-in once what it was given has been recorded."""


def _fake_step(params, state, extra, i):
    return params, state, {"loss": torch.tensor(1.0)}


# bench_estimators


def test_estimators_memory_method_names_the_steps_it_measures(benchmarks, monkeypatch):
    """The record's ``memory_method`` says which steps ``peak_bytes`` covers. Here only the
    warm-up step raises the peak (4 MiB) and no timed step does: the record counts it, as
    the docstring says, so the text may not limit the measurement to the timed steps."""
    import pinnlab

    est = benchmarks("bench_estimators")
    assert "measured across the warm-up and timed steps" in _doc(est.__doc__)
    steps = []
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    monkeypatch.setattr(est, "training_step", lambda method, dim: (
        lambda p, s, extra, i: steps.append(i) or _fake_step(p, s, extra, i), {}, {}))
    monkeypatch.setattr(est, "_peak_rss_bytes", lambda: (100 + (4 if steps else 0)) * 2**20)
    monkeypatch.setattr(est.subprocess, "run", lambda argv, **kwargs: types.SimpleNamespace(
        returncode=0, stdout=json.dumps(est.worker(argv[-3], int(argv[-2]), int(argv[-1]))) + "\n", stderr=""))
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    monkeypatch.setattr(est, "DIMS", (3,))
    monkeypatch.setattr(est, "METHODS", ("hutchinson",))
    (record,), _ = est.run(True)
    assert record["peak_bytes"] == 4 * 2**20  # the warm-up's increase
    assert record["memory_method"].endswith("during the warm-up and timed steps"), record["memory_method"]


def test_estimators_quick_times_three_steps_in_every_cell_but_autograds(benchmarks, monkeypatch, capsys):
    """--quick help: "3 timed steps per cell (autograd: 1, as without --quick)", and the
    docstring's "10, 3 with --quick; autograd, the slowest, 1": the REPS each worker is
    asked for are pinned by test_readme_claims_performance_audit's
    test_every_cell_times_ten_steps_and_autograd_one (quick and not)."""
    est = benchmarks("bench_estimators")
    assert "--quick 3 timed steps per cell (autograd: 1, as without --quick)" in _help(est, monkeypatch, capsys)
    assert "(10, 3 with ``--quick``; autograd, the slowest, 1)" in _doc(est.__doc__)


def test_estimators_malloc_default_is_pinnlab(benchmarks, monkeypatch, capsys):
    """--malloc help: "(default: pinnlab)": without the option run() gets "pinnlab", and
    its workers then run without PINNLAB_MALLOC (configure_malloc acts), even where the
    caller's environment sets it to "default"."""
    est = benchmarks("bench_estimators")
    assert "or both, side by side (default: pinnlab)" in _help(est, monkeypatch, capsys)
    asked, real_run = [], est.run

    def run(quick, malloc="unset"):
        asked.append(malloc)
        raise _Stop

    monkeypatch.setattr(est, "run", run)
    with pytest.raises(_Stop):
        est.main([])
    assert asked == ["pinnlab"]
    envs = []

    def subprocess_run(argv, env=None, **kwargs):
        envs.append(env.get("PINNLAB_MALLOC"))
        record = {"method": argv[-3], "dim": int(argv[-2]), "seconds_per_step": 1e-3, "peak_bytes": 1,
                  "flops": 1.0, "malloc": "pinnlab"}
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(record) + "\n", stderr="")

    monkeypatch.setenv("PINNLAB_MALLOC", "default")
    monkeypatch.setattr(est.subprocess, "run", subprocess_run)
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    monkeypatch.setattr(est, "DIMS", (100,))
    real_run(True, asked[0])
    assert envs == [None] * len(est.METHODS)


def test_autograd_growth_runs_the_d_1000_step_the_d_squared_rule_skipped(benchmarks):
    """autograd_growth: "(D² from d = 100 predicted 16 GiB at d = 1,000 ...)": a d = 100 step
    of 16 GiB / 100 grows by D² to 16 GiB (over the 8 GiB limit: skipped), but by D·(D + H/w)
    only × 1000·1257/(100·357) ≈ 35 to about 5.6 GiB: autograd_skip runs it."""
    est = benchmarks("bench_estimators")
    assert "D² from d = 100 predicted 16 GiB at d = 1,000" in _doc(est.autograd_growth.__doc__)
    at_100 = 16 * 2**30 / 100
    assert at_100 * (1000 / 100) ** 2 > est.MEMORY_LIMIT
    growth = est.autograd_growth(1000, 100)
    assert growth == pytest.approx(1000 * 1257 / (100 * 357), rel=1e-12)
    assert at_100 * growth / 2**30 == pytest.approx(5.63, abs=0.01)
    assert est.autograd_skip(1000, {100: (0.01, at_100)}) is None


# bench_stein_memory


def test_one_draw_at_d_1e3_is_the_documented_size_of_the_table(benchmarks, monkeypatch, capsys):
    """Docstring: "At d = 10³ a draw is 49 MB": the worker's draw_bytes at d = 10³ (N·K·D
    float32 values) in the table's "one draw MB" column (MiB) is that number."""
    import bench_estimators

    import pinnlab.solvers.loop as loop

    mem = benchmarks("bench_stein_memory")
    value = int(re.search(r"At d = 10³ a draw is (\d+) MB", _doc(mem.__doc__)).group(1))
    monkeypatch.setattr(bench_estimators, "training_step", lambda method, dim: (_fake_step, {}, {}))
    monkeypatch.setattr(loop, "reset_peak_memory", lambda device: None)
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: 0.0)
    record = mem.worker("shared", 1000)
    assert record["draw_bytes"] == 100 * 128 * 1000 * 4
    assert mem.table([record]).splitlines()[-1].split(" | ")[2] == str(value)


# bench_hypergrad


def test_hypergrad_costs_run_each_method_in_a_fresh_subprocess_at_t_10_100_1000(benchmarks, monkeypatch, capsys):
    """Docstring: "each method runs in its own fresh subprocess at T = 10, 100, 1000 in that
    order": one worker per method (METHODS in order) asked for "10,100,1000" at the width;
    the worker's "skip" lines reach stderr and its records come back in its order."""
    hg = benchmarks("bench_hypergrad")
    assert "each method runs in its own fresh subprocess at T = 10, 100, 1000 in that order" in _doc(hg.__doc__)
    asked = []

    def subprocess_run(argv, **kwargs):
        asked.append(argv[1:])
        name, horizons, _ = argv[-3:]
        records = [{"kind": "cost", "method": name, "horizon": int(t), "seconds": 0.5, "peak_bytes": 2**20,
                    "rss_increase_bytes": 0} for t in horizons.split(",")[:2]]
        return types.SimpleNamespace(returncode=0, stdout="noise\n" + json.dumps(records) + "\n",
                                     stderr=f"warning\nskip {name} T=1000: predicted 99 s\n")

    monkeypatch.setattr(hg.subprocess, "run", subprocess_run)
    records = hg.costs(48)
    assert asked == [[hg.__file__, "--worker", name, "10,100,1000", "48"] for name in hg.METHODS]
    assert [(r["method"], r["horizon"]) for r in records] == [(m, t) for m in hg.METHODS for t in (10, 100)]
    err = capsys.readouterr().err
    assert "skip fg2u T=1000: predicted 99 s" in err and "warning" not in err


def test_hypergrad_accuracy_and_tensor_counts_run_on_one_thread(benchmarks, monkeypatch):
    """accuracy: "torch.set_num_threads(1)  # the tensor-byte counts run beside it; accuracy
    is not timed", and the counts themselves on one thread; the timed cost worker takes
    PINNLAB_BENCH_THREADS (2 by default)."""
    import inspect

    hg = benchmarks("bench_hypergrad")
    assert "the tensor-byte counts run beside it; accuracy is not timed" in inspect.getsource(hg.accuracy)
    threads = []

    def set_num_threads(n):
        threads.append(n)
        raise _Stop

    monkeypatch.setattr(torch, "set_num_threads", set_num_threads)
    monkeypatch.delenv("PINNLAB_BENCH_THREADS", raising=False)
    for call in (lambda: hg.accuracy((10,), draws=2), lambda: hg.tensor_bytes_worker("fg2u", [10], 4),
                 lambda: hg.worker("rgu", [10], 4)):
        with pytest.raises(_Stop):
            call()
    assert threads == [1, 1, 2]


# bench_tuning


def test_search_range_of_b_covers_the_true_drift_the_default_misses(benchmarks):
    """SEARCH_RANGES: "(μ: init ± 2, here [-2, 2], while (b)'s true drift 1 + N(0, I)
    reaches 3.17 at seed 0)": the default bounds of (b)'s μ, the largest true coordinate,
    and the searches' configured range [-2, 4], which holds every coordinate."""
    import pinnlab.config as configuration
    from pinnlab.tuning.setup import make_tunables

    bt = benchmarks("bench_tuning")
    doc = _doc(_attribute_doc(bt, "SEARCH_RANGES"))
    assert "(μ: init ± 2, here [-2, 2], while (b)'s true drift 1 + N(0, I) reaches 3.17 at seed 0)" in doc
    data = bt.problems(True)["b"]

    def bounds(config):
        problem, kwargs = configuration.build(config)
        tunables, _ = make_tunables(config, problem, torch.device("cpu"), kwargs["dtype"])
        mu = tunables["coefficients.mu"]
        return (mu.low, mu.high), problem.equation.coefficients["mu"]

    (low, high), mu = bounds(configuration.validate(data))
    assert (low, high) == (-2.0, 2.0)
    assert round(float(mu.max()), 2) == 3.17 and float(mu.max()) > high
    (low, high), _ = bounds(bt.tuner_config("b", data, "random", 15.0))
    assert (low, high) == (bt.SEARCH_RANGES["b"]["coefficients.mu"]["low"],
                           bt.SEARCH_RANGES["b"]["coefficients.mu"]["high"]) == (-2.0, 4.0)
    assert low <= float(mu.min()) and float(mu.max()) <= high


def test_every_record_has_every_documented_key_null_where_it_does_not_apply(benchmarks, monkeypatch):
    """Docstring: "Records: {"problem", ..., "note"}, every key in every record (null where
    it does not apply: the tuning fields for the untuned baselines, but for lra's and
    relobralo's ``tuned``, and error and seconds for n/a rows)": an n/a row, an untuned
    baseline, (b)'s initial guess and a tuner."""
    bt = benchmarks("bench_tuning")
    doc = _doc(bt.__doc__)
    keys = re.findall(r'"(\w+)"', re.search(r"Records: \{([^}]*)\}", doc).group(1))
    assert keys == ["problem", "method", "error", "seconds", "tune_seconds", "outer_steps", "tuned", "tune_status",
                    "over_budget", "note"]
    assert "every key in every record (null where it does not apply" in doc
    tuning = ["tune_seconds", "outer_steps", "tuned", "tune_status", "over_budget"]
    ended = {"weights.residual": 1.0, "weights.boundary": 0.5}  # (what lra's weights ended at)
    monkeypatch.setattr(bt, "run_untuned", lambda name, data, method, steps: {
        "error": 0.1, "seconds": 1.0, "wall": {20: 0.0, 200: 1.8}, "weights": ended})
    monkeypatch.setattr(bt, "run_tuner", lambda name, data, method, budget: {
        "tune_seconds": 1.0, "outer_steps": 3, "tuned": {"sigma": 0.1}, "tune_status": "ok", "error": 0.2,
        "seconds": 2.0})
    specs = bt.problems(True)
    na = bt.run_method("a", specs["a"], "joint", 15.0)
    untuned = bt.run_method("a", specs["a"], "lra", 15.0)
    guess = bt.run_method("b", specs["b"], "default", 15.0)
    tuner = bt.run_method("c", specs["c"], "rgu", 15.0)
    for record in (na, untuned, guess, tuner):
        assert list(record) == keys, record
    assert na["error"] is None and na["seconds"] is None
    for record in (na, untuned, guess):
        assert all(record[k] is None for k in tuning if (record, k) != (untuned, "tuned")), record
    assert untuned["tuned"] == ended
    assert all(tuner[k] is not None for k in keys) and tuner["over_budget"] is False


def test_the_default_run_of_c_uses_sigma_half_with_a_hard_switch_at_half_the_steps(benchmarks):
    """Docstring (c): "(the default run uses σ = 0.5 with a hard switch at half the steps)":
    the untuned default's problem at S steps: Stein σ = 0.5, biased before step S/2 and
    unbiased from it on."""
    import pinnlab.config as configuration
    from pinnlab.losses.hybrid import SwitchAt

    bt = benchmarks("bench_tuning")
    assert "(the default run uses σ = 0.5 with a hard switch at half the steps)" in _doc(bt.__doc__)
    problem, _ = configuration.build(bt.untuned_config(bt.problems(True)["c"], "default", 300))
    assert problem.estimator.sigma == 0.5
    assert problem.loss.switch == SwitchAt(150)
    assert (problem.loss.switch.mix(149), problem.loss.switch.mix(150)) == (0.0, 1.0)


def test_no_evaluation_repeat_uses_the_selection_seed(benchmarks, monkeypatch, capsys):
    """SELECT_SEED: "which no evaluation repeat (seeds 0..R−1) uses: ``--select`` refuses
    ``--repeats`` above it": R = SELECT_SEED evaluates on seeds 0..R−1; one more is one
    line and exit 2 before any run."""
    bt = benchmarks("bench_tuning")
    assert "which no evaluation repeat (seeds 0..R−1) uses: ``--select`` refuses ``--repeats`` above it" in _doc(
        _attribute_doc(bt, "SELECT_SEED"))
    repeats = bt.SELECT_SEED
    calls = _main(bt, monkeypatch, ["--quick", "--problems", "c", "--methods", "trgu", "--select", "--repeats",
                                    str(repeats)], lambda name, data, method: 0.5)
    grid = len(bt.selection_grid(bt.problems(True)["c"], "trgu", bt.SGD_LR["c"]))
    assert [seed for _, _, seed, _, _ in calls[grid:]] == list(range(repeats))
    capsys.readouterr()
    ran = []
    monkeypatch.setattr(bt, "run_method", lambda *args: ran.append(args))
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--quick", "--problems", "c", "--methods", "trgu",
                                      "--select", "--repeats", str(repeats + 1)])
    assert bt.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--repeats {repeats + 1} with --select: at most {repeats}" in err[0], err
    assert ran == []


def _attribute_doc(module, name: str) -> str:
    """The attribute docstring under ``name = ...`` in the module's source."""
    import inspect

    source = inspect.getsource(module)
    after = source[source.index(f"\n{name} = "):]
    start = after.index('"""') + 3
    return after[start:after.index('"""', start)]


def test_every_hypergradient_method_shares_the_problems_outer_optimiser_and_horizon(benchmarks):
    """Docstring: "All hypergradient methods share the outer optimiser (Adam ...) and the
    horizon T of the problem's config": each one's validated config keeps the problem's
    outer optimiser, rate, β and T."""
    import pinnlab.config as configuration

    bt = benchmarks("bench_tuning")
    assert "All hypergradient methods share the outer optimiser (Adam on" in _doc(bt.__doc__)
    assert "and the horizon T of the problem's config" in _doc(bt.__doc__)
    for name, data in bt.problems(True).items():
        shipped = configuration.validate(data).tune
        expected = ("adam", shipped.outer_lr, shipped.outer_betas, shipped.horizon)
        for method in bt.BILEVEL_OPTIONS:
            tune = bt.tuner_config(name, data, method, 15.0).tune
            assert (tune.outer_optimizer, tune.outer_lr, tune.outer_betas, tune.horizon) == expected, (name, method)


def test_problem_a_runs_the_long_horizon_its_config_explains(benchmarks):
    """Docstring (a): "T = 50 (a 10-step hypergradient is no guide here, see the config)":
    the config says so, and the benchmark's (a) tunes at T = 50, not 10."""
    from pathlib import Path

    import pinnlab.config as configuration

    bt = benchmarks("bench_tuning")
    assert "T = 50 (a 10-step hypergradient is no guide here, see the config)" in _doc(bt.__doc__)
    text = (Path(bt.__file__).resolve().parent.parent / bt.CONFIGS["a"]).read_text()
    assert "the hypergradient of a short unroll is no guide here" in _doc(text.replace("#", ""))
    assert "at T = 10 is +1.9e-6 with trainer.dtype: float64 (lower the weight)" in _doc(text.replace("#", ""))
    assert bt.tuner_config("a", bt.problems(True)["a"], "fg2u", 15.0).tune.horizon == 50
    assert configuration.validate(bt.problems(False)["a"]).tune.horizon == 50


# bench_hypergrad (table and --memory-only)


def test_hypergrad_table_marks_a_skipped_estimate(benchmarks):
    """Docstring: cost estimates are "Skipped where the estimate would take longer than a
    minute": the table's cell of a (method, T) without a record reads "skipped"; the others
    give seconds / +MiB / peak MiB."""
    hg = benchmarks("bench_hypergrad")
    assert "Skipped where the estimate would take longer than a minute" in _doc(hg.__doc__)
    cost = [{"kind": "cost", "method": "rgu", "horizon": t, "seconds": 2.0, "peak_bytes": 3 * 2**20,
             "rss_increase_bytes": 2**20} for t in (10, 100)]
    rows = {line.split(" | ")[0]: line for line in hg.table(cost).splitlines()}
    assert rows["| rgu"] == "| rgu | 2 / 1.0 / 3 | 2 / 1.0 / 3 | skipped |"
    assert rows["| fg2u"] == "| fg2u | skipped | skipped | skipped |"


def test_hypergrad_memory_only_counts_every_horizon_also_with_quick(benchmarks, monkeypatch):
    """Docstring: "``--quick`` counts T = 10 and 100 beside the accuracy part and
    ``--memory-only`` counts T = 10, 100, 1000 on its own": with both, still all three
    horizons (at the quick width 64), and nothing else runs."""
    hg = benchmarks("bench_hypergrad")
    assert "``--memory-only`` counts T = 10, 100, 1000 on its own" in _doc(hg.__doc__)
    asked = []
    monkeypatch.setattr(hg, "costs", lambda width: pytest.fail("costs ran"))
    monkeypatch.setattr(hg, "accuracy", lambda horizons, draws: pytest.fail("accuracy ran"))
    monkeypatch.setattr(hg, "start_tensor_bytes", lambda width, horizons: asked.append((width, tuple(horizons))) or [])
    monkeypatch.setattr(hg, "finish_tensor_bytes", lambda procs: [
        {"kind": "tensor_memory", "method": m, "horizon": t, "tensor_peak_bytes": 1} for m in ("fg2u", "rgu")
        for t in (10, 100, 1000)])
    assert hg.main(["--memory-only", "--quick"]) == 0
    assert asked == [(64, (10, 100, 1000))]


# bench_step_breakdown


def test_step_breakdown_threads_as_the_estimator_workers(benchmarks, monkeypatch):
    """Comment "(as bench_estimators' workers)": the breakdown sets torch's threads from
    PINNLAB_BENCH_THREADS (default 2) as a bench_estimators worker does."""
    import inspect

    import pinnlab

    sb = benchmarks("bench_step_breakdown")
    est = benchmarks("bench_estimators")
    assert "(as bench_estimators' workers)" in inspect.getsource(sb.main)
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    monkeypatch.setattr(sb, "breakdown", lambda method, dim, steps: pytest.fail("no thread setting first"))
    monkeypatch.setattr(est, "training_step", lambda method, dim: pytest.fail("no thread setting first"))
    for env in (None, "3"):
        if env is None:
            monkeypatch.delenv("PINNLAB_BENCH_THREADS", raising=False)
        else:
            monkeypatch.setenv("PINNLAB_BENCH_THREADS", env)
        threads = []

        def set_num_threads(n, threads=threads):
            threads.append(n)
            raise _Stop

        monkeypatch.setattr(torch, "set_num_threads", set_num_threads)
        for call in (lambda: sb.main(["--quick"]), lambda: est.worker("stein-shared", 3, 1)):
            with pytest.raises(_Stop):
                call()
        expected = 2 if env is None else 3
        assert threads == [expected, expected]


# bench_horizon_bias


def test_horizon_bias_measured_summary_is_the_full_size_table_of_tuning_md(benchmarks, monkeypatch):
    """Docstring: "Measured (full size, defaults; 43 minutes ...): at a network warmed up for
    1000 steps the T = 10 hypergradient is ≈ 0 (|∂h/∂log σ| ≤ 3.5e-5, within 2 SE) for σ in
    [0.01, 0.05] and +1.4e-2 at 0.2, against +0.06 at σ = 0.5; h_200 is lowest at σ = 0.1
    (benchmarks/TUNING.md, "Full size")": the numbers of that table, measured at the
    script's defaults (its σ grid, W = 1000, σ_w = 0.03, 4 draws, T = 10 and 200)."""
    from pathlib import Path

    from .test_benchmarks_second_audit import _horizon_bias

    hb = benchmarks("bench_horizon_bias")
    doc = _doc(hb.__doc__)
    assert ("at a network warmed up for 1000 steps the T = 10 hypergradient is ≈ 0 (|∂h/∂log σ| ≤ 3.5e-5, within 2 "
            "SE) for σ in [0.01, 0.05] and +1.4e-2 at 0.2, against +0.06 at σ = 0.5; h_200 is lowest at σ = 0.1 "
            '(benchmarks/TUNING.md, "Full size")') in doc and "43 minutes" in doc
    text = (Path(hb.__file__).resolve().parent / "TUNING.md").read_text()
    section = text[text.index("**Full size**"):]
    section = section[section.index("python benchmarks/bench_horizon_bias.py --json hb.json"):]
    assert "(43 minutes" in section[:80]
    assert "for 1000 steps at σ = 0.03, then measures over 4 noise draws" in _doc(section[:600])
    rows = {line.split(" | ")[0].lstrip("| "): [cell.strip(" |*") for cell in line.split(" | ")[1:]]
            for line in section.splitlines()[:20] if line.startswith("| ")}
    sigmas = [float(s) for s in rows["σ"]]
    grads = [(float(m.replace("−", "-")), float(s)) for m, s in (c.split(" ± ") for c in rows["∂h_10/∂log σ"])]
    h200 = [float(h) for h in rows["h_200 (×1e-3)"]]
    low = [g for s, g in zip(sigmas, grads) if 0.01 <= s <= 0.05]
    assert len(low) == 3 and max(abs(m) for m, _ in low) == 3.5e-5 and all(abs(m) <= 2 * se for m, se in low)
    assert grads[sigmas.index(0.2)][0] == 1.4e-2 and round(grads[sigmas.index(0.5)][0], 2) == 0.06
    assert sigmas[h200.index(min(h200))] == 0.1
    seen = _horizon_bias(benchmarks, monkeypatch, [])
    assert seen["unrolls"][0] == (0, 1000, {"sigma": 0.03, "mix": 0.5}, None)
    measured = [(t, u["sigma"]) for _, t, u, _ in seen["unrolls"][1:]]
    assert sorted({s for _, s in measured}) == pytest.approx(sigmas)
    assert {10, 200} <= {t for t, _ in measured} and 10 in {t for _, t in seen["grads"]}
    assert len(measured) == len(set(measured)) * 4  # 4 draws each


def test_hypergrad_fg2u_carries_hvp_tangents_and_fg2u_jvp_a_jvp_of_the_loop(benchmarks, monkeypatch):
    """Docstring: "``fg2u_jvp`` is fg2u with ``tangents="jvp"`` (torch.func.jvp through the
    whole loop) beside the default Hessian-vector-product tangents": on the inner problem,
    fg2u takes the per-step HVP tangent unroll, fg2u_jvp a jvp of the whole unrolled map
    (that the two agree is the library's own tests'); both with the same directions."""
    import pinnlab.bilevel.forward as forward
    from pinnlab.bilevel import hypergradient

    hg = benchmarks("bench_hypergrad")
    assert ('``fg2u_jvp`` is fg2u with ``tangents="jvp"`` (torch.func.jvp through the whole loop) beside the '
            "default Hessian-vector-product tangents") in _doc(hg.__doc__)
    used = []

    def path(kind):
        def record(problem, *args, **kwargs):
            used.append((kind, tuple(args[1].shape) if len(args) > 1 else None))
            raise _Stop
        return record

    monkeypatch.setattr(forward, "tangent_unroll", path("hvp"))
    monkeypatch.setattr(forward, "unrolled_objective", path("jvp"))
    problem, phi = hg.build(3, width=3, points=8)
    for name in ("fg2u", "fg2u_jvp"):
        with pytest.raises(_Stop):
            hypergradient(problem, phi, hg.method_for(name, 3, directions=2), seed=5)
    assert used == [("hvp", (2, 6)), ("jvp", None)]


def test_usage_lines_show_the_defaults_the_scripts_run_with(benchmarks, monkeypatch, tmp_path):
    """Usage: bench_horizon_bias "[--sigmas 0.01,0.02,0.05,0.1,0.2,0.5] [--horizons 0,10,50,200]
    [--grad-horizons 10,50]" and bench_step_breakdown "[--method stein-shared] [--dim 100]":
    the values a run without those options uses."""
    from .test_benchmarks_second_audit import _horizon_bias

    hb = benchmarks("bench_horizon_bias")
    usage = _doc(hb.__doc__[hb.__doc__.index("Usage:"):])
    shown = {option: [float(v) for v in re.search(rf"\[{option} ([\d.,]+)\]", usage).group(1).split(",")]
             for option in ("--sigmas", "--horizons", "--grad-horizons")}
    seen = _horizon_bias(benchmarks, monkeypatch, [])
    measured = [(t, u["sigma"]) for _, t, u, _ in seen["unrolls"][1:]]
    assert list(dict.fromkeys(s for _, s in measured)) == pytest.approx(shown["--sigmas"])
    assert list(dict.fromkeys(t for t, _ in measured)) == shown["--horizons"]
    assert list(dict.fromkeys(t for _, t in seen["grads"])) == shown["--grad-horizons"]
    sb = benchmarks("bench_step_breakdown")
    method, dim = re.search(r"\[--method ([\w-]+)\] \[--dim (\d+)\]", _doc(sb.__doc__)).groups()
    asked = []
    monkeypatch.setattr(sb, "breakdown", lambda method, dim, steps: asked.append((method, dim)) or {
        "step_seconds": 1.0, "floor_seconds": 1.0, "matmul_seconds": 0.5, "timed_ops_seconds": 1.0, "ops": {},
        "calls": {}})
    assert sb.main(["--quick", "--malloc", "default"]) == 0
    assert asked == [(method, int(dim))]
