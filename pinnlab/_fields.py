"""Strict field types shared by every config section (``pinnlab.config``, the ``tune:``
section in :mod:`pinnlab.tuning.spec`, the ``study:`` section in
:mod:`pinnlab.studies.spec`): YAML values are taken as written, never coerced."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Strict

INT64_LIMIT = 2**63
"""Integer settings are stored in result files and checkpoints as signed 64-bit integers:
-2**63 <= value < 2**63."""
SEED_LIMIT = INT64_LIMIT
"""Seeds are stored as signed 64-bit integers and are not negative: 0 <= seed < 2**63."""


def _seed_in_range(value: int) -> int:
    """``value`` if it is a storable seed, else ValueError (see :data:`SEED_LIMIT`)."""
    if not 0 <= value < SEED_LIMIT:
        raise ValueError("must be an integer with 0 <= seed < 2**63 (result files store it as a 64-bit integer)")
    return value


def _int64(value: int) -> int:
    """``value`` if a signed 64-bit integer holds it, else ValueError: result files and
    checkpoints store every integer setting as one (trainer.steps = 2**64 was accepted,
    then failed where it was first stored or counted)."""
    if not -INT64_LIMIT <= value < INT64_LIMIT:
        raise ValueError("must be an integer with -2**63 <= value < 2**63 (stored as a 64-bit integer)")
    return value


Int = Annotated[int, Strict(), AfterValidator(_int64)]
"""An integer field: ``true``/``false``, ``3.0`` and ``"3"`` are refused, not read as 1, 0,
3; so is one beyond a signed 64-bit integer."""
Float = Annotated[float, Strict()]
"""A number field: an int is accepted, a boolean or a string is not (finite: see
:data:`SECTION_CONFIG`)."""
Bool = Annotated[bool, Strict()]
"""A flag: ``true``/``false`` only, not ``1``, ``0`` or ``"yes"``."""
Seed = Annotated[int, Strict(), AfterValidator(_seed_in_range)]
"""A seed: an integer with 0 <= seed < 2**63 (:data:`SEED_LIMIT`)."""

SECTION_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
"""Every section: unknown keys and non-finite numbers (``.inf``, ``.nan``) are refused."""
