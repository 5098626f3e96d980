"""A new user's walk through re-running a colleague's result: the same config and seeds
give the same numbers (solve, tune, study), other seeds other ones, a run repeated from
the config its result file records (README, Result files: "the fully resolved YAML"), a
tuning's final solve repeated by ``pinnlab solve`` with the tuned value, a study cell
repeated by solving its recorded config, the settings that change no number; and the
problems met on the way (an untrained estimator study's recorded config is refused,
LRA's ``every`` echoed as a float, a one-worker study leaving torch's thread count
changed, ``pinnlab -V``) and what the files fail to record (the study's ``--workers``,
the digest of a studied network file, torch's thread count, on which float32 numbers
depend)."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from pinnlab import config as configuration
from pinnlab.cli import main

from .tuning.micro_configs import WEIGHT_FG2U

TINY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 4}
trainer: {steps: 4, eval_every: 2, test_points: 20, batch_size: 8}
"""

RANDOM_SEARCH = ["tune.method=random", "tune.trial_steps=2", "tune.tunables.weights.boundary.low=1e-3",
                 "tune.tunables.weights.boundary.high=1"]
"""WEIGHT_FG2U as a random search: its draws follow tune.seed."""

ONE_CELL_STUDY = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 4, depth: 2}
estimator: {kind: stein, sigma: 0.05, samples: 2}
trainer: {steps: 1, eval_every: 1, test_points: 10, batch_size: 4}
study:
  kind: training
  variants:
    biased: [loss.kind=biased]
  grid:
    trainer.seed: [0]
  workers: 2
"""

FRESH_ESTIMATOR = """\
equation: {name: poisson_two_body, dim: 3, seed: 1}
model: {width: 8, depth: 2}
trainer: {dtype: float64}
study:
  kind: estimator
  samples: [4]
  sigmas: [0.1]
  noise: [shared]
  quantities: [loss]
  replicates: 4
  points: 4
  reference_samples: 8
  reference_replicates: 4
  init: fresh
"""


def _run(args):
    return main([str(a) for a in args])


def _solve(tmp_path, name, *overrides, config=None):
    cfg = config or tmp_path / "tiny.yaml"
    if config is None:
        cfg.write_text(TINY)
    out = tmp_path / f"{name}.h5"
    assert _run(["solve", cfg, *overrides, "-o", out, "--progress", "off"]) == 0
    return out


def _params(path):
    with h5py.File(path, "r") as fh:
        return {key: fh[f"params/{key}"][...] for key in fh["params"]}


def _same_params(a, b):
    pa, pb = _params(a), _params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


# -- a result repeated from what its file records -------------------------------------------
def test_a_solve_repeated_from_its_recorded_config_alone_is_bit_identical(tmp_path):
    """README: a result file records "config (the fully resolved YAML)". A colleague who
    has only the file (its config written out, no command line: here overrides of the
    seeds, the network and the loss) repeats the run bit for bit: parameters, the loss of
    every step, the history and the final errors."""
    first = _solve(tmp_path, "first", "trainer.seed=3", "equation.seed=2", "model.width=6",
                   "loss.kind=unbiased", "trainer.schedule=constant")
    recorded = tmp_path / "recorded.yaml"
    with h5py.File(first, "r") as fh:
        recorded.write_text(fh.attrs["config"])
    again = _solve(tmp_path, "again", config=recorded)
    assert _same_params(first, again)
    with h5py.File(first, "r") as a, h5py.File(again, "r") as b:
        assert a.attrs["config"] == b.attrs["config"]
        assert (a.attrs["train_seed"], a.attrs["problem_seed"]) == (3, 2)
        assert np.array_equal(a["trace/loss"][...], b["trace/loss"][...])
        assert np.array_equal(a["history/rel_l2"][...], b["history/rel_l2"][...])
        for key in ("rel_l2", "rel_l1", "max_err"):
            assert a["final"].attrs[key] == b["final"].attrs[key]


def test_another_trainer_seed_gives_other_numbers_on_the_same_test_set(tmp_path):
    """The training seed draws the network, points and noise: another one gives other
    parameters and losses; the test set is the problem seed's (README: /eval is
    regenerated from problem_seed and test_points), the same for both, so their errors
    compare."""
    a, b = _solve(tmp_path, "seed0"), _solve(tmp_path, "seed1", "trainer.seed=1")
    assert not _same_params(a, b)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert not np.array_equal(fa["trace/loss"][...], fb["trace/loss"][...])
        assert np.array_equal(fa["eval/x"][...], fb["eval/x"][...])
        assert np.array_equal(fa["eval/u_true"][...], fb["eval/u_true"][...])
        assert (fa.attrs["train_seed"], fb.attrs["train_seed"]) == (0, 1)


def test_evaluation_and_logging_settings_change_no_trained_number(tmp_path):
    """trainer.eval_every, trainer.test_points, trainer.log_every and trainer.checkpoint_every
    change what is measured and saved, not the training: every random draw is keyed by
    (seed, step), so an evaluation draws nothing from the training's streams. The
    parameters and the loss of every step are bit-identical."""
    base = _solve(tmp_path, "base")
    other = _solve(tmp_path, "other", "trainer.eval_every=1", "trainer.test_points=40", "trainer.log_every=1",
                   "trainer.checkpoint_every=1")
    assert _same_params(base, other)
    with h5py.File(base, "r") as a, h5py.File(other, "r") as b:
        assert np.array_equal(a["trace/loss"][...], b["trace/loss"][...])
        assert len(b["history/step"]) == 4 and len(a["history/step"]) == 2


def test_a_tuning_repeated_from_its_recorded_config_draws_the_same_trials(tmp_path):
    """A random search is seeded by tune.seed (README: "the draws of random and
    optuna"): its result file's config, written out and tuned again, draws the same
    trials and ends with the same network; tune.seed=1 draws other trials."""
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(WEIGHT_FG2U)
    first, again, other = (tmp_path / f"{n}.h5" for n in ("first", "again", "other"))
    assert _run(["tune", cfg, *RANDOM_SEARCH, "-o", first, "--progress", "off"]) == 0
    recorded = tmp_path / "recorded.yaml"
    with h5py.File(first, "r") as fh:
        recorded.write_text(fh.attrs["config"])
        assert yaml.safe_load(fh.attrs["config"])["tune"]["seed"] == 0
    assert _run(["tune", recorded, "-o", again, "--progress", "off"]) == 0
    assert _run(["tune", cfg, *RANDOM_SEARCH, "tune.seed=1", "-o", other, "--progress", "off"]) == 0
    with h5py.File(first, "r") as a, h5py.File(again, "r") as b, h5py.File(other, "r") as c:
        phi = "tune/phi/weights.boundary"
        assert np.array_equal(a[phi][...], b[phi][...])
        assert np.array_equal(a["tune/value"][...], b["tune/value"][...])
        assert not np.array_equal(a[phi][...], c[phi][...])
    assert _same_params(first, again)


def test_the_final_solve_of_a_tuning_is_pinnlab_solve_with_the_tuned_value(tmp_path):
    """README: after tuning, "a final solve from scratch with the tuned values". Solving
    the tuning config with the value /tune/tuned records (as an override, YAML reading
    Python's repr back exactly) repeats that final solve bit for bit: a colleague can
    re-train the tuned model without tuning again."""
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(WEIGHT_FG2U)
    tuned = tmp_path / "tuned.h5"
    assert _run(["tune", cfg, "-o", tuned, "--progress", "off"]) == 0
    with h5py.File(tuned, "r") as fh:
        weight = float(fh["tune/tuned/weights.boundary"][...])
    assert weight != 1.0e-2  # (the tuning moved it)
    solved = _solve(tmp_path, "solved", f"loss.weights.boundary={weight!r}", config=cfg)
    assert _same_params(tuned, solved)
    with h5py.File(tuned, "r") as a, h5py.File(solved, "r") as b:
        assert a["final"].attrs["rel_l2"] == b["final"].attrs["rel_l2"]


def test_a_training_study_cell_is_repeated_by_solving_its_recorded_config(tmp_path):
    """A training study's cell is a solve file (README: "each cell's own solve file, layout
    above"); its recorded config, given to ``pinnlab solve``, repeats the cell bit for bit,
    and the same study run again into another output (fresh cells) gives the same
    numbers: a colleague can check one cell of a table without the whole study."""
    cfg = tmp_path / "study.yaml"
    cfg.write_text(ONE_CELL_STUDY.replace("workers: 2", "workers: 1"))
    first, again = tmp_path / "first.h5", tmp_path / "again.h5"
    assert _run(["study", cfg, "-o", first]) == 0
    assert _run(["study", cfg, "-o", again]) == 0
    with h5py.File(first, "r") as a, h5py.File(again, "r") as b:
        assert np.array_equal(a["cells/rel_l2"][...], b["cells/rel_l2"][...])
        cell = first.parent / f"{first.name}.cells" / f"{a['cells/key'].asstr()[0]}.h5"
    recorded = tmp_path / "cell.yaml"
    with h5py.File(cell, "r") as fh:
        recorded.write_text(fh.attrs["config"])
    assert _same_params(cell, _solve(tmp_path, "cell_again", config=recorded))


@pytest.mark.parametrize("init", ["fresh", "file"])
def test_an_untrained_estimator_study_is_repeated_from_its_recorded_config(tmp_path, init):
    """README: the resolved config a result file records leaves out settings without effect.
    An estimator study with study.init fresh (or a network file) refuses trainer.steps and
    the rest it does not read ("has no effect ... remove it"), yet its file records
    trainer.steps: 1000, lr, schedule, estimator.sigma, samples, ... with their defaults:
    ``pinnlab study`` of that recorded config was refused with exit code 2."""
    cfg = tmp_path / "study.yaml"
    text = FRESH_ESTIMATOR
    if init == "file":
        network = _solve(tmp_path, "net", "model.width=8", "model.depth=2")
        text = text.replace("init: fresh", f"init: {network}")
    cfg.write_text(text)
    first, again = tmp_path / "first.h5", tmp_path / "again.h5"
    assert _run(["study", cfg, "-o", first]) == 0
    recorded = tmp_path / "recorded.yaml"
    with h5py.File(first, "r") as fh:
        recorded.write_text(fh.attrs["config"])
    assert _run(["study", recorded, "-o", again]) == 0
    with h5py.File(first, "r") as a, h5py.File(again, "r") as b:
        assert np.array_equal(a["records/variance"][...], b["records/variance"][...])


LRA = ["equation.constraint=soft", "loss.weighting=lra"]
"""TINY with a boundary term whose weight LRA adapts."""


def test_lras_every_is_recorded_as_the_integer_given(tmp_path):
    """README: LRA's options are ``alpha`` 0.1 and ``every`` 10, a count of steps. Given as
    the integer 5, the resolved config a result file records said ``every: 5.0`` (while
    every other count, trainer.steps=5.0 say, is refused as a float: "write 5")."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    config = configuration.load(cfg, [*LRA, "loss.weighting_options.every=5"])
    every = yaml.safe_load(config.to_yaml())["loss"]["weighting_options"]["every"]
    assert every == 5 and isinstance(every, int)


def test_a_refused_lra_every_is_quoted_as_given(tmp_path, capsys):
    """``loss.weighting_options.every=0`` is refused in one line with exit code 2 (right);
    the line said ``every = 0.0: must be a whole number >= 1``: the user wrote a whole
    number, 0, and the message shows another value than the one typed."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    assert _run(["solve", cfg, *LRA, "loss.weighting_options.every=0", "-o", tmp_path / "x.h5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "every = 0:" in err, err


def test_a_training_study_run_from_python_leaves_the_thread_count_as_it_was(tmp_path, monkeypatch):
    """README, Notes, Threads: "pinnlab leaves these settings to you"; ``main`` is public
    ("notebooks and scripts call it"). With one worker the cells run in the caller's
    process, each after ``torch.set_num_threads(cores ÷ workers)``, which stayed set: a
    notebook that set one thread, ran a study and then a solve, solved on four threads
    (here: 4 cores, no OMP_NUM_THREADS), and float32 numbers depend on the thread count."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    torch.set_num_threads(1)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(ONE_CELL_STUDY)
    assert _run(["study", cfg, "-o", tmp_path / "study.h5", "--workers", "1"]) == 0
    assert torch.get_num_threads() == 1


def test_version_names_the_installed_pinnlab_as_result_files_record_it(tmp_path, capsys):
    """``pinnlab --version`` prints the version that result files record as
    pinnlab_version: what a colleague compares first."""
    out = _solve(tmp_path, "run", "trainer.steps=1", "trainer.eval_every=1")
    capsys.readouterr()
    with h5py.File(out, "r") as fh:
        recorded = fh.attrs["pinnlab_version"]
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"pinnlab {recorded}\n"


def test_an_unknown_option_alone_is_named_in_the_refusal(capsys):
    """``pinnlab -V`` is refused with exit code 2 (right), but the one line said a command
    is required, which a user who typed an option to ask for the version reads as if
    -V had been accepted; ``pinnlab --foo list`` names the option ("unrecognized
    arguments: --foo")."""
    assert main(["-V"]) == 2
    err = capsys.readouterr().err
    assert "-V" in err, err


# -- what the files do not record ------------------------------------------------------------
def test_an_estimator_study_of_a_network_file_records_that_files_digest(tmp_path):
    """Every number of an estimator study with ``study.init: net.h5`` is a property of the
    network in that file. A solve or tune file records the SHA-256 of each file it reads
    (README, Result files: input_files), a training study's cells too; the study file named
    the network only by its path, so a colleague re-running it cannot tell whether the
    file is still the one studied (a later solve -o net.h5 --overwrite replaces it)."""
    network = _solve(tmp_path, "net")
    cfg = tmp_path / "study.yaml"
    cfg.write_text(FRESH_ESTIMATOR.replace("init: fresh", f"init: {network}"))
    out = tmp_path / "study.h5"
    assert _run(["study", cfg, "-o", out]) == 0
    digest = hashlib.sha256(network.read_bytes()).hexdigest()
    with h5py.File(out, "r") as fh:
        recorded = json.loads(fh.attrs.get("input_files", "{}"))
    assert digest in recorded.values()


def test_a_training_studys_recorded_config_says_the_workers_it_ran_with(tmp_path):
    """README: ``--workers N`` "replaces" study.workers, and the result's config is the
    fully resolved one; each cell runs with cores ÷ workers threads, on which its float32
    numbers depend. Run with --workers 1, the recorded config said workers: 2 (the
    config file's), so a rerun from it runs otherwise."""
    cfg = tmp_path / "study.yaml"
    cfg.write_text(ONE_CELL_STUDY)
    out = tmp_path / "study.h5"
    assert _run(["study", cfg, "-o", out, "--workers", "1"]) == 0
    with h5py.File(out, "r") as fh:
        assert yaml.safe_load(fh.attrs["config"])["study"]["workers"] == 1


def test_a_result_file_records_the_torch_thread_count_it_ran_with(tmp_path):
    """Re-running a colleague's solve with another OMP_NUM_THREADS (README, Threads: set it to
    the free cores) changes float32 reductions and so every number after the first step;
    the file records device, dtype and versions but not the thread count, so nothing says
    why the rerun differs or how to repeat it."""
    out = _solve(tmp_path, "run", "trainer.steps=1", "trainer.eval_every=1")
    with h5py.File(out, "r") as fh:
        recorded = {key: fh.attrs[key] for key in fh.attrs if "thread" in key.lower()}
    assert list(recorded.values()) == [torch.get_num_threads()]
