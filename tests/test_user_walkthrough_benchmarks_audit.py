"""A new user's walk through the benchmark scripts, reproducing the README's Performance
section and benchmarks/TUNING.md: the commands' result files (the README gives one
``--json`` name to two programs), the refusals of bad options (``--outer-betas`` with one
number, ``--costs`` with nothing to time), the thread count the workers use, what a long
``--memory-only`` run says while it counts, and the README's deterministic tensor-byte
counts, which a rerun reproduces to the digit."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TUNING = (ROOT / "benchmarks" / "TUNING.md").read_text(encoding="utf-8")


def _stand_ins(tuning, monkeypatch):
    """bench_tuning with every run and the malloc setting replaced by failures: a refusal
    must come before any of them."""
    import pinnlab

    def never(*args, **kwargs):
        pytest.fail("a run started")

    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    for name in ("run_untuned", "run_method", "estimate_costs"):
        monkeypatch.setattr(tuning, name, never)


def _tuning_refusal(benchmarks, monkeypatch, capsys, argv):
    tuning = benchmarks("bench_tuning")
    _stand_ins(tuning, monkeypatch)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", *argv])
    code = tuning.main()
    return code, capsys.readouterr().err.strip()


# -- bugs ------------------------------------------------------------------------------------


def _json_outputs(text: str) -> dict[str, set[str]]:
    """``--json`` file name -> the programs the document's commands write it with."""
    found: dict[str, set[str]] = {}
    for command in re.findall(r"`((?:pinnlab \w+|python benchmarks/\w+\.py)[^`]*)`", text):
        match = re.search(r"--json (\S+)", command)
        if match:
            program = command.split()[1] if command.startswith("python") else " ".join(command.split()[:2])
            found.setdefault(match.group(1), set()).add(program)
    return found


def test_the_readmes_commands_give_each_json_file_to_one_program():
    """A user who runs the README's commands in order keeps every result: the benchmarks'
    ``--json`` replaces any existing JSON file without a word (no ``--overwrite``, unlike
    ``pinnlab``'s own ``--json``), so two programs must not share a file name. Measured:
    ``pinnlab study ... --json est.json`` then ``bench_estimators.py --json est.json``
    left only the benchmark's records."""
    outputs = _json_outputs(README)
    for name, programs in _json_outputs(TUNING).items():
        outputs.setdefault(name, set()).update(programs)
    shared = {name: sorted(programs) for name, programs in outputs.items() if len(programs) > 1}
    assert shared == {}, shared


def test_the_commands_are_found_by_the_json_scan():
    """The scan of the test above sees the README's commands (so its failure is about
    the names, not a pattern that matches nothing)."""
    outputs = _json_outputs(README)
    assert outputs["hg.json"] == {"benchmarks/bench_hypergrad.py"}
    assert "pinnlab study" in outputs["est.json"]
    assert _json_outputs(TUNING)["costs.json"] == {"benchmarks/bench_tuning.py"}


@pytest.mark.parametrize("betas", ["0.9", "0.9,0.99,0.5"])
def test_outer_betas_of_the_wrong_length_name_the_option(benchmarks, monkeypatch, capsys, betas):
    """``--outer-betas`` takes two numbers; one or three are refused like an empty value,
    in the option's own words."""
    code, err = _tuning_refusal(benchmarks, monkeypatch, capsys,
                                ["--quick", "--problems", "b", "--methods", "fg2u", "--outer-betas", betas])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--outer-betas {betas!r}: expected two numbers B1,B2" in err, err


def test_costs_with_no_hypergradient_method_is_refused(benchmarks, monkeypatch, capsys):
    """``--costs`` times hypergradient estimates; a ``--methods`` list without any (default,
    random, joint, ...) has nothing to time: refused in one line, not a run that
    quietly writes only the primal unroll."""
    code, err = _tuning_refusal(benchmarks, monkeypatch, capsys,
                                ["--quick", "--costs", "--problems", "b", "--methods", "default,random"])
    assert code == 2 and len(err.splitlines()) == 1 and "--costs" in err, err


def test_a_worker_honours_omp_num_threads_or_the_readme_names_its_override(benchmarks, monkeypatch):
    """The README tells users of a shared machine to set ``OMP_NUM_THREADS`` (2 spinning
    threads there ran 5–20× slower); the workers call ``torch.set_num_threads(
    PINNLAB_BENCH_THREADS or 2)`` over it. Either a worker keeps the user's 1 thread, or
    the Performance section says what the workers use and names the variable."""
    import torch

    import pinnlab

    est = benchmarks("bench_estimators")
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(pinnlab, "configure_malloc", lambda: False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("PINNLAB_BENCH_THREADS", raising=False)
    loss = torch.tensor(1.0)
    monkeypatch.setattr(est, "training_step",
                        lambda method, dim: ((lambda p, s, extra, i: (p, s, {"loss": loss})), {}, {}))
    est.worker("stein-shared", 2, 1)
    performance = README[README.index("## Performance"):README.index("## Notes and known limitations")]
    assert threads in ([], [1]) or "PINNLAB_BENCH_THREADS" in performance, threads


class _Counting:
    """A stand-in tensor-byte process: its ``communicate`` is where ``main`` waits (50 s
    to minutes); it notes whether the user had been told anything by then."""

    def __init__(self, name, capsys, told):
        self.name, self.capsys, self.told, self.returncode = name, capsys, told, 0

    def communicate(self):
        out, err = self.capsys.readouterr()
        self.told.append(out + err)
        sys.stdout.write(out)
        sys.stderr.write(err)
        return json.dumps([{"kind": "tensor_memory", "method": self.name, "horizon": t, "tensor_peak_bytes": 1000,
                            "memory_method": "stand-in"} for t in (10, 100, 1000)]), ""

    def poll(self):
        return 0


def test_memory_only_says_what_it_counts_before_it_waits(benchmarks, monkeypatch, capsys):
    """Long work shows progress: before ``--memory-only`` waits for its counts it says
    what it is counting (methods, T)."""
    hg = benchmarks("bench_hypergrad")
    told: list[str] = []
    monkeypatch.setattr(hg, "start_tensor_bytes",
                        lambda width, horizons: [_Counting(name, capsys, told) for name in ("fg2u", "rgu")])
    assert hg.main(["--quick", "--memory-only"]) == 0
    assert told and told[0].strip(), told


def test_an_interrupted_tuning_benchmark_ends_in_one_line_and_keeps_its_finished_records(
        benchmarks, monkeypatch, tmp_path, capsys):
    """Ctrl-C after the first run: no traceback but one line on stderr and a nonzero exit
    code, and the finished record is not lost (in the --json file, as ``pinnlab``'s own
    commands keep what they finished)."""
    tuning = benchmarks("bench_tuning")
    _stand_ins(tuning, monkeypatch)
    monkeypatch.setattr(tuning, "run_untuned", lambda *args: {})
    done = []

    def run_method(name, data, method, budget):
        if done:
            raise KeyboardInterrupt
        done.append(method)
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "tune_seconds": 1.0,
                "outer_steps": 3, "tuned": None, "tune_status": "ok", "over_budget": False, "note": ""}

    monkeypatch.setattr(tuning, "run_method", run_method)
    path = tmp_path / "t.json"
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--quick", "--problems", "b", "--methods", "fg2u,rgu",
                                      "--json", str(path)])
    try:
        code = tuning.main()
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt traceback")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) <= 2, err
    assert err[-1] == f"bench_tuning.py: interrupted; its 1 finished run is in {path}"  # (it said "1 ... runs")
    data = json.loads(path.read_text())
    assert data["interrupted"] is True and [r["method"] for r in data["records"]] == ["fg2u"]


class _Parsed(Exception):
    pass


def _parser_of(benchmarks, monkeypatch, script):
    """The argument parser ``script``'s ``main`` builds (caught at ``parse_args``)."""
    common = benchmarks("_common")
    module = benchmarks(script)
    seen = []

    def parse_args(self, *args, **kwargs):
        seen.append(self)
        raise _Parsed

    monkeypatch.setattr(common.Parser, "parse_args", parse_args)
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with pytest.raises(_Parsed):
        module.main()
    return seen[0]


SCRIPTS = ["bench_estimators", "bench_horizon_bias", "bench_hypergrad", "bench_stein_memory",
           "bench_step_breakdown", "bench_tuning"]


def test_every_option_in_the_help_of_every_script_says_something(benchmarks, monkeypatch):
    """A user reproducing a table reads ``--help``: every option there has a line (what it
    takes, its default), as most already do; found bare: ``--problems`` (a, b, c?),
    ``--methods`` (which names?), ``--sigmas`` (its grid), ``--dim`` (100), ``--json``."""
    bare = {}
    for script in SCRIPTS:
        parser = _parser_of(benchmarks, monkeypatch, script)
        options = [action.option_strings[-1] for action in parser._actions
                   if action.option_strings and action.help is None]
        if options:
            bare[script] = options
    assert bare == {}, bare


def test_a_skipped_estimator_cell_is_in_the_table_and_the_records(benchmarks, monkeypatch):
    """1 GiB for autograd at d = 100 predicts over 8 GiB at d = 1000: that cell is skipped,
    and says so where the results are read, the table and the JSON records."""
    from .test_benchmarks_second_audit import _fake_workers

    est = benchmarks("bench_estimators")
    monkeypatch.setattr(est.subprocess, "run", _fake_workers([], peak_bytes=2**30))
    monkeypatch.setattr(est, "gemm_rate", lambda: 1e9)
    monkeypatch.setattr(est, "DIMS", (100, 1000))
    records, _ = est.run(True)
    assert ("autograd", 1000) in {(r["method"], r["dim"]) for r in records}
    assert "skipped" in est.table(records)


# the keys of the records a real run wrote (bench_estimators.py --quick, bench_stein_memory.py --quick)
RECORD_KEYS = {
    "bench_estimators": ["estimator", "noise", "method", "dim", "seconds_per_step", "peak_bytes", "flops", "reps",
                         "malloc", "floor_seconds", "memory_method", "skipped"],
    "bench_stein_memory": ["noise", "dim", "n", "k", "draw_bytes", "peak_bytes", "draws", "seconds",
                           "memory_method"],
}


@pytest.mark.parametrize("script", sorted(RECORD_KEYS))
def test_the_docstring_names_every_key_of_the_records_it_writes(benchmarks, script):
    """The results are saved in a documented format: every key of a record is named in the
    script's docstring (as ``key`` or "key"), as bench_tuning's, bench_hypergrad's,
    bench_horizon_bias's and bench_step_breakdown's "Records" do."""
    doc = benchmarks(script).__doc__
    missing = [key for key in RECORD_KEYS[script]
               if not any(form in doc for form in (f"``{key}``", f'"{key}"', f"``{key}:"))]
    assert missing == [], missing


def test_the_memory_only_run_says_how_much_memory_it_needs(benchmarks, monkeypatch):
    """torch.profiler keeps every allocator event of the T = 1000 estimate: the README's
    sentence on the ``--memory-only`` command, or the option's help, gives the memory the
    run needs (GB)."""
    parser = _parser_of(benchmarks, monkeypatch, "bench_hypergrad")
    help_text = next(a.help for a in parser._actions if "--memory-only" in a.option_strings)
    flat = " ".join(README.split())
    sentence = flat[flat.index("**Memory against T**"):flat.index("| method | T = 10 |")]
    assert "GB" in help_text or "GB" in sentence, (help_text, sentence)


def test_the_progress_line_of_a_two_phase_run_names_its_second_phase(benchmarks, capsys):
    """``--then fg2u@2 --then-lr-scale 0.5``: each run prints one line as it ends; the
    two-phase run's says ``trgu → fg2u`` as its table row does, so the two lines of one
    method can be told apart."""
    tuning = benchmarks("bench_tuning")
    base = {"problem": "b", "method": "trgu", "error": 0.84, "seconds": 3.0, "note": "", "repeat": 0}
    tuning.report(base)
    tuning.report(base | {"error": 1.07, "then": {"method": "fg2u", "after": 2, "outer_lr": 0.05, "lr_scale": 0.5}})
    single, two_phase = capsys.readouterr().out.splitlines()
    assert "→" not in single and "trgu → fg2u" in two_phase, (single, two_phase)


# -- behaviour met on the way that no test pinned ---------------------------------------------


def test_the_readmes_t_10_tensor_counts_are_what_the_counter_gives_at_width_64(benchmarks):
    """README "Memory against T" (``--quick --memory-only``, width 64): fg2u 7.30 MB and rgu
    7.28 MB at T = 10, deterministic counts that a rerun gave to the digit (and 7.30,
    71.37, 712.28 MB at T = 100, 1000; rgu's since its backward pass frees each step's
    tensors, 21.08 MB at T = 10 before)."""
    assert "| fg2u (b = 8) | 7.30 MB | 7.30 MB | 7.30 MB |" in README
    assert "| rgu | 7.28 MB | 71.37 MB | 712.28 MB |" in README
    hg = benchmarks("bench_hypergrad")
    counted = {name: hg.tensor_bytes_worker(name, [10], 64)[0]["tensor_peak_bytes"] / 2**20 for name in ("rgu", "fg2u")}
    assert {name: f"{mb:.2f}" for name, mb in counted.items()} == {"rgu": "7.28", "fg2u": "7.30"}


def test_the_tuning_json_header_and_table_say_what_its_records_say(benchmarks, monkeypatch, tmp_path, capsys):
    """A run's JSON carries its settings (budget, outer steps, quick, repeats, select,
    malloc) and one record per run with the repeat; the printed table's cell is the
    record's error, bold as the best of its column."""
    tuning = benchmarks("bench_tuning")
    _stand_ins(tuning, monkeypatch)
    monkeypatch.setattr(tuning, "run_untuned", lambda *args: {})
    monkeypatch.setattr(tuning, "run_method", lambda name, data, method, budget: {
        "problem": name, "method": method, "error": {"default": 1.0, "fg2u": 1.089}[method], "seconds": 2.6,
        "tune_seconds": None, "outer_steps": None, "tuned": None, "tune_status": None, "over_budget": None,
        "note": ""})
    path = tmp_path / "tun.json"
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--quick", "--problems", "b", "--methods", "default,fg2u",
                                      "--budget", "3", "--json", str(path)])
    assert tuning.main() == 0
    data = json.loads(path.read_text())
    assert {k: v for k, v in data.items() if k != "records"} == {
        "budget_seconds": 3.0, "outer_steps": None, "quick": True, "repeats": 1, "select": False,
        "malloc": "default", "interrupted": False}
    assert [(r["method"], r["error"], r["repeat"]) for r in data["records"]] == [("default", 1.0, 0),
                                                                                 ("fg2u", 1.089, 0)]
    out = capsys.readouterr().out
    assert "| default | **1.00e+00** |" in out and "| fg2u | 1.09e+00 |" in out, out
