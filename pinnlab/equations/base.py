"""The equation interface: domain samplers, exact solution, residual structure, ansatz."""

from __future__ import annotations

import abc
import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from pinnlab._checks import check_integer, check_seed
from pinnlab._seeding import make_generator
from pinnlab._typing import is_transform_wrapped
from pinnlab.equations.fields import ONE, ZERO, Jet, solution_fields
from pinnlab.equations.residual import estimate_residual, is_linear, is_unbiasable
from pinnlab.equations.terms import Coefficients, ResidualTerm
from pinnlab.estimators.base import Query

GroupEstimate = Callable[[Sequence[Query]], list[Tensor]]
"""Answers raw queries about u_σ; every call is one independent noise group."""

#: elements (points × D) of the largest block of points that :meth:`AbstractEquation.exact`,
#: ``boundary_value`` and ``solution`` evaluate at once. A closed form or an ansatz makes a
#: few `(N, D)` temporaries of 32 MB each (float64) at 2²² elements, whatever d; the
#: 64×64 slice's u* at d = 10⁵ in one block needed an estimated 37 GB.
POINT_ELEMENT_BUDGET = 2**22

#: the methods that take `(N, D)` points and that every subclass's own definition gets
#: wrapped with the shape check and the chunking (see ``AbstractEquation.__init_subclass__``)
_POINTWISE_METHODS = ("exact", "boundary_value")


def rows_per_chunk(width: int) -> int:
    """Points per block of :data:`POINT_ELEMENT_BUDGET` elements for `(N, width)` points."""
    return max(1, POINT_ELEMENT_BUDGET // max(1, int(width)))


def map_point_chunks(fn: Callable[..., Tensor], x: Tensor, *per_point: Tensor) -> Tensor:
    """``fn(x, *per_point)`` evaluated over blocks of :func:`rows_per_chunk` rows and
    concatenated: `(N, ...)`. One call when x fits in one block (so a small input, e.g.
    inside a ``torch.func`` transform, takes exactly the unchunked path); ``per_point``
    tensors are split along their first dimension with x."""
    rows = rows_per_chunk(x.shape[-1])
    if x.shape[0] <= rows:
        return fn(x, *per_point)
    return torch.cat([
        fn(x[start : start + rows], *(t[start : start + rows] for t in per_point))
        for start in range(0, x.shape[0], rows)
    ])


def _one_per_point(equation, name: str, values, x: Tensor, *, constant: bool = False) -> Tensor:
    """``values`` of ``equation.name(x)``, checked to be one tensor value per point, `(N,)`
    (``constant``: or one number for all, as a source may be): an `(N, 1)` column broadcast
    against `(N,)` into `(N, N)` and a custom equation then trained, tuned or was measured
    against the wrong problem, silently."""
    if constant and (isinstance(values, (int, float)) or (isinstance(values, Tensor) and values.dim() == 0)):
        return values
    if not isinstance(values, Tensor) or values.shape != x.shape[:1]:
        shown = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{equation.name}.{name} must return one value per point, shape ({x.shape[0]},) "
                         f"for ({x.shape[0]}, {x.shape[1]}) points; it returned {shown}")
    return values


def _pointwise(method: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``method(self, x, ...)``, with x checked to be `(N, D)` and evaluated in blocks."""

    @functools.wraps(method)
    def checked_and_chunked(self, x, *args, **kwargs):
        self._check_points(x)
        return map_point_chunks(lambda block: _one_per_point(self, method.__name__, method(self, block, *args, **kwargs),
                                                             block), x)

    checked_and_chunked._pinnlab_pointwise = True
    return checked_and_chunked


class AbstractEquation(abc.ABC):
    """A PDE problem instance: R[u](x) = 0 on a domain, with an exact solution.

    Subclasses declare (class attributes) ``name``, ``time_dependent``,
    ``published_dims``, ``domain`` (``"unit_ball"`` for B^d = {‖x‖ < 1}: the result
    file then holds the error against ‖x‖ and slices x₁ × x₂ over [−1, 1]² with the
    other coordinates at 0; None, the default, for any other domain) and implement:

    - :meth:`sample_collocation` (and optionally :meth:`sample_test`,
      :meth:`sample_boundary`): samplers that draw from a ``generator`` only;
    - :meth:`exact`: u*(x), `(N,)`;
    - :meth:`terms` and :meth:`source`: the residual R = Σ terms − source, as
      :class:`~pinnlab.equations.Term` / :class:`~pinnlab.equations.Nonpolynomial`
      objects, which is what lets the unbiased losses be built automatically;
    - :meth:`ansatz` (optional): the hard constraint u = A·u_σ + B as closed-form jets.

    A subclass's own ``exact`` and ``boundary_value`` are wrapped when the class is
    created: they receive only `(N, D)` points (anything else is a ValueError naming the
    expected width) and at most :data:`POINT_ELEMENT_BUDGET` elements at a time (a call
    on more points is evaluated block by block and concatenated), so u* of every
    equation takes bounded memory at any d and any N; write them for one block.
    :meth:`solution` evaluates the ansatz in the same blocks.

    Random PDE coefficients are drawn once, in ``__init__``, from the *problem seed*
    (``seed``), never from the training seed, so all training seeds solve the same
    instance. The test set is drawn from the problem seed too.

    Args:
        dim: d, the spatial dimension (inputs have D = d + 1 columns with time).
        seed: the problem seed (coefficients and test set).
        constraint: ``"hard"`` (ansatz, the [RS] setting) or ``"soft"`` (identity
            ansatz; boundary/initial conditions become loss terms).
    """

    name: ClassVar[str]
    time_dependent: ClassVar[bool] = False
    published_dims: ClassVar[tuple[int, ...]] = ()
    min_dim: ClassVar[int] = 1
    domain: ClassVar[Literal["unit_ball"] | None] = None
    time_interval: tuple[float, float] | None = None
    """[0, T] of the time coordinate (the last input column) on which the PDE is posed
    and trained, or ``None`` (no time, or not declared): observations outside it are
    refused."""
    sampler_coefficients: ClassVar[tuple[str, ...]] = ()
    """Coefficients the collocation sampler depends on (Fokker–Planck: the drift ``mu``);
    its ``sample_collocation`` then takes ``coefficients=`` overrides of them. A training
    step that overrides one (an inverse problem recovering it) draws its points at the
    override, so they do not carry the true value the problem hides."""

    def __init__(self, dim: int, *, seed: int = 0, constraint: Literal["hard", "soft"] = "hard"):
        # (a string '5' read "got 5"; None was int()'s own TypeError)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Real) or int(dim) != dim or dim < self.min_dim:
            raise ValueError(f"{self.name}: dim must be an integer >= {self.min_dim}, got {dim!r}")
        if constraint not in ("hard", "soft"):
            raise ValueError(f"constraint must be 'hard' or 'soft', got {constraint!r}")
        check_seed("seed", seed)  # (1.7 became seed 1)
        self.dim = int(dim)
        self.seed = int(seed)
        self.constraint = constraint
        self.coefficients: Coefficients = self.draw_coefficients(
            make_generator(self.seed, self.name, "coefficients")
        )
        self._coefficient_cache: dict[tuple, Coefficients] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _POINTWISE_METHODS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_pinnlab_pointwise", False):
                setattr(cls, name, _pointwise(method))

    # -- description --------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        """D: columns of an input point (d, plus one for time)."""
        return self.dim + int(self.time_dependent)

    def parameters(self) -> dict[str, Any]:
        """Constructor arguments other than ``dim`` and ``seed`` (for configs and listings)."""
        return {"constraint": self.constraint}

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.parameters().items())
        return f"{type(self).__name__}(dim={self.dim}, seed={self.seed}, {extra})"

    # -- problem instance -----------------------------------------------------------
    def draw_coefficients(self, generator: torch.Generator) -> Coefficients:
        """Random PDE coefficients of this instance (float64, CPU); none by default."""
        return {}

    def coefficients_like(self, x: Tensor) -> Coefficients:
        """The coefficients on x's device and dtype (cached, except copies made inside a
        torch.func transform, which must not outlive it)."""
        key = (x.device, x.dtype)
        if key in self._coefficient_cache:
            return self._coefficient_cache[key]
        converted = {k: v.to(device=x.device, dtype=x.dtype) for k, v in self.coefficients.items()}
        if not any(is_transform_wrapped(v) for v in converted.values()):
            self._coefficient_cache[key] = converted
        return converted

    def _merge(self, x: Tensor, coefficients: Coefficients | None) -> Coefficients:
        """The instance's coefficients with ``coefficients`` (overrides, e.g. an inverse
        problem's estimate) in their place, each in x's dtype and of its coefficient's
        shape; an override that names no coefficient of the equation is refused (it would
        be ignored)."""
        base = self.coefficients_like(x)
        if not coefficients:
            return base
        unknown = sorted(set(coefficients) - set(base))
        if unknown:
            raise ValueError(f"coefficients {unknown} are not coefficients of {self.name} "
                             f"(it has {', '.join(sorted(base)) or 'none'})")
        merged = dict(base)
        for name, value in coefficients.items():
            # a number becomes x's dtype directly (as_tensor alone would round it to float32)
            value = torch.as_tensor(value, device=x.device, dtype=None if torch.is_tensor(value) else x.dtype)
            if value.shape != base[name].shape:
                raise ValueError(f"coefficient {name!r} of {self.name} has shape {tuple(base[name].shape)}, "
                                 f"got an override of shape {tuple(value.shape)}")
            merged[name] = value.to(dtype=x.dtype)
        return merged

    # -- samplers -------------------------------------------------------------------
    @abc.abstractmethod
    def sample_collocation(
        self, n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """`(n, D)` training points on the generator's device."""

    def sample_test(
        self, n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32, **overrides: Any
    ) -> Tensor:
        """`(n, D)` test points; the collocation distribution unless overridden.
        ``overrides`` (``coefficients=`` of :attr:`sampler_coefficients`) go to
        :meth:`sample_collocation`."""
        return self.sample_collocation(n, generator=generator, dtype=dtype, **overrides)

    def sample_boundary(
        self, n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """`(n, D)` points where the ansatz scale A vanishes (boundary / initial slice)."""
        raise NotImplementedError(f"{self.name} defines no boundary sampler")

    def test_set(
        self, n: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """The fixed, seeded test set: a function of the problem seed and n only."""
        check_integer("n", n)
        generator = make_generator(self.seed, self.name, "test", n)
        return self.sample_test(n, generator=generator, dtype=torch.float64).to(
            device=device, dtype=dtype
        )

    # -- solution and residual ------------------------------------------------------
    @abc.abstractmethod
    def exact(self, x: Tensor, coefficients: Coefficients | None = None) -> Tensor:
        """u*(x) at `(N, D)` points, `(N,)` (a subclass's definition is wrapped: checked,
        and called on blocks of at most :data:`POINT_ELEMENT_BUDGET` elements)."""

    def exact_values(self, x: Tensor, *, dtype: torch.dtype = torch.float64) -> Tensor:
        """u*(x) computed in ``dtype`` (float64 by default) whatever x's dtype: `(N,)` in
        ``dtype``. The reference values of a test set: each block of x is converted on its
        own, where ``exact(x.double())`` first copies all of x (1.6 GB for 2,000 float32
        points at d = 10⁵). Same values as ``exact(x.to(dtype))``."""
        self._check_points(x)
        return map_point_chunks(lambda block: self.exact(block.to(dtype)), x).to(dtype)

    def reference_work(self, x: Tensor) -> str | None:
        """A line saying what :meth:`exact_values` at ``x`` is about to compute, when that is
        long work a run should announce (a Monte Carlo reference not yet cached: minutes
        before the first training step); None for a closed form, the default."""
        return None

    def boundary_value(self, x: Tensor) -> Tensor:
        """u* at points of :meth:`sample_boundary` (the soft constraint's target), `(N,)`:
        :meth:`exact` unless an equation knows it more cheaply there. Called inside
        ``torch.func`` transforms (the soft-constraint loss draws its points in the
        training step), so it must be a closed form, not a cached reference."""
        return self.exact(x)

    @abc.abstractmethod
    def terms(self) -> tuple[ResidualTerm, ...]:
        """The residual's terms (see :mod:`pinnlab.equations.terms`)."""

    def source(self, x: Tensor, coefficients: Coefficients) -> Tensor | float:
        """The forcing f in R = Σ terms − f, in closed form; 0 by default."""
        return 0.0

    def ansatz(self, x: Tensor, coefficients: Coefficients) -> tuple[Jet, Jet]:
        """(A, B) of the hard constraint u = A·u_σ + B; identity by default."""
        return ONE, ZERO

    def ansatz_jets(self, x: Tensor, coefficients: Coefficients | None = None) -> tuple[Jet, Jet]:
        """The ansatz in use at `(N, D)` points: :meth:`ansatz` when hard-constrained,
        identity when soft."""
        self._check_points(x)
        if self.constraint == "soft":
            return ONE, ZERO
        return self.ansatz(x, self._merge(x, coefficients))

    def _check_points(self, x: Tensor) -> None:
        """Raise a ValueError unless x is `(N, D)` with D = :attr:`input_dim` (shape only,
        so it is safe inside torch.func transforms)."""
        if not isinstance(x, Tensor):  # (a NumPy array: "'numpy.ndarray' object has no attribute 'dim'")
            raise TypeError(f"{self.name}: points x must be a torch tensor (N, {self.input_dim}), got "
                            f"{type(x).__module__}.{type(x).__qualname__} (torch.as_tensor converts an array)")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            layout = f"{self.dim} spatial + time" if self.time_dependent else f"{self.dim} spatial"
            raise ValueError(
                f"{self.name} (dim={self.dim}): points must have shape (N, {self.input_dim}) "
                f"({layout} columns), got {tuple(x.shape)}"
            )

    def solution(self, x: Tensor, smoothed: Tensor, coefficients: Coefficients | None = None) -> Tensor:
        """u = A·u_σ + B from values u_σ `(N,)` at `(N, D)` points x: `(N,)`.

        The ansatz's jets (for the unit ball a gradient and a Hessian diagonal of x's
        size besides the value) are built for blocks of at most
        :data:`POINT_ELEMENT_BUDGET` elements, not for all N points at once."""
        self._check_points(x)
        if smoothed.shape != x.shape[:1]:
            raise ValueError(f"{self.name}: smoothed values must have shape ({x.shape[0]},), one per point, "
                             f"got {tuple(smoothed.shape)}")

        def block(points: Tensor, values: Tensor) -> Tensor:
            scale, shift = self.ansatz_jets(points, coefficients)
            return scale.value * values + shift.value

        return map_point_chunks(block, x, smoothed)

    def residual(
        self,
        x: Tensor,
        estimate: GroupEstimate,
        *,
        unbiased: bool = False,
        coefficients: Coefficients | None = None,
    ) -> Tensor:
        """One residual draw R̂ at `(N, D)` points: `(N,)`.

        Args:
            x: points.
            estimate: answers queries about u_σ; each call is one noise group.
            unbiased: one independent group per factor of every product (so that
                E R̂ = R for polynomial nonlinearities); otherwise one group.
            coefficients: overrides of the PDE coefficients (inverse problems).
        """
        self._check_points(x)
        coefficients = self._merge(x, coefficients)
        scale, shift = self.ansatz_jets(x, coefficients)
        terms = self.terms()

        def fields_of_group(fields):
            return solution_fields(
                x, fields, estimate, spatial_dim=self.dim, scale=scale, shift=shift,
                coefficients=coefficients,
            )

        return estimate_residual(
            x, terms, fields_of_group, _one_per_point(self, "source", self.source(x, coefficients), x, constant=True),
            coefficients, unbiased=unbiased,
        )

    @property
    def is_linear(self) -> bool:
        return is_linear(self.terms())

    @property
    def is_unbiasable(self) -> bool:
        return is_unbiasable(self.terms())
