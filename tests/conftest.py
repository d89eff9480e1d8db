"""Shared fixtures. The pack's ``nodes/`` is never imported as a top-level ``nodes`` here (ComfyUI owns that name)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The tests' reference data (``tests/data``, sources in its README)."""
    return DATA
