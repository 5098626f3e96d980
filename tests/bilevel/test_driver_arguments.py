"""Bad arguments to ``optimize`` and ``hypergradient`` fail where they are given, with one
clear ValueError: a parameterisation entry that names no hyperparameter of φ (it would
leave the one meant unconstrained) or is not a parameterisation object, a seed that is
not a storable non-negative integer, a time budget that is not a positive number."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.bilevel import ForwardGradientUnroll, Log, ReverseUnroll, hypergradient, optimize
from pinnlab.bilevel.parameterization import constrain, unconstrain

from .problems import Ridge

RIDGE = Ridge()
PROBLEM = RIDGE.problem(horizon=2)
POSITIVE = {"log_reg": torch.exp(RIDGE.phi["log_reg"])}


def _optimize(**kwargs):
    return optimize(PROBLEM, POSITIVE, ReverseUnroll(), **{"steps": 1, **kwargs})


BAD_PARAMETERIZATION = {
    "misspelt name": ({"log_rge": Log()}, "'log_rge', which is not a hyperparameter of φ (φ has 'log_reg')"),
    "string 'log'": ({"log_reg": "log"}, "got 'log'; use Log()"),
    "class, not instance": ({"log_reg": Log}, "must be a parameterisation object"),
    "not a mapping": ([Log()], "parameterization must map hyperparameter names"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMETERIZATION))
def test_a_bad_parameterization_is_refused_where_it_meets_phi(case):
    """optimize, constrain and unconstrain all refuse it, before any inner step."""
    mapping, fragment = BAD_PARAMETERIZATION[case]
    for call in (lambda: _optimize(parameterization=mapping),
                 lambda: unconstrain(POSITIVE, mapping),
                 lambda: constrain(RIDGE.phi, mapping)):
        with pytest.raises(ValueError) as info:
            call()
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("seed", [1.5, -1, True, 2**63, "0"])
def test_a_bad_seed_is_refused_by_optimize_and_hypergradient(seed):
    """seed = 1.5 used to act as seed 1, seed = -1 to fail inside fg2u's stream derivation."""
    method = ForwardGradientUnroll(num_directions=2)
    for call in (lambda: _optimize(seed=seed),
                 lambda: optimize(PROBLEM, RIDGE.phi, method, steps=1, seed=seed),
                 lambda: hypergradient(PROBLEM, RIDGE.phi, method, seed=seed),
                 lambda: method(PROBLEM, RIDGE.phi, seed=seed)):  # an estimator called directly
        with pytest.raises(ValueError, match=r"seed must be an integer with 0 <= seed < 2\*\*63"):
            call()


@pytest.mark.parametrize("name, value", [("start", -1), ("start", 1.5), ("outer_step", -1), ("outer_step", True)])
def test_a_bad_inner_index_is_refused_by_every_estimate(name, value):
    """outer_step = -1 failed inside fg2u's stream derivation; start = 1.5 ran a float index."""
    for method in (ForwardGradientUnroll(num_directions=2), ReverseUnroll()):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 0"):
            hypergradient(PROBLEM, RIDGE.phi, method, **{name: value})


@pytest.mark.parametrize("budget", [-5.0, 0, math.nan, math.inf, "10"])
def test_a_bad_time_budget_is_refused(budget):
    """time_budget = -5 or NaN used to run one outer step and stop."""
    with pytest.raises(ValueError, match="time_budget must be a finite number > 0"):
        _optimize(steps=3, time_budget=budget)


def test_the_documented_defaults_and_edge_values_are_still_accepted():
    """time_budget=None (no limit), parameterization=None or {}, a seed of 0 or 2**63 − 1,
    hypergradient without a seed, and a parameterisation of only some hyperparameters."""
    for kwargs in ({"time_budget": None, "parameterization": None}, {"parameterization": {}},
                   {"seed": 0, "time_budget": 1e6}, {"seed": 2**63 - 1}, {"parameterization": {"log_reg": Log()}}):
        assert _optimize(**kwargs).status == "ok", kwargs
    hypergradient(PROBLEM, RIDGE.phi, ForwardGradientUnroll(num_directions=2))
    two = {"log_reg": RIDGE.phi["log_reg"], "scale": torch.tensor(2.0, dtype=torch.float64)}
    u = unconstrain(two, {"scale": Log()})
    torch.testing.assert_close(u["scale"], torch.log(two["scale"]))
    torch.testing.assert_close(constrain(u, {"scale": Log()}), two)
