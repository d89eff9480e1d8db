"""Palette craft nodes: a palette from one colour (harmony schemes in OKLCH), palette edits, and merging."""

from __future__ import annotations

from comfy_api.latest import io

from ..palette_core.errors import PaletteError
from ..palette_core.palette import MAX_COLORS, Palette
from ..palette_core.schemes import (
    EDIT_OPERATIONS,
    MAX_SCHEME_COLORS,
    SCHEMES,
    check_count,
    check_fraction,
    check_scheme,
    edit_palette,
    merge_palettes,
    palette_from_color,
    parse_base_color,
)
from .palette_nodes import preview
from .types import Palette as PaletteType
from .validation import check_inputs

CATEGORY = "palette"
SPREAD_MEANING = "the range of OKLab lightness across a hue's variants, or how far tints and shades go"
AMOUNT_MEANING = "0 leaves the palette as it is"
BALANCE_MEANING = "the share of the total weight that palette_a gets"


def _verdict(*checks) -> bool | str:
    """True when every ``(check, *args)`` passes, else the first PaletteError's message (for validate_inputs)."""
    try:
        for check, *args in checks:
            check(*args)
    except PaletteError as e:
        return str(e)
    return True


class PaletteFromColor(io.ComfyNode):
    """A palette built from one base colour and a colour-harmony scheme."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteFromColor",
            display_name="Palette From Color",
            category=CATEGORY,
            description="Builds a palette from one colour: the scheme's hues (complementary, triadic, ...) on the "
            "OKLCH hue circle at the base colour's lightness and chroma, then lighter and darker steps when more "
            "colours are asked for; tints and shades mix the base toward white or black. Colours sRGB cannot show "
            "lose chroma (CSS Color 4 gamut mapping). Equal weights.",
            inputs=[
                io.String.Input(
                    "color",
                    default="#e63946",
                    tooltip="The base colour: #RGB, #RRGGBB or RRGGBB. It is the palette's first colour.",
                ),
                io.Combo.Input(
                    "scheme",
                    options=list(SCHEMES),
                    default="complementary",
                    tooltip="complementary: +180°. analogous: ±30°, ±60°. triadic: +120°, +240°. "
                    "split_complementary: +150°, +210°. tetradic: +90°, +180°, +270°. monochromatic: the base hue "
                    "at several lightnesses. tints / shades: the base mixed toward white / black.",
                ),
                io.Int.Input(
                    "count",
                    default=5,
                    min=1,
                    max=MAX_SCHEME_COLORS,
                    tooltip=f"How many colours (1 to {MAX_SCHEME_COLORS}). Beyond the scheme's hues, each hue gets "
                    "lighter and darker steps; fewer keeps the scheme's first hues.",
                ),
                io.Float.Input(
                    "lightness_spread",
                    default=0.3,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="How far the lightness steps spread (OKLab L, 0 to 1): the range of lightness across a "
                    "hue's steps; for tints and shades, how far toward white or black the last colour goes.",
                ),
            ],
            outputs=[
                PaletteType.Output(display_name="palette", tooltip="The scheme's colours with equal weights."),
                io.Image.Output(display_name="preview", tooltip="The palette as stripes of equal width."),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        color: str | None = None,
        scheme: str | None = None,
        count: int | None = None,
        lightness_spread: float | None = None,
        **others,
    ) -> bool | str:
        values = {**others, "color": color, "scheme": scheme, "count": count, "lightness_spread": lightness_spread}
        # A linked input is None here: it is checked when the node runs.
        checks = []
        if color is not None:
            checks.append((parse_base_color, color))
        if scheme is not None:
            checks.append((check_scheme, scheme))
        if count is not None:
            checks.append((check_count, "count", count, MAX_SCHEME_COLORS))
        if lightness_spread is not None:
            checks.append((check_fraction, "lightness_spread", lightness_spread, SPREAD_MEANING))
        return check_inputs(cls, values, _verdict(*checks))

    @classmethod
    def execute(cls, color: str, scheme: str, count: int, lightness_spread: float) -> io.NodeOutput:
        p = palette_from_color(color, scheme, count, lightness_spread)
        return io.NodeOutput(p, preview(p))


class PaletteEdit(io.ComfyNode):
    """Sort, lighten, darken, saturate or desaturate a palette, or keep its heaviest colours."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteEdit",
            display_name="Palette Edit",
            category=CATEGORY,
            description="Edits a palette: sort it (by OKLCH hue, greys last; by lightness, dark first; by weight, "
            "heaviest first), lighten or darken it (OKLab lightness +/- amount), saturate or desaturate it (chroma "
            "times 1 +/- amount), or keep its n heaviest colours. Lightness and chroma edits keep hue and weights; "
            "colours sRGB cannot show lose chroma (CSS Color 4 gamut mapping).",
            inputs=[
                PaletteType.Input("palette", tooltip="The palette to edit (from Palette, Palette From Image, ...)."),
                io.Combo.Input(
                    "operation",
                    options=list(EDIT_OPERATIONS),
                    default="sort_hue",
                    tooltip="sort_hue, sort_lightness, sort_weight: reorder (colours and weights unchanged). "
                    "lighten, darken, saturate, desaturate: use amount. keep_heaviest: uses n.",
                ),
                io.Float.Input(
                    "amount",
                    default=0.1,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="lighten / darken: OKLab lightness added or taken away (0 to 1; white is 1). "
                    "saturate / desaturate: chroma times 1 + amount or 1 - amount (desaturate 1 gives greys).",
                ),
                io.Int.Input(
                    "n",
                    default=5,
                    min=1,
                    max=MAX_COLORS,
                    tooltip=f"keep_heaviest: how many colours to keep (1 to {MAX_COLORS}), in their original order, "
                    "weights renormalised.",
                ),
            ],
            outputs=[
                PaletteType.Output(display_name="palette", tooltip="The edited palette (weights sum to 1)."),
                io.Image.Output(display_name="preview", tooltip="Stripes whose widths follow the weights."),
            ],
        )

    @classmethod
    def validate_inputs(
        cls, operation: str | None = None, amount: float | None = None, n: int | None = None, **others
    ) -> bool | str:
        values = {**others, "operation": operation, "amount": amount, "n": n}
        # A linked input is None here: it is checked when the node runs.
        if operation is not None and operation not in EDIT_OPERATIONS:
            return check_inputs(cls, values, f"operation: {operation!r} is not one of {', '.join(EDIT_OPERATIONS)}")
        checks = []
        if amount is not None:
            checks.append((check_fraction, "amount", amount, AMOUNT_MEANING))
        if n is not None:
            checks.append((check_count, "n", n, MAX_COLORS))
        return check_inputs(cls, values, _verdict(*checks))

    @classmethod
    def execute(cls, palette: Palette, operation: str, amount: float = 0.1, n: int = 5) -> io.NodeOutput:
        p = edit_palette(palette, operation, amount, n)
        return io.NodeOutput(p, preview(p))


class PaletteMerge(io.ComfyNode):
    """Merge two palettes into one, weights renormalised and duplicate colours merged."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteMerge",
            display_name="Palette Merge",
            category=CATEGORY,
            description="Merges two palettes: palette_a's colours, then palette_b's, with palette_a's weights "
            "scaled by balance and palette_b's by 1 - balance. A colour that appears twice (same hex) becomes one "
            "entry with the weights summed.",
            inputs=[
                PaletteType.Input("palette_a", tooltip="The first palette; its colours come first."),
                PaletteType.Input("palette_b", tooltip="The second palette; its new colours follow palette_a's."),
                io.Float.Input(
                    "balance",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="The share of the total weight palette_a gets (0.5: both count equally, whatever "
                    "their sizes; 1: palette_b's colours get weight 0).",
                ),
            ],
            outputs=[
                PaletteType.Output(display_name="palette", tooltip="The merged palette (at most 256 colours)."),
                io.Image.Output(display_name="preview", tooltip="Stripes whose widths follow the weights."),
            ],
        )

    @classmethod
    def validate_inputs(cls, balance: float | None = None, **others) -> bool | str:
        # A linked input is None here: it is checked when the node runs.
        verdict = True if balance is None else _verdict((check_fraction, "balance", balance, BALANCE_MEANING))
        return check_inputs(cls, {**others, "balance": balance}, verdict)

    @classmethod
    def execute(cls, palette_a: Palette, palette_b: Palette, balance: float = 0.5) -> io.NodeOutput:
        p = merge_palettes(palette_a, palette_b, balance)
        return io.NodeOutput(p, preview(p))


NODES = [PaletteFromColor, PaletteEdit, PaletteMerge]
