"""The README's user-defined equation (examples/custom_equation.py) works end to end."""

from __future__ import annotations

import torch

from pinnlab.equations import EQUATIONS
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import MLP, Pointwise
from pinnlab.solvers import PINNProblem, evaluate, train
from tests.equations.conftest import EXAMPLE
from tests.equations.conftest import load_example as _load


def test_custom_equation_is_short_registered_and_exact():
    module = _load()
    body = EXAMPLE.read_text().split("@register")[1].split('if __name__')[0]
    assert len([line for line in body.splitlines() if line.strip()]) <= 32
    assert EQUATIONS["sine_poisson"] is module.SinePoisson
    eq = module.SinePoisson(7)
    x = 0.8 * eq.sample_collocation(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    residual = eq.residual(x, lambda q: Autograd().estimate(Pointwise(lambda z: eq.exact(z) / (1 - (z * z).sum(-1))), x, q))
    assert float(residual.abs().max()) < 1e-10


def test_custom_equation_trains():
    module = _load()
    eq = module.SinePoisson(10)
    problem = PINNProblem(eq, MLP(10, width=32, depth=3), SteinAntithetic(sigma=1e-2, num_samples=32),
                          Biased(), batch_size=50)
    result = train(problem, steps=150, eval_every=150, test_points=500, progress="off")
    initial = evaluate(problem, problem.init_params(), result.test_inputs, result.test_exact).rel_l2
    assert result.final.rel_l2 < 0.2 * initial


def test_a_custom_equation_runs_from_the_command_line_with_equation_module(tmp_path, monkeypatch, capsys):
    """``equation.module`` imports the user's module (a name found from the current
    directory, or a .py path) before the name is looked up: the pinnlab command had no
    way to register a custom equation. An unimportable module is one line, exit 2; a config
    without the key records none (its resolved YAML, hence resumes and study cells, as before)."""
    import h5py

    from pinnlab.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_equations.py").write_text(EXAMPLE.read_text())
    config = tmp_path / "c.yaml"
    config.write_text("equation: {name: sine_poisson, dim: 5, module: my_equations}\n"
                      "model: {width: 8, depth: 3}\nestimator: {samples: 4}\n"
                      "trainer: {steps: 4, eval_every: 4, test_points: 50, batch_size: 8}\n")
    monkeypatch.delitem(EQUATIONS, "sine_poisson", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "my_equations", raising=False)
    for module in ("my_equations", str(tmp_path / "my_equations.py")):
        EQUATIONS.pop("sine_poisson", None)
        out = tmp_path / "run.h5"
        assert main(["solve", str(config), f"equation.module={module}", "-o", str(out), "--overwrite",
                     "--progress", "off"]) == 0, capsys.readouterr().err
        with h5py.File(out, "r") as fh:
            assert f"module: {module}" in fh.attrs["config"] and fh.attrs["equation"] == "sine_poisson"
    capsys.readouterr()
    assert main(["solve", str(config), "equation.module=not_a_module", "-o", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "equation.module = 'not_a_module': cannot import it" in err, err
    for code in (0, 3):  # a module that exits: exit 0 with no result and no word, or that exit code
        quitter = tmp_path / f"quits_{code}.py"
        quitter.write_text(f"import sys\nsys.exit({code})\n")
        assert main(["solve", str(config), f"equation.module={quitter}", "-o", str(tmp_path / "q.h5")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"cannot import it: it called sys.exit({code})" in err, err
        assert not (tmp_path / "q.h5").exists()
    from pinnlab import config as C

    plain = C.validate({"equation": {"name": "poisson_two_body", "dim": 3}})
    assert "module" not in plain.to_yaml()
