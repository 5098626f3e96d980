"""Fifth audit of pinnlab.nets: sign patterns with coefficients other than ±1, perturbations
whose parts are given as scale⊙noise factors with column noise and signed scales (values and
first-layer gradients), the refusal of bad sizes, and the activation's recorded name."""

from __future__ import annotations

import pytest
import torch

from pinnlab.estimators.stein import _ScaledPerturbation
from pinnlab.nets import MLP, Perturbation

F64 = torch.float64


def _plain(net: MLP, z: torch.Tensor, activation=torch.tanh) -> torch.Tensor:
    """The network as written out by hand: affine, activation, ..., affine; `(..., D) -> (...)`."""
    h = z
    for layer in net.layers[:-1]:
        h = activation(h @ layer.weight.T + layer.bias)
    last = net.layers[-1]
    return (h @ last.weight.T + last.bias)[..., 0]


def _net(d: int = 3, seed: int = 0, **kwargs) -> MLP:
    return MLP(d, width=5, depth=3, dtype=F64, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "independent"])
def test_non_unit_coefficients_scale_their_parts(per_point):
    """Patterns (2, −½), (0, 3), (0, 0), (1, 1): the factorised first layer adds c_p·Wδ_p
    for every coefficient, not only ±1; values are the hand-written network at
    x + Σ_p c_p δ_p (the centre repeated over the K samples)."""
    n, k, d = 4, 3, 3
    g = torch.Generator().manual_seed(7)
    net = _net(d)
    x = torch.randn(n, d, generator=g, dtype=F64)
    shape = (n, k, d) if per_point else (k, d)
    d1, d2 = (torch.randn(*shape, generator=g, dtype=F64) for _ in range(2))
    patterns = ((2.0, -0.5), (0.0, 3.0), (0.0, 0.0), (1.0, 1.0))
    out = net(Perturbation(x, (d1, d2), patterns))
    assert out.shape == (n, len(patterns), k)
    e1, e2 = (d if per_point else d.expand(n, k, d.shape[-1]) for d in (d1, d2))
    for s, (c1, c2) in enumerate(patterns):
        z = x[:, None, :] + c1 * e1 + c2 * e2
        torch.testing.assert_close(out[:, s], _plain(net, z), rtol=1e-12, atol=1e-12)


def _scaled(n=4, k=3, d=3, seed=11):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    noise = (torch.randn(n, k, d, generator=g, dtype=F64), torch.randn(n, k, d, generator=g, dtype=F64))
    scales = (torch.tensor([0.7, -1.3, 0.0], dtype=F64), torch.tensor([-0.2, 0.5, -2.0], dtype=F64))
    patterns = ((1.0, 0.0), (-1.0, 1.0), (0.0, 0.0))
    explicit = torch.stack(
        [x[:, None, :] + sum(c * s * m for c, s, m in zip(pat, scales, noise)) for pat in patterns], dim=1
    )  # (N, S, K, D)
    return _ScaledPerturbation(x, noise, scales, patterns), explicit


def test_column_noise_with_signed_scales_is_the_network_at_the_explicit_inputs():
    """Parts given as factors scale⊙noise, noise `(N, K, D)` and scales of both signs: W δ_p
    is (W diag scale) noise with the signs kept, equal to the network at x + Σ c_p s_p⊙n_p."""
    net = _net()
    p, explicit = _scaled()
    out = net(p)
    assert out.shape == explicit.shape[:-1]
    torch.testing.assert_close(out, _plain(net, explicit), rtol=1e-12, atol=1e-12)


def test_gradients_through_scaled_factors_are_those_of_the_explicit_inputs():
    """The first-layer weight's gradient through (W diag scale) noise is that of the explicit
    inputs (the noise features are part of the graph, not a constant)."""
    net = _net(seed=2)
    p, explicit = _scaled(seed=5)
    weights = torch.linspace(-1.0, 1.0, explicit[..., 0].numel(), dtype=F64).reshape(explicit.shape[:-1])
    got = torch.autograd.grad((net(p) * weights).sum(), list(net.parameters()))
    want = torch.autograd.grad((_plain(net, explicit) * weights).sum(), list(net.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["input_dim", "width"])
@pytest.mark.parametrize("value", [0, True, 2.0])
def test_sizes_must_be_positive_integers(name, value):
    """input_dim and width are refused, naming themselves, when 0, a bool or a float (a
    width-0 or width-True network would otherwise be built)."""
    kwargs = {"input_dim": 3, "width": 4}
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        MLP(kwargs.pop("input_dim"), **kwargs)


def test_the_activation_name_is_recorded_and_used():
    """activation="sin": the attribute names it and the network is the sine one."""
    net = _net(activation="sin")
    assert net.activation_name == "sin" and net.activation is torch.sin
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(net(x), _plain(net, x, torch.sin), rtol=1e-12, atol=1e-12)
