"""Mutation audit (helper GS) of this session's backlog changes to observations, the data
term, joint fitting, ``pinnlab tune``'s stop lines, ``pinnlab plot``'s figure moves, the
lost-steps lines of a stopped solve and the progress bar: behaviours the backlog tests left
open (an upper-case .CSV file, a time outside the interval named by the file line, a joint
fit with a soft constraint, the rollback of a figure that did not exist, ...)."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import pinnlab.solvers.progress
from pinnlab import config as configuration
from pinnlab.cli import main
from tests.tuning.micro_configs import JOINT_MU

TINY = """\
equation: {name: poisson_two_body, dim: 4, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 8, eval_every: 2, test_points: 20, batch_size: 8, checkpoint_every: 0, log_every: 100}
"""


# -- observations: the CSV line of a refusal ---------------------------------------------------
def test_a_nonfinite_value_of_an_upper_case_csv_file_is_named_by_its_line(tmp_path):
    """load_observations reads ``obs.CSV`` as CSV (the suffix in any case); its refusal of a
    non-finite value names the file line as for ``obs.csv``, not only the observation."""
    from pinnlab.io.observations import ObservationError, load_observations

    data = tmp_path / "obs.CSV"
    data.write_text("x0,x1,x2,u\n# measured\n0.1,0.1,0.1,0\n0.1,nan,0.1,0\n")
    with pytest.raises(ObservationError, match=r"x of line 4 of the file \(observation 1, counting from 0\) "
                       "contains non-finite values$"):
        load_observations(data, 3)


def test_a_point_of_an_upper_case_csv_file_outside_the_domain_is_named_by_its_line(tmp_path):
    """The config's domain refusal names a CSV observation by its file line also for a file
    named ``obs.CSV`` (read as CSV by load_observations)."""
    data = tmp_path / "obs.CSV"
    data.write_text("x0,x1,x2,u\n# measured\n0.1,0.1,0.1,0\n2.0,0.1,0.1,0\n")
    path = tmp_path / "solve.yaml"
    path.write_text(f"equation: {{name: poisson_two_body, dim: 3}}\nmodel: {{width: 8}}\n"
                    f"trainer: {{steps: 3}}\ndata: {{source: {str(data)!r}}}\n")
    config = configuration.load(path)
    with pytest.raises(configuration.ConfigError) as err:
        configuration.make_observations(config, configuration.make_equation(config.equation))
    assert str(err.value) == (f"data.source: observation file {str(data)!r} holds a point outside the unit ball, "
                              "the domain of poisson_two_body: line 4 of the file (observation 1, counting from "
                              "0) at ‖x‖ = 2.005")


def test_a_time_outside_the_interval_is_named_by_the_label_or_by_its_observation():
    """observations_outside names the observation of a time outside [0, T] by ``label`` too
    (a CSV file's line), not only a point outside the unit ball; without a label, as
    "observation i (counting from 0)"."""
    from pinnlab.equations import make_equation
    from pinnlab.solvers.terms import observations_outside

    equation = make_equation("fokker_planck_aniso", 2)
    x = torch.tensor([[0.1, 0.1, 0.5], [0.1, 0.1, 2.0]], dtype=torch.float64)
    assert observations_outside(equation, x, lambda i: f"row {i} here") == (
        "a time outside [0, 1], where fokker_planck_aniso is posed: row 1 here at t = 2 "
        "(the time is x's last column)")
    assert observations_outside(equation, x) == (
        "a time outside [0, 1], where fokker_planck_aniso is posed: observation 1 (counting from 0) at t = 2 "
        "(the time is x's last column)")


def test_a_csv_time_outside_the_interval_is_named_by_its_file_line(tmp_path):
    """The config's refusal of a CSV observation at a time outside [0, T] names its line."""
    data = tmp_path / "obs.csv"
    data.write_text("x0,x1,t,u\n0.1,0.1,0.5,0\n# late\n0.1,0.1,2.0,0\n")
    path = tmp_path / "solve.yaml"
    path.write_text(f"equation: {{name: fokker_planck_aniso, dim: 2}}\nmodel: {{width: 4}}\n"
                    f"trainer: {{steps: 3}}\ndata: {{source: {str(data)!r}, train: true}}\n")
    with pytest.raises(configuration.ConfigError) as err:
        configuration.build(configuration.load(path))
    assert ("where fokker_planck_aniso is posed: line 4 of the file (observation 1, counting from 0) at t = 2 "
            in str(err.value)), str(err.value)


# -- joint fitting: the data misfit counted with other extra terms ----------------------------
def test_a_joint_fit_with_a_soft_boundary_term_still_adds_the_data_misfit(tmp_path):
    """joint_fit drops the outer data misfit only when the training loss holds a data term
    (data.train: true). A soft constraint's boundary term is an extra term too, but not the
    data: without data.train, θ's first SGD step is that of training loss + data misfit."""
    from pinnlab.tuning.search import joint_fit
    from pinnlab.tuning.setup import build_tuning

    path = tmp_path / "joint.yaml"
    path.write_text(JOINT_MU.replace("seed: 0}", "seed: 0, constraint: soft}"))
    config = configuration.load(path, ["trainer.dtype=float64", "trainer.optimizer=sgd", "trainer.lr=0.1",
                                       "tune.outer_steps=1", "tune.horizon=1"])
    setup = build_tuning(config)
    assert [term.name for term in setup.problem.extra_terms] == ["boundary"]
    theta0, phi, seed = setup.init[0], setup.phi0, setup.train_kwargs["seed"]

    def loss(theta):
        return setup.problem.objective(theta, setup.to_hyperparams(phi), 0, seed)[0] + setup.outer_loss(theta, phi)

    gradient = torch.func.grad(loss)(theta0)
    theta = joint_fit(setup).trained[0]
    for name, value in theta0.items():
        torch.testing.assert_close(theta[name], value - 0.1 * gradient[name], rtol=1e-10, atol=1e-12)


# -- pinnlab tune: the joint fit's lines -------------------------------------------------------
def test_a_joint_tune_whose_result_cannot_be_written_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    """A joint fit's result that cannot be written (a full disk) is one line, exit 1, saying
    as a stopped joint fit does that no checkpoint holds the fit nor the final solve."""
    from pinnlab.tuning import command

    def full_disk(output, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(command, "write_tune_result", full_disk)
    path = tmp_path / "tune.yaml"
    path.write_text(JOINT_MU)
    out = tmp_path / "t.h5"
    assert main(["tune", str(path), "-o", str(out), "--progress", "off"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"pinnlab: error: cannot write {str(out)!r} (No space left on device); the joint fit "
                       "(tune.method = 'joint') keeps no checkpoint, nor the final solve without "
                       "trainer.checkpoint_every; the same command runs both again"), err


def test_a_bilevel_tunings_outer_optimizer_is_made_before_its_display_starts(tmp_path, monkeypatch):
    """The one-off import torch.optim's first optimizer makes is paid before the tuning's
    display starts for every gradient method (fg2u here), not only the joint fit."""
    from pinnlab.tuning.spec import TuneSection
    from tests.tuning.micro_configs import WEIGHT_FG2U

    events = []
    made = TuneSection.outer_optimizer_for
    init = pinnlab.solvers.progress.Progress.__init__

    def optimizer(self, params):
        events.append("optimizer")
        return made(self, params)

    def display(self, *args, **kwargs):
        if kwargs.get("description") == "tune":
            events.append("display")
            raise KeyboardInterrupt  # (the order is all this test needs)
        init(self, *args, **kwargs)

    monkeypatch.setattr(TuneSection, "outer_optimizer_for", optimizer)
    monkeypatch.setattr(pinnlab.solvers.progress.Progress, "__init__", display)
    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    assert main(["tune", str(path), "-o", str(tmp_path / "t.h5"), "--progress", "off"]) == 130
    assert events == ["optimizer", "display"], events


# -- pinnlab plot: the staging directory and the rollback of moved figures ----------------------
def _solve_result(path):
    from tests.test_solve_plot_data import _solve_file

    _solve_file(path, loss=np.ones(30))
    with h5py.File(path, "a") as fh:
        fh.attrs["kind"] = "solve"
    return path


def test_a_read_only_plot_directory_is_exit_2_and_a_made_one_removed(tmp_path, capsys, monkeypatch):
    """A staging directory refused with EROFS (a read-only file system) is the user's
    directory, not the disk failing: exit 2, "cannot write into plot directory", and a
    directory this command made is removed again."""
    result = _solve_result(tmp_path / "run.h5")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    figs = tmp_path / "new" / "figs"
    assert main(["plot", str(result), "-o", str(figs)]) == 2
    assert capsys.readouterr().err == (f"pinnlab: error: cannot write into plot directory {str(figs)!r}: "
                                       "[Errno 30] Read-only file system\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_a_failed_figure_move_puts_back_every_earlier_figure_and_removes_new_ones(tmp_path, monkeypatch):
    """_move_figures whose third move fails: both earlier figures it replaced are put back
    (each from its own hard link) and the figure that did not exist before is removed."""
    from pinnlab.cli import RunFailed, _move_figures

    staging, figs = tmp_path / "staging", tmp_path / "figs"
    staging.mkdir()
    figs.mkdir()
    names = ["a.png", "b.png", "c.png", "d.png"]
    for name in names:
        (staging / name).write_text(f"new {name}")
    for name in names[:2]:
        (figs / name).write_text(f"old {name}")
    real = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if Path(dst) == figs / "d.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(RunFailed) as err:
        _move_figures([staging / n for n in names], [figs / n for n in names], staging)
    assert str(err.value) == f"cannot write {str(figs / 'd.png')!r} (No space left on device)"
    assert {p.name: p.read_text() for p in figs.iterdir()} == {"a.png": "old a.png", "b.png": "old b.png"}


# -- pinnlab solve: what a stopped solve says of its steps --------------------------------------
def _solve_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_a_solve_stopped_in_its_first_checkpoint_write_does_not_say_checkpoint_every_is_0(tmp_path, capsys,
                                                                                         monkeypatch):
    """With trainer.checkpoint_every = 2, a solve stopped while it writes its first
    checkpoint (atomic: nothing saved) says only "interrupted", not that
    trainer.checkpoint_every is 0 and how to set it."""
    import pinnlab.io

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pinnlab.io, "save_checkpoint", stopped)
    code = main(["solve", str(_solve_config(tmp_path)), "trainer.checkpoint_every=2", "-o", str(tmp_path / "r.h5"),
                 "--progress", "off"])
    assert code == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1:] == ["pinnlab: interrupted"]
    assert "checkpoint_every" not in err, err


def test_a_solve_stopped_while_it_writes_its_result_says_its_steps_are_lost(tmp_path, capsys, monkeypatch):
    """A solve without trainer.checkpoint_every stopped while its result file is written
    (minutes at a large d) says, as one stopped while training, that the steps are lost."""
    import pinnlab.io

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pinnlab.io, "write_solve_result", stopped)
    code = main(["solve", str(_solve_config(tmp_path)), "-o", str(tmp_path / "r.h5"), "--progress", "off"])
    assert code == 130
    *_, lost, last = capsys.readouterr().err.strip().splitlines()
    assert last == "pinnlab: interrupted"
    assert lost.startswith("pinnlab: trainer.checkpoint_every = 0, so the steps since the start are lost; "), lost


# -- the progress bar ---------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_counts_the_steps_reported_by_their_number_not_one_a_call():
    """update(step) moves the bar to step + 1 done (a joint fit reports every tune.horizon
    steps), not one further a call."""
    from pinnlab.solvers.progress import Progress

    bar = Progress(6, mode="bar", stream=io.StringIO())
    bar.update(2, 1.0, None)
    assert bar.bar.n == 3
    bar.update(5, 0.5, None)
    assert bar.bar.n == 6
    bar.close()


def test_a_bar_on_a_terminal_is_cleared_and_one_into_a_file_left():
    """A terminal's bar is cleared at its end (the result line follows it); a bar forced
    into a file is left, so its final frame is written."""
    from pinnlab.solvers.progress import Progress

    on_terminal, into_file = (Progress(2, mode="bar", stream=stream) for stream in (_Terminal(), io.StringIO()))
    assert on_terminal.bar.leave is False and into_file.bar.leave is True
    on_terminal.close()
    into_file.close()


# -- pinnlab.plots ----------------------------------------------------------------------------
def test_the_plots_package_has_no_other_lazy_attribute():
    """pinnlab.plots computes FIGURES when asked; any other missing name is an AttributeError
    (an ImportError for ``from pinnlab.plots import``), not None."""
    from pinnlab import plots

    assert not hasattr(plots, "FIGURE")
    with pytest.raises(ImportError):
        from pinnlab.plots import FIGURE  # noqa: F401
