"""Seventh mutation audit of pinnlab/tuning/run.py and command.py (``pinnlab tune``): what
the earlier audits left open. The final solve's checkpoint identity tells tuned values
apart bit for bit; zo_fg2u on DeepXDE's black box unrolls tune.horizon steps per
evaluation. Each test compares exact values or spies on what is handed on."""

from __future__ import annotations

import pytest
import torch

from pinnlab.tuning.run import final_identity

from .tuning.test_tune_run_handover import _Handed, _spy
from .tuning.test_tuning_audit_edges import DEEPXDE, _setup

F64 = torch.float64


# -- final_identity -----------------------------------------------------------------------------------
def test_the_final_solves_identity_tells_float64_values_apart_bit_for_bit(tmp_path):
    """Two tuned weights one float64 ulp apart (equal once rounded to float32) are other
    tuned values: a final-solve checkpoint of one is not continued with the other."""
    setup = _setup(tmp_path)
    value = torch.tensor(0.1, dtype=F64)
    close = torch.nextafter(value, torch.tensor(1.0, dtype=F64))
    assert value.float() == close.float() and value != close
    same = final_identity(setup.config, {"weights.boundary": value.clone()})
    assert final_identity(setup.config, {"weights.boundary": value}) == same
    assert final_identity(setup.config, {"weights.boundary": close}) != same


# -- run_tuning: the black box's horizon -------------------------------------------------------------
def test_zo_fg2u_on_deepxde_unrolls_the_horizon_not_a_search_trials_steps(tmp_path, monkeypatch):
    """Each zo_fg2u evaluation of DeepXDE's training runs tune.horizon (2) inner steps,
    the outer loop's T: not trial_steps (10·horizon = 20), a search trial's length
    (DeepXDE itself is not imported: the outer loop is replaced before any evaluation)."""
    from pinnlab.tuning.run import run_tuning

    seen = _spy(monkeypatch, "optimize")
    setup = _setup(tmp_path, text=DEEPXDE)
    with pytest.raises(_Handed):
        run_tuning(setup)
    assert seen["args"][0].horizon == 2 and seen["steps"] == 3


# -- check_method -------------------------------------------------------------------------------------
def test_adams_betas_with_an_sgd_outer_optimizer_are_refused_in_one_line(tmp_path):
    """tune.outer_betas given with tune.outer_optimizer: sgd would be ignored (SGD has no
    β): refused before any work, naming both ways out; the β alone with Adam is accepted."""
    from pinnlab.config import ConfigError
    from pinnlab.tuning.run import check_method

    check_method(_setup(tmp_path, "tune.outer_betas=[0.5, 0.9]"))
    setup = _setup(tmp_path, "tune.outer_optimizer=sgd", "tune.outer_betas=[0.5, 0.9]")
    with pytest.raises(ConfigError, match=r"^tune\.outer_betas: β belongs to outer_optimizer: adam; SGD has none "
                                          r"\(drop outer_betas or use adam\)$"):
        check_method(setup)
