"""The shared argument checks (:mod:`pinnlab._checks`) at their bounds: the bound itself
is accepted where the docstring says ``>=`` and refused where it says ``>``, and every
check refuses booleans and non-finite numbers, in one ValueError line naming the argument."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from pinnlab._checks import (
    check_at_least,
    check_choice,
    check_integer,
    check_nonnegative,
    check_positive,
    check_seed,
    overlong_path,
)


def _refused(check, *args) -> str:
    with pytest.raises(ValueError) as info:
        check(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_check_integer_accepts_its_minimum_and_refuses_one_below():
    check_integer("steps", 1)
    check_integer("checkpoint_every", 0, minimum=0)
    assert _refused(check_integer, "steps", 0) == "steps must be an integer >= 1, got 0"
    assert _refused(check_integer, "every", -1, 0) == "every must be an integer >= 0, got -1"
    for value in (True, 2.0, "3"):
        assert _refused(check_integer, "steps", value) == f"steps must be an integer >= 1, got {value!r}"
    assert "pass int(...) of it" in _refused(check_integer, "steps", np.int64(4))


def test_check_positive_refuses_zero_and_check_nonnegative_accepts_it():
    check_positive("lr", 1e-300)
    assert _refused(check_positive, "lr", 0.0) == "lr must be a finite number > 0, got 0.0"
    check_nonnegative("damping", 0.0)
    check_nonnegative("damping", 0)
    assert _refused(check_nonnegative, "damping", -1e-300) == "damping must be a finite number >= 0, got -1e-300"


def test_check_at_least_accepts_its_minimum():
    """growth = 1 keeps γ as it is, gamma_max = gamma is a fixed γ: both are allowed."""
    check_at_least("growth", 1.0, 1.0, "1")
    check_at_least("gamma_max", 5, 5.0, "gamma = 5.0")
    assert _refused(check_at_least, "growth", 0.999, 1.0, "1") == "growth must be a finite number >= 1, got 0.999"


@pytest.mark.parametrize("check", [check_positive, check_nonnegative,
                                   lambda name, value: check_at_least(name, value, 0.0, "0")])
@pytest.mark.parametrize("value", [math.inf, math.nan, True, "1.0"])
def test_real_checks_refuse_non_finite_numbers_and_non_numbers(check, value):
    assert _refused(check, "x", value).startswith("x must be a finite number")


def test_check_seed_takes_the_64_bit_range():
    check_seed("seed", 0)
    check_seed("seed", 2**63 - 1)
    for value in (2**63, -1, True, 1.0):
        assert _refused(check_seed, "seed", value).startswith("seed must be an integer with 0 <= seed < 2**63")


def test_check_choice_names_the_choices():
    check_choice("progress", "off", ("auto", "off"))
    assert _refused(check_choice, "progress", "quiet", ("auto", "off")) == (
        "progress must be one of 'auto', 'off', got 'quiet'")


def _path_of(length: int) -> str:
    """A relative path of ``length`` bytes, of names of at most 200 bytes."""
    parts, left = [], length
    while left > 0:
        part = min(200, left)
        parts.append("y" * part)
        left -= part + 1  # (and its separator)
    text = "/".join(parts)
    return text + "z" * (length - len(text))


def test_overlong_path_refuses_the_first_length_the_file_system_cannot_name():
    """A name of NAME_MAX bytes and a path of PATH_MAX - 1 bytes (room for its NUL) can be
    named; one more byte cannot (stat raised OSError 36, a traceback)."""
    name_max, path_max = os.pathconf(".", "PC_NAME_MAX"), os.pathconf(".", "PC_PATH_MAX")
    assert overlong_path("n" * name_max) is None
    assert overlong_path("d/" + "n" * (name_max + 1)) == (
        f"a name in it is {name_max + 1} bytes long, the file system allows {name_max}")
    assert len(_path_of(path_max - 1)) == path_max - 1 and overlong_path(_path_of(path_max - 1)) is None
    assert overlong_path(_path_of(path_max)) == f"it is {path_max} bytes long, the system allows {path_max - 1}"
