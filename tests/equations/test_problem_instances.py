"""What defines a problem instance besides its PDE: the smallest dimension with a
nonzero solution, the law of the random coefficients, the drift the Fokker–Planck
sampler is told to use, and the parameters and sources that are refused.

The contract tests check each equation against its own coefficients, so a coefficient
drawn from the wrong law (μ_i ~ N(0, 1) instead of N(1, 1)) or a sampler that ignores a
drift override still passes them; these pin the instance itself."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import (
    EQUATIONS,
    BlackScholesBarenblatt,
    FokkerPlanckAniso,
    FokkerPlanckIso,
    PoissonTwoBody,
    make_equation,
)
from pinnlab.estimators import Autograd
from pinnlab.nets import Pointwise

F64 = torch.float64
THREE_BODY = sorted(name for name in EQUATIONS if name.endswith("_three_body"))
TWO_BODY = sorted(name for name in EQUATIONS if name.endswith("_two_body"))


@pytest.mark.parametrize("name", THREE_BODY)
def test_three_body_solutions_need_three_coordinates(name):
    """u₂ = Σ_{i<d−1} c_i exp(x_i x_{i+1} x_{i+2}) has d − 2 terms: at d = 2 it has none,
    u* ≡ 0 and the "problem" is trivial, so d = 2 is refused like d = 1."""
    for dim in (1, 2):
        with pytest.raises(ValueError, match=r"dim must be an integer >= 3"):
            make_equation(name, dim)
    assert make_equation(name, 3).coefficients["c"].shape == (1,)
    assert make_equation(name, 7).coefficients["c"].shape == (5,)


@pytest.mark.parametrize("name", TWO_BODY)
def test_two_body_solutions_have_d_minus_one_terms(name):
    with pytest.raises(ValueError, match=r"dim must be an integer >= 2"):
        make_equation(name, 1)
    assert make_equation(name, 2).coefficients["c"].shape == (1,)
    assert make_equation(name, 7).coefficients["c"].shape == (6,)


def _assert_standard_sample(values, mean, what):
    """Entries of ``values`` are N(mean, 1): sample mean within 5 SE (1/√n) of ``mean``
    and sample variance within 5 SE (√(2/n)) of 1."""
    n = values.numel()
    assert abs(float(values.mean()) - mean) <= 5 / math.sqrt(n), (what, float(values.mean()))
    assert abs(float(values.var()) - 1) <= 5 * math.sqrt(2 / n), (what, float(values.var()))


def test_random_coefficients_follow_their_laws():
    """[RS] Table 2: the anisotropic drift has μ_i ~ N(1, 1); the unit-ball solutions
    have c_i ~ N(0, 1) (REFERENCE.md §3.1); the isotropic drift is exactly 1. Checked on
    the entries of one instance at d = 20 000 and across seeds."""
    _assert_standard_sample(FokkerPlanckAniso(20_000, seed=0).coefficients["mu"], 1.0, "aniso μ")
    mus = torch.cat([FokkerPlanckAniso(50, seed=s).coefficients["mu"] for s in range(40)])
    _assert_standard_sample(mus, 1.0, "aniso μ over seeds")
    _assert_standard_sample(PoissonTwoBody(20_001, seed=0).coefficients["c"], 0.0, "two-body c")
    assert torch.equal(FokkerPlanckIso(5).coefficients["mu"], torch.ones(5, dtype=F64))


@pytest.mark.parametrize("sampler", ["sample_collocation", "sample_test"])
def test_fokker_planck_points_follow_an_overridden_drift(sampler):
    """x = μt + √(2 − t)z: drawn at an override μ̂ from the same generator (same t and z),
    the points move by exactly (μ̂ − μ)t and the times stay; an inverse problem's training
    points must not carry the true μ it hides."""
    eq = FokkerPlanckAniso(4, seed=1)
    mu_hat = torch.tensor([0.0, -2.0, 3.0, 0.5], dtype=F64)
    draw = getattr(eq, sampler)
    at_truth = draw(64, generator=make_generator(0, "fp"), dtype=F64)
    at_override = draw(64, generator=make_generator(0, "fp"), dtype=F64, coefficients={"mu": mu_hat})
    t = at_truth[:, -1:]
    assert torch.equal(at_override[:, -1:], t)
    torch.testing.assert_close(at_override[:, :-1] - at_truth[:, :-1], (mu_hat - eq.coefficients["mu"]) * t,
                               rtol=0, atol=1e-12)


def test_coefficient_overrides_given_as_numbers_keep_the_points_dtype():
    """An override given as Python numbers (a list, as a user or a config would) became a
    float32 tensor first, so at float64 points μ = 0.1 was 0.10000000149: the exact
    solution and the points drawn at it now equal those of the same override as a float64
    tensor, bit for bit."""
    from pinnlab.solvers.problem import sampler_overrides

    eq = FokkerPlanckAniso(3, seed=1)
    numbers = [0.1, -0.3, 0.7]
    as_tensor = {"mu": torch.tensor(numbers, dtype=F64)}
    x = eq.sample_test(16, generator=make_generator(0, "fp"), dtype=F64)
    assert torch.equal(eq.exact(x, coefficients={"mu": numbers}), eq.exact(x, coefficients=as_tensor))
    drawn = eq.sample_collocation(16, generator=make_generator(1, "fp"), dtype=F64,
                                  **sampler_overrides(eq, {"mu": numbers}))
    assert torch.equal(drawn, eq.sample_collocation(16, generator=make_generator(1, "fp"), dtype=F64,
                                                    coefficients=as_tensor))


@pytest.mark.parametrize("kwargs", [{"volatility": 0.0}, {"volatility": -0.4}, {"volatility": math.nan},
                                    {"horizon": 0.0}, {"horizon": -1.0}, {"horizon": math.nan}])
def test_black_scholes_refuses_a_volatility_or_horizon_that_is_not_positive(kwargs):
    """σ_B ≤ 0 is no volatility and T ≤ 0 an empty (or reversed) time interval [0, T]."""
    with pytest.raises(ValueError, match=r"^(volatility|horizon) must be a finite number > 0, got "):
        BlackScholesBarenblatt(3, **kwargs)


def test_a_source_with_one_value_too_many_is_refused():
    """A source of shape (N + 1,) (values for other points) is refused with the per-point
    message, not broadcast or failing inside the residual's arithmetic; a (1,)-shaped one
    would broadcast silently as if it were a constant."""

    class Shifted(PoissonTwoBody):
        name = "test_shifted_source"

        def source(self, x, coefficients):
            values = super().source(x, coefficients)
            return torch.cat([values, values[:1]]) if self.extra else values[:1]

    x = PoissonTwoBody(3).sample_collocation(5, generator=make_generator(0, "x"), dtype=F64)
    model = Pointwise(lambda z: (z**2).sum(-1))
    for extra, shown in ((True, r"\(6,\)"), (False, r"\(1,\)")):
        eq = Shifted(3)
        eq.extra = extra
        with pytest.raises(ValueError, match=rf"source must return one value per point, shape \(5,\).*{shown}"):
            eq.residual(x, lambda q: Autograd().estimate(model, x, q))


@pytest.mark.parametrize("name", ["poisson_two_body", "allen_cahn_three_body", "fokker_planck_aniso"])
def test_coefficients_follow_each_calls_dtype_after_another_dtype_was_used(name):
    """The coefficient cache is per (device, dtype): after a float32 call (training),
    a float64 call (the reference values of the test set) gets the float64 coefficients,
    bit for bit those of a fresh instance, not the float32 copy (μ rounded to float32,
    or a float64 @ float32 product that fails)."""
    eq, fresh = make_equation(name, 4, seed=2), make_equation(name, 4, seed=2)
    x = fresh.test_set(16, dtype=F64)
    eq.exact(x.float())
    for key, value in eq.coefficients_like(x).items():
        assert value.dtype == F64 and torch.equal(value, fresh.coefficients[key]), key
    assert torch.equal(eq.exact(x), fresh.exact(x))
