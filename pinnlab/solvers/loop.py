"""The training loop around the pure step: evaluation, hybrid switching, checkpoints."""

from __future__ import annotations

import copy
import math
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pinnlab._checks import check_integer
from pinnlab._interrupts import STOPS
from pinnlab._malloc import release_free_memory
from pinnlab._typing import Params, tensor_leaves
from pinnlab._warnings import warn
from pinnlab.losses.hybrid import Hybrid, PlateauState, SwitchOnPlateau
from pinnlab.solvers.evaluate import Evaluation, evaluate, reference_problem, with_reference
from pinnlab.solvers.optim import AbstractOptimizer, Adam
from pinnlab.solvers.problem import PINNProblem
from pinnlab.solvers.progress import Progress, reference_values
from pinnlab.solvers.schedules import Constant, LinearDecay
from pinnlab.solvers.step import make_train_step
from pinnlab.solvers.weighting import AbstractWeighting

HISTORY_FIELDS = ("step", "loss", "rel_l2", "rel_l1", "max_err", "lr", "mix", "wall_s")


def _row_value(key: str, value) -> float | int:
    """A history row's value in column ``key``: a float, a whole step count an int (one
    that is not whole stays a float, for a resume's check to refuse)."""
    value = float(value)
    return int(value) if key == "step" and value.is_integer() else value


@dataclass
class History:
    """Evaluation rows (one per ``eval_every`` steps) and a per-step loss trace.

    Row ``loss`` is the mean training loss over the steps since the previous row. Column
    ``step`` holds ints (the completed steps at the row), the others floats.
    """

    rows: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_FIELDS})
    trace_loss: list[float] = field(default_factory=list)
    trace_mix: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    """Per-row unweighted term losses (``loss_<name>``) and weights (``weight_<name>``)."""

    def append(self, terms: Mapping[str, float] | None = None, **values: float) -> None:
        for key in HISTORY_FIELDS:
            self.rows[key].append(_row_value(key, values[key]))
        for key, value in (terms or {}).items():
            self.terms.setdefault(key, []).append(float(value))

    def lengths(self) -> tuple:
        """The length of every list, for :meth:`truncate` to undo what came after."""
        return ({k: len(v) for k, v in self.rows.items()}, len(self.trace_loss), len(self.trace_mix),
                {k: len(v) for k, v in self.terms.items()})

    def truncate(self, lengths: tuple) -> None:
        """Drop everything recorded since :meth:`lengths` gave ``lengths`` (a row
        appended in part too, and term columns that did not exist then)."""
        rows, trace_loss, trace_mix, terms = lengths
        for key, n in rows.items():
            del self.rows[key][n:]
        del self.trace_loss[trace_loss:], self.trace_mix[trace_mix:]
        for key in list(self.terms):
            if key in terms:
                del self.terms[key][terms[key]:]
            else:
                del self.terms[key]

    def last_terms(self) -> dict[str, float]:
        """Each term column's value at the latest row (empty before the first)."""
        return {key: values[-1] for key, values in self.terms.items() if values}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64)
               for k, v in self.rows.items()}
        out["trace_loss"] = np.asarray(self.trace_loss, dtype=np.float64)
        out["trace_mix"] = np.asarray(self.trace_mix, dtype=np.float64)
        for key, values in self.terms.items():
            out[f"terms/{key}"] = np.asarray(values, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> History:
        history = cls()
        for key in HISTORY_FIELDS:
            history.rows[key] = [_row_value(key, v) for v in arrays[key]]
        history.trace_loss = [float(v) for v in arrays["trace_loss"]]
        history.trace_mix = [float(v) for v in arrays["trace_mix"]]
        for key, values in arrays.items():
            if key.startswith("terms/"):
                history.terms[key[len("terms/"):]] = [float(v) for v in values]
        return history


@dataclass
class TrainState:
    """Everything needed to continue training exactly (see ``train(state=...)``).

    The random streams are keyed by (seed, step), so no RNG state is needed beyond
    ``step``, the number of completed steps.
    """

    params: Params
    opt_state: Any
    step: int = 0
    history: History = field(default_factory=History)
    plateau: PlateauState | None = None
    train_seconds: float = 0.0
    timed_steps: int = 0
    wall_s: float = 0.0
    window_loss: list[float] = field(default_factory=list)
    weighting: dict[str, Any] | None = None

    def copy(self) -> TrainState:
        """A state that later steps of the loop do not change: its own history, loss
        window, plateau and weighting state; the parameter and optimizer tensors are
        shared (the pure step replaces them, it never writes into them)."""
        return replace(self, history=copy.deepcopy(self.history), window_loss=list(self.window_loss),
                       plateau=copy.deepcopy(self.plateau), weighting=copy.deepcopy(self.weighting))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``status`` is ``"ok"``, ``"nonfinite"`` (``message`` then says at which step the
    loss, the updated parameters or optimizer state, a loss term the weighting or the
    plateau switch reads, or the loss weights became NaN/Inf;
    ``params`` and ``state`` are those after the last step that kept all of them finite)
    or ``"invalid_reference"`` (the training ran, but the test set's u* is not finite or
    is 0 everywhere in the run's dtype, so the relative errors are NaN; ``message`` says
    why). A nonfinite run with such a reference stays ``"nonfinite"``, its message
    saying both.
    """

    params: Params
    history: History
    final: Evaluation
    state: TrainState
    test_inputs: Tensor
    test_exact: Tensor
    status: str = "ok"
    message: str = ""
    stats: dict[str, float | int] = field(default_factory=dict)  # (counts as int)

    @property
    def best_rel_l2(self) -> float:
        values = self.history.rows["rel_l2"]
        return min(values) if values else self.final.rel_l2


def _term_columns(metrics, names, weights) -> dict[str, float]:
    """Unweighted loss and weight of every term (only when there is more than one)."""
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        out[f"loss_{name}"] = float(metrics[f"loss_{name}"])
        out[f"weight_{name}"] = float(weights.get(name, 1.0))
    return out


def _read_scalars(*scalars: Tensor) -> list[float]:
    """Scalar tensors as Python floats with one device synchronisation (exact: all are
    cast to the widest of their dtypes)."""
    dtype = scalars[0].dtype
    for v in scalars[1:]:
        dtype = torch.promote_types(dtype, v.dtype)
    return torch.stack([v.detach().reshape(()).to(dtype) for v in scalars]).tolist()


def all_finite(loss: Tensor, params: Params, opt_state: Any) -> Tensor:
    """A 0-dim bool tensor (no device read): loss, parameters and the optimizer state's
    floating tensors all finite."""
    tensors = [loss, *params.values()]
    tensors += [t for t in tensor_leaves(opt_state)[0] if t.is_floating_point()]
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def _weights_finite(state: Mapping[str, Any] | None) -> bool:
    return state is None or all(math.isfinite(w) for w in state["weights"].values())


def _weighting_fits(saved: Any, fresh: dict[str, Any], names: list[str]) -> bool:
    """A resumed weighting state has the entries of ``fresh``, the initial one, and each
    per-term entry (a dictionary) holds every term or the keys it starts with (ReLoBRaLo's
    reference losses are empty until its first update); else the weights of a missing
    term would silently stay at their fixed value, or an unknown term fail an update."""
    return isinstance(saved, dict) and set(saved) == set(fresh) and all(
        not isinstance(v, dict) or isinstance(saved[k], dict) and set(saved[k]) in (set(names), set(v))
        for k, v in fresh.items())


def resolve_device(device: str | torch.device | None, setting: str = "trainer.device") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given. A refusal names
    the value as written and the ``setting`` it comes from (a config's ``trainer.device``;
    :func:`train` passes its argument's name, ``device``): a user who asked for ``cuda:1``
    reads of ``cuda:1``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    written = str(device)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):  # ('gpu': torch's list of 20 device types)
        raise ValueError(f"{setting} = {written!r}: not a device ('auto', 'cpu', 'cuda', 'cuda:1', ...)"
                         ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{setting} = {written!r}: CUDA is not available; use 'auto' or 'cpu'")
    return device


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or this process's peak RSS on the CPU, in MB, since
    the process started or the last :func:`reset_peak_memory`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux: the high-water mark reset_peak_memory resets (getrusage keeps exited threads' peaks)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start :func:`peak_memory_mb` afresh from the current use: CUDA's peak-allocation
    counter, or on Linux this process's RSS high-water mark (``/proc/self/clear_refs``);
    elsewhere the process's peak since it started stays. For several runs in one process
    (a training study's cells), so that each reports its own peak."""
    if device.type == "cuda":
        # before CUDA is initialised (a fresh study worker) there is no peak to reset, and
        # torch refuses an explicit cuda:N there ("Invalid device argument")
        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats(device)
        return
    release_free_memory()  # (what configure_malloc keeps for reuse is no part of the next peak)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def train(
    problem: PINNProblem,
    *,
    steps: int,
    optimizer: AbstractOptimizer | None = None,
    schedule: Callable[[int], float] | None = None,
    seed: int = 0,
    hyperparams: Mapping[str, Any] | None = None,
    eval_every: int = 500,
    test_points: int = 2000,
    eval_samples: int | None = None,
    test_set: tuple[Tensor, Tensor] | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype = torch.float32,
    state: TrainState | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    progress: str = "auto",
    log_every: int = 100,
    weighting: AbstractWeighting | None = None,
    description: str = "train",
) -> TrainResult:
    """Train ``problem`` for ``steps`` steps with fresh collocation points every step.

    Loops the pure step of :func:`~pinnlab.solvers.make_train_step`, evaluates the
    *smoothed* model (its own ``eval_samples``, no autograd, chunked) every
    ``eval_every`` steps and at the end on a fixed test set drawn from the problem
    seed, switches hybrid losses, stops as soon as a step gives a non-finite loss,
    parameters, optimizer state, loss weights or a loss term the weighting or the
    plateau switch reads (checked before the step is kept, in
    the step's single device read) keeping the last finite state, ends with status
    ``"invalid_reference"`` when the test set's u* is not finite or is 0 everywhere (its
    relative errors are NaN), and hands a :class:`TrainState` to ``on_checkpoint`` every
    ``checkpoint_every`` steps: a snapshot that the steps after it leave as it is.
    Passing that state back as ``state`` continues the run and gives bit-identical
    results on the same machine; the state passed in is not changed either (the run
    continues from a copy, ``TrainResult.state``).

    Args:
        problem: equation, net, estimator, loss, batch size.
        steps: total number of steps (including those already in ``state``).
        optimizer: functional optimizer (default Adam, lr 1e-3).
        schedule: step ↦ learning-rate factor (default constant); a
            :class:`~pinnlab.solvers.LinearDecay` shorter than ``steps`` is refused
            (its factor is 0 past its end).
        seed: the training seed (collocation, noise, evaluation noise).
        hyperparams: fixed hyperparameters of the step (lr, sigma, mix, weights, ...).
        eval_every: steps between evaluations.
        test_points: size of the test set, >= 1 (ignored with ``test_set``).
        eval_samples: K for evaluating u_σ (default: the estimator's K).
        test_set: explicit `(x, u*)`, `(N, D)` and `(N,)`, instead of the equation's
            seeded test set.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``torch.float32`` or ``torch.float64``.
        state: resume from this state; one whose step is beyond ``steps``, whose
            parameters, optimizer state or weighting state are not built like a
            fresh run's, or whose history does not fit its step, raises :class:`~pinnlab.io.CheckpointError` (a ValueError).
        checkpoint_every: steps between ``on_checkpoint`` calls (0: never).
        on_checkpoint: receives the state after every ``checkpoint_every`` steps, and
            (with ``checkpoint_every`` > 0) the state of the last completed step when the
            run is stopped from outside (Ctrl-C, or SIGTERM under the ``pinnlab``
            command), before the exception goes on.
        progress: ``"auto"``, ``"bar"``, ``"log"`` or ``"off"``.
        log_every: steps between plain log lines.
        weighting: adaptive loss-term weights (:class:`~pinnlab.solvers.LRA`,
            :class:`~pinnlab.solvers.ReLoBRaLo`); they start from ``hyperparams["weights"]``
            (1 for a term not in it) and then replace them. Their updates count in
            ``steps_per_second``.
        description: what the progress display calls the run (a study's cell).
    """
    check_integer("steps", steps)
    if next(problem.net.parameters(), None) is None:  # (a bare StopIteration at the first step)
        raise ValueError("the problem's net has no parameters to train")
    check_integer("eval_every", eval_every)
    check_integer("checkpoint_every", checkpoint_every, minimum=0)
    check_integer("log_every", log_every)
    if eval_samples is not None:  # (else "num_samples must be ..." from the estimator)
        check_integer("eval_samples", eval_samples)
        if not hasattr(problem.estimator, "num_samples"):  # (taken and ignored: no K, no smoothing)
            raise ValueError(f"eval_samples = {eval_samples}: {type(problem.estimator).__name__} evaluates u "
                             "without samples; drop it")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    for name, value, ok, what in (  # names or wrong objects failed later as attribute or call errors
            ("schedule", schedule, schedule is None or callable(schedule), "a function of the step (Constant(), "
                                                                          "LinearDecay(T), ...)"),
            ("weighting", weighting, weighting is None or isinstance(weighting, AbstractWeighting),
             "LRA() or ReLoBRaLo()"),
            ("state", state, state is None or isinstance(state, TrainState), "a TrainState (a checkpoint's)"),
            ("on_checkpoint", on_checkpoint, on_checkpoint is None or callable(on_checkpoint),
             "a function of the TrainState")):
        if not ok:
            raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}"[:300])
    if test_set is not None and not (isinstance(test_set, (tuple, list)) and len(test_set) == 2
                                     and all(isinstance(t, Tensor) for t in test_set)):
        raise TypeError("test_set must be a pair of torch tensors (x (N, D), u* (N,)), got "
                        + (", ".join(type(t).__name__ for t in test_set) if isinstance(test_set, (tuple, list))
                           else type(test_set).__name__) + " (torch.as_tensor converts an array)")
    if isinstance(schedule, LinearDecay) and steps > schedule.total_steps:  # (its factor is 0 from there on)
        raise ValueError(f"steps = {steps} exceeds the schedule's LinearDecay(total_steps={schedule.total_steps}): "
                         f"steps {schedule.total_steps} on would train at learning rate 0; use "
                         f"LinearDecay({steps}) or fewer steps")
    device = resolve_device(device, "device")  # (train's argument, not a config's trainer.device)
    optimizer = optimizer or Adam()
    schedule = schedule or Constant()
    hyperparams = dict(hyperparams or {})
    step_fn = make_train_step(problem, optimizer, seed=seed, schedule=schedule)

    if test_set is None:
        check_integer("test_points", test_points)
        x_test = problem.equation.test_set(test_points, device=device, dtype=dtype)
        # u* in float64 block by block: exact(x_test.double()) copied the whole test set to
        # float64 and made the closed form's temporaries for all of it (16 GB at d = 10⁵)
        try:
            u_float64 = reference_values(problem.equation, x_test, progress)
        except NotImplementedError as err:  # (the user's bare exception, from deep in train)
            raise NotImplementedError(f"{problem.equation.name} has no exact solution for the test set ({err}); "
                                      "pass test_set=(x, u*) with reference values") from err
        u_test = u_float64.to(dtype)
    else:
        x_test, u_test = (t.to(device=device, dtype=dtype) for t in test_set)
        # an (N, 1) u* would broadcast against the (N,) prediction into wrong errors
        problem.equation._check_points(x_test)
        if x_test.shape[0] == 0 or not bool(torch.isfinite(x_test).all()):  # no error to measure
            raise ValueError(f"test_set: the points must be finite, at least one, got {x_test.shape[0]} points"
                             + ("" if x_test.shape[0] == 0 else
                                f", {int((~torch.isfinite(x_test)).any(dim=1).sum())} of them not finite"))
        if u_test.shape != (x_test.shape[0],):
            raise ValueError(f"test_set: the exact values must have shape ({x_test.shape[0]},), one per point, "
                             f"got {tuple(u_test.shape)}")
    # relative errors against a u* that overflowed or underflowed are undefined (NaN in
    # every evaluation): the residual loss does not need u*, so the run trains, but it
    # cannot end "ok"
    reference = reference_problem(u_test)
    if reference and test_set is None and dtype == torch.float32 and not reference_problem(u_float64):
        reference += "; float64 holds it (trainer.dtype: float64)"

    params = problem.init_params(device=device, dtype=dtype)
    resumed = state is not None and state.step > 0
    if state is None:
        state = TrainState(params=params, opt_state=optimizer.init(params))
    else:  # refuse a state of another run here, not with a traceback at its first step
        from pinnlab.io.checkpoint import CheckpointError, check_fits, check_history

        if not 0 <= state.step <= steps:
            raise CheckpointError(f"the state is at step {state.step}, not within this run's 0..{steps}")
        check_history(None, state.step, state.history, state.window_loss)
        check_fits(None, "params", state.params, params)
        check_fits(None, "opt_state", state.opt_state, optimizer.init(params))
        state = state.copy()
    loss_fn = problem.loss
    plateau_switch = (
        loss_fn.switch
        if isinstance(loss_fn, Hybrid) and isinstance(loss_fn.switch, SwitchOnPlateau)
        else None
    )
    if isinstance(loss_fn, Hybrid) and "mix" not in hyperparams and not loss_fn.switch.starts_within(steps):
        warn(f"the hybrid loss's {loss_fn.switch} gives its unbiased loss no weight within the run's "
             f"{steps} steps: it trains {type(loss_fn.first).__name__} only")
    if plateau_switch is not None and state.plateau is None:
        state.plateau = plateau_switch.init()

    term_names = ["residual"] + [t.name for t in problem.extra_terms]
    if weighting is not None:
        weighting.validate(term_names)
        fresh = weighting.init(term_names, hyperparams.get("weights"))
        if state.weighting is None and resumed:  # (it resumed with fresh weights, as the docstring says it refuses)
            from pinnlab.io.checkpoint import CheckpointError

            raise CheckpointError(f"the state holds no loss weighting, and this run has one "
                                  f"({type(weighting).__name__}): it is of another run")
        if state.weighting is None:
            state.weighting = fresh
        elif not _weighting_fits(state.weighting, fresh, term_names):
            from pinnlab.io.checkpoint import CheckpointError

            raise CheckpointError(f"the state's weighting does not fit this run's {type(weighting).__name__} "
                                  f"over the terms {', '.join(term_names)}: {str(state.weighting)[:200]}")
    elif state.weighting is not None:  # (a KeyError at the first step's finiteness check)
        from pinnlab.io.checkpoint import CheckpointError

        raise CheckpointError(f"the state holds a loss weighting, and this run has none (loss.weighting: none): "
                              f"{str(state.weighting)[:200]}")

    def gradient_norms(params: Params, step: int, hp: Mapping[str, Any]):
        def compute():
            # one forward of the terms, one backward per term, the step's chunks and
            # noise streams; a single device read for all the statistics
            grads = step_fn.term_gradients(params, hp, step)
            stats = []
            for name in term_names:
                flat = torch.cat([g.abs().flatten() for g in grads[name].values()])
                stats += [flat.max(), flat.mean()]
            values = torch.stack(stats).tolist()
            return {name: (values[2 * i], values[2 * i + 1]) for i, name in enumerate(term_names)}
        return compute

    def mix_at(step: int):
        if "mix" in hyperparams or not isinstance(loss_fn, Hybrid):
            return hyperparams.get("mix")
        if plateau_switch is not None:
            return plateau_switch.mix(step, state.plateau)
        return loss_fn.switch.mix(step)

    def run_eval(params: Params, step_done: int) -> Evaluation:
        return evaluate(
            problem, params, x_test, u_test, num_samples=eval_samples, seed=seed,
            step=step_done, sigma=hyperparams.get("sigma"),
        )

    bar = Progress(steps, initial=state.step, mode=progress, log_every=log_every, description=description)
    status, message = "ok", ""
    last_eval: Evaluation | None = None
    last_rel = state.history.rows["rel_l2"][-1] if state.history.rows["rel_l2"] else None
    run_start = time.perf_counter()
    first_step = state.step  # untimed: it pays this process's one-off costs (a resume's too)
    first_elapsed = 0.0  # its time, the only one there is when nothing else was timed
    wall_before = state.wall_s
    saved_step = state.step  # the step of the last state handed to on_checkpoint (or resumed from)
    committing = False  # True while the state holds parts of two steps
    try:
        while state.step < steps:
            step = state.step
            mix = mix_at(step)
            hp = hyperparams if mix is None else {**hyperparams, "mix": mix}
            if weighting is not None:
                hp = {**hp, "weights": {**hp.get("weights", {}), **weighting.weights(state.weighting)}}
            t0 = time.perf_counter()
            params, opt_state, metrics = step_fn(state.params, state.opt_state, hp, step)
            loss_keys = weighting.loss_keys(term_names, metrics) if weighting is not None else {}
            plateau_key = ("loss_biased" if plateau_switch is not None and "loss_biased" in metrics
                           else None)
            # the step's only device read: the loss, whether the loss, parameters and
            # optimizer state are all finite, the weighting's term values and the plateau
            # metric
            loss, state_finite, *values = _read_scalars(
                metrics["loss"], all_finite(metrics["loss"], params, opt_state),
                *(metrics[key] for key in loss_keys.values()),
                *((metrics[plateau_key],) if plateau_key else ()),
            )
            finite = state_finite == 1.0 and all(math.isfinite(v) for v in values)
            new_weighting = state.weighting
            if finite and weighting is not None:
                new_weighting = weighting.update(
                    state.weighting, step, dict(zip(loss_keys, values)),
                    gradient_norms(params, step, hp), seed,
                )
            elapsed = time.perf_counter() - t0
            if not finite or not _weights_finite(new_weighting):
                status = "nonfinite"
                if not math.isfinite(loss):
                    # steps counted from 1 in the message, as the progress lines and steps_done count
                    cause = f"training loss became {loss} at step {step + 1}"
                elif state_finite != 1.0:
                    cause = (f"the update at step {step + 1} gave non-finite parameters or optimizer "
                             f"state (loss {loss:.6g}; the gradient overflowed)")
                elif not finite:
                    read = [*loss_keys.values(), *((plateau_key,) if plateau_key else ())]
                    bad = ", ".join(sorted({k for k, v in zip(read, values) if not math.isfinite(v)}))
                    cause = f"the loss term {bad} became non-finite at step {step + 1} (loss {loss:.6g})"
                else:
                    cause = f"the loss weights became non-finite at step {step + 1}"
                kept = f"the state after step {step}" if step else "the initial state"
                message = (
                    f"{cause}; stopped and kept {kept}. Try a smaller learning rate, a "
                    "larger sigma or more samples."
                )
                break
            # evaluated before the state changes: a stop from outside during the evaluation
            # leaves the state of the previous step whole
            evaluation = run_eval(params, step + 1) if (step + 1) % eval_every == 0 or step + 1 == steps else None
            # the step commits; a stop from here on is undone back to these (see below)
            before, lengths = replace(state), (state.history.lengths(), len(state.window_loss))
            committing = True
            if step > first_step:
                state.train_seconds += elapsed
                state.timed_steps += 1
            else:
                first_elapsed = elapsed
            state.params, state.opt_state = params, opt_state
            state.weighting = new_weighting
            state.step = step + 1
            state.history.trace_loss.append(loss)
            state.history.trace_mix.append(float(mix) if mix is not None else 0.0)
            state.window_loss.append(loss)
            if plateau_key is not None:
                switched = state.plateau.switched_at  # (not `before`: the undo below needs that one)
                state.plateau = plateau_switch.observe(state.plateau, step, values[-1])
                if switched is None and state.plateau.switched_at is not None:
                    bar.note(f"{bar.description}: the biased loss reached a plateau; switch to the unbiased loss "
                             f"after step {state.plateau.switched_at}")
            if evaluation is not None:
                last_eval = evaluation
                last_rel = last_eval.rel_l2
                state.wall_s = wall_before + time.perf_counter() - run_start
                state.history.append(
                    step=state.step,
                    loss=float(np.mean(state.window_loss)),
                    rel_l2=last_eval.rel_l2,
                    rel_l1=last_eval.rel_l1,
                    max_err=last_eval.max_err,
                    lr=float(metrics["lr"]),
                    mix=float(mix) if mix is not None else 0.0,
                    wall_s=state.wall_s,
                    terms=_term_columns(metrics, term_names, hp.get("weights", {})),
                )
                state.window_loss = []
            state.wall_s = wall_before + time.perf_counter() - run_start
            committing = False
            if checkpoint_every and on_checkpoint and state.step % checkpoint_every == 0 \
                    and state.step < steps:
                on_checkpoint(state.copy())
                saved_step = state.step
            bar.update(step, loss, last_rel, state.history.last_terms())
    except STOPS:
        # Ctrl-C or SIGTERM: keep the last completed step, not only the last periodic
        # checkpoint; a stop while a step was being recorded undoes that step's part first
        if committing:
            state.history.truncate(lengths[0])
            del before.window_loss[lengths[1]:]
            for name in ("params", "opt_state", "step", "plateau", "train_seconds", "timed_steps",
                         "wall_s", "window_loss", "weighting"):
                setattr(state, name, getattr(before, name))
        if checkpoint_every and on_checkpoint and saved_step < state.step < steps:
            on_checkpoint(state.copy())
        raise
    finally:
        bar.close()
    if last_eval is None or status != "ok":
        last_eval = run_eval(state.params, state.step)
    status, message = with_reference(status, message, reference)
    stats = {
        # a run whose only step was the untimed first one (one step, or one left on resume)
        # reports that step's rate rather than 0 ("not measured" to the training study)
        "steps_per_second": (state.timed_steps / state.train_seconds if state.train_seconds
                             else 1.0 / first_elapsed if first_elapsed else 0.0),
        "wall_s": state.wall_s,
        "steps_done": int(state.step),
        "peak_mem_mb": peak_memory_mb(device),  # so far: the result file measures it again after its slice
    }
    if state.plateau is not None and state.plateau.switched_at is not None:
        stats["switch_step"] = int(state.plateau.switched_at)
    return TrainResult(
        params=state.params, history=state.history, final=last_eval, state=state,
        test_inputs=x_test, test_exact=u_test, status=status, message=message, stats=stats,
    )
