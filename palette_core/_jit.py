"""Compiled loops for :mod:`.quantize` when numba is installed (docs/craft.md, "Speed").

The functions below are plain Python loops over pixels, the textbook form of each algorithm; with numba
they are compiled once (cached on disk beside this file) and run at C speed. Without numba, or with the
environment variable ``PALETTE_NO_JIT=1``, :func:`kernels` returns ``None`` and :mod:`.quantize` runs its
vectorised numpy paths, which give the same indices (tests/test_quantize.py holds both to the same loop).
numba is optional (``pip install numba``, the pyproject extra ``fast``): it pins numpy's version, and a node
pack must not move the numpy of the ComfyUI it is installed into.

The compiled kernels release the GIL, so plain threads run them side by side: :func:`split_rows` shares a
pass over rows among :func:`threads` threads, and :func:`pool` lends the quantiser workers for the colour
conversion that error diffusion overlaps with its own (sequential) loop.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from types import SimpleNamespace

import numpy as np

log = logging.getLogger(__name__)

MAX_THREADS = 8  # threads by default, at most: the passes split here are memory-bound beyond a few cores

_STATE: dict[str, SimpleNamespace | None] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}
_WARNED: set[str] = set()
_POOL_LOCK = threading.Lock()


def threads() -> int:
    """Threads for the quantiser: ``PALETTE_THREADS`` if set, else the cores this process may use (<= MAX_THREADS)."""
    value = os.environ.get("PALETTE_THREADS", "").strip()
    if value:
        if value.isdigit() and int(value) >= 1:
            return int(value)
        if value not in _WARNED:
            _WARNED.add(value)
            log.warning("PALETTE_THREADS=%r is not a whole number >= 1; using the default", value)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def pool() -> ThreadPoolExecutor | None:
    """A shared pool of ``threads() - 1`` workers (the caller is the last thread); None with one thread."""
    n = threads()
    if n < 2:
        return None
    with _POOL_LOCK:
        if n not in _POOLS:
            _POOLS[n] = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="palette-quantize")
        return _POOLS[n]


def split_rows(fn: Callable[[int, int], None], rows: int, chunk: int) -> None:
    """Run ``fn(first, end)`` over ``[0, rows)`` in ranges of >= ``chunk`` rows, on the caller and the pool.

    Threads take the next range as they come free, each a share of what is left (guided scheduling: large
    ranges first, small ones last, so that the threads finish together), and the caller takes back the
    work of a worker that has not started (a sleeping core can take milliseconds to wake).
    """
    workers = pool()
    n = threads()
    if workers is None or rows < 2 * chunk:
        fn(0, rows)
        return
    cursor = [0]
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                first = cursor[0]
                if first >= rows:
                    return
                end = min(rows, first + max(chunk, (rows - first) // (2 * n)))
                cursor[0] = end
            fn(first, end)

    jobs = [workers.submit(drain) for _ in range(min(n, rows // chunk) - 1)]
    try:
        drain()
    finally:
        for job in jobs:
            job.cancel()
        wait(jobs)
    for job in jobs:
        if not job.cancelled():
            job.result()


def diffuse(
    work: np.ndarray,
    palette: np.ndarray,
    norms: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    taps: np.ndarray,
    weights: np.ndarray,
    offsets: np.ndarray,
    candidates: np.ndarray,
    inverse_step: np.ndarray,
    g: int,
    out: np.ndarray,
    errors: np.ndarray,
    first: int,
    end: int,
) -> None:
    """Error diffusion of rows ``first:end`` of ``work [H, W, 3]`` into ``out [H, W]`` (Floyd & Steinberg 1976).

    Raster order; each value (pixel plus the errors pushed to it) is clipped to ``[lo, hi]``, takes the
    colour of highest score ``v.p - |p|^2 / 2`` (the nearest; ties to the lower index) among the
    ``candidates[offsets[c]:offsets[c + 1]]`` of its cell ``c`` of the ``g^3`` grid over the box (cells
    ``1 / inverse_step`` wide; :func:`.quantize.nearest_cells`), and
    pushes its error ``v - p`` to the neighbours ``taps[i] = (dy, dx)`` with ``weights[i]``. Errors live in
    ``errors [ring, W + 4, 3]`` (zeros before the first row), a ring of ``max dy + 1`` rows padded by 2
    columns on each side (the taps reach 2 columns at most); calls on consecutive row ranges with the same
    ring diffuse the image as one call would (docs/craft.md, "Speed": the caller converts the next rows
    meanwhile).
    """
    h, w = work.shape[0], work.shape[1]
    n_taps = taps.shape[0]
    ring = errors.shape[0]
    pad = 2
    tap_row = np.empty(n_taps, dtype=np.int64)
    tap_weight = np.empty(n_taps, dtype=np.float32)
    l0, l1, l2, h0, h1, h2 = lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]
    s0, s1, s2 = inverse_step[0], inverse_step[1], inverse_step[2]
    for y in range(first, end):
        r = y % ring
        for i in range(n_taps):
            tap_row[i] = (y + taps[i, 0]) % ring
            tap_weight[i] = weights[i] if y + taps[i, 0] < h else np.float32(0.0)
        for x in range(w):
            xp = x + pad
            v0 = min(max(work[y, x, 0] + errors[r, xp, 0], l0), h0)
            v1 = min(max(work[y, x, 1] + errors[r, xp, 1], l1), h1)
            v2 = min(max(work[y, x, 2] + errors[r, xp, 2], l2), h2)
            c0 = min(int((v0 - l0) * s0), g - 1)
            c1 = min(int((v1 - l1) * s1), g - 1)
            c2 = min(int((v2 - l2) * s2), g - 1)
            cell = (c0 * g + c1) * g + c2
            first, end = offsets[cell], offsets[cell + 1]
            best = candidates[first]
            if end - first > 1:
                top = v0 * palette[best, 0] + v1 * palette[best, 1] + v2 * palette[best, 2] - norms[best]
                for q in range(first + 1, end):
                    j = candidates[q]
                    score = v0 * palette[j, 0] + v1 * palette[j, 1] + v2 * palette[j, 2] - norms[j]
                    if score > top:  # candidates ascend, so a tie keeps the lower index
                        top = score
                        best = j
            out[y, x] = best
            e0 = v0 - palette[best, 0]
            e1 = v1 - palette[best, 1]
            e2 = v2 - palette[best, 2]
            errors[r, xp, 0] = 0.0
            errors[r, xp, 1] = 0.0
            errors[r, xp, 2] = 0.0
            for i in range(n_taps):
                tr, tx, tw = tap_row[i], xp + taps[i, 1], tap_weight[i]
                errors[tr, tx, 0] += tw * e0
                errors[tr, tx, 1] += tw * e1
                errors[tr, tx, 2] += tw * e2
        for rr in range(ring):  # what spilled past the edges is dropped
            for p in range(pad):
                for c in range(3):
                    errors[rr, p, c] = 0.0
                    errors[rr, w + pad + p, c] = 0.0


def ordered(
    rgb: np.ndarray,
    table: np.ndarray,
    scale: np.float32,
    offset: np.ndarray,
    side: int,
    palette: np.ndarray,
    out: np.ndarray,
    colours: np.ndarray,
    first: int,
    end: int,
) -> None:
    """Ordered dithering of rows ``first:end`` of ``rgb [H, W, 3]`` into ``out [H, W]``: the table's entry for
    ``rgb * scale + offset``; ``colours [H, W, 3]``, unless empty, gets ``palette[out]`` in the same pass.

    ``offset [n, W]`` is the threshold tile times the spread in cells (docs/craft.md), tiled along the row
    (no wrap per pixel: for an 8-wide tile it cost 15 %); values are non-negative, so the integer conversion
    is the floor, exactly as the numpy path's ``np.floor``.
    """
    w = rgb.shape[1]
    n = offset.shape[0]
    fill = colours.shape[0] > 0
    for y in range(first, end):
        row = offset[y % n]
        for x in range(w):
            o = row[x]
            i0 = int(rgb[y, x, 0] * scale + o)
            i1 = int(rgb[y, x, 1] * scale + o)
            i2 = int(rgb[y, x, 2] * scale + o)
            k = table[(i0 * side + i1) * side + i2]
            out[y, x] = k
            if fill:
                colours[y, x, 0] = palette[k, 0]
                colours[y, x, 1] = palette[k, 1]
                colours[y, x, 2] = palette[k, 2]


def colours_of(palette: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = palette[index[i]]`` for flat ``index [N]`` and ``out [N, 3]`` (a palette look-up)."""
    for i in range(index.shape[0]):
        k = index[i]
        out[i, 0] = palette[k, 0]
        out[i, 1] = palette[k, 1]
        out[i, 2] = palette[k, 2]


def kernels() -> SimpleNamespace | None:
    """The compiled kernels (diffuse, ordered, colours_of); None without numba or with PALETTE_NO_JIT=1."""
    if os.environ.get("PALETTE_NO_JIT", "").strip() not in ("", "0"):
        return None
    if "kernels" not in _STATE:
        _STATE["kernels"] = _compile()
    return _STATE["kernels"]


def _compile() -> SimpleNamespace | None:
    try:
        import numba
    except ImportError:
        log.info("numba is not installed: quantising with numpy (pip install numba makes dithering 2-3x faster)")
        return None
    try:
        jit = numba.njit(cache=True, nogil=True)
        compiled = SimpleNamespace(diffuse=jit(diffuse), ordered=jit(ordered), colours_of=jit(colours_of))
        _warm_up(compiled)
    except Exception as exc:  # noqa: BLE001 - any numba failure (no writable cache, an old LLVM) falls back to numpy
        log.warning("numba could not set up the quantiser's kernels (%s); quantising with numpy", exc)
        return None
    return compiled


def _warm_up(compiled: SimpleNamespace) -> None:
    """Compile every kernel for the argument types the quantiser passes, so that a failure shows here, once."""
    f32 = np.float32
    rgb = np.zeros((2, 3, 3), dtype=f32)
    palette = np.eye(3, dtype=f32)
    for index in (np.uint8, np.uint16):
        out = np.zeros((2, 3), dtype=index)
        cells = (np.array([0, 3], dtype=np.int64), np.arange(3, dtype=np.int64), np.ones(3, dtype=f32))
        taps = np.array([[0, 1], [1, -1]], dtype=np.int64)
        box = (np.zeros(3, f32), np.ones(3, f32))
        weights, errors = np.ones(2, f32), np.zeros((2, 7, 3), dtype=f32)
        compiled.diffuse(rgb, palette, np.full(3, 0.5, f32), *box, taps, weights, *cells, 1, out, errors, 0, 2)
        tile = (f32(1.0), np.zeros((2, 3), f32), 2)  # the threshold tile, tiled to the row's width
        for colours in (rgb, rgb[:0]):
            compiled.ordered(rgb, np.zeros(8, dtype=index), *tile, palette, out, colours, 0, 2)
        compiled.colours_of(palette, out.reshape(-1), np.zeros((6, 3), dtype=f32))
