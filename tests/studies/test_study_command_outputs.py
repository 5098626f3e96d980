"""What ``pinnlab study`` hands to an estimator study and what it writes from it: every
``study:`` setting (and the equation's and trainer's seeds and dtype) reaches the spec,
and the study file and the ``--json`` file hold the comparisons and slopes of the records
they hold, with NaN in ``/records`` where a record has no such value (a loss record's
projected bias test)."""

from __future__ import annotations

import json
import math

import h5py
import torch

from pinnlab.cli import main
from pinnlab.io import strict_json
from pinnlab.studies import estimator_study
from pinnlab.studies.estimator_study import compare_losses, fit_slopes
from tests.studies.test_study_inputs_refused import _estimator

SETTINGS = """\
equation: {name: poisson_two_body, dim: 3, seed: 7}
model: {width: 6, depth: 2}
trainer: {dtype: float32, seed: 5}
study:
  kind: estimator
  losses: [unbiased]
  unbiased_samples: same
  samples: [3]
  sigmas: [0.2]
  noise: [shared]
  quantities: [loss]
  replicates: 5
  points: 3
  reference_samples: 16
  reference_replicates: 6
  init: fresh
"""
"""Every setting away from its default (the defaults are 64 points, K_ref = 4096, ...)."""


def test_every_study_setting_reaches_the_study(tmp_path, monkeypatch):
    specs = []
    run = estimator_study.run_estimator_study

    def spy(spec, progress=None):
        specs.append(spec)
        return run(spec, progress=progress)

    monkeypatch.setattr(estimator_study, "run_estimator_study", spy)
    cfg = tmp_path / "est.yaml"
    cfg.write_text(SETTINGS)
    assert main(["study", str(cfg), "-o", str(tmp_path / "est.h5")]) == 0
    (spec,) = specs
    got = {key: getattr(spec, key) for key in (
        "equation", "dims", "samples", "sigmas", "noise", "quantities", "losses", "unbiased_samples", "replicates",
        "points", "reference_samples", "reference_replicates", "problem_seed", "init_seed", "dtype", "width",
        "depth", "params")}
    assert got == {"equation": "poisson_two_body", "dims": (3,), "samples": (3,), "sigmas": (0.2,),
                   "noise": ("shared",), "quantities": ("loss",), "losses": ("unbiased",),
                   "unbiased_samples": "same", "replicates": 5, "points": 3, "reference_samples": 16,
                   "reference_replicates": 6, "problem_seed": 7, "init_seed": 5, "dtype": torch.float32,
                   "width": 6, "depth": 2, "params": None}


def test_the_files_hold_the_comparisons_and_slopes_of_their_records(tmp_path):
    """Two K, both losses, three quantities: the JSON's and the file's comparisons and
    slopes are those of the records written, and /records has NaN where a record has no
    value (bias_t of a residual or loss record), not a number."""
    cfg = _estimator(tmp_path, **{"noise: [independent, shared]": "noise: [independent]"})
    out, js = tmp_path / "est.h5", tmp_path / "est.json"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    records = data["records"]
    comparisons = json.loads(strict_json(compare_losses(records)))
    slopes = json.loads(strict_json(fit_slopes(records)))
    assert len(comparisons) == 3 * 2 and len(slopes) == 3 * 2
    assert data["comparisons"] == comparisons and data["slopes"] == slopes
    with h5py.File(out) as fh:
        assert json.loads(fh.attrs["comparisons"]) == comparisons
        assert json.loads(fh.attrs["slopes"]) == slopes
        quantity = [q.decode() for q in fh["records/quantity"][...]]
        bias_t = fh["records/bias_t"][...]
    assert quantity == [r["quantity"] for r in records]
    for q, t, record in zip(quantity, bias_t, records):
        if q == "gradient":
            assert t == record["bias_t"]
        else:
            assert math.isnan(t) and "bias_t" not in record
