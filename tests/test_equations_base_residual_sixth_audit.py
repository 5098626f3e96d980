"""Sixth audit of the equation interface (base class), the residual assembly, the term
vocabulary and the solution fields, by mutation testing.

Every mutant of this pass that survived the equation tests was already caught elsewhere in
the suite, or is equivalent; the test here pins at the equation level a behaviour that
otherwise only a solver data-term test notices. Values are closed forms worked by hand."""

from __future__ import annotations

import torch

from pinnlab.equations import LAPLACIAN, AbstractEquation, Term

F64 = torch.float64


class _Quadratic(AbstractEquation):
    """R = Δu on [0, 1]^d with u* = Σ_i c_i x_i² and c_i = i/2 (an override may replace c);
    not registered."""

    name = "quadratic_sixth_audit"

    def draw_coefficients(self, generator):
        return {"c": torch.arange(1, self.dim + 1, dtype=F64) / 2}

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        return torch.rand(n, self.dim, generator=generator, dtype=dtype)

    def exact(self, x, coefficients=None):
        c = self._merge(x, coefficients)["c"]
        return (c * x**2).sum(-1)

    def terms(self):
        return (Term(1.0, (LAPLACIAN,)),)


# ---------------------------------------------------------------- coefficient overrides


def test_an_override_does_not_leak_into_the_instances_coefficients():
    """An override holds for its own call only: after exact(x, {c: (4, 8)}) = 4 + 8 = 12 at
    x = (1, 1), exact(x) is again Σ c_i = 0.5 + 1 = 1.5 with the instance's c (writing the
    override into the cached coefficient dict changed the problem for every later call)."""
    eq = _Quadratic(2)
    x = torch.ones(3, 2, dtype=F64)
    assert eq.exact(x, {"c": torch.tensor([4.0, 8.0], dtype=F64)}).tolist() == [12.0] * 3
    assert eq.exact(x).tolist() == [1.5] * 3
    assert eq.coefficients_like(x)["c"].tolist() == [0.5, 1.0]
    assert eq.exact(x.float()).tolist() == [1.5] * 3
