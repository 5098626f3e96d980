"""Settings that change no computed number (``RUN_ONLY_SETTINGS``: the checkpoint and log
intervals; the device as it resolves): ``solve --resume``, ``tune --resume`` and a
training study's rerun accept a run that differs only in them, and end bit-identical to
a run without the difference; a setting that changes numbers (the learning rate, CPU
against CUDA) is still refused or recomputed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab.cli import main
from pinnlab.io import CheckpointError, load_checkpoint, save_checkpoint
from pinnlab.io.checkpoint import RUN_ONLY_SETTINGS, config_hash
from pinnlab.solvers import train

SOLVE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 6, eval_every: 2, test_points: 20, batch_size: 8, checkpoint_every: 2}
"""

TUNE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, noise: shared, eval_samples: 8}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 4, lr: 1.0e-2, batch_size: 8, eval_every: 4, test_points: 20, dtype: float64}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0}
tune:
  method: fg2u
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 8}
  outer_steps: 4
  horizon: 2
"""

STUDY = SOLVE + """\
study:
  kind: training
  variants: {biased: [loss.kind=biased]}
  grid: {trainer.seed: [0]}
"""

RUN_ONLY = ["trainer.checkpoint_every=3", "trainer.log_every=1", "trainer.device=cpu"]
"""Overrides that change no number, against the configs above (checkpoint_every 2,
log_every 100, device auto), on a machine without CUDA."""


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, where ``auto`` is ``cpu`` (whatever this one has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _yaml(tmp_path, text, overrides=()):
    return configuration.load(_write(tmp_path, text), overrides).to_yaml()


def _assert_same_result(a_path, b_path):
    with h5py.File(a_path) as a, h5py.File(b_path) as b:
        assert set(a["params"]) == set(b["params"])
        for key in a["params"]:
            np.testing.assert_array_equal(a["params"][key][...], b["params"][key][...])
        for key in ("rel_l2", "rel_l1", "max_err"):
            assert a["final"].attrs[key] == b["final"].attrs[key], key
        for key in ("history/rel_l2", "history/loss", "trace/loss"):
            np.testing.assert_array_equal(a[key][...], b[key][...])


def _checkpoint_at(path, config, step):
    """The checkpoint `pinnlab solve` writes at ``step`` of ``config``'s run."""
    problem, kwargs = configuration.build(config)

    def keep(state):
        if state.step == step:
            save_checkpoint(path, state, kwargs["optimizer"], config.to_yaml())

    train(problem, **kwargs, on_checkpoint=keep, progress="off")
    assert path.is_file()


def test_the_run_only_settings_are_config_keys(tmp_path):
    """Each listed key is in a resolved config (a misspelt one would leave its setting compared)."""
    resolved = configuration.load(_write(tmp_path, TUNE)).resolved()
    for key in RUN_ONLY_SETTINGS:
        section, name = key.split(".")
        assert name in resolved[section], key


def test_config_hash_ignores_run_only_settings_and_compares_the_resolved_device(tmp_path, monkeypatch):
    base = config_hash(_yaml(tmp_path, TUNE))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config_hash(_yaml(tmp_path, TUNE, [*RUN_ONLY, "tune.checkpoint_every=5"])) == base
    assert config_hash(_yaml(tmp_path, TUNE, ["trainer.lr=0.02"])) != base
    assert config_hash(_yaml(tmp_path, TUNE, ["trainer.device=cuda"])) != base  # no CUDA here: not cpu
    # where CUDA is available, auto is cuda, not cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    auto = config_hash(_yaml(tmp_path, TUNE))
    assert auto == config_hash(_yaml(tmp_path, TUNE, ["trainer.device=cuda"]))
    assert auto != config_hash(_yaml(tmp_path, TUNE, ["trainer.device=cpu"]))
    assert auto != config_hash(_yaml(tmp_path, TUNE, ["trainer.device=cuda:1"]))


def test_solve_resumed_with_other_run_only_settings_is_bit_identical(tmp_path, no_cuda):
    """Killed at step 2 (checkpoint_every 2, device auto), resumed with checkpoint_every 3,
    log_every 1 and device cpu: accepted, and the result equals the uninterrupted run's."""
    cfg = _write(tmp_path, SOLVE)
    reference = tmp_path / "reference.h5"
    assert main(["solve", str(cfg), "-o", str(reference), "--progress", "off"]) == 0
    out = tmp_path / "run.h5"
    _checkpoint_at(Path(str(out) + ".ckpt"), configuration.load(cfg), step=2)
    assert main(["solve", str(cfg), *RUN_ONLY, "-o", str(out), "--resume", "--progress", "off"]) == 0
    assert not Path(str(out) + ".ckpt").exists()
    _assert_same_result(reference, out)


def test_load_checkpoint_refuses_another_device_and_accepts_an_older_hash(tmp_path, monkeypatch):
    """A checkpoint written on the CPU with device auto is refused where auto is CUDA; one
    written before the run-only settings were left out (the whole YAML's hash) is read."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = configuration.load(_write(tmp_path, SOLVE))
    path = tmp_path / "run.h5.ckpt"
    _checkpoint_at(path, config, step=2)
    _, kwargs = configuration.build(config)
    args = (kwargs["optimizer"], config.to_yaml(), torch.device("cpu"), kwargs["dtype"])
    assert load_checkpoint(path, *args).step == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(CheckpointError, match="different configuration"):
        load_checkpoint(path, *args)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = torch.load(path, weights_only=True)
    data.pop("content_sha256")  # (an older checkpoint has no digest either)
    for text, accepted in ((config.to_yaml(), True), (_yaml(tmp_path, SOLVE, ["trainer.log_every=1"]), False)):
        torch.save({**data, "config_hash": hashlib.sha256(text.encode()).hexdigest()}, path)
        if accepted:
            assert load_checkpoint(path, *args).step == 2
        else:  # the old hash of the whole YAML matches only the very same YAML
            with pytest.raises(CheckpointError, match="different configuration"):
                load_checkpoint(path, *args)


def test_tune_resumed_with_other_run_only_settings_is_bit_identical(tmp_path, monkeypatch, no_cuda):
    """Interrupted after 2 of 4 outer steps (tune.checkpoint_every 1), resumed with
    tune.checkpoint_every 3 and the trainer's run-only settings changed: accepted, and
    the φ trajectory, values and final solve equal the uninterrupted run's."""
    cfg = _write(tmp_path, TUNE)
    reference = tmp_path / "reference.h5"
    assert main(["tune", str(cfg), "-o", str(reference), "--progress", "off"]) == 0

    import pinnlab.tuning.run as run_module

    original = run_module.run_tuning

    def crash_after_two(setup, **kwargs):
        def stop(k, phi, diagnostics):
            if k == 2:
                raise KeyboardInterrupt
        return original(setup, **{**kwargs, "progress": stop})

    out = tmp_path / "t.h5"
    monkeypatch.setattr("pinnlab.tuning.run.run_tuning", crash_after_two)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 130
    monkeypatch.setattr("pinnlab.tuning.run.run_tuning", original)
    assert torch.load(Path(str(out) + ".ckpt"), weights_only=True)["outer_step"] == 2
    assert main(["tune", str(cfg), *RUN_ONLY, "tune.checkpoint_every=3", "-o", str(out), "--resume",
                 "--progress", "off"]) == 0
    _assert_same_result(reference, out)
    with h5py.File(reference) as a, h5py.File(out) as b:
        for key in ("tune/phi/weights.boundary", "tune/value"):
            np.testing.assert_array_equal(a[key][...], b[key][...])


def test_training_study_resumes_and_reuses_cells_across_run_only_settings(tmp_path, capsys, no_cuda):
    """A cell interrupted at step 2 continues from its checkpoint with checkpoint_every 3
    (not started over) and ends as an uninterrupted cell; a rerun with other run-only
    settings skips it; another learning rate, or CPU where the cell's auto is CUDA, does not."""
    from pinnlab.studies.spec import validate_runs
    from pinnlab.studies.training_study import (
        _cell_file_state,
        expand_cells,
        run_config,
        run_training_study,
    )

    cfg = _write(tmp_path, STUDY)
    cells = expand_cells({"biased": ["loss.kind=biased"]}, {"trainer.seed": [0]})
    (cell,) = cells
    run_training_study(cfg, cells, tmp_path / "reference")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    path = resumed / f"{cell.key}.h5"
    _checkpoint_at(Path(str(path) + ".ckpt"), run_config(configuration.load(cfg, cell.overrides)), step=2)
    capsys.readouterr()
    said = []
    run_training_study(cfg, cells, resumed, base_overrides=RUN_ONLY, progress=said.append)
    assert "starts over" not in capsys.readouterr().err
    # (the line said only "finished cell", as for a cell computed from step 0)
    assert said == [f"finished cell {cell.label} (continued from its checkpoint at step 2): rel_l2="
                    + said[0].split("rel_l2=")[1]], said
    _assert_same_result(tmp_path / "reference" / path.name, path)

    messages = []
    finished_cell = tmp_path / "reference" / path.name  # written with device auto
    before = finished_cell.read_bytes()
    run_training_study(cfg, cells, tmp_path / "reference", base_overrides=["trainer.checkpoint_every=0", *RUN_ONLY[1:]],
                       progress=messages.append)
    assert messages == [f"skip finished cell {cell.label}"]
    assert finished_cell.read_bytes() == before

    def finished(overrides, cuda=False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: cuda)
            (config,) = validate_runs(cfg, {cell.label: cell.overrides}, overrides).values()
            return _cell_file_state(finished_cell, config)[0]

    assert finished(RUN_ONLY) and finished([]) and finished(["trainer.device=cuda"], cuda=True)
    assert not finished(["trainer.lr=0.002"])
    assert not finished(["trainer.device=cpu"], cuda=True)  # the cell's auto is CUDA there
