"""Quantise images to a palette, with dithering (docs/craft.md, "Quantise and dither").

Every output pixel is exactly one of the palette's colours (colours of weight 0 are dropped first).

Distance. ``perceptual`` is the CIE 1976 colour difference ΔE*ab, the Euclidean distance in CIELAB
(:func:`.color.srgb_to_lab`); ``rgb`` the Euclidean distance between sRGB values (what Pillow uses).
CIELAB rather than OKLab because it measured better on what a quantiser is judged by here, the CIEDE2000
difference between the blurred input and output: with Floyd–Steinberg on eight photographs and 16-colour
median-cut palettes, diffusing in CIELAB gave 0.92x Pillow's mean ΔE2000 and was better on 8 of 8, OKLab
1.04x and better on 1 (``bench/bench_quantize.py --spaces``).

Dithering.

* ``none``: the nearest colour, exact (float64 distances; ties go to the earlier colour).
* ``floyd-steinberg`` and ``atkinson``: error diffusion, left to right and top to bottom. The error is
  diffused in the space the distance is measured in (CIELAB, or sRGB values for ``rgb``): the nearest
  colour is then chosen for exactly the value that carries the neighbours' errors, and CIELAB's
  near-uniform steps spread the error in proportion to how visible it is (in linear light an error
  of a few levels in the shadows is a tiny number, though the eye sees it). Values carrying error
  are clipped to the palette's bounding box widened by
  :data:`CLIP_MARGIN` (10 ΔE): without a bound, a colour the palette cannot reach piles up error
  without end (streaks); a box without margin throws away error the palette could still show.
  Sequential as it is, the diffusion runs on diagonal wavefronts (pixels with equal ``2y + x`` do
  not depend on each other), each a handful of vectorised numpy operations; with numba, as a compiled
  pixel loop while worker threads convert the rows ahead of it (docs/craft.md, "Speed").
* ``bayer-2``, ``bayer-4``, ``bayer-8`` and ``blue-noise``: ordered dithering. Each pixel's sRGB value
  moves by ``spread * (t - 1/2)`` on all three channels, ``t`` in (0, 1) from a threshold map (Bayer's
  recursive matrices; a 64x64 blue-noise map made by void-and-cluster), then takes the nearest colour.
  ``spread`` is the palette's median distance from a colour to its nearest other colour over sqrt(3)
  (1 for black and white). The nearest colour comes from a table over a 65^3 grid of (moved) sRGB
  values, built once per palette, so the cost per pixel is a few array operations.

``pixel_size`` > 1 first averages each ``pixel_size`` square in linear light (the average of light
that a viewer's eye makes; averaging sRGB values darkens edges between light and dark), quantises that
grid and scales the result back with nearest neighbour. A ``mask`` blends the quantised image over the
original (``q * m + x * (1 - m)``: 1 quantises, 0 keeps the pixel exactly). An RGBA image keeps its alpha.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import wait
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._backend import is_tensor
from ._checks import RANGE_TOLERANCE, as_numpy, check_colors, check_image, check_weights
from ._jit import kernels as compiled_kernels
from ._jit import pool as thread_pool
from ._jit import split_rows
from .color import D65_XYZ, LAB_EPSILON, LAB_KAPPA, linear_to_srgb, srgb_to_lab, srgb_to_linear
from .errors import InputShapeError, PaletteError
from .palette import MAX_COLORS

if TYPE_CHECKING:
    from torch import Tensor

DITHERS = ("none", "floyd-steinberg", "atkinson", "bayer-2", "bayer-4", "bayer-8", "blue-noise")
DISTANCES = ("perceptual", "rgb")
# Push kernels {(dy, dx): weight}: Floyd & Steinberg (1976); Atkinson's (MacPaint) spreads 6/8 of the error.
ERROR_KERNELS = {
    "floyd-steinberg": {(0, 1): 7 / 16, (1, -1): 3 / 16, (1, 0): 5 / 16, (1, 1): 1 / 16},
    "atkinson": {(0, 1): 1 / 8, (0, 2): 1 / 8, (1, -1): 1 / 8, (1, 0): 1 / 8, (1, 1): 1 / 8, (2, 0): 1 / 8},
}
BAYER_SIZES = {"bayer-2": 2, "bayer-4": 4, "bayer-8": 8}
ORDERED_DITHERS = (*BAYER_SIZES, "blue-noise")
# Error diffusion clips the values it carries to the palette's box widened by this much, in working units
# (CIELAB / 100, so 10 ΔE; sRGB values for "rgb"). On the photos of bench_quantize a margin of 0 lost to
# Pillow on 3 of 8 images; 0.1 and 0.2 were better on all 8, 0.1 by a hair the most (docs/craft.md).
CLIP_MARGIN = 0.1
# Ordered dithering: nearest-colour table of LUT_CELLS + 1 cells per sRGB axis over [-spread/2, 1 + spread/2].
LUT_CELLS = 64
BLUE_NOISE_SIZE = 64
BLUE_NOISE_SIGMA = 1.5  # Ulichney's Gaussian filter width for void-and-cluster
BLUE_NOISE_SEED = 0
MAX_PIXEL_SIZE = 1024
# Error diffusion keeps a skewed copy of the image (about 3x its pixels for a square image, 16 bytes each);
# batches and bands of rows are sized to keep it under this many bytes.
DIFFUSION_BUFFER_BYTES = 1 << 28
# CIE 1976 L*a*b* from sRGB (IEC 61966-2-1's 4-digit matrix, D65), as palette_core.color computes it.
_RGB_TO_XYZ_WHITE = (
    np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    / np.array(D65_XYZ)[:, None]
).astype(np.float32)
_F_TO_LAB100 = (np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]]) / 100.0).astype(np.float32)
# Matrix products are kept below 2^18 multiply-adds, where OpenBLAS runs them on one thread: its threads,
# woken for every call of the diffusion's thousands of small steps or slices, made a busy machine 4-10x
# slower (FS on 1024^2: 0.2 s with OPENBLAS_NUM_THREADS=1, 0.8 s without, at a load of 6 on two cores).
_LAB_ROWS = 1 << 14  # pixels per slice of the float32 Lab conversion (x 9)
_NEAREST_CHUNK = 1 << 16  # pixel x colour pairs per slice of nearest searches (x 3)
_SCORE_PAIRS = 1 << 16  # pixel x colour pairs per product in a diffusion step (x 4)
# Compiled error diffusion looks the nearest colour up among the candidates of a cell of a grid this many
# cells a side over the clipping box: 32^3 cells held 1.7 candidates on average for 16 colours of a photo.
NEAREST_CELLS = 32
_ORDERED_ROWS = 64  # rows per slice of ordered dithering: a slice's temporaries stay in cache; all maps tile it
# The compiled paths run on threads (palette_core._jit.threads): error diffusion converts bands of this many
# rows to CIELAB on workers while it diffuses the band before; ordered dithering and the colour look-up hand
# out chunks of this many rows (of 1024 pixels for the look-up), about 0.1 ms of work each.
_DIFFUSION_BAND = 64
_PARALLEL_ROWS = 16


def _choice(value: str, options: tuple[str, ...], name: str) -> str:
    v = value.strip().lower().replace("_", "-").replace(" ", "-") if isinstance(value, str) else value
    v = {"bayer-2x2": "bayer-2", "bayer-4x4": "bayer-4", "bayer-8x8": "bayer-8", "floyd": "floyd-steinberg"}.get(v, v)
    if v not in options:
        raise PaletteError(f"{name}: {value!r} is unknown; expected one of {', '.join(options)}")
    return v


def _pixel_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= MAX_PIXEL_SIZE:
        raise PaletteError(f"pixel_size: {value!r} must be a whole number from 1 (off) to {MAX_PIXEL_SIZE}")
    return int(value)


def palette_array(colors: Tensor | np.ndarray, weights: Tensor | np.ndarray | None = None) -> np.ndarray:
    """The palette's colours ``[K, 3]`` (float32 sRGB) without its weight-0 colours (docs/craft.md)."""
    c, batched = check_colors(colors, numpy=True)
    if batched and c.shape[0] != 1:
        raise InputShapeError(f"colors: shape {tuple(c.shape)}; quantize takes one palette [N, 3] for the batch")
    n = c.shape[1]
    if n > MAX_COLORS:
        raise InputShapeError(f"colors: {n} colours; a palette to quantise to holds 1 to {MAX_COLORS}")
    w = check_weights(weights, c.astype(np.float64))[0]
    return np.ascontiguousarray(c[0][w > 0], dtype=np.float32)


def _split_image(image: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """``(rgb [B, H, W, 3] float32, alpha [B, H, W, 1] float32 or None, was_batched)``; checks everything."""
    x = as_numpy(image, "image")
    if x.ndim not in (3, 4):
        raise InputShapeError(
            f"image: shape {tuple(x.shape)} has {x.ndim} dims; expected [H, W, C] or [B, H, W, C] (channels last)"
        )
    if x.shape[-1] not in (3, 4):
        raise InputShapeError(
            f"image: last dim is {x.shape[-1]}; expected 3 (RGB) or 4 (RGBA, the alpha is kept) channels last"
        )
    alpha = None
    if x.shape[-1] == 4:
        a, _ = check_image(np.repeat(x[..., 3:], 3, axis=-1), "image alpha", numpy=True)
        alpha = np.ascontiguousarray(a[..., :1], dtype=np.float32)
        x = x[..., :3]
    rgb, batched = check_image(x, numpy=True)
    return np.ascontiguousarray(rgb, dtype=np.float32), alpha, batched


def _check_mask(mask: Tensor | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The mask as float32 ``[B, H, W, 1]`` for images of ``shape`` ``[B, H, W, 3]``, or InputShapeError."""
    b, h, w = shape[:3]
    m = as_numpy(mask, "mask")
    given = tuple(m.shape)
    expected = f"expected [{h}, {w}] or [{b}, {h}, {w}] (ComfyUI MASK, 1 = quantise, 0 = keep)"
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != (h, w):
        raise InputShapeError(f"mask: shape {given} does not fit the image {h}x{w}; {expected}")
    if m.shape[0] not in (1, b):
        raise InputShapeError(f"mask: {m.shape[0]} masks for {b} images; give one (shared) or one per image")
    if m.dtype == np.bool_:
        m = m.astype(np.float32)
    elif m.dtype == np.uint8:
        m = m.astype(np.float32) / np.float32(255.0)
    elif not np.issubdtype(m.dtype, np.floating):
        raise InputShapeError(f"mask: dtype {m.dtype} is not supported; expected floats in [0, 1]")
    m = m.astype(np.float32, copy=False)
    lo, hi = (float(m.min()), float(m.max())) if m.size else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InputShapeError(f"mask: values span [{lo:.4g}, {hi:.4g}]; expected finite values in [0, 1]")
    return np.broadcast_to(np.clip(m, 0.0, 1.0)[..., None], (b, h, w, 1))


def _float32_out(out: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``out`` checked to be a C-contiguous float32 array of ``shape``, or a new one when None."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise InputShapeError(f"{name}: out must be C-contiguous float32 of shape {shape}")
    return out


def _work_space(rgb: np.ndarray, distance: str) -> np.ndarray:
    """Coordinates whose Euclidean distance is the chosen distance: CIELAB / 100, or sRGB itself."""
    if distance == "rgb":
        return rgb
    return srgb_to_lab(rgb) / 100.0


def lab100_float32(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """CIELAB / 100 of float32 sRGB ``[..., 3]``: :func:`.color.srgb_to_lab`'s formulas, in fewer float32 passes.

    Agrees with it to about 1e-6 (1e-4 ΔE); error diffusion's working copy of the image, where the
    float64 conversion would cost half as much as the diffusion itself. Slices stay in cache. ``out``: a
    C-contiguous float32 array of ``rgb``'s shape to write into.
    """
    flat = np.ascontiguousarray(rgb, dtype=np.float32).reshape(-1, 3)
    result = _float32_out(out, np.shape(rgb), "lab100_float32")
    out = result.reshape(-1, 3)
    rows = max(1, min(len(flat), _LAB_ROWS))
    curve, cube, root = (np.empty((rows, 3), dtype=np.float32) for _ in range(3))
    low = np.empty((rows, 3), dtype=bool)
    for s in range(0, len(flat), rows):
        x = flat[s : s + rows]
        n = len(x)
        c, t, f, m = curve[:n], cube[:n], root[:n], low[:n]
        np.maximum(x, np.float32(0.04045), out=c)  # IEC 61966-2-1 decoding, the power segment ...
        c += np.float32(0.055)
        c *= np.float32(1 / 1.055)
        np.power(c, np.float32(2.4), out=c)
        if np.less_equal(x, np.float32(0.04045), out=m).any():  # ... and the linear one
            np.copyto(c, x * np.float32(1 / 12.92), where=m)
        np.matmul(c, _RGB_TO_XYZ_WHITE.T, out=t)  # XYZ / white
        np.cbrt(t, out=f)
        if np.less_equal(t, np.float32(LAB_EPSILON), out=m).any():
            np.copyto(f, (np.float32(LAB_KAPPA) * t + np.float32(16)) / np.float32(116), where=m)
        np.matmul(f, _F_TO_LAB100, out=out[s : s + n])
    out[:, 0] -= np.float32(0.16)
    return result


def nearest_indices(pixels: np.ndarray, palette: np.ndarray, distance: str = "perceptual") -> np.ndarray:
    """Nearest palette colour's index per pixel ``[..., 3]``: argmin of ΔE*ab = |Lab - Lab'| or of |rgb - rgb'|.

    Exact to float64 rounding (|p|^2 - 2 x.p, the squared distance less the pixel's own |x|^2); ties go to
    the earlier colour. Returns uint8 (uint16 above 256 colours).
    """
    distance = _choice(distance, DISTANCES, "distance")
    p = _work_space(np.asarray(palette, dtype=np.float64), distance)
    twice = -2.0 * p.T
    norms = (p * p).sum(1)
    flat = np.asarray(pixels).reshape(-1, 3)
    out = np.empty(flat.shape[0], dtype=np.uint8 if len(p) <= 256 else np.uint16)
    step = max(1, _NEAREST_CHUNK // len(p))
    for s in range(0, flat.shape[0], step):
        d = _work_space(flat[s : s + step].astype(np.float64), distance) @ twice
        d += norms
        out[s : s + step] = d.argmin(-1)
    return out.reshape(np.shape(pixels)[:-1])


# --- threshold maps -----------------------------------------------------------------------------------


@functools.cache
def bayer_matrix(n: int) -> np.ndarray:
    """Bayer's ``n x n`` ordered-dither thresholds ``(M + 1/2) / n²`` in (0, 1), n a power of 2 (Bayer 1973).

    Made once per size; read-only.
    """
    if n < 1 or n & (n - 1):
        raise PaletteError(f"bayer size: {n} must be a power of 2")
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    out = ((m + 0.5) / (n * n)).astype(np.float32)
    out.flags.writeable = False
    return out


@functools.cache
def blue_noise(size: int = BLUE_NOISE_SIZE) -> np.ndarray:
    """A ``size x size`` blue-noise threshold map in (0, 1), void-and-cluster (Ulichney 1993), made once.

    Gaussian energy filter (sigma 1.5) on the torus, 10 % initial points from a seeded generator, then
    the three phases; every rank appears once, thresholds are ``(rank + 1/2) / size²``. Read-only.
    """
    n = size * size
    d = np.minimum(np.arange(size), size - np.arange(size)).astype(np.float64)
    g = np.exp(-(d * d) / (2.0 * BLUE_NOISE_SIGMA**2))
    tiled = np.tile(np.outer(g, g), (2, 2))  # tiled[size - y :, size - x :][:size, :size] is the kernel at (y, x)

    def kernel_at(i: int) -> np.ndarray:
        y, x = divmod(i, size)
        return tiled[size - y : 2 * size - y, size - x : 2 * size - x]

    ones = max(1, n // 10)
    pattern = np.zeros((size, size), dtype=bool)
    pattern.flat[np.random.default_rng(BLUE_NOISE_SEED).choice(n, ones, replace=False)] = True
    energy = np.zeros((size, size))
    for i in np.flatnonzero(pattern):
        energy += kernel_at(int(i))

    def tightest(p: np.ndarray, e: np.ndarray) -> int:
        return int(np.where(p, e, -np.inf).argmax())

    def largest_void(p: np.ndarray, e: np.ndarray) -> int:
        return int(np.where(p, np.inf, e).argmin())

    for _ in range(n):  # move the tightest cluster's point to the largest void until that changes nothing
        c = tightest(pattern, energy)
        pattern.flat[c] = False
        energy -= kernel_at(c)
        v = largest_void(pattern, energy)
        pattern.flat[v] = True
        energy += kernel_at(v)
        if v == c:
            break
    rank = np.empty(n, dtype=np.int64)
    p, e = pattern.copy(), energy.copy()
    for r in range(ones - 1, -1, -1):  # phase 1: remove the tightest clusters of the prototype
        c = tightest(p, e)
        p.flat[c] = False
        e -= kernel_at(c)
        rank[c] = r
    p, e = pattern, energy
    for r in range(ones, n):  # phases 2 and 3: fill the largest voids (the minority's tightest clusters)
        v = largest_void(p, e)
        p.flat[v] = True
        e += kernel_at(v)
        rank[v] = r
    out = ((rank.reshape(size, size) + 0.5) / n).astype(np.float32)
    out.setflags(write=False)
    return out


def threshold_map(dither: str) -> np.ndarray:
    """The threshold tile of an ordered ``dither`` (``bayer-2/4/8`` or ``blue-noise``) in (0, 1) (docs/craft.md)."""
    dither = _choice(dither, DITHERS, "dither")
    if dither == "blue-noise":
        return blue_noise()
    if dither not in BAYER_SIZES:
        raise PaletteError(f"dither: {dither!r} has no threshold map; ordered dithers are bayer-2/4/8 and blue-noise")
    return bayer_matrix(BAYER_SIZES[dither])


# --- ordered dithering ----------------------------------------------------------------------------------


def dither_spread(palette: np.ndarray) -> float:
    """Ordered-dither amplitude: median nearest-neighbour sRGB distance of the colours over sqrt(3), at most 1."""
    p = np.ascontiguousarray(palette, dtype=np.float64).reshape(-1, 3)
    return _spread(p.tobytes(), len(p))


@functools.lru_cache(maxsize=16)
def _spread(palette_bytes: bytes, k: int) -> float:
    p = np.frombuffer(palette_bytes, dtype=np.float64).reshape(k, 3)
    if len(p) < 2:
        return 0.0
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nearest = d.min(1)
    nearest = nearest[np.isfinite(nearest) & (nearest > 0)]
    return float(min(1.0, np.median(nearest) / math.sqrt(3.0))) if nearest.size else 0.0


@functools.lru_cache(maxsize=16)
def _ordered_table(palette_bytes: bytes, k: int, distance: str, spread: float) -> tuple[np.ndarray, float]:
    """Nearest-colour indices on the (LUT_CELLS + 1)^3 grid of moved sRGB values, and the grid's scale."""
    palette = np.frombuffer(palette_bytes, dtype=np.float32).reshape(k, 3)
    scale = LUT_CELLS / (1.0 + spread)
    centres = (np.arange(LUT_CELLS + 1) + 0.5) / scale - spread / 2
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    # float32 is plenty here: a cell's colour stands for every value within half a cell of its centre anyway.
    work = grid if distance == "rgb" else lab100_float32(grid)
    p = _work_space(palette.astype(np.float64), distance).astype(np.float32)
    twice, norms = -2.0 * p.T, (p * p).sum(1)
    table = np.empty(len(grid), dtype=np.uint8 if k <= 256 else np.uint16)
    step = max(1, _NEAREST_CHUNK // k)
    for s in range(0, len(grid), step):
        d = work[s : s + step] @ twice
        d += norms
        table[s : s + step] = d.argmin(-1)
    return table, scale


def _ordered(
    rgb: np.ndarray, palette: np.ndarray, thresholds: np.ndarray, distance: str, colours: np.ndarray | None = None
) -> np.ndarray:
    """Ordered dithering: indices ``[B, H, W]`` of ``rgb + spread (t - 1/2)``'s nearest colours (table look-up).

    ``colours``: float32 ``[B, H, W, 3]`` to fill with the colours too (the compiled pass writes both at once).
    """
    b, h, w, _ = rgb.shape
    spread = dither_spread(palette)
    table, scale = _ordered_table(palette.tobytes(), len(palette), distance, spread)
    side = LUT_CELLS + 1
    out = np.empty((b, h, w), dtype=table.dtype)
    # floor(x * scale + spread * t * scale) is the cell of x + spread (t - 1/2) on a grid starting at -spread / 2.
    per_cell = thresholds * np.float32(spread * scale)
    compiled = compiled_kernels()
    if compiled is not None:
        p = np.ascontiguousarray(palette, dtype=np.float32)
        fill = np.empty((b, 0, w, 3), dtype=np.float32) if colours is None else colours
        n = per_cell.shape[1]
        tiled = np.ascontiguousarray(np.tile(per_cell, (1, -(-w // n)))[:, :w])
        for i in range(b):
            image = np.ascontiguousarray(rgb[i])

            def rows(first: int, end: int, image: np.ndarray = image, i: int = i) -> None:
                compiled.ordered(image, table, np.float32(scale), tiled, side, p, out[i], fill[i], first, end)

            split_rows(rows, h, _PARALLEL_ROWS)
        return out
    rows = min(_ORDERED_ROWS, h)
    n = thresholds.shape[0]
    tile = np.tile(per_cell, (-(-rows // n), -(-w // n)))[:rows, :w]
    offset = np.ascontiguousarray(np.repeat(tile[..., None], 3, -1), dtype=np.float32)
    weights = np.array([side * side, side, 1], dtype=np.float32)
    u = np.empty((rows, w, 3), dtype=np.float32)
    flat = np.empty((rows, w), dtype=np.float32)
    index = np.empty((rows, w), dtype=np.intp)
    for i in range(b):
        for y0 in range(0, h, rows):
            r = min(rows, h - y0)
            np.multiply(rgb[i, y0 : y0 + r], np.float32(scale), out=u[:r])
            np.add(u[:r], offset[:r], out=u[:r])
            np.floor(u[:r], out=u[:r])
            np.matmul(u[:r], weights, out=flat[:r])
            index[:r] = flat[:r]
            np.take(table, index[:r], out=out[i, y0 : y0 + r])
    if colours is not None:
        palette_colours(palette, out, colours)
    return out


# --- error diffusion ------------------------------------------------------------------------------------


def _diffusion_geometry(kernel: dict[tuple[int, int], float]) -> tuple[int, int, int]:
    """``(a, rows, reach)``: wavefront ``t = a y + x``, rows of error above a pixel, furthest ``dt`` it pulls."""
    a = max([1] + [-(-(1 - dx) // dy) for dy, dx in kernel if dy >= 1])
    rows = max(dy for dy, _ in kernel)
    reach = max(a * dy + dx for dy, dx in kernel)
    return a, rows, reach


def _buffer_bytes(b: int, h: int, w: int, a: int, rows: int, reach: int) -> int:
    return (a * (h - 1) + w + max(reach, a * rows)) * b * (h + rows) * 16


@functools.lru_cache(maxsize=16)
def _cells(palette_bytes: bytes, k: int, box_bytes: bytes, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    palette = np.frombuffer(palette_bytes, dtype=np.float32).reshape(k, 3).astype(np.float64)
    lo, hi = np.frombuffer(box_bytes, dtype=np.float32).reshape(2, 3).astype(np.float64)
    edges = lo[:, None] + (hi - lo)[:, None] * (np.arange(g + 1) / g)[None]  # [3, g + 1]
    near = edges[:, :-1, None] - palette.T[:, None, :]  # [3, g, K]: each cell's lower edge less each colour
    far = edges[:, 1:, None] - palette.T[:, None, :]
    inside = (near <= 0) & (far >= 0)
    lo_d = np.where(inside, 0.0, np.minimum(near * near, far * far))  # per axis: nearest and farthest offsets
    hi_d = np.maximum(near * near, far * far)
    keep = np.empty((g, g, g, k), dtype=bool)
    for i in range(g):  # a slab of cells at a time keeps the [g, g, K] temporaries small for 256 colours
        closest = lo_d[0, i][None, None] + lo_d[1][:, None] + lo_d[2][None, :]
        farthest = hi_d[0, i][None, None] + hi_d[1][:, None] + hi_d[2][None, :]
        bound = farthest.min(-1, keepdims=True)
        keep[i] = closest <= bound * (1 + 1e-5) + 1e-9  # margin: float32 values may stray past a cell's edge
    keep = keep.reshape(g**3, k)
    offsets = np.zeros(g**3 + 1, dtype=np.int64)
    np.cumsum(keep.sum(1), out=offsets[1:])
    candidates = np.nonzero(keep)[1].astype(np.int64)  # ascending within each cell
    inverse_step = (g / (hi - lo)).astype(np.float32)
    return offsets, candidates, inverse_step


def nearest_cells(
    palette: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: int = NEAREST_CELLS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell of a ``g^3`` grid over the box ``[lo, hi]``, the colours that can be nearest to a point in it.

    Heckbert's locally sorted search (Heckbert 1982, "Color image quantization for frame buffer display"):
    a colour whose least distance to the cell exceeds some colour's greatest distance to it is never the
    nearest there. Returns ``(offsets [g^3 + 1], candidates, inverse_step [3])``: cell ``c``'s colours are
    ``candidates[offsets[c]:offsets[c + 1]]`` in ascending order; a value ``v`` lies in the cell
    ``floor((v - lo) * inverse_step)`` per axis. Made once per palette and box (cached).
    """
    p = np.ascontiguousarray(palette, dtype=np.float32)
    box = np.stack([np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32)])
    return _cells(p.tobytes(), len(p), box.tobytes(), g)


def error_diffusion(
    work: np.ndarray,
    palette: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    kernel: str = "floyd-steinberg",
    *,
    convert: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Error-diffusion indices ``[B, H, W]`` of ``work [B, H, W, 3]`` to ``palette [K, 3]`` (Floyd & Steinberg 1976).

    Raster order, values clipped to ``[lo, hi]`` before each choice, nearest by Euclidean distance, error
    pushed with the kernel's weights (Floyd & Steinberg 1976; Atkinson). Pixels with equal ``a y + x``
    are independent, so each such diagonal is one vectorised step; every pixel *pulls* its neighbours'
    errors with one small matrix product, which is the same sum as pushing them. Results equal the plain
    pixel-by-pixel loop. Batches run side by side; images too large for DIFFUSION_BUFFER_BYTES run in
    bands of rows that hand their last rows' errors down. Where numba is installed, the pixel loop itself
    runs compiled instead (:func:`._jit.diffuse`, the nearest colour among its cell's candidates,
    :func:`nearest_cells`), with the same results. ``convert(rows, out)``, when given, maps rows of ``work``
    into the palette's space first; the compiled path converts the next band of rows on worker threads
    while it diffuses the band before.
    """
    taps = ERROR_KERNELS[_choice(kernel, tuple(ERROR_KERNELS), "kernel")]
    a, rows, reach = _diffusion_geometry(taps)
    b, h, w, _ = work.shape
    out = np.empty((b, h, w), dtype=np.uint8 if len(palette) <= 256 else np.uint16)
    compiled = compiled_kernels()
    if compiled is not None:
        _diffuse_compiled(compiled, work, palette, lo, hi, taps, out, convert, rows + 1)
        return out
    if convert is not None:
        work = convert(work, np.empty(work.shape, dtype=np.float32))
    per_image = _buffer_bytes(1, h, w, a, rows, reach)
    group = max(1, DIFFUSION_BUFFER_BYTES // per_image)
    band = h
    while band > 8 and _buffer_bytes(1, band, w, a, rows, reach) > DIFFUSION_BUFFER_BYTES:
        band = (band + 1) // 2
    p = palette.astype(np.float32)
    lo4 = np.append(lo, 1.0).astype(np.float32)
    hi4 = np.append(hi, 1.0).astype(np.float32)
    for b0 in range(0, b, group):
        imgs = work[b0 : b0 + group].astype(np.float32, copy=False)
        carry = np.zeros((imgs.shape[0], rows, w, 4), dtype=np.float32)
        for y0 in range(0, h, band):
            carry = _diffuse_band(
                imgs[:, y0 : y0 + band], carry, out[b0 : b0 + group, y0 : y0 + band], p, lo4, hi4, taps
            )
    return out


def _diffuse_compiled(
    compiled: object,
    work: np.ndarray,
    palette: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    taps: dict[tuple[int, int], float],
    out: np.ndarray,
    convert: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    ring: int,
) -> None:
    """The compiled loop, band by band, errors in a ring of ``ring`` rows; with ``convert``, the bands are
    converted ahead on the worker pool."""
    p = np.ascontiguousarray(palette, dtype=np.float32)
    norms = np.ascontiguousarray(0.5 * (p * p).sum(1), dtype=np.float32)  # as the numpy path's scores
    lo32, hi32 = np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32)
    cells = nearest_cells(p, lo32, hi32)
    tap_array = np.array(list(taps), dtype=np.int64)
    weights = np.array(list(taps.values()), dtype=np.float32)
    b, h, w, _ = work.shape
    bands = [(y0, min(h, y0 + _DIFFUSION_BAND)) for y0 in range(0, h, _DIFFUSION_BAND)]
    workers = thread_pool() if convert is not None and len(bands) > 1 else None
    for i in range(b):
        errors = np.zeros((ring, w + 4, 3), dtype=np.float32)
        if convert is None:
            image = np.ascontiguousarray(work[i], dtype=np.float32)
        else:
            image = np.empty((h, w, 3), dtype=np.float32)
        jobs = [] if workers is None else [workers.submit(convert, work[i, y0:y1], image[y0:y1]) for y0, y1 in bands]
        try:
            for j, (y0, y1) in enumerate(bands):
                if jobs and not jobs[j].cancel():
                    jobs[j].result()
                elif convert is not None:  # no worker has started on it yet: convert it here, now
                    convert(work[i, y0:y1], image[y0:y1])
                compiled.diffuse(
                    image, p, norms, lo32, hi32, tap_array, weights, *cells, NEAREST_CELLS, out[i], errors, y0, y1
                )
        finally:  # on an error, stop converting bands nobody will read
            for job in jobs:
                job.cancel()
            wait(jobs)


def _diffuse_band(
    work: np.ndarray,
    carry: np.ndarray,
    out: np.ndarray,
    palette: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    taps: dict[tuple[int, int], float],
) -> np.ndarray:
    """Diffuse one band of rows into ``out``; ``carry`` holds the errors of the rows above. Returns the new carry.

    The band lives in a skewed buffer ``S[t, b, y + rows]`` with ``t = a y + x + off``: a diagonal is one
    contiguous row of S, and the errors a pixel pulls lie in the ``reach`` rows of S before its own.
    Channel 3 is a homogeneous 1 (0 in errors), so one product scores ``v.p - |p|^2 / 2`` for all colours.
    """
    a, rows, reach = _diffusion_geometry(taps)
    b, h, w, _ = work.shape
    off = max(reach, a * rows)
    steps = a * (h - 1) + w
    s = np.zeros((steps + off, b, h + rows, 4), dtype=np.float32)
    st, sb, sy, sc = s.strides
    pixels = as_strided(s[off, :, rows:], shape=(b, h, w, 4), strides=(sb, a * st + sy, st, sc))
    pixels[..., :3] = work
    pixels[..., 3] = 1.0
    as_strided(s[off - a * rows], shape=(b, rows, w, 4), strides=(sb, a * st + sy, st, sc))[...] = carry
    ob, oy, ox = out.strides
    skewed_out = as_strided(out, shape=(steps, b, h), strides=(ox, ob, oy - a * ox))

    k = len(palette)
    scores = np.concatenate([palette.T, -0.5 * (palette * palette).sum(1)[None]], 0).astype(np.float32)
    colours = np.concatenate([palette, np.ones((k, 1), np.float32)], 1)
    pull = np.zeros((rows + 1, reach), dtype=np.float32)  # pull[dy, j]: weight of S row t - reach + j, y - dy
    for (dy, dx), weight in taps.items():
        pull[dy, reach - (a * dy + dx)] = weight
    lo_rows = np.ascontiguousarray(np.broadcast_to(lo, (b, h, 4)))
    hi_rows = np.ascontiguousarray(np.broadcast_to(hi, (b, h, 4)))
    pulled = np.empty((b, rows + 1, (h + rows) * 4), dtype=np.float32)
    scored = np.empty((b, h, k), dtype=np.float32)
    chosen = np.empty((b, h), dtype=np.intp)
    picked = np.empty((b, h, 4), dtype=np.float32)
    by_image = s.transpose(1, 0, 2, 3)
    score_rows = max(1, _SCORE_PAIRS // k)
    for t in range(steps):
        y_lo = max(0, -(-(t - w + 1) // a))
        y_hi = min(h - 1, t // a) + 1
        n = y_hi - y_lo
        tt = t + off
        window = by_image[:, tt - reach : tt, y_lo : y_hi + rows].reshape(b, reach, -1)
        got = np.matmul(pull, window, out=pulled[:, :, : (n + rows) * 4]).reshape(b, rows + 1, n + rows, 4)
        v = s[tt, :, y_lo + rows : y_hi + rows]
        for dy in range(rows + 1):
            np.add(v, got[:, dy, rows - dy : rows - dy + n], out=v)
        np.minimum(v, hi_rows[:, :n], out=v)
        np.maximum(v, lo_rows[:, :n], out=v)
        if n * k <= _SCORE_PAIRS:
            np.matmul(v, scores, out=scored[:, :n])
        else:  # large palettes: slices of rows, each product small enough for one thread
            for r in range(0, n, score_rows):
                np.matmul(v[:, r : r + score_rows], scores, out=scored[:, r : min(n, r + score_rows)])
        best = scored[:, :n].argmax(-1, out=chosen[:, :n])
        skewed_out[t, :, y_lo:y_hi] = best
        np.subtract(v, colours.take(best, axis=0, out=picked[:, :n]), out=v)
    errors = np.concatenate([carry, pixels[:, -rows:]], axis=1)[:, -rows:]  # channel 3 of an error is 0
    return np.ascontiguousarray(errors)


def _diffusion_bounds(work_palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return work_palette.min(0) - CLIP_MARGIN, work_palette.max(0) + CLIP_MARGIN


# --- pixel grid -----------------------------------------------------------------------------------------


def area_downsample(rgb: np.ndarray, size: int) -> np.ndarray:
    """Mean of each ``size x size`` cell of ``rgb [B, H, W, 3]`` in linear light, edge cells partial (docs/craft.md)."""
    b, h, w, _ = rgb.shape
    gh, gw = -(-h // size), -(-w // size)
    lin = np.zeros((b, gh * size, gw * size, 3), dtype=np.float64)
    lin[:, :h, :w] = srgb_to_linear(rgb.astype(np.float64))
    sums = lin.reshape(b, gh, size, gw, size, 3).sum((2, 4))
    count_h = np.minimum(size, h - np.arange(gh) * size)
    count_w = np.minimum(size, w - np.arange(gw) * size)
    mean = sums / (count_h[:, None] * count_w[None, :])[None, :, :, None]
    return np.clip(linear_to_srgb(mean), 0.0, 1.0).astype(np.float32)


def nearest_upsample(grid: np.ndarray, size: int, h: int, w: int) -> np.ndarray:
    """Each cell of ``grid [B, h', w', ...]`` repeated ``size x size`` times, cropped to ``h x w`` (docs/craft.md)."""
    return np.repeat(np.repeat(grid, size, axis=1), size, axis=2)[:, :h, :w]


def palette_colours(palette: np.ndarray, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``palette[index]``: float32 colours ``[..., 3]`` of palette indices ``[...]`` (docs/craft.md); ``out``:
    a C-contiguous float32 array of that shape to fill."""
    p = np.ascontiguousarray(palette, dtype=np.float32)
    flat = np.ascontiguousarray(index).reshape(-1)
    shape = np.shape(index) + (3,)
    result = _float32_out(out, shape, "palette_colours")
    rows = result.reshape(-1, 3)
    compiled = compiled_kernels()
    if compiled is not None:

        def part(first: int, end: int) -> None:
            compiled.colours_of(p, flat[first:end], rows[first:end])

        split_rows(part, flat.size, _PARALLEL_ROWS * 1024)
    else:  # one 12-byte item per colour: twice as fast as take(axis=0) on rows of three floats
        item = np.dtype((np.void, 12))
        # mode="clip" (the indices are in range): with the default "raise", take copies through a buffer
        p.view(item).ravel().take(flat, out=rows.view(item).reshape(-1), mode="clip")
    return result


# --- the public entry point -----------------------------------------------------------------------------


def quantize_indices(
    rgb: np.ndarray,
    palette: np.ndarray,
    dither: str = "floyd-steinberg",
    distance: str = "perceptual",
    *,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """Palette indices ``[B, H, W]`` of images ``rgb [B, H, W, 3]`` (float32 sRGB) (docs/craft.md).

    ``colours``: a C-contiguous float32 ``[B, H, W, 3]`` to fill with the chosen colours as well (ordered
    dithering writes both in one pass).
    """
    dither = _choice(dither, DITHERS, "dither")
    distance = _choice(distance, DISTANCES, "distance")
    if dither in ORDERED_DITHERS and len(palette) > 1:
        return _ordered(rgb, palette, threshold_map(dither), distance, colours)
    if dither == "none" or len(palette) == 1:
        index = nearest_indices(rgb, palette, distance)
    else:
        work_palette = _work_space(palette.astype(np.float64), distance)
        lo, hi = _diffusion_bounds(work_palette)
        convert = None if distance == "rgb" else lab100_float32
        index = error_diffusion(rgb, work_palette, lo, hi, dither, convert=convert)
    if colours is not None:
        palette_colours(palette, index, colours)
    return index


def quantize(
    image: Tensor | np.ndarray,
    colors: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
    *,
    dither: str = "floyd-steinberg",
    distance: str = "perceptual",
    pixel_size: int = 1,
    mask: Tensor | np.ndarray | None = None,
) -> Tensor | np.ndarray:
    """Quantise ``image`` to the palette ``colors`` with dithering (docs/craft.md, "Quantise and dither").

    ``image`` ``[H, W, 3|4]`` or ``[B, H, W, 3|4]`` sRGB (float in [0, 1] or uint8; a 4th channel is alpha
    and is returned unchanged); ``colors`` ``[N, 3]`` (1 to 256), ``weights`` ``[N]`` (colours of weight 0
    are not used); ``dither`` one of :data:`DITHERS`, ``distance`` ``"perceptual"`` (ΔE*ab) or ``"rgb"``;
    ``pixel_size`` the side of the pixel grid (1 = off); ``mask`` ``[H, W]`` or ``[B|1, H, W]`` in [0, 1]
    (1 = quantise, 0 = keep the pixel). Returns float32 of the input's shape and kind (numpy, or a tensor
    on the input's device; the work is done on the CPU).
    """
    dither = _choice(dither, DITHERS, "dither")
    distance = _choice(distance, DISTANCES, "distance")
    size = _pixel_size(pixel_size)
    palette = palette_array(colors, weights)
    rgb, alpha, batched = _split_image(image)
    m = _check_mask(mask, rgb.shape) if mask is not None else None
    b, h, w, _ = rgb.shape
    if size > 1:
        idx = nearest_upsample(quantize_indices(area_downsample(rgb, size), palette, dither, distance), size, h, w)
        out = palette_colours(palette, idx)
    else:
        out = np.empty((b, h, w, 3), dtype=np.float32)
        quantize_indices(rgb, palette, dither, distance, colours=out)
    if m is not None:
        out = out * m + rgb * (1.0 - m)  # exact at 0 and 1: q*1 + x*0 = q, q*0 + x*1 = x
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=-1)
    out = out if batched else out[0]
    if is_tensor(image):
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(image.device)
    return out
