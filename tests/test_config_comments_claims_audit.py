"""Claims of the shipped configs' comments checked against the code.

Pins what the headers and inline comments of configs/*.yaml, configs/studies/*.yaml and
configs/tuning/*.yaml say that no other test pinned: the switch steps the equation
configs take from the official code ("code: 10D 2000, 100D 4000, ...") and the studies
that reproduce [RS] Tables 1, 2 and 5 (grid, variants, seeds, sizes, the override that
changes Table 5's switch), the protocol's 10,000 steps with fresh collocation points every
step, Burgers-B's affine solution and 200 test points, the Rosenbrock reference's size,
the quickstart's biased loss with shared noise, "unbiased1 = unbiased2" on a linear PDE,
the "Run:" command lines, and the inverse problem's search ranges and outer-optimiser
commands. Each comment that is read is paired with the behaviour it describes; configs
are loaded in-process and only tiny runs are made.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from pinnlab import config as C
from pinnlab.cli import parse_args
from pinnlab.losses import Biased, Hybrid, SwitchAt, Unbiased1, Unbiased2
from pinnlab.studies.spec import study_runs
from pinnlab.tuning.run import check_method
from pinnlab.tuning.setup import build_tuning
from tests.test_readme_claims_studies_audit import _header

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
STUDIES = CONFIGS / "studies"
TUNING = CONFIGS / "tuning"
EQUATION_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.stem != "quickstart")


def _inline_comment(path: Path, key: str) -> str:
    """The ``#`` comment at the end of the line of top-level ``key``."""
    (line,) = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(f"{key}:")]
    return line.partition("#")[2].strip()


def _loss(path: Path, overrides=()):
    config = C.load(path, list(overrides))
    return config, C.make_loss(config.loss, C.make_equation(config.equation))


# the equation configs' protocol


@pytest.mark.parametrize("path", EQUATION_CONFIGS, ids=lambda p: p.stem)
def test_each_equation_config_runs_the_published_10000_adam_steps(path):
    """Headers: "Adam, 10,000 steps" (the published protocol) at lr 1e-3."""
    assert "Adam, 10,000 steps" in _header(path)
    config = C.load(path)
    assert (config.trainer.optimizer, config.trainer.steps, config.trainer.lr) == ("adam", 10000, 1e-3)


def test_the_protocol_draws_fresh_collocation_points_every_step(monkeypatch):
    """Headers: "fresh collocation points every step, 20K fixed test points": a run of the
    Allen–Cahn config (shrunk) draws one new batch of batch_size points per step, no batch
    twice, and its test set once for all its evaluations."""
    from pinnlab.equations import AllenCahnTwoBody
    from pinnlab.solvers import train

    path = CONFIGS / "allen_cahn_two_body.yaml"
    assert "fresh collocation points every step, 20K fixed test points" in _header(path)
    config = C.load(path, ["equation.dim=3", "model.width=4", "model.depth=2", "trainer.steps=4",
                           "trainer.batch_size=5", "trainer.eval_every=2", "trainer.test_points=8",
                           "estimator.samples=2", "estimator.eval_samples=2", "loss.switch_step=2"])
    problem, kwargs = C.build(config)
    drawn = []
    original = AllenCahnTwoBody.sample_collocation

    def record(self, n, **kw):
        x = original(self, n, **kw)
        drawn.append(x.detach().clone())
        return x

    monkeypatch.setattr(AllenCahnTwoBody, "sample_collocation", record)
    result = train(problem, **kwargs, progress="off")
    assert result.status == "ok" and len(result.history.rows["step"]) == 2  # two evaluations
    test_sets = [x for x in drawn if x.shape[0] == 8]  # (the unit ball's test set uses the same sampler)
    batches = [x for x in drawn if x.shape[0] == 5]
    assert len(test_sets) == 1 and len(batches) == 4 and len(drawn) == 5
    assert all(not torch.equal(batches[i], batches[j]) for i in range(4) for j in range(i))


@pytest.mark.parametrize("name, then", [("allen_cahn_two_body", Unbiased2), ("fokker_planck_aniso", Unbiased2),
                                        ("fokker_planck_iso", Unbiased2)])
def test_the_hybrid_switch_is_the_codes_step_at_the_configs_dimension(name, then):
    """Inline comments "code: 10D 2000, 100D 4000, 1000D 8000" (Allen–Cahn), "10D 1000,
    100D 500, ..." (aniso), "10D 2500, 100D 1500, ..." (iso), and the headers' "100D row":
    the config is the 100-D one and its hybrid loss switches at the code's 100-D step."""
    path = CONFIGS / f"{name}.yaml"
    assert "100D row" in _header(path)
    step = int(re.search(r"\b100D (\d+)", _inline_comment(path, "loss")).group(1))
    config, loss = _loss(path)
    assert config.equation.dim == 100
    assert type(loss) is Hybrid and isinstance(loss.switch, SwitchAt) and type(loss.then) is then
    assert loss.switch.step == step


@pytest.mark.parametrize("name, then", [("allen_cahn_three_body", Unbiased2), ("sine_gordon_two_body", Unbiased1),
                                        ("sine_gordon_three_body", Unbiased1)])
def test_the_other_unit_ball_hybrids_switch_at_4000_at_100d(name, then):
    """The other hybrid unit-ball configs take Allen–Cahn's 100-D switch (4000); Sine–Gordon
    continues with unbiased1 ("sin u cannot be made unbiased": unbiased2 is refused)."""
    config, loss = _loss(CONFIGS / f"{name}.yaml")
    assert config.equation.dim == 100 and loss.switch.step == 4000 and type(loss.then) is then
    if then is Unbiased1:
        with pytest.raises(C.ConfigError, match=r"^loss.kind = 'hybrid': .*sin u"):
            _loss(CONFIGS / f"{name}.yaml", ["loss.then=unbiased2"])


def test_hjb_lin_takes_unbiased1_at_most():
    """hjb_lin.yaml: "|·|^c is not polynomial: unbiased1 at most" with power 1.75: its
    unbiased1 loss builds, unbiased2 (and "unbiased", which is unbiased2) are refused."""
    path = CONFIGS / "hjb_lin.yaml"
    assert "unbiased1 at most" in _header(path) and "|^1.75" in _header(path)
    config, loss = _loss(path)
    assert type(loss) is Unbiased1 and C.make_equation(config.equation).parameters()["power"] == 1.75
    for kind in ("unbiased2", "unbiased"):
        with pytest.raises(C.ConfigError, match=rf"^loss.kind = '{kind}': .*use 'unbiased1'"):
            _loss(path, [f"loss.kind={kind}"])


def test_unbiased1_and_unbiased2_are_the_same_loss_on_the_linear_poisson_config():
    """poisson_two_body.yaml: "linear PDE: unbiased1 = unbiased2 is exact": at the same
    parameters, step and seed the two losses (and their metrics) are equal bit for bit."""
    path = CONFIGS / "poisson_two_body.yaml"
    assert "unbiased1 = unbiased2" in _inline_comment(path, "loss")
    values = {}
    for kind in ("unbiased1", "unbiased2"):
        config = C.load(path, [f"loss.kind={kind}", "equation.dim=4", "model.width=8", "model.depth=2",
                               "trainer.batch_size=6", "estimator.samples=4", "trainer.dtype=float64"])
        problem, _ = C.build(config)
        loss, metrics = problem.objective(problem.init_params(), {}, 3, 0)
        values[kind] = (loss, metrics["loss_biased"])
    assert type(_loss(path, ["equation.dim=4"])[1]) is Unbiased2  # the config's "unbiased" is unbiased2
    assert torch.equal(values["unbiased1"][0], values["unbiased2"][0])
    assert torch.equal(values["unbiased1"][1], values["unbiased2"][1])


def test_black_scholes_config_is_the_headers_instance():
    """Header: "r = 0.05, σ_B = 0.4, T = 1": the equation built from the config."""
    path = CONFIGS / "black_scholes_barenblatt.yaml"
    assert "(r = 0.05, σ_B = 0.4, T = 1;" in _header(path)
    parameters = C.make_equation(C.load(path).equation).parameters()
    assert (parameters["rate"], parameters["volatility"], parameters["horizon"]) == (0.05, 0.4, 1.0)


def test_burgers_is_burgers_a_at_viscosity_one_half_in_10d_with_unbiased2():
    """burgers.yaml: "Viscous Burgers-A (preprint, logistic solution), ν = 0.5 ([RS] Table 4,
    10D, Unbiased2 row)": u* = 1/(1 + exp((Σx_i − d·t/2)/(2ν))) at ν = 0.5, d = 10."""
    config, loss = _loss(CONFIGS / "burgers.yaml")
    equation = C.make_equation(config.equation)
    assert (equation.name, equation.dim, equation.viscosity, type(loss)) == ("burgers", 10, 0.5, Unbiased2)
    x = equation.sample_test(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = x[:, :-1].sum(-1) - 10 * x[:, -1] / 2
    torch.testing.assert_close(equation.exact(x), 1 / (1 + torch.exp(s / (2 * 0.5))), rtol=1e-12, atol=0)


def test_burgers_affine_has_an_affine_solution_and_the_codes_200_test_points():
    """burgers_affine.yaml: "Burgers-B (the official code's affine-solution problem)" with
    "200 fixed test points ...; test_points=20000 for the papers' 20K": u* is affine in x
    at each t (u*(x + h) − u*(x) is linear in h), and the override validates."""
    path = CONFIGS / "burgers_affine.yaml"
    config = C.load(path)
    equation = C.make_equation(config.equation)
    x = equation.sample_test(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = torch.zeros_like(x)
    h[:, :-1] = torch.randn(8, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    one, two = equation.exact(x + h) - equation.exact(x), equation.exact(x + 2 * h) - equation.exact(x)
    assert float(one.abs().min()) > 1e-3
    torch.testing.assert_close(two, 2 * one, rtol=1e-12, atol=1e-12)
    assert config.trainer.test_points == 200
    assert C.load(path, ["trainer.test_points=20000"]).trainer.test_points == 20000


@pytest.mark.parametrize("name, row", [("hjb_quadratic", "([RS] Table 3, 10D, Unbiased2 row)"),
                                       ("hjb_rosenbrock", "([RS] Table 3, 10D)")])
def test_the_hjb_configs_are_table_3s_10d_unbiased2_rows(name, row):
    """hjb_quadratic.yaml: "([RS] Table 3, 10D, Unbiased2 row)"; hjb_rosenbrock.yaml:
    "([RS] Table 3, 10D)", trained with the same unbiased2 loss."""
    path = CONFIGS / f"{name}.yaml"
    assert row in _header(path)
    config, loss = _loss(path)
    assert config.equation.dim == 10 and type(loss) is Unbiased2


def test_the_rosenbrock_reference_has_the_headers_size():
    """hjb_rosenbrock.yaml: "The Cole–Hopf reference (20K points × 2·10⁵ samples)"."""
    path = CONFIGS / "hjb_rosenbrock.yaml"
    assert "(20K points × 2·10⁵ samples)" in _header(path)
    config = C.load(path)
    equation = C.make_equation(config.equation)
    assert config.trainer.test_points == 20000 and equation.parameters()["reference_samples"] == 200_000
    assert equation.parameters()["horizon"] == 0.3


def test_the_quickstart_is_a_biased_loss_with_shared_noise():
    """quickstart.yaml: "biased RS-PINN loss with shared noise" (the RS-PINN Stein estimator)."""
    from pinnlab.estimators import SteinAntithetic

    path = CONFIGS / "quickstart.yaml"
    assert "biased RS-PINN loss with shared noise" in _header(path)
    config, loss = _loss(path)
    estimator = C.make_estimator(config.estimator, C.make_equation(config.equation))
    assert type(loss) is Biased and isinstance(estimator, SteinAntithetic) and estimator.noise == "shared"


# the studies


def _variant_losses(path: Path, config) -> dict:
    """Each variant's loss at the config's first grid dimension."""
    dim = config.study.grid["equation.dim"][0]
    return {name: _loss(path, [*overrides, f"equation.dim={dim}"])[1] for name, overrides in config.study.variants.items()}


def test_the_table_1_study_is_the_headers_grid():
    """rs_table1: "d ∈ {10, 100, 1000, 10000}, biased / unbiased / hybrid, 5 seeds, 10,000
    steps, K = 1024, σ = 1e-2, exponential decay γ = 0.9995. Switch steps of the paper:
    1500 (10D, 100D)"; isotropic Fokker–Planck."""
    path = STUDIES / "rs_table1_fokker_planck_iso.yaml"
    config = C.load(path)
    assert config.equation.name == "fokker_planck_iso"
    assert config.study.grid == {"equation.dim": [10, 100, 1000, 10000], "trainer.seed": [0, 1, 2, 3, 4]}
    assert (config.trainer.steps, config.estimator.samples, config.estimator.sigma) == (10000, 1024, 1e-2)
    assert (config.trainer.schedule, config.trainer.gamma) == ("exponential", 0.9995)
    losses = _variant_losses(path, config)
    assert [type(loss) for loss in losses.values()] == [Biased, Unbiased2, Hybrid]
    assert losses["hybrid"].switch.step == 1500
    assert len(study_runs(config)) == 3 * 4 * 5


def test_the_table_2_study_is_the_headers_grid_with_the_codes_100d_switch():
    """rs_table2: "d ∈ {10, 100, 250, 500, 1000, 10000}, biased / unbiased / hybrid, 5 seeds,
    10,000 steps, K = 1024", switch "100D 500 ... (500 here)", the same list of the code's
    switch steps as fokker_planck_aniso.yaml's inline comment."""
    path = STUDIES / "rs_table2_fokker_planck_aniso.yaml"
    config = C.load(path)
    assert config.equation.name == "fokker_planck_aniso"
    assert config.study.grid == {"equation.dim": [10, 100, 250, 500, 1000, 10000], "trainer.seed": [0, 1, 2, 3, 4]}
    assert (config.trainer.steps, config.estimator.samples) == (10000, 1024)
    losses = _variant_losses(path, config)
    assert [type(loss) for loss in losses.values()] == [Biased, Unbiased2, Hybrid]
    assert losses["hybrid"].switch.step == 500
    steps = re.findall(r"(\d+)D (\d+)", _header(path).replace("10⁴D", "10000D"))
    inline = re.findall(r"(\d+)D (\d+)", _inline_comment(CONFIGS / "fokker_planck_aniso.yaml", "loss").replace(
        "10⁴D", "10000D").replace("10³D", "1000D"))
    assert steps[:6] == inline and ("100", "500") in inline


def test_the_table_5_study_is_the_headers_grid_and_its_switch_override_works():
    """rs_table5: "d ∈ {10, 100, 1000}, biased / unbiased1 / unbiased2 / hybrid (switch
    2000/4000/8000 in the code; 4000 here for all d; change it with
    study.variants.hybrid=[loss.kind=hybrid, loss.switch_step=N]), 5 seeds, 10,000 steps,
    K = 128, σ = 1e-2, independent noise, 20K test points", 4 × 3 × 5 runs."""
    path = STUDIES / "rs_table5_allen_cahn.yaml"
    header = _header(path)
    config = C.load(path)
    assert config.study.grid == {"equation.dim": [10, 100, 1000], "trainer.seed": [0, 1, 2, 3, 4]}
    assert (config.trainer.steps, config.estimator.samples, config.estimator.sigma) == (10000, 128, 1e-2)
    assert (config.estimator.noise, config.trainer.test_points) == ("independent", 20000)
    losses = _variant_losses(path, config)
    assert [type(loss) for loss in losses.values()] == [Biased, Unbiased1, Unbiased2, Hybrid]
    runs = study_runs(config)
    assert len(runs) == 4 * 3 * 5
    hybrid = [overrides for label, overrides in runs.items() if label.startswith("hybrid ")]
    assert len(hybrid) == 15 and all("loss.switch_step=4000" in overrides for overrides in hybrid)
    assert "2000/4000/8000 in the code" in header and "code: 10D 2000, 100D 4000, 1000D 8000" == _inline_comment(
        CONFIGS / "allen_cahn_two_body.yaml", "loss")
    override = re.search(r"change it with (study\.variants\.hybrid=\[.*?\])\)", header).group(1)
    changed = C.load(path, [override.replace("=N]", "=2000]")])
    for label, overrides in study_runs(changed).items():
        if label.startswith("hybrid "):
            assert _loss(path, overrides)[1].switch.step == 2000
    assert list(changed.study.variants) == list(config.study.variants)
    # "Published numbers are in README.md next to the small study": the training study's
    # table has the [RS] Table 5 columns at two of this grid's dimensions
    assert "Published numbers are in README.md next to the small study" in re.sub(r"\s+", " ", header)
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("**Training study**", 1)[1].split("\n\n", 2)
    assert "The published numbers ([RS] Table 5:" in readme[0]
    columns = [c.strip() for c in readme[1].splitlines()[0].strip("|").split("|")]
    assert {"d = 10 ([RS])", "d = 100 ([RS])"} <= set(columns) and {10, 100} <= set(config.study.grid["equation.dim"])


def test_the_training_studys_seed_note_points_to_a_config_that_explains_it():
    """training_small.yaml: "Problem seed 1 (seed 0 is a near-zero-mean instance; see
    configs/quickstart.yaml)". The study does use seed 1, seed 0 is the near-zero-mean
    instance (Σc_i ≈ −0.49 at d = 100), and the file it points to says so (it pointed to
    allen_cahn_two_body.yaml, whose comments say nothing of seed 0)."""
    from pinnlab.equations import make_equation

    header = _header(STUDIES / "training_small.yaml")
    target = re.search(r"seed 0 is a near-zero-mean instance; see (configs/\S+\.yaml)\)", header).group(1)
    assert C.load(STUDIES / "training_small.yaml").equation.seed == 1
    assert abs(float(make_equation("allen_cahn_two_body", 100, seed=0).coefficients["c"].sum()) + 0.49) < 5e-3
    assert "seed 0" in _header(ROOT / target) and "near-zero-mean" in _header(ROOT / target)


# command lines of the headers


def _run_lines():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# Run: "):
                yield path, line[len("# Run: "):].split("   (")[0]


@pytest.mark.parametrize("path, command", [pytest.param(*line, id=line[0].stem) for line in _run_lines()])
def test_each_run_line_is_the_command_for_its_own_config(path, command):
    """The headers' "Run: pinnlab study|tune <this config> -o ..." lines parse as the CLI
    parses them, name the file they are in, and use the command of its section (study
    configs: study, tuning configs: tune); the config validates as that command checks it."""
    words = shlex.split(command)
    assert words[0] == "pinnlab"
    args = parse_args(words[1:])
    assert ROOT / args.config == path and args.output.endswith(".h5") and not args.overrides
    config = C.load(path)
    expected = {"studies": "study", "tuning": "tune"}[path.parent.name]
    assert args.command == expected and expected in config.sections
    if expected == "tune":
        check_method(build_tuning(config))


def test_every_study_and_tuning_config_but_the_full_size_ones_has_a_run_line():
    """The small studies and every tuning config say how to run them."""
    named = {path.relative_to(CONFIGS).as_posix() for path, _ in _run_lines()}
    shipped = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.glob("*/*.yaml") if not p.stem.startswith("rs_")}
    assert named == shipped


# the inverse problem's commands


INVERSE = TUNING / "fokker_planck_inverse.yaml"


def _flat_header(path: Path) -> str:
    return re.sub(r"\s+", " ", _header(path))


def _mu_range(overrides):
    setup = build_tuning(C.load(INVERSE, overrides))
    check_method(setup)
    tunable = setup.tunables["coefficients.mu"]
    return tunable.low, tunable.high


def test_the_inverse_searches_draw_mu_from_init_plus_minus_2_by_default():
    """fokker_planck_inverse.yaml: "The searches draw μ from [low, high] (default init ± 2)":
    the config's μ init 0 gives [−2, 2] for its own method and for random search."""
    assert "The searches draw μ from [low, high] (default init ± 2)" in _flat_header(INVERSE)
    assert _mu_range([]) == (-2.0, 2.0)
    assert _mu_range(["tune.method=random", "tune.options={}"]) == (-2.0, 2.0)


@pytest.mark.parametrize("method", ["random", "optuna"])
def test_the_inverse_benchmark_range_command_validates_for_both_searches(method, benchmarks):
    """"the benchmark's range: tune.method=random 'tune.options={}' 'tune.tunables=
    {coefficients.mu: {low: -2.0, high: 4.0}}' (also with optuna)": the command validates
    for both searches, draws μ from [−2, 4], and is the range bench_tuning.py uses for (b)."""
    words = ["'tune.options={}'", "'tune.tunables={coefficients.mu: {low: -2.0, high: 4.0}}'"]
    assert f"tune.method=random {' '.join(words)} (also with optuna)" in _flat_header(INVERSE)
    overrides = [f"tune.method={method}", *shlex.split(" ".join(words))]
    assert _mu_range(overrides) == (-2.0, 4.0)
    assert benchmarks("bench_tuning").SEARCH_RANGES["b"] == {"coefficients.mu": {"low": -2.0, "high": 4.0}}


def test_the_inverse_single_level_and_plain_sgd_commands_validate_and_cite_tuning_md():
    """"Single-level baseline: tune.method=joint"; "tune.method=rgu 'tune.options={}'
    tune.outer_optimizer=sgd tune.outer_lr=0.01: rel. error 0.17 against 0.48 with Adam at
    0.1 in the quick benchmark; benchmarks/TUNING.md, "Plain SGD as the outer optimiser"":
    both commands validate (joint needs no method options), and TUNING.md has that section
    with rgu at 1.67e-01 under SGD 0.01 and 4.77e-01 in its main (Adam) table."""
    header = _flat_header(INVERSE)
    assert "Single-level baseline: tune.method=joint." in header
    joint = C.load(INVERSE, ["tune.method=joint"])
    check_method(build_tuning(joint))
    command = "tune.method=rgu 'tune.options={}' tune.outer_optimizer=sgd tune.outer_lr=0.01"
    assert f"({command}: rel. error 0.17 against 0.48 with Adam at 0.1" in header
    rgu = C.load(INVERSE, shlex.split(command))
    assert (rgu.tune.method, rgu.tune.outer_optimizer, rgu.tune.outer_lr) == ("rgu", "sgd", 0.01)
    check_method(build_tuning(rgu))
    assert C.load(INVERSE).tune.outer_lr == 0.1 and C.load(INVERSE).tune.outer_optimizer == "adam"
    tuning_md = (ROOT / "benchmarks" / "TUNING.md").read_text(encoding="utf-8")
    assert 'benchmarks/TUNING.md, "Plain SGD as the outer optimiser"' in header
    section = tuning_md.split("**Plain SGD as the outer optimiser**", 1)[1]
    assert "| rgu | **1.67e-01 ± 2.4e-02** | SGD 0.01 |" in section
    assert "| rgu | 1.79e+00 ± 8.3e-02 | **4.77e-01 ± 6.2e-02** |" in tuning_md


def test_the_deepxde_tuning_config_tunes_its_loss_weight_and_lr_by_finite_differences():
    """deepxde_loss_weights.yaml: "its loss_weights (PDE, boundary) and learning rate by
    zo_fg2u (finite differences of short DeepXDE trainings). Needs pinnlab[deepxde]"."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    path = TUNING / "deepxde_loss_weights.yaml"
    assert "Needs pinnlab[deepxde]" in _header(path)
    config = C.load(path)
    assert (config.tune.method, config.tune.inner, config.trainer.backend) == ("zo_fg2u", "deepxde", "deepxde")
    assert list(config.tune.tunables) == ["weights.boundary", "lr"] and config.tune.options["scheme"] == "forward"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert any(requirement.startswith("deepxde") for requirement in extras["deepxde"])
