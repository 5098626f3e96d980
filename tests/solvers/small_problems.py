"""Small PINN problems shared by the chunking, loop and adapter tests (not a test module)."""
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import MLP
from pinnlab.solvers import PINNProblem

F64 = torch.float64


def problem(dim=4, estimator=None, loss=None, batch=12, chunks=1, extra_terms=(), eq=None):
    eq = eq or PoissonTwoBody(dim, seed=1)
    net = MLP(dim, width=8, depth=2, generator=torch.Generator().manual_seed(0))
    return PINNProblem(eq, net, estimator or Autograd(), loss or Biased(), batch_size=batch,
                       batch_chunks=chunks, extra_terms=extra_terms)


def stein():
    return SteinAntithetic(sigma=0.05, num_samples=8, noise="shared")
