"""Sixth audit of the pure training step and the problem's objective, pinned on tiny
float64 problems: the refusals of objects of the wrong kind and their 200-character
form, the default seed, term gradients (a term of no parameter, no names, the caller's
tensors), the messages of refused hyperparameters and collocation weights, collocation
weights in chunks and the chunk index."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pinnlab.equations import FokkerPlanckIso, PoissonTwoBody
from pinnlab.losses import Biased, Hybrid, SwitchAt
from pinnlab.nets import MLP
from pinnlab.solvers import SGD, DataLoss, PINNProblem, TrainStep, make_train_step
from pinnlab.solvers.problem import AbstractLossTerm
from tests.solvers.small_problems import F64, problem, stein


class _Constant(AbstractLossTerm):
    """A term of no parameter at all (a fixed penalty): it requires no gradient."""

    name = "constant"

    def __call__(self, context):
        return torch.tensor(3.0, dtype=F64)


# -- refusals of objects of the wrong kind -----------------------------------------------

def test_a_problem_that_is_no_pinnproblem_is_refused_by_the_step():
    """TrainStep checks its problem as it checks its optimizer (a name would fail at the
    first step with "'str' object has no attribute 'batch_chunks'")."""
    with pytest.raises(TypeError, match=r"^problem must be a PINNProblem instance, got 'p'$"):
        TrainStep("p", SGD(lr=0.1))


def test_a_net_that_is_no_module_is_refused_by_the_problem():
    """A name given for the net is refused at once, naming the net (not an AttributeError
    from named_parameters)."""
    with pytest.raises(TypeError, match=r"^net must be a Module instance, got 'mlp'$"):
        PINNProblem(PoissonTwoBody(2, seed=1), "mlp", stein(), Biased(), batch_size=4)


def test_a_refusal_quoting_a_huge_object_is_cut_to_200_characters():
    """The refused object's repr is quoted, the whole message cut to 200 characters (a
    long string or a big tensor would fill the screen)."""
    p = problem(dim=2, batch=4)
    with pytest.raises(TypeError) as step_err:
        TrainStep(p, "x" * 500)
    assert str(step_err.value) == ("optimizer must be a AbstractOptimizer instance, got '" + "x" * 500)[:200]
    with pytest.raises(TypeError) as problem_err:
        PINNProblem(p.equation, p.net, p.estimator, "y" * 500, batch_size=4)
    assert str(problem_err.value) == ("loss must be a AbstractLoss instance, got '" + "y" * 500)[:200]


def test_a_refusal_quoting_a_value_of_several_lines_stays_one_line():
    """A tensor's repr and a module's span lines; quoted in a refusal they are joined by
    single spaces and cut to 200 characters (a 3×3 tensor given as the loss was a 3-line
    TypeError; a refused 200-element learning rate printed 15 lines). A refused 0-d
    tensor is still shown as its number."""
    p = problem(dim=2, batch=4)
    with pytest.raises(TypeError) as loss_err:
        PINNProblem(p.equation, p.net, p.estimator, torch.zeros(3, 3), batch_size=4)
    assert str(loss_err.value) == ("loss must be a AbstractLoss instance, got tensor([[0., 0., 0.], [0., 0., 0.], "
                                   "[0., 0., 0.]])")
    with pytest.raises(TypeError) as step_err:
        TrainStep(p, MLP(2, width=4, depth=2))
    assert "\n" not in str(step_err.value) and "  " not in str(step_err.value)
    assert str(step_err.value).startswith("optimizer must be a AbstractOptimizer instance, got MLP( (")
    params = p.init_params(dtype=F64)
    with pytest.raises(ValueError) as lr_err:
        p.objective(params, {"lr": -torch.ones(200, dtype=F64)}, 0, 0)
    text = str(lr_err.value)
    assert "\n" not in text and len(text) == 200
    assert text.startswith("hyperparameter lr must be finite and > 0, got tensor([-1., -1., ")
    with pytest.raises(ValueError, match=r"^hyperparameter lr must be finite and > 0, got -0\.5$"):
        p.objective(params, {"lr": torch.tensor(-0.5, dtype=F64)}, 0, 0)


def test_a_time_dependent_equation_says_its_net_needs_a_time_column():
    """Fokker–Planck in d = 3 takes 4 input columns (time last): a 3-input net is refused
    with the count of inputs and the reason (d = 3, plus time)."""
    eq = FokkerPlanckIso(3)
    with pytest.raises(ValueError, match=r"^net takes 3 input columns, fokker_planck_iso has 4 "
                                         r"\(d = 3, plus time\)$"):
        PINNProblem(eq, MLP(3, width=4, depth=2), stein(), Biased(), batch_size=4)


def test_init_params_are_detached_leaves():
    """The copy holds plain leaf tensors that require no gradient (not a graph hanging
    off the net's parameters), in the dtype asked for."""
    p = problem(dim=2, batch=4)
    for v in p.init_params(dtype=F64).values():
        assert v.is_leaf and not v.requires_grad and v.dtype == F64
    for v in p.init_params().values():
        assert v.is_leaf and not v.requires_grad


# -- the step's defaults -----------------------------------------------------------------

def test_the_default_seed_of_the_step_is_zero():
    """TrainStep(p, opt) and make_train_step(p, opt) key their noise by seed 0: the step's
    loss is the objective's at seed 0 (another seed draws other points and noise)."""
    p = problem(dim=2, estimator=stein(), batch=6)
    params = p.init_params(dtype=F64)
    opt = SGD(lr=0.1)
    at0, _ = p.objective(params, {}, 1, 0)
    at1, _ = p.objective(params, {}, 1, 1)
    assert at0.item() != at1.item()
    for step in (TrainStep(p, opt), make_train_step(p, opt)):
        assert step.seed == 0
        _, _, metrics = step(params, opt.init(params), {}, 1)
        assert metrics["loss"].item() == at0.item()


# -- term gradients ----------------------------------------------------------------------

def test_term_gradients_of_a_term_of_no_parameter_are_zeros():
    """A constant term requires no gradient: its gradients are zeros (no autograd call on
    it), after the residual's, whose graph is freed in time."""
    p = problem(dim=2, batch=4, extra_terms=(_Constant(),))
    params = p.init_params(dtype=F64)
    got = make_train_step(p, SGD(lr=0.1)).term_gradients(params, {}, 0)
    assert list(got) == ["residual", "constant"]
    for k in params:
        assert torch.equal(got["constant"][k], torch.zeros_like(params[k]))
        assert got["residual"][k].abs().sum() > 0


def test_term_gradients_leave_the_callers_parameters_alone():
    """Plain autograd on detached copies: parameters that required no gradient still do
    not afterwards (the caller's tensors are not turned into autograd leaves)."""
    p = problem(dim=2, batch=4)
    params = p.init_params(dtype=F64)
    make_train_step(p, SGD(lr=0.1)).term_gradients(params, {}, 0)
    assert not any(v.requires_grad for v in params.values())


def test_term_gradients_for_no_names_are_empty():
    """names=[] asks for no term (not for all of them: only None means all)."""
    x = torch.rand(3, 2, generator=torch.Generator().manual_seed(2), dtype=F64) * 0.5  # (inside the unit ball)
    p = problem(dim=2, batch=4, extra_terms=(DataLoss(x, torch.zeros(3, dtype=F64)),))
    assert make_train_step(p, SGD(lr=0.1)).term_gradients(p.init_params(dtype=F64), {}, 0, names=[]) == {}


# -- hyperparameters ---------------------------------------------------------------------

def test_a_weight_for_no_term_lists_the_terms_in_the_problems_order():
    """The message lists residual first, then the extra terms in their order."""
    x = torch.zeros(2, 2, dtype=F64)
    p = problem(dim=2, batch=4, extra_terms=(DataLoss(x, torch.zeros(2, dtype=F64), name="obs"),
                                             DataLoss(x, torch.zeros(2, dtype=F64), name="anchor")))
    with pytest.raises(ValueError, match=r"weights \['data'\] name no loss term of this problem "
                                         r"\(terms: residual, obs, anchor\)$"):
        p.objective(p.init_params(dtype=F64), {"weights": {"data": 1.0}}, 0, 0)


def test_a_refused_tensor_hyperparameter_shows_its_value():
    """A tensor out of range is shown with its value (a 0-d tensor as its number)."""
    p = problem(dim=2, batch=4)
    with pytest.raises(ValueError, match=r"^hyperparameter lr must be finite and > 0, got -0\.5$"):
        p.objective(p.init_params(dtype=F64), {"lr": torch.tensor(-0.5, dtype=F64)}, 0, 0)


def test_a_numpy_learning_rate_is_a_number():
    """np.float32(0.5) is a real number (numbers.Real), not a Python float: the step takes
    it as the rate 0.5 (exact in float32), as it takes 0.5."""
    p = problem(dim=2, batch=4)
    params = p.init_params(dtype=F64)
    opt = SGD(lr=0.1)
    step = make_train_step(p, opt, seed=1)
    a, _, ma = step(params, opt.init(params), {"lr": np.float32(0.5)}, 0)
    b, _, _ = step(params, opt.init(params), {"lr": 0.5}, 0)
    assert ma["lr"].item() == 0.5
    for k in params:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_tensor_mix_of_zero_is_differentiated_through():
    """mix = tensor(0.0) (a hypergradient's start) is the blend (1 − β)·biased + β·unbiased
    at β = 0: d loss / d β is the unbiased loss minus the biased one (not 0, as a float 0
    in its place would give)."""
    p = problem(dim=2, estimator=stein(), batch=6, loss=Hybrid(switch=SwitchAt(0)))
    mix = torch.tensor(0.0, dtype=F64, requires_grad=True)
    loss, metrics = p.objective(p.init_params(dtype=F64), {"mix": mix}, 1, 0)
    (grad,) = torch.autograd.grad(loss, mix)
    torch.testing.assert_close(grad, metrics["loss_unbiased"] - metrics["loss_biased"], rtol=1e-12, atol=0)
    torch.testing.assert_close(loss.detach(), metrics["loss_biased"], rtol=0, atol=0)


# -- collocation weights -----------------------------------------------------------------

def test_a_collocation_weight_that_is_no_tensor_is_refused_naming_its_type():
    p = problem(dim=2, batch=4)
    with pytest.raises(ValueError, match=r"to a \(4,\) tensor of weights, got float$"):
        p.objective(p.init_params(dtype=F64), {"collocation_weight": lambda x: 1.0}, 0, 0)


def test_non_finite_collocation_weights_are_refused_and_counted():
    """NaN and inf are no weights: with one NaN, one inf and one negative weight among 4
    points the message counts 3 others; an inf alone is refused too."""
    p = problem(dim=2, batch=4)
    w = torch.tensor([float("nan"), float("inf"), -1.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"^collocation_weight must give finite weights >= 0; got 3 others$"):
        p.objective(p.init_params(dtype=F64), {"collocation_weight": lambda x: w}, 0, 0)
    infinite = torch.tensor([1.0, float("inf"), 1.0, 1.0], dtype=F64)  # (inf >= 0 holds)
    with pytest.raises(ValueError, match=r"^collocation_weight must give finite weights >= 0; got 1 others$"):
        p.objective(p.init_params(dtype=F64), {"collocation_weight": lambda x: infinite}, 0, 0)


def test_a_chunked_step_weighs_each_chunks_own_points():
    """The collocation weight is called on each chunk's points: 5 points in 2 uneven
    chunks with w(x) = 1 + x₀² give the full step's loss and update (autograd
    derivatives: no noise)."""
    full = problem(dim=2, batch=5)
    chunked = dataclasses.replace(full, batch_chunks=2)
    params = full.init_params(dtype=F64)
    hp = {"collocation_weight": lambda x: 1 + x[:, 0] ** 2}
    opt = SGD(lr=0.2)
    a, _, ma = make_train_step(full, opt, seed=3)(params, opt.init(params), hp, 2)
    b, _, mb = make_train_step(chunked, opt, seed=3)(params, opt.init(params), hp, 2)
    torch.testing.assert_close(mb["loss"], ma["loss"], rtol=1e-12, atol=0)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-12, atol=1e-15)


def test_a_chunk_that_is_no_int_is_refused():
    """chunk 1.0 is refused with the allowed range (not an IndexError of the split)."""
    p = problem(dim=2, batch=4, chunks=2)
    with pytest.raises(ValueError, match=r"chunk must be None or in 0\.\.1 \(batch_chunks\), got 1\.0"):
        p.objective(p.init_params(dtype=F64), {}, 0, 0, 1.0)


def test_a_boolean_chunk_is_refused():
    """A boolean chunk would take chunk 1's points with another noise stream than chunk
    1's (the step number refuses booleans for the same reason); it was accepted."""
    p = problem(dim=2, estimator=stein(), batch=4, chunks=2)
    with pytest.raises(ValueError, match="chunk must be None or in 0..1"):
        p.objective(p.init_params(dtype=F64), {}, 0, 0, True)
