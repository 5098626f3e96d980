"""README claims checked against the code (fourth audit: "A tour" and "Tuning PINNs
automatically" up to its benchmark).

Pins documented claims that no other test pinned: the choices the annotated `tune:`
example lists in its comments (methods, tunables, objectives, outer optimizers, tangent
modes) against what is accepted and what `pinnlab list` prints, refusals of that section
made before any work (joint with tune.checkpoint_every, an unknown tangent mode), what
the inner training of a tuning ignores (the trainer's schedule, a hybrid loss's switch),
and the notebooks the tour says are stored with their outputs. A few 2-outer-step
tunings of width-8 networks.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pinnlab.cli import main
from pinnlab.tuning.spec import COLLOCATION, DEFAULT_TRANSFORMS, ObjectiveSpec, TunableSpec, TuneSection
from tests.test_readme_claims_third_audit import FLAT, README, TUNE

ROOT = Path(__file__).resolve().parents[1]

# the annotated tune: example of "Tuning PINNs automatically", its comment lines
EXAMPLE = README.split("## Tuning PINNs automatically", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
COMMENTS = " ".join(line.split("#", 1)[1].strip() for line in EXAMPLE.splitlines() if "#" in line)


def _tune(tmp_path, *overrides, text=TUNE, name="tune.h5"):
    """Exit code and output path of `pinnlab tune` on ``text`` with ``overrides``."""
    config, out = tmp_path / "tune.yaml", tmp_path / name
    config.write_text(text)
    return main(["tune", str(config), "-o", str(out), "--progress", "off", *overrides]), out


def _refused(tmp_path, capsys, *overrides, text=TUNE):
    """The one line `pinnlab tune` refuses ``overrides`` with (exit 2, no output written)."""
    code, out = _tune(tmp_path, *overrides, text=text)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists(), err
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".*.lock"))
    return err


def test_the_examples_method_comment_lists_every_method_in_the_list_order(capsys):
    """README: "# fg2u zo_fg2u fgu rgu trgu neumann cg hessian_free darts / penalty f2sa; or
    the baselines random optuna joint": exactly the methods `pinnlab tune` accepts, in the
    order `pinnlab list` prints them."""
    from pinnlab.bilevel import METHODS
    from pinnlab.tuning.spec import SEARCH_METHODS

    hyper, baselines = re.search(r"(fg2u zo_fg2u .*? penalty f2sa); or the baselines ([a-z ]+?) \(",
                                 COMMENTS).groups()
    assert hyper.split() == list(METHODS)
    assert baselines.split() == list(SEARCH_METHODS)
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("tune methods: hypergradients ", 1)[1].splitlines()[0]
    assert listed == f"{', '.join(hyper.split())}; baselines {', '.join(baselines.split())}"


def test_the_examples_tunable_comment_names_what_list_prints_and_the_spec_knows(capsys):
    """README: "# weights.<term>, sigma (per_coordinate: true), mix, lr, coefficients.<name>,
    collocation_weight {width, depth}": the tunables `pinnlab list` names, each with a
    default transform but the network, whose spec has the named fields."""
    match = re.search(r"# (weights\.<term>, sigma \(per_coordinate: true\), mix, lr,)\s*\n\s*"
                      r"# (coefficients\.<name>, collocation_weight \{width, depth\})", EXAMPLE)
    assert match is not None
    named = [part.strip() for part in re.sub(r" [({][^)}]*[)}]", "", " ".join(match.groups())).split(",")]
    assert named == ["weights.<term>", "sigma", "mix", "lr", "coefficients.<name>", "collocation_weight"]
    assert main(["list"]) == 0
    assert f"\ntunables: {', '.join(named)}\n" in capsys.readouterr().out
    assert {n.replace("<term>", "").replace("<name>", "") for n in named[:-1]} == set(DEFAULT_TRANSFORMS)
    assert named[-1] == COLLOCATION
    assert {"per_coordinate", "width", "depth"} <= set(TunableSpec.model_fields)


def test_the_examples_value_lists_are_exactly_the_accepted_values():
    """README: "objective: ... # data | residual (...) | reference", "outer_optimizer: adam |
    sgd", "tangents: auto | hvp | jvp": the accepted values, no more, no fewer."""
    from pinnlab.bilevel.forward import TangentMode

    objectives = re.search(r"# data \| residual \(.*?\) \| reference", EXAMPLE)
    assert objectives is not None
    assert typing.get_args(ObjectiveSpec.model_fields["kind"].annotation) == ("data", "residual", "reference")
    assert "(outer_optimizer: adam | sgd)" in COMMENTS
    assert typing.get_args(TuneSection.model_fields["outer_optimizer"].annotation) == ("adam", "sgd")
    assert "tangents: auto | hvp | jvp)" in COMMENTS
    assert typing.get_args(TangentMode) == ("auto", "hvp", "jvp")


def test_an_unknown_tangent_mode_is_refused_before_any_work(tmp_path, capsys):
    """README: fg2u's "tangents: auto | hvp | jvp": another value ends `pinnlab tune` in
    one line naming the three."""
    err = _refused(tmp_path, capsys, "tune.method=fg2u", "tune.options={tangents: bogus}")
    assert "tangents must be 'auto', 'hvp' or 'jvp', got 'bogus'" in err


def test_tune_checkpoint_every_is_refused_with_joint_fitting(tmp_path, capsys):
    """README: "`random` and `optuna` save after every trial and `joint` keeps no checkpoint,
    so it [tune.checkpoint_every] is refused with them" (random and optuna are
    tests/test_config_no_effect.py's)."""
    err = _refused(tmp_path, capsys, "tune.method=joint", "tune.tunables={coefficients.c: {}}",
                   "tune.objective={kind: data}", "tune.checkpoint_every=2",
                   text=TUNE + "data: {source: synthetic, points: 8, noise: 0.01}\n")
    assert "tune.checkpoint_every: has an effect only with tune.method: fg2u" in err
    assert "(this config has tune.method = 'joint')" in err


def _phi_and_values(path):
    with h5py.File(path) as fh:
        return fh["tune/phi/weights.boundary"][...], fh["tune/value"][...]


def test_the_inner_steps_train_at_the_constant_lr_whatever_the_schedule(tmp_path):
    """README: "The inner steps train at the constant `trainer.lr` ...: the trainer's
    schedule ... count[s] the final solve's steps": a linear schedule (which would reach
    0 at step 3 of the 4 inner steps) tunes exactly as the constant one."""
    _, constant = _tune(tmp_path, "trainer.schedule=constant", name="constant.h5")
    _, linear = _tune(tmp_path, "trainer.schedule=linear", name="linear.h5")
    for a, b in zip(_phi_and_values(constant), _phi_and_values(linear)):
        np.testing.assert_array_equal(a, b)


def test_an_untuned_hybrid_mix_stays_before_its_switch_while_tuning(tmp_path):
    """README: "a hybrid loss whose mix is not tuned stays before its switch": a hybrid loss
    switching at step 1 tunes as the biased loss (its mix 0) over all 4 inner steps."""
    _, biased = _tune(tmp_path, "loss.kind=biased", name="biased.h5")
    _, hybrid = _tune(tmp_path, "loss.kind=hybrid", "loss.switch_step=1", name="hybrid.h5")
    for a, b in zip(_phi_and_values(biased), _phi_and_values(hybrid)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


NOTEBOOKS = {name: json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
             for name in ("01_quickstart", "03_tuning")}


def _code(notebook):
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_the_notebooks_are_stored_with_the_outputs_of_a_run():
    """README: "the notebooks are stored with the outputs of a run ..., so they can be read
    without running them": every code cell of every notebook has outputs, none an error,
    and each notebook a figure (tests/test_notebooks.py runs them again)."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = _code(json.loads(path.read_text(encoding="utf-8")))
        assert cells and all(cell.get("outputs") for cell in cells), path.name
        outputs = [o for cell in cells for o in cell["outputs"]]
        assert not [o for o in outputs if o["output_type"] == "error"], path.name
        assert any("image/png" in o.get("data", {}) for o in outputs), path.name


def test_the_quickstart_notebook_runs_the_equation_at_d_20_through_the_api_and_03_tunes():
    """README: "`notebooks/01_quickstart.ipynb` runs this equation at d = 20 through the same
    API" (AllenCahnTwoBody, PINNProblem, pinnlab.train) "and plots its curves";
    "`notebooks/03_tuning.ipynb` tunes a small problem end to end" (`tune`, then `plot`)."""
    quick = "\n".join("".join(cell["source"]) for cell in _code(NOTEBOOKS["01_quickstart"]))
    assert re.search(r"\bAllenCahnTwoBody\(20\b", quick)
    assert "pinnlab.PINNProblem(" in quick and "pinnlab.train(" in quick and "plt." in quick
    tuning = "\n".join("".join(cell["source"]) for cell in _code(NOTEBOOKS["03_tuning"]))
    assert 'main(["tune", ' in tuning and 'main(["plot", "tuned.h5"' in tuning
    assert re.search(r"dim: [1-9]\b", tuning)  # a small problem
    assert "notebooks/01_quickstart.ipynb` runs this equation at d = 20" in FLAT


def _setup(tmp_path, *overrides):
    from pinnlab import config as configuration
    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning

    path = tmp_path / "tune.yaml"
    path.write_text(TUNE)
    setup = build_tuning(configuration.load(path, list(overrides)))
    check_method(setup)
    return setup


def test_tune_seed_seeds_the_collocation_weight_network_also_under_rgu(tmp_path):
    """README: "`tune.seed` (default 0) seeds what is random in the tuning itself: ... the
    `collocation_weight` network's initialisation": under rgu (where the seed is accepted
    with that network: tests/test_config_no_effect.py) the same seed gives the same initial
    network, another seed another one."""
    net = "tune.tunables={collocation_weight: {width: 4}}"
    first = _setup(tmp_path, net).phi0
    assert first.keys() and all(k.startswith("collocation_weight/") for k in first)
    again, other = _setup(tmp_path, net, "tune.seed=0").phi0, _setup(tmp_path, net, "tune.seed=1").phi0
    weight = "collocation_weight/0.weight"
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first[weight], other[weight])



@pytest.mark.parametrize("tunables, accepted", [
    ("{lr: {}, weights.residual: {}, weights.boundary: {}}", True),
    ("{sigma: {}}", False), ("{coefficients.c: {}}", False),
])
def test_deepxde_inner_training_tunes_only_its_loss_weights_and_lr(tmp_path, tunables, accepted):
    """README: "`inner: deepxde` tunes DeepXDE's `loss_weights` and learning rate with
    `zo_fg2u`": those are accepted, σ (which DeepXDE's exact derivatives have no use for)
    and a PDE coefficient are refused naming the three."""
    pytest.importorskip("deepxde")
    from pinnlab import config as configuration
    from pinnlab.tuning.run import check_method
    from pinnlab.tuning.setup import build_tuning
    from tests.tuning.test_tuning_audit_edges import DEEPXDE

    path = tmp_path / "tune.yaml"
    path.write_text(DEEPXDE)
    config = configuration.load(path, [f"tune.tunables={tunables}"])
    assert config.tune.method == "zo_fg2u" and config.tune.inner == "deepxde"
    if accepted:
        check_method(build_tuning(config))
    else:
        with pytest.raises(configuration.ConfigError, match=r"with tune\.inner: deepxde only lr, "
                                                            r"weights\.residual and weights\.boundary can be tuned"):
            build_tuning(config)
