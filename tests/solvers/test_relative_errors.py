"""relative_errors against hand-computed values at small |u*| (sum |u*| < 1)."""
import math

import pytest
import torch

from pinnlab.solvers.evaluate import relative_errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relative_errors_closed_form(dtype):
    exact = torch.tensor([0.1, -0.2, 0.05], dtype=dtype)
    prediction = exact + torch.tensor([0.01, 0.02, -0.03], dtype=dtype)
    e = relative_errors(prediction, exact)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert e.rel_l2 == pytest.approx(math.sqrt(0.0014 / 0.0525), rel=tol)
    assert e.rel_l1 == pytest.approx(0.06 / 0.35, rel=tol)
    assert e.max_err == pytest.approx(0.03, rel=tol)
