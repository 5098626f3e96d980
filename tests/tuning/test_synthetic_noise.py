"""synthetic_observations: noise is relative to rms(u*), ε ~ N(0, (noise·rms u*)²)."""
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import make_equation
from pinnlab.io.observations import synthetic_observations


def test_noise_is_relative_to_the_rms_of_the_exact_values():
    # Black–Scholes u* = e^{(r+σ²)(T−t)}‖x‖², x ~ U(0,2)^10: rms(u*) ≈ 20, far from 1
    eq = make_equation("black_scholes_barenblatt", 10, seed=0)
    x0, u0 = synthetic_observations(eq, 4000, noise=0.0, seed=3)
    x, u = synthetic_observations(eq, 4000, noise=0.1, seed=3)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)  # same points, noise added on top
    torch.testing.assert_close(u0, eq.exact(x0), rtol=1e-14, atol=0)
    rms = float(u0.pow(2).mean().sqrt())
    assert rms > 5
    eps = u - u0
    # sample std of 4000 normals: relative SE ≈ 1/sqrt(8000) = 1.1 %; tolerance 6 %
    ratio = float(eps.std()) / (0.1 * rms)
    assert abs(ratio - 1) < 0.06, ratio
    assert abs(float(eps.mean())) < 5 * 0.1 * rms / 4000**0.5


def test_noise_scale_is_exactly_noise_times_rms():
    """Exact version: with the draw replayed from the same keyed generator, ε = noise·rms(u*)·z
    (distinguishes rms from e.g. mean |u*|, which differ by a few % here)."""
    eq = make_equation("black_scholes_barenblatt", 10, seed=0)
    x, u = synthetic_observations(eq, 500, noise=0.1, seed=7)
    g = make_generator(7, "observations", eq.name)
    x_again = eq.sample_test(500, generator=g, dtype=torch.float64)
    torch.testing.assert_close(x_again, x, rtol=0, atol=0)
    z = torch.randn(500, generator=g, dtype=torch.float64)
    exact = eq.exact(x)
    torch.testing.assert_close(u - exact, 0.1 * exact.pow(2).mean().sqrt() * z, rtol=1e-10, atol=1e-12)
