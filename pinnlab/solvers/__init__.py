"""Functional optimizers, schedules, the pure training step and the loop around it."""

from pinnlab.solvers.evaluate import Evaluation as Evaluation
from pinnlab.solvers.evaluate import evaluate as evaluate
from pinnlab.solvers.evaluate import predict as predict
from pinnlab.solvers.evaluate import relative_errors as relative_errors
from pinnlab.solvers.loop import History as History
from pinnlab.solvers.loop import TrainResult as TrainResult
from pinnlab.solvers.loop import TrainState as TrainState
from pinnlab.solvers.loop import resolve_device as resolve_device
from pinnlab.solvers.loop import train as train
from pinnlab.solvers.optim import SGD as SGD
from pinnlab.solvers.optim import AbstractOptimizer as AbstractOptimizer
from pinnlab.solvers.optim import Adam as Adam
from pinnlab.solvers.optim import AdamState as AdamState
from pinnlab.solvers.optim import SGDState as SGDState
from pinnlab.solvers.optim import adam as adam
from pinnlab.solvers.optim import sgd as sgd
from pinnlab.solvers.problem import AbstractLossTerm as AbstractLossTerm
from pinnlab.solvers.problem import PINNProblem as PINNProblem
from pinnlab.solvers.problem import StepContext as StepContext
from pinnlab.solvers.schedules import Constant as Constant
from pinnlab.solvers.schedules import Exponential as Exponential
from pinnlab.solvers.schedules import LinearDecay as LinearDecay
from pinnlab.solvers.step import TrainStep as TrainStep
from pinnlab.solvers.step import make_train_step as make_train_step
from pinnlab.solvers.terms import ConstraintLoss as ConstraintLoss
from pinnlab.solvers.terms import DataLoss as DataLoss
from pinnlab.solvers.weighting import LRA as LRA
from pinnlab.solvers.weighting import AbstractWeighting as AbstractWeighting
from pinnlab.solvers.weighting import ReLoBRaLo as ReLoBRaLo

__all__ = [
    "LRA",
    "SGD",
    "AbstractWeighting",
    "ConstraintLoss",
    "DataLoss",
    "ReLoBRaLo",
    "AbstractLossTerm",
    "AbstractOptimizer",
    "Adam",
    "AdamState",
    "Constant",
    "Evaluation",
    "Exponential",
    "History",
    "LinearDecay",
    "PINNProblem",
    "SGDState",
    "StepContext",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "adam",
    "evaluate",
    "make_train_step",
    "predict",
    "relative_errors",
    "resolve_device",
    "sgd",
    "train",
]
