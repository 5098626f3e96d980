"""Stream keys: every random draw is a function of (seed, names, step) and nothing else.

A training step draws collocation points and noise per chunk from
``make_generator(seed, stream, step)`` with stream names like ``noise/0`` and ``noise/1``
(same length, same characters but one): two streams must never coincide, the same key
must give the same numbers in every process and version (result files and resumed runs
replay them), and every part of the key, in its position, must count.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab._seeding import derive_seed, make_generator

F64 = torch.float64


def _draw(*parts) -> torch.Tensor:
    return torch.randn(4, generator=make_generator(*parts), dtype=F64)


def test_stream_names_of_equal_length_give_different_streams():
    """``noise/0`` and ``noise/1`` (one stream per batch chunk) differ in one character:
    a name key that kept only the length, or a character sum, made the chunks share
    their noise."""
    names = ["noise/0", "noise/1", "noise/2", "collocation", "colloactoin", "ab", "ba"]
    seeds = {name: derive_seed(3, name, 5) for name in names}
    assert len(set(seeds.values())) == len(names), seeds
    assert not torch.equal(_draw(3, "noise/0", 5), _draw(3, "noise/1", 5))


def test_every_part_of_the_key_counts_in_its_position():
    """The step, the seed and the stream all change the generator's numbers, and so does
    their order ((seed 0, step 3) is not (seed 3, step 0))."""
    base = _draw(0, "noise/0", 3)
    for other in [(1, "noise/0", 3), (0, "noise/0", 4), (0, "eval", 3), (3, "noise/0", 0), (0, "noise/0")]:
        assert not torch.equal(base, _draw(*other)), other
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed(0, "x", 3) != derive_seed(3, "x", 0)


def test_the_same_key_gives_the_same_numbers_and_a_pinned_seed():
    """Reproducible within a process and across versions: the seeds are pinned (a changed
    derivation would silently change every result file's noise and the resumed runs'
    replayed steps). The values are 63-bit non-negative integers (torch's manual_seed
    range), not truncated to 31 bits."""
    assert torch.equal(_draw(0, "collocation", 3), _draw(0, "collocation", 3))
    assert derive_seed(0, "collocation", 3) == 1064328156145855661
    assert derive_seed(1234) == 6241869594852787276
    assert derive_seed(7, "noise/0", 12) == 9075597562246709324
    seeds = [derive_seed(s, "x", k) for s in range(20) for k in range(5)]
    assert all(0 <= s < 2**63 for s in seeds) and max(seeds) >= 2**62
    torch.testing.assert_close(_draw(0, "collocation", 3)[:3],
                               torch.tensor([-0.8813381219232675, -0.02876721143809771, 0.28334403441305506],
                                            dtype=F64), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [-1, -(2**40)])
def test_negative_parts_are_refused_with_the_seed_message(bad):
    """A negative seed or step is refused by name (numpy's SeedSequence refuses it with a
    message about its own entropy argument)."""
    with pytest.raises(ValueError, match="seed parts must be non-negative"):
        derive_seed(0, "noise/0", bad)
    with pytest.raises(ValueError, match="seed parts must be non-negative"):
        make_generator(bad, "collocation")
