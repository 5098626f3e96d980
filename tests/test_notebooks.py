"""Every notebook in notebooks/ is executed, so none of them can rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.chdir(tmp_path)
    notebook = nbformat.read(path, as_version=4)
    stored = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the stored outputs are this code's: each cell shows as many figures as a fresh run, and
    # the errors it prints are the fresh run's (to rounding: thread counts, machines)
    assert [_figures(cell) for cell in notebook.cells] == [_figures(cell) for cell in stored.cells], \
        "re-execute the notebook: its stored figures are not what its cells draw now"
    assert _errors(notebook) == pytest.approx(_errors(stored), rel=0.1), \
        "re-execute the notebook: its stored errors are not what its cells print now"
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs), \
        "the notebook should draw at least one figure"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    if path.name == "01_quickstart.ipynb":
        rel = float(text.split("final relative L2 = ")[1].split(",")[0])
        assert rel < 5e-2, text
    if path.name == "02_bias_variance.ipynb":  # what its closing text reads from the table
        rows = {tuple(line.split()[:2]): float(line.split()[2]) for line in text.splitlines()
                if line.split()[:1] in (["biased"], ["unbiased"], ["hybrid"])}
        assert rows[("biased", "4")] > rows[("unbiased", "4")], text
    if path.name == "03_tuning.ipynb":  # what its closing text reads from the printed errors
        errors = [(line.split()[0], float(line.rsplit("=", 1)[1])) for line in text.splitlines()
                  if "final relative L2 =" in line]
        tuned, untuned = dict(errors)["tuned.h5"], dict(errors)["untuned.h5"]
        best_scanned = min(e for name, e in errors if name == "scan.h5")
        assert tuned < untuned / 10 and tuned < 1.5 * best_scanned, text


def _figures(cell) -> int:
    return sum(1 for o in cell.get("outputs", []) if "image/png" in o.get("data", {}))


def _errors(notebook) -> list[float]:
    """Every relative L2 error a code cell printed ("rel_l2=X", "final relative L2 = X"), in order."""
    text = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")
    return [float(x) for x in re.findall(r"(?:rel_l2=|final relative L2 = )([0-9.]+e[+-]\d+)", text)]
