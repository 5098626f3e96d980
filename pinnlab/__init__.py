"""pinnlab: randomized-smoothing PINNs for high-dimensional PDEs, tuned by bilevel optimization.

Entry points: :func:`train` (solve a PDE), :func:`make_train_step` (the pure step the
solver loops and the bilevel layer unrolls). Sub-packages: ``equations``,
``estimators``, ``losses``, ``nets``, ``solvers``, ``bilevel``, ``tuning``,
``studies``. Names starting with an underscore are not part of the public API.
"""

from pinnlab import equations as equations
from pinnlab import estimators as estimators
from pinnlab import losses as losses
from pinnlab import nets as nets
from pinnlab import solvers as solvers
from pinnlab.solvers import PINNProblem as PINNProblem
from pinnlab.solvers import TrainResult as TrainResult
from pinnlab.solvers import make_train_step as make_train_step
from pinnlab.solvers import train as train

__version__ = "0.1.0"

__all__ = [
    "PINNProblem",
    "TrainResult",
    "__version__",
    "equations",
    "estimators",
    "losses",
    "make_train_step",
    "nets",
    "solvers",
    "train",
]
