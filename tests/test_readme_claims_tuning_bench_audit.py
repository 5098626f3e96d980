"""README claims checked against the code: "Set-up" and the tuning benchmark of "Tuning
PINNs automatically" (from `benchmarks/bench_tuning.py`'s paragraph to the section's end).

Pins documented claims that no other test pinned: the install and test commands (the
console script, the extras, the version floors, the pinned ruff, `.ci/run` running the
README's own test command, `slow` deselected by default, one torch thread per xdist
worker, nothing set globally at import, `auto` picking CUDA, the only skipped cases), the
three benchmark problems as the README describes them (equation, d, tuned values and
their starts, observations and noise, objective, outer optimiser, σ's noise norm), the
README's table as the script's own output with its n/a cells, what `--quick` alone and
the README's command run, fg2u's exactness with one tunable, and TUNING.md's commands.
Stand-in runs for the script's loop; the real work is setup-level or a 2-step unroll.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pinnlab import config as configuration
from tests.test_readme_claims_third_audit import FLAT, README, TUNE

ROOT = Path(__file__).resolve().parents[1]
SETUP = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
COMMANDS = re.search(r"```sh\n(.*?)```", SETUP, re.S).group(1).strip().splitlines()
BENCH = README.split("**Tuning benchmark**", 1)[1].split("\n## ", 1)[0]


# Set-up


@pytest.fixture(scope="module")
def pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_quickstart_command_is_the_console_script_on_a_valid_config(pyproject):
    """README: `pip install -e . && pinnlab solve configs/quickstart.yaml -o quickstart.h5`:
    the install gives a `pinnlab` command (the CLI's main) and the config validates."""
    assert COMMANDS[0] == "pip install -e . && pinnlab solve configs/quickstart.yaml -o quickstart.h5"
    assert pyproject["project"]["scripts"] == {"pinnlab": "pinnlab.cli:main"}
    config = configuration.load(ROOT / "configs" / "quickstart.yaml")
    assert config.equation.name == "allen_cahn_two_body"


def test_the_extras_are_the_three_the_readme_names_and_carry_what_it_says(pyproject):
    """README: `pip install -e ".[test,deepxde,optuna]" && python -m pytest -q -n 2`; "Extras:
    `deepxde` (the DeepXDE adapter), `optuna` (the TPE baseline of `pinnlab tune`), `test`":
    exactly those three, the test extra with pytest-xdist for `-n 2`."""
    assert COMMANDS[1] == 'pip install -e ".[test,deepxde,optuna]" && python -m pytest -q -n 2'
    extras = pyproject["project"]["optional-dependencies"]
    assert set(extras) == {"test", "deepxde", "optuna"}
    names = {k: [re.split(r"[<>=!~ \[]", req, maxsplit=1)[0] for req in v] for k, v in extras.items()}
    assert names["deepxde"] == ["deepxde"] and names["optuna"] == ["optuna"]
    assert {"pytest", "pytest-xdist"} <= set(names["test"])


def test_optuna_is_the_tpe_sampler_of_the_optuna_baseline(tmp_path, monkeypatch):
    """README: "`optuna` (the TPE baseline of `pinnlab tune`)": method optuna asks optuna for
    a study whose sampler is TPE (one trial, scored by a stand-in)."""
    optuna = pytest.importorskip("optuna")
    from pinnlab.tuning.search import search
    from tests.tuning.test_search_and_budget_exact import _scores, _setup

    samplers = []
    create = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda **kwargs: samplers.append(kwargs["sampler"]) or create(**kwargs))
    search(_setup(tmp_path, "tune.method=optuna", "tune.outer_steps=1"), sampler="optuna", score=_scores([1.0]))
    assert samplers and all(isinstance(s, optuna.samplers.TPESampler) for s in samplers)


def test_the_version_floors_are_python_3_10_and_torch_2_3(pyproject):
    """README: "Python ≥ 3.10, torch ≥ 2.3": the package's own requirements (and the ruff
    target matches the Python floor)."""
    assert "Python ≥ 3.10, torch ≥ 2.3" in FLAT
    assert pyproject["project"]["requires-python"] == ">=3.10"
    assert "torch>=2.3" in pyproject["project"]["dependencies"]
    assert pyproject["tool"]["ruff"]["target-version"] == "py310"


def test_ruff_is_pinned_in_the_test_extra_and_is_the_one_installed(pyproject):
    """README: "One test runs `ruff check` (pinned in the `test` extra) with the
    configuration in `pyproject.toml` over the package, benchmarks and tests"."""
    from importlib.metadata import version

    pinned = [req for req in pyproject["project"]["optional-dependencies"]["test"] if req.startswith("ruff")]
    assert len(pinned) == 1 and re.fullmatch(r"ruff==[0-9.]+", pinned[0]), pinned
    pytest.importorskip("ruff")
    assert version("ruff") == pinned[0].removeprefix("ruff==")
    lint = (ROOT / "tests" / "test_lint.py").read_text(encoding="utf-8")
    assert '"ruff", "check", "--no-cache", "pinnlab", "benchmarks", "tests"]' in lint and "cwd=ROOT" in lint


def test_ci_runs_the_readmes_test_command_in_a_fresh_venv_with_the_pinned_torch():
    """README: "`.ci/run` on a clean clone, with its fresh install, ran its ... tests" and
    "install `torch==2.13.0` first": .ci/run makes a venv, installs that torch, and its own
    extraction of the Set-up block's second command is the README's test command."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv" in script and "pip install --quiet torch==2.13.0" in script
    assert "install `torch==2.13.0` first" in SETUP
    extract = re.search(r'^test_command=\$\((.*)\)$', script, re.M).group(1)
    out = subprocess.run(["bash", "-c", extract], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == COMMANDS[1]
    assert 'eval "$test_command"' in script


def test_slow_tests_are_deselected_by_default_and_marked_slow(pyproject):
    """README: "tests that take longer are marked `slow` and run with `python -m pytest -m
    slow`": the marker is registered and the default options deselect it (a later `-m`
    on the command line replaces the default one)."""
    options = pyproject["tool"]["pytest"]["ini_options"]
    assert shlex.split(options["addopts"]) == ["-m", "not slow"]
    assert any(m.startswith("slow:") for m in options["markers"])
    assert "marked `slow` and run with `python -m pytest -m slow`" in FLAT


FRESH = """
import json, os, sys, torch
def state():
    return {"dtype": str(torch.get_default_dtype()), "device": str(torch.get_default_device()),
            "threads": torch.get_num_threads(), "grad": torch.is_grad_enabled(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "anomaly": torch.is_anomaly_enabled(), "matmul": torch.get_float32_matmul_precision(),
            "env": sorted(k for k in os.environ if k.startswith(("OMP_", "MKL_", "MALLOC_", "PINNLAB_")))}
before = state()
import pinnlab, pinnlab.cli
for name in ("bilevel", "tuning", "studies", "io", "plots"):
    getattr(pinnlab, name)
after = state()
sys.path.insert(0, os.getcwd())
import importlib, tests.conftest
single = [torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")]
os.environ["PYTEST_XDIST_WORKER"] = "gw0"
importlib.reload(tests.conftest)
worker = [torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]]
print(json.dumps({"before": before, "after": after, "single": single, "worker": worker}))
"""


@pytest.fixture(scope="module")
def fresh_process():
    """A fresh interpreter's torch settings before and after importing pinnlab with all its
    sub-packages, then the thread setting of tests/conftest.py in one process and in an
    xdist worker."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTEST_XDIST_WORKER")}
    out = subprocess.run([sys.executable, "-c", FRESH], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_nothing_is_set_globally_at_import(fresh_process):
    """README: "The device is chosen per run ...; nothing is set globally at import": the
    default dtype and device, threads, grad mode, determinism, anomaly mode, matmul
    precision and the thread/malloc variables are the same after `import pinnlab` (and
    every lazy sub-package) as before."""
    assert fresh_process["after"] == fresh_process["before"]


def test_each_xdist_worker_runs_with_one_torch_thread_and_one_process_with_two(fresh_process):
    """README: "The test suite runs in two pytest-xdist workers ..., each with one torch
    thread", against "one process with two threads (`python -m pytest -q`, which also
    works)": tests/conftest.py in a worker sets torch's threads and OMP_NUM_THREADS to 1;
    in one process it keeps torch's own count, at most 2, and leaves OMP_NUM_THREADS."""
    assert fresh_process["worker"] == [1, "1"]
    assert fresh_process["single"] == [max(1, min(2, fresh_process["before"]["threads"])), None]


def test_auto_picks_cuda_when_present_and_is_the_default(monkeypatch):
    """README: "The device is chosen per run (`trainer.device: auto` picks CUDA when
    present)": the trainer's default, resolved per call from torch.cuda.is_available."""
    from pinnlab.solvers.loop import resolve_device

    assert configuration.load(ROOT / "configs" / "quickstart.yaml").trainer.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_the_quickstart_is_allen_cahn_on_the_100_dimensional_unit_ball():
    """README: "The quickstart solves Allen–Cahn on the 100-dimensional unit ball"."""
    from pinnlab.equations import make_equation

    config = configuration.load(ROOT / "configs" / "quickstart.yaml")
    assert (config.equation.name, config.equation.dim) == ("allen_cahn_two_body", 100)
    assert make_equation(config.equation.name, 3, seed=config.equation.seed).domain == "unit_ball"


def test_the_only_unconditional_skips_are_four_hjb_rosenbrock_cases():
    """README: "The suite skips only four `hjb_rosenbrock` cases that need a closed-form
    solution (its reference is Monte Carlo ...)": the two tests of tests/equations/
    test_contract.py that skip a Monte Carlo reference run hjb_rosenbrock at two
    dimensions, no other equation has such a reference, and every equation has the
    boundary sampler tests/equations/test_boundary_value.py would otherwise skip."""
    from pinnlab.equations import EQUATIONS
    from tests.equations import test_boundary_value, test_contract

    assert set(test_contract.MONTE_CARLO_REFERENCE) == {"hjb_rosenbrock"}
    skipped = [case for case in test_contract._cases() if case[0] in test_contract.MONTE_CARLO_REFERENCE]
    source = Path(test_contract.__file__).read_text(encoding="utf-8")
    assert len(skipped) * source.count("if name in MONTE_CARLO_REFERENCE:\n        pytest.skip(") == 4
    assert all(test_boundary_value._with_boundary(name) is not None for name in sorted(EQUATIONS))


# Tuning benchmark


@pytest.fixture
def bench(benchmarks):
    return benchmarks("bench_tuning")


def _setups(bench):
    from pinnlab.tuning.setup import build_tuning

    specs = bench.problems(True)
    return {name: build_tuning(bench.tuner_config(name, specs[name], "rgu", 15.0)) for name in "abc"}


def _observed_noise(setup):
    x, u = setup.observations
    exact = setup.problem.equation.exact(x.to(torch.float64))
    return float((u - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())


def test_problem_a_tunes_the_soft_poisson_boundary_weight_from_1e_3(bench):
    """README: "(a) `poisson_boundary_weight.yaml`, soft `poisson_two_body`, d = 10,
    boundary weight starting at 1e-3, φ = that weight"."""
    assert "(a) `poisson_boundary_weight.yaml`, soft `poisson_two_body`, d = 10" in " ".join(BENCH.split())
    setup = _setups(bench)["a"]
    equation = setup.problem.equation
    assert (equation.name, equation.dim, equation.constraint) == ("poisson_two_body", 10, "soft")
    assert list(setup.phi0) == ["weights.boundary"] and float(setup.phi0["weights.boundary"]) == pytest.approx(1e-3)


def test_problem_b_recovers_mu_in_r20_from_500_noisy_observations_starting_at_0(bench):
    """README: "(b) `fokker_planck_inverse.yaml`, `fokker_planck_aniso`, d = 20, recover
    μ ∈ ℝ²⁰ from 500 observations (1 % noise) starting at μ = 0"."""
    setup = _setups(bench)["b"]
    equation = setup.problem.equation
    assert (equation.name, equation.dim) == ("fokker_planck_aniso", 20)
    assert list(setup.phi0) == ["coefficients.mu"] and torch.equal(setup.phi0["coefficients.mu"], torch.zeros(20))
    assert setup.observations[0].shape[0] == 500
    assert _observed_noise(setup) == pytest.approx(0.01, rel=0.1)


def test_problem_c_tunes_sigma_and_mix_from_a_badly_scaled_sigma_of_noise_norm_5(bench):
    """README: "(c) `allen_cahn_sigma_mix.yaml`, `allen_cahn_two_body`, d = 100, φ = (σ,
    mix) starting at a badly scaled σ = 0.5 (noise vectors of norm σ√d ≈ 5 on the unit
    ball) and mix = 0.5": the RMS norm of the estimator's offsets is σ√d = 5."""
    from pinnlab.estimators.base import Value
    from pinnlab.nets import Pointwise

    setup = _setups(bench)["c"]
    equation = setup.problem.equation
    assert (equation.name, equation.dim, equation.domain) == ("allen_cahn_two_body", 100, "unit_ball")
    assert {k: float(v) for k, v in setup.phi0.items()} == {"sigma": 0.5, "mix": 0.5}
    estimator = dataclasses.replace(setup.problem.estimator, num_samples=4096)
    assert estimator.sigma == 0.5
    x = torch.zeros(1, 100, dtype=torch.float64)
    (mean_square,) = estimator.estimate(Pointwise(lambda y: y.pow(2).sum(-1)), x, [Value()],
                                        generator=torch.Generator().manual_seed(0))
    assert math.sqrt(float(mean_square)) == pytest.approx(0.5 * math.sqrt(100), rel=0.01)


def test_every_problem_is_tuned_on_the_data_misfit_under_the_shipped_adam(bench):
    """README: "Outer objective: data misfit at the observations" (1 % noise on (a) and (c)
    too, as the script's docstring says) and "under the shipped Adam" ((b), (c))."""
    for name, setup in _setups(bench).items():
        assert setup.config.tune.objective.kind == "data", name
        assert setup.config.tune.outer_optimizer == "adam", name
        assert _observed_noise(setup) == pytest.approx(0.01, rel=0.1), name


def _readme_table():
    lines = [line for line in BENCH.splitlines() if line.startswith("|")]
    return lines[:lines.index("|---|---|---|---|") + 1 + 11]


def _records_behind(table):
    """Records whose three repeats give each README cell's mean and sample std exactly:
    m − s, m, m + s."""
    records = []
    for line in table[2:]:
        method, *cells = [c.strip().strip("*").strip() for c in line.strip("|").split("|")]
        for problem, cell in zip("abc", cells):
            if cell != "n/a":
                mean, std = (float(v) for v in cell.split(" ± "))
                records += [{"problem": problem, "method": method, "error": mean + k * std} for k in (-1, 0, 1)]
            else:
                records.append({"problem": problem, "method": method, "error": None})
    return records


def test_the_readme_table_is_the_scripts_table_of_every_method(bench):
    """README's table (methods as rows in the script's order, (a) (b) (c), mean ± std, the
    best mean per column bold, n/a): the script's markdown of records with those means
    and standard deviations gives it line for line."""
    table = _readme_table()
    assert [line.split("|")[1].strip() for line in table[2:]] == list(bench.METHODS)
    assert bench.markdown(_records_behind(table)).splitlines() == table


def test_the_readme_na_cells_are_the_rows_the_script_does_not_run(bench, monkeypatch):
    """README: "(n/a: LRA and ReLoBRaLo need several loss terms; joint fitting needs PDE
    coefficients.)": a cell is n/a exactly where the script records no error without
    running anything, with a note saying why; every other cell runs."""
    specs = bench.problems(True)
    ran = []
    monkeypatch.setattr(bench, "run_untuned", lambda name, data, method, steps: ran.append(method) or {
        "error": 0.5, "seconds": 1.0, "steps": steps, "wall": {20: 0.0, 200: 1.8}})
    monkeypatch.setattr(bench, "run_tuner", lambda name, data, method, budget: ran.append(method) or {
        "error": 0.5, "seconds": 1.0, "tune_seconds": 1.0})
    assert "(n/a: LRA and ReLoBRaLo need several loss terms; joint fitting needs PDE coefficients.)" in BENCH
    for line in _readme_table()[2:]:
        method, *cells = [c.strip() for c in line.strip("|").split("|")]
        for name, cell in zip("abc", cells):
            ran.clear()
            record = bench.run_method(name, specs[name], method, 15.0)
            if cell == "n/a":
                assert record["error"] is None and not ran, (name, method)
                why = "several loss terms" if method in ("lra", "relobralo") else "PDE coefficients"
                assert why in record["note"], (name, method, record["note"])
            else:
                assert record["error"] is not None, (name, method)
                assert ran or (name, method) == ("b", "default"), (name, method)  # (b)'s default: μ = 0


def _main(bench, monkeypatch, argv):
    """bench_tuning.main with stand-in runs: the (problem, method, seeds, budget) of each."""
    calls = []

    def run_method(name, data, method, budget):
        seeds = (data["trainer"]["seed"], data.get("data", {}).get("seed"), data["tune"].get("seed"))
        calls.append((name, method, seeds, budget))
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "note": ""}

    monkeypatch.setattr(bench, "run_untuned", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench, "run_method", run_method)
    monkeypatch.setattr(bench, "estimate_costs", lambda name, data, methods, repeats=3: [])
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--malloc", "default", *argv])
    assert bench.main() == 0
    return calls


def test_quick_alone_runs_one_repeat_of_every_method_on_every_problem(bench, monkeypatch):
    """README: "`--quick` alone runs one repeat" (of the table: every method, every
    problem, seed 0, the 15 s budget); "the protocol is in the script's docstring"."""
    calls = _main(bench, monkeypatch, ["--quick"])
    assert calls == [(name, method, (0, 0, None), 15.0) for name in "abc" for method in bench.METHODS]
    assert "\nProtocol: every tuner" in bench.__doc__


def test_the_readme_command_runs_three_repeats_at_seeds_0_1_2_into_its_json(bench, monkeypatch, tmp_path):
    """README: `python benchmarks/bench_tuning.py --quick --repeats 3 --json tuning.json`:
    every method on every problem at seeds 0, 1, 2 (training, observations, directions),
    all recorded in tuning.json."""
    command = re.search(r"`python benchmarks/bench_tuning\.py ([^`]+)`", BENCH).group(1).split()
    assert command == ["--quick", "--repeats", "3", "--json", "tuning.json"]
    monkeypatch.chdir(tmp_path)
    calls = _main(bench, monkeypatch, command)
    assert calls == [(name, method, (r, r, r) if r else (0, 0, None), 15.0)
                     for r in range(3) for name in "abc" for method in bench.METHODS]
    payload = json.loads((tmp_path / "tuning.json").read_text())
    assert payload["repeats"] == 3 and payload["quick"] is True
    assert [r["repeat"] for r in payload["records"]] == [r for r in range(3) for _ in range(3 * len(bench.METHODS))]


def test_tuning_md_has_the_commands_of_the_readmes_variants_and_each_runs(bench, monkeypatch, tmp_path):
    """README: "[benchmarks/TUNING.md] has every table and the commands": it gives the
    commands of the variants the README cites (equal inner steps, 30 outer steps each;
    T = 100 on (a); --select), and every bench_tuning command there passes the script's
    checks (stand-in runs; its placeholders LR, B1,B2 and P given values)."""
    text = " ".join((ROOT / "benchmarks" / "TUNING.md").read_text(encoding="utf-8").split())
    placeholders = {"LR": "0.1", "B1,B2": "0.9,0.9", "P": "a"}
    commands = [[placeholders.get(a, a) for a in c.split()]
                for c in re.findall(r"`python benchmarks/bench_tuning\.py([^`]*)`", text)]
    assert next(c for c in commands if "--outer-steps" in c)[:3] == ["--quick", "--outer-steps", "30"]
    assert any(c[:4] == ["--quick", "--problems", "a", "--methods"] and c[-2:] == ["--horizon", "100"]
               for c in commands)
    assert any("--select" in c for c in commands) and len(commands) >= 10
    monkeypatch.chdir(tmp_path)
    for command in commands:
        _main(bench, monkeypatch, command)


def test_fg2u_with_one_direction_is_the_exact_hypergradient_of_one_tunable(tmp_path):
    """README: "With N = 1, fg2u's direction is exact: it computes the exact hypergradient
    of the ... unrolled objective (it matches rgu to four digits)": one Rademacher
    direction on a lone boundary weight gives rgu's estimate, whatever the direction seed."""
    from pinnlab.bilevel import make_method
    from pinnlab.tuning.setup import build_tuning

    path = tmp_path / "tune.yaml"
    path.write_text(TUNE)
    setup = build_tuning(configuration.load(path, ["tune.options={}"]))
    exact = make_method("rgu").estimate(setup.bilevel, setup.phi0, seed=0).grad["weights.boundary"]
    assert float(exact.abs()) > 0
    for seed in (0, 1, 2):
        forward = make_method("fg2u", num_directions=1).estimate(setup.bilevel, setup.phi0, seed=seed)
        torch.testing.assert_close(forward.grad["weights.boundary"], exact, rtol=1e-4, atol=0)


ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def _fg2u_rank(problem):
    """fg2u's place by mean error in the README table's column of ``problem``."""
    means = {}
    for record in _records_behind(_readme_table()):
        if record["problem"] == problem and record["error"] is not None:
            means.setdefault(record["method"], []).append(record["error"])
    order = sorted(means, key=lambda m: sum(means[m]) / len(means[m]))
    return order.index("fg2u") + 1


@pytest.mark.parametrize("problem", ["c", "b", "a"])
def test_fg2u_stands_where_the_readme_says_in_its_own_table(problem):
    """README: "fg2u is best on none. It is second on (c), ..., sixth on (b) ... and
    sixth on (a)": the places of fg2u's mean in the table above that sentence."""
    stated = re.search(r"fg2u is best on none\. It is (\w+) on \(c\).*?, (\w+) on \(b\).*?\) and (\w+) on \(a\)",
                       " ".join(BENCH.split())).groups()
    place = dict(zip("cba", stated))[problem]
    assert _fg2u_rank(problem) != 1
    assert ORDINALS[_fg2u_rank(problem) - 1] == place, (problem, place, _fg2u_rank(problem))
