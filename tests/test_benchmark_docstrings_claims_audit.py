"""Claims audit of the benchmark scripts' docstrings, comments and help strings
(benchmarks/*.py): what they say about sizes, fields, defaults, choices and the methods
they run, checked against what the scripts do. Each test reads the sentence it pins and
checks the behaviour behind it with stand-ins or toy sizes; nothing runs at benchmark size.
Claims the text gets wrong are strict xfails naming what the text says and what happens."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
import torch

from .test_benchmarks_second_audit import _horizon_bias, _hypergrad_main, _stub_cost_estimation


def _doc(module) -> str:
    """The module docstring with its whitespace collapsed."""
    return " ".join(module.__doc__.split())


def _help(module, monkeypatch, capsys, argv_main=True) -> str:
    """The script's ``--help`` text, whitespace collapsed."""
    monkeypatch.setattr(sys, "argv", ["script", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"]) if argv_main else module.main()
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def _documented_fields(doc: str, kind: str) -> set[str]:
    """The keys the docstring lists for records ``{"kind": "<kind>", "a", "b", ...}``."""
    match = re.search(r'\{"kind": "' + kind + r'",([^}]*)\}', doc)
    assert match, f"no {kind} record in the docstring"
    return {"kind", *re.findall(r'"(\w+)"', match.group(1))}


class _Stop(Exception):
    """Raised by a stand-in once the arguments it was given have been recorded."""


# _common


def test_write_json_replaces_the_file_atomically(benchmarks, monkeypatch, tmp_path):
    """write_json: "Write ``payload`` to ``path`` atomically": a write that fails half-way
    leaves the earlier results as they were and no partial file beside them."""
    import pathlib

    common = benchmarks("_common")
    assert "atomically" in common.write_json.__doc__
    path = tmp_path / "out.json"
    path.write_text('{"records": [1]}')
    real = pathlib.Path.write_text

    def fail_half_way(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        common.write_json(str(path), {"records": [1, 2, 3]})
    monkeypatch.undo()
    assert path.read_text() == '{"records": [1]}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# bench_estimators


def test_estimators_run_every_documented_dimension_and_method(benchmarks, monkeypatch):
    """Docstring: "for d ∈ {100, 1000, 10000} × {stein-shared, stein-independent, autograd,
    hutchinson}" and "Each (estimator, d) runs in a fresh subprocess": the cells run()
    asks its worker subprocesses for, d-major (autograd cheap enough not to be skipped)."""
    est = benchmarks("bench_estimators")
    assert ("for d ∈ {100, 1000, 10000} × {stein-shared, stein-independent, autograd, hutchinson}"
            in _doc(est))
    asked = []

    def subprocess_run(argv, **kwargs):
        method, dim, _ = argv[-3:]
        asked.append((argv[1:3], method, int(dim)))
        record = {"method": method, "dim": int(dim), "seconds_per_step": 1e-3, "peak_bytes": 1, "flops": 1.0,
                  "malloc": "pinnlab"}
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(record) + "\n", stderr="")

    monkeypatch.setattr(est.subprocess, "run", subprocess_run)
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    est.run(True)
    assert asked == [([est.__file__, "--worker"], method, dim) for dim in (100, 1000, 10000)
                     for method in ("stein-shared", "stein-independent", "autograd", "hutchinson")]


def test_estimators_peak_is_measured_across_the_warm_up_and_the_timed_steps(benchmarks, monkeypatch):
    """Docstring: "``peak_bytes`` is the increase of the subprocess's peak RSS ... over its
    high-water mark after set-up (network, parameters, optimizer state), measured across
    the warm-up and timed steps": the mark is read after the set-up and before the warm-up
    step. Here the set-up raises the peak by 10 MiB and every step by 1 MiB: 1 warm-up + 3
    timed steps = 4 MiB."""
    import pinnlab

    est = benchmarks("bench_estimators")
    assert "measured across the warm-up and timed steps" in _doc(est)
    steps = []
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    built = []
    monkeypatch.setattr(est, "training_step", lambda method, dim: built.append(dim) or (
        (lambda params, state, extra, i: steps.append(i) or (params, state, {"loss": torch.tensor(1.0)})), {}, {}))
    monkeypatch.setattr(est, "_peak_rss_bytes", lambda: (10 * len(built) + len(steps)) * 2**20)
    record = est.worker("stein-shared", 4, 3)
    assert steps == [0, 1, 2, 3]
    assert record["peak_bytes"] == 4 * 2**20


def test_estimators_malloc_choices_are_the_usage_lines(benchmarks, monkeypatch, capsys):
    """Usage: "[--malloc pinnlab|default|both]": each of the three reaches run(), any
    other value is refused with exit 2 before any work."""
    est = benchmarks("bench_estimators")
    assert "[--malloc pinnlab|default|both]" in _doc(est)
    asked = []

    def run(quick, malloc="pinnlab"):
        asked.append(malloc)
        raise _Stop

    monkeypatch.setattr(est, "run", run)
    for choice in ("pinnlab", "default", "both"):
        with pytest.raises(_Stop):
            est.main(["--malloc", choice])
    assert asked == ["pinnlab", "default", "both"]
    with pytest.raises(SystemExit) as exit_info:
        est.main(["--malloc", "glibc"])
    assert exit_info.value.code == 2 and asked == ["pinnlab", "default", "both"]
    assert "invalid choice" in capsys.readouterr().err


def test_estimator_workers_and_the_step_breakdown_configure_malloc_first(benchmarks, monkeypatch, tmp_path):
    """bench_estimators: "Each worker calls :func:`pinnlab.configure_malloc` first";
    bench_step_breakdown: "The process first calls :func:`pinnlab.configure_malloc`": before
    the step is built (and its settings are what the record names)."""
    import pinnlab

    est = benchmarks("bench_estimators")
    sb = benchmarks("bench_step_breakdown")
    assert "Each worker calls :func:`pinnlab.configure_malloc` first" in _doc(est)
    assert "The process first calls :func:`pinnlab.configure_malloc`" in _doc(sb)
    events = []
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: events.append("malloc") or True)
    monkeypatch.setattr(est, "training_step", lambda method, dim: events.append("step") or (
        (lambda params, state, extra, i: (params, state, {"loss": torch.tensor(1.0)})), {}, {}))
    assert est.worker("hutchinson", 4, 1)["malloc"] == "pinnlab"
    assert events == ["malloc", "step"]
    events.clear()
    monkeypatch.setattr(sb, "breakdown", lambda method, dim, steps: events.append("step") or {
        "step_seconds": 1.0, "floor_seconds": 1.0, "matmul_seconds": 0.5, "timed_ops_seconds": 1.0, "ops": {},
        "calls": {}})
    path = tmp_path / "bd.json"
    assert sb.main(["--quick", "--json", str(path)]) == 0
    assert events == ["malloc", "step"] and json.loads(path.read_text())["malloc"] == "pinnlab"


def test_the_flop_floor_test_the_docstring_names_counts_a_step(benchmarks):
    """step_flops: "(``tests/test_flop_floor.py`` checks it against a counted step)": that
    file exists and compares step_flops with a FlopCounterMode count of the step."""
    from pathlib import Path

    est = benchmarks("bench_estimators")
    assert "``tests/test_flop_floor.py`` checks it against a counted step" in " ".join(est.step_flops.__doc__.split())
    text = (Path(__file__).resolve().parent / "test_flop_floor.py").read_text()
    assert "FlopCounterMode" in text and "step_flops(" in text and "training_step(" in text


# bench_stein_memory


def test_one_draw_at_d_1e5_is_the_documented_size(benchmarks, monkeypatch):
    """Docstring: "otherwise also d = 10⁵ (one draw 5.1 GB ...)": the worker's draw_bytes
    at d = 10⁵ in the docstring's unit, to its one decimal (it said 4.9 GB: 4883 MiB
    divided by 1000)."""
    import bench_estimators

    import pinnlab.solvers.loop as loop

    mem = benchmarks("bench_stein_memory")
    value, unit = re.search(r"d = 10⁵ \(one draw ([\d.]+) (GB|GiB)", _doc(mem)).groups()
    monkeypatch.setattr(bench_estimators, "training_step", lambda method, dim: (
        (lambda p, s, extra, i: (p, s, {"loss": torch.tensor(1.0)})), {}, {}))
    monkeypatch.setattr(loop, "reset_peak_memory", lambda device: None)
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: 0.0)
    draw = mem.worker("independent", 100000)["draw_bytes"]
    assert draw == 100 * 128 * 100000 * 4
    assert round(draw / (1e9 if unit == "GB" else 2**30), 1) == float(value)


# bench_step_breakdown


def test_step_breakdown_record_has_exactly_the_documented_fields(benchmarks, monkeypatch, tmp_path):
    """Docstring: "Records (``--json``): {"method", "dim", "malloc", "step_seconds",
    "timed_ops_seconds", "matmul_seconds", "floor_seconds", "gemm_flops_per_second", "ops":
    {...}, "calls": {...}}": the JSON of a run (its step a stand-in with one matrix product
    and one tanh) has exactly these keys."""
    sb = benchmarks("bench_step_breakdown")
    doc = _doc(sb)
    documented = set(re.findall(r'"(\w+)"', doc[doc.index("Records (``--json``)"):doc.index("Usage:")]))
    assert documented == {"method", "dim", "malloc", "step_seconds", "timed_ops_seconds", "matmul_seconds",
                          "floor_seconds", "gemm_flops_per_second", "ops", "calls"}
    ones = torch.ones(2, 2)

    def step(params, state, extra, i):
        return params, state, {"loss": torch.tanh(ones @ ones).sum()}

    monkeypatch.setattr(sb, "training_step", lambda method, dim: (step, {}, {}))
    monkeypatch.setattr(sb, "gemm_rate", lambda: 1e9)
    path = tmp_path / "bd.json"
    assert sb.main(["--quick", "--dim", "3", "--malloc", "default", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert set(record) == documented
    assert (record["method"], record["dim"], record["malloc"]) == ("stein-shared", 3, "default")
    assert record["calls"] == {"mm": 1.0, "tanh": 1.0, "sum": 1.0}


# bench_hypergrad


def test_hypergrad_methods_are_every_bilevel_estimator_and_fg2u_jvp(benchmarks):
    """Docstring: "Methods: every estimator of pinnlab.bilevel; ``fg2u_jvp`` is fg2u with
    ``tangents="jvp"``": METHODS is pinnlab.bilevel.METHODS plus fg2u_jvp, each built by
    make_method."""
    import pinnlab.bilevel

    hg = benchmarks("bench_hypergrad")
    assert "Methods: every estimator of pinnlab.bilevel" in _doc(hg)
    assert set(hg.METHODS) == set(pinnlab.bilevel.METHODS) | {"fg2u_jvp"}
    assert len(hg.METHODS) == len(set(hg.METHODS))
    for name in hg.METHODS:
        expected = pinnlab.bilevel.METHODS["fg2u" if name == "fg2u_jvp" else name]
        made = hg.method_for(name, 10)
        assert isinstance(made, expected) if isinstance(expected, type) else made is not None, name


def test_hypergrad_inner_problem_is_a_float64_tanh_mlp_of_16_inputs(benchmarks):
    """Docstring: "a 16 → W → W → 1 tanh MLP ... float64": the parameter shapes for W = 5,
    every tensor (θ, φ, the hypergradient) float64, and the outer loss that of
    tanh(tanh(x W1ᵀ + b1) W2ᵀ + b2) W3ᵀ + b3 on the validation data (redrawn here)."""
    from pinnlab.bilevel import ReverseUnroll, hypergradient

    hg = benchmarks("bench_hypergrad")
    assert "a 16 → W → W → 1 tanh MLP" in _doc(hg) and "float64" in _doc(hg)
    problem, phi = hg.build(2, width=5, points=8)
    theta, _ = problem.init
    assert {k: tuple(v.shape) for k, v in theta.items()} == {
        "w1": (5, 16), "b1": (5,), "w2": (5, 5), "b2": (5,), "w3": (1, 5), "b3": (1,)}
    assert {v.dtype for v in (*theta.values(), *phi.values())} == {torch.float64}
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    torch.randn(8, 16, generator=g, dtype=f64)
    xv = torch.randn(8, 16, generator=g, dtype=f64)
    w = torch.randn(16, generator=g, dtype=f64)
    yv = torch.sin(xv @ w / 4)
    h = torch.tanh(xv @ theta["w1"].T + theta["b1"])
    h = torch.tanh(h @ theta["w2"].T + theta["b2"])
    out = (h @ theta["w3"].T + theta["b3"])[:, 0]
    assert float(problem.outer_loss(theta, phi)) == pytest.approx(float(((out - yv) ** 2).mean()), rel=1e-12)
    assert hypergradient(problem, phi, ReverseUnroll()).grad["log_decay"].dtype == torch.float64


def test_hypergrad_cost_worker_sets_up_before_its_mark_and_records_the_documented_fields(benchmarks, monkeypatch):
    """Docstring: ``rss_increase_bytes`` is the increase "over the high-water mark after
    set-up (data, networks, a warm-up at T = 2)" and "the set-up of all three problems comes
    first"; the cost record is {"kind": "cost", "method", "horizon", "seconds", "peak_bytes",
    "rss_increase_bytes", "memory_method"}."""
    import pinnlab.bilevel

    hg = benchmarks("bench_hypergrad")
    events = []
    monkeypatch.setattr(hg, "build", lambda horizon, width: events.append(("build", horizon)) or (horizon, {}))
    monkeypatch.setattr(hg, "method_for", lambda name, horizon: name)
    monkeypatch.setattr(pinnlab.bilevel, "hypergradient", lambda problem, phi, method: (
        events.append(("estimate", problem)) or types.SimpleNamespace(grad=None)))
    monkeypatch.setattr(hg, "_rss", lambda: events.append(("mark",)) or 100)
    records = hg.worker("rgu", [10, 100, 1000], 4)
    assert events[:6] == [("build", 2), ("estimate", 2), ("build", 10), ("build", 100), ("build", 1000), ("mark",)]
    assert events[6:] == [("estimate", 10), ("mark",), ("estimate", 100), ("mark",), ("estimate", 1000), ("mark",)]
    assert [set(r) for r in records] == [_documented_fields(_doc(hg), "cost")] * 3


def test_hypergrad_tensor_memory_and_accuracy_records_have_the_documented_fields(benchmarks, monkeypatch):
    """Docstring: {"kind": "tensor_memory", "method", "horizon", "tensor_peak_bytes",
    "memory_method"} and {"kind": "accuracy", "method", "horizon", "directions", "draws",
    "cosine_single_mean", "cosine_of_mean"}, "W = 32 for these" (the accuracy part)."""
    import pinnlab.bilevel

    hg = benchmarks("bench_hypergrad")
    widths = []
    monkeypatch.setattr(hg, "build", lambda horizon, width: widths.append(width) or (None, None))
    monkeypatch.setattr(hg, "method_for", lambda name, horizon: name)

    def hypergradient(problem, phi, method, **kwargs):
        total = method.get("num_directions", 1) if isinstance(method, dict) else 1
        return types.SimpleNamespace(grad={"g": torch.tensor([1.0, 0.5])},
                                     diagnostics={"directional": torch.ones(total),
                                                  "directions": torch.eye(2)[torch.arange(total) % 2]})

    class Profile:
        def __init__(self, **kwargs):
            self.profiler = types.SimpleNamespace(kineto_results=types.SimpleNamespace(events=lambda: []))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(pinnlab.bilevel, "hypergradient", hypergradient)
    monkeypatch.setattr(pinnlab.bilevel, "ReverseUnroll", lambda: "exact")
    monkeypatch.setattr(pinnlab.bilevel, "ForwardGradientUnroll", lambda **kw: kw)
    monkeypatch.setattr(torch.profiler, "profile", Profile)
    counted = hg.tensor_bytes_worker("fg2u", [2, 3], 4)
    assert [set(r) for r in counted] == [_documented_fields(_doc(hg), "tensor_memory")] * 2
    widths.clear()
    accuracy = hg.accuracy((2,), draws=2, directions=2)
    assert len(accuracy) == 8 and set(widths) == {32}
    assert [set(r) for r in accuracy] == [_documented_fields(_doc(hg), "accuracy")] * 8


def test_hypergrad_tensor_bytes_run_only_for_fg2u_and_rgu(benchmarks, monkeypatch):
    """tensor_bytes_worker: "so it runs only for fg2u and rgu": the --tensor-bytes worker
    counts those two and refuses any other method (exit 2) without counting."""
    hg = benchmarks("bench_hypergrad")
    assert "so it runs only for fg2u and rgu" in " ".join(hg.tensor_bytes_worker.__doc__.split())
    counted = []
    monkeypatch.setattr(hg, "tensor_bytes_worker", lambda name, horizons, width: counted.append(name) or [])
    for name in ("fg2u", "rgu"):
        assert hg.main(["--tensor-bytes", name, "10", "4"]) == 0
    for name in ("cg", "fg2u_jvp"):
        with pytest.raises(SystemExit) as exit_info:
            hg.main(["--tensor-bytes", name, "10", "4"])
        assert exit_info.value.code == 2
    assert counted == ["fg2u", "rgu"]


def test_hypergrad_tensor_counts_run_while_the_accuracy_part_runs(benchmarks, monkeypatch):
    """start_tensor_bytes: "(run while the accuracy part runs)": the counts are launched
    after the costs and before the accuracy part, and collected after it."""
    hg = benchmarks("bench_hypergrad")
    assert "(run while the accuracy part runs)" in hg.start_tensor_bytes.__doc__
    events = []
    monkeypatch.setattr(hg, "costs", lambda width: events.append("costs") or [])
    monkeypatch.setattr(hg, "accuracy", lambda horizons, draws: events.append("accuracy") or [])
    monkeypatch.setattr(hg, "start_tensor_bytes", lambda width, horizons: events.append("start") or [])
    monkeypatch.setattr(hg, "finish_tensor_bytes", lambda procs: events.append("finish") or [
        {"kind": "tensor_memory", "method": m, "horizon": t, "tensor_peak_bytes": 1} for m in ("fg2u", "rgu")
        for t in (10, 100)])
    assert hg.main(["--quick"]) == 0
    assert events == ["costs", "start", "accuracy", "finish"]


def test_hypergrad_quick_is_a_smaller_network_at_fewer_horizons(benchmarks, monkeypatch, capsys):
    """--quick help: "smaller network (width 64) and fewer horizons: accuracy at T = 10,
    tensor bytes at T = 10 and 100" (it said "fewer draws": both runs draw 200)."""
    hg = benchmarks("bench_hypergrad")
    text = _help(hg, monkeypatch, capsys)
    assert "fewer draws" not in text
    width = int(re.search(r"smaller network \(width (\d+)\)", text).group(1))
    asked = _hypergrad_main(hg, monkeypatch)
    assert hg.main(["--quick"]) == 0
    quick = dict(asked)
    asked.clear()
    assert hg.main([]) == 0
    assert quick["costs"] == quick["tensor"][0] == width < asked["costs"]
    assert quick["accuracy"][1] == asked["accuracy"][1]  # the same draws
    for part, horizons in (("accuracy", quick["accuracy"][0]), ("tensor bytes", quick["tensor"][1])):
        assert f"{part} at T = {' and '.join(map(str, horizons))}" in text, part
    assert len(quick["accuracy"][0]) < len(asked["accuracy"][0]) and len(quick["tensor"][1]) < len(asked["tensor"][1])


# bench_horizon_bias


class _SpyingMonkeypatch:
    """A monkeypatch whose stand-in for make_hypergradient_method also records the method
    name and options it is asked for."""

    def __init__(self, monkeypatch):
        self._monkeypatch, self.asked = monkeypatch, []

    def setattr(self, *args):
        if len(args) == 3 and args[1] == "make_hypergradient_method":
            target, name, stand_in = args
            args = (target, name, lambda method, options: self.asked.append((method, options)) or stand_in(method,
                                                                                                          options))
        self._monkeypatch.setattr(*args)

    def __getattr__(self, name):
        return getattr(self._monkeypatch, name)


def test_horizon_bias_gradients_are_rgus_and_records_have_the_documented_fields(benchmarks, monkeypatch, tmp_path):
    """Docstring: "the exact hypergradient ∂h_T/∂log σ (reverse mode through the T steps,
    i.e. rgu ...)"; records {"kind": "h", "horizon", "sigma", "h", "h_se", "rel_l2",
    "rel_l2_se"} and {"kind": "grad", "horizon", "sigma", "grad", "grad_se"} with the per
    draw values in "draws"."""
    hb = benchmarks("bench_horizon_bias")
    doc = _doc(hb)
    assert "(reverse mode through the T steps, i.e. rgu;" in doc and '(per draw values in "draws")' in doc
    spy = _SpyingMonkeypatch(monkeypatch)
    path = tmp_path / "hb.json"
    _horizon_bias(benchmarks, spy, ["--quick", "--sigmas", "0.1", "--horizons", "2", "--grad-horizons", "3",
                                    "--draws", "2", "--json", str(path)])
    assert spy.asked == [("rgu", {})]
    h, grad = json.loads(path.read_text())["records"]
    assert set(h) == _documented_fields(doc, "h") | {"draws"}
    assert set(grad) == _documented_fields(doc, "grad") | {"draws"}


def test_horizon_bias_measures_tuning_problem_c(benchmarks, monkeypatch):
    """Docstring: "on tuning problem (c) (Allen–Cahn two-body, d = 100)": the set-up the
    script builds is (c)'s config at the benchmark's sizes, with its hybrid loss."""
    hb = benchmarks("bench_horizon_bias")
    assert "on tuning problem (c) (Allen–Cahn two-body, d = 100)" in _doc(hb)
    seen = []

    class Spy(_SpyingMonkeypatch):
        def setattr(self, *args):
            if len(args) == 3 and args[1] == "build_tuning":
                target, name, stand_in = args
                args = (target, name, lambda config: seen.append(config) or stand_in(config))
            super().setattr(*args)

    _horizon_bias(benchmarks, Spy(monkeypatch), ["--quick", "--sigmas", "0.1", "--horizons", "1",
                                                  "--grad-horizons", "1", "--draws", "1"])
    (config,) = seen
    assert (config.equation.name, config.equation.dim, config.loss.kind) == ("allen_cahn_two_body", 100, "hybrid")
    assert config.tune.horizon == 10


def test_horizon_bias_zero_horizon_is_the_warm_network_itself(benchmarks):
    """--horizons help: "0 = the warm network itself": an unroll of 0 steps from the warm
    start returns the warm θ unchanged (here on bench_hypergrad's toy problem)."""
    from pinnlab.bilevel.base import unroll

    hg = benchmarks("bench_hypergrad")
    problem, phi = hg.build(2, width=2, points=4)
    warm = unroll(problem, phi, start=0, steps=3)
    theta, _ = unroll(problem, phi, start=7, init=warm, steps=0)
    assert all(torch.equal(theta[k], warm[0][k]) for k in warm[0])
    moved, _ = unroll(problem, phi, start=7, init=warm, steps=1)
    assert not all(torch.equal(moved[k], warm[0][k]) for k in warm[0])


@pytest.fixture
def problem_c(benchmarks):
    """bench_tuning's (c) at --quick sizes, built as bench_horizon_bias builds it: the
    config, its PINN problem and its tunables (without the observations)."""
    import pinnlab.config as configuration
    from pinnlab.tuning.setup import make_tunables

    bt = benchmarks("bench_tuning")
    config = configuration.validate(bt.problems(True)["c"])
    problem, kwargs = configuration.build(config)
    tunables, _ = make_tunables(config, problem, torch.device("cpu"), kwargs["dtype"])
    return config, problem, tunables


def test_horizon_bias_differentiates_in_log_sigma_at_a_held_mix_of_the_unbiased_loss(benchmarks, problem_c,
                                                                                     monkeypatch, capsys):
    """Docstring "∂h_T/∂log σ" and --mix help "mix weight of the unbiased loss, held fixed":
    (c)'s σ is log-parameterised (the gradient in its unconstrained coordinate is the one in
    log σ) and its loss is (1 − mix)·biased + mix·unbiased."""
    from pinnlab.bilevel import Log, Logit
    from pinnlab.losses import Biased, Unbiased2

    hb = benchmarks("bench_horizon_bias")
    assert "∂h_T/∂log σ" in _doc(hb)
    assert "mix weight of the unbiased loss, held fixed" in _help(hb, monkeypatch, capsys, argv_main=False)
    _, problem, tunables = problem_c
    assert tunables["sigma"].transform == Log() and tunables["mix"].transform == Logit(0.0, 1.0)
    u = torch.tensor(-1.3)
    assert float(Log().forward(u)) == pytest.approx(float(torch.exp(u)))
    loss = problem.loss
    assert isinstance(loss.first, Biased) and isinstance(loss.then, Unbiased2)

    class Constant(Biased):
        def __init__(self, value):
            self.value = value

        def __call__(self, draw):
            return torch.tensor(self.value), {}

    import dataclasses

    weighted, _ = dataclasses.replace(loss, first=Constant(2.0), then=Constant(10.0))(None, torch.tensor(0.25))
    assert float(weighted) == pytest.approx(0.75 * 2.0 + 0.25 * 10.0)


# bench_tuning (module docstring and help)


def test_tuning_outer_optimiser_acts_on_log_weights_log_sigma_logit_mix_and_mu(benchmarks, problem_c):
    """Docstring: "Adam on log σ / log weights / logit mix / μ": (a)'s boundary weight is
    log-parameterised, (b)'s μ is not transformed, (c)'s σ log and its mix logit."""
    import pinnlab.config as configuration
    from pinnlab.bilevel import Identity, Log, Logit
    from pinnlab.tuning.setup import make_tunables

    bt = benchmarks("bench_tuning")
    assert "(Adam on log σ / log weights / logit mix / μ;" in _doc(bt)
    transforms = {}
    for name in "ab":
        config = configuration.validate(bt.problems(True)[name])
        problem, kwargs = configuration.build(config)
        tunables, _ = make_tunables(config, problem, torch.device("cpu"), kwargs["dtype"])
        transforms |= {key: t.transform for key, t in tunables.items()}
    transforms |= {key: t.transform for key, t in problem_c[2].items()}
    assert transforms == {"weights.boundary": Log(), "coefficients.mu": Identity(), "sigma": Log(),
                          "mix": Logit(0.0, 1.0)}


def test_tuning_tuners_and_untuned_baselines_are_the_documented_lists(benchmarks, monkeypatch):
    """Docstring: "every tuner (random, optuna, joint, fg2u, rgu, trgu, hessian_free,
    zo_fg2u)" and "The untuned baselines (default, lra, relobralo: ...) have no tuning
    phase": together METHODS; the hypergradient ones have benchmark options; run_method
    trains the baselines untuned and tunes with every tuner."""
    bt = benchmarks("bench_tuning")
    doc = _doc(bt)
    tuners = re.search(r"every tuner \(([^)]*)\)", doc).group(1).split(", ")
    baselines = re.search(r"The untuned baselines \(([^:]*):", doc).group(1).split(", ")
    assert tuners == ["random", "optuna", "joint", "fg2u", "rgu", "trgu", "hessian_free", "zo_fg2u"]
    assert baselines == ["default", "lra", "relobralo"]
    assert sorted(bt.METHODS) == sorted(tuners + baselines)
    assert set(bt.BILEVEL_OPTIONS) == set(tuners) - {"random", "optuna", "joint"}
    ran = []
    monkeypatch.setattr(bt, "run_untuned", lambda name, data, method, steps: ran.append(("untuned", method)) or {
        "error": 0.1, "seconds": 1.0, "wall": {20: 0.0, 200: 1.8}})
    monkeypatch.setattr(bt, "run_tuner", lambda name, data, method, budget: ran.append(("tuner", method)) or {
        "tune_seconds": 1.0, "error": 0.2, "seconds": 2.0})
    specs = bt.problems(True)
    for method in baselines:
        bt.run_method("a", specs["a"], method, 15.0)
    for method in tuners:
        bt.run_method("b", specs["b"], method, 15.0)
    assert ran == [("untuned", m) for m in baselines for _ in range(2)] + [("tuner", m) for m in tuners]


def test_tuning_fg2u_draws_rademacher_directions(benchmarks):
    """Docstring: "fg2u uses the b Rademacher directions of ``directions``": its benchmark
    options leave the library's default kind, whose directions are ±1 (drawn here on
    bench_hypergrad's toy problem)."""
    from pinnlab.bilevel import hypergradient, make_method

    bt = benchmarks("bench_tuning")
    hg = benchmarks("bench_hypergrad")
    assert "fg2u uses the b Rademacher directions of ``directions``" in _doc(bt)
    for n in (1, 2, 20):
        assert make_method("fg2u", **bt.BILEVEL_OPTIONS["fg2u"](n)).kind == "rademacher"
    problem, phi = hg.build(2, width=2, points=4)
    directions = hypergradient(problem, phi, make_method("fg2u", **bt.BILEVEL_OPTIONS["fg2u"](20)),
                               seed=0).diagnostics["directions"]
    assert directions.shape == (4, 6) and set(directions.abs().flatten().tolist()) == {1.0}


def test_tuning_outer_betas_default_is_the_one_the_help_gives(benchmarks, monkeypatch, capsys):
    """--outer-betas help: "override the outer Adam's β1,β2 (default 0.9,0.999)": what every
    problem's validated config runs with when it is not given."""
    import pinnlab.config as configuration

    bt = benchmarks("bench_tuning")
    assert "override the outer Adam's β1,β2 (default 0.9,0.999)" in _help(bt, monkeypatch, capsys, argv_main=False)
    for quick in (True, False):
        for data in bt.problems(quick).values():
            assert configuration.validate(data).tune.outer_betas == (0.9, 0.999)


def test_tuning_outer_optimizer_choices_are_the_usage_lines(benchmarks, monkeypatch, capsys):
    """Usage: "[--outer-optimizer adam|sgd]": both parse (the run then reaches its set-up),
    any other is refused with exit 2."""
    bt = benchmarks("bench_tuning")
    assert "[--outer-optimizer adam|sgd]" in _doc(bt)
    reached = []
    monkeypatch.setattr(bt, "problems", lambda quick: reached.append(quick) or (_ for _ in ()).throw(_Stop()))
    for choice in ("adam", "sgd"):
        monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--outer-optimizer", choice])
        with pytest.raises(_Stop):
            bt.main()
    assert reached == [False, False]
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--outer-optimizer", "rmsprop"])
    with pytest.raises(SystemExit) as exit_info:
        bt.main()
    assert exit_info.value.code == 2 and reached == [False, False]
    assert "invalid choice" in capsys.readouterr().err


def test_every_costs_record_has_the_documented_fields(benchmarks, monkeypatch):
    """Docstring: "``--costs`` ... (records {"kind": "cost", "problem", "method", "options",
    "horizon", "seconds", "ratio"}, the primal unroll's with method "primal", ratio 1 and no
    "options")": every record estimate_costs returns (the docstring gave the primal
    record "options" too)."""
    bt = benchmarks("bench_tuning")
    documented = _documented_fields(_doc(bt), "cost")
    _stub_cost_estimation(monkeypatch)
    records = bt.estimate_costs("c", {}, ["rgu"], repeats=1)
    assert [r["method"] for r in records] == ["primal", "rgu"]
    assert 'the primal unroll\'s with method "primal", ratio 1 and no "options"' in _doc(bt)
    assert [set(r) for r in records] == [documented - {"options"}, documented]
    assert records[0]["ratio"] == 1.0
