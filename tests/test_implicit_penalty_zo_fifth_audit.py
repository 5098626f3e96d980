"""Fifth mutation audit of the implicit, penalty and zeroth-order hypergradients (float64).

Hand-computed closed forms on a small quadratic problem.
"""

from __future__ import annotations

import warnings

import torch

from pinnlab.bilevel import cg, hypergradient
from pinnlab.bilevel.base import flatten

from .bilevel.problems import F64
from .bilevel.test_implicit_details import _quadratic


def test_cg_applies_a_small_damping():
    """H = I with λ = 1e-4: (H + λI)q = d gives q = d/(1 + 1e-4) in one CG step, so the
    hypergradient Bᵀq is Bᵀd/(1.0001) (a small λ is not dropped)."""
    d = torch.tensor([1.0, -2.0, 4.0], dtype=F64)
    problem, phi, b_mat = _quadratic(torch.eye(3, dtype=F64), lambda theta, phi: d @ theta["w"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergradient(problem, phi, cg(iterations=3, damping=1e-4, tol=1e-10))
    torch.testing.assert_close(flatten(result.grad), b_mat.T @ d / 1.0001, rtol=1e-14, atol=0)

