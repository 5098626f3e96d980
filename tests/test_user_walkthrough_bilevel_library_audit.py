"""A new user's walkthrough of pinnlab.bilevel as a library, on their own problem.

Ridge regression with a weight decay λ as the hyperparameter, fitted by T steps of
gradient descent from θ_0 = 0, has a closed-form unrolled hypergradient, so every
estimator is checked against it in float64; then the outer loop (checkpoints, resume,
parameterisations) and wrong inputs. Strict xfails mark BUGs found on the way.
"""

import math
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from pinnlab.bilevel import (
    BilevelProblem,
    ExactForwardUnroll,
    ForwardGradientUnroll,
    HessianFree,
    Log,
    Logit,
    ReverseUnroll,
    TruncatedReverseUnroll,
    ZeroOrderForwardGradient,
    cg,
    from_inner_loss,
    hypergradient,
    optimize,
)
from pinnlab.io.checkpoint import CheckpointError
from pinnlab.solvers import SGD

F64 = torch.float64
_G = torch.Generator().manual_seed(0)
X = torch.randn(20, 4, generator=_G, dtype=F64)
Y = torch.randn(20, generator=_G, dtype=F64)
XV = torch.randn(15, 4, generator=_G, dtype=F64)
YV = torch.randn(15, generator=_G, dtype=F64)
ALPHA, T = 0.02, 30
LAM = torch.tensor([0.7], dtype=F64)


def _inner(theta, phi, t):
    return 0.5 * ((X @ theta["w"] - Y) ** 2).sum() + 0.5 * phi["lam"].sum() * (theta["w"] ** 2).sum()


def _outer(theta, phi):
    return 0.5 * ((XV @ theta["w"] - YV) ** 2).sum()


def _ridge(horizon=T):
    return from_inner_loss(_inner, _outer, SGD(lr=ALPHA), {"w": torch.zeros(4, dtype=F64)}, horizon=horizon)


def _closed_form(lam, horizon=T):
    """θ_t = Mθ_{t−1} + αb with A = XᵀX + λI, M = I − αA, b = Xᵀy, so θ_T = (I − M^T)A⁻¹b and
    dθ_T/dλ = αT·M^{T−1}A⁻¹b − (I − M^T)A⁻²b; also the trajectory and d = ∂f/∂θ_T."""
    eye = torch.eye(4, dtype=F64)
    a = X.T @ X + lam * eye
    m = eye - ALPHA * a
    b = X.T @ Y
    a_inv_b = torch.linalg.solve(a, b)
    m_t = torch.linalg.matrix_power(m, horizon)
    theta_t = (eye - m_t) @ a_inv_b
    dtheta = (ALPHA * horizon * torch.linalg.matrix_power(m, horizon - 1) @ a_inv_b
              - (eye - m_t) @ torch.linalg.solve(a, a_inv_b))
    thetas = [torch.zeros(4, dtype=F64)]
    for _ in range(horizon):
        thetas.append(m @ thetas[-1] + ALPHA * b)
    d = XV.T @ (XV @ theta_t - YV)
    return d @ dtheta, theta_t, thetas, m, a, d


# -- estimators against a closed form the user derives ----------------------------------------------
def test_every_estimator_matches_the_ridge_closed_forms_in_float64():
    """Exact estimators (rgu, fgu, fg2u with one tunable, trgu with s = T) give the closed-form
    unrolled dλ h to 1e-12, zo_fg2u (central, μ = 1e-5) to 1e-7; the biased ones give their
    own closed forms: trgu(5) = dᵀΣ_{k<5} M^k(−αθ_{T−1−k}), hessian_free = −α dᵀθ_T (α the
    inner lr), cg (exact for 4 unknowns) = −θ_Tᵀ(XᵀX + λI)⁻¹d."""
    problem, phi = _ridge(), {"lam": LAM}
    exact, theta_t, thetas, m, a, d = _closed_form(float(LAM))
    for method in (ReverseUnroll(), ExactForwardUnroll(), ForwardGradientUnroll(num_directions=1),
                   TruncatedReverseUnroll(steps=T)):
        grad = hypergradient(problem, phi, method).grad["lam"]
        assert float(grad) == pytest.approx(float(exact), rel=1e-12), method
    zo = hypergradient(problem, phi, ZeroOrderForwardGradient(num_directions=1, mu=1e-5)).grad["lam"]
    assert float(zo) == pytest.approx(float(exact), rel=1e-7)
    trgu = d @ sum(torch.linalg.matrix_power(m, k) @ (-ALPHA * thetas[T - 1 - k]) for k in range(5))
    biased = {TruncatedReverseUnroll(steps=5): trgu, HessianFree(): -ALPHA * d @ theta_t,
              cg(iterations=4): -theta_t @ torch.linalg.solve(a, d)}
    for method, expected in biased.items():
        grad = hypergradient(problem, phi, method).grad["lam"]
        assert float(grad) == pytest.approx(float(expected), rel=1e-10), method


def test_a_log_weight_decay_steps_along_the_chain_rule_of_the_closed_form():
    """optimize with Log(): the recorded grad_norm is |dh/dλ|·λ (the hypergradient in u =
    log λ), and one SGD(0.5) step moves λ to λ·exp(−0.5·λ·dh/dλ)."""
    exact = float(_closed_form(float(LAM))[0])
    result = optimize(_ridge(), {"lam": LAM}, ReverseUnroll(), steps=1, parameterization={"lam": Log()},
                      meta_optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    assert result.history["grad_norm"][0] == pytest.approx(abs(exact) * 0.7, rel=1e-12)
    assert float(result.phi["lam"]) == pytest.approx(0.7 * math.exp(-0.5 * 0.7 * exact), rel=1e-12)


# -- wrong inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [ForwardGradientUnroll(num_directions=1), ExactForwardUnroll()],
                         ids=["fg2u", "fgu"])
def test_a_float32_phi_on_a_float64_problem_gets_a_float32_hypergradient_from_every_method(method):
    phi = {"lam": LAM.float()}
    assert hypergradient(_ridge(horizon=3), phi, ReverseUnroll()).grad["lam"].dtype == torch.float32
    assert hypergradient(_ridge(horizon=3), phi, method).grad["lam"].dtype == torch.float32


@pytest.mark.parametrize("bounds", [(0.0, float("inf")), (float("-inf"), 1.0), (-1e308, 1e308)])
def test_logit_refuses_bounds_without_a_finite_width(bounds):
    with pytest.raises(ValueError, match="Logit"):
        Logit(*bounds)


# -- checkpoints and resume ---------------------------------------------------------------------------
def test_resuming_with_another_parameterization_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    optimize(_ridge(horizon=3), {"lam": LAM}, ReverseUnroll(), steps=2, parameterization={"lam": Log()},
             checkpoint=path, checkpoint_every=1)
    with pytest.raises(CheckpointError):
        optimize(_ridge(horizon=3), {"lam": LAM}, ReverseUnroll(), steps=3, checkpoint=path, checkpoint_every=1,
                 resume=True)


def test_a_fresh_run_does_not_overwrite_an_existing_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    optimize(_ridge(horizon=3), {"lam": LAM}, ReverseUnroll(), steps=2, checkpoint=path, checkpoint_every=1)
    before = path.read_bytes()
    try:
        optimize(_ridge(horizon=3), {"lam": LAM}, ReverseUnroll(), steps=1, checkpoint=path, checkpoint_every=1)
    except (ValueError, CheckpointError, FileExistsError):
        pass
    assert path.read_bytes() == before


@pytest.mark.parametrize("where", ["missing/run.pt", "."])
def test_an_unwritable_checkpoint_path_is_refused_before_any_outer_step(tmp_path, where):
    done = []
    with pytest.raises((ValueError, OSError)):
        optimize(_ridge(horizon=3), {"lam": LAM}, ReverseUnroll(), steps=3, checkpoint=tmp_path / where,
                 checkpoint_every=2, callback=lambda k, phi, info: done.append(k))
    assert done == []


class _Momentum(NamedTuple):
    m: torch.Tensor


def _heavy_ball():
    """A user's own inner step with its own NamedTuple state (BilevelProblem takes any state)."""
    def step(theta, state, phi, t):
        m = 0.5 * state.m + X.T @ (X @ theta["w"] - Y) + phi["lam"] * theta["w"]
        return {"w": theta["w"] - ALPHA * m}, _Momentum(m)

    return BilevelProblem(step, _outer, ({"w": torch.zeros(4, dtype=F64)}, _Momentum(torch.zeros(4, dtype=F64))), 3)


def _resumable_or_refused_up_front(path, run):
    """What optimize writes it reads back: either the first call refuses before writing, or
    the resumed run ends where an uninterrupted one does."""
    try:
        run(steps=1)
    except (ValueError, TypeError):
        assert not path.exists()
        return
    full = run(steps=2, checkpoint=None, checkpoint_every=0)
    resumed = run(steps=2, resume=True)
    assert torch.equal(resumed.phi["lam"], full.phi["lam"])


def test_a_user_namedtuple_inner_state_is_resumable_or_refused_up_front(tmp_path):
    path = tmp_path / "run.pt"

    def run(**kwargs):
        options = {"checkpoint": path, "checkpoint_every": 1, **kwargs}
        return optimize(_heavy_ball(), {"lam": LAM}, ReverseUnroll(), **options)

    _resumable_or_refused_up_front(path, run)


@pytest.mark.parametrize("metadata", [{"config": Path("ridge.yaml")}, {"tol": __import__("numpy").float64(1e-3)}],
                         ids=["path", "numpy"])
def test_metadata_that_is_saved_can_be_resumed_or_is_refused_up_front(tmp_path, metadata):
    path = tmp_path / "run.pt"

    def run(**kwargs):
        options = {"checkpoint": path, "checkpoint_every": 1, "metadata": metadata, **kwargs}
        return optimize(_ridge(horizon=3), {"lam": LAM}, ReverseUnroll(), **options)

    _resumable_or_refused_up_front(path, run)


def test_a_dict_inner_state_of_the_users_own_step_resumes_bit_for_bit(tmp_path):
    """The same heavy-ball step with its state as a dict of tensors: a run checkpointed after
    one outer step and resumed to three ends where an uninterrupted one does (φ, θ, history)."""
    def step(theta, state, phi, t):
        m = 0.5 * state["m"] + X.T @ (X @ theta["w"] - Y) + phi["lam"] * theta["w"]
        return {"w": theta["w"] - ALPHA * m}, {"m": m}

    problem = BilevelProblem(step, _outer, ({"w": torch.zeros(4, dtype=F64)}, {"m": torch.zeros(4, dtype=F64)}), 3)
    path = tmp_path / "run.pt"
    kwargs = {"parameterization": {"lam": Log()}}
    full = optimize(problem, {"lam": LAM}, ReverseUnroll(), steps=3, **kwargs)
    optimize(problem, {"lam": LAM}, ReverseUnroll(), steps=1, checkpoint=path, checkpoint_every=1, **kwargs)
    resumed = optimize(problem, {"lam": LAM}, ReverseUnroll(), steps=3, checkpoint=path, checkpoint_every=1,
                       resume=True, **kwargs)
    assert torch.equal(resumed.phi["lam"], full.phi["lam"]) and torch.equal(resumed.theta["w"], full.theta["w"])
    assert torch.equal(resumed.state["m"], full.state["m"])
    assert resumed.history["value"] == full.history["value"]
