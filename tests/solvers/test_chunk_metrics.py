"""The chunked step's metrics (loss_biased, ...) add up to the unchunked ones."""
import dataclasses

import torch

from pinnlab.solvers import Adam, make_train_step

from .small_problems import F64, problem


def test_chunked_metrics_equal_the_full_metrics():
    full = problem(batch=12)
    chunked = dataclasses.replace(full, batch_chunks=5)
    opt = Adam(1e-2)
    params = full.init_params(dtype=F64)
    state = opt.init(params)
    a = make_train_step(full, opt, seed=1)(params, state, {}, 3)[2]
    b = make_train_step(chunked, opt, seed=1)(params, state, {}, 3)[2]
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-12, msg=k)
