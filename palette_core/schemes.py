"""Palettes from one colour (colour-harmony schemes in OKLCH) and the palette edits users do by hand.

A scheme turns a base colour into ``count`` colours: the scheme's hues (the base hue plus fixed offsets on
the OKLCH hue circle) at the base's lightness and chroma, then more lightness steps of those hues when
``count`` asks for more colours than the scheme has hues. ``tints`` and ``shades`` mix the base toward
white or black in OKLab instead. Every colour is brought into sRGB with the CSS Color 4 gamut mapping of
:func:`.oklab.gamut_map_oklch`, so a hue that sRGB cannot show at the base's chroma loses chroma, and
moves by at most the ΔEOK JND of 0.02. The edits (sort, lighten, darken, saturate, desaturate, merge,
keep the heaviest) take and return :class:`.palette.Palette` values. Details: docs/craft.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._backend import is_tensor, namespace
from ._checks import check_rgb
from .errors import PaletteError
from .oklab import delta_e_ok, gamut_map_oklch, srgb_to_oklab, srgb_to_oklch
from .palette import MAX_COLORS, Palette, parse_hex

if TYPE_CHECKING:
    from typing import TypeVar

    from torch import Tensor

    Array = TypeVar("Array", Tensor, np.ndarray)

# Hue offsets in degrees on the OKLCH hue circle, the base's own hue first; analogous lists its neighbours
# nearest first, so that 3 colours are the base and its two 30-degree neighbours.
SCHEME_HUES: dict[str, tuple[float, ...]] = {
    "complementary": (0.0, 180.0),
    "analogous": (0.0, -30.0, 30.0, -60.0, 60.0),
    "triadic": (0.0, 120.0, 240.0),
    "split_complementary": (0.0, 150.0, 210.0),
    "tetradic": (0.0, 90.0, 180.0, 270.0),
    "monochromatic": (0.0,),
}
# Schemes that mix the base toward a lightness-only target in OKLab: white (L = 1) or black (L = 0).
MIX_TARGETS: dict[str, float] = {"tints": 1.0, "shades": 0.0}
SCHEMES: tuple[str, ...] = (*SCHEME_HUES, *MIX_TARGETS)
MAX_SCHEME_COLORS = 64
SORT_KEYS = ("hue", "lightness", "weight")
EDIT_OPERATIONS = (
    "sort_hue",
    "sort_lightness",
    "sort_weight",
    "lighten",
    "darken",
    "saturate",
    "desaturate",
    "keep_heaviest",
)
# Below this OKLCH chroma a colour reads as grey and its hue is noise: sorting by hue puts such colours last.
ACHROMATIC_CHROMA = 0.01
# Slack on the lightness grid's fit into [0, 1], so that a base exactly on a grid line is not pushed off it.
_GRID_SLACK = 1e-9
# Narrower lightness spreads are invisible (and would overflow the grid fit): all steps keep the base's L.
_MIN_SPREAD = 1e-9


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_fraction(name: str, value: object, meaning: str) -> float:
    """``value`` as a float in [0, 1], or a PaletteError that names ``name`` and says what it does (docs/craft.md)."""
    if not _is_number(value) or not math.isfinite(float(value)) or not 0.0 <= float(value) <= 1.0:
        raise PaletteError(f"{name}: {value!r} must be a number from 0 to 1 ({meaning})")
    return float(value)


def check_count(name: str, value: object, high: int) -> int:
    """``value`` as an int in [1, high], or a PaletteError that names ``name`` (docs/craft.md)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= int(value) <= high:
        raise PaletteError(f"{name}: {value!r} must be a whole number of colours from 1 to {high}")
    return int(value)


def check_scheme(scheme: object) -> str:
    """``scheme`` if it is one of :data:`SCHEMES`, else a PaletteError listing them (docs/craft.md)."""
    if scheme not in SCHEMES:
        raise PaletteError(f"scheme: {scheme!r} is not one of {', '.join(SCHEMES)}")
    return str(scheme)


def _lightness_steps(lightness: Array, steps: int, spread: float) -> list[Array]:
    """OKLab L of ranks ``0 .. steps-1``: an even grid ``spread`` wide through the base's L, nearest first.

    The grid's position puts the base's lightness as near the middle as [0, 1] allows; rank 0 is the base,
    then alternately one step lighter and one darker, then the side that has steps left.
    """
    if steps == 1 or spread < _MIN_SPREAD:
        return [lightness] * steps
    xp = namespace(lightness)
    step = spread / (steps - 1)
    fit_low = xp.ceil((steps - 1) - (1.0 - lightness) / step - _GRID_SLACK)
    fit_high = xp.floor(lightness / step + _GRID_SLACK)
    base = xp.minimum(xp.clip(fit_low, (steps - 1) // 2, None), xp.clip(fit_high, None, steps - 1))
    base = xp.clip(base, 0, steps - 1)
    up, down = (steps - 1) - base, base
    both = xp.minimum(up, down)
    out = []
    for rank in range(steps):
        alternate = float((rank + 1) // 2 * (1 if rank % 2 else -1))
        beyond = xp.where(up > down, rank - both, both - rank)
        offset = xp.where(rank <= 2 * both, xp.full(base.shape, alternate, like=lightness), beyond)
        out.append(xp.clip(lightness + offset * step, 0.0, 1.0))
    return out


def scheme_oklch(base_lch: Array, scheme: str, count: int, lightness_spread: float) -> Array:
    """Target OKLCH ``[..., count, 3]`` of a scheme: colour i has hue ``h + offset[i mod K]`` (docs/craft.md).

    Its lightness is rank ``i div K`` of the even grid ``lightness_spread`` wide through the base's L
    (:func:`_lightness_steps`) and its chroma the base's. ``tints`` and ``shades`` instead mix the base
    toward white or black in OKLab by ``t = lightness_spread * i / (count - 1)``:
    ``L = L0 + t (target - L0)``, ``C = (1 - t) C0``, same hue. Not gamut-mapped.
    """
    scheme = check_scheme(scheme)
    count = check_count("count", count, MAX_SCHEME_COLORS)
    spread = check_fraction("lightness_spread", lightness_spread, "the range of OKLab lightness across the variants")
    xp = namespace(base_lch)
    lightness, chroma, hue = base_lch[..., 0], base_lch[..., 1], base_lch[..., 2]
    rows = []
    if scheme in MIX_TARGETS:
        target = MIX_TARGETS[scheme]
        for i in range(count):
            t = spread * i / (count - 1) if count > 1 else 0.0
            rows.append(xp.stack((lightness + t * (target - lightness), (1.0 - t) * chroma, hue), -1))
    else:
        offsets = SCHEME_HUES[scheme]
        steps = _lightness_steps(lightness, math.ceil(count / len(offsets)), spread)
        for i in range(count):
            shifted = xp.remainder(hue + offsets[i % len(offsets)], 360.0)
            rows.append(xp.stack((steps[i // len(offsets)], chroma, shifted), -1))
    return xp.stack(rows, -2)


def scheme_colors(base: Tensor | np.ndarray, scheme: str, count: int, lightness_spread: float = 0.3) -> Array:
    """sRGB ``[..., count, 3]`` of a scheme on bases ``[..., 3]``: scheme_oklch, gamut-mapped (docs/craft.md)."""
    rgb = check_rgb(base, "base", numpy=not is_tensor(base))
    xp = namespace(rgb)
    work = rgb if is_tensor(rgb) else xp.astype(rgb, xp.float64)  # numpy: float64 for exact round trips
    return xp.astype(gamut_map_oklch(scheme_oklch(srgb_to_oklch(work), scheme, count, lightness_spread)), rgb.dtype)


def parse_base_color(base: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """A base colour, hex text (``#RGB``, ``#RRGGBB``, ``RRGGBB``) or three sRGB floats, as ``[3]`` (docs/craft.md)."""
    if isinstance(base, str):
        if not base.strip():
            raise PaletteError("base colour: empty; enter a hex colour such as #e63946")
        return np.array(parse_hex(base), dtype=np.float64) / 255.0
    rgb = check_rgb(base if isinstance(base, np.ndarray) or is_tensor(base) else np.asarray(base), "base", numpy=True)
    if rgb.shape != (3,):
        raise PaletteError(f"base colour: shape {tuple(rgb.shape)}; expected one sRGB colour [3]")
    return rgb.astype(np.float64)


def palette_from_color(
    base: str | Sequence[float] | np.ndarray, scheme: str, count: int = 5, lightness_spread: float = 0.3
) -> Palette:
    """An equal-weight Palette of ``count`` colours from one base colour and a scheme (docs/craft.md)."""
    rgb = scheme_colors(parse_base_color(base), scheme, count, lightness_spread)
    return Palette.from_colors(rgb)


# --- edits ---------------------------------------------------------------------------------------------


def _check_palette(palette: object, name: str = "palette") -> Palette:
    if not isinstance(palette, Palette):
        raise PaletteError(f"{name}: expected a Palette, got {type(palette).__name__}")
    if len(palette) == 0:
        raise PaletteError(f"{name}: the palette is empty; give it at least one colour")
    return palette


def _oklch_of(palette: Palette) -> np.ndarray:
    return srgb_to_oklch(palette.colors_array.astype(np.float64))


def sort_palette(palette: Palette, key: str = "hue") -> Palette:
    """Reordered by OKLCH hue (greys last, by L), OKLab L (dark first) or weight (heaviest first) (docs/craft.md)."""
    palette = _check_palette(palette)
    if key not in SORT_KEYS:
        raise PaletteError(f"key: {key!r} is not one of {', '.join(SORT_KEYS)}")
    lch = _oklch_of(palette)
    if key == "hue":
        grey = lch[:, 1] < ACHROMATIC_CHROMA
        order = np.lexsort((np.where(grey, lch[:, 0], lch[:, 2]), grey))
    elif key == "lightness":
        order = np.argsort(lch[:, 0], kind="stable")
    else:
        order = np.argsort(-palette.weights_array, kind="stable")
    return Palette(palette.colors_array[order], palette.weights_array[order])


def adjust_palette(palette: Palette, lightness: float = 0.0, chroma_scale: float = 1.0) -> Palette:
    """Each colour to ``(L + lightness, C · chroma_scale, h)`` in OKLCH, gamut-mapped; weights kept (docs/craft.md)."""
    palette = _check_palette(palette)
    if not _is_number(lightness) or not math.isfinite(lightness) or abs(lightness) > 1.0:
        raise PaletteError(f"lightness: {lightness!r} must be a number from -1 to 1 (an OKLab L shift)")
    if not _is_number(chroma_scale) or not math.isfinite(chroma_scale) or not 0.0 <= chroma_scale <= 2.0:
        raise PaletteError(f"chroma_scale: {chroma_scale!r} must be a number from 0 to 2 (1 keeps the chroma)")
    lch = _oklch_of(palette)
    lch[:, 0] = np.clip(lch[:, 0] + lightness, 0.0, 1.0)
    lch[:, 1] *= chroma_scale
    rgb = gamut_map_oklch(lch)
    return Palette(rgb.astype(np.float32), palette.weights_array.copy())


_AMOUNT = "0 leaves the palette as it is"


def lighten(palette: Palette, amount: float) -> Palette:
    """OKLab lightness raised by ``amount``: ``L' = min(L + amount, 1)``, gamut-mapped (docs/craft.md)."""
    return adjust_palette(palette, lightness=check_fraction("amount", amount, _AMOUNT))


def darken(palette: Palette, amount: float) -> Palette:
    """OKLab lightness lowered by ``amount``: ``L' = max(L - amount, 0)``, gamut-mapped (docs/craft.md)."""
    return adjust_palette(palette, lightness=-check_fraction("amount", amount, _AMOUNT))


def saturate(palette: Palette, amount: float) -> Palette:
    """OKLCH chroma scaled by ``1 + amount`` (1 doubles it), gamut-mapped (docs/craft.md)."""
    return adjust_palette(palette, chroma_scale=1.0 + check_fraction("amount", amount, _AMOUNT))


def desaturate(palette: Palette, amount: float) -> Palette:
    """OKLCH chroma scaled by ``1 - amount`` (1 gives greys of the same lightness) (docs/craft.md)."""
    return adjust_palette(palette, chroma_scale=1.0 - check_fraction("amount", amount, _AMOUNT))


def keep_heaviest(palette: Palette, n: int) -> Palette:
    """The ``n`` heaviest colours in their original order (ties: the earlier), weights renormalised (docs/craft.md)."""
    palette = _check_palette(palette)
    n = check_count("n", n, MAX_COLORS)
    keep = np.sort(np.argsort(-palette.weights_array, kind="stable")[:n])
    return Palette.from_colors(palette.colors_array[keep], palette.weights_array[keep])


def merge_palettes(a: Palette, b: Palette, balance: float = 0.5, tolerance: float = 0.0) -> Palette:
    """``a`` then ``b`` with weights ``balance · w_a`` and ``(1 - balance) · w_b``, duplicates merged (docs/craft.md).

    Colours with the same 8-bit hex, or within ``tolerance`` ΔEOK of an earlier kept colour (the nearest),
    become one entry: the first colour, with the weights summed.
    """
    a, b = _check_palette(a, "a"), _check_palette(b, "b")
    balance = check_fraction("balance", balance, "the share of the total weight that palette a gets")
    if not _is_number(tolerance) or not math.isfinite(tolerance) or tolerance < 0:
        raise PaletteError(f"tolerance: {tolerance!r} must be a finite ΔEOK distance >= 0 (0 merges only equal hex)")
    colors = np.concatenate((a.colors_array, b.colors_array))
    weights = np.concatenate((a.weights_array * balance, b.weights_array * (1.0 - balance))).astype(np.float64)
    hexes = a.hex + b.hex
    lab = srgb_to_oklab(colors.astype(np.float64))
    kept: list[int] = []
    owner = np.empty(len(colors), dtype=np.int64)
    first_of_hex: dict[str, int] = {}
    for i, h in enumerate(hexes):
        slot = first_of_hex.get(h)
        if slot is None and tolerance > 0 and kept:
            dist = delta_e_ok(lab[kept], lab[i][None])
            nearest = int(np.argmin(dist))
            slot = nearest if dist[nearest] <= tolerance else None
        if slot is None:
            slot = len(kept)
            kept.append(i)
            first_of_hex[h] = slot
        owner[i] = slot
    if len(kept) > MAX_COLORS:
        raise PaletteError(
            f"the merged palette has {len(kept)} distinct colours, more than {MAX_COLORS}: "
            "keep fewer colours of each palette first (keep_heaviest)"
        )
    merged = np.bincount(owner, weights=weights, minlength=len(kept))
    return Palette.from_colors(colors[kept], merged)


def edit_palette(palette: Palette, operation: str, amount: float = 0.1, n: int = 5) -> Palette:
    """One of :data:`EDIT_OPERATIONS` on a palette: sorts ignore ``amount`` and ``n`` (docs/craft.md)."""
    if operation not in EDIT_OPERATIONS:
        raise PaletteError(f"operation: {operation!r} is not one of {', '.join(EDIT_OPERATIONS)}")
    if operation.startswith("sort_"):
        return sort_palette(palette, operation.removeprefix("sort_"))
    if operation == "keep_heaviest":
        return keep_heaviest(palette, n)
    edit = {"lighten": lighten, "darken": darken, "saturate": saturate, "desaturate": desaturate}[operation]
    return edit(palette, amount)
