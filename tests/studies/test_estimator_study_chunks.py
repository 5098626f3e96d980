"""``estimator.chunk_size`` bounds an estimator study's gradient quantity too.

The gradient was taken by autograd through the chunked estimator, which keeps every
chunk's graph until the backward pass: chunking raised its memory (2.4 → 3.8 GB at
d = 2000). Each chunk's loss, scaled by its share of the points, is now back-propagated
before the next chunk's forward pass. In float64 that equals the gradient of the same
draws taken in one piece; with shared noise the draws are those of an unchunked study,
with independent noise they are fresh per chunk, so there only the distribution agrees.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.config import ModelSection, make_network
from pinnlab.equations import make_equation
from pinnlab.estimators import SteinAntithetic
from pinnlab.studies.estimator_study import (
    EstimatorStudySpec,
    _Quantities,
    _stein,
    run_estimator_study,
)

POINTS, CHUNK = 7, 3  # three chunks, the last one short


def _problem(name: str, time_smoothing: str = "joint"):
    spec = EstimatorStudySpec(equation=name, dims=(3,), samples=(4,), sigmas=(0.1,), width=8, depth=2,
                              chunk_size=CHUNK, time_smoothing=time_smoothing)
    equation = make_equation(name, 3, seed=0)
    net = make_network(ModelSection(width=8, depth=2), equation.input_dim, seed=0, dtype=torch.float64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = equation.sample_collocation(POINTS, generator=make_generator(0, "points"), dtype=torch.float64)
    return spec, equation, _Quantities(equation, net, params, x)


def _flat(grad: dict) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grad.values()])


CASES = [  # burgers: u·∇u, two noise groups per unbiased residual, time as the last input
    ("burgers", "joint"), ("burgers", "independent"), ("allen_cahn_two_body", "joint"),
]


def _in_one_piece(quantities, estimator, kind):
    """∇_θ and value of Σ_c (N_c/N)·L̂_c, every chunk's loss in one autograd graph, the
    chunks' independent draws one after the other from one generator."""
    single = dataclasses.replace(estimator, chunk_size=None)
    generator = make_generator(1, "draws")

    def loss(params):
        parts = [quantities.loss(params, single, generator, kind, quantities.x[start : start + CHUNK])
                 for start in range(0, POINTS, CHUNK)]
        return sum(part * (len(r) / POINTS) for part, r in parts)

    grad, value = torch.func.grad_and_value(loss)(quantities.params)
    return _flat(grad), value, generator


@pytest.mark.parametrize("name, time_smoothing", CASES)
@pytest.mark.parametrize("noise", ["independent", "shared"])
@pytest.mark.parametrize("kind", ["biased", "unbiased"])
def test_the_gradient_accumulated_over_chunks_is_the_gradient_of_its_draws(name, time_smoothing, noise, kind):
    """Against the same draws differentiated in one piece: the chunks' own draws one after
    the other (independent noise), the unchunked study's (shared noise, one ξ per noise
    group). The gradient agrees to 1e-12; the loss, the residual and the generator's final
    state are those of the loss quantity, bit for bit."""
    spec, equation, quantities = _problem(name, time_smoothing=time_smoothing)
    estimator = _stein(spec, equation, 0.1, 4, noise)
    generator = make_generator(1, "draws")
    out = quantities.all(estimator, generator, kind, ("gradient",))

    if noise == "independent":
        grad, loss, reference = _in_one_piece(quantities, estimator, kind)
    else:
        reference = make_generator(1, "draws")
        whole = quantities.all(dataclasses.replace(estimator, chunk_size=None), reference, kind, ("gradient",))
        grad, loss = whole["gradient"], whole["loss"]
    torch.testing.assert_close(out["gradient"], grad, rtol=1e-12, atol=1e-12 * float(grad.abs().max()))
    torch.testing.assert_close(out["loss"], loss.reshape(1), rtol=1e-12, atol=0)
    assert torch.equal(generator.get_state(), reference.get_state())

    plain = make_generator(1, "draws")
    without = quantities.all(estimator, plain, kind, ("loss",))
    assert torch.equal(out["loss"], without["loss"]) and torch.equal(out["residual"], without["residual"])
    assert torch.equal(generator.get_state(), plain.get_state())


def test_with_independent_noise_the_chunked_gradient_has_the_unchunked_mean():
    """Independent noise is drawn chunk by chunk, so the noise per point differs from an
    unchunked draw (here 3·K·D = 36 normals per chunk: torch's generator does not split
    into the same numbers). Probabilistic, fixed seeds: over R = 40 replicates each, the
    mean gradients agree within 5 standard errors in every coordinate."""
    spec, equation, quantities = _problem("allen_cahn_two_body")
    chunked = _stein(spec, equation, 0.1, 4, "independent")
    whole = dataclasses.replace(chunked, chunk_size=None)
    draws = {name: torch.stack([quantities.all(est, make_generator(3, name, i), "unbiased", ("gradient",))["gradient"]
                                for i in range(40)])
             for name, est in (("chunked", chunked), ("whole", whole))}
    first = quantities.all(whole, make_generator(3, "chunked", 0), "unbiased", ("gradient",))["gradient"]
    assert not torch.allclose(draws["chunked"][0], first)  # the chunks' noise is not the unchunked noise
    se = torch.sqrt(draws["chunked"].var(0) / 40 + draws["whole"].var(0) / 40)
    z = (draws["chunked"].mean(0) - draws["whole"].mean(0)) / se
    assert float(z.abs().max()) < 5, z


def test_a_study_with_chunk_size_never_differentiates_more_than_a_chunk(monkeypatch):
    """Every estimate made under autograd covers at most ``chunk_size`` points, the
    reference's included (the whole batch was differentiated at once, with every chunk's
    graph alive until the backward)."""
    calls = []
    real = SteinAntithetic.estimate

    def spy(self, model, x, queries, **kwargs):
        calls.append((x.shape[0], torch.is_grad_enabled(), self.num_samples))
        return real(self, model, x, queries, **kwargs)

    monkeypatch.setattr(SteinAntithetic, "estimate", spy)
    spec = EstimatorStudySpec(equation="allen_cahn_two_body", dims=(3,), samples=(4,), sigmas=(0.1,),
                              noise=("independent",), quantities=("gradient",), losses=("biased",), replicates=3,
                              points=POINTS, reference_samples=8, reference_replicates=3, width=8, depth=2,
                              chunk_size=CHUNK)
    records = run_estimator_study(spec)["records"]
    assert [r["quantity"] for r in records] == ["gradient"]
    with_grad = [(n, k) for n, grad, k in calls if grad]
    assert {k for _, k in with_grad} == {4, 8}  # the studied estimator and the reference
    assert max(n for n, _ in with_grad) <= CHUNK


def _peak_saved_bytes(run) -> int:
    """Peak bytes of the tensors autograd holds for backward passes while ``run()`` runs."""
    live = [0, 0]

    class Saved:
        def __init__(self, tensor):
            self.tensor, self.size = tensor, tensor.numel() * tensor.element_size()
            live[0] += self.size
            live[1] = max(live[1], live[0])

        def __del__(self):
            live[0] -= self.size

    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
        run()
    return live[1]


@pytest.mark.parametrize("noise", ["independent", "shared"])
def test_the_gradients_autograd_memory_is_one_chunks(noise):
    """12 points in 4 chunks: what autograd keeps for the backward pass peaks at a quarter
    of what the same loss keeps differentiated in one piece (the chunked estimate kept
    every chunk's graph until the backward pass)."""
    spec, equation, quantities = _problem("allen_cahn_two_body")
    quantities.x = equation.sample_collocation(12, generator=make_generator(0, "points"), dtype=torch.float64)
    estimator = _stein(spec, equation, 0.1, 32, noise)
    chunked = _peak_saved_bytes(lambda: quantities.all(estimator, make_generator(4), "unbiased", ("gradient",)))

    params = {k: v.clone().requires_grad_() for k, v in quantities.params.items()}
    single = dataclasses.replace(estimator, chunk_size=None)

    def in_one_piece():
        loss, _ = quantities.loss(params, single, make_generator(4), "unbiased")
        torch.autograd.grad(loss, list(params.values()))

    assert chunked < 0.3 * _peak_saved_bytes(in_one_piece)
