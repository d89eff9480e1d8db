"""The compiled quantiser (numba, optional): the same indices as the numpy paths, exact nearest-colour cells,
and a clean fall-back to numpy where numba is missing or switched off (docs/craft.md, "Speed")."""

from __future__ import annotations

import logging
import sys

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
