"""PDE problems with exact solutions, one family per module, and their registry."""

from __future__ import annotations

from pinnlab.equations.base import AbstractEquation as AbstractEquation
from pinnlab.equations.black_scholes import BlackScholesBarenblatt as BlackScholesBarenblatt
from pinnlab.equations.burgers import Burgers as Burgers
from pinnlab.equations.burgers import BurgersAffine as BurgersAffine
from pinnlab.equations.fields import ONE as ONE
from pinnlab.equations.fields import ZERO as ZERO
from pinnlab.equations.fields import Jet as Jet
from pinnlab.equations.fokker_planck import FokkerPlanckAniso as FokkerPlanckAniso
from pinnlab.equations.fokker_planck import FokkerPlanckIso as FokkerPlanckIso
from pinnlab.equations.hjb import HJBLin as HJBLin
from pinnlab.equations.hjb import HJBQuadratic as HJBQuadratic
from pinnlab.equations.hjb import HJBRosenbrock as HJBRosenbrock
from pinnlab.equations.hjb import cole_hopf as cole_hopf
from pinnlab.equations.residual import NotUnbiasableError as NotUnbiasableError
from pinnlab.equations.terms import GRADIENT as GRADIENT
from pinnlab.equations.terms import HESSIAN_DIAGONAL as HESSIAN_DIAGONAL
from pinnlab.equations.terms import LAPLACIAN as LAPLACIAN
from pinnlab.equations.terms import TIME_DERIVATIVE as TIME_DERIVATIVE
from pinnlab.equations.terms import VALUE as VALUE
from pinnlab.equations.terms import Field as Field
from pinnlab.equations.terms import Nonpolynomial as Nonpolynomial
from pinnlab.equations.terms import Term as Term
from pinnlab.equations.terms import directional as directional
from pinnlab.equations.terms import weighted_laplacian as weighted_laplacian
from pinnlab.equations.unit_ball import AllenCahnThreeBody as AllenCahnThreeBody
from pinnlab.equations.unit_ball import AllenCahnTwoBody as AllenCahnTwoBody
from pinnlab.equations.unit_ball import PoissonThreeBody as PoissonThreeBody
from pinnlab.equations.unit_ball import PoissonTwoBody as PoissonTwoBody
from pinnlab.equations.unit_ball import SineGordonThreeBody as SineGordonThreeBody
from pinnlab.equations.unit_ball import SineGordonTwoBody as SineGordonTwoBody

EQUATIONS: dict[str, type[AbstractEquation]] = {}


def register(cls: type[AbstractEquation]) -> type[AbstractEquation]:
    """Register an equation class under ``cls.name`` (usable as a decorator). A class of the
    same module and qualified name replaces the one registered (a notebook cell run again,
    a reloaded module); any other class under a taken name is refused."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered")
    taken = EQUATIONS.get(cls.name)
    redefined = taken is not None and (taken.__module__, taken.__qualname__) == (cls.__module__, cls.__qualname__)
    if taken is not None and taken is not cls and not redefined:  # (a user's class silently replaced poisson_two_body)
        whose = ("a built-in equation" if taken.__module__.startswith("pinnlab.")
                 else f"registered by {taken.__qualname__}")
        raise ValueError(f"equation name {cls.name!r} is taken ({whose}); give {cls.__name__} a name of its own")
    EQUATIONS[cls.name] = cls
    return cls


for _cls in (
    PoissonTwoBody,
    AllenCahnTwoBody,
    SineGordonTwoBody,
    PoissonThreeBody,
    AllenCahnThreeBody,
    SineGordonThreeBody,
    FokkerPlanckIso,
    FokkerPlanckAniso,
    HJBQuadratic,
    HJBRosenbrock,
    HJBLin,
    Burgers,
    BurgersAffine,
    BlackScholesBarenblatt,
):
    register(_cls)


def make_equation(name: str, dim: int, **kwargs) -> AbstractEquation:
    """Construct a registered equation by name."""
    if name not in EQUATIONS:
        raise KeyError(f"unknown equation {name!r}; registered: {', '.join(sorted(EQUATIONS))}")
    return EQUATIONS[name](dim, **kwargs)


__all__ = [
    "EQUATIONS",
    "GRADIENT",
    "HESSIAN_DIAGONAL",
    "LAPLACIAN",
    "ONE",
    "TIME_DERIVATIVE",
    "VALUE",
    "ZERO",
    "AbstractEquation",
    "BlackScholesBarenblatt",
    "Burgers",
    "BurgersAffine",
    "FokkerPlanckAniso",
    "FokkerPlanckIso",
    "HJBLin",
    "HJBQuadratic",
    "HJBRosenbrock",
    "cole_hopf",
    "AllenCahnThreeBody",
    "AllenCahnTwoBody",
    "Field",
    "Jet",
    "Nonpolynomial",
    "NotUnbiasableError",
    "PoissonThreeBody",
    "PoissonTwoBody",
    "SineGordonThreeBody",
    "SineGordonTwoBody",
    "Term",
    "directional",
    "make_equation",
    "register",
    "weighted_laplacian",
]
