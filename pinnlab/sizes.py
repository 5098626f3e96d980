"""Pre-flight size estimate: runs this machine cannot hold are refused before any tensor is made.

:func:`check_sizes` (called first by :func:`pinnlab.config.build`) compares a lower bound
of a run's memory, worked out from the validated settings alone (:func:`memory_moments`),
with the machine's (:func:`machine_memory`), and refuses a tensor beyond torch's sizes.
"""

from __future__ import annotations

import math
import os
import typing

from pinnlab.config import METHODS, SEARCHES, Config, ConfigError
from pinnlab.equations import EQUATIONS

TORCH_SIZE_LIMIT = 2**63 - 1
"""The most elements a torch tensor can have (its sizes are signed 64-bit integers)."""


class SizedTensor(typing.NamedTuple):
    """``copies`` tensors of ``shape`` with ``itemsize``-byte elements that a run certainly
    makes; ``what`` names them and ``settings`` what to lower in a message. ``host``: on
    the CPU whatever the run's device."""

    what: str
    shape: tuple[int, ...]
    itemsize: int
    settings: tuple[str, ...]
    copies: int = 1
    host: bool = False

    @property
    def nbytes(self) -> int:
        return self.copies * math.prod(self.shape) * self.itemsize


class _Sizes(typing.NamedTuple):
    """What the tensors of :func:`memory_moments` are made of: d, D (time included), the
    network's width and depth and the bytes of the run's dtype."""

    dim: int
    inputs: int
    width: int
    depth: int
    itemsize: int

    def stein(self, n, samples, noise, graph, what, count, samples_setting) -> list[SizedTensor]:
        """One Stein estimate at ``n`` points (sized by the settings ``count``): its draw ξ
        and the hidden activations, each layer's kept for the backward pass under autograd
        (``graph``), else one layer's."""
        independent = noise == "independent"
        draw = (n, samples, self.inputs) if independent else (samples, self.inputs)
        return [SizedTensor(f"the noise draw ξ of {what}", draw, self.itemsize,
                            (*(count if independent else ()), samples_setting, "equation.dim")),
                SizedTensor(f"the hidden activations of {what}", (n, 2, samples, self.width), self.itemsize,
                            (*count, samples_setting, "model.width", "model.depth"), self.depth - 1 if graph else 1)]

    def hessian_products(self, n, chunk_size, graph, what, count) -> list[SizedTensor]:
        """Autograd's second derivatives at ``n`` points: one `(N, D)` Hessian-vector product
        per coordinate, all of them when their graphs are kept for a backward pass
        (``graph``: a training step, a differentiated objective; lowering
        estimator.chunk_size does not shrink them: measured at d = 10³, N = 100, width 16,
        1.1 GB above the process's base against 0.4 GB counted), else one batch of
        ``chunk_size``."""
        if graph:
            return [SizedTensor(f"the Hessian-vector products of {what}",
                                (self.dim, n, self.inputs), self.itemsize, (*count, "equation.dim"))]
        return [SizedTensor(f"the Hessian-vector products of {what}", (min(chunk_size, self.dim), n, self.inputs),
                            self.itemsize, (*count, "equation.dim", "estimator.chunk_size"))]

    def points(self, n, what, count, itemsize=None, host=False) -> SizedTensor:
        return SizedTensor(what, (n, self.inputs), itemsize or self.itemsize, (*count, "equation.dim"), host=host)


def memory_moments(config: Config, observations: int | None = None) -> dict[str, list[SizedTensor]]:
    """The largest tensors a run of ``config`` holds at once, by moment of the run (drawing
    the test set, a training step, an evaluation, a tuning objective, an estimator study's
    estimates), from the settings alone: no tensor is made, not even the equation's.

    A lower bound: only tensors that certainly exist together are counted, so that a run
    whose count exceeds the machine's memory cannot fit. Measured (README "Memory of one
    Stein step"), a Stein step with independent noise holds its `(N, K, D)` draw for the
    backward pass, 1.25–1.9 draws in all: counted here are the draw and each hidden layer's
    `(N, 2, K, w)` activations, not the rest, for every noise group the step's loss draws
    (:func:`_step_noise_groups`). Every registered equation is of second order
    (tests/test_config_sizes.py checks it), so autograd's Hessian-vector products and
    Hutchinson's probes are made at every step. ``observations``: the number of
    observations a ``data.source`` file holds, once it is read (synthetic ones number
    ``data.points``; a file's are counted only when given).
    """
    equation, estimator, trainer = config.equation, config.estimator, config.trainer
    width, depth = config.model.width, config.model.depth
    inputs = equation.dim + int(EQUATIONS[equation.name].time_dependent)
    sizes = _Sizes(equation.dim, inputs, width, depth, 4 if trainer.dtype == "float32" else 8)
    study = config.sections.get("study")
    trains = study is None or study.kind == "training" or study.init == "trained"
    # the network as build makes it (float32, on the CPU); training adds θ in the run's
    # dtype and the optimizer's moments (DeepXDE: its own network and adam, float32)
    copies = 1 + (2 if trainer.optimizer == "adam" else int(trainer.momentum > 0))
    first, hidden = ("model.width", "equation.dim"), ("model.width", "model.depth")
    held = [SizedTensor("the network's first layer", (width, inputs), 4, first, host=True),
            SizedTensor("the network's hidden layers", (width, width), 4, hidden, depth - 2, host=True)]
    state = [SizedTensor("the first layer's θ and optimizer state", (width, inputs), sizes.itemsize, first, copies),
             SizedTensor("the hidden layers' θ and optimizer state", (width, width), sizes.itemsize, hidden,
                         copies * (depth - 2))]
    if trains:
        held += state
    data = config.sections.get("data")
    observed = _observations(data, observations)
    if observed and (data.train or "tune" in config.sections):  # kept by the run, float64
        held.append(sizes.points(*observed, 8, host=True))

    out: dict[str, list[SizedTensor]] = {}
    test = ("trainer.test_points",)
    if trains:
        drawn = [sizes.points(trainer.test_points, "the test set, drawn in float64", test, 8, host=True)]
        if sizes.itemsize == 4:
            drawn.append(sizes.points(trainer.test_points, "the test set", test))
        out["drawing the test set"] = held + drawn
    if trains and trainer.backend == "pinnlab":
        x_test = sizes.points(trainer.test_points, "the test set", test)
        n = -(-trainer.batch_size // trainer.batch_chunks)  # the first (largest) chunk of the step's points
        residual = _residual_estimate(config, sizes, n)
        step = [sizes.points(trainer.batch_size, "a training step's points", ("trainer.batch_size",)), *residual]
        if equation.constraint == "soft":
            boundary = ("loss.boundary_points",)
            step.append(sizes.points(config.loss.boundary_points, "the boundary points", boundary))
            if estimator.kind == "stein":
                step += sizes.stein(config.loss.boundary_points, estimator.samples, estimator.noise, True,
                                    "the boundary term", boundary, "estimator.samples")
        if observed and data.train:
            step.append(sizes.points(*observed))
            if estimator.kind == "stein":  # u_σ at the step's observations (all by default), as the boundary term's
                m = min(data.batch_size or observed[0], observed[0])
                step += sizes.stein(m, estimator.samples, estimator.noise, True, "the data term", ("data.batch_size",),
                                    "estimator.samples")
        groups = _step_noise_groups(config) if estimator.kind == "stein" else 1
        # every noise group of the step's loss keeps its draw and activations for the backward pass
        training = [t._replace(copies=t.copies * groups) if any(t is r for r in residual) else t for t in step]
        out["a training step"] = held + [x_test, *training]
        if estimator.kind == "stein":  # evaluated a chunk of points at a time: at least one point
            out["an evaluation"] = held + [x_test, *sizes.stein(
                1, estimator.eval_samples or estimator.samples, estimator.noise, False, "an evaluation", (),
                "estimator.eval_samples")]
        if "tune" in config.sections:
            out.update(_tuning_moments(config, sizes, held, step, residual, observed, training))
    if trains and trainer.backend == "deepxde":
        # DeepXDE holds its N domain points and as many test points (float32 numpy, drawn
        # by pinnlab's sampler), and its exact Laplacian starts from the (N, D) gradient of
        # u with respect to the inputs
        count = ("trainer.batch_size",)
        n = trainer.batch_size
        out["a DeepXDE training step"] = held + [
            sizes.points(n, "a DeepXDE step's points", count, 4, host=True),
            sizes.points(n, "DeepXDE's test points", count, 4, host=True),
            sizes.points(n, "the input gradient of a DeepXDE step's Laplacian", count, 4)]
    if study is not None and study.kind == "estimator":
        count = ("study.points",)
        n = min(study.points, estimator.chunk_size or study.points)
        x = sizes.points(study.points, "the study's points", count)
        # ∇θ of the loss (the gradient quantity) keeps the autograd graph of every noise group
        # of the loss at once, each hidden layer of each; without it one draw at a time is made
        # (K = 10^8 reference samples were counted 14 GiB and killed at 24 GB)
        gradient = "gradient" in study.quantities

        def estimate(samples, noise, groups, what, setting):
            return [tensor for group in range(groups if gradient else 1) for tensor in sizes.stein(
                n, samples, noise, gradient, what + (f", noise group {group + 1}" if gradient and groups > 1 else ""),
                count, setting)]

        out["an estimator study's reference"] = held + [x, *estimate(
            study.reference_samples, "independent", 2, "the study's reference", "study.reference_samples")]
        split = study.unbiased_samples == "split"
        draws = [(2, k // 2 if split else k) if loss == "unbiased" else (1, k)
                 for k in study.samples for loss in study.losses]
        groups, samples = max(draws, key=lambda d: (d[0] if gradient else 1) * d[1])
        for noise in study.noise:
            out[f"an estimator study's estimates ({noise} noise)"] = held + [x, *estimate(
                samples, noise, groups, "the study's estimates", "study.samples")]
    return out or {"building the network": held}


def _residual_estimate(config: Config, sizes: _Sizes, n: int) -> list[SizedTensor]:
    """The residual estimate of a training step at its first ``n`` points."""
    estimator = config.estimator
    count = ("trainer.batch_size (or raise trainer.batch_chunks)",)
    what = "a training step"
    if estimator.kind == "stein":
        return sizes.stein(n, estimator.samples, estimator.noise, True, what, count, "estimator.samples")
    if estimator.kind == "autograd":
        return sizes.hessian_products(n, estimator.chunk_size or 64, True, what, count)
    probes = (estimator.probes, n, sizes.inputs)  # V Rademacher probes v and the products ∇²f v
    settings = (*count, "estimator.probes", "equation.dim")
    out = [SizedTensor(f"the Hessian-vector products of {what}", probes, sizes.itemsize, settings)]
    if estimator.noise == "independent":
        out += [SizedTensor(f"the probes of {what}", probes, sizes.itemsize, settings),
                SizedTensor(f"the probes' random bits of {what}", probes, 8, settings)]
    return out


def _reverse_steps(tune) -> tuple[int, str] | None:
    """The inner steps a reverse-mode hypergradient of ``tune`` (either phase) keeps for its
    backward pass, and the setting that sets them: rgu the horizon T, trgu its s."""
    from pinnlab.bilevel.reverse import DEFAULT_TRUNCATION

    kept = []
    for method, options in ((tune.method, tune.options),
                            *(((tune.then.method, tune.then.options),) if tune.then else ())):
        if method == "rgu":
            kept.append((tune.horizon, "tune.horizon"))
        elif method == "trgu":
            s = options.get("steps")
            kept.append((min(DEFAULT_TRUNCATION, tune.horizon), "tune.horizon") if s is None
                        else (int(s), "tune.options.steps"))
    return max(kept) if kept else None


def _residual_draws(config: Config) -> int:
    """The residual draws of a training step's loss, each from its own noise: biased 1,
    unbiased 2 (each at least one noise group; unbiased2 takes one per factor of a product,
    which the equation's terms decide: Allen–Cahn's u³, 3), a hybrid both losses' when its
    mix is tuned (a tensor β computes both at every step), else possibly its first alone."""
    loss = config.loss
    draws = {"biased": 1, "unbiased": 2, "unbiased1": 2, "unbiased2": 2}
    if loss.kind != "hybrid":
        return draws[loss.kind]
    return draws["biased"] + draws[loss.then] if "mix" in config.tune.tunables else 1


def _unbiased_groups(config: Config) -> int:
    """The noise groups of one unbiased2 residual draw: one per factor of the equation's
    longest product (Allen–Cahn's u³: 3; a linear equation: 1). Read off the equation's
    terms, which do not depend on its dimension, at the smallest one it takes (its
    coefficients are O(d)); 1, a lower bound, when it cannot be made there."""
    from pinnlab.equations.residual import noise_groups

    section = config.equation
    cls = EQUATIONS[section.name]
    try:
        equation = cls(cls.min_dim, seed=section.seed, constraint=section.constraint, **section.parameters())
        return len(noise_groups(equation.terms(), unbiased=True))
    except Exception:  # (a non-polynomial term is refused with the loss; parameters tied to d)
        return 1


def _step_noise_groups(config: Config) -> int:
    """The noise groups a training step's loss draws, each a Stein estimate kept for its
    backward pass: biased 1, unbiased1 2, unbiased2 2 × :func:`_unbiased_groups`; a hybrid
    its unbiased loss's once its switch step (or blend) starts, both losses' where its mix
    is fractional (a blend over two steps or more, a tuned mix), else its biased one's (a
    plateau switch may never come). Measured at d = 2000
    (tests/test_backlog_memory_check_training.py), a step kept for its backward pass what
    its groups' draws and activations make, within 1.3× of this count; one group was
    counted before, 4–5× below an unbiased2 step at Allen–Cahn."""
    loss = config.loss
    groups = {"biased": 1, "unbiased1": 2}
    kind = "unbiased2" if loss.kind == "unbiased" else loss.kind
    if kind == "unbiased2" or (kind == "hybrid" and loss.then == "unbiased2"):
        groups["unbiased2"] = 2 * _unbiased_groups(config)
    if kind != "hybrid":
        return groups[kind]
    tune = config.sections.get("tune")
    if (tune is not None and "mix" in tune.tunables) or (loss.blend is not None and loss.blend[1] - loss.blend[0] >= 2):
        return groups["biased"] + groups[loss.then]
    return groups[loss.then] if loss.switch_step is not None or loss.blend is not None else groups["biased"]


def _unrolled_step(config: Config, sizes: _Sizes, step, residual) -> list[SizedTensor]:
    """What a reverse-mode unroll keeps of each inner step for its backward pass: the
    step's own backward pass is differentiated too (a gradient of a gradient), so it
    keeps more than a training step holds. Counted (with a Stein estimator; the rest of
    ``step`` as a training step holds it): the noise of every residual draw
    (:func:`_residual_draws`), ξ and, with shared noise, σ⊙ξ, and ξ² − 1 when σ is tuned;
    each hidden layer's pre-activation and output for every draw; θ and the update's
    tensors the backward pass needs: Adam's gradient g, (1 − β₂)·g, m̂, √v̂ and √v̂ + ε,
    SGD's new θ (and its momentum buffer). Before, a step's training-step tensors and θ and
    optimizer state were counted: at d = 10⁴ about a fifth of what rgu kept
    (tests/test_backlog_memory_accounting.py measures the kept tensors)."""
    estimator, trainer, tunables = config.estimator, config.trainer, config.tune.tunables
    width, depth = config.model.width, config.model.depth
    copies = 5 if trainer.optimizer == "adam" else 1 + int(trainer.momentum > 0)
    inputs = sizes.inputs
    first, hidden = ("model.width", "equation.dim"), ("model.width", "model.depth")
    state = [SizedTensor("the first layer's θ and its update's tensors", (width, inputs), sizes.itemsize, first,
                         copies),
             SizedTensor("the hidden layers' θ and their update's tensors", (width, width), sizes.itemsize, hidden,
                         copies * (depth - 2))]
    if estimator.kind != "stein":
        return step + state
    draws = _residual_draws(config)
    out = []
    for t in step:
        ours = any(t is r for r in residual)
        if t.what.startswith("the noise draw"):  # ξ, σ⊙ξ (shared), ξ² − 1 (σ tuned: the residual's second differences)
            kept = 1 + (estimator.noise == "shared") + (ours and "sigma" in tunables)
            t = t._replace(copies=t.copies * kept * (draws if ours else 1))
        elif t.what.startswith("the hidden activations"):  # pre-activation and output of each layer
            t = t._replace(copies=t.copies * 2 * (draws if ours else 1))
        out.append(t)
    return out + state


def _observations(data, count: int | None) -> tuple[int, str, tuple[str, ...]] | None:
    """(number, name, settings) of the observations, as :meth:`_Sizes.points` takes them;
    None when there are none or their number is not known yet (a file not yet read)."""
    if data is None:
        return None
    if data.source == "synthetic":
        return data.points, "the observations", ("data.points",)
    return None if count is None else (count, "the observations", ("the observations in data.source",))


def _tuning_moments(config: Config, sizes: _Sizes, held, step, residual, observed, training
                    ) -> dict[str, list[SizedTensor]]:
    """The moments of tuning (see :func:`memory_moments`): an inner training step
    (``training``: ``step`` with every noise group of its loss) and the outer objective,
    with the objective's points (or the observations) held throughout.
    A reverse-mode hypergradient keeps what every unrolled step's backward pass needs
    (:func:`_unrolled_step`) until its own backward pass, after the objective (rgu: T
    steps; fg2u and the implicit methods hold one step at a time)."""
    objective, estimator = config.tune.objective, config.estimator
    out = {}
    n = None
    if objective.kind in ("reference", "residual"):
        n, count = objective.points, ("tune.objective.points",)
        points = [sizes.points(n, "the tuning objective's points", count)]
        out["drawing the tuning objective's points"] = held + [
            sizes.points(n, "the tuning objective's points, drawn in float64", count, 8, host=True), *points]
    elif observed:  # the observations (held) in the run's dtype
        n, count = observed[0], observed[2]
        points = [sizes.points(*observed)] if sizes.itemsize == 4 else []
    else:  # observations from a file: their number is not known before it is read (checked again after)
        points = []
    reverse = _reverse_steps(config.tune) if config.tune.inner == "pinnlab" else None
    if reverse is not None:
        kept, setting = reverse
        held = held + [t._replace(what=f"{t.what} (kept for each of {kept} unrolled steps)", copies=t.copies * kept,
                                  settings=(setting, *t.settings)) for t in _unrolled_step(config, sizes, step, residual)]
        out["a reverse-mode unroll"] = held + points
    else:
        out["a tuning step"] = held + points + training
    if n is None:
        return out
    what = "the tuning objective"
    # a hypergradient (or joint fit) differentiates the objective: its activations are kept for
    # the backward pass, at every point (a chunk's are kept too); a search or a method that takes
    # the training as a black box (zo_fg2u) only evaluates it
    method = METHODS.get(config.tune.method)
    graph = config.tune.method not in SEARCHES and not getattr(method, "takes_black_box", False)
    if objective.kind == "residual" and objective.estimator == "autograd":
        chunk_size = estimator.chunk_size if estimator.kind == "autograd" and estimator.chunk_size else 64
        out[what] = held + points + sizes.hessian_products(n, chunk_size, graph, what, count)
    elif estimator.kind == "stein" or objective.kind == "residual":  # (else a value of the raw network)
        estimate = sizes.stein(n if graph else min(n, estimator.chunk_size or n), objective.samples,
                               estimator.noise, graph, what, count, "tune.objective.samples")
        if graph:  # in the backward pass, beside the kept activations: the last hidden layer's gradients
            # with respect to its output and its input, both alive while its activation's backward runs
            # (measured: n = 5·10⁵, K = 128, width 8: peak RSS 16.4 GB, counted 15.3 GiB)
            activations = estimate[-1]
            estimate.append(activations._replace(what=f"the gradients of {what}'s last hidden layer", copies=2))
        out[what] = held + points + estimate
    return out


_MEMINFO = "/proc/meminfo"
_CGROUP = "/sys/fs/cgroup"
_PROC_CGROUP = "/proc/self/cgroup"


def _read_limit(path: str) -> int | None:
    """A cgroup limit file's bytes (None: no file, ``max``, or unreadable)."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def _cgroup_limit(swap_total: int) -> int | None:
    """The memory (RAM and the swap it may use) the cgroup of this process allows, or None
    without a limit: a container's limit, which the OOM killer enforces well below the
    machine's RAM. cgroup v2 (``memory.max`` + ``memory.swap.max``) or v1 (the lower of
    ``memory.memsw.limit_in_bytes`` and ``memory.limit_in_bytes`` + the machine's swap)."""
    try:
        with open(_PROC_CGROUP) as fh:
            lines = [line.strip().split(":", 2) for line in fh if line.count(":") >= 2]
    except OSError:
        lines = []
    v2 = [path for hierarchy, _, path in lines if hierarchy == "0"]
    v1 = [path for _, controllers, path in lines if "memory" in controllers.split(",")]
    for directory in [f"{_CGROUP}{v2[0].rstrip('/')}" if v2 else None, _CGROUP]:
        if directory is not None and (ram := _read_limit(f"{directory}/memory.max")) is not None:
            swap = _read_limit(f"{directory}/memory.swap.max")
            return ram + min(swap_total, swap if swap is not None else swap_total)
    for directory in [f"{_CGROUP}/memory{v1[0].rstrip('/')}" if v1 else None, f"{_CGROUP}/memory"]:
        if directory is None:
            continue
        # RAM + swap within memsw, RAM within the limit, swap within the machine's: an
        # unlimited memsw (~2**63) beside a RAM limit is that limit + the swap, not no limit
        both = _read_limit(f"{directory}/memory.memsw.limit_in_bytes")
        ram = _read_limit(f"{directory}/memory.limit_in_bytes")
        bounds = [v for v in (both, None if ram is None else ram + swap_total) if v is not None]
        if bounds:
            return min(bounds)
    return None


def machine_memory(device: str) -> tuple[str, int | None]:
    """The memory a run on ``device`` (a ``trainer.device`` setting) can use, in bytes, and
    its name: on CUDA the device's total memory; else the machine's RAM and swap (what
    other processes use now is not subtracted: they may end), or the limit of this
    process's cgroup when lower (a container's), or None if unknown."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        try:
            where = torch.device("cuda" if device == "auto" else device)
            return f"{where} memory", torch.cuda.get_device_properties(where).total_memory
        except (RuntimeError, AssertionError, ValueError):  # no such device: refused when it is resolved
            return "", None
    try:
        with open(_MEMINFO) as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        swap = int(fields.get("SwapTotal", "0").split()[0]) * 1024
        total = int(fields["MemTotal"].split()[0]) * 1024 + swap
        limit = _cgroup_limit(swap)  # (v1 reports "no limit" as about 2**63)
        return ("RAM", total) if limit is None or limit >= total else ("RAM (its cgroup's limit)", limit)
    except (OSError, ValueError, IndexError, KeyError):  # (not Linux)
        try:
            return "RAM", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return "", None


def available_memory() -> int | None:
    """The RAM (and swap) free for a new run now, in bytes: ``MemAvailable`` + ``SwapFree``
    of /proc/meminfo, what the kernel can give without killing (None where it cannot be
    read: not Linux). Not a limit (other processes may end), only a warning's measure."""
    try:
        with open(_MEMINFO) as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return (int(fields["MemAvailable"].split()[0]) + int(fields.get("SwapFree", "0").split()[0])) * 1024
    except (OSError, ValueError, IndexError, KeyError):
        return None


def _format_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if count < 1024 or unit == "EiB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    raise AssertionError  # pragma: no cover


def check_sizes(config: Config, observations: int | None = None) -> None:
    """Refuse a run of ``config`` that this machine cannot hold, before any tensor is made
    (a run would fill memory, Linux allowing one oversized allocation, with no message): a
    tensor beyond torch's sizes (more than :data:`TORCH_SIZE_LIMIT` elements) as an
    OverflowError, which ``pinnlab`` reports as such in one line; a run whose lower bound
    of memory (:func:`memory_moments`) exceeds :func:`machine_memory` as a
    :class:`ConfigError` naming the estimate, the memory and the settings to lower. A run
    that fits but needs more than the RAM :func:`available_memory` says is free now gets
    one warning (a refusal by the current load would make runs fail at random)."""
    moments = memory_moments(config, observations)
    for tensors in moments.values():
        for tensor in tensors:
            if tensor.copies and math.prod(tensor.shape) > TORCH_SIZE_LIMIT:
                raise OverflowError(f"{tensor.what}: {' × '.join(map(str, tensor.shape))} elements, more than "
                                    f"torch's sizes allow (2**63 - 1); lower {', '.join(tensor.settings)}")
    name, capacity = machine_memory(config.trainer.device)
    if capacity is None:
        return
    on_host = name.startswith("RAM")  # on CUDA only the device's tensors count against its memory
    needs = {moment: [t for t in tensors if on_host or not t.host] for moment, tensors in moments.items()}
    moment, tensors = max(needs.items(), key=lambda item: sum(t.nbytes for t in item[1]))
    need = sum(t.nbytes for t in tensors)
    if need > capacity:
        largest = max(tensors, key=lambda t: t.nbytes)
        raise ConfigError(
            f"this run needs at least {_format_bytes(need)} of memory at once, more than this machine's "
            f"{_format_bytes(capacity)} of {name} ({moment}; the largest part: {largest.what}, "
            f"{' × '.join(map(str, largest.shape))} values{f' × {largest.copies}' if largest.copies > 1 else ''}, "
            f"{_format_bytes(largest.nbytes)}); the sizes are too large for this machine; lower "
            f"{', '.join(largest.settings)}")
    if on_host and (available := available_memory()) is not None and need > available:
        from pinnlab._warnings import warn

        warn(f"this run needs at least {_format_bytes(need)} of memory at once, more than the "
             f"{_format_bytes(available)} of RAM available now (other processes hold the rest); it may be killed")
