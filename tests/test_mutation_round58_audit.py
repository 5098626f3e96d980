"""Mutation audit (round 58, helper GT) of estimator.sigma as a list, the overwritten
training study's cells, the LARGE_CSV line, zo_fg2u's repeated-directions warning and
what ``pinnlab tune`` keeps or imports around its final solve: behaviours the backlog
tests left open (a tuple or integer list, a huge integer, a symlinked or undeletable
cells directory, the line's size in MB and its moment, rank > 0, a stop before the final
solve returns, a resumed final solve's own θ, a DeepXDE final solve, the optional modules
a run does not need)."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from pinnlab import config as C
from pinnlab.cli import main

from .test_backlog_tune_command_edges import DEEPXDE_OPTUNA, _failing_replace
from .tuning.micro_configs import WEIGHT_FG2U

ALLEN_CAHN = {"name": "allen_cahn_two_body", "dim": 3, "seed": 1}


def _data(sigma) -> dict:
    return {"equation": dict(ALLEN_CAHN), "estimator": {"kind": "stein", "sigma": sigma}}


def test_a_tuple_sigma_from_python_has_its_entries_checked():
    """A tuple (the Python API, or a validated config's own value) is a list too: a bad
    entry is refused by its position, not accepted as a member of the tuple union."""
    with pytest.raises(C.ConfigError) as info:
        C.validate(_data((0.1, -0.2, 0.3)))
    assert str(info.value) == ("estimator.sigma = (0.1, -0.2, 0.3): entry 1 is -0.2; every entry must be a "
                               "finite number > 0")
    assert C.validate(_data((0.1, 0.2, 0.3))).estimator.sigma == (0.1, 0.2, 0.3)


def test_an_integer_beyond_a_float_is_one_config_error():
    """An integer list entry too large for a float (10**400) is refused as not finite, in one
    line, rather than escaping as an OverflowError from float()."""
    with pytest.raises(C.ConfigError) as info:
        C.validate(_data([0.1, 10**400, 0.3]))
    message = str(info.value)
    assert "\n" not in message and message.startswith("estimator.sigma = [0.1, 1000")
    assert ": entry 1 is 1000" in message and message.endswith("; every entry must be a finite number > 0")


@pytest.mark.parametrize(("entry", "shown"), [("0.2", "'0.2'"), (None, "None"), ("x" * 100, "'" + "x" * 56 + "...")],
                         ids=["text", "none", "long_text"])
def test_a_bad_entry_is_shown_as_a_config_value(entry, shown):
    """The bad entry is shown by its repr, cut as every config value (text quoted, as the
    scalar σ's own message quotes it; a long one clipped to one short line)."""
    with pytest.raises(C.ConfigError) as info:
        C.validate(_data([0.1, entry, 0.3]))
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(f": entry 1 is {shown}; every entry must be a finite number > 0"), message


def test_integer_entries_are_floats_with_the_identity_of_floats():
    """[1, 2, 3] is accepted (integers are numbers) and held as floats, so it records and
    identifies (checkpoint identity) as [1.0, 2.0, 3.0] does."""
    ints, floats = C.validate(_data([1, 2, 3])), C.validate(_data([1.0, 2.0, 3.0]))
    assert ints.estimator.sigma == (1.0, 2.0, 3.0)
    assert all(type(entry) is float for entry in ints.estimator.sigma)
    assert ints.identity() == floats.identity()
    assert ints.resolved() == floats.resolved()


def test_a_lists_length_is_checked_before_its_entries_float32_range():
    """validate checks a list's length against equation.dim before the float32 range of its
    entries (and the later checks): a short list with an entry that float32 rounds to 0
    is named for its length, the error that stands whatever the entries."""
    data = {**_data([0.1, 1e-320]), "trainer": {"dtype": "float32"}}
    with pytest.raises(C.ConfigError) as info:
        C.validate(data)
    assert str(info.value) == ("estimator.sigma: a list of 2 values, but it needs one per space coordinate, "
                               "equation.dim = 3 (or one number for all)")


def _cells(tmp_path):
    """``out.h5`` and its ``out.h5.cells/`` with one cell file."""
    cells = tmp_path / "out.h5.cells"
    cells.mkdir()
    (cells / "cell.h5").write_bytes(b"cell")
    return tmp_path / "out.h5", cells


def test_cells_beside_a_file_that_is_not_a_training_study_are_kept(tmp_path):
    """An interrupted ``pinnlab study -o out.h5`` leaves out.h5.cells/ (its resumable
    cells) and no out.h5; a solve written to out.h5 must not delete them: only the cells of
    a training study the file held are stale."""
    from pinnlab.cli import replacing

    output, cells = _cells(tmp_path)
    with replacing(output):
        output.write_bytes(b"result")
    assert (cells / "cell.h5").read_bytes() == b"cell"


def test_a_symlinked_cells_directory_is_left_silently(tmp_path, monkeypatch, capsys):
    """A training study's cells that are a symlink (to another disk) are neither followed
    nor reported as not removed."""
    from pinnlab.cli import replacing
    from pinnlab.studies import command

    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "cell.h5").write_bytes(b"cell")
    output = tmp_path / "out.h5"
    (tmp_path / "out.h5.cells").symlink_to(target, target_is_directory=True)
    monkeypatch.setattr(command, "_kind_of", lambda path: "training_study")
    with replacing(output):
        pass
    assert (target / "cell.h5").read_bytes() == b"cell" and (tmp_path / "out.h5.cells").is_symlink()
    assert capsys.readouterr().err == ""


def test_cells_that_cannot_be_removed_are_one_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    """Once the result is written, any OSError removing the old cells (a permission) is a
    one-line warning naming them; the run does not fail for it."""
    import shutil

    from pinnlab.cli import replacing
    from pinnlab.studies import command

    output, cells = _cells(tmp_path)
    monkeypatch.setattr(command, "_kind_of", lambda path: "training_study")

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refused)
    with replacing(output):
        pass
    assert capsys.readouterr().err == (f"warning: the overwritten study's cells {str(cells)!r} are not all removed "
                                       f"([Errno 13] Permission denied: {str(cells)!r})\n")


def test_the_large_csv_line_gives_decimal_megabytes_before_the_read(tmp_path, monkeypatch, capsys):
    """The size is in MB of 10⁶ bytes (2.6e6 bytes: "3 MB", not 2.48 MiB's "2"), and the
    line comes before the slow parse (said even if the parse then fails)."""
    from pinnlab.io import observations

    path = tmp_path / "obs.csv"
    data = "0.1,0.2,1.5\n"
    path.write_text("#" + "x" * (2_600_000 - len(data) - 2) + "\n" + data)
    assert path.stat().st_size == 2_600_000
    monkeypatch.setattr(observations, "LARGE_CSV", 1_000_000)
    x, u = observations.load_observations(path, 2)
    assert x.tolist() == [[0.1, 0.2]] and u.tolist() == [1.5]
    assert capsys.readouterr().err == f"reading observation file {str(path)!r} (3 MB)\n"

    def parse(path):
        print("parsing", file=sys.stderr)
        raise KeyboardInterrupt

    monkeypatch.setattr(observations, "_csv_rows", parse)
    with pytest.raises(KeyboardInterrupt):
        observations.load_observations(path, 2)
    assert capsys.readouterr().err == f"reading observation file {str(path)!r} (3 MB)\nparsing\n"


def test_zo_fg2u_repeated_directions_warn_on_rank_0_only(monkeypatch):
    """Distributed, the warning is rank 0's (as the commands' lines): another rank, with
    its share of the same repeated directions, says nothing."""
    import warnings

    import torch

    from pinnlab.bilevel import BlackBox, ZeroOrderForwardGradient, distributed

    monkeypatch.setattr(distributed, "all_reduce_sum", lambda value: value)
    box = BlackBox(lambda phi: float((phi["a"] ** 2).sum()))
    for rank, expected in ((0, 1), (1, 0)):
        monkeypatch.setattr(distributed, "rank_and_world", lambda rank=rank: (rank, 2))
        method = ZeroOrderForwardGradient(num_directions=4, mu=1e-2, distributed=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method(box, {"a": torch.full((1,), 0.5, dtype=torch.float64)})
        said = [w for w in caught if "num_directions = 4 at N = 1" in str(w.message)]
        assert len(said) == expected, (rank, [str(w.message) for w in caught])


def test_a_stop_before_the_final_solve_returns_keeps_no_final_state(tmp_path, capsys, monkeypatch):
    """A Ctrl-C in the final solve (no result yet): exit 130 and the line that the tuning
    is kept for a --resume that runs the final solve again; there is no finished final
    solve to save (not a crash on the missing result)."""
    from pinnlab.tuning import run as tuning_run

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning_run, "final_solve", stopped)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    out = tmp_path / "out.h5"
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 130
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pinnlab: ")]
    assert said == [f"pinnlab: the tuning is saved in {str(out) + '.ckpt'!r}; --resume runs the final solve again "
                    "(trainer.checkpoint_every saves its steps)", "pinnlab: interrupted"], said
    assert not os.path.exists(str(out) + ".final.ckpt")


def test_tune_imports_no_optional_module_it_does_not_use(tmp_path, monkeypatch):
    """A random search with the default inner solver imports neither optuna (the optuna
    method's) nor DeepXDE (tune.inner: deepxde's): both are optional extras, which such a
    run must not need (here made unimportable; the run stopped at its display)."""
    import pinnlab.solvers.progress as progress

    for name in ("optuna", "deepxde"):
        monkeypatch.setitem(sys.modules, name, None)  # (import raises ImportError)

    class Reached(Exception):
        pass

    real_init = progress.Progress.__init__

    def made(self, *args, **kwargs):
        if kwargs.get("description") == "tune":
            raise Reached
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(progress.Progress, "__init__", made)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U.replace("method: fg2u\n  options: {num_directions: 1}", "method: random"))
    with pytest.raises(Reached):
        main(["tune", str(cfg), "-o", str(tmp_path / "t.h5"), "--progress", "off"])


def _resumed_final_solve(tmp_path, monkeypatch, capsys, text, *overrides):
    """A tune whose result cannot be written (its finished final solve kept), then its
    --resume: the (steps, starting step) of each training it runs and the number of
    search trials it replays."""
    from pinnlab.tuning import run as tuning_run
    from pinnlab.tuning import search

    cfg = tmp_path / "t.yaml"
    cfg.write_text(text)
    out = tmp_path / "out.h5"
    real_replace = _failing_replace(monkeypatch, out)
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]) == 1
    monkeypatch.setattr(os, "replace", real_replace)
    assert "the finished final solve (step " in capsys.readouterr().err
    trained, replayed = [], []
    real_train, real_trial = tuning_run.train, search.train_trial

    def train(problem, *, steps, state=None, **kwargs):
        trained.append((steps, None if state is None else state.step))
        return real_train(problem, steps=steps, state=state, **kwargs)

    def trial(*args, **kwargs):
        replayed.append(1)
        return real_trial(*args, **kwargs)

    monkeypatch.setattr(tuning_run, "train", train)
    monkeypatch.setattr(search, "train_trial", trial)
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off", "--resume"]) == 0
    assert out.is_file()
    return trained, len(replayed)


def test_a_resumed_final_solve_keeps_its_own_state_over_the_warm_start(tmp_path, monkeypatch, capsys):
    """tune.final_init: continue starts the final solve from the tuning's trained θ; a
    --resume of a kept final solve starts from that solve's saved step instead (its last:
    no step trained again), not from the warm start's θ at step 0."""
    trained, _ = _resumed_final_solve(tmp_path, monkeypatch, capsys, WEIGHT_FG2U, "tune.final_init=continue",
                                      "tune.warm_start=true")
    assert trained == [(4, 4)]


def test_a_resumed_search_final_solve_replays_no_trial(tmp_path, monkeypatch, capsys):
    """A search's final_init: continue replays its best trial (seconds to minutes of
    training) for the θ to start from; a --resume of a kept final solve has its own θ and
    replays none."""
    text = WEIGHT_FG2U.replace("method: fg2u\n  options: {num_directions: 1}", "method: random")
    trained, replayed = _resumed_final_solve(tmp_path, monkeypatch, capsys, text, "tune.final_init=continue")
    assert trained == [(4, 4)] and replayed == 0


DEEPXDE_RANDOM = DEEPXDE_OPTUNA.replace("method: optuna", "method: random")  # (a DeepXDE inner training)


def _deepxde_unwritable(tmp_path, capsys, monkeypatch) -> str:
    """A tune.inner: deepxde random search whose result cannot be written: its last line."""
    pytest.importorskip("deepxde")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(DEEPXDE_RANDOM)
    out = tmp_path / "out.h5"
    _failing_replace(monkeypatch, out)
    assert main(["tune", str(cfg), "-o", str(out), "--progress", "off"]) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.h5.ckpt", "t.yaml"]
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_deepxde_final_solve_is_not_kept_when_the_result_cannot_be_written(tmp_path, capsys, monkeypatch):
    """tune.inner: deepxde: its final solve is DeepXDE's (no pinnlab TrainState to keep),
    so a result that cannot be written says the tuning is kept, as before, rather than
    failing on the missing state."""
    last = _deepxde_unwritable(tmp_path, capsys, monkeypatch)
    out = tmp_path / "out.h5"
    assert last.startswith(f"pinnlab: error: cannot write {str(out)!r} (No space left on device); the tuning is "
                           f"saved in {str(out) + '.ckpt'!r}; --resume runs the final solve again"), last


def test_a_deepxde_tunings_line_offers_no_checkpoint_it_cannot_have(tmp_path, capsys, monkeypatch):
    """DeepXDE runs have no checkpoints (trainer.checkpoint_every: 2 is refused with
    backend: deepxde), so the line should not suggest it."""
    assert "checkpoint_every" not in _deepxde_unwritable(tmp_path, capsys, monkeypatch)
