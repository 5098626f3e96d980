"""Third mutation audit of pinnlab.io.observations and the DeepXDE adapter: the edges of
the CSV reader (indented comments, a one-row file, the line named in an error, the comma
hint), suffixes in capitals, u of shape (M, 1), unsigned integers, an archive without
arrays; and of the adapter, negative Laplacian weights, the seed and law of DeepXDE's
initialisation, the default learning rate, the test set's points and dtype, the best
error and the slices' dtype. Every check is exact or closed-form, on tiny runs."""

from __future__ import annotations

import importlib.util
import math
import re

import numpy as np
import pytest
import torch

from pinnlab.io.observations import ObservationError, load_observations, save_observations

F64 = torch.float64
ROWS = ["0.1,0.2,1.5", "0.3,0.4,2.5", "0.5,0.6,3.5"]
X = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=F64)
U = torch.tensor([1.5, 2.5, 3.5], dtype=F64)


def _csv(tmp_path, lines, name="obs.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# --- CSV ---------------------------------------------------------------------------


def test_an_indented_comment_line_is_skipped(tmp_path):
    x, u = load_observations(_csv(tmp_path, ["x0,x1,u", *ROWS[:1], "  # measured", *ROWS[1:]]), 2)
    assert torch.equal(x, X) and torch.equal(u, U)


def test_a_csv_of_one_row_is_one_observation(tmp_path):
    x, u = load_observations(_csv(tmp_path, ["x0,x1,u", ROWS[0]]), 2)
    assert x.shape == (1, 2) and torch.equal(x[0], X[0]) and torch.equal(u, U[:1])


def test_a_row_of_one_value_among_rows_of_three_gets_the_comma_hint(tmp_path):
    """Width 3, the bad row splits into 1 field: the hint names the separator."""
    path = _csv(tmp_path, [*ROWS, "0.7;0.8;4.5"])
    with pytest.raises(ObservationError, match=re.escape("line 4 has 1 values, line 1 has 3 (fields are "
                                                         "separated by commas)")):
        load_observations(path, 2)


def test_a_row_of_two_values_among_rows_of_three_gets_no_hint(tmp_path):
    path = _csv(tmp_path, [*ROWS, "0.7,4.5"])
    with pytest.raises(ObservationError, match=r"line 4 has 2 values, line 1 has 3$"):
        load_observations(path, 2)


def test_the_width_is_that_of_the_first_data_line_named_by_its_line_in_the_file(tmp_path):
    path = _csv(tmp_path, ["# a comment", "x0,x1,u", "", *ROWS, "0.7,4.5"])
    with pytest.raises(ObservationError, match=re.escape("line 7 has 2 values, line 4 has 3")):
        load_observations(path, 2)


def test_a_field_with_a_semicolon_in_a_line_with_commas_is_a_bad_value_not_a_missing_comma(tmp_path):
    path = _csv(tmp_path, ["0.1,0.2;9,1.5", *ROWS[1:]])
    with pytest.raises(ObservationError, match=re.escape("line 1, column 2: '0.2;9' is not a number "
                                                         "(fields are separated by commas)")):
        load_observations(path, 2)


def test_a_long_bad_value_is_cut_to_40_characters(tmp_path):
    bad = "y" * 60
    path = _csv(tmp_path, [f"0.1,{bad},1.5", *ROWS[1:]])
    with pytest.raises(ObservationError, match=re.escape(f"column 2: '{'y' * 40}' is not a number")):
        load_observations(path, 2)


def test_a_tab_inside_a_field_of_a_comma_separated_line_gets_the_comma_hint(tmp_path):
    path = _csv(tmp_path, [*ROWS, "0.7,0.8\t9,4.5"])
    with pytest.raises(ObservationError, match=re.escape("line 4, column 2: '0.8\\t9' is not a number "
                                                         "(fields are separated by commas)")):
        load_observations(path, 2)


def test_a_comment_in_latin_1_does_not_stop_the_reading(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_bytes("# température mesurée\n".encode("latin-1") + ("\n".join(ROWS) + "\n").encode())
    x, u = load_observations(path, 2)
    assert torch.equal(x, X) and torch.equal(u, U)


def test_blank_lines_before_the_header_are_skipped(tmp_path):
    x, u = load_observations(_csv(tmp_path, ["", "   ", "x0,x1,u", *ROWS]), 2)
    assert torch.equal(x, X) and torch.equal(u, U)


# --- formats -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".CSV", ".NPZ", ".H5", ".HDF5", ".hdf5"])
def test_a_suffix_in_capitals_or_hdf5_is_read_and_written(tmp_path, suffix):
    path = tmp_path / f"obs{suffix}"
    save_observations(path, X, U)
    x, u = load_observations(path, 2)
    assert torch.equal(x, X) and torch.equal(u, U)


def test_u_of_shape_m_by_1_is_refused(tmp_path):
    path = tmp_path / "obs.npz"
    np.savez(path, x=X.numpy(), u=U.numpy()[:, None])
    with pytest.raises(ObservationError, match=re.escape("got (3, 2) and (3, 1)")):
        load_observations(path, 2)


def test_unsigned_integer_arrays_are_read_as_float64(tmp_path):
    path = tmp_path / "obs.npz"
    np.savez(path, x=np.array([[1, 2], [3, 4]], dtype=np.uint8), u=np.array([5, 6], dtype=np.uint16))
    x, u = load_observations(path, 2)
    assert x.dtype == u.dtype == F64
    assert torch.equal(x, torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64))
    assert torch.equal(u, torch.tensor([5.0, 6.0], dtype=F64))


def test_an_archive_without_any_array_says_it_holds_none(tmp_path):
    path = tmp_path / "obs.npz"
    np.savez(path)
    with pytest.raises(ObservationError, match=re.escape("no array 'x' (it holds none)")):
        load_observations(path, 2)


def test_a_damaged_compressed_archive_is_an_observation_error(tmp_path):
    """A damaged deflate stream of np.savez_compressed raised zlib.error, a traceback."""
    import zipfile

    path = tmp_path / "obs.npz"
    np.savez_compressed(path, x=np.linspace(0, 1, 400).reshape(200, 2), u=np.linspace(0, 1, 200))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("x.npy")
    data = bytearray(path.read_bytes())
    name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length  # the deflated stream of x.npy
    data[start:start + 20] = bytes(b ^ 0xFF for b in data[start:start + 20])
    path.write_bytes(bytes(data))
    with pytest.raises(ObservationError) as info:
        load_observations(path, 2)
    assert str(info.value).startswith(f"observation file {str(path)!r}: Error -3 while decompressing data")


def test_saved_values_keep_all_float64_digits_in_every_format(tmp_path):
    x = torch.tensor([[1 / 3, math.pi], [math.e, -1e-300]], dtype=F64)
    u = torch.tensor([2 / 3, 1 + 2 ** -52], dtype=F64)
    for suffix in (".csv", ".npz", ".h5"):
        save_observations(tmp_path / f"o{suffix}", x, u)
        x2, u2 = load_observations(tmp_path / f"o{suffix}", 2)
        assert torch.equal(x2, x) and torch.equal(u2, u), suffix


# --- the DeepXDE adapter -----------------------------------------------------------

needs_deepxde = pytest.mark.skipif(importlib.util.find_spec("deepxde") is None, reason="needs deepxde")


def _solve(equation=None, **kwargs):
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    settings = dict(steps=1, width=8, depth=2, batch_size=16, test_points=50, display_every=2)
    return solve_with_deepxde(equation or PoissonTwoBody(3, seed=1), **(settings | kwargs))


@needs_deepxde
def test_another_backend_in_the_environment_is_refused(monkeypatch):
    from pinnlab.solvers.deepxde_adapter import import_deepxde

    monkeypatch.setenv("DDE_BACKEND", "tensorflow")
    with pytest.raises(RuntimeError, match="needs DDE_BACKEND=pytorch, found 'tensorflow'"):
        import_deepxde()


@needs_deepxde
def test_a_laplacian_with_negative_weights_keeps_those_columns():
    """y = x₀³ + x₁² + x₀x₁: weights −1 and −2 (and a zero column) give −6x₀ − 4 exactly."""
    from pinnlab.estimators.base import WeightedLaplacian
    from pinnlab.solvers.deepxde_adapter import _autograd_estimate, import_deepxde

    dde = import_deepxde()
    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=F64, requires_grad=True)
    y = (x[:, 0] ** 3 + x[:, 1] ** 2 + x[:, 0] * x[:, 1])[:, None]
    w = torch.tensor([-1.0, -2.0, 0.0], dtype=F64)
    (got,) = _autograd_estimate(dde, x, y, [WeightedLaplacian(w)])
    torch.testing.assert_close(got.detach(), -6 * x.detach()[:, 0] - 4, rtol=1e-12, atol=1e-12)


@needs_deepxde
def test_the_seed_fixes_deepxdes_initial_network():
    """lr = 0 leaves the initial parameters: equal for one seed, different for another."""
    a, b, c = (_solve(lr=0.0, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert not torch.equal(a.params["linears.0.weight"], c.params["linears.0.weight"])


@needs_deepxde
def test_the_initial_weights_are_glorot_normal():
    """A 64×64 layer: N(0, 2/(64+64)) weights exceed the Glorot-uniform bound √(6/128) = √3 σ
    with probability 2(1 − Φ(√3)) = 0.0833 (uniform ones never do); biases are 0."""
    result = _solve(lr=0.0, width=64, depth=3)
    w = result.params["linears.1.weight"].double()
    assert w.shape == (64, 64)
    sigma = math.sqrt(2 / 128)
    beyond = float((w.abs() > math.sqrt(3) * sigma).double().mean())
    expected = math.erfc(math.sqrt(3) / math.sqrt(2))
    assert abs(beyond - expected) < 5 * math.sqrt(expected * (1 - expected) / 4096), beyond
    assert abs(float(w.std()) / sigma - 1) < 0.06
    assert all(float(v.abs().max()) == 0.0 for k, v in result.params.items() if k.endswith("bias"))


@needs_deepxde
def test_the_default_learning_rate_is_1e_3():
    """Adam's first step moves every parameter with a gradient by lr·g/(|g| + ε) ≈ lr."""
    start, moved = _solve(lr=0.0), _solve()
    deltas = torch.cat([(moved.params[k].double() - start.params[k].double()).abs().flatten()
                        for k in start.params])
    assert float(deltas.max()) == pytest.approx(1e-3, rel=1e-3)


@needs_deepxde
def test_the_test_set_is_the_equations_seeded_one_in_float32():
    from pinnlab.equations import PoissonTwoBody

    equation = PoissonTwoBody(3, seed=1)
    result = _solve(equation, test_points=37)
    x = equation.test_set(37, dtype=torch.float32)
    assert result.test_inputs.dtype == result.test_exact.dtype == torch.float32
    assert torch.equal(result.test_inputs, x)
    assert torch.equal(result.test_exact, equation.exact_values(x).to(torch.float32))


@needs_deepxde
def test_a_given_test_set_is_taken_in_deepxdes_float32():
    x = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.4, 0.2]], dtype=F64)
    u = torch.tensor([1 / 3, 2 / 3], dtype=F64)
    result = _solve(test_set=(x, u))
    assert result.test_inputs.dtype == result.test_exact.dtype == torch.float32
    assert torch.equal(result.test_exact, u.float()) and torch.equal(result.test_inputs, x.float())


@needs_deepxde
def test_the_best_error_is_the_smallest_of_the_rows_not_the_last():
    from pinnlab.solvers.deepxde_adapter import DeepXDEResult
    from pinnlab.solvers.evaluate import Evaluation
    from pinnlab.solvers.loop import History

    history = History()
    for step, err in ((1, 0.3), (2, 0.1), (3, 0.2)):
        history.append(step=step, loss=1.0, rel_l2=err, rel_l1=err, max_err=err, lr=1e-3, mix=0.0, wall_s=0.0)
    final = Evaluation(0.2, 0.2, 0.2, torch.zeros(1))
    result = DeepXDEResult(final=final, test_inputs=torch.zeros(1, 3), test_exact=torch.zeros(1),
                           history=history, predict=lambda x: x[:, 0])
    assert result.best_rel_l2 == 0.1
    assert DeepXDEResult(final=final, test_inputs=torch.zeros(1, 3), test_exact=torch.zeros(1),
                         history=History(), predict=lambda x: x[:, 0]).best_rel_l2 == 0.2


@needs_deepxde
def test_the_slices_exact_values_are_in_the_predictions_dtype():
    from pinnlab.equations import PoissonTwoBody

    equation = PoissonTwoBody(3, seed=1)
    result = _solve(equation)
    grid, *_, pred, exact = result.slice_data(equation)
    assert pred.dtype == exact.dtype == torch.float32
    assert torch.equal(exact, equation.exact(grid.points()).float())


@needs_deepxde
def test_collocation_points_come_from_the_collocation_sampler_not_the_test_one(monkeypatch):
    """The test law is drawn only for the test set (n = test_points), never for a batch."""
    from pinnlab.equations import PoissonTwoBody

    equation = PoissonTwoBody(3, seed=1)
    sizes, sample_test = [], equation.sample_test
    monkeypatch.setattr(equation, "sample_test", lambda n, **kw: sizes.append(n) or sample_test(n, **kw))
    _solve(equation, steps=2, batch_size=16, test_points=50)
    assert sizes == [50]


@needs_deepxde
def test_the_boundary_targets_are_boundary_value_not_exact(monkeypatch):
    """An equation whose boundary_value differs from exact (as the HJB ones may): the
    PointSetBC's values are boundary_value's."""
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers.deepxde_adapter import import_deepxde

    dde = import_deepxde()
    made, point_set = [], dde.icbc.PointSetBC
    monkeypatch.setattr(dde.icbc, "PointSetBC", lambda p, v, *a, **k: made.append(v) or point_set(p, v, *a, **k))
    equation = PoissonTwoBody(3, seed=1, constraint="soft")
    monkeypatch.setattr(equation, "boundary_value", lambda x: torch.full((len(x),), 7.0, dtype=x.dtype))
    _solve(equation, boundary_points=12)
    ((values,),) = [made]
    assert values.shape == (12, 1) and (values == 7.0).all()


@needs_deepxde
def test_a_non_finite_prediction_with_finite_parameters_is_nonfinite():
    """A test point at ±inf: the parameters stay finite, the prediction there is NaN."""
    x = torch.tensor([[0.1, 0.2, 0.3], [math.inf, -math.inf, math.inf]], dtype=F64)
    result = _solve(lr=0.0, test_set=(x, torch.tensor([1.0, 2.0], dtype=F64)))
    assert all(bool(torch.isfinite(v).all()) for v in result.params.values())
    assert not bool(torch.isfinite(result.final.prediction).all())
    assert result.status == "nonfinite", (result.status, result.message)


@pytest.mark.parametrize("member, cut", [("x", 0), ("x", 5), ("u", 5)])
def test_a_member_without_the_npy_header_is_not_read_as_bytes(tmp_path, member, cut):
    """NpzFile hands back a member shorter than the .npy magic as raw bytes: it was then
    refused as "x must hold real numbers, got dtype |S1", which sent users looking at
    their numbers; now the member itself is named as no .npy array."""
    import io
    import zipfile

    buffer = io.BytesIO()
    np.save(buffer, X.numpy())
    path = tmp_path / "obs.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("x", "u"):
            archive.writestr(f"{name}.npy", buffer.getvalue()[:cut] if name == member else buffer.getvalue())
    with pytest.raises(ObservationError, match=re.escape(f"'{member}' is not an .npy array ({cut} bytes")):
        load_observations(path, 2)


def test_a_truncated_npy_member_is_an_observation_error(tmp_path):
    """A member cut inside its data: numpy's ValueError, reported in one line."""
    import io
    import zipfile

    buffer = io.BytesIO()
    np.save(buffer, X.numpy())
    path = tmp_path / "obs.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", buffer.getvalue())
        archive.writestr("u.npy", buffer.getvalue()[:-8])
    with pytest.raises(ObservationError, match="EOF: reading array data"):
        load_observations(path, 2)
