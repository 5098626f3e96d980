"""A training study's Markdown and CSV tables, line by line: a separator cell per
column, each variant's row its own numbers, a variant name with a line break kept on its
row, and the CSV's line ends as the file's other text (``\\n``, not csv's ``\\r\\n``)."""

from __future__ import annotations

import csv
import io

from pinnlab.studies.training_study import csv_text, markdown_table, summarise


def _summary(variants, dims=(3, 4)):
    """One ok cell per (variant, d) with rel_l2 = (variant index + 1)·d/100."""
    records = [{"variant": name, "equation.dim": d, "rel_l2": (i + 1) * d / 100, "best_rel_l2": 0.01,
                "seconds_per_step": 0.5, "peak_mem_mb": 10.0, "status": "ok"}
               for i, name in enumerate(variants) for d in dims]
    return summarise(records, "equation.dim")


def test_each_row_of_the_table_is_its_variants_with_one_separator_per_column():
    lines = markdown_table(_summary(["a", "b"]), "equation.dim").splitlines()
    assert lines == ["| method | equation.dim=3 | equation.dim=4 |",
                     "|---|---|---|",
                     "| a | 3.000e-02 (1 run) | 4.000e-02 (1 run) |",
                     "| b | 6.000e-02 (1 run) | 8.000e-02 (1 run) |"]


def test_a_variant_name_with_a_line_break_stays_on_its_row():
    lines = markdown_table(_summary(["two\nlines", "b"], dims=(3,)), "equation.dim").splitlines()
    assert len(lines) == 4 and lines[2] == "| two lines | 3.000e-02 (1 run) |"


def test_the_csv_ends_its_lines_with_newlines():
    text = csv_text(_summary(["a", "b"]))
    assert "\r" not in text and text.endswith("\n") and text.count("\n") == 1 + 4
    rows = list(csv.reader(io.StringIO(text)))
    assert [row[:3] for row in rows] == [["variant", "column", "runs"], ["a", "3", "1"], ["a", "4", "1"],
                                         ["b", "3", "1"], ["b", "4", "1"]]
