"""The 34 x 12 x 10 HSV bin layout of the Palette-Adapter and its binning kernels (paper §3.1, docs/design.md §4).

Bin layout (frozen: trained adapters depend on it): ``h = floor(34 H) mod 34``, ``s = min(floor(12 S), 11)``,
``v = min(floor(10 V), 9)`` on float hexcone HSV; flat index ``(h * 12 + s) * 10 + v``. Bin indices are
computed in float64 with the exact operations of :mod:`colorsys`, so a bin never depends on the input
dtype, the device or the array library. The kernels take numpy arrays or tensors and return the same
kind (:mod:`._backend`) and do not validate: :mod:`.histogram` is the checked torch API.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from ._backend import namespace
from .color import hsv_planes, hsv_to_srgb, srgb_to_lab

if TYPE_CHECKING:
    from typing import TypeVar

    from torch import Tensor

    Array = TypeVar("Array", Tensor, np.ndarray)

H_BINS, S_BINS, V_BINS = 34, 12, 10
HIST_SHAPE = (H_BINS, S_BINS, V_BINS)
NUM_BINS = H_BINS * S_BINS * V_BINS
MAX_ENTROPY = math.log2(NUM_BINS)
HISTOGRAM_ID = "hsv-34x12x10-v1"

# Colours per slice when binning: keeps the float64 temporaries small (about 2x faster on 1024^2 images).
_CHUNK = 1 << 17


def _bins_of_planar(rgb: Array) -> Array:
    xp = namespace(rgb)
    h, s, v = hsv_planes(*xp.astype(rgb.T, xp.float64))  # float64 channel planes: dtype-independent bins
    hi = xp.remainder(xp.floor(h * H_BINS), H_BINS)
    si = xp.clip(xp.floor(s * S_BINS), None, S_BINS - 1)
    vi = xp.clip(xp.floor(v * V_BINS), None, V_BINS - 1)
    return xp.astype((hi * S_BINS + si) * V_BINS + vi, xp.int64)


def bins_of(rgb: Array) -> Array:
    """Flat bin (int64) of each sRGB colour ``[..., 3]`` in [0, 1], unchecked (docs/design.md §4 bin layout)."""
    xp = namespace(rgb)
    flat = rgb.reshape(-1, 3)
    if flat.shape[0] <= _CHUNK:
        return _bins_of_planar(flat).reshape(rgb.shape[:-1])
    idx = xp.empty(flat.shape[0], like=flat, dtype=xp.int64)
    for i in range(0, flat.shape[0], _CHUNK):
        idx[i : i + _CHUNK] = _bins_of_planar(flat[i : i + _CHUNK])
    return idx.reshape(rgb.shape[:-1])


def pixel_counts(pixels: Array) -> Array:
    """Pixels per bin ``[4080]`` (int64) of ``[N, 3]`` sRGB pixels in [0, 1], unchecked (docs/design.md §4)."""
    xp = namespace(pixels)
    counts = xp.zeros(NUM_BINS, like=pixels, dtype=xp.int64)
    for j in range(0, pixels.shape[0], _CHUNK):
        counts += xp.bincount(_bins_of_planar(pixels[j : j + _CHUNK]), minlength=NUM_BINS)
    return counts


def weighted_counts(colors: Array, weights: Array) -> Array:
    """Sum of the weights ``[B, N]`` of the colours ``[B, N, 3]`` per bin, ``[B, 4080]`` (docs/design.md §4)."""
    xp = namespace(weights)
    return xp.add_at_rows(xp.zeros((colors.shape[0], NUM_BINS), like=weights), bins_of(colors), weights)


@functools.cache
def bin_centers_f64() -> np.ndarray:
    """sRGB of each bin's centre ``((h+.5)/34, (s+.5)/12, (v+.5)/10)``, float64 ``[4080, 3]`` (docs/design.md §4)."""
    h, s, v = np.meshgrid(
        (np.arange(H_BINS) + 0.5) / H_BINS,
        (np.arange(S_BINS) + 0.5) / S_BINS,
        (np.arange(V_BINS) + 0.5) / V_BINS,
        indexing="ij",
    )
    return hsv_to_srgb(np.stack((h, s, v), axis=-1).reshape(NUM_BINS, 3))


@functools.cache
def bin_lab_f64() -> np.ndarray:
    """CIE L*a*b* of each bin's centre, float64 ``[4080, 3]`` (docs/design.md §4 bin similarity)."""
    return srgb_to_lab(bin_centers_f64())
