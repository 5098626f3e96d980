"""The pure training step and the loop: replay, resume, learning, NaN handling, devices."""

from __future__ import annotations

import math

import pytest
import torch

from pinnlab.equations import AllenCahnTwoBody, PoissonTwoBody
from pinnlab.estimators import Autograd, SteinAntithetic
from pinnlab.losses import Biased, Hybrid, SwitchAt, SwitchOnPlateau, Unbiased2
from pinnlab.nets import MLP
from pinnlab.solvers import Adam, LinearDecay, PINNProblem, evaluate, make_train_step, train

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _problem(dim=5, estimator=None, loss=None, width=32, seed=1, batch=32):
    eq = PoissonTwoBody(dim, seed=seed)
    net = MLP(dim, width=width, depth=3, generator=torch.Generator().manual_seed(0))
    return PINNProblem(
        eq, net, estimator or SteinAntithetic(sigma=0.05, num_samples=32, noise="shared"),
        loss or Biased(), batch_size=batch,
    )


def test_step_replays_its_randomness_exactly():
    problem = _problem()
    opt = Adam(1e-3)
    step = make_train_step(problem, opt, seed=3)
    params = problem.init_params()
    state = opt.init(params)
    a = step(params, state, {}, 5)
    b = step(params, state, {}, 5)
    c = step(params, state, {}, 6)
    for k in params:
        assert torch.equal(a[0][k], b[0][k])
    assert not torch.equal(a[2]["loss"], c[2]["loss"])


def test_sigma_weight_and_mix_hyperparameters_are_differentiable():
    problem = _problem(loss=Hybrid(switch=SwitchAt(10)))
    params = problem.init_params(dtype=torch.float64)

    def loss(sigma, weight, mix):
        hp = {"sigma": sigma, "weights": {"residual": weight}, "mix": mix}
        return problem.objective(params, hp, 0, 0)[0]

    args = (torch.tensor(0.05, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64),
            torch.tensor(0.3, dtype=torch.float64))
    grads = torch.func.grad(loss, argnums=(0, 1, 2))(*args)
    assert all(torch.isfinite(g) and g != 0 for g in grads)
    # the weight enters linearly
    torch.testing.assert_close(grads[1], loss(args[0], torch.tensor(1.0, dtype=torch.float64), args[2]))


def test_points_drawn_at_an_overridden_coefficient_carry_no_gradient(monkeypatch):
    """Fokker–Planck's collocation points follow an overridden drift μ̂ (an inverse problem's
    estimate) as data: ∂loss/∂μ̂ is the residual's, the same as with the points drawn at a
    constant copy of μ̂ (a path through the points x = μ̂t + √(2 − t)z would change it)."""
    from pinnlab.equations import FokkerPlanckAniso

    equation = FokkerPlanckAniso(3, seed=0)
    net = MLP(4, width=8, depth=3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    problem = PINNProblem(equation, net, SteinAntithetic(sigma=0.05, num_samples=8, noise="shared"),
                          Biased(), batch_size=16)
    params = problem.init_params()
    mu = torch.tensor([0.3, -0.2, 1.1], dtype=torch.float64, requires_grad=True)

    def grad_of_loss():
        loss = problem.objective(params, {"coefficients": {"mu": mu}}, 0, 0)[0]
        return torch.autograd.grad(loss, mu)[0]

    drawn = grad_of_loss()
    original = FokkerPlanckAniso.sample_collocation
    constant = mu.detach().clone()
    monkeypatch.setattr(FokkerPlanckAniso, "sample_collocation", lambda self, n, **kw: original(
        self, n, **{**kw, "coefficients": {"mu": constant}}))
    assert torch.equal(drawn, grad_of_loss())
    assert bool((drawn != 0).all())


@pytest.mark.parametrize("device", DEVICES)
def test_training_reduces_error(device):
    problem = _problem(dim=5, estimator=Autograd())
    result = train(problem, steps=300, optimizer=Adam(3e-3), seed=0, eval_every=50,
                   test_points=500, progress="off", device=device)
    initial = evaluate(problem, problem.init_params(device=device), result.test_inputs,
                       result.test_exact).rel_l2
    assert result.status == "ok"
    assert result.final.rel_l2 < 0.1 * initial, (initial, result.final.rel_l2)
    assert result.history.rows["step"] == [50.0 * i for i in range(1, 7)]
    assert result.stats["steps_per_second"] > 0


def test_stein_training_reduces_error_and_evaluates_the_smoothed_model():
    problem = _problem(dim=5)
    result = train(problem, steps=200, optimizer=Adam(3e-3), seed=0, eval_every=100,
                   test_points=400, eval_samples=256, progress="off")
    initial = evaluate(problem, problem.init_params(), result.test_inputs, result.test_exact,
                       num_samples=256).rel_l2
    assert result.final.rel_l2 < 0.1 * initial, (initial, result.final.rel_l2)
    assert len(result.history.trace_loss) == 200
    assert result.final.prediction.shape == (400,)


def test_resume_is_bit_identical():
    problem = _problem()
    kwargs = dict(optimizer=Adam(1e-3), schedule=LinearDecay(30), seed=2, eval_every=10,
                  test_points=100, progress="off")
    full = train(problem, steps=30, **kwargs)
    saved = []
    partial = train(problem, steps=30, checkpoint_every=10,
                    on_checkpoint=lambda s: saved.append(
                        (s.step, {k: v.clone() for k, v in s.params.items()}, s.opt_state)), **kwargs)
    assert [s[0] for s in saved] == [10, 20]
    from pinnlab.solvers import TrainState
    step, params, opt_state = saved[0]
    history = type(full.history).from_arrays(
        {k: v[:1] if k not in ("trace_loss", "trace_mix") else v[:10]
         for k, v in full.history.arrays().items()})
    resumed = train(problem, steps=30, state=TrainState(params, opt_state, step=step, history=history),
                    **kwargs)
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k])
        assert torch.equal(partial.params[k], full.params[k])
    assert resumed.final.rel_l2 == full.final.rel_l2
    assert resumed.history.rows["rel_l2"] == full.history.rows["rel_l2"]


def test_checkpoint_states_are_snapshots_and_a_resumed_state_is_left_as_it_was():
    """on_checkpoint got the loop's live state: a state kept at step 2 was at step 6
    after the run, and resuming from it trained nothing; train(state=s) moved s on too."""
    problem = _problem(dim=3, width=16, batch=8)
    kwargs = dict(seed=1, eval_every=2, test_points=20, progress="off")
    full = train(problem, steps=6, **kwargs)
    kept = []
    train(problem, steps=6, checkpoint_every=2, on_checkpoint=kept.append, **kwargs)
    assert [s.step for s in kept] == [2, 4]
    assert [len(s.history.trace_loss) for s in kept] == [2, 4]
    assert [s.history.rows["step"] for s in kept] == [[2.0], [2.0, 4.0]]
    first = kept[0]
    resumed = train(problem, steps=6, state=first, **kwargs)
    assert resumed.history.rows["step"] == [2.0, 4.0, 6.0]
    for k in full.params:
        assert torch.equal(resumed.params[k], full.params[k])
    # the state passed in is still at step 2, and resumes the same way again
    assert first.step == 2 and len(first.history.trace_loss) == 2 and first.history.rows["step"] == [2.0]
    again = train(problem, steps=6, state=first, **kwargs)
    assert ({k: v for k, v in again.history.rows.items() if k != "wall_s"}
            == {k: v for k, v in resumed.history.rows.items() if k != "wall_s"})


@pytest.mark.parametrize("where, kept_step", [("step", 6), ("evaluation", 7), ("update", 7)])
def test_a_run_stopped_from_outside_checkpoints_its_last_completed_step(monkeypatch, where, kept_step):
    """Ctrl-C or SIGTERM lost every step since the last periodic checkpoint. The loop now
    hands on the state of the last completed step before the exception goes on: stopped
    in step 6 (0-based), at step 6; in the evaluation after step 7, at step 7 (the
    evaluation runs before the state changes); while the state is being updated (step
    8's history row), at step 7 too: step 8's part is undone first (a state of parts of
    two steps must not be saved; it once fell back to the periodic checkpoint of step 5).
    Resuming from it ends as the uninterrupted run."""
    from pinnlab.solvers import loop

    problem = _problem(dim=3, width=16, batch=8)
    kwargs = dict(seed=1, eval_every=4, test_points=20, progress="off", schedule=LinearDecay(12))
    full = train(problem, steps=12, **kwargs)

    class Stop(LinearDecay):
        def __call__(self, step):
            if where == "step" and step == 6:
                raise KeyboardInterrupt
            return super().__call__(step)

    def evaluate(problem, params, *args, step, **options):
        if where == "evaluation" and step == 8:
            raise KeyboardInterrupt
        return original_evaluate(problem, params, *args, step=step, **options)

    def append(self, *args, **values):
        if where == "update" and values["step"] == 8:
            raise KeyboardInterrupt
        return original_append(self, *args, **values)

    original_evaluate, original_append = loop.evaluate, loop.History.append
    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop.History, "append", append)
    kept = []
    with pytest.raises(KeyboardInterrupt):
        train(problem, steps=12, checkpoint_every=5, on_checkpoint=kept.append, **{**kwargs, "schedule": Stop(12)})
    assert [s.step for s in kept] == [5] + ([kept_step] if kept_step != 5 else [])
    monkeypatch.undo()
    resumed = train(problem, steps=12, state=kept[-1], **kwargs)
    for k in full.params:
        assert torch.equal(resumed.params[k], full.params[k])
    assert ({k: v for k, v in resumed.history.rows.items() if k != "wall_s"}
            == {k: v for k, v in full.history.rows.items() if k != "wall_s"})
    assert resumed.history.trace_loss == full.history.trace_loss


@pytest.mark.parametrize("kwargs,match", [
    ({"test_points": 0}, "test_points must be an integer >= 1"),
    ({"dtype": torch.float16}, "dtype must be torch.float32 or torch.float64"),
    ({"dtype": "float64"}, "dtype must be torch.float32 or torch.float64"),
    ({"progress": "bogus"}, "progress must be one of"),
    ({"test_set": (torch.rand(10, 3), torch.rand(10, 1))}, r"must have shape \(10,\)"),
    ({"test_set": (torch.rand(10, 2), torch.rand(10))}, r"points must have shape \(N, 3\)"),
])
def test_bad_train_arguments_are_one_error_before_training(kwargs, match):
    """test_points=0 failed in a torch reduction after training, float16 ran although
    documented as float32/float64, an (N, 1) u* broadcast against the (N,) prediction
    into a wrong rel. L2 (9.8 against 1.5)."""
    with pytest.raises(ValueError, match=match):
        train(_problem(dim=3, width=16, batch=8), steps=2, **{"progress": "off", **kwargs})


@pytest.mark.parametrize("hyperparams", [{"sigam": 0.1}, {"lr": 1e-3, "weight": {"residual": 2.0}}])
def test_a_hyperparameter_the_step_does_not_read_is_refused(hyperparams):
    """A misspelt key trained with the default instead, silently."""
    problem = _problem(dim=3, width=16, batch=8)
    with pytest.raises(ValueError, match=r"are not read by the training step \(known: lr, sigma, mix, weights"):
        train(problem, steps=1, hyperparams=hyperparams, progress="off")
    params = problem.init_params()
    problem.objective(params, {"lr": 1e-3, "sigma": 0.1, "weights": {}, "coefficients": {}}, 0, 0)


@pytest.mark.parametrize("weights", [{"residul": 10.0}, {"boundary": 10.0}])
def test_a_weight_for_no_loss_term_is_refused(weights):
    """A typo or a term the problem lacks weighed nothing: the run equalled the unweighted one."""
    problem = _problem(dim=3, width=16, batch=8)
    with pytest.raises(ValueError, match=r"name no loss term of this problem \(terms: residual\)"):
        train(problem, steps=1, hyperparams={"weights": weights}, progress="off")
    params = problem.init_params()
    loss, _ = problem.objective(params, {"weights": {"residual": 2.0}}, 0, 0)
    torch.testing.assert_close(loss, 2 * problem.objective(params, {}, 0, 0)[0])


@pytest.mark.parametrize("batch", [2.5, 0, True])
def test_a_batch_size_that_is_not_a_positive_integer_is_refused(batch):
    """2.5 was accepted and failed in torch.randn at the first step."""
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        _problem(dim=3, width=16, batch=batch)


def test_relative_errors_refuse_mismatched_shapes():
    from pinnlab.solvers.evaluate import relative_errors

    assert relative_errors(torch.ones(5), 2 * torch.ones(5)).rel_l2 == 0.5
    with pytest.raises(ValueError, match="need one shape"):
        relative_errors(torch.ones(5), 2 * torch.ones(5, 1))


def test_nonfinite_loss_stops_with_clear_message_and_keeps_finite_state():
    problem = _problem()
    result = train(problem, steps=50, optimizer=Adam(1e-3), seed=0, eval_every=10,
                   test_points=50, progress="off", hyperparams={"lr": 1e30})
    assert result.status == "nonfinite"
    assert "at step" in result.message and "smaller learning rate" in result.message
    assert all(torch.isfinite(v).all() for v in result.params.values())
    assert math.isfinite(result.final.rel_l2) or math.isnan(result.final.rel_l2)


@pytest.mark.parametrize("weight", [1e36, 1e30], ids=["nan-params", "inf-adam-moment"])
def test_overflowing_gradient_stops_before_storing_a_nonfinite_state(weight):
    """A finite float32 loss whose gradient overflows: with weight 1e36 the update is NaN,
    with 1e30 Adam's second moment g² is inf (the parameters would silently freeze). The
    loop must stop at that step, not store the state (and stop one step later)."""
    problem = _problem()
    result = train(problem, steps=5, seed=0, eval_every=5, test_points=20, progress="off",
                   hyperparams={"weights": {"residual": weight}})
    assert result.status == "nonfinite"
    assert "at step 1 gave non-finite parameters" in result.message
    assert "kept the initial state" in result.message
    assert result.state.step == 0 and result.history.trace_loss == []
    initial = problem.init_params()
    for k, v in result.params.items():
        assert torch.equal(v, initial[k])
    assert math.isfinite(result.final.rel_l2)


def test_hybrid_plateau_switch_happens_and_is_recorded():
    eq = AllenCahnTwoBody(4, seed=1)
    net = MLP(4, width=16, depth=3, generator=torch.Generator().manual_seed(0))
    loss = Hybrid(switch=SwitchOnPlateau(window=20, tolerance=0.05), then=Unbiased2())
    problem = PINNProblem(eq, net, SteinAntithetic(sigma=0.05, num_samples=16), loss, batch_size=16)
    result = train(problem, steps=300, optimizer=Adam(1e-3), seed=0, eval_every=100,
                   test_points=100, progress="off")
    switch = result.stats.get("switch_step")
    assert switch is not None and 20 <= switch < 300
    mix = result.history.trace_mix
    assert mix[int(switch)] == 1.0 and mix[int(switch) - 1] == 0.0  # first unbiased step


def test_float64_training_keeps_dtype():
    problem = _problem(dim=4)
    result = train(problem, steps=3, seed=0, eval_every=3, test_points=20, progress="off",
                   dtype=torch.float64)
    assert all(v.dtype == torch.float64 for v in result.params.values())
    # the recorded learning rate too: it was rounded to float32 (0.0010000000474974513)
    assert result.history.rows["lr"] == [1e-3]


def test_bad_device_is_refused_clearly():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(_problem(), steps=1, device="cuda", progress="off")


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, True, 1.0])
def test_a_seed_results_cannot_store_is_refused_before_training(seed):
    """The CLI's config refuses these; from Python the step itself does (its result would
    fail to write after the training)."""
    with pytest.raises(ValueError, match=r"seed must be an integer with 0 <= seed < 2\*\*63"):
        train(_problem(), steps=1, seed=seed, progress="off")


def test_the_largest_storable_seed_trains():
    assert train(_problem(), steps=1, seed=2**63 - 1, progress="off").status == "ok"


@pytest.mark.slow
def test_allen_cahn_100d_reaches_published_accuracy_class():
    """Issue acceptance: d = 100, biased, K = 128, σ = 1e-2, N = 100, 1000 Adam steps."""
    eq = AllenCahnTwoBody(100, seed=1)
    net = MLP(100, generator=torch.Generator().manual_seed(0))
    problem = PINNProblem(eq, net, SteinAntithetic(sigma=1e-2, num_samples=128, noise="shared"),
                          Biased(), batch_size=100)
    result = train(problem, steps=1000, optimizer=Adam(1e-3), schedule=LinearDecay(1000),
                   seed=0, eval_every=500, test_points=2000, progress="off")
    assert result.final.rel_l2 <= 2e-2


def test_batch_chunks_accumulate_the_exact_gradient():
    """With a deterministic estimator, chunked accumulation equals the full-batch step."""
    import dataclasses

    problem = _problem(dim=4, estimator=Autograd(), batch=12)
    chunked = dataclasses.replace(problem, batch_chunks=5)
    opt = Adam(1e-2)
    params = problem.init_params(dtype=torch.float64)
    state = opt.init(params)
    full = make_train_step(problem, opt, seed=1)(params, state, {}, 3)
    parts = make_train_step(chunked, opt, seed=1)(params, state, {}, 3)
    for k in params:
        torch.testing.assert_close(full[0][k], parts[0][k], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full[2]["loss"], parts[2]["loss"], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="batch_chunks"):
        dataclasses.replace(problem, batch_chunks=13)
