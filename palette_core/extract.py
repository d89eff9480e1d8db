"""Palette extraction by median cut and k-means, matching the Pylette library (SPEC §4 "Palette extraction").

The image is brought to 8-bit sRGB (floats are rounded to the nearest level) and, unless ``resize`` is
None, resampled to ``resize x resize`` pixels with Pillow's bicubic filter, exactly as Pylette does
(a square resample that ignores the aspect ratio; it also upsamples small images). The palette is then
extracted from those pixels:

* ``median_cut``: Pylette's median cut. The box (set of pixels) of largest volume
  ``prod(max - min)`` over R, G, B is sorted along its widest channel with numpy's default argsort and
  split at index ``len // 2``, until there are ``size`` boxes. The colour is the box mean, the weight its
  pixel share. Numpy's sort is used on purpose: which of the pixels tied at the median go left decides
  later splits, so only the very same sort reproduces Pylette's boxes.
* ``kmeans``: Lloyd's k-means in RGB with greedy k-means++ seeding (as scikit-learn, which Pylette
  calls), several seeded restarts run as one batch, the best kept. Colours are the centroids, weights the
  cluster shares.

Both return colours sorted by share, largest first (ties keep the extraction order). If the image has at
most ``size`` distinct colours, both return exactly those colours with their pixel shares; so a palette
can have fewer than ``size`` colours. Colours are the exact means in [0, 1] (Pylette rounds or truncates
them to 8-bit levels).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ._checks import as_tensor, check_image
from .errors import InputShapeError, PaletteError
from .palette import MAX_COLORS, Palette

Method = Literal["kmeans", "median_cut"]
METHODS: tuple[str, ...] = ("kmeans", "median_cut")
DEFAULT_RESIZE = 256
# Restarts of k-means++ run side by side; the best by quantisation error is kept (scikit-learn runs one).
KMEANS_RESTARTS = 4
KMEANS_MAX_ITER = 300
# Convergence: total squared centroid shift below this fraction of the mean per-channel variance (sklearn's tol).
KMEANS_TOL = 1e-4
_MIN_CELLS = 256  # fewer occupied grid cells than this: k-means++ seeds on the exact colours
_MAX_PIXELS = 1 << 28  # 268 M pixels: beyond this a full-resolution extraction is refused


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


def _to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """Images ``[B, H, W, 3]`` as 8-bit sRGB numpy (uint8 input is kept, floats are rounded to 1/255 levels)."""
    x = as_tensor(image, "image")
    if x.dtype == torch.uint8 and x.ndim in (3, 4) and x.shape[-1] in (3, 4) and x.numel() > 0:
        x = x[..., :3] if x.ndim == 4 else x[None, ..., :3]
        return np.ascontiguousarray(x.cpu().numpy())
    f, _ = check_image(x)
    return f.mul(255.0).round_().to(torch.uint8).cpu().numpy()


def resized_pixels(image: Tensor | np.ndarray, resize: int | None = DEFAULT_RESIZE) -> Tensor:
    """The 8-bit pixels ``[N, 3]`` that extraction sees: Pylette's ``resize x resize`` bicubic resample (SPEC §4)."""
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
        return u8
    if u8.shape[0] == resize and u8.shape[1] == resize:
        return u8  # Pillow returns a copy of an image already at the requested size
    img = Image.fromarray(np.ascontiguousarray(u8))
    return np.asarray(img.resize((resize, resize), Image.Resampling.BICUBIC))


def _pack(px: np.ndarray) -> np.ndarray:
    """8-bit pixels ``[N, 3]`` as int32 keys ``r << 16 | g << 8 | b`` (one compare per pixel)."""
    p = px.astype(np.int32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


def _few_colours(px: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(colours [M, 3] uint8, counts [M])`` by ``_pack`` key if at most ``size`` distinct colours, else None."""
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


def _sorted_palette(colours: Tensor, counts: Tensor) -> Palette:
    """Palette of ``colours [M, 3]`` in [0, 1] weighted by pixel ``counts``, largest share first (stable)."""
    order = torch.sort(-counts.double(), stable=True).indices
    return Palette.from_colors(colours[order].clamp(0.0, 1.0), counts[order].double())


def _median_cut(px: np.ndarray, size: int) -> tuple[Tensor, Tensor]:
    """Pylette's median cut on 8-bit pixels ``[N, 3]``: ``(means [M, 3] in [0, 1], counts [M])`` in box order."""
    data = np.array(px.T, order="C")  # writable planar [3, N]: contiguous sort keys, cheap segment min/max
    lo, hi = data.min(axis=1), data.max(axis=1)
    # A box: [start, end, min per channel, max per channel]; boxes stay in Pylette's list order.
    boxes: list[tuple[int, int, np.ndarray, np.ndarray]] = [(0, data.shape[1], lo, hi)]
    while len(boxes) < size:
        best, best_vol = -1, -1
        for i, (s, e, bmin, bmax) in enumerate(boxes):
            # Pylette also splits single-colour boxes (listing a colour twice); they are skipped here.
            if e - s >= 2 and (bmax != bmin).any():
                vol = math.prod(int(v) for v in bmax.astype(np.int64) - bmin)
                if vol > best_vol:
                    best, best_vol = i, vol
        if best < 0:
            break
        s, e, bmin, bmax = boxes[best]
        ch = int(np.argmax(bmax - bmin))
        seg = data[:, s:e]
        seg[:] = seg[:, seg[ch].argsort()]
        m = s + (e - s) // 2
        left, right = data[:, s:m], data[:, m:e]
        boxes[best : best + 1] = [
            (s, m, left.min(axis=1), left.max(axis=1)),
            (m, e, right.min(axis=1), right.max(axis=1)),
        ]
    starts = np.array([b[0] for b in boxes])
    counts = np.array([b[1] - b[0] for b in boxes], dtype=np.int64)
    sums = np.add.reduceat(data.astype(np.int64), starts, axis=1).T
    means = torch.from_numpy(sums / counts[:, None] / 255.0)
    return means, torch.from_numpy(counts)


def _unique_colours(px: np.ndarray) -> tuple[Tensor, Tensor]:
    """Distinct 8-bit colours ``[M, 3]`` (int32) and their pixel counts ``[M]``: k-means on fewer points."""
    keys, counts = torch.unique(torch.from_numpy(_pack(px)), return_counts=True)
    return torch.stack([keys >> 16, (keys >> 8) & 255, keys & 255], dim=1), counts


def _sq_dist(xt: Tensor, xsq: Tensor, centres: Tensor) -> Tensor:
    """Squared distances ``[C, M]`` of ``centres [C, 3]`` to points ``xt [3, M]`` (``xsq`` = their squared norms)."""
    # |x - c|^2 = |c|^2 - 2 c.x + |x|^2 as one matmul; clamped because the expansion can dip below 0.
    d = torch.addmm(centres.square().sum(1, keepdim=True), centres, xt, alpha=-2.0)
    return d.add_(xsq).clamp_min_(0.0)


def _kmeans_pp(xt: Tensor, xsq: Tensor, w: Tensor, k: int, restarts: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn), weighted: ``[R, k, 3]``."""
    m = xt.shape[1]
    x = xt.T
    trials = 2 + int(math.log(k))
    cum_w = w.cumsum(0)
    first = torch.searchsorted(cum_w, torch.rand(restarts, generator=gen, dtype=w.dtype) * cum_w[-1], right=True)
    first = first.clamp_(max=m - 1)
    centres = [x[first]]  # k tensors [R, 3]
    closest = _sq_dist(xt, xsq, x[first])  # [R, M]
    rows = torch.arange(restarts)
    for _ in range(1, k):
        cum = (closest * w).cumsum(1)
        u = torch.rand(restarts, trials, generator=gen, dtype=cum.dtype) * cum[:, -1:]
        cand = torch.searchsorted(cum, u, right=True).clamp_(max=m - 1)  # [R, T], probability ~ w D^2
        d = _sq_dist(xt, xsq, x[cand.reshape(-1)]).view(restarts, trials, m)
        d = torch.minimum(d, closest.unsqueeze(1))
        best = (d * w).sum(2).argmin(1)  # the candidate that lowers the potential most
        closest = d[rows, best]
        centres.append(x[cand[rows, best]])
    return torch.stack(centres, dim=1)


def _assign(xt: Tensor, xsq: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre for every point and restart: ``(labels [R, M] int32, squared distance [R, M])``."""
    r, k, _ = centres.shape
    d = _sq_dist(xt, xsq, centres.reshape(r * k, 3)).view(r, k, -1)
    # argmin over a short non-inner dim is slow in torch; fold the centre index into the low mantissa bits of
    # the (non-negative, hence integer-ordered) float32 distances and take one integer amin instead.
    bits = max(1, (k - 1).bit_length())
    idx = torch.arange(k, dtype=torch.int32).view(1, k, 1)
    key = (d.view(torch.int32) & ~((1 << bits) - 1) | idx).amin(1)
    return key & ((1 << bits) - 1), (key & ~((1 << bits) - 1)).view(torch.float32)


def _update(xw: Tensor, labels: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted cluster means ``[R, k, 3]`` (float64) and weights ``[R, k]``; an empty cluster keeps its centre."""
    r, k, _ = centres.shape
    flat = (labels + torch.arange(r, dtype=labels.dtype).unsqueeze(1) * k).reshape(-1)
    # xw: [M, 4] float64 rows (w*r, w*g, w*b, w); one index_add for the four sums of every restart.
    src = xw.repeat(r, 1) if r > 1 else xw
    sums = torch.zeros(r * k, 4, dtype=xw.dtype).index_add_(0, flat, src).view(r, k, 4)
    count = sums[..., 3]
    old = centres.to(xw.dtype)
    return torch.where(count.unsqueeze(-1) > 0, sums[..., :3] / count.clamp_min(1e-300).unsqueeze(-1), old), count


class _Points:
    """Weighted points prepared once for Lloyd iterations: transposed coordinates, squared norms, weighted sums."""

    def __init__(self, x: Tensor, w: Tensor) -> None:
        self.x, self.w = x, w
        self.xt, self.xsq = x.T.contiguous(), x.square().sum(1)
        self.xw = torch.cat([x.double() * w.double().unsqueeze(1), w.double().unsqueeze(1)], dim=1)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def lloyd(self, centres: Tensor, tol: float) -> Tensor:
        """Lloyd iterations for ``R`` restarts ``[R, k, 3]`` at once until every centre shift^2 <= tol."""
        for _ in range(KMEANS_MAX_ITER):
            labels, dist = _assign(self.xt, self.xsq, centres)
            new, count = _update(self.xw, labels, centres)
            new = new.to(torch.float32)
            if bool((count == 0).any()):
                new = self._relocate(new, count, dist)
            shift = (new - centres).square().sum((1, 2))
            centres = new
            if bool((shift <= tol).all()):
                break
        return centres

    def _relocate(self, centres: Tensor, count: Tensor, dist: Tensor) -> Tensor:
        """Move empty clusters to the points farthest from their centres (as scikit-learn does)."""
        centres, dist = centres.clone(), dist * (self.w > 0)
        for r, j in (count == 0).nonzero().tolist():
            far = int(dist[r].argmax())
            centres[r, j] = self.x[far]
            dist[r, far] = 0.0
        return centres

    def inertia(self, centres: Tensor) -> Tensor:
        """Weighted sum of squared distances to the nearest centre, per restart ``[R]``."""
        return (_assign(self.xt, self.xsq, centres)[1].double() * self.w.double()).sum(1)


def _cells(x8: Tensor, w: Tensor, bits: int = 5) -> tuple[Tensor, Tensor]:
    """Weighted mean colour ``[C, 3]`` and weight ``[C]`` of each occupied cell of a ``2^bits``-level RGB grid."""
    q = x8 >> (8 - bits)
    _, inv = torch.unique((q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2], return_inverse=True)
    wx = torch.cat([x8.double() / 255.0 * w.double().unsqueeze(1), w.double().unsqueeze(1)], dim=1)
    sums = torch.zeros(int(inv.max()) + 1, 4, dtype=torch.float64).index_add_(0, inv, wx)
    return (sums[:, :3] / sums[:, 3:]).to(torch.float32), sums[:, 3].to(torch.float32)


def _kmeans(x8: Tensor, counts: Tensor, size: int, seed: int, restarts: int = KMEANS_RESTARTS) -> tuple[Tensor, Tensor]:
    """k-means++ seeded Lloyd on distinct colours ``x8 [M, 3]`` (M > size) with pixel ``counts``: means, counts."""
    fine = _Points(x8.to(torch.float32) / 255.0, counts.to(torch.float32))
    total = fine.xw[:, 3].sum()
    var = (fine.xw[:, 3:] * (fine.x.double() - fine.xw[:, :3].sum(0) / total).square()).sum(0) / total
    tol = KMEANS_TOL * float(var.mean())  # scikit-learn's tolerance: a fraction of the mean channel variance
    gen = torch.Generator().manual_seed(int(seed))
    # The restarts are seeded and converged on the means of 32-level grid cells (a few thousand weighted
    # points); the one of lowest cell inertia is then converged on the exact colours in a few iterations.
    cells = _Points(*_cells(x8, fine.w))
    if len(cells) < max(_MIN_CELLS, 8 * size):
        cells = fine  # too few cells to stand in for the colours: seed on the colours themselves
    coarse = cells.lloyd(_kmeans_pp(cells.xt, cells.xsq, cells.w, size, restarts, gen), tol)
    best = int(cells.inertia(coarse).argmin())
    centres = fine.lloyd(coarse[best : best + 1], tol)
    labels, _ = _assign(fine.xt, fine.xsq, centres)
    means, _ = _update(fine.xw, labels, centres)
    share = torch.zeros(size, dtype=torch.int64).index_add_(0, labels[0].long(), counts)
    keep = share > 0
    return means[0][keep], share[keep]


def extract_palette(
    image: Tensor | np.ndarray,
    size: int = 5,
    method: Method = "kmeans",
    resize: int | None = DEFAULT_RESIZE,
    seed: int = 0,
) -> Palette:
    """Extract a ``size``-colour palette from one image ``[H, W, 3]`` or ``[1, H, W, 3]`` (SPEC §4, Pylette)."""
    size, method, resize = _check_size(size), _check_method(method), _check_resize(resize)
    u8 = _to_uint8(image)
    if u8.shape[0] != 1:
        raise InputShapeError(
            f"image: batch of {u8.shape[0]} images; extract_palette takes one image, use extract_palettes for a batch"
        )
    return _extract(u8[0], size, method, resize, seed)


def extract_palettes(
    images: Tensor | np.ndarray,
    size: int = 5,
    method: Method = "kmeans",
    resize: int | None = DEFAULT_RESIZE,
    seed: int = 0,
) -> list[Palette]:
    """One palette per image of a batch ``[B, H, W, 3]`` (or one image ``[H, W, 3]``), see :func:`extract_palette`."""
    size, method, resize = _check_size(size), _check_method(method), _check_resize(resize)
    return [_extract(u8, size, method, resize, seed) for u8 in _to_uint8(images)]


def _extract(u8: np.ndarray, size: int, method: str, resize: int | None, seed: int) -> Palette:
    px = _resample(u8, resize).reshape(-1, 3)
    if method == "kmeans":
        x8, counts = _unique_colours(px)
        if len(x8) <= size:
            return _sorted_palette(x8.double() / 255.0, counts)
        return _sorted_palette(*_kmeans(x8, counts, size, seed))
    few = _few_colours(px, size)
    if few is not None:
        return _sorted_palette(torch.from_numpy(few[0].astype(np.float64) / 255.0), torch.from_numpy(few[1]))
    return _sorted_palette(*_median_cut(px, size))


def quantization_error(pixels: Tensor | np.ndarray, colors: Tensor | np.ndarray) -> float:
    """Mean squared RGB distance (sRGB in [0, 1]) of ``pixels [N, 3]`` to their nearest of ``colors [K, 3]``."""
    p = as_tensor(pixels, "pixels")
    p = p.double() / 255.0 if p.dtype == torch.uint8 else p.double()
    c = as_tensor(colors, "colors").double()
    if p.ndim != 2 or p.shape[1] != 3 or c.ndim != 2 or c.shape[1] != 3 or c.shape[0] == 0:
        raise InputShapeError(f"pixels {tuple(p.shape)} and colors {tuple(c.shape)}: expected [N, 3] and [K, 3]")
    return float(torch.cdist(p, c).square().min(dim=1).values.mean())
