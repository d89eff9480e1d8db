"""Palette entry and preview nodes."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..palette_core.errors import PaletteError
from ..palette_core.extract import extract_palette
from ..palette_core.masks import fit_mask
from ..palette_core.palette import Palette
from ..palette_core.render import palette_stripes
from .types import Palette as PaletteType
from .validation import check_inputs

CATEGORY = "palette"
PLACEHOLDER = "#e63946:2, #f1faee, #a8dadc, #457b9d, #1d3557"


def preview(palette: Palette):
    """A 1x64x512 IMAGE of the palette's stripes (widths follow the weights)."""
    return palette_stripes(palette.colors, palette.weights, height=64, width=512).unsqueeze(0)


class PaletteInput(io.ComfyNode):
    """Type a palette (hex colours with optional weights) and get a PALETTE plus a swatch preview."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteInput",
            display_name="Palette",
            category=CATEGORY,
            description="A colour palette typed as hex colours with optional weights, e.g. "
            "'#e63946:2, #f1faee, #1d3557' (weights are relative). Also accepts a JSON list or a Coolors URL. "
            "After a run its stripes show on the node.",
            inputs=[
                io.String.Input(
                    "palette",
                    default=PLACEHOLDER,
                    multiline=True,
                    tooltip="Colours separated by commas, spaces or new lines: #RGB, #RRGGBB or RRGGBB, each "
                    "optionally followed by :weight. 1 to 256 colours.",
                ),
            ],
            outputs=[
                PaletteType.Output(display_name="palette", tooltip="The palette (colours and normalised weights)."),
                io.Image.Output(
                    display_name="preview",
                    tooltip="The palette as stripes whose widths follow the weights (also shown on the node).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, palette: str | None = None, **others) -> bool | str:
        # A linked input (text from another node) is None here: execute parses it when it arrives.
        verdict = True
        try:
            if palette is not None:
                Palette.parse(palette)
        except PaletteError as e:
            verdict = str(e)
        return check_inputs(cls, {**others, "palette": palette}, verdict)

    @classmethod
    def execute(cls, palette: str) -> io.NodeOutput:
        p = Palette.parse(palette)
        image = preview(p)
        return io.NodeOutput(p, image, ui=ui.PreviewImage(image, cls=cls))


class PalettePreview(io.ComfyNode):
    """Show a PALETTE as an image of swatches."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PalettePreview",
            display_name="Palette Preview",
            category=CATEGORY,
            description="Shows a palette on the node as stripes whose widths follow its weights (the image output "
            "is for wiring, e.g. to Save Image).",
            is_output_node=True,  # a preview: it runs and shows its stripes even with nothing connected after it
            inputs=[PaletteType.Input("palette", tooltip="The palette to show (from Palette or Palette From Image).")],
            outputs=[io.Image.Output(display_name="image", tooltip="A 64x512 image of the palette's stripes.")],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(cls, palette: Palette) -> io.NodeOutput:
        image = preview(palette)
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


class PaletteFromImage(io.ComfyNode):
    """Extract a palette from a reference image (k-means or median cut, as the paper does)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteFromImage",
            display_name="Palette From Image",
            category=CATEGORY,
            description="Extracts the main colours of an image (the first of a batch), weighted by their pixel "
            "share. The paper evaluates with 5-colour k-means palettes and trains with median-cut palettes. With a "
            "mask, the palette of that region only, each pixel weighted by the mask (docs/regions.md). After a run "
            "the palette's stripes show on the node.",
            inputs=[
                io.Image.Input("image", tooltip="The reference image (only the first image of a batch is used)."),
                io.Int.Input(
                    "size",
                    default=5,
                    min=1,
                    max=32,
                    tooltip="How many colours to extract (1 to 32, default 5; the paper evaluates with 5).",
                ),
                io.Combo.Input(
                    "method",
                    options=["kmeans", "median_cut"],
                    default="kmeans",
                    tooltip="kmeans: compact, representative colours (the paper's evaluation palettes). "
                    "median_cut: splits the colour space by pixel counts (the paper's training palettes).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Optional region: only the pixels inside count, each weighted by the mask (soft edges "
                    "count partly). Same aspect ratio as the image; one mask, or one per image (the first is used).",
                ),
            ],
            outputs=[
                PaletteType.Output(
                    display_name="palette", tooltip="The extracted colours, weighted by their share of the pixels."
                ),
                io.Image.Output(
                    display_name="preview", tooltip="Stripes whose widths follow the weights (also shown on the node)."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_inputs(cls, inputs)

    @classmethod
    def execute(cls, image, size: int, method: str, mask=None) -> io.NodeOutput:
        if mask is not None:  # one mask for the batch or one per image; the first image's is used
            if mask.ndim > 2 and mask.shape[0] not in (1, image.shape[0]):
                fit_mask(mask, image.shape[1], image.shape[2], image.shape[0])  # raises the mask rule's batch error
            mask = mask[:1] if mask.ndim > 2 else mask
        p = extract_palette(image[:1], size=size, method=method, mask=mask)
        stripes = preview(p)
        return io.NodeOutput(p, stripes, ui=ui.PreviewImage(stripes, cls=cls))


NODES = [PaletteInput, PalettePreview, PaletteFromImage]
