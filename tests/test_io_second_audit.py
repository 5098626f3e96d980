"""Second mutation audit of the I/O layer and the evaluation helpers: strict JSON of
non-finite numbers and nested lists, checkpoint refusals and digests, config
differences, exact round trips of a few checkpoint fields, slice grids, radial bins,
observation files, evaluation chunk sizes, schedules and progress lines."""

from __future__ import annotations

import io
import json
import math
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pinnlab.io import CheckpointError, load_checkpoint, save_checkpoint
from pinnlab.io.atomic import strict_json, write_strict_json
from pinnlab.io.checkpoint import (
    check_fits,
    check_progress,
    comparable_text,
    config_difference,
    content_digest,
    read_checkpoint,
    reading,
    write_checkpoint_file,
)
from pinnlab.io.observations import ObservationError, load_observations, save_observations
from pinnlab.io.results import SliceGrid, _dataset, is_unit_ball, plan_slice, radial_profile
from pinnlab.losses.hybrid import PlateauState
from pinnlab.solvers import Adam
from pinnlab.solvers.evaluate import eval_chunk_size, predict
from pinnlab.solvers.loop import TrainState
from pinnlab.solvers.optim import AdamState
from pinnlab.solvers.progress import Progress
from pinnlab.solvers.schedules import Exponential, LinearDecay

F64 = torch.float64
CPU = torch.device("cpu")


# --- strict JSON -------------------------------------------------------------------


def test_strict_json_writes_infinities_as_null():
    """Not only NaN: +inf and -inf are no JSON either (json.dumps with allow_nan=False
    refuses them), so they become null like NaN."""
    assert strict_json({"a": math.inf, "b": -math.inf, "c": math.nan, "d": 1.5}) == \
        '{"a": null, "b": null, "c": null, "d": 1.5}'


def test_strict_json_converts_inside_lists_and_tuples():
    """Non-finite numbers nested in lists and tuples are converted too (a trace of losses
    with one NaN made the whole write fail)."""
    value = {"trace": [1.0, math.nan, (math.inf, 2)], "pair": (np.float64(0.5), torch.tensor(3))}
    assert strict_json(value) == '{"trace": [1.0, null, [null, 2]], "pair": [0.5, 3]}'


def test_write_strict_json_writes_null_for_nan(tmp_path):
    """The file written by write_strict_json is strict JSON: no bare NaN a strict parser
    refuses."""
    path = tmp_path / "summary.json"
    write_strict_json(path, {"rel_l2": math.nan, "steps": 3})

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads(path.read_text(), parse_constant=refuse) == {"rel_l2": None, "steps": 3}
    assert path.read_text() == '{\n "rel_l2": null,\n "steps": 3\n}'


# --- checkpoint helpers ------------------------------------------------------------


def test_config_difference_names_the_first_setting_in_the_files_order():
    """The comparable config keeps the YAML's key order: with two settings changed the
    refusal names the first one in the file (trainer before model here), not the first
    in alphabetical order."""
    saved = comparable_text("trainer: {lr: 0.001}\nmodel: {width: 8}\n")
    assert saved.index("trainer") < saved.index("model")
    assert config_difference(saved, "trainer: {lr: 0.5}\nmodel: {width: 16}\n") == \
        " (trainer.lr: 0.001 in the checkpoint, 0.5 in this run)"


def test_config_difference_names_a_setting_only_this_run_has():
    """A setting present in this run's config and absent from the checkpoint's is a
    difference too, shown as '(not set)' in the checkpoint."""
    saved = comparable_text("trainer: {lr: 0.001}\n")
    assert config_difference(saved, "trainer: {lr: 0.001, steps: 5}\n") == \
        " (trainer.steps: '(not set)' in the checkpoint, 5 in this run)"


def test_the_content_digest_ignores_dictionary_insertion_order_but_not_container_kinds():
    """Dictionaries are digested in sorted key order (the same content read back in
    another order is the same content); a list and a tuple, and an ndarray's dtype, are
    part of the content."""
    assert content_digest({"a": 1, "b": [2.0]}) == content_digest({"b": [2.0], "a": 1})
    assert content_digest({"a": [1, 2]}) != content_digest({"a": (1, 2)})
    values = np.array([1.0, 2.0])
    assert content_digest(values) != content_digest(values.view(np.int64))
    assert content_digest(values) == content_digest(values.copy())


def test_a_tuning_history_with_an_entry_more_than_the_run_has_is_refused(tmp_path):
    """The saved history must have exactly this run's entries: an extra entry (a history
    of another method) is refused as well as a missing one."""
    path = tmp_path / "t.ckpt"
    write_checkpoint_file(path, {"history": {"value": [1.0], "grad_norm": [2.0]}})
    assert read_checkpoint(path, history={"value": [], "grad_norm": []})["history"]["value"] == [1.0]
    with pytest.raises(CheckpointError, match="its history has other entries than value"):
        read_checkpoint(path, history={"value": []})


def test_a_tuning_checkpoint_with_one_nan_value_is_refused(tmp_path):
    """Every value of every tensor must be finite: one NaN among finite values (not only
    an all-NaN tensor) ran on to a result of NaN values."""
    history = {"value": [0.5]}
    check_progress(tmp_path / "t.ckpt", history, 1, {}, {"phi": torch.tensor([1.0, 2.0])})
    with pytest.raises(CheckpointError, match="its tuned values or network are not finite"):
        check_progress(tmp_path / "t.ckpt", history, 1, {}, {"phi": torch.tensor([1.0, math.nan])})


def test_a_damaged_state_is_reported_on_one_line():
    """reading() puts a multi-line error message (load_state_dict's) on one line."""
    with pytest.raises(CheckpointError) as caught:
        with reading("run.ckpt"):
            raise RuntimeError("Error(s) in loading:\n\t  size mismatch for w")
    assert str(caught.value) == \
        "checkpoint 'run.ckpt' is damaged (RuntimeError: Error(s) in loading: size mismatch for w)"


def test_a_refusal_shows_three_keys_and_counts_the_others():
    """A refusal lists at most three names and says how many more there are."""
    expected = {k: torch.zeros(1) for k in "abcde"}
    with pytest.raises(CheckpointError, match=r"params lacks 'a', 'b', 'c' and 2 more$"):
        check_fits(None, "params", {}, expected)


def _bare_state(count=3, switched_at=None):
    """A state at step 0 (no history yet) with a given Adam count and plateau."""
    params = {"w": torch.tensor([[0.5, -1.25]], dtype=F64)}
    zeros = {"w": torch.zeros(1, 2, dtype=F64)}
    return TrainState(params=params, opt_state=AdamState(count, zeros, dict(zeros)),
                      plateau=PlateauState(0.25, 0.125, 0, switched_at))


def test_a_switch_at_step_0_loads_back_as_step_0(tmp_path):
    """switched_at = 0 is a switch (at the first step), not "not switched" (saved as -1)."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(switched_at=0), Adam(), "config")
    assert load_checkpoint(path, Adam(), "config", CPU, F64).plateau.switched_at == 0
    save_checkpoint(path, _bare_state(switched_at=None), Adam(), "config")
    assert load_checkpoint(path, Adam(), "config", CPU, F64).plateau.switched_at is None


def test_the_adam_step_count_is_not_cast_to_the_runs_dtype(tmp_path):
    """Only floating-point optimizer tensors take the run's dtype: the step count 2²⁴ + 1
    came back as 2²⁴ through float32 (Adam's bias correction then used a wrong t)."""
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, _bare_state(count=2**24 + 1), Adam(), "config")
    loaded = load_checkpoint(path, Adam(), "config", CPU, torch.float32)
    assert loaded.opt_state.count == 2**24 + 1
    assert loaded.opt_state.mu["w"].dtype == torch.float32 and loaded.params["w"].dtype == torch.float32


# --- result files ------------------------------------------------------------------


def test_a_time_dependent_equation_on_the_unit_ball_is_not_a_unit_ball_problem():
    """With a time column ‖x‖ is no radius: no radial profile and no unit-ball slice."""
    assert is_unit_ball(SimpleNamespace(domain="unit_ball", time_dependent=False))
    assert not is_unit_ball(SimpleNamespace(domain="unit_ball", time_dependent=True))
    assert not is_unit_ball(SimpleNamespace(domain="box", time_dependent=False))


def test_slice_points_of_a_rectangular_grid_are_row_major():
    """Point i·nb + j lies at (grid_a[i], grid_b[j]) also when na ≠ nb."""
    grid = SliceGrid(base=torch.tensor([0.0, 7.0, 0.0], dtype=F64), grid_a=torch.tensor([1.0, 2.0], dtype=F64),
                     grid_b=torch.tensor([10.0, 20.0, 30.0], dtype=F64), dims=(0, 2), labels=("x₁", "t"),
                     inside=torch.ones(2, 3, dtype=torch.bool))
    assert grid.points().tolist() == [[1, 7, 10], [1, 7, 20], [1, 7, 30], [2, 7, 10], [2, 7, 20], [2, 7, 30]]
    assert grid.points(4).tolist() == [[2, 7, 20], [2, 7, 30]]


def test_slice_points_on_the_unit_sphere_are_outside():
    """On the unit ball only points with x₁² + x₂² < 1 are inside: on a 3×3 grid over
    [−1, 1]² only the centre (the middle of each edge lies on the sphere)."""
    eq = SimpleNamespace(domain="unit_ball", time_dependent=False)
    grid = plan_slice(eq, torch.zeros(4, 3), points=3)
    assert grid.inside.tolist() == [[False, False, False], [False, True, False], [False, False, False]]


def test_a_radial_bin_where_the_reference_and_the_error_are_zero_has_relative_error_zero():
    """A bin whose u* is 0 (and the prediction exact) has relative error 0, not 0/0 = NaN."""
    x = torch.tensor([[0.1, 0.0], [0.9, 0.0]], dtype=F64)
    exact = torch.tensor([0.0, 2.0], dtype=F64)
    prediction = torch.tensor([0.0, 2.5], dtype=F64)
    with np.errstate(all="raise"):
        profile = radial_profile(x, prediction, exact, bins=2)
    assert profile["rel_err"].tolist() == [0.0, 0.25]
    assert profile["count"].tolist() == [1, 1]


def test_integer_datasets_are_compressed_like_float_ones(tmp_path):
    """Datasets of more than 16 numbers (integers too, e.g. /history/step) are gzip-compressed."""
    with h5py.File(tmp_path / "f.h5", "w") as fh:
        _dataset(fh, "step", np.arange(17))
        _dataset(fh, "loss", np.ones(17))
        _dataset(fh, "short", np.arange(16))
        assert (fh["step"].compression, fh["loss"].compression, fh["short"].compression) == ("gzip", "gzip", None)


# --- observations ------------------------------------------------------------------


def test_saved_csv_observations_have_a_header_and_load_back(tmp_path):
    """save_observations writes the header x0,...,u, then rows that load back exactly."""
    path = tmp_path / "obs.csv"
    x = torch.tensor([[0.25, 0.5], [0.75, 1.0]], dtype=F64)
    u = torch.tensor([1.5, -2.0], dtype=F64)
    save_observations(path, x, u)
    assert path.read_text().splitlines()[0] == "x0,x1,u"
    loaded = load_observations(path, 2)
    assert torch.equal(loaded[0], x) and torch.equal(loaded[1], u)


def test_a_csv_whose_data_lines_are_separated_by_semicolons_is_named_as_such(tmp_path):
    """A comma-separated header followed by semicolon-separated rows: the second line is
    named as having no comma (not taken for one value that is not a number)."""
    path = tmp_path / "obs.csv"
    path.write_text("x0,x1,u\n0.1;0.2;1.5\n0.3;0.4;2.5\n")
    with pytest.raises(ObservationError, match=r"line 2 has no comma \(fields are separated by commas\)$"):
        load_observations(path, 2)


def test_a_csv_row_of_one_value_hints_at_the_separator(tmp_path):
    """A row that splits into one field (another separator) gets the comma hint."""
    path = tmp_path / "obs.csv"
    path.write_text("0.1,0.2,1.5\n0.3 0.4 2.5\n")
    with pytest.raises(ObservationError, match=r"line 2 has 1 values, line 1 has 3 \(fields are separated by "
                                               r"commas\)$"):
        load_observations(path, 2)


# --- evaluation chunks -------------------------------------------------------------


def _chunk_problem(net, k=None, dim=3):
    from pinnlab.estimators import SteinAntithetic

    estimator = SteinAntithetic(sigma=0.1, num_samples=k or 1)
    return SimpleNamespace(net=net, estimator=estimator, equation=SimpleNamespace(input_dim=dim))


def test_an_evaluation_chunk_has_at_most_4096_points():
    """The element budget allows 2²⁰ points of K = 1 at width 8; a chunk still holds at most 4,096."""
    assert eval_chunk_size(_chunk_problem(SimpleNamespace(width=8)), 1) == 4096
    assert eval_chunk_size(_chunk_problem(SimpleNamespace(width=8)), 1024) == 2**24 // (2 * 1024 * 8)


def test_a_network_without_a_width_is_taken_as_128_wide():
    """A network with no ``width`` attribute is sized as 128 wide (not 1: chunks 43 times too large)."""
    assert eval_chunk_size(_chunk_problem(object()), 64) == 2**24 // (2 * 64 * 128)


def test_predict_chunks_by_the_estimators_sample_count(monkeypatch):
    """predict's chunks are sized for the K samples it evaluates with (the estimator's, or
    num_samples), not for one sample."""
    from pinnlab.estimators import SteinAntithetic
    from tests.solvers.small_problems import problem

    seen = []
    evaluate = SteinAntithetic.evaluate

    def spy(self, *args, chunk_size=None, **kwargs):
        seen.append((self.num_samples, chunk_size))
        return evaluate(self, *args, chunk_size=chunk_size, **kwargs)

    monkeypatch.setattr(SteinAntithetic, "evaluate", spy)
    pinn = problem(dim=3, estimator=SteinAntithetic(sigma=0.1, num_samples=512))
    x = torch.zeros(2, 3)
    params = pinn.init_params(dtype=torch.float32)
    predict(pinn, params, x)
    predict(pinn, params, x, num_samples=2048)
    assert seen == [(512, eval_chunk_size(pinn, 512)), (2048, eval_chunk_size(pinn, 2048))]
    assert eval_chunk_size(pinn, 2048) < eval_chunk_size(pinn, 512) < 4096


# --- schedules ---------------------------------------------------------------------


def test_linear_decay_refuses_zero_total_steps():
    """total_steps = 0 would divide by zero at the first step."""
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1, got 0"):
        LinearDecay(0)
    assert LinearDecay(1)(0) == 1.0 and LinearDecay(1)(1) == 0.0


def test_exponential_takes_gamma_one_and_refuses_gamma_zero():
    """γ = 1 is a constant rate (allowed); γ = 0 would stop after the first step."""
    assert Exponential(1.0)(1000) == 1.0
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\], got 0"):
        Exponential(0.0)


def test_exponential_defaults_to_the_protocols_gamma():
    """γ = 0.9995, the FP/HJB/Burgers protocol's."""
    assert Exponential().gamma == 0.9995
    assert Exponential()(2) == 0.9995**2


# --- progress ----------------------------------------------------------------------


def test_a_log_interval_of_zero_logs_every_step():
    """log_every = 0 is taken as 1 (not a division by zero at the first step)."""
    out = io.StringIO()
    bar = Progress(2, mode="log", log_every=0, stream=out)
    for step in range(2):
        bar.update(step, 1.0, None)
    assert [line.split()[2] for line in out.getvalue().splitlines()] == ["1/2", "2/2"]


def test_a_resumed_runs_rate_counts_only_its_own_steps(monkeypatch):
    """Resumed at step 1000 (``initial``), one step in 2 s is 0.5 steps per second, not
    1001 steps in 2 s."""
    from pinnlab.solvers import progress

    clock = iter([0.0, 2.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    Progress(1001, initial=1000, mode="log", stream=out).update(1000, 1.0, None)
    assert out.getvalue() == "train step 1001/1001 loss=1.000e+00 rel_l2=n/a s/it=2.00\n"


def test_a_term_without_a_weight_is_shown_with_weight_one():
    """A loss term without its weight_<term> entry is shown with w=1 (unweighted), not w=0."""
    out = io.StringIO()
    Progress(1, mode="log", stream=out).update(0, 1.0, None, {"loss_data": 0.5})
    assert " data=5.00e-01(w=1) " in out.getvalue()


def test_auto_draws_a_bar_on_a_terminal_stream_without_a_file_descriptor():
    """A stream that says it is a terminal but has no file descriptor (an IDE console)
    gets the bar: its width is unknown, not zero."""

    class Console(io.StringIO):
        def isatty(self):
            return True

    bar = Progress(2, stream=Console())
    assert bar.mode == "bar" and bar.bar is not None
    bar.close()


def test_slice_blocks_follow_predicts_chunks_when_num_samples_overrides_the_estimators(monkeypatch):
    """With independent noise and num_samples other than the estimator's K, the slice's
    blocks are whole numbers of predict's chunks for num_samples: the slice equals one
    predict call on all its points (with K's chunks the blocks cut a chunk in two and the
    points got other noise)."""
    from pinnlab._seeding import make_generator
    from pinnlab.equations import base
    from pinnlab.estimators import SteinAntithetic
    from pinnlab.io.results import compute_slice
    from tests.solvers.small_problems import problem

    monkeypatch.setattr(base, "POINT_ELEMENT_BUDGET", 3 * 1075)  # blocks of at most 1,075 points
    monkeypatch.setattr(sys.modules["pinnlab.solvers.evaluate"], "EVAL_ELEMENT_BUDGET", 3200)  # chunks of 100 points for K = 2 (50 for K = 4)
    pinn = problem(dim=3, estimator=SteinAntithetic(sigma=0.1, num_samples=4, noise="independent"))
    params = pinn.init_params(dtype=F64)
    x_test = torch.zeros(5, 3, dtype=F64)
    grid, *_, pred, _ = compute_slice(pinn, params, x_test, num_samples=2, seed=3)
    whole = predict(pinn, params, grid.points(), num_samples=2, generator=make_generator(3, "slice"))
    assert len(grid) == 4096 and torch.equal(pred, whole)


def test_a_solve_of_a_one_dimensional_steady_equation_writes_its_result(tmp_path, monkeypatch):
    """The README's custom equation (unit ball, min_dim 1) at d = 1: training runs, and the
    result file must be written (with or without a slice), not lost at the slice."""
    from pinnlab.cli import main
    from pinnlab.equations import EQUATIONS
    from tests.equations.conftest import EXAMPLE

    module = tmp_path / "one_dim_equation.py"
    module.write_text(EXAMPLE.read_text())
    config = tmp_path / "c.yaml"
    config.write_text(f"equation: {{name: sine_poisson, dim: 1, module: {module}}}\n"
                      "model: {width: 8, depth: 2}\nestimator: {kind: autograd}\n"
                      "trainer: {steps: 2, eval_every: 2, test_points: 20, batch_size: 8}\n")
    registered = dict(EQUATIONS)
    EQUATIONS.pop("sine_poisson", None)
    try:
        out = tmp_path / "run.h5"
        assert main(["solve", str(config), "-o", str(out), "--progress", "off"]) == 0
        with h5py.File(out, "r") as fh:
            assert fh.attrs["dim"] == 1 and fh["eval/u_pred"].shape == (20,)
            assert "slices" not in fh  # (no plane to slice)
        plots = main(["plot", str(out), "-o", str(tmp_path / "plots")])
        assert plots == 0 and not (tmp_path / "plots" / "slice.png").exists()
        assert (tmp_path / "plots" / "line.png").exists()  # (u and u* along x instead)
        assert (tmp_path / "plots" / "curves.png").exists()
    finally:
        EQUATIONS.clear()
        EQUATIONS.update(registered)


def test_check_writable_directory_reports_a_directory_it_cannot_write(tmp_path, monkeypatch):
    """The probe file is really written: a directory refusing it raises before the work
    (as root, permissions do not refuse, so the write itself is made to fail)."""
    from pathlib import Path

    from pinnlab.io.atomic import check_writable_directory

    check_writable_directory(tmp_path / "run.h5")

    def refuse(self, data):
        raise PermissionError(f"cannot write {self.name}")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(PermissionError, match="cannot write .pinnlab-write-probe-"):
        check_writable_directory(tmp_path / "run.h5")


def test_the_history_group_holds_the_rows_and_the_trace_only_the_trace(tmp_path):
    """/history has one dataset per row column (the per-step traces go to /trace only)."""
    from pinnlab.io.results import write_solve_result
    from pinnlab.solvers import train
    from tests.solvers.small_problems import problem

    pinn = problem(dim=3)
    result = train(pinn, steps=3, eval_every=2, test_points=10, dtype=F64, device="cpu", progress="off")
    config = SimpleNamespace(to_yaml=lambda: "config", input_digests=dict, trainer=SimpleNamespace(seed=0),
                             loss=SimpleNamespace(kind="biased"))
    path = tmp_path / "run.h5"
    write_solve_result(path, config=config, problem=pinn, result=result)
    with h5py.File(path, "r") as fh:
        assert sorted(fh["history"]) == sorted(result.history.rows)
        assert fh["history/step"][...].tolist() == [2, 3]
        assert fh["trace/loss"][...].tolist() == result.history.trace_loss


def test_observations_with_points_but_no_values_name_both_shapes(tmp_path):
    """Points without values are a shape mismatch, named as such ("holds no observations"
    is for a file with neither)."""
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.full((3, 2), 0.25), u=np.zeros(0))
    with pytest.raises(ObservationError, match=r"got \(3, 2\) and \(0,\)"):
        load_observations(path, 2)


def test_predict_refuses_points_of_another_dtype_than_the_parameters():
    """A dtype mismatch is one clear ValueError, before the estimator's own matmul error."""
    from tests.solvers.small_problems import problem

    pinn = problem(dim=3)
    with pytest.raises(ValueError, match="the points are float32 on cpu, the parameters float64 on cpu: move one "
                                         "to the other's"):
        predict(pinn, pinn.init_params(dtype=F64), torch.zeros(2, 3))


def test_the_bar_advances_one_step_per_update():
    """Each update advances the bar by one step (resumed at 2, three updates reach 5 of 5)."""
    bar = Progress(5, initial=2, mode="bar", stream=io.StringIO())
    for step in (2, 3, 4):
        bar.update(step, 1.0, None)
    assert bar.bar.n == 5
    bar.close()
