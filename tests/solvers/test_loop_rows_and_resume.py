"""History rows of ``train``: the mix of the row's step, term columns only for several
terms; and a resumed plateau switch that carries on from the state's plateau."""
import torch

from pinnlab.losses import Hybrid, SwitchAt, SwitchOnPlateau
from pinnlab.solvers import train
from pinnlab.solvers.terms import DataLoss

from .small_problems import F64, problem, stein

KW = dict(seed=0, test_points=10, progress="off", device="cpu", dtype=F64)


def test_a_rows_mix_is_the_mix_of_its_last_step():
    """SwitchAt(2): steps 0, 1 train the biased loss (row at step 2: mix 0), steps 2, 3
    the unbiased one (row at step 4: mix 1)."""
    result = train(problem(estimator=stein(), loss=Hybrid(switch=SwitchAt(2))), steps=4, eval_every=2, **KW)
    assert result.history.rows["step"] == [2, 4]
    assert result.history.rows["mix"] == [0.0, 1.0]


def test_term_columns_are_recorded_only_with_more_than_one_term():
    """A residual-only run has no loss_/weight_ columns; with a data term each row holds
    both terms' unweighted losses and weights."""
    alone = train(problem(), steps=2, eval_every=1, **KW)
    assert alone.history.terms == {}
    x_obs = torch.rand(5, 4, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.5
    data = DataLoss(x_obs, torch.zeros(5, dtype=F64))
    both = train(problem(extra_terms=(data,)), steps=2, eval_every=1,
                 hyperparams={"weights": {"data": 3.0}}, **KW)
    assert sorted(both.history.terms) == ["loss_data", "loss_residual", "weight_data", "weight_residual"]
    assert both.history.terms["weight_data"] == [3.0, 3.0]
    assert both.history.terms["weight_residual"] == [1.0, 1.0]


def test_a_resumed_plateau_switch_carries_on_from_the_states_plateau():
    """SwitchOnPlateau(window=2, tolerance=0.99): the best smoothed loss is that of step 0,
    so the switch takes effect at step 3. A run resumed from the checkpoint of step 2
    keeps that plateau state (a fresh one would switch at step 5) and matches the
    uninterrupted run exactly."""
    def run(**kw):
        p = problem(estimator=stein(), loss=Hybrid(switch=SwitchOnPlateau(window=2, tolerance=0.99)))
        return train(p, steps=6, eval_every=3, **KW, **kw)

    full = run()
    assert full.history.trace_mix == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    kept = []
    run(checkpoint_every=2, on_checkpoint=kept.append)
    resumed = run(state=kept[0])
    assert kept[0].step == 2
    assert resumed.history.trace_mix == full.history.trace_mix
    assert resumed.stats["switch_step"] == full.stats["switch_step"] == 3.0
    for k in full.params:
        assert torch.equal(resumed.params[k], full.params[k])


def test_the_plateau_switch_is_announced_once_in_the_log(capsys):
    """The automatic switch was not shown while training (only /final's switch_step said
    it afterwards): the log gets one line when it happens, numbered as switch_step."""
    p = problem(estimator=stein(), loss=Hybrid(switch=SwitchOnPlateau(window=2, tolerance=0.99)))
    result = train(p, steps=6, eval_every=3, **{**KW, "progress": "log"}, log_every=100)
    lines = [line for line in capsys.readouterr().err.splitlines() if "plateau" in line]
    assert lines == ["train: the biased loss reached a plateau; switch to the unbiased loss after step 3"]
    assert result.stats["switch_step"] == 3
