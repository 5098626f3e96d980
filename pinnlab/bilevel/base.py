"""Bilevel problems, the unrolled map h(φ) = f(θ_T(φ), φ), and the estimator interface."""

from __future__ import annotations

import abc
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pinnlab._checks import check_integer, check_seed
from pinnlab._typing import Params

Phi = dict[str, Tensor]
InnerStep = Callable[[Params, Any, Phi, int], tuple[Params, Any]]
"""``(θ, optimizer_state, φ, t) -> (θ, optimizer_state)``: one pure inner step."""


@dataclass(frozen=True)
class GradientStep:
    r"""An inner step that is "gradient of a loss, then an optimizer update", in two halves.

    Ω_t(θ, s, φ) = optimizer.update(Σ_c ∇_θ ℓ_c(θ, φ, t), s, θ, rate(φ, t)), where
    ``losses(θ, φ, t)`` yields the scalar losses ℓ_c (one per point chunk, with the
    step's own randomness). Forward-mode methods then carry tangents through a step
    without forward-mode AD of the backward pass: the gradient's tangent is a
    Hessian-vector product ∇_θ⟨∇_{(θ,φ)} ℓ, (θ̇, φ̇)⟩ by double backward (one step's
    graph alive at a time, so memory stays independent of T), and the update's tangent
    comes from the optimizer's own :meth:`~pinnlab.solvers.optim.AbstractOptimizer.tangent`.

    Args:
        losses: ``(θ, φ, t) -> iterable of scalar tensors``.
        optimizer: a functional optimizer (:class:`~pinnlab.solvers.SGD`, :class:`~pinnlab.solvers.Adam`).
        rate: ``(φ, t) -> learning rate`` (a float, or a tensor that depends on φ).
    """

    losses: Callable[[Params, Phi, int], Any]
    optimizer: Any
    rate: Callable[[Phi, int], Any]

    def update(self, grads: Params, state: Any, theta: Params, phi: Phi, t: int) -> tuple[Params, Any]:
        return self.optimizer.update(grads, state, theta, self.rate(phi, t))


@dataclass(frozen=True)
class BilevelProblem:
    r"""min_φ h(φ) = f(θ_T(φ), φ), θ_t = Ω_t(θ_{t−1}, φ), t = 1..T (REFERENCE.md §6.1).

    Args:
        inner_step: Ω_t, a pure function ``(θ, state, φ, t) -> (θ, state)``; its
            randomness must be a function of ``t`` (and a fixed seed) only, so every
            direction and every estimator sees the same inner trajectory. It computes
            with φ's tensors: steps that read φ as a number (``float(φ)``) or through
            ``φ.detach()`` leave θ_T independent of φ, which the unrolling estimators
            (rgu, trgu, fg2u, fgu) refuse with a ``ValueError`` (their estimate would be 0
            through the inner problem).
        outer_loss: f(θ_T, φ) -> scalar.
        init: θ_0 and the optimizer state, either fixed ``(θ_0, state_0)`` or a function
            of φ (then ∂θ_0/∂φ enters the hypergradient).
        horizon: T, inner steps per outer evaluation.
        inner_loss: g(θ, φ, t) -> scalar; needed by implicit, Hessian-free, DARTS,
            penalty and value-function methods (they use ∇_θ g and its derivatives at θ_T).
        inner_lr: the inner step size of a problem without ``gradient_step``, the
            default α/ξ of Hessian-free and DARTS (see :meth:`step_size`). Refused with a
            ``gradient_step``, whose own rate is that default (a second value would be
            ignored); pass ``alpha``/``xi`` to those methods for another one.
        gradient_step: the same inner step in two halves (:class:`GradientStep`), when it
            is a gradient step; forward-mode methods use it for cheaper tangents. It
            must agree with ``inner_step`` exactly.
    """

    inner_step: InnerStep
    outer_loss: Callable[[Params, Phi], Tensor]
    init: tuple[Params, Any] | Callable[[Phi], tuple[Params, Any]]
    horizon: int
    inner_loss: Callable[[Params, Phi, int], Tensor] | None = None
    inner_lr: float | None = None
    gradient_step: GradientStep | None = None

    def __post_init__(self):
        check_integer("horizon T", self.horizon)
        if self.inner_lr is not None and self.gradient_step is not None:
            raise ValueError("inner_lr is for a problem without gradient_step: the gradient step's own rate is "
                             "the inner step size (give hessian_free's alpha or darts' xi for another)")

    def initial(self, phi: Phi) -> tuple[Params, Any]:
        return self.init(phi) if callable(self.init) else self.init

    def step_size(self, phi: Phi, t: int) -> float | None:
        """The inner learning rate at φ and step t: the default α/ξ of Hessian-free and DARTS.

        With a ``gradient_step`` it is the rate that step applies, ``rate(φ, t)``, so it
        follows an ``lr`` tuned in φ; otherwise the fixed ``inner_lr`` (None if not given).
        """
        if self.gradient_step is not None:
            return float(self.gradient_step.rate(phi, t))
        return self.inner_lr

    def needs_inner_loss(self, method: str) -> Callable[[Params, Phi, int], Tensor]:
        if self.inner_loss is None:
            raise ValueError(f"method {method!r} needs the problem's inner_loss g(θ, φ, t)")
        return self.inner_loss


def unroll(problem: BilevelProblem, phi: Phi, *, start: int = 0, init=None,
           steps: int | None = None) -> tuple[Params, Any]:
    """θ after ``steps`` (default T) inner steps t = start, …, start + steps − 1."""
    theta, state = problem.initial(phi) if init is None else init
    for t in range(start, start + (problem.horizon if steps is None else steps)):
        theta, state = problem.inner_step(theta, state, phi, t)
    return theta, state


def unrolled_objective(problem: BilevelProblem, *, start: int = 0, init=None) -> Callable[[Phi], Tensor]:
    """h(φ) = f(θ_T(φ), φ) as a function of φ (differentiable in either mode)."""

    def h(phi: Phi) -> Tensor:
        theta, _ = unroll(problem, phi, start=start, init=init)
        return problem.outer_loss(theta, phi)

    return h


class IndependentOfPhi(ValueError):
    """θ_T after the inner steps does not depend on φ (:func:`independent_of_phi`): a ValueError
    of its own, so that ``pinnlab tune`` can tell a user's equation module that cut φ off
    (bad input, one line) from any other error."""


def independent_of_phi(method: str) -> IndependentOfPhi:
    """The error of an estimator whose inner steps left θ_T independent of φ (its
    hypergradient would be ∂f/∂φ alone, silently: 0 through the inner problem)."""
    return IndependentOfPhi(f"{method}: θ_T after the inner steps does not depend on φ, so the hypergradient through "
                      "them is 0; a step that reads φ as a number (float(φ), φ.item()) or through φ.detach() "
                      "cuts it off: compute the step with φ's tensors")


# -- flat views of φ ----------------------------------------------------------------------
def flatten(tree: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([v.reshape(-1) for v in tree.values()])


def unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out, offset = {}, 0
    for key, value in like.items():
        out[key] = flat[offset : offset + value.numel()].reshape(value.shape)
        offset += value.numel()
    return out


def check_phi(phi: Mapping[str, Tensor]) -> None:
    if not isinstance(phi, Mapping) or not phi:
        raise TypeError("φ must be a non-empty dict of tensors")
    for key, value in phi.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"φ[{key!r}] must be a floating-point tensor, got {kind}")


# -- results -------------------------------------------------------------------------------
def peak_memory_bytes(device: torch.device | None = None) -> int:
    """CUDA: peak allocated bytes since the last reset; CPU: the process's peak RSS over its
    whole lifetime (a high-water mark: it never falls, so it says nothing about one call)."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@dataclass
class HypergradientResult:
    """An estimate of ∇h (or of the true bilevel gradient) with diagnostics.

    ``diagnostics`` holds ``seconds``, ``inner_step_evaluations``, method-specific
    entries (e.g. ``directional`` w_i) and memory, when called as ``method(...)`` or via
    :func:`hypergradient`: on CUDA ``peak_bytes``, the peak allocated bytes during the
    call (including tensors alive before it); on CPU ``rss_increase_bytes``, how far the
    call raised the process's peak RSS (0 when it stayed below an earlier high-water
    mark, so a lower bound on its own footprint).
    """

    grad: dict[str, Tensor]
    value: float | None = None
    theta: Params | None = None
    state: Any = None
    diagnostics: dict[str, Any] = field(default_factory=dict)


def check_problem(problem: Any, method: Any) -> None:
    """``problem`` is a :class:`BilevelProblem`, or a
    :class:`~pinnlab.bilevel.BlackBox` for a method that only evaluates h
    (``takes_black_box``); TypeError otherwise."""
    from pinnlab.bilevel.zeroth_order import BlackBox

    if isinstance(problem, BilevelProblem):
        return
    name = getattr(method, "name", type(method).__name__)
    if isinstance(problem, BlackBox):
        if not getattr(method, "takes_black_box", False):
            raise TypeError(f"{name} needs a BilevelProblem (its inner steps and outer loss); a BlackBox can "
                            "only be evaluated, which only zo_fg2u (ZeroOrderForwardGradient) uses")
        return
    raise TypeError(f"problem must be a BilevelProblem or a BlackBox, got {type(problem).__name__}")


class AbstractHypergradient(abc.ABC):
    """A hypergradient estimator, passed as an object (like diffrax's ``adjoint=``)."""

    name: str
    takes_black_box = False
    """True for estimators that only evaluate h, so a :class:`~pinnlab.bilevel.BlackBox` will do."""
    sees_the_update = True
    """False for estimators that differentiate the inner loss g at a point (implicit
    differentiation, DARTS) rather than the inner steps: a hyperparameter of the update
    alone, the learning rate, has a hypergradient of 0 for them."""

    def varies(self, size: int) -> bool:
        """Whether two estimates at the same φ, θ and inner steps differ (random directions
        that do not all give one estimate for ``size`` = N tuned values): averaging
        ``accumulate`` estimates of a method that does not vary averages copies."""
        return False

    @abc.abstractmethod
    def estimate(self, problem: BilevelProblem, phi: Phi, *, start: int = 0, init=None,
                 seed: int = 0, outer_step: int = 0) -> HypergradientResult:
        """Estimate the hypergradient at φ; θ_0 from ``init`` or ``problem.init``."""

    def __call__(self, problem, phi, **kwargs) -> HypergradientResult:
        check_problem(problem, self)
        check_phi(phi)
        if "seed" in kwargs:  # every estimate passes here, called directly, by hypergradient or optimize
            check_seed("seed", kwargs["seed"])
        for name in ("start", "outer_step"):
            if name in kwargs:
                check_integer(name, kwargs[name], minimum=0)
        device = next(iter(phi.values())).device
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        baseline = None if cuda else peak_memory_bytes(device)
        t0 = time.perf_counter()
        result = self.estimate(problem, phi, **kwargs)
        result.diagnostics.setdefault("seconds", time.perf_counter() - t0)
        if cuda:
            result.diagnostics.setdefault("peak_bytes", peak_memory_bytes(device))
        else:
            result.diagnostics.setdefault("rss_increase_bytes", max(0, peak_memory_bytes(device) - baseline))
        return result


def hypergradient(problem: BilevelProblem, phi: Phi, method: AbstractHypergradient,
                  **kwargs) -> HypergradientResult:
    """Estimate the hypergradient of ``problem`` at ``phi`` with ``method``.

    Example:
        >>> import torch
        >>> from pinnlab.bilevel import BilevelProblem, ReverseUnroll, hypergradient
        >>> from pinnlab.bilevel.adapters import from_inner_loss
        >>> from pinnlab.solvers import SGD
        >>> g = lambda th, phi, t: ((th["w"] - phi["a"]) ** 2).sum()
        >>> f = lambda th, phi: (th["w"] ** 2).sum()
        >>> problem = from_inner_loss(g, f, SGD(lr=0.25), {"w": torch.zeros(2)}, horizon=3)
        >>> hypergradient(problem, {"a": torch.ones(2)}, ReverseUnroll()).grad["a"].shape
        torch.Size([2])
    """
    if not isinstance(method, AbstractHypergradient):
        from pinnlab.bilevel.penalty import AbstractOuterAlgorithm

        whole = (f": {type(method).__name__} is a whole outer algorithm with its own iterates, run it "
                 "with pinnlab.bilevel.optimize" if isinstance(method, AbstractOuterAlgorithm) else "")
        raise TypeError(
            f"method must be a hypergradient estimator object (e.g. ForwardGradientUnroll()), "
            f"got {type(method).__name__}{whole}"
        )
    return method(problem, phi, **kwargs)
