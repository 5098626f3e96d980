"""The estimator study studies the config's own Stein estimator (time options), refuses
what it cannot study (another estimator kind, odd K with split samples), and a training
study's tables take list-valued columns and variant names with commas."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from pinnlab import config as C
from pinnlab.cli import main
from pinnlab.studies import estimator_study
from pinnlab.studies.training_study import csv_text, markdown_table, summarise

TIME_ESTIMATOR = """\
equation: {name: fokker_planck_iso, dim: 2, seed: 1}
model: {width: 6, depth: 2}
estimator: {kind: stein}
trainer: {dtype: float64}
study:
  kind: estimator
  samples: [4]
  sigmas: [0.1]
  noise: [independent]
  quantities: [loss]
  replicates: 4
  points: 3
  reference_samples: 8
  reference_replicates: 4
  init: fresh
"""


def _records(tmp_path, name, *overrides):
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TIME_ESTIMATOR)
    js = tmp_path / f"{name}.json"
    assert main(["study", str(cfg), *overrides, "-o", str(tmp_path / f"{name}.h5"), "--json", str(js)]) == 0
    return json.loads(js.read_text())["records"]


@pytest.mark.parametrize("override", ["estimator.time_smoothing=independent", "estimator.time_sigma=0.5"])
def test_the_estimator_study_uses_the_configs_time_options(tmp_path, monkeypatch, override):
    """Every estimator the study builds (the studied ones and the reference) carries the
    config's time smoothing and time σ, so the records differ from the default's (they
    were the same: the study built a default joint-smoothing Stein estimator)."""
    built = []
    real = estimator_study._stein

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    baseline = _records(tmp_path, "joint")
    monkeypatch.setattr(estimator_study, "_stein", spy)
    records = _records(tmp_path, "other", override)
    assert len(built) == 3  # the reference and one per loss
    for estimator in built:
        if override.startswith("estimator.time_smoothing"):
            assert estimator.time_smoothing == "independent"
        else:
            torch.testing.assert_close(torch.as_tensor(estimator.sigma),
                                       torch.tensor([0.1, 0.1, 0.5], dtype=torch.float64))
    for a, b in zip(baseline, records, strict=True):
        assert (a["loss"], a["samples"]) == (b["loss"], b["samples"])
        assert a["variance"] != b["variance"]


def test_the_estimator_study_chunks_as_the_config_says(tmp_path, monkeypatch):
    """estimator.chunk_size reaches every estimator the study builds (it was dropped: the
    reference's reference_samples draws at all points were made in one piece)."""
    built = []
    real = estimator_study._stein

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(estimator_study, "_stein", spy)
    _records(tmp_path, "chunked", "estimator.chunk_size=2")
    assert len(built) == 3 and all(estimator.chunk_size == 2 for estimator in built)


@pytest.mark.parametrize("kind", ["autograd", "hutchinson"])
def test_an_estimator_kind_without_a_stein_estimate_is_refused_before_any_work(tmp_path, capsys, kind):
    """autograd has no Monte Carlo error and Hutchinson no σ: the study would report the
    default Stein estimator's numbers under their name. One line, exit 2, no pretraining."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TIME_ESTIMATOR.replace("init: fresh", "init: trained").replace("{dtype: float64}",
                                                                                  "{steps: 2, dtype: float64}"))
    assert main(["study", str(cfg), f"estimator.kind={kind}", "-o", str(tmp_path / "est.h5")]) == 2
    err = capsys.readouterr().err
    assert f"estimator.kind = '{kind}'" in err and "use estimator.kind: stein" in err
    assert len(err.strip().splitlines()) == 1 and "pretraining" not in err
    assert not (tmp_path / "est.h5").exists()


def _study(**study):
    return C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, "study": {"kind": "estimator", **study}})


def test_odd_samples_with_split_unbiased_draws_are_refused_at_validation():
    """With ``unbiased_samples: split`` K = 1 or 3 gave the unbiased loss 2 samples (1 per
    draw), not K: refused, naming study.samples. Where nothing is split (``same``, no
    unbiased loss, a training study) odd K is fine."""
    with pytest.raises(C.ConfigError, match=r"^study\.samples = \[1, 3, 4\]: must all be even .*\(odd: 1, 3\)"):
        _study(samples=[1, 3, 4])
    with pytest.raises(C.ConfigError, match=r"^study\.samples"):
        _study(samples=[3], losses=["unbiased"], unbiased_samples="split")
    assert _study(samples=[1, 3], unbiased_samples="same").study.samples == [1, 3]
    assert _study(samples=[1, 3], losses=["biased"]).study.samples == [1, 3]
    assert _study(samples=[2, 4]).study.samples == [2, 4]
    with pytest.raises(C.ConfigError, match=r"^study\.samples = \[3\]: only an estimator study reads it"):
        C.validate({"equation": {"name": "poisson_two_body", "dim": 3},
                    "study": {"kind": "training", "variants": {"a": ["loss.kind=biased"]}, "samples": [3]}})


def test_the_estimator_study_spec_refuses_odd_samples_with_split_draws_too():
    """The API path (no config) gave the unbiased loss 2·⌊K/2⌋ samples for odd K."""
    base = dict(equation="poisson_two_body", dims=(3,), sigmas=(0.1,))
    with pytest.raises(ValueError, match=r"odd K \(3\)"):
        estimator_study.EstimatorStudySpec(samples=(2, 3), **base)
    assert estimator_study.EstimatorStudySpec(samples=(3,), unbiased_samples="same", **base).samples == (3,)
    assert estimator_study.EstimatorStudySpec(samples=(3,), losses=("biased",), **base).samples == (3,)


def test_a_non_stein_estimator_study_is_refused_at_validation():
    """The refusal sits with the other study checks, so validating the config finds it."""
    with pytest.raises(C.ConfigError, match=r"^estimator\.kind = 'autograd': an estimator study"):
        C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, "estimator": {"kind": "autograd"},
                    "study": {"kind": "estimator", "samples": [2]}})


def test_odd_samples_are_one_line_from_the_cli(tmp_path, capsys):
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TIME_ESTIMATOR)
    assert main(["study", str(cfg), "study.samples=[1,3]", "-o", str(tmp_path / "est.h5")]) == 2
    err = capsys.readouterr().err
    assert "study.samples = [1, 3]" in err and len(err.strip().splitlines()) == 1


def _record(variant, blend, rel_l2):
    return {"variant": variant, "loss.blend": blend, "rel_l2": rel_l2, "best_rel_l2": rel_l2,
            "seconds_per_step": 0.1, "peak_mem_mb": 1.0, "status": "ok"}


def test_a_list_valued_column_is_summarised_and_tabled():
    """``columns: loss.blend`` with grid values [[0, 2], [1, 3]] crashed the summary after
    every cell had run (a list is not hashable)."""
    records = [_record("hybrid", [0, 2], 1.0), _record("hybrid", [1, 3], 2.0), _record("hybrid", [0, 2], 3.0)]
    summary = summarise(records, "loss.blend")
    assert [(r["column"], r["runs"], r["rel_l2_mean"]) for r in summary] == [([0, 2], 2, 2.0), ([1, 3], 1, 2.0)]
    table = markdown_table(summary, "loss.blend")
    assert table.splitlines()[0] == "| method | loss.blend=[0, 2] | loss.blend=[1, 3] |"
    assert table.splitlines()[2].startswith("| hybrid | 2.000e+00 ± 1.4e+00 | 2.000e+00 (1 run) |")


def test_the_csv_quotes_a_variant_name_with_a_comma():
    summary = summarise([_record("biased, K=4", [0, 2], 1.0), _record("unbiased", [0, 2], 2.0)], "loss.blend")
    rows = list(csv.reader(io.StringIO(csv_text(summary))))
    assert {len(row) for row in rows} == {len(summary[0])}
    assert [row[:2] for row in rows[1:]] == [["biased, K=4", "[0, 2]"], ["unbiased", "[0, 2]"]]


def test_workers_on_an_estimator_study_is_refused(tmp_path, capsys):
    """--workers was silently ignored by an estimator study (it runs in one process)."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TIME_ESTIMATOR)
    assert main(["study", str(cfg), "--workers", "2", "-o", str(tmp_path / "est.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers: an estimator study runs in one process" in err[0]
    assert not (tmp_path / "est.h5").exists()
