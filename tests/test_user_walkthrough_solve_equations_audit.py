"""A scientist's walk through ``pinnlab solve`` on every shipped equation (tiny overrides),
its estimator, loss and weighting options, interrupts and resumes, the Python API and
the inputs a user gets wrong. Pinned here: what went wrong on the way (the Cole–Hopf
reference of hjb_rosenbrock computed for minutes without a word, a library warning shown
in Python's two-line format with a source line, an unwritable output directory reported
through the name of an internal probe file, equation parameters refused without their
key path) and behaviour met on the way that no other test pinned."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import h5py
import pytest

from pinnlab.cli import main

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, eval_samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""

ROSENBROCK = """\
equation: {name: hjb_rosenbrock, dim: 3, seed: 0, horizon: 0.3, reference_samples: 64}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, eval_samples: 4}
loss: {kind: biased}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""


def _print_warning(message, category, filename, lineno, file=None, line=None):
    """Python's own display of a warning (pytest records them instead)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _run(args):
    return main([str(a) for a in args])


def _config(tmp_path, text=TINY, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- bugs ---------------------------------------------------------------------------------
def test_the_rosenbrock_reference_computation_says_what_it_is_doing(tmp_path, capsys, monkeypatch):
    """Long work shows progress: with ``--progress log`` and no cached reference, something
    naming the reference is written before the first training log line (now stderr holds
    only the training lines: the reference is computed in silence)."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "cache"))
    cfg = _config(tmp_path, ROSENBROCK)
    assert _run(["solve", cfg, "trainer.log_every=1", "-o", tmp_path / "r.h5", "--progress", "log"]) == 0
    lines = capsys.readouterr().err.splitlines()
    first_step = next(i for i, line in enumerate(lines) if line.startswith("train step"))
    assert any("reference" in line for line in lines[:first_step]), lines


def test_a_warning_during_a_solve_is_one_line_like_the_commands_own(tmp_path, capsys, monkeypatch):
    """PINNLAB_CACHE naming a path under a file: the run still ends 0 with its result (that
    part holds), and the warning is one stderr line starting ``warning:``, as the CLI's own
    warnings (tune's ``warning: tuning stopped early (…)``), without a Python source line."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("PINNLAB_CACHE", str(blocker / "cache"))
    cfg = _config(tmp_path, ROSENBROCK)
    out = tmp_path / "r.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # Python's own filter for a UserWarning: once per place
        warnings.showwarning = _print_warning  # as outside pytest: printed to stderr
        code = _run(["solve", cfg, "-o", out, "--progress", "off"])
    assert code == 0 and out.exists()
    err = capsys.readouterr().err.splitlines()
    hits = [line for line in err if "cannot cache the reference" in line]
    assert len(hits) == 1, err
    assert hits[0].startswith("warning: hjb_rosenbrock: cannot cache the reference"), err
    assert not any("UserWarning" in line or "main(" in line for line in err), err


def test_an_unwritable_output_directory_is_named_as_such(tmp_path, capsys, monkeypatch):
    """One line, exit 2, nothing written (that part holds), naming the directory as not
    writable rather than an internal ``.pinnlab-write-probe-PID`` file (as root the
    permission cannot refuse, so the probe's write fails as the OS would fail it)."""
    cfg = _config(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    real = Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".pinnlab-write-probe-"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    assert _run(["solve", cfg, "-o", locked / "run.h5", "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and list(locked.iterdir()) == []
    assert "pinnlab-write-probe" not in err, err
    assert str(locked) in err and "not writable" in err, err


@pytest.mark.parametrize("name, override, key", [
    ("burgers", "equation.viscosity=-0.5", "equation.viscosity"),
    ("hjb_lin", "equation.horizon=0", "equation.horizon"),
])
def test_an_out_of_range_equation_parameter_is_refused_with_its_key_path(tmp_path, capsys, name, override, key):
    """README: out-of-range values are refused with the key path."""
    cfg = _config(tmp_path, TINY.replace("poisson_two_body", name))
    assert _run(["solve", cfg, override, "-o", tmp_path / "b.h5", "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pinnlab: error: config error: {key} = "), err


HYBRID = TINY.replace("trainer: {steps: 2", "loss: {kind: hybrid, switch_step: 3}\ntrainer: {steps: 6")


@pytest.mark.parametrize("switch", [["loss.switch=auto", "loss.window=2"], ["loss.blend=[1,3]"]])
def test_another_hybrid_switch_given_as_an_override_is_taken_or_the_conflict_is_named(tmp_path, capsys, switch):
    """The config's own switch and an override's other switch: either the override replaces
    it (as loss.kind=biased drops the switch, trainer.schedule=linear the gamma) and the
    run ends 0, or the one-line refusal names the config's setting, switch_step = 3."""
    cfg = _config(tmp_path, HYBRID)
    code = _run(["solve", cfg, *switch, "-o", tmp_path / "h.h5", "--progress", "off"])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2)
    assert code == 0 or re.search(r"switch_step[ =:]+3\b", err), err


# -- behaviour met on the way, pinned -------------------------------------------------------
def test_history_rows_of_a_time_dependent_soft_solve_average_the_trace_since_the_last_row(tmp_path):
    """README: ``loss`` in /history is the mean training loss since the previous row. On
    fokker_planck_iso (x, t; soft constraint: two terms) with steps=5, eval_every=2 the rows
    are at steps 2, 4 and 5 (the last a short one of one step), each the mean of its
    /trace/loss slice; best_rel_l2 is the least row and rel_l2 the last one."""
    cfg = _config(tmp_path, TINY.replace("poisson_two_body", "fokker_planck_iso"))
    out = tmp_path / "fp.h5"
    assert _run(["solve", cfg, "equation.constraint=soft", "trainer.steps=5", "-o", out, "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        steps = [int(s) for s in fh["history/step"][...]]
        trace = fh["trace/loss"][...]
        assert steps == [2, 4, 5] and trace.shape == (5,)
        assert fh["history/loss"][...] == pytest.approx([trace[:2].mean(), trace[2:4].mean(), trace[4]], rel=1e-6)
        assert set(fh["history/terms"]) == {"loss_residual", "loss_boundary", "weight_residual", "weight_boundary"}
        rel = fh["history/rel_l2"][...]
        final = fh["final"].attrs
        assert float(final["best_rel_l2"]) == float(rel.min()) and float(final["rel_l2"]) == float(rel[-1])
        assert int(final["steps_done"]) == 5 and fh["eval/x"].shape == (20, 4)


def test_an_unwritable_reference_cache_costs_a_warning_not_the_solve(tmp_path, monkeypatch):
    """PINNLAB_CACHE under a file: ``pinnlab solve`` of hjb_rosenbrock still ends 0 with a
    complete result (status ok, every step done) and caches nothing; the library-level
    test pins the warning, this one the command's outcome."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cfg = _config(tmp_path, ROSENBROCK)
    out = tmp_path / "r.h5"
    monkeypatch.setenv("PINNLAB_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot cache the reference"):
        assert _run(["solve", cfg, "-o", out, "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert fh.attrs["status"] == "ok" and int(fh["final"].attrs["steps_done"]) == 2
    assert blocker.read_text() == ""
