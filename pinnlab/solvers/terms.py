"""Extra loss terms: soft boundary/initial/terminal conditions and observation data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnlab._checks import check_integer
from pinnlab._typing import is_transform_wrapped
from pinnlab.estimators.base import Value
from pinnlab.solvers.problem import AbstractLossTerm, StepContext


def _solution_values(context: StepContext, x: Tensor, stream: str) -> Tensor:
    """u at `(M, D)` points from one value group of the problem's estimator."""
    problem = context.problem
    smoothed = problem.estimator.estimate(
        context.model, x, [Value()], generator=context.generator(stream),
        sigma=context.hyperparams.get("sigma"),
    )[0]
    return problem.equation.solution(x, smoothed, context.hyperparams.get("coefficients"))


@dataclass(frozen=True)
class ConstraintLoss(AbstractLossTerm):
    """Soft constraint: mean (u(x_b) − u*(x_b))² on fresh points where the hard ansatz
    would vanish (the sphere for unit-ball problems, t = 0 for Fokker–Planck, t = T
    for HJB), drawn every step from ``equation.sample_boundary``.

    Use it with ``constraint="soft"`` equations (identity ansatz), where the boundary,
    initial or terminal condition is otherwise not imposed at all.

    Args:
        name: weight key in ``hyperparams["weights"]`` (e.g. ``"boundary"``, ``"initial"``).
        batch_size: boundary points per step.
    """

    name: str = "boundary"
    batch_size: int = 100

    def __post_init__(self):
        _check_name(self.name)
        check_integer("ConstraintLoss.batch_size", self.batch_size)

    def __call__(self, context: StepContext) -> Tensor:
        equation = context.problem.equation
        dtype = next(iter(context.params.values())).dtype
        x = equation.sample_boundary(
            self.batch_size, generator=context.generator(f"{self.name}/points"), dtype=dtype
        )
        target = equation.boundary_value(x)
        u = _solution_values(context, x, f"{self.name}/noise")
        return ((u - target) ** 2).mean()


@dataclass(frozen=True)
class DataLoss(AbstractLossTerm):
    """Observation misfit mean_i (u(x_i) − y_i)² over fixed observations.

    Args:
        inputs: `(M, D)` observation points.
        values: `(M,)` observed values.
        name: weight key (default ``"data"``).
        batch_size: observations per step (a random subset keyed by (seed, step));
            ``None`` uses all of them every step.
    """

    inputs: Tensor
    values: Tensor
    name: str = "data"
    batch_size: int | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        _check_name(self.name)
        if not (isinstance(self.inputs, Tensor) and isinstance(self.values, Tensor)):
            raise TypeError(f"DataLoss needs tensors, got {type(self.inputs).__name__} and "
                            f"{type(self.values).__name__}")
        if self.inputs.dim() != 2 or self.values.shape != (self.inputs.shape[0],):
            raise ValueError(
                f"DataLoss needs inputs (M, D) and values (M,), got {tuple(self.inputs.shape)} "
                f"and {tuple(self.values.shape)}"
            )
        if self.inputs.shape[0] == 0:
            raise ValueError("DataLoss needs at least one observation")
        bad = int((~torch.isfinite(self.inputs).all(dim=1) | ~torch.isfinite(self.values)).sum())
        if bad:  # one NaN observation makes every step's loss NaN
            raise ValueError(f"DataLoss: {bad} of {self.inputs.shape[0]} observations are not finite")
        if self.batch_size is not None:
            check_integer("DataLoss.batch_size", self.batch_size)
            if self.batch_size > self.inputs.shape[0]:  # (it silently meant all of them)
                raise ValueError(f"DataLoss.batch_size = {self.batch_size}: more than the {self.inputs.shape[0]} "
                                 "observations; use at most that many, or None for all of them every step")

    def validate(self, equation) -> None:
        if self.inputs.shape[1] != equation.input_dim:
            raise ValueError(f"DataLoss: the observations have {self.inputs.shape[1]} columns, "
                             f"{equation.name} takes {equation.input_dim}")
        outside = observations_outside(equation, self.inputs)  # (as the config refuses them)
        if outside:
            raise ObservationsOutside(f"DataLoss: the observations hold {outside}")

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key in self._cache:
            return self._cache[key]
        converted = (self.inputs.to(device=like.device, dtype=like.dtype),
                     self.values.to(device=like.device, dtype=like.dtype))
        if not any(is_transform_wrapped(t) for t in converted):
            self._cache[key] = converted
        return converted

    def __call__(self, context: StepContext) -> Tensor:
        x, y = self._on(next(iter(context.params.values())))
        if self.batch_size is not None and self.batch_size < x.shape[0]:
            generator = context.generator(f"{self.name}/subset")
            index = torch.randperm(x.shape[0], generator=generator, device=generator.device)
            index = index[: self.batch_size].to(x.device)
            x, y = x[index], y[index]
        u = _solution_values(context, x, f"{self.name}/noise")
        return ((u - y) ** 2).mean()


class ObservationsOutside(ValueError):
    """Observation points outside the equation's domain (:meth:`DataLoss.validate`), for a
    caller that words the refusal its own way."""


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a loss term's name must be a non-empty string (its weight key), got {name!r}")


def observations_outside(equation, x: Tensor, label=None) -> str | None:
    """Why observation points ``x`` `(M, D)` lie outside ``equation``'s domain (a point
    outside the unit ball of a unit-ball problem, a time outside its interval), or None:
    the PDE holds, and the network is trained, in the domain only. ``label(i)`` names
    observation i (default "observation i (counting from 0)"; a CSV file's line)."""
    from pinnlab.io.results import is_unit_ball, point_radii

    if label is None:
        def label(i):
            return f"observation {i} (counting from 0)"

    slack = max(1e-9, 8 * torch.finfo(x.dtype).eps)  # (float32 points on the boundary round past 1 + 1e-9)
    if is_unit_ball(equation):
        radius = point_radii(x)  # (float64, block by block: no float64 copy of all M × D values)
        outside = int(radius.argmax())
        if float(radius[outside]) > 1 + slack:
            return (f"a point outside the unit ball, the domain of {equation.name}: {label(outside)} "
                    f"at ‖x‖ = {float(radius[outside]):.4g}")
    interval = equation.time_interval
    if interval is not None:
        t = x[:, -1].double()
        outside = int(torch.maximum(interval[0] - t, t - interval[1]).argmax())
        if not interval[0] - slack <= float(t[outside]) <= interval[1] + slack:
            return (f"a time outside [{interval[0]:g}, {interval[1]:g}], where {equation.name} is posed: "
                    f"{label(outside)} at t = {float(t[outside]):.4g} "
                    "(the time is x's last column)")
    return None
