"""Derivative estimators: Stein (antithetic + control variate), autograd, Hutchinson."""

from pinnlab.estimators.autograd import Autograd as Autograd
from pinnlab.estimators.base import AbstractDerivativeEstimator as AbstractDerivativeEstimator
from pinnlab.estimators.base import Directional as Directional
from pinnlab.estimators.base import Gradient as Gradient
from pinnlab.estimators.base import HessianDiagonal as HessianDiagonal
from pinnlab.estimators.base import Query as Query
from pinnlab.estimators.base import Value as Value
from pinnlab.estimators.base import WeightedLaplacian as WeightedLaplacian
from pinnlab.estimators.hutchinson import Hutchinson as Hutchinson
from pinnlab.estimators.stein import SteinAntithetic as SteinAntithetic

__all__ = [
    "AbstractDerivativeEstimator",
    "Autograd",
    "Directional",
    "Gradient",
    "HessianDiagonal",
    "Hutchinson",
    "Query",
    "SteinAntithetic",
    "Value",
    "WeightedLaplacian",
]
