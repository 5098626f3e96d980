"""Bounded memory at any d: u*, the ansatz and the result file's slice are evaluated in
blocks of points, with the values of the one-shot computation; `(N, D)` points are checked."""

from __future__ import annotations

import importlib

import h5py
import pytest
import torch

import pinnlab
import pinnlab.equations.base as equation_base
from pinnlab import config as configuration
from pinnlab._seeding import make_generator
from pinnlab.equations import EQUATIONS, AbstractEquation, PoissonTwoBody, make_equation
from pinnlab.estimators import SteinAntithetic
from pinnlab.io import compute_slice
from pinnlab.io.results import plan_slice, slice_grid, write_solve_result
from pinnlab.losses import Biased
from pinnlab.nets import MLP
from pinnlab.solvers.evaluate import predict

F64 = torch.float64
evaluation = importlib.import_module("pinnlab.solvers.evaluate")  # pinnlab.solvers.evaluate is also a function


def _equation(name, dim=7):
    kw = {"reference_samples": 64} if name == "hjb_rosenbrock" else {}
    return make_equation(name, dim, seed=2, **kw)


def _budget(monkeypatch, elements):
    monkeypatch.setattr(equation_base, "POINT_ELEMENT_BUDGET", elements)


def _close(got, expected):
    """Equal to float64 round-off (blocks of other lengths may take other SIMD paths)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-14 * scale)


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_exact_in_blocks_equals_one_shot(name, monkeypatch):
    """exact, exact_values (float32 points, float64 values) and solution over blocks of
    3 points equal the unchunked computation (budget above the whole input)."""
    eq = _equation(name)
    x = eq.test_set(50)  # float32
    smoothed = torch.randn(50, generator=make_generator(0, "u"), dtype=F64)
    _budget(monkeypatch, 10**9)
    expected = eq.exact(x.double())
    expected_solution = eq.solution(x.double(), smoothed)
    _budget(monkeypatch, 3 * eq.input_dim)
    _close(eq.exact(x.double()), expected)
    values = eq.exact_values(x)
    assert values.dtype == F64
    _close(values, expected)
    _close(eq.solution(x.double(), smoothed), expected_solution)


class _Recording(AbstractEquation):
    """The two-body Poisson problem, recording the points its exact (and its ansatz)
    receives: (rows, elements of the storage behind them, i.e. what the caller allocated
    for them)."""

    name = "recording"
    min_dim = 2

    def __init__(self, dim):
        self.inner = PoissonTwoBody(dim, seed=0)
        self.blocks, self.ansatz_blocks = [], []
        super().__init__(dim)

    def sample_collocation(self, n, *, generator, dtype=torch.float32):
        return self.inner.sample_collocation(n, generator=generator, dtype=dtype)

    def exact(self, x, coefficients=None):
        self.blocks.append(_held(x))
        return self.inner.exact(x)

    def ansatz(self, x, coefficients):
        self.ansatz_blocks.append(x.shape[0])  # also inside the training step's transforms
        return self.inner.ansatz(x, coefficients)

    def terms(self):
        return self.inner.terms()


def _held(x):
    return x.shape[0], x.untyped_storage().nbytes() // x.element_size()


def test_exact_is_called_on_blocks_within_the_budget(monkeypatch):
    """A subclass's exact (and so the base class's boundary_value) and the ansatz behind
    solution are called on blocks of at most POINT_ELEMENT_BUDGET elements."""
    eq = _Recording(40)
    x = eq.test_set(250, dtype=F64)
    _budget(monkeypatch, 4000)  # 100 points of 40 columns
    assert eq.exact(x).shape == (250,) and eq.boundary_value(x).shape == (250,)
    assert eq.solution(x, torch.ones(250, dtype=F64)).shape == (250,)
    assert [rows for rows, _ in eq.blocks] == [100, 100, 50] * 2
    assert eq.ansatz_blocks == [100, 100, 50]


def test_no_copy_of_all_the_points_is_made(monkeypatch):
    """The test set's float64 copy for u* (exact_values, in train) and the slice's points
    (built per block, predicted and compared per block) never exist for all points at
    once: every block of points exact or predict receives is its own allocation of at
    most the budget (a whole 250×40 copy, or the 4096×40 slice matrix, was)."""
    eq = _Recording(40)
    _budget(monkeypatch, 4000)  # 100 points of 40 columns
    estimator = SteinAntithetic(sigma=0.1, num_samples=4, noise="shared")
    problem = pinnlab.PINNProblem(eq, MLP(40, width=8, depth=2), estimator, Biased())
    eq.blocks.clear()  # (PINNProblem tries a user's equation on 4 points of its own)
    result = pinnlab.train(problem, steps=1, eval_every=1, test_points=250, progress="off")
    assert eq.blocks == [(100, 4000), (100, 4000), (50, 2000)]
    assert torch.equal(eq.exact_values(result.test_inputs).float(), result.test_exact)
    eq.blocks.clear()
    predicted = []

    def recording_predict(problem, params, points, **kwargs):
        predicted.append(_held(points))
        return predict(problem, params, points, **kwargs)

    monkeypatch.setattr(evaluation, "predict", recording_predict)
    *_, pred, true = compute_slice(problem, result.params, result.test_inputs, num_samples=4)
    assert pred.shape == true.shape == (64 * 64,)
    for blocks in (eq.blocks, predicted):
        assert len(blocks) == 41 and max(held for _, held in blocks) == 4000


@pytest.mark.parametrize("noise", ["shared", "independent"])
@pytest.mark.parametrize("name", ["allen_cahn_two_body", "fokker_planck_aniso"])
def test_slice_in_blocks_equals_one_predict_call(name, noise, monkeypatch):
    """compute_slice over blocks of a few points gives what one predict call and one
    exact call on slice_grid's 4096 points give (the one-shot slice), for shared noise
    (one draw shared by every block's predict call, a SharedDraw) and independent
    noise (one draw per evaluation chunk: blocks of whole chunks continue the generator)."""
    eq = _equation(name, dim=5)
    problem = pinnlab.PINNProblem(
        eq, MLP(eq.input_dim, width=8, depth=2),
        SteinAntithetic(sigma=0.1, num_samples=4, noise=noise), Biased(),
    )
    params = problem.init_params()
    x = eq.test_set(200)
    monkeypatch.setattr(evaluation, "EVAL_ELEMENT_BUDGET", 2 * 3 * 8 * 64)  # chunks of 64 points
    inputs, grid_a, grid_b, dims, labels, inside = slice_grid(eq, x)
    expected_pred = predict(problem, params, inputs.float(), num_samples=3,
                            generator=make_generator(7, "slice"))
    expected_true = eq.exact(inputs).float()
    _budget(monkeypatch, 150 * eq.input_dim)  # 150 points a block: 128 (two chunks) when independent
    grid, *rest, pred, true = compute_slice(problem, params, x, num_samples=3, seed=7)
    assert torch.equal(grid.points(), inputs)
    assert rest[2] == dims and rest[3] == labels and torch.equal(rest[4], inside)
    assert torch.equal(rest[0], grid_a) and torch.equal(rest[1], grid_b)
    if noise == "independent":
        assert torch.equal(pred, expected_pred)
    else:  # the factorised first layer's W·x in products of other lengths: float32 round-off
        torch.testing.assert_close(pred, expected_pred, rtol=1e-6, atol=1e-6 * float(expected_pred.abs().max()))
    _close(true.double(), expected_true.double())


def test_slice_points_and_medians_match_the_one_shot_construction(monkeypatch):
    """plan_slice's base point (medians over blocks of columns) and its points, block by
    block, are those of the whole-matrix construction (meshgrid of the 1–99 % ranges,
    the other coordinates at the test set's float64 medians)."""
    eq = _equation("fokker_planck_iso", dim=9)
    x = eq.test_set(101)
    _budget(monkeypatch, 101 * 2)  # medians over 2 columns at a time
    grid = plan_slice(eq, x, points=5)
    xd = x.double()
    assert torch.equal(grid.base, xd.median(dim=0).values)
    a, b = torch.meshgrid(grid.grid_a, grid.grid_b, indexing="ij")
    whole = grid.base.repeat(25, 1)
    whole[:, 0], whole[:, -1] = a.flatten(), b.flatten()
    assert torch.equal(torch.cat([grid.points(s, s + 7) for s in range(0, 25, 7)]), whole)
    assert grid.grid_a[0] == xd[:, 0].quantile(0.01) and grid.grid_b[-1] == xd[:, -1].max()


def test_test_set_is_unchanged():
    """The test set (the result files' /eval, regenerated from the problem seed at high d)
    is the sampler's float64 draw rounded to float32, bit for bit, as before."""
    eq = make_equation("allen_cahn_two_body", 6, seed=4)
    generator = make_generator(4, "allen_cahn_two_body", "test", 30)
    z = torch.randn(30, 6, generator=generator, dtype=F64)
    r = torch.rand(30, 1, generator=generator, dtype=F64)
    assert torch.equal(eq.test_set(30), (r * (z / z.norm(dim=1, keepdim=True))).float())


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_points_of_the_wrong_width_are_refused(name):
    """exact, exact_values, solution, ansatz_jets and boundary_value name the expected
    width instead of returning a wrong-shaped value or failing inside torch."""
    eq = _equation(name, dim=4)
    wrong = torch.zeros(10, eq.input_dim - 1, dtype=F64)
    calls = [
        lambda: eq.exact(wrong),
        lambda: eq.exact_values(wrong),
        lambda: eq.solution(wrong, torch.zeros(10, dtype=F64)),
        lambda: eq.ansatz_jets(wrong),
        lambda: eq.boundary_value(wrong),
        lambda: eq.exact(torch.zeros(eq.input_dim, dtype=F64)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=rf"shape \(N, {eq.input_dim}\)"):
            call()
    with pytest.raises(ValueError, match=r"smoothed values must have shape \(10,\)"):
        eq.solution(torch.zeros(10, eq.input_dim, dtype=F64), torch.zeros(10, 1, dtype=F64))


def test_the_check_is_shape_only_under_torch_func():
    """The checks and blocks run inside torch.func transforms (soft constraints call
    boundary_value and solution in the training step)."""
    eq = PoissonTwoBody(4, seed=0)
    x = eq.test_set(5, dtype=F64)

    def loss(points):
        return (eq.solution(points, eq.boundary_value(points)) ** 2).sum()

    grad = torch.func.grad(loss)(x)
    assert grad.shape == x.shape and bool(torch.isfinite(grad).all())
    values = torch.func.vmap(lambda row: eq.exact(row[None])[0])(x)
    torch.testing.assert_close(values, eq.exact(x))


def test_result_file_peak_memory_covers_the_slice(tmp_path, monkeypatch):
    """/final peak_mem_mb is measured when the file is written (after the slice), not
    the value train() took at its end."""
    import pinnlab.solvers.loop as loop

    config = configuration.validate({
        "equation": {"name": "poisson_two_body", "dim": 3}, "model": {"width": 8, "depth": 2},
        "estimator": {"kind": "stein", "sigma": 0.1, "samples": 4}, "loss": {"kind": "biased"},
    })
    problem, _ = configuration.build(config)
    result = pinnlab.train(problem, steps=2, eval_every=2, test_points=20, progress="off")
    assert result.stats["peak_mem_mb"] > 0
    monkeypatch.setattr(loop, "peak_memory_mb", lambda device: 123456.0)
    out = tmp_path / "r.h5"
    write_solve_result(out, config=config, problem=problem, result=result,
                       slice_data=compute_slice(problem, result.params, result.test_inputs))
    with h5py.File(out) as fh:
        assert fh["final"].attrs["peak_mem_mb"] == 123456.0


@pytest.mark.parametrize("name", [n for n in sorted(EQUATIONS) if n.endswith("_body")])
def test_unit_ball_exact_is_the_value_of_exact_with_laplacian(name):
    """exact computes u* alone (no Laplacian temporaries) by the same operations as the
    forcing's exact_with_laplacian: bit for bit."""
    eq = make_equation(name, 9, seed=5)
    x = eq.test_set(40, dtype=F64)
    assert torch.equal(eq.exact(x), eq.exact_with_laplacian(x)[0])


def test_test_point_radii_are_computed_in_blocks():
    """The result file's /eval/radius and radial profile took ‖x‖ of x.double(): a float64
    copy of the whole test set, the peak of writing a d = 10⁵ result (2.9 GB against 1.7
    GB for the slice). Blocks keep the extra memory far below that copy's 800 MB here,
    with the same values."""
    from pinnlab.io.results import point_radii
    from pinnlab.solvers.loop import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")
    x = torch.randn(2000, 50_000, generator=make_generator(0, "radii"))  # 400 MB in float32
    expected = x[:7].double().norm(dim=1).numpy()
    reset_peak_memory(cpu)
    start = peak_memory_mb(cpu)
    radii = point_radii(x)
    if start > 0:  # VmHWM is readable (Linux)
        assert peak_memory_mb(cpu) - start < 200
    assert radii.dtype == "float64" and radii.shape == (2000,)
    assert (radii[:7] == expected).all()
