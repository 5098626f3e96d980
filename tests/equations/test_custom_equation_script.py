"""The README's custom-equation example run as a script (``python
examples/custom_equation.py``, its ``__main__`` block): it builds the README's problem,
trains it and prints the final relative L2 error. The 300 steps are cut to 40 here (the
whole run takes over half a minute): they bring the error from about 1 to about 0.5."""

from __future__ import annotations

import runpy

import pytest

import pinnlab
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.solvers import evaluate, train
from tests.equations.conftest import EXAMPLE


def test_the_example_script_trains_its_problem_and_prints_the_final_error(monkeypatch, capsys):
    seen = {}

    def shortened(problem, steps, **options):
        seen.update(problem=problem, steps=steps, options=options)
        result = train(problem, steps=40, eval_every=40, test_points=200, progress="off")
        seen["result"] = result
        seen["initial"] = evaluate(problem, problem.init_params(), result.test_inputs, result.test_exact).rel_l2
        return result

    monkeypatch.setattr(pinnlab, "train", shortened)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    problem, result = seen["problem"], seen["result"]
    assert type(problem.equation).__name__ == "SinePoisson" and problem.equation.dim == 20
    assert isinstance(problem.estimator, SteinAntithetic) and isinstance(problem.loss, Biased)
    assert (problem.estimator.sigma, problem.estimator.num_samples) == (1e-2, 64)
    assert seen["steps"] == 300
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"rel_l2={result.final.rel_l2:.3e}"
    assert seen["initial"] == pytest.approx(1.0, abs=0.05)
    assert result.final.rel_l2 < 0.6 * seen["initial"]
