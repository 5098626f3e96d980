"""Hamilton–Jacobi–Bellman equations: quadratic and Rosenbrock terminal costs, HJB-LIN."""

from __future__ import annotations

import copy
import hashlib
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pinnlab._checks import check_positive
from pinnlab._seeding import make_generator
from pinnlab._warnings import warn
from pinnlab.equations.base import AbstractEquation, rows_per_chunk
from pinnlab.equations.fields import Jet
from pinnlab.equations.terms import (
    GRADIENT,
    LAPLACIAN,
    TIME_DERIVATIVE,
    Nonpolynomial,
    Term,
)


def _time_scale_jet(x: Tensor, factor: float, horizon: float) -> Jet:
    """A = factor·(T − t): vanishes at the terminal time."""
    grad = torch.zeros_like(x)
    grad[:, -1] = -factor
    return Jet(factor * (horizon - x[:, -1]), grad, None)


def _pad_time(space: Tensor) -> Tensor:
    return torch.cat([space, torch.zeros_like(space[:, :1])], dim=1)


class _HJB(AbstractEquation):
    """∂_t u + Δu − ‖∇u‖² = 0 on R^d × [0, T] with u(x, T) = g(x) (REFERENCE.md §3.4–3.5).

    Hard constraint u = d·(T − t)·u_σ + g(x) with ∇g and diag ∇²g in closed form.
    ‖∇u‖² is an inner product of two gradient estimates: the unbiased2 loss draws it
    from two independent derivative groups.
    """

    time_dependent = True
    published_dims = (10, 20, 30, 40)

    def __init__(self, dim, *, seed=0, constraint="hard", horizon: float = 1.0):
        check_positive("horizon", horizon)  # (an infinite one drew every time at t = inf)
        self.horizon = float(horizon)
        super().__init__(dim, seed=seed, constraint=constraint)

    def parameters(self):
        return {**super().parameters(), "horizon": self.horizon}

    @property
    def time_interval(self):
        return (0.0, self.horizon)

    def terms(self):
        return (
            Term(1.0, (TIME_DERIVATIVE,)),
            Term(1.0, (LAPLACIAN,)),
            Term(-1.0, (GRADIENT, GRADIENT)),
        )

    def terminal(self, space: Tensor, coefficients) -> tuple[Tensor, Tensor, Tensor]:
        """(g, ∇g, diag ∇²g) at `(N, d)` spatial points."""
        raise NotImplementedError

    def ansatz(self, x, coefficients):
        g, grad, hess = self.terminal(x[:, :-1], coefficients)
        return _time_scale_jet(x, self.dim, self.horizon), Jet(g, _pad_time(grad), _pad_time(hess))

    def _time(self, n, generator, dtype):
        return self.horizon * torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        t = self._time(n, generator, dtype)
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        return torch.cat([z, t], dim=1)

    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        return torch.cat([z, torch.full((n, 1), self.horizon, dtype=dtype, device=z.device)], 1)

    def boundary_value(self, x):
        """u(x, T) = g(x): the hard ansatz's shift, in closed form for every HJB variant
        (hjb_rosenbrock's :meth:`exact` is a Monte Carlo reference, which a soft terminal
        loss cannot recompute on fresh points every step)."""
        return self.ansatz(x, self.coefficients_like(x))[1].value


class HJBQuadratic(_HJB):
    r"""HJB with g = ‖x‖²: u = ‖x‖²/(1 + 4(T − t)) + (d/2)·log(1 + 4(T − t)) ([RS] Table 3).

    Samplers (train and test): t ~ U(0, T), x ~ N(0, I); N_f = 1000 in [RS].
    """

    name = "hjb_quadratic"

    def terminal(self, space, coefficients):
        return (space * space).sum(-1), 2 * space, torch.full_like(space, 2.0)

    def exact(self, x, coefficients=None):
        s = 1 + 4 * (self.horizon - x[:, -1])
        return (x[:, :-1] ** 2).sum(-1) / s + 0.5 * self.dim * torch.log(s)


def _sample_blocks(samples: int, dim: int, chunk_elements: int) -> list[tuple[int, int]]:
    """Row ranges `[start, stop)` of the `(samples, dim)` Monte Carlo draw, drawn one at a time.

    On CPU ``torch.randn`` fills a tensor 16 numbers at a time, and a tensor of fewer than
    16 numbers takes another path. Blocks whose sizes, all but the last, are multiples of
    16 numbers and of which none holds fewer than 16 therefore reproduce one
    ``torch.randn(samples, dim)`` bit for bit (checked in
    tests/equations/test_cole_hopf_memory.py): the Monte Carlo stream, and so a cached
    reference, does not depend on the chunking. Blocks hold at most ``chunk_elements``
    numbers, give or take a merged tail of under 16, unless ``16 / gcd(dim, 16)`` rows
    (the fewest allowed) already exceed it; all samples form one block when they fit.
    """
    fit = chunk_elements // dim
    if fit >= samples:
        return [(0, samples)]
    step = 16 // math.gcd(dim, 16)  # fewest rows holding a multiple of 16 numbers
    rows = max(step, fit // step * step)
    blocks = [(start, min(start + rows, samples)) for start in range(0, samples, rows)]
    if len(blocks) > 1 and (blocks[-1][1] - blocks[-1][0]) * dim < 16:
        blocks[-2:] = [(blocks[-2][0], samples)]  # a tail under 16 numbers would be drawn differently
    return blocks


def cole_hopf(
    terminal,
    x: Tensor,
    *,
    horizon: float,
    samples: int,
    generator: torch.Generator,
    chunk_elements: int = 2**24,
) -> Tensor:
    r"""u(x, t) = −log E_W exp(−g(x + sqrt(2(T − t))·W)), W ~ N(0, I_d), by Monte Carlo.

    The solution of u_t + Δu − ‖∇u‖² = 0, u(·, T) = g (Cole–Hopf: v = e^{−u} solves the
    backward heat equation). One set of ``samples`` vectors W is shared by all points
    (as in the reference code); the mean is taken in log-sum-exp form in float64.
    W is drawn in blocks of samples and each block is applied to chunks of points, so
    that a block or chunk holds at most about ``chunk_elements`` numbers (up to a merged
    tail of under 16, or 16 / gcd(d, 16) rows of W when that is more: see
    :func:`_sample_blocks`; a naive
    2·10⁵ × 200 × 40 broadcast would be 12.8 GB, and W alone at d = 10⁴ is 16 GB):
    memory is O(chunk_elements + N·samples·d / chunk_elements), whatever d. The blocks
    reproduce a single draw of W bit for bit (see :func:`_sample_blocks`), so the
    estimate does not depend on ``chunk_elements`` beyond float rounding.

    Args:
        terminal: g, `(..., d) -> (...)`.
        x: `(N, d + 1)` points, time last, t ≤ T (a t above T by float rounding, e.g.
            T stored in float32, is read as T; beyond that a ValueError).
        horizon: T.
        samples: Monte Carlo sample count.
        generator: draws W (on CPU).
        chunk_elements: most numbers in one block of W or one points × samples × d chunk
            (within :func:`_sample_blocks`' two exceptions).

    Returns:
        `(N,)` float64.
    """
    x = x.double()
    d = x.shape[1] - 1
    t = x[:, -1]
    # t = T stored in float32 reads back slightly above T: clamp that rounding, refuse the rest
    slack = 1e-6 * max(1.0, abs(horizon))
    if x.shape[0] and bool((t > horizon + slack).any()):
        raise ValueError(
            f"cole_hopf: the solution is defined for t <= T = {horizon}, got t up to "
            f"{float(t.max())}"
        )
    if not x.shape[0]:
        return t.new_zeros(0)
    space, scale = x[:, :-1], torch.sqrt((2 * (horizon - t)).clamp_min(0))
    blocks = _sample_blocks(samples, d, chunk_elements)
    per_point = max(1, chunk_elements // ((blocks[0][1] - blocks[0][0]) * d))
    partial = []  # per block: (N,) log Σ_{W in block} exp(−g)
    for start, stop in blocks:
        w = torch.randn(stop - start, d, generator=generator, dtype=torch.float64)
        block = []
        for first in range(0, x.shape[0], per_point):
            xs, ss = space[first : first + per_point], scale[first : first + per_point]
            z = xs[:, None, :] + ss[:, None, None] * w[None]
            block.append(torch.logsumexp(-terminal(z), dim=1))
        partial.append(torch.cat(block))
    total = torch.logsumexp(torch.stack(partial, dim=1), dim=1)
    return -(total - math.log(samples))


def _cache_dir() -> Path:
    return Path(os.environ.get("PINNLAB_CACHE", Path.home() / ".cache" / "pinnlab"))


class HJBRosenbrock(_HJB):
    r"""HJB with a Rosenbrock-type terminal cost; reference solution by Cole–Hopf Monte Carlo.

    ``chain="overlapping"`` (the official code): g = Σ_{i<d} c₁ᵢ(x_i − x_{i+1})² + c₂ᵢ x_{i+1}²;
    ``chain="disjoint"`` (the paper): g = Σ_{i≤d/2} c₁ᵢ(x_{2i−1} − x_{2i})² + c₂ᵢ x_{2i}²;
    c ~ U[0, 1] from the problem seed. The diagonal Hessian of g used by the ansatz is
    the **corrected** one (REFERENCE.md §3.5): (∇²g)_jj = 2c₁_j[j ≤ d−1] +
    2c₁_{j−1}[j ≥ 2] + 2c₂_{j−1}[j ≥ 2]; the official code puts 4c₂ on coordinate i+1,
    which silently solves u_t + Δu − ‖∇u‖² + κ = 0 instead.

    Horizon: the code uses T = 0.3 (default here); the paper's text implies T = 1.
    Samplers: test x ~ N(0, I), t ~ U(0, T); training ``train_law="code"`` draws
    x ~ N(0, 2t·I) as the official code does, ``"test"`` uses the test law.

    :meth:`exact` is the Monte Carlo reference with ``reference_samples`` samples
    (default 2·10⁵), computed in chunks and cached in an HDF5 file under
    ``$PINNLAB_CACHE`` (default ``~/.cache/pinnlab``) keyed by a hash of every
    parameter the reference depends on (not the training law or the constraint), the
    query points and torch's version, written atomically.
    """

    name = "hjb_rosenbrock"

    def __init__(
        self, dim, *, seed=0, constraint="hard", horizon: float = 0.3,
        chain: Literal["overlapping", "disjoint"] = "overlapping",
        train_law: Literal["code", "test"] = "code", reference_samples: int = 200_000,
    ):
        if chain not in ("overlapping", "disjoint"):
            raise ValueError(f"chain must be 'overlapping' or 'disjoint', got {chain!r}")
        if chain == "disjoint" and dim % 2:
            raise ValueError(f"chain='disjoint' needs an even dim, got {dim}")
        if train_law not in ("code", "test"):
            raise ValueError(f"train_law must be 'code' or 'test', got {train_law!r}")
        if reference_samples < 1:
            raise ValueError(f"reference_samples must be >= 1, got {reference_samples}")
        self.chain = chain
        self.train_law = train_law
        self.reference_samples = int(reference_samples)
        super().__init__(dim, seed=seed, constraint=constraint, horizon=horizon)

    min_dim = 2

    def parameters(self):
        return {**super().parameters(), "chain": self.chain, "train_law": self.train_law,
                "reference_samples": self.reference_samples}

    def draw_coefficients(self, generator):
        count = self.dim - 1 if self.chain == "overlapping" else self.dim // 2
        c = torch.rand(2, count, generator=generator, dtype=torch.float64)
        return {"c1": c[0], "c2": c[1]}

    def _pairs(self, space):
        if self.chain == "overlapping":
            return space[..., :-1], space[..., 1:]
        return space[..., 0::2], space[..., 1::2]

    def terminal_value(self, space: Tensor, coefficients=None) -> Tensor:
        c = coefficients or self.coefficients
        c1, c2 = c["c1"].to(space), c["c2"].to(space)
        a, b = self._pairs(space)
        return (c1 * (a - b) ** 2 + c2 * b**2).sum(-1)

    def terminal(self, space, coefficients):
        c1, c2 = coefficients["c1"], coefficients["c2"]
        a, b = self._pairs(space)
        g = (c1 * (a - b) ** 2 + c2 * b**2).sum(-1)
        d_a = 2 * c1 * (a - b)
        d_b = -2 * c1 * (a - b) + 2 * c2 * b
        h_a = (2 * c1).expand_as(a)
        h_b = (2 * c1 + 2 * c2).expand_as(b)
        if self.chain == "overlapping":
            pad = torch.nn.functional.pad
            grad = pad(d_a, (0, 1)) + pad(d_b, (1, 0))
            hess = pad(h_a, (0, 1)) + pad(h_b, (1, 0))
        else:  # interleave the (x_{2i-1}, x_{2i}) pairs back into coordinate order
            grad = torch.stack([d_a, d_b], dim=-1).reshape(space.shape)
            hess = torch.stack([h_a, h_b], dim=-1).reshape(space.shape)
        return g, grad, hess

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        if self.train_law == "test":
            return self.sample_test(n, generator=generator, dtype=dtype)
        t = self._time(n, generator, dtype)
        z = torch.randn(n, self.dim, generator=generator, device=generator.device, dtype=dtype)
        return torch.cat([z.mul_(torch.sqrt(2 * t)), t], dim=1)  # in place: z and the output

    def sample_test(self, n, *, generator, dtype=torch.float32):
        return super().sample_collocation(n, generator=generator, dtype=dtype)

    def with_reference_samples(self, samples: int) -> HJBRosenbrock:
        """This instance (its coefficients included) with :meth:`exact` from ``samples``
        Monte Carlo samples: the result file's slice uses fewer than the test set (4,096
        points at 2·10⁵ samples took 33 min at d = 40, see :func:`pinnlab.io.compute_slice`)."""
        if samples < 1:
            raise ValueError(f"reference_samples must be >= 1, got {samples}")
        other = copy.copy(self)
        other.reference_samples = int(samples)
        return other

    def _cache_key(self, x: Tensor) -> str:
        """Hash of what the reference depends on: the problem, the points, and torch's
        version (its CPU normal sampler and float64 kernels make the Monte Carlo draw; a
        reference cached by another version would not be the one this run would compute)."""
        h = hashlib.sha256()
        h.update(repr((self.name, self.dim, self.seed, self.horizon, self.chain,
                       self.reference_samples, torch.__version__)).encode())
        h.update(np.ascontiguousarray(x.detach().cpu().double().numpy()).tobytes())
        return h.hexdigest()[:32]

    def reference_work(self, x):
        rows = rows_per_chunk(x.shape[-1])  # (the blocks exact_values passes to exact, each cached on its own)
        if all(self._cache_path(x[start : start + rows]).is_file() for start in range(0, x.shape[0], rows)):
            return None
        return (f"{self.name}: computing the Cole–Hopf Monte Carlo reference u* at {x.shape[0]:,} points from "
                f"{self.reference_samples:,} samples (cached under {str(_cache_dir())!r} for later runs)")

    def _cache_path(self, x: Tensor) -> Path:
        return _cache_dir() / f"hjb_rosenbrock-{self._cache_key(x)}.h5"

    def exact(self, x, coefficients=None):
        """Cole–Hopf Monte Carlo reference at `(N, d + 1)` points (cached, float64).

        Always the instance's own coefficients (``coefficients`` overrides are ignored:
        the reference is data, not a function of a guessed coefficient)."""
        import h5py

        path = self._cache_path(x)
        if path.exists():
            try:
                with h5py.File(path, "r") as fh:
                    cached = fh["u"][...]
                if (cached.dtype == np.float64 and cached.shape == (x.shape[0],)
                        and bool(np.isfinite(cached).all())):
                    return torch.from_numpy(cached).to(device=x.device, dtype=x.dtype)
            except (OSError, KeyError, TypeError):
                pass  # unreadable (or, from older versions, non-finite) entry: recompute and replace it
            # (an entry of another dtype or shape is not this reference either)
        generator = make_generator(self.seed, self.name, "cole-hopf")
        u = cole_hopf(
            self.terminal_value, x.detach().cpu(),
            horizon=self.horizon, samples=self.reference_samples, generator=generator,
        )
        if not bool(torch.isfinite(u).all()):  # never cache (and so never repeat) a broken reference
            raise ValueError(f"{self.name}: non-finite Cole–Hopf reference at {int((~torch.isfinite(u)).sum())} "
                             "points")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with h5py.File(tmp, "w") as fh:
                fh["u"] = u.numpy()
                fh.attrs["parameters"] = repr(self.parameters())
                fh.attrs["seed"] = self.seed
            os.replace(tmp, path)
        except OSError as err:  # an unwritable cache costs a recomputation next time, not this run
            warn(f"{self.name}: cannot cache the reference under {str(path.parent)!r} ({err}); "
                 "set PINNLAB_CACHE to a writable directory")
        return u.to(device=x.device, dtype=x.dtype)


class HJBLin(_HJB):
    r"""HJB-LIN ([STDE]): u_t + Δu − (1/d)Σ_i |∂_i u|^c = −2, exact u = Σ_i x_i + T − t.

    The |·|^c term (c = 1.75) is not polynomial, so only the bias of the square can
    be removed (unbiased1). Hard constraint u = (T − t)·u_σ + Σ_i x_i; samplers
    x ~ N(0, I), t ~ U(0, T).

    ``power`` c must be finite and ≥ 1. The exact solution has ∂_i u = 1 and so solves
    the equation for any c, but only for c ≥ 1 is the Hamiltonian (1/d)Σ_i |p_i|^c
    convex, i.e. the equation an HJB equation of a control problem (c > 1: running cost
    ∝ Σ_i |α_i|^{c/(c−1)}; c = 1: controls bounded by 1/d); below 1 its derivative
    c|p|^{c−1} is unbounded at p = 0 (for c < 0 the term itself is).
    """

    name = "hjb_lin"
    published_dims = (10, 100, 1000)

    def __init__(self, dim, *, seed=0, constraint="hard", horizon: float = 1.0, power: float = 1.75):
        if not (math.isfinite(power) and power >= 1):
            raise ValueError(f"power must be finite and >= 1 (a convex Hamiltonian), got {power}")
        self.power = float(power)
        super().__init__(dim, seed=seed, constraint=constraint, horizon=horizon)

    def parameters(self):
        return {**super().parameters(), "power": self.power}

    def terms(self):
        power = self.power
        return (
            Term(1.0, (TIME_DERIVATIVE,)),
            Term(1.0, (LAPLACIAN,)),
            Nonpolynomial(lambda g: g.abs().pow(power).sum(-1), GRADIENT,
                          coefficient=-1.0 / self.dim, label="Σ|∂_i u|^c"),
        )

    def source(self, x, coefficients):
        return -2.0

    def ansatz(self, x, coefficients):
        space = x[:, :-1]
        grad = _pad_time(torch.ones_like(space))
        return _time_scale_jet(x, 1.0, self.horizon), Jet(space.sum(-1), grad, None)

    def exact(self, x, coefficients=None):
        return x[:, :-1].sum(-1) + self.horizon - x[:, -1]
