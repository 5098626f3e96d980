"""Claims of the docstrings and comments of pinnlab.tuning, pinnlab.studies and pinnlab.io
that no earlier test pinned, each checked against what the code does."""


import h5py
import numpy as np
import pytest
import torch

from pinnlab import config as configuration
from pinnlab.io.atomic import OutputBusy, output_lock
from pinnlab.io.checkpoint import CheckpointError
from pinnlab.io.observations import ObservationError, save_observations
from pinnlab.tuning.setup import build_tuning
from tests.tuning.micro_configs import WEIGHT_FG2U

F64 = torch.float64


def _setup(tmp_path, *overrides, text=WEIGHT_FG2U):
    path = tmp_path / "tune.yaml"
    path.write_text(text)
    return build_tuning(configuration.load(path, list(overrides)))


# --- pinnlab.io.observations -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".npz"])
def test_saved_observations_follow_the_documented_layout_in_float64(tmp_path, suffix):
    """Module docstring: HDF5 datasets / NPZ arrays ``x`` `(M, D)` and ``u`` `(M,)`;
    save_observations writes float64 values even for float32 tensors (exact here: every
    value is a float32 number)."""
    x = torch.tensor([[0.25, -0.5, 0.125], [0.75, 1.0, -2.0]], dtype=torch.float32)
    u = torch.tensor([1.5, -3.0], dtype=torch.float32)
    path = tmp_path / f"obs{suffix}"
    save_observations(path, x, u)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            stored = {name: np.array(data[name]) for name in data.files}
    else:
        with h5py.File(path, "r") as fh:
            stored = {name: fh[name][()] for name in fh}
    assert sorted(stored) == ["u", "x"]
    assert stored["x"].shape == (2, 3) and stored["u"].shape == (2,)
    assert stored["x"].dtype == np.float64 and stored["u"].dtype == np.float64
    np.testing.assert_array_equal(stored["x"], x.double().numpy())
    np.testing.assert_array_equal(stored["u"], u.double().numpy())


def test_an_unknown_suffix_is_refused_by_save_observations_and_nothing_is_left(tmp_path):
    """save_observations writes "in the format given by the suffix", atomically: an
    unknown suffix is an ObservationError naming it, with neither the file nor the hidden
    temporary left behind."""
    x, u = torch.zeros(2, 2, dtype=F64), torch.zeros(2, dtype=F64)
    with pytest.raises(ObservationError, match=r"^unknown observation format '\.txt' \(use \.h5, \.hdf5, \.npz or \.csv\)$"):
        save_observations(tmp_path / "obs.txt", x, u)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_observations_do_not_depend_on_the_problem_seed():
    """synthetic_observations: everything is keyed by ``seed``, independent of the problem
    seed: the points of two instances of one equation are the same for one seed (each
    instance gives its own u* there), and another seed draws other points."""
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.io.observations import synthetic_observations

    a, b = PoissonTwoBody(3, seed=1), PoissonTwoBody(3, seed=2)
    xa, ua = synthetic_observations(a, 20, seed=4)
    xb, ub = synthetic_observations(b, 20, seed=4)
    assert torch.equal(xa, xb)
    assert torch.equal(ua, a.exact(xa)) and torch.equal(ub, b.exact(xb))
    assert not torch.equal(synthetic_observations(a, 20, seed=5)[0], xa)


# --- pinnlab.io.atomic -------------------------------------------------------------------


def test_the_lock_file_is_removed_when_the_body_raises_and_the_output_can_be_locked_again(tmp_path):
    """output_lock: the hidden ``.NAME.lock`` is removed when the body is done, also when
    it ends by an exception, and the output is then free for the next run."""
    output = tmp_path / "run.h5"
    lock = tmp_path / ".run.h5.lock"
    with pytest.raises(KeyError), output_lock(output):
        assert lock.exists()
        raise KeyError("the run failed")
    assert not lock.exists()
    with output_lock(output):
        with pytest.raises(OutputBusy), output_lock(output):
            pass
    assert not lock.exists()


# --- pinnlab.tuning.command --------------------------------------------------------------


def test_checkpoint_metadata_returns_the_saved_metadata_and_refuses_other_files(tmp_path):
    """checkpoint_metadata: the ``metadata`` a tune checkpoint was saved with; a file that
    holds no dictionary "has an unknown format", a dictionary without metadata is
    incomplete (both CheckpointError naming the file)."""
    from pinnlab.tuning.command import checkpoint_metadata

    path = tmp_path / "t.h5.ckpt"
    torch.save({"metadata": {"config": "abc", "n": 3}, "history": {}}, path)
    assert checkpoint_metadata(path) == {"config": "abc", "n": 3}
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {str(path)!r} has an unknown format$"):
        checkpoint_metadata(path)
    torch.save({"history": {}}, path)
    with pytest.raises(CheckpointError, match=r"is incomplete: it has no 'metadata'$"):
        checkpoint_metadata(path)


# --- pinnlab.tuning.run ------------------------------------------------------------------


def test_zo_fg2u_steps_0_05_in_unconstrained_phi_unless_the_config_gives_mu():
    """ZO_DEFAULT_MU: zo_fg2u's finite-difference step is 0.05 when the config gives none
    (the library default 1e-3 stays the class's own), and a given mu is kept."""
    from pinnlab.bilevel.zeroth_order import ZeroOrderForwardGradient
    from pinnlab.tuning.run import ZO_DEFAULT_MU, make_hypergradient_method

    assert ZO_DEFAULT_MU == 0.05
    assert make_hypergradient_method("zo_fg2u", {}).mu == 0.05
    assert make_hypergradient_method("zo_fg2u", {"mu": 0.2}).mu == 0.2
    assert ZeroOrderForwardGradient().mu == 1e-3


def test_a_search_outcome_holds_the_best_trials_phi_and_index(tmp_path):
    """TuneOutcome: "for search baselines ``phi`` is the best trial's φ and
    ``extra["best_trial"]`` its index" (it said a ``best`` held it, which no outcome has)."""
    import math

    from pinnlab.tuning.run import TuneOutcome
    from pinnlab.tuning.search import search

    assert 'for search baselines ``phi`` is the best trial\'s φ and ``extra["best_trial"]`` its index' in " ".join(
        TuneOutcome.__doc__.split())
    setup = _setup(tmp_path, "tune.method=random", "tune.options={}", "tune.outer_steps=3")
    scores = iter([3.0, 1.0, 2.0])
    outcome = search(setup, sampler="random", save=False, score=lambda phi: next(scores))
    assert outcome.status == "ok" and outcome.extra["best_trial"] == 1
    for name, value in outcome.phi.items():
        assert torch.equal(value, outcome.history[f"phi/{name}"][1].to(value)), name
    assert not math.isnan(outcome.history["value"][1])
    # "history has outer_step, value, grad_norm (NaN for searches ...), seconds, method
    # ("trial" ...) and phi/<name>" (it once left out grad_norm and method)
    text = " ".join(TuneOutcome.__doc__.split())
    assert all(f"``{key}``" in text for key in ("outer_step", "value", "grad_norm", "seconds", "method"))
    assert set(outcome.history) == {"outer_step", "value", "grad_norm", "seconds", "method",
                                    *(f"phi/{name}" for name in outcome.phi)}
    assert outcome.history["method"] == ["trial"] * 3 and all(map(math.isnan, outcome.history["grad_norm"]))


# --- pinnlab.studies ---------------------------------------------------------------------


def test_a_nan_bias_or_standard_error_gives_sign_zero():
    """bias_signs: "A NaN value or SE gives 0", for the loss's signed bias (either side of
    the rule) and for bias²; a finite bias beyond 2 SE still counts."""
    from pinnlab.studies.estimator_study import bias_signs

    nan = float("nan")
    loss = [{"bias": nan, "bias_se": 1.0}, {"bias": 5.0, "bias_se": nan}, {"bias": -5.0, "bias_se": nan},
            {"bias": -5.0, "bias_se": 1.0}]
    assert bias_signs("loss", loss) == [0, 0, 0, -1]
    gradient = [{"bias2": nan, "bias2_se": 1.0}, {"bias2": 5.0, "bias2_se": nan}, {"bias2": 5.0, "bias2_se": 1.0}]
    assert bias_signs("gradient", gradient) == [0, 0, 1]
    assert bias_signs("residual", gradient) == [0, 0, 1]


def test_an_equation_section_recorded_before_a_key_existed_compares_by_its_default(tmp_path):
    """_equation_differences: the network file's equation section is resolved first, so a
    key it lacks compares by its default (radius: uniform here), ``dim`` is left aside,
    and a real difference is key → (file's value, study's value)."""
    from pinnlab.studies.command import _equation_differences

    path = tmp_path / "tune.yaml"
    path.write_text(WEIGHT_FG2U)
    config = configuration.load(path, [])
    assert config.resolved()["equation"]["radius"] == "uniform"
    stored = {"name": "poisson_two_body", "dim": 7, "seed": 1, "constraint": "soft"}
    assert _equation_differences(stored, config) == {}
    assert _equation_differences({**stored, "constraint": "hard", "seed": 2}, config) == {
        "seed": (2, 1), "constraint": ("hard", "soft")}
    assert _equation_differences({"name": "poisson_two_body", "dim": 3, "seed": 1}, config) == {
        "constraint": ("hard", "soft")}


def test_pinnlab_tuning_imports_its_names_only_when_one_is_asked_for(monkeypatch):
    """pinnlab.tuning: "Names are imported lazily" (pinnlab.config imports the tune:
    schema from the package): executing the package imports none of its modules; a name
    resolves to its module's object when asked for, an unknown one is an AttributeError."""
    import importlib
    import importlib.util
    import sys

    import pinnlab.tuning as package

    modules = [f"pinnlab.tuning.{name}" for name in ("run", "setup", "search", "spec")]
    for name in modules:
        importlib.import_module(name)
        monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location("_pinnlab_tuning_copy", package.__file__)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert [name for name in modules if name in sys.modules] == []
    monkeypatch.undo()
    assert copy.__all__ == sorted(copy._EXPORTS) == sorted(package._EXPORTS)
    for name, module in package._EXPORTS.items():
        assert getattr(package, name) is getattr(sys.modules[module], name)
    with pytest.raises(AttributeError, match=r"^module 'pinnlab.tuning' has no attribute 'nothing'$"):
        package.nothing  # noqa: B018


def test_a_refused_value_is_shown_on_one_line_cut_to_60_characters():
    """checkpoint._shown: "its repr on one line, cut to 60 characters" (a damaged
    checkpoint's refusal quotes the value so)."""
    from pinnlab.io.checkpoint import _shown

    matrix = torch.zeros(3, 3, dtype=F64)
    assert "\n" in repr(matrix) and "\n" not in _shown(matrix)
    assert _shown(matrix) == " ".join(repr(matrix).split())[:60]
    long = list(range(100))
    assert _shown(long) == repr(long)[:60] and len(_shown(long)) == 60
    assert _shown(4.7) == "4.7"


def test_a_nonfinite_search_outcome_ran_every_trial_at_trial_0s_phi(tmp_path):
    """TuneOutcome.status: ``"nonfinite"`` ... "or a search ran every trial and none ended
    finite (φ is then trial 0's)" (it said only "stopped early at the last finite φ").
    Every trial scored inf here."""
    import inspect
    import math

    from pinnlab.tuning.run import TuneOutcome
    from pinnlab.tuning.search import search

    assert "a search ran every trial and none ended finite (φ is then trial 0's)" in " ".join(
        inspect.getsource(TuneOutcome).split())
    setup = _setup(tmp_path, "tune.method=random", "tune.options={}", "tune.outer_steps=3")
    outcome = search(setup, sampler="random", save=False, score=lambda phi: math.inf)
    assert outcome.status == "nonfinite" and outcome.extra["best_trial"] == 0
    assert len(outcome.history["value"]) == setup.config.tune.outer_steps
    for name, value in outcome.phi.items():
        assert torch.equal(value, outcome.history[f"phi/{name}"][0].to(value)), name