"""Stein estimators of the Gaussian-smoothed network: antithetic pairs + control variate."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pinnlab._checks import check_integer
from pinnlab._typing import inspectable, is_transform_wrapped
from pinnlab.estimators.base import (
    AbstractDerivativeEstimator,
    Directional,
    Gradient,
    HessianDiagonal,
    Model,
    Query,
    Value,
    WeightedLaplacian,
    check_vector_shape,
    expand_vector,
)
from pinnlab.nets.perturbation import FeatureCache, Perturbation

NoiseMode = Literal["independent", "shared"]
CURVATURE_BLOCK = 2**22
"""Elements of ξ² − 1 formed at a time for independent noise (16 MB in float32)."""


@dataclass(frozen=True)
class SteinAntithetic(AbstractDerivativeEstimator):
    r"""Monte Carlo derivatives of u_σ(x) = E f(x + σ⊙ξ), ξ ~ N(0, I), by forward passes only.

    With K draws ξ_k, f₊ = f(x + σ⊙ξ_k), f₋ = f(x − σ⊙ξ_k), f₀ = f(x)
    (REFERENCE.md §1.3, [RS] eqs. 7–13; σ may differ per coordinate):

    .. math::

        \hat u &= \tfrac1K Σ_k (f₊ + f₋)/2 \\
        \widehat{∂_j u} &= \tfrac1K Σ_k ξ_{kj}(f₊ − f₋)/(2σ_j) \\
        \widehat{a·∇u} &= \tfrac1K Σ_k (Σ_j a_j ξ_{kj}/σ_j)(f₊ − f₋)/2 \\
        \widehat{∂_{jj} u} &= \tfrac1K Σ_k (ξ_{kj}² − 1)(f₊ + f₋ − 2f₀)/(2σ_j²) \\
        \widehat{Σ_j w_j ∂_{jj} u} &= \tfrac1K Σ_k (Σ_j w_j(ξ_{kj}² − 1)/σ_j²)(f₊ + f₋ − 2f₀)/2

    Every estimate is unbiased for the corresponding derivative of u_σ. The value is
    the antithetic mean (far lower variance than (1/K)Σf₊, same cost), f₀ is evaluated
    once per point (not K times), and only when a second-order query is asked, so a
    "derivative group" costs 2KN + N network evaluations and a first-order or value
    group 2KN. Contractions a·∇u and Σ w_j ∂_jj u cost O(K·D) per point and never form
    the full gradient or Hessian diagonal.

    Noise modes:
        ``independent``: fresh ξ for every point (as in the papers). First-layer cost
        N·K·D·w. Memory: about the one `(N, K, D)` draw, which a training step holds
        for its backward pass; the offsets σ⊙ξ are not formed for the MLP (it folds σ
        into its first layer, W(σ⊙ξ) = (W diag σ)ξ) and ξ² − 1 is formed a block of
        points at a time (a graph differentiating in σ keeps every block: two draws).
        ``shared``: one set of K vectors ξ for the whole batch. The first layer
        factorises, W(x ± σξ) = Wx ± W(σξ), costing (N + K)·D·w, so a step costs
        about the same at D = 10⁴ as at D = 100. Each point's estimate is still
        unbiased with the same variance, but the errors at different points are
        correlated (they share ξ), so a loss averaged over the batch has a larger
        variance than with independent noise; studies quantify it.

    Time smoothing (inputs with time as the last column):
        ``joint``: σ⊙ξ perturbs time too and the antithetic partner flips it
        (what the RS-PINN code does; σ's last entry is σ_t).
        ``independent`` ([RS] §4.5, eq. 28): the time perturbation τσ_t is shared inside
        each pair, the second differences use f(x ± δx, t + δt) − 2f(x, t + δt) (K extra
        evaluations), and ∂_t uses the antithetic pair f(x + δx, t ± δt) (K more,
        only when a first-order query is asked). Second derivatives in time are not
        available in this mode (the time entry of ``HessianDiagonal`` is NaN and a
        ``WeightedLaplacian`` weight on time raises). Points need at least one space
        column besides time (checked when ``estimate`` sees them: the estimator is not
        told the input width before).

    Args:
        sigma: σ > 0, scalar or `(D,)` per-coordinate smoothing std (a tensor passed
            as ``estimate(..., sigma=...)`` overrides it; its values are checked only
            outside torch.func transforms).
        num_samples: K, noise vectors per point (per antithetic pair).
        noise: ``"independent"`` or ``"shared"`` (see above).
        time_smoothing: ``"joint"`` or ``"independent"``.
        chunk_size: points per chunk; ``None`` for a single chunk. It bounds the memory
            of estimates made without autograd (evaluation, estimator studies). Under
            autograd every chunk's activations stay in the graph until the backward
            pass, so it does not bound a training step's memory (and with shared noise
            it adds time: each chunk recomputes the first layer's W(σξ), K·D·w
            multiply-adds, forward and backward); ``PINNProblem(batch_chunks=...)``
            (``trainer.batch_chunks``) is what bounds a step. Shared noise is drawn,
            and σ⊙ξ formed, once per estimate whatever the chunks; without autograd the
            MLP forms W(σξ) once per estimate too.

    Example:
        >>> from pinnlab.nets import Pointwise
        >>> f = Pointwise(lambda z: (z ** 2).sum(-1))  # u_σ = ‖x‖² + Dσ², Δu_σ = 2D
        >>> est = SteinAntithetic(sigma=0.1, num_samples=1024)  # relative std ≈ 0.1 per point
        >>> x = torch.zeros(4, 3, dtype=torch.float64)
        >>> lap, = est.estimate(f, x, [WeightedLaplacian(torch.ones(3))],
        ...                     generator=torch.Generator().manual_seed(0))
        >>> bool(((lap - 6.0).abs() < 3.0).all())
        True

    References:
        Hu, Yang, Wang, Karniadakis, Kawaguchi, arXiv:2311.15283, §3–4.
        He et al., arXiv:2202.09340.
    """

    sigma: float | Tensor = 1e-2
    num_samples: int = 128
    noise: NoiseMode = "independent"
    time_smoothing: Literal["joint", "independent"] = "joint"
    chunk_size: int | None = None

    def __post_init__(self):
        check_integer("num_samples", self.num_samples)
        if self.noise not in ("independent", "shared"):
            raise ValueError(f"noise must be 'independent' or 'shared', got {self.noise!r}")
        if self.time_smoothing not in ("joint", "independent"):
            raise ValueError(
                f"time_smoothing must be 'joint' or 'independent', got {self.time_smoothing!r}"
            )
        if self.chunk_size is not None:
            check_integer("chunk_size", self.chunk_size)  # None: one chunk
        _check_sigma(self.sigma)

    def _sigma_vector(self, sigma: float | Tensor | None, x: Tensor) -> Tensor:
        if sigma is None:
            sigma = self.sigma  # values checked at construction
        else:
            _check_sigma(sigma)
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        dim = x.shape[-1]
        if s.dim() > 1 or (s.dim() == 1 and s.shape[0] not in (1, dim)):
            raise ValueError(
                f"sigma must be a scalar or have one entry per input column ({dim}), "
                f"got shape {tuple(s.shape)}"
            )
        return s.expand(dim) if s.dim() == 0 or s.shape[0] == 1 else s

    def _draw(self, n: int, dim: int, x: Tensor, generator) -> Tensor:
        shape = (self.num_samples, dim) if self.noise == "shared" else (n, self.num_samples, dim)
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

    def validate(self, equation) -> None:
        if self.time_smoothing == "independent" and not equation.time_dependent:
            raise ValueError(
                f"time_smoothing='independent' smooths the last input column as time, but "
                f"{equation.name} has no time variable; use time_smoothing='joint'"
            )

    def estimate(
        self,
        model: Model,
        x: Tensor,
        queries: Sequence[Query],
        *,
        generator: torch.Generator | None,
        sigma: float | Tensor | None = None,
    ) -> list[Tensor]:
        self._check_inputs(x, queries)
        s = self._sigma_vector(sigma, x)
        # shared noise: ξ and the offsets δ = σ⊙ξ are built once per estimate, so every
        # chunk reuses the same tensors (and an autograd graph holds them once)
        shared = self._noise(self._draw(0, x.shape[1], x, generator), s) if self.noise == "shared" else None
        return self._estimate_chunks(model, x, queries, s, shared, self.chunk_size, generator)

    def _check_inputs(self, x: Tensor, queries: Sequence[Query]) -> None:
        for q in queries:
            if not isinstance(q, _ANSWERABLE):
                raise TypeError(
                    f"SteinAntithetic cannot answer {type(q).__name__}; queries must be one of "
                    + ", ".join(t.__name__ for t in _ANSWERABLE)
                )
        if x.dim() != 2:
            raise ValueError(f"x must be a (N, D) tensor of points, got shape {tuple(x.shape)}")
        for q in queries:  # (here, not per chunk: a chunk of M points would take (M, D) vectors for any N)
            value = _query_tensor(q)
            if value is not None:
                check_vector_shape(value, x)
        if self.time_smoothing == "independent" and x.shape[1] < 2:
            raise ValueError(
                "time_smoothing='independent' smooths space and time (the last column) "
                "separately and needs points with at least one space column, got "
                f"{x.shape[1]} column(s); use time_smoothing='joint'"
            )

    def _estimate_chunks(self, model, x, queries, s, shared: _Noise | None, chunk_size, generator) -> list[Tensor]:
        """The estimates at x, ``chunk_size`` points at a time (None: one chunk), from the
        ``shared`` draw or, if None, a draw from ``generator`` for each chunk in turn."""
        chunk = chunk_size or max(x.shape[0], 1)
        pieces = []
        for start in range(0, max(x.shape[0], 1), chunk):
            xc = x[start : start + chunk]
            qc = queries if chunk >= x.shape[0] else [_chunk_query(q, x.shape[0], start, chunk) for q in queries]
            noise = shared if shared is not None else self._noise(
                self._draw(xc.shape[0], x.shape[1], x, generator), s
            )
            if self.time_smoothing == "joint":
                pieces.append(self._joint(model, xc, qc, s, noise))
            else:
                pieces.append(self._independent_time(model, xc, qc, s, noise))
        return [torch.cat(parts) for parts in zip(*pieces)]

    def evaluate(
        self,
        model: Model,
        x: Tensor,
        *,
        generator: torch.Generator | None,
        chunk_size: int = 1024,
        sigma: float | Tensor | None = None,
        draw: SharedDraw | None = None,
    ) -> Tensor:
        """u_σ at `(N, D)` points without autograd, ``chunk_size`` points at a time (at most
        this estimator's own ``chunk_size``): `(N,)`.

        Shared noise: one set of K vectors ξ for all N points, as in a training step, so
        the values do not depend on the chunk size, and a chunk holds 2·K·w hidden units
        per point (the MLP's factorised first layer) besides the one `(K, D)` draw; the
        MLP forms W(σξ) once for all chunks. ``draw``, a :class:`SharedDraw` that several
        calls share (blocks of points built one at a time), keeps the first call's ξ and
        W(σξ) for the later ones: their values are those of one call on all the points.
        Independent noise: each chunk draws its own ξ from ``generator`` in turn
        (``draw`` is not used).
        """
        if self.noise != "shared":
            return super().evaluate(model, x, generator=generator, chunk_size=chunk_size, sigma=sigma)
        chunk = min(chunk_size, self.chunk_size or chunk_size)
        with torch.no_grad():
            self._check_inputs(x, [Value()])
            s = self._sigma_vector(sigma, x)
            noise = (draw or SharedDraw()).noise(self, x, s, generator)
            return self._estimate_chunks(model, x, [Value()], s, noise, chunk, generator)[0]

    def _noise(self, xi: Tensor, s: Tensor) -> _Noise:
        """What the formulas need from a draw ξ `(K, D)` or `(N, K, D)` at scale σ `(D,)`.

        The offsets are δ = σ⊙ξ (joint) or the space part (σ with a zero time entry)⊙ξ and
        the time part τ·(σ_t on time, 0 elsewhere), τ = ξ's time column. Shared noise
        forms them here, `(K, D)`, once per estimate. Independent noise leaves them as
        factors: formed, each would be another `(N, K, D)` tensor, which the network's
        first layer holds for its backward pass (MLP folds σ into its weights instead).
        """
        if self.time_smoothing == "joint":
            parts, scales, tau = (xi,), (s,), None
        else:
            mask = _space_mask(xi)
            tau = xi[..., -1:]  # (K, 1) or (N, K, 1): a view, no copy
            parts, scales = (xi, tau), (s * mask, s * (1 - mask))
        if xi.dim() == 3:
            return _Noise(xi, parts, scales, tau)
        offsets = tuple(p * scale for p, scale in zip(parts, scales))
        return _Noise(xi, offsets, None, tau, FeatureCache())  # W δ once for every chunk

    # -- joint smoothing -------------------------------------------------------------
    def _joint(self, model, x, queries, s, noise: _Noise) -> list[Tensor]:
        xi = noise.xi
        need_second = any(q.order == 2 for q in queries)
        # f(x) as the all-zero pattern: networks evaluate it once per point, from the
        # first-layer W·x the pairs use anyway
        patterns = ((1.0,), (-1.0,), (0.0,)) if need_second else ((1.0,), (-1.0,))
        values = model(noise.perturbation(x, patterns))  # (N, 2 or 3, K)
        f_plus, f_minus = values[:, 0], values[:, 1]
        first = (f_plus - f_minus) / 2
        second = (f_plus + f_minus) / 2 - values[:, 2] if need_second else None
        return [
            self._answer(q, x, xi, s, (f_plus + f_minus) / 2, first, second, None)
            for q in queries
        ]

    # -- independent (x, t) smoothing -----------------------------------------------
    def _independent_time(self, model, x, queries, s, noise: _Noise) -> list[Tensor]:
        xi, tau = noise.xi, noise.tau
        patterns = [(1.0, 1.0), (-1.0, 1.0)]
        need_second = any(q.order == 2 for q in queries)
        need_first = any(q.order == 1 for q in queries)
        if need_second:
            patterns.append((0.0, 1.0))
        if need_first:
            patterns.append((1.0, -1.0))
        values = model(noise.perturbation(x, tuple(patterns)))
        f_plus, f_minus = values[:, 0], values[:, 1]
        second = (f_plus + f_minus) / 2 - values[:, 2] if need_second else None
        time_first = (f_plus - values[:, -1]) / 2 if need_first else None
        return [
            self._answer(q, x, xi, s, (f_plus + f_minus) / 2, (f_plus - f_minus) / 2,
                         second, (tau[..., 0], time_first))
            for q in queries
        ]

    # -- shared formulas --------------------------------------------------------------
    @staticmethod
    def _project(vectors: Tensor, noise: Tensor) -> Tensor:
        """Σ_j vectors_j noise_kj for every point: `(N, K)`; vectors `(N, D)`."""
        if noise.dim() == 2:
            return vectors @ noise.T
        return torch.einsum("nd,nkd->nk", vectors, noise)

    def _answer(self, query, x, xi, s, mean, first, second, time_part) -> Tensor:
        if isinstance(query, Value):
            return mean.mean(1)
        if isinstance(query, (Gradient, Directional)):
            if isinstance(query, Gradient):
                if xi.dim() == 2:
                    grad = first @ xi / xi.shape[0]
                else:
                    grad = torch.einsum("nk,nkd->nd", first, xi) / xi.shape[-2]
                grad = grad / s
                if time_part is not None:
                    tau, time_first = time_part
                    time_column = (tau * time_first).mean(-1).expand(x.shape[0]) / s[-1]
                    grad = torch.cat([grad[:, :-1], time_column[:, None]], dim=1)
                return grad
            a = expand_vector(query.vector, x) / s
            if time_part is None:
                return (self._project(a, xi) * first).mean(1)
            tau, time_first = time_part
            # ξ's time column is not space noise: the time term comes from the time pair
            out = (self._project(a * _space_mask(xi), xi) * first).mean(1)
            return out + a[:, -1] * (tau * time_first).mean(-1)
        if second is None:  # pragma: no cover - guarded by the callers
            raise RuntimeError("second differences were not computed")
        if isinstance(query, HessianDiagonal):
            # with independent time smoothing the time column is replaced by NaN below
            if xi.dim() == 2:
                diag = second @ _curvature(xi) / xi.shape[0]
            else:
                diag = _contract_curvature("nk,nkd->nd", second, xi) / xi.shape[-2]
            diag = diag / (s * s)
            if time_part is not None:
                diag = torch.cat([diag[:, :-1], torch.full_like(diag[:, -1:], float("nan"))], 1)
            return diag
        if isinstance(query, WeightedLaplacian):
            w = expand_vector(query.weights, x)
            if time_part is not None:
                if bool((w[:, -1] != 0).any()):
                    raise ValueError(
                        "second derivatives in time are not available with "
                        "time_smoothing='independent'; use time_smoothing='joint'"
                    )
            v = w / (s * s)  # a time weight is 0 (checked above) with independent time smoothing
            if xi.dim() == 2:
                projected = v @ _curvature(xi).T
            else:
                projected = _contract_curvature("nd,nkd->nk", v, xi)
            return (projected * second).mean(1)
        raise TypeError(f"SteinAntithetic cannot answer {type(query).__name__}")


_ANSWERABLE = (Value, Gradient, Directional, HessianDiagonal, WeightedLaplacian)


class SharedDraw:
    """One shared-noise draw for several :meth:`SteinAntithetic.evaluate` calls, e.g. the
    blocks of points of a result file's slice (4,096 points, built a block at a time:
    3.3 GB in float64 at d = 10⁵).

    The first call draws ξ from its generator; the later ones reuse ξ, σ⊙ξ and the
    MLP's W(σξ) (formed once, :class:`~pinnlab.nets.perturbation.FeatureCache`): the
    values of one call on all the points, and a first layer of (N + K)·D·w multiply-adds
    for N points, not (N + blocks·K)·D·w. Every call must have the first's K, σ, time
    smoothing and points' width, dtype and device (checked). A draw formed inside a
    torch.func transform is not kept (it must not outlive the transform's level).
    """

    def __init__(self):
        self._drawn: tuple[tuple, Tensor, _Noise] | None = None

    def noise(self, estimator: SteinAntithetic, x: Tensor, s: Tensor, generator) -> _Noise:
        """The draw for points x `(N, D)` at scale σ ``s`` `(D,)`, made now at the first call."""
        key = (estimator.num_samples, estimator.time_smoothing, x.shape[1], x.dtype, x.device)
        if self._drawn is None:
            noise = estimator._noise(estimator._draw(0, x.shape[1], x, generator), s)
            if not is_transform_wrapped(s):
                self._drawn = (key, s, noise)
            return noise
        drawn_key, drawn_s, noise = self._drawn
        if key != drawn_key or is_transform_wrapped(s) or not torch.equal(s, drawn_s):  # σ batched by vmap: other σ
            raise ValueError(
                "a SharedDraw serves calls with one number of samples, σ, time smoothing and "
                f"points' width, dtype and device: drawn for {drawn_key} at σ {_sigma_text(drawn_s)}, "
                f"asked for {key} at σ {_sigma_text(s)}"
            )
        return noise


class _Noise(NamedTuple):
    """One draw in the form the formulas use: ``xi`` the draw ξ (with independent time
    smoothing its time column too, which the formulas mask or replace), ``parts`` and ``scales``
    the Perturbation's offsets δ_p = scales[p]⊙parts[p] (``scales`` None: ``parts`` are
    the offsets themselves), ``tau`` the time noise (independent time smoothing) or None,
    ``cache`` the first-layer features of shared offsets, for all the chunks of points
    perturbed by this draw."""

    xi: Tensor
    parts: tuple[Tensor, ...]
    scales: tuple[Tensor, ...] | None
    tau: Tensor | None
    cache: FeatureCache | None = None

    def perturbation(self, x: Tensor, patterns: tuple[tuple[float, ...], ...]) -> Perturbation:
        if self.scales is None:
            return Perturbation(x, self.parts, patterns, self.cache)
        return _ScaledPerturbation(x, self.parts, self.scales, patterns)


class _ScaledPerturbation(Perturbation):
    """A :class:`Perturbation` whose parts δ_p = scales[p]⊙noise[p] are kept as the two
    factors, noise `(N, K, D)` or `(N, K, 1)` (one value for every column) and scales
    `(D,)`. :class:`~pinnlab.nets.MLP` computes W δ_p as (W diag scales[p]) noise[p], so
    no `(N, K, D)` δ_p is formed or held for the backward pass; other models read
    ``parts``, formed when asked for."""

    noise: tuple[Tensor, ...]
    scales: tuple[Tensor, ...]

    def __init__(self, center, noise, scales, coefficients):
        # Perturbation is a frozen dataclass whose ``parts`` field this class computes
        for name, value in (("center", center), ("noise", noise), ("scales", scales),
                            ("coefficients", coefficients)):
            object.__setattr__(self, name, value)

    @property
    def parts(self) -> tuple[Tensor, ...]:
        return tuple(n * scale for n, scale in zip(self.noise, self.scales))

    @property
    def num_samples(self) -> int:
        return self.noise[0].shape[-2]


def _chunk_query(query: Query, n: int, start: int, size: int) -> Query:
    """``query`` for the points ``start:start + size`` of ``n``: per-point `(N, D)` vectors
    or weights are sliced, shared `(D,)` ones kept."""
    value = _query_tensor(query)
    if value is None or value.dim() != 2 or value.shape[0] != n:
        return query
    field = "vector" if isinstance(query, Directional) else "weights"
    return dataclasses.replace(query, **{field: value[start : start + size]})


def _query_tensor(query: Query) -> Tensor | None:
    """The direction of a :class:`Directional` or the weights of a
    :class:`WeightedLaplacian` (None for unweighted queries)."""
    if isinstance(query, Directional):
        return query.vector
    return query.weights if isinstance(query, WeightedLaplacian) else None


def _sigma_text(s: Tensor) -> str:
    """σ in a refusal, on one line: its value, or a per-coordinate σ's first entries."""
    if is_transform_wrapped(s):  # (σ batched by vmap: no values to show)
        return f"batched by a transform, shape {tuple(s.shape)}"
    values = s.detach().reshape(-1).tolist()
    if len(values) == 1:
        return f"{values[0]:g}"
    return "(" + ", ".join(f"{v:g}" for v in values[:4]) + (f", … {len(values)} entries)" if len(values) > 4 else ")")


def _check_sigma(sigma) -> None:
    """Refuse a σ that is not a positive finite scalar or a ≤ 1-dimensional tensor of them.

    A tensor's values are inspected on the CPU, also inside torch.func transforms (the
    tuning layer differentiates in σ: :func:`~pinnlab._typing.inspectable`); on an
    accelerator reading them would synchronise every training step, so only its shape
    is checked there (configs validate σ before training).
    """
    if isinstance(sigma, Tensor):
        if sigma.dim() > 1:
            raise ValueError(
                f"sigma must be a scalar or a (D,) tensor, got shape {tuple(sigma.shape)}"
            )
        values = inspectable(sigma)
        if values is not None and not bool(((values > 0) & torch.isfinite(values)).all()):
            bad = ~((values > 0) & torch.isfinite(values)).reshape(-1)
            first = int(bad.nonzero()[0])  # (the whole tensor's repr ran over many lines at D = 100)
            where = "" if values.dim() == 0 else f" at entry {first} ({int(bad.sum())} of {bad.numel()} entries)"
            raise ValueError(f"sigma must be finite and > 0 in every entry, got {float(values.reshape(-1)[first])}"
                             f"{where}")
        return
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(
            f"sigma must be a float or a tensor, got {type(sigma).__name__} {sigma!r}"
        )
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma}")


def _space_mask(noise: Tensor) -> Tensor:
    mask = torch.ones(noise.shape[-1], dtype=noise.dtype, device=noise.device)
    mask[-1] = 0
    return mask


def _curvature(xi: Tensor) -> Tensor:
    """ξ² − 1, subtracting in place: one temporary of ξ's size, not two."""
    return (xi * xi).sub_(1)


def _contract_curvature(equation: str, left: Tensor, xi: Tensor) -> Tensor:
    """``torch.einsum(equation, left, ξ² − 1)`` for independent noise ξ `(N, K, D)` and
    ``left`` `(N, ·)`, forming ξ² − 1 for ``CURVATURE_BLOCK`` elements' worth of points at
    a time: at once it would be one more tensor of ξ's size. A graph that differentiates
    ``left`` (in σ, or the Hessian diagonal's second differences) holds every block; else
    one buffer serves them all (fresh blocks left holes the allocator did not reuse: the
    process grew by a whole draw)."""
    rows = max(1, CURVATURE_BLOCK // max(math.prod(xi.shape[1:]), 1))
    if rows >= xi.shape[0]:
        return torch.einsum(equation, left, _curvature(xi))
    keep = torch.is_grad_enabled() and _differentiated(left)
    buffer = None if keep else xi.new_empty((rows, *xi.shape[1:]))
    pieces = []
    for start in range(0, xi.shape[0], rows):
        block = xi[start : start + rows]
        if keep:
            curvature = _curvature(block)
        else:
            curvature = torch.mul(block, block, out=buffer[: block.shape[0]]).sub_(1)
        pieces.append(torch.einsum(equation, left[start : start + rows], curvature))
    return torch.cat(pieces)


def _differentiated(tensor: Tensor) -> bool:
    """Whether an autograd level records operations on ``tensor``. Inside torch.func
    transforms ``requires_grad`` shows the innermost level only: an outer grad in σ
    around an inner grad in θ (the tuning layer's reverse mode) differentiates tensors the
    inner level does not, so every level the tensor is wrapped in is asked."""
    while not tensor.requires_grad:
        if not is_transform_wrapped(tensor):
            return False
        tensor = torch._C._functorch.get_unwrapped(tensor)
    return True
