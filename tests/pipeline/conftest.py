"""Fixtures of the pipeline tests: the in-memory state with the small lab installed."""

from __future__ import annotations

import pytest
from pipeline_lab import MemoryState, build_lab


@pytest.fixture
def state() -> MemoryState:
    return build_lab(MemoryState())
