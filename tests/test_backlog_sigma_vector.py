"""``estimator.sigma`` as a list, one σ per space coordinate: what ``pinnlab tune`` with
``tune.tunables.sigma.per_coordinate: true`` records as ``/tune/tuned/sigma``, which
``pinnlab solve`` could not run again (``estimator.sigma`` took one number only)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from pinnlab import cli
from pinnlab import config as C
from pinnlab.tuning.setup import build_tuning

from .test_config_boundaries import _refused

TINY = {"model": {"width": 8, "depth": 2}, "estimator": {"kind": "stein", "samples": 8, "noise": "shared"},
        "trainer": {"steps": 3, "lr": 1e-3, "schedule": "constant", "batch_size": 16, "eval_every": 3,
                    "test_points": 50}}


def _config(equation: dict, **estimator) -> dict:
    return {"equation": dict(equation), **{k: dict(v) for k, v in TINY.items()},
            "estimator": {**TINY["estimator"], **estimator}}


ALLEN_CAHN = {"name": "allen_cahn_two_body", "dim": 3, "seed": 1}
HJB = {"name": "hjb_lin", "dim": 2, "seed": 0}  # (time-dependent: inputs x and t)


def _tune(config: dict, per_coordinate: bool = True) -> dict:
    return {**config, "data": {"source": "synthetic", "points": 20},
            "tune": {"method": "fg2u", "tunables": {"sigma": {"per_coordinate": per_coordinate}},
                     "objective": {"kind": "data"}, "outer_steps": 2, "horizon": 2, "outer_lr": 0.2}}


def _write(path, data) -> str:
    path.write_text(C.dump_yaml(data))
    return str(path)


def test_a_list_is_the_estimators_sigma_from_yaml_and_from_an_override(tmp_path):
    """estimator.sigma: [0.1, 0.2, 0.3] was refused ("input should be a valid number"),
    in a config file and as an override alike; now it is the estimator's σ, one per
    coordinate."""
    path = _write(tmp_path / "c.yaml", _config(ALLEN_CAHN, sigma=[0.1, 0.2, 0.3]))
    for config in (C.load(path), C.load(_write(tmp_path / "d.yaml", _config(ALLEN_CAHN)),
                                        ["estimator.sigma=[0.1,0.2,0.3]"])):
        problem, _ = C.build(config)
        assert torch.as_tensor(problem.estimator.sigma).tolist() == [0.1, 0.2, 0.3]


def test_a_list_with_time_sigma_puts_time_last():
    """A time-dependent equation: the list gives the space coordinates' σ and
    estimator.time_sigma time's, last (the order of a tuned per-coordinate σ)."""
    problem, _ = C.build(C.validate(_config(HJB, sigma=[0.1, 0.2], time_sigma=0.05)))
    assert torch.as_tensor(problem.estimator.sigma).tolist() == [0.1, 0.2, 0.05]


@pytest.mark.parametrize(("equation", "estimator", "trainer", "message"), [
    (ALLEN_CAHN, {"sigma": [0.1, 0.2]}, {},
     "estimator.sigma: a list of 2 values, but it needs one per space coordinate, equation.dim = 3 "
     "(or one number for all)"),
    # the whole tuned vector pasted, time's entry included
    (HJB, {"sigma": [0.1, 0.2, 0.05]}, {},
     "estimator.sigma: a list of 3 values, but it needs one per space coordinate, equation.dim = 2 "
     "(or one number for all); time's σ goes in estimator.time_sigma"),
    (HJB, {"sigma": [0.1, 0.2]}, {},
     "estimator.sigma: a list gives the 2 space coordinates' σ; hjb_lin also has time, whose σ "
     "estimator.time_sigma must give (a tuned per-coordinate σ's last entry)"),
    (ALLEN_CAHN, {"sigma": [0.1, -0.2, 0.3]}, {},
     "estimator.sigma = [0.1, -0.2, 0.3]: entry 1 is -0.2; every entry must be a finite number > 0"),
    (ALLEN_CAHN, {"sigma": [0.1, 0.0, 0.3]}, {},
     "estimator.sigma = [0.1, 0.0, 0.3]: entry 1 is 0.0; every entry must be a finite number > 0"),
    (ALLEN_CAHN, {"sigma": [math.inf, 0.2, 0.3]}, {},
     "estimator.sigma = [inf, 0.2, 0.3]: entry 0 is inf; every entry must be a finite number > 0"),
    (ALLEN_CAHN, {"sigma": [0.1, 0.2, math.nan]}, {},
     "estimator.sigma = [0.1, 0.2, nan]: entry 2 is nan; every entry must be a finite number > 0"),
    (ALLEN_CAHN, {"sigma": [0.1, True, 0.3]}, {},
     "estimator.sigma = [0.1, True, 0.3]: entry 1 is True; every entry must be a finite number > 0"),
    (ALLEN_CAHN, {"sigma": []}, {},
     "estimator.sigma = []: must be a number > 0 or a list of them, one per space coordinate (equation.dim); "
     "got an empty list"),
    (ALLEN_CAHN, {"sigma": [0.1, 1e-320, 0.3]}, {"dtype": "float32"},
     "estimator.sigma = 1e-320: rounds to 0 in float32, the dtype of this run (trainer.dtype: float32)"),
    # one number: as before (the union's member is not named in the key)
    (ALLEN_CAHN, {"sigma": -1.0}, {}, "estimator.sigma = -1.0: input should be greater than 0"),
    (ALLEN_CAHN, {"sigma": "abc"}, {}, "estimator.sigma = 'abc': input should be a valid number"),
], ids=["short", "time_entry_included", "time_sigma_missing", "negative", "zero", "inf", "nan", "bool", "empty",
        "float32_underflow", "number_negative", "number_text"])
def test_a_bad_list_is_refused_in_one_line_naming_estimator_sigma(equation, estimator, trainer, message):
    """A list of the wrong length, or with an entry that is not a finite number > 0, is
    one line naming estimator.sigma, the length found and equation.dim."""
    data = _config(equation, **estimator)
    data["trainer"].update(trainer)
    assert _refused(data) == message


def test_a_list_of_the_wrong_length_exits_2_from_the_cli(tmp_path, capsys):
    """pinnlab solve with estimator.sigma=[...] of the wrong length: exit code 2 and one line."""
    path = _write(tmp_path / "c.yaml", _config(ALLEN_CAHN))
    code = cli.main(["solve", path, "estimator.sigma=[0.1,0.2]", "-o", str(tmp_path / "out.h5")])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "estimator.sigma: a list of 2 values" in err and "equation.dim = 3" in err
    assert not (tmp_path / "out.h5").exists()


def test_one_global_tuned_sigma_over_a_list_is_refused():
    """tune.tunables.sigma without per_coordinate on a list estimator.sigma was refused as
    "tune.tunables.sigma.init: needs shape (), got (3,)", an init the user had not given;
    now it says that one σ would overwrite the list."""
    config = C.validate(_tune(_config(ALLEN_CAHN, sigma=[0.1, 0.2, 0.3]), per_coordinate=False))
    with pytest.raises(C.ConfigError) as info:
        build_tuning(config)
    assert str(info.value) == ("tune.tunables.sigma: estimator.sigma is a list, one σ per coordinate, which one "
                               "global σ would overwrite; use per_coordinate: true (it starts from the list) or "
                               "give estimator.sigma one number")


def test_a_per_coordinate_tuned_sigma_starts_from_the_list():
    config = C.validate(_tune(_config(HJB, sigma=[0.1, 0.2], time_sigma=0.05)))
    start = build_tuning(config).phi0["sigma"]
    assert start.tolist() == pytest.approx([0.1, 0.2, 0.05])


def test_the_recorded_config_of_a_list_runs_again(tmp_path):
    """The result file's config records the list, and pinnlab solve of that config runs
    with the same σ (and the same checkpoint identity)."""
    path = _write(tmp_path / "c.yaml", _config(ALLEN_CAHN, sigma=[0.1, 0.2, 0.3]))
    assert cli.main(["solve", path, "-o", str(tmp_path / "a.h5")]) == cli.EXIT_OK
    with h5py.File(tmp_path / "a.h5", "r") as fh:
        recorded = fh.attrs["config"]
        rel_l2 = fh["final"].attrs["rel_l2"]
    (tmp_path / "rec.yaml").write_text(recorded)
    config = C.load(tmp_path / "rec.yaml")
    assert config.estimator.sigma == (0.1, 0.2, 0.3)
    assert config.identity() == C.load(path).identity()
    assert cli.main(["solve", str(tmp_path / "rec.yaml"), "-o", str(tmp_path / "b.h5")]) == cli.EXIT_OK
    with h5py.File(tmp_path / "b.h5", "r") as fh:
        assert fh["final"].attrs["rel_l2"] == rel_l2


@pytest.mark.parametrize("equation", [ALLEN_CAHN, HJB], ids=["steady_d3", "time_d2"])
def test_a_tuned_per_coordinate_sigma_is_solved_again_from_the_result_file(tmp_path, equation):
    """The README's recipe: /tune/tuned/sigma passed back as estimator.sigma=[...] (and,
    with time, its last entry as estimator.time_sigma) to pinnlab solve, which repeats
    the tuning's final solve. Before, only one number was accepted."""
    base = _config(equation, sigma=0.1)
    tuned_path = tmp_path / "tune.h5"
    assert cli.main(["tune", _write(tmp_path / "t.yaml", _tune(base)), "-o", str(tuned_path)]) == cli.EXIT_OK
    with h5py.File(tuned_path, "r") as fh:
        sigma = fh["tune/tuned/sigma"][...].tolist()
        tuned_rel_l2 = fh["final"].attrs["rel_l2"]
    assert len(sigma) == C.validate(base).equation.dim + (equation is HJB)
    space, time = (sigma[:-1], sigma[-1]) if equation is HJB else (sigma, None)
    overrides = ["estimator.sigma=[" + ",".join(map(repr, space)) + "]"]
    overrides += [f"estimator.time_sigma={time!r}"] if time is not None else []
    solved = tmp_path / "solve.h5"
    assert cli.main(["solve", _write(tmp_path / "s.yaml", base), *overrides, "-o", str(solved)]) == cli.EXIT_OK
    with h5py.File(solved, "r") as fh:
        assert np.isclose(fh["final"].attrs["rel_l2"], tuned_rel_l2, rtol=1e-5)


def test_an_estimator_study_pretrains_with_a_list_and_refuses_one_in_its_sigmas():
    """An estimator study's own σ grid, study.sigmas, is of single numbers (its records are
    keyed by σ): a list there is refused in one line; the config's list σ is that of the
    pretraining (study.init: trained), which validates."""
    study = {"kind": "estimator", "init": "trained", "samples": [4, 8], "replicates": 4, "points": 8,
             "reference_samples": 64, "reference_replicates": 4}
    data = {**_config(ALLEN_CAHN, sigma=[0.1, 0.2, 0.3]), "study": study}
    assert C.validate(data).estimator.sigma == (0.1, 0.2, 0.3)
    assert _refused({**data, "study": {**study, "sigmas": [[0.1, 0.2, 0.3]]}}) == \
        "study.sigmas.0 = [0.1, 0.2, 0.3]: input should be a valid number"
