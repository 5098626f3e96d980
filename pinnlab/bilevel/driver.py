"""The outer loop: meta optimizer over φ, warm starts, accumulation, two phases, checkpoints."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pinnlab._budget import Budget
from pinnlab._checks import check_flag, check_integer, check_positive, check_seed
from pinnlab._interrupts import STOPS
from pinnlab._typing import tensor_leaves
from pinnlab._warnings import warn
from pinnlab.bilevel.base import (
    AbstractHypergradient,
    BilevelProblem,
    Phi,
    check_phi,
    check_problem,
    flatten,
)
from pinnlab.bilevel.distributed import all_agree, rank_and_world
from pinnlab.bilevel.parameterization import (
    AbstractParameterization,
    Identity,
    constrain,
    reparameterize,
    unconstrain,
)
from pinnlab.bilevel.penalty import AbstractOuterAlgorithm, LowerLevelDivergence

Method = AbstractHypergradient | AbstractOuterAlgorithm


def optimizer_stepped(opt: torch.optim.Optimizer) -> bool:
    """``opt.step()``; False when the step overflowed the parameters' dtype (an outer
    learning rate near float32's largest value made torch raise "value cannot be
    converted to type float without overflow": a traceback, not a stopped run). The
    caller treats it as a step that made φ non-finite."""
    try:
        opt.step()
    except RuntimeError as err:
        if "overflow" not in str(err):
            raise
        return False
    return True


def _check_method(name: str, method: Any, *, two_phase: bool = False) -> None:
    """``method`` is a hypergradient estimator or outer algorithm (or, at the top level, a TwoPhase)."""
    if isinstance(method, (AbstractHypergradient, AbstractOuterAlgorithm)):
        return
    if two_phase and isinstance(method, TwoPhase):
        return
    expected = "a method object or a TwoPhase schedule" if two_phase else "a method object"
    got = f"the string {method!r}; build one by name with make_method({method!r})" if isinstance(method, str) \
        else type(method).__name__
    raise TypeError(f"{name} must be {expected} (e.g. ForwardGradientUnroll(), Penalty()), got {got}")


@dataclass(frozen=True)
class TwoPhase:
    """Method ``first`` for ``switch_after`` outer steps, then ``then`` ([FG2U] §3.2).

    :func:`optimize` warns when ``switch_after`` is at or beyond its ``steps``: that run
    ends before Phase II, which runs only when it is resumed with more steps; and when it
    is 0, which runs ``then`` alone (Phase I never runs). Phase II
    refines Phase I's φ as a new run would: the meta optimizer's state (Adam's
    moments and step count) is cleared at the switch. Carried over, moments measured on
    Phase I's estimates mis-scaled Phase II's steps (benchmarks/TUNING.md, "The two-phase schedule": the
    two-phase rows with and without the reset).
    ``then_lr``: the meta optimizer's learning rate from the switch on (every parameter
    group; default: unchanged). [FG2U] refine the cheap Phase I's φ with a smaller
    Phase-II rate (data condensation: 5e-4 against 1e-2).
    """

    first: Method
    then: Method
    switch_after: int
    then_lr: float | None = None

    def __post_init__(self):
        _check_method("TwoPhase.first", self.first)
        _check_method("TwoPhase.then", self.then)
        check_integer("TwoPhase.switch_after", self.switch_after, minimum=0)
        if self.then_lr is not None:
            check_positive("TwoPhase.then_lr", self.then_lr)

    def at(self, outer_step: int) -> Method:
        return self.first if outer_step < self.switch_after else self.then


def _method_name(method: Method) -> str:
    return getattr(method, "name", type(method).__name__)


@dataclass
class OuterResult:
    """φ (constrained values) after the outer loop, and the history of every outer step."""

    phi: Phi
    history: dict[str, list] = field(default_factory=dict)
    theta: Any = None
    state: Any = None
    status: str = "ok"
    """``"ok"``, or ``"nonfinite"``: the loop stopped at a non-finite hypergradient, outer
    value, θ or unusable φ, or at an outer algorithm's diverging lower-level solve
    (:class:`~pinnlab.bilevel.penalty.LowerLevelDivergence`), keeping the last usable φ
    and θ (``message`` says at which outer step, and for a diverging solve which option
    to lower)."""
    message: str = ""
    seconds: float = 0.0
    """Wall-clock seconds of the loop, including those before a resume."""


def _finite(*trees) -> bool:
    return all(bool(torch.isfinite(torch.as_tensor(v)).all()) for tree in trees for v in tree.values())


def _plain(obj):
    """Nested NamedTuples/dicts/lists of tensors → plain containers (weights_only-safe)."""
    if hasattr(obj, "_fields"):
        return {"__namedtuple__": f"{type(obj).__module__}:{type(obj).__qualname__}",
                **{k: _plain(getattr(obj, k)) for k in obj._fields}}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _restore(obj, like=None):
    """``obj`` as :func:`_plain` left it → the containers it was made of. A NamedTuple is
    rebuilt as the type of its counterpart in ``like`` (the state this run starts from,
    built the same way), so a user's own state type resumes; without one, only
    pinnlab's own types are imported by the name the checkpoint holds."""
    if isinstance(obj, dict) and "__namedtuple__" in obj:
        name = obj["__namedtuple__"]
        fields = {k: v for k, v in obj.items() if k != "__namedtuple__"}
        if hasattr(like, "_fields") and f"{type(like).__module__}:{type(like).__qualname__}" == name:
            cls = type(like)
            return cls(**{k: _restore(v, getattr(like, k, None)) for k, v in fields.items()})
        module, _, qualname = name.partition(":")
        if not module.startswith("pinnlab."):
            raise ValueError(f"refusing to restore type {name!r} from a checkpoint: this run's state has no "
                             "such NamedTuple there")
        import importlib

        cls = getattr(importlib.import_module(module), qualname)
        return cls(**{k: _restore(v) for k, v in fields.items()})
    if isinstance(obj, dict):
        return {k: _restore(v, like.get(k) if isinstance(like, dict) else None) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, like[i] if isinstance(like, (list, tuple)) and i < len(like) else None)
                for i, v in enumerate(obj)]
    return obj


_METADATA_SCALARS = (str, int, float, bool, type(None))


def _check_metadata(value, where: str = "metadata") -> None:
    """Refuse, before any work, ``metadata`` a ``weights_only`` read would refuse at every
    resume: it was saved, then each resume called the checkpoint "corrupted or
    unreadable" (a ``pathlib.Path``; a NumPy scalar, though it is a float)."""
    if type(value) in _METADATA_SCALARS or isinstance(value, torch.Tensor):
        return
    if type(value) is dict:
        for key, entry in value.items():
            if type(key) not in _METADATA_SCALARS:
                raise TypeError(f"{where} has a key of type {type(key).__name__}; a checkpoint's metadata "
                                "has str, int, float, bool or None keys")
            _check_metadata(entry, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, entry in enumerate(value):
            _check_metadata(entry, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint's metadata "
                    "holds str, int, float, bool, None, tensors and lists, tuples or dicts of them, which a "
                    "resume can read back (convert it, e.g. str(path) or float(x))")


def check_checkpoint_path(checkpoint: str | Path, *, written: bool = True) -> None:
    """Refuse a checkpoint path that names no file: an empty one (``Path("")`` is
    ``Path(".")``, the current directory), or, for one that is ``written``, a directory."""
    if not str(checkpoint):
        raise ValueError("checkpoint: an empty path; name a file to write to")
    if written and Path(checkpoint).is_dir():
        raise ValueError(f"checkpoint {str(checkpoint)!r} is a directory; name a file to write to")


def refuse_existing_checkpoint(checkpoint: str | Path, *, resume: bool, overwrite: bool) -> None:
    """A fresh run (neither ``resume`` nor ``overwrite``) would replace the checkpoint of
    another at its first save: ``FileExistsError`` before any work."""
    if not resume and not overwrite and Path(checkpoint).exists():
        raise FileExistsError(f"checkpoint {str(checkpoint)!r} exists; pass resume=True to continue that run "
                              "or overwrite=True to start over")


def _described(parameterization: AbstractParameterization) -> str:
    """What a checkpoint records of a tunable's parameterisation (its repr, e.g.
    ``Logit(low=0.0, high=1.0)``; its class name where it has no repr of its own)."""
    kind = type(parameterization)
    return repr(parameterization) if kind.__repr__ is not object.__repr__ else f"{kind.__qualname__}()"


def _to_device(tree, device: torch.device):
    """``tree`` with every tensor moved to ``device`` (its other leaves kept)."""
    tensors, rebuild = tensor_leaves(tree)
    return rebuild([t.to(device) for t in tensors])


def optimize(
    problem: BilevelProblem,
    phi: Phi,
    method: Method | TwoPhase,
    *,
    steps: int,
    meta_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    parameterization: dict[str, AbstractParameterization] | None = None,
    warm_start: bool = True,
    accumulate: int = 1,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    callback: Callable[[int, Phi, dict], None] | None = None,
    time_budget: float | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> OuterResult:
    r"""Minimise h(φ) (or the true bilevel objective) by an outer gradient method.

    Per outer step k: θ_0 is the previous θ_T (``warm_start``) or ``problem.init``;
    the inner steps of outer step k use indices t = k·T, …, k·T + T − 1 (fresh inner
    randomness each outer step, identical for every direction and estimator); the
    φ-gradient is the mean of ``accumulate`` estimates; the meta optimizer (any
    ``torch.optim`` optimizer over the unconstrained φ leaves, default Adam(1e-2))
    takes one step. ``parameterization`` maps names of φ's entries to
    :class:`Log`/:class:`Logit`/... (an unnamed entry is unconstrained); ``phi`` is given
    and reported in constrained values.

    Checkpoints (every ``checkpoint_every`` outer steps, atomic, ``weights_only``-safe)
    hold φ (unconstrained, with each entry's parameterisation), the meta-optimizer state,
    θ and its optimizer state (of any NamedTuple, dict, list or tuple of tensors), the
    method state and the history; a run stopped from outside (Ctrl-C, SIGTERM: :data:`pinnlab._interrupts.STOPS`)
    saves its last completed outer step there too before the exception goes on.
    ``resume=True`` continues from ``checkpoint`` exactly, every restored
    tensor on φ's device (a run on a GPU resumes there). ``metadata`` (e.g. a config
    hash; str, int, float, bool, None, tensors and lists, tuples or dicts of them, what a
    ``weights_only`` read takes back) is stored with them; resuming with other metadata,
    or from a damaged checkpoint or one that does not fit this run (other tunables, their
    parameterisations or θ shapes, an outer step beyond ``steps``), raises
    :class:`~pinnlab.io.CheckpointError`. A run that would save checkpoints to an
    existing file refuses to start (``FileExistsError``) unless it resumes it or
    ``overwrite=True`` says to start over.
    ``time_budget`` (seconds > 0; None: no limit): an outer step starts only if the mean
    length of this call's finished ones says it ends within that many seconds
    (:class:`pinnlab._budget.Budget`; wall-clock, so not reproducible across machines).
    When an estimator splits its directions over the ranks of a process group, a step
    starts only if it fits on every rank, so all ranks run the same outer steps (each
    deciding by its own clock, one would wait in the estimator's all_reduce for ranks
    that had stopped).
    A non-finite hypergradient, outer value, θ or stepped φ, or a stepped φ its
    parameterisation cannot use (a log value underflowed to 0), ends the loop with
    ``status="nonfinite"``, keeping the last usable φ and θ (as the solver keeps the last
    finite state). With such an estimator, the loop stops there on every rank when the
    hypergradient, value or θ of any rank is non-finite (the stepped φ, from the same
    all_reduced hypergradient, is the same on every rank).

    Outer algorithms (:class:`Penalty`, :class:`F2SA`) keep their own lower-level
    iterates from step to step, so ``warm_start`` and ``seed`` do not apply to them and
    ``accumulate`` must be 1; their outer step k uses inner indices
    t = k·S, …, k·S + ``inner_iters`` − 1 with stride S = max(T, ``inner_iters``), so
    consecutive outer steps never share inner randomness. (In a :class:`TwoPhase`
    schedule that puts such a method first with ``inner_iters`` > T, the estimator phase
    after it may reuse indices the first phase used.) Their recorded ``value`` is the
    outer objective f(θ, φ) at their iterate θ after the step's lower-level iterations
    and the φ of the step (before the meta update), as an estimator records
    h(φ) = f(θ_T, φ); one more evaluation of f per outer step. A lower-level solve that
    diverges (:class:`~pinnlab.bilevel.penalty.LowerLevelDivergence`) ends the loop like
    a non-finite hypergradient, with the method's message. Their θ (``iterate``) is the
    result's ``theta``, with the inner optimizer's fresh state as ``state``; in a
    :class:`TwoPhase` schedule θ passes between the phases either way (an outer
    algorithm starts from the estimator phase's θ_T, a warm-started estimator from the
    outer algorithm's θ with that fresh state); without ``warm_start`` an estimator keeps
    no θ_T, and an outer algorithm after it starts from ``problem.init``.

    ``problem`` is a :class:`BilevelProblem`, or a
    :class:`~pinnlab.bilevel.BlackBox` for the methods that only evaluate h
    (:class:`~pinnlab.bilevel.ZeroOrderForwardGradient`).
    """
    from pinnlab.io.checkpoint import write_checkpoint_file

    check_phi(phi)
    for key, value in phi.items():  # (a NaN would pass the parameterisations' inverses' bounds;
        # meta tensors, which tests use for device placement, hold no values to check)
        if value.device.type != "meta" and not bool(torch.isfinite(value.detach()).all()):
            raise ValueError(f"φ[{key!r}] must be finite to start from: it has non-finite entries")
    _check_method("method", method, two_phase=True)
    for m in (method.first, method.then) if isinstance(method, TwoPhase) else (method,):
        check_problem(problem, m)
    check_integer("steps", steps)
    check_integer("accumulate", accumulate)
    check_integer("checkpoint_every", checkpoint_every, minimum=0)
    check_seed("seed", seed)
    for name, flag in (("warm_start", warm_start), ("resume", resume), ("overwrite", overwrite)):
        check_flag(name, flag)
    if time_budget is not None:
        check_positive("time_budget", time_budget)
    methods = (method.first, method.then) if isinstance(method, TwoPhase) else (method,)
    outer = [m for m in methods if isinstance(m, AbstractOuterAlgorithm)]
    if accumulate != 1 and outer:
        raise ValueError(f"accumulate = {accumulate}: {outer[0].name} is an outer algorithm with its own "
                         "lower-level iterates and takes one φ-gradient per outer step; use accumulate=1")
    if isinstance(method, TwoPhase) and method.switch_after >= steps:
        # (a warning, not the CLI's refusal of tune.then.after: a run resumed with more steps
        # goes on into the second phase, so a first leg that stops before it is legitimate)
        warn(f"TwoPhase.switch_after = {method.switch_after} with steps = {steps}: this run ends before the second "
             f"phase ({_method_name(method.then)}) starts; it runs only when "
             "resumed with more steps")
    if isinstance(method, TwoPhase) and method.switch_after == 0:
        # (a warning, not a refusal: 0 is a valid count, e.g. the no-Phase-I end of a sweep)
        warn(f"TwoPhase.switch_after = 0: the first phase ({_method_name(method.first)}) never runs; "
             f"use the then method ({_method_name(method.then)}) alone")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    if checkpoint is not None:  # (an empty one is not "is a directory", which Path("") would say)
        check_checkpoint_path(checkpoint, written=False)
    if checkpoint_every and checkpoint is None:
        raise ValueError(f"checkpoint_every = {checkpoint_every} needs a checkpoint path to write to")
    if checkpoint_every:  # before any outer step: the first save found it after checkpoint_every steps of work
        from pinnlab.io.atomic import check_writable_directory

        check_checkpoint_path(checkpoint)
        check_writable_directory(checkpoint)
        refuse_existing_checkpoint(checkpoint, resume=resume, overwrite=overwrite)
        _check_metadata(metadata)
    parameterization = parameterization or {}
    inner = reparameterize(problem, parameterization)
    u = {k: v.detach().clone().requires_grad_(True)
         for k, v in unconstrain({k: v.detach() for k, v in phi.items()}, parameterization).items()}
    described = {k: _described(parameterization.get(k, Identity())) for k in phi}  # (what checkpoints hold)
    make_opt = meta_optimizer or (lambda params: torch.optim.Adam(params, lr=1e-2))
    opt = make_opt(list(u.values()))
    history: dict[str, list] = {"outer_step": [], "value": [], "grad_norm": [], "seconds": [],
                                "method": [], **{f"phi/{k}": [] for k in phi}}
    theta_state = None
    method_state: dict[int, Any] = {}
    first = 0
    budget = Budget(time_budget)
    # the ranks decide together whether a step fits and whether its results are finite (only
    # when their estimators communicate: a rank that stopped alone would leave the others
    # waiting in the next all_reduce)
    shared = rank_and_world()[1] > 1 and any(getattr(m, "distributed", False) for m in methods)
    shared_budget = time_budget is not None and shared
    if resume:
        # a damaged or hand-edited checkpoint: one CheckpointError naming it, before any work
        from pinnlab.io.checkpoint import CheckpointError, check_fits, check_progress, read_checkpoint, reading

        data = read_checkpoint(checkpoint, metadata=metadata, history=history)
        fresh = {k: v.detach().clone() for k, v in u.items()}
        initial = inner.initial(fresh) if isinstance(inner, BilevelProblem) else None
        # the meta optimizer's per-leaf state (exp_avg, ...), as its first step over φ makes it
        leaves = [v.clone().requires_grad_(True) for v in fresh.values()]
        opt_template = make_opt(leaves)
        for leaf in leaves:
            leaf.grad = torch.zeros_like(leaf)
        opt_template.step()
        with reading(checkpoint):
            check_fits(checkpoint, "u", data["u"], fresh)
            saved_maps = data.get("parameterization")  # (absent in checkpoints written before it was kept)
            if saved_maps is not None and saved_maps != described:
                key = next((k for k in described if saved_maps.get(k) != described[k]), next(iter(saved_maps)))
                raise CheckpointError(f"checkpoint {str(checkpoint)!r} holds φ[{key!r}] parameterised by "
                                      f"{saved_maps.get(key)}, not by this run's {described.get(key)}: its "
                                      "values would mean other hyperparameters")
            with torch.no_grad():
                for k in u:
                    u[k].copy_(data["u"][k])
            check_fits(checkpoint, "meta_optimizer['state']", data["meta_optimizer"]["state"],
                       opt_template.state_dict()["state"])
            opt.load_state_dict(data["meta_optimizer"])
            history = data["history"]
            # the checkpoint is read onto the CPU; θ, its optimizer state and an outer
            # algorithm's iterates go to the run's device, φ's (as the estimators take it)
            device = next(iter(fresh.values())).device
            theta_state = _to_device(_restore(data["theta_state"], initial), device)
            if theta_state is not None:  # the warm start (θ, its optimizer state), built like θ_0's
                check_fits(checkpoint, "theta_state", theta_state, initial)
            # an outer algorithm's iterates, built like those it starts from (slots as in the loop)
            # (by position, as the loop's slots: TwoPhase(p, p)'s one object holds both)
            saved_slots = data["method_state"]
            starts = {s: m.init(inner, fresh) for s, m in enumerate(methods)
                      if isinstance(m, AbstractOuterAlgorithm) and str(s) in saved_slots}
            method_state = {int(k): v for k, v in _to_device(
                _restore(saved_slots, {str(s): v for s, v in starts.items()}), device).items()}
            check_fits(checkpoint, "method_state", method_state, starts)
            first = int(data["outer_step"])
            if not 0 <= first <= steps:
                raise CheckpointError(f"checkpoint {str(checkpoint)!r} is at outer step {first}, not within "
                                      f"this run's 0..{steps}")
            # (as read, on the CPU: the run's device may not give values, like "meta")
            check_progress(checkpoint, history, first, data.get("budget", {}), (data["u"], data["theta_state"]))
            # a resumed run keeps its earlier time and steps
            budget = Budget(time_budget, **data.get("budget", {}))

    def save(k_done: int):
        payload = {"u": {k: v.detach() for k, v in u.items()}, "meta_optimizer": opt.state_dict(),
                   "history": history, "theta_state": _plain(theta_state),
                   "method_state": _plain({str(k): v for k, v in method_state.items()}),
                   "outer_step": k_done, "metadata": metadata, "budget": budget.state(),
                   "parameterization": described}
        write_checkpoint_file(checkpoint, payload)

    status, message = "ok", ""
    done = saved = first  # outer steps completed, and the last one checkpointed
    committing = False
    try:
        for k in range(first, steps):
            fits = budget.allows_another()
            if not (all_agree(fits) if shared_budget else fits):
                break
            current = method.at(k) if isinstance(method, TwoPhase) else method
            t0 = time.perf_counter()
            params = {name: v.detach() for name, v in u.items()}
            diverged = ""
            if isinstance(current, AbstractOuterAlgorithm):
                # (by phase, not by object: TwoPhase(p, p) restarts p's iterates at the switch too)
                slot = 1 if isinstance(method, TwoPhase) and k >= method.switch_after else 0
                # its iterates, from the θ an estimator phase before it left, if any (kept apart
                # until the step commits, as everything else the step changes)
                new_method_state = method_state[slot] if slot in method_state else current.init(
                    inner, params, None if theta_state is None else theta_state[0])
                # disjoint inner indices per outer step (a method without inner_iters uses at most T)
                stride = max(inner.horizon, getattr(current, "inner_iters", 0))
                try:
                    grad, new_method_state, diagnostics = current.step(
                        inner, params, new_method_state, outer_step=k, start=k * stride)
                except LowerLevelDivergence as err:  # stops below like a non-finite step, with its message
                    diverged, grad, diagnostics = str(err), {}, {}
                # its θ, with the inner optimizer's fresh state, for the result and a phase after it
                new_theta = {n: v.detach() for n, v in current.iterate(new_method_state).items()}
                tensors, rebuild = tensor_leaves(inner.initial(params)[1])
                new_state = rebuild([t.detach() for t in tensors])
                # the outer objective at the iterate, as estimators record h(φ) = f(θ_T, φ) before the update
                value = None
                if not diverged:
                    with torch.no_grad():
                        value = float(inner.outer_loss(new_theta, params))
            else:
                init = theta_state if (warm_start and theta_state is not None) else None
                grads, values = [], []
                for j in range(accumulate):
                    result = current(inner, params, start=k * inner.horizon, init=init, seed=seed,
                                     outer_step=k * accumulate + j)
                    grads.append(result.grad)
                    values.append(result.value)
                grad = {n: sum(g[n] for g in grads) / accumulate for n in params}
                value = values[0]
                diagnostics = result.diagnostics
                new_theta = ({n: v.detach() for n, v in result.theta.items()}
                             if warm_start and result.theta is not None else None)
                new_state = result.state
            finite = not diverged and _finite(grad, {} if value is None else {"value": value}, new_theta or {})
            if not (all_agree(finite) if shared else finite):
                status, message = "nonfinite", f"outer step {k}: {diverged or 'non-finite hypergradient, outer value or θ'}"
                break
            # the step commits: a stop from here on is undone back to these (see below)
            previous = {n: v.detach().clone() for n, v in u.items()}
            before = (copy.deepcopy(opt.state_dict()), theta_state, dict(method_state),
                      {key: len(values) for key, values in history.items()}, budget.units)
            committing = True
            if isinstance(method, TwoPhase):
                if k == method.switch_after > 0:
                    opt.state.clear()  # Phase II starts with fresh moments (see TwoPhase)
                if k >= method.switch_after and method.then_lr is not None:
                    for group in opt.param_groups:  # (a resumed Phase II has it in the optimizer's state)
                        group["lr"] = method.then_lr
            opt.zero_grad()
            for name, leaf in u.items():
                leaf.grad = grad[name].detach().to(leaf)
            stepped = optimizer_stepped(opt)
            constrained = constrain({n: v.detach() for n, v in u.items()}, parameterization)
            if not (stepped and all(parameterization.get(n, Identity()).usable(v) for n, v in constrained.items())):
                with torch.no_grad():
                    for n, v in u.items():
                        v.copy_(previous[n])
                status, message = "nonfinite", f"outer step {k}: the step made φ non-finite (or a log value 0)"
                break
            theta_state = None if new_theta is None else (new_theta, new_state)
            if isinstance(current, AbstractOuterAlgorithm):
                method_state[slot] = new_method_state
            history["outer_step"].append(k)
            history["value"].append(math.nan if value is None else float(value))
            history["grad_norm"].append(float(flatten(grad).norm()))
            history["seconds"].append(time.perf_counter() - t0)
            history["method"].append(getattr(current, "name", type(current).__name__))
            for name, v in constrained.items():
                history[f"phi/{name}"].append(v.detach().cpu().clone())
            if callback is not None:
                callback(k, constrained, {**diagnostics, "value": history["value"][-1]})
            budget.finished_one()
            done, committing = k + 1, False
            if checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
                save(done)
                saved = done
    except STOPS:
        # Ctrl-C or SIGTERM: keep the last completed outer step, not only the last periodic
        # checkpoint; a stop while a step commits undoes that step's part first (φ, θ and
        # the history would disagree)
        if committing:
            opt_state, theta_state, kept, lengths, budget.units = before
            opt.load_state_dict(opt_state)
            with torch.no_grad():
                for n, v in u.items():
                    v.copy_(previous[n])
            method_state.clear()
            method_state.update(kept)
            for key in list(history):
                if key in lengths:
                    del history[key][lengths[key]:]
                else:
                    del history[key]
        if checkpoint is not None and checkpoint_every and done > saved:
            save(done)
        raise
    final = constrain({n: v.detach() for n, v in u.items()}, parameterization)
    theta, state = theta_state if theta_state is not None else (None, None)
    return OuterResult(phi=final, history=history, theta=theta, state=state, status=status, message=message,
                       seconds=budget.spent())
