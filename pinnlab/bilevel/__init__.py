"""Hypergradients through unrolled inner training: (FG)²U and the classical baselines."""

import inspect

from pinnlab.bilevel.adapters import from_inner_loss as from_inner_loss
from pinnlab.bilevel.adapters import from_train_step as from_train_step
from pinnlab.bilevel.base import AbstractHypergradient as AbstractHypergradient
from pinnlab.bilevel.base import BilevelProblem as BilevelProblem
from pinnlab.bilevel.base import HypergradientResult as HypergradientResult
from pinnlab.bilevel.base import hypergradient as hypergradient
from pinnlab.bilevel.base import unrolled_objective as unrolled_objective
from pinnlab.bilevel.driver import OuterResult as OuterResult
from pinnlab.bilevel.driver import TwoPhase as TwoPhase
from pinnlab.bilevel.driver import optimize as optimize
from pinnlab.bilevel.forward import ExactForwardUnroll as ExactForwardUnroll
from pinnlab.bilevel.forward import ForwardGradientUnroll as ForwardGradientUnroll
from pinnlab.bilevel.implicit import DARTS as DARTS
from pinnlab.bilevel.implicit import CGSolve as CGSolve
from pinnlab.bilevel.implicit import HessianFree as HessianFree
from pinnlab.bilevel.implicit import ImplicitDiff as ImplicitDiff
from pinnlab.bilevel.implicit import NeumannSolve as NeumannSolve
from pinnlab.bilevel.implicit import cg as cg
from pinnlab.bilevel.implicit import neumann as neumann
from pinnlab.bilevel.parameterization import Identity as Identity
from pinnlab.bilevel.parameterization import Log as Log
from pinnlab.bilevel.parameterization import Logit as Logit
from pinnlab.bilevel.penalty import F2SA as F2SA
from pinnlab.bilevel.penalty import AbstractOuterAlgorithm as AbstractOuterAlgorithm
from pinnlab.bilevel.penalty import LowerLevelDivergence as LowerLevelDivergence
from pinnlab.bilevel.penalty import Penalty as Penalty
from pinnlab.bilevel.reverse import ReverseUnroll as ReverseUnroll
from pinnlab.bilevel.reverse import TruncatedReverseUnroll as TruncatedReverseUnroll
from pinnlab.bilevel.zeroth_order import BlackBox as BlackBox
from pinnlab.bilevel.zeroth_order import ZeroOrderForwardGradient as ZeroOrderForwardGradient

METHODS = {
    "fg2u": ForwardGradientUnroll,
    "zo_fg2u": ZeroOrderForwardGradient,
    "fgu": ExactForwardUnroll,
    "rgu": ReverseUnroll,
    "trgu": TruncatedReverseUnroll,
    "neumann": neumann,
    "cg": cg,
    "hessian_free": HessianFree,
    "darts": DARTS,
    "penalty": Penalty,
    "f2sa": F2SA,
}
"""Method names (as used in configs) → constructors."""


def make_method(name: str, **options):
    """Construct a hypergradient method by name, e.g. ``make_method("fg2u", num_directions=8)``;
    an option the method does not take is refused with the list of those it takes."""
    if name not in METHODS:
        raise ValueError(f"unknown hypergradient method {name!r}; choose one of {', '.join(METHODS)}")
    accepted = tuple(inspect.signature(METHODS[name]).parameters)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        allowed = f"allowed: {', '.join(accepted)}" if accepted else "it takes none"
        raise ValueError(f"unknown option {unknown[0]!r} of {name} ({allowed})")
    return METHODS[name](**options)


__all__ = [
    "DARTS",
    "F2SA",
    "METHODS",
    "AbstractHypergradient",
    "AbstractOuterAlgorithm",
    "BilevelProblem",
    "BlackBox",
    "CGSolve",
    "ExactForwardUnroll",
    "ForwardGradientUnroll",
    "HessianFree",
    "HypergradientResult",
    "Identity",
    "ImplicitDiff",
    "Log",
    "Logit",
    "LowerLevelDivergence",
    "NeumannSolve",
    "OuterResult",
    "Penalty",
    "ReverseUnroll",
    "TruncatedReverseUnroll",
    "TwoPhase",
    "ZeroOrderForwardGradient",
    "cg",
    "from_inner_loss",
    "from_train_step",
    "hypergradient",
    "make_method",
    "neumann",
    "optimize",
    "unrolled_objective",
]
