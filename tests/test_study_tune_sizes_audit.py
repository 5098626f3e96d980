"""Mutation audit of the training study (pinnlab/studies/training_study.py), the
``pinnlab tune`` command (pinnlab/tuning/command.py) and the memory estimate
(pinnlab/sizes.py): exact values the existing tests left free (each test names the
change it catches)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from pinnlab import config as C
from pinnlab import sizes as S
from pinnlab.cli import main
from pinnlab.studies import training_study
from pinnlab.studies.training_study import (
    cell_metrics,
    expand_cells,
    markdown_table,
    summarise,
)
from tests.studies.test_studies import TINY_TRAINING
from tests.studies.test_study_cells_kept import ONE_SEED, _digests, _interrupted
from tests.test_config_sizes_exact import SMALL
from tests.tuning.micro_configs import JOINT_MU
from tests.tuning.test_tune_result_fields import SEARCH
from tests.tuning.test_tune_result_fields import _run as _tune

# ---------------------------------------------------------------- sizes.py


def test_hutchinsons_independent_probe_bits_are_counted_as_torchs_int64():
    """Independent Hutchinson probes are drawn as torch.randint bits (int64, 8 bytes each)
    besides the probes and the products in the run's dtype (caught: 1 byte per bit)."""
    config = C.validate({**SMALL, "estimator": {"kind": "hutchinson", "probes": 5, "noise": "independent"}})
    step = {t.what: t for t in S.memory_moments(config)["a training step"]}
    bits = step["the probes' random bits of a training step"]
    assert bits.shape == (5, 10, 3)
    assert bits.itemsize == torch.randint(0, 2, (1,)).element_size() == 8
    assert bits.nbytes == 5 * 10 * 3 * 8
    assert step["the probes of a training step"].nbytes == 5 * 10 * 3 * 4  # float32


def test_a_stein_runs_chunk_size_does_not_chunk_an_autograd_residual_objective():
    """An autograd residual objective of a Stein run uses a default Autograd() (its own
    chunks of 64 Hessian-vector products, 3 at d = 3), not the Stein estimator's
    chunk_size (caught: chunk_size 2 taken from the Stein section)."""
    from pinnlab.estimators import Autograd

    config = C.validate(C.apply_overrides(SMALL, ["tune.tunables.weights.residual={}", "tune.objective.kind=residual",
                                                  "tune.objective.estimator=autograd", "estimator.chunk_size=2"]))
    assert config.estimator.kind == "stein" and config.estimator.chunk_size == 2
    (products,) = [t for t in S.memory_moments(config)["the tuning objective"]
                   if t.what == "the Hessian-vector products of the tuning objective"]
    assert Autograd().chunk_size >= 3
    assert products.shape == (3, config.tune.objective.points, 3)


def test_a_cgroup_swap_allowance_above_the_machines_swap_counts_only_the_swap_there_is(tmp_path, monkeypatch):
    """cgroup v2: memory.max + memory.swap.max, the swap part at most the machine's swap
    (1 MiB here): a group allowed 1 GiB of swap on a machine with 1 MiB of it can use
    64 + 1 MiB (caught: the allowance taken as swap the machine has)."""
    mib = 2**20
    meminfo, root, proc = tmp_path / "meminfo", tmp_path / "cgroup", tmp_path / "proc_cgroup"
    meminfo.write_text("MemTotal:  1048576 kB\nSwapTotal:  1024 kB\n")  # 1 GiB + 1 MiB of swap
    (root / "job").mkdir(parents=True)
    (root / "job" / "memory.max").write_text(f"{64 * mib}\n")
    (root / "job" / "memory.swap.max").write_text(f"{2**30}\n")
    proc.write_text("0::/job\n")
    monkeypatch.setattr(S, "_MEMINFO", str(meminfo))
    monkeypatch.setattr(S, "_CGROUP", str(root))
    monkeypatch.setattr(S, "_PROC_CGROUP", str(proc))
    assert S._cgroup_limit(mib) == 65 * mib
    assert S.machine_memory("cpu") == ("RAM (its cgroup's limit)", 65 * mib)


def test_on_a_gpu_the_cpu_network_build_makes_does_not_count_against_its_memory(monkeypatch):
    """build makes the network in float32 on the CPU; on CUDA only θ, its optimizer state
    and the step's tensors count against the device's memory: a device holding exactly
    those fits, the host's layers (width·D + width² floats) aside (caught: the first
    layer counted on the device)."""
    config = C.validate(C.apply_overrides(SMALL, ["model.width=64", "trainer.device=cuda"]))
    moments = S.memory_moments(config)
    host = {t.what: t.host for t in moments["a training step"]}
    assert host["the network's first layer"] and host["the network's hidden layers"]
    assert not host["the first layer's θ and optimizer state"] and not host["the hidden layers' θ and optimizer state"]
    device = max(sum(t.nbytes for t in ts if not t.host) for ts in moments.values())
    monkeypatch.setattr(S, "machine_memory", lambda device_name: ("cuda:0 memory", device))
    S.check_sizes(config)
    monkeypatch.setattr(S, "machine_memory", lambda device_name: ("cuda:0 memory", device - 1))
    with pytest.raises(C.ConfigError, match="of cuda:0 memory"):
        S.check_sizes(config)


def test_what_is_drawn_or_kept_on_the_host_is_marked_so():
    """float64 draws (the test set, a tuning objective's points) and DeepXDE's numpy
    arrays are on the host; the float32 copies a run computes with, and DeepXDE's input
    gradient, on the run's device (caught: each flag flipped)."""
    tuning = C.validate(C.apply_overrides(SMALL, ["tune.tunables={sigma: {}}", "tune.objective.kind=reference",
                                                  "tune.objective.points=7"]))
    drawing = {t.what: t for t in S.memory_moments(tuning)["drawing the tuning objective's points"]}
    assert drawing["the tuning objective's points, drawn in float64"].host
    assert drawing["the tuning objective's points, drawn in float64"].itemsize == 8
    assert not drawing["the tuning objective's points"].host
    deepxde = C.validate(C.apply_overrides(SMALL, ["trainer.backend=deepxde"]))
    step = {t.what: t for t in S.memory_moments(deepxde)["a DeepXDE training step"]}
    assert step["a DeepXDE step's points"].host and step["DeepXDE's test points"].host
    assert not step["the input gradient of a DeepXDE step's Laplacian"].host


def test_a_need_beyond_1024_exbibytes_is_still_refused_in_exbibytes(monkeypatch):
    """Tensors within torch's sizes can still add up past 1024 EiB (2**62 float64 values,
    512 copies: 2**74 bytes); the refusal says so in EiB, the last unit (caught: no last
    unit, an AssertionError instead of the one-line refusal)."""
    config = C.validate(SMALL)
    big = S.SizedTensor("x", (2**62,), 8, ("model.width",), copies=512)
    monkeypatch.setattr(S, "memory_moments", lambda config, observations=None: {"a step": [big]})
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", 2**30))
    assert S._format_bytes(2**74) == "1.64e+04 EiB" and S._format_bytes(2**60) == "1 EiB"
    with pytest.raises(C.ConfigError, match=r"^this run needs at least 1\.64e\+04 EiB of memory at once, more than "
                                            r"this machine's 1 GiB of RAM \(a step; the largest part: x, "
                                            r"4611686018427387904 values × 512, 1\.64e\+04 EiB\)"):
        S.check_sizes(config)


# ---------------------------------------------------------------- training_study.py


def test_a_grid_value_is_passed_as_its_yaml_text_so_null_stays_null():
    """Grid values other than strings go to the cell as JSON (YAML) text: null, true and a
    list come back as the grid's values, a string as itself (caught: Python's str(), which
    made null the string 'None' and true 'True' in /cells/overrides)."""
    grid = {"estimator.chunk_size": [None, 16], "data.train": [True], "loss.blend": [[0.25, 0.75]]}
    cells = expand_cells({"v": ["loss.kind=hybrid"]}, grid)
    assert [c.overrides for c in cells] == [
        ("loss.kind=hybrid", "estimator.chunk_size=null", "data.train=true", "loss.blend=[0.25, 0.75]"),
        ("loss.kind=hybrid", "estimator.chunk_size=16", "data.train=true", "loss.blend=[0.25, 0.75]")]
    applied = C.apply_overrides({}, list(cells[0].overrides))
    assert applied["estimator"] == {"chunk_size": None} and applied["data"] == {"train": True}
    assert applied["loss"]["blend"] == [0.25, 0.75]
    text = expand_cells({"v": []}, {"model.activation": ["tanh"]})[0].overrides
    assert text == ("model.activation=tanh",)


def test_a_cell_file_without_a_peak_memory_reads_as_unknown_not_zero(tmp_path):
    """/final without peak_mem_mb (a run that measured none): NaN, which the summary's mean
    does not take for a measured 0 MB (caught: a default of 0.0)."""
    path = tmp_path / "cell.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["status"] = "ok"
        fh.create_group("final").attrs.update({"rel_l2": 0.5, "best_rel_l2": 0.25, "steps_per_second": 2.0})
    metrics = cell_metrics(path)
    assert math.isnan(metrics["peak_mem_mb"])
    assert (metrics["rel_l2"], metrics["best_rel_l2"], metrics["seconds_per_step"]) == (0.5, 0.25, 0.5)


def test_a_cell_file_that_recorded_the_study_section_is_still_reused(tmp_path, capsys):
    """Cells once recorded the whole config, study: included; such a file of this run
    config is skipped, not refused as another configuration (caught: study: compared)."""
    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    (cell,) = Path(str(out) + ".cells").glob("*.h5")
    with h5py.File(cell, "a") as fh:
        stored = yaml.safe_load(fh.attrs["config"])
        assert "study" not in stored
        fh.attrs["config"] = yaml.safe_dump({**stored, "study": yaml.safe_load(ONE_SEED)["study"]},
                                             sort_keys=False)
    before = _digests(out)
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    assert "skip finished cell biased" in capsys.readouterr().err
    assert _digests(out) == before


def _cell_and_checkpoint_of_lr_0_005(tmp_path, capsys):
    """ONE_SEED's finished cell (trainer.lr 0.001) and, beside it, the checkpoint a run of
    trainer.lr 0.005 left (an interrupted ``--overwrite`` rerun)."""
    from pinnlab.io import save_checkpoint
    from pinnlab.solvers import train
    from pinnlab.studies.training_study import run_config

    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    (cell,) = Path(str(out) + ".cells").glob("*.h5")
    checkpoint = Path(str(cell) + ".ckpt")
    this = run_config(C.load(cfg, ["trainer.lr=0.005", "loss.kind=biased", "equation.dim=3", "trainer.seed=0"]))
    problem, kwargs = C.build(this)
    states = []
    train(problem, **{**kwargs, "checkpoint_every": 2}, progress="off", on_checkpoint=states.append)
    save_checkpoint(checkpoint, states[0], kwargs["optimizer"], this.identity())
    capsys.readouterr()
    return cfg, out, cell, checkpoint


def test_a_cell_file_of_another_config_is_refused_even_beside_a_checkpoint_of_this_one(tmp_path, capsys):
    """Rerun with lr 0.005 without --overwrite: the cell file (another config) is refused
    in one line, both files untouched (caught: the checkpoint that fits was resumed and
    the cell file replaced without --overwrite)."""
    cfg, out, cell, checkpoint = _cell_and_checkpoint_of_lr_0_005(tmp_path, capsys)
    before, saved = _digests(out), checkpoint.read_bytes()
    assert main(["study", str(cfg), "trainer.lr=0.005", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{str(cell)!r} (cell biased" in err, err
    assert "was computed for a different configuration (trainer.lr: 0.001 in the cell, 0.005 in this run)" in err
    assert _digests(out) == before and checkpoint.read_bytes() == saved and not out.exists()


def test_a_cell_checkpoint_of_another_config_is_named_once_in_its_refusal(tmp_path, capsys):
    """Without the cell file, the lr 0.005 checkpoint is refused for the lr 0.001 run in
    one line that names it once, then the cell (caught: the checkpoint error's own
    "checkpoint '<path>'" prefix kept, the path twice)."""
    cfg, out, cell, checkpoint = _cell_and_checkpoint_of_lr_0_005(tmp_path, capsys)
    cell.unlink()
    saved = checkpoint.read_bytes()
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pinnlab: error: {str(checkpoint)!r} (cell biased {{'equation.dim': 3, 'trainer.seed': 0}}) was "
                   "written for a different configuration (trainer.lr: 0.005 in the checkpoint, 0.001 in this run); "
                   "pass --overwrite to start over"), err
    assert checkpoint.read_bytes() == saved and not cell.exists() and not out.exists()

def test_the_progress_line_of_a_finished_cell_names_a_status_other_than_ok(tmp_path, monkeypatch):
    """`finished cell ...: rel_l2=...` says ` (status nonfinite)` for a cell that did not
    end ok, nothing for one that did (caught: the status never named)."""
    def run_cell(config_path, overrides, output, threads):
        seed = int(overrides[-1].split("=")[1])
        return {"rel_l2": 0.5 + seed, "best_rel_l2": 0.25, "seconds_per_step": 0.1, "peak_mem_mb": 1.0,
                "status": "nonfinite" if seed else "ok"}

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    lines = []
    cells = expand_cells({"biased": ["loss.kind=biased"]}, {"trainer.seed": [0, 1]})
    records = training_study.run_training_study(cfg, cells, tmp_path / "cells", progress=lines.append)
    assert lines == ["finished cell biased {'trainer.seed': 0}: rel_l2=5.000e-01",
                     "finished cell biased {'trainer.seed': 1}: rel_l2=1.500e+00 (status nonfinite)"]
    assert [r["status"] for r in records] == ["ok", "nonfinite"]


def test_records_without_a_status_are_averaged_as_ok():
    """summarise takes a record without "status" (records of another source) as ok: it is
    averaged, not left out (caught: such records counted as not ok)."""
    records = [{"variant": "a", "rel_l2": r, "best_rel_l2": r, "seconds_per_step": 1.0, "peak_mem_mb": 2.0}
               for r in (0.1, 0.3)]
    (row,) = summarise(records, None)
    assert (row["runs"], row["left_out"]) == (2, 0)
    assert row["rel_l2_mean"] == 0.2 and row["column"] is None


def test_a_single_or_no_ok_run_is_summarised_without_numpys_warnings():
    """One ok run: std NaN; none: mean NaN too, both set without asking numpy (whose
    "Degrees of freedom <= 0" RuntimeWarning went to the study's stderr; caught: std
    computed for one run)."""
    one = {"variant": "a", "rel_l2": 0.1, "best_rel_l2": 0.1, "seconds_per_step": 1.0, "peak_mem_mb": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (single,) = summarise([{**one, "status": "ok"}], None)
        (none,) = summarise([{**one, "status": "nonfinite"}], None)
    assert single["rel_l2_mean"] == 0.1 and math.isnan(single["rel_l2_std"])
    assert (none["runs"], none["left_out"]) == (0, 1)
    assert math.isnan(none["rel_l2_mean"]) and math.isnan(none["rel_l2_std"])


def test_three_seeds_are_summarised_by_their_mean_and_sample_std_per_metric():
    """Closed forms over three ok cells (with two the median is the mean): rel_l2 0.1,
    0.2, 0.6 → mean 0.3, sample std sqrt(0.07); each metric its own column (caught: the
    median)."""
    values = [(0.1, 0.05, 1.0, 10.0), (0.2, 0.1, 2.0, 20.0), (0.6, 0.3, 6.0, 90.0)]
    records = [{"variant": "a", "equation.dim": 3, "rel_l2": r, "best_rel_l2": b, "seconds_per_step": s,
                "peak_mem_mb": m, "status": "ok"} for r, b, s, m in values]
    records.append({**records[0], "rel_l2": 9.0, "status": "nonfinite"})
    (row,) = summarise(records, "equation.dim")
    assert (row["variant"], row["column"], row["runs"], row["left_out"]) == ("a", 3, 3, 1)
    for i, metric in enumerate(("rel_l2", "best_rel_l2", "seconds_per_step", "peak_mem_mb")):
        column = [v[i] for v in values]
        mean = sum(column) / 3
        std = math.sqrt(sum((c - mean) ** 2 for c in column) / 2)
        assert row[f"{metric}_mean"] == pytest.approx(mean, rel=1e-14), metric
        assert row[f"{metric}_std"] == pytest.approx(std, rel=1e-14), metric
    assert row["rel_l2_mean"] == pytest.approx(0.3) and row["rel_l2_std"] == pytest.approx(math.sqrt(0.07))


def _damage_input_files_list(fh):
    fh.attrs["input_files"] = '["data.source"]'


def _damage_input_files_json(fh):
    fh.attrs["input_files"] = "{"


def _damage_final_rel_l2(fh):
    fh["final"].attrs["rel_l2"] = "not a number"


@pytest.mark.parametrize("damage", [_damage_input_files_list, _damage_input_files_json, _damage_final_rel_l2])
def test_a_cell_file_with_unreadable_fields_is_computed_again(tmp_path, capsys, damage):
    """A cell file whose input_files is no mapping or no JSON, or whose /final number is
    not a number, cannot be read: the rerun computes the cell again (exit 0, no "skip"),
    neither refusing it as another config nor ending in a traceback (caught: each of
    those checks dropped)."""
    cfg, out = _interrupted(tmp_path, ONE_SEED, capsys)
    (cell,) = Path(str(out) + ".cells").glob("*.h5")
    with h5py.File(cell, "a") as fh:
        damage(fh)
    damaged = _digests(out)
    assert main(["study", str(cfg), "-o", str(out)]) == 0
    assert "skip finished cell" not in capsys.readouterr().err
    assert _digests(out) != damaged and math.isfinite(cell_metrics(cell)["rel_l2"])


def test_the_markdown_table_marks_a_missing_group_and_names_a_single_column_all():
    """A (variant, column) without a summary row is "—"; without study.columns the one
    column is "all" (caught: an empty cell, the value's text "None")."""
    summary = summarise([{"variant": v, "equation.dim": d, "rel_l2": 0.5, "best_rel_l2": 0.5, "seconds_per_step": 1.0,
                          "peak_mem_mb": 1.0, "status": "ok"} for v, d in (("a", 3), ("a", 4), ("b", 4))],
                        "equation.dim")
    assert markdown_table(summary, "equation.dim").splitlines()[3] == "| b | — | 5.000e-01 (1 run) |"
    whole = summarise([{**r, "equation.dim": None} for r in [{"variant": "a", "rel_l2": 0.5, "best_rel_l2": 0.5,
                                                             "seconds_per_step": 1.0, "peak_mem_mb": 1.0}]], None)
    assert markdown_table(whole, None).splitlines()[:2] == ["| method | all |", "|---|---|"]


def test_a_repeated_run_is_refused_naming_only_the_values_that_differ(tmp_path, capsys):
    """Two cells that validate to one run differ in trainer.seed (0 and '0') only: the
    one-line refusal names that pair, not the grid key they share (caught: the shared
    equation.dim named instead), and nothing is written."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "t.h5"
    grid = "study.grid={equation.dim: [3], trainer.seed: [0, '0']}"
    assert main(["study", str(cfg), grid, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(
        "cells biased {'equation.dim': 3, 'trainer.seed': 0} and biased {'equation.dim': 3, 'trainer.seed': '0'} are "
        "the same run (trainer.seed: 0 and '0' are the same value); list each value once"), err
    assert not out.exists() and not any(Path(str(out) + ".cells").glob("*.h5"))


# ---------------------------------------------------------------- tuning/command.py


def test_the_tune_groups_series_are_float64_and_the_last_line_prints_the_files_errors(tmp_path, capsys):
    """/tune/value, grad_norm and seconds keep the outer loop's float64 numbers (caught:
    float32, which rounds a trial's objective value to 7 digits); the last stdout line
    gives /final's rel_l2 and rel_l1 to 7 significant digits, as `pinnlab solve` does
    (caught: 4)."""
    code, out = _tune(tmp_path, SEARCH)
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    with h5py.File(out) as fh:
        for key in ("value", "grad_norm", "seconds"):
            assert fh[f"tune/{key}"].dtype == np.float64 and fh[f"tune/{key}"].shape == (3,), key
        final = fh["final"].attrs
        assert last.startswith(f"rel_l2={final['rel_l2']:.6e} rel_l1={final['rel_l1']:.6e} steps_per_second="), last

def test_the_tune_files_slice_is_drawn_with_the_runs_seed(tmp_path):
    """/slices of TUNE.h5 is the final solve's network on the slice plane with the Stein
    noise of trainer.seed (3 here) and eval_samples, as `pinnlab solve` draws it (caught:
    seed 0)."""
    from tests.test_slice_cost import stored_slice

    code, out = _tune(tmp_path, SEARCH, "trainer.seed=3")
    assert code == 0
    problem, _ = C.build(C.load(tmp_path / "tune.yaml", ["trainer.seed=3"]))
    stored, slice_at = stored_slice(problem, out)
    np.testing.assert_array_equal(stored, slice_at(num_samples=2, seed=3))  # NaN outside the ball in both
    assert np.nanmax(np.abs(stored - slice_at(num_samples=2, seed=0))) > 0


def test_a_tuning_stopped_before_any_theta_with_a_fresh_final_solve_does_not_claim_a_start(tmp_path, capsys):
    """Without final_init: continue the final solve always starts from the initialisation:
    the warning about a tuning that stopped at its first outer step says only that the
    last finite values are used (caught: "and starts from the initialisation (no outer
    step left a finite θ)" added for every final_init)."""
    from tests.tuning.test_tuning import _write

    out = tmp_path / "t.h5"
    code = main(["tune", str(_write(tmp_path)), "tune.method=rgu", "tune.options={}", "trainer.dtype=float64",
                 "tune.outer_optimizer=sgd", "tune.outer_lr=1.0e300", "tune.outer_steps=3", "-o", str(out),
                 "--progress", "off"])
    assert code == 1
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and warning[0].startswith("warning: tuning stopped early (")
    assert warning[0].endswith("; the final solve uses the last finite values"), warning
    with h5py.File(out) as fh:
        assert fh["tune"].attrs["status"] == "nonfinite" and int(fh["tune"].attrs["steps_done"]) == 0


def test_the_tuned_line_gives_four_significant_digits():
    """`tuned (...): lr=1.125 |coefficients.mu|=1.125 ...`: scalars and norms of vectors to
    4 significant digits (caught: 3, "1.12")."""
    from pinnlab.tuning.command import _summary

    phi = {"lr": torch.tensor(1.125, dtype=torch.float64), "coefficients.mu": torch.tensor([0.675, 0.9]),
           "weights.boundary": torch.tensor(123456.0)}
    assert _summary(phi) == "lr=1.125 |coefficients.mu|=1.125 weights.boundary=1.235e+05"


def test_a_joint_fits_interrupted_final_solve_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    """A joint fit keeps no tuning checkpoint, so its final solve's OUT.h5.final.ckpt stands
    alone: --resume fits again and continues the final solve from it, ending as the
    uninterrupted run (caught: refused as "exists without the tuning's checkpoint, so it
    cannot be resumed", which holds only for methods that checkpoint their tuning)."""
    from tests.tuning.test_tuning import final_solve_starts, kill_final_solve_at

    cfg = tmp_path / "joint.yaml"
    cfg.write_text(JOINT_MU)
    overrides = ["trainer.checkpoint_every=1", "trainer.steps=3", "trainer.eval_every=1"]
    reference = tmp_path / "reference.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(reference), "--progress", "off"]) == 0
    undo = kill_final_solve_at(monkeypatch, 2)
    out = tmp_path / "run.h5"
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off"]) == 130
    undo()
    final = tmp_path / "run.h5.final.ckpt"
    assert final.is_file() and not (tmp_path / "run.h5.ckpt").exists() and not out.exists()
    started = final_solve_starts(monkeypatch)
    capsys.readouterr()
    assert main(["tune", str(cfg), *overrides, "-o", str(out), "--progress", "off", "--resume"]) == 0, \
        capsys.readouterr().err
    assert started == [2] and not final.exists()
    with h5py.File(out) as fh, h5py.File(reference) as ref:
        for key in fh["params"]:
            np.testing.assert_array_equal(fh["params"][key][()], ref["params"][key][()])
        assert fh["final"].attrs["rel_l2"] == ref["final"].attrs["rel_l2"]

