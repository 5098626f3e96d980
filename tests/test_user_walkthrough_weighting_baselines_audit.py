"""A new user's comparison of pinnlab's bilevel tuning with the usual heuristics: the loss
weightings ``loss.weighting: lra|relobralo`` in ``pinnlab solve`` on a soft-constraint
config, the searches ``tune.method: random|optuna`` in ``pinnlab tune`` and the equal
wall-clock comparison of ``benchmarks/bench_tuning.py``. The problems met on the way (the
message for a weighting option that is not a number, Optuna's TPE that never runs in the
short searches the README measured, a horizon a search ignores, the benchmark's claim on
ReLoBRaLo's cost) and the refusals met there that no other test pinned through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinnlab import config as configuration
from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U

ROOT = Path(__file__).resolve().parents[1]

SOFT = """\
equation: {name: poisson_two_body, dim: 3, seed: 1, constraint: soft}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2, noise: shared, eval_samples: 2}
loss: {kind: biased, weights: {boundary: 1.0e-3}}
trainer: {steps: 2, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10}
"""
"""A soft Poisson problem (residual and boundary terms), the boundary weight badly scaled."""

SEARCH = WEIGHT_FG2U.replace("method: fg2u\n  options: {num_directions: 1}", "method: optuna")
"""WEIGHT_FG2U as a 3-trial Optuna search over the boundary weight."""


def _run(args):
    return main([str(a) for a in args])


def _write(tmp_path, text=SOFT):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return cfg


def _refusal(tmp_path, *overrides, text=SOFT):
    with pytest.raises(configuration.ConfigError) as info:
        configuration.load(_write(tmp_path, text), list(overrides))
    return str(info.value)


# -- bugs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("reference", "boundary"), ("alpha", ".inf"), ("alpha", "high")])
def test_a_weighting_option_that_is_not_a_finite_number_is_named_as_such(tmp_path, option, value):
    """``loss.weighting_options.reference=boundary`` (LRA's reference term, a user's guess at
    an option the README does not list) said 'input should be a valid integer', though the
    same key with a number is refused as an unknown option of lra; ``alpha=.inf`` said
    'valid integer' too, where ``estimator.sigma=.inf`` says 'input should be a finite
    number'. Neither message may send the user after an integer."""
    message = _refusal(tmp_path, "loss.weighting=lra", f"loss.weighting_options.{option}={value}")
    assert message.startswith(f"loss.weighting_options.{option}"), message
    assert "integer" not in message, message
    if option == "reference":
        assert message == "loss.weighting_options.reference: unknown option of lra (allowed: alpha, every)"


def test_a_short_tpe_search_uses_the_scores_of_its_finished_trials(tmp_path):
    """README: ``method: optuna`` is the TPE baseline. In a 3-trial search the third
    candidate of TPE depends on how the first two scored: scored by the weight itself
    (smaller is better) and by its negative (larger is better), the third draws differ.
    Now they are equal: both runs draw 554.07, 84.25, 0.0054, whatever the scores."""
    pytest.importorskip("optuna")
    from pinnlab.tuning.search import search
    from pinnlab.tuning.setup import build_tuning

    setup = build_tuning(configuration.load(_write(tmp_path, SEARCH), []))
    draws = []
    for sign in (1.0, -1.0):
        outcome = search(setup, sampler="optuna", score=lambda phi, s=sign: s * float(phi["weights.boundary"]))
        draws.append([float(v) for v in outcome.history["phi/weights.boundary"]])
    assert draws[0][:2] == draws[1][:2]  # (the first trial has nothing to learn from)
    assert draws[0][2] != draws[1][2], draws


def test_a_horizon_a_search_with_its_own_trial_steps_ignores_is_refused(tmp_path):
    """README: settings are refused where they would be ignored. A random search's trial
    length is ``tune.trial_steps`` (default 10 × horizon), and with trial_steps given the
    config's ``horizon: 2`` acts nowhere (the trials, the result's ``trial_steps`` and the
    final solve are those of any horizon), so it must be refused as ``tune.outer_lr`` is."""
    text = SEARCH.replace("method: optuna", "method: random").replace("horizon: 2", "horizon: 2\n  trial_steps: 3")
    message = _refusal(tmp_path, text=text)
    assert message.startswith("tune.horizon"), message


def test_the_benchmark_does_not_say_relobralo_computes_per_term_gradients():
    """The equal wall-clock protocol: "(LRA and ReLoBRaLo compute per-term gradients, so
    their steps cost more)". ReLoBRaLo never asks for them (``needs_gradients`` is False
    at every step); only LRA does, every ``every`` steps."""
    import re

    from pinnlab.solvers.weighting import LRA, ReLoBRaLo

    assert not any(ReLoBRaLo().needs_gradients(step) for step in range(50))
    assert LRA().needs_gradients(0)
    text = " ".join((ROOT / "benchmarks" / "bench_tuning.py").read_text().split())
    assert not re.search(r"LRA and ReLoBRaLo compute per-term gradients", text)


# -- behaviour met on the way, pinned -----------------------------------------------------------
@pytest.mark.parametrize("weighting, interval", [("lra", "(0, 1]"), ("relobralo", "[0, 1]")])
def test_a_negative_weighting_alpha_is_one_line_and_exit_2(tmp_path, capsys, weighting, interval):
    """``pinnlab solve`` with ``loss.weighting_options.alpha=-0.1`` is one line naming the
    option and its range, exit code 2, and no result file."""
    out = tmp_path / "w.h5"
    assert _run(["solve", _write(tmp_path), f"loss.weighting={weighting}", "loss.weighting_options.alpha=-0.1",
                 "-o", out, "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err == f"pinnlab: error: config error: loss.weighting_options.alpha = -0.1: must be in {interval}\n", err
    assert not out.exists()


def test_relobralo_alpha_zero_is_accepted_where_lra_refuses_it(tmp_path):
    """The two weightings' α ranges differ as their formulas do: ReLoBRaLo's α = 0 keeps
    only the balance against the previous step (accepted), LRA's α = 0 would never move
    the weights (refused)."""
    config = configuration.load(_write(tmp_path), ["loss.weighting=relobralo", "loss.weighting_options.alpha=0"])
    assert configuration.make_weighting(config.loss).alpha == 0
    assert _refusal(tmp_path, "loss.weighting=lra", "loss.weighting_options.alpha=0") == \
        "loss.weighting_options.alpha = 0: must be in (0, 1]"


@pytest.mark.parametrize("weighting", ["lra", "relobralo"])
def test_a_weighting_on_a_one_term_problem_is_one_line_and_exit_2(tmp_path, capsys, weighting):
    """A hard-constrained problem has the residual term alone: ``pinnlab solve`` with a
    weighting is one line that says so and what adds a term, exit code 2, no file."""
    out = tmp_path / "w.h5"
    assert _run(["solve", _write(tmp_path), "equation.constraint=hard", "loss.weights={}",
                 f"loss.weighting={weighting}", "-o", out, "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err == (f"pinnlab: error: config error: loss.weighting = {weighting!r}: needs more than one loss term "
                   "(use equation.constraint: soft or data.train: true)\n"), err
    assert not out.exists()


def test_the_benchmark_refuses_optuna_without_the_extra_before_any_run(tmp_path, monkeypatch, capsys):
    """optuna is an optional extra, and ``--methods`` lists it by default. Without it,
    ``pinnlab tune`` refuses tune.method=optuna in one line (exit 2) before any work; the
    benchmark checks its other options before the warm-up and must check this one there
    too, not after the default, LRA, ReLoBRaLo and random rows have run."""
    import importlib.util
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_tuning

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    ran = []

    def untuned(name, data, method, steps):
        ran.append(method)
        return {"error": 1.0, "seconds": 0.0, "steps": steps, "wall": {20: 0.0, 200: 1.0}}

    monkeypatch.setattr(bench_tuning, "run_untuned", untuned)
    out = tmp_path / "b.json"
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--quick", "--problems", "a", "--methods", "default,optuna",
                                      "--json", str(out)])
    assert bench_tuning.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pinnlab[optuna]" in err[0], err
    assert ran == [] and not out.exists()


OVERFLOWING = (WEIGHT_FG2U.replace("method: fg2u\n  options: {num_directions: 1}", "method: random")
               .replace("dtype: float64", "dtype: float32").replace("outer_steps: 3", "outer_steps: 1")
               .replace("tunables: {weights.boundary: {}}",
                        "tunables: {weights.boundary: {low: 1.0e+36, high: 3.0e+38}}"))
"""A one-trial float32 random search whose boundary weight (1e36..3e38) overflows the
gradient at the first step: Adam's second moment becomes inf, so θ never moves."""


def test_a_trial_whose_update_overflowed_is_diverged(tmp_path):
    """README: a diverged trial scores inf, worse than every finite one. At weight 1e37 in
    float32 the loss is finite (about 4e35) but its gradient overflows, the step that
    `pinnlab solve` stops at ('the update at step 1 gave non-finite parameters or optimizer
    state'). The trial scored the objective of θ_0 instead, the same for every such weight."""
    import math

    import torch

    from pinnlab.tuning.search import trial_objective
    from pinnlab.tuning.setup import build_tuning

    setup = build_tuning(configuration.load(_write(tmp_path, OVERFLOWING), []))
    phi = {"weights.boundary": torch.tensor(1.0e37, dtype=setup.dtype)}
    assert trial_objective(setup, phi, 2) == math.inf


def test_a_final_solve_that_stops_nonfinite_says_why(tmp_path, capsys):
    """The search's only trial drew a boundary weight near 1.5e37 (see the test above):
    its final solve stops at step 1 with status 'nonfinite' and a message in the result
    file. The command ended with exit code 1 and the rel_l2 line alone on stdout; stderr
    must carry the reason, as `pinnlab solve` of the same weight prints it."""
    import h5py

    out = tmp_path / "t.h5"
    assert _run(["tune", _write(tmp_path, OVERFLOWING), "-o", out, "--progress", "off"]) == 1
    err = capsys.readouterr().err
    with h5py.File(out) as fh:
        status, message = fh.attrs["status"], fh.attrs["message"]
    assert status == "nonfinite" and "gradient overflowed" in message, message
    assert message in err, err


def test_the_tune_plot_of_a_search_whose_trials_all_diverged_spans_its_trials(tmp_path, monkeypatch):
    """A random search whose 4 trials all scored inf (status 'nonfinite', as `pinnlab tune`
    writes it when every trial's training diverged): the objective panel must span the
    trials 1..4, as the φ panel beside it does, and say that they diverged."""
    import h5py
    import numpy as np

    from pinnlab.plots import tune as tune_plots

    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as fh:
        group = fh.create_group("tune")
        group.attrs.update(method="random", objective="data", status="nonfinite", message="every one ...")
        group["outer_step"] = np.arange(4)
        group["value"] = np.full(4, np.inf)
        group["phi/weights.boundary"] = np.array([0.5, 2.0, 7.0, 30.0])
        fh.create_group("final").attrs["rel_l2"] = 1.0
    figures = []
    monkeypatch.setattr(tune_plots, "_save", lambda fig, p: figures.append(fig) or p)
    monkeypatch.setattr(tune_plots, "plot_solve", lambda p, outdir: [])
    tune_plots.plot_tune(path, tmp_path / "figs")
    ax_phi, ax_obj = figures[0].axes[:2]
    low, high = ax_obj.get_xlim()
    assert low <= 1 and high >= 4, (low, high)
    texts = " ".join([ax_obj.get_title(), *(t.get_text() for t in ax_obj.texts),
                      *(t.get_text() for t in (ax_obj.get_legend().get_texts() if ax_obj.get_legend() else []))])
    assert "diverged" in texts or "non-finite" in texts, texts
