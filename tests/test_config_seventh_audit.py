"""Seventh mutation audit of :mod:`pinnlab.config`: what the first six left unpinned in
the solve sections and the loader (the remedy of an observation overflow in a float64 run,
an unhashable YAML key, an override into a section the config leaves null, blend as a
hybrid-only setting, a user equation's boundary values with a soft constraint, and the
remedies that end the cross-section refusals), each with the exact value or the one-line
message the clean code gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pinnlab import config as C
from pinnlab.equations import make_equation
from tests.test_config_boundaries import _config, _refused


def _observations_refused(config, equation) -> str:
    with pytest.raises(C.ConfigError) as info:
        C.make_observations(config, equation)
    return str(info.value)


def test_observations_whose_squares_overflow_float64_are_not_told_to_use_float64(tmp_path):
    """|u| = 1e160 squares beyond float64's largest value (1.8e308): the remedy is to
    rescale the data, and the advice to use trainer.dtype: float64 is given only to a
    float32 run (this run is float64 already); 1e150 (square 1e300) is accepted."""
    equation = make_equation("poisson_two_body", 3, seed=0)
    for u, refused in ((1e150, False), (1e160, True)):
        path = tmp_path / f"obs{refused}.npz"
        np.savez(path, x=np.array([[0.1, 0.2, 0.3]]), u=np.array([u]))
        config = C.validate(_config(data={"source": str(path), "train": True}, trainer={"dtype": "float64"}))
        if not refused:
            assert C.make_observations(config, equation)[1].tolist() == [u]
            continue
        assert _observations_refused(config, equation) == (
            f"data.source: observation file {str(path)!r} holds |u| up to 1e+160, whose square overflows float64 "
            "(largest 1.8e+308); rescale the data")


def test_an_unhashable_key_is_malformed_yaml_at_its_line_and_column(tmp_path):
    """A mapping used as a key (``{[1, 2]: 3}``) passes the duplicate-key check and is
    reported by the loader where it stands (line 2, column 9), not as Python's
    "unhashable type" without a place."""
    path = tmp_path / "unhashable.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\nmodel: {[1, 2]: 3}\n")
    with pytest.raises(C.ConfigError) as info:
        C.load(path)
    assert str(info.value) == f"malformed YAML in {str(path)!r} at line 2, column 9: found unhashable key"


def test_a_blend_is_a_hybrid_only_setting():
    """loss.blend, like switch_step and switch, acts only in a hybrid loss: with another
    kind it is refused, and an override of the kind drops the config's blend, so the
    config validates as that kind (a blend kept was silently ignored)."""
    data = _config(loss={"kind": "hybrid", "blend": [0, 5]}, trainer={"steps": 10})
    assert C.validate(data).loss.blend == (0, 5)
    assert _refused(_config(loss={"kind": "unbiased", "blend": [0, 5]})) == (
        "loss.kind = 'unbiased': switch settings need loss.kind = hybrid")
    overridden = C.apply_overrides(data, ["loss.kind=unbiased"])
    assert overridden["loss"] == {"kind": "unbiased"}
    assert C.validate(overridden).loss.blend is None


def test_refusals_between_sections_end_with_their_remedy():
    """The cross-section refusals name what to change: a switch given twice (give one of
    them), an estimator study on DeepXDE (use trainer.backend: pinnlab), and a weighting
    of a single loss term (add a term: a soft constraint or trained data)."""
    assert _refused(_config(loss={"kind": "hybrid", "switch": "step", "blend": [0, 2]})) == (
        "loss.switch = 'step': contradicts loss.blend, which makes the switch 'blend' (give one of them)")
    assert _refused(_config(trainer={"backend": "deepxde"}, study={"kind": "estimator", "init": "fresh"})) == (
        "trainer.backend = 'deepxde': an estimator study evaluates pinnlab's network and estimator "
        "(use trainer.backend: pinnlab)")
    config = C.validate(_config(model={"width": 4, "depth": 2}, loss={"weighting": "lra"}))
    with pytest.raises(C.ConfigError) as info:
        C.build(config)
    assert str(info.value) == ("loss.weighting = 'lra': needs more than one loss term "
                               "(use equation.constraint: soft or data.train: true)")


def test_a_data_batch_beyond_the_observations_names_both_remedies():
    """data.batch_size = M + 1: use at most M, or leave the key out (every observation
    every step)."""
    equation = make_equation("poisson_two_body", 3, seed=0)
    config = C.validate(_config(data={"points": 4, "train": True, "batch_size": 5}))
    assert _observations_refused(config, equation) == (
        "data.batch_size = 5: more than the 4 observations; use at most 4, or leave it out to use all of them "
        "every step")


def test_a_user_equations_boundary_values_are_tried_with_a_soft_constraint():
    """With equation.constraint: soft the check of a user's equation also evaluates its
    boundary values at the 4 boundary points it drew: one that raises is one line naming
    boundary_value, before any work; with a hard constraint the boundary is not used and
    the same equation passes."""
    from pinnlab.equations import PoissonTwoBody

    class BrokenBoundary(PoissonTwoBody):
        def residual(self, x, estimate, **options):  # (zero, without derivatives: the check stays fast)
            return torch.zeros(len(x), dtype=x.dtype)

        def boundary_value(self, x):
            raise RuntimeError("boundary blew up")

    C.check_user_equation(BrokenBoundary(3, seed=0), "mine.py")
    with pytest.raises(C.ConfigError) as info:
        C.check_user_equation(BrokenBoundary(3, seed=0, constraint="soft"), "mine.py")
    assert str(info.value) == ("equation 'poisson_two_body' (equation.module = 'mine.py'): boundary_value failed "
                               "when tried on 4 points: RuntimeError: boundary blew up")


def test_an_override_fills_a_section_the_config_leaves_empty(tmp_path):
    """``trainer:`` with every key commented out is null in YAML (a section of defaults):
    ``trainer.steps=5`` makes it a section with that key, not "trainer is not a section"."""
    path = tmp_path / "empty_section.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\ntrainer:\n  # steps: 100\n")
    assert C.load_yaml(path)["trainer"] is None
    config = C.load(path, ["trainer.steps=5"])
    assert config.raw["trainer"] == {"steps": 5} and config.trainer.steps == 5
