"""Eighth mutation audit of :mod:`pinnlab.config` and :mod:`pinnlab.cli`: what the first
seven left unpinned (which of several bad settings a one-line refusal names, the order of
the equations it lists, how a user equation's errors and empty terms are cut to one line,
the size settings a tuning or study names, an overlong output name as shown, an output
kept without a checkpoint under --resume, a failed plot's line and directory), each with
the exact value or the one-line message the clean code gives."""

from __future__ import annotations

import pytest

from pinnlab import cli
from pinnlab import config as C
from pinnlab.equations import EQUATIONS
from tests.test_config_boundaries import POISSON, _config, _refused


def test_of_two_unknown_sections_the_first_is_named():
    """The refusal names the first unknown section of the config, in its own order, not
    the last one (``solver`` before ``zeta``)."""
    assert _refused({"equation": POISSON, "solver": {}, "zeta": {}}) == (
        "solver: unknown section (allowed: equation, model, estimator, loss, trainer, data, study, tune)")


def test_an_unknown_equation_lists_the_registered_names_sorted():
    """The registry keeps its registration order (poisson_two_body first); the refusal
    lists its names sorted, so a user finds a name where the alphabet puts it."""
    assert list(EQUATIONS) != sorted(EQUATIONS)
    assert _refused({"equation": {"name": "heat", "dim": 3}}) == (
        f"equation.name = 'heat': unknown equation (registered: {', '.join(sorted(EQUATIONS))})")


def test_of_several_estimator_settings_refused_by_deepxde_the_first_field_is_named():
    """With trainer.backend: deepxde every estimator setting is refused; of several, the
    message names the first in the section's field order (sigma before samples, whatever
    order the config writes them in)."""
    data = _config(trainer={"backend": "deepxde"}, estimator={"samples": 4, "sigma": 0.1})
    assert _refused(data) == (
        "estimator.sigma: has no effect with trainer.backend: deepxde (DeepXDE takes exact autograd derivatives "
        "of its own network); remove it")


def test_a_user_equations_error_is_cut_to_200_characters_of_its_first_line():
    """What a user's equation raises when tried on four points is one line: its first
    line, cut to 200 characters (a 300-character message came back whole)."""
    from pinnlab.equations import PoissonTwoBody

    class Long(PoissonTwoBody):
        name = "user_long"

        def exact(self, x, coefficients=None):
            raise ValueError("e" * 300 + "\nsecond line")

    with pytest.raises(C.ConfigError) as info:
        C.check_user_equation(Long(3, seed=0), "long.py")
    assert str(info.value) == ("equation 'user_long' (equation.module = 'long.py'): exact failed when tried on 4 "
                               f"points: ValueError: {'e' * 200}")


def test_an_equation_constructor_error_is_its_first_non_blank_line(monkeypatch):
    """An equation whose constructor raises a message of several lines (torch's carry a C++
    trace), after blank ones, is refused as ``equation:`` and that message's first line."""
    from pinnlab.equations import PoissonTwoBody

    class Refuses(PoissonTwoBody):
        name = "user_refuses"

        def __init__(self, dim, **kwargs):
            raise RuntimeError("\n\n  dim 3 is too small\nException raised from foo at bar.cpp:12")

    monkeypatch.setitem(EQUATIONS, "user_refuses", Refuses)
    with pytest.raises(C.ConfigError) as info:
        C.make_equation(C.EquationSection(name="user_refuses", dim=3))
    assert str(info.value) == "equation: dim 3 is too small"


def test_the_size_settings_a_tuning_or_study_names_add_their_own_to_the_solves():
    """A run too large for the machine names the settings that size it: a solve's nine,
    a tuning's also its objective's points and samples (the Stein draws of u_σ), a study's
    its dims, samples, points and reference samples."""
    assert cli.SIZE_SETTINGS == ("equation.dim", "model.width", "model.depth", "estimator.samples",
                                 "estimator.eval_samples", "trainer.batch_size", "trainer.test_points",
                                 "loss.boundary_points", "data.points")
    assert cli.COMMAND_SIZE_SETTINGS == {
        "solve": cli.SIZE_SETTINGS,
        "tune": (*cli.SIZE_SETTINGS, "tune.objective.points", "tune.objective.samples"),
        "study": (*cli.SIZE_SETTINGS, "study.dims", "study.samples", "study.points", "study.reference_samples")}


def test_of_several_collocation_network_settings_the_first_is_named():
    """The collocation_weight network takes no init, transform, low or high; given
    several, the refusal names the first of that order (init), not the config's."""
    data = _config(tune={"method": "rgu", "tunables": {"collocation_weight": {"low": 0.1, "init": 0.5}}})
    assert _refused(data).startswith("tune.tunables.collocation_weight.init: has no effect on the "
                                     "collocation_weight network, ")


def test_an_overlong_output_name_is_shown_by_its_first_40_characters(tmp_path):
    """An output name too long with its checkpoint suffix is shown cut to its first 40
    characters (the name itself is some 250), with the sizes that make it too long."""
    output = tmp_path / ("r" * 248 + ".h5")
    with pytest.raises(cli.UsageError) as info:
        cli._output_checks(output, overwrite=False)
    assert str(info.value) == (f"output name {'r' * 40!r}... is too long: 256 bytes with the .ckpt suffix, "
                               "the file system allows 255")


def test_an_output_kept_without_a_checkpoint_is_refused_as_existing_even_under_resume(tmp_path):
    """An output checked without a checkpoint (``checkpoint=False``) has none to resume
    from: an existing one is refused as existing (pass --overwrite), not as "a finished
    run: there is no checkpoint to resume", which speaks of a checkpoint it never had."""
    output = tmp_path / "table.json"
    output.write_text("{}")
    with pytest.raises(cli.UsageError) as info:
        cli._output_checks(output, overwrite=False, checkpoint=False, resume=True)
    assert str(info.value) == f"output {str(output)!r} exists; pass --overwrite to replace it"
    with pytest.raises(cli.UsageError, match="holds a finished run: there is no checkpoint to resume"):
        cli._output_checks(output, overwrite=False, resume=True)


@pytest.mark.parametrize(("terms", "shown"), [
    ((), "()"),  # no term at all: a residual of nothing
    ("laplacian " * 10, ("laplacian " * 10)[:60]),  # what it returned, cut to 60 characters
], ids=["empty", "long"])
def test_a_user_equations_terms_must_be_a_nonempty_tuple_of_terms(terms, shown):
    """A user's ``terms()`` is tried before any work: an empty tuple is refused like a
    string, and what it returned is shown cut to 60 characters."""
    from pinnlab.equations import PoissonTwoBody

    class Terms(PoissonTwoBody):
        name = "user_terms"

        def terms(self):
            return terms

    with pytest.raises(C.ConfigError) as info:
        C.check_user_equation(Terms(3, seed=0), "terms.py")
    assert str(info.value) == ("equation 'user_terms' (equation.module = 'terms.py'): terms failed when tried on 4 "
                               f"points: ValueError: it returned {shown}, not a tuple of Term/Nonpolynomial objects")


def test_a_plot_that_fails_shows_200_characters_of_the_first_line_and_removes_its_directory(tmp_path, capsys,
                                                                                             monkeypatch):
    """What drawing a damaged file raises is one line: the error's type and the first 200
    characters of its first line; the plot directory the command created is gone again."""
    import pinnlab.plots

    def plot_file(path, directory):
        raise ValueError("v" * 300 + "\nsecond line")

    monkeypatch.setattr(pinnlab.plots, "plot_file", plot_file)
    result = tmp_path / "run.h5"
    result.write_bytes(b"not drawn")
    assert cli.main(["plot", str(result), "-o", str(tmp_path / "new" / "figs")]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        f"pinnlab: error: cannot plot {str(result)!r}: the file is damaged or was written by another pinnlab "
        f"version (ValueError: {'v' * 200})\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]
