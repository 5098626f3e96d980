"""Biased, unbiased1/2 and hybrid losses against the exact residual of the smoothed model.

Probabilistic tests: means over R independent replicates (fixed seeds) are compared
within 5 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pinnlab.equations import (
    GRADIENT,
    LAPLACIAN,
    VALUE,
    AbstractEquation,
    AllenCahnTwoBody,
    NotUnbiasableError,
    PoissonTwoBody,
    SineGordonTwoBody,
    Term,
)
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import (
    Biased,
    Blend,
    Hybrid,
    Piecewise,
    SwitchAt,
    SwitchOnPlateau,
    Unbiased1,
    Unbiased2,
)
from pinnlab.nets import Pointwise

F64 = torch.float64


class GradientSquared(AbstractEquation):
    """Δu − ‖∇u‖² = 0 on R^d: an inner-product nonlinearity (like HJB), no ansatz."""

    name = "test_gradient_squared"

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        return 0.3 * torch.randn(n, self.dim, generator=generator, dtype=dtype)

    def exact(self, x, coefficients=None):
        return torch.zeros(x.shape[0], dtype=x.dtype)

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)), Term(-1.0, (GRADIENT, GRADIENT)))


class Helmholtz(GradientSquared):
    """Δu + u = 0 on R^d: linear, so E R̂ = R for every estimate (no ansatz)."""

    name = "test_helmholtz"

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)), Term(1.0, (VALUE,)))


def _sine_direction(dim, seed):
    """The generator of :func:`_setup` and the direction a of its model sin(a·z + 0.2)."""
    g = torch.Generator().manual_seed(seed)
    return g, torch.randn(dim, generator=g, dtype=F64)


def _setup(equation, sigma, k, seed=0):
    dim = equation.input_dim
    g, a = _sine_direction(dim, seed)
    damping = math.exp(-0.5 * sigma**2 * float((a * a).sum()))
    model = Pointwise(lambda z: torch.sin(z @ a + 0.2))
    smoothed = Pointwise(lambda z: damping * torch.sin(z @ a + 0.2))
    x = 0.7 * equation.sample_collocation(16, generator=g, dtype=F64)
    exact_residual = equation.residual(x, lambda q: Autograd().estimate(smoothed, x, q))
    est = SteinAntithetic(sigma=sigma, num_samples=k)
    return model, x, exact_residual, est


def _loss_draws(loss, equation, model, x, est, reps):
    out = []
    for r in range(reps):
        gen = torch.Generator().manual_seed(10_000 + r)

        def draw(unbiased, gen=gen):
            return equation.residual(
                x, lambda q: est.estimate(model, x, q, generator=gen), unbiased=unbiased
            )

        value, _ = loss(draw)
        out.append(float(value))
    return torch.tensor(out, dtype=F64)


def _within(draws, target, k=5.0):
    se = float(draws.std()) / math.sqrt(len(draws))
    return abs(float(draws.mean()) - target) <= k * se, float(draws.mean()), target, se


@pytest.mark.parametrize("equation", [PoissonTwoBody(4, seed=1), AllenCahnTwoBody(4, seed=1)])
def test_unbiased_mean_equals_squared_residual_biased_exceeds_by_variance(equation):
    model, x, exact, est = _setup(equation, sigma=0.3, k=8)
    target = float((exact**2).mean())
    unbiased = _loss_draws(Unbiased2(), equation, model, x, est, reps=600)
    ok, *info = _within(unbiased, target)
    assert ok, info
    biased = _loss_draws(Biased(), equation, model, x, est, reps=600)
    # the bias of the square is the mean residual variance, estimated from fresh draws
    residuals = torch.stack(
        [
            equation.residual(
                x, lambda q, r=r: est.estimate(model, x, q, generator=torch.Generator().manual_seed(r))
            )
            for r in range(600)
        ]
    )
    variance = float(residuals.var(0).mean())
    assert float(biased.mean()) - target > 5 * float(biased.std()) / math.sqrt(600)
    ok, *info = _within(biased, target + variance, k=6.0)
    assert ok, info


def _gradient_estimate_variance(x, a, sigma, k):
    r"""tr Cov(∇̂u) of the antithetic Stein gradient of f = sin(a·z + c) at x, closed form.

    One pair gives g_j = ξ_j (f₊ − f₋)/(2σ) = ξ_j cos φ sin(σ a·ξ)/σ, φ = a·x + c. With
    v = σ²‖a‖², Stein's lemma gives E g_j = a_j e^{−v/2} cos φ (= ∂_j u_σ), and
    E[ξ_j² cos(b·ξ)] = (1 − b_j²) e^{−‖b‖²/2} with b = 2σa gives
    E g_j² = cos²φ (1 − (1 − 4σ²a_j²) e^{−2v}) / (2σ²). Summing Var g_j / K over j.
    """
    v = sigma**2 * float((a * a).sum())
    per_pair = (1 - (1 - 4 * sigma**2 * a**2) * math.exp(-2 * v)) / (2 * sigma**2) - a**2 * math.exp(-v)
    return torch.cos(x @ a + 0.2) ** 2 * float(per_pair.sum()) / k


def test_unbiased2_removes_inner_product_bias_unbiased1_does_not():
    """Unbiased1 estimates ‖∇u‖² from one group: E R̂ = R − b with b = tr Cov(∇̂u) in
    closed form, so E L_u1 = mean (R − b)² (≈ 36 here), neither mean R² (≈ 8.2) nor,
    as when one draw is reused for both factors, E R̂² = (R − b)² + Var R̂ (≈ 80)."""
    equation = GradientSquared(6)
    model, x, exact, est = _setup(equation, sigma=0.3, k=4, seed=2)
    target = float((exact**2).mean())
    u2 = _loss_draws(Unbiased2(), equation, model, x, est, reps=800)
    u1 = _loss_draws(Unbiased1(), equation, model, x, est, reps=800)
    ok, *info = _within(u2, target)
    assert ok, info
    ok1, *info1 = _within(u1, target)
    assert not ok1, info1
    _, a = _sine_direction(equation.input_dim, 2)
    bias = _gradient_estimate_variance(x, a, 0.3, 4)
    ok, *info = _within(u1, float(((exact - bias) ** 2).mean()))  # 5 measured SEs
    assert ok, info


def test_unbiased1_mean_equals_squared_residual_on_a_linear_pde():
    """Linear PDE: E R̂ = R, so E L_u1 = mean R² ([RS] Thm 4.1), within 5 measured standard
    errors of 400 replicates (SE ≈ 0.07 against a target of 0.75). Reusing one draw
    for both factors would give mean R² + mean Var R̂, about 12 SEs higher here."""
    equation = Helmholtz(6)
    model, x, exact, est = _setup(equation, sigma=0.3, k=8, seed=2)
    target = float((exact**2).mean())
    u1 = _loss_draws(Unbiased1(), equation, model, x, est, reps=400)
    ok, *info = _within(u1, target)
    assert ok, info
    # the test has power: the biased loss (one draw squared) is far outside the band
    biased = _loss_draws(Biased(), equation, model, x, est, reps=400)
    assert float(biased.mean()) - target > 8 * float(biased.std()) / math.sqrt(400)


@pytest.mark.parametrize("constraint", ["soft", "hard"])
def test_unbiased2_reads_factor_i_of_a_product_from_group_i(constraint):
    """Allen–Cahn's u³ under unbiased2 is u(G₀)·u(G₁)·u(G₂) (REFERENCE.md §2.3): a spy
    estimator answers each noise group from its own model (u_σ ≈ 2, 3, 5), so the
    residual must equal R_biased(group-0 model) + u₀³ − u₀u₁u₂ (group 0 also gives Δu and
    the linear u). Deterministic (autograd, no noise), so the tolerance is round-off; a
    factor read from the wrong group, e.g. u₀u₁u₁, changes the product by u₁/u₂ ≈ 3/5."""
    equation = AllenCahnTwoBody(4, seed=1, constraint=constraint)
    g, a = _sine_direction(equation.input_dim, 0)
    x = 0.7 * equation.sample_collocation(8, generator=g, dtype=F64)
    models = [Pointwise(lambda z, c=c: c + 0.1 * torch.sin(z @ a)) for c in (2.0, 3.0, 5.0)]
    groups = []

    def spy(queries):
        groups.append(queries)
        return Autograd().estimate(models[len(groups) - 1], x, queries)

    got = equation.residual(x, spy, unbiased=True)
    assert len(groups) == 3
    u = [equation.solution(x, model(x)) for model in models]
    group0 = equation.residual(x, lambda q: Autograd().estimate(models[0], x, q))
    torch.testing.assert_close(got, group0 + u[0] ** 3 - u[0] * u[1] * u[2], rtol=1e-12, atol=1e-12)


def test_unbiased2_groups_follow_declared_structure():
    from pinnlab.equations.residual import noise_groups

    ac = AllenCahnTwoBody(4).terms()
    groups = noise_groups(ac, unbiased=True)
    assert [len(g) for g in groups] == [2, 1, 1]  # {Δu, u}, {u}, {u}
    assert len(noise_groups(ac, unbiased=False)) == 1


def test_non_polynomial_term_refused_with_alternative():
    with pytest.raises(NotUnbiasableError, match="unbiased1"):
        Unbiased2().validate(SineGordonTwoBody(4))
    Unbiased1().validate(SineGordonTwoBody(4))
    with pytest.raises(NotUnbiasableError, match="sin u"):
        Hybrid(switch=SwitchAt(10)).validate(SineGordonTwoBody(4))


def test_hybrid_switch_policies():
    assert [SwitchAt(3).mix(s) for s in range(5)] == [0, 0, 0, 1, 1]
    assert Blend(2, 6).mix(4) == 0.5 and Blend(2, 6).mix(0) == 0 and Blend(2, 6).mix(9) == 1
    plateau = SwitchOnPlateau(window=5, tolerance=0.01)
    state = plateau.init()
    for step in range(10):  # improving: no switch
        state = plateau.observe(state, step, 100.0 * 0.5**step)
    assert state.switched_at is None
    for step in range(10, 80):  # flat: once the average settles, switch `window` steps later
        state = plateau.observe(state, step, 1.0)
        if state.switched_at is not None:
            break
    assert state.switched_at is not None and state.switched_at - plateau.window > state.best_step
    assert plateau.mix(state.switched_at, state) == 1 and plateau.mix(state.switched_at - 1, state) == 0


def test_hybrid_blend_is_convex_combination():
    equation = PoissonTwoBody(4, seed=1)
    model, x, _, est = _setup(equation, sigma=0.3, k=8)

    def make_draw():
        gen = torch.Generator().manual_seed(5)
        return lambda unbiased: equation.residual(
            x, lambda q: est.estimate(model, x, q, generator=gen), unbiased=unbiased
        )

    b, _ = Biased()(make_draw())
    hybrid = Hybrid(switch=Blend(0, 10))
    mixed, metrics = hybrid(make_draw(), 0.25)
    # same generator: first draw feeds the biased loss, the next two the unbiased one
    gen = torch.Generator().manual_seed(5)
    draws = [
        equation.residual(x, lambda q: est.estimate(model, x, q, generator=gen)) for _ in range(3)
    ]
    expected = 0.75 * (draws[0] ** 2).mean() + 0.25 * (draws[1] * draws[2]).mean()
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(b, (draws[0] ** 2).mean())
    assert float(metrics["mix"]) == 0.25


def test_plateau_switch_waits_for_min_step():
    """A flat loss from step 0 plateaus at once: the switch comes `window` steps later,
    or at the first step ≥ min_step (switched_at = that step + 1)."""

    def switch_step(policy):
        state = policy.init()
        for step in range(200):
            state = policy.observe(state, step, 1.0)
            if state.switched_at is not None:
                return state.switched_at
        return None

    assert switch_step(SwitchOnPlateau(window=5, tolerance=0.01)) == 6
    assert switch_step(SwitchOnPlateau(window=5, tolerance=0.01, min_step=30)) == 31
    assert switch_step(SwitchOnPlateau(window=5, tolerance=0.01, min_step=3)) == 6


_INVALID_SWITCHES = {
    "window=0": (lambda: SwitchOnPlateau(window=0), ValueError, "window must be an integer >= 1"),
    "window=-5": (lambda: SwitchOnPlateau(window=-5), ValueError, "window must be an integer >= 1"),
    "window=2.5": (lambda: SwitchOnPlateau(window=2.5), ValueError, "window must be an integer >= 1"),
    # like min_step and every other step count (check_integer): a Python int, with a hint
    "window=np.int64(5)": (lambda: SwitchOnPlateau(window=np.int64(5)), ValueError, r"pass int\(\.\.\.\)"),
    "min_step=np.int64(5)": (lambda: SwitchOnPlateau(min_step=np.int64(5)), ValueError, r"pass int\(\.\.\.\)"),
    "tolerance=-0.1": (lambda: SwitchOnPlateau(tolerance=-0.1), ValueError, "0 <= tolerance < 1"),
    "tolerance=1": (lambda: SwitchOnPlateau(tolerance=1.0), ValueError, "0 <= tolerance < 1"),
    "tolerance=nan": (lambda: SwitchOnPlateau(tolerance=float("nan")), ValueError, "0 <= tolerance < 1"),
    "Hybrid(switch=5000)": (lambda: Hybrid(switch=5000), TypeError, r"use switch=SwitchAt\(5000\)"),
    "Hybrid(switch='auto')": (lambda: Hybrid(switch="auto"), TypeError, "switch policy"),
    # these failed at the first step ('>=' not supported between 'int' and 'str')
    "SwitchAt('3')": (lambda: SwitchAt("3"), ValueError, "SwitchAt.step must be an integer >= 0"),
    "SwitchAt(-1)": (lambda: SwitchAt(-1), ValueError, "SwitchAt.step must be an integer >= 0"),
    "Blend(0.5, 3)": (lambda: Blend(0.5, 3), ValueError, "Blend.start must be an integer >= 0"),
}


@pytest.mark.parametrize("case", list(_INVALID_SWITCHES))
def test_invalid_switches_are_refused(case):
    build, error, message = _INVALID_SWITCHES[case]
    with pytest.raises(error, match=message):
        build()


def test_meaningful_switch_edges_stay_allowed():
    SwitchOnPlateau(window=1, tolerance=0.0)
    Hybrid(switch=Piecewise((0.0, 0.5, 1.0), 30))
    Hybrid(switch=SwitchAt(0))
    Hybrid(switch=Blend(0, 1))


def test_hybrid_draws_only_the_losses_its_mix_weights():
    """At mix 0 or 1 only that loss's residuals are drawn (biased: 1 draw, unbiased: 2);
    a fractional mix (a blend, a tuned tensor mix) draws both."""
    counted = []

    def draw(unbiased):
        counted.append(unbiased)
        return torch.ones(3, dtype=F64)

    for hybrid, mix, draws in (
        (Hybrid(switch=Blend(0, 10)), 0.0, 1),
        (Hybrid(switch=Blend(0, 10)), 1.0, 2),
        (Hybrid(switch=Blend(0, 10)), 0.25, 3),
        (Hybrid(switch=Blend(0, 10), then=Unbiased1()), 0.5, 3),
        (Hybrid(switch=SwitchOnPlateau(), first=Unbiased1(), then=Biased()), 0.0, 2),
        (Hybrid(switch=SwitchOnPlateau(), first=Unbiased1(), then=Biased()), 1.0, 1),
        (Hybrid(switch=Piecewise((0.0, 0.5), 10)), torch.tensor(0.3, dtype=F64), 3),
        (Hybrid(switch=Piecewise((0.0, 0.5), 10)), torch.tensor(0.0, dtype=F64), 3),
    ):
        counted.clear()
        hybrid(draw, mix)
        assert len(counted) == draws, (hybrid, mix)
