"""benchmarks/TUNING.md's checkable claims: its tables as bench_tuning's own output, the
sentences that read them (places, per-seed values, ratios, step counts), the settings
``--select`` is said to have picked, the commands' effects and the library facts the
analyses rest on.

Pins what tests/test_bench_tuning_protocol.py and tests/test_readme_claims_tuning_bench_audit.py
do not: those check the README's table and the script's protocol; here each TUNING.md
table and the prose around it. Measured numbers are taken as given; only their
arithmetic and their agreement with each other and with the code are checked.
"""

from __future__ import annotations

import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "benchmarks" / "TUNING.md").read_text(encoding="utf-8")
FLAT = " ".join(TEXT.split())

MAIN = "**Tuning benchmark**"
RERUN = "**Rerun with the current code**"
MALLOC = "**With `configure_malloc`**"
SELECT = "**Each method with its own outer setting**"
SGD = "**Plain SGD as the outer optimiser**"
EQUAL = "**Equal inner steps instead of equal wall-clock**"
FULL = "**Full size**"
COSTS = "- **Cost of one estimate**"
TWO_PHASE = "- **The two-phase schedule**"


@pytest.fixture
def bench(benchmarks):
    return benchmarks("bench_tuning")


def _says(*phrases):
    for phrase in phrases:
        assert phrase in FLAT, phrase


def _table_lines(marker):
    """The first markdown table after ``marker`` (indented tables included)."""
    lines = TEXT[TEXT.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("|"))
    out = []
    for line in lines[start:]:
        if not line.lstrip().startswith("|"):
            break
        out.append(line.strip())
    return out


def _cells(line):
    return [c.strip() for c in line.strip("|").split("|")]


def _value(cell):
    """(mean, std or None) of a cell, None for n/a; bold and † dropped."""
    cell = cell.replace("*", "").replace("†", "").strip()
    if cell == "n/a":
        return None
    mean, _, std = cell.partition(" ± ")
    return float(mean), (float(std) if std else None)


def _table(marker):
    """{column: {row: mean}} of the table after ``marker`` (n/a cells left out)."""
    lines = _table_lines(marker)
    header = _cells(lines[0])[1:]
    out = {column: {} for column in header}
    for line in lines[2:]:
        row, *cells = _cells(line)
        for column, cell in zip(header, cells):
            if not column.startswith("("):  # (the SGD table's "selected" column)
                continue
            value = _value(cell)
            if value is not None:
                out[column][row] = value[0]
    return out


def _place(column, method):
    order = sorted(column, key=column.get)
    return order.index(method) + 1


SCRIPT_TABLES = [MAIN, RERUN, MALLOC, SELECT, EQUAL, FULL]


@pytest.mark.parametrize("marker", SCRIPT_TABLES)
def test_each_results_table_is_the_scripts_markdown_of_its_cells(bench, marker):
    """The method × problem tables of the quick runs, the --select run, the equal-steps
    run and the full-size run ("the best mean per column is bold", n/a where a method does
    not apply): bench_tuning.markdown of records with each cell's mean and std (three
    repeats m − s, m, m + s; one record where the cell has no ±) gives the table line for
    line, so every bold cell is its column's lowest mean."""
    lines = _table_lines(marker)
    records = []
    for line in lines[2:]:
        method, *cells = _cells(line)
        for problem, cell in zip("abc", cells):
            value = _value(cell)
            if value is None:
                records.append({"problem": problem, "method": method, "error": None})
                continue
            mean, std = value
            spread = (-1, 0, 1) if std is not None else (0,)
            records += [{"problem": problem, "method": method, "error": mean + k * (std or 0.0)} for k in spread]
    assert bench.markdown(records).splitlines() == lines


def test_the_tables_with_every_method_list_them_in_the_scripts_order(bench):
    """The full tables' rows are bench_tuning.METHODS in order (the script's output order)."""
    for marker in (MAIN, RERUN, MALLOC, SELECT, FULL):
        assert [_cells(line)[0] for line in _table_lines(marker)[2:]] == list(bench.METHODS), marker


def test_bold_marks_the_lowest_mean_in_the_hand_made_tables():
    """The two-phase table (per column), the SGD table and the outer-β table (per row,
    where a row has a bold cell) and the horizon-bias table (h_200 and the 200-step rel.
    L2 lowest at σ = 0.1, "the σ = 0.1 that minimises the 200-step misfit")."""
    for marker in (TWO_PHASE, SGD):
        lines = _table_lines(marker)
        header = _cells(lines[0])[1:]
        for j, column in enumerate(header):
            if not column.startswith("("):  # (the SGD table's "selected" column)
                continue
            cells = [_cells(line)[1 + j] for line in lines[2:]]
            values = [_value(c) for c in cells]
            if not any("**" in c for c in cells):
                continue
            best = min(v[0] for v in values if v is not None)
            assert [("**" in c) for c in cells] == [v is not None and v[0] == best for v in values], (marker, column)
    lines = _table_lines("| outer Adam β |")
    for line in lines[2:]:
        cells = _cells(line)[2:]
        if any("**" in c for c in cells):
            means = [_value(c)[0] for c in cells]
            assert [("**" in c) for c in cells] == [m == min(means) for m in means], line
    lines = _table_lines("| σ | 0.01 |")
    sigmas = [float(s) for s in _cells(lines[0])[1:]]
    for line in lines[3:5]:
        cells = _cells(line)[1:]
        values = [float(c.strip("*")) for c in cells]
        assert sigmas[values.index(min(values))] == 0.1 and "**" in cells[values.index(min(values))], line
    _says("close to the σ = 0.1 that minimises the 200-step misfit in the horizon-bias table")


def test_the_horizon_bias_table_has_the_10_step_sign_of_the_200_step_slope():
    """"At a network trained at a fixed σ the 10-step hypergradient has the sign of the
    200-step slope (up below 0.1, down above)": ∂h_10/∂log σ < 0 where h_200 still falls
    towards larger σ, > 0 from σ = 0.1 on, where it rises."""
    _says("the 10-step hypergradient has the sign of the 200-step slope (up below 0.1, down above)")
    lines = _table_lines("| σ | 0.01 |")
    sigmas = [float(s) for s in _cells(lines[0])[1:]]
    h200 = [float(c.strip("*")) for c in _cells(lines[3])[1:]]
    grads = [float(c.split(" ± ")[0].replace("−", "-")) for c in _cells(lines[5])[1:]]
    for i, sigma in enumerate(sigmas):
        if sigma < 0.1:
            assert grads[i] < 0 and h200[i + 1] < h200[i], sigma
        else:
            assert grads[i] > 0 and (i + 1 == len(sigmas) or h200[i + 1] > h200[i]), sigma


# The places the prose gives fg2u (and trgu) in each table.

PLACES = [
    (MAIN, "on (b) third, behind rgu and trgu", "(b)", "fg2u", 3),
    (MAIN, "on (a) ninth of ten", "(a)", "fg2u", 9),
    (RERUN, "fg2u is second on (c)", "(c)", "fg2u", 2),
    (RERUN, "fourth on (b) (0.68", "(b)", "fg2u", 4),
    (RERUN, "and sixth on (a) (0.49, 0.66, 0.45), behind trgu, hessian_free, both searches and LRA", "(a)", "fg2u", 6),
    (MALLOC, "fg2u is best on none of the three again: second on (c)", "(c)", "fg2u", 2),
    (MALLOC, "sixth on (b) (0.75, 0.44, 0.58)", "(b)", "fg2u", 6),
    (MALLOC, "sixth on (a) (0.61, 0.65, 0.46)", "(a)", "fg2u", 6),
    (SELECT, "fg2u is still best on **one** problem, (b)", "(b)", "fg2u", 1),
    (SELECT, "third on (c) within one standard deviation of trgu", "(c)", "fg2u", 3),
    (SELECT, "fourth on (a) (0.43, 0.34, 0.39", "(a)", "fg2u", 4),
    (EQUAL, "fg2u is again best on (b) only", "(b)", "fg2u", 1),
]


@pytest.mark.parametrize("marker, phrase, column, method, place", PLACES)
def test_fg2u_stands_where_the_prose_says_in_its_table(marker, phrase, column, method, place):
    """Each stated place of fg2u is its rank by mean in the table the sentence reads."""
    _says(phrase)
    assert _place(_table(marker)[column], method) == place


def test_the_places_around_each_table_name_the_right_methods():
    """"ninth of ten" counts ten values; "level with the untuned default (1.95e-2), behind
    hessian_free and trgu"; "trgu is first on all three" (session 32); "behind trgu,
    hessian_free, both searches and LRA"; "behind LRA and hessian_free as well" (--select);
    "best on **none**" of the main and the full-size tables; "fg2u is again best on (b)
    only" (equal steps)."""
    main = _table(MAIN)
    assert len(main["(a)"]) == 10
    _says("on (c) level with the untuned default (1.95e-2), behind hessian_free and trgu")
    assert main["(c)"]["fg2u"] == main["(c)"]["default"] == 1.95e-2
    assert sorted(main["(c)"], key=main["(c)"].get)[:2] == ["hessian_free", "trgu"]
    _says("trgu is first on all three.")
    assert all(_place(column, "trgu") == 1 for column in _table(RERUN).values())
    rerun_a = _table(RERUN)["(a)"]
    assert set(sorted(rerun_a, key=rerun_a.get)[:5]) == {"trgu", "hessian_free", "random", "optuna", "lra"}
    select_a = _table(SELECT)["(a)"]
    assert set(sorted(select_a, key=select_a.get)[:3]) == {"trgu", "lra", "hessian_free"}
    _says("Bilevel tuning with fg2u is now best on **none** of the three problems",
          "With eight times the budget fg2u is best on none of the three")
    for marker in (MAIN, RERUN, MALLOC, FULL):
        assert all(_place(column, "fg2u") > 1 for column in _table(marker).values()), marker
    equal = _table(EQUAL)
    assert [_place(equal[c], "fg2u") == 1 for c in ("(a)", "(b)", "(c)")] == [False, True, False]


# Per-seed values against the table means they average to.

SEEDS = [
    (MAIN, "(b)", "fg2u", "fg2u 0.64, 0.41, 0.50"),
    (MAIN, "(b)", "rgu", "rgu 0.55, 0.45, 0.43"),
    (MAIN, "(b)", "trgu", "trgu 0.53, 0.52, 0.44"),
    (MAIN, "(b)", "joint", "single-level joint fitting (0.63, 0.66, 0.63)"),
    (MAIN, "(a)", "trgu", "trgu (0.54, 0.52, 0.46)"),
    (MAIN, "(a)", "hessian_free", "hessian_free (0.51, 0.57, 0.51)"),
    (RERUN, "(c)", "fg2u", "by seed 1.22, 1.02, 1.08e-2"),
    (RERUN, "(c)", "trgu", "against 1.07, 1.10, 1.06e-2"),
    (RERUN, "(b)", "fg2u", "fourth on (b) (0.68, 0.44, 0.57"),
    (RERUN, "(b)", "trgu", "trgu 0.42, 0.37, 0.29"),
    (RERUN, "(b)", "rgu", "rgu 0.47, 0.43, 0.36"),
    (RERUN, "(b)", "hessian_free", "hessian_free 0.56, 0.41, 0.47"),
    (RERUN, "(a)", "fg2u", "sixth on (a) (0.49, 0.66, 0.45)"),
    (MALLOC, "(c)", "fg2u", "second on (c) (1.26, 1.03, 1.13e-2"),
    (MALLOC, "(c)", "trgu", "against trgu's 1.09, 1.11, 1.08e-2"),
    (MALLOC, "(b)", "fg2u", "sixth on (b) (0.75, 0.44, 0.58)"),
    (MALLOC, "(a)", "fg2u", "sixth on (a) (0.61, 0.65, 0.46)"),
    (SELECT, "(b)", "fg2u", "(0.38, 0.17, 0.23 by seed"),
    (SELECT, "(b)", "rgu", "against rgu's 0.40, 0.36, 0.38"),
    (SELECT, "(b)", "zo_fg2u", "zo_fg2u's 0.39, 0.31, 0.39"),
    (SELECT, "(c)", "fg2u", "(1.11, 0.97, 1.30e-2"),
    (SELECT, "(c)", "trgu", "against 1.08, 0.90, 1.12e-2"),
    (SELECT, "(a)", "fg2u", "fourth on (a) (0.43, 0.34, 0.39"),
    (SELECT, "(a)", "trgu", "against trgu's 0.34, 0.28, 0.26"),
    (SGD, "(b)", "rgu", "By seed: rgu 0.17, 0.19, 0.14"),
    (SGD, "(b)", "trgu", "trgu 0.32, 0.35, 0.29"),
    (SGD, "(b)", "fg2u", "fg2u 0.62, 0.59, 0.65"),
    (SGD, "(b)", "joint", "joint 0.54, 0.47, 0.58"),
    (EQUAL, "(b)", "fg2u", "(0.428, 0.413, 0.421 by seed"),
    (EQUAL, "(b)", "rgu", "against rgu's 0.466, 0.469, 0.505"),
    (TWO_PHASE, "(b)", "trgu", "(trgu 0.52, 0.52, 0.45"),
    (TWO_PHASE, "(b)", "trgu → fg2u", "against trgu → fg2u 0.74, 0.68, 0.71 by seed"),
]


def _numbers(phrase):
    """The numbers of a phrase, scaled by a trailing e-N, with their last decimal place."""
    scale = 10.0 ** int(m.group(1)) if (m := re.search(r"e(-\d+)\s*$", phrase)) else 1.0
    body = re.sub(r"e-\d+\s*$", "", phrase)
    found = re.findall(r"\d+\.\d+", body)
    places = max(len(f.split(".")[1]) for f in found)
    return [float(f) * scale for f in found], 0.5 * 10.0 ** -places * scale


@pytest.mark.parametrize("marker, column, method, phrase", SEEDS)
def test_per_seed_values_average_to_the_tables_mean(marker, column, method, phrase):
    """Three per-seed values quoted in the prose average to the mean in the table (up to
    the rounding of both)."""
    _says(phrase)
    values, rounding = _numbers(phrase)
    assert len(values) == 3
    mean = _table(marker)[column][method]
    digits = 0.5 * 10.0 ** (math.floor(math.log10(mean)) - 2)  # the table's 3 significant digits
    assert abs(sum(values) / 3 - mean) <= rounding + digits, (phrase, sum(values) / 3, mean)


def test_the_errors_behind_the_equal_steps_a_cell_give_its_mean_and_std():
    """Equal steps, (a): the exact hypergradient ends at errors 0.68, 2.43, 0.59 (seeds 0,
    1, 2) for fg2u and rgu alike, the cell "1.23e+00 ± 1.0e+00" of both rows ("it matches
    rgu to four digits (boundary weight 6105.8 against 6105.4 at seed 0)")."""
    _says("(seeds 0, 2; errors 0.68, 0.59) or lowering it to 3·10⁻⁶ (seed 1; 2.43)",
          "it matches rgu to four digits (boundary weight 6105.8 against 6105.4 at seed 0)")
    errors = [0.68, 2.43, 0.59]
    mean = sum(errors) / 3
    std = math.sqrt(sum((e - mean) ** 2 for e in errors) / 2)
    assert f"{mean:.2e} ± {std:.1e}" == "1.23e+00 ± 1.0e+00"
    lines = {_cells(line)[0]: _cells(line)[1] for line in _table_lines(EQUAL)[2:]}
    assert lines["fg2u"] == lines["rgu"] == "1.23e+00 ± 1.0e+00"
    assert 1e-5 < abs(6105.8 - 6105.4) / 6105.4 < 1e-4
    _says("On (c) the five hypergradients are within one standard deviation")
    c = {_cells(line)[0]: _value(_cells(line)[3]) for line in _table_lines(EQUAL)[2:]}
    means = [c[m][0] for m in ("fg2u", "rgu", "trgu", "hessian_free", "zo_fg2u")]
    assert max(means) - min(means) <= min(c[m][1] for m in ("fg2u", "rgu", "trgu", "hessian_free", "zo_fg2u"))


def test_the_b_learning_rate_check_quotes_the_means_of_its_seeds():
    """(b) at the shipped outer lr 0.1: fg2u's 0.26, 0.32, 0.30 give its best mean "0.29"
    ("The best of each over {0.03, 0.1, 0.3} is still fg2u's (0.29 against 0.35)"), and
    rgu's 0.49, 0.48, 0.53 there are above its 0.35 at 0.03, fg2u's 0.55 at 0.03 above 0.29."""
    _says("(0.26, 0.32, 0.30 against 0.49, 0.48, 0.53)", "at 0.03 rgu 0.35 ± 0.01 against fg2u 0.55 ± 0.04",
          "still fg2u's (0.29 against 0.35)")
    assert round(sum([0.26, 0.32, 0.30]) / 3, 2) == 0.29 < 0.55
    assert sum([0.49, 0.48, 0.53]) / 3 > 0.35


def test_the_mu_hat_change_moves_to_the_main_tables_b_column():
    """"On (b) that change cost fg2u (0.31 → 0.51), joint fitting (0.47 → 0.64) and zo_fg2u
    (0.63 → 0.93), not rgu (0.55 → 0.48), trgu (0.64 → 0.50) or hessian_free (0.88 →
    0.57)": each new value is the main table's (b) cell, up for the first three, down for
    the others; the old fg2u value is the "(0.31 ± 0.02)" of the previous table."""
    b = _table(MAIN)["(b)"]
    moves = {"fg2u": (0.31, 0.51), "joint fitting": (0.47, 0.64), "zo_fg2u": (0.63, 0.93),
             "rgu": (0.55, 0.48), "trgu": (0.64, 0.50), "hessian_free": (0.88, 0.57)}
    for name, (old, new) in moves.items():
        _says(f"{name} ({old:.2f} → {new:.2f})")
        row = "joint" if name == "joint fitting" else name
        assert round(b[row], 2) == new, name
        assert (new > old) == (name in ("fg2u", "joint fitting", "zo_fg2u")), name
    _says("had fg2u first on (b) (0.31 ± 0.02)")


def test_the_full_size_paragraph_quotes_its_table():
    """The full-size prose: (a) "error 0.17" for trgu and hessian_free, fg2u and rgu
    "(0.32, 0.35)", searches "(0.19–0.20)", LRA and ReLoBRaLo "0.28 and 0.36"; (b) "trgu
    0.28, rgu 0.35, fg2u 0.46, hessian_free 0.48, joint fitting 0.70, zo_fg2u 0.85"; (c)
    "hessian_free 6.2e-3, trgu 6.4e-3, fg2u 7.4e-3, rgu 8.9e-3, zo_fg2u 9.5e-3", searches
    6.7e-3; trgu and hessian_free "end ahead of the searches all the same" on (c)."""
    full = _table(FULL)
    a, b, c = full["(a)"], full["(b)"], full["(c)"]
    _says("(2.2 and 2.6; error 0.17)", "overshoot to 9.7e3 and 2.0e4 (0.32, 0.35)", "(0.19–0.20)",
          "LRA and ReLoBRaLo from 1e-3 end at 0.28 and 0.36")
    assert round(a["trgu"], 2) == round(a["hessian_free"], 2) == 0.17
    assert (round(a["fg2u"], 2), round(a["rgu"], 2)) == (0.32, 0.35)
    assert (round(a["optuna"], 2), round(a["random"], 2)) == (0.19, 0.20)
    assert (round(a["lra"], 2), round(a["relobralo"], 2)) == (0.28, 0.36)
    stated_b = {"trgu": 0.28, "rgu": 0.35, "fg2u": 0.46, "hessian_free": 0.48, "joint": 0.70, "zo_fg2u": 0.85}
    _says("trgu 0.28, rgu 0.35, fg2u 0.46, hessian_free 0.48, joint fitting 0.70, zo_fg2u 0.85")
    for method, value in stated_b.items():
        assert abs(b[method] - value) <= 0.0051, method
    stated_c = {"hessian_free": 6.2e-3, "trgu": 6.4e-3, "fg2u": 7.4e-3, "rgu": 8.9e-3, "zo_fg2u": 9.5e-3}
    _says("(hessian_free 6.2e-3, trgu 6.4e-3, fg2u 7.4e-3, rgu 8.9e-3, zo_fg2u 9.5e-3)", "reach 6.7e-3")
    for method, value in stated_c.items():
        assert abs(c[method] - value) <= 0.51e-4, method
    assert round(c["random"], 4) == round(c["optuna"], 4) == 6.7e-3
    assert max(c["trgu"], c["hessian_free"]) < min(c["random"], c["optuna"])


def test_the_searches_rows_repeat_between_sessions_32_and_33():
    """"the searches ran the same trials and drew the same values, so their rows equal the
    run before's": random's and optuna's rows of the two tables are identical."""
    _says("so their rows equal the run before's")
    rows = [{_cells(line)[0]: line for line in _table_lines(marker)[2:]} for marker in (RERUN, MALLOC)]
    for method in ("random", "optuna"):
        assert rows[0][method] == rows[1][method]


def test_session_32_compares_its_step_counts_with_the_main_tables():
    """"fg2u's outer steps: (a) 19–49, (b) 133–161, (c) 64–75, against 13–15, 50–55, 22–24":
    the latter are the main table's own count ("fg2u ran 13–15, 50–55 and 22–24 outer steps
    on (a), (b), (c)"), and each new count is at least the old one."""
    _says("fg2u ran 13–15, 50–55 and 22–24 outer steps on (a), (b), (c)",
          "(a) 19–49, (b) 133–161, (c) 64–75, against 13–15, 50–55, 22–24")
    new, old = [(19, 49), (133, 161), (64, 75)], [(13, 15), (50, 55), (22, 24)]
    assert all(n[0] > o[1] for n, o in zip(new, old))


def test_the_outer_beta_paragraph_quotes_the_cost_paragraphs_step_count():
    """"(The machine was faster again during these runs: fg2u ran 44–56 outer steps on (c)
    against 35–45 in the run of the cost paragraph above.)": that paragraph gives fg2u
    35–45 outer steps in 15 s on (c). (It said "the main table's run", whose fg2u ran
    22–24 on (c).)"""
    cost = re.search(r"in 15 s on \(c\) hessian_free ran \d+–\d+ outer steps, trgu \d+–\d+, fg2u (\d+–\d+)", FLAT)
    quoted = re.search(r"fg2u ran 44–56 outer steps on \(c\) against (\d+–\d+) in the run of the cost paragraph "
                       r"above", FLAT)
    assert cost.group(1) == quoted.group(1) == "35–45"
    main_c = re.search(r"fg2u ran \d+–\d+, \d+–\d+ and (\d+–\d+) outer steps on \(a\), \(b\), \(c\)", FLAT).group(1)
    assert main_c != quoted.group(1)  # (why the main table's run is not the one meant)


def test_the_sign_step_comparison_quotes_the_seed_means_of_the_a_paragraph():
    """"(fg2u 0.49 ± 0.02 and rgu 0.49 ± 0.06 against 1.36 and 1.82 with the default Adam:
    the seed means of the (a) paragraph above)": that paragraph's errors by seed, fg2u
    (0.67, 2.03, 1.38) and rgu (1.81, 1.98, 1.68), average to 1.36 and 1.82. No quick table
    above has these means (it pointed to "the quick table above, whose rows are the ones
    to compare with")."""
    quoted = re.search(r"against (\d\.\d+) and (\d\.\d+) with the default Adam: the seed means of the \(a\) "
                       r"paragraph above", FLAT)
    seeds = re.search(r"fg2u ended at weights [^(]*\(errors ([\d., ]+)\), rgu at [^(]*\(([\d., ]+)\)", FLAT)
    means = [round(sum(map(float, group.split(", "))) / 3, 2) for group in seeds.groups()]
    assert [float(v) for v in quoted.groups()] == means == [1.36, 1.82]
    assert "whose rows are the ones to compare with" not in FLAT
    assert all((round(t["(a)"]["fg2u"], 2), round(t["(a)"]["rgu"], 2)) != tuple(means)
               for t in (_table(MAIN), _table(RERUN), _table(MALLOC)))


# The cost table, its ratios and the rows' horizon and directions.


def test_the_cost_tables_ratios_read_as_the_text_says():
    """"With Hessian-vector-product tangents fg2u is 2.8–3.9× cheaper than through
    torch.func.jvp and, with one direction, cheaper than rgu"; later "trgu and
    hessian_free, which cost 1.0–1.6 primal unrolls against fg2u's 1.7–2.0 (cost table
    above)" on (a) and (c)."""
    _says("fg2u is 2.8–3.9× cheaper than", "with one direction, cheaper than rgu",
          "which cost 1.0–1.6 primal unrolls against fg2u's 1.7–2.0 (cost table above)")
    lines = _table_lines(COSTS)
    header = _cells(lines[0])
    rows = {}
    for line in lines[2:]:
        cells = _cells(line)
        rows[cells[0]] = {h: float(c.rstrip("×")) for h, c in zip(header[2:], cells[2:])}
    speedups = [r["fg2u_jvp"] / r["fg2u"] for r in rows.values()]
    assert (round(min(speedups), 1), round(max(speedups), 1)) == (2.8, 3.9)
    for label, r in rows.items():
        if "b = 1" in label:
            assert r["fg2u"] < r["rgu"], label
    one = [r for label, r in rows.items() if "b = 1" in label]
    assert len(one) == 2
    biased = [r[m] for r in one for m in ("trgu", "hessian_free")]
    assert (math.floor(min(biased) * 10) / 10, math.ceil(max(biased) * 10) / 10) == (1.0, 1.6)
    fg2u = [r["fg2u"] for r in one]
    assert (math.floor(min(fg2u) * 10) / 10, math.ceil(max(fg2u) * 10) / 10) == (1.7, 2.0)


def test_the_cost_rows_have_each_problems_horizon_and_directions(bench, monkeypatch):
    """The cost table's rows "(a) (50), b = 1", "(b) (10), b = 4", "(c) (10), b = 1": the
    real quick setups give estimate_costs those horizons and fg2u those directions (the
    unroll and the estimators replaced by stand-ins, the clock by a counter)."""
    import pinnlab.bilevel.base as base
    import pinnlab.tuning.run as run

    made = []
    monkeypatch.setattr(base, "unroll", lambda problem, u: None)
    monkeypatch.setattr(run, "make_hypergradient_method",
                        lambda name, options: made.append(options) or (lambda problem, u: None))
    ticks = iter(range(10**6))
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    specs = bench.problems(True)
    labels = [_cells(line)[0] for line in _table_lines(COSTS)[2:]]
    for name, label in zip("abc", labels):
        made.clear()
        records = bench.estimate_costs(name, specs[name], ["fg2u"], repeats=1)
        horizon, b = re.fullmatch(r"\(\w\) \((\d+)\), b = (\d+)", label).groups()
        assert label.startswith(f"({name})")
        assert records[-1]["horizon"] == int(horizon) and made == [{"num_directions": int(b)}], name


# --select's picks are points of the script's grid.

PICKS = [  # (problem, method, kind, value) as the text states them
    ("a", "fg2u", "sign", 1.0), ("a", "rgu", "sign", 1.0), ("a", "trgu", "sign", 1.0),
    ("a", "hessian_free", "sign", 1.0), ("a", "zo_fg2u", "sign", 3.0),
    ("b", "fg2u", "sign", 0.033), ("b", "trgu", "sign", 0.033), ("b", "rgu", "sign", 0.1),
    ("b", "zo_fg2u", "sign", 0.1), ("b", "joint", "sign", 0.1), ("b", "hessian_free", "adam", 0.033),
    ("c", "fg2u", "sign", 0.2), ("c", "rgu", "adam", 0.067), ("c", "trgu", "adam", 0.067),
    ("c", "hessian_free", "adam", 0.067), ("c", "zo_fg2u", "sign", 0.6),
    ("a", "random", "trial", 500), ("a", "optuna", "trial", 250), ("b", "random", "trial", 200),
    ("b", "optuna", "trial", 100), ("c", "random", "trial", 200), ("c", "optuna", "trial", 200),
]
LATER_PICKS = [  # the SGD table and the (a)/(c) SGD runs
    ("b", "random", "trial", 100), ("b", "optuna", "trial", 50), ("b", "joint", "sign", 0.1),
    ("b", "fg2u", "sign", 0.1), ("b", "rgu", "sgd", 0.01), ("b", "trgu", "sgd", 0.03),
    ("b", "hessian_free", "sign", 0.033), ("b", "zo_fg2u", "sgd", 0.01), ("b", "fg2u", "sgd", 0.0033),
    ("a", "fg2u", "sgd", 3.0), ("c", "hessian_free", "adam", 0.067), ("c", "trgu", "sgd", 0.33),
    ("c", "fg2u", "adam", 0.2), ("c", "rgu", "sign", 0.6), ("c", "fg2u", "sign", 0.067),
]


def _matches(setting, kind, value):
    if kind == "trial":
        return setting == {"trial_steps": value}
    if kind == "sgd":
        return setting.get("outer_optimizer") == "sgd" and float(f"{setting['outer_lr']:.2g}") == value
    betas = [0.0, 0.0] if kind == "sign" else [0.9, 0.999]
    return setting.get("outer_betas") == betas and float(f"{setting['outer_lr']:.2g}") == value


def test_every_stated_pick_is_a_point_of_the_selection_grid(bench):
    """The settings TUNING.md says --select chose ("Selected (outer lr, β): (a) 1.0 with
    sign steps ...", the SGD table's "selected" column, "SGD 0.33, the one SGD pick", ...)
    are each one point of selection_grid for that problem and method, at the rounding
    the text uses; and "The shipped setting (the problem's lr with the default β) was
    chosen for no method" in the 54-minute run."""
    _says("Selected (outer lr, β): (a) 1.0 with sign steps for fg2u, rgu, trgu and hessian_free (zo_fg2u 3.0, sign "
          "steps); (b) sign steps at 0.033 for fg2u and trgu, at 0.1 for rgu, zo_fg2u and joint, Adam at 0.033 for "
          "hessian_free; (c) sign steps at 0.2 for fg2u, Adam at 0.067 for rgu, trgu and hessian_free (zo_fg2u sign "
          "steps at 0.6); trial lengths 500/250 (a), 200/100 (b), 200/200 (c) for random/optuna",
          "The shipped setting (the problem's lr with the default β) was chosen for no method",
          "its best SGD 0.43 (at 0.0033)", "best SGD errors fg2u 0.45 (lr 3)", "(SGD 0.33, the one SGD pick)",
          "(fg2u sign steps 0.067 there, Adam 0.2 here)", "rgu 2.50e-2 ± 9e-4 (sign steps 0.6")
    specs = bench.problems(True)
    for name, method, kind, value in PICKS + LATER_PICKS:
        grid = bench.selection_grid(specs[name], method, bench.SGD_LR[name])
        assert sum(_matches(s, kind, value) for s in grid) == 1, (name, method, kind, value)
    for name, method, kind, value in PICKS:
        if kind != "trial":
            shipped = kind == "adam" and value == specs[name]["tune"]["outer_lr"]
            assert not shipped, (name, method)
    sgd_column = {_cells(line)[0]: _cells(line)[2] for line in _table_lines(SGD)[2:]}
    assert sgd_column["rgu"] == "SGD 0.01" and sgd_column["optuna"] == "trial 50 steps"


def test_the_published_weighting_constants_are_the_grids_first_points(bench):
    """"LRA's published constants were best" (α 0.1, every 10) and ReLoBRaLo's "published"
    temperature 1 (α 0.95): the library's defaults, the first point of each grid."""
    from pinnlab.solvers.weighting import LRA, ReLoBRaLo

    _says("LRA's published constants were best", "temperature 0.1 (1.65 against 1.73 at the published 1)")
    data = bench.problems(True)["a"]
    assert bench.selection_grid(data, "lra")[0] == {"weighting_options": {"alpha": LRA().alpha, "every": LRA().every}}
    assert (LRA().alpha, LRA().every) == (0.1, 10)
    first = bench.selection_grid(data, "relobralo")[0]["weighting_options"]
    assert first == {"alpha": ReLoBRaLo().alpha, "temperature": ReLoBRaLo().temperature} == {
        "alpha": 0.95, "temperature": 1.0}


def test_relobralo_weights_stay_below_the_number_of_terms_and_lras_do_not():
    """"ReLoBRaLo's weights are a softmax over the terms, bounded by the number of terms (2
    here), and cannot reach the boundary weight of order 10³ ...; LRA's gradient-ratio
    weights are unbounded": ReLoBRaLo from a boundary weight of 1e-3 under wildly moving
    losses never exceeds 2; LRA with a 1e4 gradient ratio passes 10³."""
    from pinnlab.solvers.weighting import LRA, ReLoBRaLo

    _says("ReLoBRaLo's weights are a softmax over the terms, bounded by the number of terms (2 here)",
          "LRA's gradient-ratio weights are unbounded")
    names = ["residual", "boundary"]
    for temperature in (1.0, 0.1):
        w = ReLoBRaLo(temperature=temperature)
        state = w.init(names, {"boundary": 1e-3})
        for step in range(40):
            losses = {"residual": 10.0 ** (step % 7 - 3), "boundary": 10.0 ** (3 - step % 5)}
            state = w.update(state, step, losses, None, seed=step)
            assert max(state["weights"].values()) <= 2.0 + 1e-12
    lra = LRA()  # (the published α 0.1, every 10 steps)
    state = lra.init(names, {"boundary": 1e-3})
    for step in range(2000):  # |∇(λ_r L_r)| max 1, |∇(λ_b L_b)| mean λ_b·1e-8: fixed point λ_b = 1e4
        weights = state["weights"]
        state = lra.update(state, step, None, lambda w=weights: {"residual": (w["residual"], 1.0),
                                                                 "boundary": (1.0, w["boundary"] * 1e-8)}, seed=0)
    assert 1e3 < state["weights"]["boundary"] <= 1e4 * (1 + 1e-9)


# Commands and their effects.


def _main(bench, monkeypatch, argv):
    """bench_tuning.main with stand-in runs: the data and budget of each."""
    calls = []

    def run_method(name, data, method, budget):
        calls.append((name, method, data, budget))
        return {"problem": name, "method": method, "error": 0.5, "seconds": 1.0, "note": ""}

    monkeypatch.setattr(bench, "run_untuned", lambda *args, **kwargs: {})
    monkeypatch.setattr(bench, "run_method", run_method)
    monkeypatch.setattr(sys, "argv", ["bench_tuning.py", "--malloc", "default", *argv])
    assert bench.main() == 0
    return calls


def test_then_lr_scale_0_1_sets_phase_two_at_0_1_0_01_0_02(bench, monkeypatch):
    """"(`--then-lr-scale 0.1`, i.e. `tune.then.outer_lr` = 0.1, 0.01, 0.02)" with the
    two-phase command's "--then fg2u@10,50,15" (Phase I "for 10, 50 and 15 outer steps on
    (a), (b), (c)")."""
    _says("(`--then-lr-scale 0.1`, i.e. `tune.then.outer_lr` = 0.1, 0.01, 0.02)",
          "--then fg2u@10,50,15", "as Phase I for 10, 50 and 15 outer steps on (a), (b), (c)")
    calls = _main(bench, monkeypatch, ["--quick", "--methods", "trgu", "--then", "fg2u@10,50,15",
                                       "--then-lr-scale", "0.1"])
    phases = [(c[0], c[2]["tune"]["then"]) for c in calls if c[2]["tune"].get("then")]
    assert [(name, then["after"]) for name, then in phases] == [("a", 10), ("b", 50), ("c", 15)]
    assert [then["outer_lr"] for _, then in phases] == pytest.approx([0.1, 0.01, 0.02], rel=1e-12)


def test_the_full_run_has_eight_times_the_quick_budget(bench, monkeypatch):
    """"With eight times the budget" and "B = 120 s, 2000 final steps, width 64": the
    full run's budget over --quick's."""
    _says("With eight times the budget", "B = 120 s, 2000 final steps, width 64")
    quick = _main(bench, monkeypatch, ["--quick", "--problems", "b", "--methods", "rgu"])[0][3]
    full = _main(bench, monkeypatch, ["--problems", "b", "--methods", "rgu"])[0]
    assert full[3] / quick == 8 and full[2]["trainer"]["steps"] == 2000 and full[2]["model"]["width"] == 64


def test_step_counts_are_outer_steps_times_each_problems_horizon(bench):
    """(a): "trgu 29–34 outer steps, i.e. 1450–1700 training steps, against fg2u's
    1150–1250" with "(fg2u ran 23–25 outer steps" at T = 50; (c): "(× T = 10 training
    steps)"; the searches "(2 trials of 500 steps on (a))" and "(6–8 trials of 100 steps
    ...) their final network has trained 300 steps": 10·T per trial, plus S = 200."""
    from pinnlab.tuning.search import trial_steps

    _says("(trgu 29–34 outer steps, i.e. 1450–1700 training steps, against fg2u's 1150–1250)",
          "(fg2u ran 23–25 outer steps", "(× T = 10 training steps)", "(2 trials of 500 steps on (a))",
          "(6–8 trials of 100 steps from the initial network)", "their final network has trained 300 steps")
    specs = bench.problems(True)
    horizon = {name: specs[name]["tune"]["horizon"] for name in "abc"}
    assert (29 * horizon["a"], 34 * horizon["a"]) == (1450, 1700)
    assert (23 * horizon["a"], 25 * horizon["a"]) == (1150, 1250)
    assert horizon["c"] == 10
    for name, method, steps in (("a", "random", 500), ("c", "optuna", 100)):
        config = bench.tuner_config(name, specs[name], method, 15.0)
        assert trial_steps(types.SimpleNamespace(config=config)) == steps
        assert config.tune.final_init == "continue" and config.tune.final_steps is None
    assert trial_steps(types.SimpleNamespace(config=config)) + config.trainer.steps == 300


def test_b_directions_leave_a_relative_noise_of_about_2_2(bench):
    """"its b = 4 Rademacher directions in ℝ²⁰ leave a relative noise of about √(19/4) ≈
    2.2 per estimate": b = directions(20) = 4 and the library's Rademacher draws give
    E‖(1/b)Σ v vᵀg − g‖² / ‖g‖² ≈ (N − 1)/b (Monte Carlo, 2000 estimates)."""
    from pinnlab.bilevel.forward import directions

    _says("its b = 4 Rademacher directions in ℝ²⁰ leave a relative noise of about √(19/4) ≈ 2.2")
    n, b = 20, bench.directions(20)
    assert b == 4 and round(math.sqrt((n - 1) / b), 1) == 2.2
    g = torch.linspace(-1.0, 2.0, n, dtype=torch.float64)
    errors = []
    for step in range(2000):
        v = directions("rademacher", range(b), n, seed=0, outer_step=step, dtype=torch.float64,
                       device=torch.device("cpu"))
        estimate = (v * (v @ g)[:, None]).mean(0)
        errors.append(float((estimate - g).pow(2).sum()))
    ratio = sum(errors) / len(errors) / float(g.pow(2).sum())
    assert math.sqrt(ratio) == pytest.approx(math.sqrt((n - 1) / b), rel=0.05)


def test_the_sgd_ratios_are_as_stated():
    """"The exact hypergradient with plain SGD recovers μ almost four times as well as
    fg2u's best setting" (the SGD table) and "fg2u's distance to rgu has grown from about
    2× to about 4×" (0.226 against 0.121 before)."""
    _says("recovers μ almost four times as well as fg2u's best setting", "gave rgu 0.121 (SGD 0.01)",
          "fg2u 0.226 (SGD 0.0033)", "has grown from about 2× to about 4×")
    sgd = _table(SGD)["(b)"]
    now = sgd["fg2u"] / sgd["rgu"]
    assert 3.5 <= now < 4.0 and round(now) == 4
    assert round(0.226 / 0.121) == 2


def test_config_b_keeps_adam_and_its_header_points_to_the_sgd_setting():
    """"The shipped config keeps Adam at 0.1 ...; its header points to the SGD setting":
    configs/tuning/fokker_planck_inverse.yaml tunes with Adam at 0.1 and its header gives
    rgu with `tune.outer_optimizer=sgd tune.outer_lr=0.01`, which validates, quoting the
    SGD table's rgu (0.17) against the main table's Adam rgu (0.48)."""
    from pinnlab import config as configuration

    _says("The shipped config keeps Adam at 0.1", "its header points to the SGD setting")
    path = ROOT / "configs" / "tuning" / "fokker_planck_inverse.yaml"
    header = " ".join(line.lstrip("# ") for line in path.read_text(encoding="utf-8").splitlines()
                      if line.startswith("#"))
    assert "tune.method=rgu 'tune.options={}' tune.outer_optimizer=sgd tune.outer_lr=0.01" in header
    shipped = configuration.load(path)
    assert (shipped.tune.outer_optimizer, shipped.tune.outer_lr, shipped.tune.outer_betas) == ("adam", 0.1, (0.9, 0.999))
    sgd = configuration.load(path, ["tune.method=rgu", "tune.options={}", "tune.outer_optimizer=sgd",
                                    "tune.outer_lr=0.01"])
    assert (sgd.tune.outer_optimizer, sgd.tune.outer_lr) == ("sgd", 0.01)
    assert "rel. error 0.17 against 0.48 with Adam at 0.1" in header
    assert round(_table(SGD)["(b)"]["rgu"], 2) == 0.17 and round(_table(MAIN)["(b)"]["rgu"], 2) == 0.48


def test_the_single_run_command_of_the_sgd_analysis_is_a_valid_tune_command(tmp_path):
    """`pinnlab tune configs/tuning/fokker_planck_inverse.yaml tune.method=M 'tune.options={}'
    tune.outer_steps=100 model.width=32 trainer.steps=200 -o M.h5`, plus `tune.outer_optimizer=sgd
    tune.outer_lr=0.01` for SGD; "fg2u keeps `{num_directions: 4}`" (the config's options):
    the CLI parses each variant and its config validates to 100 outer steps at the quick size."""
    from pinnlab import config as configuration
    from pinnlab.cli import parse_args

    command = re.search(r"`pinnlab tune (configs/tuning/fokker_planck_inverse\.yaml tune\.method=M [^`]*)`",
                        FLAT).group(1)
    _says("plus `tune.outer_optimizer=sgd tune.outer_lr=0.01` for SGD; fg2u keeps `{num_directions: 4}`")
    words = [w.strip("'") for w in command.split()]
    assert words[0] == "configs/tuning/fokker_planck_inverse.yaml" and words[-2:] == ["-o", "M.h5"]
    for method in ("rgu", "trgu", "fg2u"):
        given = [w.replace("=M", f"={method}") for w in words[1:-2]]
        if method == "fg2u":
            given.remove("tune.options={}")
        for extra in ([], ["tune.outer_optimizer=sgd", "tune.outer_lr=0.01"]):
            args = parse_args(["tune", str(ROOT / words[0]), *given, *extra, "-o", str(tmp_path / f"{method}.h5")])
            assert args.command == "tune" and args.overrides == given + extra
            config = configuration.load(args.config, args.overrides)
            assert (config.tune.method, config.tune.outer_steps, config.model.width, config.trainer.steps) == (
                method, 100, 32, 200)
            assert config.tune.options == ({"num_directions": 4} if method == "fg2u" else {})
            assert (config.tune.outer_optimizer, config.tune.outer_lr) == (("sgd", 0.01) if extra else ("adam", 0.1))
