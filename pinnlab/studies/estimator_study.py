"""Estimator-level bias–variance study of RS-PINN residuals, losses and loss gradients.

For one network and equation, over grids of K (samples), σ, d and noise mode, each
quantity is estimated R times with independent noise at fixed points:

- ``residual``: R̂(x) at M fixed points (biased: one noise group; unbiased: one group
  per factor of every product), summarised per point and averaged over points;
- ``loss``: L_b = mean R̂² (biased) or L_u = mean R̂·R̂' (unbiased, two independent
  residual draws; unbiased2 groups where the equation allows, else unbiased1). By
  default (``unbiased_samples: split``) the two draws get K/2 samples each, so the two
  losses are compared at the same number of noise samples; at K per draw the product
  of two independent estimates has *less* variance than a square (Var XY = 2μ²v + v²
  against Var X² = 4μ²v + 2v²), at K/2 per draw more (4μ²v + 4v²);
- ``gradient``: ∇_θ of that loss (all network parameters).

The reference is the same quantity of the *unbiased* estimator at a very large
K_ref, averaged over R_ref replicates (for the loss: the mean product of two
independent large-K unbiased residual draws, unbiased for mean R_σ²), so it carries its
own standard error. With m̄ the mean of R estimates (per-coordinate variance v_j) and
r̄ the reference (variance w_j over R_ref), per coordinate

    bias²_j = (m̄_j − r̄_j)² − v_j/R − w_j/R_ref           (debiased)

summed over coordinates for the gradient (‖mean error‖², trace of the covariance) and
averaged over points for the residual; ``variance`` is Σ_j v_j (or the point average)
and ``mse`` = bias² + variance. For the loss (a scalar) the signed ``bias`` is reported
too. The replicates (and the reference's) are kept in 10 groups, and the standard
errors of bias² and of the variance are delete-a-group jackknife estimates; the bias²
SE adds the estimate's and the reference's jackknife variances (independent draws).
The jackknife needs no independence between coordinates: gradient coordinates are
strongly correlated, and the per-coordinate formula 4(m̄_j − r̄_j)²s_j² + 2s_j⁴ summed
over j (s_j² = v_j/R + w_j/R_ref) then understates the variance of ‖m̄ − r̄‖² (6–18×
in this module's test with 20 correlated coordinates). Where the true bias is 0 the
jackknife is conservative (Efron–Stein: about 2× the variance there). It is calibrated
on average, not pivotal: near zero bias with a nearly rank-one covariance (the gradient's)
bias² behaves like a scaled χ²₁ − 1 and its jackknife SE scales with |m̄ − r̄|, so
bias²/SE can reach −3 without any defect. For the gradient, ``projected_bias_test``
adds a test of zero bias that stays pivotal there (split-half direction, Welch's t).
Work is chunked over replicates, so memory is that of one estimate per group; with
``chunk_size``, that of one chunk of points (for the gradient, that chunk's autograd
graph of every noise group of one loss).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pinnlab._seeding import make_generator
from pinnlab.equations import make_equation
from pinnlab.estimators import SteinAntithetic

QUANTITIES = ("residual", "loss", "gradient")
LOSSES = ("biased", "unbiased")


@dataclass(frozen=True)
class EstimatorStudySpec:
    """What an estimator study computes (see the module docstring)."""

    equation: str
    dims: tuple[int, ...]
    samples: tuple[int, ...]
    sigmas: tuple[float, ...]
    noise: tuple[str, ...] = ("independent", "shared")
    quantities: tuple[str, ...] = QUANTITIES
    losses: tuple[str, ...] = LOSSES
    replicates: int = 200
    points: int = 64
    reference_samples: int = 4096
    reference_replicates: int = 50
    problem_seed: int = 0
    init_seed: int = 0
    width: int = 128
    depth: int = 4
    activation: str = "tanh"
    """width, depth, activation: the config's ``model:`` section (one field per option,
    built by :func:`pinnlab.config.make_network` like the solver's network)."""
    equation_parameters: dict = field(default_factory=dict)
    params: dict | None = None
    dtype: torch.dtype = torch.float64
    device: str | torch.device = "cpu"
    """where the network's parameters, the points and the noise live: ``"cpu"``, ``"cuda"``,
    ``"auto"`` (CUDA when available), ... (the config's ``trainer.device``)."""
    unbiased_samples: str = "split"
    """``split``: the unbiased loss's two residual draws get K/2 samples each, so both
    losses use K noise samples per evaluation (equal cost); ``same``: K per draw."""
    time_smoothing: str = "joint"
    time_sigma: float | None = None
    """time_smoothing, time_sigma: the config's Stein options of the same names (time's
    own σ is kept while the space σ runs over ``sigmas``); the estimates and their
    reference are made with them."""
    chunk_size: int | None = None
    """points per chunk of every estimate (the config's ``estimator.chunk_size``): bounds the
    memory of the reference's ``reference_samples`` draws at many points, the gradient
    quantity's included: each chunk's loss is back-propagated before the next chunk's
    forward pass (``_Quantities._by_chunks``). The loss and the gradient quantity use the
    same draws; with shared noise they are those of an unchunked study."""

    def __post_init__(self):
        # what the config's study: section refuses, refused here too (a misspelt loss ran the unbiased
        # one under its name, 'half' ran as 'same', 0 points gave NaN records)
        for name, given, allowed in (("losses", self.losses, LOSSES), ("quantities", self.quantities, QUANTITIES),
                                     ("noise", self.noise, ("independent", "shared"))):
            unknown = [v for v in given if v not in allowed]
            if unknown or not given:
                raise ValueError(f"{name}: {unknown[0]!r} is not one of {', '.join(allowed)}" if unknown
                                 else f"{name}: none given")
        if self.unbiased_samples not in ("split", "same"):
            raise ValueError(f"unbiased_samples: {self.unbiased_samples!r} is not one of split, same")
        # (replicates below the config's 4 stay allowed here: their standard errors are NaN, as documented)
        for name, value, least in (("replicates", self.replicates, 1), ("reference_replicates", self.reference_replicates, 1),
                                   ("points", self.points, 1), ("reference_samples", self.reference_samples, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} = {value!r}: must be an integer >= {least}")
        odd = [k for k in self.samples if k % 2]
        if odd and "unbiased" in self.losses and self.unbiased_samples == "split":
            raise ValueError(f"samples: odd K ({', '.join(map(str, odd))}) with unbiased_samples='split', which "
                             f"gives each of the unbiased loss's two residual draws K/2 samples")


class _Quantities:
    """The three quantities for one (equation, net, estimator, points) and one generator."""

    def __init__(self, equation, net, params, x):
        self.equation, self.net, self.params, self.x = equation, net, params, x
        self.unbiasable = equation.is_unbiasable

    def _draw(self, params, estimator, generator, unbiased, x):
        def model(inputs):
            return torch.func.functional_call(self.net, params, (inputs,))

        def group(queries):
            return estimator.estimate(model, x, queries, generator=generator)

        return self.equation.residual(x, group, unbiased=unbiased and self.unbiasable)

    def loss(self, params, estimator, generator, kind, x: Tensor | None = None):
        """L̂ and the (first) residual draw R̂ at ``x`` (default: the study's points)."""
        x = self.x if x is None else x
        if kind == "biased":
            r = self._draw(params, estimator, generator, False, x)
            return (r * r).mean(), r
        first = self._draw(params, estimator, generator, True, x)
        second = self._draw(params, estimator, generator, True, x)
        return (first * second).mean(), first

    def all(self, estimator, generator, kind, quantities) -> dict[str, Tensor]:
        out = {}
        if estimator.chunk_size is not None and estimator.chunk_size < self.x.shape[0]:
            grad, loss, residual = self._by_chunks(estimator, generator, kind, "gradient" in quantities)
            if grad is not None:
                out["gradient"] = torch.cat([g.reshape(-1) for g in grad.values()])
        elif "gradient" in quantities:
            grad, (loss, residual) = torch.func.grad_and_value(
                lambda p: self.loss(p, estimator, generator, kind), has_aux=True
            )(self.params)
            out["gradient"] = torch.cat([g.reshape(-1) for g in grad.values()]).detach()
            loss = loss.detach()
        else:
            with torch.no_grad():
                loss, residual = self.loss(self.params, estimator, generator, kind)
        out["loss"] = loss.reshape(1)
        out["residual"] = residual.detach()
        return out

    def _by_chunks(
        self, estimator, generator, kind, gradient: bool
    ) -> tuple[dict[str, Tensor] | None, Tensor, Tensor]:
        """L̂, R̂ and (``gradient``) ∇_θ L̂ over the points ``estimator.chunk_size`` at a time.

        L̂ is a mean over points of a function of each point's answers, so L̂ = Σ_c (N_c/N)·L̂_c
        over chunks c of N_c points, and each chunk's loss is back-propagated before the
        next chunk's forward pass: the autograd graph holds one chunk of every noise group
        of the loss, whatever N. Noise as a chunked estimate draws it (:class:`_ChunkDraws`):
        shared, one ξ per noise group for all chunks, so the numbers are those of an
        unchunked study (to rounding); independent, a fresh ξ per chunk and noise group,
        drawn chunk after chunk (a chunked estimate of all points draws group after group:
        with several groups, as in the unbiased loss, the points get other, equally
        distributed, noise). Both quantities come from the same draws.
        """
        n = self.x.shape[0]
        draws = _ChunkDraws(estimator)
        params = {k: v.detach().requires_grad_(gradient) for k, v in self.params.items()}
        grad = {k: torch.zeros_like(v) for k, v in params.items()} if gradient else None
        loss, residuals = 0.0, []
        for start in range(0, n, estimator.chunk_size):
            x = self.x[start : start + estimator.chunk_size]
            draws.next_chunk()
            with torch.set_grad_enabled(gradient):
                part, residual = self.loss(params, draws, generator, kind, x)
                part = part * (x.shape[0] / n)
            if gradient:
                for key, g in zip(params, torch.autograd.grad(part, list(params.values()), allow_unused=True)):
                    if g is not None:
                        grad[key] += g
            loss = loss + part.detach()
            residuals.append(residual.detach())
        return grad, loss, torch.cat(residuals)


class _ChunkDraws:
    """Answers noise groups at one chunk of points from the draws a chunked estimate of
    ``estimator`` makes: independent noise, the generator's next ξ; shared noise, each group's
    one ξ, drawn at the first chunk and replayed at the others from the generator's state
    recorded before it (after the last chunk the generator is as after one draw per group,
    as after a chunked estimate)."""

    def __init__(self, estimator):
        self.single = dataclasses.replace(estimator, chunk_size=None)
        self.states: list[Tensor] = []
        self.calls = 0  # noise groups answered at the current chunk

    def next_chunk(self) -> None:
        self.calls = 0

    def estimate(self, model, x, queries, *, generator) -> list[Tensor]:
        if self.single.noise == "shared":
            if self.calls == len(self.states):
                self.states.append(generator.get_state())
            else:
                generator.set_state(self.states[self.calls])
        self.calls += 1
        return self.single.estimate(model, x, queries, generator=generator)


GROUPS = 10
"""Replicates are split into this many groups for the jackknife standard errors."""


def _combine(parts: list[tuple[int, Tensor, Tensor]]) -> tuple[int, Tensor, Tensor]:
    """Pool (count, mean, M2) of disjoint groups (Chan et al.'s parallel Welford update)."""
    n, mean, m2 = parts[0]
    for nb, mb, m2b in parts[1:]:
        total = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta * delta * (n * nb / total)
        n = total
    return n, mean, m2


def _jackknife_se(values: list[float]) -> float:
    """Delete-a-group jackknife SE from the G leave-one-group-out values of a statistic."""
    if len(values) < 3:
        return math.nan
    v = np.asarray(values)
    return math.sqrt((len(v) - 1) / len(v) * float(((v - v.mean()) ** 2).sum()))


@dataclass(frozen=True)
class Moments:
    """Running moments of one quantity over R replicates kept in G groups.

    ``mean`` and ``var`` (per coordinate, unbiased) pool all groups; ``pooled(skip=g)``
    pools all but group g, for delete-a-group jackknife standard errors.
    """

    parts: tuple[tuple[int, Tensor, Tensor], ...]

    @property
    def count(self) -> int:
        return sum(p[0] for p in self.parts)

    def pooled(self, skip: int | None = None) -> tuple[int, Tensor, Tensor]:
        """(count, mean, per-coordinate variance) of all groups but ``skip``."""
        n, mean, m2 = _combine([p for g, p in enumerate(self.parts) if g != skip])
        return n, mean, m2 / max(n - 1, 1)

    @property
    def mean(self) -> Tensor:
        return self.pooled()[1]

    @property
    def var(self) -> Tensor:
        return self.pooled()[2]

    def trace_variance_se(self) -> float:
        """Jackknife SE of Σ_j var_j (the trace of the covariance for the gradient)."""
        return _jackknife_se([float(self.pooled(g)[2].sum()) for g in range(len(self.parts))])


def _moments(draw: Callable[[int], dict[str, Tensor]], count: int, groups: int = GROUPS) -> dict[str, Moments]:
    """Moments of each quantity of ``count`` draws; replicate i falls in group i mod
    ``groups``. Welford updates in float64; memory O(groups · size of one draw)."""
    groups = max(1, min(groups, count))
    stats: dict[str, list[list]] = {}
    for i in range(count):
        g = i % groups
        for key, value in draw(i).items():
            value = value.double()
            if key not in stats:
                stats[key] = [[0, torch.zeros_like(value), torch.zeros_like(value)] for _ in range(groups)]
            entry = stats[key][g]
            entry[0] += 1
            delta = value - entry[1]
            entry[1] = entry[1] + delta / entry[0]
            entry[2] = entry[2] + delta * (value - entry[1])
    return {key: Moments(tuple(tuple(p) for p in parts if p[0] > 0)) for key, parts in stats.items()}


def _bias2(est: tuple[int, Tensor, Tensor], ref: tuple[int, Tensor, Tensor]) -> Tensor:
    """Per-coordinate debiased squared error (m̄ − r̄)² − v/R − w/R_ref."""
    n, mean, var = est
    nr, ref_mean, ref_var = ref
    diff = mean - ref_mean
    return diff * diff - var / n - ref_var / nr


def projected_bias_test(est: Moments, ref: Moments) -> dict[str, float]:
    """A test of zero bias that stays pivotal where bias² is not (a vector quantity with a
    nearly rank-one covariance, near zero bias; see the module doc).

    The estimate's groups and the reference's are each split in halves A and B. The first
    halves give a direction u = (m̄_A − r̄_A)/‖·‖; along it, the second halves' group means
    x_g = ⟨u, m_g⟩ and y_h = ⟨u, r_h⟩ are independent of u, so under zero bias
    x̄ − ȳ has mean 0 and Welch's t = (x̄ − ȳ)/sqrt(s_x²/G_x + s_y²/G_y) is t-distributed
    (with the Welch–Satterthwaite degrees of freedom) as far as group means are normal.
    Since ⟨u, b⟩ ≤ ‖b‖, a significant t is evidence of bias in any covariance. Returns
    ``bias_t``, ``bias_t_df`` and the two-sided ``bias_p`` (NaN with fewer than 4 groups
    on either side).
    """
    from scipy import stats

    nan = {"bias_t": math.nan, "bias_t_df": math.nan, "bias_p": math.nan}
    if len(est.parts) < 4 or len(ref.parts) < 4:
        return nan
    ge, gr = len(est.parts) // 2, len(ref.parts) // 2
    u = _combine(list(est.parts[:ge]))[1] - _combine(list(ref.parts[:gr]))[1]
    norm = float(u.norm())
    if not norm > 0:
        return nan
    u = u / norm
    x = np.array([float(u @ p[1]) for p in est.parts[ge:]])
    y = np.array([float(u @ p[1]) for p in ref.parts[gr:]])
    a, b = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if not a + b > 0:
        return nan
    t = (x.mean() - y.mean()) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (len(x) - 1) + b * b / (len(y) - 1))
    return {"bias_t": float(t), "bias_t_df": float(df), "bias_p": float(2 * stats.t.sf(abs(t), df))}


def summarise(quantity: str, est: Moments, ref: Moments) -> dict[str, float]:
    """bias² with its jackknife SE, variance with its jackknife SE, and MSE of one
    quantity against its reference (see module doc)."""
    full_est, full_ref = est.pooled(), ref.pooled()
    scale = 1.0 / full_est[1].numel() if quantity == "residual" else 1.0
    bias2 = _bias2(full_est, full_ref)
    # The estimate and the reference come from independent draws: their jackknife
    # variances add.
    se_est = _jackknife_se([float(_bias2(est.pooled(g), full_ref).sum()) for g in range(len(est.parts))])
    se_ref = _jackknife_se([float(_bias2(full_est, ref.pooled(g)).sum()) for g in range(len(ref.parts))])
    out = {
        "bias2": float(bias2.sum() * scale),
        "bias2_se": math.hypot(se_est, se_ref) * scale,
        "variance": float(full_est[2].sum() * scale),
        "variance_se": est.trace_variance_se() * scale,
    }
    out["mse"] = out["bias2"] + out["variance"]
    if quantity == "gradient":
        out.update(projected_bias_test(est, ref))
    if quantity == "loss":
        out["bias"] = float(full_est[1][0] - full_ref[1][0])
        out["bias_se"] = math.sqrt(float(full_est[2][0] / full_est[0] + full_ref[2][0] / full_ref[0]))
    return out


def _stein(spec: EstimatorStudySpec, equation, sigma: float, num_samples: int, noise: str) -> SteinAntithetic:
    """The studied Stein estimator at space σ ``sigma``, with the spec's time options, built
    as the config builds the solver's (``make_estimator``)."""
    from pinnlab.config import EstimatorSection, make_estimator

    section = EstimatorSection(kind="stein", sigma=sigma, time_sigma=spec.time_sigma, samples=num_samples,
                               noise=noise, time_smoothing=spec.time_smoothing, chunk_size=spec.chunk_size)
    estimator = make_estimator(section, equation)
    estimator.validate(equation)
    return estimator


def _replicates(quantities, estimator, kind, names, *stream, device) -> Callable[[int], dict[str, Tensor]]:
    """Replicate i ↦ ``quantities.all`` with noise from the stream ``(*stream, i)`` on
    ``device``: the draw :func:`_moments` takes."""
    return lambda i: quantities.all(estimator, make_generator(*stream, i, device=device), kind, names)


def run_estimator_study(spec: EstimatorStudySpec, progress: Callable[[str], None] | None = None) -> dict:
    """Run the study; returns ``{"records": [...], "slopes": {...}, "comparisons": [...]}``
    (JSON-ready)."""
    from pinnlab.config import ModelSection, make_network
    from pinnlab.solvers import resolve_device

    model = ModelSection(**{key: getattr(spec, key) for key in ModelSection.model_fields})
    device = resolve_device(spec.device)
    records = []
    for dim in spec.dims:
        equation = make_equation(spec.equation, dim, seed=spec.problem_seed, **spec.equation_parameters)
        net = make_network(model, equation.input_dim, seed=spec.init_seed, dtype=spec.dtype)
        # the parameters on the device, as the solver's (functional_call reads them, not the module's)
        params = {k: v.detach().to(device) for k, v in net.named_parameters()}
        if spec.params is not None:
            params = {k: torch.as_tensor(v, dtype=spec.dtype, device=device) for k, v in spec.params.items()}
        # fixed points drawn on the CPU, as the solver's test set: the same on every device
        x = equation.sample_collocation(spec.points, generator=make_generator(spec.problem_seed, "study-points"),
                                        dtype=spec.dtype).to(device)
        quantities = _Quantities(equation, net, params, x)
        for sigma in spec.sigmas:
            reference_estimator = _stein(spec, equation, sigma, spec.reference_samples, "independent")
            ref = _moments(_replicates(quantities, reference_estimator, "unbiased", spec.quantities,
                                       spec.problem_seed, "reference", dim, device=device),
                           spec.reference_replicates)
            if progress:
                progress(f"reference d={dim} σ={sigma:g} done")
            for noise, k, loss in itertools.product(spec.noise, spec.samples, spec.losses):
                per_draw = k // 2 if loss == "unbiased" and spec.unbiased_samples == "split" else k
                estimator = _stein(spec, equation, sigma, per_draw, noise)
                est = _moments(_replicates(quantities, estimator, loss, spec.quantities,
                                           spec.problem_seed, "study", dim, k, noise, loss, device=device),
                               spec.replicates)
                for quantity in spec.quantities:
                    record = {"quantity": quantity, "loss": loss, "noise": noise, "dim": dim,
                              "samples": k, "samples_per_draw": per_draw, "sigma": sigma}
                    record.update(summarise(quantity, est[quantity], ref[quantity]))
                    records.append(record)
                if progress:
                    progress(f"d={dim} σ={sigma:g} noise={noise} K={k} {loss} done")
    return {"records": records, "slopes": fit_slopes(records), "comparisons": compare_losses(records)}


def compare_losses(records: list[dict]) -> list[dict]:
    """Unbiased against biased variance per (quantity, noise, d, K, σ): the ratio and
    z = (V_u − V_b)/sqrt(se_u² + se_b²) (the two come from independent noise draws).

    ``halving_prediction`` (where the grid has the biased cell at the unbiased loss's
    per-draw K′: K/2 with ``split``, K with ``same``) is V_b(K′)/(2·V_b(K)): the ratio if
    the product of two independent K′-sample draws had half the variance of the square
    of one, which is exact for Gaussian estimates (Isserlis) and fails where the square's
    fourth moment matters (heavy-tailed Stein draws at small K). With ``split`` it
    exceeds 1 only where the biased variance falls faster than 1/K. It concerns the
    loss and its gradient (a product against a square); the unbiased loss's residual
    record is one K′-sample draw, not a product, so for residual rows, and where the
    biased cell at K′ is missing, it is None.
    """
    table = {(r["quantity"], r["loss"], r["noise"], r["dim"], r["samples"], r["sigma"]): r for r in records}
    out = []
    for (quantity, loss, noise, dim, k, sigma), unbiased in table.items():
        biased = table.get((quantity, "biased", noise, dim, k, sigma))
        if loss != "unbiased" or biased is None:
            continue
        se = math.hypot(unbiased.get("variance_se", math.nan), biased.get("variance_se", math.nan))
        diff = unbiased["variance"] - biased["variance"]
        row = {"quantity": quantity, "noise": noise, "dim": dim, "samples": k, "sigma": sigma,
               "variance_ratio": unbiased["variance"] / biased["variance"] if biased["variance"] else math.nan,
               "z": diff / se if se > 0 else math.nan}
        at_draw = table.get((quantity, "biased", noise, dim, unbiased.get("samples_per_draw"), sigma))
        row["halving_prediction"] = None
        if quantity != "residual" and at_draw is not None and biased["variance"]:
            row["halving_prediction"] = at_draw["variance"] / (2 * biased["variance"])
        out.append(row)
    return out


def loglog_fit(x, y, y_se=None) -> tuple[float, float, float, float]:
    """The line log y = log ŷ + slope·(log x − log x̂) through K: ``(slope, slope_se, log
    x̂, log ŷ)``; NaN where fewer than two points or some x or y is not positive and
    finite (a variance of exactly 0, every replicate alike, has no logarithm and no power
    law).

    With the points' standard errors ``y_se`` (all finite and > 0), weighted least
    squares: log y_i has standard error y_se_i / y_i (delta method), weight its inverse
    square, and the slope's standard error is the one those errors give,
    1/√(Σ w_i (log x_i − log x̂)²), scaled up by √(χ²/(n − 2)) where the points scatter
    about the line more than their errors say (n > 2). Without them (or where one is not
    usable), ordinary least squares with the standard error from the scatter alone (n − 2
    degrees of freedom; NaN for two points), which with 4 or 5 nearly collinear points can
    be many times too small: a study's variances carry 3–14 % errors each, which the
    scatter of four of them need not show."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all() and (x > 0).all() and (y > 0).all()):
        return math.nan, math.nan, math.nan, math.nan
    lx, ly = np.log(x), np.log(y)
    s = None if y_se is None else np.asarray(y_se, float) / y
    weighted = s is not None and bool(np.isfinite(s).all() and (s > 0).all())
    w = 1.0 / s**2 if weighted else np.ones_like(lx)
    cx, cy = float((w * lx).sum() / w.sum()), float((w * ly).sum() / w.sum())
    sxx = float((w * (lx - cx) ** 2).sum())
    if np.ptp(lx) == 0:  # one K throughout: no line through it has a slope
        return math.nan, math.nan, cx, cy
    slope = float((w * (lx - cx) * (ly - cy)).sum()) / sxx
    chi2 = float((w * (ly - cy - slope * (lx - cx)) ** 2).sum())
    n = len(lx)
    if weighted:
        se = math.sqrt(1.0 / sxx) * max(1.0, math.sqrt(chi2 / (n - 2)) if n > 2 else 1.0)
    else:
        se = math.sqrt(chi2 / (n - 2) / sxx) if n > 2 else math.nan
    return slope, se, cx, cy


def loglog_slope(x, y, y_se=None) -> tuple[float, float]:
    """Slope of log y on log x and its standard error (:func:`loglog_fit`)."""
    return loglog_fit(x, y, y_se)[:2]


BIAS_Z = 2.0
"""A bias counts as distinguishable from 0 where it is more than ``BIAS_Z`` standard errors
from 0 (:func:`bias_signs`); a series gets a bias slope only if it is at every K."""


def bias_signs(quantity: str, rows: list[dict]) -> list[int]:
    """Per record, +1 (−1) where its bias is more than ``BIAS_Z`` SE above (below) 0, else 0.

    The loss has a signed ``bias`` with ``bias_se``; the residual and the gradient have the
    debiased ``bias2`` with ``bias2_se``, and only bias² > ``BIAS_Z``·SE counts (+1): a
    bias² below 0 is an estimate of a zero bias (see the module doc). A NaN value or SE
    gives 0.
    """
    if quantity == "loss":
        return [int(r["bias"] > BIAS_Z * r["bias_se"]) - int(r["bias"] < -BIAS_Z * r["bias_se"]) for r in rows]
    return [int(r["bias2"] > BIAS_Z * r["bias2_se"]) for r in rows]


def bias_is_significant(quantity: str, rows: list[dict]) -> bool:
    """Whether one series' bias (rows: its records, one per K) is more than ``BIAS_Z`` = 2
    standard errors from 0 at every K, with one sign throughout, so that a power law in K
    can be fitted to |bias| (loss) or bias² (residual, gradient). Where the bias is
    consistent with 0 at some K, the log of |bias| there is the log of noise: fitted, it
    gives slopes such as −4.6 ± 1.0 that mean nothing.
    """
    signs = bias_signs(quantity, rows)
    return bool(signs) and (all(s == 1 for s in signs) or all(s == -1 for s in signs))


def series_points(quantity: str, what: str, rows: list[dict]) -> tuple[list[float], list[float]]:
    """The values a slope is fitted to and their standard errors, one per K: the variance
    (``what="variance"``), |bias| of the loss or bias² of the residual and the gradient."""
    if what == "variance":
        return [r["variance"] for r in rows], [r.get("variance_se", math.nan) for r in rows]
    if quantity == "loss":
        return [abs(r["bias"]) for r in rows], [r["bias_se"] for r in rows]
    return [r["bias2"] for r in rows], [r["bias2_se"] for r in rows]


def fit_slopes(records: list[dict]) -> dict[str, dict[str, float]]:
    """Log–log slopes against K, per series (quantity, loss, noise, d, σ), with their
    standard errors (:func:`loglog_fit`, weighted by the records' own standard errors).

    ``variance_slope`` is fitted to every series. ``bias_slope`` (of |bias|, the loss) and
    ``bias2_slope`` (of bias², the residual and the gradient) only to a series whose bias is
    more than ``BIAS_Z`` = 2 standard errors from 0, with one sign, at every K
    (:func:`bias_is_significant`); otherwise the entry has no bias key.
    """
    series: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["quantity"], r["loss"], r["noise"], r["dim"], r["sigma"])
        series.setdefault(key, []).append(r)
    out = {}
    for (quantity, loss, noise, dim, sigma), rows in series.items():
        rows = sorted(rows, key=lambda r: r["samples"])
        ks = [r["samples"] for r in rows]
        name = f"{quantity}/{loss}/{noise}/d={dim}/sigma={sigma:g}"
        entry = {}
        slope, se = loglog_slope(ks, *series_points(quantity, "variance", rows))
        entry["variance_slope"], entry["variance_slope_se"] = slope, se
        if bias_is_significant(quantity, rows):
            key = "bias" if quantity == "loss" else "bias2"
            entry[f"{key}_slope"], entry[f"{key}_slope_se"] = loglog_slope(ks, *series_points(quantity, key, rows))
        out[name] = entry
    return out
