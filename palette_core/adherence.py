"""Palette adherence of images, per image and per pixel (docs/palettes.md, "Palette adherence in the graph").

Per image: the paper's EMD protocol (:func:`.distance.palette_emd`, Table 1), the Quadratic-Chi distance
between the image's and the palette's HSV histograms (:func:`.distance.quadratic_chi`), and the share of
off-palette pixels. Per pixel: the CIEDE2000 difference (Sharma, Wu & Dalal 2005) to the nearest palette
colour; a pixel is off-palette when that difference exceeds a threshold (ΔE 10 by default: clearly another
colour, where about 2 is just noticeable). Pixels are read at 8-bit precision, as they are saved (each
channel moves by at most half a level), so the differences are computed once per distinct 8-bit colour.
Palette colours of weight 0 take no part, as in the EMD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_colors, check_image, check_weights
from .color import (
    D65_XYZ,
    ciede2000,
    lab_to_xyz,
    linear_to_srgb,
    linear_to_xyz,
    srgb_to_lab,
    srgb_to_linear,
    xyz_to_lab,
)
from .distance import palette_emd, quadratic_chi
from .errors import InputShapeError
from .histogram import image_histogram, palette_histogram

DEFAULT_THRESHOLD = 10.0
# ΔE pairs per slice (distinct colours x palette colours): bounds the temporaries (~40 per pair).
_PAIRS = 1 << 17
MAGENTA = (1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Adherence:
    """Scores of a batch ``[B]`` (float64) and the per-pixel ΔE to the nearest palette colour ``[B, H, W]``."""

    emd: Tensor
    quadratic_chi: Tensor
    off_fraction: Tensor
    delta_e: Tensor
    threshold: float


def check_threshold(threshold: float) -> float:
    """A ΔE threshold: a finite number > 0 (docs/palettes.md)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise InputShapeError(f"threshold: {threshold!r} must be a finite number (CIEDE2000 ΔE, e.g. 10)")
    if threshold <= 0:
        raise InputShapeError(f"threshold: {threshold!r} must be > 0 (CIEDE2000 ΔE, e.g. 10)")
    return float(threshold)


def nearest_delta_e(image: Tensor, colors: Tensor, weights: Tensor | None = None) -> Tensor:
    """CIEDE2000 from each pixel of ``image [B, H, W, 3]`` to its nearest palette colour ``[N, 3]`` -> ``[B, H, W]``.

    Sharma, Wu & Dalal (2005) on 8-bit levels of the pixels; colours of weight 0 are left out. float32.
    """
    x, batched = check_image(image)
    c, multi = check_colors(colors)
    if multi and c.shape[0] != 1:
        raise InputShapeError(f"colors: {c.shape[0]} palettes; give one palette [N, 3]")
    w = check_weights(weights, c)[0]
    keep = c[0][w > 0].to(device=x.device, dtype=torch.float64)
    # float32 ΔE: about 6x faster than float64 on the CPU, within 1e-3 of it (tests/test_interop.py).
    lab_palette = srgb_to_lab(keep).float()
    levels = torch.round(x.reshape(-1, 3).clamp(0, 1) * 255.0).to(torch.int32)
    key = (levels[:, 0] * 256 + levels[:, 1]) * 256 + levels[:, 2]
    distinct, inverse = torch.unique(key, return_inverse=True)
    rgb = torch.stack((distinct // 65536, (distinct // 256) % 256, distinct % 256), dim=-1).double() / 255.0
    lab = srgb_to_lab(rgb).float()
    best = torch.empty(lab.shape[0], dtype=torch.float32, device=x.device)
    step = max(1, _PAIRS // lab_palette.shape[0])
    for i in range(0, lab.shape[0], step):
        best[i : i + step] = ciede2000(lab[i : i + step, None, :], lab_palette[None]).amin(dim=-1)
    out = best[inverse].reshape(x.shape[:3])
    return out if batched else out[0]


def palette_adherence(
    image: Tensor,
    colors: Tensor,
    weights: Tensor | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    samples: int = 1024,
    seed: int = 0,
) -> Adherence:
    """EMD (paper Table 1), Quadratic-Chi (Pele & Werman 2010) and off-palette share of each image (docs/palettes.md).

    ``image`` is ``[H, W, 3]`` or ``[B, H, W, 3]``; ``colors [N, 3]`` and ``weights [N]`` one palette for all.
    A pixel is off-palette when its :func:`nearest_delta_e` exceeds ``threshold``.
    """
    t = check_threshold(threshold)
    x, _ = check_image(image)
    c, _ = check_colors(colors)
    if c.shape[0] != 1:
        raise InputShapeError(f"colors: {c.shape[0]} palettes; give one palette [N, 3] for all the images")
    w = check_weights(weights, c)
    emd = palette_emd(x, c[0], w[0], samples=samples, seed=seed)
    qc = quadratic_chi(image_histogram(x), palette_histogram(c[0], w[0]).to(x.device)).double().cpu()
    de = nearest_delta_e(x, c[0], w[0])
    off = (de > t).double().mean(dim=(1, 2)).cpu()
    return Adherence(emd, qc, off, de, t)


def mark_off_palette(image: Tensor, off: Tensor, color: tuple[float, float, float] = MAGENTA) -> Tensor:
    """``image`` as grey of L* ``20 + 0.6 L*`` with the ``off [B, H, W]`` pixels in ``color`` (docs/palettes.md).

    The grey keeps each pixel's lightness order, squeezed into L* 20-80 so that a marked pixel stands out
    on white and on black alike.
    """
    x, batched = check_image(image)
    m = off.reshape(-1, *off.shape[-2:]).to(device=x.device, dtype=torch.bool)
    if m.shape[0] not in (1, x.shape[0]) or tuple(m.shape[1:]) != tuple(x.shape[1:3]):
        raise InputShapeError(f"off: shape {tuple(off.shape)} does not match the image {tuple(x.shape[:3])}")
    # L* depends on the luminance Y alone; a neutral's Y is its linear sRGB value on all three channels.
    y = linear_to_xyz(srgb_to_linear(x.float()))[..., 1:2]
    faded = 20.0 + 0.6 * xyz_to_lab(y * y.new_tensor(D65_XYZ))[..., :1]
    luminance = lab_to_xyz(torch.cat((faded, torch.zeros_like(faded), torch.zeros_like(faded)), -1))[..., 1:2]
    grey = linear_to_srgb(luminance).clamp(0, 1).to(x.dtype).expand(*x.shape)
    marked = torch.where(m[..., None], torch.tensor(color, dtype=x.dtype, device=x.device), grey)
    return marked if batched else marked[0]
