"""Fourth mutation audit of pinnlab/bilevel/base.py and parameterization.py.

step_size() is a Python float even when the gradient step's rate is a tensor of φ, check_phi takes every floating-point dtype (half precision included) but no complex
one, constrain() and unconstrain() keep φ's key order (flatten follows it), Logit
refuses NaN bounds; and (added after the audit) the inverses and optimize() refuse a NaN
φ, and Logit saturates where its docstring says.
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.bilevel import BilevelProblem
from pinnlab.bilevel.base import GradientStep, check_phi, flatten
from pinnlab.bilevel.parameterization import Log, Logit, constrain, unconstrain
from pinnlab.solvers import SGD

from .bilevel.problems import F64


def _shift(theta, state, phi, t):
    """Ω_t: w ← w + 1 (independent of φ), counting the steps in the state."""
    return {"w": theta["w"] + 1.0}, state + 1


def test_step_size_of_a_tensor_rate_is_a_python_float():
    """A gradient step whose rate is exp(φ_lr) (a 0-d tensor of φ): step_size() is the plain
    float 0.2 that Hessian-free and DARTS take as α/ξ, not a tensor."""
    lr = torch.tensor(math.log(0.2), dtype=F64)
    step = GradientStep(lambda theta, phi, t: [(theta["w"] ** 2).sum()], SGD(lr=1.0),
                        lambda phi, t: torch.exp(phi["lr"]))
    problem = BilevelProblem(inner_step=_shift, outer_loss=lambda theta, phi: theta["w"], init=({"w": 0.0}, 0),
                             horizon=1, gradient_step=step)
    size = problem.step_size({"lr": lr}, 0)
    assert type(size) is float
    assert size == pytest.approx(0.2, rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, F64])
def test_check_phi_takes_every_floating_point_dtype(dtype):
    """φ may be half precision (float16, bfloat16) as well as float32/64: check_phi is
    silent; a complex entry is refused with its dtype named."""
    check_phi({"a": torch.ones(2, dtype=dtype)})
    with pytest.raises(TypeError, match=r"φ\['b'\] must be a floating-point tensor, got torch.complex64"):
        check_phi({"a": torch.ones(2, dtype=dtype), "b": torch.ones(2, dtype=torch.complex64)})


def test_constrain_and_unconstrain_keep_the_key_order_of_phi():
    """φ = {b, a} with a log-parameterised: both maps return keys b, a (not sorted), so
    flatten gives [b, e^{u_a}] = [0.5, 2] and [b, log a] = [0.5, log 2]."""
    par = {"a": Log()}
    u = {"b": torch.tensor(0.5, dtype=F64), "a": torch.tensor(math.log(2.0), dtype=F64)}
    phi = constrain(u, par)
    assert list(phi) == ["b", "a"]
    torch.testing.assert_close(flatten(phi), torch.tensor([0.5, 2.0], dtype=F64), rtol=1e-15, atol=0)
    back = unconstrain({"b": torch.tensor(0.5, dtype=F64), "a": torch.tensor(2.0, dtype=F64)}, par)
    assert list(back) == ["b", "a"]
    torch.testing.assert_close(flatten(back), torch.tensor([0.5, math.log(2.0)], dtype=F64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("bounds", [(0.0, math.nan), (math.nan, 1.0), (math.nan, math.nan)])
def test_logit_refuses_nan_bounds(bounds):
    """high > low is False when either bound is NaN: refused, not a map onto NaN."""
    with pytest.raises(ValueError, match="Logit needs high > low"):
        Logit(*bounds)


@pytest.mark.parametrize("parameterization", [Log(), Logit()], ids=["log", "logit"])
def test_the_inverses_refuse_nan(parameterization):
    """NaN fails every comparison, so bounds written as `value <= 0` (or `p <= 0 | p >= 1`)
    passed it: optimize() started from u = NaN without a word. Both inverses refuse it."""
    with pytest.raises(ValueError, match="must be > 0|must lie in"):
        parameterization.inverse(torch.tensor([0.5, float("nan")], dtype=F64))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_optimize_refuses_a_non_finite_starting_phi_before_any_work(value):
    """A non-finite φ to start from (unconstrained, so no inverse sees it) is one
    ValueError naming the entry, not a loop that stops at once as "nonfinite"."""
    from pinnlab.bilevel import ForwardGradientUnroll, optimize

    from .bilevel.problems import Ridge

    ridge = Ridge(features=2, n=8)
    phi = {"log_reg": torch.tensor([0.0, value], dtype=F64)}
    with pytest.raises(ValueError, match=r"^φ\['log_reg'\] must be finite to start from"):
        optimize(ridge.problem(horizon=2), phi, ForwardGradientUnroll(num_directions=1), steps=1)


@pytest.mark.parametrize(("dtype", "top", "bottom"), [(torch.float32, 17.0, -19.5), (torch.float64, 37.0, -39.5)])
def test_logit_saturates_where_its_docstring_says(dtype, top, bottom):
    """Logit's docstring: beyond u ≈ 17 (float32) / 37 (float64) the value is `high`; below
    u ≈ −19 (−39) it is `low` when low ≠ 0 is of the width's size; with low = 0 it stays
    positive there (inverse gives u back) and reaches 0 only where sigmoid underflows."""
    u = torch.tensor([top, bottom], dtype=dtype)
    assert Logit(0.1, 1.0).forward(u).tolist() == [1.0, torch.tensor(0.1, dtype=dtype).item()]
    below = Logit().forward(u[1:])
    assert 0 < below.item() < 1e-8
    assert Logit().inverse(below).item() == pytest.approx(bottom, rel=1e-3)
    assert Logit().forward(torch.tensor([-800.0], dtype=dtype)).item() == 0.0
    inside = Logit(0.1, 1.0).forward(torch.tensor([top - 2, bottom + 2], dtype=dtype))
    assert inside[0] < 1.0 and inside[1] > torch.tensor(0.1, dtype=dtype)
