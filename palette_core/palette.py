"""The Palette value and its text form (SPEC §3, §5).

A palette is sRGB colours ``[N, 3]`` in [0, 1] with weights ``[N]`` (non-negative, summing to 1, equal
by default), 1 to 256 colours. The text form is what widgets, workflow JSON and API prompts carry:
colours separated by commas, whitespace or newlines, each ``#RGB``, ``#RRGGBB`` or ``RRGGBB`` with an
optional ``:weight`` (relative, normalised), e.g. ``#e63946:2, #f1faee, #1d3557:0.5``; a JSON list of
hex strings or of ``{"hex": ..., "weight": ...}`` objects; or a Coolors URL
(``https://coolors.co/264653-2a9d8f-e9c46a``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_colors, check_weights
from .errors import InputShapeError, PaletteFormatError

MAX_COLORS = 256
MAX_TEXT_CHARS = 1_000_000  # a 256-colour palette with weights is under 10 kB; refuse anything absurd

_HEX_RE = re.compile(r"#?(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
_COOLORS_RE = re.compile(r"^(?:https?://)?(?:www\.)?coolors\.co/(?:palette/)?([0-9a-fA-F-]+)/?(?:[?#].*)?$")
_SEPARATORS = re.compile(r"[\s,;]+")
EXPECTED_COLOUR = "expected #RGB, #RRGGBB or RRGGBB"


def parse_hex(token: str) -> tuple[int, int, int]:
    """One hex colour token to 8-bit ``(r, g, b)`` (SPEC §5); ``#RGB`` doubles each digit."""
    t = token.strip()
    if not _HEX_RE.fullmatch(t) or (len(t) == 3 and not t.startswith("#")):
        raise PaletteFormatError(f'"{token}" is not a colour: {EXPECTED_COLOUR}')
    digits = t.lstrip("#")
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def to_hex(rgb: Sequence[float]) -> str:
    """sRGB floats in [0, 1] to ``#rrggbb`` (rounded to the nearest 8-bit level)."""
    levels = [min(255, max(0, round(float(c) * 255.0))) for c in rgb]
    return "#{:02x}{:02x}{:02x}".format(*levels)


def _parse_weight(text: str, token: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise PaletteFormatError(
            f'"{token}": weight "{text}" is not a number: expected colour:weight, e.g. #e63946:2'
        ) from None
    if not math.isfinite(w) or w < 0:
        raise PaletteFormatError(f'"{token}": weight {text} must be finite and >= 0')
    return w


def _format_weight(w: float) -> str:
    return str(int(w)) if w == int(w) and abs(w) < 1e15 else repr(w)


@dataclass(frozen=True, eq=False)
class Palette:
    """Colours ``[N, 3]`` (sRGB float32 in [0, 1]) and weights ``[N]`` summing to 1 (SPEC §3)."""

    colors: Tensor
    weights: Tensor

    def __post_init__(self) -> None:
        if self.colors.ndim != 2 or self.weights.shape != self.colors.shape[:1]:
            raise InputShapeError(
                f"Palette: colours {tuple(self.colors.shape)} and weights {tuple(self.weights.shape)} do not match; "
                "use Palette.from_colors"
            )

    @classmethod
    def from_colors(cls, colors: Tensor | np.ndarray | Sequence, weights: Tensor | np.ndarray | Sequence | None = None):
        """Validate ``colors [N, 3]`` (floats in [0, 1]) and relative ``weights [N]`` into a Palette."""
        c, batched = check_colors(colors)
        if batched:
            raise InputShapeError(f"colors: shape {tuple(c.shape)}; a Palette holds one palette [N, 3]")
        n = c.shape[1]
        if n > MAX_COLORS:
            raise InputShapeError(f"colors: {n} colours; a palette holds 1 to {MAX_COLORS}")
        if weights is not None and not isinstance(weights, (Tensor, np.ndarray)):
            weights = torch.tensor(list(weights), dtype=torch.float64)
        w = check_weights(weights, c.double())
        return cls(c[0].float().contiguous(), w[0].float().contiguous())

    @classmethod
    def from_hex(cls, hexes: Sequence[str], weights: Sequence[float] | None = None) -> Palette:
        """Palette from hex strings (and optional relative weights)."""
        if not hexes:
            raise PaletteFormatError(f"no colours given: a palette holds 1 to {MAX_COLORS} colours")
        if len(hexes) > MAX_COLORS:
            raise PaletteFormatError(f"{len(hexes)} colours: a palette holds 1 to {MAX_COLORS}")
        rgb = torch.tensor([parse_hex(h) for h in hexes], dtype=torch.float32) / 255.0
        if weights is not None and not sum(weights) > 0:
            raise PaletteFormatError("the weights sum to 0: at least one colour needs a positive weight")
        return cls.from_colors(rgb, weights)

    @classmethod
    def parse(cls, text: str) -> Palette:
        """Parse the SPEC §5 text form (hex list with optional weights, JSON list, or Coolors URL)."""
        if not isinstance(text, str):
            raise PaletteFormatError(f"palette text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise PaletteFormatError(f"palette text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        s = text.strip()
        if not s:
            raise PaletteFormatError("the palette is empty: enter colours such as #e63946, #f1faee, #1d3557")
        if s.startswith("["):
            return cls._parse_json(s)
        coolors = _COOLORS_RE.match(s)
        if coolors:
            return cls.from_hex([t for t in coolors.group(1).split("-") if t])
        hexes: list[str] = []
        weights: list[float] = []
        for token in _SEPARATORS.split(s):
            if not token:
                continue
            colour, sep, weight = token.partition(":")
            if sep and not weight:
                raise PaletteFormatError(f'"{token}": missing weight after ":": expected colour:weight, e.g. #e63946:2')
            parse_hex(colour)
            hexes.append(colour)
            weights.append(_parse_weight(weight, token) if sep else 1.0)
            if len(hexes) > MAX_COLORS:
                raise PaletteFormatError(f"more than {MAX_COLORS} colours: a palette holds 1 to {MAX_COLORS}")
        return cls.from_hex(hexes, weights)

    @classmethod
    def _parse_json(cls, s: str) -> Palette:
        try:
            items = json.loads(s)
        except json.JSONDecodeError as e:
            raise PaletteFormatError(f"invalid JSON palette at character {e.pos}: {e.msg}") from None
        if not isinstance(items, list):
            raise PaletteFormatError("a JSON palette must be a list of hex strings or {hex, weight} objects")
        hexes, weights = [], []
        for i, item in enumerate(items):
            if isinstance(item, str):
                hexes.append(item)
                weights.append(1.0)
            elif isinstance(item, dict) and isinstance(item.get("hex"), str):
                hexes.append(item["hex"])
                w = item.get("weight", 1.0)
                if isinstance(w, bool) or not isinstance(w, (int, float)):
                    raise PaletteFormatError(f"JSON palette item {i}: weight {w!r} is not a number")
                weights.append(_parse_weight(repr(float(w)), json.dumps(item)))
            else:
                expected = 'expected a hex string or {"hex": ..., "weight": ...}'
                raise PaletteFormatError(f"JSON palette item {i} ({json.dumps(item)[:40]}): {expected}")
        return cls.from_hex(hexes, weights)

    def __len__(self) -> int:
        return int(self.colors.shape[0])

    @property
    def hex(self) -> list[str]:
        """The colours as ``#rrggbb`` strings."""
        return [to_hex(c) for c in self.colors.tolist()]

    @property
    def is_uniform(self) -> bool:
        """True when every colour has the same weight."""
        return bool(torch.allclose(self.weights, torch.full_like(self.weights, 1.0 / len(self)), rtol=1e-6, atol=0))

    def to_text(self) -> str:
        """The SPEC §5 text form; weights are written relative to the smallest positive one, only if unequal."""
        if self.is_uniform:
            return ", ".join(self.hex)
        w = self.weights.double()
        base = float(w[w > 0].min())
        parts = []
        for h, wi in zip(self.hex, w.tolist()):
            r = wi / base
            parts.append(h if r == 1.0 else f"{h}:{_format_weight(r)}")
        return ", ".join(parts)

    def to_json(self) -> list[dict]:
        """A JSON-able list of ``{"hex", "weight"}`` (weights normalised)."""
        return [{"hex": h, "weight": float(w)} for h, w in zip(self.hex, self.weights.tolist())]

    def equals(self, other: Palette, atol: float = 1e-6) -> bool:
        """Same colours (to 8-bit hex) in the same order with weights within ``atol``."""
        return (
            isinstance(other, Palette)
            and self.hex == other.hex
            and bool(torch.allclose(self.weights, other.weights, rtol=0, atol=atol))
        )

    def histogram(self) -> Tensor:
        """The palette's 4080-bin HSV histogram (paper §3.1)."""
        from .histogram import palette_histogram

        return palette_histogram(self.colors, self.weights)

    def __repr__(self) -> str:
        return f"Palette({self.to_text()!r})"
