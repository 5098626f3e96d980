"""The benchmark scripts refuse bad arguments with one line and exit code 2, before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args, expected", [
    # fg2u_jvp is a --costs comparison only: elsewhere it failed after the warm-up with a traceback
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "fg2u_jvp"], "unknown fg2u_jvp"),
    ("bench_tuning.py", ["--quick", "--problems", "b", "--methods", "default", "--repeats", "0"],
     "--repeats 0: must be >= 1"),  # ran nothing and wrote an empty table
    ("bench_horizon_bias.py", ["--quick", "--warm-steps", "-5"], "--warm-steps >= 0"),  # was a traceback
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, script, args, expected):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip()
    assert run.returncode == 2, err
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_zero_warm_steps_mean_zero_not_the_default(tmp_path):
    """``--warm-steps 0`` measured after 300 steps (``0 or 300``)."""
    out = tmp_path / "hb.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_horizon_bias.py"), "--quick",
                          "--warm-steps", "0", "--sigmas", "0.1", "--horizons", "0", "--grad-horizons", "1",
                          "--draws", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "warm start: 0 steps" in run.stdout
    assert json.loads(out.read_text())["warm_steps"] == 0
