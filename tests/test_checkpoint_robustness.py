"""A damaged or hand-edited checkpoint whose config hash still matches: ``--resume``
refuses it in one line with exit code 2 (never a traceback, never silently accepted)
and leaves the file as it was."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch

from pinnlab import config as configuration
from pinnlab.cli import main
from pinnlab.io import CheckpointError
from pinnlab.io.checkpoint import DIGEST_KEY, content_digest

SOLVE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 6, eval_every: 2, test_points: 20, batch_size: 8, checkpoint_every: 2}
"""

SOLVE_WEIGHTED = SOLVE.replace("seed: 1}", "seed: 1, constraint: soft}\nloss: {kind: biased, weighting: relobralo}")

TUNE = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4, noise: shared, eval_samples: 8}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 4, lr: 1.0e-2, batch_size: 8, eval_every: 4, test_points: 20, dtype: float64}
data: {source: synthetic, points: 10, noise: 0.01, seed: 0}
tune:
  method: METHOD
  options: {}
  tunables: {weights.boundary: {}}
  objective: {kind: data, samples: 8}
  outer_steps: 4
  horizon: 2
  trial_steps: 2
  checkpoint_every: 1
"""


def _as_bytes(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _changed(change):
    """The checkpoint's bytes after ``change`` edited (a copy of) its saved dictionary, its
    content digest recomputed: a hand-edited (or wrongly written) file whose digest fits,
    which only the checks of its content can refuse."""
    def damage(payload):
        payload = copy.deepcopy(payload)
        change(payload)
        if DIGEST_KEY in payload:
            payload[DIGEST_KEY] = content_digest({k: v for k, v in payload.items() if k != DIGEST_KEY})
        return _as_bytes(payload)
    return damage


def _truncated(payload) -> bytes:
    data = _as_bytes(payload)
    return data[: len(data) // 2]


def _refused(args, checkpoint, expected, capsys):
    """Exit 2, one line naming the checkpoint and ``expected``, no traceback, the file unchanged;
    the line ends with the command's way out (the library's reasons give no advice: the
    final solve and a study cell, which replace such a checkpoint, said "delete it")."""
    before = checkpoint.read_bytes()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(checkpoint) in err and expected in err, err
    # (with --resume given, "pass --overwrite" alone led `--resume --overwrite` back to the same line)
    assert err.endswith("; to start over, pass --overwrite instead of --resume") and err.count("start over") == 1, err
    assert checkpoint.read_bytes() == before


# -- pinnlab solve --resume -------------------------------------------------------------
def _first_checkpoint(root, text, at=None):
    """(config file, saved dictionary) of a tiny solve's first checkpoint (or the one at
    step ``at``), as `pinnlab solve` writes it."""
    from pinnlab.io import save_checkpoint
    from pinnlab.solvers import train

    cfg = root / "solve.yaml"
    cfg.write_text(text)
    config = configuration.load(cfg)
    problem, kwargs = configuration.build(config)
    path = root / "run.h5.ckpt"

    def first_only(state):
        if (state.step == at) if at is not None else not path.exists():
            save_checkpoint(path, state, kwargs["optimizer"], config.to_yaml())

    train(problem, **kwargs, on_checkpoint=first_only, progress="off")
    return cfg, torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def solve_run(tmp_path_factory):
    """The first checkpoint (step 2 of 6) of a tiny solve."""
    return _first_checkpoint(tmp_path_factory.mktemp("solve"), SOLVE)


def _rename_everywhere(data):
    """A parameter renamed in the parameters and the optimizer state alike (it used to
    train on silently: the network took its own initial weight for the missing name)."""
    for group, prefix in (("params", ""), ("opt_state", "mu/"), ("opt_state", "nu/")):
        data[group][prefix + "layers.0.w"] = data[group].pop(prefix + "layers.0.weight")


def _advance(data, step):
    """The saved step moved to ``step``, its traces and loss window along with it (else
    the checkpoint is refused as inconsistent before its step is compared with the run's)."""
    last = int(data["history"]["step"][-1]) if len(data["history"]["step"]) else 0
    for name in ("trace_loss", "trace_mix"):
        data["history"][name] = torch.zeros(step, dtype=torch.float64)
    data["window_loss"] = torch.zeros(step - last, dtype=torch.float64)
    data["step"] = step


SOLVE_DAMAGE = {
    "missing key": (_changed(lambda d: d.pop("params")), "it has no 'params'"),
    "renamed parameter": (_changed(_rename_everywhere), "params lacks 'layers.0.weight' and has unexpected"),
    "reshaped parameter": (_changed(lambda d: d["params"].__setitem__("layers.0.weight", torch.zeros(3, 3))),
                           "params['layers.0.weight'] has shape (3, 3), expected (8, 3)"),
    "reshaped optimizer state": (_changed(lambda d: d["opt_state"].__setitem__("mu/layers.0.bias", torch.zeros(1))),
                                 "opt_state.mu['layers.0.bias'] has shape (1,), expected (8,)"),
    "step beyond steps": (_changed(lambda d: _advance(d, 7)), "is at step 7, not within this run's 0..6"),
    "truncated": (_truncated, "corrupted or unreadable"),
    # (a KeyError traceback at the first step, exit 1)
    "a weighting state in an unweighted run": (_changed(lambda d: d.__setitem__("weighting", {"junk": 1.0})),
                                               "the state holds a loss weighting, and this run has none"),
}


@pytest.mark.parametrize("case", SOLVE_DAMAGE)
def test_solve_refuses_a_damaged_checkpoint(tmp_path, capsys, solve_run, case):
    cfg, payload = solve_run
    damage, expected = SOLVE_DAMAGE[case]
    out = tmp_path / "run.h5"
    checkpoint = tmp_path / "run.h5.ckpt"
    checkpoint.write_bytes(damage(payload))
    _refused(["solve", cfg, "-o", out, "--resume", "--progress", "off"], checkpoint, expected, capsys)
    assert not out.exists()


def test_solve_resumes_the_undamaged_checkpoint(tmp_path, solve_run):
    """The fixture's checkpoint itself is accepted (the refusals above are the damage's)."""
    cfg, payload = solve_run
    (tmp_path / "run.h5.ckpt").write_bytes(_as_bytes(payload))
    assert main(["solve", str(cfg), "-o", str(tmp_path / "run.h5"), "--resume", "--progress", "off"]) == 0


def _rename_parameter(state):
    state.params["layers.0.w"] = state.params.pop("layers.0.weight")


TRAIN_DAMAGE = {
    "step beyond steps": (lambda s: setattr(s, "step", 7), "the state is at step 7, not within this run's 0..6"),
    "renamed parameter": (_rename_parameter, "params lacks 'layers.0.weight' and has unexpected 'layers.0.w'"),
    "reshaped parameter": (lambda s: s.params.__setitem__("layers.0.weight", torch.zeros(8, 2)),
                           "params['layers.0.weight'] has shape (8, 2), expected (8, 3)"),
    "reshaped optimizer state": (lambda s: s.opt_state.mu.__setitem__("layers.0.bias", torch.zeros(1)),
                                 "opt_state.mu['layers.0.bias'] has shape (1,), expected (8,)"),
    "history shorter than the step": (lambda s: s.history.trace_loss.pop(),
                                      "the state is inconsistent: history 'trace_loss' has 1 values for its 2 steps"),
    "window loss of a step not taken": (lambda s: s.window_loss.append(1.0),
                                        "the state is inconsistent: 'window_loss' has 1 values, not one for each of the 0"),
}


@pytest.mark.parametrize("case", TRAIN_DAMAGE)
def test_train_refuses_a_state_of_another_run(solve_run, case):
    """`train(state=...)` from Python (no checkpoint file, so no load_checkpoint): a state
    beyond the run, with other parameters or optimizer state, or whose history does not
    fit its step is refused before any step (it used to return "ok" at step 7 of 6, fail
    at the first step with a traceback, or write traces shorter than the run)."""
    from pinnlab.solvers import train

    cfg, _ = solve_run
    problem, kwargs = configuration.build(configuration.load(cfg))
    kwargs.update(checkpoint_every=0, progress="off")
    state = train(problem, **{**kwargs, "steps": 2}).state
    damage, expected = TRAIN_DAMAGE[case]
    damage(state)
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        train(problem, **kwargs, state=state)


@pytest.fixture(scope="module")
def weighted_solve_run(tmp_path_factory):
    """As solve_run, with ReLoBRaLo weights (its state holds the weights and reference losses per term)."""
    return _first_checkpoint(tmp_path_factory.mktemp("weighted"), SOLVE_WEIGHTED)


WEIGHTING_DAMAGE = {
    "weights lack a term": lambda d: d["weighting"]["weights"].pop("boundary"),
    "reference losses of an unknown term": lambda d: d["weighting"]["initial"].__setitem__("interface", 1.0),
    "entry missing": lambda d: d["weighting"].pop("previous"),
}


@pytest.mark.parametrize("case", WEIGHTING_DAMAGE)
def test_solve_refuses_a_weighting_state_of_other_terms(tmp_path, capsys, weighted_solve_run, case):
    """A resumed LRA/ReLoBRaLo state over other terms is refused when training takes it,
    before its first step; a missing term used to train on silently at its fixed weight."""
    cfg, payload = weighted_solve_run
    out, checkpoint = tmp_path / "run.h5", tmp_path / "run.h5.ckpt"
    checkpoint.write_bytes(_changed(WEIGHTING_DAMAGE[case])(payload))
    _refused(["solve", cfg, "-o", out, "--resume", "--progress", "off"], checkpoint,
             "the state's weighting does not fit this run's ReLoBRaLo over the terms residual, boundary", capsys)
    assert not out.exists()


def test_solve_resumes_the_undamaged_weighted_checkpoint(tmp_path, weighted_solve_run):
    cfg, payload = weighted_solve_run
    (tmp_path / "run.h5.ckpt").write_bytes(_as_bytes(payload))
    assert main(["solve", str(cfg), "-o", str(tmp_path / "run.h5"), "--resume", "--progress", "off"]) == 0


SOLVE_HYBRID = SOLVE.replace("eval_every: 2", "eval_every: 3").replace(
    "seed: 1}", "seed: 1}\nloss: {kind: hybrid, switch: auto, window: 2}")


@pytest.fixture(scope="module")
def hybrid_solve_run(tmp_path_factory):
    """The checkpoint at step 4 of 6 of a tiny solve with a plateau-switched hybrid loss
    and evaluations every 3 steps: one history row (step 3), one loss since it."""
    cfg, payload = _first_checkpoint(tmp_path_factory.mktemp("hybrid"), SOLVE_HYBRID, at=4)
    assert payload["plateau"] is not None and len(payload["window_loss"]) == 1
    assert payload["history"]["step"].tolist() == [3] and len(payload["history"]["trace_loss"]) == 4
    return cfg, payload


def _set_history(name, value):
    return lambda d: d["history"].__setitem__(name, value)


HISTORY_DAMAGE = {
    "trace_loss cut": ("hybrid", lambda d: d["history"].__setitem__("trace_loss", d["history"]["trace_loss"][:3]),
                       "history 'trace_loss' has 3 values for its 4 steps"),
    "trace_mix cut": ("hybrid", lambda d: d["history"].__setitem__("trace_mix", d["history"]["trace_mix"][:1]),
                      "history 'trace_mix' has 1 values for its 4 steps"),
    "column emptied": ("hybrid", lambda d: d["history"].__setitem__("rel_l2", d["history"]["rel_l2"][:0]),
                       "history column 'rel_l2' has 0 rows, column 'step' has 1"),
    "terms column cut": ("weighted", lambda d: d["history"].__setitem__(
        "terms/loss_boundary", d["history"]["terms/loss_boundary"][:0]),
        "history column 'terms/loss_boundary' has 0 rows, column 'step' has 1"),
    "step ahead of the history": ("hybrid", lambda d: d.__setitem__("step", 6),
                                  "history 'trace_loss' has 4 values for its 6 steps"),
    "history row beyond the step": ("hybrid", _set_history("step", torch.tensor([5])),
                                    "its history rows are at steps 5, not at increasing whole steps up to its step 4"),
    "history rows not increasing": ("hybrid", lambda d: d["history"].update(
        {k: v.repeat(2) for k, v in d["history"].items() if not k.startswith("trace")}),
        "its history rows are at steps 3, 3, not at increasing"),
    "history row at a fractional step": ("hybrid", _set_history("step", torch.tensor([2.5])),
                                         "its history rows are at steps 2.5, not at increasing"),
    "loss window too long": ("hybrid", lambda d: d.__setitem__("window_loss", torch.zeros(3, dtype=torch.float64)),
                             "'window_loss' has 3 values, not one for each of the 1 steps since the last history row"),
    "step a float": ("hybrid", lambda d: d.__setitem__("step", 4.7), "its step 4.7 is not a whole number >= 0"),
    "step a string": ("hybrid", lambda d: d.__setitem__("step", "4"), "its step '4' is not a whole number >= 0"),
    "step a bool": ("hybrid", lambda d: d.__setitem__("step", True), "its step True is not a whole number >= 0"),
    "step negative": ("hybrid", lambda d: d.__setitem__("step", -1), "its step -1 is not a whole number >= 0"),
    # edited values of the other kinds (resumed: int64 parameters cast, a negative time in steps_per_second)
    "integer parameters": ("hybrid", lambda d: d["params"].update({k: v.long() for k, v in d["params"].items()}),
                           "is not a floating-point tensor"),
    "negative train_seconds": ("hybrid", lambda d: d.__setitem__("train_seconds", -5.0),
                               "its train_seconds -5.0 is not a finite number >= 0"),
    "infinite wall_s": ("hybrid", lambda d: d.__setitem__("wall_s", float("inf")),
                        "its wall_s inf is not a finite number >= 0"),
    "timed steps beyond the step": ("hybrid", lambda d: d.__setitem__("timed_steps", 99),
                                    "its timed_steps 99 is not a whole number in 0..4, its step"),
}


@pytest.mark.parametrize("case", HISTORY_DAMAGE)
def test_solve_refuses_a_checkpoint_whose_history_does_not_fit_its_step(tmp_path, capsys, request, case):
    """A step or history edited out of step with each other (hash intact) used to resume
    with exit 0 and write a result whose traces and columns did not match its steps (a
    trace cut to 3 values: /trace/loss of 23 values for 30 steps; a step moved ahead:
    steps silently skipped), or to truncate a fractional or textual step."""
    kind, change, expected = HISTORY_DAMAGE[case]
    cfg, payload = request.getfixturevalue(f"{kind}_solve_run")
    out, checkpoint = tmp_path / "run.h5", tmp_path / "run.h5.ckpt"
    checkpoint.write_bytes(_changed(change)(payload))
    _refused(["solve", cfg, "-o", out, "--resume", "--progress", "off"], checkpoint, expected, capsys)
    assert not out.exists()


@pytest.mark.parametrize("case", HISTORY_DAMAGE)
def test_load_checkpoint_refuses_a_history_that_does_not_fit_its_step(tmp_path, request, case):
    from pinnlab.io import load_checkpoint

    kind, change, expected = HISTORY_DAMAGE[case]
    cfg, payload = request.getfixturevalue(f"{kind}_solve_run")
    config = configuration.load(cfg)
    _, kwargs = configuration.build(config)
    checkpoint = tmp_path / "run.h5.ckpt"
    checkpoint.write_bytes(_changed(change)(payload))
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {str(checkpoint)!r} is ") + ".*"
                       + re.escape(expected)):
        load_checkpoint(checkpoint, kwargs["optimizer"], config.to_yaml(), torch.device("cpu"), kwargs["dtype"])


def test_solve_resumes_the_undamaged_hybrid_checkpoint(tmp_path, hybrid_solve_run):
    """A checkpoint between two evaluations (a loss window pending) with plateau state
    resumes, and the result's traces and columns cover all the run's steps."""
    import h5py

    cfg, payload = hybrid_solve_run
    out = tmp_path / "run.h5"
    (tmp_path / "run.h5.ckpt").write_bytes(_as_bytes(payload))
    assert main(["solve", str(cfg), "-o", str(out), "--resume", "--progress", "off"]) == 0
    with h5py.File(out) as result:
        assert result["trace/loss"].shape == (6,)
        assert result["history/step"][:].tolist() == [3, 6]
        assert {result["history"][k].shape for k in result["history"] if k != "terms"} == {(2,)}


# -- pinnlab tune --resume --------------------------------------------------------------
def _tune_run(root, method):
    """(config file, saved dictionary) of a tiny tuning checkpointed after every outer step
    (trial) and interrupted in the second, as `pinnlab tune` writes it."""
    from pinnlab.io.checkpoint import config_hash
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    cfg = root / f"{method}.yaml"
    text = TUNE.replace("METHOD", method)
    # trial_steps only for a search (beside it the horizon, its default, is refused), checkpoint_every
    # only for the others (a search saves every trial)
    for key in ("checkpoint_every: 1", "horizon: 2") if method == "random" else ("trial_steps: 2",):
        text = text.replace(f"  {key}\n", "")
    if method == "penalty":  # its default inner step diverges on a PINN (README: far smaller steps)
        text = text.replace("options: {}", "options: {lr: 1.0e-5}")
    cfg.write_text(text)
    config = configuration.load(cfg)
    path = root / f"{method}.h5.ckpt"

    def interrupt(k, phi, diagnostics):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tuning(build_tuning(config), checkpoint=path, progress=interrupt,
                   metadata={"config": config_hash(config.to_yaml())})
    return cfg, torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def bilevel_run(tmp_path_factory):
    return _tune_run(tmp_path_factory.mktemp("bilevel"), "fg2u")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    return _tune_run(tmp_path_factory.mktemp("search"), "random")


@pytest.fixture(scope="module")
def penalty_run(tmp_path_factory):
    """An outer algorithm: its lower-level iterates are in the checkpoint's method_state."""
    return _tune_run(tmp_path_factory.mktemp("penalty"), "penalty")


BILEVEL_DAMAGE = {
    "missing u": (_changed(lambda d: d.pop("u")), "it has no 'u'"),
    "missing history entry": (_changed(lambda d: d["history"].pop("value")), "its history has other entries"),
    "renamed tunable": (_changed(lambda d: d["u"].__setitem__("lr", d["u"].pop("weights.boundary"))),
                        "u lacks 'weights.boundary' and has unexpected 'lr'"),
    "reshaped tunable": (_changed(lambda d: d["u"].__setitem__("weights.boundary", torch.zeros(3))),
                         "u['weights.boundary'] has shape (3,), expected ()"),
    "reshaped warm start": (_changed(lambda d: d["theta_state"][0].__setitem__("layers.0.weight", torch.zeros(2, 2))),
                            "theta_state[0]['layers.0.weight'] has shape (2, 2), expected (8, 3)"),
    "reshaped warm start optimizer state": (
        _changed(lambda d: d["theta_state"][1]["mu"].__setitem__("layers.0.weight", torch.zeros(2, 2))),
        "theta_state[1].mu['layers.0.weight'] has shape (2, 2), expected (8, 3)"),
    "reshaped meta-optimizer state": (
        _changed(lambda d: d["meta_optimizer"]["state"][0].__setitem__("exp_avg", torch.zeros(3))),
        "meta_optimizer['state'][0]['exp_avg'] has shape (3,), expected ()"),
    "meta-optimizer state torch refuses": (_changed(lambda d: d["meta_optimizer"].__setitem__("param_groups", [])),
                                           "is damaged (ValueError: "),
    "budget": (_changed(lambda d: d.__setitem__("budget", {"spent": "1 s"})), "is damaged: its budget"),
    # (the four below were resumed: a cut history went to the result file as if complete,
    # a NaN φ or θ ran on to a result of NaN values, the budget was taken as it came)
    "cut history": (_changed(lambda d: d.__setitem__("history", {k: v[:0] for k, v in d["history"].items()})),
                    "is damaged: it is at 1 finished outer steps (trials), but its history has 0 rows"),
    "non-finite tunable": (_changed(lambda d: d["u"]["weights.boundary"].fill_(float("nan"))),
                           "is damaged: its tuned values or network are not finite"),
    "non-finite warm start": (_changed(lambda d: d["theta_state"][0]["layers.0.weight"].fill_(float("inf"))),
                              "is damaged: its tuned values or network are not finite"),
    "budget of other steps": (_changed(lambda d: d.__setitem__("budget", {"spent": 1.0, "units": 7})),
                              "does not fit 1 finished outer steps"),
    "negative time spent": (_changed(lambda d: d.__setitem__("budget", {"spent": -1.0, "units": 1})),
                            "is damaged: its budget"),
    "outer step beyond steps": (_changed(lambda d: d.__setitem__("outer_step", 5)),
                                "is at outer step 5, not within this run's 0..4"),
    # (the message was torch's about memory mapping, or "Errno 22", not that the file is damaged)
    "truncated": (_truncated, "is corrupted or unreadable (RuntimeError)"),
    "not a torch file": (lambda payload: b"not a checkpoint", "is corrupted or unreadable"),
    # (said "belongs to another configuration")
    "not a dictionary": (lambda payload: _as_bytes([1, 2, 3]), "has an unknown format"),
}

PENALTY_DAMAGE = {
    "reshaped lower-level iterate": (
        _changed(lambda d: d["method_state"]["0"]["theta"].__setitem__("layers.0.weight", torch.zeros(2, 2))),
        "method_state[0]['theta']['layers.0.weight'] has shape (2, 2), expected (8, 3)"),
    "iterates of another slot": (_changed(lambda d: d["method_state"].__setitem__("1", d["method_state"]["0"])),
                                 "method_state has unexpected 1"),
}

SEARCH_DAMAGE = {
    "missing trials": (_changed(lambda d: d.pop("trials")), "it has no 'trials'"),
    "malformed trial": (_changed(lambda d: d["trials"].append([{}])), "is damaged (ValueError: "),
    "more trials than steps": (_changed(lambda d: d.__setitem__("trials", d["trials"] * 5)),
                               "holds 5 trials, more than this run's 4"),
    "cut history": (_changed(lambda d: d.__setitem__("history", {k: v[:0] for k, v in d["history"].items()})),
                    "but its history has 0 rows"),
}


TUNE_DAMAGE = {"bilevel": BILEVEL_DAMAGE, "penalty": PENALTY_DAMAGE, "search": SEARCH_DAMAGE}


@pytest.mark.parametrize("kind, case", [(k, c) for k, damage in TUNE_DAMAGE.items() for c in damage])
def test_tune_refuses_a_damaged_checkpoint(tmp_path, capsys, request, kind, case):
    cfg, payload = request.getfixturevalue(f"{kind}_run")
    damage, expected = TUNE_DAMAGE[kind][case]
    out = tmp_path / "t.h5"
    checkpoint = tmp_path / "t.h5.ckpt"
    checkpoint.write_bytes(damage(payload))
    _refused(["tune", cfg, "-o", out, "--resume", "--progress", "off"], checkpoint, expected, capsys)
    assert not out.exists()


def test_tune_refuses_a_checkpoint_without_metadata(tmp_path, capsys, bilevel_run):
    """`pinnlab tune` compares the saved metadata with its config's first: a checkpoint
    without them (or a dictionary that is no checkpoint) is incomplete, not one "of another
    configuration". (The library call takes a checkpoint without metadata when given none.)"""
    cfg, payload = bilevel_run
    checkpoint = tmp_path / "t.h5.ckpt"
    checkpoint.write_bytes(_changed(lambda d: d.pop("metadata"))(payload))
    _refused(["tune", cfg, "-o", tmp_path / "t.h5", "--resume", "--progress", "off"], checkpoint,
             "is incomplete: it has no 'metadata'", capsys)


@pytest.mark.parametrize("kind", ["solve", "bilevel", "search"])
def test_bytes_changed_on_disk_inside_a_tensor_are_refused(tmp_path, capsys, request, kind):
    """torch.load does not check the archive's CRCs: 16 bytes overwritten inside a
    tensor's data were resumed from as the run's own (rel_l2 and the trace changed, exit
    0). The checkpoint's content digest refuses them."""
    from pinnlab._typing import tensor_leaves

    cfg, payload = request.getfixturevalue(f"{kind}_run")
    raw = bytearray(_as_bytes(payload))
    tensors = tensor_leaves({k: v for k, v in payload.items() if k != DIGEST_KEY})[0]
    contents = [t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() for t in tensors]
    data = max((c for c in contents if len(c) >= 8 and bytes(raw).count(c) == 1), key=len)  # found once
    at = bytes(raw).find(data)
    raw[at + len(data) // 2] ^= 0x40
    out, checkpoint = tmp_path / "t.h5", tmp_path / "t.h5.ckpt"
    checkpoint.write_bytes(bytes(raw))
    command = "solve" if kind == "solve" else "tune"
    _refused([command, cfg, "-o", out, "--resume", "--progress", "off"], checkpoint,
             "is corrupted: its content does not match the digest saved with it", capsys)
    assert not out.exists()


@pytest.mark.parametrize("kind", TUNE_DAMAGE)
def test_tune_resumes_the_undamaged_checkpoint(tmp_path, capsys, request, kind):
    cfg, payload = request.getfixturevalue(f"{kind}_run")
    (tmp_path / "t.h5.ckpt").write_bytes(_as_bytes(payload))
    assert main(["tune", str(cfg), "-o", str(tmp_path / "t.h5"), "--resume", "--progress", "off"]) == 0, \
        capsys.readouterr().err


@pytest.mark.parametrize("case", SOLVE_DAMAGE)
def test_load_checkpoint_and_train_raise_a_checkpoint_error(tmp_path, solve_run, case):
    """The library calls under `pinnlab solve --resume`: load_checkpoint refuses what it
    cannot read, train a state that does not fit the run."""
    from pinnlab.io import load_checkpoint
    from pinnlab.solvers import train

    cfg, payload = solve_run
    damage, expected = SOLVE_DAMAGE[case]
    config = configuration.load(cfg)
    problem, kwargs = configuration.build(config)
    checkpoint = tmp_path / "run.h5.ckpt"
    checkpoint.write_bytes(damage(payload))
    device = torch.device("cpu")
    with pytest.raises(CheckpointError, match=re.escape(expected)) as err:
        state = load_checkpoint(checkpoint, kwargs["optimizer"], config.to_yaml(), device, kwargs["dtype"])
        train(problem, **kwargs, state=state, progress="off")
    assert "start over" not in str(err.value) and "delete" not in str(err.value)


@pytest.mark.parametrize("kind, case", [(k, c) for k in ("bilevel", "penalty") for c in TUNE_DAMAGE[k]])
def test_optimize_raises_a_checkpoint_error(tmp_path, request, kind, case):
    """The library call under `pinnlab tune --resume`: optimize(resume=True) raises
    CheckpointError (a ValueError) naming the file, and leaves the file alone."""
    from pinnlab.tuning.run import run_tuning
    from pinnlab.tuning.setup import build_tuning

    cfg, payload = request.getfixturevalue(f"{kind}_run")
    damage, expected = TUNE_DAMAGE[kind][case]
    checkpoint = tmp_path / "t.ckpt"
    checkpoint.write_bytes(damage(payload))
    before = checkpoint.read_bytes()
    if case == "truncated":  # `pinnlab tune` reads the file first and words this case itself
        expected = "corrupted or unreadable"
    with pytest.raises(CheckpointError, match=re.escape(f"{checkpoint}'") + ".*" + re.escape(expected)) as err:
        run_tuning(build_tuning(configuration.load(cfg)), checkpoint=checkpoint, resume=True)
    assert "start over" not in str(err.value) and "delete" not in str(err.value)
    assert checkpoint.read_bytes() == before
