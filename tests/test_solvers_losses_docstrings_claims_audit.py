"""Claims of the solver and loss docstrings, checked against the behaviour they describe."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab._seeding import make_generator
from pinnlab.equations import FokkerPlanckIso, HJBLin, PoissonTwoBody
from pinnlab.estimators import Autograd
from pinnlab.losses import Biased, Hybrid, SwitchAt, SwitchOnPlateau, Unbiased1, Unbiased2
from pinnlab.solvers import LRA, SGD, Adam, ConstraintLoss, DataLoss, PINNProblem, ReLoBRaLo, make_train_step
from pinnlab.solvers.loop import History, TrainState
from pinnlab.solvers.optim import AdamState, SGDState
from tests.solvers.small_problems import F64, problem, stein


def _recording():
    asked = []

    def draw(unbiased):
        asked.append(unbiased)
        return torch.full((3,), 1.0 + len(asked), dtype=F64)

    return asked, draw


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_a_tensor_mix_computes_both_losses_even_at_zero_or_one(beta):
    """Hybrid: "β = 0 or 1 computes only one loss; a fractional or tensor β ... computes
    both" (a tensor β of 0 or 1 may carry a tangent, so neither loss can be skipped)."""
    asked, draw = _recording()
    loss, metrics = Hybrid(SwitchAt(3))(draw, torch.tensor(beta, dtype=F64))
    assert asked == [False, True, True]
    first = 2.0**2  # the biased draw's value, squared
    then = 3.0 * 4.0  # the two unbiased draws' product
    assert float(loss) == (1 - beta) * first + beta * then
    assert float(metrics["mix"]) == beta


def test_unbiased2_on_a_linear_equation_is_unbiased1():
    """Unbiased2: "For linear equations this is Unbiased1" (same points, same noise, the
    same loss and gradient)."""
    base = problem(estimator=stein(), loss=Unbiased1())
    other = PINNProblem(base.equation, base.net, base.estimator, Unbiased2(), batch_size=base.batch_size)
    params = {k: v.double() for k, v in base.init_params().items()}
    values = []
    for p in (base, other):
        grads, metrics = make_train_step(p, SGD(), seed=3).gradient(params, {}, 2)
        values.append((grads, metrics))
    (g1, m1), (g2, m2) = values
    assert float(m1["loss_unbiased"]) == float(m2["loss_unbiased"])
    assert float(m1["loss_biased"]) == float(m2["loss_biased"])
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=0, atol=0)


def _float_leaves(state):
    if isinstance(state, dict):
        for v in state.values():
            yield from _float_leaves(v)
    elif isinstance(state, (list, tuple)):
        for v in state:
            yield from _float_leaves(v)
    else:
        yield state


@pytest.mark.parametrize("weighting", [LRA(every=1), ReLoBRaLo(lookback=0.5)], ids=["lra", "relobralo"])
def test_the_weighting_state_is_plain_floats(weighting):
    """AbstractWeighting: "State is a plain dict of floats/lists so checkpoints can hold
    it", also after updates fed with tensor losses."""
    names = ["residual", "boundary"]
    state = weighting.init(names, {"boundary": 2})
    for step in range(3):
        losses = {"residual": torch.tensor(1.0 + step, dtype=F64), "boundary": torch.tensor(0.5, dtype=F64)}
        state = weighting.update(state, step, losses, lambda: {"residual": (2.0, 1.0), "boundary": (1.0, 0.25)}, 0)
    leaves = list(_float_leaves(state))
    assert leaves and all(type(v) is float for v in leaves)


def test_relobralo_uses_loss_values_only():
    """ReLoBRaLo: "Uses loss values only (no extra backward passes)": it never asks for
    gradients and its update never calls the gradient norms."""
    weighting = ReLoBRaLo()
    assert not any(weighting.needs_gradients(step) for step in range(20))

    def refuse():
        raise AssertionError("gradient norms asked for")

    state = weighting.init(["residual", "boundary"])
    for step in range(3):
        state = weighting.update(state, step, {"residual": 1.0 + step, "boundary": 2.0}, refuse, 0)
    assert set(state["weights"]) == {"residual", "boundary"}


def test_lra_weights_settle_at_the_stated_fixed_point():
    """LRA: "the fixed point is λ_i = sqrt(λ_r max|∇L_r| / mean|∇L_i|)" (λ_i inside the mean),
    with the reference weight kept at its starting value."""
    weighting = LRA(alpha=0.5, every=1)
    state = weighting.init(["residual", "boundary"], {"residual": 2.0, "boundary": 1.0})
    norms = {"residual": (3.0, 0.1), "boundary": (7.0, 0.5)}
    for step in range(200):
        state = weighting.update(state, step, {}, lambda: norms, 0)
    assert state["weights"]["residual"] == 2.0
    assert state["weights"]["boundary"] == pytest.approx(math.sqrt(2.0 * 3.0 / 0.5), rel=1e-12)


def _soft_problem(**kwargs):
    eq = PoissonTwoBody(2, seed=1, constraint="soft")
    gen = torch.Generator().manual_seed(0)
    data = DataLoss(torch.rand(5, 2, generator=gen, dtype=F64) * 0.5, torch.rand(5, generator=gen, dtype=F64))
    return problem(dim=2, eq=eq, extra_terms=(ConstraintLoss(batch_size=4), data), **kwargs)


def test_term_losses_put_the_residual_first_and_chunks_after_the_first_hold_it_only():
    """term_losses: "``residual`` first, then the extra terms in order; chunks > 0 hold the
    residual only"; objective: "extra terms are counted in chunk 0 only"."""
    p = _soft_problem(chunks=3)
    params = {k: v.double() for k, v in p.init_params().items()}
    terms, metrics = p.term_losses(params, {}, 1, 0)
    assert list(terms) == ["residual", "boundary", "data"]
    assert list(p.term_losses(params, {}, 1, 0, 0)[0]) == ["residual", "boundary", "data"]
    for chunk in (1, 2):
        terms, metrics = p.term_losses(params, {}, 1, 0, chunk)
        assert list(terms) == ["residual"] and "loss_data" not in metrics
    full, _ = p.objective(params, {}, 1, 0)
    parts = sum(float(p.objective(params, {}, 1, 0, c)[0]) for c in range(3))
    # the chunks draw their own noise; the Autograd estimator has none, so they add up exactly
    assert parts == pytest.approx(float(full), rel=1e-13)


class _WithUnused(torch.nn.Module):
    """A net with a parameter that no term uses."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(2, generator=gen, dtype=F64))
        self.unused = torch.nn.Parameter(torch.ones(3, dtype=F64))

    def forward(self, x):
        return torch.tanh(x @ self.w)


def test_term_gradients_give_zeros_for_unused_parameters_and_detached_results():
    """term_gradients: "Parameters a term does not use get zeros", "the results are
    detached"."""
    p = PINNProblem(PoissonTwoBody(2, seed=1), _WithUnused(), Autograd(), Biased(), batch_size=6)
    params = p.init_params()
    grads = make_train_step(p, SGD(), seed=0).term_gradients(params, {}, 0)
    assert torch.equal(grads["residual"]["unused"], torch.zeros(3, dtype=F64))
    assert float(grads["residual"]["w"].abs().sum()) > 0
    assert not any(g.requires_grad for g in grads["residual"].values())


def test_a_step_is_the_optimizer_update_of_the_summed_chunk_gradients():
    """TrainStep: "``step(p, s, hp, t)`` is ``optimizer.update(Σ_c ∇_p ℓ_c, s, p,
    learning_rate(hp, t))`` over the chunk losses ℓ_c of :meth:`losses`"."""
    p = _soft_problem(chunks=2)
    opt = Adam(lr=0.01)
    step = make_train_step(p, opt, seed=4, schedule=lambda t: 0.5**t)
    params = {k: v.double() for k, v in p.init_params().items()}
    state = opt.init(params)
    hp = {"weights": {"boundary": 2.0}}
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for loss, _ in step.losses(leaves, hp, 2):
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        for k, g in zip(leaves, grads):  # (the output bias drops out of a Laplacian)
            total[k] = total[k] + (0 if g is None else g)
    assert step.learning_rate(hp, 2) == 0.01 * 0.25
    expected, _ = opt.update(total, state, params, step.learning_rate(hp, 2))
    got, _, metrics = step(params, state, hp, 2)
    for k in params:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-13, atol=1e-15)
    assert float(metrics["lr"]) == 0.0025


def test_a_train_state_copy_owns_its_history_and_shares_its_tensors():
    """TrainState.copy: "its own history, loss window, plateau and weighting state; the
    parameter and optimizer tensors are shared"."""
    params = {"w": torch.ones(2)}
    opt_state = Adam().init(params)
    plateau = SwitchOnPlateau(window=3).init()
    state = TrainState(params=params, opt_state=opt_state, step=1, history=History(), plateau=plateau,
                       window_loss=[1.0], weighting={"weights": {"residual": 1.0}})
    copy = state.copy()
    assert copy.params is state.params and copy.opt_state is state.opt_state
    copy.history.trace_loss.append(2.0)
    copy.window_loss.append(2.0)
    copy.weighting["weights"]["residual"] = 5.0
    copy.plateau.best = 0.0
    assert state.history.trace_loss == [] and state.window_loss == [1.0]
    assert state.weighting == {"weights": {"residual": 1.0}} and state.plateau.best == math.inf


def test_a_hybrid_run_keeps_its_optimizer_state_across_the_switch():
    """Hybrid: "the same optimizer state and learning-rate schedule continue across the
    switch": a run switching at step 1 is the pure step looped by hand with the switched
    mix, one Adam state throughout."""
    from pinnlab.solvers import train

    p = problem(dim=2, loss=Hybrid(SwitchAt(1), then=Unbiased1()), batch=6)
    result = train(p, steps=3, seed=2, eval_every=10, test_points=4, progress="off", dtype=F64,
                   device="cpu", optimizer=Adam(lr=0.01))
    step = make_train_step(p, Adam(lr=0.01), seed=2)
    params = p.init_params(dtype=F64)
    state = Adam(lr=0.01).init(params)
    for t in range(3):
        params, state, _ = step(params, state, {"mix": float(t >= 1)}, t)
    assert result.state.opt_state.count == 3 == state.count
    for k in params:
        assert torch.equal(result.params[k], params[k])
    assert result.history.trace_mix == [0.0, 1.0, 1.0]


def test_the_biased_metric_is_the_residual_term_for_a_biased_loss():
    """ReLoBRaLo: the ``loss_biased`` metric is "identical to the residual term for
    :class:`~pinnlab.losses.Biased`", also with point weights and chunks (so balancing on
    it balances the trained term)."""
    p = problem(dim=2, estimator=stein(), batch=9, chunks=3)
    params = {k: v.double() for k, v in p.init_params().items()}
    hp = {"sigma": 0.1, "collocation_weight": lambda x: 1.0 + x[:, 0] ** 2}
    _, metrics = make_train_step(p, SGD(), seed=5).gradient(params, hp, 1)
    assert float(metrics["loss_biased"]) == float(metrics["loss_residual"]) > 0
    terms, metrics = p.term_losses(params, hp, 1, 5, 2)
    assert float(metrics["loss_biased"]) == float(terms["residual"]) > 0


def test_an_improvement_of_exactly_the_tolerance_is_no_progress():
    """SwitchOnPlateau Args: "window: steps without relative improvement > tolerance before
    switching" (it said "≥ tolerance"; observe tests ema < best·(1 − tolerance)). With
    window 1 the average is the loss: 1.0 then 0.5 is a relative improvement of exactly
    0.5 = tolerance (exact in binary), no progress, so the switch is decided at step 1
    (switched_at 2, the first step of the second loss); 0.49 is progress."""
    import inspect

    assert "window: steps without relative improvement > tolerance before switching" in inspect.getdoc(
        SwitchOnPlateau)
    for second, switched in ((0.5, 2), (0.49, None)):
        policy = SwitchOnPlateau(window=1, tolerance=0.5)
        state = policy.init()
        for step, loss in enumerate([1.0, second]):
            state = policy.observe(state, step, loss)
        assert state.switched_at == switched, second


def test_relobralo_defaults_and_its_default_lookback_draw():
    """ReLoBRaLo Args: α 0.95, "lookback: E[ρ] (0.99)", τ 1; ρ = 1 unless the step's draw
    from (seed, "relobralo", step) is ≥ 0.99. At seed 0, step 116 draws 0.9939: ρ = 0, the
    weights restart from the balance against the first losses; at step 115, ρ = 1."""
    assert ReLoBRaLo() == ReLoBRaLo(alpha=0.95, lookback=0.99, temperature=1.0)
    u = float(torch.rand((), generator=make_generator(0, "relobralo", 116)))
    assert 0.99 <= u < 0.995  # (the bounds the lookback 0.99 and 0.995 would split)
    w = ReLoBRaLo()
    names = ["residual", "boundary"]
    first = {"residual": 1.0, "boundary": 2.0}
    now = {"residual": 0.5, "boundary": 2.0}
    start = w.update(w.init(names, {"boundary": 3.0}), 0, first, None, 0)
    state = {**start, "previous": {"residual": 0.25, "boundary": 1.0}}

    def balance(reference):
        exps = {n: math.exp(now[n] / reference[n]) for n in names}
        return {n: 2 * exps[n] / sum(exps.values()) for n in names}

    from_start, from_last = balance(first), balance(state["previous"])
    for step, rho in ((116, 0.0), (115, 1.0)):
        got = w.update(state, step, now, None, 0)["weights"]
        expected = {n: 0.95 * (rho * state["weights"][n] + (1 - rho) * from_start[n]) + 0.05 * from_last[n]
                    for n in names}
        assert got == pytest.approx(expected, rel=1e-13), step


def test_sgd_without_momentum_has_an_empty_state():
    """SGD Args: "momentum: μ ∈ [0, 1); 0 gives plain SGD and an empty state"."""
    params = {"w": torch.tensor([1.0, -2.0], dtype=F64)}
    opt = SGD(lr=0.5)
    state = opt.init(params)
    assert state == SGDState({}) and opt.state_to_dict(state) == {}
    new, after = opt.update({"w": torch.tensor([2.0, 4.0], dtype=F64)}, state, params, 0.5)
    assert after == SGDState({}) and new["w"].tolist() == [0.0, -4.0]
    assert set(SGD(momentum=0.5).init(params).momentum) == {"w"}


def test_the_adam_step_count_is_a_python_int():
    """Adam: "The step count is a Python int in the state (no tangent)", after an update,
    a tangent and a round trip through the checkpoint dictionary."""
    params = {"w": torch.tensor([1.0, -2.0], dtype=F64)}
    opt = Adam()
    grads = {"w": torch.tensor([0.5, 0.25], dtype=F64)}
    _, state = opt.update(grads, opt.init(params), params, 0.1)
    assert type(state.count) is int and state.count == 1
    dots = {"w": torch.ones(1, 2, dtype=F64)}
    zero = AdamState(0, {"w": torch.zeros(1, 2, dtype=F64)}, {"w": torch.zeros(1, 2, dtype=F64)})
    _, state2, _, state_dot = opt.tangent(grads, state, params, 0.1, dots, zero, dots, None)
    assert type(state2.count) is int and state2.count == 2
    restored = opt.state_from_dict(opt.state_to_dict(state2))
    assert type(restored.count) is int and restored.count == 2


@pytest.mark.parametrize("make, where", [
    (lambda: PoissonTwoBody(3, seed=1), "sphere"),
    (lambda: FokkerPlanckIso(3, seed=1), "t=0"),
    (lambda: HJBLin(3, seed=1), "t=T"),
], ids=["poisson", "fokker_planck", "hjb"])
def test_the_constraint_points_are_where_the_hard_ansatz_vanishes(make, where):
    """ConstraintLoss: fresh points "where the hard ansatz would vanish (the sphere for
    unit-ball problems, t = 0 for Fokker–Planck, t = T for HJB)": there the hard-constrained
    solution is the boundary value whatever the network gives."""
    eq = make()
    x = eq.sample_boundary(6, generator=make_generator(2, "boundary/points"), dtype=F64)
    if where == "sphere":
        torch.testing.assert_close(x.norm(dim=1), torch.ones(6, dtype=F64), rtol=0, atol=1e-15)
    else:
        assert x[:, -1].tolist() == [0.0 if where == "t=0" else 1.0] * 6
    for net_value in (torch.zeros(6, dtype=F64), torch.linspace(-3, 5, 6, dtype=F64)):
        torch.testing.assert_close(eq.solution(x, net_value), eq.boundary_value(x), rtol=1e-12, atol=1e-12)
    inside = eq.sample_collocation(6, generator=make_generator(2, "collocation"), dtype=F64)
    assert not torch.allclose(eq.solution(inside, torch.ones(6, dtype=F64)),
                              eq.solution(inside, torch.zeros(6, dtype=F64)))


def test_unbiased2_takes_the_stated_groups_for_hjb_and_burgers():
    """Unbiased2: "HJB ‖∇u‖²: 2 derivative groups; Burgers u·Σ∂_i u: 1 + 1" (and a linear
    equation keeps the biased draw's single group)."""
    from pinnlab.equations import Burgers, HJBQuadratic
    from pinnlab.equations.residual import noise_groups

    def shown(eq, unbiased=True):
        return [[str(f) for f in group] for group in noise_groups(eq.terms(), unbiased=unbiased)]

    assert shown(HJBQuadratic(3)) == [["u_t", "Δu", "∇u"], ["∇u"]]
    assert shown(Burgers(3)) == [["u_t", "u", "Δu"], ["Σ_i ∂_i u"]]
    assert shown(PoissonTwoBody(3)) == shown(PoissonTwoBody(3), unbiased=False) == [["Δu"]]


def test_a_runs_counts_are_ints_and_the_plateau_switch_step_is_recorded():
    """TrainResult.stats: "counts as int" (steps done, the plateau switch's step), the
    switch step being the first step the unbiased loss trained."""
    from pinnlab.solvers import train

    loss = Hybrid(SwitchOnPlateau(window=1, tolerance=0.9), then=Unbiased1())
    result = train(problem(dim=2, loss=loss, batch=6), steps=4, seed=0, eval_every=10, test_points=4,
                   progress="off", dtype=F64, device="cpu")
    stats = result.stats
    assert type(stats["steps_done"]) is int and stats["steps_done"] == 4
    assert type(stats["switch_step"]) is int and stats["switch_step"] == result.state.plateau.switched_at == 2
    assert result.history.trace_mix == [0.0, 0.0, 1.0, 1.0]
    assert all(type(stats[k]) is float for k in ("steps_per_second", "wall_s", "peak_mem_mb"))


def test_an_lra_reference_other_than_the_residual_sets_the_scale_and_keeps_its_weight():
    """LRA Args: "reference: the term whose gradient sets the scale": with the boundary as
    reference its weight stays and the residual's moves by the formula, scaled by the
    boundary's max gradient."""
    weighting = LRA(alpha=0.25, every=1, reference="boundary")
    state = weighting.init(["residual", "boundary"], {"boundary": 2.0})
    norms = {"residual": (100.0, 0.5), "boundary": (3.0, 1e3)}
    state = weighting.update(state, 0, {}, lambda: norms, 0)
    target = 2.0 * 3.0 / (1.0 * 0.5)
    assert state["weights"] == {"boundary": 2.0, "residual": 0.75 * 1.0 + 0.25 * target}


def test_an_explicit_test_set_replaces_the_seeded_one_and_test_points_is_ignored():
    """train Args: "test_points: size of the test set, >= 1 (ignored with ``test_set``)";
    "test_set: explicit `(x, u*)` ... instead of the equation's seeded test set"."""
    from pinnlab.solvers import train

    p = problem(dim=2, batch=4)
    x = torch.tensor([[0.1, 0.2], [0.3, -0.4], [0.0, 0.5]], dtype=F64)
    u = p.equation.exact(x)
    result = train(p, steps=1, seed=0, test_points=0, test_set=(x, u), progress="off", dtype=F64,
                   device="cpu")
    assert torch.equal(result.test_inputs, x) and torch.equal(result.test_exact, u)
    assert result.final.prediction.shape == (3,)
    with pytest.raises(ValueError, match="test_points"):
        train(p, steps=1, seed=0, test_points=0, progress="off", dtype=F64, device="cpu")


def test_the_model_ignores_parameters_the_net_does_not_have():
    """PINNProblem.model: ``params`` "must name every parameter of the net ... (others are
    ignored)": an extra entry changes nothing, a missing one is refused."""
    p = problem(dim=2, batch=4)
    params = {k: v.double() for k, v in p.init_params().items()}
    x = torch.tensor([[0.1, 0.2], [0.3, -0.4]], dtype=F64)
    plain = p.model(params)(x)
    extra = p.model({**params, "stray": torch.ones(3, dtype=F64)})(x)
    assert torch.equal(plain, extra)
    name = next(iter(params))
    with pytest.raises(ValueError, match=r"missing \['" + name.replace(".", r"\.") + r"'\] \(given instead: \['stray'\]\)"):
        p.model({**{k: v for k, v in params.items() if k != name}, "stray": torch.ones(3, dtype=F64)})
