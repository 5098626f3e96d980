"""Backlog: zo_fg2u's default number of directions, TwoPhase with switch_after = 0, an
empty checkpoint path, and torchrun's idle-process warning for fg2u's default directions."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.bilevel import BlackBox, TwoPhase, ZeroOrderForwardGradient, optimize
from pinnlab.tuning.command import check_processes
from pinnlab.tuning.run import make_hypergradient_method, tuned_size
from pinnlab.tuning.search import search
from pinnlab.tuning.setup import build_tuning

from .tuning.micro_configs import WEIGHT_FG2U

F64 = torch.float64
CUBE = BlackBox(lambda p: float((p["a"] ** 3).sum()))


def _load(tmp_path, *overrides):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    return configuration.load(cfg, list(overrides))


def _quiet(method, phi, problem=CUBE):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return method(problem, phi)


# -- 1. zo_fg2u's default directions --------------------------------------------------------------
def test_zo_default_takes_one_direction_where_every_direction_gives_the_same_estimate():
    """ZeroOrderForwardGradient() at N = 1 with ±1 directions and central differences drew
    8 directions, all ±e₁, whose central differences are one and the same: 17 inner
    solves for the estimate 3 solves give. Now 1 direction there (3 solves, the same
    estimate); Gaussian directions and forward differences, which do vary, keep 8."""
    phi = {"a": torch.tensor([0.7], dtype=F64)}
    result = _quiet(ZeroOrderForwardGradient(), phi)
    assert result.diagnostics["directions"].shape == (1, 1)
    assert result.diagnostics["inner_solves"] == 3
    torch.testing.assert_close(result.grad["a"], torch.tensor([3 * 0.7 ** 2 + 1e-6], dtype=F64), rtol=0, atol=1e-9)
    for varying in (ZeroOrderForwardGradient(kind="gaussian"), ZeroOrderForwardGradient(scheme="forward")):
        assert _quiet(varying, phi).diagnostics["directions"].shape == (8, 1)
    with pytest.warns(UserWarning, match="num_directions = 3 at N = 1"):  # (run as given, but said to be wasted)
        assert ZeroOrderForwardGradient(num_directions=3)(CUBE, phi).diagnostics["inner_solves"] == 7


def test_zo_default_keeps_eight_directions_for_several_values():
    """For N ≥ 2 more ±1 directions still lower the variance (and a black box has no exact
    forward-mode method that N directions would cost as much as): 8 at N = 3 and N = 20."""
    assert ZeroOrderForwardGradient().directions_for(3) == 8
    assert ZeroOrderForwardGradient().directions_for(20) == 8
    assert ZeroOrderForwardGradient(kind="coordinate").directions_for(1) == 1


def test_the_cli_spells_out_the_library_default_for_n():
    """``pinnlab tune`` with tune.method=zo_fg2u and one tuned weight built the method with
    8 directions (the library's old default), 17 DeepXDE or PINN trainings per outer step
    where 3 give the same estimate; fg2u's min(8, N) is unchanged."""
    assert make_hypergradient_method("zo_fg2u", {}, size=1).num_directions == 1
    assert make_hypergradient_method("zo_fg2u", {}, size=5).num_directions == 8
    assert make_hypergradient_method("zo_fg2u", {"scheme": "forward"}, size=1).num_directions == 8
    assert make_hypergradient_method("zo_fg2u", {"num_directions": 2}, size=1).num_directions == 2
    assert make_hypergradient_method("fg2u", {}, size=5).num_directions == 5


# -- 2. TwoPhase(first, then, switch_after=0) ----------------------------------------------------
def test_a_two_phase_schedule_switching_at_0_warns_that_the_first_phase_never_runs():
    """optimize(…, TwoPhase(first, then, switch_after=0)) ran ``then`` from the first outer
    step and never ``first``, without a word. Now a warning says so; 0 stays a valid count
    (the no-Phase-I end of a sweep), so the run goes on as before."""
    phi = {"a": torch.tensor([0.7, -0.4], dtype=F64)}
    method = TwoPhase(ZeroOrderForwardGradient(kind="gaussian"), ZeroOrderForwardGradient(), switch_after=0)
    with pytest.warns(UserWarning, match=r"^TwoPhase\.switch_after = 0: the first phase \(zo_fg2u\) never runs; "
                                         r"use the then method \(zo_fg2u\) alone$"):
        result = optimize(CUBE, phi, method, steps=1)
    assert result.status == "ok"


# -- 3. an empty checkpoint path -----------------------------------------------------------------
def test_optimize_refuses_an_empty_checkpoint_path_as_empty(tmp_path):
    """optimize(…, checkpoint="", checkpoint_every=1) said "checkpoint '' is a directory"
    (Path("") is the current directory), and with resume=True "no checkpoint at '.'". Now
    one line saying the path is empty, before any work."""
    phi = {"a": torch.tensor([0.7], dtype=F64)}
    for kwargs in ({"checkpoint_every": 1}, {"resume": True}):
        with pytest.raises(ValueError, match=r"^checkpoint: an empty path; name a file to write to$"):
            optimize(CUBE, phi, ZeroOrderForwardGradient(), steps=1, checkpoint="", **kwargs)


def test_search_refuses_an_empty_or_directory_checkpoint_before_any_trial(tmp_path):
    """search(setup, checkpoint="" or Path("")) ran its first trial and then failed to write
    the checkpoint (Path("") is the current directory). Now it is refused before any trial:
    an empty string as an empty path, Path("") (which is Path(".")) as a directory."""
    setup = build_tuning(_load(tmp_path, "tune.method=random"))
    trials = []

    def score(phi):
        trials.append(phi)
        return 1.0

    with pytest.raises(ValueError, match=r"^checkpoint: an empty path; name a file to write to$"):
        search(setup, sampler="random", checkpoint="", score=score)
    with pytest.raises(ValueError, match=r"^checkpoint '\.' is a directory; name a file to write to$"):
        search(setup, sampler="random", checkpoint=Path(""), score=score)
    assert trials == []
    search(setup, sampler="random", checkpoint=tmp_path / "s.ckpt", score=score)
    assert len(trials) == 3 and (tmp_path / "s.ckpt").is_file()


# -- 4. torchrun's idle-process warning ----------------------------------------------------------
def test_the_idle_process_warning_counts_the_default_directions_for_n(tmp_path):
    """fg2u without num_directions tuning one weight under torchrun with 4 processes: fg2u
    takes min(8, N) = 1 direction, so 3 processes wait, but check_processes counted 8 and
    warned of nothing. `pinnlab tune` now passes N (known once the problem is built,
    before any work); without N the count stays 8."""
    config = _load(tmp_path, "tune.options={}")
    size = tuned_size(build_tuning(config))
    assert size == 1
    assert check_processes(config, 4, size) == [
        "tune.options.num_directions = 1 (the default at N = 1) < 4 processes: 3 of them compute no direction and wait "
        "(each direction "
        "is one process's work)"]
    assert check_processes(config, 4) == []
    zo = _load(tmp_path, "tune.method=zo_fg2u")
    assert [line.split(":")[0] for line in check_processes(zo, 4, 1)] == ["tune.options.num_directions = 1 (the default at N = 1) < 4 processes"]
    assert check_processes(_load(tmp_path, "tune.method=zo_fg2u", "tune.options={kind: gaussian}"), 4, 1) == []


def test_pinnlab_tune_prints_the_idle_process_warning_for_the_default_directions(tmp_path, monkeypatch, capsys):
    """The command itself: `torchrun --nproc_per_node 4 -m pinnlab tune t.yaml
    tune.options={}` (fg2u, one tuned weight) printed no warning on rank 0. Checked up to
    the warning, without joining a process group (the tuning is stopped right after)."""
    from pinnlab.bilevel import distributed
    from pinnlab.cli import main
    from pinnlab.tuning import run

    for key, value in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed, "init_from_environment", lambda device: (0, 4))

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(run, "run_tuning", stop)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(WEIGHT_FG2U)
    with pytest.raises(Stop):
        main(["tune", str(cfg), "tune.options={}", "-o", str(tmp_path / "t.h5"), "--progress", "off"])
    assert ("warning: tune.options.num_directions = 1 (the default at N = 1) < 4 processes: 3 of them compute no direction and wait"
            in capsys.readouterr().err)
