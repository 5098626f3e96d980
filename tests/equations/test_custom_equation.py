"""The README's user-defined equation (examples/custom_equation.py) works end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from pinnlab.equations import EQUATIONS
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import MLP, Pointwise
from pinnlab.solvers import PINNProblem, evaluate, train

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_equation.py"


@pytest.fixture(autouse=True)
def _restore_registry():
    saved = dict(EQUATIONS)
    yield
    EQUATIONS.clear()
    EQUATIONS.update(saved)


def _load():
    spec = importlib.util.spec_from_file_location("custom_equation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
