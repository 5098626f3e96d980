"""Third mutation audit of the estimators (Stein, Hutchinson, autograd, base) and the losses.

Each test pins a behaviour that a one-line change of the library left unnoticed by the
earlier suites. Values are checked against closed forms (Gaussian smoothing of quadratics
is exact: u_σ = f + ½Σ_j σ_j² Q_jj, ∂_jj u_σ = Q_jj), against the model evaluated directly
in float64, or statistically with the tolerance stated in the test.
"""

from __future__ import annotations

import math

import pytest
import torch

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

F64 = torch.float64
DIM = 3


# -- SteinAntithetic -------------------------------------------------------------------


def test_independent_time_smoothing_refuses_a_time_weight_at_any_single_point():
    """Per-point (N, D) Laplacian weights with a nonzero time weight at one point only:
    ∂_tt is not available with independent time smoothing, so this must be refused like
    a time weight at every point (not silently estimated with the time noise)."""
    x = torch.randn(4, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    weights = torch.ones(4, DIM, dtype=F64)
    weights[:, -1] = 0
    weights[2, -1] = 1.0
    est = SteinAntithetic(sigma=0.1, num_samples=4, time_smoothing="independent")
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(ValueError, match="time_smoothing='joint'"):
        est.estimate(f, x, [WeightedLaplacian(weights)], generator=torch.Generator().manual_seed(1))
    weights[2, -1] = 0  # no time weight anywhere: answered
    (lap,) = est.estimate(f, x, [WeightedLaplacian(weights)], generator=torch.Generator().manual_seed(1))
    assert lap.shape == (4,)


def test_evaluate_with_independent_noise_uses_the_sigma_it_is_given():
    """evaluate(sigma=…) overrides the configured σ for independent noise too. For
    f = ‖z‖² the antithetic value is exactly ‖x‖² + σ²·mean_k‖ξ_k‖² (E = ‖x‖² + Dσ²):
    with the same seed it is the estimate at that σ number for number, and within
    ±0.25 of the closed form (mean_k‖ξ_k‖² has std √(2D/K) = 0.15 at K = 256, times σ² =
    0.25: 0.04, so 6 standard errors); the configured σ = 0.01 would give ≈ 0.75 less."""
    x = torch.randn(6, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    est = SteinAntithetic(sigma=0.01, num_samples=256, noise="independent")
    sigma = torch.tensor(0.5, dtype=F64)
    got = est.evaluate(f, x, generator=torch.Generator().manual_seed(3), chunk_size=64, sigma=sigma)
    (same,) = est.estimate(f, x, [Value()], generator=torch.Generator().manual_seed(3), sigma=sigma)
    torch.testing.assert_close(got, same, rtol=0, atol=1e-12)
    exact = (x ** 2).sum(-1) + DIM * 0.25
    assert float((got - exact).abs().max()) < 0.25, (got - exact)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_sigma_is_taken_in_the_points_dtype(noise):
    """σ = 0.1 as a Python float and as a float64 tensor are one σ for float64 points
    (not 0.1 rounded to float32: a relative 1.5e-9 off); for float32 points a float64 σ
    tensor gives float32 answers equal to those of σ = 0.1."""
    f = Pointwise(lambda z: torch.sin(z).sum(-1) + z[..., 0] * z[..., 1] ** 2)
    queries = [Value(), Gradient(), WeightedLaplacian(torch.ones(DIM, dtype=F64))]
    est = SteinAntithetic(sigma=0.3, num_samples=8, noise=noise)
    x = torch.randn(4, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))

    def run(points, sigma):
        return est.estimate(f, points, queries, generator=torch.Generator().manual_seed(1), sigma=sigma)

    for as_float, as_tensor in zip(run(x, 0.1), run(x, torch.tensor(0.1, dtype=F64))):
        assert as_float.dtype == F64 and torch.equal(as_float, as_tensor)
    for as_float, as_tensor in zip(run(x.float(), 0.1), run(x.float(), torch.tensor(0.1, dtype=F64))):
        assert as_tensor.dtype == torch.float32 and torch.equal(as_float, as_tensor)


def test_evaluate_with_independent_noise_and_own_chunks_draws_per_point():
    """Independent noise with the estimator's own chunk_size: evaluate is the estimate of
    the values (each chunk drawing its own ξ in turn), so copies of one point get
    different values, not the one value of a shared draw."""
    x = torch.ones(7, DIM, dtype=F64)
    f = Pointwise(lambda z: torch.sin(z).sum(-1) + z[..., 0] * z[..., 1] ** 2)
    est = SteinAntithetic(sigma=0.3, num_samples=4, noise="independent", chunk_size=3)
    got = est.evaluate(f, x, generator=torch.Generator().manual_seed(2))
    (expected,) = est.estimate(f, x, [Value()], generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, expected)
    assert len(set(got.tolist())) == 7


# -- AbstractDerivativeEstimator.evaluate ----------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
def test_base_evaluate_keeps_the_points_in_order_across_chunks(chunk_size):
    """evaluate chunks the points and concatenates: the k-th value is u at the k-th point.
    Autograd (and Hutchinson) give u = f exactly, so the values equal f(x) in float64."""
    x = torch.randn(7, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    f = Pointwise(lambda z: torch.sin(z).sum(-1) + z[..., 0] * z[..., 1])
    for estimator in (Autograd(), Hutchinson(num_probes=2)):
        got = estimator.evaluate(f, x, generator=torch.Generator().manual_seed(0), chunk_size=chunk_size)
        torch.testing.assert_close(got, f(x), rtol=0, atol=1e-14)


def test_stein_independent_evaluate_keeps_the_points_in_order():
    """Stein, independent noise: the value of f = ‖z‖² at point k is ‖x_k‖² + σ²·(mean of
    K squared norms), within 0.05 of ‖x_k‖² + Dσ² for σ = 0.1, K = 64 (std 0.002); points
    far apart (‖x_k‖² = 0, 1, 4, …) tell a permutation from the identity."""
    x = torch.zeros(6, DIM, dtype=F64)
    x[:, 0] = torch.arange(6, dtype=F64)
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    est = SteinAntithetic(sigma=0.1, num_samples=64)
    got = est.evaluate(f, x, generator=torch.Generator().manual_seed(0), chunk_size=4)
    exact = (x ** 2).sum(-1) + DIM * 0.01
    assert float((got - exact).abs().max()) < 0.05, got


@pytest.mark.parametrize("estimator", [
    Autograd(), Hutchinson(num_probes=2), SteinAntithetic(num_samples=2),
    SteinAntithetic(num_samples=2, noise="shared", chunk_size=2), SteinAntithetic(num_samples=2, chunk_size=2),
], ids=["autograd", "hutchinson", "stein", "stein-shared-chunked", "stein-chunked"])
@pytest.mark.parametrize("query", [WeightedLaplacian, Directional])
def test_per_point_weights_for_another_number_of_points_are_refused_clearly(estimator, query):
    """(M, D) weights or directions for N ≠ M points (M ≠ 1) are neither one vector nor
    one per point: the documented ValueError, not a broadcasting error from deep inside
    torch, and not (for Stein with chunks of M points) the M vectors applied to every chunk."""
    x = torch.zeros(4, DIM, dtype=F64)
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(ValueError, match=r"query vector/weights must have shape \(3,\) or \(4, 3\).*got \(2, 3\)"):
        estimator.estimate(f, x, [query(torch.ones(2, DIM, dtype=F64))],
                           generator=torch.Generator().manual_seed(0))


# -- Hutchinson --------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("num_probes", [1, 2])
def test_hutchinson_is_exact_on_a_separable_quadratic_for_any_probe_count(num_probes, noise):
    """f = ½Σ_j d_j z_j² + sin-free: ∇²f v = d⊙v, so every Rademacher probe gives
    v_j (∇²f v)_j = d_j v_j² = d_j exactly: the Hessian diagonal is d and Σ_j w_j ∂_jj f is
    w·d at every point, even with one probe and negative curvatures and weights."""
    d = torch.tensor([2.0, -3.0, 0.5], dtype=F64)
    w = torch.tensor([1.0, 2.0, -4.0], dtype=F64)
    f = Pointwise(lambda z: 0.5 * (d * z * z).sum(-1) + z[..., 0])
    x = torch.randn(5, DIM, dtype=F64, generator=torch.Generator().manual_seed(0))
    hess, lap = Hutchinson(num_probes=num_probes, noise=noise).estimate(
        f, x, [HessianDiagonal(), WeightedLaplacian(w)], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hess, d.expand(5, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(lap, torch.full((5,), float(w @ d), dtype=F64), rtol=0, atol=1e-12)


def test_hutchinson_independent_probes_differ_by_point_shared_ones_do_not():
    """At 8 copies of one point, f = ½zᵀQz with off-diagonal Q: one probe gives
    v ⊙ (Qv), which differs unless two probes are equal up to sign (probability 1/8 per
    pair, so all 8 rows equal with probability 8⁻⁷ ≈ 5e-7; the seed is fixed). Shared
    probes give 8 equal rows; independent ones must not."""
    g = torch.Generator().manual_seed(2)
    m = torch.randn(4, 4, generator=g, dtype=F64)
    q = m + m.T
    f = Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1))
    x = torch.zeros(8, 4, dtype=F64)
    rows = {}
    for noise in ("independent", "shared"):
        (hess,) = Hutchinson(num_probes=1, noise=noise).estimate(
            f, x, [HessianDiagonal()], generator=torch.Generator().manual_seed(3))
        rows[noise] = len({tuple(r) for r in hess.tolist()})
    assert rows == {"independent": rows["independent"], "shared": 1}
    assert rows["independent"] > 1


# -- Autograd ----------------------------------------------------------------------------


def _sine_quadratic(seed=0):
    """f = ½zᵀQz + Σ sin z_j: ∂_jj f = Q_jj − sin x_j."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(DIM, DIM, generator=g, dtype=F64)
    q = m + m.T
    x = torch.randn(4, DIM, generator=g, dtype=F64)
    f = Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1) + torch.sin(z).sum(-1))
    return f, x, torch.diagonal(q) - torch.sin(x)


@pytest.mark.parametrize("weights", [
    torch.tensor([-1.0, 2.0, 0.0], dtype=F64),  # e.g. a heat operator's −Δ
    torch.tensor([[-1.0, 0.0, 2.0], [-2.0, 1.0, 0.0], [-0.5, 0.0, 0.0], [-3.0, 1.0, 1.0]], dtype=F64),
], ids=["shared", "per-point"])
def test_autograd_weighted_laplacian_keeps_negative_weights(weights):
    """Columns are skipped only where the weight is 0: a negative weight is a weight."""
    f, x, diag = _sine_quadratic()
    (lap,) = Autograd(chunk_size=2).estimate(f, x, [WeightedLaplacian(weights)])
    torch.testing.assert_close(lap, (diag * weights).sum(-1), rtol=1e-12, atol=1e-12)


def test_autograd_laplacians_on_other_columns_of_one_size_in_one_call():
    """Two weightings with as many nonzero columns but different ones, and the full
    diagonal, in one call: each must use the Hessian columns of its own nonzero set."""
    f, x, diag = _sine_quadratic(1)
    w1 = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    w2 = torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    w3 = torch.tensor([[0.0, 2.0, 0.0]], dtype=F64)
    l1, l2, l3, hess = Autograd().estimate(
        f, x, [WeightedLaplacian(w1), WeightedLaplacian(w2), WeightedLaplacian(w3), HessianDiagonal()])
    torch.testing.assert_close(l1, diag[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(l2, 3 * diag[:, 2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(l3, 2 * diag[:, 1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hess, diag, rtol=1e-12, atol=1e-12)


# -- losses --------------------------------------------------------------------------------


def _scripted(*draws):
    it = iter(torch.tensor(d, dtype=F64) for d in draws)
    return lambda unbiased: next(it)


@pytest.mark.parametrize("mix", [0.0, 0.3, 1.0, torch.tensor(0.3, dtype=F64),
                                 torch.tensor(0.3, dtype=F64, requires_grad=True)])
def test_hybrid_reports_its_mix_in_the_losses_dtype(mix):
    """metrics['mix'] is the mix itself, in the loss's dtype: 0.3 exactly in float64
    (float32 would be 0.30000001192…), and detached from a tuned (differentiated) mix."""
    from pinnlab.losses import Blend, Hybrid

    loss, metrics = Hybrid(switch=Blend(0, 10))(_scripted([1.0, 2.0], [3.0, -1.0], [0.5, 4.0]), mix)
    assert loss.dtype == F64 and metrics["mix"].dtype == F64
    assert float(metrics["mix"]) == (float(mix.detach()) if isinstance(mix, torch.Tensor) else mix)
    assert not metrics["mix"].requires_grad


def _policies():
    from pinnlab.losses import Blend, Piecewise, SwitchAt

    return [SwitchAt(0), SwitchAt(1), SwitchAt(5), Blend(0, 1), Blend(0, 4), Blend(3, 5),
            Piecewise((0.0, 1.0), 3), Piecewise((0.0, 0.0, 0.5), 7), Piecewise((0.25,), 4)]


@pytest.mark.parametrize("switch", _policies(), ids=repr)
def test_starts_within_answers_exactly_whether_the_mix_leaves_zero_in_the_run(switch):
    """A run of ``steps`` (0 … steps − 1) sees a mix above 0 iff ``starts_within(steps)``:
    checked against the policy's own mix at every step, for runs around the edge."""
    for steps in range(0, 12):
        reached = any(switch.mix(step) > 0 for step in range(steps))
        assert switch.starts_within(steps) == reached, steps


def test_unbiased_losses_average_to_the_squared_residual_and_biased_adds_the_variance():
    """Residual draws R̂ = R + s·ε with fresh ε ~ N(0, 1) per draw (independent groups):
    E L_u1 = E L_u2 = mean R², E L_b = mean R² + s², E Hybrid(mix=½) = mean R² + s²/2.
    Means over 2000 replicates must lie within 5 standard errors (estimated from the
    replicates) of these values, and the unbiased mean more than 5 standard errors below
    mean R² + s² (the bias of the square is s² = 0.25 here, ~25 standard errors)."""
    from pinnlab.losses import Biased, Blend, Hybrid, Unbiased1, Unbiased2

    residual = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    s, reps = 0.5, 2000
    target = float((residual ** 2).mean())
    gen = torch.Generator().manual_seed(0)

    def draw(unbiased):
        return residual + s * torch.randn(residual.shape, generator=gen, dtype=F64)

    expected = {
        "u1": (Unbiased1(), target), "u2": (Unbiased2(), target), "b": (Biased(), target + s * s),
        "hybrid": (lambda d: Hybrid(switch=Blend(0, 2))(d, 0.5), target + s * s / 2),
    }
    for name, (loss, mean) in expected.items():
        values = torch.tensor([float(loss(draw)[0]) for _ in range(reps)], dtype=F64)
        se = float(values.std()) / math.sqrt(reps)
        assert abs(float(values.mean()) - mean) <= 5 * se, (name, float(values.mean()), mean, se)
        if name in ("u1", "u2"):
            assert target + s * s - float(values.mean()) > 5 * se, name


@pytest.mark.parametrize("weights", [torch.zeros(DIM, dtype=F64), torch.zeros(4, DIM, dtype=F64)],
                         ids=["shared", "per-point"])
def test_autograd_laplacian_with_all_zero_weights_is_zero_at_every_point(weights):
    """No nonzero weight: no Hessian column is computed and Σ_j w_j ∂_jj f = 0, one per point."""
    f, x, _ = _sine_quadratic()
    (lap,) = Autograd().estimate(f, x, [WeightedLaplacian(weights)])
    assert lap.shape == (4,) and lap.dtype == F64
    assert torch.equal(lap, torch.zeros(4, dtype=F64))


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=2), SteinAntithetic(num_samples=2)],
                         ids=["autograd", "hutchinson", "stein"])
def test_a_one_entry_weight_vector_is_not_broadcast_over_the_columns(estimator):
    """(1,) weights for 3 columns are the wrong width (as (2,) is), not 'the same weight
    on every column'."""
    x = torch.zeros(4, DIM, dtype=F64)
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(ValueError, match=r"query vector/weights must have shape \(3,\) or \(4, 3\).*got \(1,\)"):
        estimator.estimate(f, x, [WeightedLaplacian(torch.ones(1, dtype=F64))],
                           generator=torch.Generator().manual_seed(0))
