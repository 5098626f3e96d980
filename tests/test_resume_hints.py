"""What a run given --resume that cannot resume advises: leave out --resume where nothing
is there to overwrite (or --overwrite is given already), pass --overwrite instead where
the output or a checkpoint is there, and an output without a checkpoint is named a
finished run. ("pass --overwrite instead of --resume" was said in every case.)"""

from __future__ import annotations

from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}
"""


def _line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_solve_resume_hints(tmp_path, capsys):
    cfg, out = tmp_path / "c.yaml", tmp_path / "r.h5"
    cfg.write_text(TINY)
    base = ["solve", str(cfg), "-o", str(out), "--progress", "off"]
    for flags in (["--resume"], ["--resume", "--overwrite"]):  # nothing there at all
        assert main([*base, *flags]) == 2
        err = _line(capsys)
        assert "no checkpoint" in err and err.endswith("; to start over, leave out --resume"), err
    assert main(base) == 0 and out.is_file()
    capsys.readouterr()
    before = out.read_bytes()
    assert main([*base, "--resume"]) == 2  # a finished run: no checkpoint beside it
    assert _line(capsys) == (f"pinnlab: error: output {str(out)!r} holds a finished run: there is no checkpoint to "
                             "resume; pass --overwrite instead of --resume to run it again")
    assert main([*base, "--resume", "--overwrite"]) == 2  # (still no checkpoint; --overwrite is given)
    err = _line(capsys)
    assert "no checkpoint" in err and err.endswith("; to start over, leave out --resume"), err
    assert out.read_bytes() == before


def test_tune_resume_hints(tmp_path, capsys):
    cfg, out = tmp_path / "t.yaml", tmp_path / "t.h5"
    cfg.write_text(WEIGHT_FG2U)
    base = ["tune", str(cfg), "-o", str(out), "--progress", "off"]
    assert main([*base, "--resume"]) == 2
    assert _line(capsys) == (f"pinnlab: error: no checkpoint {str(out) + '.ckpt'!r} to resume from; to start over, "
                             "leave out --resume")
    out.write_bytes(b"an earlier result")
    assert main([*base, "--resume"]) == 2
    assert "holds a finished run" in _line(capsys)
    assert main([*base, "--resume", "--overwrite"]) == 2
    assert _line(capsys).endswith("to resume from; to start over, leave out --resume")
    (tmp_path / "t.h5.ckpt").write_bytes(b"damaged")
    assert main([*base, "--resume"]) == 2  # an earlier result and a checkpoint: not a finished run
    assert _line(capsys).endswith(f"output {str(out)!r} exists; pass --overwrite to replace it")
    assert main([*base, "--resume", "--overwrite"]) == 2  # the damaged checkpoint, --overwrite given already
    err = _line(capsys)
    assert "corrupted" in err and err.endswith("; to start over, leave out --resume"), err
    (tmp_path / "t.h5").unlink()
    assert main([*base, "--resume"]) == 2  # the damaged checkpoint alone: a fresh run must replace it
    err = _line(capsys)
    assert "corrupted" in err and err.endswith("; to start over, pass --overwrite instead of --resume"), err
