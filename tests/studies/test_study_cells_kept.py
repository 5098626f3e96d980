"""A training study's cells are results: a rerun replaces a cell of another config, other
input files or another pinnlab version only with ``--overwrite``, and no output of the
study may be a file one of its cells reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from pinnlab.cli import main
from pinnlab.io.observations import save_observations
from tests.studies.test_studies import SMALL_TRAINING

ONE_SEED = SMALL_TRAINING.replace("trainer.seed: [0, 1]", "trainer.seed: [0]").replace(
    "    unbiased: [loss.kind=unbiased]\n", "")
"""One variant, one cell (seconds)."""


def _digests(out: Path) -> dict[str, str]:
    cells = Path(str(out) + ".cells")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(cells.iterdir())}


def _observations(path: Path, scale: float) -> None:
    x = torch.full((12, 3), 0.1, dtype=torch.float64) * torch.arange(1, 13, dtype=torch.float64)[:, None] / 13
    save_observations(path, x, scale * torch.ones(12, dtype=torch.float64))


def _interrupted(tmp_path, text, capsys, *overrides):
    """A study run whose cells are written, with its STUDY.h5 removed (as an interruption
    after the last cell leaves it)."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(text)
    out = tmp_path / "train.h5"
    assert main(["study", str(cfg), *overrides, "-o", str(out)]) == 0
    for path in (out, out.with_suffix(".md"), out.with_suffix(".csv")):
        path.unlink()
    capsys.readouterr()
    return cfg, out


def test_a_rerun_with_an_edited_config_keeps_the_cells_unless_overwrite(tmp_path, capsys):
    """After an interruption the rerun with another trainer.lr replaced the finished cells
    (exit 0, one line on stderr only for a checkpoint)."""
    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    before = _digests(out)
    assert main(["study", str(cfg), "trainer.lr=0.005", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was computed for a different configuration (trainer.lr: 0.001 in the " \
        "cell, 0.005 in this run); pass --overwrite to start over" in err, err
    assert _digests(out) == before and not out.exists()
    assert main(["study", str(cfg), "trainer.lr=0.005", "-o", str(out), "--overwrite"]) == 0
    assert _digests(out).keys() == before.keys() and _digests(out) != before


def test_a_cell_checkpoint_of_another_config_is_kept_unless_overwrite(tmp_path, capsys):
    from pinnlab import config as C
    from pinnlab.io import save_checkpoint
    from pinnlab.solvers import train
    from pinnlab.studies.training_study import run_config

    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    cell = next(Path(str(out) + ".cells").glob("*.h5"))
    cell.unlink()
    checkpoint = Path(str(cell) + ".ckpt")
    # what an interruption of the cell leaves, here of a run with trainer.steps: 4
    other = run_config(C.load(cfg, ["trainer.steps=4", "loss.kind=biased", "equation.dim=3", "trainer.seed=0"]))
    problem, kwargs = C.build(other)
    states = []
    train(problem, **{**kwargs, "checkpoint_every": 2}, progress="off",
          on_checkpoint=lambda state: states.append(state))
    save_checkpoint(checkpoint, states[0], kwargs["optimizer"], other.identity())
    before = checkpoint.read_bytes()
    capsys.readouterr()
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "was written for a different configuration (trainer.steps: 4 in the checkpoint, 5 in this run); " \
        "pass --overwrite to start over" in err and len(err.splitlines()) == 1, err
    assert checkpoint.read_bytes() == before
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    assert cell.exists() and not checkpoint.exists()


def test_a_cell_is_not_reused_after_its_observation_file_changed(tmp_path, capsys):
    """The cell file records its input files' digests: after the observations changed,
    the rerun reused the old cell ("skip finished cell", exit 0, the old numbers)."""
    data = tmp_path / "obs.npz"
    _observations(data, 1.0)
    text = ONE_SEED + f"data: {{source: {data}, train: true}}\n"
    cfg, out = _interrupted(tmp_path, text, capsys)
    before = _digests(out)
    _observations(data, 2.0)
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "was computed for a different configuration (input_files.data.source: '" in err, err
    assert _digests(out) == before
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    assert "skip finished cell" not in capsys.readouterr().err and _digests(out) != before
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0  # now the same files: reused
    assert "skip finished cell" in capsys.readouterr().err


def test_no_study_output_may_be_a_file_a_cell_reads(tmp_path, capsys):
    """A grid of data.source files: the CSV table of -o in_a.h5 replaced in_a.csv, which a
    cell trained on (only the base config's data.source was checked)."""
    base, in_a = tmp_path / "base.csv", tmp_path / "in_a.csv"
    for path in (base, in_a):
        np.savetxt(path, np.c_[np.full((12, 3), 0.2), np.ones(12)], delimiter=",")
    text = (ONE_SEED.replace("trainer.seed: [0]", f"data.source: [{in_a}]")
            + f"data: {{source: {base}, train: true}}\n")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(text)
    before = in_a.read_bytes()
    assert main(["study", str(cfg), "-o", str(tmp_path / "in_a.h5"), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'in_a.csv' (the study's CSV table) is data.source, which this run reads" in err.replace(
        str(tmp_path) + "/", ""), err
    assert in_a.read_bytes() == before and not Path(str(tmp_path / "in_a.h5") + ".cells").exists()


def test_a_training_study_name_leaves_room_for_its_cell_directory(tmp_path, capsys):
    """STUDY.h5.cells is one byte longer than STUDY.h5.ckpt: a name of 250 bytes passed
    the check and the study ended with OSError 36 (a traceback)."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(ONE_SEED)
    assert main(["study", str(cfg), "-o", str(tmp_path / ("a" * 247 + ".h5"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "is too long: 256 bytes with the .cells suffix, the file system allows 255" in err, err


def test_cells_of_the_same_config_are_still_reused_without_overwrite(tmp_path, capsys):
    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    before = _digests(out)
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    assert "skip finished cell" in capsys.readouterr().err and _digests(out) == before


def test_a_copied_study_plots_its_own_cells(tmp_path, capsys, figures):
    """The plot read the cells at the absolute place recorded at run time: a copy of the
    study with its cells drew the curves of whatever a later run wrote there (here the
    original's rerun at another learning rate)."""
    import shutil

    from pinnlab.plots import studies

    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    copy = tmp_path / "copy" / "train.h5"
    copy.parent.mkdir()
    shutil.copy(out, copy)
    shutil.copytree(str(out) + ".cells", str(copy) + ".cells")
    assert main(["study", str(cfg), "trainer.lr=0.5", "-o", str(out), "--overwrite"]) == 0
    import h5py

    cell = next(Path(str(copy) + ".cells").glob("*.h5"))
    with h5py.File(cell) as fh:
        loss = fh["trace/loss"][...]
    studies.plot_training_study(copy, tmp_path)
    line = figures["training_loss_curves.png"].axes[0].lines[0]
    assert np.allclose(line.get_ydata(), np.convolve(loss, np.ones(1), mode="valid"))
    # the original's replaced cells are not the copy's: with only those, none is drawn
    shutil.rmtree(str(copy) + ".cells")
    studies.plot_training_study(copy, tmp_path)
    texts = [t.get_text() for t in figures["training_loss_curves.png"].axes[0].texts]
    assert texts == ["no cell file of this study found"]


def test_an_interrupted_training_study_says_the_same_command_continues_it(tmp_path, capsys, monkeypatch):
    """Ctrl-C during a training study said only "pinnlab: interrupted", though a rerun skips
    the finished cells (kept in OUT.cells) and continues checkpointed ones: now a line says
    where they are and that the same command continues, in the same one line; exit 130, no
    result file."""
    from pinnlab.studies import training_study

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_study, "run_training_study", interrupted)
    cfg, out = tmp_path / "s.yaml", tmp_path / "s.h5"
    cfg.write_text(SMALL_TRAINING)
    code = main(["study", str(cfg), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and not out.exists()
    assert err == [f"pinnlab: interrupted; the finished cells are kept in {str(tmp_path / 's.h5.cells')!r} (and "
                   "a cell's checkpoint, with trainer.checkpoint_every); the same command continues the study"], err
