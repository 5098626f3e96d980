"""Fourth mutation audit of the checkpoint and result-file helpers: the content digest
covers a tensor's shape, a long setting in a config refusal is cut at 40 characters, an
IndexError while reading a state is a damaged checkpoint, and /final peak_mem_mb keeps
the training's peak when it is the larger."""

from __future__ import annotations

import h5py
import pytest
import torch

import pinnlab
from pinnlab import config as configuration
from pinnlab.io import CheckpointError
from pinnlab.io.checkpoint import config_difference, content_digest, reading
from pinnlab.io.results import write_solve_result

from .test_io_second_audit import F64


def test_the_digest_covers_a_tensors_shape_and_a_dictionarys_keys():
    """The same bytes in another shape, and the same values under other keys, are other
    content: a reshaped parameter or a renamed entry must not pass the digest check."""
    flat = torch.arange(4, dtype=F64)
    assert content_digest(flat) != content_digest(flat.reshape(2, 2))
    assert content_digest(flat.reshape(2, 2)) != content_digest(flat.reshape(4, 1))
    assert content_digest({"a": 1.0}) != content_digest({"b": 1.0})
    assert content_digest({"a": flat}) != content_digest({"b": flat})


def test_a_long_setting_is_cut_to_40_characters_in_the_refusal():
    """A value whose repr is longer than 40 characters is shown as its first 37 and
    "..."; the other side, short, in full."""
    long = "a" * 50
    assert config_difference(f"model:\n  name: {long}\n", "model:\n  name: b\n") == \
        f" (model.name: '{'a' * 36}... in the checkpoint, 'b' in this run)"


def test_an_index_out_of_range_while_reading_a_state_is_reported_as_damage():
    """An IndexError (a saved list shorter than the code reads) is reported as a damaged
    checkpoint on one line, like a KeyError or a TypeError."""
    with pytest.raises(CheckpointError, match=r"^checkpoint 'run.ckpt' is damaged \(IndexError: list index out of range\)$"):
        with reading("run.ckpt"):
            [][0]  # noqa: B018 - the failing read


def test_the_result_file_keeps_the_training_peak_when_it_is_the_larger(tmp_path, monkeypatch):
    """/final peak_mem_mb is the larger of the peak train() recorded and the one measured
    at the writing: a smaller reading then (a peak reset since, or CUDA's allocator
    after the training's tensors were freed) does not replace the training's peak."""
    import pinnlab.solvers.loop as loop

    config = configuration.validate({
        "equation": {"name": "poisson_two_body", "dim": 2}, "model": {"width": 4, "depth": 2},
        "estimator": {"kind": "stein", "sigma": 0.1, "samples": 2}, "loss": {"kind": "biased"},
    })
    problem, _ = configuration.build(config)
    result = pinnlab.train(problem, steps=1, eval_every=1, test_points=4, progress="off")
    result.stats["peak_mem_mb"] = 123456.0
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: 7.0)
    write_solve_result(tmp_path / "r.h5", config=config, problem=problem, result=result)
    with h5py.File(tmp_path / "r.h5") as fh:
        assert fh["final"].attrs["peak_mem_mb"] == 123456.0
