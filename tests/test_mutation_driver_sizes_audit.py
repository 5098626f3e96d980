"""Mutation audit of the outer driver's checkpoints and of the memory check.

Each test pins one behaviour the earlier audits left open, tightly enough that a plausible
slip fails it. The driver: every entry's parameterisation recorded, one without a repr
of its own by its qualified name, an explicit Identity() the same as none; a
parameterisation mismatch on resume naming the entry that differs; a saved θ longer
than this run's refused as not fitting, not as an IndexError; a user's nested
NamedTuple state rebuilt; metadata checked by exact type (a str subclass refused, with
where it sits), tuples and non-str scalar keys accepted, a tuple key refused; the
existing-checkpoint refusal naming a Path as a string. The memory check: the data
term's Stein estimate at no more points than there are observations, with every hidden
layer's activations kept; a residual objective's autograd products in the default
chunks when the training is not autograd; the longer unroll of two phases when the
longer one is first.
"""

from __future__ import annotations

import typing

import pytest
import torch

from pinnlab import config as C
from pinnlab import sizes as S
from pinnlab.bilevel import Identity, Log, Logit, ReverseUnroll, optimize
from pinnlab.bilevel.driver import _plain, _restore, refuse_existing_checkpoint
from pinnlab.bilevel.parameterization import AbstractParameterization
from pinnlab.io import CheckpointError
from pinnlab.io.checkpoint import load_checkpoint_file, write_checkpoint_file
from tests.bilevel.test_validation import PHI, PROBLEM

SMALL = {
    "equation": {"name": "poisson_two_body", "dim": 3},
    "model": {"width": 8, "depth": 3},
    "estimator": {"samples": 4, "noise": "independent"},
    "trainer": {"steps": 2, "batch_size": 10, "test_points": 10},
}
RESIDUAL_TUNE = ["tune.tunables.weights.residual={}", "tune.objective.kind=residual"]


def _moment(name: str, overrides=()) -> dict[str, list[S.SizedTensor]]:
    """The tensors of moment ``name`` of SMALL with ``overrides``, by what they are."""
    out: dict[str, list[S.SizedTensor]] = {}
    for t in S.memory_moments(C.validate(C.apply_overrides(SMALL, list(overrides))))[name]:
        out.setdefault(t.what, []).append(t)
    return out


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1)


class _Maps:
    class Shifted(AbstractParameterization):
        """value = u + 1: a user's parameterisation, a plain class without a repr."""

        def forward(self, u):
            return u + 1.0

        def inverse(self, value):
            return value - 1.0


def test_a_parameterisation_without_a_repr_is_recorded_by_its_qualified_name(tmp_path):
    """A checkpoint records a parameterisation with no repr of its own as
    ``<qualname>()``: a nested class by its qualified name (``_Maps.Shifted()``, not the
    bare ``Shifted()`` two same-named classes would share), an unnamed entry as
    ``Identity()``."""
    path = tmp_path / "ck.pt"
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, parameterization={"s": _Maps.Shifted()},
             checkpoint=path, checkpoint_every=1)
    assert load_checkpoint_file(path)["parameterization"] == {"a": "Identity()", "s": "_Maps.Shifted()"}


def test_a_resume_with_another_parameterisation_names_the_entry_that_differs(tmp_path):
    """φ = {a, s}: only s's parameterisation changed (Logit's bounds), so the refusal
    names φ['s'] and both parameterisations, not the first entry a (Log() in both runs)."""
    path = tmp_path / "ck.pt"
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd,
             parameterization={"a": Log(), "s": Logit(low=-5.0, high=5.0)}, checkpoint=path, checkpoint_every=1)
    with pytest.raises(CheckpointError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, meta_optimizer=_sgd,
                 parameterization={"a": Log(), "s": Logit(low=-4.0, high=4.0)}, checkpoint=path, checkpoint_every=1,
                 resume=True)
    assert str(err.value) == (f"checkpoint {str(path)!r} holds φ['s'] parameterised by Logit(low=-5.0, high=5.0), "
                              "not by this run's Logit(low=-4.0, high=4.0): its values would mean other "
                              "hyperparameters")


def test_a_saved_theta_state_longer_than_this_runs_does_not_fit(tmp_path):
    """A hand-edited checkpoint whose warm start (θ, state) has a third entry is refused as
    not fitting this run (theta_state is not a sequence of 2 entries), not as an
    IndexError while rebuilding it against this run's shorter state."""
    path = tmp_path / "ck.pt"
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, checkpoint=path, checkpoint_every=1)
    data = load_checkpoint_file(path)
    data.pop("content_sha256", None)
    assert len(data["theta_state"]) == 2
    data["theta_state"] = [*data["theta_state"], {"w": torch.zeros(3, dtype=torch.float64)}]
    write_checkpoint_file(path, data)
    with pytest.raises(CheckpointError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, meta_optimizer=_sgd, checkpoint=path, checkpoint_every=1,
                 resume=True)
    assert str(err.value) == (f"checkpoint {str(path)!r} does not fit this run: theta_state is not a sequence of "
                              "2 entries")


DATA_TERM = ["data.train=true", "data.points=50"]


def test_the_data_terms_stein_estimate_is_at_most_at_all_observations():
    """data.batch_size 80 with only 50 observations (build refuses it afterwards, with its
    own message): the data term's draw is counted at the 50 observations there are, not
    at 80; at batch size 20, at 20."""
    step = _moment("a training step", [*DATA_TERM, "data.batch_size=80"])
    assert step["the noise draw ξ of the data term"][0].shape == (50, 4, 3)
    assert step["the hidden activations of the data term"][0].shape == (50, 2, 4, 8)
    step = _moment("a training step", [*DATA_TERM, "data.batch_size=20"])
    assert step["the noise draw ξ of the data term"][0].shape == (20, 4, 3)


def test_the_data_terms_stein_estimate_keeps_every_hidden_layers_activations():
    """The data term is differentiated in the training step like the residual: each of
    the depth − 1 = 3 hidden layers' activations is kept (copies 3), not one layer's."""
    step = _moment("a training step", [*DATA_TERM, "model.depth=4"])
    activations = step["the hidden activations of the data term"][0]
    assert activations.copies == 3
    assert activations.nbytes == 3 * 50 * 2 * 4 * 8 * 4


def test_an_autograd_objective_of_a_stein_training_ignores_the_estimators_chunk_size():
    """With Stein training, estimator.chunk_size chunks the Stein evaluation; the autograd
    residual objective uses a default Autograd() (64 coordinates per batch), so a search
    evaluating it holds min(64, d) = 3 products at d = 3, not estimator.chunk_size 2."""
    objective = _moment("the tuning objective", [*RESIDUAL_TUNE, "tune.objective.estimator=autograd",
                                                 "estimator.chunk_size=2", "tune.method=random"])
    products = objective["the Hessian-vector products of the tuning objective"][0]
    assert products.shape == (3, 256, 3)


def test_the_longer_unroll_counts_when_it_is_the_first_phase():
    """rgu (T = 10) then trgu (s = 3): the unroll is counted at rgu's 10 kept steps,
    whichever phase comes last."""
    unroll = _moment("a reverse-mode unroll", [*RESIDUAL_TUNE, "tune.objective.samples=4", "tune.method=rgu",
                                               "tune.then={method: trgu, after: 1, options: {steps: 3}}",
                                               "tune.horizon=10"])
    kept = unroll["the hidden activations of a training step (kept for each of 10 unrolled steps)"][0]
    # (depth − 1 = 2 hidden layers, each's pre-activation and output, per kept step)
    assert kept.copies == 2 * 2 * 10 and kept.settings[0] == "tune.horizon"


class _Tag(str):
    """A str subclass: a weights_only read refuses its class at every resume."""


def test_metadata_of_a_scalar_subclass_is_refused_before_any_work(tmp_path):
    """A subclass of an accepted scalar type (here of str; a NumPy float64 is one of float)
    is refused by its exact type, naming where it sits, before a checkpoint is written."""
    path = tmp_path / "ck.pt"
    with pytest.raises(TypeError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, checkpoint=path, checkpoint_every=1,
                 metadata={"run": [1, {"tag": _Tag("x")}]})
    assert str(err.value).startswith(f"metadata['run'][1]['tag'] is a {__name__}._Tag; a checkpoint's metadata "
                                     "holds str, int, float, bool, None, tensors")
    assert not path.exists()


def test_metadata_holding_a_tuple_is_saved_and_resumed(tmp_path):
    """Tuples are metadata a weights_only read takes back, as lists are: a run with
    metadata {"shape": (2, 3)} saves it as given and resumes with it."""
    path = tmp_path / "ck.pt"
    metadata = {"shape": (2, 3), "tags": ["a", ("b", None)]}
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, checkpoint=path, checkpoint_every=1,
             metadata=metadata)
    assert load_checkpoint_file(path)["metadata"] == metadata
    result = optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, meta_optimizer=_sgd, checkpoint=path,
                      checkpoint_every=1, metadata=metadata, resume=True)
    assert result.history["outer_step"] == [0, 1]


def test_an_existing_checkpoint_given_as_a_path_is_named_as_a_string(tmp_path):
    """The refusal to replace another run's checkpoint names it as the str of the path
    (quoted), not as the repr of a pathlib.Path, in one line."""
    path = tmp_path / "ck.pt"
    path.write_bytes(b"")
    with pytest.raises(FileExistsError) as err:
        refuse_existing_checkpoint(path, resume=False, overwrite=False)
    assert str(err.value) == (f"checkpoint {str(path)!r} exists; pass resume=True to continue that run or "
                              "overwrite=True to start over")
    refuse_existing_checkpoint(path, resume=True, overwrite=False)
    refuse_existing_checkpoint(path, resume=False, overwrite=True)


class _Inner(typing.NamedTuple):
    step: torch.Tensor


class _Outer(typing.NamedTuple):
    inner: _Inner
    moments: list


def test_a_users_nested_namedtuple_state_is_rebuilt_from_the_runs_own_state():
    """A user's state type nesting another of its own NamedTuples is rebuilt level by
    level against the state this run starts from (neither type is pinnlab's, so neither
    could be imported by name)."""
    saved = _Outer(_Inner(torch.tensor(3.0)), [torch.ones(2), _Inner(torch.tensor(1.0))])
    like = _Outer(_Inner(torch.tensor(0.0)), [torch.zeros(2), _Inner(torch.tensor(0.0))])
    restored = _restore(_plain(saved), like)
    assert type(restored) is _Outer and type(restored.inner) is _Inner and type(restored.moments[1]) is _Inner
    assert float(restored.inner.step) == 3.0 and float(restored.moments[1].step) == 1.0


def test_metadata_keys_may_be_any_scalar_but_not_a_tuple(tmp_path):
    """A metadata dictionary's keys may be int, float, bool or None as well as str (a
    weights_only read takes them back); a tuple key is refused, in one line naming where."""
    path = tmp_path / "ck.pt"
    metadata = {"seeds": {3: "a", 2.5: "b", None: "c", False: "d"}}
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, checkpoint=path, checkpoint_every=1,
             metadata=metadata)
    assert load_checkpoint_file(path)["metadata"] == metadata
    with pytest.raises(TypeError) as err:
        optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, checkpoint=path, checkpoint_every=1,
                 metadata={"seeds": {(1, 2): "a"}}, overwrite=True)
    assert str(err.value) == ("metadata['seeds'] has a key of type tuple; a checkpoint's metadata has str, int, "
                              "float, bool or None keys")


def test_an_explicit_identity_resumes_a_run_that_left_the_entry_unnamed(tmp_path):
    """An unnamed entry is unconstrained, as one named Identity(): a run that named
    {"a": Identity()} resumes with no parameterisation given (each entry recorded)."""
    path = tmp_path / "ck.pt"
    optimize(PROBLEM, PHI, ReverseUnroll(), steps=1, meta_optimizer=_sgd, parameterization={"a": Identity()},
             checkpoint=path, checkpoint_every=1)
    result = optimize(PROBLEM, PHI, ReverseUnroll(), steps=2, meta_optimizer=_sgd, checkpoint=path,
                      checkpoint_every=1, resume=True)
    assert result.history["outer_step"] == [0, 1] and result.status == "ok"
