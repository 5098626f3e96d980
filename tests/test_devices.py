"""Devices in resumed tunings and in studies: a resumed outer loop puts its checkpoint on
φ's device; a study refuses an unavailable device as ``pinnlab solve`` does and runs its
estimators on the configured one.

This machine has no GPU. The ``meta`` device (shapes and dtypes, no data) is one whose
tensors are told apart from the CPU's: a run on it shows where every tensor ends up.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab._typing import tensor_leaves
from pinnlab.bilevel import Penalty, from_inner_loss, optimize
from pinnlab.bilevel.penalty import LowerLevelDivergence
from pinnlab.cli import main
from pinnlab.solvers import Adam
from pinnlab.studies import estimator_study
from tests.bilevel.problems import F64, Ridge
from tests.studies.test_studies import TINY_ESTIMATOR, TINY_TRAINING, TRAINED_ESTIMATOR
from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator


def _devices(tree) -> set[str]:
    return {t.device.type for t in tensor_leaves(tree)[0]}


def test_a_resumed_outer_loop_puts_theta_and_the_method_state_on_phis_device(tmp_path, monkeypatch):
    """The checkpoint is read onto the CPU; θ, its optimizer state and an outer algorithm's
    iterates stayed there, so a resumed run on a GPU mixed devices at its first step."""
    ridge = Ridge()

    def problem(device):
        theta0 = {"w": torch.zeros(ridge.features, dtype=F64, device=device)}
        return from_inner_loss(ridge.inner_loss, ridge.outer_loss, Adam(lr=0.1), theta0, horizon=2)

    method = Penalty(inner_iters=2)
    checkpoint = tmp_path / "outer.ckpt"
    optimize(problem("cpu"), ridge.phi, method, steps=2, checkpoint=checkpoint, checkpoint_every=2)

    seen = {}

    def step(self, problem, phi, state, *, outer_step, start):
        seen["state"] = state  # the iterates the resumed step starts from
        raise LowerLevelDivergence("stopped by the test (meta tensors hold no values)")

    monkeypatch.setattr(Penalty, "step", step)
    phi = {k: v.to("meta") for k, v in ridge.phi.items()}
    result = optimize(problem("meta"), phi, method, steps=3, checkpoint=checkpoint, resume=True)
    assert "stopped by the test" in result.message
    assert _devices(seen["state"]) == {"meta"}
    # the step stopped before replacing the restored warm start, so the result is that one
    assert _devices((result.theta, result.state)) == {"meta"}


@pytest.mark.parametrize("params", [None, {"w": torch.ones(2, dtype=F64)}], ids=["fresh", "given"])
def test_the_estimator_study_puts_parameters_points_and_noise_on_its_device(monkeypatch, params):
    """They were all on the CPU whatever the config's ``trainer.device``."""
    seen, generators = {}, []

    class Quantities:
        def __init__(self, equation, net, params, x):
            seen.update(params=params, x=x)

        def all(self, estimator, generator, kind, quantities):  # values for the summaries (meta has none)
            return {q: torch.randn(n, generator=generator, dtype=F64)
                    for q, n in (("residual", 4), ("loss", 1), ("gradient", 3))}

    def make_generator(*parts, device=None):
        generators.append(None if device is None else torch.device(device).type)
        return torch.Generator().manual_seed(len(generators))

    monkeypatch.setattr(estimator_study, "_Quantities", Quantities)
    monkeypatch.setattr(estimator_study, "make_generator", make_generator)
    spec = estimator_study.EstimatorStudySpec(equation="poisson_two_body", dims=(3,), samples=(4,), sigmas=(0.1,),
                                              width=8, depth=2, replicates=2, reference_replicates=2,
                                              params=params, device="meta")
    estimator_study.run_estimator_study(spec)
    assert _devices(seen["params"]) == {"meta"} and seen["x"].device.type == "meta"
    # the fixed points are drawn on the CPU (the same on every device), the noise on the device:
    # the reference's and the estimates' (both noise modes and losses) generators
    assert generators == [None] + ["meta"] * (2 + 2 * 2 * 2)


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_the_estimator_study_command_runs_on_the_configured_device(tmp_path, monkeypatch, device):
    """``trainer.device`` reaches the estimators, and ``auto`` resolves as the solver's does."""
    run = estimator_study.run_estimator_study
    specs = []

    def spy(spec, progress=None):
        specs.append(spec)
        return run(spec, progress=progress)

    monkeypatch.setattr(estimator_study, "run_estimator_study", spy)
    cfg = _estimator(tmp_path, **ONE_CELL)
    assert main(["study", str(cfg), f"trainer.device={device}", "-o", str(tmp_path / "est.h5")]) == 0
    assert [spec.device for spec in specs] == [device]


def _refusals():
    trained = TRAINED_ESTIMATOR
    variant = TINY_TRAINING.replace("STEPS", "2").replace("unbiased: [loss.kind=unbiased]",
                                                          "gpu: [loss.kind=unbiased, trainer.device=cuda]")
    return [
        pytest.param(TINY_ESTIMATOR, ["trainer.device=cuda"], id="estimator-fresh"),
        pytest.param(trained, ["trainer.device=cuda"], id="estimator-trained"),
        pytest.param(TINY_TRAINING.replace("STEPS", "2"), ["trainer.device=cuda"], id="training"),
        pytest.param(variant, [], id="training-variant"),
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("text, overrides", _refusals())
def test_a_study_refuses_an_unavailable_device_as_solve_does(tmp_path, capsys, text, overrides):
    """A training study (or a trained-init estimator study) ended in a ValueError traceback
    from its cell or pretraining, after writing the cell directory; an estimator study with
    init fresh ran on the CPU."""
    solve_config = tmp_path / "solve.yaml"
    solve_config.write_text(TINY_ESTIMATOR.split("study:")[0])
    assert main(["solve", str(solve_config), "trainer.device=cuda", "-o", str(tmp_path / "s.h5")]) == 2
    refusal = capsys.readouterr().err
    cfg = tmp_path / "study.yaml"
    cfg.write_text(text)
    assert main(["study", str(cfg), *overrides, "-o", str(tmp_path / "study.h5"), "--json",
                 str(tmp_path / "study.json")]) == 2
    assert capsys.readouterr().err == refusal and refusal.count("\n") == 1, refusal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["solve.yaml", "study.yaml"]

