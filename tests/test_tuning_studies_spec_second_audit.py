"""Second mutation audit of the ``tune:`` and ``study:`` sections (pinnlab/tuning/spec.py,
pinnlab/studies/spec.py): what the earlier audits left open. Every tune-section mutant
tried was already caught, so all of these are about the study section: which of two
refused keys or runs a refusal names, how it quotes them, whether it chains the
ImportError on, and an estimator study's defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pinnlab.studies.spec import StudySection


# -- the refusals' exact form ------------------------------------------------------------------
def _training(**study):
    return StudySection.model_validate({"kind": "training", **study})


def test_the_first_grid_key_inside_the_study_section_is_named():
    """Of two grid keys inside ``study.``, the refusal names the first given (caught: the
    last)."""
    with pytest.raises(ValidationError, match=r"study\.workers: a grid key inside the study section") as err:
        _training(variants={"a": []}, grid={"study.workers": [1], "study.columns": ["x"]})
    assert "study.columns:" not in str(err.value)


def test_a_repeated_text_value_is_named_quoted():
    """A value listed twice is shown as Python writes it, so a repeated string reads
    ``'shared' is listed twice`` (caught: str(), which showed shared unquoted)."""
    with pytest.raises(ValidationError, match="'shared' is listed twice"):
        StudySection.model_validate({"kind": "estimator", "noise": ["shared", "independent", "shared"]})


def test_a_refused_command_line_override_is_quoted_without_its_surrounding_spaces():
    """An override of a swept key given with spaces around it is quoted stripped, as the
    variant refusals quote theirs (caught: quoted as given, ``' trainer.seed=3 '``)."""
    from pinnlab.config import ConfigError
    from pinnlab.studies.spec import refuse_swept_overrides

    study = _training(variants={"a": []}, grid={"trainer.seed": [0, 1]})
    with pytest.raises(ConfigError, match=r"^override 'trainer\.seed=3': study\.grid sweeps trainer\.seed in its runs"):
        refuse_swept_overrides(study, ["model.width=8", " trainer.seed=3 "])


# -- validating the runs ------------------------------------------------------------------------
def _config_file(tmp_path):
    """TINY_TRAINING without its study section: the runs are given explicitly."""
    from tests.studies.test_studies import TINY_TRAINING

    path = tmp_path / "train.yaml"
    path.write_text(TINY_TRAINING.replace("STEPS", "2").split("study:")[0])
    return path


def test_without_deepxde_the_first_deepxde_run_is_named_in_one_line(tmp_path, monkeypatch):
    """Runs on the DeepXDE backend without DeepXDE installed: one ConfigError line naming
    the first such run (caught: the last), without the ImportError chained on."""
    from pinnlab import config as C
    from pinnlab.solvers import deepxde_adapter
    from pinnlab.studies.spec import validate_runs

    def missing():
        raise ImportError("No module named 'deepxde'")

    monkeypatch.setattr(C, "build", lambda config: None)
    monkeypatch.setattr(deepxde_adapter, "import_deepxde", missing)
    runs = {"a": [], "b": ["trainer.backend=deepxde"], "c": ["trainer.backend=deepxde"]}
    with pytest.raises(C.ConfigError) as err:
        validate_runs(_config_file(tmp_path), runs)
    assert str(err.value) == "study run b: trainer.backend = 'deepxde': No module named 'deepxde'"
    assert err.value.__cause__ is None and err.value.__suppress_context__


# -- defaults ---------------------------------------------------------------------------------------------
def test_an_estimator_studys_defaults():
    """What an estimator study that gives only its kind runs: both losses with split
    samples at K = 8..128, σ = 1e-2, both noise modes, all three quantities, 200
    replicates on 64 points against a reference of 50 replicates at 4096 samples, from
    the trained network (caught: 100 replicates, a reference at 1024 samples)."""
    study = StudySection(kind="estimator")
    assert (study.losses, study.unbiased_samples, study.samples, study.sigmas) == (
        ["biased", "unbiased"], "split", [8, 16, 32, 64, 128], [1e-2])
    assert (study.noise, study.quantities) == (["independent", "shared"], ["residual", "loss", "gradient"])
    assert (study.replicates, study.points, study.reference_samples, study.reference_replicates) == (200, 64, 4096, 50)
    assert (study.init, study.dims) == ("trained", None)
