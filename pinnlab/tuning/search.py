"""Baselines in the tuning harness: random search, Optuna TPE, single-level joint fitting.

Search baselines spend the same kind of budget as the bilevel methods: each trial trains
the network from the same initialisation for ``trial_steps`` steps of the very same
training step with candidate values, and is scored by the same outer objective.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from pinnlab._budget import Budget
from pinnlab._interrupts import STOPS
from pinnlab._seeding import derive_seed
from pinnlab.bilevel.driver import optimizer_stepped
from pinnlab.bilevel.parameterization import Identity, Log, constrain, unconstrain
from pinnlab.solvers.loop import all_finite
from pinnlab.solvers.terms import DataLoss


def trial_steps(setup) -> int:
    """Training steps of one search trial: ``tune.trial_steps`` or 10·T."""
    tune = setup.config.tune
    return tune.trial_steps or 10 * tune.horizon


def train_trial(setup, phi: dict[str, torch.Tensor], steps: int):
    """θ and optimizer state after ``steps`` steps from θ_0 with hyperparameters φ
    (``None`` if the training diverged: a non-finite loss, or an update whose gradient
    overflowed into θ or the optimizer state, where :func:`pinnlab.solvers.train` stops
    too; a finite loss alone let a trial whose Adam state was inf keep θ_0 and score the
    untrained network)."""
    with torch.no_grad():
        theta, state = setup.init
        hp = setup.to_hyperparams(phi)
        for t in range(steps):
            theta, state, metrics = setup.train_step(theta, state, hp, t)
            if not bool(all_finite(torch.as_tensor(metrics["loss"]), theta, state)):
                return None
    return theta, state


def _told(value: float) -> float:
    """What TPE is told a trial scored: a diverged trial (inf, or a score's NaN, which
    Optuna would record as a failed trial and forget) as inf, worse than every finite
    score, so the trials TPE ranks good are never diverged ones."""
    return value if math.isfinite(value) else math.inf


def trial_objective(setup, phi: dict[str, torch.Tensor], steps: int) -> float:
    """Train ``steps`` steps from θ_0 with hyperparameters φ; the outer objective after."""
    return _scored(setup, phi, train_trial(setup, phi, steps))


def _scored(setup, phi: dict[str, torch.Tensor], trained) -> float:
    """The outer objective at ``trained`` (:func:`train_trial`'s), inf where the training
    diverged or the objective is not finite."""
    if trained is None:
        return math.inf
    with torch.no_grad():
        value = float(setup.outer_loss(trained[0], phi))
    return value if math.isfinite(value) else math.inf


def _nonfinite_cause(diverged: list[bool], trials: int) -> str:
    """Why all ``trials`` scored a non-finite outer objective, from ``diverged`` (whether
    the training diverged, for the trials this run trained itself: not those a resumed
    search replayed, nor a DeepXDE training's)."""
    if len(diverged) < trials:
        return "the training diverged, or the objective itself was not finite after a finite training"
    if all(diverged):
        return "the training diverged"
    if not any(diverged):
        return "the training stayed finite: the objective itself was not finite"
    return (f"the training diverged in {sum(diverged)} of them; in the other {trials - sum(diverged)} it "
            "stayed finite and the objective itself was not finite")


def _random_candidate(setup, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    phi = {}
    for name, t in setup.tunables.items():
        shape = tuple(t.init.shape)
        if isinstance(t.transform, Log):
            draw = np.exp(rng.uniform(math.log(t.low), math.log(t.high), size=shape))
        else:
            draw = rng.uniform(t.low, t.high, size=shape)
        phi[name] = torch.as_tensor(draw, dtype=setup.dtype, device=setup.device)
    return phi


def _optuna_candidate(setup, trial) -> dict[str, torch.Tensor]:
    phi = {}
    for name, t in setup.tunables.items():
        log = isinstance(t.transform, Log)
        count = t.init.numel()
        values = [trial.suggest_float(name if count == 1 else f"{name}[{i}]", t.low, t.high, log=log)
                  for i in range(count)]
        phi[name] = torch.tensor(values, dtype=setup.dtype, device=setup.device).reshape(t.init.shape)
    return phi


def _record(history, k, value, phi, seconds):
    history["outer_step"].append(k)
    history["value"].append(value)
    history["seconds"].append(seconds)
    history["method"].append("trial")
    history["grad_norm"].append(math.nan)
    for name, v in phi.items():
        history[f"phi/{name}"].append(v.detach().cpu().clone())


def search(setup, *, sampler: str, checkpoint: Path | None = None, resume: bool = False,
           progress=None, metadata: dict | None = None, save: bool = True, score=None):
    """Random search or Optuna TPE over the tunables' ranges; the best trial wins.

    Runs ``tune.outer_steps`` trials or until ``tune.budget_seconds``. A trial is scored
    by ``score(φ)`` (default :func:`trial_objective` over :func:`trial_steps` steps; for
    ``inner: deepxde`` a DeepXDE training). Trials are saved to ``checkpoint`` after each
    one; resuming replays them (random search draws
    the same candidates again, TPE is told the finished trials and continues from the
    saved state) and continues.
    """
    from pinnlab.bilevel.driver import check_checkpoint_path
    from pinnlab.io.checkpoint import write_checkpoint_file
    from pinnlab.tuning.run import TuneOutcome

    if checkpoint is not None:  # (before any trial: the first save found it after a trial's work)
        check_checkpoint_path(checkpoint)
    tune = setup.config.tune
    steps = trial_steps(setup)
    diverged: list[bool] = []  # whether the training diverged, per trial trained here (for the warning)
    if score is None:
        def score(phi):
            trained = train_trial(setup, phi, steps)
            diverged.append(trained is None)
            return _scored(setup, phi, trained)
    history = {"outer_step": [], "value": [], "seconds": [], "method": [], "grad_norm": [],
               **{f"phi/{n}": [] for n in setup.tunables}}
    done: list[tuple[dict, float]] = []
    budget_state: dict = {}
    if resume and checkpoint is not None:
        from pinnlab.io.checkpoint import CheckpointError, check_progress, read_checkpoint, reading

        data = read_checkpoint(checkpoint, metadata=metadata, history=history)
        with reading(checkpoint):
            history, done = data["history"], [(dict(p), float(v)) for p, v in data["trials"]]
            if len(done) > tune.outer_steps:
                raise CheckpointError(f"checkpoint {str(checkpoint)!r} holds {len(done)} trials, more than "
                                      f"this run's {tune.outer_steps}")
            budget_state = data.get("budget", {})
            check_progress(checkpoint, history, len(done), budget_state)
    rng = np.random.default_rng(derive_seed(tune.seed, "random_search"))
    study = None
    if sampler == "optuna":
        import optuna  # (installed: the config's validation refuses optuna without it)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=_tpe(tune.seed, len(done), _searched(setup)))
        for params, value in done:
            study.add_trial(optuna.trial.create_trial(
                params=params, value=_told(value),
                distributions={k: optuna.distributions.FloatDistribution(
                    *_range(setup, k), log=_is_log(setup, k)) for k in params}))
    else:
        for _ in done:
            _random_candidate(setup, rng)
    budget = Budget(tune.budget_seconds, **budget_state)  # a resumed search keeps its earlier time and trials
    for k in range(len(done), tune.outer_steps):
        if not budget.allows_another():
            break
        t0 = time.perf_counter()
        if study is not None:
            # a sampler seeded by (seed, trial index): TPE's draw for trial k depends only on
            # the finished trials, so a resumed search continues exactly as an uninterrupted one
            study.sampler = _tpe(tune.seed, k, _searched(setup))
            trial = study.ask()
            phi = _optuna_candidate(setup, trial)
            value = score(phi)
            study.tell(trial, _told(value))
            params = dict(trial.params)
        else:
            phi = _random_candidate(setup, rng)
            value = score(phi)
            params = {}
        _record(history, k, value, phi, time.perf_counter() - t0)
        done.append((params, value))
        if progress is not None:  # (the trial's value, and the best so far, which the search returns)
            finite = [v for _, v in done if math.isfinite(v)]
            progress(k, phi, {"value": value, "best": min(finite) if finite else math.nan})
        budget.finished_one()
        if checkpoint is not None and save:
            payload = {"history": history, "trials": [[p, v] for p, v in done], "metadata": metadata,
                       "budget": budget.state()}
            try:
                write_checkpoint_file(checkpoint, payload)
            except STOPS:
                # a stop during the write (atomic: the file kept the trial before) still saves
                # this trial, which the progress line showed done and pinnlab tune said was not
                write_checkpoint_file(checkpoint, payload)
                raise
    values = np.asarray(history["value"], dtype=float)
    finite = np.isfinite(values)
    best = int(np.argmin(np.where(finite, values, np.inf))) if finite.any() else 0
    phi = {n: history[f"phi/{n}"][best].to(device=setup.device, dtype=setup.dtype) for n in setup.tunables}
    status, message = "ok", ""
    if not finite.any():  # (reported as tuned at trial 0's values, status ok, exit 0)
        status, message = "nonfinite", (f"every one of the {len(values)} trials ended with a non-finite outer "
                                        f"objective ({_nonfinite_cause(diverged, len(values))}); the final solve "
                                        "uses trial 0's values")
    return TuneOutcome(phi, history, sampler, budget.spent(), extra={"best_trial": best, "trial_steps": steps},
                       status=status, message=message)


def _searched(setup) -> int:
    """How many values a trial draws (a vector tunable draws each entry)."""
    return sum(t.init.numel() for t in setup.tunables.values())


def startup_trials(values: int) -> int:
    """The random trials TPE draws before it models the scores: one more than the number of
    ``values`` a trial draws (a first design that spans them, as Bayesian optimisation's
    usual d + 1), at most Optuna's default 10. With that default every search of up to 10
    trials, the searches the tuning benchmark's budgets afford, was a random search."""
    return min(10, values + 1)


def _tpe(seed: int, trial: int, values: int):
    import optuna

    return optuna.samplers.TPESampler(seed=derive_seed(seed, "tpe", trial) % 2**32,
                                      n_startup_trials=startup_trials(values))


def _range(setup, key):
    t = setup.tunables[key.split("[")[0]]
    return t.low, t.high


def _is_log(setup, key):
    return isinstance(setup.tunables[key.split("[")[0]].transform, Log)


def joint_fit(setup, *, progress=None):
    """The usual single-level inverse-problem fit: θ and the PDE coefficients trained
    together on residual + data loss, the data misfit counted once, for
    ``outer_steps · horizon`` steps or ``budget_seconds``; θ with the trainer's optimizer,
    the coefficients with the configured outer optimiser (``TuneSection.outer_optimizer_for``,
    the one the bilevel driver uses).

    The data loss is the outer objective (the misfit over all observations) added to the
    training loss, unless the training loss already holds a data term (``data.train:
    true``, the same observations): then the training loss alone, whose data term has
    weight ``loss.weights.data`` and ``data.batch_size`` observations a step (adding the
    outer objective too counted the misfit twice).

    Like the bilevel driver, the outer optimiser steps the unconstrained u of each
    coefficient (φ = forward(u) by its ``transform``: a ``logit`` coefficient stays within
    its ``(low, high)``); the history and the result hold constrained values. A step that
    makes θ or a coefficient non-finite (or a log coefficient 0) ends the fit with
    ``status="nonfinite"`` at the values before it, as the driver does.
    """
    from pinnlab.tuning.run import TuneOutcome

    tune = setup.config.tune
    problem, kwargs = setup.problem, setup.train_kwargs
    seed = kwargs["seed"]
    theta_opt = kwargs["optimizer"]
    parameterization = setup.parameterization
    # with data.train: true the training loss holds the data misfit already
    fits_data = any(isinstance(term, DataLoss) for term in problem.extra_terms)

    def loss(theta, u, t):
        phi = constrain(u, parameterization)
        training, _ = problem.objective(theta, setup.to_hyperparams(phi), t, seed)
        return training if fits_data else training + setup.outer_loss(theta, phi)

    grad = torch.func.grad(loss, argnums=(0, 1))
    theta, theta_state = setup.init
    u = {k: v.detach().clone() for k, v in unconstrain(setup.phi0, parameterization).items()}
    phi_opt = tune.outer_optimizer_for(list(u.values()))
    history = {"outer_step": [], "value": [], "seconds": [], "method": [], "grad_norm": [],
               **{f"phi/{n}": [] for n in setup.tunables}}
    budget = Budget(tune.budget_seconds)
    total = tune.outer_steps * tune.horizon
    status, message = "ok", ""
    unrecorded = 0  # inner steps since the last row

    def record(t):
        with torch.no_grad():
            phi = constrain(u, parameterization)
            value = float(setup.outer_loss(theta, phi))
        _record(history, t // tune.horizon, value, phi, time.perf_counter() - t0)
        history["method"][-1] = "joint"
        if progress is not None:  # ("steps": the training steps done, what the display counts)
            progress(t // tune.horizon, phi, {"value": value, "steps": t + 1})

    for t in range(total):
        if not budget.allows_another():
            message = (f"tune.budget_seconds = {tune.budget_seconds:g} ended the joint fit after {t} of its "
                       f"{total} steps (tune.outer_steps × tune.horizon)")
            break
        if t % tune.horizon == 0:  # a row times its outer step's horizon inner steps, as the driver's rows do
            t0 = time.perf_counter()
        before = theta, theta_state, {k: v.detach().clone() for k, v in u.items()}
        g_theta, g_u = grad(theta, u, t)
        theta, theta_state = theta_opt.update(g_theta, theta_state, theta, theta_opt.lr)
        for name, value in u.items():
            value.grad = g_u[name]
        overflowed = not optimizer_stepped(phi_opt)
        with torch.no_grad():
            stepped = constrain(u, parameterization)
        if overflowed or not (all(bool(torch.isfinite(v).all()) for v in theta.values())
                              and all(parameterization.get(n, Identity()).usable(v) for n, v in stepped.items())):
            theta, theta_state, kept = before
            with torch.no_grad():
                for name, value in u.items():
                    value.copy_(kept[name])
            status, message = "nonfinite", f"joint step {t}: θ or a coefficient became non-finite"
            break
        unrecorded += 1
        if (t + 1) % tune.horizon == 0 or t + 1 == total:
            record(t)
            unrecorded = 0
        budget.finished_one()
    if unrecorded:  # stopped before step t, inside an outer step: its row holds the values the final solve takes
        record(t - 1)
    with torch.no_grad():
        phi = constrain(u, parameterization)
    return TuneOutcome({k: v.detach() for k, v in phi.items()}, history, "joint", budget.spent(),
                       trained=(theta, theta_state), status=status, message=message)
