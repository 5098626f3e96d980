"""Third mutation audit of the training study (pinnlab/studies/training_study.py), the
``study:`` spec (pinnlab/studies/spec.py) and ``pinnlab study`` (pinnlab/studies/command.py):
what the two earlier audits left open. Every cell's solve is replaced by a stub whose
metrics are a closed form of its overrides, so nothing trains here."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from pinnlab.cli import main
from pinnlab.studies import training_study
from pinnlab.studies.spec import StudySection, swept_by
from pinnlab.studies.training_study import markdown_table, summarise
from tests.studies.test_studies import TINY_TRAINING

METRICS = ("rel_l2", "best_rel_l2", "seconds_per_step", "peak_mem_mb")


def _value(overrides: list[str], key: str, default: str) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")), default)


def _closed_form(variant_index: int, dim: int, seed: int) -> dict:
    """Metrics of a cell whose float32 rounding would show: thirds and sevenths."""
    base = (variant_index + 1) / 3 + dim / 7 + seed / 11
    return {"rel_l2": base, "best_rel_l2": base / 3, "seconds_per_step": 1 / (seed + 3) + dim / 13,
            "peak_mem_mb": 100 / 3 + seed * dim / 7, "status": "ok"}


def _stub(monkeypatch):
    """run_cell replaced by :func:`_closed_form` of the cell's overrides."""
    def run_cell(config_path, overrides, output, threads):
        variant = 0 if "loss.kind=biased" in overrides else 1
        return _closed_form(variant, int(_value(overrides, "equation.dim", "3")),
                            int(_value(overrides, "trainer.seed", "0")))

    monkeypatch.setattr(training_study, "run_cell", run_cell)


def _expected_rows():
    """(variant, dim) → metric → (mean, sample std) over the seeds 0 and 1, in float64."""
    rows = {}
    for v, variant in enumerate(("biased", "unbiased")):
        for dim in (3, 4):
            cells = [_closed_form(v, dim, seed) for seed in (0, 1)]
            rows[(variant, dim)] = {m: (np.mean(np.array([c[m] for c in cells], dtype=np.float64)),
                                        np.std(np.array([c[m] for c in cells], dtype=np.float64), ddof=1))
                                    for m in METRICS}
    return rows


def test_the_study_files_summary_and_cells_are_float64_means_and_sample_stds(tmp_path, monkeypatch, capsys):
    """/summary holds each (variant, d) group's mean and sample std over its two seeds as
    float64, equal to numpy's float64 mean and std(ddof=1) of the cells' metrics to the
    last bit, and /cells each cell's metrics as float64 (caught: the float datasets
    written as float32, which pytest.approx's 1e-6 let through)."""
    _stub(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    capsys.readouterr()
    expected = _expected_rows()
    with h5py.File(out, "r") as fh:
        summary, cells = fh["summary"], fh["cells"]
        keys = list(zip([v.decode() for v in summary["variant"][...]], summary["column"][...].tolist()))
        assert keys == [("biased", 3), ("biased", 4), ("unbiased", 3), ("unbiased", 4)]
        for metric in METRICS:
            for stat, index in (("mean", 0), ("std", 1)):
                data = summary[f"{metric}_{stat}"]
                assert data.dtype == np.float64, (metric, stat)
                assert data[...].tolist() == [expected[k][metric][index] for k in keys], (metric, stat)
            assert cells[metric].dtype == np.float64
            assert cells[metric][...].tolist() == [
                _closed_form(v, d, s)[metric] for v in (0, 1) for d in (3, 4) for s in (0, 1)]


def test_the_json_file_holds_the_summary_beside_the_records(tmp_path, monkeypatch, capsys):
    """``--json`` writes {"records", "summary"}: the summary's rows, with the float64 mean
    and sample std of every group (caught: the summary left out of the JSON)."""
    _stub(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out, js = tmp_path / "t.h5", tmp_path / "t.json"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == 0
    capsys.readouterr()
    payload = json.loads(js.read_text())
    assert sorted(payload) == ["records", "summary"] and len(payload["records"]) == 8
    expected = _expected_rows()
    assert [(r["variant"], r["column"]) for r in payload["summary"]] == list(expected)
    for row in payload["summary"]:
        assert (row["runs"], row["left_out"]) == (2, 0)
        for metric in METRICS:
            mean, std = expected[(row["variant"], row["column"])][metric]
            assert (row[f"{metric}_mean"], row[f"{metric}_std"]) == (mean, std), metric



def test_a_column_value_and_its_text_are_two_groups_and_two_columns():
    """The summary groups on the column value's JSON text, so 3 and "3" are two groups
    (one run each) and the table two columns, each with its own number (caught: grouped,
    or looked up, by str(), which merged them)."""
    records = [{"variant": "a", "k": k, "rel_l2": r, "best_rel_l2": r, "seconds_per_step": 1.0,
                "peak_mem_mb": 1.0, "status": "ok"} for k, r in ((3, 0.25), ("3", 0.5))]
    summary = summarise(records, "k")
    assert [(row["column"], row["runs"], row["rel_l2_mean"]) for row in summary] == [(3, 1, 0.25), ("3", 1, 0.5)]
    assert markdown_table(summary, "k").splitlines()[2] == "| a | 2.500e-01 (1 run) | 5.000e-01 (1 run) |"



def test_a_mapping_override_sets_a_swept_key_whose_rest_is_one_dotted_key_of_it():
    """``swept_by`` reads a mapping's keys that contain dots as its docstring says: the
    override ``trainer={a.b: 1}`` sets the swept ``trainer.a.b``, ``trainer={a: {b: 1}}``
    too, ``trainer={a.c: 1}`` not (caught: only the first part of the rest looked up)."""
    assert swept_by("trainer={a.b: 1}", ["trainer.a.b"]) == "trainer.a.b"
    assert swept_by("trainer={a: {b: 1}}", ["trainer.a.b"]) == "trainer.a.b"
    assert swept_by("trainer={a.c: 1}", ["trainer.a.b"]) is None


def test_the_study_file_records_each_cells_own_overrides_and_the_printed_table(tmp_path, monkeypatch, capsys):
    """/cells/overrides are each cell's own (its variant's, then its grid point's), not the
    command line's too; the "table" attribute is the Markdown table of STUDY.md (caught:
    the base overrides recorded into every cell; the attribute not written)."""
    _stub(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    assert main(["study", str(cfg), "trainer.lr=0.002", "-o", str(out)]) == 0
    capsys.readouterr()
    with h5py.File(out, "r") as fh:
        recorded = [json.loads(v) for v in fh["cells/overrides"][...]]
        assert recorded == [[f"loss.kind={kind}", f"equation.dim={d}", f"trainer.seed={s}"]
                            for kind in ("biased", "unbiased") for d in (3, 4) for s in (0, 1)]
        table = fh.attrs["table"]
    assert table + "\n" == (tmp_path / "t.md").read_text()
    assert table.splitlines()[0] == "| method | equation.dim=3 | equation.dim=4 |"




def _cell_file(path, **final):
    with h5py.File(path, "w") as fh:
        fh.attrs["status"] = "ok"
        group = fh.create_group("final")
        for key, value in {"rel_l2": 0.5, "best_rel_l2": 0.25, "steps_per_second": 4.0, **final}.items():
            group.attrs[key] = value


def test_a_cell_file_whose_final_number_is_an_array_is_a_cell_to_compute_again(tmp_path):
    """A /final attribute that is an array, not one number (float() raises TypeError), is
    unreadable like a missing or non-numeric one: None, the cell is computed again
    (caught: only OSError, KeyError and ValueError caught, so the study ended in a
    traceback); a readable file gives its numbers, the seconds per step the inverse rate."""
    from pinnlab.studies.training_study import _metrics_or_none

    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    _cell_file(good)
    _cell_file(bad, rel_l2=np.array([0.5, 0.6]))
    assert _metrics_or_none(bad) is None
    metrics = _metrics_or_none(good)
    assert (metrics["rel_l2"], metrics["best_rel_l2"], metrics["seconds_per_step"], metrics["status"]) == \
        (0.5, 0.25, 0.25, "ok")
    assert math.isnan(metrics["peak_mem_mb"])


def test_a_string_grid_value_reaches_its_cell_as_the_same_string():
    """The grid lists the string 'obs #2.npz' (quoted in the config, as YAML needs); the
    cell's override must set data.source to that string, not to what its unquoted text
    reads as."""
    from pinnlab.config import apply_overrides
    from pinnlab.studies.training_study import expand_cells

    values = ["obs #2.npz", "  padded ", "'q'", "σ #", "plain.npz", "[x", "obs #2 ' \" x.npz"]
    cells = expand_cells({"a": []}, {"data.source": values})
    for value, cell in zip(values, cells):
        assert apply_overrides({"data": {"source": "x.npz"}}, cell.overrides)["data"]["source"] == value
    # a string that reads back unchanged keeps its text, and so its cell key (earlier study files are reused)
    assert cells[4].overrides == ("data.source=plain.npz",)


def test_a_string_grid_value_that_yaml_reads_as_another_kind_stays_override_text():
    """A grid string that reads as a number, None or a mapping is override text, as
    documented ('0' and 0 are the same run, refused as a repeated cell)."""
    from pinnlab.config import apply_overrides
    from pinnlab.studies.training_study import expand_cells

    cells = expand_cells({"a": []}, {"k": ["0", "null", "{b: 1}"]})
    assert [apply_overrides({}, c.overrides)["k"] for c in cells] == [0, None, {"b": 1}]


def test_study_workers_is_refused_below_one_and_accepted_at_one():
    """``study.workers: 0`` is refused as ``--workers 0`` is (it ran one worker without a
    word); 1 is the boundary and is accepted (caught: ge=0)."""
    assert StudySection(kind="training", workers=1).workers == 1
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        StudySection(kind="training", workers=0)
