"""A training-study cell resumes from its checkpoint; an estimator study refuses a
pretrained network that diverged."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import torch

import pinnlab.solvers
from pinnlab.cli import main
from pinnlab.solvers.loop import peak_memory_mb, reset_peak_memory
from pinnlab.studies.training_study import run_cell
from tests.studies.test_studies import TINY_ESTIMATOR, TINY_TRAINING, TRAINED_ESTIMATOR

CELL = ("loss.kind=biased", "equation.dim=3", "trainer.seed=0", "trainer.checkpoint_every=10")
THREADS = torch.get_num_threads()
"""run_cell sets the process's torch threads (it runs in a study's worker process): the
tests run it in this process with the count it already has, or later tests comparing a
run here with one in a subprocess would see float32 reductions of another thread count."""


class _Killed(Exception):
    pass


def test_a_killed_cell_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """trainer.checkpoint_every was ignored in study cells (no on_checkpoint), so a re-run
    started a killed cell from step 0: now the cell checkpoints next to its file and the
    re-run continues it, ending exactly where an uninterrupted cell ends."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "30"))
    real_train = pinnlab.solvers.train
    whole = tmp_path / "whole.h5"
    run_cell(str(cfg), CELL, str(whole), THREADS)

    def killed_after_first_checkpoint(problem, **kwargs):
        save = kwargs["on_checkpoint"]

        def on_checkpoint(state):
            save(state)
            raise _Killed

        return real_train(problem, **{**kwargs, "on_checkpoint": on_checkpoint})

    cell = tmp_path / "cell.h5"
    monkeypatch.setattr(pinnlab.solvers, "train", killed_after_first_checkpoint)
    with pytest.raises(_Killed):
        run_cell(str(cfg), CELL, str(cell), THREADS)
    checkpoint = tmp_path / "cell.h5.ckpt"
    assert checkpoint.exists() and not cell.exists()

    started = []

    def recording(problem, **kwargs):
        started.append(None if kwargs["state"] is None else kwargs["state"].step)
        return real_train(problem, **kwargs)

    monkeypatch.setattr(pinnlab.solvers, "train", recording)
    metrics = run_cell(str(cfg), CELL, str(cell), THREADS)
    assert started == [10] and not checkpoint.exists()
    # the study's line says so ("finished cell ... (continued from its checkpoint at step 10)")
    assert metrics["continued_from"] == 10
    assert "continued_from" not in run_cell(str(cfg), CELL, str(whole), THREADS)
    with h5py.File(whole) as a, h5py.File(cell) as b:
        for name in a["params"]:
            assert torch.equal(torch.as_tensor(a["params"][name][...]), torch.as_tensor(b["params"][name][...]))
        assert a["final"].attrs["rel_l2"] == b["final"].attrs["rel_l2"]


def test_a_checkpoint_of_another_cell_config_is_replaced(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "20"))
    cell = tmp_path / "cell.h5"
    (tmp_path / "cell.h5.ckpt").write_bytes(b"not a checkpoint")
    run_cell(str(cfg), CELL, str(cell), THREADS)
    assert "the cell starts over" in capsys.readouterr().err
    assert cell.exists() and not (tmp_path / "cell.h5.ckpt").exists()


def test_an_estimator_study_refuses_a_diverged_pretraining(tmp_path, capsys):
    """init: trained with a pretraining that went non-finite wrote an all-NaN study and
    exited 0."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TRAINED_ESTIMATOR.replace("trainer: {steps: 5, dtype: float64}",
                            "trainer: {steps: 5, dtype: float64, lr: 1.0e+300, schedule: constant}"))
    out = tmp_path / "est.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the pretraining at d=3 did not end ok" in err and "none was written" in err
    assert not out.exists()


def test_study_files_have_the_documented_layout(tmp_path):
    """README documents /records and the root attrs of estimator-study files (they were
    undocumented, and study files carried no git_hash)."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TINY_ESTIMATOR)
    out = tmp_path / "est.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    with h5py.File(out) as fh:
        assert {"kind", "config", "git_hash", "torch_version", "slopes", "comparisons",
                "pretrained_rel_l2"} <= set(fh.attrs)
        assert {"quantity", "loss", "noise", "dim", "sigma", "samples", "samples_per_draw", "bias", "bias_se",
                "bias2", "bias2_se", "variance", "variance_se", "mse", "bias_t", "bias_t_df",
                "bias_p"} == set(fh["records"])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the RSS high-water mark resets on Linux only")
def test_a_cell_reports_its_own_peak_memory_not_an_earlier_one(tmp_path):
    """Cells run one after another in a process (workers: 1, or a pool's reused worker):
    /final peak_mem_mb was the process's peak, so a small cell after a large one reported
    the large one's (1667 MB for a d = 5 cell measured at 508 MB alone). Now each cell
    resets the high-water mark when it starts."""
    big = torch.ones(2**28, dtype=torch.uint8)  # 256 MB touched before the cell, then freed
    del big
    before = peak_memory_mb(torch.device("cpu"))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    cell = tmp_path / "cell.h5"
    run_cell(str(cfg), CELL[:3], str(cell), THREADS)
    with h5py.File(cell, "r") as fh:
        peak = float(fh["final"].attrs["peak_mem_mb"])
    assert peak < before - 150, (peak, before)


def test_peak_memory_resets_to_the_current_use():
    device = torch.device("cpu")
    reset_peak_memory(device)
    start = peak_memory_mb(device)
    big = torch.ones(2**27, dtype=torch.uint8)  # 128 MB
    assert peak_memory_mb(device) > start + 100
    del big
    reset_peak_memory(device)
    if Path("/proc/self/clear_refs").exists():
        assert peak_memory_mb(device) < start + 50


def test_cuda_peak_reset_waits_for_cuda_to_be_initialised(monkeypatch):
    """A fresh study worker reset the CUDA peak of an explicit cuda:N before CUDA was
    initialised, which torch refuses ("Invalid device argument"); once initialised, the
    counter is reset. (torch.cuda is stubbed: the test machines have no GPU.)"""
    resets = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    reset_peak_memory(torch.device("cuda:1"))
    assert resets == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    reset_peak_memory(torch.device("cuda:1"))
    assert resets == [torch.device("cuda:1")]
