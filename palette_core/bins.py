"""The 34 x 12 x 10 HSV bin layout of the Palette-Adapter and its binning kernels (paper §3.1, docs/design.md §4).

Bin layout (frozen: trained adapters depend on it): ``h = floor(34 H) mod 34``, ``s = min(floor(12 S), 11)``,
``v = min(floor(10 V), 9)`` on float hexcone HSV; flat index ``(h * 12 + s) * 10 + v``. Bin indices are
computed in float64 with the exact operations of :mod:`colorsys`, so a bin never depends on the input
dtype, the device or the array library. Image histograms of float32 pixels decide each bin in float32 and
recompute in float64 only the pixels whose float32 hue, saturation or value lies within ``_EDGE_EPS`` of a
bin edge (far more than the float32 error can move them): the counts are identical. The kernels take numpy
arrays or tensors and return the same kind (:mod:`._backend`) and do not validate: :mod:`.histogram` is the
checked torch API.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from ._backend import NUMPY, namespace
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


# The float32 pre-pass. A count of its roundings bounds the error of its scaled hue 34 H by ~2.4e-5
# (saturation and value far less; under 1e-5 measured on edge-hugging pixels, tests/test_histogram.py):
# pixels within _EDGE_EPS of an edge, 40x that, are recomputed exactly.
_EDGE_EPS = 1e-3
# float32 pixels per slice of the pre-pass: every operation writes into 15 planes allocated once (fresh
# arrays cost more than the arithmetic: page faults), small enough for the cache, large enough that the
# ~50 calls per slice cost little (measured on 1024^2 images: 2^16 beats 2^14 by 20% and 2^18 by 2x).
_FAST_CHUNK = 1 << 16
# The pre-pass keeps the hue row shifted by _HUE_SHIFT (rows 0.._HUE_ROWS-1, no per-pixel modulo); the
# counts are folded back onto the 34 hue bins once per image.
_HUE_SHIFT = 6
_HUE_ROWS = H_BINS + _HUE_SHIFT
_ROW = S_BINS * V_BINS
_GREY_HUE = 0.5 * 6.0 / H_BINS  # hue numerator of grey pixels: puts them mid-way in hue bin 0


def _scaled_hsv_f32(rgb: Array, work: Array) -> Array:
    """``[3, N]`` float32 ``(34 H + 6 (mod 34), 12 S, 10 V)`` of float32 planes ``[3, N]``, S and V clipped into
    [0.5, 11.5] and [0.5, 9.5] (docs/design.md §4 bins; edges that cannot change a bin moved mid-bin).

    Hexcone hue without branches: with ``C = max - min`` and ``e_r, e_g`` = 0 where red, green is the
    maximum (1 elsewhere), ``6 H C = A + e_r (2C + B - A + e_g (2C + D - B))`` where ``A, B, D = g - b, b - r,
    r - g``: colorsys' three branches ``A``, ``2C + B``, ``4C + D`` in its order. Every term is at most a few
    ``C`` in size, so the float32 error is relative to ``C``, not to the channels: no pixel is too grey for
    it. Exact greys get the hue of mid-bin 0 (their bin) rather than 0 (an edge). S = 0, S = 1, V = 0 and
    V = 1 are no edges either (``min(., 11)``, ``min(., 9)``): clipped mid-way into the end bins. ``work``
    holds 9 float32 planes ``[>= 9, N]`` that every step writes into; the result is ``work[6:9]``.
    """
    xp = namespace(rgb)
    r, g, b = rgb[0], rgb[1], rgb[2]
    maxc, chroma, grey, flag, t, u = work[0], work[1], work[2], work[3], work[4], work[5]
    scaled = work[6:9]
    xp.maximum(r, g, out=maxc)
    xp.maximum(maxc, b, out=maxc)
    xp.minimum(r, g, out=chroma)
    xp.minimum(chroma, b, out=chroma)
    xp.subtract(maxc, chroma, out=chroma)
    # 0/1 flags by ceil of a difference in [0, 1]: exact, as a float difference is 0 only between equal numbers
    xp.ceil(chroma, out=grey)
    xp.subtract(1.0, grey, out=grey)
    xp.subtract(r, g, out=t)  # D
    xp.subtract(b, r, out=u)  # B
    xp.subtract(t, u, out=t)  # D - B
    t += chroma
    t += chroma
    xp.subtract(maxc, g, out=flag)
    xp.ceil(flag, out=flag)
    t *= flag  # e_g (2C + D - B)
    t += u
    t += chroma
    t += chroma  # 2C + B + e_g (...)
    xp.subtract(g, b, out=u)  # A
    t -= u
    xp.subtract(maxc, r, out=flag)
    xp.ceil(flag, out=flag)
    t *= flag
    t += u  # 6 H C
    xp.multiply(grey, _GREY_HUE, out=u)
    t += u
    xp.add(chroma, grey, out=u)  # a safe divisor: 1 where the chroma is 0
    xp.divide(t, u, out=scaled[0])  # scaled after the division: a subnormal chroma times 6/34 could underflow
    scaled[0] *= H_BINS / 6.0
    scaled[0] += _HUE_SHIFT
    xp.add(maxc, grey, out=u)
    xp.divide(chroma, u, out=scaled[1])
    scaled[1] *= S_BINS
    xp.multiply(maxc, V_BINS, out=scaled[2])
    lo, hi = xp.const([[0.5], [0.5]], like=rgb), xp.const([[S_BINS - 0.5], [V_BINS - 0.5]], like=rgb)
    xp.clip(scaled[1:], lo, hi, out=scaled[1:])
    return scaled


def _shifted_bins_f32(rgb: Array, work: Array) -> tuple[Array, Array]:
    """``(bins, edge)`` of float32 planes ``[3, N]``: bins with the hue row shifted by ``_HUE_SHIFT``, and the
    positions of the pixels within ``_EDGE_EPS`` of a bin edge, whose bins must be recomputed (docs/design.md §4).

    ``work``: 12 float32 planes ``[>= 12, N]``, overwritten.
    """
    xp = namespace(rgb)
    scaled, floors, near = _scaled_hsv_f32(rgb, work), work[9:12], work[0]
    xp.floor(scaled, out=floors)
    scaled -= floors
    scaled -= 0.5
    xp.abs(scaled, out=scaled)  # 0.5 minus the distance to the nearest edge
    xp.maximum(scaled[0], scaled[1], out=near)
    xp.maximum(near, scaled[2], out=near)
    (edge,) = xp.nonzero(~(near <= 0.5 - _EDGE_EPS))  # so written, a NaN would count as an edge
    idx = work[1]
    xp.multiply(floors[0], _ROW, out=idx)  # exact: integers below 2^24
    floors[1] *= V_BINS
    idx += floors[1]
    idx += floors[2]
    return xp.astype(idx, xp.int64), edge


def _fold_hue(counts: Array) -> Array:
    """Counts over the shifted hue rows ``[_HUE_ROWS * 120]`` folded onto the 4080 bins (row q is hue q - 6 mod 34)."""
    rows = counts.reshape(_HUE_ROWS, _ROW)
    out = rows[_HUE_SHIFT:] + 0
    out[H_BINS - _HUE_SHIFT :] += rows[:_HUE_SHIFT]
    return out.reshape(NUM_BINS)


def pixel_counts(pixels: Array) -> Array:
    """Pixels per bin ``[4080]`` (int64) of ``[N, 3]`` sRGB pixels in [0, 1], unchecked (docs/design.md §4)."""
    xp = namespace(pixels)
    if pixels.dtype == xp.float32:
        if xp is NUMPY or pixels.device.type != "cpu":
            return _pixel_counts_f32(pixels)
        # numpy on the CPU: its ufuncs on cache-sized slices beat torch's per-op dispatch and thread hand-offs
        return xp.from_numpy(_pixel_counts_f32(pixels.detach().numpy()))
    counts = xp.zeros(NUM_BINS, like=pixels, dtype=xp.int64)
    for j in range(0, pixels.shape[0], _CHUNK):
        counts += xp.bincount(_bins_of_planar(pixels[j : j + _CHUNK]), minlength=NUM_BINS)
    return counts


def _pixel_counts_f32(pixels: Array) -> Array:
    """:func:`pixel_counts` of float32 pixels: the float32 pre-pass, then one exact pass over all edge pixels."""
    xp = namespace(pixels)
    size = _HUE_ROWS * _ROW
    counts = xp.zeros(size + 1, like=pixels, dtype=xp.int64)  # the last slot collects the edge pixels
    step = min(_FAST_CHUNK, pixels.shape[0])
    planes = xp.empty((15, step), like=pixels)  # 3 channel planes, then the pre-pass's 12 work planes
    edges = []
    for j in range(0, pixels.shape[0], step):
        chunk = pixels[j : j + step]
        rgb = planes[:3, : chunk.shape[0]]
        rgb[...] = chunk.T
        idx, edge = _shifted_bins_f32(rgb, planes[3:, : chunk.shape[0]])
        if edge.shape[0]:
            idx[edge] = size
            edges.append(chunk[edge])
        counts += xp.bincount(idx, minlength=size + 1)
    counts = _fold_hue(counts[:size])
    if edges:
        counts += xp.bincount(_bins_of_planar(xp.cat(edges)), minlength=NUM_BINS)
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
