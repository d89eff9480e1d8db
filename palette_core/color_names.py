"""Colour names for prompts: each colour's nearest name in the XKCD colour survey list, by CIEDE2000.

Text-driven models read "deep red, ivory, powder blue" where they ignore ``#e63946``. The names are the
949 of Randall Munroe's XKCD colour survey (CC0; ``data/xkcd_colors.txt``, source and licence in
``data/README.md``), less the few unsuited to a prompt (:data:`EXCLUDED_WORDS`). A colour gets the name
whose survey colour is nearest in CIEDE2000 (Sharma, Wu & Dalal 2005), computed in float64 on the
colours' device; ties go to the name listed first. See docs/palettes.md, "Colour names for prompts".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._backend import NUMPY, is_tensor, namespace
from ._checks import as_numpy, check_rgb, check_weights
from .color import ciede2000, srgb_to_lab
from .errors import InputShapeError, PaletteError, PaletteFormatError
from .palette import parse_hex, to_hex

if TYPE_CHECKING:
    from torch import Tensor

    Array = Tensor | np.ndarray

DATA_FILE = Path(__file__).resolve().parent / "data" / "xkcd_colors.txt"
# Whole words that make a name unfit for a prompt (the survey kept what people typed).
EXCLUDED_WORDS = frozenset({"puke", "vomit", "barf", "poo", "poop", "shit", "piss", "snot", "booger", "diarrhea"})
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True, eq=False)
class NameTable:
    """A list of colour names: ``names`` (M), their sRGB colours ``rgb [M, 3]`` and CIELAB ``lab [M, 3]`` (float64)."""

    names: tuple[str, ...]
    rgb: np.ndarray
    lab: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class NamedColor:
    """A palette colour, its nearest name, that name's colour and their CIEDE2000 difference, and its weight."""

    hex: str
    name: str
    name_hex: str
    delta_e: float
    weight: float


def read_name_list(text: str, source: str = "<names>") -> list[tuple[str, str]]:
    """``name<TAB>#rrggbb`` lines (``#`` comment lines skipped) to ``(name, hex)`` pairs (docs/palettes.md)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, hex_code = line.rpartition("\t")
        if not sep or not name.strip():
            raise PaletteFormatError(f"{source}, line {number}: expected name<TAB>#rrggbb, got {line[:60]!r}")
        parse_hex(hex_code)
        rows.append((name.strip(), hex_code.strip().lower()))
    if not rows:
        raise PaletteFormatError(f"{source}: no names found; expected name<TAB>#rrggbb lines")
    return rows


def is_excluded(name: str) -> bool:
    """True when ``name`` has a whole word of :data:`EXCLUDED_WORDS` ("poo", not "pool"; docs/palettes.md)."""
    return not EXCLUDED_WORDS.isdisjoint(_WORD.findall(name.lower()))


def name_table(pairs: list[tuple[str, str]]) -> NameTable:
    """A :class:`NameTable` from ``(name, hex)`` pairs, with their CIELAB (D65) for CIEDE2000 (docs/palettes.md)."""
    if not pairs:
        raise InputShapeError("name_table: no names; give at least one (name, hex) pair")
    rgb = np.array([parse_hex(h) for _, h in pairs], dtype=np.float64) / 255.0
    return NameTable(tuple(n for n, _ in pairs), rgb, srgb_to_lab(rgb))


@functools.lru_cache(maxsize=2)
def xkcd_names(include_all: bool = False) -> NameTable:
    """The XKCD survey's names, less :data:`EXCLUDED_WORDS` unless ``include_all`` (docs/palettes.md)."""
    try:
        text = DATA_FILE.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PaletteError(
            f"the colour-name list {DATA_FILE} is missing: it ships in palette_core/data/ of the pack's checkout"
        ) from None
    pairs = read_name_list(text, DATA_FILE.name)
    return name_table([p for p in pairs if include_all or not is_excluded(p[0])])


def nearest_names(colors: Array, table: NameTable | None = None) -> tuple[Array, Array]:
    """Index of the nearest name and its CIEDE2000 ΔE for sRGB ``colors [..., 3]`` (Sharma 2005; docs/palettes.md).

    Returns two arrays of shape ``[...]`` of the colours' kind (int64 indices into ``table.names``, float64
    ΔE) on their device; ``table`` defaults to :func:`xkcd_names`. Ties go to the name listed first.
    """
    table = xkcd_names() if table is None else table
    rgb = check_rgb(colors, "colors", numpy=not is_tensor(colors))
    xp = namespace(rgb)
    if xp is NUMPY:
        lab_names = table.lab
    else:
        lab_names = xp.from_numpy(table.lab).to(rgb.device)
    lab = srgb_to_lab(xp.astype(rgb, xp.float64))
    d = ciede2000(lab[..., None, :], lab_names)  # [..., M]: a palette is small, M is under a thousand
    if xp is NUMPY:
        idx = np.argmin(d, axis=-1)
        return idx, np.take_along_axis(d, idx[..., None], axis=-1)[..., 0]
    best, idx = d.min(dim=-1)
    return idx, best


def name_palette(
    colors: Array, weights: Array | None = None, table: NameTable | None = None, merge: bool = True
) -> list[NamedColor]:
    """Each palette colour ``[N, 3]`` with its nearest name, in palette order (docs/palettes.md).

    With ``merge``, colours that get the same name become one entry at the first one's place: its weight is
    their summed weight and its ``hex`` and ``delta_e`` those of the closest of them.
    """
    table = xkcd_names() if table is None else table
    c = as_numpy(check_rgb(colors, "colors", numpy=True), "colors")
    if c.ndim != 2 or c.shape[0] == 0:
        raise InputShapeError(f"colors: shape {tuple(c.shape)}; expected [N, 3] with N >= 1")
    w = check_weights(None if weights is None else as_numpy(weights, "weights"), c[None].astype(np.float64))[0]
    idx, d = nearest_names(c.astype(np.float64), table)
    out: list[NamedColor] = []
    seen: dict[int, int] = {}
    for k, (i, de) in enumerate(zip(idx.tolist(), d.tolist())):
        entry = NamedColor(to_hex(c[k]), table.names[i], to_hex(table.rgb[i]), float(de), float(w[k]))
        if merge and i in seen:
            j = seen[i]
            kept = out[j] if out[j].delta_e <= entry.delta_e else entry
            out[j] = NamedColor(kept.hex, kept.name, kept.name_hex, kept.delta_e, out[j].weight + entry.weight)
            continue
        seen[i] = len(out)
        out.append(entry)
    return out
