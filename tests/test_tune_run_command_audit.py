"""Mutation audit of pinnlab.tuning.run and pinnlab.tuning.command (the `pinnlab tune`
command): behaviour the tuning suite left unchecked, each test named after the mutant it kills."""

from __future__ import annotations

import pytest

from pinnlab import config as configuration

from .tuning.micro_configs import WEIGHT_FG2U


def _load(tmp_path, *overrides, text=WEIGHT_FG2U):
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return configuration.load(path, list(overrides))


def test_resume_keeps_the_metadata_of_a_checkpoint_that_holds_only_the_config_hash(tmp_path):
    """A tuning checkpoint written before the config text was kept has metadata
    {"config": hash} only; --resume of the same config continues it (the loop is handed
    the saved metadata, not this run's hash + text, which the loop would refuse as another
    run's) and records the tuning the checkpoint holds (killed mutant: ``metadata = saved``
    dropped)."""
    import h5py
    import numpy as np

    from pinnlab.cli import main
    from pinnlab.io.checkpoint import config_hash
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    config = _load(tmp_path)
    out = tmp_path / "t.h5"
    ckpt = tmp_path / "t.h5.ckpt"
    outcome = run_tuning(build_tuning(config), checkpoint=ckpt, metadata={"config": config_hash(config.identity())})
    assert ckpt.is_file()
    assert main(["tune", str(tmp_path / "tune.yaml"), "-o", str(out), "--progress", "off", "--resume"]) == 0
    with h5py.File(out) as fh:
        recorded = fh["tune/phi/weights.boundary"][...]
    expected = np.array([float(v) for v in outcome.history["phi/weights.boundary"]])
    np.testing.assert_array_equal(recorded, expected)
    assert not ckpt.exists()


DEEPXDE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 4, lr: 1.0e-3, batch_size: 4, eval_every: 2, test_points: 10, backend: deepxde}
tune:
  method: zo_fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: reference, points: 8}
  inner: deepxde
  outer_steps: 2
  horizon: 2
"""


def test_deepxde_tuning_refuses_an_objective_other_than_data(tmp_path):
    """The DeepXDE black box scores the misfit at the observations only, so a reference
    objective is refused before any work (killed mutant: the refusal dropped, the tuning
    then minimised the data misfit while the config asked for the reference error)."""
    pytest.importorskip("deepxde")
    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning

    with pytest.raises(configuration.ConfigError, match=r"^tune\.inner: deepxde needs tune\.objective\.kind: data$"):
        check_method(build_tuning(_load(tmp_path, text=DEEPXDE)))



def test_a_left_final_solve_checkpoint_of_a_joint_fit_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    """A joint fit keeps no tuning checkpoint, so only the final solve's OUT.h5.final.ckpt
    can be left by an interrupted run: without --resume or --overwrite it is refused
    (exit 2, nothing written, the file kept) rather than overwritten by a fresh solve
    (killed mutant: only the tuning's checkpoint looked at)."""
    from pinnlab.cli import main

    from .tuning.micro_configs import JOINT_MU

    _load(tmp_path, text=JOINT_MU)
    out = tmp_path / "t.h5"
    left = tmp_path / "t.h5.final.ckpt"
    left.write_bytes(b"left by an interrupted run")
    assert main(["tune", str(tmp_path / "tune.yaml"), "-o", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert f"a checkpoint {str(left)!r} exists from an interrupted run; pass --resume to continue it or " \
           "--overwrite to start over" in err
    assert not out.exists() and left.read_bytes() == b"left by an interrupted run"
