"""The pinnlab command line: solve, resume after SIGKILL, bad input, list, plot."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pinnlab.cli import main

TINY = """\
equation: {name: poisson_two_body, dim: 4, seed: 1}
model: {width: 16, depth: 3}
estimator: {kind: stein, sigma: 0.05, samples: 8}
trainer: {steps: STEPS, eval_every: 20, test_points: 200, batch_size: 16, checkpoint_every: CKPT}
"""


def _config(tmp_path, steps=40, ckpt=0, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(TINY.replace("STEPS", str(steps)).replace("CKPT", str(ckpt)))
    return path


def _run(args):
    return main([str(a) for a in args])


def test_solve_writes_documented_result(tmp_path, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "run.h5"
    assert _run(["solve", cfg, "trainer.steps=40", "-o", out, "--progress", "off"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("rel_l2=") and " rel_l1=" in last and " steps_per_second=" in last
    with h5py.File(out, "r") as fh:
        for key in ("step", "loss", "rel_l2", "rel_l1", "lr", "wall_s"):
            assert fh[f"history/{key}"].shape == (2,)
        for key in ("rel_l2", "rel_l1", "max_err", "steps_per_second"):
            assert key in fh["final"].attrs
        assert fh["eval/u_pred"].shape == (200,) and fh["eval/x"].shape == (200, 4)
        assert "equation:" in fh.attrs["config"] and fh.attrs["problem_seed"] == 1
        assert fh["slices/main/u_pred"].shape == (64, 64)
        assert float(last.split()[0].split("=")[1]) == pytest.approx(fh["final"].attrs["rel_l2"], rel=1e-5)
    plots = tmp_path / "plots"
    assert _run(["plot", out, "-o", plots]) == 0
    assert {p.name for p in plots.iterdir()} == {"curves.png", "slice.png", "radial.png"}


def test_plot_draws_the_loss_terms_and_their_weights(tmp_path, monkeypatch):
    """With several loss terms ``pinnlab plot`` adds terms.png: each term's loss and weight
    at every history row, as stored in /history/terms (REFERENCE §8.2's per-term loss and
    weights vs step)."""
    from pinnlab.plots import solve as solve_plots

    cfg, out = _config(tmp_path), tmp_path / "w.h5"
    assert _run(["solve", cfg, "equation.constraint=soft", "loss.weighting=lra", "loss.weights.boundary=0.01",
                 "loss.weighting_options.every=5", "-o", out, "--progress", "off"]) == 0
    figures = {}
    real = solve_plots._save
    monkeypatch.setattr(solve_plots, "_save", lambda fig, path, **kw: figures.setdefault(path.name, fig) and
                        real(fig, path, **kw))
    assert _run(["plot", out, "-o", tmp_path / "plots"]) == 0
    assert (tmp_path / "plots" / "terms.png").is_file()
    ax_loss, ax_weight = figures["terms.png"].axes
    with h5py.File(out, "r") as fh:
        step, terms = fh["history/step"][...], {k: v[...] for k, v in fh["history/terms"].items()}
    for ax, kind in ((ax_loss, "loss"), (ax_weight, "weight")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"residual", "boundary"}
        for name, line in lines.items():
            np.testing.assert_array_equal(line.get_xdata(), step)
            np.testing.assert_array_equal(line.get_ydata(), np.abs(terms[f"{kind}_{name}"]))
    assert terms["weight_boundary"][0] != terms["weight_boundary"][-1]  # LRA moved it from 0.01
    # a single loss term has no terms figure
    assert _run(["solve", cfg, "-o", tmp_path / "one.h5", "--progress", "off"]) == 0
    assert _run(["plot", tmp_path / "one.h5", "-o", tmp_path / "one"]) == 0
    assert not (tmp_path / "one" / "terms.png").exists()


def test_kill_and_resume_is_bit_identical(tmp_path):
    """SIGKILL after a checkpoint, then --resume: same parameters and metrics as uninterrupted."""
    steps = 1500
    cfg = _config(tmp_path, steps=steps, ckpt=25)
    reference = tmp_path / "reference.h5"
    assert _run(["solve", cfg, "-o", reference, "--progress", "off"]) == 0
    out = tmp_path / "killed.h5"
    ckpt = Path(str(out) + ".ckpt")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pinnlab.cli", "solve", str(cfg), "-o", str(out), "--progress", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # let it run past the checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists(), "the run finished before it could be killed"
    assert _run(["solve", cfg, "-o", out, "--resume", "--progress", "off"]) == 0
    assert not ckpt.exists()
    with h5py.File(reference, "r") as a, h5py.File(out, "r") as b:
        for key in a["params"]:
            assert np.array_equal(a[f"params/{key}"][...], b[f"params/{key}"][...]), key
        for key in ("rel_l2", "rel_l1", "max_err"):
            assert a["final"].attrs[key] == b["final"].attrs[key]
        assert np.array_equal(a["history/rel_l2"][...], b["history/rel_l2"][...])
        assert np.array_equal(a["trace/loss"][...], b["trace/loss"][...])


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_lock(tmp_path):
    """SIGTERM (kill, a scheduler's time limit) ended the process on the spot: the output's
    lock file stayed, though the README says it goes when the run ends. It now unwinds:
    exit 143, "pinnlab: terminated", no lock or temporary file, the checkpoint resumable."""
    cfg = _config(tmp_path, steps=100000, ckpt=25)
    out = tmp_path / "run.h5"
    ckpt = Path(str(out) + ".ckpt")
    proc = subprocess.Popen([sys.executable, "-m", "pinnlab.cli", "solve", str(cfg), "-o", str(out),
                             "--progress", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None and (tmp_path / ".run.h5.lock").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:  # never left training for the rest of the suite
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, err
    *_, saved, last = err.strip().splitlines()
    assert last == "pinnlab: terminated", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5.ckpt", "tiny.yaml"]
    import torch

    # the step it had completed, not only the last periodic checkpoint's (a multiple of 25)
    step = torch.load(ckpt, weights_only=True)["step"]
    assert step >= 25 and saved == f"pinnlab: step {step} saved in {str(ckpt)!r}; --resume continues from it", err


def _bad(tmp_path, args, expected, capsys, protect=()):
    before = {p: p.read_bytes() for p in protect if p.exists()}
    code = _run(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert len(err) < 400, err  # (values and names in it are cut)
    assert expected in err, err
    assert "Traceback" not in err
    for p, content in before.items():
        assert p.read_bytes() == content


def test_bad_input_table(tmp_path, capsys):
    good = _config(tmp_path)
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"precious result")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as fh:
        fh["x"] = np.zeros(3)
    default = tmp_path / "existing.h5_plots"  # (a result written with -o existing.h5_plots)
    default.write_bytes(b"a result without a suffix")
    protect = [existing, good, foreign, default]
    cases = [
        (["solve", tmp_path / "missing.yaml", "-o", tmp_path / "o.h5"], "does not exist"),
        (["solve", good, "-o", existing], "exists; pass --overwrite"),
        (["solve", good, "trainer.steps=0", "-o", tmp_path / "o.h5"], "trainer.steps = 0"),
        (["solve", good, "estimator.sigmaa=1", "-o", tmp_path / "o.h5"], "estimator.sigmaa: unknown key"),
        # control characters in a key are escaped, not printed (they split the line or overwrote it)
        (["solve", good, "estimator.sig\nma=1", "-o", tmp_path / "o.h5"], "estimator.sig\\nma: unknown key"),
        (["solve", good, "estimator.sig\rma\x1b=1", "-o", tmp_path / "o.h5"],
         "estimator.sig\\rma\\x1b: unknown key"),
        (["solve", good, "equation.name=heat", "-o", tmp_path / "o.h5"], "unknown equation"),
        (["solve", good, "-o", existing / "o.h5"], f"{str(existing)!r} is not a directory"),  # "does not exist"
        # '..' after a file: resolved as text it named tmp_path, and the run lost its result at the write
        (["solve", good, "-o", existing / ".." / "o.h5"], f"{str(existing / '..')!r} is not a directory"),
        # a path ending with a separator wrote a file named like the directory; an empty
        # path became '.' ("is a directory"), and plot's -o '' was ignored
        (["solve", good, "-o", f"{tmp_path / 'newdir'}/"], "names a directory (it ends with a separator)"),
        (["solve", good, "-o", ""], "argument -o/--output: an empty path"),
        (["solve", "", "-o", tmp_path / "o.h5"], "argument config: an empty path"),
        (["plot", foreign, "-o", ""], "argument -o/--output: an empty path"),
        (["tune", good, "-o", f"{tmp_path}/"], "names a directory"),
        (["study", good, "-o", tmp_path / "s.h5", "--json", f"{tmp_path}/"], "argument --json: "),
        # argparse kept the last of a repeated option: only b.h5 was written
        (["solve", good, "-o", tmp_path / "a.h5", "-o", tmp_path / "b.h5"],
         "argument -o/--output: given twice; give it once"),
        (["tune", good, "-o", tmp_path / "a.h5", "--output", tmp_path / "b.h5"], "argument -o/--output: given twice"),
        (["study", good, "-o", tmp_path / "s.h5", "--json", tmp_path / "a.json", "--json", tmp_path / "b.json"],
         "argument --json: given twice"),
        (["solve", good, "-o", tmp_path / "o.h5", "--progress", "off", "--progress", "bar"],
         "argument --progress: given twice"),
        (["solve", good, "-o", tmp_path / "nodir" / "o.h5"], "cannot write output"),
        (["solve", good, "-o", tmp_path / "fresh.h5", "--resume"], "no checkpoint"),
        (["solve"], "required"),
        (["frobnicate"], "invalid choice"),
        (["plot", tmp_path / "missing.h5"], "does not exist"),
        (["plot", tmp_path], "is a directory"),
        # an HDF5 file pinnlab did not write (it said "unknown result kind ''")
        (["plot", foreign], "is not a pinnlab result file (it has no 'kind' attribute"),
        # a file where the default plot directory goes (a result written with -o existing.h5_plots): mkdir
        # said "File exists"
        (["plot", existing], f"the default plot directory of {str(existing)!r}, {str(default)!r}, "
                             "is a file, not a directory; choose one with -o DIR"),
        (["solve", tmp_path, "-o", tmp_path / "o.h5"], "is a directory"),
        (["plot", good, "-o", tmp_path / "figs"], "cannot plot: " + repr(str(good)) + " is not an HDF5 file ("),
        # and no empty figs/ left behind, nor the new directories above it
        (["plot", good, "-o", tmp_path / "new" / "sub" / "figs"], "cannot plot: "),
        (["solve", good, "-o", tmp_path / ("a" * 248 + ".h5")], "too long"),  # the .ckpt would not fit
        # names the file system cannot hold: stat raised OSError 36, a traceback
        (["solve", tmp_path / ("c" * 300 + ".yaml"), "-o", tmp_path / "o.h5"],
         "argument config: '" + str(tmp_path)[:40] + "'...: a name in it is 305 bytes long, the file system allows 255"),
        (["plot", tmp_path / ("r" * 300 + ".h5")], "argument file: "),
        (["plot", existing, "-o", tmp_path / ("d" * 300)], "argument -o/--output: "),
        (["solve", "/".join(["y" * 200] * 25), "-o", tmp_path / "o.h5"], "it is 5024 bytes long, the system allows"),
        (["solve", good, f"data.source={'s' * 300}.csv", "-o", tmp_path / "o.h5"],
         "data.source = 'sssssssss"),
        # a loop of symbolic links (Path.resolve raised RuntimeError)
        (["solve", good, "-o", tmp_path / "loop1"], "output '" + str(tmp_path / "loop1") + "' cannot be resolved: "
                                                    "a loop of symbolic links"),
        (["study", Path(__file__).parents[1] / "configs" / "studies" / "estimator_small.yaml", "-o",
          tmp_path / "s.h5", "--json", tmp_path / "loop1"], "(--json) cannot be resolved"),
        # a long value or key is cut to 60 characters in the message (it came back in full)
        (["solve", good, f"equation.name={'n' * 3000}", "-o", tmp_path / "o.h5"],
         f"equation.name = '{'n' * 56}...: unknown equation"),
        (["solve", good, f"{'k' * 3000}=1", "-o", tmp_path / "o.h5"], f"{'k' * 57}...: unknown section"),
        (["solve", good, f"trainer.{'k' * 3000}=1", "-o", tmp_path / "o.h5"], "...: unknown key"),
        (["solve", good, f"trainer={{{'k' * 3000}: 1}}", "-o", tmp_path / "o.h5"],
         "override 'trainer={kkk"),
        (["tune", good, "tune.tunables={lr: {}}", "data.points=10", f"tune.method={'m' * 3000}", "-o", tmp_path / "o.h5"],
         "...: unknown method"),
        # refused before training (they failed after it, or ended nonfinite over a good result)
        (["solve", good, "trainer.seed=18446744073709551616", "-o", existing, "--overwrite"],
         "trainer.seed = 18446744073709551616: must be an integer with 0 <= seed < 2**63"),
        (["solve", good, "trainer.lr=.inf", "-o", existing, "--overwrite"], "trainer.lr = inf: input should be a finite"),
        (["solve", good, "estimator.sigma=.inf", "-o", existing, "--overwrite"], "estimator.sigma = inf"),
        (["solve", good, "data.noise=.inf", "-o", existing, "--overwrite"], "data.noise = inf"),
        (["solve", good, "data.points=10", "-o", existing, "--overwrite"],
         "data: the observations have no effect on a solve without data.train: true"),
        (["solve", good, "equation.dim=true", "-o", existing, "--overwrite"], "equation.dim = True"),
        (["solve", good, "trainer={steps: 1, steps: 2}", "-o", tmp_path / "o.h5"], "duplicate key 'steps'"),
        # an output that is a file the run reads (it replaced the config)
        (["solve", good, "-o", good, "--overwrite"], "is the config, which this run reads"),
        (["solve", good, "-o", tmp_path / "link.yaml", "--overwrite"], "is the config, which this run reads"),
    ]
    (tmp_path / "link.yaml").symlink_to(good)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    for args, expected in cases:
        _bad(tmp_path, args, expected, capsys, protect)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("equation: {name: [unclosed\n")
    _bad(tmp_path, ["solve", malformed, "-o", tmp_path / "o.h5"], "malformed YAML", capsys, protect)
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(good.read_text() + "model: {width: 8}\n")
    _bad(tmp_path, ["solve", duplicate, "-o", tmp_path / "o.h5"], "at line 5, column 1: duplicate key 'model'",
         capsys, protect)
    corrupt = tmp_path / "corrupt.h5"
    Path(str(corrupt) + ".ckpt").write_bytes(b"not a checkpoint")
    _bad(tmp_path, ["solve", good, "-o", corrupt, "--resume"], "corrupted", capsys,
         [Path(str(corrupt) + ".ckpt")])
    _bad(tmp_path, ["solve", good, "-o", corrupt], "pass --resume", capsys, [Path(str(corrupt) + ".ckpt")])
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "figs").exists() and not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage", ["config_not_yaml", "slice_of_wrong_shape", "slice_of_a_smaller_grid"])
def test_plot_of_a_damaged_result_is_one_line_and_leaves_the_directory_as_it_was(tmp_path, capsys, damage):
    """A result file that fails half-way through drawing (its config attribute is not YAML,
    its slice has the wrong shape) ends in one line and exit 2, not a traceback, and the
    plot directory is left as it was: an existing figure is not replaced, a new directory is
    not left behind, no staging directory remains. The undamaged file then plots into it."""
    out = tmp_path / "run.h5"
    assert _run(["solve", _config(tmp_path, steps=20), "-o", out, "--progress", "off"]) == 0
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(out.read_bytes())
    with h5py.File(damaged, "r+") as fh:
        if damage == "config_not_yaml":
            fh.attrs["config"] = "equation: {name: [unclosed"
        else:  # a (3, 3) slice on the (64, 64) grid was drawn stretched, with exit 0
            del fh["slices/main/u_pred"]
            fh["slices/main/u_pred"] = np.zeros(7) if damage == "slice_of_wrong_shape" else np.zeros((3, 3))
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "curves.png").write_bytes(b"an earlier figure")
    for target in (figures, tmp_path / "new"):
        code = _run(["plot", damaged, "-o", target])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "cannot plot" in err, err
        # (the library's words alone did not say why)
        assert "the file is damaged or was written by another pinnlab version (" in err, err
        if damage == "slice_of_a_smaller_grid":
            assert "/slices/main/u_pred has shape (3, 3), not that of its grid (64, 64)" in err, err
    assert not (tmp_path / "new").exists()
    assert [p.name for p in figures.iterdir()] == ["curves.png"]
    assert (figures / "curves.png").read_bytes() == b"an earlier figure"
    assert _run(["plot", out, "-o", figures]) == 0
    assert {p.name for p in figures.iterdir()} == {"curves.png", "slice.png", "radial.png"}
    assert (figures / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_plot_into_a_directory_it_cannot_fill_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    """A plot directory that exists but is not writable ended in a traceback; one where a
    figure's name is taken by a directory ended in IsADirectoryError after the figures
    before it had replaced the old ones. Both are one line, exit 2, directory as it was."""
    out = tmp_path / "run.h5"
    assert _run(["solve", _config(tmp_path, steps=20), "-o", out, "--progress", "off"]) == 0
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "curves.png").write_bytes(b"an earlier figure")
    (figures / "slice.png").mkdir()
    code = _run(["plot", out, "-o", figures])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "slice.png" in err and "not a regular file" in err, err
    assert sorted(p.name for p in figures.iterdir()) == ["curves.png", "slice.png"]
    assert (figures / "curves.png").read_bytes() == b"an earlier figure"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)

    def refused(*args, **kwargs):  # what a directory without write permission does (root writes anyway)
        raise PermissionError(13, "Permission denied", str(locked))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    code = _run(["plot", out, "-o", locked])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write into plot directory" in err, err
    assert list(locked.iterdir()) == []


def test_a_second_run_to_an_output_being_written_is_refused(tmp_path, capsys):
    """Two runs to one -o both ended ok: the later replaced the earlier's result and each
    removed the checkpoint the other was writing. While one holds the output's lock
    (here this test, as a run would) another solve, tune or study to it is refused in one
    line, exit 2, without touching it; the lock file goes when its run ends, and a lock file
    left by a killed run locks nothing."""
    from pinnlab.io.atomic import output_lock

    cfg = _config(tmp_path, steps=20)
    out = tmp_path / "run.h5"
    out.write_bytes(b"precious")
    lock = tmp_path / ".run.h5.lock"
    with output_lock(out):
        assert lock.exists()
        for command in ("solve", "tune", "study"):
            assert _run([command, cfg, "-o", out, "--overwrite"]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "another pinnlab run is writing" in err, err
        assert out.read_bytes() == b"precious"
    assert not lock.exists()
    lock.write_bytes(b"")  # left by a killed run
    assert _run(["solve", cfg, "-o", out, "--overwrite", "--progress", "off"]) == 0
    assert not lock.exists() and h5py.is_hdf5(out)


def test_an_output_name_of_multibyte_characters_near_the_length_limit_is_written(tmp_path, capsys):
    """File systems limit a name's bytes, not its characters: the hidden temporary and lock
    names were cut at 200 characters, so an accepted output name of 2-byte characters
    (243 bytes, 248 with .ckpt) made them too long and the run lost its result at the final
    write, after the work. The result, its checkpoint and the lock now fit."""
    out = tmp_path / ("é" * 120 + ".h5")
    assert len(out.name.encode()) == 243
    code = _run(["solve", _config(tmp_path, steps=20, ckpt=10), "-o", out, "--progress", "off"])
    assert code == 0, capsys.readouterr().err
    assert h5py.is_hdf5(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "tiny.yaml"])


def test_outputs_that_are_not_regular_files_are_refused_before_the_work(tmp_path, capsys):
    """--overwrite renamed the result over a FIFO (or, as root, /dev/null); a directory
    where the checkpoint goes failed with a traceback at the first checkpoint, after the
    steps before it had run. Both are refused up front, for solve and tune alike."""
    good = _config(tmp_path, steps=30, ckpt=10)
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    _bad(tmp_path, ["solve", good, "-o", fifo, "--overwrite"], "fifo.h5' is not a regular file", capsys, [good])
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    (tmp_path / "d.h5.ckpt").mkdir()
    tune = tmp_path / "tune.yaml"
    tune.write_text(good.read_text() + "loss: {weights: {residual: 1.0}}\n"
                    "tune: {method: fg2u, tunables: {weights.residual: {}}, objective: {kind: residual},"
                    " outer_steps: 2, horizon: 2}\n")
    for config in (good, tune):
        _bad(tmp_path, ["tune" if config is tune else "solve", config, "-o", tmp_path / "d.h5", "--overwrite"],
             "d.h5.ckpt' is a directory", capsys, [config])
    assert (tmp_path / "d.h5.ckpt").is_dir() and not (tmp_path / "d.h5").exists()


def test_resume_with_other_config_is_refused(tmp_path, capsys):
    cfg = _config(tmp_path, steps=30, ckpt=10)
    out = tmp_path / "run.h5"
    from pinnlab import config as C
    from pinnlab.io import save_checkpoint
    from pinnlab.solvers import Adam, TrainState

    problem, kwargs = C.build(C.load(cfg))
    params = problem.init_params()
    save_checkpoint(Path(str(out) + ".ckpt"), TrainState(params, Adam().init(params)), Adam(),
                    C.load(cfg).to_yaml())
    lr = C.load(cfg).trainer.lr
    _bad(tmp_path, ["solve", cfg, "trainer.lr=0.5", "-o", out, "--resume"],
         f"different configuration (trainer.lr: {lr!r} in the checkpoint, 0.5 in this run)", capsys)
    _bad(tmp_path, ["solve", cfg, "model.activation=sin", "-o", out, "--resume"],
         "different configuration (model.activation: 'tanh' in the checkpoint, 'sin' in this run)", capsys)


def test_list_shows_every_equation(capsys):
    from pinnlab.equations import EQUATIONS

    assert _run(["list"]) == 0
    text = capsys.readouterr().out
    for name in EQUATIONS:
        assert name in text


def test_list_shows_tuning_methods_and_coefficient_sizes(capsys):
    """What `pinnlab tune` accepts, and the coefficients an inverse problem can tune with
    their length in d (checked against an instance at another d)."""
    from pinnlab.bilevel import METHODS
    from pinnlab.equations import EQUATIONS

    assert _run(["list"]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert lines["fokker_planck_aniso"].endswith("coefficients: mu (d)")
    assert lines["poisson_two_body"].endswith("coefficients: c (d-1)")
    assert lines["poisson_three_body"].endswith("coefficients: c (d-2)")
    assert "coefficients" not in lines["burgers"]
    assert EQUATIONS["poisson_three_body"](12, seed=3).coefficients["c"].shape == (10,)
    methods = text.split("tune methods: hypergradients ")[1].splitlines()[0]
    assert methods.split("; ") == [", ".join(METHODS), "baselines random, optuna, joint"]
    assert "\ntune objectives: data, residual, reference\n" in text
    assert lines["studies:"] == "studies: estimator, training"


@pytest.mark.parametrize("switch, edge", [
    (["loss.blend=[STEP,9]"], 1),  # mix > 0 from step start + 1
    (["loss.switch=auto", "loss.window=STEP", "loss.tolerance=0.9"], 1),  # earliest switch: step window + 1
    (["loss.switch_step=STEP"], 0),
])
def test_hybrid_whose_unbiased_phase_cannot_start_is_refused(tmp_path, capsys, switch, edge):
    """A hybrid loss is biased first, then unbiased (REFERENCE §2.4): a switch step, blend
    start or plateau window that keeps the mix at 0 to the last step is refused in one line
    (exit 2); one step earlier is accepted and the last step's mix is > 0 (the refusal's
    boundary is the loop's)."""
    steps = 4
    cfg = _config(tmp_path, steps=steps)
    last = steps - 1 - edge  # the latest start the loop still reaches
    ok, late = tmp_path / "ok.h5", tmp_path / "late.h5"
    base = ["solve", cfg, "loss.kind=hybrid", "--progress", "off", "trainer.eval_every=4"]
    assert _run([*base, *(s.replace("STEP", str(last)) for s in switch), "-o", ok]) == 0
    with h5py.File(ok, "r") as fh:
        assert fh["trace/mix"][-1] > 0 and fh["trace/mix"][0] == 0
    capsys.readouterr()
    assert _run([*base, *(s.replace("STEP", str(last + 1)) for s in switch), "-o", late]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unbiased phase never starts" in err[0] and not late.exists(), err


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_recorded_git_hash_says_when_the_checkout_had_uncommitted_changes(tmp_path):
    """git_hash named the commit even when the code that ran differed from it."""
    from pinnlab.io.results import _git_hash

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    assert _git_hash(tmp_path) == ""  # not a checkout
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-q", "-m", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("not code the run used\n")
    assert _git_hash(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert _git_hash(tmp_path) == head + "-dirty"


def test_result_files_ask_git_once_per_process(monkeypatch):
    """Every result file's versions ran ``git`` (up to three times: HEAD, whether the copy
    is tracked, the diff); a study writing hundreds of cells asked the same question each
    time. The answer is kept for the process."""
    from pinnlab.io import results

    calls = []
    run = subprocess.run

    def counted(args, *rest, **kwargs):
        calls.append(args)
        return run(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", counted)
    results._package_git_hash.cache_clear()
    first = results._versions()["git_hash"]
    asked = len(calls)
    assert 1 <= asked <= 3 and all(c[0] == "git" for c in calls), calls
    assert results._versions()["git_hash"] == first and len(calls) == asked


@pytest.mark.parametrize("command", ["solve", "tune", "study"])
def test_a_missing_config_is_the_only_missing_argument_named(tmp_path, capsys, command):
    """Without CONFIG argparse said "required: config, overrides"; overrides are optional."""
    assert _run([command, "-o", tmp_path / "x.h5"]) == 2
    assert capsys.readouterr().err.strip() == "pinnlab: error: the following arguments are required: config"


def test_plot_tells_a_damaged_result_and_a_checkpoint_from_a_foreign_file(tmp_path, capsys):
    """Both were "is not an HDF5 file (...)": a truncated pinnlab result, and a
    checkpoint given in place of its result."""
    import h5py
    import torch

    whole = tmp_path / "whole.h5"
    with h5py.File(whole, "w") as fh:
        fh.attrs["kind"] = "solve"
        fh["trace/loss"] = np.arange(10000.0)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    checkpoint = tmp_path / "run.h5.ckpt"
    torch.save({"step": 3}, checkpoint)
    for path, expected in ((cut, "is an HDF5 file that cannot be read, truncated or damaged (Unable to "),
                           (checkpoint, "is a checkpoint of an interrupted run, not a result; continue the run "
                                        "with --resume to get its result file")):
        assert main(["plot", str(path), "-o", str(tmp_path / "figs")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"pinnlab: error: cannot plot: {str(path)!r} {expected}"), err


def test_a_solve_of_a_tuning_config_refuses_a_switch_after_its_last_step(tmp_path, capsys):
    """A tuning config solved as it is (the untuned baseline) runs trainer.steps steps;
    with tune.final_steps set, validation checks the switch against the final solve only,
    and the solve ran 4 steps with a switch at 45: exit 0, a UserWarning, and no unbiased
    phase. Without final_steps the same config was refused; now both are, in one line."""
    cfg = tmp_path / "tuning.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 3, seed: 1}\nmodel: {width: 8, depth: 2}\n"
                   "estimator: {kind: stein, sigma: 0.05, samples: 4}\nloss: {kind: hybrid, switch_step: 45}\n"
                   "trainer: {steps: 4, eval_every: 4, test_points: 20, batch_size: 8}\n"
                   "tune: {tunables: {sigma: {}}, final_steps: 50}\n")
    expected = "loss.switch_step = 45: must be < trainer.steps (4), or the unbiased phase never starts"
    for extra in ([], ["tune.final_steps=null"]):
        _bad(tmp_path, ["solve", cfg, *extra, "-o", tmp_path / "r.h5"], expected, capsys)
        assert not (tmp_path / "r.h5").exists()
    assert _run(["solve", cfg, "trainer.steps=46", "trainer.eval_every=46", "-o", tmp_path / "r.h5",
                 "--progress", "off"]) == 0
