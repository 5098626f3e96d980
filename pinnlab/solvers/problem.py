"""What is trained: equation, network, estimator, loss; and its objective."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pinnlab._seeding import make_generator
from pinnlab._typing import Params
from pinnlab.equations.base import AbstractEquation
from pinnlab.estimators.base import AbstractDerivativeEstimator, Model
from pinnlab.losses.base import AbstractLoss
from pinnlab.losses.hybrid import Hybrid


class AbstractLossTerm(abc.ABC):
    """An extra weighted term of the training objective (soft boundary, data, ...).

    ``name`` keys its weight in ``hyperparams["weights"]``.
    """

    name: str

    @abc.abstractmethod
    def __call__(self, context: StepContext) -> Tensor:
        """The (unweighted) scalar value of the term at this step."""


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
    """

    equation: AbstractEquation
    net: nn.Module
    estimator: AbstractDerivativeEstimator
    loss: AbstractLoss
    batch_size: int = 100
    extra_terms: tuple[AbstractLossTerm, ...] = field(default=())

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.loss.validate(self.equation)

    def init_params(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Params:
        """A detached copy of the network's parameters as a dict."""
        return {
            k: v.detach().to(device=device, dtype=dtype).clone()
            for k, v in self.net.named_parameters()
        }

    def model(self, params: Params) -> Model:
        """f(·; params) as a function of inputs (tensors or perturbations)."""
        return lambda inputs: functional_call(self.net, params, (inputs,))

    def objective(
        self, params: Params, hyperparams: Mapping[str, Any], step: int, seed: int
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
        """
        context = StepContext(self, params, self.model(params), hyperparams, step, seed)
        first = next(iter(params.values()))
        x = self.equation.sample_collocation(
            self.batch_size, generator=context.generator("collocation"), dtype=first.dtype
        )
        noise = context.generator("noise")
        sigma = hyperparams.get("sigma")
        coefficients = hyperparams.get("coefficients")
        point_weight = hyperparams.get("collocation_weight")
        root_weight = None if point_weight is None else torch.sqrt(point_weight(x))

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
        weights = hyperparams.get("weights", {})
        total = _weighted(weights.get("residual", 1.0), residual_loss)
        metrics["loss_residual"] = residual_loss.detach()
        for term in self.extra_terms:
            value = term(context)
            metrics[f"loss_{term.name}"] = value.detach()
            total = total + _weighted(weights.get(term.name, 1.0), value)
        metrics["loss"] = total.detach()
        return total, metrics


def _weighted(weight, value: Tensor) -> Tensor:
    if isinstance(weight, (int, float)) and weight == 1:
        return value
    return weight * value
