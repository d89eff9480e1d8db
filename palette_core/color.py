"""Colour-space conversions and CIEDE2000 (SPEC §3–§4).

Every function takes a tensor whose last dimension holds three channels (``[..., 3]``), works on any
device and floating dtype, and returns the same shape. sRGB is IEC 61966-2-1 with its companding; XYZ
and Lab use the D65 white point of the CIE 1931 2° observer, xy = (0.3127, 0.3290); HSV is the float
hexcone model with :mod:`colorsys` semantics (hue, saturation, value in [0, 1]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

D65_XY = (0.3127, 0.3290)
# IEC 61966-2-1 publishes both matrices to four decimals (colour-science uses the same pair); the
# published inverse is not the exact inverse, so an sRGB -> XYZ -> sRGB round trip is exact to ~2e-4.
_M_RGB_TO_XYZ = [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
_M_XYZ_TO_RGB = [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]


def _xy_to_xyz(x: float, y: float) -> list[float]:
    return [x / y, 1.0, (1.0 - x - y) / y]


D65_XYZ = tuple(_xy_to_xyz(*D65_XY))
_LAB_EPSILON = 216.0 / 24389.0
_LAB_KAPPA = 24389.0 / 27.0


def _matmul3(x: Tensor, m: list[list[float]]) -> Tensor:
    return x @ torch.tensor(m, dtype=x.dtype, device=x.device).T


def srgb_to_linear(rgb: Tensor) -> Tensor:
    """sRGB companding inverse, IEC 61966-2-1 (SPEC §3)."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: Tensor) -> Tensor:
    """sRGB companding, IEC 61966-2-1 (SPEC §3)."""
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def linear_to_xyz(lin: Tensor) -> Tensor:
    """Linear sRGB to CIE XYZ (D65, Y of white = 1) (SPEC §3)."""
    return _matmul3(lin, _M_RGB_TO_XYZ)


def xyz_to_linear(xyz: Tensor) -> Tensor:
    """CIE XYZ (D65) to linear sRGB (SPEC §3)."""
    return _matmul3(xyz, _M_XYZ_TO_RGB)


def xyz_to_lab(xyz: Tensor) -> Tensor:
    """CIE XYZ to CIE 1976 L*a*b* relative to D65 (SPEC §3)."""
    t = xyz / torch.tensor(D65_XYZ, dtype=xyz.dtype, device=xyz.device)
    f = torch.where(t > _LAB_EPSILON, t.clamp_min(_LAB_EPSILON) ** (1 / 3), (_LAB_KAPPA * t + 16) / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-1)


def lab_to_xyz(lab: Tensor) -> Tensor:
    """CIE 1976 L*a*b* (D65) to CIE XYZ (SPEC §3)."""
    L, a, b = lab.unbind(-1)
    fy = (L + 16) / 116
    f = torch.stack((fy + a / 500, fy, fy - b / 200), dim=-1)
    t = torch.where(f**3 > _LAB_EPSILON, f**3, (116 * f - 16) / _LAB_KAPPA)
    # L* decides Y directly (avoids the cube root's branch disagreeing with the linear segment).
    ty = torch.where(L > _LAB_KAPPA * _LAB_EPSILON, fy**3, L / _LAB_KAPPA)
    t = torch.stack((t[..., 0], ty, t[..., 2]), dim=-1)
    return t * torch.tensor(D65_XYZ, dtype=lab.dtype, device=lab.device)


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] to CIE L*a*b* (D65) (SPEC §3)."""
    return xyz_to_lab(linear_to_xyz(srgb_to_linear(rgb)))


def lab_to_srgb(lab: Tensor) -> Tensor:
    """CIE L*a*b* (D65) to sRGB, not clipped: out-of-gamut colours fall outside [0, 1] (SPEC §3)."""
    return linear_to_srgb(xyz_to_linear(lab_to_xyz(lab)))


def hsv_planes(r: Tensor, g: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hexcone ``(h, s, v)`` from channel planes, op for op as ``colorsys.rgb_to_hsv`` (SPEC §4)."""
    # In-place arithmetic on fresh temporaries: on large planes allocation dominates otherwise.
    maxc = torch.maximum(torch.maximum(r, g), b)
    rangec = maxc - torch.minimum(torch.minimum(r, g), b)
    grey = rangec == 0
    s = rangec / (maxc + (maxc == 0))  # rangec is 0 wherever maxc is 0, so s is 0 there as in colorsys
    safe_range = rangec.add_(grey)  # exact: adds 1 only where the range is 0
    rc = (maxc - r).div_(safe_range)
    gc = (maxc - g).div_(safe_range)
    bc = (maxc - b).div_(safe_range)
    h = torch.where(r == maxc, bc.sub_(gc), torch.where(g == maxc, (2.0 + rc).sub_(bc), gc.add_(4.0).sub_(rc)))
    h = torch.remainder(h.div_(6.0), 1.0).masked_fill_(grey, 0.0)
    return h, s, maxc


def srgb_to_hsv(rgb: Tensor) -> Tensor:
    """Float hexcone HSV ``[..., 3]`` with exactly the operations of ``colorsys.rgb_to_hsv`` (SPEC §4)."""
    return torch.stack(hsv_planes(*rgb.unbind(-1)), dim=-1)


def hsv_to_srgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`srgb_to_hsv` with ``colorsys.hsv_to_rgb`` semantics (SPEC §4)."""
    h, s, v = hsv.unbind(-1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    i = torch.remainder(i, 6).long()
    # Rows of the sector table: which of (v, q, p, t) goes to r, g, b in each of the 6 sectors.
    table = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=hsv.device)
    choices = torch.stack((v, q, p, t), dim=-1)
    rgb = torch.gather(choices, -1, table[i])
    return torch.where((s == 0).unsqueeze(-1), v.unsqueeze(-1).expand_as(rgb), rgb)


_25_POW_7 = 25.0**7
_DEG = math.pi / 180.0
# cos/sin of the phase offsets in T (Sharma Eq. 15), so T needs one cos and one sin of h_bar.
_C30, _S30 = math.cos(30 * _DEG), math.sin(30 * _DEG)
_C6, _S6 = math.cos(6 * _DEG), math.sin(6 * _DEG)
_C63, _S63 = math.cos(63 * _DEG), math.sin(63 * _DEG)
_CHUNK = 1 << 17  # pairs per slice: bounds the ~40 temporaries' memory on large inputs


def _pow7_ratio(c: Tensor) -> Tensor:
    c2 = c * c
    c7 = c2 * c2 * c2 * c
    return torch.sqrt(c7 / (c7 + _25_POW_7))


def _ciede2000_flat(lab1: Tensor, lab2: Tensor) -> Tensor:
    L1, a1, b1 = lab1.T.contiguous()  # channel-planar: the elementwise kernels then run on dense rows
    L2, a2, b2 = lab2.T.contiguous()
    g = 0.5 * (1.0 - _pow7_ratio(0.5 * (torch.hypot(a1, b1) + torch.hypot(a2, b2))))
    a1p = (1.0 + g) * a1
    a2p = (1.0 + g) * a2
    c1p = torch.hypot(a1p, b1)
    c2p = torch.hypot(a2p, b2)
    two_pi = 2.0 * math.pi
    h1p = torch.atan2(b1, a1p)
    h1p = torch.where(h1p < 0, h1p + two_pi, h1p)
    h2p = torch.atan2(b2, a2p)
    h2p = torch.where(h2p < 0, h2p + two_pi, h2p)
    cc = c1p * c2p
    achromatic = cc == 0

    dh = h2p - h1p
    far = dh.abs() > math.pi
    dh = torch.where(far, dh - torch.sign(dh) * two_pi, dh)
    d_h = 2.0 * torch.sqrt(cc) * torch.sin(0.5 * dh)  # zero when achromatic since cc = 0

    h_sum = h1p + h2p
    h_bar = torch.where(far, torch.where(h_sum < two_pi, h_sum + two_pi, h_sum - two_pi), h_sum)
    h_bar = torch.where(achromatic, h_sum, 0.5 * h_bar)

    # T (Eq. 15) from cos/sin of h_bar with multiple-angle identities instead of four cosines.
    c1, s1 = torch.cos(h_bar), torch.sin(h_bar)
    c2 = 2.0 * c1 * c1 - 1.0
    s2 = 2.0 * s1 * c1
    c3 = c1 * (2.0 * c2 - 1.0)
    s3 = s1 * (2.0 * c2 + 1.0)
    c4 = 2.0 * c2 * c2 - 1.0
    s4 = 2.0 * s2 * c2
    t = 1.0 - 0.17 * (c1 * _C30 + s1 * _S30) + 0.24 * c2 + 0.32 * (c3 * _C6 - s3 * _S6) - 0.20 * (c4 * _C63 + s4 * _S63)
    cp_bar = 0.5 * (c1p + c2p)
    x = (h_bar * (1.0 / _DEG) - 275.0) * (1.0 / 25.0)
    r_t = -torch.sin((60.0 * _DEG) * torch.exp(-x * x)) * (2.0 * _pow7_ratio(cp_bar))
    l50 = 0.5 * (L1 + L2) - 50.0
    l50 = l50 * l50
    tl = (L2 - L1) / (1.0 + 0.015 * l50 / torch.sqrt(20.0 + l50))
    tc = (c2p - c1p) / (1.0 + 0.045 * cp_bar)
    th = d_h / (1.0 + 0.015 * cp_bar * t)
    return torch.sqrt((tl * tl + tc * tc + th * th + r_t * tc * th).clamp_min(0.0))


def ciede2000(lab1: Tensor, lab2: Tensor) -> Tensor:
    """CIEDE2000 colour difference, kL = kC = kH = 1 (Sharma, Wu & Dalal 2005, Eqs. 1–24); broadcasts."""
    lab1, lab2 = torch.broadcast_tensors(lab1, lab2)
    shape = lab1.shape[:-1]
    a, b = lab1.reshape(-1, 3), lab2.reshape(-1, 3)
    n = a.shape[0]
    if n <= _CHUNK:
        return _ciede2000_flat(a, b).reshape(shape)
    out = torch.empty(n, dtype=a.dtype, device=a.device)
    for i in range(0, n, _CHUNK):
        out[i : i + _CHUNK] = _ciede2000_flat(a[i : i + _CHUNK], b[i : i + _CHUNK])
    return out.reshape(shape)
