"""Mutation audit of the tune: and study: sections (pinnlab/tuning/spec.py,
pinnlab/studies/spec.py): edges the earlier tests left open."""

from __future__ import annotations

import re

import pytest

from pinnlab.studies.spec import StudySection


def test_grid_keys_that_share_only_a_text_prefix_are_apart():
    """``loss.weighting`` and ``loss.weighting_options`` are two keys, neither below the
    other (key parts are compared, not text): a grid of both is accepted in either order
    (caught: a text-prefix comparison refused them as overlapping)."""
    for grid in ({"loss.weighting": ["none", "lra"], "loss.weighting_options": [{}]},
                 {"loss.weighting_options": [{}], "loss.weighting": ["none", "lra"]}):
        section = StudySection(kind="training", variants={"a": []}, grid=grid)
        assert list(section.grid) == list(grid)
    with pytest.raises(ValueError, match="the grid keys loss.weighting and loss.weighting.x overlap"):
        StudySection(kind="training", variants={"a": []},
                     grid={"loss.weighting": ["none"], "loss.weighting.x": [1]})


def test_variant_overrides_that_share_only_a_text_prefix_are_apart():
    """A variant setting ``loss.weighting_options`` then ``loss.weighting`` sets two keys;
    neither replaces the other, so it is accepted (caught: a text-prefix comparison
    refused it as setting the earlier key again)."""
    overrides = ["loss.weighting_options={}", "loss.weighting=lra"]
    assert StudySection(kind="training", variants={"a": overrides}).variants == {"a": overrides}
    with pytest.raises(ValueError, match="variant a: 'loss.weighting=none' sets the key of the earlier"):
        StudySection(kind="training", variants={"a": ["loss.weighting.x=1", "loss.weighting=none"]})


@pytest.mark.parametrize("study, message", [
    ({"kind": "bogus", "samples": [2], "grid": {"trainer.seed": [0]}},
     "study.kind = 'bogus': input should be 'estimator' or 'training'"),
    ({"samples": [2], "variants": {"a": []}}, "study.kind: required key is missing"),
])
def test_a_bad_or_missing_kind_beside_other_keys_is_one_line_naming_the_kind(study, message):
    """Without a valid kind the keys' kind check has no kind to compare with and lets them
    pass, so the one error is the kind's (caught: the check looked up the missing kind and
    raised a KeyError traceback instead)."""
    from pinnlab import config as C

    with pytest.raises(C.ConfigError) as err:
        C.validate({"equation": {"name": "poisson_two_body", "dim": 3}, "study": study})
    assert str(err.value) == message


EQUATION = {"name": "poisson_two_body", "dim": 3}
TRAINING = {"kind": "training", "variants": {"a": []}}


@pytest.mark.parametrize("section, message", [
    ({"tune": {"tunables": {"weights.boundary": {}}, "objective": {"kind": "training_loss"}}},
     "tune.objective.kind = 'training_loss': the outer objective must differ from the weighted training loss "
     "(minimising that over its own weights sends them to zero); use data, residual or reference"),
    ({"study": {"kind": "estimator", "samples": [3, 4]}},
     "study.samples = [3, 4]: must all be even with study.unbiased_samples: split, which gives each of the "
     "unbiased loss's two residual draws K/2 samples (odd: 3); use even K or study.unbiased_samples: same"),
    ({"study": {**TRAINING, "grid": {"study.workers": [1, 2]}}},
     "study.grid = {'study.workers': [1, 2]}: study.workers: a grid key inside the study section would change "
     "nothing (every cell runs its config without study:); use keys of the other sections"),
    ({"study": {"kind": "training", "variants": {"a": ["study.workers=2"]}}},
     "study.variants = {'a': ['study.workers=2']}: a: 'study.workers=2' sets a key inside the study section, "
     "which would change nothing (every cell runs its config without study:); use keys of the other sections"),
    ({"study": {**TRAINING, "grid": {"trainer": [{"seed": 1}], "trainer.seed": [0, 1]}}},
     "study.grid = {'trainer': [{'seed': 1}], 'trainer.seed': [0, 1]}: the grid keys trainer and trainer.seed "
     "overlap: every cell would set one over the other; sweep one of them"),
    ({"study": {"kind": "training", "variants": {"a": ["trainer.seed=4"]}, "grid": {"trainer.seed": [0, 1]}}},
     "study.grid = {'trainer.seed': [0, 1]}: variant a: 'trainer.seed=4' sets the grid key trainer.seed, which "
     "every cell sets after its variant, so the override would be ignored; remove it from the variant or the key "
     "from the grid"),
    ({"study": {"kind": "training", "variants": {"a": ["loss.kind=biased", "loss.kind=unbiased"]}}},
     "study.variants = {'a': ['loss.kind=biased', 'loss.kind=unbiased']}: variant a: 'loss.kind=unbiased' sets "
     "the key of the earlier 'loss.kind=biased' again, which would be lost; remove one"),
    ({"study": {**TRAINING, "grid": {"trainer.lr": [1e-3, float("inf")]}}},
     "study.grid = {'trainer.lr': [0.001, inf]}: trainer.lr: .inf is not a finite number (every setting must be "
     "finite)"),
], ids=["training-loss-objective", "odd-samples", "grid-in-study", "variant-in-study", "overlapping-grid",
        "variant-of-a-grid-key", "variant-sets-a-key-twice", "non-finite-grid-value"])
def test_each_refusal_is_one_line_with_its_reason_and_its_remedy(section, message):
    """Each refusal of the tune: and study: sections is the whole one line: the setting,
    why it cannot run and what to do instead (caught: the remedy after the reason dropped,
    which no test read)."""
    from pinnlab import config as C

    with pytest.raises(C.ConfigError) as err:
        C.validate({"equation": EQUATION, **section})
    assert str(err.value) == message


def test_a_command_line_override_of_a_swept_key_is_refused_with_its_remedy():
    """The refusal of an override the study's runs would replace names the key, what sets
    it and the remedy (caught: the remedy dropped)."""
    from pinnlab.config import ConfigError
    from pinnlab.studies.spec import refuse_swept_overrides

    section = StudySection(**TRAINING, grid={"trainer.seed": [0, 1]})
    with pytest.raises(ConfigError) as err:
        refuse_swept_overrides(section, ["trainer.seed=3"])
    assert str(err.value) == ("override 'trainer.seed=3': study.grid sweeps trainer.seed in its runs, after the "
                              "command line's overrides, so this one would be ignored there; remove it (or change "
                              "the study's values)")


@pytest.mark.parametrize("override", ["study={workers: 2}", " study.workers=2"])
def test_a_variant_override_of_the_whole_study_section_or_with_spaces_is_refused(override):
    """A variant override naming the study section itself, or its key with spaces before
    it, still sets the study section (which a cell runs without): refused (caught:
    only a literal ``study.`` prefix was looked for, so these were silently ignored)."""
    with pytest.raises(ValueError, match=re.escape(f"a: {override!r} sets a key inside the study section")):
        StudySection(kind="training", variants={"a": [override]})
