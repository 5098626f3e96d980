"""The vocabulary of residuals: solution fields, polynomial terms, non-polynomial terms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

Coefficients = dict[str, Tensor]
CoefficientFn = Callable[[Tensor, Coefficients], Tensor | float]
FieldKind = Literal[
    "value",
    "time_derivative",
    "gradient",
    "laplacian",
    "hessian_diagonal",
    "directional",
    "weighted_laplacian",
]


@dataclass(frozen=True)
class Field:
    """A derivative quantity of the solution u (hard-constraint ansatz applied).

    Spatial quantities only act on the d spatial columns; ``time_derivative`` is ∂_t u.
    Scalar fields are `(N,)`; ``gradient`` and ``hessian_diagonal`` are `(N, d)`.

    ``directional`` (a(x)·∇_x u) and ``weighted_laplacian`` (Σ_j w_j(x) ∂_jj u) carry a
    function ``fn(x, coefficients) -> (N, d) or (d,)``; estimators compute them in
    O(K·d) per point without forming the gradient or Hessian diagonal.
    """

    kind: FieldKind
    fn: CoefficientFn | None = None
    label: str = ""

    @property
    def is_vector(self) -> bool:
        return self.kind in ("gradient", "hessian_diagonal")

    def __repr__(self) -> str:
        return self.label or self.kind


VALUE = Field("value", label="u")
TIME_DERIVATIVE = Field("time_derivative", label="u_t")
GRADIENT = Field("gradient", label="∇u")
LAPLACIAN = Field("laplacian", label="Δu")
HESSIAN_DIAGONAL = Field("hessian_diagonal", label="diag ∇²u")


def directional(fn: CoefficientFn, label: str = "a·∇u") -> Field:
    """The field a(x)·∇_x u for ``fn(x, coefficients) -> a`` of shape `(N, d)` or `(d,)`."""
    return Field("directional", fn, label)


def weighted_laplacian(fn: CoefficientFn, label: str = "Σ w_j ∂_jj u") -> Field:
    """The field Σ_j w_j(x) ∂_jj u for ``fn(x, coefficients) -> w``, `(N, d)` or `(d,)`."""
    return Field("weighted_laplacian", fn, label)


@dataclass(frozen=True)
class Term:
    """coefficient(x) · Π factors; two vector factors contract to an inner product.

    A term with one factor is linear; a term with n ≥ 2 factors is a polynomial
    nonlinearity whose unbiased estimate needs n independent noise groups
    (REFERENCE.md §2.3). Examples: ``Term(1.0, (LAPLACIAN,))`` is Δu,
    ``Term(-1.0, (VALUE, VALUE, VALUE))`` is −u³, ``Term(-1.0, (GRADIENT, GRADIENT))``
    is −‖∇u‖².
    """

    coefficient: float | CoefficientFn
    factors: tuple[Field, ...]

    def __post_init__(self):
        if not self.factors:
            raise ValueError("a Term needs at least one factor")
        vectors = sum(f.is_vector for f in self.factors)
        if vectors not in (0, 2):
            raise ValueError(
                f"a Term must contain zero or two vector fields (an inner product), "
                f"got {vectors} in {self.factors}"
            )


@dataclass(frozen=True)
class Nonpolynomial:
    """coefficient(x) · fn(field): a nonlinearity like sin u or Σ|∂_i u|^c.

    No finite product of independent Monte Carlo draws has mean fn(E[field]), so a
    residual containing one cannot be made unbiased; only the square's bias can be
    removed (the ``unbiased1`` loss).

    Args:
        fn: maps the field tensor to `(N,)`.
        field: the field it acts on.
        coefficient: scalar or ``fn(x, coefficients)``.
        label: how to name it in error messages, e.g. ``"sin u"``.
    """

    fn: Callable[[Tensor], Tensor]
    field: Field
    coefficient: float | CoefficientFn = 1.0
    label: str = "a non-polynomial term"


ResidualTerm = Term | Nonpolynomial
