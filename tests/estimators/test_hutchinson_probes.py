"""Hutchinson: one set of Rademacher probes per call, shared by its second-order queries,
and a clear refusal of an unknown noise mode.

The Hessian diagonal and the weighted Laplacians of one call come from the same V
Hessian-vector products (one noise group, V HVPs per point whatever the number of
queries: one draw of probes from the generator): Σ_j w_j ∂̂_jj f is then exactly the estimated diagonal contracted with w.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import HessianDiagonal, Hutchinson, WeightedLaplacian
from pinnlab.nets import Pointwise

F64 = torch.float64


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_one_call_answers_its_second_order_queries_from_one_set_of_probes(noise):
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=g, dtype=F64)
    q = m + m.T  # off-diagonal terms make every probe set give other estimates
    x = torch.randn(3, 4, generator=g, dtype=F64)
    w = torch.rand(4, generator=g, dtype=F64) + 0.5
    f = Pointwise(lambda z: 0.5 * ((z @ q) * z).sum(-1))
    generator = torch.Generator().manual_seed(1)
    hess, lap, lap_again = Hutchinson(num_probes=3, noise=noise).estimate(
        f, x, [HessianDiagonal(), WeightedLaplacian(w), WeightedLaplacian(torch.ones(4, dtype=F64))],
        generator=generator)
    torch.testing.assert_close(lap, (hess * w).sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lap_again, hess.sum(-1), rtol=1e-12, atol=1e-12)
    # the generator gave one draw of V probes: the same estimate as a call with one query
    one_query = torch.Generator().manual_seed(1)
    (alone,) = Hutchinson(num_probes=3, noise=noise).estimate(f, x, [HessianDiagonal()], generator=one_query)
    assert torch.equal(alone, hess)
    # and the generator was drawn from once: three queries left it where one query does
    assert torch.equal(generator.get_state(), one_query.get_state())


def test_an_unknown_noise_mode_is_refused():
    with pytest.raises(ValueError, match="noise must be 'independent' or 'shared'"):
        Hutchinson(noise="both")
