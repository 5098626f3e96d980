"""Fifth mutation audit of the outer driver, the problem adapters and the parameterisations.

Each test pins one behaviour the earlier audits left open, tightly enough that a plausible
slip fails it: the exact one-line refusals (a non-method at the top level and inside a
TwoPhase; accumulate with outer algorithms; resume or checkpoint_every without a path; a
misspelt parameterisation name; a list as a parameterisation; Logit's bounds);
a checkpoint naming a module that only starts with "pinnlab" refused; the history's
column order; the value recorded under accumulation; the loop's seconds including the
callback's; no checkpoint with checkpoint_every = 0, and a stop outside a commit undoing
nothing; an outer algorithm's iterates kept over a stop in its commit; the ranks'
agreement when any phase communicates; any Mapping as a parameterisation; a
reparameterised problem without g. One strict xfail: a BUG resuming TwoPhase(p, p).
"""

from __future__ import annotations

import sys
import types
import typing

import pytest
import torch

from pinnlab.bilevel import Log, Logit, Penalty, ReverseUnroll, TwoPhase, optimize
from pinnlab.io import CheckpointError
from pinnlab.io.checkpoint import load_checkpoint_file, write_checkpoint_file
from tests.bilevel.test_validation import PHI, PROBLEM

F64 = torch.float64


def _sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr)


def test_a_non_method_is_refused_with_what_each_place_accepts():
    """optimize() takes a method or a TwoPhase, a TwoPhase's phases a method only: the
    one-line TypeError says which, with the type of what was given."""
    example = "(e.g. ForwardGradientUnroll(), Penalty())"
    with pytest.raises(TypeError) as top:
        optimize(PROBLEM, PHI, 42, steps=1)
    assert str(top.value) == f"method must be a method object or a TwoPhase schedule {example}, got int"
    nested = TwoPhase(ReverseUnroll(), Penalty(), switch_after=1)
    with pytest.raises(TypeError) as inner:
        TwoPhase(nested, ReverseUnroll(), switch_after=1)
    assert str(inner.value) == f"TwoPhase.first must be a method object {example}, got TwoPhase"
    with pytest.raises(TypeError, match=r"^TwoPhase\.then must be a method object \(e\.g\..*got NoneType$"):
        TwoPhase(ReverseUnroll(), None, switch_after=1)


class _Trap(typing.NamedTuple):
    x: int


TRAPPED: list = []


def _trap(x):
    TRAPPED.append(x)
    return _Trap(x)


def test_a_checkpoint_naming_a_module_that_only_starts_with_pinnlab_is_refused(tmp_path, monkeypatch):
    """Only types of pinnlab's own modules ("pinnlab." + ...) are rebuilt from a
    checkpoint: a module "pinnlab_trap" (a prefix match, not a pinnlab module) is refused
    as a CheckpointError naming it, and nothing of it is imported or called."""
    module = types.ModuleType("pinnlab_trap")
    module.Trap = _trap
    monkeypatch.setitem(sys.modules, "pinnlab_trap", module)
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, checkpoint=ckpt, checkpoint_every=1, meta_optimizer=_sgd(0.1))
    payload = load_checkpoint_file(ckpt)
    payload["theta_state"] = [payload["theta_state"][0], {"__namedtuple__": "pinnlab_trap:Trap", "x": 1}]
    payload.pop("content_sha256", None)
    write_checkpoint_file(ckpt, payload)
    TRAPPED.clear()
    with pytest.raises(CheckpointError, match="refusing to restore type 'pinnlab_trap:Trap'"):
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, checkpoint=ckpt, resume=True, meta_optimizer=_sgd(0.1))
    assert TRAPPED == []


def test_accumulate_with_outer_algorithms_names_the_first_phases_one():
    """accumulate = 2 with TwoPhase(Penalty, F2SA): one line naming the first outer
    algorithm of the schedule (penalty, not f2sa) and the value to use instead."""
    from pinnlab.bilevel import F2SA

    method = TwoPhase(Penalty(inner_iters=2), F2SA(inner_iters=2), switch_after=1)
    with pytest.raises(ValueError) as err:
        optimize(PROBLEM, PHI, method, steps=2, accumulate=2)
    assert str(err.value) == ("accumulate = 2: penalty is an outer algorithm with its own lower-level iterates "
                              "and takes one φ-gradient per outer step; use accumulate=1")


def test_the_history_keeps_phis_own_key_order():
    """φ given as {s, a} (not sorted): the history's columns are the five per-step records
    and then phi/s, phi/a in φ's order (the order flatten and the result's φ use)."""
    phi = {"s": PHI["s"], "a": PHI["a"]}
    result = optimize(PROBLEM, phi, ReverseUnroll(), steps=1, meta_optimizer=_sgd(0.1))
    assert list(result.history) == ["outer_step", "value", "grad_norm", "seconds", "method", "phi/s", "phi/a"]
    assert list(result.phi) == ["s", "a"]


class _ValueIsIndex(ReverseUnroll):
    """ReverseUnroll reporting the outer_step it was called with as its value h(φ)."""

    def estimate(self, problem, phi, *, outer_step=0, **kwargs):
        result = super().estimate(problem, phi, outer_step=outer_step, **kwargs)
        result.value = float(outer_step)
        return result


def test_with_accumulation_the_first_estimates_value_is_recorded():
    """accumulate = 3: outer step k averages the estimates of outer_step 3k, 3k + 1, 3k + 2
    and records the value of the first one (0, 3, 6: not the last, 2, 5, 8)."""
    seen = []
    result = optimize(PROBLEM, PHI, _ValueIsIndex(), steps=3, accumulate=3, meta_optimizer=_sgd(0.1),
                      callback=lambda k, phi, d: seen.append(d["value"]))
    assert result.history["value"] == seen == [0.0, 3.0, 6.0]


class _Clock:
    """A clock that moves only when told (dyadic amounts: sums are exact)."""

    now = 100.0

    def __call__(self):
        return _Clock.now


class _HalfSecond(ReverseUnroll):
    """ReverseUnroll whose every estimate takes 0.5 s of _Clock."""

    def estimate(self, problem, phi, **kwargs):
        _Clock.now += 0.5
        return super().estimate(problem, phi, **kwargs)


def test_the_loops_seconds_include_the_callbacks_time(monkeypatch):
    """history["seconds"] times each outer step's estimate and meta step (0.5 s here);
    the result's seconds are the whole loop's wall time, the callback's 0.25 s per step
    included: 2·0.75 = 1.5 s, not the 1.0 s the history adds up to."""
    from pinnlab.bilevel import driver as driver_module

    _Clock.now = 100.0
    monkeypatch.setattr(driver_module, "time", types.SimpleNamespace(perf_counter=_Clock()))
    monkeypatch.setattr("pinnlab._budget._now", _Clock())

    def callback(k, phi, diagnostics):
        _Clock.now += 0.25

    result = optimize(PROBLEM, PHI, _HalfSecond(), steps=2, meta_optimizer=_sgd(0.1), callback=callback)
    assert result.history["seconds"] == [0.5, 0.5]
    assert result.seconds == 1.5


class _StopAt(ReverseUnroll):
    """ReverseUnroll stopped by Ctrl-C in the estimate of outer step ``at``."""

    at = 2

    def estimate(self, problem, phi, *, outer_step=0, **kwargs):
        if outer_step == self.at:
            raise KeyboardInterrupt
        return super().estimate(problem, phi, outer_step=outer_step, **kwargs)


def test_a_stop_writes_no_checkpoint_when_checkpoint_every_is_0(tmp_path):
    """checkpoint_every = 0 keeps no checkpoint (README: tune.checkpoint_every 0 "keeps no
    checkpoint"), even with a path given: Ctrl-C in outer step 2 leaves no file, while
    with checkpoint_every = 5 (no periodic save yet) it saves the 2 completed steps as
    they were (a stop outside a step's commit undoes nothing), and the resumed run
    equals the uninterrupted one."""
    ckpt = tmp_path / "outer.ckpt"
    with pytest.raises(KeyboardInterrupt):
        optimize(PROBLEM, PHI, _StopAt(), steps=4, checkpoint=ckpt, checkpoint_every=0, meta_optimizer=_sgd(0.1))
    assert not ckpt.exists()
    with pytest.raises(KeyboardInterrupt):
        optimize(PROBLEM, PHI, _StopAt(), steps=4, checkpoint=ckpt, checkpoint_every=5, meta_optimizer=_sgd(0.1))
    payload = load_checkpoint_file(ckpt)
    assert payload["outer_step"] == 2 and payload["history"]["outer_step"] == [0, 1]
    full = optimize(PROBLEM, PHI, ReverseUnroll(), steps=4, meta_optimizer=_sgd(0.1))
    resumed = optimize(PROBLEM, PHI, ReverseUnroll(), steps=4, checkpoint=ckpt, resume=True, meta_optimizer=_sgd(0.1))
    assert resumed.history["value"] == full.history["value"]
    for k in PHI:
        assert torch.equal(resumed.phi[k], full.phi[k])


@pytest.mark.parametrize(("first", "agreed"), [(True, [True, True]), (False, [])])
def test_the_ranks_agree_when_any_phase_splits_its_directions(monkeypatch, first, agreed):
    """Under a process group of 2 (a stand-in: each call of all_agree recorded), a
    TwoPhase of fg2u (splitting its directions) then rgu (not) makes every rank agree on
    each step's finiteness, in both phases; with fg2u(distributed=False) no phase
    communicates and no agreement is asked for."""
    from pinnlab.bilevel import ForwardGradientUnroll
    from pinnlab.bilevel import driver as driver_module

    calls = []
    monkeypatch.setattr(driver_module, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(driver_module, "all_agree", lambda flag: calls.append(flag) or flag)
    method = TwoPhase(ForwardGradientUnroll(num_directions=2, distributed=first), ReverseUnroll(), switch_after=1)
    result = optimize(PROBLEM, PHI, method, steps=2, meta_optimizer=_sgd(0.1))
    assert result.status == "ok" and result.history["method"] == ["fg2u", "rgu"]
    assert calls == agreed


def test_a_misspelt_parameterization_name_lists_phis_names_in_phis_order():
    """φ = {s, a} and a parameterisation naming 'b': one line naming 'b' and listing
    φ's hyperparameters as φ has them ('s', 'a'), before any work."""
    phi = {"s": PHI["s"], "a": PHI["a"]}
    with pytest.raises(ValueError) as err:
        optimize(PROBLEM, phi, ReverseUnroll(), steps=1, parameterization={"b": Log()})
    assert str(err.value) == "parameterization names 'b', which is not a hyperparameter of φ (φ has 's', 'a')"


def test_a_read_only_mapping_is_a_parameterization():
    """Any Mapping of names to parameterisations is taken (here a read-only
    MappingProxyType): the run equals the one with the same entries in a dict."""
    kwargs = dict(steps=2, meta_optimizer=_sgd(0.1))
    plain = optimize(PROBLEM, PHI, ReverseUnroll(), parameterization={"a": Log()}, **kwargs)
    proxy = optimize(PROBLEM, PHI, ReverseUnroll(), parameterization=types.MappingProxyType({"a": Log()}), **kwargs)
    assert proxy.history["value"] == plain.history["value"]
    for k in PHI:
        assert torch.equal(proxy.phi[k], plain.phi[k])


@pytest.mark.parametrize(("bounds", "shown"), [((2.0, 1.0), "(2.0, 1.0)"), ((0.5, 0.5), "(0.5, 0.5)")])
def test_logit_names_its_bounds_low_first_when_refusing_them(bounds, shown):
    """Logit(low, high) with high ≤ low: one line quoting the bounds as given, low first."""
    with pytest.raises(ValueError) as err:
        Logit(*bounds)
    assert str(err.value) == f"Logit needs high > low, got {shown}"


def test_resume_or_checkpoint_every_without_a_path_is_one_line_naming_the_option():
    """resume=True or checkpoint_every = 3 without a checkpoint path: one ValueError line
    each, saying what the option needs (and the value given), before any outer step."""
    with pytest.raises(ValueError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, resume=True)
    assert str(err.value) == "resume=True needs the checkpoint path to resume from"
    with pytest.raises(ValueError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, checkpoint_every=3)
    assert str(err.value) == "checkpoint_every = 3 needs a checkpoint path to write to"


class _StopInCallback:
    """A callback that stops the run (Ctrl-C) in the commit of outer step ``at``."""

    def __init__(self, at):
        self.at = at

    def __call__(self, k, phi, diagnostics):
        if k == self.at:
            raise KeyboardInterrupt


def test_a_stop_in_an_outer_algorithms_commit_keeps_its_iterates_of_the_step_before(tmp_path):
    """Penalty (its own lower-level iterates) stopped in the callback of outer step 2:
    that step is undone and the checkpoint holds outer step 2 with the iterates after
    outer step 1, so the resumed run equals the uninterrupted one (iterates started
    afresh would not)."""
    method = Penalty(inner_iters=2)
    kwargs = dict(steps=4, meta_optimizer=_sgd(0.1))
    full = optimize(PROBLEM, PHI, method, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    with pytest.raises(KeyboardInterrupt):
        optimize(PROBLEM, PHI, method, checkpoint=ckpt, checkpoint_every=5, callback=_StopInCallback(2), **kwargs)
    payload = load_checkpoint_file(ckpt)
    assert payload["outer_step"] == 2 and list(payload["method_state"]) == ["0"]
    resumed = optimize(PROBLEM, PHI, method, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.history["value"] == full.history["value"]
    assert torch.equal(resumed.theta["w"], full.theta["w"])
    for k in PHI:
        assert torch.equal(resumed.phi[k], full.phi[k])


def test_a_parameterization_entry_that_is_a_list_is_refused_without_a_hint():
    """An entry that is neither a parameterisation nor a string (a list, unhashable) gets
    the plain one-line refusal quoting it, not a TypeError from looking it up by name."""
    with pytest.raises(ValueError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, parameterization={"a": ["log"]})
    assert str(err.value) == ("parameterization['a'] must be a parameterisation object (Identity(), Log(), "
                              "Logit(low, high)), got ['log']")


def test_a_reparameterized_problem_without_inner_loss_still_lacks_one():
    """A problem with no inner_loss g keeps none under a parameterisation: a method that
    needs g refuses it with the same one-line ValueError as without one (not a
    TypeError from calling a missing g inside the step)."""
    from pinnlab.bilevel import BilevelProblem
    from pinnlab.bilevel.parameterization import reparameterize

    bare = BilevelProblem(PROBLEM.inner_step, PROBLEM.outer_loss, PROBLEM.init, PROBLEM.horizon)
    assert reparameterize(bare, {"a": Log()}).inner_loss is None
    messages = []
    for parameterization in (None, {"a": Log()}):
        with pytest.raises(ValueError) as err:
            optimize(bare, PHI, Penalty(inner_iters=2), steps=1, parameterization=parameterization)
        messages.append(str(err.value))
    assert messages[0] == messages[1] == "method 'penalty' needs the problem's inner_loss g(θ, φ, t)"


@pytest.mark.parametrize("saved_at", [1, 3], ids=["phase-1", "phase-2"])
def test_a_two_phase_schedule_of_one_outer_algorithm_object_resumes(tmp_path, saved_at):
    """TwoPhase(p, p) runs as TwoPhase(p, copy of p) (the fourth audit's fix: each phase
    its own iterates, in slots 0 and 1); its checkpoint, in either phase, resumes to the
    uninterrupted run as TwoPhase(p, copy of p)'s does. The resume's template of the
    slots maps both phases to slot 1 (``m is method.then`` holds for the first phase's p
    too), so the saved slot 0 is refused as unexpected."""
    penalty = Penalty(inner_iters=2)
    method = TwoPhase(penalty, penalty, switch_after=2)
    kwargs = dict(meta_optimizer=_sgd(0.1))
    full = optimize(PROBLEM, PHI, method, steps=4, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, method, steps=saved_at, checkpoint=ckpt, checkpoint_every=saved_at, **kwargs)
    resumed = optimize(PROBLEM, PHI, method, steps=4, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.history["value"] == full.history["value"]
    assert torch.equal(resumed.theta["w"], full.theta["w"])


def test_a_two_phase_run_resumes_from_before_its_outer_algorithm_phase(tmp_path):
    """TwoPhase(rgu, penalty) checkpointed after outer step 1 of Phase I (no iterates of
    penalty saved yet): the resume expects none, starts penalty's iterates at the switch
    from rgu's θ_T, and ends where the uninterrupted run does."""
    method = TwoPhase(ReverseUnroll(), Penalty(inner_iters=2), switch_after=2)
    kwargs = dict(meta_optimizer=_sgd(0.1))
    full = optimize(PROBLEM, PHI, method, steps=4, **kwargs)
    ckpt = tmp_path / "outer.ckpt"
    optimize(PROBLEM, PHI, method, steps=1, checkpoint=ckpt, checkpoint_every=1, **kwargs)
    assert load_checkpoint_file(ckpt)["method_state"] == {}
    resumed = optimize(PROBLEM, PHI, method, steps=4, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.history["method"] == ["rgu", "rgu", "penalty", "penalty"]
    assert resumed.history["value"] == full.history["value"]
    assert torch.equal(resumed.theta["w"], full.theta["w"])


@pytest.mark.parametrize("name", ["warm_start", "resume", "overwrite"])
def test_a_flag_given_as_a_string_is_refused_naming_it(name):
    """warm_start="no" (or a 0/1 for resume, overwrite) was taken by its truth value: the
    string "no" meant warm starts. A flag is a bool, refused otherwise with one line."""
    with pytest.raises(ValueError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, **{name: "no"})
    assert str(err.value) == f"{name} must be True or False, got 'no'"
