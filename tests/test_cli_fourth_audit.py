"""Fourth audit of pinnlab/cli.py: what the command line does around the work (the files
it removes or refuses, what it says when stopped, the handler it puts back), pinned with
the library's training and file writing replaced by recorders where only the glue is
under test."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from pinnlab import io as pinnlab_io
from pinnlab import plots, solvers
from pinnlab.cli import _coefficient_sizes, main

from .equations.test_user_equations import CONFIG, registry  # noqa: F401 (a fixture)
from .test_resume_hints import TINY


def _finished():
    """What cmd_solve reads of a finished training result to report it."""
    return SimpleNamespace(status="ok", message="", final=SimpleNamespace(rel_l2=0.5, rel_l1=0.25),
                           stats={"steps_per_second": 10.0})


@pytest.fixture
def no_writes(monkeypatch):
    """The result file and its slice, recorded instead of computed and written."""
    calls = {}

    def result_slice(problem, result, **kwargs):
        calls["slice"] = kwargs
        return None

    def write_solve_result(output, **kwargs):
        output.write_bytes(b"new result")

    monkeypatch.setattr(pinnlab_io, "result_slice", result_slice)
    monkeypatch.setattr(pinnlab_io, "write_solve_result", write_solve_result)
    return calls


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_main_puts_back_the_sigterm_handler_it_replaced(capsys):
    """main makes SIGTERM raise Terminated while it runs; a notebook or script calling it
    gets its own handler back afterwards (left in place, a later SIGTERM would raise
    Terminated in the caller's code)."""

    def mine(signum, frame):  # pragma: no cover - never delivered
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["list"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
        assert main(["frobnicate"]) == 2  # also after bad input
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    capsys.readouterr()


def test_a_checkpoint_path_that_is_the_config_is_refused_and_the_config_kept(tmp_path, capsys):
    """``-o run.h5`` beside a config named run.h5.ckpt: the checkpoint would be written over
    the config, and a finished solve removes its checkpoint, so the config went; refused
    up front, naming the checkpoint, even with --overwrite."""
    cfg = tmp_path / "run.h5.ckpt"
    cfg.write_text(TINY)
    out = tmp_path / "run.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--overwrite", "--progress", "off"]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: checkpoint {str(cfg)!r} is the config, which this run "
                                       "reads; choose another name")
    assert cfg.read_text() == TINY and not out.exists()


def test_an_interrupted_solve_names_the_last_step_it_saved(tmp_path, capsys, monkeypatch):
    """Ctrl-C after checkpoints at steps 2 and 4 says step 4 is saved (the one --resume
    continues from) and exits 130."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "r.h5"
    cfg.write_text(TINY.replace("steps: 2,", "steps: 6,").replace("batch_size: 8}", "batch_size: 8, checkpoint_every: 2}"))
    saved = []
    monkeypatch.setattr(pinnlab_io, "save_checkpoint", lambda path, state, *rest: saved.append((path, state.step)))

    def stopped(problem, *, on_checkpoint, **kwargs):
        for step in (2, 4):
            on_checkpoint(SimpleNamespace(step=step))
        raise KeyboardInterrupt

    monkeypatch.setattr(solvers, "train", stopped)
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 130
    ckpt = str(out) + ".ckpt"
    assert saved == [(out.with_name("r.h5.ckpt"), 2), (out.with_name("r.h5.ckpt"), 4)]
    assert capsys.readouterr().err.splitlines() == [
        f"pinnlab: step 4 saved in {ckpt!r}; --resume continues from it", "pinnlab: interrupted"]


def test_the_solves_slice_is_drawn_with_the_runs_seed_and_evaluation_samples(tmp_path, capsys, monkeypatch,
                                                                             no_writes):
    """The /slices data of a solve uses trainer.seed and estimator.eval_samples (with the
    default seed 0, runs differing only in their seed would share the slice's noise)."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "r.h5"
    cfg.write_text(TINY.replace("samples: 4}", "samples: 4, eval_samples: 6}"))
    monkeypatch.setattr(solvers, "train", lambda problem, **kwargs: _finished())
    assert main(["solve", str(cfg), "trainer.seed=7", "-o", str(out), "--progress", "off"]) == 0
    assert no_writes["slice"]["num_samples"] == 6 and no_writes["slice"]["seed"] == 7
    assert capsys.readouterr().out == "rel_l2=5.000000e-01 rel_l1=2.500000e-01 steps_per_second=10\n"


def _drawing(*names):
    """A plot_file that draws figures ``names`` into the staging directory."""

    def plot_file(path, staging):
        for name in names:
            (staging / name).write_bytes(b"new figure")
        return [staging / name for name in names]

    return plot_file


def test_a_figure_named_like_the_result_file_does_not_replace_it(tmp_path, capsys, monkeypatch):
    """A result named curves.png plotted into its own directory: the figure curves.png
    would be moved over the result; refused, the result and the directory as they were."""
    result = tmp_path / "curves.png"
    result.write_bytes(b"the result")
    monkeypatch.setattr(plots, "plot_file", _drawing("slice.png", "curves.png"))
    assert main(["plot", str(result), "-o", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: cannot plot into {str(result)!r}: it is the result file "
                                       "being plotted; choose another directory with -o DIR")
    assert result.read_bytes() == b"the result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_an_output_name_is_measured_in_bytes_with_its_checkpoint_suffix(tmp_path, capsys, monkeypatch):
    """124 two-byte characters + '.h5' are 127 characters but 251 bytes; with '.ckpt', 256
    bytes, one more than the file system allows: refused before the work (counted in
    characters, the checkpoint could not be written once there was one to write)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(TINY)
    name = "é" * 124 + ".h5"
    assert main(["solve", "c.yaml", "-o", name, "--progress", "off"]) == 2
    assert _one_error_line(capsys).endswith("is too long: 256 bytes with the .ckpt suffix, the file system allows 255")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]



def test_an_equation_error_names_the_innermost_line_of_the_users_module(tmp_path, capsys, registry):  # noqa: F811
    """The user's source calls a helper of the same module that raises: the line names
    the helper's line (where it was raised), not the caller's."""
    module = tmp_path / "nested.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody, register\n\n"
                      "def check(x):\n"
                      "    if x.shape[0] > 4:\n"
                      "        raise ArithmeticError('too many points')\n\n"
                      "@register\nclass Nested(PoissonTwoBody):\n    name = 'user_nested'\n"
                      "    def source(self, x, coefficients):\n"
                      "        check(x)\n"
                      "        return super().source(x, coefficients)\n")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("NAME", "user_nested").replace("MODULE", str(module)))
    assert main(["solve", str(config), "-o", str(tmp_path / "o.h5"), "--progress", "off"]) == 2
    assert _one_error_line(capsys) == (f"pinnlab: error: the equation module raised ArithmeticError: too many points "
                                       f"({module} line 5, in check)")


def test_list_gives_a_coefficients_length_in_d_only_when_it_grows_with_d():
    """`pinnlab list` reads a coefficient's length off d = 5 and 6: one of d - 1 values is
    "(d-1)", one of fixed length or of 2d values is shown with its shape at d = 5."""

    class Coefficients:
        def __init__(self, d, seed):
            self.coefficients = {"c": torch.zeros(d - 1), "k": torch.zeros(3), "w": torch.zeros(2 * d),
                                 "m": torch.zeros(d, d)}

    assert _coefficient_sizes(Coefficients) == "c (d-1), k (3,), w (10,), m (5, 5)"
