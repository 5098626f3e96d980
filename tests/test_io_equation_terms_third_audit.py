"""Third audit of the result file, checkpoint and atomic-write helpers and of the residual
vocabulary (terms, noise groups, term assembly, solution fields), by mutation testing.

Each test pins down a behaviour that a plausible one-line change left unnoticed by the
rest of the suite; values are checked against closed forms or float64 computations done
here, never against the code's own output."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from pinnlab.io.results import plan_slice

from .test_result_file_values import results  # noqa: F401 - the module's solve result files

F64 = torch.float64


# ---------------------------------------------------------------- result file: the slice


def test_a_steady_two_coordinate_slice_spans_the_1_to_99_percent_range_of_both_coordinates():
    """Off the unit ball and without time, both slice axes span the test set's 1–99 %
    quantiles; with two input columns x₂ is also the last column, which is the time
    column only for a time-dependent equation (its [min, max] range)."""
    equation = SimpleNamespace(domain=None, time_dependent=False)
    x = torch.linspace(0, 1, 101, dtype=F64)
    points = torch.stack([x, 10 * x.flip(0)], dim=1)  # quantiles 0.01 and 0.99 are 0.01, 0.99 (×10)
    grid = plan_slice(equation, points, points=5)
    torch.testing.assert_close(grid.grid_a, torch.linspace(0.01, 0.99, 5, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(grid.grid_b, torch.linspace(0.1, 9.9, 5, dtype=F64), rtol=0, atol=1e-12)
    assert grid.dims == (0, 1) and grid.labels == ("x₁", "x₂")
    timed = plan_slice(SimpleNamespace(domain=None, time_dependent=True), points, points=5)
    torch.testing.assert_close(timed.grid_b, torch.linspace(0.0, 10.0, 5, dtype=F64), rtol=0, atol=1e-12)
    assert timed.labels == ("x₁", "t")


def test_a_nonfinite_solve_records_its_message_apart_from_its_status(tmp_path, capsys):
    """/ attrs: status "nonfinite" and, under message, the sentence saying where training
    stopped (not the status again)."""
    import h5py

    from pinnlab.cli import main

    from .test_cli_exit_codes import DIVERGING

    cfg = tmp_path / "diverge.yaml"
    cfg.write_text(DIVERGING)
    out = tmp_path / "run.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 1
    capsys.readouterr()
    with h5py.File(out) as fh:
        assert (fh.attrs["kind"], fh.attrs["status"]) == ("solve", "nonfinite")
        assert fh.attrs["message"].startswith("training loss became inf at step 2; stopped and kept the state "
                                              "after step 1")


def test_the_slice_says_how_the_other_coordinates_were_fixed(results):  # noqa: F811 - the imported fixture
    """slices/main attrs others: "zero" on the unit ball (x₃ = 0 there), "median" off it."""
    import h5py

    for name, others in (("poisson_two_body", "zero"), ("hjb_lin", "median")):
        with h5py.File(results[name]) as fh:
            assert fh["slices/main"].attrs["others"] == others, name
            assert (fh.attrs["status"], fh.attrs["message"]) == ("ok", "")


def test_a_float32_solve_stores_its_test_set_values_in_float64(tmp_path):
    """/eval u_pred, u_true and abs_err are float64 whatever the run's dtype (float32
    here, attribute dtype "float32"): the float32 values exactly, and abs_err their
    difference; the parameters stay in the run's dtype."""
    import h5py

    from pinnlab.cli import main

    cfg = tmp_path / "solve.yaml"
    cfg.write_text("equation: {name: poisson_two_body, dim: 2, seed: 1}\nmodel: {width: 4, depth: 2}\n"
                   "estimator: {kind: autograd}\n"
                   "trainer: {steps: 1, eval_every: 1, test_points: 12, batch_size: 4, dtype: float32}\n")
    out = tmp_path / "run.h5"
    assert main(["solve", str(cfg), "-o", str(out), "--progress", "off"]) == 0
    with h5py.File(out) as fh:
        assert fh.attrs["dtype"] == "float32"
        pred, true, err = (fh[f"eval/{k}"][...] for k in ("u_pred", "u_true", "abs_err"))
        assert pred.dtype == true.dtype == err.dtype == np.float64 and pred.shape == (12,)
        for values in (pred, true):
            np.testing.assert_array_equal(values.astype(np.float32).astype(np.float64), values)
        np.testing.assert_array_equal(err, np.abs(pred.astype(np.float32) - true.astype(np.float32)))
        assert {fh[f"params/{k}"].dtype for k in fh["params"]} == {np.dtype(np.float32)}


# ---------------------------------------------------------------- checkpoints: atomic writes


def test_a_checkpoint_write_that_fails_half_way_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    """torch.save raising after part of the archive is written (a full disk) keeps the
    checkpoint written before, which still reads back with its digest checked, and leaves
    no temporary file."""
    from pinnlab.io import checkpoint

    path = tmp_path / "run.h5.ckpt"
    checkpoint.write_checkpoint_file(path, {"step": 3, "x": torch.tensor([0.1, 0.2], dtype=F64)})
    before = path.read_bytes()

    def failing_save(obj, target):  # (target: the temporary file, opened by write_checkpoint_file)
        target.write(before[: len(before) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    try:
        checkpoint.write_checkpoint_file(path, {"step": 4, "x": torch.tensor([9.0], dtype=F64)})
    except OSError as err:
        assert "No space" in str(err)
    else:
        raise AssertionError("the failed write did not raise")
    monkeypatch.undo()
    assert path.read_bytes() == before
    data = checkpoint.read_checkpoint(path)
    assert data["step"] == 3 and data["x"].tolist() == [0.1, 0.2] and data["x"].dtype == F64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5.ckpt"]


def test_an_output_name_near_the_file_system_limit_is_written_and_locked(tmp_path):
    """A 250-byte name fits the file system (255 bytes) but ``.NAME.<pid>.tmp`` and
    ``.NAME.lock`` next to it would not: their names are cut (also for 2-byte characters
    whose name is over 200 bytes), so the write and the lock still work."""
    from pinnlab.io.atomic import atomic_path, output_lock

    for name in ("a" * 247 + ".h5", "é" * 123 + ".h5"):
        target = tmp_path / name
        assert 240 <= len(name.encode()) <= 250
        with output_lock(target):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"new")
        assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a" * 247 + ".h5", "é" * 123 + ".h5"])


def test_an_output_inside_a_file_is_refused_as_not_a_directory(tmp_path):
    """check_writable_directory tells a parent that is a file from one that does not exist."""
    import pytest

    from pinnlab.io.atomic import check_writable_directory

    (tmp_path / "plain").write_text("")
    with pytest.raises(FileNotFoundError, match=r"plain' is not a directory"):
        check_writable_directory(tmp_path / "plain" / "run.h5")
    with pytest.raises(FileNotFoundError, match=r"directory '.*missing' does not exist"):
        check_writable_directory(tmp_path / "missing" / "run.h5")
    check_writable_directory(tmp_path / "run.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]  # the probe is removed


# ---------------------------------------------------------------- equations: solution fields


def _two_of_each_kind(time_dependent):
    """Two weighted Laplacians and two directional fields (and Δu) in one call, with an
    ansatz A, B varying in every column, against autograd of u = A·u_σ + B itself."""
    from pinnlab.equations import GRADIENT, HESSIAN_DIAGONAL, LAPLACIAN
    from pinnlab.equations.fields import solution_fields
    from pinnlab.equations.terms import directional, weighted_laplacian
    from pinnlab.estimators import Autograd
    from pinnlab.nets import Pointwise

    from .equations.test_contract import _derivatives
    from .equations.test_solution_fields_product_rule import _jet, _scale, _shift, _smoothed

    d = 3
    g = torch.Generator().manual_seed(3)
    x = 0.6 * torch.randn(9, d + int(time_dependent), generator=g, dtype=F64)
    v = _smoothed(torch.randn(x.shape[1], generator=g, dtype=F64))
    w1 = weighted_laplacian(lambda z, c: 1 + z[:, :d] ** 2)
    w2 = weighted_laplacian(lambda z, c: torch.tensor([2.0, -0.5, 3.0], dtype=F64))  # (d,): the same everywhere
    a1 = directional(lambda z, c: torch.cos(z[:, :d]))
    a2 = directional(lambda z, c: c["a"])  # (d,)
    queries = []

    def estimate(q):
        queries.append(list(q))
        return Autograd().estimate(Pointwise(v), x, q)

    fields = [GRADIENT, HESSIAN_DIAGONAL, LAPLACIAN, w1, w2, a1, a2]
    got = solution_fields(x, fields, estimate, spatial_dim=d, scale=_jet(_scale, x), shift=_jet(_shift, x),
                          coefficients={"a": torch.tensor([0.5, -1.0, 2.0], dtype=F64)})
    _, grad, hess = _derivatives(lambda z: _scale(z) * v(z) + _shift(z), x)
    grad, hess = grad[:, :d], hess[:, :d]
    expected = {
        GRADIENT: grad, HESSIAN_DIAGONAL: hess, LAPLACIAN: hess.sum(1),
        w1: ((1 + x[:, :d] ** 2) * hess).sum(1), w2: (hess * torch.tensor([2.0, -0.5, 3.0], dtype=F64)).sum(1),
        a1: (torch.cos(x[:, :d]) * grad).sum(1), a2: (grad * torch.tensor([0.5, -1.0, 2.0], dtype=F64)).sum(1),
    }
    return got, expected, queries


def test_two_weighted_laplacians_and_two_directional_fields_in_one_call_keep_their_own_weights():
    """Fields of one kind with other weights or directions are separate raw queries: sharing
    one (a key without the field) gave the second field the first one's value."""
    for time_dependent in (False, True):
        got, expected, _ = _two_of_each_kind(time_dependent)
        for field, value in expected.items():
            torch.testing.assert_close(got[field], value, rtol=1e-10, atol=1e-10, msg=f"field {field!r}")


def test_a_raw_quantity_two_fields_need_is_requested_once():
    """The gradient (for ∇u, and for 2∇A⊙∇u_σ of diag ∇²u) and u_σ are asked once: one
    estimator call with u_σ, ∇u_σ, diag ∇²u_σ, three weighted Laplacians (Δ and the two
    fields) with a w⊙∇A direction each, and the two directional fields: 3 + 3·2 + 2 = 11."""
    from pinnlab.estimators.base import Directional, Gradient, HessianDiagonal, Value, WeightedLaplacian

    _, _, queries = _two_of_each_kind(False)
    assert len(queries) == 1
    kinds = [type(q) for q in queries[0]]
    assert kinds.count(Value) == 1 and kinds.count(Gradient) == 1 and kinds.count(HessianDiagonal) == 1
    assert kinds.count(WeightedLaplacian) == 3 and kinds.count(Directional) == 5
    assert len(kinds) == 11


# ---------------------------------------------------------------- equations: residual terms


def _terms():
    from pinnlab.equations import GRADIENT, LAPLACIAN, VALUE, Term

    return (Term(1.0, (LAPLACIAN,)), Term(-1.0, (VALUE, VALUE, VALUE)), Term(0.5, (GRADIENT, GRADIENT)),
            Term(3.0, (VALUE, GRADIENT, GRADIENT)))


def test_noise_groups_list_each_field_once_per_group():
    """Biased: one group with every field once. Unbiased: group 0 the linear terms and the
    first factor of each product, group i factor i of each product, each field once."""
    from pinnlab.equations import GRADIENT, LAPLACIAN, VALUE
    from pinnlab.equations.residual import noise_groups

    assert noise_groups(_terms(), unbiased=False) == [[LAPLACIAN, VALUE, GRADIENT]]
    assert noise_groups(_terms(), unbiased=True) == [[LAPLACIAN, VALUE, GRADIENT], [VALUE, GRADIENT], [VALUE, GRADIENT]]


def test_combine_terms_by_hand_biased_and_unbiased():
    """R = Δu − u³ + ½‖∇u‖² + 3·u·‖∇u‖² − f in float64: a scalar factor times an inner
    product keeps the scalar, the inner product is a sum over coordinates (not a mean),
    coefficients other than 1 multiply, and unbiased reads factor i from group i."""
    from pinnlab.equations import GRADIENT, LAPLACIAN, VALUE
    from pinnlab.equations.residual import combine_terms

    x = torch.tensor([[0.5, 1.0], [-2.0, 0.0], [1.5, 3.0]], dtype=F64)
    lap = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    u = [torch.tensor([0.3, 1.0, -0.7], dtype=F64), torch.tensor([2.0, -1.5, 0.25], dtype=F64),
         torch.tensor([-0.5, 0.75, 1.25], dtype=F64)]
    g = [torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], dtype=F64),
         torch.tensor([[-1.0, 0.5], [2.0, 2.0], [0.25, 4.0]], dtype=F64),
         torch.tensor([[0.0, 1.0], [1.0, 1.0], [-2.0, 0.5]], dtype=F64)]
    groups = [{LAPLACIAN: lap, VALUE: u[0], GRADIENT: g[0]}, {VALUE: u[1], GRADIENT: g[1]},
              {VALUE: u[2], GRADIENT: g[2]}]
    source = torch.tensor([0.1, -0.2, 0.3], dtype=F64)
    biased = combine_terms(x, _terms(), groups, source, {}, unbiased=False)
    norm2 = (g[0] ** 2).sum(1)
    torch.testing.assert_close(biased, lap - u[0] ** 3 + 0.5 * norm2 + 3 * u[0] * norm2 - source, rtol=1e-14, atol=0)
    unbiased = combine_terms(x, _terms(), groups, source, {}, unbiased=True)
    expected = (lap - u[0] * u[1] * u[2] + 0.5 * (g[0] * g[1]).sum(1) + 3 * u[0] * (g[1] * g[2]).sum(1) - source)
    torch.testing.assert_close(unbiased, expected, rtol=1e-14, atol=0)


def test_a_number_source_enters_in_the_points_dtype():
    """A source given as a float (0.1, not a float32 number) is subtracted in float64."""
    from pinnlab.equations import VALUE, Term
    from pinnlab.equations.residual import combine_terms

    x = torch.zeros(2, 1, dtype=F64)
    u = torch.tensor([1.0, 2.0], dtype=F64)
    got = combine_terms(x, (Term(1.0, (VALUE,)),), [{VALUE: u}], 0.1, {}, unbiased=False)
    assert got.dtype == F64
    assert got.tolist() == [1.0 - 0.1, 2.0 - 0.1]


def test_a_non_polynomial_term_has_coefficient_one_by_default():
    """Nonpolynomial(sin, u) is +sin u: R = Δu + sin u − f."""
    from pinnlab.equations import LAPLACIAN, VALUE, Nonpolynomial, Term
    from pinnlab.equations.residual import combine_terms

    x = torch.zeros(3, 2, dtype=F64)
    lap = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    u = torch.tensor([0.3, 1.0, -0.7], dtype=F64)
    terms = (Term(1.0, (LAPLACIAN,)), Nonpolynomial(torch.sin, VALUE))
    got = combine_terms(x, terms, [{LAPLACIAN: lap, VALUE: u}], 0.0, {}, unbiased=False)
    torch.testing.assert_close(got, lap + torch.sin(u), rtol=1e-15, atol=0)


def test_estimate_residual_draws_one_group_per_factor_when_unbiased():
    """estimate_residual asks fields_of_group once per noise group and combines factor i
    of each product from group i: with groups that return different constants the
    unbiased residual of u·u is u₀·u₁, the biased one u₀²."""
    from pinnlab.equations import VALUE, Term
    from pinnlab.equations.residual import estimate_residual

    x = torch.zeros(2, 1, dtype=F64)
    for unbiased, expected in ((False, 4.0), (True, 6.0)):
        calls = []

        def fields_of_group(fields):
            calls.append(list(fields))  # noqa: B023
            return {f: torch.full((2,), 2.0 + len(calls) - 1, dtype=F64) for f in fields}  # noqa: B023

        got = estimate_residual(x, (Term(1.0, (VALUE, VALUE)),), fields_of_group, 0.0, {}, unbiased=unbiased)
        assert got.tolist() == [expected, expected]
        assert calls == ([[VALUE]] if not unbiased else [[VALUE], [VALUE]])
