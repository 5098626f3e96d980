"""Observations and the data term: joint fitting counts the data misfit once, the domain
check of the observations runs once, a CSV point outside the domain is named by its file
line, the data.source refusal lists every accepted suffix."""

from __future__ import annotations

import torch

from pinnlab import config as configuration
from pinnlab.tuning.search import joint_fit
from pinnlab.tuning.setup import build_tuning

from .tuning.micro_configs import JOINT_MU


def _joint_setup(tmp_path, train: bool):
    path = tmp_path / "joint.yaml"
    text = JOINT_MU.replace("noise: 0.01}", f"noise: 0.01, train: {str(train).lower()}}}")
    path.write_text(text)
    config = configuration.load(path, ["trainer.dtype=float64", "trainer.optimizer=sgd", "trainer.lr=0.1",
                                       "tune.outer_steps=1", "tune.horizon=1"])
    return build_tuning(config)


def test_joint_fitting_counts_the_data_misfit_once(tmp_path):
    """With data.train: true the training loss already holds the data term (the same
    observations the outer objective scores), and joint fitting added the outer data
    misfit on top: θ's step followed residual + 2 × data. Now θ's first (plain SGD) step
    is that of residual + data loss once: the training loss alone with data.train: true,
    the training loss plus the outer misfit without it."""
    for train in (True, False):
        setup = _joint_setup(tmp_path, train)
        theta0 = setup.init[0]
        phi = setup.phi0
        seed = setup.train_kwargs["seed"]

        def once(theta, setup=setup, phi=phi, seed=seed, train=train):
            training, _ = setup.problem.objective(theta, setup.to_hyperparams(phi), 0, seed)
            return training if train else training + setup.outer_loss(theta, phi)

        gradient = torch.func.grad(once)(theta0)
        if train:  # the two data losses are one quantity (same points, same estimate here)
            assert setup.observations[0] is setup.problem.extra_terms[0].inputs
            data = setup.problem.objective(theta0, setup.to_hyperparams(phi), 0, seed)[1]["loss_data"]
            assert torch.allclose(data, setup.outer_loss(theta0, phi))
        theta = joint_fit(setup).trained[0]
        for name, value in theta0.items():
            torch.testing.assert_close(theta[name], value - 0.1 * gradient[name], rtol=1e-10, atol=1e-12)


def _count_domain_checks(monkeypatch) -> list:
    from pinnlab.solvers import terms

    calls = []
    real = terms.observations_outside

    def counted(equation, x, *args, **kwargs):
        calls.append(len(x))
        return real(equation, x, *args, **kwargs)

    monkeypatch.setattr(terms, "observations_outside", counted)
    return calls


def test_the_domain_check_of_trained_observations_runs_once(tmp_path, monkeypatch):
    """With data.train: true the observations' domain check ran twice, once when the config
    read them and once when the problem validated its data term (a second pass over
    all M points). Now once, for `pinnlab solve`'s build and for the tuning setup; without
    data.train the tuning's outer objective checks them, once too."""
    for train in (True, False):
        calls = _count_domain_checks(monkeypatch)
        path = tmp_path / "joint.yaml"
        path.write_text(JOINT_MU.replace("noise: 0.01}", f"noise: 0.01, train: {str(train).lower()}}}"))
        config = configuration.load(path)
        if train:
            configuration.build(config)
            assert calls == [10], calls
            calls.clear()
        build_tuning(config)
        assert calls == [10], (train, calls)


def test_trained_observations_outside_the_domain_are_refused_in_the_configs_words(tmp_path):
    """The one check left for data.train: true (the data term's) still names the file and
    the observation, as a ConfigError (exit 2 from the CLI), as the config's own check did."""
    import numpy as np
    import pytest

    data = tmp_path / "obs.npz"
    x = np.full((3, 3), 0.1)
    x[1, 0] = 2.0  # ‖x‖ > 1: outside the unit ball
    np.savez(data, x=x, u=np.zeros(3))
    path = tmp_path / "solve.yaml"
    path.write_text(f"equation: {{name: poisson_two_body, dim: 3}}\nmodel: {{width: 8}}\n"
                    f"trainer: {{steps: 3}}\ndata: {{source: {str(data)!r}, train: true}}\n")
    with pytest.raises(configuration.ConfigError) as err:
        configuration.build(configuration.load(path))
    assert str(err.value).startswith(f"data.source: observation file {str(data)!r} holds a point outside the unit "
                                     "ball, the domain of poisson_two_body: observation 1 (counting from 0)")


def test_a_csv_point_outside_the_domain_is_named_by_its_file_line(tmp_path):
    """A CSV observation outside the domain was named "observation 1 (counting from 0)",
    which a user editing the file must translate past the header and comment lines. Now
    the refusal names its line in the file (here 4: a header, a comment, then row 0),
    for the data term's check (data.train: true) and the outer objective's, and so does
    the refusal of a non-finite value in a CSV file."""
    import pytest

    from pinnlab.equations.base import AbstractEquation

    data = tmp_path / "obs.csv"
    data.write_text("x0,x1,x2,u\n# measured\n0.1,0.1,0.1,0\n2.0,0.1,0.1,0\n0.1,0.1,0.1,0\n")
    path = tmp_path / "solve.yaml"
    path.write_text(f"equation: {{name: poisson_two_body, dim: 3}}\nmodel: {{width: 8}}\n"
                    f"trainer: {{steps: 3}}\ndata: {{source: {str(data)!r}, train: true}}\n")
    expected = "observation 1 (counting from 0)"
    with pytest.raises(configuration.ConfigError) as err:
        configuration.build(configuration.load(path))
    assert "domain of poisson_two_body: line 4 of the file (observation 1, counting from 0) at ‖x‖ = 2" \
        in str(err.value) and expected not in str(err.value)
    config = configuration.load(path, ["data.train=false"])
    equation = configuration.make_equation(config.equation)
    assert isinstance(equation, AbstractEquation)
    with pytest.raises(configuration.ConfigError, match="line 4 of the file"):
        configuration.make_observations(config, equation)
    # a non-finite value too, found while the file is read
    data.write_text("x0,x1,x2,u\n# measured\n0.1,0.1,0.1,0\n0.1,nan,0.1,0\n")
    with pytest.raises(configuration.ConfigError, match=r"x of line 4 of the file \(observation 1, counting from 0\) "
                       "contains non-finite values"):
        configuration.make_observations(config, equation)


def test_the_data_source_refusal_lists_every_accepted_suffix(tmp_path, monkeypatch):
    """A missing data.source was refused as "an existing .h5/.npz/.csv file", though .hdf5
    is read too (and save_observations said ".h5, .npz or .csv"). Now every refusal lists
    the suffixes load_observations reads, from the one list, and each of them is read."""
    import numpy as np
    import pytest

    from pinnlab.io import observations

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "solve.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\ndata: {source: missing.hdf5}\n")
    with pytest.raises(configuration.ConfigError) as err:
        configuration.load(path)
    assert "must be 'synthetic' or an existing .h5/.hdf5/.npz/.csv file" in str(err.value)
    assert observations.SUFFIXES == (".h5", ".hdf5", ".npz", ".csv")
    SUFFIXES, ObservationError = observations.SUFFIXES, observations.ObservationError
    load_observations, save_observations = observations.load_observations, observations.save_observations
    x, u = torch.full((2, 3), 0.1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for suffix in SUFFIXES:  # (each listed suffix is one the loader takes, in any case)
        save_observations(tmp_path / f"obs{suffix.upper()}", x, u)
        assert torch.equal(load_observations(tmp_path / f"obs{suffix.upper()}", 3)[0], x)
    (tmp_path / "obs.txt").write_text("0.1,0.1,0.1,0\n")
    with pytest.raises(ObservationError, match=r"unknown format \(use \.h5, \.hdf5, \.npz or \.csv\)$"):
        load_observations(tmp_path / "obs.txt", 3)
    with pytest.raises(ObservationError, match=r"\(use \.h5, \.hdf5, \.npz or \.csv\)$"):
        save_observations(tmp_path / "obs.txt", x, u)
    assert np.loadtxt(tmp_path / "obs.txt", delimiter=",").shape == (4,)  # (left as it was)


def test_an_empty_observation_path_is_refused_as_empty(tmp_path, monkeypatch, capsys):
    """There is no checkpoint path to set (a run's checkpoint is its output's .ckpt, an
    empty -o is refused, trainer.checkpoint= is an unknown key); the one path setting an
    override can empty is data.source, and `data.source=''` became the current directory:
    "must be ... an existing ... file (read from the current directory: '/home/me')". Now
    one line saying the path is empty, exit 2, nothing written."""
    from pinnlab.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "solve.yaml"
    path.write_text("equation: {name: poisson_two_body, dim: 3}\nmodel: {width: 8}\ntrainer: {steps: 3}\n"
                    "data: {source: synthetic}\n")
    assert main(["solve", str(path), "data.source=''", "-o", "r.h5", "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err == ("pinnlab: error: config error: data.source = '': an empty path; use 'synthetic' or an "
                   "existing .h5/.hdf5/.npz/.csv file\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["solve.yaml"]
