"""pinnlab: randomized-smoothing PINNs for high-dimensional PDEs, tuned by bilevel optimization."""

__version__ = "0.1.0"
