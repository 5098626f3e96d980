"""Shared fixtures: CPU by default, float64 for identities, a fixed generator."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
