"""Palette quantisation node: every pixel becomes one of the palette's colours, with dithering (docs/craft.md)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..palette_core.palette import Palette
from ..palette_core.quantize import MAX_PIXEL_SIZE, quantize
from .types import Palette as PaletteType
from .validation import check_inputs

CATEGORY = "palette"
# Widget labels and the palette_core names they stand for.
DITHER = {
    "floyd-steinberg": "floyd-steinberg",
    "atkinson": "atkinson",
    "bayer 2x2": "bayer-2",
    "bayer 4x4": "bayer-4",
    "bayer 8x8": "bayer-8",
    "blue noise": "blue-noise",
    "none": "none",
}
DISTANCE = {"perceptual (CIELAB)": "perceptual", "rgb": "rgb"}


class PaletteQuantize(io.ComfyNode):
    """Quantise an image to a palette's colours, with error-diffusion or ordered dithering."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteQuantize",
            display_name="Palette Quantize",
            category=CATEGORY,
            description="Turns every pixel into one of the palette's colours (colours of weight 0 are left out). "
            "Dithering mixes neighbouring pixels of two or more colours so that, seen from a distance, the "
            "image keeps its shading: error diffusion (Floyd-Steinberg, Atkinson) follows the image most "
            "closely, ordered dithering (Bayer, blue noise) gives a regular, stable pattern. pixel_size above 1 "
            "makes pixel art: the image is averaged onto a coarser grid first and scaled back up.",
            inputs=[
                io.Image.Input("image", tooltip="The image (or batch) to quantise."),
                PaletteType.Input("palette", tooltip="The colours to use; colours of weight 0 are not used."),
                io.Combo.Input(
                    "dither",
                    options=list(DITHER),
                    default="floyd-steinberg",
                    tooltip="floyd-steinberg: error diffusion, closest to the image. atkinson: error diffusion "
                    "that spreads only 3/4 of the error (crisper, flatter highlights and shadows). bayer: ordered "
                    "crosshatch patterns (2x2 coarse to 8x8 fine). blue noise: ordered, grainy but without a "
                    "visible grid. none: the nearest colour, flat areas and bands.",
                ),
                io.Combo.Input(
                    "distance",
                    options=list(DISTANCE),
                    default="perceptual (CIELAB)",
                    tooltip="How 'nearest colour' is measured: perceptual uses CIELAB colour difference (Delta E "
                    "76), which follows what the eye sees; rgb uses plain sRGB values, as most image editors do.",
                ),
                io.Int.Input(
                    "pixel_size",
                    default=1,
                    min=1,
                    max=MAX_PIXEL_SIZE,
                    tooltip="Side of the output's pixels in image pixels: 1 keeps the resolution; 8 averages "
                    "every 8x8 square into one palette pixel (pixel art).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Where to quantise: 1 quantises, 0 keeps the original pixel, values in between blend. "
                    "Must be the image's size.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="image",
                    tooltip="The quantised image, same size: every pixel a palette colour (where the mask is 1).",
                )
            ],
        )

    @classmethod
    def validate_inputs(
        cls, dither: str | None = None, distance: str | None = None, pixel_size: int | None = None, **others
    ) -> bool | str:
        values = {**others, "dither": dither, "distance": distance, "pixel_size": pixel_size}
        # Linked inputs are None here: they are checked when the node runs.
        verdict = True
        if dither is not None and dither not in DITHER:
            verdict = f"dither: {dither!r} is unknown; expected one of {', '.join(DITHER)}"
        elif distance is not None and distance not in DISTANCE:
            verdict = f"distance: {distance!r} is unknown; expected one of {', '.join(DISTANCE)}"
        elif pixel_size is not None and (
            isinstance(pixel_size, bool) or not isinstance(pixel_size, int) or not 1 <= pixel_size <= MAX_PIXEL_SIZE
        ):
            verdict = f"pixel_size: {pixel_size!r} must be a whole number from 1 (off) to {MAX_PIXEL_SIZE}"
        return check_inputs(cls, values, verdict)

    @classmethod
    def execute(
        cls,
        image: torch.Tensor,
        palette: Palette,
        dither: str = "floyd-steinberg",
        distance: str = "perceptual (CIELAB)",
        pixel_size: int = 1,
        mask: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        out = quantize(
            image,
            palette.colors_array,
            palette.weights_array,
            dither=DITHER[dither],
            distance=DISTANCE[distance],
            pixel_size=pixel_size,
            mask=mask,
        )
        return io.NodeOutput(out)


NODES = [PaletteQuantize]
