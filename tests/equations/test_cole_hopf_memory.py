"""Cole–Hopf Monte Carlo in bounded memory: W drawn in blocks, same stream as one draw."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import HJBRosenbrock, cole_hopf
from pinnlab.equations.hjb import _sample_blocks

F64 = torch.float64


def _cole_hopf_single_draw(terminal, x, *, horizon, samples, generator, chunk_elements=2**24):
    """The implementation before W was drawn in blocks (one (samples, d) draw), kept
    verbatim as the reference the published-size results must reproduce bit for bit."""
    x = x.double()
    d = x.shape[1] - 1
    t = x[:, -1]
    w = torch.randn(samples, d, generator=generator, dtype=torch.float64)
    space, scale = x[:, :-1], torch.sqrt((2 * (horizon - t)).clamp_min(0))
    per_point = max(1, chunk_elements // (samples * d))
    sample_chunk = max(1, min(samples, chunk_elements // d))
    out = []
    for start in range(0, x.shape[0], per_point):
        xs, ss = space[start : start + per_point], scale[start : start + per_point]
        partial = []
        for m in range(0, samples, sample_chunk):
            wm = w[m : m + sample_chunk]
            z = xs[:, None, :] + ss[:, None, None] * wm[None]
            partial.append(torch.logsumexp(-terminal(z), dim=1))
        total = torch.logsumexp(torch.stack(partial, dim=1), dim=1)
        out.append(-(total - math.log(samples)))
    return torch.cat(out)


@pytest.mark.parametrize("dim", [1, 2, 3, 7, 10, 15, 16, 40, 41, 1001])
@pytest.mark.parametrize("samples,chunk_elements", [(1000, 160), (333, 97), (17, 16), (1000, 1), (50, 10**6)])
def test_blocks_reproduce_one_draw_bit_for_bit(dim, samples, chunk_elements):
    """Drawing W block by block from one generator gives exactly torch.randn(samples, d):
    blocks of a multiple of 16 numbers, a short tail merged (a tail under 16 numbers is
    drawn by another code path). Fails if torch.randn's CPU fill ever changes."""
    blocks = _sample_blocks(samples, dim, chunk_elements)
    assert blocks[0][0] == 0 and blocks[-1][1] == samples
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(blocks, blocks[1:]))
    fewest = 16 // math.gcd(dim, 16)
    for start, stop in blocks[:-1]:
        assert (stop - start) * dim % 16 == 0
        assert (stop - start) * dim <= max(chunk_elements, fewest * dim)
    assert (blocks[-1][1] - blocks[-1][0]) * dim <= max(chunk_elements, fewest * dim) + 16
    g = make_generator(5, "blocks")
    drawn = torch.cat([torch.randn(b - a, dim, generator=g, dtype=F64) for a, b in blocks])
    assert torch.equal(drawn, torch.randn(samples, dim, generator=make_generator(5, "blocks"), dtype=F64))


def test_a_tail_under_16_numbers_is_merged():
    assert _sample_blocks(1000, 1, 160)[-2:] == [(800, 960), (960, 1000)]  # a 40-number tail stays
    assert _sample_blocks(1000, 1, 496)[-1] == (496, 1000)  # 1000 = 2·496 + 8: the 8 join the last block


def _draw_sizes(monkeypatch):
    """Record the numel of every torch.randn call (sizes["z"] is left to the caller)."""
    sizes = {"w": [], "z": []}
    randn = torch.randn

    def recording_randn(*shape, **kwargs):
        out = randn(*shape, **kwargs)
        sizes["w"].append(out.numel())
        return out

    monkeypatch.setattr(torch, "randn", recording_randn)
    return sizes


def test_memory_is_bounded_by_chunk_elements(monkeypatch):
    """No (samples, d) draw of W and no points × samples × d chunk above chunk_elements:
    the old code drew all of W at once (2·10⁵ × 10⁴ numbers = 16 GB at d = 10⁴)."""
    dim, samples, chunk = 64, 4096, 2**12
    eq = HJBRosenbrock(dim, seed=1)
    x = eq.test_set(5, dtype=F64)
    sizes = _draw_sizes(monkeypatch)

    def terminal(z):
        sizes["z"].append(z.numel())
        return eq.terminal_value(z)

    u = cole_hopf(terminal, x, horizon=eq.horizon, samples=samples,
                  generator=make_generator(0, "w"), chunk_elements=chunk)
    monkeypatch.undo()
    assert sum(sizes["w"]) == samples * dim and max(sizes["w"]) <= chunk
    assert max(sizes["z"]) <= chunk
    reference = _cole_hopf_single_draw(eq.terminal_value, x, horizon=eq.horizon, samples=samples,
                                       generator=make_generator(0, "w"), chunk_elements=chunk)
    assert torch.equal(u, reference)  # d = 64: blocks as large as before, same sums


@pytest.mark.parametrize("dim", [10, 40])
def test_published_sizes_are_bit_identical_to_the_single_draw(dim, tmp_path, monkeypatch):
    """At the published dimensions (d ≤ 40, 2·10⁵ samples: W fits one block) exact() gives
    the very numbers of the single-draw code, so published results and cached references
    stay valid."""
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path))
    eq = HJBRosenbrock(dim, seed=1)
    x = eq.test_set(2, dtype=F64)
    reference = _cole_hopf_single_draw(eq.terminal_value, x, horizon=eq.horizon,
                                       samples=eq.reference_samples,
                                       generator=make_generator(eq.seed, eq.name, "cole-hopf"))
    assert torch.equal(eq.exact(x), reference)


@pytest.mark.parametrize("dim,chunk", [(16, 2**12), (10, 2**10), (7, 500), (3, 100)])
def test_blocked_sums_match_the_single_draw(dim, chunk):
    """Several blocks: the same W, so the same estimate; bit for bit when the blocks are
    the old sample chunks (16 | d), else up to the rounding of the log-sum-exp grouping."""
    eq = HJBRosenbrock(dim, seed=2)
    x = eq.test_set(7, dtype=F64)
    kw = dict(horizon=eq.horizon, samples=3000, chunk_elements=chunk)
    u = cole_hopf(eq.terminal_value, x, generator=make_generator(1, "w"), **kw)
    reference = _cole_hopf_single_draw(eq.terminal_value, x, generator=make_generator(1, "w"), **kw)
    if dim % 16 == 0:
        assert torch.equal(u, reference)
    torch.testing.assert_close(u, reference, rtol=1e-13, atol=1e-13)


def test_no_points_draw_nothing(monkeypatch):
    sizes = _draw_sizes(monkeypatch)
    u = cole_hopf(lambda z: (z**2).sum(-1), torch.zeros(0, 11, dtype=F64), horizon=1.0,
                  samples=10**6, generator=make_generator(0, "w"))
    assert u.shape == (0,) and u.dtype == F64 and sizes["w"] == []
