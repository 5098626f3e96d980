"""Exit codes of ``pinnlab`` beyond bad input: a solve that ends nonfinite writes its
result and exits 1; under torchrun only ``tune`` (and ``list``) may run."""

from __future__ import annotations

import h5py
import pytest

from pinnlab.cli import main

DIVERGING = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: autograd}
trainer: {steps: 5, eval_every: 5, test_points: 20, batch_size: 8, lr: 1.0e+30, optimizer: sgd, schedule: constant}
"""


def test_a_solve_that_ends_nonfinite_exits_1_with_its_message(tmp_path, capsys):
    """The result is written (status nonfinite) and the message is on stderr; exit 0 told
    a script the run was fine."""
    cfg = tmp_path / "diverge.yaml"
    cfg.write_text(DIVERGING)
    out = tmp_path / "run.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 1
    with h5py.File(out) as fh:
        assert fh.attrs["status"] == "nonfinite"
    err = capsys.readouterr().err
    # steps counted from 1, as the progress lines and steps_done (it said "at step 1 ... after step 0")
    assert "training loss became inf at step 2; stopped and kept the state after step 1" in err, err


@pytest.fixture
def torchrun(monkeypatch):
    """The environment torchrun gives each of 2 processes (rank 0 here)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)


def test_list_runs_under_torchrun_and_plot_is_refused_naming_the_rank(torchrun, tmp_path, capsys):
    assert main(["list"]) == 0
    assert "equations" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pinnlab: error (rank 0 of 2): pinnlab plot runs as one process, not under torchrun (2 "
                          "processes"), err
    assert err.count("\n") == 1
