"""Recolour and colourise nodes: palette recolouring with L* kept, the lightness lock, and a histogram preview."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..palette_core.histogram import image_histogram
from ..palette_core.palette import Palette
from ..palette_core.recolor import lightness_lock, recolor
from ..palette_core.render import histogram_bars
from .progress import comfy_progress
from .types import Palette as PaletteType
from .validation import check_inputs

CATEGORY = "palette"
# Widget labels of the matching modes and the palette_core names they stand for.
MATCHING = {"optimal transport": "ot", "by share order": "order"}


class PaletteRecolor(io.ComfyNode):
    """Recolour an image to a palette, keeping its lightness (L*) exactly."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteRecolor",
            display_name="Palette Recolor",
            category=CATEGORY,
            description="Recolours an image to a palette while keeping every pixel's lightness: the image's own "
            "colours are matched to the palette's (optimal transport in Lab with the palette weights) and each "
            "pixel's a*b* moves by a smooth blend of the matched shifts. Colours that would leave the sRGB gamut "
            "lose chroma, never lightness. With a mask only that region is recoloured, from its own colours; chain "
            "several nodes with their own masks and palettes for a palette per region (docs/regions.md).",
            inputs=[
                io.Image.Input("image", tooltip="The image (or batch) to recolour."),
                PaletteType.Input("palette", tooltip="The target palette; its weights say how much of each colour."),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="How far the colours move toward the palette: 0 leaves the image unchanged, 1 is the "
                    "full recolour.",
                ),
                io.Combo.Input(
                    "matching",
                    options=list(MATCHING),
                    default="optimal transport",
                    tooltip="optimal transport: each of the image's colours goes to the palette colours that "
                    "cost least to reach, in proportion to the weights. by share order: the image's most common "
                    "colour goes to the first palette colour, the next to the second, and so on.",
                ),
                io.Boolean.Input(
                    "keep_neutrals",
                    default=False,
                    tooltip="Keep greys, whites and blacks (colours with little chroma) neutral.",
                ),
                io.Int.Input(
                    "source_colors",
                    default=0,
                    min=0,
                    max=64,
                    tooltip="How many colours to extract from the image for the matching (0 = automatic: three "
                    "per palette colour, 12 to 24). Ignored by 'by share order', which extracts one per palette "
                    "colour.",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region: only the colours inside are matched (weighted by the mask) and each "
                    "pixel blends between the original (0) and the recolour (1); pixels outside stay exactly as "
                    "they are. Same aspect ratio as the image; one mask for the batch or one per image.",
                ),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The recoloured image, same size and L*.")],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(
        cls,
        image: torch.Tensor,
        palette: Palette,
        strength: float = 1.0,
        matching: str = "optimal transport",
        keep_neutrals: bool = False,
        source_colors: int = 0,
        mask: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        out = recolor(
            image,
            palette.colors,
            palette.weights,
            strength,
            match=MATCHING[matching],
            keep_neutrals=keep_neutrals,
            source_size=source_colors or None,
            mask=mask,
            progress=comfy_progress(),
        )
        return io.NodeOutput(out)


class LuminanceLock(io.ComfyNode):
    """Keep the lightness of one image and the colour (a*b*) of another."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminanceLock",
            display_name="Luminance Lock",
            category=CATEGORY,
            description="Combines the colour (CIELAB a*b*) of 'image' with the lightness (L*) of "
            "'lightness_source', pixel for pixel: colourise a grey photo with a generated image without losing "
            "its detail. 'image' is resized to the source's size first. A batch of one is used for every image "
            "of the other input. With a mask only that region takes the colour; the rest stays the source's "
            "(docs/regions.md).",
            inputs=[
                io.Image.Input("image", tooltip="Where the colour comes from, e.g. the decoded generation."),
                io.Image.Input(
                    "lightness_source", tooltip="Where the lightness comes from, e.g. the original grey image."
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region on the lightness source: pixels blend between the source (0) and the "
                    "locked colour (1); pixels outside stay exactly the source's. Same aspect ratio as the source; "
                    "one mask for the batch or one per image.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="image",
                    tooltip="The source's size and lightness with the image's colour (chroma reduced where the "
                    "colour cannot be shown at that lightness).",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(
        cls, image: torch.Tensor, lightness_source: torch.Tensor, mask: torch.Tensor | None = None
    ) -> io.NodeOutput:
        return io.NodeOutput(lightness_lock(image, lightness_source, mask=mask, progress=comfy_progress()))


class HistogramPreview(io.ComfyNode):
    """Show an image's colour histogram as colour bars."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HistogramPreview",
            display_name="Histogram Preview",
            category=CATEGORY,
            description="Shows the heaviest bins of an image's 4080-bin HSV colour histogram (the one the "
            "Palette-Adapter is conditioned on) as stripes of their colours, widths following their pixel share, "
            "on the node itself after a run (the image output is for wiring).",
            is_output_node=True,  # a preview: it runs and shows its bars even with nothing connected after it
            inputs=[
                io.Image.Input("image", tooltip="The image (or batch); one preview per image."),
                io.Int.Input(
                    "bins",
                    default=32,
                    min=1,
                    max=256,
                    tooltip="How many of the heaviest histogram bins to show (1 to 256).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="preview", tooltip="A 64x512 image of colour bars per image (also shown on the node)."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(cls, image: torch.Tensor, bins: int = 32) -> io.NodeOutput:
        hist = image_histogram(image.reshape(-1, *image.shape[-3:]))
        bars = torch.stack([histogram_bars(h, top=bins, height=64, width=512) for h in hist])
        return io.NodeOutput(bars, ui=ui.PreviewImage(bars, cls=cls))


NODES = [PaletteRecolor, LuminanceLock, HistogramPreview]
