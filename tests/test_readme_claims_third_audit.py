"""README claims checked against the code (third audit: "Configs" with its subsections,
and "Notes and known limitations").

Pins documented claims that no other test pinned: the layout of a solve and a tune result
file as "Result files" lists it (attribute and dataset names, nothing more, nothing
missing), the custom-equation snippet as the example's own code, the equation list, the
reference cache's default directory, and the numbers of the Notes (Allen–Cahn seed 0,
hjb_quadratic's sizes). One 4-step solve and one 2-outer-step tune, the rest setup-level.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import h5py
import pytest
import torch
import yaml

from pinnlab import config as C
from pinnlab.cli import main
from pinnlab.equations import EQUATIONS, make_equation

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAT = re.sub(r"\s+", " ", README)

SOLVE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, noise: independent}
loss: {kind: hybrid, switch: auto, window: 1, tolerance: 0.99}
trainer: {steps: 4, eval_every: 2, test_points: 40, batch_size: 8, seed: 7}
"""

TUNE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
loss: {kind: biased}
trainer: {steps: 3, eval_every: 3, test_points: 20, batch_size: 8, schedule: constant}
tune:
  method: rgu
  tunables: {weights.boundary: {}}
  objective: {kind: reference, points: 16}
  outer_steps: 2
  horizon: 2
"""

# README, "Result files": the root attributes of a run's file (input_files only "when the
# run read one": none here)
ROOT_ATTRS = {"kind", "config", "pinnlab_version", "torch_version", "numpy_version", "h5py_version",
              "python_version", "git_hash", "problem_seed", "train_seed", "device", "dtype", "torch_threads", "equation", "dim",
              "loss", "status", "message"}


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """A 4-step solve on the unit ball with a soft constraint (two loss terms) and a
    plateau switch that happens; the thread settings before and after it."""
    root = tmp_path_factory.mktemp("solve")
    config, out = root / "solve.yaml", root / "run.h5"
    config.write_text(SOLVE)
    before = (torch.get_num_threads(), {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))})
    assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 0
    after = (torch.get_num_threads(), {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))})
    return out, before, after


def test_a_solve_file_has_exactly_the_root_attributes_the_readme_lists(solved):
    """README, "Result files": "attrs: kind ("solve" | "tune"), config, input_files (... when
    the run read one), pinnlab_version, torch_version, numpy_version, h5py_version,
    python_version, git_hash, problem_seed, train_seed, device, dtype, equation, dim, loss,
    status, message"."""
    with h5py.File(solved[0]) as fh:
        assert set(fh.attrs) == ROOT_ATTRS
        assert (fh.attrs["kind"], fh.attrs["status"], fh.attrs["message"]) == ("solve", "ok", "")
        assert fh.attrs["torch_version"] == torch.__version__ and fh.attrs["numpy_version"] == __import__("numpy").__version__
        assert fh.attrs["h5py_version"] == h5py.__version__
        assert re.fullmatch(r"3\.\d+\.\d+\S*", fh.attrs["python_version"])
        assert (fh.attrs["equation"], fh.attrs["loss"], fh.attrs["device"]) == ("poisson_two_body", "hybrid", "cpu")


def test_a_solve_file_has_the_readme_groups_and_datasets(solved):
    """README, "Result files": /history/step, loss, rel_l2, rel_l1, max_err, lr, mix, wall_s
    one row per evaluation; /history/terms/loss_<term>, weight_<term> with several loss
    terms; /eval/u_pred, u_true, abs_err (+ x, radius on the unit ball); /radial/r,
    abs_err, rel_err, count; /params/<name>; nothing else for a solve."""
    with h5py.File(solved[0]) as fh:
        assert set(fh) == {"history", "trace", "final", "eval", "slices", "radial", "params"}
        assert set(fh["history"]) == {"step", "loss", "rel_l2", "rel_l1", "max_err", "lr", "mix", "wall_s", "terms"}
        assert set(fh["history/terms"]) == {"loss_residual", "loss_boundary", "weight_residual", "weight_boundary"}
        rows = {fh["history"][name].shape for name in fh["history"] if name != "terms"}
        rows |= {fh["history/terms"][name].shape for name in fh["history/terms"]}
        assert rows == {(2,)}  # steps 2 and 4
        assert set(fh["trace"]) == {"loss", "mix"}
        assert set(fh["eval"]) == {"u_pred", "u_true", "abs_err", "x", "radius"}
        assert set(fh["radial"]) == {"r", "abs_err", "rel_err", "count"}
        assert set(fh["params"]) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}


def test_final_has_the_readme_attributes_and_the_auto_switch_step(solved):
    """README: "/final attrs: rel_l2, rel_l1, max_err, best_rel_l2, steps_per_second, wall_s,
    peak_mem_mb, steps_done[, switch_step: the step a loss.switch: auto run switched at,
    when it did]"."""
    with h5py.File(solved[0]) as fh:
        final = fh["final"].attrs
        assert set(final) == {"rel_l2", "rel_l1", "max_err", "best_rel_l2", "steps_per_second", "wall_s",
                              "peak_mem_mb", "steps_done", "switch_step"}
        assert final["steps_done"] == 4
        switched = int(final["switch_step"])
        assert 2 <= switched < 4  # the earliest plateau switch is at step window + 1
        mix = fh["trace/mix"][...].tolist()
        assert mix == [0.0] * switched + [1.0] * (4 - switched)


def test_the_slice_has_the_readme_attributes(solved):
    """README: /slices/main/grid_a, grid_b, u_pred, u_true, abs_err with attrs dims, labels,
    others ("zero" on the unit ball), noise ("shared" for a Stein run, whatever
    estimator.noise) and samples (K)."""
    with h5py.File(solved[0]) as fh:
        main_slice = fh["slices/main"]
        assert set(main_slice) == {"grid_a", "grid_b", "u_pred", "u_true", "abs_err", "point"}
        assert set(main_slice.attrs) == {"dims", "labels", "others", "noise", "samples"}
        assert (main_slice.attrs["others"], main_slice.attrs["noise"]) == ("zero", "shared")
        assert main_slice.attrs["dims"].tolist() == [0, 1] and main_slice.attrs["samples"] == 4  # K (no eval_samples)


def test_a_solve_leaves_the_thread_settings_as_they_were(solved):
    """README, Notes, Threads: "pinnlab leaves these settings to you": a solve changes
    neither torch's thread count nor the OMP_/GOMP_ environment."""
    _, before, after = solved
    assert before == after


def test_a_tune_file_adds_the_readme_tune_group(tmp_path):
    """README, "Result files": a tune file is a solve file (kind "tune") plus /tune with
    outer_step, value, grad_norm, seconds, method, phi/<name>, initial/<name> (not for the
    searches), tuned/<name> and attrs method, objective, horizon, inner, processes, seconds,
    steps_done, status, message, final/weights.<term> (trial_steps, then_method/then_after
    and coefficient_rel_err only where they apply: not for rgu tuning a weight)."""
    config, out = tmp_path / "tune.yaml", tmp_path / "tune.h5"
    config.write_text(TUNE)
    assert main(["tune", str(config), "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert set(fh.attrs) == ROOT_ATTRS and fh.attrs["kind"] == "tune"
        assert set(fh) == {"history", "trace", "final", "eval", "slices", "radial", "params", "tune"}
        tune = fh["tune"]
        assert set(tune) == {"outer_step", "value", "grad_norm", "seconds", "method", "phi", "initial", "tuned"}
        assert {tune[name].shape for name in ("outer_step", "value", "grad_norm", "seconds", "method")} == {(2,)}
        assert tune["phi/weights.boundary"].shape == (2,)  # [steps, *shape]
        assert tune["initial/weights.boundary"].shape == tune["tuned/weights.boundary"].shape == ()
        assert set(tune.attrs) == {"method", "objective", "horizon", "inner", "processes", "seconds", "steps_done",
                                   "status", "message", "final/weights.boundary", "final/weights.residual"}
        assert tune.attrs["processes"] == 1
        assert tune.attrs["final/weights.boundary"] == pytest.approx(float(tune["tuned/weights.boundary"][()]))


def _code_lines(source: str) -> list[str]:
    """The statements of a class body as ast dumps, docstrings left out."""
    tree = ast.parse(source)
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    body = [node for node in cls.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    imports = [ast.dump(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return imports + [ast.dump(cls.decorator_list[0]), cls.name] + [ast.dump(node) for node in body]


def test_the_readme_custom_equation_is_the_examples_code():
    """README, "Your own equation": "About 30 lines (condensed from
    `examples/custom_equation.py` ...)": the class and its imports are the example's
    statement for statement (only comments, the docstring and the __main__ block differ)."""
    snippet = re.findall(r"```python\n(.*?)```", README, re.S)[1]
    example = (ROOT / "examples" / "custom_equation.py").read_text(encoding="utf-8")
    readme_code = snippet.split('if __name__')[0]
    example_code = example.split('if __name__')[0]
    assert _code_lines(readme_code) == _code_lines(example_code)
    assert 25 <= len(snippet.strip().splitlines()) <= 40


def test_the_readme_names_every_built_in_equation():
    """README, "Configs": "Equations: `poisson_two_body`, `allen_cahn_two_body`,
    `sine_gordon_two_body`, their `three_body` versions, ...": exactly the built-ins."""
    sentence = FLAT.split("Equations: ", 1)[1].split(". ", 1)[0]
    names = set(re.findall(r"`(\w+)`", sentence))
    names -= {"PINNLAB_CACHE", "three_body"}
    names |= {name.replace("two_body", "three_body") for name in names if name.endswith("_two_body")}
    builtin = {name for name, cls in EQUATIONS.items() if cls.__module__.startswith("pinnlab.")}
    assert names == builtin


def test_the_reference_cache_defaults_to_the_home_cache_directory(tmp_path, monkeypatch):
    """README: hjb_rosenbrock's reference is "cached in `$PINNLAB_CACHE`, default
    `~/.cache/pinnlab`"."""
    monkeypatch.delenv("PINNLAB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    equation = make_equation("hjb_rosenbrock", 2, seed=0, reference_samples=64)
    x = torch.tensor([[0.1, -0.2, 0.1], [0.3, 0.0, 0.2]], dtype=torch.float64)
    first = equation.exact(x)
    files = [p for p in (tmp_path / ".cache" / "pinnlab").rglob("*") if p.is_file()]
    assert files, "no cache file under ~/.cache/pinnlab"
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("PINNLAB_CACHE", str(elsewhere))
    torch.testing.assert_close(make_equation("hjb_rosenbrock", 2, seed=0, reference_samples=64).exact(x), first)
    assert [p for p in elsewhere.rglob("*") if p.is_file()]


def _linear_ansatz_fit(seed: int, points: int = 4000) -> float:
    """Relative L2 of the best least-squares fit u ≈ (1 − ‖x‖²)·(a + b·x) (the hard-constraint
    ansatz of a linear-in-x network) to allen_cahn_two_body at d = 100."""
    equation = make_equation("allen_cahn_two_body", 100, seed=seed)
    x = equation.sample_collocation(points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = equation.exact(x)
    features = (1 - (x * x).sum(-1, keepdim=True)) * torch.cat([torch.ones(points, 1, dtype=x.dtype), x], 1)
    solution = torch.linalg.lstsq(features, u[:, None]).solution
    return float(((features @ solution)[:, 0] - u).norm() / u.norm())


def test_allen_cahn_seed_0_is_the_near_zero_mean_instance_the_notes_describe():
    """README, Notes: "`allen_cahn_two_body` with problem seed 0 draws a near-zero-mean
    instance (Σc_i ≈ −0.49) on which even the best least-squares fit of the hard-constraint
    form (1 − ‖x‖²)(a + b·x) has relative L2 about 5e-2 (below 1e-2 for seeds 1–7, on 4,000
    uniform points); the configs use seed 1" (the quickstart header says the same)."""
    assert float(make_equation("allen_cahn_two_body", 100, seed=0).coefficients["c"].sum()) == pytest.approx(
        -0.49, abs=5e-3)
    assert 4.5e-2 < _linear_ansatz_fit(0) < 6.5e-2
    assert max(_linear_ansatz_fit(seed) for seed in range(1, 8)) < 1e-2
    seeds = {path.relative_to(ROOT).as_posix(): equation.get("seed")
             for path in sorted((ROOT / "configs").rglob("*.yaml"))
             if (equation := yaml.safe_load(path.read_text())["equation"])["name"] == "allen_cahn_two_body"}
    assert len(seeds) >= 5 and set(seeds.values()) == {1}, seeds


def test_hjb_quadratic_config_and_its_cpu_variant_have_the_notes_sizes():
    """README, Notes: "`hjb_quadratic` at the published size (d = 10, K = 1024, independent
    noise, 1000 points per step) costs about a minute per step on this CPU (63 s in the
    unbiased phase); the config's header gives a CPU-sized variant (100 points, K = 128)"."""
    path = ROOT / "configs" / "hjb_quadratic.yaml"
    config = C.load(path)
    assert (config.equation.dim, config.estimator.samples, config.estimator.noise, config.trainer.batch_size) == (
        10, 1024, "independent", 1000)
    assert config.loss.kind in ("unbiased", "unbiased1", "unbiased2")
    header = re.sub(r"\s*\n#\s*", " ", "".join(line for line in path.read_text().splitlines(keepends=True)
                                                  if line.startswith("#")))
    assert "63 s per step in the unbiased phase" in header
    words = re.search(r"a CPU-sized variant: pinnlab solve \S+ (.*?) -o \S+", header).group(1).split()
    variant = C.load(path, words)
    assert (variant.trainer.batch_size, variant.estimator.samples) == (100, 128)


def test_loss_weights_take_only_the_readme_terms():
    """README, Configs (`loss`): "`weights: {residual, boundary, data}`": another key is refused
    naming the three, and each of them is taken where its term exists."""
    quick = ROOT / "configs" / "quickstart.yaml"
    with pytest.raises(C.ConfigError, match=r"^loss\.weights\.pde: unknown loss term \(allowed: boundary, data, "
                                            r"residual\)$"):
        C.load(quick, ["loss.weights.pde=2"])
    accepted = {"residual": [], "boundary": ["equation.constraint=soft"], "data": ["data.train=true"]}
    for term, needs in accepted.items():
        assert C.load(quick, [*needs, f"loss.weights.{term}=2"]).loss.weights == {term: 2.0}


DEEPXDE_SOFT = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
trainer: {steps: 4, eval_every: 2, test_points: 20, batch_size: 8, backend: deepxde}
"""


def test_a_deepxde_file_has_the_solve_layout_without_loss_terms(tmp_path):
    """README, DeepXDE: it "writes the same result file" ([Result files] layout, dtype
    float32), but "no `/history/terms` (its step reports only the weighted sum)", even with
    a soft constraint's two terms; its slice is the network's own (noise "none")."""
    pytest.importorskip("deepxde")
    config, out = tmp_path / "dde.yaml", tmp_path / "dde.h5"
    config.write_text(DEEPXDE_SOFT)
    assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert set(fh.attrs) == ROOT_ATTRS and fh.attrs["dtype"] == "float32"
        assert set(fh) == {"history", "trace", "final", "eval", "slices", "radial", "params"}
        assert set(fh["history"]) == {"step", "loss", "rel_l2", "rel_l1", "max_err", "lr", "mix", "wall_s"}
        assert set(fh["final"].attrs) == {"rel_l2", "rel_l1", "max_err", "best_rel_l2", "steps_per_second",
                                          "wall_s", "peak_mem_mb", "steps_done"}
        assert set(fh["slices/main"].attrs) == {"dims", "labels", "others", "noise"}
        assert fh["slices/main"].attrs["noise"] == "none"


def test_a_study_file_has_the_root_attributes_and_bytes_text_fields(tmp_path):
    """README, "Result files": study files "have the root attributes kind, config and the
    versions (git_hash included) and, in place of a run's groups" /records (estimator
    study, root attrs slopes, comparisons, pretrained_rel_l2); "text fields such as quantity
    ... are stored as bytes: read them with h5py's `.asstr()`"."""
    from tests.studies.test_studies import TINY_ESTIMATOR

    config, out = tmp_path / "study.yaml", tmp_path / "study.h5"
    config.write_text(TINY_ESTIMATOR.replace("samples: [4, 8]", "samples: [4]")
                      .replace("noise: [independent, shared]", "noise: [shared]").replace("replicates: 10", "replicates: 4"))
    assert main(["study", str(config), "-o", str(out)]) == 0
    with h5py.File(out) as fh:
        versions = {"pinnlab_version", "torch_version", "numpy_version", "h5py_version", "python_version", "git_hash"}
        assert set(fh.attrs) == {"kind", "config", *versions, "slopes", "comparisons", "pretrained_rel_l2"}
        assert set(fh) == {"records"}
        for field in ("quantity", "loss", "noise"):
            raw = fh["records"][field][...]
            assert all(isinstance(value, bytes) for value in raw), field
            assert list(fh["records"][field].asstr()[...]) == [value.decode() for value in raw]
        assert set(fh["records/noise"].asstr()[...]) == {"shared"}


def test_a_checkpoint_holds_the_readme_state_and_no_rng_state(tmp_path):
    """README, "Result files": "Checkpoints (`RUN.h5.ckpt`) hold parameters, optimizer
    state, step, weighting and plateau state and history (no RNG state: every random draw
    is keyed by seed and step), load with `torch.load(..., weights_only=True)`, carry a
    hash of the config"."""
    from pinnlab.io.checkpoint import save_checkpoint
    from pinnlab.solvers.optim import Adam
    from tests.test_checkpoint_contents import _state

    path = tmp_path / "run.h5.ckpt"
    save_checkpoint(path, _state(), Adam(), "config")
    data = torch.load(path, weights_only=True)
    assert {"params", "opt_state", "step", "weighting", "plateau", "history", "config_hash"} <= set(data)
    assert not [key for key in data if re.search(r"rng|random|generator|seed", key, re.I)], sorted(data)
    assert data["step"] == 3 and set(data["opt_state"]) >= {"count"}


def test_final_weights_of_a_tune_file_cover_every_loss_term(tmp_path):
    """README, "Result files" (/tune attrs): "final/weights.<term> (the norm of each
    loss-term weight the final solve used)": tuning the boundary weight, the final solve
    also used the residual term's default weight 1, recorded like the tuned one (it was left
    out unless loss.weights.residual was set in the config)."""
    config, out = tmp_path / "tune.yaml", tmp_path / "tune.h5"
    config.write_text(TUNE)
    assert main(["tune", str(config), "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        attrs = fh["tune"].attrs
        assert "final/weights.boundary" in attrs  # the tuned one
        assert attrs["final/weights.residual"] == 1.0


def test_an_equation_module_py_path_is_read_from_the_current_directory(tmp_path, monkeypatch):
    """README, Configs: "Relative paths (`data.source`, an `equation.module` given as a `.py`
    file) are read from the current directory, not from the config file's" (data.source's
    half is tests/test_config_boundaries.py's)."""
    saved = dict(EQUATIONS)
    (tmp_path / "configs").mkdir()
    source = "from pinnlab.equations import PoissonTwoBody, register\n\n@register\nclass Mine(PoissonTwoBody):\n" \
             "    name = 'NAME'\n"
    (tmp_path / "here_eq.py").write_text(source.replace("NAME", "user_here"))
    (tmp_path / "configs" / "beside_eq.py").write_text(source.replace("NAME", "user_beside"))
    text = "equation: {name: NAME, dim: 3, module: MODULE}\nmodel: {width: 8, depth: 2}\n"
    for name, module in (("user_here", "here_eq.py"), ("user_beside", "beside_eq.py")):
        (tmp_path / "configs" / f"{name}.yaml").write_text(text.replace("NAME", name).replace("MODULE", module))
    monkeypatch.chdir(tmp_path)
    try:
        assert C.load(Path("configs/user_here.yaml")).equation.name == "user_here"
        with pytest.raises(C.ConfigError, match=r"^equation\.module = 'beside_eq\.py': cannot import it: "
                                                r"FileNotFoundError: no file .*beside_eq\.py'"):
            C.load(Path("configs/user_beside.yaml"))
    finally:
        EQUATIONS.clear()
        EQUATIONS.update(saved)
