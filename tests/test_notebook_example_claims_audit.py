"""Claims of the notebooks' text and of examples/custom_equation.py checked against the code.

Pins what their markdown, comments and docstring say that no other test pinned: the
custom equation's solution, domain, sampler and residual sign; the quickstart's
command-line equivalent (its sizes, its overrides, its initial weights); the training
study's hybrid switch and the sign of the unbiased loss; the tuning notebook's problem,
the `solve` of its config, its outer Adam step on log w and the reach of its hand scan;
and, for the texts that read their stored outputs, that those outputs say so.
tests/test_notebooks.py executes the notebooks; nothing here runs a whole notebook.
"""

from __future__ import annotations

import json
import math
import re

import h5py
import numpy as np
import pytest
import torch
import yaml

from pinnlab import config as C
from pinnlab.cli import main
from tests.equations.conftest import EXAMPLE, load_example
from tests.test_readme_claims_fourth_audit import ROOT, _code

NOTEBOOKS = {path.stem: json.loads(path.read_text(encoding="utf-8"))
             for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}


def _markdown(name: str) -> str:
    """The notebook's markdown, whitespace collapsed to single spaces."""
    cells = NOTEBOOKS[name]["cells"]
    return " ".join(" ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())


def _stored_text(name: str, index: int) -> str:
    """The stream output stored with code cell ``index`` (counting all cells)."""
    cell = NOTEBOOKS[name]["cells"][index]
    return "".join("".join(o["text"]) for o in cell["outputs"] if o["output_type"] == "stream")


def _yaml_of(name: str, index: int) -> str:
    """The config a notebook code cell writes with ``Path(...).write_text('''...''')``."""
    return "".join(NOTEBOOKS[name]["cells"][index]["source"]).split("'''")[1]


@pytest.fixture
def sine_poisson():
    """The example's SinePoisson class (the equations' registry restored afterwards)."""
    from pinnlab.equations import EQUATIONS

    saved = dict(EQUATIONS)
    yield load_example().SinePoisson
    EQUATIONS.clear()
    EQUATIONS.update(saved)


# -- examples/custom_equation.py ------------------------------------------------------------


def test_the_custom_equations_solution_is_the_docstrings_and_it_and_u_vanish_on_the_sphere(sine_poisson):
    """Docstrings: "u* = (1 − ‖x‖²)·Σ_i sin x_i", "u = 0 on the sphere" and "u = (1 − ‖x‖²)·u_σ
    vanishes on the sphere": u* at hand points, and u* and the prediction of an arbitrary
    network are 0 on the unit sphere (and the prediction is not 0 inside)."""
    from pinnlab.estimators import Autograd
    from pinnlab.losses import Biased
    from pinnlab.nets import MLP
    from pinnlab.solvers import PINNProblem
    from pinnlab.solvers.evaluate import predict

    text = EXAMPLE.read_text(encoding="utf-8")
    assert "u* = (1 − ‖x‖²)·Σ_i sin x_i" in text and "u = 0 on the sphere" in text
    assert "u = (1 − ‖x‖²)·u_σ vanishes on the sphere" in text
    eq = sine_poisson(6)
    x = torch.zeros(2, 6, dtype=torch.float64)
    x[0, 0], x[1, :2] = 0.5, torch.tensor([0.3, -0.4], dtype=torch.float64)
    expected = [0.75 * math.sin(0.5), 0.75 * (math.sin(0.3) + math.sin(-0.4))]
    torch.testing.assert_close(eq.exact(x), torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)
    sphere = torch.randn(40, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sphere = sphere / sphere.norm(dim=1, keepdim=True)
    assert float(eq.exact(sphere).abs().max()) < 1e-14
    problem = PINNProblem(eq, MLP(6, width=8, depth=2, dtype=torch.float64), Autograd(), Biased())
    params = problem.init_params(dtype=torch.float64)
    assert float(predict(problem, params, sphere).abs().max()) < 1e-14
    assert float(predict(problem, params, 0.5 * sphere).abs().min()) > 1e-6


def test_the_custom_equation_samples_its_collocation_points_in_the_unit_ball(sine_poisson):
    """Docstring: "Δu = f on the unit ball": the collocation points lie in the closed unit
    ball and reach from near its centre to near its sphere, in the dtype asked for."""
    eq = sine_poisson(8)
    for dtype in (torch.float32, torch.float64):
        x = eq.sample_collocation(2000, generator=torch.Generator().manual_seed(1), dtype=dtype)
        radius = x.norm(dim=1)
        assert x.shape == (2000, 8) and x.dtype == dtype
        assert float(radius.max()) <= 1 + 1e-6 and float(radius.max()) > 0.99 and float(radius.min()) < 0.05


def test_the_custom_equations_residual_is_the_laplacian_minus_the_source(sine_poisson):
    """Comment: "the residual is Δu − f": with u_σ ≡ 0 (u = 0) it is −f, with u_σ ≡ 1
    (u = 1 − ‖x‖², Δu = −2d) it is −2d − f, from exact derivatives."""
    from pinnlab.estimators import Autograd
    from pinnlab.nets import Pointwise

    eq = sine_poisson(5)
    x = 0.9 * eq.sample_collocation(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    f = eq.source(x, None)
    for constant, laplacian in ((0.0, 0.0), (1.0, -2.0 * 5)):
        net = Pointwise(lambda z, c=constant: torch.full((z.shape[0],), c, dtype=z.dtype))
        residual = eq.residual(x, lambda q, net=net: Autograd().estimate(net, x, q))
        torch.testing.assert_close(residual, laplacian - f, rtol=1e-12, atol=1e-12)


# -- notebooks/01_quickstart.ipynb -----------------------------------------------------------

QUICK_OVERRIDES = "equation.dim=20 model.width=64 model.depth=3 trainer.steps=400 trainer.eval_every=50"


def test_the_quickstart_config_is_the_full_size_the_notebook_names():
    """01: "`configs/quickstart.yaml` runs the same equation at its full size (d = 100, a
    4×128 network, 600 steps ...)"."""
    text = _markdown("01_quickstart")
    assert "`configs/quickstart.yaml` runs the same equation at its full size (d = 100, a 4×128 network, " \
           "600 steps" in text
    quick = C.load(ROOT / "configs" / "quickstart.yaml")
    assert quick.equation.name == "allen_cahn_two_body" and quick.equation.dim == 100
    assert (quick.model.depth, quick.model.width, quick.trainer.steps) == (4, 128, 600)


def test_the_quickstart_overrides_give_the_notebooks_run_but_for_its_initial_weights(capsys):
    """01: "`equation.dim=20 model.width=64 model.depth=3 trainer.steps=400
    trainer.eval_every=50` as overrides give this notebook's sizes (its initial weights come
    from the trainer seed, so its numbers differ a little)": the notebook's own code, run
    with the network initialised as the config's (trainer seed 0, stream "init"), trains
    exactly as the config with the overrides (here 2 steps, 200 test points); the
    notebook's torch.Generator().manual_seed(0) weights are other weights."""
    import pinnlab
    from pinnlab._seeding import make_generator

    assert f"`{QUICK_OVERRIDES}` as overrides give this notebook's sizes (its initial weights come from the " \
           "trainer seed, so its numbers differ a little)" in _markdown("01_quickstart")
    small = ["trainer.steps=2", "trainer.eval_every=2", "trainer.test_points=200"]
    config = C.load(ROOT / "configs" / "quickstart.yaml", [*QUICK_OVERRIDES.split(), *small])
    problem, kwargs = C.build(config)
    expected = pinnlab.train(problem, progress="off", **kwargs)

    code = "".join(_code(NOTEBOOKS["01_quickstart"])[0]["source"])
    for old, new in (("import matplotlib.pyplot as plt\n", ""),
                     ("steps = 400\n", "steps = 2\n"),
                     ("eval_every=50", "eval_every=2"), ("test_points=2000", "test_points=200"),
                     ("generator=torch.Generator().manual_seed(0)", "generator=GENERATOR")):
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    namespace = {"GENERATOR": make_generator(config.trainer.seed, "init")}
    exec(compile(code, "01_quickstart.ipynb", "exec"), namespace)
    assert "final relative L2 = " in capsys.readouterr().out
    result = namespace["result"]
    assert result.history.trace_loss == expected.history.trace_loss
    assert result.final.rel_l2 == expected.final.rel_l2
    notebook_init = namespace["problem"].net.__class__(20, width=64, depth=3,
                                                       generator=torch.Generator().manual_seed(0))
    config_init = problem.net
    assert not torch.equal(next(notebook_init.parameters()), next(config_init.parameters()))


# -- notebooks/02_bias_variance.ipynb --------------------------------------------------------


def test_the_hybrid_variant_trains_biased_to_step_200_then_unbiased_with_two_draws(tmp_path):
    """02: "the hybrid loss switches from biased to unbiased after step 200" (and "the
    unbiased loss ... costs more per step (two residual draws)"): the variant's loss is a
    hard switch at step 200 whose steps 0–199 take one biased draw and whose steps from 200
    on take the two unbiased draws of the `unbiased` variant's loss."""
    text = _markdown("02_bias_variance")
    assert "the hybrid loss switches from biased to unbiased after step 200" in text
    assert "costs more per step (two residual draws)" in text
    base = tmp_path / "training.yaml"
    base.write_text(_yaml_of("02_bias_variance", 4).split("study:")[0])
    assert "hybrid: [loss.kind=hybrid, loss.switch_step=200]" in _yaml_of("02_bias_variance", 4)
    hybrid = C.load(base, ["loss.kind=hybrid", "loss.switch_step=200"])
    unbiased = C.load(base, ["loss.kind=unbiased"])
    equation = C.make_equation(hybrid.equation)
    hybrid_loss, unbiased_loss = C.make_loss(hybrid.loss, equation), C.make_loss(unbiased.loss, equation)
    assert [hybrid_loss.switch.mix(step) for step in (0, 199, 200, 399)] == [0.0, 0.0, 1.0, 1.0]

    def kinds(loss, *mix):
        asked = []

        def draw(unbiased_draw):
            asked.append(unbiased_draw)
            return torch.ones(3)

        loss(draw, *mix)
        return asked

    assert kinds(hybrid_loss, hybrid_loss.switch.mix(199)) == [False]
    assert kinds(hybrid_loss, hybrid_loss.switch.mix(200)) == kinds(unbiased_loss) == [True, True]


def test_the_unbiased_loss_can_be_negative_the_biased_cannot():
    """02: "the unbiased loss can be negative: it is a product of two independent residual
    estimates, not a square": two draws of opposite signs give a negative unbiased loss
    (mean R̂·R̂'), the biased loss of the same first draw is its mean square."""
    from pinnlab.losses import Biased, Unbiased2

    assert "the unbiased loss can be negative: it is a product of two independent residual estimates, " \
           "not a square" in _markdown("02_bias_variance")
    draws = iter([torch.tensor([1.0, -2.0]), torch.tensor([1.0, 1.0])])
    loss, _ = Unbiased2()(lambda unbiased: next(draws))
    assert float(loss) == pytest.approx(-0.5)
    biased, _ = Biased()(lambda unbiased: torch.tensor([1.0, -2.0]))
    assert float(biased) == pytest.approx(2.5)


def _finished_cells() -> dict[tuple[str, int, int], float]:
    """(variant, K, seed) -> rel. L2 of the stored "finished cell" lines of 02's study."""
    rows = re.findall(r"finished cell (\w+) \{'estimator.samples': (\d+), 'trainer.seed': (\d+)\}: "
                      r"rel_l2=([0-9.e+-]+)", _stored_text("02_bias_variance", 4))
    return {(v, int(k), int(s)): float(e) for v, k, s, e in rows}


def test_the_stored_training_study_says_what_the_closing_text_reads_from_it():
    """02's closing text on its stored run: "At K = 4 the biased loss ends with a larger error
    than the unbiased one (at both seeds: the cell lines above)"; "At K = 32 the variance term
    is eight times smaller and the three losses end close together, while an unbiased step
    costs several times a biased one (the last column)"; the table's "rel. L2 (mean ± std)"
    is the mean and spread of those seed lines."""
    text = _markdown("02_bias_variance")
    assert "At K = 4 the biased loss ends with a larger error than the unbiased one (at both seeds: the " \
           "cell lines above)" in text
    assert "At K = 32 the variance term is eight times smaller and the three losses end close together" in text
    samples = yaml.safe_load(_yaml_of("02_bias_variance", 4))["study"]["grid"]["estimator.samples"]
    assert samples == [4, 32] and samples[1] / samples[0] == 8  # Var R̂ ∝ 1/K: eight times smaller
    cells = _finished_cells()
    assert len(cells) == 3 * 2 * 2
    assert all(cells[("biased", 4, seed)] > cells[("unbiased", 4, seed)] for seed in (0, 1))
    means = {}
    for line in _stored_text("02_bias_variance", 5).splitlines()[1:]:
        variant, k, mean, _, std, ms = line.split()
        seeds = [cells[(variant, int(k), seed)] for seed in (0, 1)]
        assert float(mean) == pytest.approx(np.mean(seeds), rel=1e-3)
        assert float(std) == pytest.approx(np.std(seeds, ddof=1), rel=0.05)
        means[variant, int(k)] = (float(mean), float(ms))
    at32 = [means[v, 32][0] for v in ("biased", "unbiased", "hybrid")]
    assert max(at32) < 1.2 * min(at32)
    assert means["biased", 4][0] > 1.5 * means["unbiased", 4][0]
    assert all(means["unbiased", k][1] > 2.5 * means["biased", k][1] for k in (4, 32))


def test_the_measured_version_is_a_bigger_training_study_of_the_same_losses():
    """02: "`configs/studies/training_small.yaml` (README, "Training study") is the measured
    version": the README's "Training study" paragraph runs it, and it is a training study of
    the same three losses with more seeds and more steps than the notebook's."""
    text = _markdown("02_bias_variance")
    assert "`configs/studies/training_small.yaml` (README, \"Training study\") is the measured version" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "**Training study** (`pinnlab study configs/studies/training_small.yaml" in readme
    measured = C.load(ROOT / "configs" / "studies" / "training_small.yaml")
    notebook = yaml.safe_load(_yaml_of("02_bias_variance", 4))
    assert measured.study.kind == "training" and set(measured.study.variants) == set(notebook["study"]["variants"])
    assert len(measured.study.grid["trainer.seed"]) > len(notebook["study"]["grid"]["trainer.seed"])
    assert measured.trainer.steps > notebook["trainer"]["steps"]


# -- notebooks/03_tuning.ipynb ---------------------------------------------------------------


@pytest.fixture
def tune_yaml(tmp_path):
    """03's tune.yaml, written as its first code cell writes it."""
    path = tmp_path / "tune.yaml"
    path.write_text(_yaml_of("03_tuning", 1))
    return path


SMALL = ["model.width=8", "trainer.steps=2", "trainer.eval_every=2", "trainer.test_points=20",
         "trainer.batch_size=8", "loss.boundary_points=8"]


def test_the_tuning_problem_is_a_soft_boundary_weight_of_1e_3_fitted_to_30_noisy_observations(tune_yaml):
    """03: "A 3-D Poisson problem with a **soft** boundary constraint whose weight starts
    badly scaled (10⁻³)" and "30 noisy observations of u": the built problem has a
    boundary loss term weighted 1e-3 against the residual's 1, and the data are 30 points
    whose values differ from u* by about the configured 1 %."""
    text = _markdown("03_tuning")
    assert "A 3-D Poisson problem with a **soft** boundary constraint whose weight starts badly scaled " \
           "(10⁻³)" in text and "fits 30 noisy observations of u" in text
    config = C.load(tune_yaml)
    problem, kwargs = C.build(config)
    assert config.equation.name == "poisson_two_body" and config.equation.dim == 3
    assert [term.name for term in problem.extra_terms] == ["boundary"]
    assert kwargs["hyperparams"] == {"weights": {"boundary": 1e-3}}
    x, u = C.make_observations(config, problem.equation)
    exact = problem.equation.exact(x)
    assert x.shape == (30, 3) and not torch.equal(u, exact)
    relative = float((u - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())
    assert 0.002 < relative < 0.03


def test_pinnlab_solve_of_the_tuning_config_ignores_its_tune_section(tune_yaml, tmp_path):
    """03: "`pinnlab solve` on the same config ignores the `tune:` section": the solve of
    the config, of the config with another tune: section and of the config without tune:
    (and its data:, which a plain solve refuses unused) train and score alike."""
    assert "`pinnlab solve` on the same config ignores the `tune:` section" in _markdown("03_tuning")
    text = tune_yaml.read_text()
    other = text.replace("method: fg2u", "method: rgu").replace("outer_lr: 0.5", "outer_lr: 3.0")
    plain = text.split("data:")[0]
    assert other != text and "tune" not in plain
    results = []
    for i, body in enumerate((text, other, plain)):
        config, out = tmp_path / f"c{i}.yaml", tmp_path / f"r{i}.h5"
        config.write_text(body)
        assert main(["solve", str(config), *SMALL, "-o", str(out), "--progress", "off"]) == 0
        with h5py.File(out, "r") as fh:
            assert "tune" not in fh
            results.append((fh["trace/loss"][()], fh["final"].attrs["rel_l2"]))
    for loss, rel_l2 in results[1:]:
        np.testing.assert_array_equal(loss, results[0][0])
        assert rel_l2 == results[0][1]


def test_the_outer_step_is_adam_on_log_w_at_rate_one_half(tune_yaml, tmp_path):
    """03: "raises the weight by up to a factor of about e^0.5 per outer step (Adam on log w
    with rate 0.5)": in a 3-outer-step tuning of the notebook's config (smaller network and
    horizon) each step moves log w by at most 0.5, the first by Adam's first step
    0.5·|g|/(|g| + 1e-8) exactly; the file holds the φ trajectory, the outer objective and
    the final solve, whose weight is the last φ."""
    assert "by up to a factor of about e^0.5 per outer step (Adam on log w with rate 0.5)" in _markdown("03_tuning")
    out = tmp_path / "tuned.h5"
    assert main(["tune", str(tune_yaml), *SMALL, "tune.outer_steps=3", "tune.horizon=2", "-o", str(out),
                 "--progress", "off"]) == 0
    with h5py.File(out, "r") as fh:
        phi = fh["tune/phi/weights.boundary"][()]
        g = fh["tune/grad_norm"][()]
        assert fh["tune/value"].shape == (3,) and "rel_l2" in fh["final"].attrs
        assert fh["tune/tuned/weights.boundary"][()] == phi[-1] == fh["tune"].attrs["final/weights.boundary"]
    steps = np.diff(np.log(np.concatenate([[1e-3], phi])))
    assert abs(steps[0]) == pytest.approx(0.5 * g[0] / (g[0] + 1e-8), rel=1e-5)
    assert np.all(np.abs(steps) <= 0.5 * (1 + 1e-6))


def test_the_same_tune_section_is_accepted_with_the_stein_estimator_at_high_d(tune_yaml):
    """03: "at high d the same `tune:` section works with the Stein estimator (the configs in
    `configs/tuning/`)": the notebook's tune: section is accepted at d = 100 with
    `estimator.kind: stein`, and configs/tuning/ holds such a tuning of the boundary weight."""
    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning

    assert "at high d the same `tune:` section works with the Stein estimator (the configs in " \
           "`configs/tuning/`)" in _markdown("03_tuning")
    setup = build_tuning(C.load(tune_yaml, ["estimator.kind=stein", "equation.dim=100"]))
    check_method(setup)
    assert setup.config.equation.dim == 100 and setup.config.estimator.kind == "stein"
    shipped = C.load(ROOT / "configs" / "tuning" / "poisson_boundary_weight.yaml")
    assert shipped.estimator.kind == "stein" and shipped.equation.dim >= 10
    assert shipped.tune.method == "fg2u" and list(shipped.tune.tunables) == ["weights.boundary"]


def test_the_stored_tuning_run_says_what_the_closing_text_reads_from_it():
    """03's closing text on its stored run: "The outer objective first grows ... from then
    on the misfit falls by orders of magnitude"; the weight rose by at most e^0.5 per outer
    step over its 30 steps; "The final solve ... ends far below the untuned one and about
    where the best weight of the hand scan does"."""
    text = _markdown("03_tuning")
    assert "The outer objective first grows" in text and "the misfit falls by orders of magnitude" in text
    first, largest, last = map(float, re.search(
        r"outer objective \(data misfit\): (\S+) at the first outer step, (\S+) at its largest, (\S+) at the last",
        _stored_text("03_tuning", 3)).groups())
    assert largest > first and last < first / 100 and last < largest / 1000
    runs = dict((name, (float(w), float(e))) for name, w, e in re.findall(
        r"(\w+)\.h5\s+boundary weight (\S+): final relative L2 = (\S+)", _stored_text("03_tuning", 3)))
    scans = [float(e) for e in re.findall(r"scan\.h5\s+boundary weight \S+: final relative L2 = (\S+)",
                                          _stored_text("03_tuning", 5))]
    (tuned_w, tuned), (untuned_w, untuned) = runs["tuned"], runs["untuned"]
    assert untuned_w == 1e-3 and math.log(tuned_w / untuned_w) <= 30 * 0.5
    assert len(scans) == 4 and tuned < untuned / 10 and tuned < 1.5 * min(scans)


def test_the_hand_scan_spans_the_decades_the_text_says():
    """03: "A hand scan over three decades": the scanned boundary weights span as many
    decades as the text says (the text said four of the weights 1, 10, 100, 1000)."""
    said = re.search(r"A hand scan over (\w+) decades", _markdown("03_tuning")).group(1)
    code = "".join(NOTEBOOKS["03_tuning"]["cells"][5]["source"])
    weights = [float(w) for w in re.search(r"for w in \(([^)]*)\)", code).group(1).split(",")]
    assert said in ("two", "three", "four", "five")
    assert math.log10(max(weights) / min(weights)) == {"two": 2, "three": 3, "four": 4, "five": 5}[said]
