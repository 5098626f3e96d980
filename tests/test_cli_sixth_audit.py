"""Sixth audit of pinnlab/cli.py: the lines `plot` prints (every figure it moved into
place) and the --progress a solve hands to training, pinned with the library's training,
drawing and file writing replaced by recorders where only the glue is under test."""

from __future__ import annotations

from pinnlab import plots, solvers
from pinnlab.cli import main

from .test_cli_fourth_audit import _drawing, _finished, no_writes  # noqa: F401 (a fixture)
from .test_resume_hints import TINY


def test_plot_prints_the_path_of_every_figure_it_drew(tmp_path, capsys, monkeypatch):
    """``pinnlab plot`` prints one line per figure, its path in the plot directory, in the
    order drawn: a script reading them gets all of them, not the first only."""
    result = tmp_path / "run.h5"
    result.write_bytes(b"the result")
    monkeypatch.setattr(plots, "plot_file", _drawing("curves.png", "slice.png", "radial.png"))
    figures = tmp_path / "figs"
    assert main(["plot", str(result), "-o", str(figures)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(figures / name) for name in
                                                    ("curves.png", "slice.png", "radial.png")]
    assert sorted(p.name for p in figures.iterdir()) == ["curves.png", "radial.png", "slice.png"]


def test_a_solve_hands_its_progress_choice_to_training(tmp_path, capsys, monkeypatch, no_writes):  # noqa: F811
    """``--progress`` reaches the training loop as given, and ``auto`` (a bar on a terminal,
    log lines otherwise) when not given: dropped, every run drew the loop's default."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    seen = []

    def train(problem, **kwargs):
        seen.append(kwargs.get("progress"))
        return _finished()

    monkeypatch.setattr(solvers, "train", train)
    assert main(["solve", str(cfg), "-o", str(tmp_path / "a.h5"), "--progress", "log"]) == 0
    assert main(["solve", str(cfg), "-o", str(tmp_path / "b.h5")]) == 0
    assert main(["solve", str(cfg), "-o", str(tmp_path / "c.h5"), "--progress", "off"]) == 0
    assert seen == ["log", "auto", "off"]
    assert capsys.readouterr().out.count("rel_l2=5.000000e-01 rel_l1=2.500000e-01 steps_per_second=10\n") == 3
