"""With extra terms, a chunked step equals the unchunked one (terms counted once)."""
import dataclasses

import torch

from pinnlab.solvers import Adam, make_train_step
from pinnlab.solvers.terms import DataLoss

from .small_problems import F64, problem


def test_chunked_step_with_a_data_term_equals_the_full_step():
    g = torch.Generator().manual_seed(3)
    x_obs = torch.rand(6, 4, generator=g, dtype=F64) * 0.5
    data = DataLoss(x_obs, torch.sin(x_obs.sum(1)))
    full = problem(batch=12, extra_terms=(data,))
    chunked = dataclasses.replace(full, batch_chunks=5)  # 5 chunks of 3,3,2,2,2 points
    opt = Adam(1e-2)
    params = full.init_params(dtype=F64)
    state = opt.init(params)
    a = make_train_step(full, opt, seed=1)(params, state, {"weights": {"data": 2.0}}, 3)
    b = make_train_step(chunked, opt, seed=1)(params, state, {"weights": {"data": 2.0}}, 3)
    torch.testing.assert_close(a[2]["loss"], b[2]["loss"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[2]["loss_data"], b[2]["loss_data"], rtol=1e-12, atol=1e-12)
    for k in params:
        torch.testing.assert_close(a[0][k], b[0][k], rtol=1e-10, atol=1e-12)
