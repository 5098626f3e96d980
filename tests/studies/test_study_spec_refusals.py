"""Refusals of the ``study:`` section and the order of a run's overrides that the other
study tests did not pin: K = 0, d = 0 and σ = 0, a blank variant name, a variant override
below a grid key, and the command line's overrides set before each run's own."""

from __future__ import annotations

import re

import pytest
import yaml

from pinnlab import config as C
from pinnlab.studies.spec import study_runs, validate_runs
from tests.studies.test_studies import TINY_TRAINING

EQUATION = {"name": "poisson_two_body", "dim": 3}


@pytest.mark.parametrize("study, expected", [
    ({"kind": "estimator", "samples": [0, 2]}, "study.samples = [0, 2]: every entry must be >= 1"),
    ({"kind": "estimator", "dims": [0]}, "study.dims = [0]: every entry must be >= 1"),
    ({"kind": "estimator", "sigmas": [0.0]}, "study.sigmas = [0.0]: every sigma must be > 0"),
])
def test_a_zero_sample_count_dimension_or_sigma_is_refused(study, expected):
    """0 is the boundary of each rule (K ≥ 1, d ≥ 1, σ > 0): K = 0 averages no sample, a
    network of dimension 0 has no input, and σ = 0 divides by 0 in the Stein estimate."""
    with pytest.raises(C.ConfigError, match=re.escape(expected)):
        C.validate({"equation": EQUATION, "study": study})


def _training(**study):
    data = yaml.safe_load(TINY_TRAINING.replace("STEPS", "2"))
    data["study"].update(study)
    return data


def test_a_blank_variant_name_is_refused():
    """A name of spaces labels the table's row as blank as an empty one does."""
    with pytest.raises(C.ConfigError, match="a variant needs a name"):
        C.validate(_training(variants={"  ": ["loss.kind=biased"]}))


def test_a_variant_override_below_a_grid_key_is_refused():
    """The grid's ``trainer`` mapping replaces the whole trainer section in every cell,
    after the variant: the variant's ``trainer.lr`` never ran."""
    study = _training(variants={"slow": ["loss.kind=biased", "trainer.lr=0.1"]},
                      grid={"trainer": [{"steps": 2, "seed": 0}, {"steps": 2, "seed": 1}]}, columns=None)
    with pytest.raises(C.ConfigError, match=r"variant slow: 'trainer\.lr=0\.1' sets the grid key trainer, which "
                                            "every cell sets after its variant"):
        C.validate(study)


def test_the_command_lines_overrides_come_before_each_runs_own(tmp_path):
    """A base override ``trainer={...}`` (the whole section) beside the grid key
    ``trainer.seed`` is accepted (it does not set the seed), and every run's seed is its
    grid value: set after the base override, which would otherwise reset it to 0."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    base = ["trainer={steps: 2, test_points: 50, batch_size: 8, lr: 0.01}"]
    runs = validate_runs(cfg, study_runs(C.load(cfg, base)), base)
    assert len(runs) == 8
    for label, run in runs.items():
        seed = int(re.search(r"'trainer\.seed': (\d)", label).group(1))
        assert (run.trainer.seed, run.trainer.lr, run.trainer.steps) == (seed, 0.01, 2), label
