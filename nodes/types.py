"""Custom socket types of the pack (V3 ``io.Custom``)."""

from __future__ import annotations

from comfy_api.latest import io

# A palette_core.palette.Palette.
Palette = io.Custom("PALETTE")

# A palette_core.adapter.ColorCondition (histogram, kind, distance, entropy; batched).
ColorCondition = io.Custom("COLOR_CONDITION")

# A palette_core.adapter.PaletteAdapter loaded from the palette_adapter models folder.
PaletteAdapter = io.Custom("PALETTE_ADAPTER")
