"""Run a tuning method (bilevel or baseline), then the final solve with the tuned values."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from pinnlab.bilevel import (
    METHODS,
    AbstractHypergradient,
    BlackBox,
    TruncatedReverseUnroll,
    TwoPhase,
    make_method,
    optimize,
)
from pinnlab.bilevel.driver import refuse_existing_checkpoint
from pinnlab.config import ConfigError, describe_value, hybrid_never_switches
from pinnlab.losses import Hybrid, Piecewise
from pinnlab.solvers import TrainResult, TrainState, train
from pinnlab.tuning.search import joint_fit, search, trial_steps
from pinnlab.tuning.setup import COLLOCATION, TuningSetup
from pinnlab.tuning.spec import SEARCH_METHODS


@dataclass
class TuneOutcome:
    """Tuned φ (constrained values) and the history of the tuning run.

    ``history`` has ``outer_step``, ``value`` (the outer objective at each outer step or
    trial), ``grad_norm`` (the hypergradient's norm; NaN for searches and joint fitting),
    ``seconds``, ``method`` (the estimator's name, ``"trial"`` or ``"joint"``) and
    ``phi/<name>`` (φ after each step); for search baselines ``phi`` is the best trial's
    φ and ``extra["best_trial"]`` its index.
    """

    phi: dict[str, Tensor]
    history: dict[str, list]
    method: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    trained: tuple[dict[str, Tensor], Any] | None = None
    """(θ, optimizer state) the tuning ended with (for ``final_init: continue``)."""
    status: str = "ok"
    """``"ok"`` or ``"nonfinite"``: a hypergradient method's outer loop (or joint fitting)
    stopped early at the last finite φ, or a search ran every trial and none ended finite
    (φ is then trial 0's)."""
    message: str = ""
    """Why a tuning stopped early: the non-finite value, or with status ``"ok"`` that
    ``tune.budget_seconds`` ended it before ``outer_steps``."""

    def mix_schedule(self, start: float) -> tuple[float, ...] | None:
        """The mix the tuning's inner steps followed, one value per outer step (a learned
        schedule): ``start`` (φ_0), then the value after each update but the last, for
        hypergradient methods; the chosen constant for search baselines; ``None`` when
        the mix was not tuned."""
        if "mix" not in self.phi:
            return None
        if self.method in SEARCH_METHODS:
            return (float(self.phi["mix"]),)
        return (float(start), *(float(v) for v in self.history["phi/mix"][:-1]))


ZO_DEFAULT_MU = 0.05
"""zo_fg2u's finite-difference step in unconstrained φ (log or logit space) when the
config gives none: the library default 1e-3 is below what float32 training resolves."""


def make_hypergradient_method(name: str, options: dict, where: str = "tune", size: int | None = None):
    """Method ``name`` built with ``options``; a bad option is reported under the config
    section ``where`` (``tune``, or ``tune.then`` for the second phase).

    With ``size`` (N, the number of tuned values) fg2u takes at most N directions: more
    cost more than exact forward-mode unrolling (fgu, N directions, no variance), so a
    num_directions above N is refused; a num_directions not given is then the library's
    default for that N, spelt out (fg2u: min(8, N); zo_fg2u: 8, or 1 where every
    direction gives the same estimate). Without ``size`` it stays ``None`` and the method
    decides from φ at each estimate."""
    if name == "zo_fg2u":
        options = {"mu": ZO_DEFAULT_MU, **options}
    if name == "fg2u" and size is not None and isinstance(options.get("num_directions"), int) \
            and options["num_directions"] > size:
        raise ConfigError(f"{where}.options.num_directions = {options['num_directions']}: more directions than "
                          f"the N = {size} tuned values; exact forward-mode unrolling ({where}.method: fgu) "
                          f"costs N directions and has no variance, so use num_directions <= {size} or fgu")
    try:
        method = make_method(name, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}.options: {where}.method = {name!r}: {err}") from None
    if size is not None and hasattr(method, "directions_for") and method.num_directions is None:
        method = dataclasses.replace(method, num_directions=method.directions_for(size))
    return method


def tuned_size(setup: TuningSetup) -> int:
    """N: the number of tuned values (a per-coordinate σ or μ counts d)."""
    return sum(t.init.numel() for t in setup.tunables.values())


def check_method(setup: TuningSetup) -> None:
    """Refuse method/tunable/objective combinations that cannot work, and options the
    method would ignore (before any work)."""
    tune = setup.config.tune
    allowed = (*METHODS, *SEARCH_METHODS)
    phases = [tune.method] + ([tune.then.method] if tune.then else [])
    for key, name in zip(("tune.method", "tune.then.method"), phases):
        if name not in allowed:
            raise ConfigError(f"{key} = {describe_value(name)}: unknown method (allowed: {', '.join(allowed)})")
    if tune.outer_optimizer == "sgd" and "outer_betas" in tune.model_fields_set:
        raise ConfigError("tune.outer_betas: β belongs to outer_optimizer: adam; SGD has none (drop outer_betas "
                          "or use adam)")
    outer_algorithms = [n for n in phases if n in ("penalty", "f2sa")]
    if outer_algorithms and tune.accumulate != 1:
        raise ConfigError(f"tune.accumulate = {tune.accumulate}: {outer_algorithms[0]} takes its own outer steps "
                          "and has no hypergradient estimates to accumulate; use accumulate: 1")
    if tune.then is not None and (tune.method not in METHODS or tune.then.method not in METHODS):
        bad = tune.method if tune.method not in METHODS else tune.then.method
        raise ConfigError(f"tune.then: a two-phase schedule needs hypergradient methods, not {bad!r}")
    if tune.then is not None and tune.then.after >= tune.outer_steps:
        raise ConfigError(f"tune.then.after = {tune.then.after}: the second phase would start after the last of "
                          f"tune.outer_steps = {tune.outer_steps} outer steps and never run; use an after "
                          "below outer_steps")
    data = setup.config.sections.get("data")
    if data is not None and not data.train and tune.objective.kind != "data":  # (read, then ignored)
        raise ConfigError(f"data: the observations have no effect on this tuning (a {tune.objective.kind} objective "
                          "reads none; they enter tune.objective.kind: data, or training with data.train: true); "
                          "set one or remove data:")
    if setup.config.loss.weighting != "none":
        raise ConfigError(f"loss.weighting = {setup.config.loss.weighting!r}: the tuning's inner training has no "
                          "loss weighting, so the final solve would train differently from what was tuned; "
                          "tune weights.<term> instead, or compare with `pinnlab solve` and loss.weighting")
    names = list(setup.tunables)
    if tune.method in ("random", "optuna") and any(n.startswith(COLLOCATION) for n in names):
        raise ConfigError(f"tune.method = {tune.method!r}: cannot search over the {COLLOCATION} network's "
                          "parameters; use a hypergradient method such as fg2u")
    if tune.method == "joint":
        bad = [n for n in names if not n.startswith("coefficients.")]
        if bad:
            raise ConfigError(
                f"tune.method = 'joint': fits only PDE coefficients together with θ on residual + data loss; "
                f"{bad[0]} cannot be fitted by the training loss itself"
            )
        if tune.objective.kind != "data":
            raise ConfigError("tune.method = 'joint': needs tune.objective.kind: data (the data term it fits)")
    if tune.inner == "deepxde":
        for key, name in zip(("tune.method", "tune.then.method"), phases):
            if name not in ("zo_fg2u", "random", "optuna"):
                raise ConfigError(f"{key} = {name!r}: DeepXDE training is a black box; use zo_fg2u, "
                                  "random or optuna")
        if tune.objective.kind != "data":
            raise ConfigError("tune.inner: deepxde needs tune.objective.kind: data")
        if tune.final_init == "continue":
            raise ConfigError("tune.final_init = 'continue': not available for DeepXDE training")
    backend = setup.config.trainer.backend
    if (tune.inner == "deepxde") != (backend == "deepxde"):  # one trainer for tuning and final solve
        raise ConfigError(f"tune.inner = {tune.inner!r} with trainer.backend = {backend!r}: the tuning's inner "
                          "training and the final solve use one trainer; set both to deepxde or both to pinnlab")
    loss = setup.config.loss
    final_steps = tune.final_steps or setup.config.trainer.steps
    late = None if "mix" in names else hybrid_never_switches(loss, final_steps, "tune.final_steps")
    if late:  # the final solve's steps
        raise ConfigError(late)
    if tune.final_init == "continue" and tune.method in METHODS and not tune.warm_start:
        raise ConfigError("tune.final_init = 'continue': needs tune.warm_start: true (there is no trained θ to "
                          "continue from otherwise)")
    sections = [("tune", tune.method, tune.options)]
    if tune.then is not None:
        sections.append(("tune.then", tune.then.method, tune.then.options))
    varying, unrolling = [], []
    for where, name, options in sections:
        if name in METHODS:
            built = make_hypergradient_method(name, options, where, tuned_size(setup))
            varying.append(built.varies(tuned_size(setup)))
            unrolling.append(isinstance(built, AbstractHypergradient))  # (penalty, F²SA: their own iterates)
            if "lr" in names and not built.sees_the_update:  # (lr stayed at its start, status ok)
                raise ConfigError(f"tune.tunables.lr: {where}.method = {name!r} differentiates the inner loss, "
                                  "which the learning rate does not enter, so its hypergradient is 0; tune lr with "
                                  "a method that unrolls the inner steps (fg2u, fgu, rgu, trgu, zo_fg2u) or a search")
            if isinstance(built, TruncatedReverseUnroll) and (built.steps or 0) > tune.horizon:
                raise ConfigError(f"{where}.options.steps = {built.steps}: trgu differentiates the last steps of the "
                                  f"tune.horizon = {tune.horizon} inner steps, so steps must be <= {tune.horizon} "
                                  "(steps = horizon is full rgu)")
        elif options:  # the search baselines and joint fitting have no constructor to take them
            raise ConfigError(f"{where}.options: {where}.method = {name!r} takes no options (they are a "
                              f"hypergradient method's constructor arguments), so {', '.join(map(str, options))} "
                              f"would be ignored; remove them ({where}.options={{}})")
    explicit = tune.model_fields_set
    if "warm_start" in explicit and unrolling and (not any(unrolling) or tune.inner == "deepxde"):
        raise ConfigError("tune.warm_start: has no effect here (penalty and f2sa keep their own lower-level "
                          "iterates, and DeepXDE's black-box training starts afresh at every evaluation); remove it")
    if tune.accumulate > 1 and varying and not any(varying):  # (N times the cost, the same outer step)
        raise ConfigError(f"tune.accumulate = {tune.accumulate}: tune.method = {tune.method!r}"
                          + (f" and tune.then.method = {tune.then.method!r} give" if tune.then else " gives")
                          + f" the same estimate at a given φ every time (no random directions for the "
                          f"N = {tuned_size(setup)} tuned values), so all {tune.accumulate} would be equal; use "
                          "accumulate: 1")


def _deepxde_settings(setup: TuningSetup, phi) -> tuple[float, list[float] | None]:
    config = setup.config
    from pinnlab.config import deepxde_loss_weights

    lr = float(phi.get("lr", config.trainer.lr))
    tuned = {key.partition(".")[2]: value for key, value in phi.items() if key.startswith("weights.")}
    return lr, deepxde_loss_weights(config, setup.problem.equation, tuned)


def _deepxde_black_box(setup: TuningSetup, steps: int | None = None) -> BlackBox:
    """h(φ) = mean squared misfit at the observations (the ``data`` objective, as with
    pinnlab's inner training) after ``steps`` (default ``horizon``) steps of DeepXDE
    training with loss weights and learning rate from φ."""
    from pinnlab.config import solve_config_with_deepxde

    steps = steps or setup.config.tune.horizon

    def objective(phi):
        lr, weights = _deepxde_settings(setup, phi)
        result = solve_config_with_deepxde(setup.config, setup.problem.equation, steps=steps,
                                           lr=lr, loss_weights=weights, test_set=setup.observations)
        return float(((result.final.prediction - result.test_exact) ** 2).mean())

    return BlackBox(objective, horizon=steps)


def run_tuning(setup: TuningSetup, *, checkpoint: Path | None = None, resume: bool = False,
               progress=None, metadata: dict | None = None, save: bool = True,
               overwrite: bool = False) -> TuneOutcome:
    """Tune φ with ``tune.method``; checkpoints after every ``checkpoint_every`` steps
    (``save=False``: read ``checkpoint`` on resume but never write it, as on ranks > 0;
    an existing ``checkpoint`` is resumed or, with ``overwrite``, replaced, never replaced
    by a fresh run without it)."""
    tune = setup.config.tune
    if checkpoint is not None and save:  # (for every method: a search's first save replaced it too)
        refuse_existing_checkpoint(checkpoint, resume=resume, overwrite=overwrite)
    if tune.method in ("random", "optuna"):
        score = None
        if tune.inner == "deepxde":  # each trial is a DeepXDE training, scored like zo_fg2u's black box
            box = _deepxde_black_box(setup, trial_steps(setup))

            def score(phi):
                value = float(box.objective(phi))
                return value if math.isfinite(value) else math.inf

        outcome = search(setup, sampler=tune.method, checkpoint=checkpoint, resume=resume,
                         progress=progress, metadata=metadata, save=save, score=score)
    elif tune.method == "joint":
        outcome = joint_fit(setup, progress=progress)
    else:
        method: Any = make_hypergradient_method(tune.method, tune.options, size=tuned_size(setup))
        if tune.then is not None:
            method = TwoPhase(method, make_hypergradient_method(tune.then.method, tune.then.options, "tune.then",
                                                               tuned_size(setup)),
                              tune.then.after, then_lr=tune.then.outer_lr)
        problem = _deepxde_black_box(setup) if tune.inner == "deepxde" else setup.bilevel

        def callback(k, phi, diagnostics):
            if progress is not None:
                progress(k, phi, diagnostics)

        result = optimize(
            problem, setup.phi0, method, steps=tune.outer_steps, meta_optimizer=tune.outer_optimizer_for,
            parameterization=setup.parameterization, warm_start=tune.warm_start,
            accumulate=tune.accumulate, seed=tune.seed, checkpoint=checkpoint,
            checkpoint_every=tune.checkpoint_every if checkpoint is not None and save else 0, resume=resume,
            callback=callback, time_budget=tune.budget_seconds, metadata=metadata, overwrite=overwrite,
        )
        trained = (result.theta, result.state) if result.theta is not None else None
        outcome = TuneOutcome(result.phi, result.history, tune.method, result.seconds, trained=trained,
                              status=result.status, message=result.message)
    ran = len(outcome.history["outer_step"])
    if outcome.status == "ok" and tune.budget_seconds is not None and tune.method != "joint" and ran < tune.outer_steps:
        unit = "trials" if tune.method in ("random", "optuna") else "outer steps"  # (it ended as a finished one)
        outcome.message = (f"tune.budget_seconds = {tune.budget_seconds:g} ended the tuning after {ran} of "
                           f"{tune.outer_steps} {unit}")
    return outcome


def final_hyperparams(setup: TuningSetup, outcome: TuneOutcome) -> dict[str, Any]:
    """The training step's hyperparameters for the tuned φ (a tuned mix is left to the schedule)."""
    phi = {k: v.detach() for k, v in outcome.phi.items() if k != "mix"}
    return setup.to_hyperparams(phi)


def final_mix_schedule(setup: TuningSetup, outcome: TuneOutcome) -> tuple[float, ...] | None:
    """The mix values the final solve follows, on equal segments of its steps, when the mix
    was tuned (``None`` otherwise): the schedule the tuning followed
    (:meth:`TuneOutcome.mix_schedule`), or with ``final_init: continue``, which starts where
    the tuning's schedule ended, the tuned value alone."""
    if "mix" not in setup.phi0:
        return None
    if setup.config.tune.final_init == "continue":
        return (float(outcome.phi["mix"]),)
    return outcome.mix_schedule(float(setup.phi0["mix"]))


def final_identity(config, phi: dict[str, Tensor]) -> str:
    """What a final-solve checkpoint must match: the config's identity (the resolved config
    and its input files, :meth:`~pinnlab.config.Config.identity`) and the tuned values (bit
    for bit), as the YAML :func:`pinnlab.io.checkpoint.config_hash` reads."""
    import hashlib

    from pinnlab.config import dump_yaml

    digest = hashlib.sha256()
    for name in sorted(phi):
        value = phi[name].detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}:".encode())
        digest.update(value.numpy().tobytes())
    return config.identity() + dump_yaml({"final_solve": {"tuned": digest.hexdigest()}})


def final_solve(setup: TuningSetup, outcome: TuneOutcome, *, progress: str = "auto",
                checkpoint: Path | None = None, resume: bool = False) -> tuple[TrainResult, Any]:
    """Train with the tuned values for ``final_steps`` (default trainer.steps), from the
    initialisation or (``final_init: continue``) from the network the tuning trained.

    With ``checkpoint`` and ``trainer.checkpoint_every``, the solve saves its state there
    every that many steps, as ``pinnlab solve`` does; with ``resume`` it continues from a
    checkpoint saved for the same config and tuned values (:func:`final_identity`), also
    when this run has no checkpoint_every, else it starts over (a checkpoint of other
    tuned values is not used).

    Returns the training result and the problem it trained (its loss carries the
    learned mix schedule when the mix was tuned).
    """
    config = setup.config
    steps = config.tune.final_steps or config.trainer.steps
    problem = setup.problem
    if config.tune.inner == "deepxde":
        from pinnlab.config import solve_config_with_deepxde

        lr, weights = _deepxde_settings(setup, outcome.phi)
        return solve_config_with_deepxde(config, problem.equation, steps=steps, lr=lr, loss_weights=weights,
                                         progress=progress), problem
    schedule = final_mix_schedule(setup, outcome)
    if schedule is not None and isinstance(problem.loss, Hybrid):
        problem = dataclasses.replace(problem, loss=dataclasses.replace(problem.loss, switch=Piecewise(schedule, steps)))
    kwargs = dict(setup.train_kwargs)
    hyperparams = final_hyperparams(setup, outcome)
    kwargs.update(steps=steps, hyperparams=hyperparams, eval_every=min(kwargs["eval_every"], steps),
                  checkpoint_every=0)
    if config.trainer.schedule == "linear":
        from pinnlab.solvers import LinearDecay

        kwargs["schedule"] = LinearDecay(steps)
    if checkpoint is not None and (config.trainer.checkpoint_every or (resume and checkpoint.is_file())):
        from pinnlab.io.checkpoint import CheckpointError, load_checkpoint
        from pinnlab.solvers import resolve_device

        if config.trainer.checkpoint_every:
            kwargs["checkpoint_every"] = config.trainer.checkpoint_every
            kwargs["on_checkpoint"] = lambda state: save_final_state(setup, outcome, state, checkpoint)
        if resume and checkpoint.is_file():  # (also without checkpoint_every now: its saved steps are kept)
            try:
                kwargs["state"] = load_checkpoint(checkpoint, kwargs["optimizer"], final_identity(config, outcome.phi),
                                                  resolve_device(kwargs["device"]), kwargs["dtype"])
            except CheckpointError as err:  # another tuning's or damaged: solved again, and replaced
                print(f"warning: the final solve starts over and replaces its checkpoint ({err})", file=sys.stderr)
    if config.tune.final_init == "continue" and "state" not in kwargs:  # (a resumed solve has its own θ)
        trained = outcome.trained
        if trained is None and "trial_steps" in outcome.extra:  # search: replay the best trial (deterministic)
            from pinnlab.tuning.search import train_trial

            trained = train_trial(setup, outcome.phi, outcome.extra["trial_steps"])
        if trained is not None:  # (None: the tuning stopped before an outer step left a finite θ)
            kwargs["state"] = TrainState(params=trained[0], opt_state=trained[1])
    return train(problem, **kwargs, progress=progress), problem


def save_final_state(setup: TuningSetup, outcome: TuneOutcome, state: TrainState, checkpoint: Path) -> None:
    """Save the final solve's ``state`` (for the tuned values of ``outcome``) at ``checkpoint``,
    where :func:`final_solve` with ``resume`` continues from it: every trainer.checkpoint_every
    steps, and (``pinnlab tune``) its last step when the result cannot be written, so that a
    ``--resume`` writes the result without training again. An OSError is the caller's."""
    from pinnlab.io.checkpoint import save_checkpoint

    save_checkpoint(checkpoint, state, setup.train_kwargs["optimizer"], final_identity(setup.config, outcome.phi))


def coefficient_errors(setup: TuningSetup, phi: dict[str, Tensor]) -> dict[str, float]:
    """Relative error ‖c − c*‖/‖c*‖ of every tuned PDE coefficient against the instance's
    truth; for a true c* = 0, 0 when c = 0 too and inf otherwise (a 1e-300 floor under
    ‖c*‖ gave 6e+299, a number that looked measured)."""
    out = {}
    for name, value in phi.items():
        if name.startswith("coefficients."):
            true = setup.problem.equation.coefficients[name.split(".", 1)[1]].double()
            error, size = float((value.detach().cpu().double() - true).norm()), float(true.norm())
            out[name] = error / size if size > 0 else (0.0 if error == 0 else math.inf)
    return out

