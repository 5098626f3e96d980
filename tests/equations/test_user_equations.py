"""A user's equation (``equation.module``) is tried on a few of its own points before any
work: what its methods raise or return wrongly is one line and exit 2, not a traceback
in the first step, a wrong problem trained in silence, or a result after the tuning."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinnlab.cli import main
from pinnlab.equations import EQUATIONS

MODULE = """\
import torch
from pinnlab.equations import PoissonTwoBody, register

@register
class Column(PoissonTwoBody):
    name = "user_column"
    def exact(self, x, coefficients=None):
        return super().exact(x, coefficients)[:, None]

@register
class SourceColumn(PoissonTwoBody):
    name = "user_source_column"
    def source(self, x, coefficients):
        return super().source(x, coefficients)[:, None]

@register
class NotFinite(PoissonTwoBody):
    name = "user_nan"
    def exact(self, x, coefficients=None):
        return torch.full((x.shape[0],), float("nan"), dtype=x.dtype)

@register
class Raises(PoissonTwoBody):
    name = "user_raises"
    def ansatz_jets(self, x, coefficients=None):
        raise ZeroDivisionError("ansatz blew up")

@register
class ColumnAnsatz(PoissonTwoBody):
    name = "user_ansatz_column"
    def ansatz(self, x, coefficients):
        a, b = super().ansatz(x, coefficients)
        return a._replace(value=a.value[:, None]), b

@register
class SpatialGradient(PoissonTwoBody):
    name = "user_ansatz_gradient"
    def ansatz(self, x, coefficients):
        a, b = super().ansatz(x, coefficients)
        return a._replace(gradient=a.gradient[:, :-1]), b

@register
class Sampler(PoissonTwoBody):
    name = "user_sampler"
    def sample_collocation(self, n, *, generator, dtype=torch.float32, **overrides):
        return torch.zeros(n, self.input_dim + 1, dtype=dtype)

@register
class Words(PoissonTwoBody):
    name = "user_terms"
    def terms(self):
        return "laplacian"

@register
class ResidualRaises(PoissonTwoBody):
    name = "user_residual"
    def residual(self, x, estimate, *, unbiased=False, coefficients=None):
        raise RuntimeError("residual blew up")

@register
class NoBoundary(PoissonTwoBody):
    name = "user_no_boundary"
    def sample_boundary(self, n, *, generator, dtype=torch.float32):
        raise NotImplementedError("no boundary")
"""

CONFIG = """\
equation: {name: NAME, dim: 3, module: MODULE}
model: {width: 8, depth: 2}
estimator: {kind: stein, sigma: 0.01, samples: 4, eval_samples: 8}
trainer: {steps: 2, batch_size: 8, eval_every: 2, test_points: 10}
"""


@pytest.fixture
def registry():
    saved = dict(EQUATIONS)
    yield
    EQUATIONS.clear()
    EQUATIONS.update(saved)


@pytest.mark.parametrize("name, overrides, expected", [
    # an (N, 1) exact solution trained 20 steps, then failed in the evaluation with a
    # traceback (under tune: after the whole tuning, whose synthetic data it broadcast)
    ("user_column", [], "exact failed when tried on 4 points: ValueError: user_column.exact must return one value "
                        "per point, shape (4,) for (4, 3) points; it returned (4, 1)"),
    # an (N, 1) source broadcast the residual to (N, N): rel_l2 0.948 against 0.901, exit 0
    ("user_source_column", [], "source failed when tried on 4 points: ValueError: user_source_column.source must "
                               "return one value per point"),
    ("user_nan", [], "exact failed when tried on 4 points: ValueError: it is not finite at the points"),
    ("user_raises", [], "ansatz_jets failed when tried on 4 points: ZeroDivisionError: ansatz blew up"),
    # a wrongly shaped ansatz jet failed in the residual with torch's "expand(...)" or
    # "index ... is out of bounds"
    ("user_ansatz_column", [], "ansatz_jets failed when tried on 4 points: ValueError: A.value has shape (4, 1) "
                               "for 4 points of 3 columns; it must be (4,) or a number"),
    ("user_ansatz_gradient", [], "ansatz_jets failed when tried on 4 points: ValueError: A.gradient has shape "
                                 "(4, 2) for 4 points of 3 columns; it must be (4, 3) or None"),
    ("user_sampler", [], "sample_collocation failed when tried on 4 points: ValueError: it returned (4, 4) for 4 "
                         "points, not (4, 3)"),
    ("user_terms", [], "terms failed when tried on 4 points: ValueError: it returned laplacian, not a tuple"),
    ("user_residual", [], "residual failed when tried on 4 points: RuntimeError: residual blew up"),
    # NotImplementedError at the first step, a traceback
    ("user_no_boundary", ["equation.constraint=soft"], "equation.constraint = 'soft': user_no_boundary "),
])
def test_a_broken_user_equation_is_one_line_before_any_work(tmp_path, capsys, registry, name, overrides, expected):
    module = tmp_path / "mine.py"
    module.write_text(MODULE)
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("NAME", name).replace("MODULE", str(module)))
    out = tmp_path / "o.h5"
    assert main(["solve", str(config), *overrides, "-o", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_a_user_equation_may_not_take_a_registered_name(tmp_path, capsys, registry):
    """A class named poisson_two_body replaced the built-in in silence: the result said
    poisson_two_body and held the user's problem."""
    module = tmp_path / "collide.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody, register\n\n"
                      "@register\nclass Fake(PoissonTwoBody):\n    name = 'poisson_two_body'\n")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("NAME", "poisson_two_body").replace("MODULE", str(module)))
    assert main(["solve", str(config), "-o", str(tmp_path / "o.h5"), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("cannot import it: ValueError: equation name 'poisson_two_body' is taken (a built-in "
                        "equation); give Fake a name of its own"), err
    assert EQUATIONS["poisson_two_body"].__module__.startswith("pinnlab.")


def test_a_module_that_is_no_python_file_or_registers_nothing_is_named(tmp_path, capsys, registry):
    """notes.txt said "No module named 'notes'"; a module registering nothing fell through
    to "unknown equation", as if the module had not been given."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not python\n")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    for module, expected in ((notes, f"equation.module = {str(notes)!r}: a file, but not a .py file"),
                             (empty, "registered no equation of that name (registered: ")):
        config = tmp_path / "c.yaml"
        config.write_text(CONFIG.replace("NAME", "mine").replace("MODULE", str(module)))
        assert main(["solve", str(config), "-o", str(tmp_path / "o.h5"), "--progress", "off"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err


def test_what_a_user_equation_raises_during_the_run_is_one_line_naming_its_line(tmp_path, capsys, registry):
    """A method that fails only at the run's sizes (past the four-point check) came out as
    a traceback through pinnlab's internals; now one line naming the module's file and
    line, exit 2. pinnlab's own errors are not attributed to it."""
    module = tmp_path / "late.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody, register\n\n"
                      "@register\nclass Late(PoissonTwoBody):\n    name = 'user_late'\n"
                      "    def source(self, x, coefficients):\n"
                      "        if x.shape[0] > 4:\n"
                      "            raise ArithmeticError('too many points')\n"
                      "        return super().source(x, coefficients)\n")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("NAME", "user_late").replace("MODULE", str(module)))
    assert main(["solve", str(config), "-o", str(tmp_path / "o.h5"), "--progress", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pinnlab: error: the equation module raised ArithmeticError: too many points ({module} line 8, "
                   "in source)"), err


def test_a_module_given_by_name_is_recorded_by_its_files_digest(tmp_path, monkeypatch, registry):
    """The README's own form, `equation.module: custom_equation`, recorded nothing: a module
    edited between an interrupted run and its --resume changed the problem in silence
    (only a `.py` path was hashed). Both forms now record the SHA-256 of the module's file
    under input_files, so a resume after an edit is refused as for a changed data file."""
    import hashlib
    import sys

    from pinnlab import config as configuration

    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "named_equation", raising=False)
    module = tmp_path / "named_equation.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody, register\n\n"
                      "@register\nclass Named(PoissonTwoBody):\n    name = 'user_named'\n")
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    for given in ("named_equation", "named_equation.py"):
        path = tmp_path / "c.yaml"
        path.write_text(CONFIG.replace("NAME", "user_named").replace("MODULE", given))
        config = configuration.load(path)
        assert Path(config.input_files()["equation.module"]).resolve() == module.resolve(), given
        assert config.input_digests() == {"equation.module": digest}, given
        EQUATIONS.pop("user_named")  # (each form registers it once)
    monkeypatch.delitem(sys.modules, "named_equation", raising=False)


def test_a_py_module_finds_the_modules_beside_it(tmp_path, monkeypatch, capsys, registry):
    """`equation.module: eqs/sibling_user.py` whose file imports a module beside it
    (`from sibling_helpers import ...`) was "No module named 'sibling_helpers'" from any
    other directory: the file's directory was not on the path, as `python eqs/sibling_user.py`
    puts it. The path is as it was afterwards."""
    import sys

    folder = tmp_path / "eqs"
    folder.mkdir()
    (folder / "sibling_helpers.py").write_text("NAME = 'user_sibling'\n")
    module = folder / "sibling_user.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody, register\n"
                      "from sibling_helpers import NAME\n\n"
                      "@register\nclass Sibling(PoissonTwoBody):\n    name = NAME\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "sibling_helpers", raising=False)
    path = list(sys.path)
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("NAME", "user_sibling").replace("MODULE", "eqs/sibling_user.py"))
    assert main(["solve", str(config), "trainer.steps=2", "-o", str(tmp_path / "o.h5"), "--progress", "off"]) == 0, \
        capsys.readouterr().err
    assert sys.path == path and str(folder) not in sys.path
    monkeypatch.delitem(sys.modules, "sibling_helpers", raising=False)
