"""Sizes this machine cannot hold (memory exhausted, a size beyond torch's 64-bit sizes)
end ``pinnlab solve | tune | study`` with one line naming the size settings and exit
code 2, not a traceback, and leave an existing result and checkpoint as they were; other
errors still propagate."""

from __future__ import annotations

import pytest
import torch

from pinnlab.cli import COMMAND_SIZE_SETTINGS, main

SOLVE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
estimator: {samples: 2, eval_samples: 2}
loss: {kind: biased, weights: {boundary: 1.0e-2}}
trainer: {steps: 2, eval_every: 2, test_points: 10, batch_size: 4, schedule: constant}
"""
TUNE = SOLVE + """\
data: {source: synthetic, points: 10, noise: 0.01}
tune:
  method: fg2u
  options: {num_directions: 1}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 2}
  outer_steps: 2
  horizon: 2
"""
ESTIMATOR_STUDY = "".join(SOLVE.splitlines(keepends=True)[:2]) + """\
study: {kind: estimator, samples: [2], sigmas: [0.05], replicates: 4, points: 2, reference_samples: 8,
        reference_replicates: 4, init: fresh}
"""
"""(the equation and the network: a study that trains nothing refuses training settings)"""
TRAINING_STUDY = SOLVE + """\
study: {kind: training, variants: {biased: [loss.kind=biased]}, grid: {trainer.seed: [0]}, columns: trainer.seed}
"""

ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
             "to allocate 24000000000 bytes. Error code 12 (Cannot allocate memory)")
UNPACKING = ("empty(): argument 'size' failed to unpack the object at pos 1 with error \"Overflow when unpacking "
             "long long\nException raised from THPUtils_unpackLong at python_numbers.h:79\nframe #0: c10::Error\"")
ERRORS = {  # what torch and Python raise, and what the line says of it
    "MemoryError": (MemoryError(), "out of memory: "),
    "OutOfMemoryError": (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                         "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB): "),
    "OverflowError": (OverflowError("cannot fit 'int' into an index-sized integer"), "a size overflows"),
    "allocator": (RuntimeError(ALLOCATOR), "cannot allocate 24000000000 bytes: "),
    "unpacking TypeError": (TypeError(UNPACKING), "a size overflows a 64-bit integer: "),
    "unpacking RuntimeError": (RuntimeError("Overflow when unpacking long"), "a size overflows a 64-bit integer: "),
}
STAGES = {  # command, config, what raises (the problem's builder or the run's first step)
    "solve build": ("solve", SOLVE, "pinnlab.config.build"),
    "solve first step": ("solve", SOLVE, "pinnlab.solvers.train"),
    "tune build": ("tune", TUNE, "pinnlab.tuning.setup.build_tuning"),
    "tune first step": ("tune", TUNE, "pinnlab.tuning.run.run_tuning"),
    "estimator study build": ("study", ESTIMATOR_STUDY, "pinnlab.config.build"),
    "estimator study first step": ("study", ESTIMATOR_STUDY, "pinnlab.studies.estimator_study.run_estimator_study"),
    "training study build": ("study", TRAINING_STUDY, "pinnlab.config.build"),
    "training study first cell": ("study", TRAINING_STUDY, "pinnlab.studies.training_study._run_cell_job"),
}


def _raise(error):
    def raising(*args, **kwargs):
        raise error

    return raising


def _existing_outputs(tmp_path, command):
    """Files a run with --overwrite replaces (result, checkpoint or tables), with old contents."""
    out = tmp_path / "run.h5"
    names = {"solve": ["run.h5.ckpt"], "tune": ["run.h5.ckpt"], "study": ["run.md", "run.csv"]}[command]
    files = {out: b"old result"} | {tmp_path / name: f"old {name}".encode() for name in names}
    for path, content in files.items():
        path.write_bytes(content)
    return out, files


def _run(tmp_path, command, text, *overrides):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    progress = [] if command == "study" else ["--progress", "off"]
    return main([command, str(cfg), *overrides, "-o", str(tmp_path / "run.h5"), "--overwrite", *progress])


def _assert_one_line(capsys, command, expected):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pinnlab: error: {expected}"), err
    assert "too large for this machine" in err[0] and ", ".join(COMMAND_SIZE_SETTINGS[command]) in err[0], err


@pytest.mark.parametrize("error", ERRORS, ids=list(ERRORS))
@pytest.mark.parametrize("stage", STAGES, ids=list(STAGES))
def test_a_size_this_machine_cannot_hold_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, stage, error):
    command, text, target = STAGES[stage]
    exception, expected = ERRORS[error]
    out, files = _existing_outputs(tmp_path, command)
    monkeypatch.setattr(target, _raise(exception))
    assert _run(tmp_path, command, text) == 2
    _assert_one_line(capsys, command, expected)
    for path, content in files.items():  # the old result and checkpoint (tables) are untouched
        assert path.read_bytes() == content, path


@pytest.mark.parametrize("command,text", [("solve", SOLVE), ("tune", TUNE), ("study", ESTIMATOR_STUDY),
                                          ("study", TRAINING_STUDY)])
def test_a_width_beyond_torchs_sizes_fails_fast_in_one_line(tmp_path, capsys, command, text):
    """model.width=10**22 overflowed torch.empty's 64-bit size (a TypeError traceback); the
    config refuses it now, and 2**63 − 1 still overflows the layer's element count."""
    out, files = _existing_outputs(tmp_path, command)
    assert _run(tmp_path, command, text, f"model.width={2**63 - 1}") == 2
    _assert_one_line(capsys, command, "a size overflows a 64-bit integer: ")
    assert all(path.read_bytes() == content for path, content in files.items())


@pytest.mark.parametrize("error", [RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x4)"),
                                   TypeError("unsupported operand type(s) for +: 'int' and 'str'")],
                         ids=["RuntimeError", "TypeError"])
def test_other_errors_still_propagate(tmp_path, monkeypatch, error):
    monkeypatch.setattr("pinnlab.solvers.train", _raise(error))
    with pytest.raises(type(error), match=str(error)[:20]):
        _run(tmp_path, "solve", SOLVE)


def test_a_command_without_size_settings_is_not_wrapped(tmp_path, monkeypatch):
    """``pinnlab plot`` has no size settings to name: its errors are not reread as sizes."""
    monkeypatch.setattr("pinnlab.plots.plot_file", _raise(MemoryError()))
    (tmp_path / "run.h5").write_bytes(b"")
    with pytest.raises(MemoryError):
        main(["plot", str(tmp_path / "run.h5"), "-o", str(tmp_path / "plots")])
