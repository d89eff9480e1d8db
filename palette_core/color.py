"""Colour-space conversions and CIEDE2000 (docs/design.md §3–§4).

Every function takes a torch tensor or a numpy array whose last dimension holds three channels
(``[..., 3]``) and returns the same kind, shape and floating dtype; tensors work on any device. One
implementation serves both (:mod:`._backend`): numpy callers never import torch. sRGB is IEC 61966-2-1
with its companding; XYZ and Lab use the D65 white point of the CIE 1931 2° observer,
xy = (0.3127, 0.3290); HSV is the float hexcone model with :mod:`colorsys` semantics (hue, saturation,
value in [0, 1]).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._backend import namespace

if TYPE_CHECKING:
    from typing import TypeVar

    import numpy as np
    from torch import Tensor

    Array = TypeVar("Array", Tensor, np.ndarray)

D65_XY = (0.3127, 0.3290)
# IEC 61966-2-1 publishes both matrices to four decimals (colour-science uses the same pair); the
# published inverse is not the exact inverse, so an sRGB -> XYZ -> sRGB round trip is exact to ~2e-4.
M_RGB_TO_XYZ = [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
M_XYZ_TO_RGB = [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]


def _xy_to_xyz(x: float, y: float) -> list[float]:
    return [x / y, 1.0, (1.0 - x - y) / y]


D65_XYZ = tuple(_xy_to_xyz(*D65_XY))
# CIELAB's ε and κ (CIE 15): where f(t) = cbrt(t) meets its linear segment, and that segment's slope x 116.
LAB_EPSILON = 216.0 / 24389.0
LAB_KAPPA = 24389.0 / 27.0


def apply_matrix3(x: Array, m: list[list[float]]) -> Array:
    """``x · mᵀ``: the 3 × 3 colour-space matrix ``m`` applied to every colour of ``x [..., 3]`` (docs/design.md §3)."""
    return x @ namespace(x).const(m, x).T


# The pack's one sRGB transfer curve (recolouring runs it on every pixel): the power branch is computed in
# place on its own temporary, which saves memory traffic and keeps every result as the plain formula's.


def srgb_to_linear(rgb: Array) -> Array:
    """sRGB companding inverse, IEC 61966-2-1 (docs/design.md §3)."""
    xp = namespace(rgb)
    high = xp.clip(rgb, 0.04045, None)
    high += 0.055
    high /= 1.055
    high **= 2.4
    return xp.where(rgb <= 0.04045, rgb / 12.92, high)


def linear_to_srgb(lin: Array) -> Array:
    """sRGB companding, IEC 61966-2-1 (docs/design.md §3)."""
    xp = namespace(lin)
    high = xp.clip(lin, 0.0031308, None)
    high **= 1 / 2.4
    high *= 1.055
    high -= 0.055
    return xp.where(lin <= 0.0031308, lin * 12.92, high)


def linear_to_xyz(lin: Array) -> Array:
    """Linear sRGB to CIE XYZ (D65, Y of white = 1) (docs/design.md §3)."""
    return apply_matrix3(lin, M_RGB_TO_XYZ)


def xyz_to_linear(xyz: Array) -> Array:
    """CIE XYZ (D65) to linear sRGB (docs/design.md §3)."""
    return apply_matrix3(xyz, M_XYZ_TO_RGB)


def xyz_to_lab(xyz: Array) -> Array:
    """CIE XYZ to CIE 1976 L*a*b* relative to D65 (docs/design.md §3)."""
    xp = namespace(xyz)
    t = xyz / xp.const(D65_XYZ, xyz)
    f = xp.where(t > LAB_EPSILON, xp.clip(t, LAB_EPSILON, None) ** (1 / 3), (LAB_KAPPA * t + 16) / 116)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return xp.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), -1)


def lab_to_xyz(lab: Array) -> Array:
    """CIE 1976 L*a*b* (D65) to CIE XYZ (docs/design.md §3)."""
    xp = namespace(lab)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (L + 16) / 116
    f = xp.stack((fy + a / 500, fy, fy - b / 200), -1)
    t = xp.where(f**3 > LAB_EPSILON, f**3, (116 * f - 16) / LAB_KAPPA)
    # L* decides Y directly (avoids the cube root's branch disagreeing with the linear segment).
    ty = xp.where(L > LAB_KAPPA * LAB_EPSILON, fy**3, L / LAB_KAPPA)
    t = xp.stack((t[..., 0], ty, t[..., 2]), -1)
    return t * xp.const(D65_XYZ, lab)


def srgb_to_lab(rgb: Array) -> Array:
    """sRGB in [0, 1] to CIE L*a*b* (D65) (docs/design.md §3)."""
    return xyz_to_lab(linear_to_xyz(srgb_to_linear(rgb)))


def lab_to_srgb(lab: Array) -> Array:
    """CIE L*a*b* (D65) to sRGB, not clipped: out-of-gamut colours fall outside [0, 1] (docs/design.md §3)."""
    return linear_to_srgb(xyz_to_linear(lab_to_xyz(lab)))


def hsv_planes(r: Array, g: Array, b: Array) -> tuple[Array, Array, Array]:
    """Hexcone ``(h, s, v)`` from channel planes, op for op as ``colorsys.rgb_to_hsv`` (docs/design.md §4)."""
    xp = namespace(r)
    # In-place arithmetic on fresh temporaries: on large planes allocation dominates otherwise.
    maxc = xp.maximum(xp.maximum(r, g), b)
    rangec = maxc - xp.minimum(xp.minimum(r, g), b)
    grey = rangec == 0
    s = rangec / (maxc + (maxc == 0))  # rangec is 0 wherever maxc is 0, so s is 0 there as in colorsys
    rangec += grey  # exact: adds 1 only where the range is 0, a safe divisor
    rc = maxc - r
    rc /= rangec
    gc = maxc - g
    gc /= rangec
    bc = maxc - b
    bc /= rangec
    # colorsys's three hue branches, each in its order of operations: r max, g max, else b max.
    h_green = 2.0 + rc
    h_green -= bc
    h_blue = 4.0 + gc
    h_blue -= rc
    bc -= gc
    h = xp.where(r == maxc, bc, xp.where(g == maxc, h_green, h_blue))
    h /= 6.0
    return xp.where(grey, 0.0, xp.remainder(h, 1.0)), s, maxc


def srgb_to_hsv(rgb: Array) -> Array:
    """Float hexcone HSV ``[..., 3]`` with exactly the operations of ``colorsys.rgb_to_hsv`` (docs/design.md §4)."""
    return namespace(rgb).stack(hsv_planes(rgb[..., 0], rgb[..., 1], rgb[..., 2]), -1)


# Rows of the sector table of colorsys.hsv_to_rgb: which of (v, q, p, t) goes to r, g, b in each sector.
_SECTORS = [[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]]


def hsv_to_srgb(hsv: Array) -> Array:
    """Inverse of :func:`srgb_to_hsv` with ``colorsys.hsv_to_rgb`` semantics (docs/design.md §4)."""
    xp = namespace(hsv)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = xp.floor(h * 6.0)
    f = h * 6.0 - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    sector = xp.astype(xp.remainder(i, 6), xp.int64)
    choices = xp.stack((v, q, p, t), -1)
    rgb = xp.take_along_last(choices, xp.const(_SECTORS, hsv, dtype=xp.int64)[sector])
    return xp.where((s == 0)[..., None], v[..., None], rgb)


_25_POW_7 = 25.0**7
_DEG = math.pi / 180.0
# cos/sin of the phase offsets in T (Sharma Eq. 15), so T needs one cos and one sin of h_bar.
_C30, _S30 = math.cos(30 * _DEG), math.sin(30 * _DEG)
_C6, _S6 = math.cos(6 * _DEG), math.sin(6 * _DEG)
_C63, _S63 = math.cos(63 * _DEG), math.sin(63 * _DEG)
_CHUNK = 1 << 17  # pairs per slice: bounds the ~40 temporaries' memory on large inputs


def _pow7_ratio(c: Array) -> Array:
    c2 = c * c
    c7 = c2 * c2 * c2 * c
    return namespace(c).sqrt(c7 / (c7 + _25_POW_7))


def _ciede2000_flat(lab1: Array, lab2: Array) -> Array:
    xp = namespace(lab1)
    L1, a1, b1 = xp.contiguous(lab1.T)  # channel-planar: the elementwise kernels then run on dense rows
    L2, a2, b2 = xp.contiguous(lab2.T)
    g = 0.5 * (1.0 - _pow7_ratio(0.5 * (xp.hypot(a1, b1) + xp.hypot(a2, b2))))
    a1p = (1.0 + g) * a1
    a2p = (1.0 + g) * a2
    c1p = xp.hypot(a1p, b1)
    c2p = xp.hypot(a2p, b2)
    two_pi = 2.0 * math.pi
    h1p = xp.arctan2(b1, a1p)
    h1p = xp.where(h1p < 0, h1p + two_pi, h1p)
    h2p = xp.arctan2(b2, a2p)
    h2p = xp.where(h2p < 0, h2p + two_pi, h2p)
    cc = c1p * c2p
    achromatic = cc == 0

    dh = h2p - h1p
    far = abs(dh) > math.pi
    dh = xp.where(far, dh - xp.sign(dh) * two_pi, dh)
    d_h = 2.0 * xp.sqrt(cc) * xp.sin(0.5 * dh)  # zero when achromatic since cc = 0

    h_sum = h1p + h2p
    h_bar = xp.where(far, xp.where(h_sum < two_pi, h_sum + two_pi, h_sum - two_pi), h_sum)
    h_bar = xp.where(achromatic, h_sum, 0.5 * h_bar)

    # T (Eq. 15) from cos/sin of h_bar with multiple-angle identities instead of four cosines.
    c1, s1 = xp.cos(h_bar), xp.sin(h_bar)
    c2 = 2.0 * c1 * c1 - 1.0
    s2 = 2.0 * s1 * c1
    c3 = c1 * (2.0 * c2 - 1.0)
    s3 = s1 * (2.0 * c2 + 1.0)
    c4 = 2.0 * c2 * c2 - 1.0
    s4 = 2.0 * s2 * c2
    t = 1.0 - 0.17 * (c1 * _C30 + s1 * _S30) + 0.24 * c2 + 0.32 * (c3 * _C6 - s3 * _S6) - 0.20 * (c4 * _C63 + s4 * _S63)
    cp_bar = 0.5 * (c1p + c2p)
    x = (h_bar * (1.0 / _DEG) - 275.0) * (1.0 / 25.0)
    r_t = -xp.sin((60.0 * _DEG) * xp.exp(-x * x)) * (2.0 * _pow7_ratio(cp_bar))
    l50 = 0.5 * (L1 + L2) - 50.0
    l50 = l50 * l50
    tl = (L2 - L1) / (1.0 + 0.015 * l50 / xp.sqrt(20.0 + l50))
    tc = (c2p - c1p) / (1.0 + 0.045 * cp_bar)
    th = d_h / (1.0 + 0.015 * cp_bar * t)
    return xp.sqrt(xp.clip(tl * tl + tc * tc + th * th + r_t * tc * th, 0.0, None))


def ciede2000(lab1: Array, lab2: Array) -> Array:
    """CIEDE2000 colour difference, kL = kC = kH = 1 (Sharma, Wu & Dalal 2005, Eqs. 1–24); broadcasts."""
    xp = namespace(lab1)
    lab1, lab2 = xp.broadcast(lab1, lab2)
    shape = lab1.shape[:-1]
    a, b = lab1.reshape(-1, 3), lab2.reshape(-1, 3)
    n = a.shape[0]
    if n <= _CHUNK:
        return _ciede2000_flat(a, b).reshape(shape)
    out = xp.empty(n, like=a)
    for i in range(0, n, _CHUNK):
        out[i : i + _CHUNK] = _ciede2000_flat(a[i : i + _CHUNK], b[i : i + _CHUNK])
    return out.reshape(shape)
