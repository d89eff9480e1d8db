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
# faster than the float32 pre-pass of bins.pixel_counts on them (many 8-bit colours sit exactly on a bin
# edge and take its exact pass) and, by construction, identical to it.
_LUT_MIN_PIXELS = 1 << 18
_PROBE = 1 << 10  # pixels checked for 8-bit levels before the table (built on first use) is touched


def bin_index(rgb: Tensor | np.ndarray) -> Tensor:
    """Flat HSV-histogram bin of each sRGB colour ``[..., 3]`` in [0, 1] (docs/design.md §4 bin layout)."""
    x = check_rgb(rgb)
    if x.numel() == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
    return bins_of(x)


@functools.lru_cache(maxsize=1)
def _uint8_lut() -> np.ndarray:
    """Bin of every 8-bit colour as ComfyUI stores it (float32 k / 255): 2^24 int16 entries, 32 MB."""
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    gb = np.stack(np.meshgrid(levels, levels, indexing="ij"), axis=-1).reshape(-1, 2)
    lut = np.empty((256, 256 * 256), dtype=np.int16)
    rgb = np.empty((gb.shape[0], 3), dtype=np.float32)
    rgb[:, 1:] = gb
    for r in range(256):
        rgb[:, 0] = levels[r]
        lut[r] = bins_of(rgb)
    return lut.reshape(-1)


def _counts_8bit(pixels: Tensor | np.ndarray) -> np.ndarray | None:
    """Bin counts through the 8-bit table when every CPU pixel ``[N, 3]`` is exactly float32(k / 255), else None."""
    if isinstance(pixels, Tensor):
        if pixels.device.type != "cpu":
            return None
        pixels = pixels.detach().numpy()
    if pixels.dtype != np.float32 or pixels.shape[0] < _LUT_MIN_PIXELS:
        return None
    probe = pixels[:_PROBE]
    if not np.array_equal(np.rint(probe * np.float32(255.0)) / np.float32(255.0), probe):  # continuous: cheap no
        return None
    lut = _uint8_lut()
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    for j in range(0, pixels.shape[0], _CHUNK):  # slices keep the temporaries small and reused
        chunk = pixels[j : j + _CHUNK]
        levels = np.rint(chunk * np.float32(255.0))
        if not np.array_equal(levels / np.float32(255.0), chunk):
            return None
        k = levels.astype(np.int32)
        key = (k[:, 0] * 256 + k[:, 1]) * 256 + k[:, 2]
        counts += np.bincount(lut[key], minlength=NUM_BINS)
    return counts


def image_histogram(image: Tensor | np.ndarray) -> Tensor:
    """Normalised HSV histogram ``[4080]`` of an image ``[H, W, 3]``, or ``[B, 4080]`` of ``[B, H, W, 3]`` (§3.1)."""
    if isinstance(image, Tensor) and image.device.type != "cpu":
        x, batched = check_image(image)
    else:
        # CPU images are checked and binned in numpy: single-threaded ufuncs on cache-sized slices, where
        # torch's per-op OpenMP hand-offs (and their spinning workers) cost more than the work on a busy CPU
        x, batched = check_image(image, numpy=True)
    flat = x.reshape(x.shape[0], -1, 3)
    counts = []
    for pixels in flat:
        fast = _counts_8bit(pixels)
        counts.append(torch.as_tensor(pixel_counts(pixels) if fast is None else fast))
    wide = x.dtype == (np.float64 if isinstance(x, np.ndarray) else torch.float64)
    hist = torch.stack(counts).to(torch.float64 if wide else torch.float32) / flat.shape[1]
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
