"""Auto Negative Palette: the colours of a first pass that lie far from the palette (docs/training-free.md)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..palette_core.adherence import DEFAULT_THRESHOLD
from ..palette_core.errors import PaletteError
from ..palette_core.negative import DEFAULT_COUNT, MAX_COUNT, auto_negative
from ..palette_core.palette import Palette
from .types import Palette as PaletteType
from .validation import check_inputs

CATEGORY = "palette"


class AutoNegativePalette(io.ComfyNode):
    """Derive a negative palette from an image: its colours far from the palette, weighted by area."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AutoNegativePalette",
            display_name="Auto Negative Palette",
            category=CATEGORY,
            description="Finds the colours of an image (a first generation, or a reference) that lie far from the "
            "palette, those farther than the threshold (CIEDE2000) from every palette colour, and clusters them "
            "by area into a few colours with weights. Feed them to Palette Guidance's negative_palette (the "
            "second pass then avoids them) or to Negative Palette for the adapter.",
            inputs=[
                io.Image.Input("image", tooltip="One image: the first pass, decoded, or a reference."),
                PaletteType.Input("palette", tooltip="The palette the image should follow."),
                io.Float.Input(
                    "threshold",
                    default=DEFAULT_THRESHOLD,
                    min=0.5,
                    max=100.0,
                    step=0.5,
                    tooltip="CIEDE2000 difference beyond which a colour counts as off-palette: 10 (default) is "
                    "clearly another colour; lower it to catch near misses.",
                ),
                io.Int.Input(
                    "count",
                    default=DEFAULT_COUNT,
                    min=1,
                    max=MAX_COUNT,
                    tooltip=f"How many negative colours, 1 to {MAX_COUNT} (default {DEFAULT_COUNT}).",
                ),
                io.Mask.Input("mask", optional=True, tooltip="Optional region: look for off-palette colours there."),
            ],
            outputs=[
                PaletteType.Output(
                    display_name="negative_palette",
                    tooltip="The off-palette colours, weighted by the area each stands for.",
                ),
                io.Float.Output(
                    display_name="off_palette_share",
                    tooltip="Share of the image's pixels (inside the mask) that were off-palette (0 to 1).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        # the schema's ranges say it all (threshold 0.5..100, count 1..16); auto_negative re-checks at run time
        return check_inputs(cls, inputs)

    @classmethod
    def execute(
        cls,
        image: torch.Tensor,
        palette: Palette,
        threshold: float = DEFAULT_THRESHOLD,
        count: int = DEFAULT_COUNT,
        mask: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        if image.shape[0] != 1:
            raise PaletteError(
                f"AutoNegativePalette: a batch of {image.shape[0]} images; give one image (e.g. pick one with "
                "ImageFromBatch)"
            )
        negative, share = auto_negative(image, palette, threshold, count, mask)
        if negative is None:
            raise PaletteError(
                f"AutoNegativePalette: no colour of the image is farther than ΔE {threshold:g} from the palette: "
                "the first pass already keeps to it. Lower the threshold, or leave the negative palette out."
            )
        return io.NodeOutput(negative, share)


NODES = [AutoNegativePalette]
