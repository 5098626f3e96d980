"""Tune PINN hyperparameters and PDE coefficients by bilevel optimisation (``pinnlab tune``).

The inner problem is the RS-PINN training step itself; the outer objective is a data
misfit, a held-out residual or (benchmark mode) the reference error. See
:class:`~pinnlab.tuning.spec.TuneSection` for the config keys. (Names are imported
lazily: :mod:`pinnlab.config` imports the ``tune:`` schema from this package.)
"""

from importlib import import_module

_EXPORTS = {
    "TuneOutcome": "pinnlab.tuning.run",
    "final_solve": "pinnlab.tuning.run",
    "run_tuning": "pinnlab.tuning.run",
    "TuningSetup": "pinnlab.tuning.setup",
    "build_tuning": "pinnlab.tuning.setup",
    "TuneSection": "pinnlab.tuning.spec",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pinnlab.tuning' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
