"""The compiled quantiser (numba, optional): the same indices as the numpy paths, exact nearest-colour cells,
and a clean fall-back to numpy where numba is missing or switched off (docs/craft.md, "Speed")."""

from __future__ import annotations

import logging
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sample_photos import photo_or_skip

from palette_core import _jit
from palette_core import quantize as qz
from palette_core.extract import extract_palette


@pytest.fixture()
def compiled(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.delenv("PALETTE_NO_JIT", raising=False)
    kernels = _jit.kernels()
    assert kernels is not None
    return kernels


def indices(monkeypatch, path: str, *args) -> np.ndarray:
    if path == "numpy":
        monkeypatch.setenv("PALETTE_NO_JIT", "1")
    else:
        monkeypatch.delenv("PALETTE_NO_JIT", raising=False)
    return qz.quantize_indices(*args)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    g=st.sampled_from([1, 2, 7, 32]),
)
def test_each_cell_holds_the_nearest_colour_of_its_points(k, seed, g):
    rng = np.random.default_rng(seed)
    palette = (rng.random((k, 3)) * [1.0, 1.6, 1.6] - [0.0, 0.8, 0.8]).astype(np.float32)
    palette[rng.random(k) < 0.2] = palette[0]  # duplicates: the lower index must win
    lo = (palette.min(0) - 0.1).astype(np.float32)
    hi = (palette.max(0) + 0.1).astype(np.float32)
    offsets, candidates, inverse_step = qz.nearest_cells(palette, lo, hi, g)
    assert offsets[0] == 0 and offsets[-1] == len(candidates) and (np.diff(offsets) >= 1).all()
    u = rng.random((4000, 3))
    u[:500] = np.round(u[:500] * g) / g  # on the cells' edges and the box's corners
    v = (lo + u * (hi - lo)).astype(np.float32)
    v = np.minimum(np.maximum(v, lo), hi)
    scores = v @ palette.T - 0.5 * (palette * palette).sum(1)
    cell = np.minimum((((v - lo) * inverse_step).astype(np.int64)), g - 1)
    flat = (cell[:, 0] * g + cell[:, 1]) * g + cell[:, 2]
    for i in range(len(v)):
        own = candidates[offsets[flat[i]] : offsets[flat[i] + 1]]
        assert (np.diff(own) > 0).all()
        assert own[scores[i, own].argmax()] == scores[i].argmax(), (i, own)


def test_cells_prune_most_colours_of_a_photo_palette():
    u8 = photo_or_skip("astronaut", 128)
    palette = extract_palette(u8, 16, method="median_cut").colors_array.astype(np.float64)
    work = qz._work_space(palette, "perceptual")
    lo, hi = qz._diffusion_bounds(work)
    offsets, _, _ = qz.nearest_cells(work, lo, hi)
    assert np.diff(offsets).mean() < 3  # of 16: the look-up is what makes the compiled loop fast


@pytest.mark.parametrize("dither", ["floyd-steinberg", "atkinson"])
@pytest.mark.parametrize("distance", ["perceptual", "rgb"])
def test_compiled_diffusion_gives_the_numpy_paths_indices_on_photos(compiled, monkeypatch, dither, distance):
    for name in ("astronaut", "coffee"):
        u8 = photo_or_skip(name, 160)
        x = (u8.astype(np.float32) / 255)[None]
        palette = qz.palette_array(extract_palette(u8, 12, method="median_cut").colors_array)
        ours = indices(monkeypatch, "compiled", x, palette, dither, distance)
        reference = indices(monkeypatch, "numpy", x, palette, dither, distance)
        # float32 sums in another order may tip a near tie, and error diffusion carries a tip along a row
        assert (ours == reference).mean() > 0.995, name


@pytest.mark.parametrize("dither", ["bayer-2", "bayer-8", "blue-noise"])
@pytest.mark.parametrize("distance", ["perceptual", "rgb"])
def test_compiled_ordered_dithering_and_colours_equal_numpy(compiled, monkeypatch, dither, distance):
    u8 = photo_or_skip("chelsea", 150)
    x = np.stack([u8, u8[::-1]]).astype(np.float32) / 255
    palette = qz.palette_array(extract_palette(u8, 9, method="median_cut").colors_array)
    ours = indices(monkeypatch, "compiled", x, palette, dither, distance)
    np.testing.assert_array_equal(ours, indices(monkeypatch, "numpy", x, palette, dither, distance))
    colours = qz.palette_colours(palette, ours)
    monkeypatch.setenv("PALETTE_NO_JIT", "1")
    np.testing.assert_array_equal(colours, qz.palette_colours(palette, ours))
    np.testing.assert_array_equal(colours, palette.take(ours, axis=0))
    monkeypatch.delenv("PALETTE_NO_JIT")
    fused = qz.quantize(x, palette, dither=dither, distance=distance)  # indices and colours in one pass
    np.testing.assert_array_equal(fused, colours)


def test_without_numba_the_numpy_paths_run(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.setattr(_jit, "_STATE", {})
    monkeypatch.delenv("PALETTE_NO_JIT", raising=False)
    with caplog.at_level(logging.INFO, logger="palette_core._jit"):
        assert _jit.kernels() is None
    assert "numba is not installed" in caplog.text
    img = np.random.default_rng(0).random((9, 13, 3)).astype(np.float32)
    palette = np.eye(3, dtype=np.float32)
    out = qz.quantize(img, palette, dither="floyd-steinberg")
    assert {tuple(c) for c in out.reshape(-1, 3).tolist()} <= {tuple(c) for c in palette.tolist()}


def test_the_switch_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("PALETTE_NO_JIT", "1")
    assert _jit.kernels() is None
    monkeypatch.setenv("PALETTE_NO_JIT", "0")
    if _jit.kernels() is None:
        pytest.importorskip("numba")
        raise AssertionError("PALETTE_NO_JIT=0 must leave the kernels on")


def test_the_warm_up_compiles_every_signature_the_quantiser_uses(compiled):
    before = {name: len(getattr(compiled, name).signatures) for name in ("diffuse", "ordered", "colours_of")}
    img = np.random.default_rng(1).random((2, 9, 11, 4)).astype(np.float32)
    for palette in (np.random.default_rng(2).random((5, 3)), np.random.default_rng(3).random((256, 3))):
        for dither in ("floyd-steinberg", "atkinson", "bayer-4", "blue-noise"):
            for distance in ("perceptual", "rgb"):
                qz.quantize(img, palette.astype(np.float32), dither=dither, distance=distance)
    after = {name: len(getattr(compiled, name).signatures) for name in before}
    assert after == before  # nothing compiled on the way: a numba failure would have shown in the warm-up


def test_a_kernel_numba_cannot_compile_leaves_the_numpy_paths(monkeypatch, caplog):
    pytest.importorskip("numba")

    def broken(compiled):
        raise TypeError("No matching definition for argument type(s)")

    monkeypatch.setattr(_jit, "_warm_up", broken)
    monkeypatch.setattr(_jit, "_STATE", {})
    monkeypatch.delenv("PALETTE_NO_JIT", raising=False)
    with caplog.at_level(logging.WARNING, logger="palette_core._jit"):
        assert _jit.kernels() is None
    assert "could not set up" in caplog.text and "No matching definition" in caplog.text
    img = np.random.default_rng(4).random((7, 8, 3)).astype(np.float32)
    out = qz.quantize(img, np.eye(3, dtype=np.float32), dither="bayer-2")
    assert set(np.unique(out)) <= {0.0, 1.0}


@pytest.mark.parametrize("kernel", ["floyd-steinberg", "atkinson"])
@pytest.mark.parametrize("threads", ["1", "3"])
def test_bands_converted_on_threads_equal_the_pixel_loop(compiled, monkeypatch, kernel, threads):
    from test_quantize import loop_diffusion, rng_image, rng_palette

    monkeypatch.setenv("PALETTE_THREADS", threads)
    img = rng_image(7, (2, 150, 9, 3))  # 3 bands of rows: errors cross two band edges
    palette = rng_palette(7, 7)
    work_palette = qz._work_space(palette.astype(np.float64), "perceptual")
    lo, hi = qz._diffusion_bounds(work_palette)
    got = qz.quantize_indices(img, palette, kernel, "perceptual")
    work = qz.lab100_float32(img)
    for b in range(2):
        np.testing.assert_array_equal(got[b], loop_diffusion(work[b], work_palette, lo, hi, qz.ERROR_KERNELS[kernel]))


@pytest.mark.parametrize("dither", ["floyd-steinberg", "bayer-8", "blue-noise"])
def test_threads_change_no_pixel(compiled, monkeypatch, dither):
    u8 = photo_or_skip("coffee", 520)
    img = u8[None].astype(np.float32) / 255  # 400 x 520 pixels: ordered dithering and the colours split
    palette = qz.palette_array(extract_palette(u8, 11, method="median_cut").colors_array)
    results = []
    for threads in ("1", "2", "5"):
        monkeypatch.setenv("PALETTE_THREADS", threads)
        results.append(qz.quantize(img, palette, dither=dither))
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


def test_thread_count_setting(monkeypatch, caplog):
    monkeypatch.setenv("PALETTE_THREADS", "3")
    assert _jit.threads() == 3
    monkeypatch.delenv("PALETTE_THREADS")
    default = _jit.threads()
    assert 1 <= default <= _jit.MAX_THREADS
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PALETTE_THREADS", bad)
        with caplog.at_level(logging.WARNING, logger="palette_core._jit"):
            assert _jit.threads() == default
    assert "PALETTE_THREADS='two' is not a whole number" in caplog.text
    monkeypatch.setenv("PALETTE_THREADS", "1")
    assert _jit.pool() is None


def test_split_rows_covers_every_row_once_and_raises_a_workers_error(monkeypatch):
    monkeypatch.setenv("PALETTE_THREADS", "4")
    seen = np.zeros(1000, dtype=int)

    def mark(first: int, end: int) -> None:
        seen[first:end] += 1

    _jit.split_rows(mark, 1000, 30)
    assert (seen == 1).all()
    calls = []
    _jit.split_rows(lambda first, end: calls.append((first, end)), 150, 100)
    assert calls == [(0, 150)]  # too few rows to share
    threads = set()

    def slow(first: int, end: int) -> None:
        threads.add(threading.get_ident())
        time.sleep(0.01)

    _jit.split_rows(slow, 1000, 100)
    assert len(threads) > 1  # the workers took chunks too

    def fail_late(first: int, end: int) -> None:
        if first > 0:
            raise ValueError(f"rows {first}:{end}")

    with pytest.raises(ValueError, match="rows"):
        _jit.split_rows(fail_late, 1000, 100)


def test_a_failing_conversion_stops_the_diffusion_cleanly(compiled, monkeypatch):
    monkeypatch.setenv("PALETTE_THREADS", "2")
    img = np.random.default_rng(8).random((1, 300, 20, 3)).astype(np.float32)
    calls = []

    def convert(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 2:
            raise MemoryError("no room for band 2")
        return qz.lab100_float32(rows, out)

    palette = np.eye(3, dtype=np.float64)
    lo, hi = qz._diffusion_bounds(qz._work_space(palette, "perceptual"))
    with pytest.raises(MemoryError, match="band 2"):
        qz.error_diffusion(img, qz._work_space(palette, "perceptual"), lo, hi, convert=convert)
    # the pool is still good: the next call runs to the end
    np.testing.assert_array_equal(
        qz.error_diffusion(img, qz._work_space(palette, "perceptual"), lo, hi, convert=qz.lab100_float32),
        qz.error_diffusion(qz.lab100_float32(img), qz._work_space(palette, "perceptual"), lo, hi),
    )
