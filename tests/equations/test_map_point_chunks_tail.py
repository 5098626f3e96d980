"""`map_point_chunks` keeps a last block of one row."""
import torch

import pinnlab.equations.base as base
from pinnlab.equations import PoissonTwoBody


def test_blocked_exact_equals_one_call_for_every_tail_length(monkeypatch):
    eq = PoissonTwoBody(4, seed=1)
    x = torch.rand(9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    whole = eq.exact(x)
    monkeypatch.setattr(base, "POINT_ELEMENT_BUDGET", 4 * 4)  # 4 rows per block
    for n in (5, 8, 9):  # tails of 1, 0 and 1 rows
        torch.testing.assert_close(eq.exact(x[:n]), whole[:n], rtol=0, atol=0)
