"""OKLab and OKLCH (Björn Ottosson, "A perceptual color space for image processing", 2020) and sRGB gamut mapping.

Every conversion takes a torch tensor or a numpy array whose last dimension holds three channels
(``[..., 3]``) and returns the same kind, shape and floating dtype; tensors work on any device (see
:mod:`._backend`). OKLab goes straight from linear sRGB through Ottosson's two published matrices and a
cube root; L is in [0, 1] (white is 1), and OKLCH is ``(L, C, h)`` with the hue ``h`` in degrees [0, 360).

:func:`gamut_map_oklch` brings any OKLCH colour into sRGB with the CSS Color Module Level 4 gamut-mapping
algorithm ("binary search with local MINDE", as its candidate recommendation publishes it): a binary
search on chroma at fixed lightness and hue that stops as soon as clipping the candidate moves it by less
than the just-noticeable difference ``ΔEOK = 0.02`` (docs/craft.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._backend import NUMPY, namespace
from .color import apply_matrix3, linear_to_srgb, srgb_to_linear
from .errors import InputShapeError

if TYPE_CHECKING:
    from typing import TypeVar

    from torch import Tensor

    Array = TypeVar("Array", Tensor, np.ndarray)

# Ottosson's published matrices: linear sRGB -> LMS (M1) and cube-rooted LMS -> Lab (M2).
_M1 = [
    [0.4122214708, 0.5363325363, 0.0514459929],
    [0.2119034982, 0.6806995451, 0.1073969566],
    [0.0883024619, 0.2817188376, 0.6299787005],
]
_M2 = [
    [0.2104542553, 0.7936177850, -0.0040720468],
    [1.9779984951, -2.4285922050, 0.4505937099],
    [0.0259040371, 0.7827717662, -0.8086757660],
]
# Ottosson also publishes the inverses to 10 digits; they round-trip sRGB only to ~2e-6, so the exact
# inverses of the forward matrices are used instead (round trips exact to float precision).
_M1_INV = np.linalg.inv(np.array(_M1)).tolist()
_M2_INV = np.linalg.inv(np.array(_M2)).tolist()

# CSS Color 4 gamut mapping: the just-noticeable difference in ΔEOK and the search's chroma resolution.
JND = 0.02
CHROMA_EPSILON = 1e-4
_DEGREES = 180.0 / math.pi


def _cbrt(x: Array) -> Array:
    """Real cube root that keeps the sign (out-of-gamut linear sRGB can give negative LMS)."""
    xp = namespace(x)
    if xp is NUMPY:
        return np.cbrt(x)  # exact and several times faster than the power; torch has no cbrt
    return xp.sign(x) * xp.abs(x) ** (1.0 / 3.0)


def linear_srgb_to_oklab(lin: Array) -> Array:
    """Linear sRGB to OKLab: ``Lab = M2 · cbrt(M1 · rgb)`` (Ottosson 2020)."""
    return apply_matrix3(_cbrt(apply_matrix3(lin, _M1)), _M2)


def oklab_to_linear_srgb(lab: Array) -> Array:
    """OKLab to linear sRGB, not clipped: ``rgb = M1⁻¹ · (M2⁻¹ · Lab)³`` (Ottosson 2020)."""
    return apply_matrix3(apply_matrix3(lab, _M2_INV) ** 3, _M1_INV)


def srgb_to_oklab(rgb: Array) -> Array:
    """sRGB (IEC 61966-2-1 companding) to OKLab (Ottosson 2020)."""
    return linear_srgb_to_oklab(srgb_to_linear(rgb))


def oklab_to_srgb(lab: Array) -> Array:
    """OKLab to companded sRGB, not clipped: out-of-gamut colours fall outside [0, 1] (Ottosson 2020)."""
    return linear_to_srgb(oklab_to_linear_srgb(lab))


def oklab_to_oklch(lab: Array) -> Array:
    """OKLab to OKLCH: ``C = hypot(a, b)``, ``h = atan2(b, a)`` in degrees [0, 360) (Ottosson 2020)."""
    xp = namespace(lab)
    a, b = lab[..., 1], lab[..., 2]
    hue = xp.remainder(xp.arctan2(b, a) * _DEGREES, 360.0)
    return xp.stack((lab[..., 0], xp.hypot(a, b), hue), -1)


def oklch_to_oklab(lch: Array) -> Array:
    """OKLCH to OKLab: ``a = C cos h``, ``b = C sin h`` (h in degrees) (Ottosson 2020)."""
    xp = namespace(lch)
    rad = lch[..., 2] / _DEGREES
    return xp.stack((lch[..., 0], lch[..., 1] * xp.cos(rad), lch[..., 1] * xp.sin(rad)), -1)


def srgb_to_oklch(rgb: Array) -> Array:
    """sRGB to OKLCH ``(L, C, h°)`` (Ottosson 2020)."""
    return oklab_to_oklch(srgb_to_oklab(rgb))


def delta_e_ok(lab1: Array, lab2: Array) -> Array:
    """ΔEOK: the Euclidean distance in OKLab, ``sqrt(ΔL² + Δa² + Δb²)`` (CSS Color 4, docs/craft.md)."""
    xp = namespace(lab1)
    return xp.sqrt(((lab1 - lab2) ** 2).sum(-1))


def in_srgb_gamut(rgb: Array) -> Array:
    """Whether each sRGB colour ``[..., 3]`` lies in [0, 1], with no tolerance (docs/craft.md)."""
    # Near black a tiny sRGB excursion is a large OKLab one (the cube root), so none is allowed; a colour
    # that misses only by rounding is clipped within the JND by the mapping's first step anyway.
    return ((rgb >= 0.0) & (rgb <= 1.0)).all(-1)


def gamut_map_oklch(lch: Array) -> Array:
    """OKLCH ``[..., 3]`` to sRGB in [0, 1] by CSS Color 4's chroma-reduction binary search (ΔEOK JND 0.02).

    Lightness 1 or more gives white and 0 or less black; an in-gamut colour is only converted. Otherwise
    chroma is halved toward the largest value whose clipped colour is within the JND of the unclipped one,
    and that clipped colour is returned, so hue and lightness move by at most the JND.
    """
    xp = namespace(lch)
    if not bool(xp.isfinite(lch).all()):
        raise InputShapeError("lch: NaN or infinite values; OKLCH colours must be finite")
    lightness = lch[..., 0]
    chroma = xp.clip(lch[..., 1], 0.0, None)
    rad = lch[..., 2] / _DEGREES
    cos_h, sin_h = xp.cos(rad), xp.sin(rad)

    def lab_at(c: Array) -> Array:
        return xp.stack((lightness, c * cos_h, c * sin_h), -1)

    def clipped_and_error(c: Array) -> tuple[Array, Array, Array]:
        lab = lab_at(c)
        rgb = oklab_to_srgb(lab)
        clipped = xp.clip(rgb, 0.0, 1.0)
        return in_srgb_gamut(rgb), clipped, delta_e_ok(srgb_to_oklab(clipped), lab)

    inside, _, error = clipped_and_error(chroma)
    # The chroma whose clipped colour is the answer: the original where it is in gamut or clips within the JND.
    final = xp.where(inside | (error < JND), chroma, xp.zeros(chroma.shape, like=chroma))
    active = ~(inside | (error < JND)) & (chroma > CHROMA_EPSILON)
    low = xp.zeros(chroma.shape, like=chroma)
    high = chroma
    low_in_gamut = xp.isfinite(chroma)  # all True (lch was checked finite): the search starts from grey, in gamut
    while bool(active.any()):
        mid = (low + high) / 2
        mid_inside, _, mid_error = clipped_and_error(mid)
        raise_in_gamut = low_in_gamut & mid_inside
        near = ~raise_in_gamut & (mid_error < JND)
        stop = active & near & (JND - mid_error < CHROMA_EPSILON)
        low = xp.where(active & (raise_in_gamut | near), mid, low)
        high = xp.where(active & ~raise_in_gamut & ~near, mid, high)
        low_in_gamut = low_in_gamut & ~(active & near)
        final = xp.where(stop, mid, final)
        converged = active & ~stop & (high - low <= CHROMA_EPSILON)
        final = xp.where(converged, low, final)
        active = active & ~stop & ~converged
    rgb = xp.clip(oklab_to_srgb(lab_at(final)), 0.0, 1.0)
    rgb = xp.where((lightness >= 1.0)[..., None], xp.full(rgb.shape, 1.0, like=rgb), rgb)
    return xp.where((lightness <= 0.0)[..., None], xp.zeros(rgb.shape, like=rgb), rgb)
