"""Biased, unbiased1/2 and hybrid losses against the exact residual of the smoothed model.

Probabilistic tests: means over R independent replicates (fixed seeds) are compared
within 5 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.equations import (
    GRADIENT,
    LAPLACIAN,
    AbstractEquation,
    AllenCahnTwoBody,
    NotUnbiasableError,
    PoissonTwoBody,
    SineGordonTwoBody,
    Term,
)
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import Biased, Blend, Hybrid, SwitchAt, SwitchOnPlateau, Unbiased1, Unbiased2
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


def _setup(equation, sigma, k, seed=0):
    dim = equation.input_dim
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, generator=g, dtype=F64)
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


def test_unbiased2_removes_inner_product_bias_unbiased1_does_not():
    equation = GradientSquared(6)
    model, x, exact, est = _setup(equation, sigma=0.3, k=4, seed=2)
    target = float((exact**2).mean())
    u2 = _loss_draws(Unbiased2(), equation, model, x, est, reps=800)
    u1 = _loss_draws(Unbiased1(), equation, model, x, est, reps=800)
    ok, *info = _within(u2, target)
    assert ok, info
    ok1, *info1 = _within(u1, target)
    assert not ok1, info1


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
