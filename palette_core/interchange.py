"""A palette as text for other tools and packs (docs/palettes.md, "Palettes as text for other packs").

Every form reads back with :meth:`.palette.Palette.parse` (the ``.gpl`` text with
:func:`.formats.decode`), colours as 8-bit levels. Only the hex list and JSON carry weights.
"""

from __future__ import annotations

import json

import numpy as np

from .errors import PaletteFormatError
from .formats import encode
from .palette import Palette, quote

TEXT_FORMS = ("hex list", "hex lines", "json", "gpl", "rgb tuples", "coolors url")
WEIGHTED_FORMS = ("hex list", "json")


def _levels(palette: Palette) -> list[tuple[int, int, int]]:
    return [(int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)) for h in palette.hex]


def palette_to_text(palette: Palette, form: str = "hex list", name: str = "palette") -> str:
    """``palette`` as text in one of :data:`TEXT_FORMS` (docs/palettes.md); ``name`` is the ``.gpl`` header's."""
    if not isinstance(palette, Palette):
        raise PaletteFormatError(f"expected a Palette, got {type(palette).__name__}")
    if form == "hex list":
        return palette.to_text()
    if form == "hex lines":
        return "\n".join(palette.hex)
    if form == "json":
        if palette.is_uniform:
            return json.dumps(palette.hex)
        # The shortest decimal of each float32 weight, not its float64 expansion (0.4, not 0.4000000059604645).
        items = [{"hex": h, "weight": float(str(w))} for h, w in zip(palette.hex, palette.weights_array)]
        return json.dumps(items)
    if form == "gpl":
        return encode(palette, "gpl", name).decode("utf-8")
    if form == "rgb tuples":
        return "[" + ", ".join(f"({r}, {g}, {b})" for r, g, b in _levels(palette)) + "]"
    if form == "coolors url":
        return "https://coolors.co/" + "-".join(h[1:] for h in palette.hex)
    raise PaletteFormatError(f"unknown text form {quote(str(form))}: expected one of {', '.join(TEXT_FORMS)}")


def weights_kept(palette: Palette, form: str) -> bool:
    """True when ``form`` keeps ``palette``'s weights: they are equal, or it writes them (docs/palettes.md)."""
    return form in WEIGHTED_FORMS or bool(np.allclose(palette.weights_array, palette.weights_array[0]))
