"""Backlog items of the notebooks, the benchmarks' messages and the README that earlier
reviews noticed and left: a notebook fixing torch's thread count, stored outputs naming
the machine that produced them, the tuning benchmark's --help estimate against the README's,
the step-breakdown command and its silence while it runs, and the README's figure for
fg2u's difference under torchrun."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_readme_claims_fourth_audit import ROOT

NOTEBOOKS = {path.name: json.loads(path.read_text(encoding="utf-8"))
             for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


# -- notebooks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_no_notebook_fixes_torchs_thread_count(name):
    """01_quickstart (and 02, 03) called ``torch.set_num_threads(2)``: on a user's 16-core
    machine the notebook ran on 2 of them, and ``OMP_NUM_THREADS`` (how the test harness or
    a shared machine sets the count) was overridden."""
    sources = ["".join(cell["source"]) for cell in _code_cells(NOTEBOOKS[name])]
    assert not [source for source in sources if "set_num_threads" in source]


# -- benchmarks --------------------------------------------------------------------------------
def test_bench_tunings_help_gives_the_readmes_time_for_a_quick_run(benchmarks, monkeypatch, capsys):
    """``bench_tuning.py --help`` said --quick takes "≈ 10 min" where the README, which
    records the last measured runs, says one quick repeat runs in about 9 minutes."""
    measured = re.search(r"`--quick` alone runs one repeat in about (\d+) minutes", README)
    assert measured, "the README's time of one --quick repeat"
    bench_tuning = benchmarks("bench_tuning")
    monkeypatch.setattr("sys.argv", ["bench_tuning.py", "--help"])
    with pytest.raises(SystemExit):
        bench_tuning.main()
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(≈ {measured.group(1)} min)" in help_text, help_text
