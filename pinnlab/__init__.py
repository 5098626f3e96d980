"""pinnlab: randomized-smoothing PINNs for high-dimensional PDEs, tuned by bilevel optimization.

Entry points: :func:`train` (solve a PDE), :func:`make_train_step` (the pure step the
solver loops and the bilevel layer unrolls), :func:`hypergradient` (one hypergradient
estimate through that step), :func:`configure_malloc` (glibc settings that let a
training process reuse its freed memory; the ``pinnlab`` commands set them).
Sub-packages: ``equations``, ``estimators``, ``losses``, ``nets``, ``solvers``,
``bilevel``, ``tuning``, ``studies``, ``io``, ``plots``: each, and each name above, is
imported on first use (``import pinnlab`` imports neither torch nor matplotlib).
Names starting with an underscore are not part of the public API.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Everything is imported on first use (PEP 562), so that ``import pinnlab`` (and the
# ``pinnlab`` command, before its main() can catch a Ctrl-C) does not import torch: a
# Ctrl-C in a command's first seconds is then "pinnlab: interrupted", not a traceback
# through torch's import machinery. ``from pinnlab import train`` works as before.
_SUBPACKAGES = ("equations", "estimators", "losses", "nets", "solvers", "bilevel", "tuning", "studies", "io",
                "plots")
_NAMES = {"PINNProblem": "pinnlab.solvers", "TrainResult": "pinnlab.solvers", "make_train_step": "pinnlab.solvers",
          "train": "pinnlab.solvers", "configure_malloc": "pinnlab._malloc", "hypergradient": "pinnlab.bilevel"}

if TYPE_CHECKING:  # (what a type checker and an editor see)
    from pinnlab import bilevel, equations, estimators, io, losses, nets, plots, solvers, studies, tuning
    from pinnlab._malloc import configure_malloc
    from pinnlab.bilevel import hypergradient
    from pinnlab.solvers import PINNProblem, TrainResult, make_train_step, train


def __getattr__(name):
    if name in _SUBPACKAGES:
        return import_module(f"pinnlab.{name}")
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'pinnlab' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


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
