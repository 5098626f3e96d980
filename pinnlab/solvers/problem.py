"""What is trained: equation, network, estimator, loss; and its objective."""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pinnlab._checks import check_integer, one_line
from pinnlab._seeding import make_generator
from pinnlab._typing import Params, inspectable
from pinnlab._warnings import warn
from pinnlab.equations.base import AbstractEquation
from pinnlab.estimators.base import AbstractDerivativeEstimator, Model
from pinnlab.estimators.stein import SteinAntithetic
from pinnlab.losses.base import AbstractLoss
from pinnlab.losses.hybrid import Hybrid

HYPERPARAMETERS = ("lr", "sigma", "mix", "weights", "coefficients", "collocation_weight")
"""The keys a training step reads from its ``hyperparams`` (``lr`` by the step, the rest by
:meth:`PINNProblem.objective`); any other key is refused."""


class AbstractLossTerm(abc.ABC):
    """An extra weighted term of the training objective (soft boundary, data, ...).

    ``name`` keys its weight in ``hyperparams["weights"]``.
    """

    name: str

    @abc.abstractmethod
    def __call__(self, context: StepContext) -> Tensor:
        """The (unweighted) scalar value of the term at this step."""

    # an optional hook (no check by default), not an abstract method
    def validate(self, equation: AbstractEquation) -> None:  # noqa: B027
        """Raise if the term cannot be used with ``equation`` (called by PINNProblem)."""


@dataclass(frozen=True)
class StepContext:
    """Everything a loss term may use at one step; randomness keyed by (seed, step)."""

    problem: PINNProblem
    params: Params
    model: Model
    hyperparams: Mapping[str, Any]
    step: int
    seed: int

    def generator(self, stream: str) -> torch.Generator:
        """A random stream of this step: the same (seed, step, stream) gives the same draws."""
        device = next(iter(self.params.values())).device
        return make_generator(self.seed, stream, self.step, device=device)


@dataclass(frozen=True)
class PINNProblem:
    """An RS-PINN training problem.

    Args:
        equation: the PDE instance.
        net: the raw network f(·; θ) (parameters are passed separately at each call).
        estimator: how derivatives of u_σ are computed.
        loss: how residual draws become the residual loss.
        batch_size: N_f, fresh collocation points per step.
        extra_terms: further weighted loss terms (soft constraints, data).
        batch_chunks: split each step's N_f points into this many chunks whose
            gradients are accumulated (every loss is a mean over points, so the sum of
            the chunk gradients, each weighted by its share of points, is the full
            gradient). The part of peak memory that grows with the batch (the noisy
            copies of the points and their activations) falls by about this factor, the
            rest (the library, the network) stays; each chunk draws its own noise (keyed
            by (seed, step, chunk)).
    """

    equation: AbstractEquation
    net: nn.Module
    estimator: AbstractDerivativeEstimator
    loss: AbstractLoss
    batch_size: int = 100
    extra_terms: tuple[AbstractLossTerm, ...] = field(default=())
    batch_chunks: int = 1

    def __post_init__(self):
        for name, kind in (("equation", AbstractEquation), ("net", nn.Module),
                           ("estimator", AbstractDerivativeEstimator), ("loss", AbstractLoss)):
            value = getattr(self, name)
            if not isinstance(value, kind):  # a name ("biased") failed later as "no attribute 'validate'"
                raise TypeError(f"{name} must be a {kind.__name__} instance, got {one_line(repr(value))}"[:200])
        stray = next((term for term in self.extra_terms if not isinstance(term, AbstractLossTerm)), None)
        if stray is not None:
            raise TypeError(f"extra_terms must be AbstractLossTerm instances, got {one_line(repr(stray))}"[:200])
        inputs = getattr(self.net, "input_dim", None)
        if inputs is not None and inputs != self.equation.input_dim:
            raise ValueError(f"net takes {inputs} input columns, {self.equation.name} has "
                             f"{self.equation.input_dim} (d = {self.equation.dim}"
                             f"{', plus time' if self.equation.time_dependent else ''})")
        if not type(self.equation).__module__.startswith("pinnlab."):  # a user's own equation: tried as the CLI tries it
            from pinnlab.config import _CHECKED_EQUATIONS, ConfigError, check_user_equation

            if self.equation not in _CHECKED_EQUATIONS:
                try:
                    check_user_equation(self.equation, None)
                except ConfigError as err:  # (a slip in the ansatz or terms failed deep inside the first step)
                    raise ValueError(str(err)) from None
        self._check_net()
        object.__setattr__(self, "_names", frozenset(name for name, _ in self.net.named_parameters()))
        check_integer("batch_size", self.batch_size)
        check_integer("batch_chunks", self.batch_chunks)
        if not 1 <= self.batch_chunks <= self.batch_size:
            raise ValueError(
                f"batch_chunks must be between 1 and batch_size ({self.batch_size}), "
                f"got {self.batch_chunks}"
            )
        names = [term.name for term in self.extra_terms]
        clash = sorted({n for n in names if n == "residual" or names.count(n) > 1})
        if clash:
            raise ValueError(
                f"extra_terms: duplicate term name(s) {clash} ('residual' is the residual's "
                "name); every term needs its own weight key"
            )
        self.estimator.validate(self.equation)
        self.loss.validate(self.equation)
        for term in self.extra_terms:
            term.validate(self.equation)
        from pinnlab.solvers.terms import ConstraintLoss  # (here: terms.py imports this module)

        if getattr(self.equation, "constraint", "hard") == "soft" and not any(
                isinstance(term, ConstraintLoss) for term in self.extra_terms):
            warn(f"{self.equation.name} has a soft constraint, and no ConstraintLoss is among extra_terms: the "
                 "problem trains without its boundary (or initial) condition (pinnlab solve adds one)")

    def _check_net(self) -> None:
        """One forward pass of the net at 2 points (and, under the Stein estimator, at a
        :class:`~pinnlab.nets.Perturbation` of them): a plain torch network of another
        input width, with an `(N, 1)` output, or one that takes only tensors under Stein
        failed at the first step with a torch error from deep inside."""
        from pinnlab.estimators.stein import SteinAntithetic  # (the classes: a name in the package may be wrapped)
        from pinnlab.nets.perturbation import Perturbation

        d = self.equation.input_dim
        param = next(self.net.parameters(), None)
        like = {} if param is None or not param.is_floating_point() else {"dtype": param.dtype,
                                                                          "device": param.device}
        x = torch.zeros(2, d, **like)
        with torch.no_grad():
            try:
                out = self.net(x)
            except Exception as err:  # noqa: BLE001 - whatever the user's network raises, named
                raise ValueError(f"net: its forward pass at (2, {d}) points of {self.equation.name} failed "
                                 f"({type(err).__name__}: {one_line(str(err))[:160]}); it must take (N, {d}) "
                                 "inputs and return (N,) values") from None
            if not isinstance(out, Tensor) or out.shape != (2,):
                shown = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"net must return one value per point, shape (N,), for (N, {d}) inputs; it "
                                 f"returned {shown} for N = 2 (end an (N, 1) output with nn.Flatten(0))")
            if isinstance(self.estimator, SteinAntithetic):
                try:
                    self.net(Perturbation(x, (torch.zeros(1, d, **like),), ((1.0,),)))
                except Exception as err:  # noqa: BLE001
                    raise TypeError(f"net: the Stein estimator passes it a pinnlab.nets.Perturbation (the noisy "
                                    f"copies of the points, factored), which it cannot take "
                                    f"({type(err).__name__}); use pinnlab.nets.MLP, or wrap a plain network "
                                    "as pinnlab.nets.Pointwise(net), which evaluates the copies") from None

    def init_params(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Params:
        """A detached copy of the network's parameters as a dict."""
        return {
            k: v.detach().to(device=device, dtype=dtype).clone()
            for k, v in self.net.named_parameters()
        }

    def model(self, params: Params) -> Model:
        """f(·; params) as a function of inputs (tensors or perturbations). ``params`` must
        name every parameter of the net: a missing one would be taken from the net itself,
        untrained (others are ignored)."""
        missing = self._names.difference(params)
        if missing:
            stray = sorted(set(params) - self._names)
            raise ValueError(f"params must name the net's parameters; missing {sorted(missing)}"
                             + (f" (given instead: {stray})" if stray else ""))
        return lambda inputs: functional_call(self.net, params, (inputs,))

    def objective(
        self, params: Params, hyperparams: Mapping[str, Any], step: int, seed: int,
        chunk: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss at ``step`` and its metrics: a pure function of its arguments.

        Collocation points come from the stream ``(seed, "collocation", step)`` and
        smoothing noise from ``(seed, "noise", step)``, so replaying a step replays its
        randomness exactly (the bilevel layer relies on this).

        Hyperparameters read (all optional): ``sigma`` (smoothing scale, float or
        tensor), ``mix`` (hybrid blend β), ``coefficients`` (PDE coefficient overrides),
        ``weights`` (dict: ``residual`` and each extra term's name),
        ``collocation_weight`` (callable x ↦ `(N,)` non-negative point weights w(x);
        the residual is scaled by √w so every loss becomes mean w·R̂R̂').

        With ``chunk=i`` only the i-th of ``batch_chunks`` slices of the step's points
        is used, its residual loss scaled by the slice's share of points (so the chunk
        losses add up to the full loss); extra terms are counted in chunk 0 only.
        """
        stray = sorted(set(hyperparams) - set(HYPERPARAMETERS))
        if stray:  # a typo ("sigam") would train with the default instead, silently
            raise ValueError(f"hyperparameters {stray} are not read by the training step "
                             f"(known: {', '.join(HYPERPARAMETERS)})")
        weights = hyperparams.get("weights", {})
        unknown = sorted(set(weights) - {"residual", *(term.name for term in self.extra_terms)})
        if unknown:  # a typo or a term this problem lacks would silently weigh nothing
            raise ValueError(f"weights {unknown} name no loss term of this problem (terms: "
                             f"{', '.join(['residual', *(term.name for term in self.extra_terms)])})")
        check_integer("step", step, minimum=0)  # 1.5 trained as step 1, "3" drew another stream
        # True is an int too, but would draw the noise stream "noise/True", not chunk 1's
        if chunk is not None and not (isinstance(chunk, int) and not isinstance(chunk, bool)
                                      and 0 <= chunk < self.batch_chunks):
            raise ValueError(f"chunk must be None or in 0..{self.batch_chunks - 1} (batch_chunks), got {chunk!r}")
        _check_values(hyperparams)
        terms, metrics = self.term_losses(params, hyperparams, step, seed, chunk)
        total = None
        for name, value in terms.items():
            weighted = _weighted(weights.get(name, 1.0), value)
            total = weighted if total is None else total + weighted
        metrics["loss"] = total.detach()
        return total, metrics

    def term_losses(
        self, params: Params, hyperparams: Mapping[str, Any], step: int, seed: int,
        chunk: int | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The unweighted terms of :meth:`objective` (``residual`` first, then the extra
        terms in order; chunks > 0 hold the residual only) and its metrics without
        ``loss``: one forward pass, so each term can be differentiated on its own
        without recomputing the others (what LRA needs)."""
        context = StepContext(self, params, self.model(params), hyperparams, step, seed)
        first = next(iter(params.values()))
        coefficients = hyperparams.get("coefficients")
        # a sampler that reads an overridden coefficient draws at the override's value
        # (an inverse problem's current estimate), not at the hidden true one
        x = self.equation.sample_collocation(
            self.batch_size, generator=context.generator("collocation"), dtype=first.dtype,
            **sampler_overrides(self.equation, coefficients),
        )
        share = 1.0
        noise_stream = "noise"
        if chunk is not None:
            x = torch.tensor_split(x, self.batch_chunks)[chunk]
            share = x.shape[0] / self.batch_size
            noise_stream = f"noise/{chunk}"
        noise = context.generator(noise_stream)
        sigma = hyperparams.get("sigma")
        if sigma is not None and not isinstance(self.estimator, SteinAntithetic):  # (taken and ignored)
            raise ValueError(f"hyperparameter 'sigma' needs a smoothing estimator (SteinAntithetic); "
                             f"{type(self.estimator).__name__} does not smooth")
        point_weight = hyperparams.get("collocation_weight")
        root_weight = None if point_weight is None else torch.sqrt(_point_weights(point_weight, x))

        def group(queries):
            return self.estimator.estimate(context.model, x, queries, generator=noise, sigma=sigma)

        def draw(unbiased: bool) -> Tensor:
            r = self.equation.residual(x, group, unbiased=unbiased, coefficients=coefficients)
            return r if root_weight is None else r * root_weight

        if isinstance(self.loss, Hybrid):
            mix = hyperparams.get("mix", 0.0)
            residual_loss, metrics = self.loss(draw, mix)
        else:
            if "mix" in hyperparams:
                raise ValueError("hyperparameter 'mix' needs a Hybrid loss")
            residual_loss, metrics = self.loss(draw)
        if share != 1.0:
            residual_loss = share * residual_loss
            metrics = {k: (v if k == "mix" else share * v) for k, v in metrics.items()}
        terms = {"residual": residual_loss}
        metrics["loss_residual"] = residual_loss.detach()
        for term in self.extra_terms if chunk in (None, 0) else ():
            value = term(context)
            metrics[f"loss_{term.name}"] = value.detach()
            terms[term.name] = value
        return terms, metrics


def _point_weights(point_weight, x: Tensor) -> Tensor:
    """w(x), checked: one finite value >= 0 per point, shape `(N,)` (an `(N, 1)` would
    broadcast the residual's `(N,)` to `(N, N)`, mean(w)·mean(R²) instead of mean(w·R²))."""
    w = point_weight(x)
    if not isinstance(w, Tensor) or w.shape != x.shape[:1]:
        shown = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
        raise ValueError(f"collocation_weight must map the ({x.shape[0]}, {x.shape[1]}) points to a "
                         f"({x.shape[0]},) tensor of weights, got {shown}")
    known = inspectable(w)
    if known is not None and not bool((torch.isfinite(known) & (known >= 0)).all()):
        raise ValueError("collocation_weight must give finite weights >= 0; got "
                         f"{int((~(torch.isfinite(known) & (known >= 0))).sum())} others")
    return w


_RANGES = {"lr": ("> 0", lambda v: v > 0), "mix": ("in [0, 1]", lambda v: (v >= 0) & (v <= 1)),
           "weights": (">= 0", lambda v: v >= 0)}
"""What a value of these hyperparameters must be, beyond finite (σ is the estimator's to
check): a negative learning rate ascends the loss, a mix outside [0, 1] extrapolates the
two losses, a negative weight rewards a large term."""


def _check_values(hyperparams: Mapping[str, Any]) -> None:
    """Refuse a learning rate, mix or loss weight out of its range (:data:`_RANGES`), a
    float or a tensor, whose values are read as :func:`~pinnlab._typing.inspectable` says
    (on the CPU, also inside the tuning layer's transforms)."""
    for key, (bound, holds) in _RANGES.items():
        if key not in hyperparams:
            continue
        values = hyperparams[key]
        named = values.items() if key == "weights" else [(None, values)]
        for name, value in named:
            where = key if name is None else f"weights[{name!r}]"
            if isinstance(value, Tensor):
                known = inspectable(value)
                if known is not None and not bool((torch.isfinite(known) & holds(known)).all()):
                    raise ValueError(f"hyperparameter {where} must be finite and {bound}, got "
                                     f"{one_line(format(known, ''))}"[:200])
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"hyperparameter {where} must be a number or a tensor, got {value!r}")
            elif not (math.isfinite(value) and holds(value)):
                raise ValueError(f"hyperparameter {where} must be finite and {bound}, got {value!r}")


def _weighted(weight, value: Tensor) -> Tensor:
    if isinstance(weight, (int, float)) and weight == 1:
        return value
    return weight * value


def sampler_overrides(equation: AbstractEquation, coefficients: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments that make ``equation``'s samplers draw at overridden
    coefficients (an inverse problem's current estimate) instead of the hidden true ones:
    ``{"coefficients": {...}}`` with those of ``coefficients`` the samplers read
    (:attr:`~pinnlab.equations.base.AbstractEquation.sampler_coefficients`), or ``{}``.
    Values are detached, so no gradient or tangent (of a training step or a
    hypergradient) flows through the points drawn at them: points are data."""
    at = {k: torch.as_tensor(v, dtype=None if torch.is_tensor(v) else torch.float64).detach()
          for k, v in (coefficients or {}).items()
          if k in equation.sampler_coefficients}
    return {"coefficients": at} if at else {}
