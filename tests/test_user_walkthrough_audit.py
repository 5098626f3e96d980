"""A new user's walk through the README: what the commands did with the inputs a user
gets wrong (a result file given as the config, the help text of tune and study, the
run-only trainer settings of an estimator study), and the behaviour met on the way that
no other test pinned (an interrupted --overwrite run keeps the finished result, plot's
refusal of a study's JSON file, a CSV line with a missing value)."""

from __future__ import annotations

import json

import h5py
import pytest
import torch

from pinnlab.cli import main, parse_args

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""

TRAINED_ESTIMATOR = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
trainer: {steps: 2, dtype: float64}
study:
  kind: estimator
  samples: [4]
  sigmas: [0.1]
  noise: [shared]
  quantities: [loss]
  replicates: 8
  points: 4
  reference_samples: 16
  reference_replicates: 4
  init: trained
"""


def _run(args):
    return main([str(a) for a in args])


# -- bugs: a result file given as the config, help text, ignored study settings -------------
def test_a_result_file_given_as_the_config_is_named_as_such(tmp_path, capsys):
    """Swapping CONFIG and the result (``pinnlab solve run.h5 -o x.h5``) is one line and
    exit 2, and the line says what the file is rather than a decoder's complaint."""
    result = tmp_path / "run.h5"
    with h5py.File(result, "w") as fh:
        fh.attrs["kind"] = "solve"
    assert _run(["solve", result, "-o", tmp_path / "x.h5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pinnlab: error: ")
    assert err == (f"pinnlab: error: config error: config file {str(result)!r} is an HDF5 file (a result?), "
                   "not a YAML config"), err
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("command, folder", [("study", "configs/studies"), ("tune", "configs/tuning")])
def test_help_of_study_and_tune_points_at_their_own_configs(command, folder, capsys):
    """The CONFIG line of each command's --help names the folder of configs it accepts."""
    with pytest.raises(SystemExit) as stop:
        parse_args([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    config_line = " ".join(out.split("positional arguments:")[1].split("overrides")[0].split())
    assert folder in config_line, config_line


def test_estimator_study_refuses_a_checkpoint_setting_it_ignores(tmp_path, capsys):
    """README: settings are refused where they would be ignored; an estimator study's
    pretraining writes no checkpoint, so ``trainer.checkpoint_every`` is refused in one
    line (exit 2) and no study file is written."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TRAINED_ESTIMATOR)
    out = tmp_path / "est.h5"
    code = _run(["study", cfg, "trainer.checkpoint_every=1", "-o", out])
    err = capsys.readouterr().err
    assert code == 2 and err == (
        "pinnlab: error: config error: trainer.checkpoint_every: has no effect in an estimator study, whose "
        "pretraining keeps no checkpoint (a stopped study starts again; it has no --resume); remove it\n"), err
    assert not out.exists()


def test_estimator_study_pretraining_reports_its_steps(tmp_path, capsys):
    """With ``trainer.log_every=1`` the pretraining logs its steps as ``pinnlab solve``
    does (a line per step when stderr is no terminal); it ran with progress off."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TRAINED_ESTIMATOR)
    code = _run(["study", cfg, "trainer.log_every=1", "-o", tmp_path / "est.h5"])
    err = capsys.readouterr().err
    assert code == 0 and "pretraining the network at d=3 for 2 steps" in err, err
    assert "train step 1/2 loss=" in err and "train step 2/2 loss=" in err, err


# -- behaviour that is right, pinned here ------------------------------------------------------
def test_an_interrupted_overwrite_keeps_the_finished_result_and_hints_resume_overwrite(
        tmp_path, capsys, monkeypatch):
    """Ctrl-C during ``solve --overwrite`` of an existing result leaves that result byte for
    byte, keeps the last completed step in RUN.h5.ckpt and hints ``--resume --overwrite``
    (a plain ``--resume`` would be refused: the output exists); that command then ends the
    run and removes the checkpoint."""
    import pinnlab.solvers as solvers

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("steps: 2", "steps: 4"))
    out = tmp_path / "run.h5"
    assert _run(["solve", cfg, "-o", out, "--progress", "off"]) == 0
    before = out.read_bytes()
    real_train = solvers.train

    def stopped_train(problem, **kwargs):
        user = kwargs["on_checkpoint"]
        calls = []

        def on_checkpoint(state):
            user(state)
            calls.append(state.step)
            if state.step == 2 and len(calls) == 2:  # the periodic save at step 2 has happened
                raise KeyboardInterrupt

        return real_train(problem, **{**kwargs, "on_checkpoint": on_checkpoint})

    monkeypatch.setattr(solvers, "train", stopped_train)
    args = ["solve", cfg, "trainer.checkpoint_every=1", "-o", out, "--progress", "off", "--overwrite"]
    assert _run(args) == 130
    err = capsys.readouterr().err
    assert f"step 2 saved in {str(out) + '.ckpt'!r}; --resume --overwrite continues from it" in err, err
    assert out.read_bytes() == before
    assert (tmp_path / "run.h5.ckpt").exists()
    monkeypatch.setattr(solvers, "train", real_train)
    assert _run([*args[:-1], "--resume", "--overwrite"]) == 0
    assert not (tmp_path / "run.h5.ckpt").exists()
    with h5py.File(out) as fh:
        assert int(fh["final"].attrs["steps_done"]) == 4


def test_plot_of_a_study_json_is_one_line(tmp_path, capsys):
    """``pinnlab plot est.json`` (the --json file instead of the HDF5 one) is one line,
    exit 2, naming the file as not HDF5, and writes no plot directory."""
    path = tmp_path / "est.json"
    path.write_text(json.dumps({"records": [], "slopes": {}}))
    assert _run(["plot", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pinnlab: error: cannot plot: {str(path)!r} is not an HDF5 file (Unable to synchronously "
                   "open file (file signature not found))")
    assert not (tmp_path / "est").exists()


def test_a_csv_line_with_a_missing_value_names_both_lines(tmp_path, capsys):
    """A CSV of observations whose second data line lacks u is refused in one line that
    gives its line number and the count of the line before (line 3 has 3 values, line 2 has 4)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    obs = tmp_path / "obs.csv"
    obs.write_text("x1,x2,x3,u\n0.1,0.1,0.1,1.0\n0.2,0.1,0.1\n")
    code = _run(["solve", cfg, f"data.source={obs}", "data.train=true", "-o", tmp_path / "d.h5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith(f"observation file {str(obs)!r}: line 3 has 3 values, line 2 has 4"), err



def test_a_stop_while_an_evaluation_is_recorded_keeps_the_step_before(tmp_path, monkeypatch):
    """README: a stopped solve first saves its last completed step. With
    checkpoint_every=5, a KeyboardInterrupt raised while step 3's evaluation row is
    appended (eval_every=3, inside the step's commit) undoes step 3's part and hands the
    state after step 2 to on_checkpoint: its history without step 3's loss or a part of
    its row, its parameters those of the step-2 state (not the step-3 ones)."""
    from pinnlab import config as configuration
    from pinnlab.solvers import loop

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("steps: 2, eval_every: 2", "steps: 8, eval_every: 3"))
    problem, kwargs = configuration.build(configuration.load(cfg, ["trainer.checkpoint_every=5"]))
    real_append = loop.History.append

    def append(self, terms=None, **values):
        if values["step"] == 3:
            raise KeyboardInterrupt
        real_append(self, terms, **values)

    monkeypatch.setattr(loop.History, "append", append)
    saved = []
    with pytest.raises(KeyboardInterrupt):
        loop.train(problem, **{**kwargs, "progress": "off"}, on_checkpoint=saved.append)
    assert [s.step for s in saved] == [2], [s.step for s in saved]
    state = saved[0]
    assert len(state.history.trace_loss) == len(state.history.trace_mix) == 2
    assert all(v == [] for v in state.history.rows.values()) and state.history.terms == {}
    assert len(state.window_loss) == 2 and state.timed_steps == 1
    monkeypatch.setattr(loop.History, "append", real_append)
    two = loop.train(problem, **{**kwargs, "steps": 2, "progress": "off"})
    for name, value in two.params.items():
        assert torch.equal(state.params[name], value), name
