"""Tests from a fourth mutation audit of the training loop's bookkeeping: the best row's
error a result reports, the exact widening of the step's single device read, and the
history's arrays (the step column's integer dtype, the round trip)."""

from __future__ import annotations

import numpy as np
import torch

from pinnlab.solvers import loop
from pinnlab.solvers.evaluate import Evaluation
from pinnlab.solvers.loop import History, TrainResult


def _result_with_rows(rel_l2):
    history = History()
    for i, value in enumerate(rel_l2):
        history.append(step=i + 1, loss=1.0, rel_l2=value, rel_l1=value, max_err=value, lr=1e-3,
                       mix=0.0, wall_s=float(i))
    final = Evaluation(rel_l2=0.7, rel_l1=0.7, max_err=0.7, prediction=torch.zeros(1))
    return TrainResult(params={}, history=history, final=final, state=None,
                       test_inputs=torch.zeros(1, 1), test_exact=torch.zeros(1))


def test_best_rel_l2_is_the_smallest_rows_error_not_the_last():
    """The best row over the run (0.2 at the second of three rows), not the last row's 0.5
    nor the final evaluation's 0.7; with no rows it is the final evaluation's."""
    assert _result_with_rows([0.4, 0.2, 0.5]).best_rel_l2 == 0.2
    assert _result_with_rows([]).best_rel_l2 == 0.7


def test_the_steps_device_read_casts_to_the_widest_dtype():
    """The step's single read of its scalars is exact: a float64 value read together with
    a float32 loss (and the finiteness flag) keeps its float64 digits, not float32's."""
    values = loop._read_scalars(torch.tensor(1.5, dtype=torch.float32), torch.tensor(True),
                                torch.tensor(0.1, dtype=torch.float64))
    assert values == [1.5, 1.0, 0.1]


def test_history_arrays_keep_integer_steps_and_round_trip():
    """What the checkpoint and result files store: the step column as int64 (the others
    float64), the traces, and each term column under ``terms/``; read back, the same
    history."""
    history = History(trace_loss=[3.0, 2.0], trace_mix=[0.0, 1.0])
    for step, value in ((1, 0.5), (2, 0.25)):
        history.append(terms={"loss_residual": value, "weight_residual": 1.0}, step=step, loss=value,
                       rel_l2=value, rel_l1=value, max_err=value, lr=1e-3, mix=0.0, wall_s=float(step))
    arrays = history.arrays()
    assert arrays["step"].dtype == np.int64 and arrays["step"].tolist() == [1, 2]
    assert arrays["rel_l2"].dtype == np.float64
    assert arrays["terms/loss_residual"].tolist() == [0.5, 0.25]
    back = History.from_arrays(arrays)
    assert back.rows == history.rows
    assert back.trace_loss == [3.0, 2.0] and back.trace_mix == [0.0, 1.0]
    assert back.terms == history.terms
