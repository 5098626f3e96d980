"""Mutation audit of the Hutchinson and autograd estimators and the estimator base class.

Each test pins a behaviour that a one-line change of pinnlab/estimators/{hutchinson,
autograd,base}.py left unnoticed by the earlier suites. Hutchinson estimates are checked
exactly, not statistically: for f = ½zᵀQz + Σ_j sin z_j the Hessian is H(x) = Q − diag(sin x)
in closed form, and with D = 3 every Rademacher probe v ∈ {±1}³ can be enumerated, so an
estimate from V probes must be the mean of V of the finitely many outcomes v ⊙ (Hv) (and
(v⊙w)ᵀHv for the weighted Laplacian, from the same probes), to float64 round-off.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from pinnlab.config import EstimatorSection
from pinnlab.estimators import (
    Autograd,
    Directional,
    Gradient,
    HessianDiagonal,
    Hutchinson,
    SteinAntithetic,
    Value,
    WeightedLaplacian,
)
from pinnlab.nets import Pointwise
from pinnlab.nets.perturbation import evaluate_pointwise

F64 = torch.float64
DIM = 3
_PROBES = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=DIM)), dtype=F64)  # (8, D)


def _sine_quadratic(points: int, seed: int = 0):
    """f = ½zᵀQz + Σ sin z_j with off-diagonal Q, its points and Hessians H(x_n) `(N, D, D)`."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(DIM, DIM, generator=g, dtype=F64)
    q = m + m.T
    x = torch.randn(points, DIM, generator=g, dtype=F64)
    f = Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1) + torch.sin(z).sum(-1))
    hessians = q - torch.diag_embed(torch.sin(x))
    return f, x, hessians


def _matching_probe_sets(diag, lap, hessian, w, num_probes):
    """The tuples of V probes (indices into _PROBES) whose mean outcomes are (diag, lap) at one point."""
    hv = _PROBES @ hessian  # row k: H v_k (H symmetric)
    outcomes = _PROBES * hv  # v ⊙ Hv, (8, D)
    lap_outcomes = (outcomes * w).sum(-1)  # (v⊙w)ᵀHv, (8,)
    found = set()
    for combo in itertools.combinations_with_replacement(range(len(_PROBES)), num_probes):
        idx = list(combo)
        if (torch.allclose(outcomes[idx].mean(0), diag, rtol=0, atol=1e-12)
                and torch.allclose(lap_outcomes[idx].mean(0), lap, rtol=0, atol=1e-12)):
            found.add(combo)
    return found


@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("num_probes", [1, 2])
def test_hutchinson_estimates_are_means_of_num_probes_rademacher_outcomes(num_probes, noise):
    """The Hessian diagonal and the weighted Laplacian of one call are, at every point, the
    mean of exactly V outcomes v ⊙ (H v) and (v⊙w)ᵀ H v for V probes v ∈ {±1}^D (the same
    V probes at every point with shared noise). A draw of V + 1 probes, a sum instead of a
    mean, or non-Rademacher probes give values outside this finite set (all still unbiased
    or exact on the separable quadratics the earlier tests use)."""
    f, x, hessians = _sine_quadratic(8)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    hess, lap = Hutchinson(num_probes=num_probes, noise=noise).estimate(
        f, x, [HessianDiagonal(), WeightedLaplacian(w)], generator=torch.Generator().manual_seed(1))
    per_point = [_matching_probe_sets(hess[n], lap[n], hessians[n], w, num_probes) for n in range(len(x))]
    assert all(per_point), [bool(s) for s in per_point]
    if noise == "shared":
        # a probe and its negative give the same outcome: compare up to sign
        def up_to_sign(sets):
            return {tuple(sorted(min(k, len(_PROBES) - 1 - k) for k in combo)) for combo in sets}

        assert set.intersection(*(up_to_sign(s) for s in per_point))


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_hutchinson_per_point_weights_weight_each_point_by_its_own_row(noise):
    """(N, D) weights on f = ½Σ_j d_j z_j²: every probe gives v_j (Hv)_j = d_j, so point n's
    weighted Laplacian is w_n·d exactly (the first row was used for every point)."""
    d = torch.tensor([2.0, -3.0, 0.5], dtype=F64)
    f = Pointwise(lambda z: 0.5 * (d * z * z).sum(-1))
    x = torch.randn(4, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]], dtype=F64)
    (lap,) = Hutchinson(num_probes=1, noise=noise).estimate(
        f, x, [WeightedLaplacian(w)], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lap, w @ d, rtol=0, atol=1e-12)


def test_hutchinson_default_probe_count_is_the_documented_sixteen():
    """README: Hutchinson uses 16 probes by default; the class default and the config
    default (estimator.probes) agree on it."""
    assert Hutchinson().num_probes == EstimatorSection().probes == 16


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2), SteinAntithetic(num_samples=4)],
                         ids=["autograd", "hutchinson", "stein"])
def test_evaluate_builds_no_graph_to_the_parameters(estimator):
    """evaluate is documented as 'without autograd': with a model whose parameter requires
    grad, the values hold no graph (a chunked evaluation of many points kept every chunk's
    graph alive)."""
    theta = torch.tensor([1.5, -0.5, 2.0], dtype=F64, requires_grad=True)
    f = Pointwise(lambda z: torch.sin(z @ theta))
    x = torch.randn(5, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = estimator.evaluate(f, x, generator=torch.Generator().manual_seed(0), chunk_size=2)
    assert out.shape == (5,)
    assert not out.requires_grad and out.grad_fn is None


def test_the_stochastic_flag_says_which_estimators_depend_on_the_generator():
    """Autograd answers are the same for any generator (stochastic False); Hutchinson and
    Stein draw from it (stochastic True)."""
    f, x, _ = _sine_quadratic(4)
    queries = [HessianDiagonal()]
    for estimator, stochastic in ((Autograd(), False), (Hutchinson(num_probes=1), True),
                                  (SteinAntithetic(sigma=0.1, num_samples=2), True)):
        a, b = (estimator.estimate(f, x, queries, generator=torch.Generator().manual_seed(s))[0] for s in (0, 1))
        assert estimator.stochastic is stochastic
        assert torch.equal(a, b) is not stochastic


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=1)], ids=["autograd", "hutchinson"])
def test_exact_first_derivatives_at_a_single_point(estimator):
    """Autograd and Hutchinson give ∇f and a·∇f exactly, also for a batch of one point:
    f = ½zᵀQz + Σ sin z_j has ∇f = Qx + cos x."""
    f, x, hessians = _sine_quadratic(1)
    q = hessians[0] + torch.diag(torch.sin(x[0]))  # H + diag(sin x) = Q
    a = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    grad, directional = estimator.estimate(f, x, [Gradient(), Directional(a)],
                                           generator=torch.Generator().manual_seed(0))
    expected = x @ q + torch.cos(x)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(directional, expected @ a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("queries", "patterns"), [
    ([Value()], 2),  # f(x ± δ) only
    ([Value(), Gradient()], 3),  # and the time-flipped pattern for ∂_t
    ([Value(), WeightedLaplacian(torch.tensor([1.0, 1.0, 0.0], dtype=F64))], 3),  # and f(x)
], ids=["value", "gradient", "laplacian"])
def test_query_orders_decide_which_stein_patterns_are_evaluated(queries, patterns):
    """Query.order is what Stein's independent (x, t) smoothing reads to choose its sign
    patterns: a value-only estimate (order 0) evaluates the two antithetic patterns, not the
    first-order time pattern as well (one more network pass per sample for nothing)."""
    seen = []

    def model(inputs):
        seen.append(inputs.num_patterns)
        return evaluate_pointwise(lambda z: torch.sin(z).sum(-1), inputs)

    x = torch.randn(4, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    est = SteinAntithetic(sigma=0.1, num_samples=4, time_smoothing="independent")
    est.estimate(model, x, queries, generator=torch.Generator().manual_seed(0))
    assert seen == [patterns]
