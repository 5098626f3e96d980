"""FeatureCache keeps W δ_p for the parts it was formed from, and only those.

Through the estimator every cache sees one draw's parts, so only the class's own contract
shows a cache that matched parts by count alone: other parts of the same shape (another
draw) got the first draw's features.
"""

from __future__ import annotations

import torch

from pinnlab.nets.perturbation import FeatureCache

F64 = torch.float64


def test_other_parts_with_the_same_weight_form_their_own_features():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, generator=g, dtype=F64)
    first = (torch.randn(5, 3, generator=g, dtype=F64),)
    other = (torch.randn(5, 3, generator=g, dtype=F64),)
    cache = FeatureCache()
    (a,) = cache.features(weight, first)
    torch.testing.assert_close(a, first[0] @ weight.T, rtol=0, atol=0)
    (b,) = cache.features(weight, other)
    torch.testing.assert_close(b, other[0] @ weight.T, rtol=0, atol=0)
    # the same parts again: the kept tensor itself, not a new product
    (c,) = cache.features(weight, other)
    assert c is b
