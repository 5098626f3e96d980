"""Networks: plain ``nn.Module``s without training logic."""

from pinnlab.nets.mlp import ACTIVATIONS as ACTIVATIONS
from pinnlab.nets.mlp import MLP as MLP
from pinnlab.nets.perturbation import Perturbation as Perturbation
from pinnlab.nets.perturbation import Pointwise as Pointwise
from pinnlab.nets.perturbation import evaluate_pointwise as evaluate_pointwise

__all__ = ["ACTIVATIONS", "MLP", "Perturbation", "Pointwise", "evaluate_pointwise"]
