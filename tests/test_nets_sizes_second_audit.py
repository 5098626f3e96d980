"""Second mutation audit of the networks (``pinnlab.nets``) and the pre-flight memory estimate
(``pinnlab.sizes``): what the earlier tests let through.

The MLP against a hand-built ``torch.nn`` reference with copied weights, on a single point
(a `(1, D)` batch is `(1,)`, not a 0-d tensor); a Pointwise function on a Perturbation whose
centre pattern comes first; a tiny run's memory moments counted term by term by hand
(bytes = numel × itemsize); the refusal's message and exit code against a monkeypatched RAM;
the sizes of a soft constraint's boundary term, of a time-dependent equation's Hessian-vector
products and of a tuning objective that a search only evaluates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pinnlab import config as C
from pinnlab import sizes as S
from pinnlab.cli import main
from pinnlab.nets import MLP, Perturbation, Pointwise
from tests.test_config_sizes_rules import RESIDUAL_TUNE, SMALL, _config  # the tiny config those rules use

F64 = torch.float64


def _moment(name: str, overrides=()) -> dict[str, S.SizedTensor]:
    return {t.what: t for t in S.memory_moments(_config(overrides))[name]}


# -- the MLP against torch.nn with copied weights ----------------------------------------------
def _reference(net: MLP) -> nn.Sequential:
    """nn.Linear(3, 5) → Tanh → nn.Linear(5, 5) → Tanh → nn.Linear(5, 1), weights copied."""
    layers = [nn.Linear(3, 5, dtype=F64), nn.Tanh(), nn.Linear(5, 5, dtype=F64), nn.Tanh(), nn.Linear(5, 1, dtype=F64)]
    with torch.no_grad():
        for ours, theirs in zip(net.layers, layers[::2]):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return nn.Sequential(*layers)


def test_mlp_of_a_single_point_is_a_vector_of_one_value():
    """(N, D) → (N,) for N = 1 too (``squeeze()`` made it a 0-d tensor), and the values are
    those of the torch.nn network with the same weights."""
    net = MLP(3, width=5, depth=3, dtype=F64, generator=torch.Generator().manual_seed(3))
    reference = _reference(net)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    out = net(x)
    assert out.shape == (1,)
    torch.testing.assert_close(out, reference(x)[:, 0], rtol=1e-13, atol=1e-13)
    # one point, one pattern, one sample of a Perturbation: (1, 1, 1)
    delta = torch.randn(1, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    p = Perturbation(x, (delta,), ((1.0,),))
    out = net(p)
    assert out.shape == (1, 1, 1)
    torch.testing.assert_close(out[0, 0, 0], reference(x + delta)[0, 0], rtol=1e-13, atol=1e-13)


# -- a pointwise function with the centre pattern first ----------------------------------------
def test_pointwise_on_a_perturbation_whose_centre_comes_first():
    """z = x + Σ c_p δ_p for every pattern in the given order, the all-zero one first:
    f(z) = ‖z‖², each pattern at its own index (not the first S' rows of all of them)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, generator=g, dtype=F64)
    delta = torch.randn(4, 2, generator=g, dtype=F64)
    patterns = ((0.0,), (1.0,), (-2.0,))
    out = Pointwise(lambda z: (z ** 2).sum(-1))(Perturbation(x, (delta,), patterns))
    assert out.shape == (3, 3, 4)
    for s, (c,) in enumerate(patterns):
        expected = ((x[:, None, :] + c * delta[None]) ** 2).sum(-1)
        torch.testing.assert_close(out[:, s], expected, rtol=0, atol=1e-14)


# -- a tiny run's memory, counted by hand ----------------------------------------------------
# SMALL: poisson_two_body, d = D = 3, width 8, depth 3 (one 8 × 8 hidden layer), Stein with
# K = 4 independent samples, batch 10, 10 test points, adam, float32 (4-byte values)
HELD = (8 * 3 * 4            # the first layer as build makes it (float32)
        + 8 * 8 * 4          # the hidden layer
        + 3 * 8 * 3 * 4      # θ and adam's two moments of the first layer
        + 3 * 8 * 8 * 4)     # and of the hidden layer
TRAINING_STEP = (HELD
                 + 10 * 3 * 4            # the test set
                 + 10 * 3 * 4            # the step's points
                 + 10 * 4 * 3 * 4        # the (N, K, D) noise draw
                 + 2 * 10 * 2 * 4 * 8 * 4)  # (N, 2, K, w) activations of each of the 2 hidden layers


def test_every_moment_of_a_tiny_run_counted_by_hand():
    moments = S.memory_moments(_config())
    totals = {name: sum(t.nbytes for t in tensors) for name, tensors in moments.items()}
    assert HELD == 1408 and TRAINING_STEP == 7248
    assert totals == {
        "drawing the test set": HELD + 10 * 3 * 8 + 10 * 3 * 4,  # float64 draw and its float32 copy
        "a training step": TRAINING_STEP,
        # one point at a time, K = 4 samples, no graph: one layer's activations
        "an evaluation": HELD + 10 * 3 * 4 + 1 * 4 * 3 * 4 + 1 * 2 * 4 * 8 * 4,
    }


def test_the_refusal_names_the_bound_the_memory_and_the_largest_part(monkeypatch):
    """One byte short of the hand-counted need: refused with both sizes in KiB, the moment,
    the largest part with its shape, copies and bytes, and the settings to lower."""
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", TRAINING_STEP - 1))
    with pytest.raises(C.ConfigError) as info:
        S.check_sizes(_config())
    assert str(info.value) == (
        "this run needs at least 7.08 KiB of memory at once, more than this machine's 7.08 KiB of RAM "
        "(a training step; the largest part: the hidden activations of a training step, 10 × 2 × 4 × 8 values × 2, "
        "5 KiB); the sizes are too large for this machine; lower trainer.batch_size (or raise "
        "trainer.batch_chunks), estimator.samples, model.width, model.depth")
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", TRAINING_STEP))
    S.check_sizes(_config())


def test_the_cli_refuses_a_run_beyond_a_small_ram_with_exit_code_2(tmp_path, monkeypatch, capsys):
    import yaml

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "run.h5"
    monkeypatch.setattr(S, "machine_memory", lambda device: ("RAM", TRAINING_STEP - 1))
    code = main(["solve", str(path), "-o", str(out), "--progress", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("pinnlab: error: config error: this run needs at least 7.08 KiB of memory at once, "
                             "more than this machine's 7.08 KiB of RAM (a training step;")
    assert not out.exists()


# -- the boundary term, a time input's Hessian-vector products, a search's objective ------------
def test_a_soft_constraints_boundary_term_keeps_every_hidden_layer_for_the_backward_pass():
    """The boundary term is differentiated in the training step: at depth 4 its (B, 2, K, w)
    activations of all 3 hidden layers are kept, as the residual's are."""
    step = _moment("a training step", ["equation.constraint=soft", "model.depth=4", "loss.boundary_points=6"])
    boundary = step["the hidden activations of the boundary term"]
    assert (boundary.shape, boundary.copies) == ((6, 2, 4, 8), 3)
    assert boundary.nbytes == 3 * 6 * 2 * 4 * 8 * 4
    assert step["the noise draw ξ of the boundary term"].shape == (6, 4, 3)


def test_a_time_dependent_equations_hessian_vector_products_are_at_most_d_not_d_plus_1():
    """burgers at d = 3 has D = 4 inputs but d = 3 spatial second derivatives: a batch of
    3 products of (N, D), not 4."""
    step = _moment("a training step", ["equation.name=burgers", "estimator.kind=autograd"])
    hvp = step["the Hessian-vector products of a training step"]
    assert hvp.shape == (3, 10, 4) and hvp.nbytes == 3 * 10 * 4 * 4


def test_a_search_evaluates_its_objective_a_chunk_at_a_time():
    """random search only evaluates the objective, in chunks of estimator.chunk_size points
    (16 of 100), one layer's activations; a hypergradient method differentiates it at all
    100 points with every hidden layer kept."""
    overrides = [*RESIDUAL_TUNE, "estimator.chunk_size=16", "tune.objective.points=100", "tune.objective.samples=4"]
    search = _moment("the tuning objective", [*overrides, "tune.method=random"])
    activations = search["the hidden activations of the tuning objective"]
    assert (activations.shape, activations.copies) == ((16, 2, 4, 8), 1)
    assert search["the noise draw ξ of the tuning objective"].shape == (16, 4, 3)
    graph = _moment("the tuning objective", overrides)
    activations = graph["the hidden activations of the tuning objective"]
    assert (activations.shape, activations.copies) == ((100, 2, 4, 8), 2)


# -- the centre is a pattern that is zero in every part, not only the first ------------------------
def test_a_pattern_zero_in_its_first_part_only_is_no_centre():
    """(0, 1) moves by δ₂: it is x + δ₂ for every sample, not f(x); (0, 0) is f(x). The MLP
    and a Pointwise function both against the torch.nn network / closed form on explicit inputs."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, generator=g, dtype=F64)
    parts = (torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64))
    patterns = ((0.0, 1.0), (0.0, 0.0), (1.0, 0.0))
    p = Perturbation(x, parts, patterns)
    net = MLP(3, width=5, depth=3, dtype=F64, generator=torch.Generator().manual_seed(9))
    reference = _reference(net)
    explicit = [x[:, None] + parts[1], x[:, None].expand(2, 4, 3), x[:, None] + parts[0]]
    out, squares = net(p), Pointwise(lambda z: (z ** 2).sum(-1))(p)
    assert out.shape == squares.shape == (2, 3, 4)
    for s, z in enumerate(explicit):
        torch.testing.assert_close(out[:, s], reference(z)[..., 0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(squares[:, s], (z ** 2).sum(-1), rtol=0, atol=1e-14)


def test_the_nets_package_exports_its_five_names():
    """A name dropped from ``pinnlab.nets.__all__`` vanishes from star imports and the API docs."""
    import pinnlab.nets

    assert sorted(pinnlab.nets.__all__) == ["ACTIVATIONS", "MLP", "Perturbation", "Pointwise", "evaluate_pointwise"]
    namespace: dict = {}
    exec("from pinnlab.nets import *", namespace)
    assert namespace["Pointwise"] is Pointwise and namespace["MLP"] is MLP
