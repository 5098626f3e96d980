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
    se(bias²_j)² ≈ 4(m̄_j − r̄_j)² s_j² + 2 s_j⁴,  s_j² = v_j/R + w_j/R_ref

summed over coordinates for the gradient (‖mean error‖², trace of the covariance) and
averaged over points for the residual; ``variance`` is Σ_j v_j (or the point average)
and ``mse`` = bias² + variance. For the loss (a scalar) the signed ``bias`` is reported
too. Work is chunked over replicates, so memory is that of one estimate.
"""

from __future__ import annotations

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
from pinnlab.nets import MLP

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
    equation_parameters: dict = field(default_factory=dict)
    params: dict | None = None
    dtype: torch.dtype = torch.float64
    unbiased_samples: str = "split"
    """``split``: the unbiased loss's two residual draws get K/2 samples each, so both
    losses use K noise samples per evaluation (equal cost); ``same``: K per draw."""


class _Quantities:
    """The three quantities for one (equation, net, estimator, points) and one generator."""

    def __init__(self, equation, net, params, x):
        self.equation, self.net, self.params, self.x = equation, net, params, x
        self.unbiasable = equation.is_unbiasable

    def _draw(self, params, estimator, generator, unbiased):
        def model(inputs):
            return torch.func.functional_call(self.net, params, (inputs,))

        def group(queries):
            return estimator.estimate(model, self.x, queries, generator=generator)

        return self.equation.residual(self.x, group, unbiased=unbiased and self.unbiasable)

    def loss(self, params, estimator, generator, kind):
        if kind == "biased":
            r = self._draw(params, estimator, generator, False)
            return (r * r).mean(), r
        first = self._draw(params, estimator, generator, True)
        second = self._draw(params, estimator, generator, True)
        return (first * second).mean(), first

    def all(self, estimator, generator, kind, quantities) -> dict[str, Tensor]:
        out = {}
        if "gradient" in quantities:
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


GROUPS = 10
"""Replicates are split into this many groups for the jackknife SE of the variance."""


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


def _moments(draw: Callable[[int], dict[str, Tensor]], count: int,
             groups: int = GROUPS) -> dict[str, tuple[Tensor, Tensor, float]]:
    """Mean, variance and the jackknife standard error of Σ_j variance_j of each quantity.

    Running (Welford, float64) moments are kept per group of replicates (replicate i
    falls in group i mod ``groups``); the groups are pooled for the mean and variance,
    and pooled leaving one group out for the delete-a-group jackknife of the summed
    variance (the trace of the covariance for the gradient):
    se² = (G − 1)/G · Σ_g (V_(−g) − V̄)². Memory: O(groups · size of one draw).
    """
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
    out = {}
    for key, parts in stats.items():
        parts = [tuple(p) for p in parts if p[0] > 0]
        n, mean, m2 = _combine(parts)
        var = m2 / max(n - 1, 1)
        se = math.nan
        if len(parts) > 2:
            leave_out = []
            for g in range(len(parts)):
                nl, _, m2l = _combine(parts[:g] + parts[g + 1:])
                leave_out.append(float((m2l / max(nl - 1, 1)).sum()))
            values = np.asarray(leave_out)
            se = math.sqrt((len(values) - 1) / len(values) * float(((values - values.mean()) ** 2).sum()))
        out[key] = (mean, var, se)
    return out


def summarise(quantity: str, mean: Tensor, var: Tensor, count: int, ref_mean: Tensor,
              ref_var: Tensor, ref_count: int, variance_se: float = math.nan) -> dict[str, float]:
    """bias², its SE, variance (with ``variance_se``, the SE of Σ_j var_j) and MSE of one
    quantity against its reference (see module doc)."""
    diff = mean - ref_mean
    s2 = var / count + ref_var / ref_count
    bias2 = diff * diff - s2
    se2 = 4 * diff * diff * s2 + 2 * s2 * s2
    scale = 1.0 / mean.numel() if quantity == "residual" else 1.0
    out = {
        "bias2": float(bias2.sum() * scale),
        "bias2_se": float(torch.sqrt(se2.sum()) * scale),
        "variance": float(var.sum() * scale),
        "variance_se": float(variance_se * scale),
    }
    out["mse"] = out["bias2"] + out["variance"]
    if quantity == "loss":
        out["bias"] = float(diff[0])
        out["bias_se"] = float(torch.sqrt(s2[0]))
    return out


def run_estimator_study(spec: EstimatorStudySpec, progress: Callable[[str], None] | None = None) -> dict:
    """Run the study; returns ``{"records": [...], "slopes": {...}}`` (JSON-ready)."""
    records = []
    for dim in spec.dims:
        equation = make_equation(spec.equation, dim, seed=spec.problem_seed, **spec.equation_parameters)
        net = MLP(equation.input_dim, width=spec.width, depth=spec.depth, dtype=spec.dtype,
                  generator=make_generator(spec.init_seed, "init"))
        params = {k: v.detach() for k, v in net.named_parameters()}
        if spec.params is not None:
            params = {k: torch.as_tensor(v, dtype=spec.dtype) for k, v in spec.params.items()}
        x = equation.sample_collocation(spec.points, generator=make_generator(spec.problem_seed, "study-points"),
                                        dtype=spec.dtype)
        quantities = _Quantities(equation, net, params, x)
        for sigma in spec.sigmas:
            reference_estimator = SteinAntithetic(sigma=sigma, num_samples=spec.reference_samples,
                                                  noise="independent")
            ref = _moments(
                lambda i: quantities.all(reference_estimator, make_generator(spec.problem_seed, "reference", dim, i),
                                         "unbiased", spec.quantities),
                spec.reference_replicates,
            )
            if progress:
                progress(f"reference d={dim} σ={sigma:g} done")
            for noise, k, loss in itertools.product(spec.noise, spec.samples, spec.losses):
                per_draw = max(1, k // 2) if loss == "unbiased" and spec.unbiased_samples == "split" else k
                estimator = SteinAntithetic(sigma=sigma, num_samples=per_draw, noise=noise)
                est = _moments(
                    lambda i: quantities.all(estimator, make_generator(spec.problem_seed, "study", dim, k, noise, loss, i),
                                             loss, spec.quantities),
                    spec.replicates,
                )
                for quantity in spec.quantities:
                    record = {"quantity": quantity, "loss": loss, "noise": noise, "dim": dim,
                              "samples": k, "samples_per_draw": per_draw, "sigma": sigma}
                    mean, var, var_se = est[quantity]
                    ref_mean, ref_var, _ = ref[quantity]
                    record.update(summarise(quantity, mean, var, spec.replicates, ref_mean, ref_var,
                                            spec.reference_replicates, var_se))
                    records.append(record)
                if progress:
                    progress(f"d={dim} σ={sigma:g} noise={noise} K={k} {loss} done")
    return {"records": records, "slopes": fit_slopes(records), "comparisons": compare_losses(records)}


def compare_losses(records: list[dict]) -> list[dict]:
    """Unbiased against biased variance per (quantity, noise, d, K, σ): the ratio and
    z = (V_u − V_b)/sqrt(se_u² + se_b²) (the two come from independent noise draws)."""
    table = {(r["quantity"], r["loss"], r["noise"], r["dim"], r["samples"], r["sigma"]): r for r in records}
    out = []
    for (quantity, loss, noise, dim, k, sigma), unbiased in table.items():
        biased = table.get((quantity, "biased", noise, dim, k, sigma))
        if loss != "unbiased" or biased is None:
            continue
        se = math.hypot(unbiased.get("variance_se", math.nan), biased.get("variance_se", math.nan))
        diff = unbiased["variance"] - biased["variance"]
        out.append({"quantity": quantity, "noise": noise, "dim": dim, "samples": k, "sigma": sigma,
                    "variance_ratio": unbiased["variance"] / biased["variance"] if biased["variance"] else math.nan,
                    "z": diff / se if se > 0 else math.nan})
    return out


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares slope of log y on log x and its standard error."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2:
        return math.nan, math.nan
    a = np.vstack([lx, np.ones_like(lx)]).T
    coef, res, *_ = np.linalg.lstsq(a, ly, rcond=None)
    if len(lx) > 2:
        resid = ly - a @ coef
        s2 = float(resid @ resid) / (len(lx) - 2)
        se = math.sqrt(s2 / float(((lx - lx.mean()) ** 2).sum()))
    else:
        se = math.nan
    return float(coef[0]), se


def fit_slopes(records: list[dict]) -> dict[str, dict[str, float]]:
    """Slopes of |bias| (loss) or bias² and of the variance against K, per series."""
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
        slope, se = loglog_slope(ks, [r["variance"] for r in rows])
        entry["variance_slope"], entry["variance_slope_se"] = slope, se
        if quantity == "loss":
            bias = [r["bias"] for r in rows]
            if all(b > 0 for b in bias):
                entry["bias_slope"], entry["bias_slope_se"] = loglog_slope(ks, bias)
        else:
            b2 = [r["bias2"] for r in rows]
            if all(b > 0 for b in b2):
                entry["bias2_slope"], entry["bias2_slope_se"] = loglog_slope(ks, b2)
        out[name] = entry
    return out
