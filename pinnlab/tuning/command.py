"""``pinnlab tune CONFIG [overrides] -o TUNE.h5 [--resume] [--overwrite]``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from pinnlab._interrupts import STOPS, ignore_terminate

NAME = "tune"


def add_parser(sub):
    from pinnlab.cli import add_command, add_config_arguments, add_run_arguments

    p = add_command(sub, NAME, "tune PINN hyperparameters (or PDE coefficients) by bilevel optimisation, "
                    "then solve with the tuned values", "pinnlab tune configs/tuning/poisson_boundary_weight.yaml "
                    "-o tuned.h5")
    add_config_arguments(p, "configs/tuning/ has examples")
    add_run_arguments(p, "TUNE.h5", "saved every tune.checkpoint_every outer steps and on Ctrl-C or "
                                    "SIGTERM; the final solve's as pinnlab solve's, in TUNE.h5.final.ckpt")
    return p


def _summary(phi) -> str:
    parts = []
    for name, value in phi.items():
        if name.startswith("collocation_weight/"):
            continue
        v = value.detach().double()
        parts.append(f"{name}={float(v):.4g}" if v.numel() == 1 else f"|{name}|={float(v.norm()):.4g}")
    return " ".join(parts)


FINAL_SUFFIX = ".final.ckpt"
"""``OUT.h5.final.ckpt``: the final solve's checkpoint (``OUT.h5.ckpt`` is the tuning's)."""


def checkpoint_metadata(path: Path):
    """The ``metadata`` the tune checkpoint at ``path`` was saved with (a file that holds
    no dictionary raises :class:`~pinnlab.io.CheckpointError`: it was said to belong to
    another configuration). Memory-mapped, so its tensors are not read: the tuning loop
    that resumes from it reads the file in full, once."""
    from pinnlab.io.checkpoint import FORMAT, CheckpointError, load_checkpoint_file

    saved = load_checkpoint_file(path, mmap=True)
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} has an unknown format")
    if "metadata" not in saved:
        if saved.get("format") == FORMAT and "step" in saved:  # (a solve under the same output name)
            raise CheckpointError(f"checkpoint {str(path)!r} is a solve's (pinnlab solve --resume continues it), "
                                  "not a tuning's")
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: it has no 'metadata'")
    return saved["metadata"]


def _steps_done(path: Path) -> int:
    """The outer steps (a search's trials) the tune checkpoint at ``path`` holds, where a
    resume's progress display starts (0 where the file does not say: the loop refuses it)."""
    from pinnlab.io.checkpoint import load_checkpoint_file

    saved = load_checkpoint_file(path, mmap=True)
    step, trials = saved.get("outer_step"), saved.get("trials")
    return step if type(step) is int else len(trials) if isinstance(trials, list) else 0


def _stamp(path: Path | None):
    """What tells a file apart from the one there before (an atomic write makes a new
    inode), or None where there is none."""
    try:
        status = path.stat() if path is not None else None
    except OSError:
        return None
    return None if status is None else (status.st_ino, status.st_mtime_ns, status.st_size)


def _saved(output: Path, before: dict, tuning: Path | None, final: Path | None = None, *,
           joint: bool = False, finished: int | None = None, tuned: int | None = None,
           deepxde: bool = False) -> str | None:
    """What a ``pinnlab tune`` that stops or fails leaves, as it says it (None: nothing):
    during the tuning (``final`` None) the last outer step or trial its checkpoint at
    ``tuning`` holds; during the final solve, that solve's last step at ``final`` (saved
    with trainer.checkpoint_every, and its ``finished`` last step when the result was not
    written: then a --resume only writes it) and the tuning's checkpoint, with the outer
    step it was saved at where that is before the last of the ``tuned`` ones (a --resume
    tunes those again first). Only checkpoints this run wrote or resumed (their
    :func:`_stamp` is not the one ``before`` the run, None for a resumed one): an earlier
    run's, left by one that saved none (tune.checkpoint_every: 0), was announced as this
    run's. A final solve without the tuning's checkpoint keeps none (:func:`run` refuses a
    --resume of one without it): the line says that both run again. A ``joint`` fit, which
    keeps none, says that it is lost (a stopped one said only "interrupted"). A ``deepxde``
    final solve has no checkpoints (trainer.checkpoint_every is refused there): no hint at them."""
    from pinnlab.cli import resume_hint
    from pinnlab.io.checkpoint import load_checkpoint_file

    def written(path: Path | None) -> Path | None:
        stamp = _stamp(path)
        return path if stamp is not None and path.is_file() and stamp != before.get(path) else None

    final_phase, tuning_path = final is not None, tuning
    tuning, final, hint = written(tuning), written(final), resume_hint(output)
    keeps = "" if deepxde else " (trainer.checkpoint_every saves its steps)"
    if not final_phase:
        if tuning is not None:
            saved = load_checkpoint_file(tuning, mmap=True)
            what = f"outer step {saved['outer_step']}" if "outer_step" in saved else f"trial {len(saved['trials'])}"
            return f"{what} saved in {str(tuning)!r}; {hint} continues from it"
    # the tuning's checkpoint from before its last outer step (tune.checkpoint_every = k): a --resume
    # tunes the rest again (it said only "runs the final solve again")
    done = _steps_done(tuning) if final_phase and tuning is not None and tuned is not None else None
    again = f"outer step {done}" if done is not None and done < tuned else None
    if final is not None:
        step = load_checkpoint_file(final, mmap=True)["step"]
        if again is not None:  # (the final solve continues only if the tuning ends at the same values)
            return (f"final solve step {step} saved in {str(final)!r}, the tuning's {again} in {str(tuning)!r}; "
                    f"{hint} tunes again from {again}, then continues the final solve from it if the tuned "
                    "values come out the same (else it starts over)")
        also = f", the tuning in {str(tuning)!r}" if tuning is not None else ""
        if step == finished:
            return (f"the finished final solve (step {step}) saved in {str(final)!r}{also}; {hint} writes the "
                    "result from it without training again")
        return f"final solve step {step} saved in {str(final)!r}{also}; {hint} continues from it"
    elif tuning is not None:
        if again is not None:
            return (f"the tuning's {again} is saved in {str(tuning)!r}; {hint} tunes again from {again} and "
                    f"then runs the final solve{keeps}")
        return f"the tuning is saved in {str(tuning)!r}; {hint} runs the final solve again{keeps}"
    if joint:
        return ("the joint fit (tune.method = 'joint') keeps no checkpoint, "
                + ("nor the final solve without trainer.checkpoint_every; the same command runs both again"
                   if final_phase else "so its steps are lost; the same command runs it again from the start"))
    if final_phase and tuning_path is not None:  # (it said nothing, or that --resume, refused, continued)
        return ("the tuning saved no checkpoint (tune.checkpoint_every), so its final solve keeps none either "
                "(a --resume needs both); the same command runs both again")
    return None


def _say_saved(output: Path, before: dict, tuning: Path | None, final: Path | None = None, *,
               joint: bool = False, finished: int | None = None, tuned: int | None = None,
               deepxde: bool = False) -> None:
    """The line a stopped ``pinnlab tune`` prints about what it leaves (:func:`_saved`)."""
    saved = _saved(output, before, tuning, final, joint=joint, finished=finished, tuned=tuned, deepxde=deepxde)
    if saved is not None:
        print(f"pinnlab: {saved}", file=sys.stderr)


def write_tune_result(output: Path, setup, outcome, result, problem, processes: int = 1) -> None:
    """The final solve's result file with the ``/tune`` group (schema in pinnlab.io.results);
    ``processes``: how many ran the tuning (torchrun's WORLD_SIZE, 1 without it)."""
    import h5py
    import numpy as np
    import torch

    from pinnlab.cli import replacing
    from pinnlab.config import SEARCHES
    from pinnlab.io import result_slice, write_solve_result
    from pinnlab.io.results import _dataset
    from pinnlab.tuning.run import coefficient_errors, final_hyperparams, final_mix_schedule

    config = setup.config
    tuned = {k: v for k, v in final_hyperparams(setup, outcome).items() if not callable(v)}
    then = config.tune.then
    # the method of each outer step's phase, by the names the config gives them
    methods = [then.method if then is not None and k >= then.after else outcome.method
               for k in outcome.history["outer_step"]]
    used = {k: v.detach().cpu().double().numpy() for k, v in outcome.phi.items()}
    if (schedule := final_mix_schedule(setup, outcome)) is not None:
        used["mix"] = np.asarray(schedule)  # the schedule the final solve replayed, not the last φ

    def extra(fh):
        group = fh.create_group("tune")
        group.attrs["method"] = outcome.method
        if then is not None:
            group.attrs["then_method"] = then.method
            group.attrs["then_after"] = then.after
        group.attrs["objective"] = config.tune.objective.kind
        if config.tune.horizon_acts:  # (not a search's given trial_steps: it did nothing there)
            group.attrs["horizon"] = config.tune.horizon
        if "trial_steps" in outcome.extra:  # a search: each trial's training steps
            group.attrs["trial_steps"] = int(outcome.extra["trial_steps"])
        group.attrs["inner"] = config.tune.inner
        # φ's last float32 digits depend on it (README: to rounding, not bit for bit), so a
        # rerun from the file needs it as it needs torch_threads
        group.attrs["processes"] = int(processes)
        group.attrs["seconds"] = outcome.seconds
        group.attrs["steps_done"] = len(outcome.history["outer_step"])
        group.attrs["status"] = outcome.status
        group.attrs["message"] = outcome.message
        _dataset(group, "outer_step", np.asarray(outcome.history["outer_step"], dtype=np.int64))
        for key in ("value", "grad_norm", "seconds"):
            _dataset(group, key, np.asarray(outcome.history[key], dtype=float))
        _dataset(group, "method", np.asarray(methods, dtype=h5py.string_dtype()))
        searched = config.tune.method in SEARCHES  # (trials drawn from ranges: no start)
        for name in setup.tunables:
            if not searched:
                _dataset(group, f"initial/{name}", setup.phi0[name].detach().cpu().double().numpy())
            values = outcome.history[f"phi/{name}"]
            stacked = (torch.stack([torch.as_tensor(v) for v in values]).double().numpy() if values
                       else np.zeros((0, *outcome.phi[name].shape)))  # [steps, *shape] with no step yet
            _dataset(group, f"phi/{name}", stacked)
            _dataset(group, f"tuned/{name}", used[name])
        for name, err in coefficient_errors(setup, outcome.phi).items():
            group.attrs[f"coefficient_rel_err/{name}"] = err
        weights = tuned.get("weights", {})  # every term, at 1 where neither the config nor the tuning set it
        for term in ("residual", *(t.name for t in problem.extra_terms)):
            w = weights.get(term, 1.0)
            group.attrs[f"final/weights.{term}"] = float(torch.as_tensor(w, dtype=torch.float64).norm())

    # at the σ the final solve trained and evaluated with (a tuned σ), as /eval is
    slice_data = result_slice(problem, result, num_samples=config.estimator.eval_samples, seed=config.trainer.seed,
                              sigma=tuned.get("sigma"))
    with replacing(output):
        write_solve_result(output, config=config, problem=problem, result=result, slice_data=slice_data,
                           kind="tune", extra=extra)


def check_processes(config, world: int, size: int | None = None) -> list[str]:
    """Under ``torchrun`` with ``world`` > 1 processes, refuse a run in which no phase's
    method spreads its work over them (each process would run all of it, the same), and
    a CUDA device with an index (each process computes on ``cuda:LOCAL_RANK``). A phase of
    fg2u or zo_fg2u with ``distributed: false`` is refused for that option, the one at
    fault (the method itself spreads them). Returns warnings: a phase with fewer
    directions than processes, whose extra processes compute nothing and wait: with
    ``size`` (N, the number of tuned values) as many as the method takes for that N (fg2u's
    default is min(8, N)), without it a default counts 8."""
    from pinnlab.bilevel import METHODS
    from pinnlab.bilevel.forward import DEFAULT_DIRECTIONS
    from pinnlab.config import ConfigError
    from pinnlab.tuning.run import make_hypergradient_method

    if world <= 1:
        return []
    tune = config.tune
    phases = [("tune", tune.method, tune.options)]
    if tune.then is not None:
        phases.append(("tune.then", tune.then.method, tune.then.options))
    made = {where: make_hypergradient_method(name, options, where, size) for where, name, options in phases
            if name in METHODS}
    if not any(getattr(method, "distributed", False) for method in made.values()):
        off = [f"{where}.options.distributed" for where, method in made.items()
               if hasattr(method, "distributed") and not method.distributed]
        if off:
            raise ConfigError(f"{' and '.join(off)} = false under torchrun with {world} processes: only fg2u and "
                              "zo_fg2u spread their directions over the processes, and not with distributed: false "
                              f"(every process would run all of it); remove {'it' if len(off) == 1 else 'them'}, "
                              "or run as one process, without torchrun")
        names = " then ".join(repr(name) for _, name, _ in phases)
        raise ConfigError(f"tune.method = {names} under torchrun with {world} processes: only fg2u and zo_fg2u "
                          "spread their directions over the processes (every other method would run in full "
                          "on each); run it as one process, without torchrun")
    device = str(config.trainer.device)
    if device.startswith("cuda:"):
        raise ConfigError(f"trainer.device = {device!r} under torchrun with {world} processes: each process "
                          "computes on cuda:LOCAL_RANK; use device: cuda or auto")
    given = {where for where, _, options in phases if "num_directions" in options}
    counts = {where: DEFAULT_DIRECTIONS if method.num_directions is None else method.num_directions
              for where, method in made.items() if getattr(method, "distributed", False)}
    # (a count the config does not give is the method's default, for N when it is known)
    return [f"{where}.options.num_directions = {b}"
            f"{'' if where in given else ' (the default' + ('' if size is None else f' at N = {size}') + ')'}"
            f" < {world} processes: {world - b} of them compute no direction and wait (each direction is one "
            "process's work)" for where, b in counts.items() if b < world]


def run(args) -> int:
    import torch

    from pinnlab import config as configuration
    from pinnlab.bilevel.base import IndependentOfPhi
    from pinnlab.bilevel.distributed import (
        PeerLost,
        environment_rank,
        environment_world_size,
        init_from_environment,
        leave_process_group,
        local_device,
    )
    from pinnlab.cli import (
        CHECKPOINT_SUFFIX,
        EXIT_FAILED,
        EXIT_OK,
        START_OVER,
        RunFailed,
        UsageError,
        _output_checks,
        refused_checkpoint,
        run_inputs,
        start_over_hint,
        unwritable,
    )
    from pinnlab.io.checkpoint import CheckpointError, comparable_text, config_difference, config_hash
    from pinnlab.solvers import resolve_device
    from pinnlab.solvers.progress import Progress
    from pinnlab.tuning.run import (
        check_method,
        coefficient_errors,
        final_mix_schedule,
        final_solve,
        run_tuning,
        save_final_state,
        tuned_size,
    )
    from pinnlab.tuning.setup import build_tuning

    try:
        config = configuration.load(args.config, args.overrides)
        if "tune" not in config.sections:
            raise configuration.ConfigError("tune: required section is missing for `pinnlab tune`")
        device = resolve_device(config.trainer.device)
        try:  # under torchrun on GPUs, each rank's tensors on cuda:LOCAL_RANK from the start
            local_device(device)
        except ValueError as err:  # a bad LOCAL_RANK: the environment's error, not the config's
            raise UsageError(str(err)) from None
        first_rank = environment_rank() == 0  # (one line, not one per torchrun rank)
        setup = build_tuning(config, progress=args.progress if first_rank else "off")
        check_method(setup)
        idle = check_processes(config, environment_world_size(), tuned_size(setup))
    except (configuration.ConfigError, ValueError) as err:
        raise UsageError(f"config error: {err}") from None
    output = Path(args.output)
    checkpoint = Path(str(output) + CHECKPOINT_SUFFIX)
    _output_checks(output, overwrite=args.overwrite, reads=run_inputs(args.config, config),
                   extra_checkpoints=(FINAL_SUFFIX,), resume=args.resume)
    # a single-level joint fit is one training run without checkpoints; --resume restarts it
    checkpoint_path = None if config.tune.method == "joint" else checkpoint
    final_checkpoint = Path(str(output) + FINAL_SUFFIX)  # the final solve's, with trainer.checkpoint_every
    if checkpoint_path is not None and final_checkpoint.is_file() and not checkpoint.exists() and not args.overwrite:
        # (the final solve's steps without the tuning they continue: "pass --resume", then "no checkpoint")
        raise UsageError(f"checkpoint {str(final_checkpoint)!r} of an interrupted final solve exists without the "
                         f"tuning's {str(checkpoint)!r}, so it cannot be resumed; pass --overwrite to start over")
    start_over = start_over_hint(args.overwrite, output, checkpoint, final_checkpoint)  # (for a failed --resume)
    if args.resume and checkpoint_path is not None and not checkpoint.is_file():
        raise UsageError(f"no checkpoint {str(checkpoint)!r} to resume from; {start_over}")
    for left in (checkpoint, final_checkpoint):
        if not args.resume and left.exists() and not args.overwrite:
            raise UsageError(f"a checkpoint {str(left)!r} exists from an interrupted run; pass --resume "
                             "to continue it or --overwrite to start over")
    rank, world = init_from_environment(setup.device)  # under torchrun: directions split over ranks
    if rank == 0:
        for line in idle:
            print(f"warning: {line}", file=sys.stderr)
    identity = config.identity()  # the config and the files it reads; the text names what differs
    metadata = {"config": config_hash(identity), "config_text": comparable_text(identity)}
    # (a joint fit keeps none: one there is another run's, which its clean-up at the end deleted)
    if args.resume and (checkpoint_path is not None or checkpoint.is_file()):
        try:
            saved = checkpoint_metadata(checkpoint)
        except CheckpointError as err:
            raise refused_checkpoint(err, hint=start_over) from None
        if not isinstance(saved, dict) or saved.get("config") != metadata["config"]:
            difference = config_difference(saved.get("config_text") if isinstance(saved, dict) else None, identity)
            raise UsageError(f"checkpoint {str(checkpoint)!r} belongs to another configuration{difference}; "
                             f"{start_over}")
        metadata = saved  # (one written before the config text was kept holds only the hash)
    done = _steps_done(checkpoint) if args.resume and checkpoint_path is not None else 0
    # one progress display, rank 0's (the others' would never move); only rank 0 solves after.
    # A joint fit's counts its training steps, outer_steps × horizon, as a solve's does (its
    # it/s counted its rows, one every horizon steps)
    joint = config.tune.method == "joint"
    # what the first outer step or trial imports (seconds each) is imported before the
    # display's clock starts, so the first line's s/it is that step's own: torch.optim's
    # first optimizer (a method's outer one) and a search trial's first torch.func gradient
    # import torch._dynamo, optuna's sampler optuna, a DeepXDE inner solve deepxde. (The
    # driver's own setup before its first step, milliseconds, is still counted in it.)
    if config.tune.method not in configuration.SEARCHES:
        config.tune.outer_optimizer_for([torch.zeros(1, requires_grad=True)])
    import torch._dynamo  # noqa: F401

    if config.tune.method == "optuna":
        import optuna  # noqa: F401
    if config.tune.inner == "deepxde":
        from pinnlab.solvers.deepxde_adapter import import_deepxde

        import_deepxde()
    bar = Progress(config.tune.outer_steps * (config.tune.horizon if joint else 1), initial=done,
                   mode=args.progress if rank == 0 else "off", log_every=1, description="tune", value_name="outer",
                   rel_l2=False, unit="trial" if config.tune.method in configuration.SEARCHES else "step")

    def progress(k, phi, diagnostics):
        bar.description = f"tune {_summary(phi)}"
        diagnostics = diagnostics if isinstance(diagnostics, dict) else {}
        value = diagnostics.get("value")
        best = diagnostics.get("best")  # (a search's, so far)
        step = diagnostics.get("steps", (k + 1) * config.tune.horizon) - 1 if joint else k
        bar.update(step, math.nan if value is None else float(value), None,
                   extra=None if best is None else {"best": f"{float(best):.3e}"})

    # what this run did not write (a resumed tuning's checkpoint is this run's, also where it saves no step)
    before = {checkpoint: None if args.resume else _stamp(checkpoint), final_checkpoint: _stamp(final_checkpoint)}
    args.training_started = True  # (a stop from here on: rank 0 says what it kept, cli._kept)
    try:
        outcome = run_tuning(setup, checkpoint=checkpoint_path, resume=args.resume and checkpoint_path is not None,
                             progress=progress if rank == 0 else None, metadata=metadata, save=rank == 0,
                             overwrite=args.overwrite)
        leave_process_group()  # every rank, together (its barrier, too, can find a peer gone): only rank 0 solves
    except CheckpointError as err:  # a damaged checkpoint, refused before any work
        raise refused_checkpoint(err, hint=start_over if args.resume else START_OVER) from None
    except IndependentOfPhi as err:  # a user's equation that reads a tuned coefficient as a number: its
        # input, one line (the first outer step's, before any save); a built-in equation's is pinnlab's bug
        if config.equation.module is None:
            raise
        raise UsageError(f"equation.module = {config.equation.module!r}: {err}") from None
    except PeerLost as err:  # another rank killed or crashed: one line and what is saved, not a traceback
        ignore_terminate()  # (torchrun's SIGTERM, which follows, is the lost peer's consequence)
        print(f"pinnlab: error (rank {rank} of {world}): {err}", file=sys.stderr)
        if rank == 0:
            _say_saved(output, before, checkpoint_path)
        return EXIT_FAILED
    except STOPS:
        if rank == 0:
            _say_saved(output, before, checkpoint_path, joint=joint)
        raise
    finally:
        bar.close()
    if rank != 0:
        return EXIT_OK
    then = config.tune.then
    methods = outcome.method + (f" → {then.method} after {then.after} outer steps" if then is not None else "")
    # a tuned mix: the final solve replays the schedule the tuning followed, not its last value
    schedule = final_mix_schedule(setup, outcome)
    tuned = _summary({k: v for k, v in outcome.phi.items() if k != "mix" or schedule is None or len(schedule) == 1})
    if schedule is not None and len(schedule) > 1:
        tuned += (f"{' ' if tuned else ''}mix: a schedule of {len(schedule)} values, {schedule[0]:.4g} to "
                  f"{schedule[-1]:.4g}, which the final solve replays")
    print(f"tuned ({methods}, {outcome.seconds:.1f} s, {world} process(es)): {tuned}", file=sys.stderr)
    if outcome.status == "ok" and outcome.message:  # (the budget ended it early; /tune's message says so too)
        print(f"note: {outcome.message}", file=sys.stderr)
    if outcome.status != "ok" and "trial_steps" in outcome.extra:  # a search: it ran every trial
        print(f"warning: {outcome.message}", file=sys.stderr)
    elif outcome.status != "ok":
        start = (" and starts from the initialisation (no outer step left a finite θ)"
                 if config.tune.final_init == "continue" and outcome.trained is None
                 and "trial_steps" not in outcome.extra else "")
        print(f"warning: tuning stopped early ({outcome.message}); the final solve uses the last finite values"
              f"{start}", file=sys.stderr)
    result = None

    def keep_last_step() -> int | None:
        """As pinnlab solve's: a final solve that finished keeps its last step, from which a
        --resume writes the result without training again (the last step it returns), where
        a --resume finds the whole tuning it continues (not with tune.checkpoint_every: 0 or
        one that saved before the last outer step, nor a joint fit's); a full disk that
        refuses it too leaves what is there."""
        if result is None or deepxde or joint or not kept:
            return None
        try:
            if _steps_done(checkpoint) != len(outcome.history["outer_step"]):  # (a --resume would tune again)
                return None
        except CheckpointError:
            return None
        try:
            save_final_state(setup, outcome, result.state, final_checkpoint)
        except OSError:
            return None
        return result.state.step

    # the final solve keeps a checkpoint only beside the tuning's (a joint fit, which keeps none, runs again
    # first): a --resume refuses one without it (tune.checkpoint_every: 0), which only blocked the next run
    deepxde = config.tune.inner == "deepxde"  # (its final solve keeps no checkpoint, and says none)
    kept = joint or (checkpoint_path is not None and checkpoint.is_file() and _stamp(checkpoint) != before[checkpoint])
    try:
        result, problem = final_solve(setup, outcome, progress=args.progress,
                                      checkpoint=final_checkpoint if kept else None, resume=args.resume)
        try:
            write_tune_result(output, setup, outcome, result, problem, world)  # (seconds at high d: its slice)
        except OSError as err:  # (a full disk) one line, as pinnlab solve's, with what a --resume continues
            last = keep_last_step()
            saved = _saved(output, before, checkpoint_path, final_checkpoint, joint=joint, finished=last,
                           tuned=len(outcome.history["outer_step"]), deepxde=deepxde)
            raise RunFailed(unwritable(output, err) + (f"; {saved}" if saved else "")) from None
    except STOPS:  # (also while the result is written: its slice takes minutes at a large d)
        _say_saved(output, before, checkpoint_path, final_checkpoint, joint=joint, finished=keep_last_step(),
                   tuned=len(outcome.history["outer_step"]), deepxde=deepxde)  # (a --resume from fewer
        # tunes the rest again)
        raise
    for left in (checkpoint, final_checkpoint):
        if left.exists():
            left.unlink()
    if result.status != "ok":  # (said nowhere but in the file: the user saw rel_l2=7e+25 and exit code 1)
        print(f"warning: the final solve{f' with {tuned}' if tuned else ''} stopped early: {result.message}",
              file=sys.stderr)
    errors = coefficient_errors(setup, outcome.phi)
    extra = "".join(f" {k}_rel_err={v:.6e}" for k, v in errors.items())
    print(f"rel_l2={result.final.rel_l2:.6e} rel_l1={result.final.rel_l1:.6e} "
          f"steps_per_second={result.stats['steps_per_second']:.4g}{extra}")
    return EXIT_OK if result.status == "ok" and outcome.status == "ok" else EXIT_FAILED
