"""The 34 x 12 x 10 HSV colour histogram of the Palette-Adapter (paper §3.1, docs/design.md §4): the checked torch API.

The bin layout and the binning kernels (shared with numpy callers) live in :mod:`.bins`: ``h = floor(34 H)
mod 34``, ``s = min(floor(12 S), 11)``, ``v = min(floor(10 V), 9)`` on float hexcone HSV; flat index
``(h * 12 + s) * 10 + v``, computed in float64 with the exact operations of :mod:`colorsys`.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ._checks import check_colors, check_image, check_rgb, check_weights
from .bins import (
    H_BINS,
    HIST_SHAPE,
    HISTOGRAM_ID,
    MAX_ENTROPY,
    NUM_BINS,
    S_BINS,
    V_BINS,
    bin_centers_f64,
    bins_of,
    pixel_counts,
    weighted_counts,
)

__all__ = [
    "H_BINS",
    "HISTOGRAM_ID",
    "HIST_SHAPE",
    "MAX_ENTROPY",
    "NUM_BINS",
    "S_BINS",
    "V_BINS",
    "bin_centers",
    "bin_index",
    "entropy",
    "image_histogram",
    "palette_histogram",
]

# Pixels per slice of the 8-bit table lookup: keeps the temporaries small and reused.
_CHUNK = 1 << 17
# 8-bit images (every pixel exactly float32(k / 255), as ComfyUI loads PNG and JPEG files) of at least
# this many pixels are binned through a lookup table of all 2^24 colours, built on first use (~1 s):
# about 3x faster than the exact float64 path and, by construction, identical to it.
_LUT_MIN_PIXELS = 1 << 18


def bin_index(rgb: Tensor | np.ndarray) -> Tensor:
    """Flat HSV-histogram bin of each sRGB colour ``[..., 3]`` in [0, 1] (docs/design.md §4 bin layout)."""
    x = check_rgb(rgb)
    if x.numel() == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
    return bins_of(x)


@functools.lru_cache(maxsize=1)
def _uint8_lut() -> Tensor:
    """Bin of every 8-bit colour as ComfyUI stores it (float32 k / 255): 2^24 int16 entries, 32 MB."""
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    g, b = torch.meshgrid(levels, levels, indexing="ij")
    gb = torch.stack((g.reshape(-1), b.reshape(-1)), dim=-1)
    lut = torch.empty(256, 256 * 256, dtype=torch.int16)
    for r in range(256):
        lut[r] = bins_of(torch.cat((levels[r].expand(gb.shape[0], 1), gb), dim=-1)).to(torch.int16)
    return lut.reshape(-1)


def _counts_8bit(pixels: Tensor) -> Tensor | None:
    """Bin counts through the 8-bit table when every pixel is exactly float32(k / 255), else None."""
    if pixels.dtype != torch.float32 or pixels.device.type != "cpu" or pixels.shape[0] < _LUT_MIN_PIXELS:
        return None
    lut = _uint8_lut()
    counts = torch.zeros(NUM_BINS, dtype=torch.long)
    for j in range(0, pixels.shape[0], _CHUNK):  # slices keep the temporaries small and reused
        chunk = pixels[j : j + _CHUNK]
        levels = torch.round(chunk * 255.0)
        if not torch.equal(levels / 255.0, chunk):
            return None
        k = levels.to(torch.int32)
        key = (k[:, 0] * 256 + k[:, 1]) * 256 + k[:, 2]
        counts += torch.bincount(torch.index_select(lut, 0, key).long(), minlength=NUM_BINS)
    return counts


def image_histogram(image: Tensor | np.ndarray) -> Tensor:
    """Normalised HSV histogram ``[4080]`` of an image ``[H, W, 3]``, or ``[B, 4080]`` of ``[B, H, W, 3]`` (§3.1)."""
    x, batched = check_image(image)
    flat = x.reshape(x.shape[0], -1, 3)
    counts = torch.zeros(x.shape[0], NUM_BINS, dtype=torch.long, device=x.device)
    for i, pixels in enumerate(flat):
        fast = _counts_8bit(pixels)
        counts[i] = pixel_counts(pixels) if fast is None else fast
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    hist = counts.to(dtype) / flat.shape[1]
    return hist if batched else hist[0]


def palette_histogram(colors: Tensor | np.ndarray, weights: Tensor | np.ndarray | None = None) -> Tensor:
    """Palette histogram: each colour adds its normalised weight to its bin (§3.1); ``[N,3]`` -> ``[4080]``."""
    c, batched = check_colors(colors)
    w = check_weights(weights, c)
    dtype = c.dtype if c.dtype == torch.float64 else torch.float32
    hist = weighted_counts(c, w.to(dtype))
    return hist if batched else hist[0]


def entropy(hist: Tensor) -> Tensor:
    """Shannon entropy ``-sum p log2 p`` in bits over the last dim, after L1 normalisation (paper §3.4)."""
    total = hist.sum(-1, keepdim=True)
    p = hist / torch.where(total > 0, total, torch.ones_like(total))
    terms = torch.where(p > 0, -p * torch.log2(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return terms.sum(-1)


def bin_centers(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """sRGB of each bin's centre ``((h+.5)/34, (s+.5)/12, (v+.5)/10)``, shape ``[4080, 3]`` (docs/design.md §4)."""
    return torch.from_numpy(bin_centers_f64()).to(dtype=dtype, device=device)
