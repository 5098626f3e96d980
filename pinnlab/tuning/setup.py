"""From a config with a ``tune:`` section to a bilevel problem over the PINN training step.

The inner step is :func:`pinnlab.solvers.make_train_step` of the config's own problem,
unchanged; φ reaches it only through the hyperparameters it already reads (``weights``,
``sigma``, ``mix``, ``lr``, ``coefficients``, ``collocation_weight``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pinnlab._seeding import make_generator
from pinnlab.bilevel import BilevelProblem, Identity, Log, Logit, from_train_step
from pinnlab.bilevel.parameterization import AbstractParameterization
from pinnlab.config import SEARCHES, Config, ConfigError, build, clip_text, make_estimator, make_observations
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.estimators.base import Value
from pinnlab.losses import Hybrid
from pinnlab.solvers import Constant, DataLoss, PINNProblem, make_train_step, resolve_device
from pinnlab.solvers.evaluate import reference_problem
from pinnlab.solvers.problem import sampler_overrides
from pinnlab.solvers.progress import reference_values
from pinnlab.tuning.spec import COLLOCATION, default_transform

WEIGHT_RANGE = (1e-3, 1e3)
SIGMA_RANGE = (1e-3, 1.0)
LR_RANGE = (1e-5, 1e-1)

@dataclass(frozen=True)
class Tunable:
    """One entry of φ: its initial (constrained) value, transform and search range."""

    name: str
    init: Tensor
    transform: AbstractParameterization
    low: float
    high: float


@dataclass
class TuningSetup:
    """Everything ``pinnlab tune`` needs, built once from the config."""

    config: Config
    problem: PINNProblem
    train_kwargs: dict[str, Any]
    tunables: dict[str, Tunable]
    bilevel: BilevelProblem
    to_hyperparams: Callable[[dict[str, Tensor]], dict[str, Any]]
    outer_loss: Callable[[dict[str, Tensor], dict[str, Tensor]], Tensor]
    train_step: Callable
    init: tuple[dict[str, Tensor], Any]
    observations: tuple[Tensor, Tensor] | None
    device: torch.device
    dtype: torch.dtype

    @property
    def phi0(self) -> dict[str, Tensor]:
        return {name: t.init.clone() for name, t in self.tunables.items()}

    @property
    def parameterization(self) -> dict[str, AbstractParameterization]:
        return {name: t.transform for name, t in self.tunables.items()}


# -- tunables -------------------------------------------------------------------------
def _collocation_net(input_dim: int, width: int, depth: int, seed: int, dtype) -> nn.Module:
    """w_φ(x) = 2·sigmoid(g(x)): positive, bounded, and ≡ 1 at initialisation."""
    generator = make_generator(seed, "collocation_weight", "init")
    layers: list[nn.Module] = []
    sizes = [input_dim] + [width] * (depth - 1) + [1]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(a, b, dtype=dtype)
        with torch.no_grad():
            if i == len(sizes) - 2:
                layer.weight.zero_()
                layer.bias.zero_()
            else:
                bound = 1 / math.sqrt(a)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        layers += [layer, nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def _transform(name: str, spec, low: float, high: float) -> AbstractParameterization:
    default = default_transform(name)
    kind = spec.transform or default
    if default == "logit" and kind != "logit":  # log keeps it positive, not below high
        raise ConfigError(f"tune.tunables.{name}.transform = {kind}: {name} must stay within [low, high] = "
                          f"[{low:g}, {high:g}], which only logit keeps")
    if kind == "identity" and default != "identity":
        bound = "positive" if default == "log" else "within [low, high]"
        raise ConfigError(f"tune.tunables.{name}.transform = identity: {name} must stay {bound}, which an "
                          f"unconstrained step does not keep; use {default} (the default) or logit")
    if kind == "log":
        return Log()
    if kind == "logit":
        return Logit(low, high)
    return Identity()


def make_tunables(config: Config, problem: PINNProblem, device, dtype) -> tuple[dict[str, Tunable], nn.Module | None]:
    """φ's entries from ``tune.tunables`` (validated against the built problem)."""
    equation = problem.equation
    term_names = {"residual"} | {t.name for t in problem.extra_terms}
    tunables: dict[str, Tunable] = {}
    collocation_net = None
    given_inits: dict[str, Any] = {}  # as the config gives them, before the run's dtype rounds them

    def tensor(value, shape=()) -> Tensor:
        given_inits[name] = value
        t = torch.as_tensor(value, dtype=dtype, device=device)
        if shape and t.dim() == 0:
            t = t.expand(shape).clone()
        if tuple(t.shape) != tuple(shape):
            raise ConfigError(f"tune.tunables.{name}.init: needs shape {tuple(shape)}, got {tuple(t.shape)}")
        return t

    def bounds(default: tuple[float, float]) -> tuple[float, float]:
        """The search range (low, high), the defaults where not given; refused if empty or,
        for a positive (log by default) tunable or a coefficient a search draws on a log
        scale (``transform: log``), not above 0."""
        positive = default_transform(name) == "log"
        low = spec.low if spec.low is not None else default[0]
        high = spec.high if spec.high is not None else default[1]
        if not low < high:
            raise ConfigError(f"{where}: low = {low} must be below high = {high}")
        if positive and low <= 0:
            raise ConfigError(f"{where}.low = {low}: {name} is positive (log scale); low must be > 0")
        if name.startswith("coefficients.") and spec.transform == "log" and low <= 0 \
                and config.tune.method in SEARCHES:
            given = "" if spec.low is not None else " (the default, init - 2)"
            raise ConfigError(f"{where}.low = {low:g}{given}: transform: log keeps {name} positive and "
                              f"{config.tune.method} draws it log-uniformly, so low must be > 0")
        return low, high

    for name, spec in config.tune.tunables.items():
        where = clip_text(f"tune.tunables.{name}")
        if name != COLLOCATION and (spec.width != 32 or spec.depth != 2):
            raise ConfigError(f"{where}: width/depth apply to {COLLOCATION} only")
        if spec.per_coordinate and name != "sigma":
            raise ConfigError(f"{where}.per_coordinate: applies to sigma only")
        if name.startswith("weights."):
            term = name.split(".", 1)[1]
            if term not in term_names:
                raise ConfigError(
                    f"{where}: the training loss has no term {term!r} (terms: {', '.join(sorted(term_names))}; "
                    "soft constraints need equation.constraint: soft, data terms data.train: true)"
                )
            low, high = bounds(WEIGHT_RANGE)
            init = spec.init if spec.init is not None else config.loss.weights.get(term, 1.0)
            tunables[name] = Tunable(name, tensor(init), _transform(name, spec, low, high), low, high)
        elif name == "sigma":
            if not isinstance(problem.estimator, SteinAntithetic):
                raise ConfigError(f"{where}: sigma is tuned only with estimator.kind: stein")
            low, high = bounds(SIGMA_RANGE)
            if config.estimator.time_sigma is not None and not spec.per_coordinate:
                raise ConfigError(f"{where}: estimator.time_sigma gives time its own σ, which one global σ "
                                  "would overwrite; use per_coordinate: true (time last) or drop time_sigma")
            if isinstance(config.estimator.sigma, tuple) and not spec.per_coordinate:  # (the start was
                # refused as a tune.tunables.sigma.init of the wrong shape, an init the user had not given)
                raise ConfigError(f"{where}: estimator.sigma is a list, one σ per coordinate, which one global σ "
                                  "would overwrite; use per_coordinate: true (it starts from the list) or give "
                                  "estimator.sigma one number")
            # default start: the estimator's own σ (per coordinate, with time_sigma for time)
            init = spec.init if spec.init is not None else problem.estimator.sigma
            shape = (equation.input_dim,) if spec.per_coordinate else ()
            tunables[name] = Tunable(name, tensor(init, shape), _transform(name, spec, low, high), low, high)
        elif name == "mix":
            if not isinstance(problem.loss, Hybrid):
                raise ConfigError(f"{where}: the mix needs loss.kind: hybrid")
            low, high = bounds((0.0, 1.0))
            if low < 0 or high > 1:
                raise ConfigError(f"{where}: the mix lies in [0, 1]; got low = {low}, high = {high}")
            init = spec.init if spec.init is not None else 0.5
            tunables[name] = Tunable(name, tensor(init), _transform(name, spec, low, high), low, high)
        elif name == "lr":
            low, high = bounds(LR_RANGE)
            init = spec.init if spec.init is not None else config.trainer.lr
            tunables[name] = Tunable(name, tensor(init), _transform(name, spec, low, high), low, high)
        elif name.startswith("coefficients."):
            key = name.split(".", 1)[1]
            if key not in equation.coefficients:
                known = ", ".join(sorted(equation.coefficients)) or "none"
                raise ConfigError(f"{where}: {equation.name} has no coefficient {key!r} (coefficients: {known})")
            shape = tuple(equation.coefficients[key].shape)
            init = spec.init if spec.init is not None else 0.0
            value = tensor(init, shape)
            low, high = bounds((float(value.min()) - 2.0, float(value.max()) + 2.0))
            tunables[name] = Tunable(name, value, _transform(name, spec, low, high), low, high)
        elif name == COLLOCATION:
            collocation_net = _collocation_net(equation.input_dim, spec.width, spec.depth,
                                               config.tune.seed, dtype).to(device)
            for key, value in collocation_net.named_parameters():
                full = f"{COLLOCATION}/{key}"
                tunables[full] = Tunable(full, value.detach().clone(), Identity(), -1.0, 1.0)
        else:
            raise ConfigError(
                f"{where}: unknown tunable (allowed: weights.<term>, sigma, mix, lr, coefficients.<name>, "
                f"{COLLOCATION})"
            )
    # the starts checked: none for random and optuna, which draw every trial from [low, high]
    # (a range without the default init, a coefficient's 0 or the mix's 0.5, was refused)
    starts = {} if config.tune.method in SEARCHES else tunables
    for name, t in starts.items():
        try:
            t.transform.inverse(t.init)
        except ValueError as err:  # (it did not say which value: the default init may be the one at fault)
            given = "" if config.tune.tunables[name].init is not None else " (the default)"
            value = f"{float(t.init):g}" if t.init.numel() == 1 else f"[{float(t.init.min()):g} … {float(t.init.max()):g}]"
            raw = given_inits.get(name)
            if isinstance(raw, (int, float)) and t.init.numel() == 1 and float(raw) != float(t.init):
                # (1e-50 was reported as "init = 0: must be > 0"; 0.99999999 as "init = 1")
                value = f"{raw!r} ({value} in {str(dtype).replace('torch.', '')})"
            # (low/high bound a logit's values; for log and identity they are only a search's range,
            # refused with this method: the advice to set them led to a second refusal)
            advice = "set init or low/high" if isinstance(t.transform, Logit) else "set init"
            raise ConfigError(f"tune.tunables.{name}.init = {value}{given}: {err}; {advice}") from None
    return tunables, collocation_net


def hyperparameter_map(base: dict[str, Any], collocation_net: nn.Module | None):
    """φ ↦ the training step's hyperparameters (differentiable in φ)."""

    def to_hyperparams(phi: dict[str, Tensor]) -> dict[str, Any]:
        hp = dict(base)
        weights = dict(hp.get("weights", {}))
        coefficients: dict[str, Tensor] = {}
        net_params = {}
        for name, value in phi.items():
            if name.startswith("weights."):
                weights[name.split(".", 1)[1]] = value
            elif name.startswith("coefficients."):
                coefficients[name.split(".", 1)[1]] = value
            elif name.startswith(COLLOCATION + "/"):
                net_params[name.split("/", 1)[1]] = value
            else:
                hp[name] = value
        if weights:
            hp["weights"] = weights
        if coefficients:
            hp["coefficients"] = coefficients
        if net_params:
            def point_weight(x, _p=net_params):
                return 2 * torch.sigmoid(functional_call(collocation_net, _p, (x,))[:, 0])
            hp[COLLOCATION] = point_weight
        return hp

    return to_hyperparams


# -- outer objectives ---------------------------------------------------------------------
def make_outer_loss(config: Config, problem: PINNProblem, to_hyperparams, observations, device, dtype,
                    progress: str = "off"):
    """f(θ, φ) for ``tune.objective`` (see :class:`~pinnlab.tuning.spec.ObjectiveSpec`);
    ``progress`` as :func:`~pinnlab.solvers.progress.reference_values` takes it (an
    equation's long reference computation, hjb_rosenbrock's, is announced and timed)."""
    spec = config.tune.objective
    equation = problem.equation
    seed = spec.seed
    estimator = problem.estimator
    if isinstance(estimator, SteinAntithetic):
        estimator = dataclasses.replace(estimator, num_samples=spec.samples)

    def prediction(theta, hp, x, stream):
        model = problem.model(theta)
        smoothed = estimator.estimate(model, x, [Value()], generator=make_generator(seed, stream, device=device),
                                      sigma=hp.get("sigma"))[0]
        return equation.solution(x, smoothed, hp.get("coefficients"))

    if spec.kind == "data":
        if observations is None:
            raise ConfigError("tune.objective.kind = 'data': needs observations (add a data: section)")
        x_obs, y_obs = (t.to(device=device, dtype=dtype) for t in observations)

        def outer(theta, phi):
            hp = to_hyperparams(phi)
            return ((prediction(theta, hp, x_obs, "outer/data") - y_obs) ** 2).mean()

        return outer
    def draw(**overrides):
        """The held-out points (``coefficients=``: drawn at those values, not the true ones)."""
        return equation.sample_test(spec.points, generator=make_generator(seed, "outer/points"),
                                    dtype=torch.float64, **overrides).to(device=device, dtype=dtype)

    if spec.kind == "reference":
        points = draw()
        exact = reference_values(equation, points, progress).to(dtype)
        reference = reference_problem(exact)
        if reference:  # the objective divides by ‖u*‖²: NaN or inf at every φ
            raise ConfigError(f"tune.objective: kind reference needs a usable exact solution, but {reference}; "
                              "use another objective, more objective.points or trainer.dtype: float64")
        norm = (exact ** 2).sum()

        def outer(theta, phi):
            hp = to_hyperparams(phi)
            return ((prediction(theta, hp, points, "outer/reference") - exact) ** 2).sum() / norm

        return outer
    if spec.estimator == "autograd" and "sigma" in config.tune.tunables:
        raise ConfigError("tune.objective.estimator = 'autograd': the exact residual of the raw network does not "
                          "depend on σ, so it cannot score a tuned sigma; use estimator: stein")
    if spec.estimator == "autograd":  # autograd training: its chunk_size (HVPs per batch) too
        residual_estimator = estimator if isinstance(estimator, Autograd) else Autograd()
    elif isinstance(estimator, SteinAntithetic):
        residual_estimator = estimator
    else:
        # the training smooths nothing (it fits the raw f): Stein at the estimator section's
        # σ, time_sigma, noise and time_smoothing, which that training leaves unused
        residual_estimator = dataclasses.replace(
            make_estimator(config.estimator.model_copy(update={"kind": "stein"}), equation),
            num_samples=spec.samples,
        )
        residual_estimator.validate(equation)

    # drawn once here, unless the sampler reads a tuned coefficient (an inverse problem):
    # then every evaluation draws them at its current value, as the training steps do
    tuned = {name.partition(".")[2] for name in config.tune.tunables if name.startswith("coefficients.")}
    points = None if tuned & set(equation.sampler_coefficients) else draw()

    def held_out(coefficients):
        overrides = sampler_overrides(equation, coefficients)
        return draw(**overrides) if overrides else points

    def outer(theta, phi):
        hp = to_hyperparams(phi)
        model = problem.model(theta)
        generator = make_generator(seed, "outer/residual", device=device)
        x = held_out(hp.get("coefficients"))

        def group(queries):
            return residual_estimator.estimate(model, x, queries, generator=generator, sigma=hp.get("sigma"))

        r = equation.residual(x, group, unbiased=False, coefficients=hp.get("coefficients"))
        return (r ** 2).mean()

    return outer


# -- everything -----------------------------------------------------------------------------
DEEPXDE_TUNABLES = ("lr", "weights.residual", "weights.boundary")
"""What ``tune.inner: deepxde`` tunes: DeepXDE's learning rate and ``loss_weights``."""


def build_tuning(config: Config, progress: str = "off") -> TuningSetup:
    """The tuning problem of a validated config with a ``tune:`` section (``progress``: the
    display mode; "off" says nothing, also of a long reference computation)."""
    if "tune" not in config.sections:
        raise ConfigError("tune: required section is missing for `pinnlab tune`")
    if config.tune.inner == "deepxde":  # (before the tunables' own advice: a hybrid loss, data.train, ...)
        bad = [n for n in config.tune.tunables if n not in DEEPXDE_TUNABLES]
        if bad:
            raise ConfigError(f"tune.tunables.{bad[0]}: with tune.inner: deepxde only {', '.join(DEEPXDE_TUNABLES[:-1])} "
                              f"and {DEEPXDE_TUNABLES[-1]} can be tuned")
    problem, kwargs = build(config)
    device = resolve_device(kwargs["device"])
    dtype = kwargs["dtype"]
    tunables, collocation_net = make_tunables(config, problem, device, dtype)
    observations = None
    if "data" in config.sections:  # the observations a data term trains on, or read them now
        trained = next((term for term in problem.extra_terms if isinstance(term, DataLoss)), None)
        observations = ((trained.inputs, trained.values) if trained is not None
                        else make_observations(config, problem.equation))
    to_hyperparams = hyperparameter_map(kwargs["hyperparams"], collocation_net)
    outer = make_outer_loss(config, problem, to_hyperparams, observations, device, dtype, progress)
    optimizer = kwargs["optimizer"]
    step = make_train_step(problem, optimizer, seed=kwargs["seed"], schedule=Constant())
    params = problem.init_params(device=device, dtype=dtype)
    init = (params, optimizer.init(params))
    bilevel = from_train_step(step, to_hyperparams, outer, init, horizon=config.tune.horizon)
    return TuningSetup(config, problem, kwargs, tunables, bilevel, to_hyperparams, outer, step, init,
                       observations, device, dtype)
