"""Third mutation audit of the estimator base, Autograd and Hutchinson.

Each test pins a behaviour that a one-line change of pinnlab/estimators/base.py,
autograd.py or hutchinson.py left unnoticed by the earlier suites: query vectors with
the wrong number of columns, the documented defaults (evaluate's 1024-point chunks,
independent Hutchinson probes), the refusal of non-positive sizes, and θ-gradients
through every query. Values come from closed forms in float64.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import (
    Autograd,
    Directional,
    Gradient,
    HessianDiagonal,
    Hutchinson,
    Value,
    WeightedLaplacian,
)
from pinnlab.estimators.base import Query, check_vector_shape, expand_vector
from pinnlab.nets import Pointwise

F64 = torch.float64
DIM = 3
_ESTIMATORS = {
    "autograd": Autograd(chunk_size=2),
    "hutchinson-independent": Hutchinson(num_probes=2),
    "hutchinson-shared": Hutchinson(num_probes=2, noise="shared"),
}


def _points(n=4, seed=0):
    return torch.randn(n, DIM, dtype=F64, generator=torch.Generator().manual_seed(seed))


# -- query vector shapes ----------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 4], ids=["one-row", "per-point"])
@pytest.mark.parametrize("columns", [DIM - 1, DIM + 1])
def test_a_two_dimensional_query_vector_needs_one_column_per_input(rows, columns):
    """(1, D') and (N, D') with D' ≠ D are refused by the shape check with its message,
    not passed on to a broadcast that fails (or succeeds) somewhere else."""
    x = _points()
    bad = torch.ones(rows, columns, dtype=F64)
    with pytest.raises(ValueError, match=r"must have shape \(3,\) or \(4, 3\) .* got \(" + str(rows)):
        check_vector_shape(bad, x)
    with pytest.raises(ValueError, match="query vector/weights must have shape"):
        expand_vector(bad, x)


@pytest.mark.parametrize("name", list(_ESTIMATORS))
@pytest.mark.parametrize("query", [Directional, WeightedLaplacian])
def test_estimators_refuse_per_point_vectors_with_an_extra_column(name, query):
    """An (N, D+1) vector (e.g. weights built with a time column the points lack) is a
    clear ValueError from Autograd and Hutchinson."""
    x = _points()
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(ValueError, match="query vector/weights must have shape"):
        _ESTIMATORS[name].estimate(f, x, [query(torch.ones(4, DIM + 1, dtype=F64))],
                                   generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(_ESTIMATORS))
@pytest.mark.parametrize("query", [Directional, WeightedLaplacian])
def test_a_scalar_query_vector_is_refused_not_broadcast(name, query):
    """A 0-d tensor is none of (D,), (1, D), (N, D): refused with the shape message
    rather than broadcast to every column (a scalar weight is not the Laplacian)."""
    x = _points()
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(ValueError, match=r"must have shape .* got \(\)"):
        check_vector_shape(torch.tensor(1.0, dtype=F64), x)
    with pytest.raises(ValueError, match="query vector/weights must have shape"):
        _ESTIMATORS[name].estimate(f, x, [query(torch.tensor(1.0, dtype=F64))],
                                   generator=torch.Generator().manual_seed(0))


# -- evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [Autograd(), Hutchinson(num_probes=1)], ids=["autograd", "hutchinson"])
def test_evaluate_defaults_to_chunks_of_1024_points(estimator):
    """evaluate's default chunk_size is 1024: 1025 points are two model calls of 1024
    and 1 points, in order, with the model's values."""
    sizes = []

    def model(z):
        sizes.append(z.shape[0])
        return z.sum(-1)

    x = torch.arange(1025 * 2, dtype=F64).reshape(1025, 2)
    out = estimator.evaluate(model, x, generator=torch.Generator().manual_seed(0))
    assert sizes == [1024, 1]
    assert torch.equal(out, x.sum(-1))


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Autograd(chunk_size=0), "chunk_size must be an integer >= 1, got 0"),
    (lambda: Autograd(chunk_size=-2), "chunk_size must be an integer >= 1, got -2"),
    (lambda: Autograd(chunk_size=2.0), "chunk_size must be an integer >= 1, got 2.0"),
    (lambda: Hutchinson(num_probes=0), "num_probes must be an integer >= 1, got 0"),
    (lambda: Hutchinson(num_probes=True), "num_probes must be an integer >= 1, got True"),
], ids=["autograd-zero", "autograd-negative", "autograd-float", "hutchinson-zero", "hutchinson-bool"])
def test_sizes_below_one_or_not_integers_are_refused_when_built(make, message):
    """Autograd(chunk_size=0) would fail only at the first Hessian (range step 0) and
    Hutchinson(num_probes=0) would average zero probes into NaN: both are refused at
    construction with the size's name."""
    with pytest.raises(ValueError, match=message):
        make()


def test_hutchinson_default_noise_is_independent_per_point():
    """The documented default is independent probes per point: at 6 copies of one point,
    f = ½zᵀQz with off-diagonal Q, the default estimator's Hessian diagonals (16 probes)
    differ between rows (shared probes would make every row equal); seed fixed."""
    g = torch.Generator().manual_seed(2)
    m = torch.randn(4, 4, generator=g, dtype=F64)
    q = m + m.T
    f = Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1))
    est = Hutchinson()
    assert est.noise == "independent"
    (hess,) = est.estimate(f, torch.zeros(6, 4, dtype=F64), [HessianDiagonal()],
                           generator=torch.Generator().manual_seed(3))
    assert len({tuple(r) for r in hess.tolist()}) > 1


# -- θ-gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(_ESTIMATORS))
def test_parameter_gradients_flow_through_every_query(name):
    """f = Σ_j θ_j (z_j²/2 + z_j): ∇f = θ⊙(x+1), ∂_jj f = θ_j (exact for every Rademacher
    probe, the Hessian being diagonal). Summed over the N points, the θ-gradients are
    Value: Σ(x²/2+x), Gradient: Σ(x+1), a·∇f: a⊙Σ(x+1), Hessian diagonal: N per column,
    Σ_j w_j ∂_jj f: N·w. A detached answer would give no gradient (or zero)."""
    theta = torch.tensor([1.5, -0.5, 2.0], dtype=F64, requires_grad=True)
    f = Pointwise(lambda z: (theta * (0.5 * z * z + z)).sum(-1))
    x = _points(5, seed=1)
    a = torch.tensor([0.5, -2.0, 1.0], dtype=F64)
    w = torch.tensor([-1.0, 0.0, 3.0], dtype=F64)
    answers = _ESTIMATORS[name].estimate(
        f, x, [Value(), Gradient(), Directional(a), HessianDiagonal(), WeightedLaplacian(w)],
        generator=torch.Generator().manual_seed(0))
    expected = [
        (0.5 * x * x + x).sum(0),
        (x + 1).sum(0),
        a * (x + 1).sum(0),
        torch.full((DIM,), 5.0, dtype=F64),
        5 * w,
    ]
    for answer, grad_theta in zip(answers, expected, strict=True):
        assert answer.requires_grad
        (got,) = torch.autograd.grad(answer.sum(), theta, retain_graph=True)
        torch.testing.assert_close(got, grad_theta, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(answers[3], theta.detach().expand(5, -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(answers[4], (w * theta.detach()).sum().expand(5), rtol=0, atol=1e-12)


# -- validation ----------------------------------------------------------------------------


class _Curl(Query):
    """A query no estimator knows."""

    order = 1


@pytest.mark.parametrize(("name", "label"), [
    ("autograd", "Autograd"), ("hutchinson-independent", "Hutchinson"), ("hutchinson-shared", "Hutchinson"),
])
def test_an_unknown_query_is_refused_with_its_name(name, label):
    """A query the estimator cannot answer is a TypeError naming the estimator and the
    query class, even after answerable queries (never a silent placeholder answer)."""
    f = Pointwise(lambda z: (z ** 2).sum(-1))
    with pytest.raises(TypeError, match=f"^{label} cannot answer _Curl$"):
        _ESTIMATORS[name].estimate(f, _points(), [Value(), HessianDiagonal(), _Curl()],
                                   generator=torch.Generator().manual_seed(0))
