"""``estimator.chunk_size`` acts wherever it is accepted.

``pinnlab solve`` accepted it with every estimator kind and used it only with Stein:
autograd ran with its default batch of 64 Hessian-vector products (the chunk size is
autograd's memory knob) and Hutchinson has no chunks at all.
"""

from __future__ import annotations

import re

import pytest

from pinnlab import config as C
from pinnlab.estimators import Autograd, Hutchinson

EQUATION = {"name": "poisson_two_body", "dim": 3}
STEIN_RESIDUAL = {"tunables": {"weights.residual": {}}, "objective": {"kind": "residual", "points": 16}}


def test_chunk_size_reaches_autograd():
    config = C.validate({"equation": EQUATION, "estimator": {"kind": "autograd", "chunk_size": 4}})
    problem, _ = C.build(config)
    assert problem.estimator == Autograd(chunk_size=4)
    assert config.resolved()["estimator"]["chunk_size"] == 4
    default, _ = C.build(C.validate({"equation": EQUATION, "estimator": {"kind": "autograd"}}))
    assert default.estimator == Autograd()


def test_chunk_size_is_refused_for_hutchinson():
    message = ("estimator.chunk_size: has an effect only with estimator.kind: stein or autograd, or with a Stein "
               "residual tuning objective (tune.objective.kind: residual) (this config has estimator.kind = "
               "'hutchinson'); remove it")
    with pytest.raises(C.ConfigError, match="^" + re.escape(message)):
        C.validate({"equation": EQUATION, "estimator": {"kind": "hutchinson", "chunk_size": 4}})
    autograd_residual = {**STEIN_RESIDUAL, "objective": {**STEIN_RESIDUAL["objective"], "estimator": "autograd"}}
    for tune in ({"tunables": {"weights.residual": {}}}, autograd_residual):  # data objective; exact residual
        with pytest.raises(C.ConfigError, match=r"^estimator\.chunk_size: has an effect only"):
            C.validate({"equation": EQUATION, "estimator": {"kind": "hutchinson", "chunk_size": 4}, "tune": tune})


def test_a_stein_residual_tuning_objective_reads_it_under_hutchinson():
    """tune.objective (residual, Stein) builds its estimate from the estimator section
    whatever the training estimator, chunk_size included: kept, and recorded."""
    config = C.validate({"equation": EQUATION, "estimator": {"kind": "hutchinson", "chunk_size": 4},
                         "tune": STEIN_RESIDUAL})
    assert config.resolved()["estimator"]["chunk_size"] == 4
    problem, _ = C.build(config)
    assert isinstance(problem.estimator, Hutchinson)


def test_an_override_to_hutchinson_drops_the_configs_chunk_size(tmp_path):
    path = tmp_path / "chunked.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\nestimator: {chunk_size: 4}\n")
    assert "chunk_size" not in C.load(path, ["estimator.kind=hutchinson"]).resolved()["estimator"]
    assert C.load(path, ["estimator.kind=autograd"]).estimator.chunk_size == 4
    tuned = C.load(path, ["estimator.kind=hutchinson", "tune.objective.kind=residual",
                          "tune.tunables.weights.residual={}"])
    assert tuned.resolved()["estimator"]["chunk_size"] == 4
    with pytest.raises(C.ConfigError, match=r"^estimator\.chunk_size: has an effect only"):
        C.load(path, ["estimator.kind=hutchinson", "estimator.chunk_size=8"])
