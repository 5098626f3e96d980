"""Fifth mutation audit of the result files, checkpoints and atomic writes: the name and
place of the temporary file, the descriptors of refused and released output locks, the
radial bins' last edge and integer counts, the slice attributes as written, the git hash
of a checkout without commits, and checkpoint refusals (a type that does not import, a
long message, a directory, the setting named, a device torch cannot parse)."""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import h5py
import pytest
import torch

from pinnlab.equations import PoissonTwoBody
from pinnlab.io import load_checkpoint, save_checkpoint
from pinnlab.io.atomic import OutputBusy, atomic_path, output_lock
from pinnlab.io.checkpoint import CheckpointError, comparable_config, read_checkpoint, reading
from pinnlab.io.results import _git_hash, plan_slice, radial_profile, write_solve_result
from pinnlab.solvers import Adam
from pinnlab.solvers.loop import History

from .test_io_second_audit import CPU, _bare_state

F64 = torch.float64


def test_the_temporary_file_is_a_hidden_sibling_named_by_the_process(tmp_path):
    """``.NAME.<pid>.tmp`` in the target's own directory: ``os.replace`` is atomic only
    within one file system, and without the process id two processes writing one target
    would write into, and rename, the same temporary file."""
    target = tmp_path / "run.h5"
    with atomic_path(target) as tmp:
        assert tmp == tmp_path / f".run.h5.{os.getpid()}.tmp"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_a_point_on_the_last_edge_is_counted_in_the_last_radial_bin():
    """Radii 0, 0.5 and 1 over 2 bins of [0, 1]: the point at radius 1 (on the sphere, the
    right edge of the last bin) belongs to the last bin, not to none; the counts are
    integers and add up to the number of points. Errors 0, 0.5 and −1 against u* = 1, 2, 4:
    the last bin's mean |error| is 0.75 and its relative L2 error √1.25/√20 = 0.25."""
    x = torch.tensor([[0.0, 0.0], [0.0, 0.5], [1.0, 0.0]], dtype=F64)
    exact = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    profile = radial_profile(x, exact + torch.tensor([0.0, 0.5, -1.0], dtype=F64), exact, bins=2)
    assert profile["count"].dtype.kind == "i" and profile["count"].tolist() == [1, 2]
    assert profile["r"].tolist() == [0.25, 0.75]
    assert profile["abs_err"].tolist() == [0.0, 0.75]
    assert profile["rel_err"].tolist() == [0.0, pytest.approx(0.25, rel=1e-15)]


def test_the_farthest_point_beyond_the_unit_radius_is_in_the_last_bin():
    """With a radius above 1 the bins span [0, max ‖x‖]: the farthest point lies on the
    last edge and is counted there."""
    x = torch.tensor([[0.0, 0.0], [0.0, 2.5], [4.0, 0.0]], dtype=F64)
    profile = radial_profile(x, torch.ones(3, dtype=F64), torch.ones(3, dtype=F64), bins=4)
    assert profile["count"].tolist() == [1, 0, 1, 1]
    assert profile["r"].tolist() == [0.5, 1.5, 2.5, 3.5]


def test_the_slice_attributes_name_integer_dims_labels_and_how_it_was_computed(tmp_path):
    """/slices/main attrs as the schema says: dims are the (integer) columns of the two
    coordinates, labels their names, others "zero" on the unit ball, and noise "none" for
    a slice not computed by compute_slice (the network's own values)."""
    equation = PoissonTwoBody(3, seed=1)
    x = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.1, 0.0], [-0.2, 0.0, 0.4]], dtype=F64)
    exact = equation.exact(x)
    final = SimpleNamespace(prediction=exact + 0.5, rel_l2=0.5, rel_l1=0.5, max_err=0.5)
    result = SimpleNamespace(test_inputs=x, test_exact=exact, final=final, best_rel_l2=0.5, stats={},
                             history=History(), status="ok", message="", params={"w": torch.ones(2, dtype=F64)})
    config = SimpleNamespace(to_yaml=lambda: "config", input_digests=dict, trainer=SimpleNamespace(seed=0),
                             loss=SimpleNamespace(kind="biased"))
    grid = plan_slice(equation, x, points=3)  # (3 × 3 points: the attributes are what matters)
    values = torch.arange(9, dtype=F64)
    slice_data = (grid, grid.grid_a, grid.grid_b, grid.dims, grid.labels, grid.inside, values, values + 1)
    write_solve_result(tmp_path / "run.h5", config=config, problem=SimpleNamespace(equation=equation),
                       result=result, slice_data=slice_data)
    with h5py.File(tmp_path / "run.h5", "r") as fh:
        attrs = dict(fh["slices/main"].attrs)
        assert attrs["dims"].dtype.kind == "i" and attrs["dims"].tolist() == [0, 1]
        assert list(attrs["labels"]) == ["x₁", "x₂"]
        assert (attrs["others"], attrs["noise"]) == ("zero", "none") and "samples" not in attrs
        assert "input_files" not in fh.attrs  # (no input file read)
        assert fh["slices/main/u_pred"].shape == (3, 3) and fh["slices/main/grid_a"][...].tolist() == [-1, 0, 1]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_checkout_without_a_commit_has_no_git_hash(tmp_path):
    """In a repository without commits ``git rev-parse HEAD`` fails but prints "HEAD":
    the recorded hash is "" (no commit to name), not "HEAD"."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, capture_output=True)
    assert _git_hash(tmp_path) == ""


def test_a_saved_type_that_does_not_import_is_reported_as_damage():
    """A hand-edited checkpoint naming a pinnlab type that does not exist (the bilevel
    driver restores its named tuples by module and name) is a damaged checkpoint on one
    line, not a ModuleNotFoundError traceback."""
    from pinnlab.bilevel.driver import _restore

    with pytest.raises(CheckpointError, match=r"^checkpoint 'run.ckpt' is damaged \(ModuleNotFoundError: "
                                              r"No module named 'pinnlab.no_such_module'\)$"):
        with reading("run.ckpt"):
            _restore({"__namedtuple__": "pinnlab.no_such_module:State", "count": 1})


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_refused_or_released_lock_leaves_no_descriptor_open(tmp_path):
    """Every attempt opens the lock file: a refused one (OutputBusy) closes it at once and
    a released lock closes its own, so a process that takes many locks (a study's runs, a
    notebook retrying a busy output) does not run out of file descriptors."""
    def open_descriptors():
        return len(os.listdir("/proc/self/fd"))

    output = tmp_path / "run.h5"
    before = open_descriptors()
    with output_lock(output):
        assert open_descriptors() == before + 1
        for _ in range(3):
            with pytest.raises(OutputBusy):
                with output_lock(output):
                    pass
        assert open_descriptors() == before + 1
    assert open_descriptors() == before and list(tmp_path.iterdir()) == []


def test_a_refusal_names_the_setting_that_changes_numbers_not_a_run_only_one(tmp_path):
    """The checkpoint keeps its config without the run-only settings: resumed with another
    checkpoint interval (which a resume accepts) and another learning rate, the refusal
    names the learning rate, not the checkpoint interval that comes first in the file."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(), Adam(), "trainer:\n  checkpoint_every: 5\n  lr: 0.1\n")
    with pytest.raises(CheckpointError, match=r"written for a different configuration "
                                              r"\(trainer\.lr: 0\.1 in the checkpoint, 0\.2 in this run\)$"):
        load_checkpoint(path, Adam(), "trainer:\n  checkpoint_every: 7\n  lr: 0.2\n", CPU, F64)


def test_a_long_damage_message_is_cut_to_200_characters():
    """What a damaged state raises is shown on one line and cut at 200 characters (a
    load_state_dict message lists every key)."""
    with pytest.raises(CheckpointError) as raised:
        with reading("run.ckpt"):
            raise ValueError("key " * 100)
    assert str(raised.value) == f"checkpoint 'run.ckpt' is damaged (ValueError: {'key ' * 50})"


def test_a_directory_in_place_of_the_checkpoint_is_no_checkpoint(tmp_path):
    """A directory where the checkpoint should be is "no checkpoint to resume from", not a
    corrupted one (nothing was read)."""
    with pytest.raises(CheckpointError, match=r"^no checkpoint at '.*' to resume from$"):
        read_checkpoint(tmp_path)


def test_a_device_that_is_no_device_stays_as_written_in_the_compared_config():
    """A stored config with a device torch does not parse (a hand-edited result file that a
    training study compares) is compared as written, without its run-only settings: not
    a RuntimeError out of torch.device."""
    assert comparable_config({"trainer": {"device": "nonsense", "checkpoint_every": 3, "lr": 0.1}}) == \
        "trainer:\n  device: nonsense\n  lr: 0.1\n"
