"""Shared fixtures. The pack's ``nodes/`` is never imported as a top-level ``nodes`` here (ComfyUI owns that name)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PALETTE_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The team's shared reference folder (``../shared`` beside the checkout)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared reference data not found at {SHARED}")
    return SHARED
