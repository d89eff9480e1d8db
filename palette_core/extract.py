"""Palette extraction by median cut and k-means, matching the Pylette library (docs/design.md §4 "Palette extraction").

The image is brought to 8-bit sRGB (floats are rounded to the nearest level) and, unless ``resize`` is
None, resampled to ``resize x resize`` pixels with Pillow's bicubic filter, exactly as Pylette does
(a square resample that ignores the aspect ratio; it also upsamples small images). The palette is then
extracted from those pixels:

* ``median_cut``: Pylette's median cut, bit for bit. The box (set of pixels) of largest volume
  ``prod(max - min)`` over R, G, B is sorted along its widest channel with numpy's default argsort and
  split at index ``len // 2``, until there are ``size`` boxes. The colour is the box mean rounded to an
  8-bit level, the weight the box's pixel share. Numpy's sort is used on purpose: which of the pixels tied
  at the median go left decides later splits, so only the very same sort reproduces Pylette's boxes.
* ``kmeans``: Lloyd's k-means in RGB with greedy k-means++ seeding as in scikit-learn (which Pylette
  calls), but with ``KMEANS_RESTARTS`` seeded restarts so the result is no worse than Pylette's single
  run. The restarts run side by side on the weighted means of a 32- or 64-level colour grid (the worse
  half dropped every few iterations), the best is finished on the distinct colours of the image. Colours
  are the exact centroids (Pylette truncates them to 8 bits), weights the cluster shares.

Both return colours sorted by share, largest first (ties keep the extraction order). If the image has at
most ``size`` distinct colours, both return exactly those colours with their pixel shares, so a palette
can have fewer than ``size`` colours.

With a region ``mask`` (docs/regions.md) only the pixels the mask covers take part, each weighted by its
mask value (area-averaged to the extraction grid; a resampled pixel that blends in colours from outside the
region does not count, see :func:`region_weights`): k-means weighs the colours by the summed mask; median
cut keeps the pixels with a mask above 0, splits each box at the weighted median and gives boxes their
weighted mean and weight. A mask of ones changes nothing, and a 0/1 mask gives exactly the palette of the
pixels it selects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ._checks import RANGE_TOLERANCE, as_tensor, check_image
from ._jit import kernels, pool, sort_columns, split_rows
from .errors import InputShapeError, PaletteError
from .masks import fit_mask
from .palette import MAX_COLORS, Palette

Method = Literal["kmeans", "median_cut"]
METHODS: tuple[str, ...] = ("kmeans", "median_cut")
DEFAULT_RESIZE = 256
# Restarts of k-means++ run side by side; the best by quantisation error is kept (scikit-learn runs one).
KMEANS_RESTARTS = 8
KMEANS_HALVE_EVERY = 3
KMEANS_MAX_ITER = 300
# Convergence: total squared centroid shift below this fraction of the mean per-channel variance (sklearn's tol).
KMEANS_TOL = 1e-4
_FINER_CELLS = 2048  # fewer occupied 32-level cells than this: use 64 levels
_MIN_CELLS = 256  # fewer occupied grid cells than this: k-means++ seeds on the exact colours
_MAX_PIXELS = 1 << 28  # 268 M pixels: beyond this a full-resolution extraction is refused
_MIN_BAND = 128  # rows or columns: a resample band any smaller costs more in Pillow calls than a thread saves
_PAIRED_SORT = 4096  # pixels: a smaller box is not worth a second thread
_PILLOW_13 = int(PIL.__version__.split(".")[0]) >= 13  # Pillow 13 picks the order of its two passes


def _check_method(method: str) -> str:
    m = method.replace("-", "_").lower() if isinstance(method, str) else method
    if m not in METHODS:
        raise PaletteError(f'method "{method}" is unknown: expected "kmeans" or "median_cut"')
    return m


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= int(size) <= MAX_COLORS:
        raise PaletteError(f"size {size!r}: expected an integer number of colours from 1 to {MAX_COLORS}")
    return int(size)


def _check_resize(resize: int | None) -> int | None:
    if resize is None:
        return None
    if isinstance(resize, bool) or not isinstance(resize, (int, np.integer)) or int(resize) < 1:
        raise PaletteError(f"resize {resize!r}: expected a positive side length in pixels, or None for full resolution")
    return int(resize)


def _to_uint8(image: Tensor | np.ndarray, keep_float: bool = False) -> np.ndarray:
    """Images ``[B, H, W, 3]`` as 8-bit sRGB numpy (uint8 input is kept, floats are rounded to 1/255 levels).

    ``keep_float``: float32/64 pixels come back as they are, for :func:`_resample` to round band by band
    while it resamples (one pass over the image, not two; with the compiled kernels only).
    """
    x = as_tensor(image, "image")
    if x.ndim in (3, 4) and x.shape[-1] in (3, 4) and x.numel() > 0:
        a = x.detach().cpu()
        a = (a.float() if a.dtype in (torch.float16, torch.bfloat16) else a).numpy()
        a = a[..., :3] if a.ndim == 4 else a[None, ..., :3]
        if a.dtype == np.uint8:
            return np.ascontiguousarray(a)
        if a.dtype in (np.float32, np.float64):
            if keep_float and kernels() is not None:
                return a
            u8 = _float_to_uint8(a.reshape(-1, a.shape[-2], 3))
            if u8 is not None:
                return u8.reshape(a.shape)
    f, _ = check_image(x)  # every other form, and the error messages
    return f.mul(255.0).round_().to(torch.uint8).cpu().numpy()


def _float_to_uint8(a: np.ndarray, rows: int = 64) -> np.ndarray | None:
    """Rows of float pixels ``[R, W, 3]`` rounded to 8-bit, or None if any value is non-finite or out of range.

    Bands of rows on threads: the compiled kernel (one pass), or numpy in cache-sized blocks (numpy lets go
    of the GIL in each operation; no torch threads to stall on a busy CPU).
    """
    out = np.empty(a.shape, dtype=np.uint8)
    valid = [True]
    if kernels() is not None:

        def compiled(first: int, end: int) -> None:
            if not _rows_to_uint8(a[first:end], out[first:end]):
                valid[0] = False

        split_rows(compiled, a.shape[0], _MIN_BAND)
        return out if valid[0] else None

    def band(first: int, end: int) -> None:
        buf = np.empty((rows, *a.shape[1:]), dtype=np.float32)
        for i in range(first, end, rows):
            block, b = a[i : min(i + rows, end)], buf[: min(rows, end - i)]
            lo, hi = float(block.min()), float(block.max())  # NaN propagates: one test for both
            if not (math.isfinite(lo) and math.isfinite(hi) and lo >= -RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE):
                valid[0] = False
                return
            np.multiply(block, 255.0, out=b)
            if lo < 0 or hi > 1:
                np.clip(b, 0.0, 255.0, out=b)
            out[i : i + len(b)] = np.rint(b, out=b)

    split_rows(band, a.shape[0], max(_MIN_BAND, rows))
    return out if valid[0] else None


def _rows_to_uint8(a: np.ndarray, out: np.ndarray) -> bool:
    """Float pixels ``a [R, W, 3]`` rounded into ``out`` by the compiled kernel; False if a value is out of range."""
    rows = a.reshape(len(a), -1)  # a copy only if the rows are not contiguous (an RGBA image's RGB)
    return kernels().to_uint8(rows, out.reshape(len(out), -1), RANGE_TOLERANCE, 0, len(rows))


def _as_uint8(a: np.ndarray) -> np.ndarray:
    """An image ``[H, W, 3]`` that :func:`_to_uint8` kept in floats, rounded; the usual error if out of range."""
    if a.dtype == np.uint8:
        return a
    u8 = _float_to_uint8(a)
    return u8 if u8 is not None else _to_uint8(a)[0]  # _to_uint8 raises check_image's error


def resized_pixels(image: Tensor | np.ndarray, resize: int | None = DEFAULT_RESIZE) -> Tensor:
    """The 8-bit pixels ``[N, 3]`` extraction sees: Pylette's ``resize²`` bicubic resample (docs/design.md §4)."""
    u8 = _to_uint8(image)
    if u8.shape[0] != 1:
        raise InputShapeError(f"image: batch of {u8.shape[0]} images; pass one image [H, W, 3] or [1, H, W, 3]")
    return torch.from_numpy(np.array(_resample(u8[0], _check_resize(resize)).reshape(-1, 3)))


def _resample(u8: np.ndarray, resize: int | None) -> np.ndarray:
    """Pylette's resample: Pillow ``Image.resize((resize, resize))`` (bicubic for RGB), or the image as is."""
    if resize is None:
        if u8.shape[0] * u8.shape[1] > _MAX_PIXELS:
            raise InputShapeError(
                f"image: {u8.shape[0]}x{u8.shape[1]} pixels is too large for a full-resolution extraction; "
                "pass resize=256 (or another side length)"
            )
        return _as_uint8(u8)
    if u8.shape[0] == resize and u8.shape[1] == resize:
        return _as_uint8(u8)  # Pillow returns a copy of an image already at the requested size
    try:
        return _bicubic(u8, resize, resize)
    except _OutOfRange:
        return _as_uint8(u8)  # raises the error that says what is wrong


def _bicubic(u8: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's ``Image.resize((width, height), BICUBIC)`` of 8-bit RGB ``[H, W, 3]``, pixel for pixel, on threads.

    Pillow resamples in two passes with an 8-bit image between them, horizontal first (Pillow >= 13: vertical
    first when the height shrinks more than twice as much as the width). Each output row of the horizontal
    pass reads one input row, each column of the vertical pass one column: here each pass is its own Pillow
    call, the horizontal one on bands of rows and the vertical one on bands of columns, one per thread
    (Pillow lets go of the GIL while it resamples), so the image is the one call's, bit for bit.
    """
    h, w = u8.shape[0], u8.shape[1]
    vertical_first = _PILLOW_13 and 0 < h - height and h - height > 2 * (w - width)
    passes = [_horizontal, _vertical] if not vertical_first else [_vertical, _horizontal]
    out = u8 if u8.dtype == np.uint8 or (passes[0] is _horizontal and w != width) else _as_uint8(u8)
    for run in passes:
        out = run(out, width, height)
    return out


class _OutOfRange(ValueError):
    """A band of float pixels holds a value out of range (the caller raises the error that says which)."""


def _horizontal(u8: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's horizontal pass to ``width`` (a resize that keeps the height), bands of rows on threads."""
    if u8.shape[1] == width:
        return u8
    out = np.empty((u8.shape[0], width, 3), dtype=np.uint8)

    def band(first: int, end: int) -> None:
        rows = u8[first:end]
        if rows.dtype != np.uint8:  # float pixels (see _to_uint8's keep_float): rounded here, while in cache
            rows, floats = np.empty(rows.shape, dtype=np.uint8), rows
            if not _rows_to_uint8(floats, rows):
                raise _OutOfRange
        img = Image.fromarray(np.ascontiguousarray(rows))
        out[first:end] = np.asarray(img.resize((width, end - first), Image.Resampling.BICUBIC))

    split_rows(band, u8.shape[0], _MIN_BAND)
    return out


def _vertical(u8: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's vertical pass to ``height`` (a resize that keeps the width), bands of columns on threads."""
    if u8.shape[0] == height:
        return u8
    out = np.empty((height, u8.shape[1], 3), dtype=np.uint8)

    def band(first: int, end: int) -> None:
        img = Image.fromarray(np.ascontiguousarray(u8[:, first:end]))
        out[:, first:end] = np.asarray(img.resize((end - first, height), Image.Resampling.BICUBIC))

    split_rows(band, u8.shape[1], _MIN_BAND)
    return out


def _pack(px: np.ndarray) -> np.ndarray:
    """8-bit pixels ``[N, 3]`` as int32 keys ``r << 16 | g << 8 | b`` (one compare per pixel)."""
    p = px.astype(np.int32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


def _few_colours(px: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(colours [M, 3] uint8, counts [M])`` by ``_pack`` key if at most ``size`` distinct colours, else None."""
    if len(px) > 64 * size and len(np.unique(_pack(px[:: len(px) // (16 * size)]))) > size:
        return None  # a sample already holds more colours: no pass over every pixel
    keys = _pack(px)
    if size > 16:  # one sort beats size + 1 passes over the pixels
        uniq, counts = np.unique(keys, return_counts=True)
        if len(uniq) > size:
            return None
    else:
        left = np.ones(len(keys), dtype=bool)
        found: list[int] = []
        while left.any():
            if len(found) == size:
                return None
            found.append(int(keys[int(np.argmax(left))]))
            left &= keys != found[-1]
        uniq = np.sort(np.asarray(found, dtype=np.int64))
        counts = np.array([(keys == u).sum() for u in uniq], dtype=np.int64)
    colours = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.uint8)
    return colours, counts.astype(np.int64)


def _sorted_palette(colours: Tensor | np.ndarray, counts: Tensor | np.ndarray) -> Palette:
    """Palette of ``colours [M, 3]`` in [0, 1] weighted by pixel ``counts``, largest share first (stable)."""
    colours, counts = np.asarray(colours, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    return Palette.from_colors(np.clip(colours[order], 0.0, 1.0), counts[order])


def _median_cut(px: np.ndarray, size: int, weights: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
    """Pylette's median cut of 8-bit pixels ``[N, 3]`` (docs/design.md §4): ``(means [M, 3] in [0, 1], mass [M])``.

    Boxes come in Pylette's list order; the mass is the pixel count. With ``weights [N] > 0``
    (docs/regions.md) a box splits where its cumulative weight passes half its total (unit weights split at
    ``len // 2``, as Pylette) and gets its weighted mean and total weight (float64) as its mass.

    Two threads sort two boxes at once: the box to split now and the one of largest volume after it. Sorting
    a box that is never split changes nothing (its integer sums do not depend on the order of its pixels),
    and one that is split later is then already as its own sort would leave it. (Not with weights: their
    float sums do depend on it.)
    """
    data = np.array(px.T, order="C")  # writable planar [3, N]: contiguous sort keys, cheap segment min/max
    # relative weights: equal ones become exactly 1 (exact sums)
    wt = None if weights is None else np.asarray(weights, dtype=np.float64) / np.max(weights)
    # A box: (start, end, widest channel, volume prod(max - min) over R, G, B, or -1 if it cannot split);
    # boxes stay in Pylette's list order.
    boxes = [_box(data, 0, data.shape[1])]
    done: set[int] = set()  # starts of the boxes already sorted along their widest channel

    def sort(box: tuple[int, int, int, int], parallel: bool = True) -> None:
        s, e, ch, _ = box
        order = sort_columns(data[:, s:e], ch, parallel)
        if wt is not None:
            wt[s:e] = wt[s:e][order]
        done.add(s)

    workers = pool()
    while len(boxes) < size:
        # the largest volume, the first in list order among equals
        ranked = sorted((-b[3], i) for i, b in enumerate(boxes) if b[3] >= 0)
        if not ranked:
            break
        best = ranked[0][1]
        s, e = boxes[best][:2]
        if s not in done:
            others = [boxes[i] for _, i in ranked[1:] if boxes[i][0] not in done]
            if wt is not None or workers is None or not others or others[0][1] - others[0][0] < _PAIRED_SORT:
                sort(boxes[best])
            else:
                job = workers.submit(sort, others[0], False)
                try:
                    sort(boxes[best], False)
                finally:
                    if not job.cancel():  # a busy pool: the other box waits for its own turn
                        job.result()
        if wt is None:
            m = s + (e - s) // 2
        else:
            cum = np.cumsum(wt[s:e])
            m = s + min(max(int(np.searchsorted(cum, cum[-1] / 2.0, side="right")), 1), e - s - 1)
        boxes[best : best + 1] = [_box(data, s, m), _box(data, m, e)]
        done.discard(s)
    starts = np.array([b[0] for b in boxes])
    if wt is None:
        mass = np.array([b[1] - b[0] for b in boxes], dtype=np.int64)
        sums = np.add.reduceat(data.astype(np.int64), starts, axis=1).T
    else:
        mass = np.add.reduceat(wt, starts)
        sums = np.add.reduceat(data * wt, starts, axis=1).T
    # Pylette's colour: the box mean rounded (half to even) to an 8-bit level, so palettes are bit-identical.
    return torch.from_numpy(np.round(sums / mass[:, None]) / 255.0), torch.from_numpy(mass)


def _box(data: np.ndarray, s: int, e: int) -> tuple[int, int, int, int]:
    """Median cut's box of the pixels ``data[:, s:e]``: ``(s, e, widest channel, volume)``; the volume is -1
    for a box that is not split (one pixel, or one colour: Pylette splits those too, listing a colour twice)."""
    seg = data[:, s:e]
    span = seg.max(axis=1).astype(np.int64) - seg.min(axis=1)
    splits = e - s >= 2 and bool(span.any())
    return s, e, int(np.argmax(span)), math.prod(int(v) for v in span) if splits else -1


def _unique_colours(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct 8-bit colours ``[M, 3]`` (in ``_pack`` key order) and their pixel counts ``[M]``."""
    keys = np.sort(_pack(px))
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    counts = np.diff(np.append(starts, len(keys)))
    uniq = keys[starts]
    return np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.uint8), counts


class _Points:
    """Weighted colours ``x [M, 3]`` (float32 in [0, 1]) prepared for Lloyd iterations of ``R`` restarts at once.

    numpy, not torch: every array here is small (tens of thousands of points), where torch's intra-op threads
    only add synchronisation, and on a busy CPU each barrier can wait for a time slice (10x slower end to end).
    """

    def __init__(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x, self.w = x.astype(np.float32), w.astype(np.float64)
        self.xt = np.ascontiguousarray(self.x.T)
        self.xw = np.concatenate([self.x.T * self.w, self.w[None]]).astype(np.float64)  # w*r, w*g, w*b, w
        self._repeated: dict[int, np.ndarray] = {1: self.xw}

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def sq_dist(self, centres: np.ndarray) -> np.ndarray:
        """Squared RGB distances ``[C, M]`` (float32, exact squares, no cancellation) of ``centres [C, 3]``."""
        d = np.subtract(self.xt[0], centres[:, 0:1], dtype=np.float32)
        np.square(d, out=d)
        tmp = np.empty_like(d)
        for ch in (1, 2):
            np.subtract(self.xt[ch], centres[:, ch : ch + 1], out=tmp)
            d += np.square(tmp, out=tmp)
        return d

    def assign(self, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest of ``centres [R, k, 3]`` per point and restart: ``(labels [R, M], squared distance [R, M])``."""
        r, k, _ = centres.shape
        d = self.sq_dist(centres.reshape(r * k, 3).astype(np.float32)).reshape(r, k, -1)
        # Fold the centre index into the low mantissa bits of the non-negative (so integer-ordered) float32
        # distances: one integer min over k gives both the label and the distance (to 2^-15 relative).
        bits = max(1, (k - 1).bit_length())
        mask = np.int32((1 << bits) - 1)
        key = np.minimum.reduce(d.view(np.int32) & ~mask | np.arange(k, dtype=np.int32)[:, None], axis=1)
        return key & mask, (key & ~mask).view(np.float32)

    def update(self, labels: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted cluster means ``[R, k, 3]`` (float64) and weights ``[R, k]``; an empty cluster keeps its centre."""
        r, k, _ = centres.shape
        if r not in self._repeated:
            self._repeated[r] = np.repeat(self.xw, r, axis=1)
        # Point-major order (each point's R labels side by side): consecutive adds hit different bins, which
        # avoids bincount's store-to-load stalls on runs of one label (2x faster than restart-major).
        flat = (labels.T + np.arange(r, dtype=np.intp) * k).ravel()
        sums = np.stack([np.bincount(flat, weights=row, minlength=r * k) for row in self._repeated[r]], axis=1)
        sums = sums.reshape(r, k, 4)
        count = sums[..., 3]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(count[..., None] > 0, sums[..., :3] / count[..., None], centres)
        return means, count

    def lloyd(self, centres: np.ndarray, tol: float, halve_every: int = 0) -> np.ndarray:
        """Lloyd iterations (Lloyd 1982) on ``centres [R, k, 3]`` until every restart's total shift^2 <= tol.

        A converged restart stops iterating. With ``halve_every`` = n, every n iterations the worse half of the
        restarts (by inertia) is dropped, so the slowest restarts do not set the cost; the survivors are returned.
        """
        centres = centres.copy()
        alive = np.arange(len(centres))
        running = np.ones(len(centres), dtype=bool)
        inertia = np.full(len(centres), np.inf)
        for it in range(1, KMEANS_MAX_ITER + 1):
            idx = alive[running[alive]]
            if len(idx) == 0:
                break
            labels, dist = self.assign(centres[idx])
            inertia[idx] = (dist * self.w).sum(1)  # not @: BLAS threads stall on a busy CPU
            new, count = self.update(labels, centres[idx])
            if (count == 0).any():
                new = self.relocate(new, count, dist)
            running[idx[np.square(new - centres[idx]).sum((1, 2)) <= tol]] = False
            centres[idx] = new
            if halve_every and it % halve_every == 0 and len(alive) > 1:
                alive = alive[np.argsort(inertia[alive], kind="stable")[: len(alive) // 2]]
        return centres[alive]

    def relocate(self, centres: np.ndarray, count: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Move empty clusters to the points farthest from their centres (as scikit-learn does)."""
        centres, dist = centres.copy(), dist * (self.w > 0)
        for r, j in zip(*np.nonzero(count == 0)):
            far = int(dist[r].argmax())
            centres[r, j] = self.x[far]
            dist[r, far] = 0.0
        return centres

    def inertia(self, centres: np.ndarray) -> np.ndarray:
        """Weighted sum of squared distances to the nearest centre, per restart ``[R]``."""
        return (self.assign(centres)[1] * self.w).sum(1)

    def kmeans_pp(self, k: int, restarts: int, rng: np.random.Generator) -> np.ndarray:
        """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant), weighted: ``[R, k, 3]``."""
        m = len(self)
        trials = 2 + int(math.log(k))
        cum_w = np.cumsum(self.w)
        first = np.minimum(np.searchsorted(cum_w, rng.random(restarts) * cum_w[-1], side="right"), m - 1)
        centres = [self.x[first]]  # k arrays [R, 3]
        closest = self.sq_dist(self.x[first]).astype(np.float64)  # [R, M]
        rows = np.arange(restarts)
        for _ in range(1, k):
            cum = np.cumsum(closest * self.w, axis=1)
            u = rng.random((restarts, trials)) * cum[:, -1:]
            # Candidates drawn with probability w D^2; the one that lowers the potential most is kept.
            cand = np.minimum([np.searchsorted(c, v, side="right") for c, v in zip(cum, u)], m - 1)  # [R, T]
            d = np.minimum(self.sq_dist(self.x[cand.ravel()]).reshape(restarts, trials, m), closest[:, None])
            best = (d * self.w).sum(2).argmin(1)
            closest = d[rows, best]
            centres.append(self.x[cand[rows, best]])
        return np.stack(centres, axis=1)


def _cells(x8: np.ndarray, w: np.ndarray, bits: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean colour ``[C, 3]`` and weight ``[C]`` of each occupied cell of a ``2^bits``-level RGB grid."""
    q = (x8 >> (8 - bits)).astype(np.intp)
    key = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
    weight = np.bincount(key, weights=w, minlength=1 << (3 * bits))
    occupied = np.flatnonzero(weight)
    lut = np.zeros(len(weight), dtype=np.intp)
    lut[occupied] = np.arange(len(occupied))
    cell = lut[key]
    sums = np.stack([np.bincount(cell, weights=x8[:, ch] * w, minlength=len(occupied)) for ch in range(3)], axis=1)
    weight = weight[occupied]
    return sums / (255.0 * weight[:, None]), weight


def _kmeans(x8: np.ndarray, counts: np.ndarray, size: int, seed: int, restarts: int | None = None):
    """k-means++ seeded Lloyd on distinct colours ``x8 [M, 3]`` (M > size): ``(means [K, 3], counts [K])``."""
    fine = _Points(x8 / 255.0, counts)
    total = fine.w.sum()
    var = (np.square(fine.x - fine.xw[:3].sum(1) / total) * fine.w[:, None]).sum(0) / total
    tol = KMEANS_TOL * float(var.mean())  # scikit-learn's tolerance: a fraction of the mean channel variance
    rng = np.random.default_rng(int(seed))
    if restarts is None:  # many clusters: optima differ less, and each restart costs more
        restarts = max(2, min(KMEANS_RESTARTS, 128 // size))
    # The restarts are seeded and converged on the means of 32-level grid cells (a few thousand weighted
    # points); the one of lowest cell inertia is then converged on the exact colours in a few iterations.
    cx, cw = _cells(x8, fine.w, 5)
    if len(cw) < _FINER_CELLS:  # a narrow gamut: 32 levels would blur the clusters apart, use 64
        cx, cw = _cells(x8, fine.w, 6)
    cells = _Points(cx, cw)
    if len(cells) < max(_MIN_CELLS, 8 * size):
        cells = fine  # too few cells to stand in for the colours: seed on the colours themselves
    coarse = cells.lloyd(cells.kmeans_pp(size, restarts, rng), tol, KMEANS_HALVE_EVERY)
    best = int(cells.inertia(coarse).argmin())
    centres = fine.lloyd(coarse[best : best + 1], tol)
    # As scikit-learn: the centres and a final assignment to them. A cluster left empty by it (rare) is moved
    # to the farthest colour, which it then owns, so there are always `size` colours (M > size here).
    for _ in range(size):
        labels, dist = fine.assign(centres)
        share = np.bincount(labels[0], weights=counts, minlength=size)
        if np.issubdtype(counts.dtype, np.integer):  # pixel counts; mask weights (docs/regions.md) stay fractional
            share = share.round().astype(np.int64)
        if (share > 0).all():
            break
        centres = fine.relocate(centres, share[None], dist)
    keep = share > 0
    return torch.from_numpy(centres[0][keep].astype(np.float64)), torch.from_numpy(share[keep])


def extract_palette(
    image: Tensor | np.ndarray,
    size: int = 5,
    method: Method = "kmeans",
    resize: int | None = DEFAULT_RESIZE,
    seed: int = 0,
    mask: Tensor | np.ndarray | None = None,
) -> Palette:
    """Extract a ``size``-colour palette from one image ``[H, W, 3]`` or ``[1, H, W, 3]`` (docs/design.md §4, Pylette).

    ``mask`` (a MASK ``[H, W]`` or ``[1, H, W]``, docs/regions.md) restricts it to the pixels inside, weighted.
    """
    size, method, resize = _check_size(size), _check_method(method), _check_resize(resize)
    u8 = _to_uint8(image, keep_float=True)
    if u8.shape[0] != 1:
        raise InputShapeError(
            f"image: batch of {u8.shape[0]} images; extract_palette takes one image, use extract_palettes for a batch"
        )
    weights = None if mask is None else region_weights(mask, u8.shape[1], u8.shape[2], 1, resize)[0]
    return _extract(u8[0], size, method, resize, seed, weights)


def extract_palettes(
    images: Tensor | np.ndarray,
    size: int = 5,
    method: Method = "kmeans",
    resize: int | None = DEFAULT_RESIZE,
    seed: int = 0,
    mask: Tensor | np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Palette]:
    """One palette per image of a batch ``[B, H, W, 3]`` (or one image ``[H, W, 3]``), see :func:`extract_palette`.

    ``progress(done, total)`` is called after each image (a host's progress bar; an exception it raises stops).
    """
    size, method, resize = _check_size(size), _check_method(method), _check_resize(resize)
    u8 = _to_uint8(images)
    weights = [None] * len(u8) if mask is None else region_weights(mask, u8.shape[1], u8.shape[2], u8.shape[0], resize)
    palettes = []
    for i, (im, w) in enumerate(zip(u8, weights)):
        palettes.append(_extract(im, size, method, resize, seed, w))
        if progress is not None:
            progress(i + 1, len(u8))
    return palettes


def region_weights(
    mask: Tensor | np.ndarray, height: int, width: int, batch: int, resize: int | None = DEFAULT_RESIZE
) -> np.ndarray:
    """Mask weights ``[B, N]`` of the extraction grid: fitted, then area-averaged to the resample (docs/regions.md).

    A resampled pixel mixes the image's pixels within the bicubic filter's reach (2 pixels of the larger of
    the two grids), so each weight is the least area-averaged mask value within that reach: colours blended
    across the region's edge do not count. A region too thin to keep any weight that way keeps the plain
    area average (its edge blends count, weighted).
    """
    m = fit_mask(torch.as_tensor(mask), height, width, batch)
    if resize is None or (height, width) == (resize, resize):
        return m.reshape(m.shape[0], -1).double().cpu().numpy()
    # The image's square resample ignores its aspect ratio; the mask follows it (fit_mask checked the ratio).
    area = F.adaptive_avg_pool2d(m.unsqueeze(1), (resize, resize))[:, 0].double().cpu().numpy()
    ry, rx = (math.ceil(2.0 * max(1.0, resize / n)) for n in (height, width))  # the reach in output pixels
    least = _least_within(_least_within(area, rx), ry, rows=True)
    kept = (least > 0).any(axis=(1, 2))
    return np.where(kept[:, None, None], least, area).reshape(area.shape[0], -1)


def _least_within(a: np.ndarray, r: int, rows: bool = False) -> np.ndarray:
    """Minimum of ``a [B, H, W]`` over the ``r`` neighbours on each side along W (or H), the window cut at edges."""
    out = a.copy()
    x, y = (out.swapaxes(1, 2), a.swapaxes(1, 2)) if rows else (out, a)
    n = x.shape[2]
    for d in range(1, min(r, n - 1) + 1):  # a few shifts of a small grid: cheaper than a pooling kernel
        np.minimum(x[..., : n - d], y[..., d:], out=x[..., : n - d])
        np.minimum(x[..., d:], y[..., : n - d], out=x[..., d:])
    return out


def _extract(
    u8: np.ndarray, size: int, method: str, resize: int | None, seed: int, weights: np.ndarray | None = None
) -> Palette:
    px = _resample(u8, resize).reshape(-1, 3)
    if weights is not None:
        return _extract_weighted(px, weights, size, method, seed)
    if method == "kmeans":
        x8, counts = _unique_colours(px)
        if len(x8) <= size:
            return _sorted_palette(torch.from_numpy(x8 / 255.0), torch.from_numpy(counts))
        return _sorted_palette(*_kmeans(x8, counts, size, seed))
    few = _few_colours(px, size)
    if few is not None:
        return _sorted_palette(torch.from_numpy(few[0].astype(np.float64) / 255.0), torch.from_numpy(few[1]))
    return _sorted_palette(*_median_cut(px, size))


def _extract_weighted(px: np.ndarray, weights: np.ndarray, size: int, method: str, seed: int) -> Palette:
    """The palette of the pixels ``[N, 3]`` with weight > 0, each counted by its weight (docs/regions.md)."""
    inside = weights > 0
    if not inside.any():
        raise PaletteError(
            "mask: selects no pixels (every value is 0), so there is nothing to extract; paint the region in the "
            "mask, or disconnect it to use the whole image"
        )
    px, w = px[inside], weights[inside]
    if w.min() == w.max():  # a hard mask: equal weights give the unweighted palette of the pixels inside
        return _extract(px[None], size, method, None, seed)
    if method == "median_cut" and _few_colours(px, size) is None:  # the usual case: no weighted unique needed
        return _sorted_palette(*_median_cut(px, size, w))
    uniq, wsum = _unique_weighted(px, w)
    x8 = np.stack([uniq >> 16, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.uint8)
    if len(uniq) <= size:
        return _sorted_palette(torch.from_numpy(x8 / 255.0), torch.from_numpy(wsum))
    if method == "kmeans":
        return _sorted_palette(*_kmeans(x8, wsum, size, seed))
    return _sorted_palette(*_median_cut(px, size, w))


def _unique_weighted(px: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours of ``px [N, 3]`` as sorted ``_pack`` keys ``[M]`` and their summed weights ``[M]``."""
    # One int64 sort of (key, index) pairs: several times faster than np.unique(return_inverse) or argsort.
    bits = max(1, (len(px) - 1).bit_length())
    pairs = np.sort((_pack(px).astype(np.int64) << bits) | np.arange(len(px), dtype=np.int64))
    keys = pairs >> bits
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[starts], np.add.reduceat(w[pairs & ((1 << bits) - 1)], starts)


def quantization_error(pixels: Tensor | np.ndarray, colors: Tensor | np.ndarray) -> float:
    """Mean squared RGB distance (sRGB in [0, 1]) of ``pixels [N, 3]`` to their nearest of ``colors [K, 3]``."""
    p = as_tensor(pixels, "pixels")
    p = p.double() / 255.0 if p.dtype == torch.uint8 else p.double()
    c = as_tensor(colors, "colors").double()
    if p.ndim != 2 or p.shape[1] != 3 or c.ndim != 2 or c.shape[1] != 3 or c.shape[0] == 0:
        raise InputShapeError(f"pixels {tuple(p.shape)} and colors {tuple(c.shape)}: expected [N, 3] and [K, 3]")
    return float(torch.cdist(p, c).square().min(dim=1).values.mean())
