"""Bad input to the Python API is refused where it is given, with a message naming it.

Each case was a silent wrong result, a NaN or a torch error from deep inside before (an
audit of the library API, session 31); each test says what happened.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pinnlab
from pinnlab.bilevel import ForwardGradientUnroll, ReverseUnroll, hypergradient
from pinnlab.bilevel.adapters import from_train_step
from pinnlab.equations import AllenCahnTwoBody, PoissonTwoBody
from pinnlab.estimators import SteinAntithetic
from pinnlab.losses import Biased, Blend, Hybrid, Piecewise, SwitchAt
from pinnlab.nets import MLP
from pinnlab.solvers import SGD, Adam, ConstraintLoss, DataLoss, predict


def _problem(equation=None, net=None, loss=None, **kwargs):
    equation = equation or PoissonTwoBody(3)
    net = net or MLP(equation.input_dim, width=8, depth=2)
    return pinnlab.PINNProblem(equation, net, SteinAntithetic(sigma=0.1, num_samples=4), loss or Biased(),
                               batch_size=8, **kwargs)


def _step(problem=None, optimizer=None):
    problem = problem or _problem()
    optimizer = optimizer or SGD(1e-2)
    params = problem.init_params()
    return pinnlab.make_train_step(problem, optimizer), params, optimizer.init(params)


@pytest.mark.parametrize("sigma", [0.0, float("nan"), -0.1])
def test_a_tensor_sigma_out_of_range_is_refused_by_the_step(sigma):
    """σ = 0 or NaN as a tensor trained to NaN parameters (status ok at the step); the
    float was refused. The step's torch.func.grad wraps it, and wrapped σ was skipped."""
    step, params, state = _step()
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        step(params, state, {"sigma": torch.tensor(sigma)}, 0)


def test_a_hypergradient_at_a_non_finite_sigma_is_refused_by_reverse_unrolling():
    """rgu returned grad NaN, value NaN without a word at φ = NaN (fg2u raised)."""
    problem = _problem()
    step = pinnlab.make_train_step(problem, SGD(1e-2))
    bilevel = from_train_step(step, lambda phi: {"sigma": torch.exp(phi["log_sigma"])},
                              lambda theta, phi: sum((v ** 2).sum() for v in theta.values()),
                              (problem.init_params(), SGD(1e-2).init(problem.init_params())), horizon=2)
    phi = {"log_sigma": torch.tensor(float("nan"))}
    for method in (ReverseUnroll(), ForwardGradientUnroll(num_directions=1)):
        with pytest.raises(ValueError, match="sigma must be finite and > 0"):
            hypergradient(bilevel, phi, method)


@pytest.mark.parametrize("hyperparams, match", [
    ({"lr": -1.0}, r"lr must be finite and > 0"),
    ({"lr": torch.tensor(-1.0)}, r"lr must be finite and > 0"),
    ({"weights": {"residual": -1.0}}, r"weights\['residual'\] must be finite and >= 0"),
    ({"weights": {"residual": torch.tensor(float("inf"))}}, r"weights\['residual'\] must be finite"),
])
def test_a_learning_rate_or_weight_out_of_range_is_refused(hyperparams, match):
    """lr = −1 ascended the loss (status ok, rel. L2 31.6); a weight of −1 rewarded a
    large residual. Adam(lr=-1) was refused already."""
    step, params, state = _step()
    with pytest.raises(ValueError, match=match):
        step(params, state, hyperparams, 0)


@pytest.mark.parametrize("mix", [2.0, torch.tensor(2.0), -1.0, torch.tensor(float("nan"))])
def test_a_mix_outside_0_1_is_refused(mix):
    """A float 2.0 was clamped to the unbiased loss, a tensor 2.0 extrapolated to −a + 2b;
    the trace recorded 2.0 either way."""
    step, params, state = _step(_problem(AllenCahnTwoBody(3), loss=Hybrid()))
    with pytest.raises(ValueError, match=r"mix must be finite and in \[0, 1\]"):
        step(params, state, {"mix": mix}, 0)


def test_collocation_weights_must_be_one_non_negative_value_per_point():
    """An (N, 1) weight broadcast the (N,) residual to (N, N): mean(w)·mean(R²), 222.04
    instead of 224.34, silently. A negative weight gave NaN (√w)."""
    problem = _problem(AllenCahnTwoBody(4))
    params = problem.init_params()
    right, _ = problem.objective(params, {"collocation_weight": lambda x: 1 + 10 * x[:, 0] ** 2}, 0, 0)
    assert torch.isfinite(right)
    with pytest.raises(ValueError, match=r"collocation_weight must map the \(8, 4\) points to a \(8,\) tensor"):
        problem.objective(params, {"collocation_weight": lambda x: (1 + 10 * x[:, 0] ** 2)[:, None]}, 0, 0)
    with pytest.raises(ValueError, match="collocation_weight must give finite weights >= 0; got 8 others"):
        problem.objective(params, {"collocation_weight": lambda x: -torch.ones(x.shape[0])}, 0, 0)


def test_coefficient_overrides_name_the_equations_coefficients_with_their_shapes():
    """An unknown name was ignored (training identical to none); a float64 override, the
    dtype of equation.coefficients itself, failed in torch's addmv; a wrong shape with a
    size mismatch from unit_ball.py."""
    problem = _problem(AllenCahnTwoBody(3))
    params = problem.init_params()
    with pytest.raises(ValueError, match=r"coefficients \['C'\] are not coefficients of allen_cahn_two_body "
                                         r"\(it has c\)"):
        problem.objective(params, {"coefficients": {"C": torch.zeros(3)}}, 0, 0)
    with pytest.raises(ValueError, match=r"coefficient 'c' of allen_cahn_two_body has shape \(2,\), "
                                         r"got an override of shape \(5,\)"):
        problem.objective(params, {"coefficients": {"c": torch.zeros(5)}}, 0, 0)
    c = problem.equation.coefficients["c"]
    as64, _ = problem.objective(params, {"coefficients": {"c": c.double()}}, 0, 0)
    as32, _ = problem.objective(params, {"coefficients": {"c": c.float()}}, 0, 0)
    assert as64.dtype == torch.float32 and torch.equal(as64, as32)


def test_an_optimizer_state_of_another_dtype_or_optimizer_is_refused():
    """Adam wrote float64 parameters into a float32 state's buffers and returned float32
    parameters (SGD with momentum returned float64); an SGD state in an Adam step failed
    with "unsupported operand type(s) for +: 'builtin_function_or_method' and 'int'"."""
    step, params, _ = _step(optimizer=Adam(1e-2))
    as64 = {k: v.double() for k, v in params.items()}
    with pytest.raises(ValueError, match=r"the Adam state's 'layers.0.weight' is float32 \(8, 3\), the parameter "
                                         r"float64 \(8, 3\): make the state with init\(\) from these parameters"):
        step(as64, Adam(1e-2).init(params), {}, 0)
    new, _, _ = step(as64, Adam(1e-2).init(as64), {}, 0)
    assert all(v.dtype == torch.float64 for v in new.values())
    with pytest.raises(TypeError, match=r"Adam.update needs a AdamState \(from Adam.init\), got SGDState"):
        step(params, SGD(1e-2, momentum=0.5).init(params), {}, 0)


def test_params_must_name_every_parameter_of_the_net():
    """A dict without layers.0.weight trained the rest, the missing one taken frozen from
    the net and left out of the result."""
    step, params, _ = _step()
    part = {k: v for k, v in params.items() if k != "layers.0.weight"}
    with pytest.raises(ValueError, match=r"params must name the net's parameters; missing \['layers.0.weight'\]"):
        step(part, SGD(1e-2).init(part), {}, 0)


@pytest.mark.parametrize("step_number", [1.5, "3", -1, True])
def test_a_step_number_must_be_an_int(step_number):
    """1.5 trained as step 1, "3" hashed as a stream name (other noise than step 3), −1
    said "seed parts must be non-negative"."""
    step, params, state = _step()
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        step(params, state, {}, step_number)


def test_a_net_of_another_input_width_or_a_name_for_an_object_is_refused_at_the_problem():
    """A 5-input net for a 3-d equation failed at the first step with torch's "mat1 and
    mat2 shapes cannot be multiplied"; a loss given as "biased" with "'str' object has
    no attribute 'validate'"."""
    with pytest.raises(ValueError, match=r"net takes 5 input columns, poisson_two_body has 3 \(d = 3\)"):
        _problem(net=MLP(5, width=8, depth=2))
    with pytest.raises(TypeError, match="loss must be a AbstractLoss instance, got 'biased'"):
        pinnlab.PINNProblem(PoissonTwoBody(3), MLP(3, width=8, depth=2), SteinAntithetic(0.1), "biased")
    with pytest.raises(TypeError, match="extra_terms must be AbstractLossTerm instances"):
        _problem(extra_terms=("boundary",))


def test_predict_checks_the_points_before_estimating():
    """Points of another width or dtype failed in torch's matmul inside the estimator."""
    problem = _problem()
    params = problem.init_params()
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        predict(problem, params, torch.zeros(5, 4))
    with pytest.raises(ValueError, match="the points are float64 on cpu, the parameters float32 on cpu"):
        predict(problem, params, torch.zeros(5, 3, dtype=torch.float64))


def test_an_empty_or_non_finite_test_set_is_refused_before_training():
    """An empty one failed at the first evaluation (after 500 steps by default) with
    "max(): Expected reduction dim"; NaN points ended status ok with rel_l2 NaN."""
    x = PoissonTwoBody(3).test_set(10)
    u = PoissonTwoBody(3).exact(x)
    with pytest.raises(ValueError, match="test_set: the points must be finite, at least one, got 0 points"):
        pinnlab.train(_problem(), steps=2, device="cpu", progress="off", test_set=(x[:0], u[:0]))
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="got 10 points, 1 of them not finite"):
        pinnlab.train(_problem(), steps=2, device="cpu", progress="off", test_set=(x, u))


@pytest.mark.parametrize("keyword, value", [("steps", 2.5), ("steps", True), ("eval_every", 1.5),
                                            ("checkpoint_every", -1), ("log_every", -5), ("eval_samples", 0)])
def test_train_counts_must_be_ints(keyword, value):
    """steps = 2.5 ran 3 steps, True 1; eval_every 1.5, checkpoint_every −1 and
    log_every −5 were accepted."""
    kwargs = {"steps": 2, keyword: value}
    with pytest.raises(ValueError, match=f"{keyword} must be an integer >= "):
        pinnlab.train(_problem(), device="cpu", progress="off", test_points=4, **kwargs)


def test_a_hybrid_loss_that_cannot_switch_within_the_run_warns():
    """Hybrid() switches at step 5000: train(steps=3) trained the biased loss only, with
    no word (the command line refuses such a config)."""
    problem = _problem(AllenCahnTwoBody(3), loss=Hybrid())
    with pytest.warns(UserWarning, match=r"SwitchAt\(step=5000\) gives its unbiased loss no weight within "
                                         r"the run's 3 steps: it trains Biased only") as record:
        pinnlab.train(problem, steps=3, device="cpu", progress="off", test_points=4)
    assert {w.filename for w in record if "no weight" in str(w.message)} == {__file__}  # the user's line
    assert SwitchAt(2).starts_within(3) and not SwitchAt(3).starts_within(3)
    assert Blend(1, 5).starts_within(3) and not Blend(2, 5).starts_within(3)  # mix > 0 from start + 1
    # a replayed tuned mix: segments of 10 steps, the first above 0 starts at step 20
    schedule = Piecewise((0.0, 0.0, 0.7), total=30)
    assert not schedule.starts_within(20) and schedule.starts_within(21)
    assert [schedule.mix(step) for step in (19, 20)] == [0.0, 0.7]


@pytest.mark.parametrize("make, match", [
    (lambda: ConstraintLoss(batch_size=0), "ConstraintLoss.batch_size must be an integer >= 1"),
    (lambda: ConstraintLoss(name=""), "a loss term's name must be a non-empty string"),
    (lambda: DataLoss(torch.zeros(0, 3), torch.zeros(0)), "DataLoss needs at least one observation"),
    (lambda: DataLoss(torch.zeros(4, 3), torch.tensor([0.0, float("nan"), 0.0, 0.0])),
     "DataLoss: 1 of 4 observations are not finite"),
    (lambda: DataLoss(torch.zeros(4, 3), torch.zeros(4), batch_size=-1), "DataLoss.batch_size must be an integer"),
    (lambda: _problem(extra_terms=(DataLoss(torch.zeros(4, 5), torch.zeros(4)),)),
     "DataLoss: the observations have 5 columns, poisson_two_body takes 3"),
])
def test_extra_terms_are_checked_when_made(make, match):
    """batch_size 0, no or NaN observations stopped training as "nonfinite" with advice
    to lower the learning rate; batch_size −1 used M − 1 observations; 5 columns for a
    3-d equation failed in torch's matmul."""
    with pytest.raises(ValueError, match=match):
        make()


def test_mlp_draws_nothing_from_the_global_rng_and_checks_its_arguments():
    """nn.Linear's own initialisation ran first and advanced the global RNG, contrary to
    the docstring; generator=0 used the default generator; a float width failed in
    torch.empty; numpy integers got a message contradicting itself."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    net = MLP(3, width=8, depth=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.rand(3), expected)
    again = MLP(3, width=8, depth=2, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got 0"):
        MLP(3, width=8, depth=2, generator=0)
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 2.5"):
        MLP(3, width=2.5, depth=2)
    with pytest.raises(ValueError, match=r"input_dim must be a Python int >= 1, got np.int64\(3\) \(pass int"):
        MLP(np.int64(3), width=8, depth=2)


def test_an_equation_seed_must_be_an_int():
    """seed=1.7 became seed 1, silently."""
    with pytest.raises(ValueError, match="seed must be an integer"):
        PoissonTwoBody(3, seed=1.7)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got -3"):
        PoissonTwoBody(3).test_set(-3)


def test_an_outer_algorithm_given_to_hypergradient_points_to_optimize():
    from pinnlab.bilevel import make_method

    with pytest.raises(TypeError, match="whole outer algorithm with its own iterates, run it with "
                                        "pinnlab.bilevel.optimize"):
        hypergradient(None, {}, make_method("penalty"))


def test_names_given_for_objects_are_refused_with_their_argument():
    """`optimizer="adam"` failed with "'str' object has no attribute 'lr'" (or 'init' in
    train), `Hybrid(then="unbiased1")` with "no attribute 'validate'"; `objective(chunk=5)`
    with an IndexError."""
    with pytest.raises(TypeError, match="optimizer must be a AbstractOptimizer instance, got 'adam'"):
        pinnlab.make_train_step(_problem(), "adam")
    with pytest.raises(TypeError, match="optimizer must be a AbstractOptimizer instance, got 'adam'"):
        pinnlab.train(_problem(), steps=1, optimizer="adam", device="cpu", progress="off")
    with pytest.raises(TypeError, match=r"Hybrid.then must be a loss instance \(e.g. Unbiased1\(\)\), got 'unbiased1'"):
        Hybrid(then="unbiased1")
    problem = _problem()
    with pytest.raises(ValueError, match=r"chunk must be None or in 0..0 \(batch_chunks\), got 5"):
        problem.objective(problem.init_params(), {}, 0, 0, chunk=5)


def test_a_checkpoint_of_another_optimizer_is_refused(tmp_path):
    """load_checkpoint(path, SGD(), ...) of an Adam checkpoint returned an empty SGD state:
    the run went on with SGD from Adam's parameters (only the command line's config hash
    would have told)."""
    from pinnlab.io import CheckpointError, load_checkpoint, save_checkpoint
    from pinnlab.solvers import TrainState

    problem = _problem()
    params = problem.init_params()
    path = tmp_path / "adam.ckpt"
    save_checkpoint(path, TrainState(params=params, opt_state=Adam().init(params)), Adam(), "config")
    assert load_checkpoint(path, Adam(), "config", torch.device("cpu"), torch.float32).step == 0
    for other in (SGD(), SGD(momentum=0.9)):
        with pytest.raises(CheckpointError, match=r"is damaged \(ValueError: the saved optimizer state has "
                                                  r"\['count', 'mu/layers.0.bias', 'mu/layers.0.weight'\], not keys "
                                                  r"of SGD's state: it was saved by another optimizer\)"):
            load_checkpoint(path, other, "config", torch.device("cpu"), torch.float32)
