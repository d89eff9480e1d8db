"""Compiled loops for :mod:`.quantize` and :mod:`.extract` when numba is installed (docs/craft.md, "Speed";
docs/extraction.md, "Speed").

The functions below are plain Python loops, the textbook form of each algorithm; with numba they are
compiled once (cached on disk beside this file) and run at C speed. Without numba, or with the
environment variable ``PALETTE_NO_JIT=1``, :func:`kernels` returns ``None`` and the callers run their
numpy paths, which give the same results (tests/test_quantize.py and tests/test_extract_speed.py hold
both to the same reference). numba is optional (``pip install numba``, the pyproject extra ``fast``): it
pins numpy's version, and a node pack must not move the numpy of the ComfyUI it is installed into.

The compiled kernels release the GIL, so plain threads run them side by side: :func:`split_rows` shares a
pass over rows among :func:`threads` threads, and :func:`pool` lends workers for the colour conversion
that error diffusion overlaps with its own (sequential) loop and for the sorts of median cut.
"""

from __future__ import annotations

import logging
import os
import threading
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from types import SimpleNamespace

import numpy as np

log = logging.getLogger(__name__)

_PARALLEL_SORT = 1 << 15  # values: below this a sort stays on one thread (and numpy's own is as fast)
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


def sort_columns(table: np.ndarray, row: int, parallel: bool = True) -> np.ndarray:
    """Sort the columns of ``table [C, N]`` (uint8) in place by ``table[row]`` exactly as ``np.take(table,
    table[row].argsort(), axis=1)`` does, equal values in numpy's order; returns that argsort.

    numpy's default argsort is an introsort whose order among equal values is whatever its partitions leave;
    median cut depends on it (:mod:`.extract`), so the compiled :func:`quick_sort` repeats numpy's steps, and
    once the first partitions have cut the array into disjoint ranges, threads sort the ranges side by side
    (largest first), each moving the columns of its range. numpy sorts short rows, and all of them without
    numba, on one thread or without ``parallel``, or if this numpy orders differently.
    """
    jit = kernels()
    n = table.shape[1]
    single = not parallel or threads() < 2 or n < _PARALLEL_SORT
    if single or jit is None or not jit.numpy_order or table.dtype != np.uint8:
        order = table[row].argsort()
        table[:] = np.take(table, order, axis=1)
        return order
    items = (table[row].astype(np.int64) << 32) | np.arange(n, dtype=np.int64)
    source = table.copy()
    tasks = [(0, n - 1, 2 * (n.bit_length() - 1), True)]  # (lo, hi, depth left, depth checked): numpy's start
    for _ in range(8 * threads()):  # cut the largest range while it holds more than a thread's share
        lo, hi, depth, checked = tasks[0]
        if hi - lo < n // (2 * threads()) or (checked and depth < 0):
            break
        p = jit.partition(items, lo, hi)
        small, large = ((lo, p - 1), (p + 1, hi)) if p - lo < hi - p else ((p + 1, hi), (lo, p - 1))
        tasks[0:1] = [(*large, depth - 1, True), (*small, depth - 1, False)]
        tasks.sort(key=lambda t: t[0] - t[1])
    # Each thread moves the columns of its range and of the pivots after it (their places are final).
    starts = sorted(t[0] for t in tasks)
    columns = dict(zip(starts, zip([0, *starts[1:]], [*starts[1:], n])))

    def run(first: int, end: int) -> None:
        for lo, hi, depth, checked in tasks[first:end]:
            if hi > lo:
                jit.quick_sort(items, lo, hi, depth, checked)
            jit.take_columns(items, source, table, *columns[lo])

    split_rows(run, len(tasks), 1)
    return np.bitwise_and(items, 0xFFFFFFFF, out=items).astype(np.intp, copy=False)


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


def take_columns(items: np.ndarray, source: np.ndarray, out: np.ndarray, first: int, end: int) -> None:
    """Columns ``first:end`` of ``out [C, N]``: the columns of ``source`` that ``items`` (``key << 32 | index``)
    name, ``np.take(source, index, axis=1)`` for a range of places."""
    for c in range(source.shape[0]):
        for i in range(first, end):
            out[c, i] = source[c, items[i] & 0xFFFFFFFF]


def to_uint8(image: np.ndarray, out: np.ndarray, tolerance: float, first: int, end: int) -> bool:
    """Rows ``first:end`` of float ``image [R, C]`` in [0, 1] as 8-bit levels in ``out [R, C]``: ``rint(255 v)``
    with the product rounded to float32 first, as numpy computes it; False if a row holds a value that is
    not finite or lies more than ``tolerance`` outside [0, 1] (values within it are clipped)."""
    lo, hi = -tolerance, 1.0 + tolerance
    magic = np.float32(8388608.0)  # 2^23: adding and taking it away rounds a float32 in [0, 2^23) half to even
    for y in range(first, end):
        valid = True
        for x in range(image.shape[1]):
            v = image[y, x]
            valid &= (v >= lo) & (v <= hi)  # NaN fails both
            level = min(max(np.float32(np.float64(v) * 255.0), np.float32(0.0)), np.float32(255.0))
            out[y, x] = np.uint8((level + magic) - magic)
        if not valid:
            return False
    return True


def colours_of(palette: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = palette[index[i]]`` for flat ``index [N]`` and ``out [N, 3]`` (a palette look-up)."""
    for i in range(index.shape[0]):
        k = index[i]
        out[i, 0] = palette[k, 0]
        out[i, 1] = palette[k, 1]
        out[i, 2] = palette[k, 2]


def partition(items: np.ndarray, lo: int, hi: int) -> int:
    """One partition of ``items[lo:hi + 1]`` (more than 16) as numpy's quicksort argsort makes it: the median
    of the first, middle and last keys as pivot, moved and swapped in numpy's order; returns the pivot's place.

    ``items`` are ``key << 32 | index``: each compare reads one array, and each swap moves key and index
    together, where numpy swaps indices and reads the keys through them; the compares and swaps are numpy's,
    so equal keys end in numpy's order. (Unsigned subscripts: numba checks signed ones for wrap-around.)
    """
    u = np.uint64
    m = lo + ((hi - lo) >> 1)
    if items[m] >> 32 < items[lo] >> 32:
        items[m], items[lo] = items[lo], items[m]
    if items[hi] >> 32 < items[m] >> 32:
        items[hi], items[m] = items[m], items[hi]
    if items[m] >> 32 < items[lo] >> 32:
        items[m], items[lo] = items[lo], items[m]
    below = (items[m] >> 32) << 32  # key < pivot  <=>  item < below
    above = below + (1 << 32)  # pivot < key  <=>  item >= above
    i, j = lo, hi - 1
    items[m], items[j] = items[j], items[m]
    while True:
        i += 1
        while items[u(i)] < below:
            i += 1
        j -= 1
        while items[u(j)] >= above:
            j -= 1
        if i >= j:
            break
        items[u(i)], items[u(j)] = items[u(j)], items[u(i)]
    items[i], items[hi - 1] = items[hi - 1], items[i]
    return i


def sift_down(items: np.ndarray, base: int, i: int, n: int, item: np.int64) -> None:
    """Sink ``item`` from place ``i`` of the heap ``items[base + 1 : base + n + 1]`` (numpy's heapsort step)."""
    j = i << 1
    while j <= n:
        if j < n and items[base + j] >> 32 < items[base + j + 1] >> 32:
            j += 1
        if item >> 32 < items[base + j] >> 32:
            items[base + i] = items[base + j]
            i, j = j, j + j
        else:
            break
    items[base + i] = item


def heap_sort(items: np.ndarray, lo: int, hi: int) -> None:
    """numpy's heapsort argsort of ``items[lo:hi + 1]`` (``key << 32 | index``), its quicksort's fallback."""
    n = hi - lo + 1
    base = lo - 1  # the heap counts from 1
    for start in range(n >> 1, 0, -1):
        sift_down(items, base, start, n, items[base + start])
    while n > 1:
        item = items[base + n]
        items[base + n] = items[base + 1]
        n -= 1
        sift_down(items, base, 1, n, item)


def quick_sort(items: np.ndarray, lo: int, hi: int, depth: int, checked: bool) -> None:
    """numpy's quicksort argsort (introsort) of ``items[lo:hi + 1]`` (``key << 32 | index``) from the state
    its loop would have there (numpy's order among equal keys).

    ``depth`` is what is left of numpy's depth limit (``2 floor(log2 n)`` at the start); numpy checks it only
    for ranges it takes from its stack (``checked``), heapsorting those past the limit, and keeps partitioning
    the smaller side it goes on with. The ranges it pushes are disjoint: sorted in any order, or on other
    threads, they end the same.
    """
    u = np.uint64
    stack = np.empty((64, 3), dtype=np.int64)  # numpy's stack holds 64 ranges
    top = 0
    while True:
        if checked and depth < 0:
            heap_sort(items, lo, hi)
        else:
            while hi - lo > 15:
                p = partition(items, lo, hi)
                depth -= 1
                if p - lo < hi - p:
                    stack[top, 0], stack[top, 1], hi = p + 1, hi, p - 1
                else:
                    stack[top, 0], stack[top, 1], lo = lo, p - 1, p + 1
                stack[top, 2] = depth
                top += 1
            for i in range(lo + 1, hi + 1):  # insertion sort
                item = items[i]
                j = i
                while j > lo and item >> 32 < items[u(j - 1)] >> 32:
                    items[u(j)] = items[u(j - 1)]
                    j -= 1
                items[j] = item
        if top == 0:
            return
        top -= 1
        lo, hi, depth, checked = stack[top, 0], stack[top, 1], stack[top, 2], True


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
        # quick_sort calls partition and heap_sort, which calls sift_down: each must see the compiled callees
        linked: dict[str, Callable] = {"sift_down": jit(sift_down), "partition": jit(partition)}
        for fn in (heap_sort, quick_sort):
            linked[fn.__name__] = jit(types.FunctionType(fn.__code__, {**globals(), **linked}, fn.__name__))
        compiled = SimpleNamespace(
            diffuse=jit(diffuse),
            ordered=jit(ordered),
            colours_of=jit(colours_of),
            to_uint8=jit(to_uint8),
            take_columns=jit(take_columns),
            partition=linked["partition"],
            quick_sort=linked["quick_sort"],
        )
        _warm_up(compiled)
        compiled.numpy_order = _sorts_like_numpy(compiled)
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
    for image in (rgb, rgb.astype(np.float64)):
        flat = image.reshape(2, -1)
        compiled.to_uint8(flat, np.zeros(flat.shape, dtype=np.uint8), 1e-3, 0, 2)
    items = np.arange(20, 0, -1, dtype=np.int64) << 32
    compiled.partition(items, 0, 19)
    compiled.quick_sort(items, 0, 19, -1, True)
    table = np.zeros((3, 40), dtype=np.uint8)[:, :20]  # the median cut passes a box: columns of a wider table
    compiled.take_columns(items, np.zeros((3, 20), dtype=np.uint8), table, 0, 20)


def _sorts_like_numpy(compiled: SimpleNamespace) -> bool:
    """Whether the compiled argsort orders ties as this numpy's ``argsort`` does (else :func:`argsort` uses numpy)."""
    rng = np.random.default_rng(0)
    for values in (rng.integers(0, 7, 5000), rng.integers(0, 256, 3000), np.arange(3000) % 50):
        keys = values.astype(np.uint8)
        items = (keys.astype(np.int64) << 32) | np.arange(len(keys))
        compiled.quick_sort(items, 0, len(keys) - 1, 2 * (len(keys).bit_length() - 1), True)
        if not np.array_equal(items & 0xFFFFFFFF, keys.argsort()):
            log.info("this numpy orders ties in argsort differently; median cut sorts with numpy")
            return False
    return True
