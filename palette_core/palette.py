"""The Palette value and its text form (docs/design.md §3, §5).

A palette is sRGB colours ``[N, 3]`` in [0, 1] with weights ``[N]`` (non-negative, summing to 1, equal
by default), 1 to 16384 colours (:data:`MAX_FILE_COLORS`; palette files reach it) and 1 to 256 as text
(:data:`MAX_COLORS`). The text form is what widgets, workflow JSON and API prompts carry:
colours separated by commas, whitespace or newlines, each ``#RGB``, ``#RRGGBB`` or ``RRGGBB`` with an
optional ``:weight`` (relative, normalised), e.g. ``#e63946:2, #f1faee, #1d3557:0.5``; a JSON list of
hex strings, of ``{"hex": ..., "weight": ...}`` objects or of ``[r, g, b]`` numbers; a Python-style list
as other packs print one (``[(230, 57, 70), (241, 250, 238)]``, ``[(0.9, 0.22, 0.27)]``, ``['#e63946']``);
or a Coolors URL (``https://coolors.co/264653-2a9d8f-e9c46a``). RGB numbers are 0-255 levels, or 0-1 when
at least one is written with a decimal point or exponent and none exceeds 1 (docs/palettes.md).

A Palette holds its few numbers as numpy arrays, so that parsing and reading palettes needs no torch
(the ``palette distance`` command never imports it); ``colors`` and ``weights`` give them as tensors.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._backend import is_tensor
from ._checks import as_numpy, check_colors, check_weights
from .errors import InputShapeError, PaletteFormatError

if TYPE_CHECKING:
    from torch import Tensor

MAX_COLORS = 256  # palette text (the widget, workflows, API prompts) and extraction
# Palette files in the wild list hundreds to thousands of colours (named-colour lists, paint fan decks);
# a Palette holds up to this many, and text stays at MAX_COLORS (docs/palettes.md, "How many colours").
MAX_FILE_COLORS = 16384
MAX_TEXT_CHARS = 1_000_000  # a 256-colour palette with weights is under 10 kB; refuse anything absurd
# Longer integer literals are refused before int() sees them: a weight past 1e300 is refused anyway, and
# int() of more than 4300 digits raises a bare ValueError (CPython's limit on int/str conversions).
_MAX_INT_CHARS = 400

_HEX_RE = re.compile(r"#?(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
# Any path segment is captured so that a bad colour in a Coolors URL is named, not the "https" before it.
_COOLORS_RE = re.compile(r"^(?:https?://)?(?:www\.)?coolors\.co/(?:palette/)?([^/?#\s]*)/?(?:[?#]\S*)?$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s,;]+")
# Plain decimal weights only: float() alone would also take "1_0", "nan" or non-ASCII digits.
_WEIGHT_RE = re.compile(r"[+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
EXPECTED_COLOUR = "expected #RGB, #RRGGBB or RRGGBB"
_QUOTE_CHARS = 40
_EXPECTED_ITEM = 'expected a hex string, {"hex": ..., "weight": ...} or [r, g, b] numbers'
# Tokens of a Python-style list: brackets, commas, numbers, quoted strings (no escapes: hex needs none).
_PY_TOKEN = re.compile(
    r"""\s*(?:(?P<open>[\[(])|(?P<close>[\])])|(?P<comma>,)"""
    r"""|(?P<number>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"""
    r"""|(?P<string>'[^'\\\n]*'|"[^"\\\n]*"))"""
)
_CLOSING = {"[": "]", "(": ")"}


def quote(token: str) -> str:
    """``token`` in double quotes for an error message, shortened when long."""
    t = token if len(token) <= _QUOTE_CHARS else token[: _QUOTE_CHARS - 3] + "..."
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in t)
    return f'"{shown}"'


def coolors_hexes(text: str) -> list[str] | None:
    """The colour tokens of a Coolors URL (``https://coolors.co/264653-2a9d8f``), None if not one (docs/palettes.md)."""
    match = _COOLORS_RE.match(text.strip())
    return None if match is None else [t for t in match.group(1).split("-") if t]


def parse_hex(token: str) -> tuple[int, int, int]:
    """One hex colour token to 8-bit ``(r, g, b)`` (docs/design.md §5); ``#RGB`` doubles each digit."""
    t = token.strip()
    if not _HEX_RE.fullmatch(t) or (len(t) == 3 and not t.startswith("#")):
        raise PaletteFormatError(f"{quote(token)} is not a colour: {EXPECTED_COLOUR}")
    digits = t.lstrip("#")
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def to_hex(rgb: Sequence[float]) -> str:
    """sRGB floats in [0, 1] to ``#rrggbb`` (rounded to the nearest 8-bit level)."""
    levels = [min(255, max(0, round(float(c) * 255.0))) for c in rgb]
    return "#{:02x}{:02x}{:02x}".format(*levels)


def _shown(number: str) -> str:
    """A number as typed for an error message, quoted and shortened only when long."""
    return number if len(number) <= _QUOTE_CHARS else quote(number)


def _parse_weight(text: str, token: str) -> float:
    if text.startswith("-") and _WEIGHT_RE.fullmatch(text[1:]):
        raise PaletteFormatError(f"{quote(token)}: weight {_shown(text)} must be >= 0")
    if not _WEIGHT_RE.fullmatch(text):
        raise PaletteFormatError(
            f"{quote(token)}: weight {quote(text)} is not a number: expected colour:weight, e.g. #e63946:2"
        )
    w = float(text)  # float() reads any number of digits (a huge one becomes inf, refused below)
    if not math.isfinite(w):
        raise PaletteFormatError(f"{quote(token)}: weight {_shown(text)} is too large: weights must be finite")
    return w


def json_int(text: str) -> int:
    """``parse_int`` for ``json.loads`` of untrusted text: refuses literals over 400 digits (docs/palettes.md)."""
    if len(text) > _MAX_INT_CHARS:
        raise PaletteFormatError(
            f"the number {quote(text)} ({len(text)} digits) is too large: weights must be finite numbers below 1e300"
        )
    return int(text)


def parse_token(token: str) -> tuple[tuple[int, int, int], float | None]:
    """One text-form token ``colour[:weight]`` to 8-bit ``(r, g, b)`` and its weight (None if not given)."""
    colour, sep, weight = token.partition(":")
    rgb = parse_hex(colour)
    if sep and not weight:
        raise PaletteFormatError(f'{quote(token)}: missing weight after ":": expected colour:weight, e.g. #e63946:2')
    return rgb, (_parse_weight(weight, token) if sep else None)


def _format_weights(ratios: list[float], digits: int) -> list[str]:
    out = []
    for r in ratios:
        text = f"{r:.{digits}g}"
        out.append(text.replace("e+", "e") if "e" in text else text)
    return out


def _prescale(w: np.ndarray) -> np.ndarray:
    """Divide finite weights by their largest one so that their sum cannot overflow (1e308 + 1e308)."""
    if not np.issubdtype(w.dtype, np.floating):
        return w
    w = w.astype(np.float64)
    top = float(w.max()) if w.size else 0.0
    if math.isfinite(top) and top > 0 and bool(np.isfinite(w).all()):
        return w / top
    return w


def _item_weight(w: object, i: int, form: str) -> float:
    """The ``weight`` of a ``{"hex", "weight"}`` list item: a finite number >= 0."""
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise PaletteFormatError(f"{form} item {i}: weight {quote(repr(w))} is not a number")
    if isinstance(w, int) and abs(w) > 1e300:
        raise PaletteFormatError(f"{form} item {i}: weight {quote(str(w))} is too large")
    if w < 0 or not math.isfinite(w):
        raise PaletteFormatError(f"{form} item {i}: weight {w!r} must be finite and >= 0")
    return float(w)


def _rgb_scale(triples: list) -> float:
    """255 for 0-255 levels; 1 when a value is written as a decimal and none exceeds 1 (docs/palettes.md)."""
    values = [v for t in triples for v in t if isinstance(v, (int, float)) and not isinstance(v, bool)]
    decimal = any(isinstance(v, float) for v in values)
    return 1.0 if decimal and all(abs(v) <= 1.0 for v in values) else 255.0


def _rgb_unit(item: list | tuple, scale: float, i: int, form: str) -> np.ndarray:
    """One ``[r, g, b]`` list item (0-255, or 0-1 when ``scale`` is 1) as float32 sRGB in [0, 1]."""
    shown = quote("(" + ", ".join(map(str, item)) + ")")
    if len(item) != 3:
        raise PaletteFormatError(f"{form} item {i} {shown}: {len(item)} values; expected 3 numbers r, g, b")
    for v in item:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PaletteFormatError(f"{form} item {i} {shown}: {quote(repr(v))} is not a number")
        if not (math.isfinite(v) and 0 <= v <= scale):
            top = "1 (0-1 floats)" if scale == 1.0 else "255 (8-bit levels; write 0-1 values with a decimal point)"
            raise PaletteFormatError(f"{form} item {i} {shown}: {v!r} is out of range: expected 0 to {top}")
    # Divided in float32, as hex colours are, so that (230, 57, 70) and #e63946 give the same bits.
    return np.array([float(v) for v in item], dtype=np.float32) / np.float32(scale)


def _number(text: str) -> int | float:
    """A number token of a Python-style list: int when written without a decimal point or exponent."""
    if len(text) > _MAX_INT_CHARS:
        raise PaletteFormatError(f"palette list: the number {quote(text)} ({len(text)} characters) is too long")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_python_list(s: str, limit: int) -> list:
    """A Python-style list (``[(230, 57, 70), ['#fff']...]``, ``['#e63946']``) to its items, one level of nesting."""
    pos, items, stack, current = 0, [], [], None
    expect_item = True
    while pos < len(s):
        m = _PY_TOKEN.match(s, pos)
        if m is None:
            if not s[pos:].strip():
                break
            at = pos + len(s[pos:]) - len(s[pos:].lstrip())
            raise PaletteFormatError(
                f"palette list at column {at + 1}: unexpected {quote(s[at : at + 12])}: expected a list such as "
                "[(230, 57, 70), (241, 250, 238)] or ['#e63946', '#f1faee']"
            )
        pos = m.end()
        kind = m.lastgroup
        column = m.start(kind) + 1
        if kind == "open":
            if len(stack) == 2:
                raise PaletteFormatError(f"palette list at column {column}: nested too deeply; expected (r, g, b)")
            if not expect_item:
                raise PaletteFormatError(f"palette list at column {column}: missing comma between items")
            stack.append(m.group(kind))
            if len(stack) == 2:
                current = []
            expect_item = True
        elif kind == "close":
            if not stack or _CLOSING[stack[-1]] != m.group(kind):
                raise PaletteFormatError(f"palette list at column {column}: unmatched {quote(m.group(kind))}")
            stack.pop()
            if stack:
                items.append(tuple(current))
                current = None
                if len(items) > limit:
                    raise PaletteFormatError(f"more than {limit} colours: a palette holds 1 to {limit}")
            elif s[pos:].strip():
                raise PaletteFormatError(f"palette list at column {pos + 1}: text after the closing bracket")
            expect_item = False
        elif kind == "comma":
            if expect_item:
                raise PaletteFormatError(f"palette list at column {column}: a comma where a value was expected")
            expect_item = True
        else:
            if not stack or not expect_item:
                raise PaletteFormatError(f"palette list at column {column}: missing comma between items")
            value = _number(m.group(kind)) if kind == "number" else m.group(kind)[1:-1]
            if len(stack) == 2:
                current.append(value)
            else:
                items.append(value)
            expect_item = False
    if stack:
        raise PaletteFormatError(f"palette list: missing {quote(_CLOSING[stack[-1]])} at the end")
    return items


@dataclass(frozen=True, eq=False)
class Palette:
    """Colours ``[N, 3]`` (sRGB float32 in [0, 1]) and weights ``[N]`` summing to 1 (docs/design.md §3).

    Held as float32 numpy arrays ``colors_array`` and ``weights_array``; :attr:`colors` and :attr:`weights`
    are the same memory as CPU tensors, made on first use. Build palettes with :meth:`from_colors`,
    :meth:`from_hex` or :meth:`parse`, which check and normalise; direct construction only converts.
    """

    colors_array: np.ndarray
    weights_array: np.ndarray

    def __post_init__(self) -> None:
        colors = np.ascontiguousarray(as_numpy(self.colors_array, "colors"), dtype=np.float32)
        weights = np.ascontiguousarray(as_numpy(self.weights_array, "weights"), dtype=np.float32)
        if colors.ndim != 2 or weights.shape != colors.shape[:1]:
            raise InputShapeError(
                f"Palette: colours {tuple(colors.shape)} and weights {tuple(weights.shape)} do not match; "
                "use Palette.from_colors"
            )
        object.__setattr__(self, "colors_array", colors)  # frozen: set once, here
        object.__setattr__(self, "weights_array", weights)

    @functools.cached_property
    def colors(self) -> Tensor:
        """The colours ``[N, 3]`` as a float32 CPU tensor."""
        import torch

        return torch.from_numpy(self.colors_array)

    @functools.cached_property
    def weights(self) -> Tensor:
        """The weights ``[N]`` as a float32 CPU tensor."""
        import torch

        return torch.from_numpy(self.weights_array)

    @classmethod
    def from_colors(cls, colors: Tensor | np.ndarray | Sequence, weights: Tensor | np.ndarray | Sequence | None = None):
        """Validate ``colors [N, 3]`` (floats in [0, 1]) and relative ``weights [N]`` into a Palette."""
        c, batched = check_colors(colors, numpy=True)
        if batched:
            raise InputShapeError(f"colors: shape {tuple(c.shape)}; a Palette holds one palette [N, 3]")
        n = c.shape[1]
        if n > MAX_FILE_COLORS:
            raise InputShapeError(f"colors: {n} colours; a palette holds 1 to {MAX_FILE_COLORS}")
        if weights is not None and not (isinstance(weights, np.ndarray) or is_tensor(weights)):
            weights = np.array(list(weights), dtype=np.float64)
        if weights is not None:
            weights = _prescale(as_numpy(weights, "weights"))
        w = check_weights(weights, c.astype(np.float64))
        return cls(c[0], w[0])

    @classmethod
    def from_hex(cls, hexes: Sequence[str], weights: Sequence[float] | None = None, limit: int = MAX_COLORS) -> Palette:
        """Palette from hex strings (and optional relative weights); at most ``limit`` colours."""
        if not hexes:
            raise PaletteFormatError(f"no colours given: a palette holds 1 to {limit} colours")
        if len(hexes) > limit:
            raise PaletteFormatError(f"{len(hexes)} colours: a palette holds 1 to {limit}")
        rgb = np.array([parse_hex(h) for h in hexes], dtype=np.float32) / np.float32(255.0)
        if weights is not None and not sum(weights) > 0:
            raise PaletteFormatError("the weights sum to 0: at least one colour needs a positive weight")
        return cls.from_colors(rgb, weights)

    @classmethod
    def parse(cls, text: str) -> Palette:
        """Parse palette text: hex list with weights, JSON or Python-style list, Coolors URL (docs/palettes.md)."""
        if not isinstance(text, str):
            raise PaletteFormatError(f"palette text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise PaletteFormatError(f"palette text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        s = text.strip()
        if not s:
            raise PaletteFormatError("the palette is empty: enter colours such as #e63946, #f1faee, #1d3557")
        if s.startswith(("[", "{")):
            return cls._parse_json(s)
        coolors = coolors_hexes(s)
        if coolors is not None:
            return cls.from_hex(coolors)
        hexes: list[str] = []
        weights: list[float] = []
        for token in _SEPARATORS.split(s):
            if not token:
                continue
            _, weight = parse_token(token)
            hexes.append(token.partition(":")[0])
            weights.append(1.0 if weight is None else weight)
            if len(hexes) > MAX_COLORS:
                raise PaletteFormatError(f"more than {MAX_COLORS} colours: a palette holds 1 to {MAX_COLORS}")
        return cls.from_hex(hexes, weights)

    @classmethod
    def _parse_json(cls, s: str, limit: int = MAX_COLORS) -> Palette:
        try:
            items = json.loads(s, parse_int=json_int)
        except json.JSONDecodeError as e:
            # Not JSON: perhaps the Python form other packs print (tuples, single quotes, trailing commas).
            if s.startswith("["):
                try:
                    items = _parse_python_list(s, limit)
                except PaletteFormatError:
                    if "(" in s or "'" in s:
                        raise
                else:
                    return cls._from_items(items, limit, "palette list")
            raise PaletteFormatError(
                f"invalid JSON palette at line {e.lineno}, column {e.colno}: {e.msg}: "
                'expected a list of hex strings, {"hex": ..., "weight": ...} objects or [r, g, b] numbers'
            ) from None
        except RecursionError:
            raise PaletteFormatError("invalid JSON palette: nested too deeply; expected a flat list") from None
        if not isinstance(items, list):
            raise PaletteFormatError(
                "a JSON palette must be a list of hex strings, {hex, weight} objects or [r, g, b] numbers"
            )
        return cls._from_items(items, limit, "JSON palette")

    @classmethod
    def _from_items(cls, items: list, limit: int, form: str) -> Palette:
        """A palette from parsed list items: hex strings, ``{"hex", "weight"}`` objects or ``[r, g, b]`` numbers."""
        if len(items) > limit:
            raise PaletteFormatError(f"{len(items)} colours: a palette holds 1 to {limit}")
        if not items:
            raise PaletteFormatError(f"no colours given: a palette holds 1 to {limit} colours")
        triples = [item for item in items if isinstance(item, (list, tuple))]
        scale = _rgb_scale(triples)
        rows, weights = [], []
        for i, item in enumerate(items):
            w = 1.0
            if isinstance(item, str):
                rgb = np.array(parse_hex(item), dtype=np.float32) / np.float32(255.0)
            elif isinstance(item, dict) and isinstance(item.get("hex"), str):
                rgb = np.array(parse_hex(item["hex"]), dtype=np.float32) / np.float32(255.0)
                w = _item_weight(item.get("weight", 1.0), i, form)
            elif isinstance(item, (list, tuple)):
                rgb = _rgb_unit(item, scale, i, form)
            else:
                shown = quote(json.dumps(item) if form == "JSON palette" else str(item))
                raise PaletteFormatError(f"{form} item {i} ({shown}): {_EXPECTED_ITEM}")
            rows.append(rgb)
            weights.append(w)
        if not sum(weights) > 0:
            raise PaletteFormatError("the weights sum to 0: at least one colour needs a positive weight")
        return cls.from_colors(np.stack(rows), weights)

    def __len__(self) -> int:
        return int(self.colors_array.shape[0])

    @property
    def hex(self) -> list[str]:
        """The colours as ``#rrggbb`` strings."""
        return [to_hex(c) for c in self.colors_array.tolist()]

    @property
    def is_uniform(self) -> bool:
        """True when every colour has the same weight."""
        w = self.weights_array
        return bool(np.allclose(w, np.full_like(w, 1.0 / len(self)), rtol=1e-6, atol=0))

    def to_text(self) -> str:
        """The docs/design.md §5 text form; weights are written relative to the smallest positive one, only if unequal.

        Each weight gets the fewest significant digits (at least 6) that parse back to the same float32
        weights, so ``Palette.parse(p.to_text())`` reproduces ``p`` and its text exactly.
        """
        if self.is_uniform and np.array_equal(Palette.from_colors(self.colors_array).weights_array, self.weights_array):
            return ", ".join(self.hex)  # only weights that parse back from no weights at all may be left out
        ratios = self._weight_ratios()
        texts = _format_weights(ratios, 17)
        for digits in range(6, 18):
            candidate = _format_weights(ratios, digits)
            again = Palette.from_colors(self.colors_array, [float(t) for t in candidate]).weights_array
            if np.array_equal(again, self.weights_array):
                texts = candidate
                break
        return ", ".join(h if t == "1" else f"{h}:{t}" for h, t in zip(self.hex, texts))

    def _weight_ratios(self) -> list[float]:
        """Weights relative to the smallest positive one, nudged so that they parse back bit for bit.

        Stored float32 weights need not sum to exactly 1, and re-normalising them can then move a weight
        to a neighbouring float32. Spreading the deficit ``1 - sum(w)`` over the weights, each within half
        a float32 step of its value, gives targets that sum to 1 and still round to the stored weights.
        """
        w = self.weights_array
        if not bool((w > 0).any()):
            raise InputShapeError("Palette: the weights sum to 0; build palettes with Palette.from_colors")
        up = np.nextafter(w, np.float32(np.inf)) - w
        down = w - np.nextafter(w, np.float32(0))
        half_step = np.where(w > 0, np.minimum(up, down).astype(np.float64) / 2, 0.0)
        target = w.astype(np.float64)
        deficit, room = 1.0 - float(target.sum()), float(half_step.sum())
        if 0 < abs(deficit) < room:
            target = target + deficit * half_step / room
        return (target / target[target > 0].min()).tolist()

    def to_json(self) -> list[dict]:
        """A JSON-able list of ``{"hex", "weight"}`` (weights normalised)."""
        return [{"hex": h, "weight": float(w)} for h, w in zip(self.hex, self.weights_array.tolist())]

    def heaviest(self, n: int) -> Palette:
        """The ``n`` heaviest colours in their original order, weights renormalised (docs/palettes.md).

        Ties keep the earlier colour, so a palette of equal weights keeps its first ``n`` colours.
        """
        if n >= len(self):
            return self
        if n < 1:
            raise InputShapeError(f"heaviest: n = {n}; keep at least 1 colour")
        keep = np.sort(np.argsort(-self.weights_array, kind="stable")[:n])
        return Palette.from_colors(self.colors_array[keep], self.weights_array[keep].astype(np.float64))

    def equals(self, other: Palette, atol: float = 1e-6) -> bool:
        """Same colours (to 8-bit hex) in the same order with weights within ``atol``."""
        return (
            isinstance(other, Palette)
            and self.hex == other.hex
            and bool(np.allclose(self.weights_array, other.weights_array, rtol=0, atol=atol))
        )

    def histogram(self) -> Tensor:
        """The palette's 4080-bin HSV histogram (paper §3.1)."""
        from .histogram import palette_histogram

        return palette_histogram(self.colors, self.weights)

    def histogram_array(self) -> np.ndarray:
        """The palette's 4080-bin HSV histogram as a numpy array, computed without torch (paper §3.1)."""
        from .bins import weighted_counts

        c, _ = check_colors(self.colors_array, numpy=True)
        return weighted_counts(c, check_weights(self.weights_array, c))[0]

    def __repr__(self) -> str:
        return f"Palette({self.to_text()!r})"
