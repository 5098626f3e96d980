"""README claims checked against the code: the "Bias–variance studies" section.

Pins documented claims of that section that no other test pinned: the shipped study
configs are the studies the README describes (problem, d, σ, points, replicates,
reference, grid, variants), the full-size reproductions and the notebook it names, an
estimator study's outputs (the HDF5 file and ``--json`` only, ``--json`` following
``--overwrite`` like ``-o``), and a training study's refusal of a cell whose
``equation.module`` file changed or that another pinnlab version wrote (one line naming
what differs, replaced only with ``--overwrite``). Tiny configs, in-process calls.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import pytest

import pinnlab
from pinnlab import config as C
from pinnlab.cli import main
from pinnlab.losses import Biased, Hybrid, SwitchAt, Unbiased2
from tests.studies.test_studies import TINY_ESTIMATOR
from tests.studies.test_study_cells_kept import ONE_SEED, _interrupted

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "configs" / "studies"
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Bias–variance studies", 1)[1].split("\n## ", 1)[0]
FLAT = re.sub(r"\s+", " ", SECTION)


def _header(path: Path) -> str:
    return " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))


def test_the_small_estimator_study_is_the_one_the_readme_describes():
    """README: `pinnlab study configs/studies/estimator_small.yaml -o est.h5 --json est.json`;
    isotropic Fokker–Planck, d = 1000, pretrained, σ = 0.05, 16 fixed points, 200 replicates
    per cell, reference K = 1024 × 20, K = 4 … 64 in both noise modes (its table), the
    config's Stein estimator."""
    command = "pinnlab study configs/studies/estimator_small.yaml -o est.h5 --json est.json"
    assert command in FLAT and command in _header(STUDIES / "estimator_small.yaml")
    config = C.load(STUDIES / "estimator_small.yaml")
    study = config.study
    assert (config.equation.name, config.equation.dim, study.dims) == ("fokker_planck_iso", 1000, None)
    assert config.estimator.kind == "stein" and config.estimator.sigma == 0.05 and study.sigmas == [0.05]
    assert (study.points, study.replicates, study.reference_samples, study.reference_replicates) == (16, 200, 1024, 20)
    assert study.samples == [4, 8, 16, 32, 64] and study.noise == ["independent", "shared"]
    assert study.init == "trained" and study.unbiased_samples == "split"
    assert study.losses == ["biased", "unbiased"] and study.quantities == ["residual", "loss", "gradient"]


def test_the_allen_cahn_estimator_study_is_the_same_study_on_the_ball_at_d_10_with_32_points():
    """README: "The same study on the unit-ball Allen–Cahn problem (`pinnlab study
    configs/studies/estimator_allen_cahn.yaml -o est_ac.h5`; d = 10, ..., 32 points)", its
    table over K = 4 … 64 in both noise modes."""
    assert "pinnlab study configs/studies/estimator_allen_cahn.yaml -o est_ac.h5" in FLAT
    small, ball = C.load(STUDIES / "estimator_small.yaml"), C.load(STUDIES / "estimator_allen_cahn.yaml")
    assert (ball.equation.name, ball.equation.dim, ball.study.points) == ("allen_cahn_two_body", 10, 32)
    same = ball.resolved()
    other = small.resolved()
    for config in (same, other):
        config.pop("equation")
        config["study"].pop("points")
    assert same == other  # model, estimator, pretraining and the rest of the grid alike


def test_the_small_training_study_is_the_one_the_readme_describes():
    """README, "Training study": Allen–Cahn two-body, biased / unbiased (unbiased2) /
    hybrid, 3 training seeds, 2000 steps, K = 64, σ = 1e-2, shared noise, N = 64, 4×64
    MLP; hybrid switches at step 1000 (to unbiased2); d = 10 and 100 as the table's
    columns; 2 worker processes."""
    assert "pinnlab study configs/studies/training_small.yaml -o train.h5" in FLAT
    config = C.load(STUDIES / "training_small.yaml")
    study = config.study
    assert config.equation.name == "allen_cahn_two_body"
    assert (config.trainer.steps, config.trainer.batch_size) == (2000, 64)
    assert (config.estimator.kind, config.estimator.samples, config.estimator.sigma, config.estimator.noise) == (
        "stein", 64, 1e-2, "shared")
    assert (config.model.depth, config.model.width) == (4, 64)
    assert study.grid == {"equation.dim": [10, 100], "trainer.seed": [0, 1, 2]}
    assert study.columns == "equation.dim" and study.workers == 2
    assert list(study.variants) == ["biased", "unbiased", "hybrid"]
    losses = {}
    for name, overrides in study.variants.items():
        run = C.load(STUDIES / "training_small.yaml", [*overrides, "equation.dim=10"])
        losses[name] = C.make_loss(run.loss, C.make_equation(run.equation))
    assert type(losses["biased"]) is Biased and type(losses["unbiased"]) is Unbiased2
    hybrid = losses["hybrid"]
    assert type(hybrid) is Hybrid and type(hybrid.then) is Unbiased2
    assert isinstance(hybrid.switch, SwitchAt) and hybrid.switch.step == 1000


def test_the_full_size_reproductions_exist_and_give_their_running_time():
    """README: the full-size reproductions are rs_table5_allen_cahn.yaml,
    rs_table1_fokker_planck_iso.yaml and rs_table2_fokker_planck_aniso.yaml, with their
    expected running times in their headers; Table 5's protocol is the published one the
    README compares with (4×128 MLP, K = 128, 10,000 steps, 5 seeds, independent noise)."""
    names = ["rs_table5_allen_cahn.yaml", "rs_table1_fokker_planck_iso.yaml", "rs_table2_fokker_planck_aniso.yaml"]
    assert "The full-size reproductions are `configs/studies/rs_table5_allen_cahn.yaml`, " \
           "`rs_table1_fokker_planck_iso.yaml` and `rs_table2_fokker_planck_aniso.yaml`" in FLAT
    for name in names:
        assert C.load(STUDIES / name).study.kind == "training"
        assert "Expected running time" in _header(STUDIES / name), name
    table5 = C.load(STUDIES / "rs_table5_allen_cahn.yaml")
    assert (table5.model.depth, table5.model.width, table5.estimator.samples, table5.trainer.steps) == (4, 128, 128,
                                                                                                       10000)
    assert table5.estimator.noise == "independent" and table5.study.grid["trainer.seed"] == [0, 1, 2, 3, 4]


def test_the_full_size_reproductions_take_what_their_headers_say():
    """README: the headers give the expected running time on this CPU, "about 5 days for
    Table 5, weeks for Tables 1 and 2" (it said "hours to days" while two headers said
    weeks)."""
    assert ("headers give the expected running time on this CPU: about 5 days for Table 5, weeks for Tables 1 "
            "and 2 at K = 1024; use a GPU") in FLAT
    assert "≈ 5 days" in _header(STUDIES / "rs_table5_allen_cahn.yaml")
    for name in ("rs_table1_fokker_planck_iso.yaml", "rs_table2_fokker_planck_aniso.yaml"):
        assert "weeks in total" in _header(STUDIES / name), name


def test_the_notebook_runs_a_small_study_of_each_kind():
    """README: `notebooks/02_bias_variance.ipynb` runs a small one of each (an estimator
    and a training study, each through `pinnlab study` and plotted)."""
    assert "`notebooks/02_bias_variance.ipynb` runs a small one of each" in FLAT
    cells = json.loads((ROOT / "notebooks" / "02_bias_variance.ipynb").read_text())["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert "kind: estimator" in code and "kind: training" in code
    for name in ("estimator", "training"):
        assert f'main(["study", "{name}.yaml", "-o", "{name}.h5"' in code, name
        assert f'main(["plot", "{name}.h5"' in code, name


def test_an_estimator_study_writes_the_hdf5_and_json_only_and_json_follows_overwrite(tmp_path, capsys):
    """README: an estimator study writes the HDF5 and `--json` only (no STUDY.md/.csv, no
    cells), and its `--json` file follows `--overwrite` like `-o`: an existing one is kept
    (exit 2, one line, before any work) and replaced only with `--overwrite`."""
    cfg = tmp_path / "est.yaml"
    cfg.write_text(TINY_ESTIMATOR.replace("samples: [4, 8]", "samples: [4]").replace(
        "noise: [independent, shared]", "noise: [shared]"))
    out, js = tmp_path / "est.h5", tmp_path / "est.json"
    js.write_text("{}")
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(--json) exists; pass --overwrite" in err, err
    assert js.read_text() == "{}" and not out.exists()
    assert main(["study", str(cfg), "-o", str(out), "--json", str(js), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est.h5", "est.json", "est.yaml"]
    assert len(json.loads(js.read_text())["records"]) == 2 * 3  # loss × quantity
    with h5py.File(out, "r") as fh:
        assert fh.attrs["kind"] == "estimator_study"


@pytest.fixture
def module_study(tmp_path, capsys):
    """A one-cell training study of a user equation (`equation.module`), run once and
    interrupted after its cell."""
    module = tmp_path / "audit_equation_p.py"
    module.write_text("from pinnlab.equations import PoissonTwoBody, register\n\n"
                      "@register\nclass AuditP(PoissonTwoBody):\n    name = 'user_audit_p'\n")
    # (its outputs removed, as an interruption after the last cell leaves the study)
    cfg, out = _interrupted(tmp_path, ONE_SEED.replace("equation: {name: poisson_two_body,",
                                                       f"equation: {{module: {module}, name: user_audit_p,"), capsys)
    (cell,) = Path(str(out) + ".cells").glob("*.h5")
    yield module, cfg, out, cell
    from pinnlab.equations import EQUATIONS

    EQUATIONS.pop("user_audit_p", None)


def test_a_cell_of_a_changed_equation_module_is_refused_naming_it(module_study, capsys):
    """README: each cell file records the SHA-256 of the `equation.module` file; a cell of
    a changed module file is refused in one line naming what differs, and computed again
    only with `--overwrite`."""
    module, cfg, out, cell = module_study
    with h5py.File(cell, "r") as fh:
        recorded = json.loads(fh.attrs["input_files"])
    assert recorded == {"equation.module": hashlib.sha256(module.read_bytes()).hexdigest()}
    module.write_text(module.read_text() + "# edited\n")
    before = cell.read_bytes()
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "input_files.equation.module" in err and "--overwrite" in err, err
    assert cell.read_bytes() == before and not out.exists()
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    assert "skip finished cell" not in capsys.readouterr().err
    with h5py.File(cell, "r") as fh:
        assert json.loads(fh.attrs["input_files"]) == {
            "equation.module": hashlib.sha256(module.read_bytes()).hexdigest()}


def test_a_cell_of_another_pinnlab_version_is_refused_naming_the_versions(module_study, capsys):
    """README: a cell of another pinnlab version is refused in one line naming what
    differs (the two versions), kept as it was, and computed again only with `--overwrite`."""
    _, cfg, out, cell = module_study
    with h5py.File(cell, "r+") as fh:
        fh.attrs["pinnlab_version"] = "0.0.1"
    before = cell.read_bytes()
    assert main(["study", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"was written by pinnlab 0.0.1, this is {pinnlab.__version__}" in err and "--overwrite" in err, err
    assert cell.read_bytes() == before and not out.exists()
    assert main(["study", str(cfg), "-o", str(out), "--overwrite"]) == 0
    with h5py.File(cell, "r") as fh:
        assert fh.attrs["pinnlab_version"] == pinnlab.__version__
