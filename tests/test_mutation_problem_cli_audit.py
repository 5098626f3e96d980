"""Mutation audit of PINNProblem's construction checks (the forward-pass probe of its net
at the net's own dtype, what that probe names when the net raises or returns the wrong
shape, the Perturbation probe under the Stein estimator, the user-equation check and its
error type, the soft-constraint warning) and of ``pinnlab solve``'s error paths (a
checkpoint or result that cannot be written: exit 1, the OS's words, the step kept;
another command's checkpoint; a stop while the result is written; the checkpoint removed
after a run that ends nonfinite); the library's training and file writing replaced by
recorders where only the glue is under test."""

from __future__ import annotations

import errno
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pinnlab import io as pinnlab_io
from pinnlab import solvers
from pinnlab.cli import main
from pinnlab.equations import PoissonTwoBody
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import Biased
from pinnlab.nets import MLP, Pointwise
from pinnlab.solvers import DataLoss, PINNProblem
from pinnlab.solvers.terms import ConstraintLoss

from .test_resume_hints import TINY

F64 = torch.float64


def _equation(**kwargs):
    return PoissonTwoBody(3, seed=1, **kwargs)


class _Raising(nn.Module):
    """A net whose forward pass raises ``error``."""

    def __init__(self, error):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.error = error

    def forward(self, x):
        raise self.error


class _Returning(nn.Module):
    """A net that returns ``make(x)`` instead of one value per point."""

    def __init__(self, make):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.make = make

    def forward(self, x):
        return self.make(x)


# -- the net's probe ----------------------------------------------------------------------------
def test_a_float64_plain_net_is_probed_at_its_own_dtype_and_accepted():
    """A plain float64 torch network (no ``input_dim``) is probed with float64 points: a
    float32 probe failed it with "mat1 and mat2 must have the same dtype", refusing a net
    that trains. Under Stein, a float64 MLP takes the float64 Perturbation probe."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0)).to(F64)
    problem = PINNProblem(_equation(), net, Autograd(), Biased(), batch_size=4)
    assert problem.net is net
    mlp = MLP(3, width=4, depth=2, dtype=F64)
    stein = PINNProblem(_equation(), mlp, SteinAntithetic(sigma=0.05, num_samples=2), Biased(), batch_size=4)
    assert stein.net is mlp


@pytest.mark.parametrize("error", [IndexError("index 3 is out of bounds for dimension 1 with size 3"),
                                   ValueError("index 3 is out of bounds for dimension 1 with size 3"),
                                   KeyError("index 3 is out of bounds for dimension 1 with size 3")])
def test_any_error_of_the_nets_forward_pass_is_one_value_error_naming_it(error):
    """Whatever the user's net raises at the probe (an IndexError of x[:, 3] on 3 columns,
    a ValueError, a KeyError), not only torch's RuntimeError/TypeError, is refused as a
    ValueError naming the net, the points' shape, the equation and the error's type."""
    with pytest.raises(ValueError) as err:
        PINNProblem(_equation(), _Raising(error), Autograd(), Biased())
    assert str(err.value) == (f"net: its forward pass at (2, 3) points of poisson_two_body failed "
                              f"({type(error).__name__}: {error}); it must take (N, 3) inputs and return (N,) values")


def test_a_forward_pass_error_of_several_lines_is_quoted_on_one_line_cut_to_160():
    """The net's error is quoted with its line breaks and runs of spaces joined, cut to 160
    characters: torch's multi-line errors split the refusal over several lines."""
    text = "first line\n  second   line\n" + "x" * 300
    with pytest.raises(ValueError) as err:
        PINNProblem(_equation(), _Raising(RuntimeError(text)), Autograd(), Biased())
    message = str(err.value)
    assert "\n" not in message
    assert f"(RuntimeError: {('first line second line ' + 'x' * 300)[:160]}); it must take" in message


@pytest.mark.parametrize("make, shown", [(lambda x: x[:, :1], "(2, 1)"), (lambda x: x[:, 0].repeat(2), "(4,)"),
                                         (lambda x: x.sum(), "()"),
                                         (lambda x: x[:, 0].tolist(), "list")])
def test_an_output_not_of_one_value_per_point_is_refused_showing_what_it_was(make, shown):
    """Only an `(N,)` output passes the probe: an `(N, 1)` one, a flattened `(2N,)` one, a
    scalar or a list is refused with its shape (or its type's name, not its repr)."""
    with pytest.raises(ValueError) as err:
        PINNProblem(_equation(), _Returning(make), Autograd(), Biased())
    assert str(err.value) == ("net must return one value per point, shape (N,), for (N, 3) inputs; it returned "
                              f"{shown} for N = 2 (end an (N, 1) output with nn.Flatten(0))")


def test_a_plain_net_under_stein_is_a_type_error_pointing_to_pointwise_and_the_wrapped_one_passes():
    """A plain net that only takes tensors is refused under the Stein estimator (which
    passes it a Perturbation) as a TypeError naming the error's type and the fix;
    Pointwise(net) passes, as the same plain net does under Autograd."""
    def plain():
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0))

    stein = SteinAntithetic(sigma=0.05, num_samples=2)
    with pytest.raises(TypeError) as err:
        PINNProblem(_equation(), plain(), stein, Biased())
    assert str(err.value).startswith("net: the Stein estimator passes it a pinnlab.nets.Perturbation (the noisy "
                                     "copies of the points, factored), which it cannot take (TypeError); use "
                                     "pinnlab.nets.MLP, or wrap a plain network as pinnlab.nets.Pointwise(net)")
    PINNProblem(_equation(), Pointwise(plain()), stein, Biased())
    PINNProblem(_equation(), plain(), Autograd(), Biased())


# -- the user-equation check --------------------------------------------------------------------
class _BrokenSource(PoissonTwoBody):
    """A user's equation whose source raises."""

    def source(self, x, coefficients=None):
        raise ZeroDivisionError("division by zero")


def test_a_user_equation_that_fails_its_check_is_a_plain_value_error_from_python():
    """From Python the check's refusal is a ValueError with the check's one line (not the
    config layer's ConfigError: no config is involved), its cause suppressed."""
    with pytest.raises(ValueError) as err:
        PINNProblem(_BrokenSource(3, seed=1), MLP(3, width=4, depth=2), Autograd(), Biased())
    assert type(err.value) is ValueError and err.value.__suppress_context__
    assert str(err.value) == ("equation 'poisson_two_body': source failed when tried on 4 points: "
                              "ZeroDivisionError: division by zero")


def test_an_equation_of_a_package_named_like_pinnlab_is_a_users_and_checked():
    """Only pinnlab's own modules (``pinnlab.``) skip the check: an equation of a
    third-party package ``pinnlab_plugins`` is a user's and is tried before any work."""
    broken = type("_PluginSource", (_BrokenSource,), {"__module__": "pinnlab_plugins.equations"})
    with pytest.raises(ValueError, match=r"^equation 'poisson_two_body': source failed when tried on 4 points"):
        PINNProblem(broken(3, seed=1), MLP(3, width=4, depth=2), Autograd(), Biased())


def test_a_constraint_term_anywhere_among_the_extra_terms_silences_the_soft_constraint_warning():
    """The warning that a soft-constraint problem trains without its boundary condition is
    for a problem with no ConstraintLoss among its terms, wherever it stands; one without
    any is warned."""
    eq = _equation(constraint="soft")
    data = DataLoss(torch.zeros(2, 3, dtype=F64), torch.zeros(2, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PINNProblem(eq, MLP(3, width=4, depth=2), Autograd(), Biased(),
                    extra_terms=(data, ConstraintLoss("boundary", batch_size=4)))
    with pytest.warns(UserWarning, match="has a soft constraint, and no ConstraintLoss is among extra_terms"):
        PINNProblem(eq, MLP(3, width=4, depth=2), Autograd(), Biased(), extra_terms=(data,))


# -- pinnlab solve's error paths ------------------------------------------------------------------
def _result(step, status="ok"):
    """What cmd_solve reads of a training result: its status, message, final state's step
    and the report's numbers."""
    return SimpleNamespace(status=status, message=f"training ended {status}", state=SimpleNamespace(step=step),
                           final=SimpleNamespace(rel_l2=0.5, rel_l1=0.25), stats={"steps_per_second": 10.0})


@pytest.fixture
def solve(tmp_path, monkeypatch):
    """``pinnlab solve`` of the tiny config with trainer.checkpoint_every=2 into r.h5:
    returns (run, saved): ``run(train, *flags)`` runs it with ``train`` in place of the
    training, ``saved`` lists the steps save_checkpoint was given (a step in ``fail``
    raises ENOSPC instead; each saved step is written as the checkpoint file's text)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    saved, fail = [], set()

    def save_checkpoint(path, state, *rest):
        if state.step in fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(state.step)
        path.write_text(str(state.step))

    monkeypatch.setattr(pinnlab_io, "save_checkpoint", save_checkpoint)
    monkeypatch.setattr(pinnlab_io, "result_slice", lambda problem, result, **kwargs: None)

    def run(train, *flags):
        monkeypatch.setattr(solvers, "train", train)
        return main(["solve", str(cfg), "trainer.checkpoint_every=2", "-o", str(tmp_path / "r.h5"),
                     "--progress", "off", *flags])

    run.fail = fail
    return run, saved


def _steps(*steps, result=None):
    """A training that checkpoints at ``steps`` and returns ``result``."""
    def train(problem, *, on_checkpoint, **kwargs):
        for step in steps:
            on_checkpoint(SimpleNamespace(step=step))
        return result

    return train


def test_a_checkpoint_that_cannot_be_written_exits_1_naming_it_the_os_words_and_the_step_kept(
        tmp_path, capsys, solve):
    """The save of step 4 fails with ENOSPC: exit 1 (a run that failed, not bad input), one
    line naming the checkpoint (not the output), the OS's words (not "[Errno 28] ..."), and
    step 2, the last one saved whole (not step 4, whose save failed)."""
    run, saved = solve
    run.fail.add(4)
    ckpt = str(tmp_path / "r.h5.ckpt")
    assert run(_steps(2, 4, 6)) == 1
    assert saved == [2]
    assert capsys.readouterr().err.splitlines() == [
        f"pinnlab: error: cannot write {ckpt!r} (No space left on device); step 2 saved in {ckpt!r}; "
        "--resume continues from it"]


def test_a_result_that_cannot_be_written_saves_the_last_step_first_and_names_it(tmp_path, capsys, monkeypatch,
                                                                                solve):
    """The result write fails with ENOSPC after a 1-step run (no periodic save before it)
    and after a 3-step one (saved at step 2): the last step is saved first and named, so
    --resume only writes the result; with an earlier result there, --overwrite too."""
    run, saved = solve

    def full(output, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pinnlab_io, "write_solve_result", full)
    out, ckpt = str(tmp_path / "r.h5"), str(tmp_path / "r.h5.ckpt")
    assert run(_steps(result=_result(1))) == 1  # no periodic save before: step 1 saved now
    assert saved == [1]
    assert capsys.readouterr().err.splitlines() == [
        f"pinnlab: error: cannot write {out!r} (No space left on device); step 1 saved in {ckpt!r}; "
        "--resume continues from it"]
    (tmp_path / "r.h5.ckpt").unlink()
    (tmp_path / "r.h5").write_bytes(b"an earlier result")
    saved.clear()
    assert run(_steps(2, result=_result(3)), "--overwrite") == 1  # step 2 saved, then step 3
    assert saved == [2, 3]
    assert capsys.readouterr().err.splitlines() == [
        f"pinnlab: error: cannot write {out!r} (No space left on device); step 3 saved in {ckpt!r}; "
        "--resume --overwrite continues from it"]


def test_a_stop_while_the_result_is_written_saves_the_last_step_unless_it_is_saved(tmp_path, capsys, monkeypatch,
                                                                                   solve):
    """Ctrl-C in the result write: the last step (3) is saved and named, exit 130; a run
    whose last step is saved already (4) is not saved again."""
    run, saved = solve

    def stopped(output, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pinnlab_io, "write_solve_result", stopped)
    ckpt = str(tmp_path / "r.h5.ckpt")
    assert run(_steps(2, result=_result(3))) == 130
    assert saved == [2, 3]
    assert capsys.readouterr().err.splitlines() == [f"pinnlab: step 3 saved in {ckpt!r}; --resume continues from it",
                                                    "pinnlab: interrupted"]
    (tmp_path / "r.h5.ckpt").unlink()
    saved.clear()
    assert run(_steps(2, 4, result=_result(4))) == 130
    assert saved == [2, 4]


def test_a_run_that_ends_nonfinite_removes_its_checkpoint_as_a_finished_one_does(tmp_path, capsys, monkeypatch,
                                                                                 solve):
    """The checkpoint goes with the run that wrote its result, whatever its status: a
    nonfinite run writes its result (exit 1, its message on stderr), and a --resume then
    would only rewrite it."""
    run, saved = solve
    monkeypatch.setattr(pinnlab_io, "write_solve_result", lambda output, **kwargs: output.write_bytes(b"result"))
    assert run(_steps(2, result=_result(3, status="nonfinite"))) == 1
    assert saved == [2] and not (tmp_path / "r.h5.ckpt").exists() and (tmp_path / "r.h5").is_file()
    captured = capsys.readouterr()
    assert captured.err == "training ended nonfinite\n"
    assert captured.out == "rel_l2=5.000000e-01 rel_l1=2.500000e-01 steps_per_second=10\n"


def test_a_tuning_checkpoint_given_to_solve_resume_names_it_and_how_to_start_over(tmp_path, capsys, solve):
    """A tuning's checkpoint (metadata and history) beside a solve's output: refused as a
    tuning's, with the advice of a run given --resume (pass --overwrite instead of
    --resume; with --overwrite given, leave out --resume), not the fresh run's "pass
    --overwrite to start over"; the file as it was."""
    run, _ = solve
    ckpt = tmp_path / "r.h5.ckpt"
    torch.save({"metadata": {"method": "fg2u"}, "history": {}}, ckpt)
    before = ckpt.read_bytes()
    refusal = f"pinnlab: error: checkpoint {str(ckpt)!r} is a tuning's (pinnlab tune --resume continues it), not a solve's"
    assert run(_steps(), "--resume") == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{refusal}; to start over, pass --overwrite instead of --resume"]
    assert run(_steps(), "--resume", "--overwrite") == 2
    assert capsys.readouterr().err.splitlines() == [f"{refusal}; to start over, leave out --resume"]
    assert ckpt.read_bytes() == before


def test_a_resumed_state_the_training_refuses_is_named_as_the_checkpoints(tmp_path, capsys, monkeypatch, solve):
    """A checkpoint that loads but does not fit the run (train's CheckpointError, before any
    step): the line names the checkpoint before the library's reason, then the advice."""
    run, _ = solve
    ckpt = tmp_path / "r.h5.ckpt"
    ckpt.write_text("2")
    monkeypatch.setattr(pinnlab_io, "load_checkpoint", lambda *args: "a state")

    def train(problem, *, state, **kwargs):
        assert state == "a state"
        raise pinnlab_io.CheckpointError("its step 9 is beyond the run's 5 steps")

    assert run(train, "--resume") == 2
    assert capsys.readouterr().err.splitlines() == [
        f"pinnlab: error: checkpoint {str(ckpt)!r}: its step 9 is beyond the run's 5 steps; to start over, "
        "pass --overwrite instead of --resume"]


def test_an_output_in_a_missing_directory_is_bad_input_naming_it(tmp_path, capsys):
    """The write check's FileNotFoundError (an OSError, not a PermissionError) is one line,
    exit 2, before any work: a missing directory was a traceback."""
    cfg, out = tmp_path / "c.yaml", tmp_path / "nodir" / "r.h5"
    cfg.write_text(TINY)
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"pinnlab: error: cannot write output {str(out)!r}: directory {str(out.parent)!r} does not exist"]
