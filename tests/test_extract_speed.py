"""The fast paths of palette_core.extract (docs/extraction.md, "Speed") against the plain computation they replace.

Median cut sorts with a compiled copy of numpy's argsort (on threads) and two boxes at a time, the resample runs
Pillow's two passes as separate calls on bands of rows and columns, and float images are rounded to 8 bits by a
compiled kernel: each is held here to numpy's argsort, Pillow's one call and numpy's rounding, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from sample_photos import photo_or_skip as photo

from palette_core import InputShapeError, _jit
from palette_core.extract import _bicubic, _float_to_uint8, _median_cut, _resample, extract_palette

pytest.importorskip("skimage.data")  # the photographs below


@pytest.fixture
def compiled(monkeypatch):
    """The compiled kernels (the test is skipped without numba)."""
    pytest.importorskip("numba")
    monkeypatch.delenv("PALETTE_NO_JIT", raising=False)
    jit = _jit.kernels()
    assert jit is not None and jit.numpy_order  # this numpy's argsort is the one the kernels copy
    return jit


def reference_median_cut(px: np.ndarray, size: int, weights: np.ndarray | None = None):
    """Median cut as Pylette runs it: one box at a time, each sorted with numpy's argsort when it is split."""
    data = np.array(px.T, order="C")
    wt = None if weights is None else np.asarray(weights, dtype=np.float64) / np.max(weights)
    boxes = [(0, data.shape[1], data.min(axis=1), data.max(axis=1))]
    while len(boxes) < size:
        best, best_vol = -1, -1
        for i, (s, e, bmin, bmax) in enumerate(boxes):
            if e - s >= 2 and (bmax != bmin).any():
                vol = math.prod(int(v) for v in bmax.astype(np.int64) - bmin)
                if vol > best_vol:
                    best, best_vol = i, vol
        if best < 0:
            break
        s, e, bmin, bmax = boxes[best]
        seg = data[:, s:e]
        order = seg[int(np.argmax(bmax - bmin))].argsort()
        seg[:] = np.take(seg, order, axis=1)
        if wt is None:
            m = s + (e - s) // 2
        else:
            wt[s:e] = wt[s:e][order]
            cum = np.cumsum(wt[s:e])
            m = s + min(max(int(np.searchsorted(cum, cum[-1] / 2.0, side="right")), 1), e - s - 1)
        left, right = data[:, s:m], data[:, m:e]
        boxes[best : best + 1] = [
            (s, m, left.min(axis=1), left.max(axis=1)),
            (m, e, right.min(axis=1), right.max(axis=1)),
        ]
    starts = np.array([b[0] for b in boxes])
    if wt is None:
        mass = np.array([b[1] - b[0] for b in boxes], dtype=np.int64)
        sums = np.add.reduceat(data.astype(np.int64), starts, axis=1).T
    else:
        mass = np.add.reduceat(wt, starts)
        sums = np.add.reduceat(data * wt, starts, axis=1).T
    return np.round(sums / mass[:, None]) / 255.0, mass


def keys(seed: int, n: int, levels: int, pattern: str) -> np.ndarray:
    """uint8 sort keys with many ties: random, sorted, reversed, organ pipe or runs of equal values."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, levels, n).astype(np.uint8)
    if pattern == "sorted":
        v.sort()
    elif pattern == "reversed":
        v = np.sort(v)[::-1].copy()
    elif pattern == "pipe":
        v = np.concatenate([np.sort(v[: n // 2]), np.sort(v[n // 2 :])[::-1]])
    elif pattern == "runs":
        v = np.repeat(v[: n // 64 + 1], 64)[:n].copy()
    return v


# ---- numpy's argsort, compiled and on threads ----------------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("pattern", ["random", "sorted", "reversed", "pipe", "runs"])
@pytest.mark.parametrize("levels", [2, 7, 256])
def test_sort_columns_orders_ties_as_numpy(compiled, monkeypatch, threads, pattern, levels):
    monkeypatch.setenv("PALETTE_THREADS", threads)
    for seed, n in enumerate((40_000, 65_536, 131_071)):
        table = np.stack([keys(seed, n, levels, pattern), keys(seed + 7, n, 256, "random"), np.arange(n) % 251])
        table = table.astype(np.uint8)
        wide = np.zeros((3, n + 50), dtype=np.uint8)
        wide[:, 20 : 20 + n] = table
        box = wide[:, 20 : 20 + n]  # as median cut passes it: columns of a wider table
        order = _jit.sort_columns(box, 0)
        expected = table[0].argsort()
        assert np.array_equal(order, expected)
        assert np.array_equal(box, np.take(table, expected, axis=1))
        assert not wide[:, :20].any() and not wide[:, 20 + n :].any()  # nothing outside the box moved


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=arrays(np.uint8, st.integers(1, 600), elements=st.integers(0, 9)))
def test_compiled_quicksort_is_numpys_on_any_array(compiled, values):
    items = (values.astype(np.int64) << 32) | np.arange(len(values))
    compiled.quick_sort(items, 0, len(values) - 1, 2 * (len(values).bit_length() - 1), True)
    assert np.array_equal(items & 0xFFFFFFFF, values.argsort())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=arrays(np.uint8, st.integers(1, 300), elements=st.integers(0, 5)))
def test_heapsort_fallback_sorts(compiled, values):
    # numpy >= 2.4 maps kind="heapsort" to its quicksort, so its own heapsort is not there to compare with:
    # the fallback (numpy past its depth limit) must at least sort and keep every index once.
    items = (values.astype(np.int64) << 32) | np.arange(len(values))
    compiled.quick_sort(items, 0, len(values) - 1, -1, True)
    index = items & 0xFFFFFFFF
    assert np.array_equal(np.sort(index), np.arange(len(values)))
    assert np.array_equal(values[index], np.sort(values))


def test_a_numpy_that_orders_ties_otherwise_is_used_as_it_is(compiled, monkeypatch):
    monkeypatch.setattr(compiled, "numpy_order", False)
    table = np.stack([keys(1, 50_000, 5, "random")] * 3)
    expected = table[0].argsort()
    assert np.array_equal(_jit.sort_columns(table, 0), expected)


# ---- median cut, two boxes at a time -------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_median_cut_is_the_box_by_box_computation(both_paths, monkeypatch, threads, name):
    monkeypatch.setenv("PALETTE_THREADS", threads)
    px = _resample(np.ascontiguousarray(photo(name)[..., :3]), 256).reshape(-1, 3)
    for size in (2, 3, 5, 8, 16, 32):
        colours, mass = _median_cut(px, size)
        ref_colours, ref_mass = reference_median_cut(px, size)
        assert np.array_equal(colours.numpy(), ref_colours) and np.array_equal(mass.numpy(), ref_mass)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_weighted_median_cut_is_the_box_by_box_computation(monkeypatch, threads):
    # Float sums depend on the order of the pixels, so weighted boxes are only sorted when split.
    monkeypatch.setenv("PALETTE_THREADS", threads)
    px = _resample(np.ascontiguousarray(photo("coffee")), 256).reshape(-1, 3)
    rng = np.random.default_rng(3)
    w = rng.choice([1.0, 1e-7, 3e-4], len(px)) * (1 + rng.random(len(px)))  # sums that depend on their order
    for size in (3, 8, 12):
        colours, mass = _median_cut(px, size, w)
        ref_colours, ref_mass = reference_median_cut(px, size, w)
        assert np.array_equal(colours.numpy(), ref_colours) and np.array_equal(mass.numpy(), ref_mass)


@pytest.mark.parametrize("seed", range(6))
def test_median_cut_of_few_levels_is_the_box_by_box_computation(seed):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, [3, 8, 40, 256][seed % 4], (int(rng.integers(5_000, 90_000)), 3)).astype(np.uint8)
    size = int(rng.integers(2, 20))
    colours, mass = _median_cut(px, size)
    ref_colours, ref_mass = reference_median_cut(px, size)
    assert np.array_equal(colours.numpy(), ref_colours) and np.array_equal(mass.numpy(), ref_mass)


# ---- Pillow's resample in two passes, on bands ---------------------------------------------------------

SHAPES = [
    (1024, 1024),
    (1000, 667),
    (768, 1344),
    (300, 200),
    (257, 1023),
    (100, 90),
    (1500, 300),
    (3000, 200),
    (1, 500),
]
TARGETS = [(256, 256), (128, 128), (512, 512), (100, 300), (300, 50), (37, 1)]


@pytest.mark.parametrize("threads", ["1", "2", "5"])
@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_resample_is_pillows_one_call(monkeypatch, threads, h, w):
    # Tall images take Pillow 13's vertical-first order (the height shrinks more than twice the width).
    monkeypatch.setenv("PALETTE_THREADS", threads)
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for width, height in [*TARGETS, (w, 128), (128, h), (2 * w, 2 * h)]:
        expected = np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC))
        assert np.array_equal(_bicubic(img, width, height), expected), (width, height)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_float_images_are_resampled_as_their_8_bit_levels(compiled, name):
    img = photo(name)
    as_float = torch.from_numpy(img.astype(np.float32) / 255.0)
    assert np.array_equal(_bicubic(as_float.numpy(), 256, 256), _bicubic(img, 256, 256))
    for size in (5, 8):
        assert extract_palette(as_float, size, "median_cut").equals(extract_palette(img, size, "median_cut"))


BAD_VALUES = [(np.nan, "NaN"), (2.0, "divide 8-bit data by 255"), (-0.5, "span \\[-0.5, ")]


@pytest.mark.parametrize(("value", "match"), BAD_VALUES)
def test_a_bad_value_in_a_band_gives_the_error_of_the_whole_image(compiled, value, match):
    img = np.random.default_rng(0).random((600, 500, 3), dtype=np.float32)
    img[431, 17, 1] = value  # far from the first band
    with pytest.raises(InputShapeError, match=match):
        extract_palette(img, 8, "median_cut")


# ---- float to 8-bit, compiled ---------------------------------------------------------------------------


def numpy_rounding(a: np.ndarray) -> np.ndarray | None:
    """The numpy path's rounding: float32 product, clip, rint; None if out of range (the plain statement)."""
    tol = 1e-3
    if not np.isfinite(a).all() or float(a.min()) < -tol or float(a.max()) > 1 + tol:
        return None
    return np.rint(
        np.clip(
            np.multiply(a, 255.0, dtype=np.float32) if a.dtype == np.float32 else (a * 255.0).astype(np.float32), 0, 255
        )
    ).astype(np.uint8)


EDGES = np.array([(k + 0.5) / 255 for k in range(255)] + [-1e-3, 1 + 1e-3, 0.0, 1.0, -1e-9, 1 + 1e-9])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(1, 300),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
    bad=st.sampled_from([None, np.nan, np.inf, -0.0011, 1.0011]),
)
def test_float_rounding_is_numpys(both_paths, rows, dtype, seed, bad):
    rng = np.random.default_rng(seed)
    a = rng.random((rows, 7, 3)).astype(dtype)
    a.reshape(-1)[: len(EDGES)] = EDGES[: a.size].astype(dtype)  # halfway values and the tolerance's edges
    a.reshape(-1)[rng.integers(0, a.size, 5)] = np.nextafter(a.reshape(-1)[:5], dtype(2))
    if bad is not None:
        a.reshape(-1)[rng.integers(0, a.size)] = bad
    expected = numpy_rounding(a)
    got = _float_to_uint8(a)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert np.array_equal(got, expected)
