"""README claims checked against the code (second audit of the README's behavioural statements).

Pins documented claims that no other test pinned: the README's own command lines and YAML
example validate as written, the required keys are exactly the ones the README names, the
CSV observation format, and the Python quickstart snippet's settings are the quickstart
config's. All config- or setup-level (no training but a 2-step run of the snippet at d = 4).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from pinnlab import config as C
from pinnlab.io.observations import load_observations
from pinnlab.studies.spec import study_runs, validate_runs
from pinnlab.tuning.run import check_method
from pinnlab.tuning.setup import build_tuning

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# the README's text with line continuations joined and whitespace collapsed
FLAT = re.sub(r"\s+", " ", README.replace("\\\n", " "))


def _readme_command(text: str) -> list[str]:
    """The overrides of a README command line (checked to appear in the README as written)."""
    assert text in FLAT, f"the README no longer has the command {text!r}"
    words = text.split()
    assert words[0] == "pinnlab" and words[1] in ("solve", "tune", "study")
    return words[2:]


def test_only_the_keys_the_readme_names_have_no_default():
    """README, "Configs": every key has a default except `equation.name`, `equation.dim`, and in
    the sections that need them `study.kind`, `tune.tunables` and `tune.then.method`/`after`."""
    required = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if field.is_required():
                required.add(prefix + name)
            annotation = field.annotation
            for part in (*getattr(annotation, "__args__", ()), annotation):
                if isinstance(part, type) and issubclass(part, BaseModel):
                    walk(part, f"{prefix}{name}.")

    for section, model in C.SECTIONS.items():
        walk(model, section + ".")
    assert required == {"equation.name", "equation.dim", "study.kind", "tune.tunables",
                        "tune.then.method", "tune.then.after"}


# README, "A tour", "Estimators and the noise trade-off", "Performance" and "Notes": the
# command lines it shows, as written (the overrides validate on the config they name)
SOLVE_COMMANDS = [
    "pinnlab solve configs/allen_cahn_two_body.yaml equation.dim=1000 estimator.samples=64 loss.kind=hybrid "
    "loss.switch_step=4000 -o ac1000.h5",
    "pinnlab solve configs/quickstart.yaml trainer.checkpoint_every=100 -o run.h5",
    "pinnlab solve configs/allen_cahn_two_body.yaml equation.dim=100 trainer.steps=1000 estimator.samples=128 "
    "estimator.sigma=0.01 loss.kind=biased -o ac.h5",
    "pinnlab solve configs/allen_cahn_two_body.yaml equation.dim=100000 estimator.noise=shared loss.kind=biased "
    "trainer.steps=5 trainer.test_points=20 trainer.eval_every=5 estimator.eval_samples=16 -o ac1e5.h5",
    "pinnlab solve configs/quickstart.yaml equation.dim=20 model.width=64 model.depth=3 trainer.steps=100 -o q.h5",
    "pinnlab solve configs/poisson_two_body.yaml trainer.backend=deepxde",
]


@pytest.mark.parametrize("command", SOLVE_COMMANDS, ids=lambda c: c.split()[2].split("/")[-1] + ":" + c.split()[3])
def test_the_readme_solve_command_lines_validate(command):
    words = _readme_command(command)
    path, overrides = words[0], [w for w in words[1:] if "=" in w]
    config = C.load(ROOT / path, overrides)
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        assert str(config.resolved()[section][name]) == value


def test_the_noise_comparison_switches_only_the_noise_mode():
    """README: the same command ends at 9.5e-3 with independent noise and 9.8e-3 with
    `estimator.noise=shared`: the config's own mode is independent (the [RS] protocol)."""
    words = _readme_command(SOLVE_COMMANDS[2].removesuffix(" -o ac.h5"))
    independent = C.load(ROOT / words[0], words[1:])
    shared = C.load(ROOT / words[0], [*words[1:], "estimator.noise=shared"])
    assert independent.estimator.noise == "independent" and shared.estimator.noise == "shared"
    rest = independent.resolved()
    rest["estimator"].pop("noise")
    other = shared.resolved()
    other["estimator"].pop("noise")
    assert rest == other


# README, "Bias–variance studies": the overrides of its reruns of the two estimator studies
STUDY_RUNS = [
    ("estimator_small.yaml", ["study.dims=[100]", "study.noise=[independent]", "study.samples=[8,16,32,64,128]"]),
    ("estimator_allen_cahn.yaml", ["study.dims=[100]"]),
    ("estimator_allen_cahn.yaml", ["study.dims=[1000]", "study.noise=[independent]"]),
    ("estimator_allen_cahn.yaml", ["loss.kind=unbiased"]),
    ("estimator_allen_cahn.yaml", ["loss.kind=unbiased", "study.dims=[1000]", "study.noise=[independent]",
                                   "study.samples=[8,16,32,64]"]),
    ("estimator_allen_cahn.yaml", ["equation.name=poisson_two_body", "study.noise=[independent]"]),
]


@pytest.mark.parametrize("name,overrides", STUDY_RUNS, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_the_readme_estimator_study_reruns_validate(name, overrides):
    for item in overrides:
        assert f"`{item}" in README or f" {item}" in FLAT, item
    path = ROOT / "configs" / "studies" / name
    config = C.load(path, overrides)
    runs = validate_runs(path, study_runs(config), overrides)  # what `pinnlab study` checks before any work
    assert runs
    if "study.dims=[1000]" in overrides:
        assert config.study.dims == [1000]


def _readme_tune_yaml() -> str:
    section = README.split("## Tuning PINNs automatically", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def test_the_readme_tune_example_validates_as_written(tmp_path):
    """README, "Tuning PINNs automatically": the annotated `tune:` example is a valid config
    (fg2u with one direction, then rgu from outer step 10 of 20, a data objective)."""
    path = tmp_path / "readme_tune.yaml"
    path.write_text(_readme_tune_yaml())
    config = C.load(path)
    check_method(build_tuning(config))  # what `pinnlab tune` refuses before any work
    tune = config.tune
    assert (tune.method, tune.options, tune.then.method, tune.then.after) == ("fg2u", {"num_directions": 1}, "rgu", 10)
    assert (tune.outer_steps, tune.horizon, tune.outer_lr, tune.outer_betas) == (20, 50, 1.0, (0.9, 0.999))
    assert tune.objective.kind == "data" and tune.budget_seconds == 600
    assert list(tune.tunables) == ["weights.boundary"] and config.equation.constraint == "soft"


def test_csv_observations_skip_a_header_without_numbers_and_comment_lines(tmp_path):
    """README, "Configs" (`data`): CSV is lines of D + 1 comma-separated numbers, inputs then u,
    an optional header line without numbers (column names such as x1 hold no number), `#`
    comments."""
    path = tmp_path / "obs.csv"
    path.write_text("# measured 2026\nx1,x2,u\n0.1,0.2,1.5\n# a comment between rows\n-0.3,0.4,2.5\n# end\n")
    x, u = load_observations(path, input_dim=2)
    assert x.tolist() == [[0.1, 0.2], [-0.3, 0.4]] and u.tolist() == [1.5, 2.5]
    assert x.dtype == u.dtype == torch.float64


def _readme_python(index: int) -> str:
    return re.findall(r"```python\n(.*?)```", README, re.S)[index]


def test_the_readme_python_snippet_runs_the_quickstart_configs_settings(capsys):
    """README: "From Python, the quickstart config's run is a few objects": the snippet's
    sizes, seeds and schedule are configs/quickstart.yaml's, and it runs (here at d = 4,
    2 steps)."""
    code = _readme_python(0)
    quick = C.load(ROOT / "configs" / "quickstart.yaml")
    number = r"([0-9.e+-]+)"

    def find(pattern):
        return re.search(pattern, code).group(1)

    assert int(find(r"AllenCahnTwoBody\((\d+),")) == quick.equation.dim
    assert int(find(r"AllenCahnTwoBody\(\d+, seed=(\d+)\)")) == quick.equation.seed
    assert quick.equation.name == "allen_cahn_two_body"
    assert int(find(r"width=(\d+)")) == quick.model.width and int(find(r"depth=(\d+)")) == quick.model.depth
    assert float(find(rf"sigma={number},")) == quick.estimator.sigma
    assert int(find(r"num_samples=(\d+)")) == quick.estimator.samples
    assert find(r'noise="(\w+)"') == quick.estimator.noise and quick.loss.kind == "biased" and "Biased()" in code
    assert int(find(r"batch_size=(\d+)")) == quick.trainer.batch_size
    assert int(find(r"steps=(\d+)")) == quick.trainer.steps and int(find(r"LinearDecay\((\d+)\)")) == quick.trainer.steps
    assert quick.trainer.schedule == "linear" and quick.trainer.optimizer == "adam"
    assert float(find(rf"Adam\({number}\)")) == quick.trainer.lr
    assert int(find(r"seed=(\d+), eval_every")) == quick.trainer.seed
    assert int(find(r"eval_every=(\d+)")) == quick.trainer.eval_every
    small = (code.replace("AllenCahnTwoBody(100,", "AllenCahnTwoBody(4,").replace("width=128", "width=8")
             .replace("batch_size=100", "batch_size=8").replace("num_samples=64", "num_samples=4")
             .replace("steps=600", "steps=2").replace("LinearDecay(600)", "LinearDecay(2)")
             .replace("eval_every=100", "eval_every=2"))
    exec(compile(small, "README.md", "exec"), {})
    rel_l2, steps_per_second = map(float, capsys.readouterr().out.split()[-2:])
    assert rel_l2 > 0 and steps_per_second > 0


def _table_row(section: str) -> list[str]:
    row = next(line for line in README.splitlines() if line.startswith(f"| `{section}` |"))
    cells = row.removeprefix(f"| `{section}` |").replace("\\|", "|")  # (`a\|b`: a | inside a table cell)
    return re.findall(r"`([^`]+)`", cells)


@pytest.mark.parametrize("section", ["equation", "model", "estimator", "loss", "trainer", "data"])
def test_the_readme_config_table_names_every_key_and_its_choices(section):
    """README, "Configs": the table row of each section names all of its keys, and where it
    lists a key's values (`kind: stein|autograd|hutchinson`) they are exactly the accepted ones."""
    from typing import get_args

    model = C.SECTIONS[section]
    tokens = _table_row(section)
    named = {token.split(":")[0].strip() for token in tokens}
    assert set(model.model_fields) <= named, set(model.model_fields) - named
    checked = 0
    for token in tokens:
        match = re.fullmatch(r"(\w+): ([\w|]+)", token)
        if match is None or "|" not in match.group(2) or match.group(1) not in model.model_fields:
            continue
        annotation = model.model_fields[match.group(1)].annotation
        choices = {arg for part in (annotation, *get_args(annotation)) for arg in get_args(part) if isinstance(arg, str)}
        assert set(match.group(2).split("|")) == choices, token
        checked += 1
    assert checked == {"equation": 1, "model": 1, "estimator": 3, "loss": 2, "trainer": 3, "data": 0}[section]


EQUATION_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.stem != "quickstart")


@pytest.mark.parametrize("path", EQUATION_CONFIGS, ids=lambda p: p.stem)
def test_each_equation_config_follows_the_published_protocol(path):
    """README, "Configs": `configs/` has one file per registered equation at the published
    problem size ([RS] protocol: 4×128 tanh MLP, Adam, 20K test points, independent noise;
    `burgers_affine` keeps the official code's 200 test points), each with the measured
    seconds per step in its header comment, and for the six that take hours a CPU-sized
    variant, whose command line validates."""
    config = C.load(path)
    assert config.equation.name == path.stem
    assert (config.model.width, config.model.depth, config.model.activation) == (128, 4, "tanh")
    assert (config.trainer.optimizer, config.estimator.kind, config.estimator.noise) == ("adam", "stein", "independent")
    assert config.trainer.test_points == (200 if path.stem == "burgers_affine" else 20000)
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    header = re.sub(r"\s*\n#\s*", " ", header)
    assert re.search(r"Measured here \(2-core CPU, torch 2\.13\): [0-9.]+ s per step", header), header
    variant = re.search(r"a CPU-sized variant: pinnlab solve (\S+) (.*?) -o \S+", header)
    hours = float(re.search(r"so about ([0-9.]+) h", header).group(1))
    assert (variant is not None) == (path.stem in {"burgers", "burgers_affine", "fokker_planck_iso",
                                                   "fokker_planck_aniso", "hjb_quadratic", "hjb_rosenbrock"})
    assert (variant is not None) == (hours > 5)
    if variant is not None:
        assert variant.group(1) == f"configs/{path.name}"
        C.load(ROOT / variant.group(1), variant.group(2).split())


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_each_study_and_tuning_config_validates_as_its_command_checks_it(path):
    """Every config under configs/studies and configs/tuning passes what `pinnlab study` and
    `pinnlab tune` check before any work (the README runs each of them)."""
    config = C.load(path)
    if path.parent.name == "studies":
        assert validate_runs(path, study_runs(config))
    else:
        assert path.parent.name == "tuning"
        check_method(build_tuning(config))


STEIN_OBJECTIVE_YAML = """\
equation: {name: fokker_planck_iso, dim: 4, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: KIND}
trainer: {steps: 5, schedule: constant, batch_size: 8, eval_every: 5, test_points: 20}
tune:
  method: rgu
  tunables: {lr: {}}
  objective: {kind: residual, estimator: stein, points: 8}
  outer_steps: 1
  horizon: 2
"""


@pytest.mark.parametrize("kind", ["autograd", "hutchinson"])
def test_a_stein_residual_objective_reads_the_smoothing_settings_but_not_k_or_eval_samples(tmp_path, kind):
    """README, "Configs": `samples`/`eval_samples` need `kind: stein` (the objective's K is
    `tune.objective.samples`), while σ, time_sigma, time_smoothing and noise act under
    autograd or Hutchinson training for a Stein residual objective. (The table row's
    "(σ, time_sigma, K, time_smoothing and eval_samples: Stein only, or a Stein residual
    tuning objective)" overstates it for K and eval_samples.)"""
    path = tmp_path / "objective.yaml"
    path.write_text(STEIN_OBJECTIVE_YAML.replace("KIND", kind))
    for item in ("estimator.sigma=0.05", "estimator.time_sigma=0.05", "estimator.time_smoothing=independent",
                 "estimator.noise=independent", "tune.objective.samples=8"):
        config = C.load(path, [item])
        check_method(build_tuning(config))
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        assert str(C._walk(config.resolved(), section)[name]) == value
    for item in ("estimator.samples=8", "estimator.eval_samples=8"):
        with pytest.raises(C.ConfigError, match=rf"{re.escape(item.partition('=')[0])}: has an effect only with "
                                                r"estimator.kind: stein \("):
            C.load(path, [item])
