"""Custom socket types of the pack (V3 ``io.Custom``)."""

from __future__ import annotations

from comfy_api.latest import io

# A palette_core.palette.Palette.
Palette = io.Custom("PALETTE")
