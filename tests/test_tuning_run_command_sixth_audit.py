"""Sixth mutation audit of pinnlab/tuning/run.py and command.py (``pinnlab tune``): what
the earlier audits left open. A coefficient's relative error divides by its own norm also
below 1; a checkpoint that holds only its config's hash is refused on --resume by that
hash when it is another config's; a checkpoint keeps the config as a resume compares it,
so a refused resume names the setting that differs; the progress display shows the φ and
the outer objective of each outer step (NaN where the step reported none). Each test
compares exact values or whole lines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.tuning.run import coefficient_errors

from .tuning.test_tune_run_handover import _Handed

F64 = torch.float64


# -- coefficient errors -------------------------------------------------------------------------------
def test_a_coefficients_relative_error_divides_by_its_norm_also_below_one():
    """‖c − c*‖/‖c*‖ with ‖c*‖ = 0.5: c = 2c* gives 1 (not ‖c − c*‖ = 0.5, as a floor of
    the norm at 1 would); tuned values other than coefficients have no error."""
    equation = SimpleNamespace(coefficients={"mu": torch.tensor([0.3, 0.4], dtype=F64)})
    setup = SimpleNamespace(problem=SimpleNamespace(equation=equation))
    phi = {"coefficients.mu": torch.tensor([0.6, 0.8], dtype=F64), "weights.boundary": torch.tensor(2.0)}
    assert coefficient_errors(setup, phi) == {"coefficients.mu": pytest.approx(1.0, rel=1e-12)}


# -- resuming a tuning checkpoint ---------------------------------------------------------------------
def test_a_hash_only_checkpoint_of_another_config_is_refused_on_resume(tmp_path, capsys):
    """A tuning checkpoint written before the config text was kept holds {"config": hash}
    only: --resume with another config (this one with tune.outer_steps 4, not 3) is
    refused by the hash, in one line with exit code 2, before any work (the checkpoint is
    left as it was), not taken for this config's for want of a text to compare."""
    from pinnlab.cli import main
    from pinnlab.io.checkpoint import config_hash

    from .tuning.micro_configs import WEIGHT_FG2U

    cfg, out, ckpt = tmp_path / "tune.yaml", tmp_path / "t.h5", tmp_path / "t.h5.ckpt"
    cfg.write_text(WEIGHT_FG2U)
    other = configuration.load(cfg, ["tune.outer_steps=4"])
    torch.save({"metadata": {"config": config_hash(other.identity())}, "outer_step": 1}, ckpt)
    saved = ckpt.read_bytes()
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pinnlab: error: checkpoint {str(ckpt)!r} belongs to another "
                                               "configuration"), err
    assert ckpt.read_bytes() == saved and not out.exists()


def test_a_refused_resume_names_the_setting_that_differs_not_a_run_only_one(tmp_path, monkeypatch, capsys):
    """The checkpoint keeps the config as a resume compares it (without the run-only
    settings such as trainer.checkpoint_every): --resume with tune.outer_steps 3 of a
    tuning saved with 4 names that setting, the first that differs."""
    import pinnlab.tuning.run as run_module
    from pinnlab.cli import main

    from .tuning.micro_configs import WEIGHT_FG2U

    cfg, out, ckpt = tmp_path / "tune.yaml", tmp_path / "t.h5", tmp_path / "t.h5.ckpt"
    cfg.write_text(WEIGHT_FG2U)
    seen = {}

    def tuning(setup, *, metadata, **kwargs):
        seen.update(metadata)
        raise _Handed

    monkeypatch.setattr(run_module, "run_tuning", tuning)
    with pytest.raises(_Handed):
        main(["tune", str(cfg), "tune.outer_steps=4", "-o", str(out), "--progress", "off"])
    torch.save({"metadata": dict(seen), "outer_step": 1}, ckpt)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and (f"checkpoint {str(ckpt)!r} belongs to another configuration (tune.outer_steps: 4 in "
                              "the checkpoint, 3 in this run)") in err[0], err


# -- the progress display -----------------------------------------------------------------------------
def test_the_progress_lines_show_each_outer_steps_objective_and_phi(tmp_path, monkeypatch, capsys):
    """``--progress log`` writes one line per outer step: the φ after that step and the
    outer objective the step reported (0.125, then 0.375), not NaN; a step that reported
    none shows NaN."""
    import pinnlab.tuning.run as run_module
    from pinnlab.cli import main

    from .tuning.micro_configs import WEIGHT_FG2U

    def tuning(setup, *, progress, **kwargs):
        for k, (weight, value) in enumerate(((0.5, 0.125), (0.25, 0.375))):
            progress(k, {"weights.boundary": torch.tensor(weight, dtype=F64)}, {"value": torch.tensor(value)})
        progress(2, {"weights.boundary": torch.tensor(2.0, dtype=F64)}, {})
        raise _Handed

    monkeypatch.setattr(run_module, "run_tuning", tuning)
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(WEIGHT_FG2U)
    with pytest.raises(_Handed):
        main(["tune", str(cfg), "-o", str(tmp_path / "t.h5"), "--progress", "log"])
    lines = [line.split()[:5] for line in capsys.readouterr().err.splitlines()]
    assert lines == [["tune", "weights.boundary=0.5", "step", "1/3", "outer=1.250e-01"],
                     ["tune", "weights.boundary=0.25", "step", "2/3", "outer=3.750e-01"],
                     ["tune", "weights.boundary=2", "step", "3/3", "outer=nan"]]
