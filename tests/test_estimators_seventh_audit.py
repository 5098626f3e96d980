"""Estimators, seventh audit: what the earlier audits of base, autograd, Hutchinson and
Stein left to chance.

- Autograd answers every Gradient query of one call from one backward pass.
- Hutchinson draws its probes only when a second-order query asks for them, and its
  refusal of an unknown noise mode quotes the value given.
- A shared-noise evaluation without an estimator chunk_size takes the chunks it is asked
  for, above 1024 points too.
- ξ² − 1 is formed 2²² elements at a time (16 MB in float32), as documented.
- A SharedDraw compares σ exactly (a σ one part in 10⁷ away is another σ), takes σ in
  any of its accepted forms (float, 0-d, `(1,)`, `(D,)`) as the one σ they all mean, and
  its refusal says what it was drawn for and what it is asked for.
- Stein's refusals of a σ of another type and of points that are not `(N, D)` name the
  type and value, and the shape as a tuple.
- BUG (xfail): a refusal of a `(D,)` σ prints it with torch's repr, over many lines at D = 100.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators import (
    Autograd,
    Directional,
    Gradient,
    Hutchinson,
    SteinAntithetic,
    Value,
)
from pinnlab.estimators.stein import CURVATURE_BLOCK, SharedDraw
from pinnlab.nets import Pointwise

F64 = torch.float64


def _points(n, d, seed=3):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _square():
    return Pointwise(lambda z: (z**2).sum(-1))


class _Sizes(torch.nn.Module):
    """f = ‖z‖², recording how many points each call evaluates."""

    def __init__(self):
        super().__init__()
        self.inner, self.points = _square(), []

    def forward(self, inputs):
        center = inputs if isinstance(inputs, torch.Tensor) else inputs.center
        self.points.append(center.shape[0])
        return self.inner(inputs)


class _Counting(torch.nn.Module):
    """f = ½‖z‖² + Σ_j sin z_j, counting its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        return 0.5 * (z**2).sum(-1) + torch.sin(z).sum(-1)


def test_autograd_answers_repeated_gradient_queries_from_one_backward_pass():
    """Autograd: "Gradient: one backward pass": two Gradient queries in one call run the
    model once between them (the gradient is kept for the second), both x + cos x."""
    model = _Counting()
    x = _points(4, 3)
    first, second = Autograd().estimate(model, x, [Gradient(), Gradient()])
    assert model.calls == 1
    expected = x + torch.cos(x)
    torch.testing.assert_close(first, expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(second, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_hutchinson_first_order_queries_leave_the_generator_untouched(noise):
    """Value, gradient and a·∇f are exact autograd: a call asking only for them draws no
    Rademacher probe, so the generator's stream is where it was (later draws unchanged)."""
    x = _points(3, 4)
    f = Pointwise(lambda z: 0.5 * (z**2).sum(-1))
    generator = torch.Generator().manual_seed(7)
    Hutchinson(num_probes=3, noise=noise).estimate(
        f, x, [Value(), Gradient(), Directional(torch.ones(4, dtype=F64))], generator=generator)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(7).get_state())


def test_hutchinson_unknown_noise_message_quotes_the_value():
    """The refusal names the value as Python would write it, quotes included."""
    with pytest.raises(ValueError, match=r"^noise must be 'independent' or 'shared', got 'both'$"):
        Hutchinson(noise="both")


def test_a_shared_draw_refuses_a_sigma_a_little_off_the_drawn_one():
    """"Every call must have the first's ... σ (checked)": σ = 0.1·(1 + 10⁻⁷) is another
    smoothing (not within a tolerance of the first), so the draw refuses to serve it."""
    x = _points(4, 3)
    est = SteinAntithetic(sigma=0.1, num_samples=4, noise="shared")
    draw = SharedDraw()
    est.evaluate(_square(), x[:2], generator=torch.Generator().manual_seed(1), draw=draw)
    with pytest.raises(ValueError, match="SharedDraw serves"):
        est.evaluate(_square(), x[2:], generator=None, draw=draw, sigma=0.1 * (1 + 1e-7))


@pytest.mark.parametrize("later", [0.25, torch.tensor(0.25, dtype=F64), torch.tensor([0.25], dtype=F64),
                                   torch.full((3,), 0.25, dtype=F64)], ids=["float", "0-d", "(1,)", "(D,)"])
@pytest.mark.parametrize("first", [0.25, torch.tensor([0.25], dtype=F64)], ids=["float", "(1,)"])
def test_a_shared_draw_serves_one_sigma_in_each_of_its_forms(first, later):
    """A scalar σ, a `(1,)` σ and a `(D,)` σ of equal entries are one σ (broadcast to every
    column): a draw made at one serves a call at another, with the values of one call on
    all the points, ‖x‖² + (1/K)Σ_k ‖σξ_k‖² for f = ‖z‖²."""
    x = _points(5, 3)
    est = SteinAntithetic(sigma=first, num_samples=4, noise="shared")
    draw = SharedDraw()
    head = est.evaluate(_square(), x[:2], generator=torch.Generator().manual_seed(4), draw=draw)
    tail = est.evaluate(_square(), x[2:], generator=None, draw=draw, sigma=later)
    xi = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    want = (x**2).sum(-1) + ((0.25 * xi) ** 2).sum(-1).mean()
    torch.testing.assert_close(torch.cat([head, tail]), want, rtol=1e-13, atol=1e-13)


def _refuse_a_bad_entry(d):
    sigma = torch.full((d,), 0.1, dtype=F64)
    sigma[3] = -1.0
    SteinAntithetic(sigma=sigma)


def _refuse_another_sigma(d):
    x, draw = torch.zeros(2, d, dtype=F64), SharedDraw()
    est = SteinAntithetic(sigma=torch.full((d,), 0.1, dtype=F64), num_samples=2, noise="shared")
    est.evaluate(_square(), x, generator=torch.Generator().manual_seed(0), draw=draw)
    est.evaluate(_square(), x, generator=None, draw=draw, sigma=torch.full((d,), 0.2, dtype=F64))


@pytest.mark.parametrize("refuse", [_refuse_a_bad_entry, _refuse_another_sigma], ids=["bad entry", "shared draw"])
def test_a_per_coordinate_sigma_refusal_is_one_line(refuse):
    """A `(D,)` σ at D = 100 (σ per coordinate, time included) with a negative entry, or
    another σ asked of a SharedDraw, is refused in one line, as every other estimator
    refusal (σ's 100 entries wrapped over many lines are not a clear message)."""
    with pytest.raises(ValueError, match="sigma must be finite|SharedDraw serves") as caught:
        refuse(100)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("sigma", "shown"), [("0.1", "str '0.1'"), ([0.1, 0.2], "list [0.1, 0.2]"),
                                              (None, "NoneType None")])
def test_a_sigma_of_another_type_is_refused_naming_its_type_and_value(sigma, shown):
    """σ must be a float or a tensor: a string, a list or None is a TypeError that says
    which type it got and what it was (a list is not taken as per-coordinate σ)."""
    with pytest.raises(TypeError, match=r"^sigma must be a float or a tensor, got ") as caught:
        SteinAntithetic(sigma=sigma)
    assert str(caught.value).endswith(f"got {shown}")


@pytest.mark.parametrize("call", ["estimate", "shared evaluate"])
@pytest.mark.parametrize("shape", [(5,), (2, 5, 1)])
def test_stein_refuses_points_that_are_not_a_matrix_with_their_shape(call, shape):
    """x must be `(N, D)`: a vector or a 3-d tensor of points is refused by the estimate and
    by the shared-noise evaluation (which checks before it draws) with the shape as a tuple."""
    x = torch.zeros(shape, dtype=F64)
    est = SteinAntithetic(sigma=0.1, num_samples=2, noise="shared")
    run = (lambda: est.estimate(_square(), x, [Value()], generator=None)) if call == "estimate" else (
        lambda: est.evaluate(_square(), x, generator=None))
    with pytest.raises(ValueError, match=r"^x must be a \(N, D\) tensor of points, got shape ") as caught:
        run()
    assert str(caught.value).endswith(f"got shape {shape}")


def test_a_shared_noise_evaluation_takes_chunks_larger_than_1024_when_asked():
    """evaluate(chunk_size=c) takes c points at a time, bounded only by the estimator's own
    chunk_size (None here): 1500 points in chunks of 2000 are one call, in chunks of 1100
    two calls (1100, 400), not chunks of the base default 1024."""
    x = torch.zeros(1500, 2, dtype=F64)
    est = SteinAntithetic(sigma=0.1, num_samples=2, noise="shared")
    for chunk_size, calls in ((2000, [1500]), (1100, [1100, 400])):
        model = _Sizes()
        est.evaluate(model, x, generator=torch.Generator().manual_seed(0), chunk_size=chunk_size)
        assert model.points == calls


def test_curvature_blocks_are_the_documented_sixteen_megabytes_of_float32():
    """CURVATURE_BLOCK: "Elements of ξ² − 1 formed at a time for independent noise (16 MB
    in float32)": 2²² elements of 4 bytes."""
    assert CURVATURE_BLOCK == 2**22
    assert CURVATURE_BLOCK * torch.finfo(torch.float32).bits // 8 == 16 * 2**20


def test_a_shared_draw_refusal_names_the_drawn_and_the_asked_configuration():
    """The refusal gives both sides (K, time smoothing, width, dtype, device and σ), so the
    user sees which one differs: here K = 4 drawn, 5 asked."""
    x = _points(2, 3)
    draw = SharedDraw()
    SteinAntithetic(sigma=0.5, num_samples=4, noise="shared").evaluate(
        _square(), x, generator=torch.Generator().manual_seed(0), draw=draw)
    with pytest.raises(ValueError, match="SharedDraw serves") as caught:
        SteinAntithetic(sigma=0.5, num_samples=5, noise="shared").evaluate(_square(), x, generator=None, draw=draw)
    message = str(caught.value)
    cpu = torch.device("cpu")
    assert f"drawn for {(4, 'joint', 3, F64, cpu)} at σ (0.5, 0.5, 0.5)" in message
    assert message.endswith(f"asked for {(5, 'joint', 3, F64, cpu)} at σ (0.5, 0.5, 0.5)")
    assert "\n" not in message
