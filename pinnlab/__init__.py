"""pinnlab: randomized-smoothing PINNs for high-dimensional PDEs, tuned by bilevel optimization.

Entry points: :func:`train` (solve a PDE), :func:`make_train_step` (the pure step the
solver loops and the bilevel layer unrolls), :func:`hypergradient` (one hypergradient
estimate through that step), :func:`configure_malloc` (glibc settings that let a
training process reuse its freed memory; the ``pinnlab`` commands set them).
Sub-packages: ``equations``, ``estimators``, ``losses``, ``nets``, ``solvers``,
``bilevel``, ``tuning``, ``studies``, ``io``, ``plots`` (the last five, and
``hypergradient``, are imported on first use: ``plots`` needs matplotlib).
Names starting with an underscore are not part of the public API.
"""

from importlib import import_module

from pinnlab import equations as equations
from pinnlab import estimators as estimators
from pinnlab import losses as losses
from pinnlab import nets as nets
from pinnlab import solvers as solvers
from pinnlab._malloc import configure_malloc as configure_malloc
from pinnlab.solvers import PINNProblem as PINNProblem
from pinnlab.solvers import TrainResult as TrainResult
from pinnlab.solvers import make_train_step as make_train_step
from pinnlab.solvers import train as train

__version__ = "0.1.0"

_LAZY = {"bilevel": "pinnlab.bilevel", "tuning": "pinnlab.tuning", "studies": "pinnlab.studies",
         "io": "pinnlab.io", "plots": "pinnlab.plots"}


def __getattr__(name):
    if name in _LAZY:
        return import_module(_LAZY[name])
    if name == "hypergradient":
        return import_module("pinnlab.bilevel").hypergradient
    raise AttributeError(f"module 'pinnlab' has no attribute {name!r}")


__all__ = [
    "PINNProblem",
    "TrainResult",
    "__version__",
    "bilevel",
    "configure_malloc",
    "equations",
    "estimators",
    "hypergradient",
    "io",
    "losses",
    "make_train_step",
    "nets",
    "plots",
    "solvers",
    "studies",
    "train",
    "tuning",
]
