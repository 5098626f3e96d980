"""Tests from a fourth mutation audit of the HJB, Black–Scholes–Barenblatt and Burgers
equations: what the earlier audits left free — the Cole–Hopf clamp's absolute floor at a
horizon below 1, the Monte Carlo samples when fewer than the fewest rows of a block, the
reference cache (an entry without its dataset, a key over every
point), HJB-Rosenbrock's refusal of an unknown chain,
parameters stored as Python floats, the Black–Scholes overflow message and the published
dimensions. Every expected value is a closed form or an independent float64 computation;
all sizes are small."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import BlackScholesBarenblatt, HJBLin, HJBQuadratic, HJBRosenbrock, cole_hopf
from pinnlab.equations.hjb import _sample_blocks
from tests.equations.test_cole_hopf_memory import _cole_hopf_single_draw

F64 = torch.float64
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _square(z):
    return (z**2).sum(-1)


# -- Cole–Hopf: the float-rounding clamp never goes below 1e-6 -----------------------------------
def test_cole_hopf_clamp_keeps_an_absolute_floor_at_a_short_horizon():
    """At T = 0.01 a t above T by 5e-7 (under the slack 1e-6·max(1, T) = 1e-6) is read as T,
    so u = g exactly; 2e-6 above is refused (a slack of 1e-6·T = 1e-8 would refuse both)."""
    horizon = 0.01
    x = torch.tensor([[0.4, -1.1, horizon + 5e-7], [0.2, 0.3, 0.0]], dtype=F64)
    u = cole_hopf(_square, x, horizon=horizon, samples=16, generator=make_generator(0, "w"))
    assert abs(float(u[0]) - (0.4**2 + 1.1**2)) <= 1e-15
    late = x.clone()
    late[0, -1] = horizon + 2e-6
    with pytest.raises(ValueError, match=r"t <= T = 0.01, got t up to 0.010002"):
        cole_hopf(_square, late, horizon=horizon, samples=16, generator=make_generator(0, "w"))


# -- the reference cache: an entry without its dataset is recomputed and replaced -----------------
def test_rosenbrock_cache_entry_without_its_dataset_is_recomputed(tmp_path, monkeypatch):
    """An HDF5 file at the key's path that holds no "u" (an interrupted or foreign writer) is
    unreadable as a reference: exact() recomputes the estimate (the one of an empty cache) and
    replaces the entry, rather than raising KeyError."""
    import h5py

    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "fresh"))
    eq = HJBRosenbrock(2, seed=6, reference_samples=16)
    x = eq.sample_test(4, generator=make_generator(0, "no-dataset"), dtype=F64)
    expected = eq.exact(x)
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "damaged"))
    path = tmp_path / "damaged" / f"hjb_rosenbrock-{eq._cache_key(x)}.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as fh:
        fh["other"] = [1.0, 2.0]
    assert torch.equal(eq.exact(x), expected)
    with h5py.File(path, "r") as fh:
        assert list(fh) == ["u"] and torch.equal(torch.from_numpy(fh["u"][...]), expected)


# -- Cole–Hopf sample blocks: fewer samples than the fewest rows of a block -----------------------
def test_cole_hopf_fewer_samples_than_the_fewest_rows_form_one_block():
    """d = 1, 10 samples, chunk_elements = 5: the fewest rows of a block (16) already exceed
    the samples, so W is one block of 10 (no previous block to merge the short tail into)
    and the estimate is bit for bit the one of an unchunked call (one point per chunk)."""
    assert _sample_blocks(10, 1, 5) == [(0, 10)]
    x = torch.tensor([[0.3, 0.1], [-0.7, 0.25], [1.2, 0.0]], dtype=F64)

    def rosenbrock_1d(z):
        return 0.6 * z[..., 0] ** 2

    kw = dict(horizon=0.3, samples=10)
    u = cole_hopf(rosenbrock_1d, x, generator=make_generator(0, "w"), chunk_elements=5, **kw)
    assert torch.equal(u, cole_hopf(rosenbrock_1d, x, generator=make_generator(0, "w"), **kw))
    reference = _cole_hopf_single_draw(rosenbrock_1d, x, generator=make_generator(0, "w"), **kw)
    assert torch.allclose(u, reference, rtol=1e-14, atol=0)


# -- parameters are stored as Python floats (result files write them as JSON) ---------------------
def test_horizon_rate_and_power_are_stored_as_python_floats():
    """NumPy scalars (numbers.Real but not float) and ints given as the HJB horizon, HJB-LIN's
    power and Black–Scholes–Barenblatt's rate are stored as float(...): parameters() go into
    result files as JSON, where np.float32 fails."""
    cases = [
        (HJBQuadratic(3, horizon=np.float32(0.5)), "horizon", 0.5),
        (HJBRosenbrock(2, horizon=np.float32(0.25)), "horizon", 0.25),
        (HJBLin(3, horizon=2), "horizon", 2.0),
        (HJBLin(3, power=np.float32(1.5)), "power", 1.5),
        (HJBLin(3, power=2), "power", 2.0),
        (BlackScholesBarenblatt(3, rate=np.float32(0.25)), "rate", 0.25),
        (BlackScholesBarenblatt(3, rate=0), "rate", 0.0),
    ]
    for eq, name, value in cases:
        stored = eq.parameters()[name]
        assert type(stored) is float and stored == value, (eq.name, name)
        assert type(getattr(eq, name)) is float
        json.dumps(eq.parameters())


# -- Black–Scholes–Barenblatt: the overflow refusal's message, in one line ------------------------
def test_black_scholes_overflow_message_names_the_peak_and_the_dimension():
    """rate = 800 at d = 10: the peak is exp((800 + 0.16)·1 + log(4·10)) = exp(803.8), reached at
    x = (2, …, 2) in the 10 coordinates; the message says so, in one line (the CLI prints it
    as one config error)."""
    with pytest.raises(ValueError) as info:
        BlackScholesBarenblatt(10, rate=800)
    assert str(info.value) == (
        "rate = 800, volatility = 0.4, horizon = 1: the exact solution exp((rate + volatility²)(horizon − t))·‖x‖² "
        "reaches exp(803.8) at t = 0 (x up to 2 in each of the 10 coordinates), beyond float64's 1.8e308; "
        "lower them")


# -- HJB-Rosenbrock: the chain's refusal, the cache key over every point --------------------------
@pytest.mark.parametrize("chain", ["Disjoint", "paper", ""])
def test_rosenbrock_refuses_a_chain_it_does_not_know(chain):
    """Only "overlapping" (the code's g) and "disjoint" (the paper's): anything else is a
    ValueError naming the value, not silently the overlapping chain."""
    with pytest.raises(ValueError, match=f"^chain must be 'overlapping' or 'disjoint', got {chain!r}$"):
        HJBRosenbrock(4, chain=chain)


def test_rosenbrock_reference_cache_keys_every_point(tmp_path, monkeypatch):
    """Two point sets that agree in their first row and differ in a later one are two cache
    entries: each served reference is the one computed for its own points (the key hashes
    all N rows, not a prefix)."""
    eq = HJBRosenbrock(2, seed=3, reference_samples=16)
    x = eq.sample_test(3, generator=make_generator(0, "rows"), dtype=F64)
    y = x.clone()
    y[2, 0] += 0.5
    alone = {}
    for name, points in (("x", x), ("y", y)):
        monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / name))
        alone[name] = eq.exact(points)
    assert not torch.equal(alone["x"][2], alone["y"][2])
    monkeypatch.setenv("PINNLAB_CACHE", str(tmp_path / "shared"))
    assert torch.equal(eq.exact(x), alone["x"])
    assert torch.equal(eq.exact(y), alone["y"])
    assert len(list((tmp_path / "shared").glob("*.h5"))) == 2


# -- published dimensions (listed by `pinnlab list`) ----------------------------------------------
def test_published_dimensions_of_the_hjb_and_black_scholes_problems():
    """HJB with quadratic and Rosenbrock costs at d = 10, 20, 30, 40 (REFERENCE.md §3.4–3.5);
    HJB-LIN at 10, 100, 1000 and Black–Scholes–Barenblatt at 100, 1000, 10⁴ ([STDE]); the
    shipped configs (configs/<name>.yaml) run one of them."""
    import re

    from pinnlab.equations import EQUATIONS

    expected = {"hjb_quadratic": (10, 20, 30, 40), "hjb_rosenbrock": (10, 20, 30, 40),
                "hjb_lin": (10, 100, 1000), "black_scholes_barenblatt": (100, 1000, 10000)}
    for name, dims in expected.items():
        assert EQUATIONS[name].published_dims == dims, name
        dim = re.search(r"^equation: \{name: \w+, dim: (\d+)", (CONFIGS / f"{name}.yaml").read_text(), re.M)
        assert int(dim.group(1)) in dims, name
