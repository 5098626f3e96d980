"""``key=value`` overrides anywhere after CONFIG, for every subcommand that takes them."""

from __future__ import annotations

import h5py
import pytest
import yaml

from pinnlab import config as configuration
from pinnlab.cli import main, parse_args

TINY = """\
equation: {name: poisson_two_body, dim: 4, seed: 1}
model: {width: 16, depth: 3}
estimator: {kind: stein, sigma: 0.05, samples: 8}
trainer: {steps: 40, eval_every: 20, test_points: 200, batch_size: 16}
"""

OPTIONS = {"solve": (["--overwrite"], ["--progress", "off"]), "tune": (["--resume"], ["--progress", "off"]),
           "study": (["--json", "s.json"], ["--overwrite"])}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_override_placement_does_not_matter(command):
    a, b = "trainer.steps=20", "model.width=8"
    first, second = OPTIONS[command]
    before = parse_args([command, "c.yaml", a, b, "-o", "o.h5", *first, *second])
    after = parse_args([command, "c.yaml", "-o", "o.h5", *first, *second, a, b])
    between = parse_args([command, "c.yaml", "-o", "o.h5", a, *first, b, *second])
    options_first = parse_args([command, "-o", "o.h5", *first, *second, "c.yaml", a, b])
    assert before.overrides == [a, b]
    assert before == after == between == options_first


def test_double_dash_ends_the_options():
    args = parse_args(["solve", "c.yaml", "-o", "o.h5", "a.b=1", "--", "c.d=2", "--e=3"])
    assert args.overrides == ["a.b=1", "c.d=2", "--e=3"]  # after --, even a dash token is an override
    assert parse_args(["solve", "-o", "o.h5", "--", "c.yaml", "a.b=1"]).overrides == ["a.b=1"]


def test_a_config_path_with_an_equals_sign_is_still_a_path(tmp_path):
    cfg = tmp_path / "run=1.yaml"
    cfg.write_text(TINY)
    assert parse_args(["solve", str(cfg), "-o", "o.h5"]).config == str(cfg)


def test_later_override_of_a_key_still_wins(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    args = parse_args(["solve", str(cfg), "trainer.steps=5", "-o", "o.h5", "trainer.steps=7", "--overwrite"])
    assert args.overrides == ["trainer.steps=5", "trainer.steps=7"]
    assert configuration.load(args.config, args.overrides).trainer.steps == 7


def test_solve_applies_overrides_after_the_options(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "run.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off", "trainer.steps=20"]) == 0
    with h5py.File(out, "r") as fh:
        assert fh["history/step"].shape == (1,)  # 20 steps, evaluated every 20 (the file says 40)
        assert yaml.safe_load(fh.attrs["config"])["trainer"]["steps"] == 20


@pytest.mark.parametrize("argv, expected", [
    (["solve", "CFG", "-o", "OUT", "trainer.steps=0"], "config error: trainer.steps = 0"),  # the override is read
    (["solve", "CFG", "-o", "OUT", "trainer.steps=5", "--bogus"], "unrecognized arguments: --bogus"),
    (["solve", "CFG", "trainer.steps=5", "-o", "OUT", "--bogus=1", "model.width=8"],
     "unrecognized arguments: --bogus=1"),
    (["solve", "CFG", "-o", "OUT", "stray"], "override 'stray' must look like key.sub=value"),
    (["tune", "CFG", "-o", "OUT", "--progress", "off", "--bogus"], "unrecognized arguments: --bogus"),
    (["study", "CFG", "-o", "OUT", "--frob", "x=1"], "unrecognized arguments: --frob"),
    (["plot", "OUT", "a=1"], "unrecognized arguments: a=1"),  # plot takes no overrides
    (["solve", "trainer.steps=5", "CFG", "-o", "OUT"], "CONFIG must come first: 'trainer.steps=5'"),
    (["tune", "a=1", "CFG", "-o", "OUT"], "CONFIG must come first: 'a=1'"),
    (["solve", "CFG", "-o", "OUT", "--", "trainer.steps=0"], "config error: trainer.steps = 0"),  # read after --
    (["list", "--bogus"], "unrecognized arguments: --bogus"),
    # a section without a value: the config's settings would all go back to the defaults
    (["solve", "CFG", "-o", "OUT", "trainer="], "config error: override 'trainer=': trainer is a section and an "
                                                "empty value would reset all its settings; set its keys "
                                                "(trainer.KEY=VALUE)"),
    (["tune", "CFG", "-o", "OUT", "model=null"], "override 'model=null': model is a section"),
])
def test_leftovers_that_are_not_overrides_are_one_line(tmp_path, capsys, argv, expected):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "o.h5"
    code = main([{"CFG": str(cfg), "OUT": str(out)}.get(a, a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and expected in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_mapping_value_replaces_the_mapping_and_overrides_apply_in_order(tmp_path):
    """The documented rule (README, "Configs"): a value in braces replaces the whole mapping
    at its key (the config's own entries and earlier overrides of it go: the model's width
    and depth fall back to their defaults), a dotted key changes one entry, and overrides
    apply in order."""
    path = tmp_path / "c.yaml"
    path.write_text(TINY)
    default = configuration.ModelSection()
    replaced = configuration.load(path, ["model.width=8", "model={activation: sin}"]).model
    assert (replaced.width, replaced.depth, replaced.activation) == (default.width, default.depth, "sin")
    assert (default.width, default.depth) != (16, 3)  # (so the replacement shows)
    then_one = configuration.load(path, ["model={activation: sin}", "model.width=8"]).model
    assert (then_one.width, then_one.depth, then_one.activation) == (8, default.depth, "sin")
    dotted = configuration.load(path, ["model.activation=sin"]).model
    assert (dotted.width, dotted.depth, dotted.activation) == (16, 3, "sin")
