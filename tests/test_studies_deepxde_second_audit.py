"""Tests from a second mutation audit of the study spec, the study command and the DeepXDE
adapter: what the first passes left unpinned (the steps-per-second formula exactly, edges of
the study's refusals, ...). Every check is exact or closed-form, on tiny runs."""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch

from pinnlab import config as C

EQUATION = {"name": "poisson_two_body", "dim": 3}

HAS_DEEPXDE = importlib.util.find_spec("deepxde") is not None
needs_deepxde = pytest.mark.skipif(not HAS_DEEPXDE, reason="needs deepxde")


# ----------------------------------------------------------------------------- the study spec


def test_the_defaults_of_an_estimator_and_a_training_study():
    """Each default of ``study:`` as documented (changing one changes every study that
    leaves it out: its cells, its cost, whether it pretrains)."""
    estimator = C.validate({"equation": EQUATION, "study": {"kind": "estimator"}}).study
    assert estimator.model_dump() == {
        "kind": "estimator", "losses": ["biased", "unbiased"], "unbiased_samples": "split", "dims": None,
        "samples": [8, 16, 32, 64, 128], "sigmas": [1e-2], "noise": ["independent", "shared"],
        "quantities": ["residual", "loss", "gradient"], "replicates": 200, "points": 64,
        "reference_samples": 4096, "reference_replicates": 50, "init": "trained"}
    variants = {"a": ["loss.kind=biased"]}
    training = C.validate({"equation": EQUATION, "study": {"kind": "training", "variants": variants}}).study
    assert training.model_dump() == {"kind": "training", "variants": variants, "grid": {}, "columns": None,
                                     "workers": 1}


def test_a_run_that_validates_but_does_not_build_is_refused_before_any_cell_runs(tmp_path, capsys, monkeypatch):
    """A variant with ``loss.weighting: lra`` on a hard-constrained equation without data
    validates, but its build refuses it (one loss term to weigh): every run is built up
    front, so the study stops in one line naming the run before any cell ran."""
    from pinnlab.cli import main
    from tests.studies.test_studies import TINY_TRAINING
    from tests.studies.test_study_grid_and_summary import _stub_cells

    calls = _stub_cells(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2").replace("unbiased: [loss.kind=unbiased]",
                                                               "weighted: [loss.kind=unbiased, loss.weighting=lra]"))
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and calls == [] and not (tmp_path / "t.h5").exists()
    assert "study run weighted" in err and "loss.weighting = 'lra': needs more than one loss term" in err, err


# ----------------------------------------------------------------------------- the DeepXDE adapter


@needs_deepxde
@pytest.mark.parametrize("steps", [2, 4])
def test_steps_per_second_counts_the_steps_after_the_first_exactly(monkeypatch, steps):
    """A clock that advances one tick per reading: the callbacks' own readings are
    untimed, and between one step's last reading and the next step's first exactly one
    tick passes, so the n - 1 steps after the first take n - 1 ticks: 1 step per tick
    exactly (n / (n - 1) if the first step were counted). Only a one-step run is timed
    whole: two steps leave out the first too (2 / the run's ticks is not 1)."""
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers import deepxde_adapter

    ticks = [0.0]

    def perf_counter():
        ticks[0] += 1.0
        return ticks[0]

    monkeypatch.setattr(deepxde_adapter, "time", types.SimpleNamespace(perf_counter=perf_counter))
    result = deepxde_adapter.solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=steps, width=8, depth=2,
                                                batch_size=8, test_points=10, display_every=2)
    assert result.stats["steps_done"] == steps
    assert result.stats["steps_per_second"] == 1.0
    assert result.stats["wall_s"] > steps  # (steps / wall_s, the whole run's rate, is not 1)


@needs_deepxde
def test_a_non_finite_parameter_alone_makes_the_run_nonfinite(monkeypatch):
    """A parameter set to inf after the last evaluation (whose predictions were finite):
    the network written to /params is not a trained one, so the status is "nonfinite",
    whatever the predictions were."""
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers import deepxde_adapter

    dde = deepxde_adapter.import_deepxde()
    train = dde.Model.train

    def train_then_break(self, *args, **kwargs):
        out = train(self, *args, **kwargs)
        next(iter(self.net.parameters())).data[0, 0] = float("inf")
        return out

    monkeypatch.setattr(dde.Model, "train", train_then_break)
    result = deepxde_adapter.solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=2, width=8, depth=2,
                                                batch_size=8, test_points=10, display_every=2)
    assert bool(torch.isfinite(result.final.prediction).all())
    assert (result.status, result.message) == (
        "nonfinite", "DeepXDE training diverged: non-finite parameters or error (lower trainer.lr).")


@needs_deepxde
def test_a_diverged_run_reports_the_steps_it_took_not_the_steps_asked():
    """DeepXDE stops a diverged run at its first display step (2 of 8 here): steps_done
    is 2, as the history and the loss trace say, not the 8 asked for."""
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers.deepxde_adapter import solve_with_deepxde

    result = solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=8, width=8, depth=2, batch_size=8,
                                test_points=10, display_every=2, lr=1e30)
    assert result.status == "nonfinite"
    assert result.history.rows["step"] == [2] and len(result.history.trace_loss) == 2
    assert result.stats["steps_done"] == 2


@needs_deepxde
def test_a_solve_leaves_deepxdes_recorded_seed_as_it_was():
    """A solve seeds DeepXDE with its own seed (``set_random_seed`` records it in
    ``dde.config.random_seed``); afterwards the recorded seed is the caller's again."""
    from pinnlab.equations import PoissonTwoBody
    from pinnlab.solvers import deepxde_adapter

    dde = deepxde_adapter.import_deepxde()
    before = dde.config.random_seed
    try:
        for mine in (None, 123):
            dde.config.random_seed = mine
            deepxde_adapter.solve_with_deepxde(PoissonTwoBody(3, seed=1), steps=1, width=8, depth=2, batch_size=8,
                                               test_points=10, seed=7)
            assert dde.config.random_seed == mine
    finally:
        dde.config.random_seed = before


@needs_deepxde
def test_a_soft_constraints_boundary_condition_holds_the_equations_boundary_values(monkeypatch):
    """The PointSetBC DeepXDE fits is u = g at the boundary draw: its values are the
    equation's ``boundary_value`` at its points, one column (not zeros, not another draw)."""
    from pinnlab.equations import EQUATIONS
    from pinnlab.solvers import deepxde_adapter

    dde = deepxde_adapter.import_deepxde()
    made, point_set = [], dde.icbc.PointSetBC

    def recorded(points, values, *args, **kwargs):
        made.append((points, values))
        return point_set(points, values, *args, **kwargs)

    monkeypatch.setattr(dde.icbc, "PointSetBC", recorded)
    equation = EQUATIONS["fokker_planck_iso"](3, seed=1, constraint="soft")  # g is not 0 (the two-body ones' is)
    deepxde_adapter.solve_with_deepxde(equation, steps=1, width=8, depth=2, batch_size=8, test_points=10,
                                       boundary_points=12)
    ((points, values),) = made
    assert points.shape == (12, equation.input_dim) and values.shape == (12, 1)
    expected = equation.boundary_value(torch.as_tensor(points)).numpy()[:, None]
    assert (expected != 0).all() and (values == expected).all()


# ----------------------------------------------------------------------------- the study command


def _tiny_estimator(tmp_path, init="fresh"):
    from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator

    return _estimator(tmp_path, init, **ONE_CELL)


def test_a_non_finite_variance_alone_exits_1(tmp_path, capsys, monkeypatch):
    """A record whose bias² is finite but whose variance is inf is not a study: the file
    is written, the exit code is 1 and the line counts that one record."""
    import math

    from pinnlab.cli import main
    from pinnlab.studies import estimator_study

    run = estimator_study.run_estimator_study

    def one_inf(spec, **kwargs):
        out = run(spec, **kwargs)
        out["records"][1]["variance"] = float("inf")
        assert math.isfinite(out["records"][1]["bias2"])
        return out

    monkeypatch.setattr(estimator_study, "run_estimator_study", one_inf)
    out = tmp_path / "s.h5"
    assert main(["study", str(_tiny_estimator(tmp_path)), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pinnlab: error: 1 of 6 records have a non-finite bias² or variance (at σ = 0.1: "), err
    assert out.is_file()


def test_a_pretraining_with_undefined_test_errors_is_a_trained_network(tmp_path, monkeypatch):
    """A pretraining that ends with status invalid_reference (its test errors undefined,
    its network finite) gives the network the study evaluates: exit 0, not the refusal
    of a diverged one."""
    import pinnlab.solvers
    from pinnlab.cli import main
    from tests.studies.test_studies import TRAINED_ESTIMATOR
    from tests.studies.test_study_inputs_refused import ONE_CELL, _estimator

    train, statuses = pinnlab.solvers.train, []

    def undefined_reference(*args, **kwargs):
        result = train(*args, **kwargs)
        result.status = "invalid_reference"
        statuses.append(result.status)
        return result

    monkeypatch.setattr(pinnlab.solvers, "train", undefined_reference)
    cfg = _estimator(tmp_path, base=TRAINED_ESTIMATOR, **ONE_CELL)
    assert main(["study", str(cfg), "-o", str(tmp_path / "s.h5")]) == 0
    assert statuses == ["invalid_reference"] and (tmp_path / "s.h5").is_file()


def test_a_network_file_whose_config_predates_trainer_backend_is_pinnlabs(tmp_path):
    """A result file written before ``trainer.backend`` existed records no backend: its
    network is pinnlab's (the default), so it is studied, not refused as DeepXDE's."""
    import h5py
    import yaml

    from pinnlab.cli import main
    from tests.studies.test_studies import _network_file

    net = tmp_path / "net.h5"
    _network_file(net)
    with h5py.File(net, "r+") as fh:
        stored = yaml.safe_load(fh.attrs["config"])
        assert stored["trainer"].pop("backend") == "pinnlab"
        fh.attrs["config"] = yaml.safe_dump(stored)
    assert main(["study", str(_tiny_estimator(tmp_path, str(net))), "-o", str(tmp_path / "s.h5")]) == 0


def test_a_json_path_where_the_cells_go_is_refused_before_any_cell_runs(tmp_path, capsys, monkeypatch):
    """``--json`` follows the rule of ``-o``'s other outputs: none may be another output
    of the same study, and ``STUDY.h5.cells/`` is one (created by the study itself)."""
    from pinnlab.cli import main
    from tests.studies.test_studies import TINY_TRAINING
    from tests.studies.test_study_grid_and_summary import _stub_cells

    calls = _stub_cells(monkeypatch)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    out = tmp_path / "s.h5"
    assert main(["study", str(cfg), "-o", str(out), "--json", str(out) + ".cells"]) == 2
    assert calls == [] and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.endswith(f"{str(out) + '.cells'!r} (--json) is the same file as {str(out) + '.cells'!r} "
                        "(where the study keeps its cells); choose another name")


def test_a_network_file_at_the_studied_dimension_is_studied_whatever_the_configs_own_dim(tmp_path):
    """``equation.dim: 3`` with ``study.dims: [4]`` studies d = 4 only: a network trained at
    d = 4 (on the same instance otherwise) is that study's network, not one of "another
    instance" because the config's own, unstudied dimension differs."""
    import json

    import yaml

    from pinnlab.cli import main
    from tests.studies.test_studies import TINY_ESTIMATOR, _network_file

    data = yaml.safe_load(TINY_ESTIMATOR)
    del data["study"]
    data["equation"]["dim"] = 4
    config = C.validate(data)
    params = {k: v.detach().numpy() for k, v in C.make_network(config.model, 4, seed=0).named_parameters()}
    _network_file(tmp_path / "net.h5", config_attr=config.to_yaml(), params=params)
    cfg = _tiny_estimator(tmp_path, str(tmp_path / "net.h5"))
    js = tmp_path / "s.json"
    assert main(["study", str(cfg), "study.dims=[4]", "-o", str(tmp_path / "s.h5"), "--json", str(js)]) == 0
    assert {r["dim"] for r in json.loads(js.read_text())["records"]} == {4}


def test_the_bias_slopes_printed_are_the_biased_losses_only(tmp_path, capsys, monkeypatch):
    """stdout gives the bias slope of the biased loss's series (its O(1/K) bias), not of the
    unbiased loss's, whose bias is noise around 0: one line per biased series, with the
    slope and its standard error to three decimals."""
    from pinnlab.cli import main
    from pinnlab.studies import estimator_study

    fit = estimator_study.fit_slopes

    def with_bias_slopes(records):
        slopes = fit(records)
        for name, entry in slopes.items():
            if name.startswith("loss/"):
                entry.update(bias_slope=-1.0, bias_slope_se=0.05)
        return slopes

    monkeypatch.setattr(estimator_study, "fit_slopes", with_bias_slopes)
    cfg = _tiny_estimator(tmp_path)
    assert main(["study", str(cfg), "-o", str(tmp_path / "s.h5")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "bias slope" in line]
    assert lines == ["loss/biased/independent/d=3/sigma=0.1: bias slope -1.000 ± 0.050"]


@pytest.mark.parametrize("statuses, code", [({0: "nonfinite", 1: "ok"}, 0),
                                            ({0: "invalid_reference", 1: "invalid_reference"}, 1)])
def test_a_training_study_exits_1_only_when_no_cell_ended_ok(tmp_path, capsys, monkeypatch, statuses, code):
    """A diverged cell beside cells that ended ok is a row of the table (exit 0); a study
    none of whose cells ended ok has no numbers, whatever the statuses (exit 1, one line)."""
    import math

    from pinnlab.cli import main
    from pinnlab.studies import training_study
    from tests.studies.test_studies import TINY_TRAINING
    from tests.studies.test_study_grid_and_summary import _metrics

    def run_cell(config_path, overrides, output, threads):
        seed = int(next(o for o in overrides if o.startswith("trainer.seed=")).split("=")[1])
        status = statuses[seed]
        return _metrics(0.1 if status == "ok" else math.nan, status)

    monkeypatch.setattr(training_study, "run_cell", run_cell)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY_TRAINING.replace("STEPS", "2"))
    assert main(["study", str(cfg), "-o", str(tmp_path / "t.h5")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    failed = [line for line in err if line.startswith("pinnlab: error:")]
    assert failed == ([] if code == 0 else [
        "pinnlab: error: no cell of the study ended ok (status invalid_reference in all 8); its tables have no "
        "numbers"])
