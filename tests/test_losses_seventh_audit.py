"""Seventh mutation audit of the losses: the type check of the hybrid's first loss and a
switch whose ``mix`` is no method.

Each test pins a behaviour a one-line change of pinnlab/losses left unnoticed by the
earlier suites."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pinnlab.losses import Biased, Hybrid, SwitchAt, Unbiased2

# -- hybrid: the type checks ---------------------------------------------------------------


@pytest.mark.parametrize("first", ["biased", Biased, None])
def test_a_first_that_is_no_loss_instance_is_refused_when_written(first):
    """Hybrid(first="biased") (a name), first=Biased (the class) or None is refused when
    the hybrid is built, naming the field, not at the first step or at validation with an
    AttributeError."""
    with pytest.raises(TypeError, match=r"Hybrid\.first must be a loss instance"):
        Hybrid(switch=SwitchAt(3), first=first)
    Hybrid(switch=SwitchAt(3), first=Unbiased2())


@pytest.mark.parametrize("switch", [SimpleNamespace(mix=0.5), SimpleNamespace(mix=None)])
def test_a_switch_whose_mix_is_no_method_is_refused_when_written(switch):
    """A switch whose ``mix`` is a value (a constant mix written as an attribute) is no
    policy: refused when the hybrid is built, not with "'float' object is not callable"
    at the first step."""
    with pytest.raises(TypeError, match="Hybrid.switch must be a switch policy"):
        Hybrid(switch=switch)
    Hybrid(switch=SimpleNamespace(mix=lambda step: 0.5))
