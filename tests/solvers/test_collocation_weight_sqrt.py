"""A constant collocation weight c scales every loss by c (R̂ is scaled by √c)."""
import torch

from pinnlab.losses import Biased, Unbiased1

from .small_problems import F64, problem, stein


def test_constant_collocation_weight_scales_the_loss_by_c():
    for loss in (Biased(), Unbiased1()):
        p = problem(estimator=stein(), loss=loss)
        params = p.init_params(dtype=F64)
        plain, _ = p.objective(params, {}, 2, 0)
        weighted, _ = p.objective(params, {"collocation_weight": lambda x: torch.full((x.shape[0],), 4.0, dtype=x.dtype)}, 2, 0)
        torch.testing.assert_close(weighted, 4.0 * plain, rtol=1e-12, atol=0)
