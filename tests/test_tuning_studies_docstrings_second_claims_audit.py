"""Claims of the docstrings and messages of pinnlab.tuning and pinnlab.studies that the
first claims audit and the mutation audits left unpinned, each checked against what the
code does (a second claims pass)."""

import math

import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab.studies import estimator_study
from pinnlab.studies.estimator_study import EstimatorStudySpec, compare_losses, run_estimator_study
from pinnlab.studies.spec import StudySection
from pinnlab.tuning.run import run_tuning
from pinnlab.tuning.setup import build_tuning
from tests.tuning.micro_configs import WEIGHT_FG2U


def _load(tmp_path, text, *overrides):
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return configuration.load(path, list(overrides))


# --- pinnlab.studies.estimator_study ---------------------------------------------------------


def _gaussian_moments(mu: float, v: float) -> tuple[float, float]:
    """(E X², E X⁴) of X ~ N(mu, v), exact by Gauss–Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(12)
    x = mu + math.sqrt(v) * nodes
    weights = weights / math.sqrt(2 * math.pi)
    return float((weights * x**2).sum()), float((weights * x**4).sum())


def test_the_product_and_square_variances_of_the_module_doc_and_the_halving_prediction():
    """Module doc: Var XY = 2μ²v + v² against Var X² = 4μ²v + 2v² (X, Y independent, mean μ,
    variance v), at K/2 per draw 4μ²v + 4v², so the product has less variance at K per draw
    and more at K/2. compare_losses: the halving prediction V_b(K/2)/(2·V_b(K)) is then
    exact for Gaussian estimates (Isserlis): it equals the unbiased/biased variance ratio."""
    doc = " ".join(estimator_study.__doc__.split())
    assert "(Var XY = 2μ²v + v² against Var X² = 4μ²v + 2v²)" in doc and "more (4μ²v + 4v²)" in doc
    mu, v = 0.7, 0.3  # v: the variance of one K-sample residual draw

    def var_square(var):
        ex2, ex4 = _gaussian_moments(mu, var)
        return ex4 - ex2**2

    def var_product(var):  # two independent draws of variance var
        return _gaussian_moments(mu, var)[0] ** 2 - mu**4

    assert var_product(v) == pytest.approx(2 * mu**2 * v + v**2, rel=1e-12)
    assert var_square(v) == pytest.approx(4 * mu**2 * v + 2 * v**2, rel=1e-12)
    assert var_product(2 * v) == pytest.approx(4 * mu**2 * v + 4 * v**2, rel=1e-12)  # K/2 samples: variance 2v
    assert var_product(v) < var_square(v) < var_product(2 * v)
    base = {"quantity": "loss", "noise": "independent", "dim": 3, "sigma": 0.1, "variance_se": 0.01}
    records = [{**base, "loss": "biased", "samples": 8, "samples_per_draw": 8, "variance": var_square(v)},
               {**base, "loss": "biased", "samples": 4, "samples_per_draw": 4, "variance": var_square(2 * v)},
               {**base, "loss": "unbiased", "samples": 8, "samples_per_draw": 4, "variance": var_product(2 * v)}]
    (row,) = compare_losses(records)
    assert row["samples"] == 8
    assert row["halving_prediction"] == pytest.approx(row["variance_ratio"], rel=1e-12)
    assert row["variance_ratio"] == pytest.approx((4 * mu**2 + 4 * v) / (4 * mu**2 + 2 * v), rel=1e-12)


def _tiny_spec(replicates):
    return EstimatorStudySpec(equation="poisson_two_body", dims=(3,), samples=(2,), sigmas=(0.1,),
                              noise=("independent",), quantities=("loss", "gradient"), losses=("biased",),
                              replicates=replicates, points=3, reference_samples=8, reference_replicates=replicates,
                              problem_seed=1, width=4, depth=2)


def test_min_replicates_is_the_fewest_for_which_every_statistic_of_a_record_is_defined():
    """MIN_REPLICATES (4): R replicates are kept in min(10, R) groups; the jackknife SEs need
    3 groups and the projected bias test 2 groups in each half. At 4 replicates every
    statistic of the loss and gradient records is finite; at 3 the projected test is NaN
    (the jackknife SEs are not yet)."""
    from pinnlab.studies.spec import MIN_REPLICATES

    assert MIN_REPLICATES == 4
    stats = ("bias2", "bias2_se", "variance", "variance_se", "mse")
    result = run_estimator_study(_tiny_spec(MIN_REPLICATES))
    # run_estimator_study: "returns {"records": ..., "slopes": ..., "comparisons": ...}"
    assert set(result) == {"records", "slopes", "comparisons"}
    assert '"comparisons"' in run_estimator_study.__doc__
    at_min = {r["quantity"]: r for r in result["records"]}
    assert all(math.isfinite(at_min[q][key]) for q in at_min for key in stats)
    assert all(math.isfinite(at_min["loss"][key]) for key in ("bias", "bias_se"))
    assert all(math.isfinite(at_min["gradient"][key]) for key in ("bias_t", "bias_t_df", "bias_p"))
    below = {r["quantity"]: r for r in run_estimator_study(_tiny_spec(MIN_REPLICATES - 1))["records"]}
    assert math.isfinite(below["gradient"]["bias2_se"]) and math.isfinite(below["gradient"]["variance_se"])
    assert all(math.isnan(below["gradient"][key]) for key in ("bias_t", "bias_t_df", "bias_p"))


def test_only_the_loss_records_carry_a_signed_bias():
    """Module doc: "For the loss (a scalar) the signed ``bias`` is reported too": the
    loss records have ``bias`` = mean estimate − reference mean; the others have none."""
    from pinnlab.studies.estimator_study import Moments, summarise

    est = Moments(((2, torch.tensor([1.0]), torch.tensor([0.5])), (2, torch.tensor([3.0]), torch.tensor([0.5]))))
    ref = Moments(((2, torch.tensor([0.5]), torch.tensor([0.0])), (2, torch.tensor([0.5]), torch.tensor([0.0]))))
    loss = summarise("loss", est, ref)
    assert loss["bias"] == pytest.approx(2.0 - 0.5)
    assert "bias" not in summarise("residual", est, ref) and "bias" not in summarise("gradient", est, ref)


# --- pinnlab.studies.spec ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    {"kind": "estimator", "samples": [4, 6], "replicates": 8, "init": "fresh"},
    {"kind": "training", "variants": {"a": ["trainer.lr=0.1"]}, "grid": {"trainer.seed": [0, 1]},
     "columns": "trainer.seed", "workers": 2},
])
def test_a_study_section_records_only_its_kinds_keys_and_validates_back(data):
    """StudySection._own_keys: "The resolved config records only the keys of this kind,
    so it validates back" (a key of the other kind is refused, even at its default)."""
    from pinnlab.studies.spec import KIND_KEYS

    section = StudySection.model_validate(data)
    dumped = section.model_dump()
    assert set(dumped) == {"kind", *KIND_KEYS[data["kind"]]}
    assert StudySection.model_validate(dumped) == section
    other = "training" if data["kind"] == "estimator" else "estimator"
    key = KIND_KEYS[other][0]
    with pytest.raises(ValueError, match=f"only an? {other} study reads it"):
        StudySection.model_validate({**dumped, key: StudySection.model_fields[key].get_default(
            call_default_factory=True)})


# --- pinnlab.tuning.spec: ObjectiveSpec, PhaseSpec ----------------------------------------------

AUTOGRAD_RESIDUAL = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 4, depth: 2}
estimator: {kind: autograd}
trainer: {steps: 4, lr: 1.0e-2, schedule: constant, batch_size: 4, eval_every: 2, test_points: 10, dtype: float64}
tune:
  tunables: {weights.residual: {}}
  objective: {kind: residual, points: 8, estimator: stein, samples: 4}
  outer_steps: 1
  horizon: 2
"""


def test_under_autograd_training_the_stein_residual_objective_smooths_at_sigma_1e_2_by_default(tmp_path, monkeypatch):
    """ObjectiveSpec: autograd training fits the raw network, "so there Stein uses the σ ...
    of the ``estimator:`` section (σ 1e-2 by default)", with the objective's ``samples``."""
    from pinnlab.estimators import SteinAntithetic

    seen = []
    real = SteinAntithetic.estimate

    def spy(self, model, x, queries, *, generator=None, sigma=None):
        seen.append((self.sigma, self.num_samples, sigma))
        return real(self, model, x, queries, generator=generator, sigma=sigma)

    monkeypatch.setattr(SteinAntithetic, "estimate", spy)
    config = _load(tmp_path, AUTOGRAD_RESIDUAL)
    assert "sigma" not in config.raw["estimator"] and config.estimator.sigma == 1e-2
    setup = build_tuning(config)
    with torch.no_grad():
        value = float(setup.outer_loss(setup.init[0], setup.phi0))
    assert math.isfinite(value) and seen
    assert {(k, given) for _, k, given in seen} == {(4, None)}
    assert all(float(torch.as_tensor(s)) == pytest.approx(1e-2, rel=1e-6) for s, _, _ in seen)


def test_the_second_phase_steps_at_the_first_phases_outer_lr_unless_it_gives_its_own(tmp_path):
    """PhaseSpec: ``outer_lr`` (default: the first phase's). With SGD every outer step moves
    the unconstrained (log) φ by lr·‖g‖: 0.5 in both phases when then.outer_lr is not given."""
    overrides = ["tune.outer_optimizer=sgd", "tune.outer_lr=0.5", "tune.outer_steps=3", "tune.method=rgu",
                 "tune.options={}", "tune.then={method: rgu, after: 1}"]
    setup = build_tuning(_load(tmp_path, WEIGHT_FG2U, *overrides))
    assert setup.config.tune.then.outer_lr is None
    outcome = run_tuning(setup)
    assert outcome.status == "ok"
    u = [math.log(1.0e-2)] + [math.log(float(v)) for v in outcome.history["phi/weights.boundary"]]
    rates = [abs(b - a) / g for a, b, g in zip(u, u[1:], outcome.history["grad_norm"])]
    assert rates == pytest.approx([0.5, 0.5, 0.5], rel=1e-6)


# --- pinnlab.tuning.search, pinnlab.tuning.command --------------------------------------------


def test_a_search_saves_its_checkpoint_after_each_trial_and_a_stop_names_the_last_trial(tmp_path, monkeypatch, capsys):
    """search: "Trials are saved to ``checkpoint`` after each one" (one write per trial,
    holding the trials so far); _say_saved: a stopped search names the trial its
    checkpoint holds ("trial N saved in ...")."""
    from pinnlab.io import checkpoint as checkpoint_module
    from pinnlab.tuning.command import _say_saved
    from pinnlab.tuning.search import search

    setup = build_tuning(_load(tmp_path, WEIGHT_FG2U, "tune.method=random", "tune.options={}",
                               "tune.trial_steps=1"))
    writes = []
    real = checkpoint_module.write_checkpoint_file

    def spy(path, data):
        writes.append(len(data["trials"]))
        return real(path, data)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint_file", spy)
    output, checkpoint = tmp_path / "t.h5", tmp_path / "t.h5.ckpt"
    outcome = search(setup, sampler="random", checkpoint=checkpoint, metadata={"config": "x"},
                     score=lambda phi: float(phi["weights.boundary"]))
    assert len(outcome.history["value"]) == 3 and writes == [1, 2, 3]
    _say_saved(output, {}, checkpoint)
    assert capsys.readouterr().err == f"pinnlab: trial 3 saved in {str(checkpoint)!r}; --resume continues from it\n"


# --- pinnlab.tuning.spec: TuneSection ----------------------------------------------------------


def _inner_metrics(setup, steps):
    theta, state = setup.init
    hp = setup.to_hyperparams(setup.phi0)
    rows = []
    for t in range(steps):
        theta, state, metrics = setup.train_step(theta, state, hp, t)
        rows.append({k: float(metrics[k]) for k in ("mix", "lr", "loss") if k in metrics})
    return theta, rows


def test_the_inner_steps_train_at_the_constant_lr_before_the_switch_and_the_final_solve_applies_both(tmp_path):
    """TuneSection: the inner steps train at the constant trainer.lr and, for a hybrid loss
    whose mix is not tuned, with the loss before the switch (mix 0), since the schedule and
    the switch step count the final solve's steps; "the final solve applies both"."""
    from pinnlab.tuning.run import final_solve

    setup = build_tuning(_load(tmp_path, WEIGHT_FG2U, "loss.kind=hybrid", "loss.switch_step=1",
                               "trainer.schedule=linear"))
    _, rows = _inner_metrics(setup, 3)  # steps 1 and 2 lie past switch_step = 1
    assert [(r["mix"], r["lr"]) for r in rows] == [(0.0, 1e-2)] * 3
    outcome = run_tuning(setup)
    result, _ = final_solve(setup, outcome, progress="off")
    assert list(result.history.trace_mix) == [0.0, 1.0, 1.0, 1.0]
    assert result.history.rows["lr"] == pytest.approx([1e-2 * 3 / 4, 1e-2 * 1 / 4], rel=1e-12)


def test_the_inner_trainings_noise_follows_trainer_seed_not_tune_seed(tmp_path):
    """TuneSection: ``seed`` seeds what is random in the tuning itself; "the inner
    training's noise and points follow ``trainer.seed``"."""
    def theta_after(*overrides):
        theta, _ = _inner_metrics(build_tuning(_load(tmp_path, WEIGHT_FG2U, *overrides)), 2)
        return torch.cat([v.reshape(-1) for v in theta.values()])

    base = theta_after()
    assert torch.equal(theta_after("tune.seed=5"), base)
    assert not torch.allclose(theta_after("trainer.seed=5"), base)


def test_a_search_run_with_save_false_reads_its_checkpoint_on_resume_but_never_writes_it(tmp_path):
    """run_tuning: "``save=False``: read ``checkpoint`` on resume but never write it, as on
    ranks > 0", for a search as for the bilevel driver: no file without resume, and a
    resumed search continues from the saved trials and leaves the file as it was."""
    from pinnlab.io.checkpoint import load_checkpoint_file

    search = ("tune.method=random", "tune.options={}", "tune.trial_steps=1")
    checkpoint = tmp_path / "t.h5.ckpt"
    metadata = {"config": "x"}
    fresh = run_tuning(build_tuning(_load(tmp_path, WEIGHT_FG2U, *search, "tune.outer_steps=2")),
                       checkpoint=checkpoint, metadata=metadata, save=False)
    assert len(fresh.history["value"]) == 2 and not checkpoint.exists()
    # saved by a run whose trials train 2 steps: values a rerun of 1-step trials would not give
    saved = run_tuning(build_tuning(_load(tmp_path, WEIGHT_FG2U, *search, "tune.outer_steps=2",
                                          "tune.trial_steps=2")), checkpoint=checkpoint, metadata=metadata)
    assert saved.history["value"] != fresh.history["value"]
    before = checkpoint.read_bytes()
    assert len(load_checkpoint_file(checkpoint)["trials"]) == 2
    resumed = run_tuning(build_tuning(_load(tmp_path, WEIGHT_FG2U, *search)), checkpoint=checkpoint,
                         resume=True, metadata=metadata, save=False)
    assert len(resumed.history["value"]) == 3 and checkpoint.read_bytes() == before
    assert resumed.history["value"][:2] == saved.history["value"]  # the saved trials, read back
