"""Palettes as text for other packs and prompts: Palette To Text and Palette Color Names (docs/palettes.md)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..palette_core.color_names import name_palette, xkcd_names
from ..palette_core.interchange import TEXT_FORMS, palette_to_text, weights_kept
from ..palette_core.palette import Palette
from .types import Palette as PaletteType
from .validation import check_inputs

log = logging.getLogger(__name__)

CATEGORY = "palette"
NAME_STYLES = ("names", "names with shares", "names with hex")
NAME_ORDERS = ("palette order", "heaviest first")


def _choice(what: str, value: object, options: tuple[str, ...]) -> bool | str:
    """True when ``value`` is one of ``options`` (or None: a linked input, checked when the node runs)."""
    if value is None or value in options:
        return True
    return f"{what}: {value!r} is unknown; expected one of {', '.join(options)}"


def _share(weight: float) -> str:
    """A weight as a whole percentage; below 1 % as "<1%" rather than a misleading "0%"."""
    return "<1%" if 0 < weight < 0.005 else f"{round(weight * 100)}%"


class PaletteToText(io.ComfyNode):
    """A PALETTE as text: the pack's hex list, JSON, GIMP .gpl, hex lines, RGB tuples or a Coolors URL."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteToText",
            display_name="Palette To Text",
            category=CATEGORY,
            description="Writes a palette as text for other nodes, packs and tools: the pack's hex list "
            "('#e63946:2, #f1faee', weights only when unequal), JSON, a GIMP .gpl palette, hex lines, Python-style "
            "RGB tuples or a Coolors URL. Every form reads back in the Palette node; only the hex list and JSON "
            "keep the weights.",
            inputs=[
                PaletteType.Input("palette", tooltip="The palette to write (from Palette, Palette From Image, ...)."),
                io.Combo.Input(
                    "format",
                    options=list(TEXT_FORMS),
                    default="hex list",
                    tooltip="hex list: '#e63946:2, #f1faee' (the Palette node's own text, with weights). json: "
                    '[{"hex": ..., "weight": ...}] (a list of hex strings when the weights are equal). gpl: a GIMP '
                    "palette file's text. hex lines: one #rrggbb per line. rgb tuples: [(230, 57, 70), ...], 0-255. "
                    "coolors url: https://coolors.co/e63946-f1faee.",
                ),
                io.String.Input(
                    "name",
                    default="palette",
                    tooltip="The palette's name in the .gpl header (the other formats have no name).",
                ),
            ],
            outputs=[
                io.String.Output(
                    display_name="text",
                    tooltip="The palette as text; connect it to a text input, or to Preview Any to read it.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, format: str | None = None, **others) -> bool | str:
        return check_inputs(cls, {**others, "format": format}, _choice("format", format, TEXT_FORMS))

    @classmethod
    def execute(cls, palette: Palette, format: str = "hex list", name: str = "palette") -> io.NodeOutput:
        text = palette_to_text(palette, format, name or "palette")
        if not weights_kept(palette, format):
            log.info("Palette To Text: %s holds no weights; the palette's unequal weights are left out", format)
        return io.NodeOutput(text, ui={"text": (text,)})


class PaletteColorNames(io.ComfyNode):
    """Name a palette's colours in words ("pinkish red, off white, marine") for text-driven models."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PaletteColorNames",
            display_name="Palette Color Names",
            category=CATEGORY,
            description="Names each palette colour in words for prompts (text encoders read 'pinkish red, off "
            "white, marine', not hex codes): the nearest of the XKCD colour survey's names (CC0, about 920 "
            "names) by CIEDE2000. Colours that get the same name are named once.",
            inputs=[
                PaletteType.Input("palette", tooltip="The palette to name."),
                io.Combo.Input(
                    "style",
                    options=list(NAME_STYLES),
                    default="names",
                    tooltip="names: 'pinkish red, off white'. names with shares: 'pinkish red (40%), off white "
                    "(20%)' from the weights. names with hex: 'pinkish red (#e63946), ...' (the palette's colour).",
                ),
                io.Combo.Input(
                    "order",
                    options=list(NAME_ORDERS),
                    default="palette order",
                    tooltip="palette order: as the palette lists its colours. heaviest first: by weight, largest "
                    "first (prompts weigh earlier words more).",
                ),
            ],
            outputs=[
                io.String.Output(
                    display_name="names",
                    tooltip="The names separated by ', ', ready to join into a prompt.",
                ),
                io.String.Output(
                    display_name="details",
                    tooltip="One line per name: the palette colour, its share, the name and the name's own "
                    "colour with their CIEDE2000 difference (usually under 6; rarely over 10).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, style: str | None = None, order: str | None = None, **others) -> bool | str:
        values = {**others, "style": style, "order": order}
        return check_inputs(cls, values, _choice("style", style, NAME_STYLES), _choice("order", order, NAME_ORDERS))

    @classmethod
    def execute(cls, palette: Palette, style: str = "names", order: str = "palette order") -> io.NodeOutput:
        named = name_palette(palette.colors_array, palette.weights_array, xkcd_names())
        if order == "heaviest first":
            named = sorted(named, key=lambda n: -n.weight)  # stable: equal weights keep palette order
        if style == "names with shares":
            words = [f"{n.name} ({_share(n.weight)})" for n in named]
        elif style == "names with hex":
            words = [f"{n.name} ({n.hex})" for n in named]
        else:
            words = [n.name for n in named]
        names = ", ".join(words)
        details = "\n".join(
            f"{n.hex} {_share(n.weight):>4}  {n.name} ({n.name_hex}, ΔE {n.delta_e:.1f})" for n in named
        )
        return io.NodeOutput(names, details, ui={"text": (names,)})


NODES = [PaletteToText, PaletteColorNames]
