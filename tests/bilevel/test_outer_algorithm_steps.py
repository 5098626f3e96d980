"""One outer step of Penalty and F²SA against hand-written gradient descent (float64).

The convergence tests (γ, λ → ∞) cannot see a step size off by a constant, an iterate
moved with the other one's step, or ∇_φ f taken at the wrong iterate: here f depends on
θ and φ jointly (f = ½‖θ − Mφ‖²), lr_y ≠ lr_z, and every iterate and the returned
φ-gradient are pinned to 1e-12. The divergence watch is pinned where the first gradient
is exactly 0 and where a gradient is NaN.
"""

from __future__ import annotations

import pytest
import torch

from pinnlab.bilevel import F2SA, Penalty, from_inner_loss
from pinnlab.bilevel.penalty import LowerLevelDivergence
from pinnlab.solvers import SGD

F64 = torch.float64
GEN = torch.Generator().manual_seed(3)
ROOT = torch.randn(3, 3, generator=GEN, dtype=F64)
A = ROOT @ ROOT.T / 3 + torch.eye(3, dtype=F64)
B = torch.randn(3, 2, generator=GEN, dtype=F64)
M = torch.randn(3, 2, generator=GEN, dtype=F64)
THETA0 = torch.randn(3, generator=GEN, dtype=F64)
PHI = {"a": torch.tensor([0.6, -0.4], dtype=F64)}


def _problem():
    """g = ½θᵀAθ − θᵀBa (∇_θ g = Aθ − Ba, ∇_φ g = −Bᵀθ), f = ½‖θ − Ma‖² (∇_θ f = θ − Ma,
    ∇_φ f = −Mᵀ(θ − Ma))."""

    def inner(theta, phi, t):
        w = theta["w"]
        return 0.5 * w @ A @ w - w @ B @ phi["a"]

    def outer(theta, phi):
        r = theta["w"] - M @ phi["a"]
        return 0.5 * r @ r

    return from_inner_loss(inner, outer, SGD(lr=0.1), {"w": THETA0}, horizon=1)


def test_penalty_step_is_gradient_descent_on_the_penalised_objective():
    """θ ← θ − lr/(1 + γ)·∇_θ P with P = f + (γ/2)‖Aθ − Ba‖², so ∇_θ P = (θ − Ma) + γA(Aθ − Ba),
    for inner_iters = 3 steps; the φ-gradient is ∇_φ P = −Mᵀ(θ − Ma) − γBᵀ(Aθ − Ba) at the
    last θ. A step lr/γ, or a penalty γ‖∇_θ g‖² without the ½, fails. It reports 3 inner
    step evaluations."""
    gamma, lr = 2.0, 0.05
    method = Penalty(gamma=gamma, growth=1.0, inner_iters=3, lr=lr)
    problem = _problem()
    grad, state, info = method.step(problem, PHI, method.init(problem, PHI), outer_step=0, start=0)
    assert info["inner_step_evaluations"] == 3
    a, w = PHI["a"], THETA0
    for _ in range(3):
        w = w - lr / (1 + gamma) * ((w - M @ a) + gamma * A @ (A @ w - B @ a))
    torch.testing.assert_close(state["theta"]["w"], w, rtol=1e-12, atol=1e-14)
    expected = -M.T @ (w - M @ a) - gamma * B.T @ (A @ w - B @ a)
    torch.testing.assert_close(grad["a"], expected, rtol=1e-12, atol=1e-14)


def test_f2sa_step_moves_y_and_z_with_their_own_rates_and_takes_grad_f_at_y():
    """z ← z − η_z(Az − Ba) and y ← y − η_y((Ay − Ba) + (y − Ma)/λ) for 3 steps with
    η_y = 0.05 ≠ η_z = 0.08, then ∇̂F = ∇_φ f(y, φ) + λ(∇_φ g(y) − ∇_φ g(z))
    = −Mᵀ(y − Ma) − λBᵀ(y − z). Swapped rates, ∇_θ f or ∇_φ f at z instead of y, fail.
    It reports 2·3 inner step evaluations (y and z each take 3 steps)."""
    lam, lr_y, lr_z = 2.0, 0.05, 0.08
    method = F2SA(lam=lam, lam_growth=0.0, inner_iters=3, lr_y=lr_y, lr_z=lr_z)
    problem = _problem()
    grad, state, info = method.step(problem, PHI, method.init(problem, PHI), outer_step=0, start=0)
    assert info["inner_step_evaluations"] == 6  # a y-step and a z-step per inner index
    a, y, z = PHI["a"], THETA0, THETA0
    for _ in range(3):
        z = z - lr_z * (A @ z - B @ a)
        y = y - lr_y * ((A @ y - B @ a) + (y - M @ a) / lam)
    torch.testing.assert_close(state["z"]["w"], z, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state["y"]["w"], y, rtol=1e-12, atol=1e-14)
    expected = -M.T @ (y - M @ a) - lam * B.T @ (y - z)
    torch.testing.assert_close(grad["a"], expected, rtol=1e-12, atol=1e-14)


def _shifting_problem(nan_at=None):
    """g_t = (κ/2)‖θ − c_t‖² with κ = 30, c_0 = θ_0 = 0 (the first z-gradient is exactly 0)
    and c_t = a for t ≥ 1; at t = ``nan_at`` g is NaN."""

    def inner(theta, phi, t):
        target = phi["a"] if t >= 1 else torch.zeros(2, dtype=F64)
        scale = float("nan") if t == nan_at else 15.0
        return scale * ((theta["w"] - target) ** 2).sum()

    def outer(theta, phi):
        return 0.5 * ((theta["w"] - 1.0) ** 2).sum()

    return from_inner_loss(inner, outer, SGD(lr=0.01), {"w": torch.zeros(2, dtype=F64)}, horizon=1)


def test_divergence_is_measured_from_the_first_nonzero_gradient():
    """z's first gradient is exactly 0 (θ_0 = c_0); from t = 1 on, z − a doubles in norm
    per step (|1 − η_z κ| = 2 at η_z = 0.1): within 30 steps its gradient norm exceeds
    10⁶ times its first *nonzero* value, and the step raises naming lr_z. (Taking the
    zero first norm as the scale would never raise: 10⁶·0 disables the check.) y's step
    η_y = 0.01 is stable."""
    problem = _shifting_problem()
    phi = {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    method = F2SA(inner_iters=30, lr_y=0.01, lr_z=0.1)
    with pytest.raises(LowerLevelDivergence, match=r"^f2sa: .*lower f2sa's lr_z"):
        method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
    stable = F2SA(inner_iters=30, lr_y=0.01, lr_z=0.01)
    grad, _, _ = stable.step(problem, phi, stable.init(problem, phi), outer_step=0, start=0)
    assert torch.isfinite(grad["a"]).all()


@pytest.mark.parametrize("method", [F2SA(inner_iters=4, lr_y=0.01, lr_z=0.01), Penalty(inner_iters=4, lr=0.01)],
                         ids=["f2sa", "penalty"])
def test_a_nan_lower_level_gradient_raises(method):
    """A NaN gradient at inner step 3 (t = 2) is a diverged solve: the step raises
    LowerLevelDivergence ("is nan" at inner step 3), not returning a NaN φ-gradient."""
    problem = _shifting_problem(nan_at=2)
    phi = {"a": torch.tensor([0.5, -1.0], dtype=F64)}
    with pytest.raises(LowerLevelDivergence, match=r"is nan at inner step 3 of 4"):
        method.step(problem, phi, method.init(problem, phi), outer_step=0, start=0)
