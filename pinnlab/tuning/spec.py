"""The ``tune:`` section of a config: what is tuned, against what, and how."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, Field, field_validator

from pinnlab._fields import SECTION_CONFIG, Bool, Float, Int, Seed

Beta = Annotated[Float, Field(ge=0, lt=1)]

SEARCH_METHODS = ("random", "optuna", "joint")
"""Baselines run by the same harness as the bilevel methods."""

COLLOCATION = "collocation_weight"
"""The tunable collocation-weighting network w_φ(x)."""

DEFAULT_TRANSFORMS = {"weights.": "log", "sigma": "log", "lr": "log", "mix": "logit", "coefficients.": "identity"}
"""The transform of a tunable whose spec gives none, by name (a key ending in ``.`` by
prefix): log keeps loss weights, σ and lr positive, logit the mix within [low, high], and
PDE coefficients are unconstrained. The collocation_weight network has none: its
parameters are stepped as they are. (Config validation reads it too.)"""


def default_transform(name: str) -> str | None:
    """The :data:`DEFAULT_TRANSFORMS` entry of tunable ``name``, or None."""
    for key, kind in DEFAULT_TRANSFORMS.items():
        if name == key or (key.endswith(".") and name.startswith(key)):
            return kind
    return None


SEEDED = ("fg2u", "zo_fg2u", "random", "optuna")
"""Tuning methods that draw at random (directions, trials), seeded by ``tune.seed``."""


def uses_seed(method: str, then: str | None, tunables) -> bool:
    """Whether ``tune.seed`` acts for these methods (first phase, second phase or None)
    and tunable names: a method of :data:`SEEDED`, or the collocation_weight network's
    initialisation."""
    return method in SEEDED or then in SEEDED or COLLOCATION in tunables


class _Spec(BaseModel):
    model_config = SECTION_CONFIG


class TunableSpec(_Spec):
    """One tuned hyperparameter.

    ``init`` defaults to the config's own value (loss weight, σ, lr) or, for PDE
    coefficients, to zeros; ``transform`` defaults to ``log`` for positive quantities,
    ``logit`` for the mix and ``identity`` for coefficients. ``low``/``high`` bound a
    logit transform and give the range searched by the random and TPE baselines (given
    for a log or identity transform with any other method, they are refused).
    ``per_coordinate`` (σ only) tunes one σ per input coordinate (time last), from ``init``
    or else the estimator's own σ: ``estimator.sigma``, which may be a list of
    ``equation.dim`` values, one per space coordinate (a global σ, which would overwrite
    it, is refused over a list), and ``estimator.time_sigma``, where given, for time. The
    tuned vector, ``/tune/tuned/sigma``, runs again in ``pinnlab solve`` as
    ``estimator.sigma=[s1,s2,…]`` (its space entries) and, with time,
    ``estimator.time_sigma`` (its last entry). ``width``/``depth`` size the
    collocation-weighting network (``collocation_weight`` only).
    """

    init: Float | list[Float] | None = None
    transform: Literal["log", "logit", "identity"] | None = None
    low: Float | None = None
    high: Float | None = None
    per_coordinate: Bool = False
    width: Int = Field(32, ge=1)
    depth: Int = Field(2, ge=2)


class ObjectiveSpec(_Spec):
    """The outer objective f(θ_T, φ).

    - ``data``: mean squared misfit of u at the ``data:`` observations;
    - ``residual``: mean squared PDE residual on ``points`` fresh held-out points, with
      exact autograd derivatives (``estimator: autograd``) or a Stein estimate with
      ``samples`` draws (``estimator: stein``), whatever the training estimator. Stein
      smooths with the training's σ (the tuned σ if σ is tuned) and noise mode; autograd
      or Hutchinson training fits the raw network f, so there Stein uses the σ,
      ``time_sigma``, ``noise`` and ``time_smoothing`` of the ``estimator:`` section (σ
      1e-2 by default), scoring f smoothed at that σ. Autograd differentiates the raw
      network f, not the smoothed u_σ the data and reference objectives (and the solver's
      reported solution) use under Stein training; that is close for small σ, but it does
      not depend on σ, so σ cannot be tuned with it;
    - ``reference``: squared relative L2 error against the exact solution on ``points``
      test points (benchmark mode, needs an exact solution).

    ``seed`` draws the objective's own randomness (its Stein noise, its held-out or test
    points), apart from the training's ``trainer.seed``.

    ``training_loss`` is refused: minimising the weighted training loss over its own
    weights sends the weights to zero.
    """

    kind: Literal["data", "residual", "reference"] = "data"
    points: Int = Field(256, ge=1)
    estimator: Literal["autograd", "stein"] = "stein"
    samples: Int = Field(256, ge=1)
    seed: Seed = 0

    @field_validator("kind", mode="before")
    @classmethod
    def _not_the_training_loss(cls, kind):
        if kind == "training_loss":  # refused with the reason, not listed as a choice
            raise ValueError("the outer objective must differ from the weighted training loss (minimising "
                             "that over its own weights sends them to zero); use data, residual or reference")
        return kind


class PhaseSpec(_Spec):
    """Second phase of a two-phase schedule: ``method`` from outer step ``after`` on,
    with the outer learning rate ``outer_lr`` (default: the first phase's) and the outer
    optimizer's state cleared at the switch (a fresh Adam from Phase I's φ)."""

    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    after: Int = Field(ge=1)
    outer_lr: Float | None = Field(None, gt=0)


class TuneSection(_Spec):
    """``tune:`` bilevel tuning of PINN hyperparameters (``pinnlab tune``).

    ``outer_steps`` outer steps, each unrolling ``horizon`` inner training steps
    (warm-started from the previous θ_T unless ``warm_start: false``); ``method`` is any
    hypergradient method of :mod:`pinnlab.bilevel` (``fg2u``, ``rgu``, ``trgu``,
    ``hessian_free``, ``zo_fg2u``, ...; ``options`` are its constructor arguments) or a
    baseline: ``random`` and ``optuna`` (TPE) search, each trial training
    ``trial_steps`` steps (default 10 × ``horizon``; with ``trial_steps`` given,
    ``horizon`` is refused) from the initial network, and ``joint`` (single-level
    training of θ and the PDE coefficients together on residual + data loss).
    The inner steps train at the constant ``trainer.lr`` (or the tuned ``lr``) and, for a
    hybrid loss whose mix is not tuned, with the loss before the switch (mix 0): the
    trainer's schedule and switch step count the final solve's steps, which tuning
    does not know in advance; the final solve applies both.
    ``outer_betas`` are Adam's (β₁, β₂) for φ; (0, 0) makes every outer step
    ``outer_lr``·sign(g) per coordinate, so the φ history shows the hypergradient's sign.
    ``budget_seconds`` caps any method's wall-clock time: an outer step or trial starts
    only if the mean length of the finished ones says it ends within the budget. The final
    solve (``final_steps``, default ``trainer.steps``) uses the tuned values; a tuned
    mix is replayed as the schedule it followed during tuning. ``final_init: continue``
    starts the final solve from the network the tuning trained (the warm-started θ of a
    hypergradient method, the best trial of a search, the jointly fitted θ) instead of
    the initialisation, so the tuning time also counts as training. ``inner: deepxde`` tunes
    DeepXDE's training as a black box (``loss_weights`` and ``lr``; ``zo_fg2u``, random
    or optuna). ``seed`` seeds what is random in the tuning itself: fg2u's and zo_fg2u's
    directions (in either phase), the searches' draws and the collocation_weight network's
    initialisation; the inner training's noise and points follow ``trainer.seed``.
    """

    method: str = "fg2u"
    options: dict[str, Any] = Field(default_factory=dict)
    then: PhaseSpec | None = None
    tunables: dict[str, TunableSpec] = Field(min_length=1)
    objective: ObjectiveSpec = ObjectiveSpec()
    outer_steps: Int = Field(20, ge=1)
    horizon: Int = Field(10, ge=1)
    warm_start: Bool = True
    outer_lr: Float = Field(0.05, gt=0)
    outer_optimizer: Literal["adam", "sgd"] = "adam"
    outer_betas: tuple[Beta, Beta] = (0.9, 0.999)
    accumulate: Int = Field(1, ge=1)
    budget_seconds: Float | None = Field(None, gt=0)
    trial_steps: Int | None = Field(None, ge=1)
    final_steps: Int | None = Field(None, ge=1)
    final_init: Literal["scratch", "continue"] = "scratch"
    checkpoint_every: Int = Field(1, ge=0)
    seed: Seed = 0
    inner: Literal["pinnlab", "deepxde"] = "pinnlab"

    @property
    def seeded(self) -> bool:
        """Whether ``seed`` acts: a method in either phase draws at random (:data:`SEEDED`)
        or the collocation_weight network is tuned (its initialisation)."""
        return uses_seed(self.method, self.then.method if self.then is not None else None, self.tunables)

    @property
    def horizon_acts(self) -> bool:
        """Whether ``horizon`` acts: it is every method's unroll (joint fitting's steps per
        outer step) but for a search only the default trial length, 10 × horizon, which a
        given ``trial_steps`` replaces."""
        return self.method not in ("random", "optuna") or self.trial_steps is None

    def outer_optimizer_for(self, params):
        """The configured outer optimiser over the tensors ``params`` (a torch.optim
        optimizer: Adam at ``outer_lr``, ``outer_betas`` or SGD at ``outer_lr``); the one
        builder used by the bilevel driver and by joint fitting."""
        if self.outer_optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.outer_lr)
        return torch.optim.Adam(params, lr=self.outer_lr, betas=self.outer_betas)
